//! The daemon: opens the state, measures the box, keeps the plans' asks on chain, follows the
//! deals on them (billing and closing on schedule), and serves the task protocol to each deal's
//! consumer, and to nobody else.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::Addresses;
use sonm_market::{Address, Benchmarks, DealId, NetFlags};
use sonm_net::{Connection, Endpoint, EndpointConfig, EthKey, Identity};
use sonm_rendezvous::{ClientConfig as RendezvousConfig, RelayPolicy, RendezvousClient};
use sonm_wasm_runtime::{Limits, Metering, Runtime, RuntimeConfig};

use crate::bench::{self, Measured};
use crate::billing::{Action, DealClock, next_action};
use crate::chain::{Chain, ChainError};
use crate::config::{Config, ConfigError};
use crate::containers::{ContainerLimits, Containers};
use crate::inventory::Inventory;
use crate::metrics::{Metrics, TaskKind};
use crate::plan::{PlanError, PlanId, PlanSpec, Plans, Resources, ask_benchmarks, ask_order};
use crate::proto::{
    ALPN, MAX_FRAME, Request, Response, StartContainer, StartWasm, TaskError, TaskLimits,
};
use crate::state::{DealRecord, DealState, PlanRecord, StateError, Store};
use crate::tasks::TaskRunner;

// The autotrader's and the matcher's loop: a child module, for the chain lock and the store.
mod autotrade;
pub use autotrade::{Autotrader, Round};
// Staged uploads, chunked downloads and log reads of the task protocol.
mod transfer;
// Signed asks (`[market] asks = "signed"`): signing, publishing to the DWH, cancelling nonces.
mod signed;

/// Largest output a task may leave (kept on disk and downloaded in chunks; a container's is
/// still read back through memory once, see `containers`).
const MAX_TASK_OUTPUT: u64 = 64 << 20;
/// A container's memory when its slice names no RAM.
const DEFAULT_CONTAINER_MEMORY: u64 = 256 << 20;
/// Most bytes a container's rootfs may unpack to (and at most the slice's storage).
const MAX_ROOTFS_BYTES: u64 = 1 << 30;
/// Least time between chain scans triggered by requests for unknown deals.
const RESCAN_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// How long a worker's QUIC identity binding is valid (renewal on restart; see README).
const IDENTITY_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Keep-alive of the task endpoint when it also carries the rendezvous connection: keeps the
/// NAT mapping towards the server (and a relayed path) open.
const RENDEZVOUS_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Longest wait between attempts to (re)connect to the rendezvous server: after an outage the
/// worker is unreachable until it has re-published, so retry often (a refused or unanswered
/// handshake costs the server little).
const RENDEZVOUS_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one attempt to connect and publish may take. Without it an attempt against a
/// server that is down lasts the endpoint's idle timeout (60 s), and one made just before the
/// server returns waits out QUIC's growing Initial retransmission gaps.
const RENDEZVOUS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] sonm_contracts::KeyError),
    #[error(transparent)]
    Addresses(#[from] sonm_contracts::AddressesError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error(transparent)]
    Runtime(#[from] sonm_wasm_runtime::JobError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("plan {0} has an active deal {1}; it is withdrawn when the deal ends")]
    PlanHasDeal(PlanId, DealId),
    #[error(transparent)]
    Net(#[from] sonm_net::NetError),
    #[error(transparent)]
    Identity(#[from] sonm_net::IdentityError),
    #[error("rendezvous: {0}")]
    Rendezvous(#[from] sonm_rendezvous::ClientError),
    #[error(transparent)]
    Autotrader(#[from] crate::autotrader::AutotraderError),
    #[error("signing an ask: {0}")]
    Sign(#[from] sonm_contracts::SignError),
    #[error("rendezvous server {0:?} is not a host:port that resolves")]
    RendezvousAddr(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The running worker. Share it as `Arc<Worker>`.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    signer: PrivateKeySigner,
    store: Store,
    chain: Chain,
    measured: Measured,
    runtime: Arc<Runtime>,
    plans: Mutex<Plans>,
    runner: TaskRunner,
    deploy_block: u64,
    /// One chain writer at a time: keeps nonces in order and a plan from being placed twice.
    chain_lock: smol::lock::Mutex<()>,
    last_rescan: Mutex<Option<std::time::Instant>>,
    /// Serialises the scans that unknown deal ids trigger (see [`Worker::rescan_since`]).
    rescan_gate: smol::lock::Mutex<()>,
    master_confirmed: std::sync::atomic::AtomicBool,
    /// Maintenance (the store's copy, read without a transaction on every tick and task).
    maintenance: std::sync::atomic::AtomicBool,
    /// Duplicates of the task endpoints' UDP sockets, by local address: the rendezvous client
    /// punches and binds relays from the socket that carries QUIC.
    sockets: Mutex<HashMap<SocketAddr, UdpSocket>>,
    metrics: Metrics,
    /// Staged uploads in `<state>/uploads` (see [`crate::uploads`]).
    uploads: crate::uploads::Uploads,
    /// The DWH the signed asks are published to (`[market] asks = "signed"` only).
    dwh: Option<sonm_dwh_client::Dwh>,
    /// The DWH did not answer the last publication (logged once per outage).
    dwh_down: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> u64 {
    bench::unix_now()
}

/// The record of a deal just opened on one of our asks, sold from `plan`.
fn new_deal_record(opened: &crate::chain::OpenedDeal, plan: Option<PlanId>) -> DealRecord {
    DealRecord {
        id: opened.id,
        consumer: opened.consumer,
        ask: opened.ask,
        bid: opened.bid,
        plan,
        price: opened.price,
        duration: opened.duration,
        start: opened.start,
        last_bill: opened.start,
        state: DealState::Active,
        closed_at: None,
        opened_block: Some(opened.block),
    }
}

impl Worker {
    /// Opens the worker: state, key, benchmarks (measured at first start), chain, plans from the
    /// store reconciled with the configuration's (by name).
    pub async fn open(config: Config) -> Result<Self, WorkerError> {
        config.validate()?;
        let state_dir = config.state_dir.clone();
        std::fs::create_dir_all(&state_dir).map_err(|source| WorkerError::Io {
            what: format!("creating {}", state_dir.display()),
            source,
        })?;
        let signer = sonm_contracts::load_signer(Some(&config.key_file), "SONM_WORKER_KEY")?;
        let store = Store::open(&state_dir.join("lmdb"))?;
        let runtime_config = RuntimeConfig {
            metering: config.wasm_metering.runtime_metering(),
            cache_dir: Some(state_dir.join("wasm-cache")),
            // One more slot than tasks, for the benchmark.
            max_concurrent_jobs: config.max_concurrent_tasks.max(1) + 1,
            ..RuntimeConfig::default()
        };
        let runtime = Arc::new(Runtime::new(runtime_config.clone())?);
        // Tasks that ask for a fuel count run on a fuel-metered engine of their own (metering
        // is fixed per engine); it shares the disk cache, whose entries are per engine.
        let fuel_runtime = if runtime_config.metering == Metering::Fuel {
            runtime.clone()
        } else {
            Arc::new(Runtime::new(RuntimeConfig {
                metering: Metering::Fuel,
                ..runtime_config
            })?)
        };
        let inventory = Inventory::detect(&state_dir)?;
        let measured = {
            let (dir, inv, bc, rt) = (
                state_dir.clone(),
                inventory.clone(),
                config.benchmarks.clone(),
                runtime.clone(),
            );
            smol::unblock(move || bench::load_or_measure(&dir, &inv, &bc, &rt)).await?
        };
        tracing::info!(
            cpu = %inventory.cpu_model, cores = inventory.cpu_cores, ram = inventory.ram_bytes,
            gpus = inventory.gpus.len(), benchmarks = %measured.benchmarks, "inventory"
        );
        let addresses = Addresses::read(&config.addresses)?;
        let chain = Chain::connect(&config.rpc_url, signer.clone(), &addresses).await?;
        let capacity = Resources {
            cpu_cores: inventory.cpu_cores,
            ram_bytes: inventory.ram_bytes,
            storage_bytes: measured.benchmarks.get(sonm_market::Benchmark::StorageSize),
            gpus: inventory.gpus.len() as u32,
        };
        let mut plans = Plans::new(capacity, config.offered_netflags()?);
        for rec in store.plans()? {
            // A plan being withdrawn no longer holds its slice, unless a deal still runs on it
            // or its signed ask can still be bought.
            if rec.removing && rec.deal.is_none() && store.signed_ask(rec.id)?.is_none() {
                continue;
            }
            if let Err(e) = plans.add(rec.id, rec.spec.clone()) {
                // The box shrank (or the config's netflags changed): withdraw that plan.
                tracing::warn!(
                    plan = rec.id,
                    "stored plan no longer fits, withdrawing it: {e}"
                );
                store.put_plan(&PlanRecord {
                    removing: true,
                    ..rec
                })?;
            }
        }
        let runner = TaskRunner::new(
            runtime.clone(),
            fuel_runtime,
            config.max_concurrent_tasks.max(1),
            state_dir.join("tasks"),
            signer.clone(),
            chain.chain_id(),
            store.clone(),
        )
        .with_containers(
            Containers::new(
                &state_dir,
                config.containers,
                PathBuf::from("runc"),
                // Unique per worker on a host (cgroup names are host-wide).
                alloy::primitives::hex::encode(&signer.address().as_slice()[..4]),
            )
            .with_net(config.container_net()?),
        );
        match runner.containers_ready() {
            Some(Ok(version)) => tracing::info!(%version, "containers: on"),
            Some(Err(crate::containers::Unavailable::Disabled)) | None => {}
            Some(Err(e)) => tracing::warn!("containers are on in the configuration but: {e}"),
        }
        // Before the task directories go: a container left running by a crash is deleted first.
        match runner.clean_container_leftovers() {
            Ok(0) => {}
            Ok(n) => tracing::info!("deleted {n} containers left by an earlier run"),
            Err(e) => tracing::warn!("cleaning old containers: {e}"),
        }
        match runner.clean_orphans() {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} task directories left by an earlier run"),
            Err(e) => tracing::warn!("cleaning old task directories: {e}"),
        }
        // Results outlive restarts; only what the store does not describe goes.
        match runner.clean_result_orphans() {
            Ok((0, 0)) => {}
            Ok((dirs, records)) => tracing::info!(
                dirs,
                records,
                "removed results the store did not describe (or whose files were gone)"
            ),
            Err(e) => tracing::warn!("cleaning orphan results: {e}"),
        }
        let maintenance = store.maintenance()?;
        if maintenance {
            tracing::info!("maintenance is on (kept from before the restart): no asks placed");
        }
        // Only where asks are signed: the DWH is not otherwise the worker's (the autotrader
        // keeps its own client).
        let dwh = config
            .signed_asks()
            .then(|| config.dwh().map(sonm_dwh_client::Dwh::new))
            .flatten();
        let worker = Self {
            config,
            signer,
            store,
            chain,
            measured,
            runtime,
            plans: Mutex::new(plans),
            runner,
            deploy_block: addresses.deploy_block,
            chain_lock: smol::lock::Mutex::new(()),
            last_rescan: Mutex::new(None),
            rescan_gate: smol::lock::Mutex::new(()),
            master_confirmed: std::sync::atomic::AtomicBool::new(false),
            maintenance: std::sync::atomic::AtomicBool::new(maintenance),
            sockets: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            uploads: transfer::open_uploads(&state_dir)?,
            dwh,
            dwh_down: std::sync::atomic::AtomicBool::new(false),
        };
        worker.apply_config_plans()?;
        Ok(worker)
    }

    /// The worker's Ethereum address (its QUIC identity, the asks' author, the deals' supplier).
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    pub fn benchmarks(&self) -> Benchmarks {
        self.measured.benchmarks
    }

    pub fn measured(&self) -> &Measured {
        &self.measured
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn state_dir(&self) -> PathBuf {
        self.config.state_dir.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn configured_master(&self) -> Option<Address> {
        self.config.master
    }

    /// Tasks of `deal` running now.
    pub fn running_tasks_of(&self, deal: DealId) -> u32 {
        self.runner.running_for_deal(deal)
    }

    /// A task's status as its consumer sees it (`None`: unknown to the runner).
    pub fn task_status(
        &self,
        task: crate::proto::TaskId,
        consumer: Address,
    ) -> Option<crate::proto::TaskStatus> {
        self.runner.status(task, consumer).ok()
    }

    /// Withdraws the asks of the plans without a deal and places them again (admin request);
    /// returns the plans whose ask was withdrawn.
    pub async fn replace_asks(&self) -> Result<Vec<PlanId>, WorkerError> {
        if self.config.signed_asks() {
            return self.replace_signed_asks().await;
        }
        let mut withdrawn = Vec::new();
        {
            let _chain = self.chain_lock.lock().await;
            for mut rec in self.store.plans()? {
                if rec.removing || rec.deal.is_some() {
                    continue;
                }
                if let Some(ask) = rec.ask.take() {
                    if self.chain.order_active(ask.id).await? {
                        self.chain.cancel_order(&ask).await?;
                    }
                    self.store.put_plan(&rec)?;
                    withdrawn.push(rec.id);
                }
            }
        }
        self.sync_plans().await?;
        Ok(withdrawn)
    }

    /// Makes the plans those of the configuration: new names are added, names gone are
    /// removed (withdrawn), changed ones replaced, except plans under an active deal.
    fn apply_config_plans(&self) -> Result<(), WorkerError> {
        let wanted = self.config.plan_specs()?;
        for rec in self.store.plans()? {
            if rec.removing {
                continue;
            }
            // The autotrader's plans are its own, not the configuration's.
            if self.config.autotrader.as_ref().is_some_and(|a| a.replan)
                && crate::autotrader::optimus_purpose(&rec.spec.name).is_some()
            {
                continue;
            }
            // Nor are the plans an admin added over the admin protocol.
            if rec.spec.name.starts_with(crate::admin::ADMIN_PLAN_PREFIX) {
                continue;
            }
            match wanted.iter().find(|s| s.name == rec.spec.name) {
                Some(spec) if *spec == rec.spec => {}
                _ if rec.deal.is_some() => {
                    tracing::warn!(
                        plan = rec.id,
                        "plan changed or removed in the configuration \
                        while under a deal: kept until the deal ends"
                    );
                }
                _ => self.remove_plan(rec.id)?,
            }
        }
        for spec in wanted {
            let exists = self
                .store
                .plans()?
                .iter()
                .any(|r| r.spec.name == spec.name && !r.removing);
            if !exists {
                self.add_plan(spec)?;
            }
        }
        Ok(())
    }

    /// Adds a plan if it fits in what is free; its ask is placed by the next sync.
    pub fn add_plan(&self, spec: PlanSpec) -> Result<PlanId, WorkerError> {
        let mut plans = lock(&self.plans);
        plans.check(&spec)?;
        let id = self.store.next_plan_id()?;
        plans.add(id, spec.clone())?;
        self.store.put_plan(&PlanRecord {
            id,
            spec,
            ask: None,
            deal: None,
            removing: false,
            placing_since: None,
        })?;
        Ok(id)
    }

    /// Marks a plan for removal: its ask is withdrawn (cancelOrder, or cancelNonces for a
    /// signed ask) by the next sync and its slice freed. A plan under an active deal is refused.
    pub fn remove_plan(&self, id: PlanId) -> Result<(), WorkerError> {
        let mut plans = lock(&self.plans);
        let rec = self.store.plan(id)?.ok_or(PlanError::Unknown(id))?;
        if let Some(deal) = rec.deal {
            return Err(WorkerError::PlanHasDeal(id, deal));
        }
        // Freed at once for new plans: the old ask can still be taken until it is cancelled, but
        // then the deal's slice is accounted below the capacity of the box all the same.
        // A signed ask's slice is freed by the sync, once its nonce is cancelled.
        if self.store.signed_ask(id)?.is_none() {
            let _ = plans.remove(id);
        }
        self.store.put_plan(&PlanRecord {
            removing: true,
            ..rec
        })?;
        Ok(())
    }

    pub fn plans(&self) -> Result<Vec<PlanRecord>, WorkerError> {
        Ok(self.store.plans()?)
    }

    /// Registers under the configured master (`registerWorker`) until the master has
    /// confirmed; returns whether payouts now go to it. Without a master: true.
    pub async fn sync_master(&self) -> Result<bool, WorkerError> {
        let Some(master) = self.config.master else {
            return Ok(true);
        };
        let _chain = self.chain_lock.lock().await;
        let current = self.chain.master_of().await?;
        if current == master {
            self.metrics.set_master(Some(master));
            return Ok(true);
        }
        if current != self.address() {
            tracing::warn!(%current, wanted = %master,
                "registered under another master: it (or this worker) must removeWorker first");
            return Ok(false);
        }
        if self.chain.pending_master().await? != master {
            self.chain.register_worker(master).await?;
            tracing::info!(%master, "asked the master to confirm this worker");
        }
        Ok(false)
    }

    /// One round of the chain loop: the master registration, new deals, asks to place or
    /// withdraw, bills and closes. Errors are logged; the next round retries.
    pub async fn tick(&self) {
        if !self
            .master_confirmed
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            match self.sync_master().await {
                Ok(done) => self
                    .master_confirmed
                    .store(done, std::sync::atomic::Ordering::Relaxed),
                Err(e) => {
                    self.count_chain_error(&e);
                    tracing::warn!("master registration: {e}");
                }
            }
        }
        if let Err(e) = self.sync_deals().await {
            self.count_chain_error(&e);
            tracing::warn!("deal scan: {e}");
        }
        if let Err(e) = self.sync_plans().await {
            self.count_chain_error(&e);
            tracing::warn!("plans: {e}");
        }
        self.sweep_uploads();
        self.sweep_results();
        if let Err(e) = self.bill_due().await {
            self.count_chain_error(&e);
            tracing::warn!("billing: {e}");
        }
        self.settle_tasks();
    }

    fn count_chain_error(&self, e: &WorkerError) {
        if matches!(e, WorkerError::Chain(_)) {
            self.metrics.chain_error();
        }
    }

    /// Places an ask for every plan that has none (and no deal), withdraws removed plans' asks;
    /// in maintenance, withdraws every ask and places none.
    pub async fn sync_plans(&self) -> Result<(), WorkerError> {
        if self.config.signed_asks() {
            return self.sync_signed_asks().await;
        }
        let _chain = self.chain_lock.lock().await;
        // Signed asks left from `asks = "signed"` are withdrawn first (none in a state that
        // only ever placed its asks: nothing is read from the chain then).
        self.withdraw_leftover_signed_locked().await?;
        let capacity = lock(&self.plans).capacity();
        let maintenance = self.in_maintenance();
        for mut rec in self.store.plans()? {
            if maintenance && !rec.removing {
                // Also retries a cancel that failed when maintenance was switched on.
                if let Some(ask) = rec.ask.take() {
                    if self.chain.order_active(ask.id).await? {
                        self.chain.cancel_order(&ask).await?;
                        tracing::info!(plan = rec.id, order = ask.id, "ask withdrawn: maintenance");
                    }
                    self.store.put_plan(&rec)?;
                }
                continue;
            }
            if rec.removing {
                if let Some(ask) = rec.ask.take() {
                    if self.chain.order_active(ask.id).await? {
                        self.chain.cancel_order(&ask).await?;
                        tracing::info!(plan = rec.id, order = ask.id, "ask withdrawn");
                    }
                    self.store.put_plan(&rec)?;
                }
                if rec.deal.is_none() {
                    self.store.delete_plan(rec.id)?;
                    // Its slice is free (a no-op when it was freed at removal).
                    let _ = lock(&self.plans).remove(rec.id);
                }
                continue;
            }
            if rec.ask.is_none() && rec.deal.is_none() {
                let order = self.ask_for(&rec.spec, &capacity);
                if let Some(since) = rec.placing_since
                    && let Some(found) = self.find_placed(&order, since).await?
                {
                    tracing::info!(
                        plan = rec.id,
                        order = found.id,
                        "ask placed before a restart found on chain: adopted, not placed again"
                    );
                    rec.ask = Some(found);
                    rec.placing_since = None;
                    self.store.put_plan(&rec)?;
                    continue;
                }
                rec.placing_since = Some(self.chain.block_number().await?);
                self.store.put_plan(&rec)?;
                let placed = self.chain.place_ask(&order).await?;
                tracing::info!(plan = rec.id, order = placed.id, price = placed.price,
                    benchmarks = %placed.benchmarks, "ask placed");
                rec.ask = Some(placed);
                rec.placing_since = None;
                self.store.put_plan(&rec)?;
            }
        }
        Ok(())
    }

    /// The ASK order a plan is sold by (id 0: not placed).
    pub fn ask_for(&self, spec: &PlanSpec, capacity: &Resources) -> sonm_market::Order {
        let benchmarks = ask_benchmarks(&self.measured.benchmarks, capacity, &spec.slice);
        ask_order(self.address(), spec, benchmarks)
    }

    /// The capacity of the box that plans are cut from.
    pub fn capacity(&self) -> Resources {
        lock(&self.plans).capacity()
    }

    /// An active order of ours equal to `order` (but for its id), placed from block `since` on
    /// and not recorded for any plan: the ask a crash left unrecorded.
    async fn find_placed(
        &self,
        order: &sonm_market::Order,
        since: u64,
    ) -> Result<Option<sonm_market::Order>, WorkerError> {
        let to = self.chain.block_number().await?;
        let known: Vec<u64> = self
            .store
            .plans()?
            .iter()
            .filter_map(|p| p.ask.as_ref().map(|a| a.id))
            .collect();
        for placed in self.chain.orders_placed(since, to).await? {
            let same = sonm_market::Order {
                id: placed.id,
                ..order.clone()
            } == placed;
            if same && !known.contains(&placed.id) && self.chain.order_active(placed.id).await? {
                return Ok(Some(placed));
            }
        }
        Ok(None)
    }

    /// Records the deals opened on our asks since the last scan.
    pub async fn sync_deals(&self) -> Result<(), WorkerError> {
        let _chain = self.chain_lock.lock().await;
        self.sync_deals_locked().await
    }

    async fn sync_deals_locked(&self) -> Result<(), WorkerError> {
        let mut from = self.store.deal_scan_from()?.unwrap_or(self.deploy_block);
        let head = self.chain.block_number().await?;
        // In windows: endpoints cap a log query's block range.
        while from <= head {
            let to = head.min(from.saturating_add(sonm_contracts::LOG_WINDOW - 1));
            self.record_deals_opened(from, to).await?;
            self.store.set_deal_scan_from(to + 1)?;
            from = to + 1;
        }
        Ok(())
    }

    async fn record_deals_opened(&self, from: u64, to: u64) -> Result<(), WorkerError> {
        for opened in self.chain.deals_opened(from, to).await? {
            if self.store.deal(opened.id)?.is_some() {
                continue;
            }
            if let Some(used) = opened.signed {
                self.record_signed_deal(&opened, used)?;
                continue;
            }
            let mut plan = self
                .store
                .plans()?
                .into_iter()
                .find(|p| p.ask.as_ref().is_some_and(|a| a.id == opened.ask));
            if let Some(p) = plan.as_mut() {
                p.ask = None;
                p.deal = Some(opened.id);
            }
            let rec = new_deal_record(&opened, plan.as_ref().map(|p| p.id));
            self.store.open_deal(&rec, plan.as_ref())?;
            tracing::info!(deal = rec.id, consumer = %rec.consumer, ask = rec.ask,
                plan = ?rec.plan, duration = rec.duration, "deal opened");
        }
        Ok(())
    }

    /// Bills the active deals that are due and closes forward deals at their end; notices deals
    /// closed by the consumer (or by the chain for want of funds).
    pub async fn bill_due(&self) -> Result<(), WorkerError> {
        let _chain = self.chain_lock.lock().await;
        let policy = self.config.billing;
        for deal in self.store.deals()? {
            if deal.state != DealState::Active {
                continue;
            }
            let opened = deal.opened_block.unwrap_or(self.deploy_block);
            let on_chain = self.chain.get_deal(deal.id, opened).await?;
            if !on_chain.active {
                self.close_local(deal)?;
                continue;
            }
            let now = now().max(self.chain.chain_time().await?);
            let clock = DealClock {
                start: on_chain.start,
                duration: on_chain.duration,
                last_bill: on_chain.last_bill,
                active: true,
            };
            if self.in_maintenance() && on_chain.duration == 0 {
                // Market.sol lets the supplier close a spot deal at any time (a forward one only
                // from its end): billed to now first, so the payout is recorded as a bill.
                self.close_spot_for_maintenance(deal, &on_chain).await?;
                continue;
            }
            match next_action(&clock, now, &policy) {
                Action::Bill => match self.chain.bill(deal.id, &on_chain).await {
                    Ok(()) => {
                        tracing::info!(deal = deal.id, "billed");
                        let last_bill = self.chain.get_deal(deal.id, opened).await?.last_bill;
                        let elapsed = last_bill.saturating_sub(on_chain.last_bill);
                        self.metrics
                            .billed(deal.id, u128::from(elapsed).saturating_mul(on_chain.price));
                        self.store.put_deal(&DealRecord { last_bill, ..deal })?;
                    }
                    Err(e) => {
                        self.metrics.chain_error();
                        tracing::warn!(deal = deal.id, "bill failed: {e}");
                    }
                },
                Action::Close => match self.chain.close_deal(deal.id, &on_chain).await {
                    Ok(()) => {
                        tracing::info!(deal = deal.id, "deal closed at its end");
                        self.close_local(deal)?;
                    }
                    // Typically DealNotEnded when the chain's clock lags ours: retried next round.
                    Err(e) => tracing::warn!(deal = deal.id, "close failed: {e}"),
                },
                Action::Wait { .. } | Action::Done => {}
            }
        }
        Ok(())
    }

    /// Bills a spot deal to now and closes it (maintenance). A failure is logged and retried
    /// by the next round; the deal takes no new task meanwhile.
    async fn close_spot_for_maintenance(
        &self,
        deal: DealRecord,
        on_chain: &crate::chain::ChainDeal,
    ) -> Result<(), WorkerError> {
        let opened = deal.opened_block.unwrap_or(self.deploy_block);
        let after = match self.chain.bill(deal.id, on_chain).await {
            Ok(()) => {
                let after = self.chain.get_deal(deal.id, opened).await?;
                let elapsed = after.last_bill.saturating_sub(on_chain.last_bill);
                self.metrics
                    .billed(deal.id, u128::from(elapsed).saturating_mul(on_chain.price));
                if !after.active {
                    // The consumer could not pay: the bill closed it.
                    return self.close_local(deal);
                }
                after
            }
            Err(e) => {
                self.metrics.chain_error();
                tracing::warn!(
                    deal = deal.id,
                    "maintenance: bill before closing failed: {e}"
                );
                return Ok(());
            }
        };
        match self.chain.close_deal(deal.id, &after).await {
            Ok(()) => {
                tracing::info!(deal = deal.id, "spot deal closed: maintenance");
                let last_bill = self.chain.get_deal(deal.id, opened).await?.last_bill;
                self.close_local(DealRecord { last_bill, ..deal })?;
            }
            Err(e) => {
                self.metrics.chain_error();
                tracing::warn!(deal = deal.id, "maintenance: close failed: {e}");
            }
        }
        Ok(())
    }

    /// Whether maintenance is on.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Switches maintenance on or off (stored first, so a restart keeps it). On: the asks are
    /// withdrawn, the spot deals billed and closed, the forward deals left to their end (closing
    /// one early is refused by the chain). Off: the plans' asks are placed again. Chain failures
    /// are logged and retried by the chain loop.
    pub async fn set_maintenance(&self, on: bool) -> Result<(), WorkerError> {
        self.store.set_maintenance(on)?;
        self.maintenance
            .store(on, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(on, "maintenance switched by an admin");
        if let Err(e) = self.sync_plans().await {
            self.count_chain_error(&e);
            tracing::warn!("maintenance: asks: {e}");
        }
        if on && let Err(e) = self.bill_due().await {
            self.count_chain_error(&e);
            tracing::warn!("maintenance: closing deals: {e}");
        }
        Ok(())
    }

    /// A deal ended: its tasks stop, its plan's slice goes back on sale.
    fn close_local(&self, deal: DealRecord) -> Result<(), WorkerError> {
        self.chain.forget_deal(deal.id);
        self.runner.stop_deal(deal.id);
        self.uploads.drop_deal(deal.id);
        if let Some(pid) = deal.plan
            && let Some(mut plan) = self.store.plan(pid)?
            && plan.deal == Some(deal.id)
        {
            plan.deal = None;
            self.store.put_plan(&plan)?;
        }
        tracing::info!(
            deal = deal.id,
            "deal closed; its tasks stopped and its slice freed"
        );
        self.store.put_deal(&DealRecord {
            state: DealState::Closed,
            closed_at: Some(now()),
            ..deal
        })?;
        Ok(())
    }

    /// Removes the kept results of deals that ended `result_retention_s` ago or more (the
    /// chain loop calls this every round). Returns how many were removed.
    pub fn sweep_results(&self) -> usize {
        let now = now();
        let keep = self.config.result_retention_s;
        let kept = match self.store.results() {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("results sweep: {e}");
                return 0;
            }
        };
        let mut ended: HashMap<DealId, bool> = HashMap::new();
        let mut removed = 0;
        for r in kept {
            let expired = match ended.get(&r.deal) {
                Some(&e) => e,
                None => {
                    let e = self.deal_results_expired(r.deal, now, keep);
                    ended.insert(r.deal, e);
                    e
                }
            };
            if !expired {
                continue;
            }
            match self.runner.remove_result(r.task) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(
                        task = r.task,
                        deal = r.deal,
                        "result removed: retention over"
                    );
                }
                Err(e) => tracing::warn!(task = r.task, "removing its result: {e}"),
            }
        }
        removed
    }

    /// Whether `deal` ended at least `keep` seconds before `now`. A deal closed without an
    /// end time (by a worker before the retention) starts its retention now.
    fn deal_results_expired(&self, deal: DealId, now: u64, keep: u64) -> bool {
        match self.store.deal(deal) {
            Ok(Some(d)) if d.state == DealState::Closed => match d.closed_at {
                Some(at) => now.saturating_sub(at) >= keep,
                None => {
                    let stamped = DealRecord {
                        closed_at: Some(now),
                        ..d
                    };
                    if let Err(e) = self.store.put_deal(&stamped) {
                        tracing::warn!(deal, "recording its end: {e}");
                    }
                    keep == 0
                }
            },
            Ok(Some(_)) => false,
            // Not one of our deals (cannot happen: a task needs one): nothing to wait for.
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(deal, "results sweep: {e}");
                false
            }
        }
    }

    // ------------------------------------------------------------------ task service

    /// A QUIC endpoint at `addr` serving the task protocol as this worker's Ethereum identity.
    pub fn endpoint(&self, addr: SocketAddr) -> Result<Endpoint, WorkerError> {
        let eth = EthKey::from_bytes(&self.signer.to_bytes().0)?;
        let identity = Identity::generate(&eth, IDENTITY_VALIDITY)?;
        let config = EndpointConfig {
            server_alpns: vec![ALPN.to_vec(), crate::admin::ADMIN_ALPN.to_vec()],
            max_frame: MAX_FRAME,
            idle_timeout: Duration::from_secs(60),
            keep_alive: self
                .config
                .rendezvous
                .as_ref()
                .map(|_| RENDEZVOUS_KEEP_ALIVE),
            // A restarted worker then resets its customers' old connections at once.
            reset_seed: Some(eth.stateless_reset_seed()),
            // Runs unattended for longer than one certificate: renewed as it nears its end.
            renew: Some((eth.clone(), IDENTITY_VALIDITY)),
            ..EndpointConfig::default()
        };
        let io = |source| WorkerError::Io {
            what: format!("binding {addr}"),
            source,
        };
        let socket = UdpSocket::bind(addr).map_err(io)?;
        let raw = socket.try_clone().map_err(io)?;
        let local = socket.local_addr().map_err(io)?;
        let endpoint = Endpoint::from_socket(socket, identity, config)?;
        lock(&self.sockets).insert(local, raw);
        Ok(endpoint)
    }

    // ------------------------------------------------------------------ rendezvous

    /// Whether `customer` has an active deal with this worker: the only peers the worker
    /// punches towards or agrees to a relay with (a punch sends datagrams to addresses the
    /// customer names). A customer we do not know yet triggers a (rate-limited) chain scan, so
    /// that its retry succeeds if its deal was opened since the last one.
    pub fn serves_customer(self: &Arc<Self>, customer: Address) -> bool {
        // Its admins too (own key, confirmed master): the admin service is refused to others
        // anyway, but they must be able to reach it from behind a NAT.
        if customer == self.address() || self.metrics.master() == Some(customer) {
            return true;
        }
        let active = match self.store.deals() {
            Ok(deals) => deals
                .iter()
                .any(|d| d.consumer == customer && d.state == DealState::Active),
            Err(e) => {
                tracing::warn!("reading deals for the rendezvous policy: {e}");
                false
            }
        };
        if !active {
            tracing::info!(%customer, "rendezvous: no active deal with this peer: no punch, no relay");
            let worker = self.clone();
            let asked = std::time::Instant::now();
            smol::spawn(async_compat::Compat::new(async move {
                if let Err(e) = worker.rescan_since(asked).await {
                    tracing::warn!("deal scan: {e}");
                }
            }))
            .detach();
        }
        active
    }

    /// Connects `endpoint` (made by [`Worker::endpoint`]) to the configured rendezvous server
    /// and publishes this worker there; the record is refreshed until the client is dropped.
    pub async fn join_rendezvous(
        self: &Arc<Self>,
        endpoint: &Endpoint,
    ) -> Result<RendezvousClient, WorkerError> {
        let Some(server) = self.config.rendezvous.clone() else {
            return Err(WorkerError::RendezvousAddr(String::new()));
        };
        let local = endpoint.local_addr()?;
        let raw = lock(&self.sockets)
            .get(&local)
            .map(UdpSocket::try_clone)
            .transpose()
            .map_err(|source| WorkerError::Io {
                what: format!("duplicating the socket at {local}"),
                source,
            })?
            .ok_or_else(|| WorkerError::Io {
                what: format!("the endpoint at {local} was not made by Worker::endpoint"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        let lookup = server.clone();
        let addr = smol::unblock(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&lookup)
                .ok()
                .and_then(|mut a| a.next())
        })
        .await
        .ok_or_else(|| WorkerError::RendezvousAddr(server.clone()))?;
        let mut config = RendezvousConfig::new(addr, self.config.rendezvous_address);
        // Our own socket address is a candidate when it is a real one (a LAN peer reaches it
        // directly); the server adds the address it observes.
        if !local.ip().is_unspecified() {
            config.private = vec![local];
        }
        let weak = Arc::downgrade(self);
        let policy: RelayPolicy = Arc::new(move |customer| {
            weak.upgrade()
                .is_some_and(|worker| worker.serves_customer(customer))
        });
        let key = EthKey::from_bytes(&self.signer.to_bytes().0)?;
        let client =
            RendezvousClient::from_endpoint(endpoint.clone(), raw, &key, config, policy).await?;
        let observed = client.publish().await?;
        tracing::info!(server = %addr, %observed, "published to the rendezvous server");
        Ok(client)
    }

    /// Keeps this worker published to the rendezvous server: reconnects (with backoff) when
    /// the connection fails or ends. Runs until dropped.
    async fn rendezvous_loop(self: Arc<Self>, endpoint: Endpoint) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let attempt = async { Some(self.join_rendezvous(&endpoint).await) };
            let timeout = async {
                smol::Timer::after(RENDEZVOUS_ATTEMPT_TIMEOUT).await;
                None
            };
            match smol::future::or(attempt, timeout).await {
                None => tracing::warn!(
                    "rendezvous: no answer in {RENDEZVOUS_ATTEMPT_TIMEOUT:?}; retrying in {backoff:?}"
                ),
                Some(Err(e)) => tracing::warn!("rendezvous: {e}; retrying in {backoff:?}"),
                Some(Ok(client)) => {
                    backoff = Duration::from_secs(1);
                    self.metrics.set_rendezvous_connected(true);
                    client.closed().await;
                    self.metrics.set_rendezvous_connected(false);
                    tracing::warn!("rendezvous connection ended; reconnecting");
                }
            }
            smol::Timer::after(backoff).await;
            backoff = (backoff * 2).min(RENDEZVOUS_MAX_BACKOFF);
        }
    }

    /// Serves connections until the endpoint is closed.
    pub async fn serve(self: Arc<Self>, endpoint: Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let worker = self.clone();
            smol::spawn(async move {
                match incoming.handshake().await {
                    Ok(conn) if conn.alpn() == crate::admin::ADMIN_ALPN => {
                        worker.serve_admin(conn).await
                    }
                    Ok(conn) => worker.serve_connection(conn).await,
                    Err(e) => tracing::info!("handshake refused: {e}"),
                }
            })
            .detach();
        }
    }

    async fn serve_connection(self: Arc<Self>, conn: Connection) {
        let peer = conn.peer_address();
        tracing::debug!(%peer, remote = %conn.remote_address(), "task client connected");
        loop {
            let (req, responder) = match conn.accept_request::<Request>().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%peer, "connection ended: {e}");
                    return;
                }
            };
            let resp = match self.handle(peer, req).await {
                Ok(r) => r,
                Err(e) => Response::Error(e),
            };
            if let Err(e) = responder.respond(&resp).await {
                tracing::debug!(%peer, "response not delivered: {e}");
            }
        }
    }

    /// One request from `peer` (the verified QUIC identity).
    pub async fn handle(&self, peer: Address, req: Request) -> Result<Response, TaskError> {
        match req {
            Request::StartWasm(start) => self.start_wasm(peer, start).await,
            Request::StartContainer(start) => self.start_container(peer, start).await,
            Request::Status { task } => self.runner.status(task, peer).map(Response::Status),
            Request::Result { task } => self
                .runner
                .result(task, peer)
                .map(|r| Response::Result(Box::new(r))),
            Request::Stop { task } => self.runner.stop(task, peer).map(|()| Response::Stopping),
            req @ (Request::BeginUpload { .. }
            | Request::Chunk { .. }
            | Request::Commit { .. }
            | Request::StartWasmStaged(_)
            | Request::StartContainerStaged(_)
            | Request::ResultInfo { .. }
            | Request::Download { .. }
            | Request::Logs { .. }) => self.handle_transfer(peer, req).await,
        }
    }

    /// The deal, if `peer` is its consumer and it is active; refusals are logged.
    pub async fn authorize(&self, peer: Address, deal_id: DealId) -> Result<DealRecord, TaskError> {
        let internal = |e: WorkerError| TaskError::Internal(e.to_string());
        let mut deal = self.store.deal(deal_id).map_err(|e| internal(e.into()))?;
        if deal.is_none() {
            // Perhaps opened since the last scan.
            self.rescan_since(std::time::Instant::now())
                .await
                .map_err(internal)?;
            deal = self.store.deal(deal_id).map_err(|e| internal(e.into()))?;
        }
        let Some(deal) = deal else {
            tracing::warn!(%peer, deal = deal_id, "refused: no such deal on this worker");
            return Err(TaskError::UnknownDeal(deal_id));
        };
        if deal.consumer != peer {
            tracing::warn!(%peer, deal = deal_id, consumer = %deal.consumer,
                "refused: not the deal's consumer");
            return Err(TaskError::NotConsumer {
                deal: deal_id,
                consumer: deal.consumer,
                peer,
            });
        }
        if deal.state != DealState::Active {
            tracing::info!(%peer, deal = deal_id, "refused: deal closed");
            return Err(TaskError::DealClosed(deal_id));
        }
        // Spot deals are being closed; forward deals run to their end and keep taking tasks.
        if deal.duration == 0 && self.in_maintenance() {
            tracing::info!(%peer, deal = deal_id, "refused: deal closing for maintenance");
            return Err(TaskError::DealClosing(deal_id));
        }
        Ok(deal)
    }

    /// Makes sure a deal scan has started at or after `asked` (when a request named a deal id
    /// we do not know). Scans are serialised and at most one starts per
    /// [`RESCAN_MIN_INTERVAL`], so that requests naming made-up deals cannot flood the RPC;
    /// a request waits for the next scan instead of being refused, and every request that
    /// arrived before a scan started is answered by that scan.
    async fn rescan_since(&self, asked: std::time::Instant) -> Result<(), WorkerError> {
        let _gate = self.rescan_gate.lock().await;
        let last = *lock(&self.last_rescan);
        if last.is_some_and(|t| t >= asked) {
            return Ok(());
        }
        if let Some(next) = last.map(|t| t + RESCAN_MIN_INTERVAL)
            && next > std::time::Instant::now()
        {
            smol::Timer::at(next).await;
        }
        *lock(&self.last_rescan) = Some(std::time::Instant::now());
        self.sync_deals().await
    }

    /// The runtime limits for a task under `deal`: what was asked, each within the slice.
    pub fn task_limits(
        &self,
        deal: &DealRecord,
        asked: &TaskLimits,
    ) -> Result<(Limits, u32), TaskError> {
        let slice = deal
            .plan
            .and_then(|p| self.store.plan(p).ok().flatten())
            .map(|p| p.spec.slice)
            .unwrap_or_default();
        let runtime_max = self.runtime.config().max_memory_bytes;
        let max_memory = if slice.ram_bytes > 0 {
            slice.ram_bytes.min(runtime_max)
        } else {
            Limits::default().memory_bytes
        };
        let max_wall = if deal.duration > 0 {
            let end = deal.start.saturating_add(deal.duration);
            end.saturating_sub(now()).saturating_mul(1000)
        } else {
            self.config.max_task_wall_time_ms
        };
        let within = |what: &str, asked: Option<u64>, max: u64| match asked {
            Some(a) if a > max => Err(TaskError::LimitExceeded {
                what: what.into(),
                asked: a,
                max,
            }),
            Some(a) => Ok(a),
            None => Ok(max),
        };
        let default = Limits::default();
        let limits = Limits {
            memory_bytes: within("memory_bytes", asked.memory_bytes, max_memory)?,
            fuel: asked.fuel,
            wall_time_ms: within("wall_time_ms", asked.wall_time_ms, max_wall)?.max(1),
            output_bytes: if slice.storage_bytes > 0 {
                slice.storage_bytes.min(MAX_TASK_OUTPUT)
            } else {
                MAX_TASK_OUTPUT
            },
            stdout_bytes: default.stdout_bytes,
            stderr_bytes: default.stderr_bytes,
            output_entries: default.output_entries,
        };
        Ok((limits, slice.cpu_cores.max(1)))
    }

    async fn start_wasm(&self, peer: Address, start: StartWasm) -> Result<Response, TaskError> {
        let (deal, asked) = (start.deal, start.limits);
        self.start_wasm_job(peer, deal, asked, start.into()).await
    }

    /// Starts a WASM job (its bytes inline or staged) under `deal` for `peer`.
    async fn start_wasm_job(
        &self,
        peer: Address,
        deal: DealId,
        asked: TaskLimits,
        job: crate::tasks::WasmJob,
    ) -> Result<Response, TaskError> {
        let deal = self.authorize(peer, deal).await?;
        let (limits, max_tasks) = self.task_limits(&deal, &asked)?;
        if self.runner.running_for_deal(deal.id) >= max_tasks {
            return Err(TaskError::TooManyTasks {
                deal: deal.id,
                limit: max_tasks,
            });
        }
        let task = self
            .store
            .next_task_id()
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        self.runner.start_job(task, deal.id, peer, job, limits)?;
        self.metrics.task_started(task, TaskKind::Wasm, peer);
        tracing::info!(task, deal = deal.id, %peer, "task started");
        Ok(Response::Started { task })
    }

    /// A container's limits under `deal`: what was asked, each within the slice; its GPUs are
    /// the slice's (see [`crate::containers::gpu_indexes`]).
    pub fn container_limits(
        &self,
        deal: &DealRecord,
        asked: &TaskLimits,
    ) -> Result<ContainerLimits, TaskError> {
        let internal = |e: StateError| TaskError::Internal(e.to_string());
        let plans = self.store.plans().map_err(internal)?;
        let plan = deal.plan.and_then(|id| plans.iter().find(|p| p.id == id));
        let slice = plan.map(|p| p.spec.slice).unwrap_or_default();
        let max_memory = if slice.ram_bytes > 0 {
            slice.ram_bytes
        } else {
            DEFAULT_CONTAINER_MEMORY
        };
        let memory_bytes = match asked.memory_bytes {
            Some(a) if a > max_memory => {
                return Err(TaskError::LimitExceeded {
                    what: "memory_bytes".into(),
                    asked: a,
                    max: max_memory,
                });
            }
            Some(a) => a,
            None => max_memory,
        };
        // Wall time and output as for a WASM task.
        let (wasm, cores) = self.task_limits(
            deal,
            &TaskLimits {
                memory_bytes: None,
                ..*asked
            },
        )?;
        let gpus = match plan {
            Some(p) if p.spec.slice.gpus > 0 => {
                let held: Vec<(u64, u32)> = plans
                    .iter()
                    .filter(|r| !r.removing || r.deal.is_some())
                    .map(|r| (r.id, r.spec.slice.gpus))
                    .collect();
                crate::containers::gpu_indexes(&held, p.id)
            }
            _ => Vec::new(),
        };
        Ok(ContainerLimits {
            memory_bytes,
            cpu_cores: cores,
            wall_time_ms: wasm.wall_time_ms,
            output_bytes: wasm.output_bytes,
            output_entries: wasm.output_entries,
            rootfs_bytes: if slice.storage_bytes > 0 {
                slice.storage_bytes.min(MAX_ROOTFS_BYTES)
            } else {
                MAX_ROOTFS_BYTES
            },
            gpus,
            outbound: plan.is_some_and(|p| p.spec.netflags.covers(NetFlags::OUTBOUND)),
        })
    }

    async fn start_container(
        &self,
        peer: Address,
        start: StartContainer,
    ) -> Result<Response, TaskError> {
        // Who may: exactly as for a WASM task (the deal's consumer, an active deal).
        let deal = self.authorize(peer, start.deal).await?;
        let limits = self.container_limits(&deal, &start.limits)?;
        if self.runner.running_for_deal(deal.id) >= limits.cpu_cores {
            return Err(TaskError::TooManyTasks {
                deal: deal.id,
                limit: limits.cpu_cores,
            });
        }
        let task = self
            .store
            .next_task_id()
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        self.runner
            .start_container(task, deal.id, peer, start, limits)?;
        self.metrics.task_started(task, TaskKind::Container, peer);
        tracing::info!(task, deal = deal.id, %peer, "container started");
        Ok(Response::Started { task })
    }

    /// Serves `endpoint` and runs the chain loop every `poll_interval_ms` until `stop` resolves.
    pub async fn run_until(
        self: Arc<Self>,
        endpoint: Endpoint,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let server = smol::spawn(self.clone().serve(endpoint.clone()));
        // Published from the task endpoint's own socket: punches open the mapping QUIC uses.
        let rendezvous = self
            .config
            .rendezvous
            .is_some()
            .then(|| smol::spawn(self.clone().rendezvous_loop(endpoint.clone())));
        let autotrader = self
            .autotrader()
            .map(|at| smol::spawn(self.clone().autotrader_loop(at)));
        let metrics = self.config.metrics_listen.and_then(|addr| {
            match crate::metrics::bind(addr) {
                Ok(listener) => {
                    tracing::info!(%addr, "serving Prometheus metrics");
                    Some(smol::spawn(self.clone().serve_metrics(listener)))
                }
                // Metrics are not worth refusing to sell for: logged, the worker runs on.
                Err(e) => {
                    tracing::warn!(%addr, "metrics listener: {e}");
                    None
                }
            }
        });
        let interval = Duration::from_millis(self.config.poll_interval_ms.max(10));
        let chain_loop = async {
            loop {
                self.tick().await;
                smol::Timer::after(interval).await;
            }
        };
        smol::future::or(chain_loop, stop).await;
        tracing::info!("stopping: closing connections and cancelling running tasks");
        drop(rendezvous);
        drop(autotrader);
        drop(metrics);
        if let Ok(local) = endpoint.local_addr() {
            lock(&self.sockets).remove(&local);
        }
        endpoint.close();
        self.runner.stop_all();
        drop(server);
        let grace = async {
            smol::Timer::after(Duration::from_secs(2)).await;
        };
        smol::future::or(endpoint.wait_idle(), grace).await;
    }
}
