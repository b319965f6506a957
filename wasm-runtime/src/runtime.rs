//! The runtime: one wasmtime engine (pooling allocator, epoch ticker, optional fuel), a linker
//! with guarded WASI preview 1, the compiled-module caches, and `run`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolConcurrencyLimitError, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::cache::{CacheLookup, DiskCache, hex};
use crate::error::{JobError, TrapCause};
use crate::report::{JobReport, OutputFile, Termination, Usage};
use crate::sandbox::{
    CappedPipe, CoarseMonotonicClock, CoarseWallClock, IoGuard, JobState, Limiter, OutputTap,
    StreamKind, WASI, add_guards,
};
use crate::spec::{JobSpec, ModuleSource};

/// How instructions are metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metering {
    /// Fuel counted in the generated code: a deterministic instruction count for billing and for
    /// verification by re-running, and a hard instruction cap. Epochs still bound wall time.
    Fuel,
    /// Epochs only: wall time and cancellation, no instruction count (cheaper code). The worker's
    /// production default: deals are billed by time.
    EpochOnly,
    /// No checks in the generated code at all: the fastest code, but the runtime can neither
    /// stop an endless loop nor honour a cancel or wall-time limit in-process. Only for a job run
    /// in its own process that the worker kills from outside (as `sonm-wasm-run --metering none`
    /// does with its watchdog); bill by CPU time and re-run with `Fuel` to verify.
    None,
}

/// Engine-wide settings (fixed for the runtime's life; part of the compiled-code cache key).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub metering: Metering,
    /// Directory of the on-disk compiled-module cache; `None`: memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the disk cache may hold; past it, the least recently used entries are removed
    /// (checked at start and after each new entry).
    pub disk_cache_bytes: u64,
    /// Compiled modules kept ready in memory; past it, the least recently used is dropped (a
    /// later job for it loads it from disk or compiles it again).
    pub memory_cache_modules: usize,
    /// Use the pooling instance allocator (pre-reserved slots; fast instantiation).
    pub pooling: bool,
    /// Pool slots: the most jobs that can be instantiated at once.
    pub max_concurrent_jobs: u32,
    /// The largest `limits.memory_bytes` a job may ask for (the pool's slot size).
    pub max_memory_bytes: u64,
    /// Bytes of each memory slot left mapped between jobs (reset with memset instead of
    /// madvise): the calibration's main win for short jobs.
    pub memory_keep_resident: u64,
    pub table_keep_resident: u64,
    /// Virtual address space reserved per linear memory. 4 GiB (with the guard) lets Cranelift
    /// drop bounds checks on 32-bit memories; smaller values reserve less but add checks.
    pub memory_reservation: u64,
    pub memory_guard: u64,
    /// Epoch tick: the resolution of wall-time limits and the latency of cancellation.
    pub epoch_tick: Duration,
    /// WASM stack limit, bytes; jobs run on the calling thread's stack, which must be larger.
    pub max_wasm_stack: usize,
    /// Table elements a job may have (function pointers in C).
    pub max_table_elements: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            metering: Metering::Fuel,
            cache_dir: None,
            disk_cache_bytes: 1 << 30,
            memory_cache_modules: 256,
            pooling: true,
            max_concurrent_jobs: 128,
            max_memory_bytes: 1 << 30,
            memory_keep_resident: 1 << 20,
            table_keep_resident: 64 << 10,
            memory_reservation: 4 << 30,
            memory_guard: 32 << 20,
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
            max_table_elements: 100_000,
        }
    }
}

impl RuntimeConfig {
    /// Virtual address space the pool reserves for linear memories (the dominant part).
    pub fn reserved_address_space(&self) -> u64 {
        if !self.pooling {
            return 0;
        }
        u64::from(self.max_concurrent_jobs)
            * (self.memory_reservation.max(self.max_memory_bytes) + self.memory_guard)
    }
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    pub compiled: u64,
    pub disk_hits: u64,
    pub disk_rejected: u64,
    pub jobs: u64,
    /// Modules dropped from the memory cache for room.
    pub memory_evicted: u64,
    /// Entries removed from the disk cache for room (by this runtime).
    pub disk_evicted: u64,
}

/// Stops a job from outside, from any thread, at any time (within one epoch tick).
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A job running on its own thread.
#[derive(Debug)]
pub struct JobHandle {
    cancel: CancelHandle,
    thread: JoinHandle<Result<JobReport, JobError>>,
}

impl JobHandle {
    pub fn cancel_handle(&self) -> &CancelHandle {
        &self.cancel
    }

    pub fn join(self) -> Result<JobReport, JobError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(JobError::Engine("job thread panicked".into())))
    }
}

/// A module ready to instantiate.
struct Prepared {
    sha256: String,
    pre: InstancePre<JobState>,
}

/// An entry of the memory cache, with the cache generation of its last use.
///
/// Hand-written LRU rather than the `lru` crate (already in the tree): its `get` needs `&mut`,
/// which would turn the per-job read lock into an exclusive one. Here a hit of the most recently
/// used module only reads; any other hit or insertion takes the next generation; an insertion
/// into a full cache scans for the oldest generation, which is cheap next to the compile or
/// disk load that preceded it.
struct MemEntry {
    prepared: Arc<Prepared>,
    last_used: AtomicU64,
}

struct Inner {
    config: RuntimeConfig,
    engine: Engine,
    linker: Linker<JobState>,
    modules: RwLock<HashMap<String, MemEntry>>,
    /// Memory-cache clock: advanced at each insertion and at each hit of a module that was not
    /// the most recently used.
    generation: AtomicU64,
    disk: Option<DiskCache>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    disk_rejected: AtomicU64,
    jobs: AtomicU64,
    memory_evicted: AtomicU64,
    disk_evicted: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
    /// Jobs between instantiation and the end of `_start`; the ticker sleeps while it is 0.
    running: Arc<AtomicUsize>,
    ticker: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Ticks without a running job before the epoch ticker parks.
const TICKER_IDLE_TICKS: u32 = 200;

/// Counts a job as running for as long as it lives, and wakes the ticker for the first one.
struct Running<'a>(&'a Inner);

impl<'a> Running<'a> {
    fn start(inner: &'a Inner) -> Self {
        if inner.running.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(t) = &inner.ticker
        {
            t.thread().unpark();
        }
        Self(inner)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs WASM jobs. Cheap to clone (shared engine, caches and ticker); `Send + Sync`.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn engine_err(e: impl std::fmt::Display) -> JobError {
    JobError::Engine(e.to_string())
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, JobError> {
        let mut c = Config::new();
        c.consume_fuel(config.metering == Metering::Fuel)
            .epoch_interruption(config.metering != Metering::None)
            .max_wasm_stack(config.max_wasm_stack)
            .memory_reservation(config.memory_reservation)
            .memory_guard_size(config.memory_guard)
            // Growth happens in place inside the reservation; no extra headroom needed.
            .memory_reservation_for_growth(0);
        if config.pooling {
            let n = config.max_concurrent_jobs;
            let mut p = PoolingAllocationConfig::default();
            p.total_core_instances(n)
                .total_memories(n)
                .total_tables(n)
                .max_memories_per_module(1)
                .max_tables_per_module(1)
                .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
                .table_elements(config.max_table_elements as usize)
                .linear_memory_keep_resident(config.memory_keep_resident as usize)
                .table_keep_resident(config.table_keep_resident as usize);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        }
        let engine = Engine::new(&c).map_err(engine_err)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut JobState| &mut s.wasi)
            .map_err(engine_err)?;
        linker.allow_shadowing(true);
        add_guards(&mut linker).map_err(engine_err)?;
        linker.allow_shadowing(false);

        let mut disk_evicted = 0;
        let disk = match &config.cache_dir {
            Some(dir) => {
                let io = |source| JobError::Io {
                    what: format!("opening module cache {}", dir.display()),
                    source,
                };
                let d = DiskCache::open(dir, &engine)
                    .map_err(io)?
                    .with_byte_budget(config.disk_cache_bytes);
                // The budget may have shrunk since the last start.
                disk_evicted = d.prune().map_err(io)?;
                Some(d)
            }
            None => None,
        };

        // One ticker per engine: a job's deadline callback runs on each tick and checks its own
        // wall-time deadline and cancel flag, so jobs of any length share this one thread.
        // It parks once no job has run for a while (no idle wake-ups); a job starting unparks it,
        // and park's token semantics mean an unpark just before the park is not lost.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let running = running.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    // Park only after a while without jobs, so a stream of short jobs does not
                    // pay a wake-up (a syscall and a context switch) each.
                    let mut idle_ticks = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        if running.load(Ordering::SeqCst) == 0 {
                            idle_ticks += 1;
                            if idle_ticks >= TICKER_IDLE_TICKS {
                                idle_ticks = 0;
                                std::thread::park();
                                continue;
                            }
                        } else {
                            idle_ticks = 0;
                        }
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|source| JobError::Io {
                    what: "starting the epoch ticker".into(),
                    source,
                })?
        };

        Ok(Self {
            inner: Arc::new(Inner {
                config,
                engine,
                linker,
                modules: RwLock::default(),
                generation: AtomicU64::new(0),
                disk,
                compiled: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                disk_rejected: AtomicU64::new(0),
                jobs: AtomicU64::new(0),
                memory_evicted: AtomicU64::new(0),
                disk_evicted: AtomicU64::new(disk_evicted),
                ticker_stop,
                running,
                ticker: Some(ticker),
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn stats(&self) -> RuntimeStats {
        let i = &self.inner;
        RuntimeStats {
            compiled: i.compiled.load(Ordering::Relaxed),
            disk_hits: i.disk_hits.load(Ordering::Relaxed),
            disk_rejected: i.disk_rejected.load(Ordering::Relaxed),
            jobs: i.jobs.load(Ordering::Relaxed),
            memory_evicted: i.memory_evicted.load(Ordering::Relaxed),
            disk_evicted: i.disk_evicted.load(Ordering::Relaxed),
        }
    }

    /// Where the disk cache keeps `module_sha256` for this engine (`None` without a disk cache).
    pub fn cache_entry_path(&self, module_sha256: &str) -> Option<PathBuf> {
        Some(self.inner.disk.as_ref()?.entry_path(module_sha256))
    }

    /// Forgets the compiled modules held in memory (the disk cache stays).
    pub fn clear_memory_cache(&self) {
        self.inner
            .modules
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Compiles (or loads from the caches) `bytes`, checks it is a WASI command, and keeps it
    /// ready; returns its sha256, by which later specs can name it.
    pub fn load_module(&self, bytes: &[u8]) -> Result<String, JobError> {
        Ok(self.prepare_bytes(bytes)?.sha256.clone())
    }

    fn cached(&self, sha: &str) -> Option<Arc<Prepared>> {
        let modules = self
            .inner
            .modules
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let e = modules.get(sha)?;
        // Already the most recently used: nothing to write, so a stream of jobs of one module
        // shares no written cache line. Otherwise it becomes the newest generation.
        if e.last_used.load(Ordering::Relaxed) != self.inner.generation.load(Ordering::Relaxed) {
            let now = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
            e.last_used.store(now, Ordering::Relaxed);
        }
        Some(e.prepared.clone())
    }

    fn prepare(&self, source: &ModuleSource) -> Result<Arc<Prepared>, JobError> {
        match source {
            ModuleSource::Bytes(b) => self.prepare_bytes(b),
            ModuleSource::Path(p) => {
                let b = std::fs::read(p).map_err(|source| JobError::Io {
                    what: format!("reading module {}", p.display()),
                    source,
                })?;
                self.prepare_bytes(&b)
            }
            ModuleSource::Sha256(sha) => {
                let sha = sha.to_ascii_lowercase();
                if let Some(p) = self.cached(&sha) {
                    return Ok(p);
                }
                match self.load_from_disk(&sha) {
                    Some(m) => self.finish_prepare(sha, m),
                    None => Err(JobError::ModuleNotCached(sha)),
                }
            }
        }
    }

    fn load_from_disk(&self, sha: &str) -> Option<Module> {
        let disk = self.inner.disk.as_ref()?;
        match disk.load(&self.inner.engine, sha) {
            CacheLookup::Hit(m) => {
                self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
                Some(m)
            }
            CacheLookup::Miss => None,
            CacheLookup::Rejected(why) => {
                self.inner.disk_rejected.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "sonm-wasm-runtime: cache entry {} rejected ({why}); recompiling",
                    disk.entry_path(sha).display()
                );
                None
            }
        }
    }

    fn prepare_bytes(&self, bytes: &[u8]) -> Result<Arc<Prepared>, JobError> {
        let sha = hex(&Sha256::digest(bytes));
        if let Some(p) = self.cached(&sha) {
            return Ok(p);
        }
        let module = match self.load_from_disk(&sha) {
            Some(m) => m,
            None => {
                let m = Module::new(&self.inner.engine, bytes)
                    .map_err(|e| JobError::InvalidModule(format!("{e:#}")))?;
                self.inner.compiled.fetch_add(1, Ordering::Relaxed);
                // Validate before caching, so the disk never holds a module we refuse to run.
                check_command(&m)?;
                if let Some(disk) = &self.inner.disk {
                    // A cache that cannot be written or pruned costs speed, not correctness.
                    match disk.store(&sha, &m).and_then(|()| disk.prune()) {
                        Ok(n) => {
                            self.inner.disk_evicted.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("sonm-wasm-runtime: cannot write module cache: {e}"),
                    }
                }
                m
            }
        };
        self.finish_prepare(sha, module)
    }

    fn finish_prepare(&self, sha: String, module: Module) -> Result<Arc<Prepared>, JobError> {
        check_command(&module)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| JobError::Link(format!("{e:#}")))?;
        let p = Arc::new(Prepared { sha256: sha, pre });
        let mut modules = self
            .inner
            .modules
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let capacity = self.inner.config.memory_cache_modules.max(1);
        while modules.len() >= capacity && !modules.contains_key(&p.sha256) {
            // Jobs running the evicted module keep it alive through their `Arc`.
            let oldest = modules
                .iter()
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            modules.remove(&oldest);
            self.inner.memory_evicted.fetch_add(1, Ordering::Relaxed);
        }
        modules.insert(
            p.sha256.clone(),
            MemEntry {
                prepared: p.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        Ok(p)
    }

    /// Runs `spec` on the calling thread until it exits, traps, hits a limit or is cancelled.
    /// `Err` means the job could not start; a job that started always yields a report.
    pub fn run(&self, spec: &JobSpec, cancel: &CancelHandle) -> Result<JobReport, JobError> {
        self.run_tapped(spec, cancel, &OutputTap::default())
    }

    /// As [`Runtime::run`], with the job's stdout and stderr readable through `tap` as it runs.
    pub fn run_tapped(
        &self,
        spec: &JobSpec,
        cancel: &CancelHandle,
        tap: &OutputTap,
    ) -> Result<JobReport, JobError> {
        let cfg = &self.inner.config;
        let limits = &spec.limits;
        if limits.memory_bytes > cfg.max_memory_bytes {
            return Err(JobError::LimitTooHigh {
                what: "memory_bytes",
                asked: limits.memory_bytes,
                max: cfg.max_memory_bytes,
            });
        }
        if limits.fuel.is_some() && cfg.metering != Metering::Fuel {
            return Err(JobError::FuelNotMetered);
        }
        let prepared = self.prepare(&spec.module)?;
        self.inner.jobs.fetch_add(1, Ordering::Relaxed);

        let started = Instant::now();
        let cpu_started = thread_cpu_time();
        let stdout = CappedPipe::shared(limits.stdout_bytes, StreamKind::Stdout, tap);
        let stderr = CappedPipe::shared(limits.stderr_bytes, StreamKind::Stderr, tap);
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .arg(&spec.program_name)
            .args(&spec.args)
            .wall_clock(CoarseWallClock)
            .monotonic_clock(CoarseMonotonicClock(started))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // Jobs run synchronously on their own thread: file I/O on that thread instead of a
            // hop to tokio's blocking pool and back per call (a context switch pair per read,
            // which cost sha256 over 64 MiB in 64 KiB reads ~15% on an idle box).
            .allow_blocking_current_thread(true);
        if let Some(seed) = spec.random_seed {
            use rand::SeedableRng as _;
            b.secure_random(rand::rngs::StdRng::seed_from_u64(seed))
                .insecure_random(rand::rngs::StdRng::seed_from_u64(!seed))
                .insecure_random_seed(u128::from(seed));
        }
        for (k, v) in &spec.env {
            b.env(k, v);
        }
        if let Some(dir) = &spec.input_dir {
            b.preopened_dir(dir, "/input", FsPerms::ReadOnly)
                .map_err(|e| JobError::Sandbox(format!("input dir {}: {e}", dir.display())))?;
        }
        if let Some(dir) = &spec.output_dir {
            std::fs::create_dir_all(dir).map_err(|source| JobError::Io {
                what: format!("creating output dir {}", dir.display()),
                source,
            })?;
            b.preopened_dir(dir, "/output", FsPerms::ReadWrite)
                .map_err(|e| JobError::Sandbox(format!("output dir {}: {e}", dir.display())))?;
        }
        let state = JobState {
            wasi: b.build_p1(),
            limiter: Limiter {
                memory_limit: limits.memory_bytes,
                table_elements: cfg.max_table_elements as usize,
                peak_memory: 0,
            },
            guard: IoGuard::new(limits.output_bytes, limits.output_entries),
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let fuel_given = limits.fuel.unwrap_or(u64::MAX);
        if cfg.metering == Metering::Fuel {
            store.set_fuel(fuel_given).map_err(engine_err)?;
        }
        let deadline = started + Duration::from_millis(limits.wall_time_ms);
        let wall_limit = limits.wall_time_ms;
        let flag = cancel.clone();
        if cfg.metering != Metering::None {
            store.set_epoch_deadline(1);
        }
        store.epoch_deadline_callback(move |_| {
            if flag.is_cancelled() {
                Err(TrapCause::Cancelled.into())
            } else if Instant::now() >= deadline {
                Err(TrapCause::WallTime {
                    limit_ms: wall_limit,
                }
                .into())
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });

        let running = Running::start(&self.inner);
        let outcome = if cancel.is_cancelled() {
            Err(TrapCause::Cancelled.into())
        } else {
            match prepared.pre.instantiate(&mut store) {
                Err(e) if e.chain().any(|c| c.is::<PoolConcurrencyLimitError>()) => {
                    return Err(JobError::Busy {
                        limit: cfg.max_concurrent_jobs,
                    });
                }
                Err(e) => Err(e),
                Ok(instance) => instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .and_then(|start| start.call(&mut store, ())),
            }
        };
        drop(running);
        let wall_time = started.elapsed();
        let cpu_time = thread_cpu_time().saturating_sub(cpu_started);
        let mut termination = match outcome {
            Ok(()) => Termination::Exit(0),
            Err(e) => classify(&e, limits.fuel),
        };

        // Cranelift keeps fuel in a local and writes it back to the store only at calls,
        // returns and fuel checks, not at the epoch check that stops a job for wall time or
        // cancel: the store's count is then stale (0 for a loop that never calls out).
        // Unknown is reported as unknown rather than as a wrong number.
        let stopped_by_epoch = matches!(
            termination,
            Termination::Trap(TrapCause::WallTime { .. } | TrapCause::Cancelled)
        );
        let fuel_consumed = match cfg.metering {
            Metering::Fuel if !stopped_by_epoch => Some(fuel_given - store.get_fuel().unwrap_or(0)),
            Metering::Fuel | Metering::EpochOnly | Metering::None => None,
        };
        let data = store.data();
        let usage = Usage {
            fuel_consumed,
            cpu_time,
            wall_time,
            peak_memory_bytes: data.limiter.peak_memory,
            output_bytes_written: data.guard.output_written,
        };
        drop(store);

        let output_files = match &spec.output_dir {
            Some(dir) => list_files(dir).map_err(|source| JobError::Io {
                what: format!("listing output dir {}", dir.display()),
                source,
            })?,
            None => Vec::new(),
        };
        // The per-write accounting should make this unreachable; the final size check is the
        // backstop for anything it missed (e.g. a file grown through a path we do not guard).
        let total: u64 = output_files.iter().map(|f| f.size).sum();
        if total > limits.output_bytes && matches!(termination, Termination::Exit(_)) {
            termination = Termination::Trap(TrapCause::OutputQuota {
                limit: limits.output_bytes,
            });
        }
        Ok(JobReport {
            module_sha256: prepared.sha256.clone(),
            termination,
            stdout: stdout.take(),
            stderr: stderr.take(),
            output_files,
            usage,
        })
    }

    /// Runs `spec` on a new thread; the handle cancels or joins it.
    pub fn spawn(&self, spec: JobSpec) -> Result<JobHandle, JobError> {
        let cancel = CancelHandle::new();
        let rt = self.clone();
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-job".into())
            // WASM runs on this thread's stack: leave room above the WASM stack limit for host
            // frames.
            .stack_size(self.inner.config.max_wasm_stack + (2 << 20))
            .spawn(move || rt.run(&spec, &c))
            .map_err(|source| JobError::Io {
                what: "starting a job thread".into(),
                source,
            })?;
        Ok(JobHandle { cancel, thread })
    }
}

/// A WASI command: imports only WASI preview 1 and exports `_start: [] -> []`.
fn check_command(module: &Module) -> Result<(), JobError> {
    for import in module.imports() {
        if import.module() != WASI {
            return Err(JobError::UnsupportedImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        _ => Err(JobError::MissingStart),
    }
}

/// Maps wasmtime's error to why the job ended. Causes raised by this crate travel inside the
/// error chain; wasmtime's own traps are matched by kind.
fn classify(err: &wasmtime::Error, fuel_limit: Option<u64>) -> Termination {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Termination::Exit(exit.0);
    }
    if let Some(cause) = err.chain().find_map(|e| e.downcast_ref::<TrapCause>()) {
        return Termination::Trap(cause.clone());
    }
    let cause = match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => TrapCause::OutOfFuel {
            limit: fuel_limit.unwrap_or(u64::MAX),
        },
        Some(Trap::StackOverflow) => TrapCause::StackOverflow,
        Some(t) => TrapCause::Wasm(t.to_string()),
        None => TrapCause::Other(format!("{err:#}")),
    };
    Termination::Trap(cause)
}

/// Regular files under `dir`, sorted; symlinks are listed with size 0 and never followed.
fn list_files(dir: &Path) -> std::io::Result<Vec<OutputFile>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let meta = entry.metadata()?; // does not follow symlinks
            let path = rel.join(entry.file_name());
            if meta.is_dir() {
                stack.push(path);
            } else {
                let size = if meta.is_file() { meta.len() } else { 0 };
                out.push(OutputFile { path, size });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
