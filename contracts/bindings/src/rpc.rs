//! Several JSON-RPC endpoints of one chain behind one alloy provider: requests go to one endpoint
//! at a time and move on to the next when it fails at the transport level (connection refused
//! or reset, timeout, an HTTP error status, a body that is not JSON-RPC). A JSON-RPC error answer
//! is the chain's answer and is returned, not retried elsewhere. The endpoint that served last
//! is kept until it fails ("sticky"), so consecutive reads see one node's view of the chain.
//!
//! Each endpoint's chain id is checked before its first use and again after it has failed (the
//! process behind a URL may have been replaced); an endpoint on another chain is refused for
//! the life of the process. [`Failover::probe`] checks every endpoint at once, for start-up.
//!
//! Health: after a failover away from a preferred endpoint, at most once per
//! [`FailoverOptions::recheck_after`] the next request first asks the preferred endpoints
//! (chain id and block number, each under the request timeout) and moves back to the first that
//! answers — so the configured order holds once the primary recovers, without a background task.
//! Requests are not balanced across endpoints on purpose: one endpoint at a time keeps a
//! consistent view (a block read from one node and its logs from a lagging one would disagree).
//!
//! Why not alloy's `FallbackLayer` (in `alloy_transport::layers`, no feature flag): it sends each
//! request to the best-ranked endpoints *in parallel* unless its method is in a by-name set of
//! "sequential" methods, ranks endpoints by latency as well as by errors, and checks no chain
//! id; a transaction sender wants one endpoint at a time and all of them on the right chain.
//!
//! Retrying a request on the next endpoint is safe for everything the daemons send: reads, and
//! `eth_sendRawTransaction` of a transaction signed here (the same bytes, the same nonce: a node
//! that has it already answers with an error, see [`crate::tx`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::Http;
use alloy::transports::http::reqwest::{self, Url};
use alloy::transports::utils::guess_local_url;
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};
use alloy_json_rpc::{RequestPacket, ResponsePacket};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::deploy::LOCAL_POLL_INTERVAL;

/// One or more JSON-RPC endpoints of the same chain, in order of preference. In TOML either a
/// string (`rpc_url = "http://a:8545"`) or a list (`rpc_url = ["http://a:8545", "http://b:8545"]`);
/// plain `http://` only (the client is built without TLS), at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcUrls(Vec<Url>);

/// Why a list of endpoints is not usable, or why none of them could be.
#[derive(Debug, Error)]
pub enum RpcError {
    #[error("no chain RPC endpoint given")]
    Empty,
    #[error("chain RPC endpoint {0:?} is not a URL")]
    NotAUrl(String),
    #[error("chain RPC endpoint {0:?} must be an http:// URL (no TLS in this build)")]
    NotHttp(String),
    #[error("chain RPC endpoint {endpoint} serves chain {actual}, expected chain {expected}")]
    WrongChain {
        endpoint: Url,
        expected: u64,
        actual: u64,
    },
    #[error("no chain RPC endpoint answers: {0}")]
    Unreachable(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl RpcUrls {
    pub fn new<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> Result<Self, RpcError> {
        let urls = urls
            .into_iter()
            .map(|s| {
                let s = s.as_ref();
                let url = Url::parse(s).map_err(|_| RpcError::NotAUrl(s.to_owned()))?;
                if url.scheme() != "http" {
                    return Err(RpcError::NotHttp(s.to_owned()));
                }
                Ok(url)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(RpcError::Empty);
        }
        Ok(Self(urls))
    }

    pub fn urls(&self) -> &[Url] {
        &self.0
    }
}

impl std::str::FromStr for RpcUrls {
    type Err = RpcError;

    /// One URL.
    fn from_str(s: &str) -> Result<Self, RpcError> {
        Self::new([s])
    }
}

impl fmt::Display for RpcUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<&str> = self.0.iter().map(Url::as_str).collect();
        f.write_str(&list.join(", "))
    }
}

impl Serialize for RpcUrls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one.as_str()),
            many => s.collect_seq(many.iter().map(Url::as_str)),
        }
    }
}

impl<'de> Deserialize<'de> for RpcUrls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = d.deserialize_any(OneOrMany)?;
        RpcUrls::new(list).map_err(de::Error::custom)
    }
}

/// A string or a sequence of strings, as a list. Also for configurations that keep their own
/// field type: `#[serde(deserialize_with = "sonm_contracts::rpc::one_or_many")]`.
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(OneOrMany)
}

struct OneOrMany;

impl<'de> Visitor<'de> for OneOrMany {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a URL or a list of URLs")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(vec![v.to_owned()])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element::<String>()? {
            out.push(s);
        }
        Ok(out)
    }
}

/// Timeouts of each endpoint's HTTP client. reqwest has none by default, and an endpoint that
/// accepts connections but never answers must count as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverOptions {
    pub connect_timeout: Duration,
    /// The whole request, answer included (`eth_getLogs` over many blocks can take a while).
    pub request_timeout: Duration,
    /// How often, while requests go to a less preferred endpoint, the preferred ones are asked
    /// again whether they are back.
    pub recheck_after: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            recheck_after: Duration::from_secs(30),
        }
    }
}

const UNCHECKED: u8 = 0;
const RIGHT_CHAIN: u8 = 1;
const WRONG_CHAIN: u8 = 2;

#[derive(Debug)]
struct Endpoint {
    url: Url,
    http: Http<reqwest::Client>,
    /// The same client without failover, for the chain id check.
    direct: RootProvider,
    chain: AtomicU8,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<Endpoint>,
    /// The endpoint that served last: the first one tried.
    current: AtomicUsize,
    chain_id: u64,
    recheck_after: Duration,
    /// When the preferred endpoints were last asked whether they are back.
    last_recheck: std::sync::Mutex<Instant>,
}

/// The failover transport (a tower `Service`, hence an alloy `Transport`) over [`RpcUrls`] of
/// the chain `chain_id`. Clones share the endpoints and their state.
#[derive(Debug, Clone)]
pub struct Failover(Arc<Inner>);

impl Failover {
    pub fn new(urls: &RpcUrls, chain_id: u64, options: FailoverOptions) -> Result<Self, RpcError> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .build()
            .map_err(RpcError::Client)?;
        let endpoints = urls
            .urls()
            .iter()
            .map(|url| {
                let http = Http::with_client(client.clone(), url.clone());
                Endpoint {
                    url: url.clone(),
                    direct: RootProvider::new(RpcClient::new(http.clone(), guess_local_url(url))),
                    http,
                    chain: AtomicU8::new(UNCHECKED),
                }
            })
            .collect();
        Ok(Self(Arc::new(Inner {
            endpoints,
            current: AtomicUsize::new(0),
            chain_id,
            recheck_after: options.recheck_after,
            last_recheck: std::sync::Mutex::new(Instant::now()),
        })))
    }

    /// The endpoint requests go to first (the one that served last).
    pub fn current(&self) -> &Url {
        &self.0.endpoints[self.0.current.load(Ordering::Relaxed)].url
    }

    /// Checks every endpoint's chain id now: `Err` if one serves another chain (a configuration
    /// error, found at start rather than at the first failover) or if none answers. An endpoint
    /// that does not answer is logged and checked again before its first use.
    pub async fn probe(&self) -> Result<(), RpcError> {
        let mut down = Vec::new();
        for e in &self.0.endpoints {
            match self.0.check(e).await {
                Ok(()) => {}
                Err(Checked::Wrong(actual)) => {
                    return Err(RpcError::WrongChain {
                        endpoint: e.url.clone(),
                        expected: self.0.chain_id,
                        actual,
                    });
                }
                Err(Checked::Failed(err)) => {
                    tracing::warn!(endpoint = %e.url, error = %err, "chain RPC endpoint does not answer");
                    down.push(format!("{}: {err}", e.url));
                }
            }
        }
        if down.len() == self.0.endpoints.len() {
            return Err(RpcError::Unreachable(down.join("; ")));
        }
        Ok(())
    }

    /// A provider through these endpoints, without a key (reads).
    pub fn provider(&self) -> DynProvider {
        let local = self.is_local();
        tune(
            ProviderBuilder::new()
                .connect_client(RpcClient::new(self.clone(), local))
                .erased(),
            local,
        )
    }

    /// A provider through these endpoints that signs with `signer`.
    pub fn signing_provider(&self, signer: PrivateKeySigner) -> DynProvider {
        let local = self.is_local();
        tune(
            ProviderBuilder::new()
                .wallet(EthereumWallet::from(signer))
                .connect_client(RpcClient::new(self.clone(), local))
                .erased(),
            local,
        )
    }

    fn is_local(&self) -> bool {
        self.0.endpoints.iter().all(|e| guess_local_url(&e.url))
    }
}

fn tune(provider: DynProvider, local: bool) -> DynProvider {
    if local {
        provider.client().set_poll_interval(LOCAL_POLL_INTERVAL);
    }
    provider
}

enum Checked {
    Wrong(u64),
    Failed(TransportError),
}

impl Inner {
    async fn check(&self, e: &Endpoint) -> Result<(), Checked> {
        match e.chain.load(Ordering::Relaxed) {
            RIGHT_CHAIN => return Ok(()),
            WRONG_CHAIN => return Err(Checked::Wrong(0)),
            _ => {}
        }
        let actual = e.direct.get_chain_id().await.map_err(Checked::Failed)?;
        if actual == self.chain_id {
            e.chain.store(RIGHT_CHAIN, Ordering::Relaxed);
            Ok(())
        } else {
            e.chain.store(WRONG_CHAIN, Ordering::Relaxed);
            tracing::error!(
                endpoint = %e.url, actual, expected = self.chain_id,
                "chain RPC endpoint serves another chain: refused"
            );
            Err(Checked::Wrong(actual))
        }
    }

    /// Whether it is time to ask the preferred endpoints again (and, if so, resets the clock:
    /// one request per period does it).
    fn recheck_due(&self) -> bool {
        let mut last = self
            .last_recheck
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.elapsed() < self.recheck_after {
            return false;
        }
        *last = Instant::now();
        true
    }

    /// Moves back to the most preferred endpoint ahead of the current one that answers (its
    /// chain id, then a block number).
    async fn recheck(&self, current: usize) -> usize {
        for (i, e) in self.endpoints[..current].iter().enumerate() {
            if self.check(e).await.is_ok() && e.direct.get_block_number().await.is_ok() {
                self.current.store(i, Ordering::Relaxed);
                tracing::info!(
                    from = %self.endpoints[current].url, to = %e.url,
                    "chain RPC endpoint {} is back: using it again", e.url
                );
                return i;
            }
        }
        current
    }

    async fn request(&self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let n = self.endpoints.len();
        let mut first = self.current.load(Ordering::Relaxed);
        if first > 0 && self.recheck_due() {
            first = self.recheck(first).await;
        }
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            let e = &self.endpoints[i];
            match self.check(e).await {
                Ok(()) => {}
                Err(Checked::Wrong(_)) => continue,
                Err(Checked::Failed(err)) => {
                    tracing::warn!(endpoint = %e.url, error = %err, "chain RPC endpoint failed");
                    last = Some(err);
                    continue;
                }
            }
            let mut http = e.http.clone();
            match tower_service::Service::call(&mut http, req.clone()).await {
                Ok(answer) => {
                    let before = self.current.swap(i, Ordering::Relaxed);
                    if before != i {
                        tracing::warn!(
                            from = %self.endpoints[before].url, to = %e.url,
                            "chain RPC failover: now using {}", e.url
                        );
                    }
                    return Ok(answer);
                }
                Err(err) => {
                    tracing::warn!(endpoint = %e.url, error = %err, "chain RPC endpoint failed");
                    // Whatever answers there next may be another process: check it again.
                    let _ = e.chain.compare_exchange(
                        RIGHT_CHAIN,
                        UNCHECKED,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            TransportErrorKind::custom_str("no chain RPC endpoint on the expected chain")
        }))
    }
}

impl tower_service::Service<RequestPacket> for Failover {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> TransportFut<'static> {
        let inner = self.0.clone();
        Box::pin(async move { inner.request(req).await })
    }
}
