//! `RendezvousClient::from_endpoint`: a peer that already serves its own protocol on an
//! endpoint (a worker's task service) publishes from that same endpoint and socket; customers
//! reach that service through the rendezvous; `is_connected`/`closed` follow the connection to
//! the server. 127.0.0.1 only.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sonm_net::{Endpoint, EndpointConfig, EthKey, Identity, NetError, with_timeout};
use sonm_rendezvous::{ClientConfig, Path, RendezvousClient, RendezvousServer, ServerConfig};

const APP_ALPN: &[u8] = b"sonm-test-app/1";
const TEST_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Req {
    Echo(Vec<u8>),
}

async fn serve_echo(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        smol::spawn(async move {
            let Ok(conn) = incoming.handshake().await else {
                return;
            };
            while let Ok((Req::Echo(bytes), responder)) = conn.accept_request::<Req>().await {
                let _ = responder.respond(&Req::Echo(bytes)).await;
            }
        })
        .detach();
    }
}

#[test]
fn a_served_endpoint_publishes_and_is_reached_through_the_rendezvous() {
    smol::block_on(with_timeout(TEST_LIMIT, async {
        let server = RendezvousServer::start(
            Identity::generate(&EthKey::random(), Duration::from_secs(3600)).unwrap(),
            ServerConfig::default(),
        )
        .unwrap();
        let config = ClientConfig::new(server.local_addr().unwrap(), Some(server.address()));

        // The "worker": its own endpoint, serving its own protocol, made before the client.
        let key = EthKey::random();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let raw = socket.try_clone().unwrap();
        let local = socket.local_addr().unwrap();
        let endpoint = Endpoint::from_socket(
            socket,
            Identity::generate(&key, Duration::from_secs(3600)).unwrap(),
            EndpointConfig {
                server_alpns: vec![APP_ALPN.to_vec()],
                keep_alive: Some(Duration::from_secs(10)),
                ..EndpointConfig::default()
            },
        )
        .unwrap();
        smol::spawn(serve_echo(endpoint.clone())).detach();
        let worker = RendezvousClient::from_endpoint(
            endpoint.clone(),
            raw,
            &key,
            config.clone(),
            Arc::new(|_| true),
        )
        .await
        .unwrap();
        assert!(worker.is_connected());
        // Published from the served endpoint's socket: the server observes that port.
        let observed = worker.publish().await.unwrap();
        assert_eq!(observed, local);

        let customer =
            RendezvousClient::bind("127.0.0.1:0".parse().unwrap(), &EthKey::random(), config)
                .await
                .unwrap();
        let (conn, path) = customer
            .connect_via_rendezvous(key.address(), APP_ALPN)
            .await
            .unwrap();
        assert_eq!(path, Path::Direct(local));
        assert_eq!(conn.peer_address(), key.address());
        let echoed: Req = conn
            .request(&Req::Echo(b"through".to_vec()), Duration::from_secs(5))
            .await?;
        assert_eq!(echoed, Req::Echo(b"through".to_vec()));

        // The server goes away: the worker's client notices (a daemon then reconnects).
        server.close();
        worker.closed().await;
        assert!(!worker.is_connected());
        // The served endpoint itself is untouched.
        let echoed: Req = conn
            .request(&Req::Echo(b"still".to_vec()), Duration::from_secs(5))
            .await?;
        assert_eq!(echoed, Req::Echo(b"still".to_vec()));
        Ok::<(), NetError>(())
    }))
    .unwrap();
}
