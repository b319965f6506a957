//! The rendezvous server and clients over real sockets on 127.0.0.1.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smol::Async;
use sonm_net::identity::unix_now;
use sonm_net::{Endpoint, EthKey, Identity, NetError, with_timeout};
use sonm_rendezvous::proto::{Control, Rate, Record, Refusal, Request, Response};
use sonm_rendezvous::{
    ClientConfig, ClientError, PacketTap, Path, RendezvousClient, RendezvousServer, ServerConfig,
};

const APP_ALPN: &[u8] = b"sonm-test-app/1";
const TEST_LIMIT: Duration = Duration::from_secs(30);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Req {
    Echo(Vec<u8>),
}

fn run<F: Future<Output = Result<(), NetError>>>(fut: F) {
    smol::block_on(with_timeout(TEST_LIMIT, fut)).unwrap();
}

fn server_with(config: ServerConfig, tap: Option<PacketTap>) -> RendezvousServer {
    let identity = Identity::generate(&EthKey::random(), Duration::from_secs(3600)).unwrap();
    RendezvousServer::start_with_tap(identity, config, tap).unwrap()
}

fn server() -> RendezvousServer {
    server_with(ServerConfig::default(), None)
}

fn client_config(server: &RendezvousServer, via: Option<SocketAddr>) -> ClientConfig {
    let mut c = ClientConfig::new(
        via.unwrap_or_else(|| server.local_addr().unwrap()),
        Some(server.address()),
    );
    // Short, so that the relay tests do not wait long for a direct path that cannot open.
    c.direct_deadline = Duration::from_millis(400);
    c.relay_deadline = Duration::from_secs(3);
    c
}

async fn customer(server: &RendezvousServer) -> RendezvousClient {
    RendezvousClient::bind(loopback(), &EthKey::random(), client_config(server, None))
        .await
        .unwrap()
}

/// A worker serving echo on APP_ALPN. `via` puts a forwarder between it and the server (see
/// [`Forwarder`]); `publish_private` says whether it tells its own socket address.
async fn worker(
    server: &RendezvousServer,
    via: Option<SocketAddr>,
    publish_private: bool,
    policy: sonm_rendezvous::RelayPolicy,
) -> RendezvousClient {
    let socket = UdpSocket::bind(loopback()).unwrap();
    let mut config = client_config(server, via);
    config.endpoint.server_alpns = vec![APP_ALPN.to_vec()];
    if publish_private {
        config.private = vec![socket.local_addr().unwrap()];
    }
    let w = RendezvousClient::from_socket(socket, &EthKey::random(), config, policy)
        .await
        .unwrap();
    smol::spawn(serve_echo(w.endpoint().clone())).detach();
    w
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

fn accept_all() -> sonm_rendezvous::RelayPolicy {
    Arc::new(|_| true)
}

/// A UDP forwarder standing in for a symmetric NAT in front of a worker: each client source
/// gets its own outside socket, which forwards to `target` and lets back only what comes from
/// `target`. The server therefore observes an address nobody else can reach.
struct Forwarder {
    listen: SocketAddr,
    dropped: Arc<AtomicU64>,
    _task: smol::Task<()>,
}

impl Forwarder {
    fn start(target: SocketAddr) -> Self {
        let inside = Arc::new(Async::<UdpSocket>::bind(loopback()).unwrap());
        let listen = inside.get_ref().local_addr().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        let task = smol::spawn(async move {
            let mut outside: HashMap<SocketAddr, Arc<Async<UdpSocket>>> = HashMap::new();
            let mut returns = Vec::new();
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, client)) = inside.recv_from(&mut buf).await {
                let out = outside
                    .entry(client)
                    .or_insert_with(|| {
                        let out = Arc::new(Async::<UdpSocket>::bind(loopback()).unwrap());
                        let (o, i, d) = (out.clone(), inside.clone(), d.clone());
                        returns.push(smol::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, from)) = o.recv_from(&mut buf).await {
                                if from == target {
                                    let _ = i.send_to(&buf[..n], client).await;
                                } else {
                                    d.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }));
                        out
                    })
                    .clone();
                let _ = out.send_to(&buf[..n], target).await;
            }
        });
        Self {
            listen,
            dropped,
            _task: task,
        }
    }
}

#[test]
fn publish_then_resolve() {
    run(async {
        let server = server();
        let w = worker(&server, None, true, accept_all()).await;
        let observed = w.publish().await.unwrap();
        let local = w.endpoint().local_addr()?;
        assert_eq!(observed, local);

        let c = customer(&server).await;
        let (record, seen) = c.resolve(w.address()).await.unwrap();
        assert_eq!(record.address, w.address());
        assert_eq!(record.private, vec![local]);
        assert_eq!(seen, local);

        let nobody = EthKey::random().address();
        assert!(matches!(c.resolve(nobody).await, Err(ClientError::NotFound(a)) if a == nobody));
        assert_eq!(server.stats().live_records, 1);
        Ok(())
    });
}

#[test]
fn connects_directly_through_the_rendezvous() {
    run(async {
        let server = server();
        let w = worker(&server, None, true, accept_all()).await;
        w.publish().await.unwrap();
        let c = customer(&server).await;
        let started = Instant::now();
        let (conn, path) = c
            .connect_via_rendezvous(w.address(), APP_ALPN)
            .await
            .unwrap();
        println!("direct via rendezvous: {:?}", started.elapsed());
        assert_eq!(path, Path::Direct(w.endpoint().local_addr()?));
        assert_eq!(conn.peer_address(), w.address());
        let back: Req = conn
            .request(&Req::Echo(b"hello".to_vec()), Duration::from_secs(5))
            .await?;
        assert_eq!(back, Req::Echo(b"hello".to_vec()));
        assert_eq!(server.stats().relay_sessions_opened, 0);
        Ok(())
    });
}

/// Cleartext the peers exchange; the relay must never see it.
fn marker_payload() -> Vec<u8> {
    b"SONM-CLEARTEXT-MARKER-0123456789".repeat(1024)
}

#[test]
fn falls_back_to_the_relay_which_sees_only_ciphertext() {
    run(async {
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let tap: PacketTap = {
            let seen = seen.clone();
            Arc::new(move |d: &[u8]| seen.lock().unwrap().push(d.to_vec()))
        };
        let server = server_with(ServerConfig::default(), Some(tap));
        let nat = Forwarder::start(server.local_addr().unwrap());
        // Behind the forwarder and telling no private address: no direct path can open.
        let w = worker(&server, Some(nat.listen), false, accept_all()).await;
        let observed = w.publish().await.unwrap();
        assert_ne!(observed, w.endpoint().local_addr()?);

        let c = customer(&server).await;
        let started = Instant::now();
        let (conn, path) = c
            .connect_via_rendezvous(w.address(), APP_ALPN)
            .await
            .unwrap();
        println!("relayed via rendezvous: {:?}", started.elapsed());
        assert!(matches!(path, Path::Relay(_)), "{path:?}");
        assert_eq!(conn.peer_address(), w.address());
        // The direct attempts towards the observed address were dropped by the "NAT".
        assert!(nat.dropped.load(Ordering::Relaxed) > 0);

        let payload = marker_payload();
        let back: Req = conn
            .request(&Req::Echo(payload.clone()), Duration::from_secs(10))
            .await?;
        assert_eq!(back, Req::Echo(payload.clone()));

        let stats = server.stats();
        assert_eq!(stats.relay_sessions_opened, 1);
        assert!(
            stats.relay_forwarded_bytes > 2 * payload.len() as u64,
            "{stats:?}"
        );
        let seen = seen.lock().unwrap();
        let needle = &payload[..16];
        assert!(
            seen.iter()
                .all(|d| !d.windows(needle.len()).any(|w| w == needle)),
            "the relay saw cleartext"
        );
        Ok(())
    });
}

#[test]
fn garbage_datagrams_disturb_neither_server_nor_relay() {
    run(async {
        let server = server();
        let nat = Forwarder::start(server.local_addr().unwrap());
        let w = worker(&server, Some(nat.listen), false, accept_all()).await;
        w.publish().await.unwrap();
        let c = customer(&server).await;
        let (conn, path) = c
            .connect_via_rendezvous(w.address(), APP_ALPN)
            .await
            .unwrap();
        let Path::Relay(relay) = path else {
            panic!("expected the relay, got {path:?}")
        };

        let junk = UdpSocket::bind(loopback()).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let before = server.stats().relay_dropped_datagrams;
        for i in 0..500u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 1400) as usize + 1;
            let mut d: Vec<u8> = (0..len).map(|j| (seed >> (j % 57)) as u8).collect();
            match i % 4 {
                // A bind with a guessed token.
                0 => {
                    d = Control::Bind {
                        token: [i as u8; 16],
                    }
                    .encode()
                }
                // A truncated control datagram.
                1 => d = Control::Bind { token: [0; 16] }.encode()[..9].to_vec(),
                // Shaped like a QUIC v1 Initial.
                2 => {
                    d.resize(1200, 0);
                    d[0] = 0xc3;
                    d[1..5].copy_from_slice(&1u32.to_be_bytes());
                }
                _ => {}
            }
            junk.send_to(&d, server.local_addr().unwrap()).unwrap();
            junk.send_to(&d, relay).unwrap();
        }
        // Still serving: the relayed connection and new requests.
        let back: Req = conn
            .request(&Req::Echo(b"still here".to_vec()), Duration::from_secs(5))
            .await?;
        assert_eq!(back, Req::Echo(b"still here".to_vec()));
        c.resolve(w.address()).await.unwrap();
        // The relay counted (and dropped) the junk; the kernel may have dropped some of the
        // burst before it, so wait for a good share rather than all of it.
        let mut after = server.stats().relay_dropped_datagrams;
        for _ in 0..250 {
            if after >= before + 100 {
                break;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
            after = server.stats().relay_dropped_datagrams;
        }
        assert!(after >= before + 100, "relay dropped {before} -> {after}");
        Ok(())
    });
}

#[test]
fn forged_publish_is_refused() {
    run(async {
        let server = server();
        let attacker = customer(&server).await;
        let victim = EthKey::random();
        // Correctly signed by the victim (say, captured), but sent on the attacker's connection.
        let record = Record {
            address: victim.address(),
            seq: 1,
            timestamp: unix_now(),
            private: vec!["127.0.0.1:9".parse().unwrap()],
        }
        .sign(|m| victim.sign_message(m));
        let r = attacker.request(&Request::Publish(record)).await.unwrap();
        assert_eq!(
            r,
            Response::Refused(Refusal::Forged {
                claimed: victim.address()
            })
        );
        // Claiming its own address with a signature by another key fails too.
        let mut mine = attacker.signed_record(vec![]);
        mine.signature = Record {
            address: attacker.address(),
            ..mine.record.clone()
        }
        .sign(|m| victim.sign_message(m))
        .signature;
        let r = attacker.request(&Request::Publish(mine)).await.unwrap();
        assert_eq!(r, Response::Refused(Refusal::BadSignature));
        assert!(matches!(
            attacker.resolve(victim.address()).await,
            Err(ClientError::NotFound(_))
        ));
        assert_eq!(server.stats().live_records, 0);
        Ok(())
    });
}

#[test]
fn replayed_publish_is_refused() {
    run(async {
        let server = server();
        let key = EthKey::random();
        let w = RendezvousClient::bind(loopback(), &key, client_config(&server, None))
            .await
            .unwrap();
        let record = w.signed_record(vec![]);
        let first = w.request(&Request::Publish(record.clone())).await.unwrap();
        assert!(matches!(first, Response::Published { .. }), "{first:?}");
        let again = w.request(&Request::Publish(record.clone())).await.unwrap();
        assert_eq!(
            again,
            Response::Refused(Refusal::Replayed {
                last_seq: record.record.seq
            })
        );
        // A record signed an hour ago (say, captured then) is refused by the clock window,
        // even with a seq the server has not seen.
        let stale = Record {
            seq: record.record.seq + 1,
            timestamp: unix_now() - 3600,
            ..record.record.clone()
        }
        .sign(|m| key.sign_message(m));
        let r = w.request(&Request::Publish(stale)).await.unwrap();
        assert!(
            matches!(r, Response::Refused(Refusal::ClockSkew { .. })),
            "{r:?}"
        );
        // The client's next record is accepted.
        let next = w.signed_record(vec![]);
        let r = w.request(&Request::Publish(next)).await.unwrap();
        assert!(matches!(r, Response::Published { .. }), "{r:?}");
        Ok(())
    });
}

#[test]
fn a_resolve_storm_is_limited_while_others_are_served() {
    run(async {
        let mut config = ServerConfig::default();
        config.limits.requests = Rate {
            per_s: 1,
            burst: 10,
        };
        let server = server_with(config, None);
        let w = worker(&server, None, true, accept_all()).await;
        w.publish().await.unwrap();
        let storm = customer(&server).await;
        let mut limited = 0;
        for _ in 0..100 {
            match storm
                .request(&Request::Resolve {
                    address: w.address(),
                })
                .await
                .unwrap()
            {
                Response::Refused(Refusal::RateLimited { retry_after_ms }) => {
                    assert!(retry_after_ms > 0);
                    limited += 1;
                }
                Response::Resolved { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        // 10 of burst plus whatever refilled at 1/s while the storm ran.
        assert!(limited >= 60, "only {limited} of 100 limited");
        let other = customer(&server).await;
        let (record, _) = other.resolve(w.address()).await.unwrap();
        assert_eq!(record.address, w.address());
        assert!(server.stats().refused >= 60);
        Ok(())
    });
}

#[test]
fn relay_for_a_peer_that_did_not_ask_is_refused() {
    run(async {
        let server = server();
        let nat = Forwarder::start(server.local_addr().unwrap());
        let stranger = customer(&server).await;
        // This worker agrees to no relay.
        let w = worker(&server, Some(nat.listen), false, Arc::new(|_| false)).await;
        w.publish().await.unwrap();

        // Never introduced: refused outright.
        let r = stranger
            .request(&Request::Relay { peer: w.address() })
            .await
            .unwrap();
        assert_eq!(r, Response::Refused(Refusal::NotIntroduced));

        // Introduced, but the worker does not ask back: no relay, no session.
        let mut config = client_config(&server, None);
        config.relay_deadline = Duration::from_millis(800);
        let c = RendezvousClient::bind(loopback(), &EthKey::random(), config)
            .await
            .unwrap();
        match c.connect_via_rendezvous(w.address(), APP_ALPN).await {
            Err(ClientError::RelayNotGranted(a)) => assert_eq!(a, w.address()),
            other => panic!("expected no relay, got {other:?}"),
        }
        assert_eq!(server.stats().relay_sessions_opened, 0);
        Ok(())
    });
}

#[test]
fn a_pinned_server_address_is_checked() {
    run(async {
        let server = server();
        let mut config = client_config(&server, None);
        config.server_address = Some(EthKey::random().address());
        let r = RendezvousClient::bind(loopback(), &EthKey::random(), config).await;
        assert!(
            matches!(&r, Err(ClientError::Net(NetError::Identity(_)))),
            "{r:?}"
        );
        Ok(())
    });
}

// A server that runs past its certificate's end: with `renew` (what the daemon sets) a worker
// publishing after the first certificate expired is still accepted, for the same address.
#[test]
fn the_server_renews_its_certificate_before_it_expires() {
    run(async {
        let key = EthKey::random();
        let validity = Duration::from_secs(3);
        let identity = Identity::generate(&key, validity).unwrap();
        let config = ServerConfig {
            renew: Some((key.clone(), validity)),
            ..ServerConfig::default()
        };
        let server = RendezvousServer::start_with_tap(identity, config, None).unwrap();
        assert_eq!(server.address(), key.address());
        let before =
            RendezvousClient::bind(loopback(), &EthKey::random(), client_config(&server, None))
                .await
                .unwrap();
        drop(before);
        smol::Timer::after(Duration::from_millis(3500)).await;
        let after =
            RendezvousClient::bind(loopback(), &EthKey::random(), client_config(&server, None))
                .await;
        assert!(
            after.is_ok(),
            "refused after the first certificate's end: {after:?}"
        );
        Ok(())
    });
}

#[test]
fn a_handshake_flood_from_one_ip_is_refused_before_any_crypto() {
    run(async {
        let config = ServerConfig {
            handshakes_per_ip: Rate { per_s: 1, burst: 2 },
            ..ServerConfig::default()
        };
        let server = server_with(config, None);
        let mut refused = 0;
        for _ in 0..6 {
            let c = client_config(&server, None);
            if RendezvousClient::bind(loopback(), &EthKey::random(), c)
                .await
                .is_err()
            {
                refused += 1;
            }
        }
        // Two of burst, and at most one more refilled while the loop ran.
        assert!(refused >= 1, "none refused");
        assert_eq!(server.stats().refused_handshakes, refused);
        Ok(())
    });
}

#[test]
fn oversized_and_truncated_request_frames_cost_only_their_stream() {
    run(async {
        let server = server();
        let me = Identity::generate(&EthKey::random(), Duration::from_secs(3600)).unwrap();
        let endpoint = Endpoint::bind(loopback(), me, sonm_net::EndpointConfig::default())?;
        let conn = endpoint
            .connect(
                server.local_addr().unwrap(),
                sonm_rendezvous::proto::ALPN,
                Some(server.address()),
            )
            .await?;
        // A frame declaring 4 GiB, then one cut short.
        let (mut send, mut recv) = conn.open_bi().await?;
        send.send_raw(&u32::MAX.to_be_bytes()).await?;
        send.finish()?;
        // No response: the server drops the stream (after telling us to stop sending).
        let r = recv.recv::<Response>().await;
        assert!(!matches!(r, Ok(Some(_))), "{r:?}");
        let (mut send, mut recv) = conn.open_bi().await?;
        send.send_raw(&[0, 0, 0, 40, 1, 2, 3]).await?;
        send.finish()?;
        // No response: the server drops the stream (after telling us to stop sending).
        let r = recv.recv::<Response>().await;
        assert!(!matches!(r, Ok(Some(_))), "{r:?}");
        // The same connection is still served.
        let nobody = EthKey::random().address();
        let r: Response = conn
            .request(
                &Request::Resolve { address: nobody },
                Duration::from_secs(5),
            )
            .await?;
        assert_eq!(r, Response::NotFound);
        assert_eq!(server.stats().bad_streams, 2);
        Ok(())
    });
}
