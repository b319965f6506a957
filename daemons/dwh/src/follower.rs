//! Follows the chain: reads the contracts' logs in batches of blocks, a number of
//! confirmations behind the head, and commits each batch with its checkpoint. Before
//! each batch it checks that the checkpoint's block is still on the chain; when it
//! is not (a reorg), it finds the newest recorded block that still is, unwinds to
//! it and goes on from there. RPC failures move to the next endpoint, with a
//! growing pause once every endpoint has failed in a row.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{BlockNumberOrTag, Filter};
use alloy::transports::TransportError;
use alloy::transports::http::reqwest::Url;
use sonm_contracts::{Addresses, ContractAddresses};
use sonm_market::OrderBook;
use thiserror::Error;

use crate::event::{self, DecodeError};
use crate::index::{BlockEvents, BookChange};
use crate::storage::{Checkpoint, DbError, Storage, StorageError};

/// How the follower reads the chain.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// JSON-RPC endpoints of the same chain; the follower uses one at a time and
    /// moves to the next when it fails.
    pub endpoints: Vec<Url>,
    /// Blocks the head must be ahead of a block before it is indexed.
    pub confirmations: u64,
    /// The most blocks read (and committed) at once.
    pub batch_blocks: u64,
    /// How many blocks of undo log and hashes are kept: the deepest reorg handled.
    pub keep_blocks: u64,
    /// The pause when the follower has caught up.
    pub poll_interval: Duration,
    /// The longest pause after failures.
    pub max_backoff: Duration,
}

impl FollowerConfig {
    pub fn new(endpoints: Vec<Url>) -> Self {
        FollowerConfig {
            endpoints,
            confirmations: 12,
            batch_blocks: 1000,
            keep_blocks: 1024,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Why a step failed.
#[derive(Debug, Error)]
pub enum FollowError {
    #[error("no RPC endpoint configured")]
    NoEndpoints,
    #[error("RPC {endpoint}: {source}")]
    Rpc {
        endpoint: String,
        #[source]
        source: Box<TransportError>,
    },
    #[error("RPC {endpoint}: block {number} is not known to it")]
    MissingBlock { endpoint: String, number: u64 },
    #[error("RPC {endpoint}: inconsistent logs: {reason}")]
    BadLogs { endpoint: String, reason: String },
    #[error("RPC {endpoint} serves chain {actual}, the addresses file is for chain {expected}")]
    WrongChain {
        endpoint: String,
        actual: u64,
        expected: u64,
    },
    #[error("block {block}: {source}")]
    Decode {
        block: u64,
        #[source]
        source: Box<DecodeError>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "reorg deeper than the kept history: no recorded block at or below {checkpoint} is on \
         the chain any more"
    )]
    ReorgTooDeep { checkpoint: u64 },
}

impl FollowError {
    /// Errors of one endpoint: another endpoint (or a later try) may succeed.
    pub fn is_endpoint_error(&self) -> bool {
        matches!(
            self,
            FollowError::Rpc { .. }
                | FollowError::MissingBlock { .. }
                | FollowError::BadLogs { .. }
                | FollowError::WrongChain { .. }
        )
    }
}

/// What a step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Blocks `from..=to` are indexed, `events` of them ours.
    Indexed { from: u64, to: u64, events: usize },
    /// Nothing new is confirmed yet.
    Idle { head: u64 },
    /// A reorg: everything above `fork` was undone.
    Reorg { from: u64, fork: u64 },
}

/// The in-memory order book of active orders, kept in step with the store.
#[derive(Debug, Default)]
pub struct SharedBook(RwLock<OrderBook>);

impl SharedBook {
    /// A book of the active orders in `storage`.
    pub fn load(storage: &Storage<'_>) -> Result<Self, DbError> {
        let txn = storage.read_txn()?;
        let mut book = OrderBook::new();
        for row in storage.active_orders(&txn)? {
            if let Err(e) = book.insert(&row.order) {
                tracing::warn!(id = row.order.id, error = %e, "order left out of the book");
            }
        }
        Ok(SharedBook(RwLock::new(book)))
    }

    pub fn apply(&self, changes: Vec<BookChange>) {
        let mut book = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            let result = match change {
                BookChange::Insert(order) => book.insert(&order),
                BookChange::Remove(id) => book.cancel(id),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "order book change not applied");
            }
        }
    }

    pub fn read<T>(&self, f: impl FnOnce(&OrderBook) -> T) -> T {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    pub head: AtomicU64,
    pub checkpoint: AtomicU64,
    pub events: AtomicU64,
    pub rpc_errors: AtomicU64,
    pub reorgs: AtomicU64,
    pub queries: AtomicU64,
    pub query_micros: AtomicU64,
    /// Queries per latency bucket ([`QUERY_BUCKETS_MICROS`], then +Inf), not cumulative.
    pub query_buckets: [AtomicU64; QUERY_BUCKETS_MICROS.len() + 1],
    pub bad_queries: AtomicU64,
    /// Posts to the signed-order book accepted (new or known) and refused.
    pub signed_accepted: AtomicU64,
    pub signed_refused: AtomicU64,
    /// Signed orders deleted because they expired.
    pub signed_expired: AtomicU64,
}

/// Upper bounds of the query-latency histogram's buckets, in microseconds: the p50 goal
/// (1 ms) sits in the middle, so the histogram shows how far above or below it queries are.
pub const QUERY_BUCKETS_MICROS: [u64; 9] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000];

impl Metrics {
    /// Counts one answered query that took `micros`.
    pub fn observe_query(&self, micros: u64) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.query_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = QUERY_BUCKETS_MICROS
            .iter()
            .position(|&le| micros <= le)
            .unwrap_or(QUERY_BUCKETS_MICROS.len());
        self.query_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The query-latency histogram in the text exposition (cumulative buckets).
    fn render_query_histogram(&self) -> String {
        let mut out = String::from("# TYPE sonm_dwh_query_duration_seconds histogram\n");
        let mut cumulative = 0u64;
        for (i, count) in self.query_buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = QUERY_BUCKETS_MICROS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |&m| (m as f64 / 1e6).to_string());
            out += &format!("sonm_dwh_query_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}\n");
        }
        out += &format!(
            "sonm_dwh_query_duration_seconds_sum {}\nsonm_dwh_query_duration_seconds_count {cumulative}\n",
            self.query_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        out
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let head = g(&self.head);
        let cp = g(&self.checkpoint);
        format!(
            "# TYPE sonm_dwh_head_block gauge\nsonm_dwh_head_block {head}\n\
             # TYPE sonm_dwh_indexed_block gauge\nsonm_dwh_indexed_block {cp}\n\
             # TYPE sonm_dwh_blocks_behind gauge\nsonm_dwh_blocks_behind {}\n\
             # TYPE sonm_dwh_events_total counter\nsonm_dwh_events_total {}\n\
             # TYPE sonm_dwh_rpc_errors_total counter\nsonm_dwh_rpc_errors_total {}\n\
             # TYPE sonm_dwh_reorgs_total counter\nsonm_dwh_reorgs_total {}\n\
             # TYPE sonm_dwh_queries_total counter\nsonm_dwh_queries_total {}\n\
             # TYPE sonm_dwh_bad_queries_total counter\nsonm_dwh_bad_queries_total {}\n\
             # TYPE sonm_dwh_query_seconds_total counter\nsonm_dwh_query_seconds_total {}\n\
             # TYPE sonm_dwh_signed_orders_accepted_total counter\nsonm_dwh_signed_orders_accepted_total {}\n\
             # TYPE sonm_dwh_signed_orders_refused_total counter\nsonm_dwh_signed_orders_refused_total {}\n\
             # TYPE sonm_dwh_signed_orders_expired_total counter\nsonm_dwh_signed_orders_expired_total {}\n{}",
            head.saturating_sub(cp),
            g(&self.events),
            g(&self.rpc_errors),
            g(&self.reorgs),
            g(&self.queries),
            g(&self.bad_queries),
            g(&self.query_micros) as f64 / 1e6,
            g(&self.signed_accepted),
            g(&self.signed_refused),
            g(&self.signed_expired),
            self.render_query_histogram(),
        )
    }
}

/// The follower: one per store.
#[derive(Debug)]
pub struct Follower<'s, 'e> {
    storage: &'s Storage<'e>,
    book: &'s SharedBook,
    metrics: &'s Metrics,
    contracts: ContractAddresses,
    chain_id: u64,
    start_block: u64,
    config: FollowerConfig,
    providers: Vec<DynProvider>,
    /// Per endpoint: whether its chain id was checked.
    checked: Vec<bool>,
    current: usize,
}

impl<'s, 'e> Follower<'s, 'e> {
    /// A follower of the deployment in `addresses`, starting at its `deploy_block`
    /// when the store is empty. An endpoint of another chain is refused (and the next
    /// one tried).
    pub fn new(
        storage: &'s Storage<'e>,
        book: &'s SharedBook,
        metrics: &'s Metrics,
        addresses: &Addresses,
        config: FollowerConfig,
    ) -> Result<Self, FollowError> {
        if config.endpoints.is_empty() {
            return Err(FollowError::NoEndpoints);
        }
        let providers = config
            .endpoints
            .iter()
            .map(|url| sonm_contracts::deploy::provider(url.clone()))
            .collect();
        Ok(Follower {
            storage,
            book,
            metrics,
            contracts: addresses.contracts,
            chain_id: addresses.chain_id,
            start_block: addresses.deploy_block,
            checked: vec![false; config.endpoints.len()],
            config,
            providers,
            current: 0,
        })
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &Url {
        &self.config.endpoints[self.current]
    }

    fn rpc(&self, source: TransportError) -> FollowError {
        FollowError::Rpc {
            endpoint: self.endpoint().to_string(),
            source: Box::new(source),
        }
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, FollowError> {
        let block = self.providers[self.current]
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|e| self.rpc(e))?;
        Ok(block.map(|b| b.header.hash))
    }

    async fn required_hash(&self, number: u64) -> Result<B256, FollowError> {
        self.block_hash(number)
            .await?
            .ok_or_else(|| FollowError::MissingBlock {
                endpoint: self.endpoint().to_string(),
                number,
            })
    }

    /// One step: a reorg check, then at most one batch.
    pub async fn step(&mut self) -> Result<Step, FollowError> {
        let provider = &self.providers[self.current];
        if !self.checked[self.current] {
            let actual = provider.get_chain_id().await.map_err(|e| self.rpc(e))?;
            if actual != self.chain_id {
                return Err(FollowError::WrongChain {
                    endpoint: self.endpoint().to_string(),
                    actual,
                    expected: self.chain_id,
                });
            }
            self.checked[self.current] = true;
        }
        let head = provider.get_block_number().await.map_err(|e| self.rpc(e))?;
        self.metrics.head.store(head, Ordering::Relaxed);
        let checkpoint = self.storage.checkpoint()?;
        if let Some(cp) = checkpoint {
            if cp.number > head {
                // This endpoint lags, or the chain got shorter: wait until it passes us.
                return Ok(Step::Idle { head });
            }
            if self.required_hash(cp.number).await? != cp.hash {
                return self.unwind(cp, head).await;
            }
        }
        let from = checkpoint.map_or(self.start_block, |c| c.number + 1);
        let safe = head.saturating_sub(self.config.confirmations);
        if from > safe {
            return Ok(Step::Idle { head });
        }
        let to = safe.min(from.saturating_add(self.config.batch_blocks.max(1) - 1));
        let to_hash = self.required_hash(to).await?;
        let filter = Filter::new()
            .address(followed(&self.contracts).to_vec())
            .from_block(from)
            .to_block(to);
        let logs = self.providers[self.current]
            .get_logs(&filter)
            .await
            .map_err(|e| self.rpc(e))?;

        let bad = |reason: String| FollowError::BadLogs {
            endpoint: self.endpoint().to_string(),
            reason,
        };
        let mut blocks: BTreeMap<u64, (B256, Vec<(u64, event::ChainEvent)>)> = BTreeMap::new();
        let mut count = 0;
        for log in &logs {
            if log.removed {
                continue;
            }
            let (Some(number), Some(hash), Some(index)) =
                (log.block_number, log.block_hash, log.log_index)
            else {
                return Err(bad("a log without block number, hash or index".into()));
            };
            if number < from || number > to {
                return Err(bad(format!(
                    "a log of block {number} outside {from}..={to}"
                )));
            }
            if number == to && hash != to_hash {
                return Err(bad(format!("block {to} changed while reading")));
            }
            let entry = blocks.entry(number).or_insert((hash, Vec::new()));
            if entry.0 != hash {
                return Err(bad(format!("two hashes for block {number}")));
            }
            let decoded = event::decode(
                &self.contracts,
                log.address(),
                log.topics(),
                &log.data().data,
            )
            .map_err(|source| FollowError::Decode {
                block: number,
                source: Box::new(source),
            })?;
            if let Some(ev) = decoded {
                entry.1.push((index, ev));
                count += 1;
            }
        }
        let batch: Vec<BlockEvents> = blocks
            .into_iter()
            .filter(|(_, (_, evs))| !evs.is_empty())
            .map(|(number, (hash, mut evs))| {
                evs.sort_by_key(|(i, _)| *i);
                BlockEvents {
                    number,
                    hash,
                    events: evs.into_iter().map(|(_, e)| e).collect(),
                }
            })
            .collect();
        let changes = self.storage.commit_batch(
            &batch,
            Checkpoint {
                number: to,
                hash: to_hash,
            },
            self.config.keep_blocks,
        )?;
        self.book.apply(changes);
        self.metrics.checkpoint.store(to, Ordering::Relaxed);
        self.metrics
            .events
            .fetch_add(count as u64, Ordering::Relaxed);
        Ok(Step::Indexed {
            from,
            to,
            events: count,
        })
    }

    async fn unwind(&mut self, cp: Checkpoint, head: u64) -> Result<Step, FollowError> {
        for recorded in self.storage.recorded_blocks()? {
            if recorded.number > head {
                continue;
            }
            if self.block_hash(recorded.number).await? == Some(recorded.hash) {
                let changes = self.storage.unwind_to(recorded)?;
                self.book.apply(changes);
                self.metrics.reorgs.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .checkpoint
                    .store(recorded.number, Ordering::Relaxed);
                tracing::warn!(
                    from = cp.number,
                    fork = recorded.number,
                    "reorg: unwound to the fork point"
                );
                return Ok(Step::Reorg {
                    from: cp.number,
                    fork: recorded.number,
                });
            }
        }
        Err(FollowError::ReorgTooDeep {
            checkpoint: cp.number,
        })
    }

    /// Deletes the signed orders that expired (by the clock: they are not chain state). Runs
    /// whatever the chain does, so that a stalled endpoint does not leave them piling up.
    fn purge_expired(&self) {
        match self.storage.purge_expired_signed(crate::signed::unix_now()) {
            Ok(0) => {}
            Ok(n) => {
                self.metrics
                    .signed_expired
                    .fetch_add(n as u64, Ordering::Relaxed);
                tracing::debug!(purged = n, "expired signed orders deleted");
            }
            Err(e) => tracing::error!(error = %e, "purging expired signed orders failed"),
        }
    }

    /// Steps until `stop` is set: batches back to back while behind, a poll interval
    /// when caught up, and on endpoint errors the next endpoint (after a pause that
    /// grows while every endpoint keeps failing). Other errors (storage, decoding)
    /// are logged and retried after the longest pause. Expired signed orders are
    /// purged before each step.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut failures: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            self.purge_expired();
            let result = smol::block_on(async_compat::Compat::new(self.step()));
            let pause = match result {
                Ok(Step::Indexed { from, to, events }) => {
                    failures = 0;
                    tracing::debug!(from, to, events, "indexed");
                    Duration::ZERO
                }
                Ok(Step::Reorg { .. }) => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(Step::Idle { .. }) => {
                    failures = 0;
                    self.config.poll_interval
                }
                Err(e) if e.is_endpoint_error() => {
                    self.metrics.rpc_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "endpoint failed; trying the next one");
                    failures += 1;
                    self.current = (self.current + 1) % self.providers.len();
                    if failures as usize >= self.providers.len() {
                        let exp = (failures as usize / self.providers.len()).min(16) as u32;
                        (Duration::from_millis(50) * 2u32.pow(exp)).min(self.config.max_backoff)
                    } else {
                        Duration::ZERO
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "indexing failed; retrying");
                    self.config.max_backoff
                }
            };
            sleep_unless(stop, pause);
        }
    }
}

/// Sleeps for `pause`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let end = Instant::now() + pause;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// The addresses the follower reads logs from.
pub fn followed(contracts: &ContractAddresses) -> [Address; 4] {
    [
        contracts.market,
        contracts.blacklist,
        contracts.profile_registry,
        contracts.gate,
    ]
}
