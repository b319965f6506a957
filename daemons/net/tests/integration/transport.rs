//! Real QUIC over loopback sockets: identities, address checks, framing limits, bad input.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use smol::channel::{Receiver, Sender};
use sonm_net::identity::{generate_tls_key, tls_key_spki, unix_now};
use sonm_net::{
    Address, Binding, Connection, Endpoint, EndpointConfig, EthKey, FrameError, Identity,
    IdentityError, NetError, STREAM_ERR_BAD_FRAME, with_timeout,
};

const ALPN: &[u8] = b"sonm-test/1";
const MAX_FRAME: u32 = 64 * 1024;
const HOUR: Duration = Duration::from_secs(3600);
// Generous: 2 shared cores; a hang fails the test instead of stalling the suite.
const TEST_LIMIT: Duration = Duration::from_secs(30);
const REQ_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Req {
    Echo(String),
    WhoAmI,
    /// The server reads it and never answers.
    Silence,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Resp {
    Echo(String),
    YouAre(Address),
}

#[derive(Debug)]
enum Event {
    Connected(Address),
    HandshakeFailed(NetError),
    StreamFailed(NetError),
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(server: bool) -> EndpointConfig {
    EndpointConfig {
        server_alpns: if server {
            vec![ALPN.to_vec()]
        } else {
            Vec::new()
        },
        max_frame: MAX_FRAME,
        ..EndpointConfig::default()
    }
}

fn client(identity: Identity) -> Endpoint {
    Endpoint::bind(loopback(), identity, config(false)).unwrap()
}

fn fresh(eth: &EthKey) -> Identity {
    Identity::generate(eth, HOUR).unwrap()
}

struct Server {
    addr: SocketAddr,
    events: Receiver<Event>,
    _task: smol::Task<()>,
}

impl Server {
    fn start(identity: Identity) -> Self {
        Self::on(Endpoint::bind(loopback(), identity, config(true)).unwrap())
    }

    fn on(endpoint: Endpoint) -> Self {
        let addr = endpoint.local_addr().unwrap();
        let (tx, events) = smol::channel::unbounded();
        let ep = endpoint.clone();
        let task = smol::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let tx = tx.clone();
                smol::spawn(async move {
                    match incoming.handshake().await {
                        Ok(conn) => {
                            let _ = tx.send(Event::Connected(conn.peer_address())).await;
                            serve(conn, tx).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Event::HandshakeFailed(e)).await;
                        }
                    }
                })
                .detach();
            }
        });
        Self {
            addr,
            events,
            _task: task,
        }
    }

    async fn next_event(&self) -> Event {
        with_timeout(REQ_LIMIT, async { Ok(self.events.recv().await.unwrap()) })
            .await
            .unwrap()
    }
}

// Each stream is served in its own task so a stalled or bad stream holds up no other.
async fn serve(conn: Connection, tx: Sender<Event>) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let conn = conn.clone();
        let tx = tx.clone();
        smol::spawn(async move {
            let resp = match recv.recv::<Req>().await {
                Ok(Some(Req::Echo(s))) => Resp::Echo(s),
                Ok(Some(Req::WhoAmI)) => Resp::YouAre(conn.peer_address()),
                Ok(Some(Req::Silence)) => {
                    // Hold the stream open, unanswered, past any test's patience.
                    smol::Timer::after(Duration::from_secs(600)).await;
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Event::StreamFailed(e)).await;
                    return;
                }
            };
            if send.send(&resp).await.is_ok() {
                let _ = send.finish();
            }
        })
        .detach();
    }
}

fn run<F: Future<Output = Result<(), NetError>>>(test: F) {
    smol::block_on(with_timeout(TEST_LIMIT, test)).unwrap();
}

async fn who_am_i(conn: &Connection) -> Result<Address, NetError> {
    match conn.request::<_, Resp>(&Req::WhoAmI, REQ_LIMIT).await? {
        Resp::YouAre(a) => Ok(a),
        other => panic!("unexpected response {other:?}"),
    }
}

/// A client the server refuses: TLS 1.3 lets the client finish its side of the handshake before
/// the server has checked the client certificate, so the refusal shows either at connect or at
/// the first request. Returns the TLS alert the client was refused with.
async fn refused_client(endpoint: &Endpoint, addr: SocketAddr) -> u8 {
    let seen = match endpoint.connect(addr, ALPN, None).await {
        Err(e) => e,
        Ok(conn) => who_am_i(&conn)
            .await
            .expect_err("a refused client got an answer"),
    };
    match seen {
        NetError::HandshakeRefused { alert, .. } => alert,
        other => panic!("expected HandshakeRefused, got {other:?}"),
    }
}

#[test]
fn peers_learn_each_others_address() {
    run(async {
        let (a, b) = (EthKey::random(), EthKey::random());
        let server = Server::start(fresh(&b));
        let cli = client(fresh(&a));
        let conn = cli.connect(server.addr, ALPN, None).await?;
        assert_eq!(conn.peer_address(), b.address());
        assert_eq!(conn.alpn(), ALPN);
        match server.next_event().await {
            Event::Connected(addr) => assert_eq!(addr, a.address()),
            other => panic!("server saw {other:?}"),
        }
        // The server's view of us, carried back over a request.
        assert_eq!(who_am_i(&conn).await?, a.address());
        Ok(())
    });
}

#[test]
fn request_response_round_trips() {
    run(async {
        let server = Server::start(fresh(&EthKey::random()));
        let cli = client(fresh(&EthKey::random()));
        let conn = cli.connect(server.addr, ALPN, None).await?;
        // Near the frame limit, so the body spans several QUIC packets and reads.
        let big = "x".repeat(MAX_FRAME as usize - 16);
        for text in ["", "hello", big.as_str()] {
            let resp: Resp = conn
                .request(&Req::Echo(text.to_string()), REQ_LIMIT)
                .await?;
            assert_eq!(resp, Resp::Echo(text.to_string()));
        }
        // Concurrent requests on one connection.
        let many = (0..20).map(|i| {
            let conn = conn.clone();
            smol::spawn(async move {
                conn.request::<_, Resp>(&Req::Echo(i.to_string()), REQ_LIMIT)
                    .await
            })
        });
        for (i, task) in many.collect::<Vec<_>>().into_iter().enumerate() {
            assert_eq!(task.await?, Resp::Echo(i.to_string()));
        }
        Ok(())
    });
}

#[test]
fn unanswered_request_times_out_and_the_connection_lives_on() {
    run(async {
        let server = Server::start(fresh(&EthKey::random()));
        let me = EthKey::random();
        let conn = client(fresh(&me)).connect(server.addr, ALPN, None).await?;
        let patience = Duration::from_millis(300);
        match conn.request::<_, Resp>(&Req::Silence, patience).await {
            Err(NetError::Timeout(d)) => assert_eq!(d, patience),
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert_eq!(who_am_i(&conn).await?, me.address());
        Ok(())
    });
}

#[test]
fn dialling_the_wrong_address_fails_with_typed_error() {
    run(async {
        let (a, b) = (EthKey::random(), EthKey::random());
        let server = Server::start(fresh(&b));
        let cli = client(fresh(&EthKey::random()));
        match cli.connect(server.addr, ALPN, Some(a.address())).await {
            Err(NetError::Identity(IdentityError::UnexpectedPeer { expected, actual })) => {
                assert_eq!(expected, a.address());
                assert_eq!(actual, b.address());
            }
            other => panic!("expected UnexpectedPeer, got {other:?}"),
        }
        // The right expectation connects through the same endpoint.
        let conn = cli.connect(server.addr, ALPN, Some(b.address())).await?;
        assert_eq!(conn.peer_address(), b.address());
        Ok(())
    });
}

/// A certificate whose binding was signed over a different TLS key.
fn forged_over_other_tls_key(eth: &EthKey) -> Identity {
    let genuine = fresh(eth);
    Identity::from_binding(&generate_tls_key().unwrap(), genuine.binding().clone()).unwrap()
}

/// A certificate claiming `victim`'s address with a binding signed by another key.
fn forged_by_other_eth_key(victim: &EthKey) -> Identity {
    let forger = EthKey::random();
    let tls_key = generate_tls_key().unwrap();
    let now = unix_now();
    let mut binding = Binding::sign(
        &forger,
        &tls_key_spki(&tls_key).unwrap(),
        now - 60,
        now + 3600,
    );
    binding.address = victim.address();
    Identity::from_binding(&tls_key, binding).unwrap()
}

#[test]
fn forged_server_certificates_are_rejected_by_the_client() {
    run(async {
        let victim = EthKey::random();
        let cli = client(fresh(&EthKey::random()));
        for forged in [
            forged_over_other_tls_key(&victim),
            forged_by_other_eth_key(&victim),
        ] {
            let server = Server::start(forged);
            match cli.connect(server.addr, ALPN, None).await {
                Err(NetError::Identity(IdentityError::SignerMismatch { claimed, recovered })) => {
                    assert_eq!(claimed, victim.address());
                    assert_ne!(recovered, victim.address());
                }
                other => panic!("expected SignerMismatch, got {other:?}"),
            }
        }
        Ok(())
    });
}

#[test]
fn forged_client_certificates_are_rejected_by_the_server() {
    run(async {
        let victim = EthKey::random();
        let server = Server::start(fresh(&EthKey::random()));
        for forged in [
            forged_over_other_tls_key(&victim),
            forged_by_other_eth_key(&victim),
        ] {
            let cli = client(forged);
            // TLS alert certificate_unknown.
            assert_eq!(refused_client(&cli, server.addr).await, 46);
            match server.next_event().await {
                Event::HandshakeFailed(NetError::Identity(IdentityError::SignerMismatch {
                    claimed,
                    ..
                })) => assert_eq!(claimed, victim.address()),
                other => panic!("server saw {other:?}"),
            }
        }
        // And the server still serves an honest peer.
        let honest = EthKey::random();
        let conn = client(fresh(&honest))
            .connect(server.addr, ALPN, None)
            .await?;
        assert_eq!(who_am_i(&conn).await?, honest.address());
        Ok(())
    });
}

fn expired(eth: &EthKey) -> Identity {
    let now = unix_now();
    Identity::with_tls_key(eth, &generate_tls_key().unwrap(), now - 7200, now - 3600).unwrap()
}

#[test]
fn expired_identities_are_rejected_on_both_sides() {
    run(async {
        // Expired server: the client refuses it.
        let server = Server::start(expired(&EthKey::random()));
        let cli = client(fresh(&EthKey::random()));
        match cli.connect(server.addr, ALPN, None).await {
            Err(NetError::Identity(IdentityError::Expired { .. })) => {}
            other => panic!("expected Expired, got {other:?}"),
        }

        // Expired client: the server refuses it.
        let server = Server::start(fresh(&EthKey::random()));
        let cli = client(expired(&EthKey::random()));
        // TLS alert certificate_expired.
        assert_eq!(refused_client(&cli, server.addr).await, 45);
        match server.next_event().await {
            Event::HandshakeFailed(NetError::Identity(IdentityError::Expired { .. })) => {}
            other => panic!("server saw {other:?}"),
        }
        Ok(())
    });
}

#[test]
fn wrong_alpn_fails_on_both_sides() {
    run(async {
        let server = Server::start(fresh(&EthKey::random()));
        let cli = client(fresh(&EthKey::random()));
        match cli.connect(server.addr, b"sonm-other/1", None).await {
            Err(NetError::AlpnMismatch) => {}
            other => panic!("expected AlpnMismatch, got {other:?}"),
        }
        match server.next_event().await {
            Event::HandshakeFailed(NetError::AlpnMismatch) => {}
            other => panic!("server saw {other:?}"),
        }
        // The right ALPN still works.
        cli.connect(server.addr, ALPN, None).await?;
        Ok(())
    });
}

#[test]
fn oversized_frame_is_refused_and_everything_else_keeps_working() {
    run(async {
        let server = Server::start(fresh(&EthKey::random()));
        let me = EthKey::random();
        let cli = client(fresh(&me));
        let conn = cli.connect(server.addr, ALPN, None).await?;
        assert!(matches!(server.next_event().await, Event::Connected(_)));

        // Declare a 4 GiB frame: only the 4 header bytes are ever sent, so the refusal must
        // come from the header alone, before any body is buffered.
        let (mut send, _recv) = conn.open_bi().await?;
        send.send_raw(&u32::MAX.to_be_bytes()).await?;
        match server.next_event().await {
            Event::StreamFailed(NetError::Frame(FrameError::TooLarge { len, max })) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, MAX_FRAME);
            }
            other => panic!("server saw {other:?}"),
        }
        // The server told us to stop sending on that stream.
        let stopped = with_timeout(REQ_LIMIT, async {
            send.quinn()
                .stopped()
                .await
                .map_err(|e| NetError::Io(std::io::Error::other(e)))
        })
        .await?;
        assert_eq!(stopped, Some(quinn::VarInt::from_u32(STREAM_ERR_BAD_FRAME)));

        // We refuse to send one too, before writing anything.
        let (mut send2, _recv2) = conn.open_bi().await?;
        let too_big = "y".repeat(MAX_FRAME as usize + 1);
        match send2.send(&Req::Echo(too_big)).await {
            Err(NetError::Frame(FrameError::TooLarge { max, .. })) => assert_eq!(max, MAX_FRAME),
            other => panic!("expected TooLarge, got {other:?}"),
        }

        // Same connection, new stream: still served.
        assert_eq!(who_am_i(&conn).await?, me.address());
        // Another peer: still served.
        let other = EthKey::random();
        let conn2 = client(fresh(&other))
            .connect(server.addr, ALPN, None)
            .await?;
        assert_eq!(who_am_i(&conn2).await?, other.address());
        Ok(())
    });
}

#[test]
fn truncated_frame_is_reported() {
    run(async {
        let server = Server::start(fresh(&EthKey::random()));
        let cli = client(fresh(&EthKey::random()));
        let conn = cli.connect(server.addr, ALPN, None).await?;
        assert!(matches!(server.next_event().await, Event::Connected(_)));
        let (mut send, _recv) = conn.open_bi().await?;
        // Header says 100 bytes; 10 come, then the stream ends.
        send.send_raw(&100u32.to_be_bytes()).await?;
        send.send_raw(&[7; 10]).await?;
        send.finish()?;
        match server.next_event().await {
            Event::StreamFailed(NetError::Frame(FrameError::Truncated { have, need })) => {
                assert_eq!((have, need), (14, 104));
            }
            other => panic!("server saw {other:?}"),
        }
        who_am_i(&conn).await?;
        Ok(())
    });
}

#[test]
fn garbage_datagrams_do_not_disturb_the_endpoint() {
    run(async {
        let server = Server::start(fresh(&EthKey::random()));
        let me = EthKey::random();
        let cli = client(fresh(&me));
        let before = cli.connect(server.addr, ALPN, None).await?;

        let junk = UdpSocket::bind(loopback())?;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            // xorshift64: reproducible junk without another dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..500 {
            let len = [1, 20, 100, 1200, 1350, 1500][i % 6];
            let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 3 == 0 {
                // Looks like a QUIC v1 long-header Initial, so it gets past the first checks.
                packet[0] = 0xC0 | (packet[0] & 0x0F);
                if len >= 5 {
                    packet[1..5].copy_from_slice(&[0, 0, 0, 1]);
                }
            }
            junk.send_to(&packet, server.addr)?;
            junk.send_to(&packet, cli.local_addr()?)?;
        }

        // The connection made before the junk still works, and a new one can be made.
        assert_eq!(who_am_i(&before).await?, me.address());
        let other = EthKey::random();
        let after = client(fresh(&other))
            .connect(server.addr, ALPN, None)
            .await?;
        assert_eq!(who_am_i(&after).await?, other.address());
        Ok(())
    });
}

#[test]
fn works_over_ipv6_loopback() {
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    if UdpSocket::bind(v6).is_err() {
        eprintln!("SKIP works_over_ipv6_loopback: cannot bind [::1] on this machine");
        return;
    }
    run(async {
        let (a, b) = (EthKey::random(), EthKey::random());
        let server = Endpoint::bind(v6, fresh(&b), config(true))?;
        let addr = server.local_addr()?;
        let accepting = smol::spawn(async move {
            let conn = server
                .accept()
                .await
                .expect("endpoint open")
                .handshake()
                .await?;
            let (req, responder) = conn.accept_request::<Req>().await?;
            assert_eq!(req, Req::WhoAmI);
            responder
                .respond(&Resp::YouAre(conn.peer_address()))
                .await?;
            // Keep the connection until the client has read the answer.
            conn.closed().await;
            Ok::<_, NetError>(())
        });
        let conn = Endpoint::bind(v6, fresh(&a), config(false))?
            .connect(addr, ALPN, Some(b.address()))
            .await?;
        assert_eq!(who_am_i(&conn).await?, a.address());
        conn.close(0, b"done");
        accepting.await
    });
}

/// A UDP forwarder standing in for a server's address: what the client sends to `addr` goes
/// to the current target, and the answers come back. Switching the target stands for a server
/// process that died without a word (kill -9) and a new one on the same address.
struct Forwarder {
    addr: SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<SocketAddr>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Forwarder {
    fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let front = UdpSocket::bind(loopback()).unwrap();
        let back = UdpSocket::bind(loopback()).unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, st) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut client = None;
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    client = Some(from);
                    let to = *t.lock().unwrap();
                    let _ = back.send_to(&buf[..n], to);
                }
                if let (Ok((n, _)), Some(c)) = (back.recv_from(&mut buf), client) {
                    let _ = front.send_to(&buf[..n], c);
                }
            }
        });
        Self { addr, target, stop }
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_restarted_server_with_the_same_seed_resets_old_connections_at_once() {
    run(async {
        let eth = EthKey::random();
        let seeded = || EndpointConfig {
            reset_seed: Some(eth.stateless_reset_seed()),
            ..config(true)
        };
        let first = Server::on(Endpoint::bind(loopback(), fresh(&eth), seeded())?);
        let front = Forwarder::start(first.addr);
        let cli = client(fresh(&EthKey::random()));
        let conn = cli.connect(front.addr, ALPN, Some(eth.address())).await?;
        assert_eq!(who_am_i(&conn).await?, cli.address());
        // The server "crashes" without closing anything, and a new process (new TLS key, same
        // Ethereum key, so the same seed) answers at the server's address.
        let restarted = Server::on(Endpoint::bind(loopback(), fresh(&eth), seeded())?);
        front.retarget(restarted.addr);
        // The new server recognises the old connection's IDs and resets it: the client learns
        // at once that the connection is gone instead of waiting out its idle timeout.
        let err = who_am_i(&conn)
            .await
            .expect_err("the old connection must be gone");
        assert!(
            format!("{err:?}").contains("Reset"),
            "expected a stateless reset, got {err:?}"
        );
        // And the client dials the new server at once.
        let again = cli.connect(front.addr, ALPN, Some(eth.address())).await?;
        assert_eq!(who_am_i(&again).await?, cli.address());
        drop(first);
        Ok(())
    });
}
