//! The benchmark vector of DESIGN.md, measured at first start and cached in the state directory.
//!
//! - `cpu-sysbench-single` / `cpu-sysbench-multi`: sysbench's CPU test re-implemented (an event
//!   is counting the primes up to 10,000 by trial division), events per second on one thread
//!   and on every core at once. sysbench itself is not required; the numbers are of the same
//!   kind, not byte-identical to sysbench's.
//! - `cpu-cores`, `ram-size`, `storage-size`, `gpu-count`, `gpu-mem`: from the [`Inventory`].
//! - `net-download` / `net-upload`: from the configuration (no speed-test server exists yet).
//! - GPU hash rates and Redshift: 0 (no miner is installed).
//! - `wasm-score`: the `wasm-score` job of `sonm-wasm-runtime` run by the worker's own runtime
//!   (so with the metering that customers' jobs get).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sonm_market::{Benchmark, Benchmarks};
use sonm_wasm_runtime::{CancelHandle, JobSpec, Limits, ModuleSource, Runtime, Termination};

use crate::inventory::Inventory;

/// The cache file in the state directory.
pub const CACHE_FILE: &str = "benchmarks.json";
const CACHE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wasm-score job: {0}")]
    WasmScore(String),
}

/// How to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchConfig {
    /// The `wasm-score.wasm` module (built by `wasm-runtime/jobs/build.sh`); `None`: the
    /// example jobs directory of the source tree.
    pub wasm_score_module: Option<PathBuf>,
    /// Rounds of the wasm-score job (about 1 ms each on a 2020s server core; the job reads a
    /// 1 ms clock, so fewer than ~100 rounds make a noisy score).
    pub wasm_score_rounds: u32,
    /// How long each CPU measurement runs, milliseconds.
    pub cpu_ms: u64,
    /// Measured elsewhere (bit/s); 0 when unknown.
    pub net_download: u64,
    pub net_upload: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            wasm_score_module: None,
            wasm_score_rounds: 200,
            cpu_ms: 300,
            net_download: 0,
            net_upload: 0,
        }
    }
}

impl BenchConfig {
    pub fn wasm_score_path(&self) -> PathBuf {
        self.wasm_score_module
            .clone()
            .unwrap_or_else(|| sonm_wasm_runtime::example_jobs_dir().join("wasm-score.wasm"))
    }
}

/// What was measured, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    pub version: u32,
    pub inventory: Inventory,
    pub benchmarks: Benchmarks,
    /// False when the wasm-score job could not run (missing module): re-measured next start.
    pub wasm_score_measured: bool,
    /// Unix seconds.
    pub measured_at: u64,
}

/// The cached measurement when it is for this box (same cores, RAM and GPUs) and complete;
/// otherwise measures again and rewrites the cache.
pub fn load_or_measure(
    state_dir: &Path,
    inventory: &Inventory,
    config: &BenchConfig,
    runtime: &Runtime,
) -> Result<Measured, BenchError> {
    let path = state_dir.join(CACHE_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str::<Measured>(&text) {
            Ok(m) if is_same_box(&m, inventory) => {
                tracing::debug!("benchmarks from cache {}", path.display());
                return Ok(m);
            }
            Ok(_) => tracing::info!("hardware changed: measuring benchmarks again"),
            Err(e) => tracing::warn!("ignoring unreadable {}: {e}", path.display()),
        }
    }
    let measured = measure(inventory, config, runtime)?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&measured).map_err(|e| BenchError::Io {
        what: "encoding benchmarks".into(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| BenchError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
    Ok(measured)
}

fn is_same_box(m: &Measured, inventory: &Inventory) -> bool {
    m.version == CACHE_VERSION
        && m.wasm_score_measured
        && m.inventory.cpu_cores == inventory.cpu_cores
        && m.inventory.ram_bytes == inventory.ram_bytes
        && m.inventory.gpus == inventory.gpus
}

/// Measures the whole vector (about `2 × cpu_ms` plus the wasm-score job).
pub fn measure(
    inventory: &Inventory,
    config: &BenchConfig,
    runtime: &Runtime,
) -> Result<Measured, BenchError> {
    let cpu_time = Duration::from_millis(config.cpu_ms.max(10));
    let single = cpu_events_per_second(cpu_time);
    let multi = cpu_events_per_second_parallel(cpu_time, inventory.cpu_cores);
    let (wasm_score, wasm_score_measured) = match wasm_score(config, runtime) {
        Ok(score) => (score, true),
        Err(e) => {
            tracing::warn!("wasm-score not measured (reported as 0): {e}");
            (0, false)
        }
    };
    let mut b = Benchmarks::ZERO;
    b.set(Benchmark::CpuSysbenchMulti, multi);
    b.set(Benchmark::CpuSysbenchSingle, single);
    b.set(Benchmark::CpuCores, u64::from(inventory.cpu_cores));
    b.set(Benchmark::RamSize, inventory.ram_bytes);
    b.set(Benchmark::StorageSize, inventory.storage_bytes);
    b.set(Benchmark::NetDownload, config.net_download);
    b.set(Benchmark::NetUpload, config.net_upload);
    b.set(Benchmark::GpuCount, inventory.gpus.len() as u64);
    b.set(Benchmark::GpuMem, inventory.gpu_memory_each());
    b.set(Benchmark::WasmScore, wasm_score);
    Ok(Measured {
        version: CACHE_VERSION,
        inventory: inventory.clone(),
        benchmarks: b,
        wasm_score_measured,
        measured_at: unix_now(),
    })
}

/// One sysbench-style CPU event: count the primes up to 10,000 by trial division.
fn cpu_event() -> u32 {
    let mut primes = 0;
    for c in 3u32..=10_000 {
        let mut d = 2;
        let mut prime = true;
        while d * d <= c {
            if c % d == 0 {
                prime = false;
                break;
            }
            d += 1;
        }
        primes += u32::from(prime);
    }
    primes
}

/// Events per second on this thread, over about `time`.
pub fn cpu_events_per_second(time: Duration) -> u64 {
    let start = Instant::now();
    let mut events = 0u64;
    let mut sink = 0u32;
    while start.elapsed() < time {
        sink = sink.wrapping_add(std::hint::black_box(cpu_event()));
        events += 1;
    }
    std::hint::black_box(sink);
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    (events as f64 / secs) as u64
}

/// The sum of events per second over `threads` threads running at once.
pub fn cpu_events_per_second_parallel(time: Duration, threads: u32) -> u64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| s.spawn(move || cpu_events_per_second(time)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// Runs the wasm-score job and reads `wasm-score <n>` from its output.
pub fn wasm_score(config: &BenchConfig, runtime: &Runtime) -> Result<u64, BenchError> {
    let path = config.wasm_score_path();
    if !path.is_file() {
        return Err(BenchError::WasmScore(format!(
            "module {} not found (build it with wasm-runtime/jobs/build.sh)",
            path.display()
        )));
    }
    let mut spec = JobSpec::new(ModuleSource::Path(path));
    spec.args = vec![config.wasm_score_rounds.max(1).to_string()];
    spec.limits = Limits {
        memory_bytes: 16 << 20,
        wall_time_ms: 60_000,
        ..Limits::default()
    };
    let report = runtime
        .run(&spec, &CancelHandle::new())
        .map_err(|e| BenchError::WasmScore(e.to_string()))?;
    if report.termination != Termination::Exit(0) {
        return Err(BenchError::WasmScore(format!(
            "ended with {:?}",
            report.termination
        )));
    }
    parse_wasm_score(&report.stdout.text())
        .ok_or_else(|| BenchError::WasmScore("no `wasm-score <n>` line in its output".into()))
}

/// The score from the job's output.
pub fn parse_wasm_score(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("wasm-score "))
        .and_then(|n| n.trim().parse().ok())
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wasm_score_line() {
        assert_eq!(
            parse_wasm_score("rounds 10\nchecksum 00ff\nwasm-score 1234\n"),
            Some(1234)
        );
        assert_eq!(parse_wasm_score("rounds 10\n"), None);
    }

    #[test]
    fn a_cpu_event_counts_the_primes() {
        // 1229 primes up to 10,000, less the prime 2 (the loop starts at 3).
        assert_eq!(cpu_event(), 1228);
    }
}
