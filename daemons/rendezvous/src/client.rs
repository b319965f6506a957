//! The client side: a peer's QUIC endpoint that keeps a connection to the rendezvous server,
//! publishes itself, resolves others and connects to them directly or through the relay.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sonm_net::identity::unix_now;
use sonm_net::{Address, Connection, Endpoint, EndpointConfig, EthKey, Identity, NetError};
use sonm_rendezvous_proto::{
    ALPN, Candidates, Control, Notify, NotifyAck, PunchNotify, Record, RecordError, Refusal,
    RelayAllocated, Request, Response, SignedRecord,
};

/// When punch datagrams go out, in ms after the start time: dense first (both sides start
/// within a path delay of each other), then sparse, and bounded.
const PUNCH_SCHEDULE_MS: [u64; 7] = [0, 20, 60, 140, 300, 600, 1000];
/// When relay binds go out, in ms after the allocation (a lost bind costs a resend, not a try).
const BIND_SCHEDULE_MS: [u64; 4] = [0, 30, 100, 300];
/// Waits before asking the relay policy again about a peer it refused (1.5 s in all: well
/// within the customer's direct deadline plus its wait for the relay).
const POLICY_RETRY_MS: [u64; 4] = [100, 200, 400, 800];

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused by the rendezvous server: {0:?}")]
    Refused(Refusal),
    #[error("{0} is not published")]
    NotFound(Address),
    #[error("the record for {address} does not verify: {error}")]
    BadRecord {
        address: Address,
        error: RecordError,
    },
    #[error("unexpected response to {request}: {response:?}")]
    Unexpected {
        request: &'static str,
        response: Box<Response>,
    },
    #[error("{0} did not agree to a relay in time")]
    RelayNotGranted(Address),
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The rendezvous server's UDP address.
    pub server: SocketAddr,
    /// Its Ethereum address, pinned at the handshake (`None` trusts any).
    pub server_address: Option<Address>,
    /// The endpoint's own settings (its `server_alpns` are the protocols this peer serves).
    pub endpoint: EndpointConfig,
    /// Private candidates to tell peers (our LAN addresses).
    pub private: Vec<SocketAddr>,
    pub request_timeout: Duration,
    /// How long after punching starts our first QUIC packet leaves: the peer's punches must
    /// open its NAT before our handshake reaches it, or the handshake waits for QUIC's
    /// retransmission (about a second).
    pub direct_lag: Duration,
    /// How long direct candidates are tried (after `direct_lag`) before the relay.
    pub direct_deadline: Duration,
    /// How long to wait for the peer's relay consent and for the relayed handshake.
    pub relay_deadline: Duration,
}

impl ClientConfig {
    pub fn new(server: SocketAddr, server_address: Option<Address>) -> Self {
        Self {
            server,
            server_address,
            endpoint: EndpointConfig {
                // Keeps the NAT mapping towards the server (and relayed paths) open.
                keep_alive: Some(Duration::from_secs(10)),
                ..EndpointConfig::default()
            },
            private: Vec::new(),
            request_timeout: Duration::from_secs(5),
            direct_lag: Duration::from_millis(30),
            direct_deadline: Duration::from_millis(1500),
            relay_deadline: Duration::from_secs(5),
        }
    }
}

/// Decides whether to agree to a relay with a peer that asked to be introduced.
pub type RelayPolicy = Arc<dyn Fn(Address) -> bool + Send + Sync>;

/// How a connection reached its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct(SocketAddr),
    Relay(SocketAddr),
}

struct Inner {
    endpoint: Endpoint,
    /// The same UDP socket as the endpoint's (a dup'd descriptor): punches and relay binds
    /// must leave from the port that carries QUIC, to open the mapping QUIC will use.
    raw: UdpSocket,
    server: Connection,
    key: EthKey,
    config: ClientConfig,
    seq: AtomicU64,
    policy: RelayPolicy,
    /// Callers of `connect_via_rendezvous` waiting for a relay allocation, by peer.
    waiters: Mutex<HashMap<Address, smol::channel::Sender<RelayAllocated>>>,
    refresher: Mutex<Option<smol::Task<()>>>,
}

/// A peer's endpoint connected to a rendezvous server. Cheap to clone.
#[derive(Clone)]
pub struct RendezvousClient {
    inner: Arc<Inner>,
    _notifications: Arc<smol::Task<()>>,
}

impl std::fmt::Debug for RendezvousClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RendezvousClient")
            .field("address", &self.inner.key.address())
            .field("server", &self.inner.config.server)
            .finish_non_exhaustive()
    }
}

impl RendezvousClient {
    /// Binds `local`, starts the endpoint and connects to the server; agrees to every relay.
    pub async fn bind(
        local: SocketAddr,
        key: &EthKey,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        Self::from_socket(UdpSocket::bind(local)?, key, config, Arc::new(|_| true)).await
    }

    /// Runs on `socket` (the one whose NAT mapping matters), with a relay policy.
    pub async fn from_socket(
        socket: UdpSocket,
        key: &EthKey,
        config: ClientConfig,
        policy: RelayPolicy,
    ) -> Result<Self, ClientError> {
        let raw = socket.try_clone()?;
        // The binding's expiry closes connections; the endpoint renews its certificate before
        // then, so the reconnect that follows presents a fresh one.
        let validity = Duration::from_secs(7 * 24 * 3600);
        let identity = Identity::generate(key, validity).map_err(NetError::Identity)?;
        let endpoint_config = sonm_net::EndpointConfig {
            renew: Some((key.clone(), validity)),
            ..config.endpoint.clone()
        };
        let endpoint = Endpoint::from_socket(socket, identity, endpoint_config)?;
        Self::from_endpoint(endpoint, raw, key, config, policy).await
    }

    /// Runs on an endpoint the caller already serves or dials from (a worker's task service,
    /// a node's client endpoint), so that its protocols and the rendezvous share one UDP
    /// socket. `raw` must be a duplicate of that endpoint's socket (`UdpSocket::try_clone` of
    /// the socket given to `Endpoint::from_socket`): punches and relay binds leave from it.
    /// `config.endpoint` is not used (the endpoint is already made); give the endpoint a
    /// keep-alive so that NAT mappings towards the server stay open. `key` must be the
    /// endpoint's identity key: the server accepts a publish only from the address it names.
    pub async fn from_endpoint(
        endpoint: Endpoint,
        raw: UdpSocket,
        key: &EthKey,
        config: ClientConfig,
        policy: RelayPolicy,
    ) -> Result<Self, ClientError> {
        let server = endpoint
            .connect(config.server, ALPN, config.server_address)
            .await?;
        let inner = Arc::new(Inner {
            endpoint,
            raw,
            server: server.clone(),
            key: key.clone(),
            config,
            seq: AtomicU64::new(0),
            policy,
            waiters: Mutex::new(HashMap::new()),
            refresher: Mutex::new(None),
        });
        let notifications = smol::spawn(notification_loop(Arc::downgrade(&inner), server));
        Ok(Self {
            inner,
            _notifications: Arc::new(notifications),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    pub fn address(&self) -> Address {
        self.inner.key.address()
    }

    /// Whether the connection to the server is still up (once it is gone, nothing is
    /// published, resolved or introduced: make a new client).
    pub fn is_connected(&self) -> bool {
        self.inner.server.quinn().close_reason().is_none()
    }

    /// Resolves when the connection to the server has ended (a worker then reconnects).
    pub async fn closed(&self) {
        let _ = self.inner.server.closed().await;
    }

    /// Sends any request and returns the server's response as it is (tests use it to
    /// misbehave; the typed methods below are what daemons call).
    pub async fn request(&self, req: &Request) -> Result<Response, ClientError> {
        self.inner.request(req).await
    }

    /// A signed record of ours with the next seq.
    pub fn signed_record(&self, private: Vec<SocketAddr>) -> SignedRecord {
        self.inner.signed_record(private)
    }

    /// Publishes our record (the configured private candidates) and keeps it fresh until the
    /// client is dropped. Returns our address as the server sees it.
    pub async fn publish(&self) -> Result<SocketAddr, ClientError> {
        let (observed, ttl_ms) = publish_once(&self.inner).await?;
        let weak = Arc::downgrade(&self.inner);
        let refresh = Duration::from_millis((ttl_ms / 3).max(100));
        let task = smol::spawn(async move {
            loop {
                smol::Timer::after(refresh).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = publish_once(&inner).await {
                    tracing::warn!(error = %e, "refreshing our record failed");
                }
            }
        });
        *self
            .inner
            .refresher
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(observed)
    }

    /// A worker's verified record and the address the server sees it at.
    pub async fn resolve(&self, address: Address) -> Result<(Record, SocketAddr), ClientError> {
        match self.request(&Request::Resolve { address }).await? {
            Response::Resolved { record, observed } => {
                record
                    .verify()
                    .map_err(|error| ClientError::BadRecord { address, error })?;
                if record.record.address != address {
                    return Err(ClientError::BadRecord {
                        address,
                        error: RecordError::WrongSigner {
                            claimed: address,
                            signer: record.record.address,
                        },
                    });
                }
                Ok((record.record, observed))
            }
            Response::NotFound => Err(ClientError::NotFound(address)),
            other => Err(unexpected("resolve", other)),
        }
    }

    /// Connects to `worker` speaking `alpn`: punches towards its candidates and tries them all
    /// at once; after `direct_deadline` without a handshake, goes through the relay.
    pub async fn connect_via_rendezvous(
        &self,
        worker: Address,
        alpn: &[u8],
    ) -> Result<(Connection, Path), ClientError> {
        let inner = &self.inner;
        let introduce = Request::Punch {
            target: worker,
            private: inner.config.private.clone(),
        };
        let notice = match self.request(&introduce).await? {
            Response::Punch(p) => p,
            Response::NotFound => return Err(ClientError::NotFound(worker)),
            other => return Err(unexpected("punch", other)),
        };
        smol::Timer::after(Duration::from_millis(u64::from(notice.start_in_ms))).await;
        let _punching = smol::spawn(punch(
            inner.raw.try_clone()?,
            inner.key.address(),
            notice.candidates.clone(),
        ));
        smol::Timer::after(inner.config.direct_lag).await;
        if let Some(done) = self.try_direct(worker, alpn, &notice.candidates).await {
            return Ok(done);
        }
        tracing::info!(%worker, "no direct path in time; asking for the relay");
        let (tx, rx) = smol::channel::bounded(1);
        self.waiters().insert(worker, tx);
        let result = self.connect_relayed(worker, alpn, rx).await;
        self.waiters().remove(&worker);
        result
    }

    async fn try_direct(
        &self,
        worker: Address,
        alpn: &[u8],
        candidates: &Candidates,
    ) -> Option<(Connection, Path)> {
        let all = candidates.all();
        let (tx, rx) = smol::channel::bounded(all.len().max(1));
        // Dropping the tasks (on return) abandons the losing attempts.
        let _attempts: Vec<smol::Task<()>> = all
            .into_iter()
            .map(|addr| {
                let endpoint = self.inner.endpoint.clone();
                let alpn = alpn.to_vec();
                let tx = tx.clone();
                smol::spawn(async move {
                    let r = endpoint.connect(addr, &alpn, Some(worker)).await;
                    let _ = tx.send((addr, r)).await;
                })
            })
            .collect();
        drop(tx);
        let deadline = smol::Timer::after(self.inner.config.direct_deadline);
        let first_ok = async {
            while let Ok((addr, r)) = rx.recv().await {
                match r {
                    Ok(conn) => return Some((conn, Path::Direct(addr))),
                    Err(e) => tracing::debug!(%addr, error = %e, "direct candidate failed"),
                }
            }
            None
        };
        smol::future::or(first_ok, async {
            deadline.await;
            None
        })
        .await
    }

    async fn connect_relayed(
        &self,
        worker: Address,
        alpn: &[u8],
        notified: smol::channel::Receiver<RelayAllocated>,
    ) -> Result<(Connection, Path), ClientError> {
        let deadline = self.inner.config.relay_deadline;
        let allocated = match self.request(&Request::Relay { peer: worker }).await? {
            Response::RelayAllocated(a) => a,
            Response::RelayPending => {
                let wait = async { notified.recv().await.ok() };
                let timeout = async {
                    smol::Timer::after(deadline).await;
                    None
                };
                smol::future::or(wait, timeout)
                    .await
                    .ok_or(ClientError::RelayNotGranted(worker))?
            }
            other => return Err(unexpected("relay", other)),
        };
        let _binding = smol::spawn(bind_relay(self.inner.raw.try_clone()?, allocated.clone()));
        let conn = sonm_net::with_timeout(
            deadline,
            self.inner
                .endpoint
                .connect(allocated.relay, alpn, Some(worker)),
        )
        .await?;
        Ok((conn, Path::Relay(allocated.relay)))
    }

    fn waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Address, smol::channel::Sender<RelayAllocated>>> {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unexpected(request: &'static str, response: Response) -> ClientError {
    match response {
        Response::Refused(r) => ClientError::Refused(r),
        response => ClientError::Unexpected {
            request,
            response: Box::new(response),
        },
    }
}

impl Inner {
    async fn request(&self, req: &Request) -> Result<Response, ClientError> {
        Ok(self
            .server
            .request(req, self.config.request_timeout)
            .await?)
    }

    fn signed_record(&self, private: Vec<SocketAddr>) -> SignedRecord {
        // Seq follows the clock (ms) so that a restarted daemon's first seq beats its last one,
        // and is strictly increasing within a run.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let prev = self
            .seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(1).max(now_ms))
            })
            .unwrap_or_else(|s| s);
        let seq = prev.saturating_add(1).max(now_ms);
        Record {
            address: self.key.address(),
            seq,
            timestamp: unix_now(),
            private,
        }
        .sign(|m| self.key.sign_message(m))
    }
}

async fn publish_once(inner: &Inner) -> Result<(SocketAddr, u64), ClientError> {
    let record = inner.signed_record(inner.config.private.clone());
    match inner.request(&Request::Publish(record)).await? {
        Response::Published { ttl_ms, observed } => Ok((observed, ttl_ms)),
        other => Err(unexpected("publish", other)),
    }
}

/// Serves the server's pushed notifications until the connection ends.
async fn notification_loop(inner: std::sync::Weak<Inner>, server: Connection) {
    loop {
        let (req, responder) = match server.accept_request::<Notify>().await {
            Ok(r) => r,
            Err(NetError::Frame(e)) => {
                tracing::warn!(error = %e, "bad notification frame");
                continue;
            }
            Err(e) => {
                tracing::info!(error = %e, "rendezvous connection ended");
                break;
            }
        };
        let _ = responder.respond(&NotifyAck).await;
        let Some(inner) = inner.upgrade() else { break };
        match req {
            Notify::Punch(p) => {
                smol::spawn(introduced(Arc::downgrade(&inner), server.clone(), p)).detach();
            }
            Notify::RelayAllocated(a) => on_relay(&inner, a),
        }
    }
}

/// Punches towards a peer the server introduced and agrees to a relay with it, if the policy
/// accepts the peer. A refusal is asked again for a short while (`POLICY_RETRY_MS`): a worker's
/// policy may learn of a deal opened seconds ago only by looking it up, which its first
/// refusal starts, and the customer is already punching and will soon ask for the relay.
async fn introduced(inner: std::sync::Weak<Inner>, server: Connection, p: PunchNotify) {
    let received = std::time::Instant::now();
    let mut retries = POLICY_RETRY_MS.iter();
    let inner = loop {
        let Some(inner) = inner.upgrade() else { return };
        if (inner.policy)(p.peer) {
            break inner;
        }
        let Some(&wait) = retries.next() else {
            tracing::info!(peer = %p.peer, "not punching for a peer our policy refuses");
            return;
        };
        drop(inner);
        smol::Timer::after(Duration::from_millis(wait)).await;
    };
    let Ok(raw) = inner.raw.try_clone() else {
        return;
    };
    let me = inner.key.address();
    let start = Duration::from_millis(u64::from(p.start_in_ms)).saturating_sub(received.elapsed());
    let candidates = p.candidates.clone();
    smol::spawn(async move {
        smol::Timer::after(start).await;
        punch(raw, me, candidates).await;
    })
    .detach();
    // Agree to a relay now: the customer asks only if punching fails, and the server
    // allocates only once both sides asked.
    let timeout = inner.config.request_timeout;
    let weak = Arc::downgrade(&inner);
    drop(inner);
    let r = server
        .request::<_, Response>(&Request::Relay { peer: p.peer }, timeout)
        .await;
    match (r, weak.upgrade()) {
        (Ok(Response::RelayAllocated(a)), Some(inner)) => on_relay(&inner, a),
        (Ok(Response::RelayPending), _) => {}
        (other, _) => tracing::info!(?other, "relay consent not recorded"),
    }
}

fn on_relay(inner: &Inner, a: RelayAllocated) {
    let waiter = inner
        .waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&a.peer)
        .cloned();
    match waiter {
        // A caller of connect_via_rendezvous binds itself.
        Some(tx) => {
            let _ = tx.try_send(a);
        }
        None => {
            if let Ok(raw) = inner.raw.try_clone() {
                smol::spawn(bind_relay(raw, a)).detach();
            }
        }
    }
}

async fn punch(raw: UdpSocket, me: Address, candidates: Candidates) {
    let datagram = Control::Punch { from: me }.encode();
    let targets = candidates.all();
    let mut at = 0;
    for step in PUNCH_SCHEDULE_MS {
        smol::Timer::after(Duration::from_millis(step - at)).await;
        at = step;
        for t in &targets {
            // The socket is non-blocking (quinn's); a full buffer loses one punch of several.
            if let Err(e) = raw.send_to(&datagram, t) {
                tracing::debug!(target = %t, error = %e, "punch not sent");
            }
        }
    }
}

async fn bind_relay(raw: UdpSocket, a: RelayAllocated) {
    let datagram = Control::Bind { token: a.token }.encode();
    let mut at = 0;
    for step in BIND_SCHEDULE_MS {
        smol::Timer::after(Duration::from_millis(step - at)).await;
        at = step;
        if let Err(e) = raw.send_to(&datagram, a.relay) {
            tracing::debug!(relay = %a.relay, error = %e, "relay bind not sent");
        }
    }
}
