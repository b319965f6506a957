//! A quinn endpoint on smol whose peers are Ethereum addresses.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use bytes::{Buf, Bytes};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, TransportErrorCode, VarInt};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::sign::SingleCertAndKey;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{
    DEFAULT_MAX_FRAME, Decoded, FrameDecoder, FrameError, decode_message, encode_frame,
};
use crate::identity::{EthKey, Identity, IdentityError, VerifiedPeer};
use crate::verify::{Outcome, PeerVerifier};

/// TLS alert no_application_protocol (RFC 8446), as QUIC carries it (0x100 + alert).
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

/// Stream error code sent with STOP_SENDING when a peer's frame breaks the rules.
pub const STREAM_ERR_BAD_FRAME: u32 = 1;

/// The server name sent in the handshake: peers are named by address, not DNS, so it is fixed.
const SERVER_NAME: &str = "peer.sonm.invalid";

/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// We refused the peer's certificate (or it was not the peer we dialled).
    #[error("peer identity rejected: {0}")]
    Identity(#[from] IdentityError),
    /// The peer supports none of the ALPN protocols offered.
    #[error("no common application protocol (ALPN)")]
    AlpnMismatch,
    /// The peer aborted the handshake with a TLS alert (for example, it refused our identity).
    #[error("peer refused the handshake (TLS alert {alert}): {reason}")]
    HandshakeRefused { alert: u8, reason: String },
    /// Our TLS stack failed the handshake (for example, a bad handshake signature).
    #[error("handshake failed locally (TLS alert {alert}): {reason}")]
    HandshakeFailed { alert: u8, reason: String },
    #[error("handshake failed: no verified peer identity")]
    NoPeerIdentity,
    #[error("cannot start connection: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(ConnectionError),
    #[error("stream write: {0}")]
    Write(quinn::WriteError),
    #[error("stream read: {0}")]
    Read(quinn::ReadError),
    #[error("stream already closed")]
    ClosedStream(#[from] quinn::ClosedStream),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC TLS configuration: {0}")]
    QuicTls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer finished the stream without a response")]
    NoResponse,
    #[error("peer finished the stream without a request")]
    NoRequest,
}

/// Endpoint settings. Defaults suit control traffic.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// ALPN protocols this endpoint serves; empty makes it a client only.
    pub server_alpns: Vec<Vec<u8>>,
    /// Largest frame body accepted or sent.
    pub max_frame: u32,
    /// A connection with no traffic for this long is closed (also bounds handshakes).
    pub idle_timeout: Duration,
    /// Keep-alive interval; keeps NAT bindings open for connections that must outlive idleness.
    pub keep_alive: Option<Duration>,
    /// Concurrent bidirectional streams a peer may open; QUIC flow control does the rest.
    pub max_concurrent_bidi_streams: u32,
    /// Keys the stateless-reset tokens. A server that keeps the same seed across restarts
    /// (see [`EthKey::stateless_reset_seed`]) tells its old peers at once that their
    /// connections are gone; with a random key (`None`) they wait out the idle timeout.
    pub reset_seed: Option<[u8; 32]>,
    /// Renews the endpoint's identity before it expires: a new certificate bound to this key
    /// for this validity, made when a connection is set up and the current one has less than a
    /// third of its validity left. For daemons that run longer than one validity; `None`: the
    /// identity given at bind time for the endpoint's whole life.
    pub renew: Option<(EthKey, Duration)>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            server_alpns: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(30),
            keep_alive: None,
            max_concurrent_bidi_streams: 100,
            reset_seed: None,
            renew: None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    identity: std::sync::RwLock<Identity>,
    renew: Option<(EthKey, Duration)>,
    provider: Arc<CryptoProvider>,
    transport: Arc<quinn::TransportConfig>,
    server_alpns: Vec<Vec<u8>>,
    max_frame: u32,
}

impl Shared {
    /// The identity to present now, renewed first when it is due (see
    /// [`EndpointConfig::renew`]). Connections already set up keep the certificate they used.
    fn identity(&self) -> Identity {
        let current = self
            .identity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some((key, validity)) = &self.renew else {
            return current;
        };
        let now = crate::identity::unix_now();
        if current.binding().not_after > now.saturating_add(validity.as_secs() / 3) {
            return current;
        }
        match Identity::generate(key, *validity) {
            Ok(fresh) => {
                tracing::info!(
                    address = %fresh.address(),
                    old_not_after = current.binding().not_after,
                    not_after = fresh.binding().not_after,
                    "QUIC identity renewed"
                );
                *self
                    .identity
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
                fresh
            }
            Err(e) => {
                tracing::error!("renewing the QUIC identity failed: {e}; keeping the current one");
                current
            }
        }
    }

    fn client_config(
        &self,
        alpn: &[u8],
        expected: Option<Address>,
    ) -> Result<(quinn::ClientConfig, Outcome), NetError> {
        let (verifier, outcome) =
            PeerVerifier::new(self.provider.signature_verification_algorithms, expected);
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                self.identity().certified_key(),
            )));
        tls.alpn_protocols = vec![alpn.to_vec()];
        // A resumed session skips certificate verification, and with it the expected-peer check.
        tls.resumption = Resumption::disabled();
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(self.transport.clone());
        Ok((config, outcome))
    }

    fn server_config(&self) -> Result<(quinn::ServerConfig, Outcome), NetError> {
        let (verifier, outcome) =
            PeerVerifier::new(self.provider.signature_verification_algorithms, None);
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(
                self.identity().certified_key(),
            )));
        tls.alpn_protocols = self.server_alpns.clone();
        // No resumption: every connection proves its identity afresh (and no 0-RTT replays).
        tls.session_storage = Arc::new(NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
        let mut config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        config.transport_config(self.transport.clone());
        Ok((config, outcome))
    }
}

/// A QUIC endpoint (one UDP socket) that dials and/or accepts peers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl Endpoint {
    /// Binds a UDP socket at `addr`.
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        config: EndpointConfig,
    ) -> Result<Self, NetError> {
        Self::from_socket(UdpSocket::bind(addr)?, identity, config)
    }

    /// Runs on an existing socket (hole punching needs QUIC on the socket that punched).
    pub fn from_socket(
        socket: UdpSocket,
        identity: Identity,
        config: EndpointConfig,
    ) -> Result<Self, NetError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(config.idle_timeout)
                    .map_err(|_| std::io::Error::other("idle timeout out of range"))?,
            ))
            .keep_alive_interval(config.keep_alive)
            .max_concurrent_bidi_streams(VarInt::from_u32(config.max_concurrent_bidi_streams))
            // Nothing uses unidirectional streams yet; refuse them rather than buffer them.
            .max_concurrent_uni_streams(VarInt::from_u32(0));
        if let Some((key, _)) = &config.renew
            && key.address() != identity.address()
        {
            // A peer is who its key says: renewal may change the certificate, never the address.
            return Err(NetError::Io(std::io::Error::other(
                "the renewal key is not the identity's key",
            )));
        }
        let shared = Arc::new(Shared {
            identity: std::sync::RwLock::new(identity),
            renew: config.renew,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            transport: Arc::new(transport),
            server_alpns: config.server_alpns,
            max_frame: config.max_frame,
        });
        // The endpoint-wide server config only gates whether we accept at all: each incoming
        // connection is accepted with its own config (see `Incoming::handshake`).
        let server = if shared.server_alpns.is_empty() {
            None
        } else {
            Some(shared.server_config()?.0)
        };
        let endpoint_config = match config.reset_seed {
            Some(seed) => {
                let mut c = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    &seed,
                )));
                // The restarted endpoint must also recognise the old connection IDs as its
                // own, or it drops their packets as invalid instead of answering with a reset.
                let cid_key = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
                c.cid_generator(move || {
                    Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
                });
                c
            }
            None => quinn::EndpointConfig::default(),
        };
        let inner = quinn::Endpoint::new(
            endpoint_config,
            server,
            socket,
            Arc::new(quinn::SmolRuntime),
        )?;
        Ok(Self { inner, shared })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.inner.local_addr()?)
    }

    /// Our own Ethereum address.
    pub fn address(&self) -> Address {
        self.shared.identity().address()
    }

    /// Dials `addr` speaking `alpn`. With `expected_peer`, a peer with any other address fails
    /// the handshake with [`IdentityError::UnexpectedPeer`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[u8],
        expected_peer: Option<Address>,
    ) -> Result<Connection, NetError> {
        let (config, outcome) = self.shared.client_config(alpn, expected_peer)?;
        let connecting = self.inner.connect_with(config, addr, SERVER_NAME)?;
        let result = connecting.await;
        Connection::finish_handshake(result, &outcome, self.shared.max_frame)
    }

    /// The next incoming connection attempt; `None` once the endpoint is closed. Handshake it
    /// with [`Incoming::handshake`] (in its own task, so one slow peer does not hold up others).
    pub async fn accept(&self) -> Option<Incoming> {
        let inner = self.inner.accept().await?;
        Some(Incoming {
            inner,
            shared: self.shared.clone(),
        })
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.inner.close(VarInt::from_u32(0), b"endpoint closed");
    }

    /// Waits until closed connections have told their peers.
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }

    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }
}

/// A connection attempt not yet handshaken.
#[derive(Debug)]
pub struct Incoming {
    inner: quinn::Incoming,
    shared: Arc<Shared>,
}

impl Incoming {
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Refuses the attempt (for example, over a rate limit) without a handshake.
    pub fn refuse(self) {
        self.inner.refuse();
    }

    /// Runs the handshake; on success the peer's Ethereum identity is verified.
    pub async fn handshake(self) -> Result<Connection, NetError> {
        let (config, outcome) = self.shared.server_config()?;
        let result = match self.inner.accept_with(Arc::new(config)) {
            Ok(connecting) => connecting.await,
            Err(e) => Err(e),
        };
        Connection::finish_handshake(result, &outcome, self.shared.max_frame)
    }
}

/// An established connection to a verified peer.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: quinn::Connection,
    peer: VerifiedPeer,
    alpn: Vec<u8>,
    max_frame: u32,
}

impl Connection {
    fn finish_handshake(
        result: Result<quinn::Connection, ConnectionError>,
        outcome: &Outcome,
        max_frame: u32,
    ) -> Result<Self, NetError> {
        let verified = outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (result, verified) {
            (Ok(inner), Some(Ok(peer))) => {
                let alpn = inner
                    .handshake_data()
                    .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                    .and_then(|d| d.protocol)
                    .unwrap_or_default();
                Ok(Self {
                    inner,
                    peer,
                    alpn,
                    max_frame,
                })
            }
            // Our verifier's typed reason beats the string quinn carries.
            (_, Some(Err(e))) => Err(NetError::Identity(e)),
            (Ok(inner), None) => {
                inner.close(VarInt::from_u32(0), b"no peer identity");
                Err(NetError::NoPeerIdentity)
            }
            (Err(e), _) => Err(map_connection_error(e)),
        }
    }

    /// The peer's verified Ethereum address.
    pub fn peer_address(&self) -> Address {
        self.peer.address
    }

    /// When the peer's identity binding expires (Unix seconds).
    pub fn peer_not_after(&self) -> u64 {
        self.peer.not_after
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    pub fn close(&self, code: u32, reason: &[u8]) {
        self.inner.close(VarInt::from_u32(code), reason);
    }

    /// Resolves when the connection is closed, with the reason.
    pub async fn closed(&self) -> ConnectionError {
        self.inner.closed().await
    }

    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }

    pub async fn open_bi(&self) -> Result<(FramedSend, FramedRecv), NetError> {
        let (send, recv) = self.inner.open_bi().await.map_err(map_connection_error)?;
        Ok((
            FramedSend::new(send, self.max_frame),
            FramedRecv::new(recv, self.max_frame),
        ))
    }

    pub async fn accept_bi(&self) -> Result<(FramedSend, FramedRecv), NetError> {
        let (send, recv) = self.inner.accept_bi().await.map_err(map_connection_error)?;
        Ok((
            FramedSend::new(send, self.max_frame),
            FramedRecv::new(recv, self.max_frame),
        ))
    }

    /// Sends `req` on a new bidirectional stream and waits up to `timeout` for one response.
    pub async fn request<Req, Resp>(&self, req: &Req, timeout: Duration) -> Result<Resp, NetError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        with_timeout(timeout, async {
            let (mut send, mut recv) = self.open_bi().await?;
            send.send(req).await?;
            send.finish()?;
            recv.recv().await?.ok_or(NetError::NoResponse)
        })
        .await
    }

    /// Waits for the peer's next request stream and reads its request.
    pub async fn accept_request<Req: DeserializeOwned>(
        &self,
    ) -> Result<(Req, Responder), NetError> {
        let (send, mut recv) = self.accept_bi().await?;
        let req = recv.recv().await?.ok_or(NetError::NoRequest)?;
        Ok((req, Responder { send }))
    }
}

/// The sending half of a request's stream, for its one response.
#[derive(Debug)]
pub struct Responder {
    send: FramedSend,
}

impl Responder {
    pub async fn respond<T: Serialize + ?Sized>(mut self, resp: &T) -> Result<(), NetError> {
        self.send.send(resp).await?;
        self.send.finish()?;
        Ok(())
    }
}

/// Sends typed frames on a QUIC stream. Writes wait while the peer's flow-control window is
/// full, which is the backpressure.
#[derive(Debug)]
pub struct FramedSend {
    stream: quinn::SendStream,
    max_frame: u32,
}

impl FramedSend {
    pub fn new(stream: quinn::SendStream, max_frame: u32) -> Self {
        Self { stream, max_frame }
    }

    pub async fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), NetError> {
        let frame = encode_frame(msg, self.max_frame)?;
        self.send_raw(&frame).await
    }

    /// Writes bytes as they are, framed or not (tests use it to misbehave).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        self.stream.write_all(bytes).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(c) => map_connection_error(c),
            e => NetError::Write(e),
        })
    }

    /// Ends the stream after what was sent.
    pub fn finish(&mut self) -> Result<(), NetError> {
        self.stream.finish()?;
        Ok(())
    }

    pub fn quinn(&mut self) -> &mut quinn::SendStream {
        &mut self.stream
    }
}

/// Receives typed frames from a QUIC stream through [`FrameDecoder`].
#[derive(Debug)]
pub struct FramedRecv {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    pending: Bytes,
}

impl FramedRecv {
    pub fn new(stream: quinn::RecvStream, max_frame: u32) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(max_frame),
            pending: Bytes::new(),
        }
    }

    /// The next message; `None` when the peer finished the stream between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, NetError> {
        match self.recv_frame().await? {
            Some(body) => match decode_message(&body) {
                Ok(msg) => Ok(Some(msg)),
                Err(e) => Err(self.refuse(e)),
            },
            None => Ok(None),
        }
    }

    /// The next frame body, undecoded.
    pub async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, NetError> {
        loop {
            if !self.pending.is_empty() {
                let step = self.decoder.decode(&self.pending);
                let (used, decoded) = match step {
                    Ok(s) => s,
                    Err(e) => return Err(self.refuse(e)),
                };
                self.pending.advance(used);
                if let Decoded::Frame(body) = decoded {
                    return Ok(Some(body));
                }
            }
            // Read only when asked: an unread stream stalls its sender via flow control.
            let chunk = self
                .stream
                .read_chunk(READ_CHUNK, true)
                .await
                .map_err(|e| match e {
                    quinn::ReadError::ConnectionLost(c) => map_connection_error(c),
                    e => NetError::Read(e),
                })?;
            match chunk {
                Some(chunk) => self.pending = chunk.bytes,
                None => {
                    return match self.decoder.end_of_stream() {
                        None => Ok(None),
                        Some(e) => Err(NetError::Frame(e)),
                    };
                }
            }
        }
    }

    /// Tells the peer to stop sending on a stream that broke the framing rules.
    fn refuse(&mut self, e: FrameError) -> NetError {
        tracing::warn!(error = %e, "refusing stream with a bad frame");
        self.pending = Bytes::new();
        // Already stopped or finished: nothing more to tell the peer.
        let _ = self.stream.stop(VarInt::from_u32(STREAM_ERR_BAD_FRAME));
        NetError::Frame(e)
    }

    pub fn quinn(&mut self) -> &mut quinn::RecvStream {
        &mut self.stream
    }
}

/// Runs `fut`, giving up with [`NetError::Timeout`] after `timeout`.
pub async fn with_timeout<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    smol::future::or(fut, async {
        smol::Timer::after(timeout).await;
        Err(NetError::Timeout(timeout))
    })
    .await
}

/// Turns a TLS alert into the handshake errors: in TLS 1.3 a client finishes its side of the
/// handshake before the server has checked its certificate, so the server's refusal may reach
/// a client only at its first stream operation.
fn map_connection_error(e: ConnectionError) -> NetError {
    let code = match &e {
        ConnectionError::ConnectionClosed(close) => {
            Some((close.error_code, close.reason.to_vec(), true))
        }
        ConnectionError::TransportError(te) => {
            Some((te.code, te.reason.clone().into_bytes(), false))
        }
        _ => None,
    };
    if let Some((code, reason, by_peer)) = code {
        let raw = u64::from(code);
        // QUIC carries TLS alerts as 0x100 + alert.
        if (0x100..0x200).contains(&raw) {
            let alert = (raw - 0x100) as u8;
            if code == TransportErrorCode::crypto(ALERT_NO_APPLICATION_PROTOCOL) {
                return NetError::AlpnMismatch;
            }
            let reason = String::from_utf8_lossy(&reason).into_owned();
            return if by_peer {
                NetError::HandshakeRefused { alert, reason }
            } else {
                NetError::HandshakeFailed { alert, reason }
            };
        }
    }
    NetError::Connection(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{EthKey, generate_tls_key, stolen_certificate};

    const ALPN: &[u8] = b"sonm-test/1";

    fn endpoint(identity: Identity, server: bool) -> Endpoint {
        let config = EndpointConfig {
            server_alpns: if server {
                vec![ALPN.to_vec()]
            } else {
                Vec::new()
            },
            ..EndpointConfig::default()
        };
        Endpoint::bind("127.0.0.1:0".parse().unwrap(), identity, config).unwrap()
    }

    fn identity() -> Identity {
        Identity::generate(&EthKey::random(), Duration::from_secs(3600)).unwrap()
    }

    // A daemon that runs longer than one validity: a connection set up in the last third of
    // the certificate's life gets a renewed one, for the same address; without renewal the
    // peer would see the first certificate's end. A renewal key of another address is refused.
    #[test]
    fn the_identity_is_renewed_before_it_expires() {
        smol::block_on(with_timeout(Duration::from_secs(30), async {
            let key = EthKey::random();
            let validity = Duration::from_secs(3);
            let config = |renew_key: &EthKey| EndpointConfig {
                server_alpns: vec![ALPN.to_vec()],
                renew: Some((renew_key.clone(), validity)),
                ..EndpointConfig::default()
            };
            let mine = Identity::generate(&key, validity)?;
            assert!(
                Endpoint::bind(
                    "127.0.0.1:0".parse().unwrap(),
                    mine.clone(),
                    config(&EthKey::random())
                )
                .is_err()
            );
            let server = Endpoint::bind("127.0.0.1:0".parse().unwrap(), mine, config(&key))?;
            let addr = server.local_addr()?;
            let accepting = smol::spawn(async move {
                let mut held = Vec::new();
                while let Some(incoming) = server.accept().await {
                    if let Ok(c) = incoming.handshake().await {
                        held.push(c);
                    }
                }
            });
            let client = endpoint(identity(), false);
            let first = client.connect(addr, ALPN, Some(key.address())).await?;
            let first_end = first.peer_not_after();
            // Into the last third of the first certificate's life.
            smol::Timer::after(Duration::from_millis(2300)).await;
            let second = client.connect(addr, ALPN, Some(key.address())).await?;
            assert_eq!(second.peer_address(), key.address());
            assert!(
                second.peer_not_after() > first_end,
                "not renewed: {} <= {first_end}",
                second.peer_not_after()
            );
            // After the first certificate's end, peers still connect.
            smol::Timer::after(Duration::from_millis(1500)).await;
            let third = client.connect(addr, ALPN, Some(key.address())).await?;
            assert!(third.peer_not_after() >= second.peer_not_after());
            drop(accepting);
            Ok(())
        }))
        .unwrap();
    }

    // A copied certificate is public; without its TLS key the handshake signature fails.
    #[test]
    fn stolen_certificate_fails_the_handshake_signature() {
        smol::block_on(with_timeout(Duration::from_secs(30), async {
            let victim = identity();
            let thief = stolen_certificate(&victim, &generate_tls_key().unwrap());

            // Thief as server: the client's check of CertificateVerify fails.
            let server = endpoint(thief.clone(), true);
            let addr = server.local_addr()?;
            let accepting =
                smol::spawn(async move { server.accept().await.unwrap().handshake().await });
            let client = endpoint(identity(), false);
            match client.connect(addr, ALPN, Some(victim.address())).await {
                // decrypt_error (51): the signature does not verify with the certified key.
                Err(NetError::HandshakeFailed { alert: 51, .. }) => {}
                other => panic!("client accepted a stolen certificate: {other:?}"),
            }
            assert!(accepting.await.is_err());

            // Thief as client: the server's check fails.
            let server = endpoint(identity(), true);
            let addr = server.local_addr()?;
            let accepting =
                smol::spawn(async move { server.accept().await.unwrap().handshake().await });
            let client = endpoint(thief, false);
            let _ = client.connect(addr, ALPN, None).await;
            match accepting.await {
                Err(NetError::HandshakeFailed { alert: 51, .. }) => {}
                other => panic!("server accepted a stolen certificate: {other:?}"),
            }
            Ok(())
        }))
        .unwrap();
    }
}
