//! The QUIC server around the protocol's state machine, and its relay sessions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sonm_net::identity::unix_now;
use sonm_net::{
    Address, Connection, Endpoint, EndpointConfig, EthKey, FramedRecv, FramedSend, Identity,
    NetError, with_timeout,
};
use sonm_rendezvous_proto::{
    ALPN, Ctx, Effect, Limits, Notify, NotifyAck, Rate, Refusal, RelayAllocated, Request, Response,
    Server, Stats, TOKEN_LEN, TokenBucket,
};

use crate::relay::{PacketTap, RelayCounters, RelayLimits, Session};

/// How long a client has to send its request once it opened a stream.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pushed notification may take to be acknowledged.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired state is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Largest request frame: a record with its candidates is a few hundred bytes.
const MAX_FRAME: u32 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("network: {0}")]
    Net(#[from] NetError),
}

/// Everything the server needs besides its identity.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address of the QUIC control endpoint.
    pub listen: SocketAddr,
    /// IP the relay sessions' sockets bind to (each on an ephemeral port).
    pub relay_ip: IpAddr,
    /// IP told to clients for relay sessions; default `relay_ip` (set it when that is 0.0.0.0).
    pub relay_advertise_ip: Option<IpAddr>,
    pub limits: Limits,
    pub relay: RelayLimits,
    /// A connection with no traffic for this long closes (clients keep theirs alive).
    pub idle_timeout: Duration,
    /// Handshakes per source IP (a handshake costs signature checks before anyone is known);
    /// over it, the attempt is refused before any crypto.
    pub handshakes_per_ip: Rate,
    /// Seed of the stateless-reset key (`EthKey::stateless_reset_seed` of the server's key):
    /// with it, a restarted server resets its old clients' connections at their next packet
    /// (a keep-alive), so workers re-publish at once instead of after the idle timeout, and
    /// nodes learn that relays through the old process are gone.
    pub reset_seed: Option<[u8; 32]>,
    /// The server's key and certificate validity: the endpoint makes a fresh certificate
    /// for the same key when the current one enters the last third of its life, so a server
    /// that runs longer than one validity keeps being accepted. `None`: the identity given
    /// to `start` is used until it expires.
    pub renew: Option<(EthKey, Duration)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_ip: IpAddr::from([127, 0, 0, 1]),
            relay_advertise_ip: None,
            limits: Limits::default(),
            relay: RelayLimits::default(),
            idle_timeout: Duration::from_secs(60),
            handshakes_per_ip: Rate {
                per_s: 20,
                burst: 50,
            },
            reset_seed: None,
            renew: None,
        }
    }
}

/// Counters for logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServerStats {
    pub connections: u64,
    pub requests: u64,
    pub refused: u64,
    pub refused_handshakes: u64,
    pub bad_streams: u64,
    pub relay_sessions_opened: u64,
    pub relay_forwarded_datagrams: u64,
    pub relay_forwarded_bytes: u64,
    pub relay_dropped_datagrams: u64,
    pub live_records: u64,
    pub live_relay_sessions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    refused_handshakes: AtomicU64,
    bad_streams: AtomicU64,
    relay_sessions_opened: AtomicU64,
}

struct Shared {
    state: Mutex<Server>,
    handshake_buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    handshakes_per_ip: Rate,
    conns: Mutex<HashMap<u64, Connection>>,
    next_conn: AtomicU64,
    start: Instant,
    relay_ip: IpAddr,
    relay_advertise_ip: IpAddr,
    relay: RelayLimits,
    counters: Counters,
    relay_counters: Arc<RelayCounters>,
    tap: Option<PacketTap>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("relay_ip", &self.relay_ip)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Server> {
        // A panic while holding the lock leaves plain tables; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self, id: u64) -> Option<Connection> {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}

/// A running rendezvous server. Dropping it stops it.
#[derive(Debug)]
pub struct RendezvousServer {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    _tasks: Vec<smol::Task<()>>,
}

impl RendezvousServer {
    /// Binds and starts serving on smol's global executor.
    pub fn start(identity: Identity, config: ServerConfig) -> Result<Self, ServerError> {
        Self::start_with_tap(identity, config, None)
    }

    /// As [`start`](Self::start), with a tap on every relayed datagram.
    pub fn start_with_tap(
        identity: Identity,
        config: ServerConfig,
        tap: Option<PacketTap>,
    ) -> Result<Self, ServerError> {
        let endpoint = Endpoint::bind(
            config.listen,
            identity,
            EndpointConfig {
                server_alpns: vec![ALPN.to_vec()],
                max_frame: MAX_FRAME,
                idle_timeout: config.idle_timeout,
                keep_alive: None,
                max_concurrent_bidi_streams: 16,
                // Without a stable seed a restarted server's resets do not verify, and its
                // clients' keep-alives go unanswered until the idle timeout (60 s).
                reset_seed: config.reset_seed,
                renew: config.renew.clone(),
            },
        )?;
        let shared = Arc::new(Shared {
            state: Mutex::new(Server::new(config.limits.clone())),
            handshake_buckets: Mutex::new(HashMap::new()),
            handshakes_per_ip: config.handshakes_per_ip,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            start: Instant::now(),
            relay_ip: config.relay_ip,
            relay_advertise_ip: config.relay_advertise_ip.unwrap_or(config.relay_ip),
            relay: config.relay,
            counters: Counters::default(),
            relay_counters: Arc::new(RelayCounters::default()),
            tap,
        });
        tracing::info!(
            listen = %endpoint.local_addr()?,
            address = %endpoint.address(),
            "rendezvous server started"
        );
        let accept = smol::spawn(accept_loop(endpoint.clone(), shared.clone()));
        let sweep = {
            let shared = Arc::downgrade(&shared);
            smol::spawn(async move {
                loop {
                    smol::Timer::after(SWEEP_EVERY).await;
                    let Some(shared) = shared.upgrade() else {
                        break;
                    };
                    let now = shared.now_ms();
                    shared.state().expire(now);
                    let rate = shared.handshakes_per_ip;
                    shared
                        .handshake_buckets
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|_, b| !b.is_full(rate, now));
                }
            })
        };
        Ok(Self {
            endpoint,
            shared,
            _tasks: vec![accept, sweep],
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The server's Ethereum address (clients pin it).
    pub fn address(&self) -> Address {
        self.endpoint.address()
    }

    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        let r = &self.shared.relay_counters;
        let s: Stats = self.shared.state().stats();
        ServerStats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            refused_handshakes: c.refused_handshakes.load(Ordering::Relaxed),
            bad_streams: c.bad_streams.load(Ordering::Relaxed),
            relay_sessions_opened: c.relay_sessions_opened.load(Ordering::Relaxed),
            relay_forwarded_datagrams: r.forwarded_datagrams.load(Ordering::Relaxed),
            relay_forwarded_bytes: r.forwarded_bytes.load(Ordering::Relaxed),
            relay_dropped_datagrams: r.dropped_datagrams.load(Ordering::Relaxed),
            live_records: s.records as u64,
            live_relay_sessions: s.relay_sessions as u64,
        }
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.endpoint.close();
    }
}

impl Drop for RendezvousServer {
    fn drop(&mut self) {
        self.endpoint.close();
    }
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let ip = incoming.remote_address().ip();
        let allowed = {
            let now = shared.now_ms();
            let rate = shared.handshakes_per_ip;
            let mut buckets = shared
                .handshake_buckets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            buckets
                .entry(ip)
                .or_insert_with(|| TokenBucket::full(rate, now))
                .try_take(rate, now, 1)
                .is_ok()
        };
        if !allowed {
            shared
                .counters
                .refused_handshakes
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%ip, "handshake rate exceeded");
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        smol::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.handshake().await {
                Ok(conn) => serve_connection(conn, shared).await,
                Err(e) => tracing::info!(%remote, error = %e, "handshake refused"),
            }
        })
        .detach();
    }
}

async fn serve_connection(conn: Connection, shared: Arc<Shared>) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let peer = conn.peer_address();
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, remote = %conn.remote_address(), id, "peer connected");
    shared
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, conn.clone());
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "peer gone");
                break;
            }
        };
        // Streams are bounded by the endpoint's max_concurrent_bidi_streams.
        smol::spawn(serve_stream(conn.clone(), id, send, recv, shared.clone())).detach();
    }
    shared
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    shared.state().disconnected(peer, id);
}

async fn serve_stream(
    conn: Connection,
    id: u64,
    mut send: FramedSend,
    mut recv: FramedRecv,
    shared: Arc<Shared>,
) {
    let peer = conn.peer_address();
    let req = with_timeout(REQUEST_READ_TIMEOUT, async {
        recv.recv::<Request>().await?.ok_or(NetError::NoRequest)
    })
    .await;
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            shared.counters.bad_streams.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, error = %e, "bad request stream");
            return;
        }
    };
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let ctx = Ctx {
        peer,
        observed: conn.remote_address(),
        conn: id,
        now_ms: shared.now_ms(),
        unix_s: unix_now(),
    };
    let kind = request_kind(&req);
    let outcome = shared.state().handle(ctx, req);
    let mut reply = outcome.reply;
    for effect in outcome.effects {
        if let Some(r) = run_effect(effect, &shared) {
            reply = Some(r);
        }
    }
    let Some(reply) = reply else { return };
    if let Response::Refused(refusal) = &reply {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        log_refusal(peer, kind, refusal);
    }
    let sent = async {
        send.send(&reply).await?;
        send.finish()
    };
    if let Err(e) = sent.await {
        tracing::debug!(%peer, error = %e, "reply not delivered");
    }
}

fn request_kind(req: &Request) -> &'static str {
    match req {
        Request::Publish(_) => "publish",
        Request::Resolve { .. } => "resolve",
        Request::Punch { .. } => "punch",
        Request::Relay { .. } => "relay",
    }
}

fn log_refusal(peer: Address, kind: &str, refusal: &Refusal) {
    match refusal {
        // Expected under load: not worth a warning each.
        Refusal::RateLimited { .. } => tracing::debug!(%peer, kind, ?refusal, "refused"),
        _ => tracing::warn!(%peer, kind, ?refusal, "refused"),
    }
}

/// Carries out an effect; returns the reply to the requester when the effect makes it.
fn run_effect(effect: Effect, shared: &Arc<Shared>) -> Option<Response> {
    match effect {
        Effect::Notify { to, conn, msg } => {
            push(shared, to, conn, msg);
            None
        }
        Effect::AllocateRelay {
            session,
            requester,
            requester_conn: _,
            peer,
            peer_conn,
        } => {
            let tokens = [random_token(), random_token()];
            let bound =
                Session::bind(shared.relay_ip, tokens).and_then(|s| s.local_addr().map(|a| (s, a)));
            let (relay_session, local) = match bound {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot bind a relay socket");
                    shared.state().relay_closed(session);
                    return Some(Response::Refused(Refusal::Overloaded));
                }
            };
            let relay = SocketAddr::new(shared.relay_advertise_ip, local.port());
            shared
                .counters
                .relay_sessions_opened
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%requester, %peer, %relay, session, "relay session opened");
            let run = relay_session.run(
                shared.relay.clone(),
                shared.relay_counters.clone(),
                shared.tap.clone(),
            );
            let weak = Arc::downgrade(shared);
            smol::spawn(async move {
                run.await;
                if let Some(shared) = weak.upgrade() {
                    shared.state().relay_closed(session);
                }
            })
            .detach();
            let idle_timeout_ms = shared.relay.idle_timeout_ms;
            push(
                shared,
                peer,
                peer_conn,
                Notify::RelayAllocated(RelayAllocated {
                    peer: requester,
                    relay,
                    token: tokens[1],
                    idle_timeout_ms,
                }),
            );
            Some(Response::RelayAllocated(RelayAllocated {
                peer,
                relay,
                token: tokens[0],
                idle_timeout_ms,
            }))
        }
    }
}

/// Pushes a notification on its own stream, without holding up the request.
fn push(shared: &Arc<Shared>, to: Address, conn: u64, msg: Notify) {
    let Some(conn) = shared.conn(conn) else {
        tracing::debug!(%to, "notification target gone");
        return;
    };
    smol::spawn(async move {
        if let Err(e) = conn.request::<_, NotifyAck>(&msg, NOTIFY_TIMEOUT).await {
            tracing::info!(%to, error = %e, "notification not acknowledged");
        }
    })
    .detach();
}

fn random_token() -> [u8; TOKEN_LEN] {
    let mut t = [0u8; TOKEN_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut t)
        // ring fails only if the OS has no randomness: nothing to recover.
        .expect("OS random source failed");
    t
}
