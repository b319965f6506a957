//! Benchmarks on loopback, each with its baseline in the same run:
//! - resolves per second: the state machine alone, then end to end over QUIC;
//! - time to connect: plain QUIC, via the rendezvous (direct), via the relay;
//! - throughput: direct QUIC vs through the relay.
//!
//! `cargo bench -p sonm-rendezvous --bench rendezvous` (prints a table; no assertions).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smol::Async;
use sonm_net::{Address, Connection, Endpoint, EndpointConfig, EthKey, Identity};
use sonm_rendezvous::proto::{self, Ctx, Rate, Request, Response};
use sonm_rendezvous::{
    ClientConfig, Path, RelayLimits, RendezvousClient, RendezvousServer, ServerConfig,
};

const APP: &[u8] = b"sonm-bench/1";
const THROUGHPUT_BYTES: u64 = 64 * 1024 * 1024;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn identity() -> Identity {
    Identity::generate(&EthKey::random(), Duration::from_secs(3600)).unwrap()
}

fn unlimited() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.limits.requests = Rate {
        per_s: 1 << 40,
        burst: 1 << 40,
    };
    // Relay sessions outlive their connections until idle; the rounds below open many.
    c.limits.max_relay_sessions_per_peer = 100;
    c.handshakes_per_ip = Rate {
        per_s: 1 << 40,
        burst: 1 << 40,
    };
    c.relay = RelayLimits {
        bytes_per_s: 1 << 40,
        burst_bytes: 1 << 40,
        ..RelayLimits::default()
    };
    c
}

fn config(server: &RendezvousServer, via: Option<SocketAddr>) -> ClientConfig {
    let mut c = ClientConfig::new(
        via.unwrap_or(server.local_addr().unwrap()),
        Some(server.address()),
    );
    c.direct_deadline = Duration::from_millis(300);
    c
}

/// Serves the bench protocol: each stream is drained and answered with its byte count.
async fn serve(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        smol::spawn(async move {
            let Ok(conn) = incoming.handshake().await else {
                return;
            };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                smol::spawn(async move {
                    let mut n = 0u64;
                    while let Ok(Some(chunk)) = recv.quinn().read_chunk(1 << 20, true).await {
                        n += chunk.bytes.len() as u64;
                    }
                    let _ = send.send(&n).await;
                    let _ = send.finish();
                })
                .detach();
            }
        })
        .detach();
    }
}

async fn worker(
    server: &RendezvousServer,
    via: Option<SocketAddr>,
    private: bool,
) -> RendezvousClient {
    let socket = UdpSocket::bind(loopback()).unwrap();
    let mut c = config(server, via);
    c.endpoint.server_alpns = vec![APP.to_vec()];
    if private {
        c.private = vec![socket.local_addr().unwrap()];
    }
    let w = RendezvousClient::from_socket(socket, &EthKey::random(), c, Arc::new(|_| true))
        .await
        .unwrap();
    w.publish().await.unwrap();
    smol::spawn(serve(w.endpoint().clone())).detach();
    w
}

/// Symmetric-NAT stand-in (as in tests/integration/loopback.rs): the observed address is unreachable.
fn forwarder(target: SocketAddr) -> (SocketAddr, smol::Task<()>) {
    let inside = Arc::new(Async::<UdpSocket>::bind(loopback()).unwrap());
    let listen = inside.get_ref().local_addr().unwrap();
    let task = smol::spawn(async move {
        let mut outside: HashMap<SocketAddr, Arc<Async<UdpSocket>>> = HashMap::new();
        let mut returns = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, client)) = inside.recv_from(&mut buf).await {
            let out = outside
                .entry(client)
                .or_insert_with(|| {
                    let out = Arc::new(Async::<UdpSocket>::bind(loopback()).unwrap());
                    let (o, i) = (out.clone(), inside.clone());
                    returns.push(smol::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok((n, from)) = o.recv_from(&mut buf).await {
                            if from == target {
                                let _ = i.send_to(&buf[..n], client).await;
                            }
                        }
                    }));
                    out
                })
                .clone();
            let _ = out.send_to(&buf[..n], target).await;
        }
    });
    (listen, task)
}

async fn push(conn: &Connection, bytes: u64) -> Duration {
    let chunk = vec![0xa5u8; 1 << 20];
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        send.quinn().write_all(&chunk[..n]).await.unwrap();
        left -= n as u64;
    }
    send.finish().unwrap();
    let got: u64 = recv.recv().await.unwrap().unwrap();
    assert_eq!(got, bytes);
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn state_machine_resolves() -> f64 {
    let limits = proto::Limits {
        requests: Rate {
            per_s: 1 << 40,
            burst: 1 << 40,
        },
        ..proto::Limits::default()
    };
    let mut server = proto::Server::new(limits);
    let keys: Vec<EthKey> = (0..100).map(|_| EthKey::random()).collect();
    let now_unix = sonm_net::identity::unix_now();
    for (i, k) in keys.iter().enumerate() {
        let ctx = Ctx {
            peer: k.address(),
            observed: loopback(),
            conn: i as u64,
            now_ms: 0,
            unix_s: now_unix,
        };
        let rec = proto::Record {
            address: k.address(),
            seq: 1,
            timestamp: now_unix,
            private: vec![],
        }
        .sign(|m| k.sign_message(m));
        server.handle(ctx, Request::Publish(rec));
    }
    let asker = EthKey::random().address();
    let n = 1_000_000u64;
    let started = Instant::now();
    for i in 0..n {
        let ctx = Ctx {
            peer: asker,
            observed: loopback(),
            conn: 999,
            now_ms: i / 1000,
            unix_s: now_unix,
        };
        let out = server.handle(
            ctx,
            Request::Resolve {
                address: keys[(i % 100) as usize].address(),
            },
        );
        assert!(matches!(out.reply, Some(Response::Resolved { .. })));
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn end_to_end_resolves(server: &RendezvousServer, target: Address) -> f64 {
    const CLIENTS: usize = 4;
    const IN_FLIGHT: usize = 32;
    let run_for = Duration::from_secs(3);
    let done = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        let ep = Endpoint::bind(loopback(), identity(), EndpointConfig::default()).unwrap();
        let conn = ep
            .connect(
                server.local_addr().unwrap(),
                proto::ALPN,
                Some(server.address()),
            )
            .await
            .unwrap();
        conns.push((ep, conn));
    }
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .iter()
        .flat_map(|(_, conn)| (0..IN_FLIGHT).map(move |_| conn.clone()))
        .map(|conn| {
            let done = done.clone();
            smol::spawn(async move {
                while started.elapsed() < run_for {
                    let r: Response = conn
                        .request(
                            &Request::Resolve { address: target },
                            Duration::from_secs(5),
                        )
                        .await
                        .unwrap();
                    assert!(matches!(r, Response::Resolved { .. }), "{r:?}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // Only run under `cargo bench` (cargo test --benches passes no --bench flag).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    smol::block_on(async {
        println!("rendezvous benchmarks (loopback)");
        println!(
            "  resolves/s, state machine alone      {:>12.0}",
            state_machine_resolves()
        );

        let server = RendezvousServer::start(identity(), unlimited()).unwrap();
        let direct_w = worker(&server, None, true).await;
        println!(
            "  resolves/s, end to end (4 conns x 32) {:>12.0}",
            end_to_end_resolves(&server, direct_w.address()).await
        );

        // Time to connect: plain QUIC to the worker's socket is the baseline.
        let rounds = 15;
        let plain = Endpoint::bind(loopback(), identity(), EndpointConfig::default()).unwrap();
        let mut t_plain = Vec::new();
        for _ in 0..rounds {
            let s = Instant::now();
            let c = plain
                .connect(
                    direct_w.endpoint().local_addr().unwrap(),
                    APP,
                    Some(direct_w.address()),
                )
                .await
                .unwrap();
            t_plain.push(s.elapsed());
            c.close(0, b"");
        }
        let (nat, _nat_task) = forwarder(server.local_addr().unwrap());
        let relay_w = worker(&server, Some(nat), false).await;
        let mut t_direct = Vec::new();
        let mut t_relay = Vec::new();
        let mut last_direct = None;
        let mut last_relay = None;
        for _ in 0..rounds {
            let c = RendezvousClient::bind(loopback(), &EthKey::random(), config(&server, None))
                .await
                .unwrap();
            let s = Instant::now();
            let (conn, path) = c
                .connect_via_rendezvous(direct_w.address(), APP)
                .await
                .unwrap();
            t_direct.push(s.elapsed());
            assert!(matches!(path, Path::Direct(_)));
            last_direct = Some((c.clone(), conn));
            let s = Instant::now();
            let (conn, path) = c
                .connect_via_rendezvous(relay_w.address(), APP)
                .await
                .unwrap();
            t_relay.push(s.elapsed());
            assert!(matches!(path, Path::Relay(_)));
            last_relay = Some((c, conn));
        }
        println!(
            "  connect, plain QUIC (median of {rounds})     {:>9.2?}",
            median(t_plain)
        );
        println!(
            "  connect, via rendezvous, direct         {:>9.2?}",
            median(t_direct)
        );
        println!(
            "  connect, via relay (direct_deadline 300 ms) {:>5.2?}",
            median(t_relay)
        );

        let (_c1, direct_conn) = last_direct.unwrap();
        let (_c2, relay_conn) = last_relay.unwrap();
        let mb = THROUGHPUT_BYTES as f64 / (1024.0 * 1024.0);
        let d = push(&direct_conn, THROUGHPUT_BYTES).await;
        let r = push(&relay_conn, THROUGHPUT_BYTES).await;
        let d2 = push(&direct_conn, THROUGHPUT_BYTES).await;
        let r2 = push(&relay_conn, THROUGHPUT_BYTES).await;
        let direct = 2.0 * mb / (d + d2).as_secs_f64();
        let relay = 2.0 * mb / (r + r2).as_secs_f64();
        println!("  throughput, direct QUIC                 {direct:>9.1} MiB/s");
        println!(
            "  throughput, through the relay           {relay:>9.1} MiB/s ({:.0} % of direct)",
            100.0 * relay / direct
        );
    });
}
