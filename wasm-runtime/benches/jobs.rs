//! Job-start latency, throughput, sha256 WASM vs native, memory. Prints a Markdown table.
//!
//! Run: `wasm-runtime/jobs/build.sh && cargo bench -p sonm-wasm-runtime --bench jobs`
//! (`-- quick` for fewer iterations).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sonm_wasm_runtime::{
    CancelHandle, JobSpec, Metering, ModuleSource, Runtime, RuntimeConfig, Termination,
    example_jobs_dir,
};

fn job_bytes(name: &str) -> Vec<u8> {
    let p = example_jobs_dir().join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; run wasm-runtime/jobs/build.sh first", p.display()))
}

fn hello_wat() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/hello/hello.wat")).unwrap()
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

struct Table(Vec<[String; 3]>);

impl Table {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>, note: impl Into<String>) {
        let r = [what.into(), value.into(), note.into()];
        eprintln!("  {} | {} | {}", r[0], r[1], r[2]);
        self.0.push(r);
    }
}

fn run_ok(rt: &Runtime, spec: &JobSpec) -> sonm_wasm_runtime::JobReport {
    let r = rt.run(spec, &CancelHandle::new()).expect("job starts");
    assert_eq!(r.termination, Termination::Exit(0), "{r:?}");
    r
}

/// Times `n` runs of `spec` after `before` (untimed) each; returns sorted durations.
fn time_runs(
    rt: &Runtime,
    spec: &JobSpec,
    n: usize,
    mut before: impl FnMut(&Runtime),
) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            before(rt);
            let t = Instant::now();
            run_ok(rt, spec);
            t.elapsed()
        })
        .collect();
    v.sort();
    v
}

fn start_latency(t: &mut Table, quick: bool, cache_dir: &Path) {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir.to_owned()),
        max_concurrent_jobs: 16,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let n_hot = if quick { 2_000 } else { 20_000 };
    let n_cold = if quick { 10 } else { 40 };
    for (name, bytes) in [
        ("WAT hello", hello_wat()),
        ("C hello", job_bytes("hello.wasm")),
    ] {
        let sha = rt.load_module(&bytes).unwrap();
        let by_bytes = JobSpec::new(ModuleSource::Bytes(bytes.clone()));
        // First run: compile (no cache at all) + instantiate + `_start`.
        let entry = rt.cache_entry_path(&sha).unwrap();
        let v = time_runs(&rt, &by_bytes, n_cold, |rt| {
            rt.clear_memory_cache();
            let _ = std::fs::remove_file(&entry);
        });
        t.row(
            format!("{name}: first run (compile)"),
            format!("{} / {}", ms(pct(&v, 0.5)), ms(pct(&v, 0.99))),
            "median / p99; module bytes in the spec",
        );
        // Restart: compiled code from the disk cache (checked, deserialized).
        let by_hash = JobSpec::new(ModuleSource::Sha256(sha.clone()));
        let v = time_runs(&rt, &by_hash, n_cold * 5, |rt| rt.clear_memory_cache());
        t.row(
            format!("{name}: disk-cached run"),
            format!("{} / {}", us(pct(&v, 0.5)), us(pct(&v, 0.99))),
            "median / p99; verify + deserialize + instantiate + `_start`",
        );
        // Hot: InstancePre in memory.
        let _ = time_runs(&rt, &by_hash, 200, |_| {});
        let v = time_runs(&rt, &by_hash, n_hot, |_| {});
        t.row(
            format!("{name}: cached run"),
            format!("{} / {}", us(pct(&v, 0.5)), us(pct(&v, 0.99))),
            "median / p99; whole `Runtime::run`: spec, WASI ctx, limits, capture, usage",
        );
    }
}

fn throughput(t: &mut Table, quick: bool) {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let sha = rt.load_module(&job_bytes("hello.wasm")).unwrap();
    let spec = Arc::new(JobSpec::new(ModuleSource::Sha256(sha)));
    let secs = if quick { 0.5 } else { 3.0 };
    for threads in [1usize, 2] {
        let t0 = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let (rt, spec) = (rt.clone(), spec.clone());
                    s.spawn(move || {
                        let mut n = 0u64;
                        let t0 = Instant::now();
                        while t0.elapsed().as_secs_f64() < secs {
                            for _ in 0..100 {
                                run_ok(&rt, &spec);
                            }
                            n += 100;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let rate = total as f64 / t0.elapsed().as_secs_f64();
        t.row(
            format!("C hello jobs/s, {threads} thread(s)"),
            format!("{rate:.0}"),
            "whole machinery, cached module",
        );
    }
}

fn sha256_vs_native(t: &mut Table, quick: bool) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let mut data = vec![0u8; 64 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(input.join("data.bin"), &data).unwrap();
    drop(data);
    let native = example_jobs_dir().join("sha256-native");
    let bytes = job_bytes("sha256.wasm");

    let fuel_rt = Runtime::new(RuntimeConfig {
        max_concurrent_jobs: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let epoch_rt = Runtime::new(RuntimeConfig {
        metering: Metering::EpochOnly,
        max_concurrent_jobs: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let none_rt = Runtime::new(RuntimeConfig {
        metering: Metering::None,
        max_concurrent_jobs: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    // Small slots (256 MiB reservation): 16× less address space, but explicit bounds checks.
    let small_rt = Runtime::new(RuntimeConfig {
        max_concurrent_jobs: 2,
        memory_reservation: 256 << 20,
        max_memory_bytes: 256 << 20,
        ..RuntimeConfig::default()
    })
    .unwrap();
    small_rt.load_module(&bytes).unwrap();
    let mut spec = JobSpec::new(ModuleSource::Sha256(fuel_rt.load_module(&bytes).unwrap()));
    epoch_rt.load_module(&bytes).unwrap();
    none_rt.load_module(&bytes).unwrap();
    spec.input_dir = Some(input.clone());
    spec.output_dir = Some(dir.path().join("out"));
    spec.limits.fuel = None;
    // wasmtime-wasi's default context hops to tokio's blocking pool for each file operation;
    // the runtime does its I/O on the job's thread. Both shown, to measure what that costs.
    let plain_pool = plain_wasmtime(&bytes, false, |_| {});
    let plain = plain_wasmtime(&bytes, true, |_| {});
    // Cheap engine settings that might speed Cranelift's code up, measured on the floor.
    let plain_ss = plain_wasmtime(&bytes, true, |c| {
        c.cranelift_opt_level(wasmtime::OptLevel::SpeedAndSize);
    });
    let plain_inl = plain_wasmtime(&bytes, true, |c| {
        c.compiler_inlining(wasmtime::Inlining::Yes);
    });

    let rounds = if quick { 2 } else { 9 };
    let (mut tn, mut tf, mut te, mut tp) = (vec![], vec![], vec![], vec![]);
    let (mut t0n, mut tx, mut tc, mut ts) = (vec![], vec![], vec![], vec![]);
    let (mut tpss, mut tpinl, mut tpp) = (vec![], vec![], vec![]);
    // The runner as a job process (no in-code checks, killed from outside), its module compiled
    // once into a disk cache first, timed from spawn to exit like the native binary.
    let runner = runner_exe();
    let job_toml = dir.path().join("job.toml");
    std::fs::write(
        &job_toml,
        format!(
            "input_dir = {:?}\noutput_dir = {:?}\n[module]\npath = {:?}\n",
            input,
            dir.path().join("out-runner"),
            example_jobs_dir().join("sha256.wasm")
        ),
    )
    .unwrap();
    let run_runner = || {
        let t0 = Instant::now();
        let out = Command::new(&runner)
            .args(["--metering", "none", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg(&job_toml)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        t0.elapsed()
    };
    run_runner();
    let mut fuel = None;
    for _ in 0..rounds {
        let t0 = Instant::now();
        let st = Command::new(&native)
            .arg(&input)
            .arg(dir.path().join("native.sums"))
            .output()
            .unwrap();
        assert!(st.status.success());
        tn.push(t0.elapsed());
        let t0 = Instant::now();
        let st = Command::new(example_jobs_dir().join("sha256-native-clang"))
            .arg(&input)
            .arg(dir.path().join("clang.sums"))
            .output()
            .unwrap();
        assert!(st.status.success());
        tc.push(t0.elapsed());
        let r = run_ok(&fuel_rt, &spec);
        tf.push(r.usage.wall_time);
        assert!(
            fuel.is_none() || fuel == r.usage.fuel_consumed,
            "fuel must be deterministic"
        );
        fuel = r.usage.fuel_consumed;
        te.push(run_ok(&epoch_rt, &spec).usage.wall_time);
        t0n.push(run_ok(&none_rt, &spec).usage.wall_time);
        ts.push(run_ok(&small_rt, &spec).usage.wall_time);
        tx.push(run_runner());
        tp.push(plain(&input, &dir.path().join("plain")));
        tpp.push(plain_pool(&input, &dir.path().join("plain-pool")));
        tpss.push(plain_ss(&input, &dir.path().join("plain-ss")));
        tpinl.push(plain_inl(&input, &dir.path().join("plain-inl")));
    }
    let sums = std::fs::read_to_string(dir.path().join("out/SHA256SUMS")).unwrap();
    let native_sums = std::fs::read_to_string(dir.path().join("native.sums")).unwrap();
    assert_eq!(sums, native_sums, "WASM and native sha256 must agree");
    for v in [
        &mut tn, &mut tc, &mut tf, &mut te, &mut tp, &mut t0n, &mut tx, &mut ts, &mut tpss,
        &mut tpinl, &mut tpp,
    ] {
        v.sort();
    }
    // The minimum over paired rounds is the best estimate of uncontended speed for this
    // deterministic CPU-bound work on a shared 2-core box; the median is shown beside it.
    let m = |v: &Vec<Duration>| pct(v, 0.5);
    // Ratios against both native builds: gcc (the system `cc`) and clang-14 (the compiler
    // of the WASM build).
    let show = |v: &Vec<Duration>| {
        let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        format!(
            "{} ({:.2}× gcc, {:.2}× clang) / {} ({:.2}×, {:.2}×)",
            ms(v[0]),
            r(v[0], tn[0]),
            r(v[0], tc[0]),
            ms(m(v)),
            r(m(v), m(&tn)),
            r(m(v), m(&tc))
        )
    };
    t.row(
        "sha256 64 MiB: native C (cc -O2)",
        format!("{} / {}", ms(tn[0]), ms(m(&tn))),
        format!("min / median of {rounds} paired rounds, process spawn included"),
    );
    t.row(
        "sha256 64 MiB: plain wasmtime, default WASI context",
        show(&tpp),
        "no preemption; file I/O through tokio's blocking pool (a thread hop per read)",
    );
    t.row(
        "sha256 64 MiB: plain wasmtime (no fuel, no epochs)",
        show(&tp),
        "no preemption at all: not safe for strangers' code; I/O on the job's thread",
    );
    t.row(
        "sha256 64 MiB: plain wasmtime, `OptLevel::SpeedAndSize`",
        show(&tpss),
        "the one other Cranelift optimisation level",
    );
    t.row(
        "sha256 64 MiB: plain wasmtime, `compiler_inlining(Inlining::Yes)`",
        show(&tpinl),
        "intra-module inlining by Cranelift (off by default)",
    );
    t.row(
        "sha256 64 MiB: native C (clang-14 -O2)",
        show(&tc),
        "same compiler as the WASM build",
    );
    t.row(
        "sha256 64 MiB: runtime, `Metering::None` in process",
        show(&t0n),
        "no checks in the code; only safe in a process killed from outside",
    );
    t.row(
        "sha256 64 MiB: `sonm-wasm-run --metering none` process",
        show(&tx),
        "spawn to exit: disk-cached module + watchdog; cancel = kill",
    );
    t.row(
        "sha256 64 MiB: runtime, epochs only (worker default)",
        show(&te),
        "wall time + cancel, no instruction count; the worker's production metering",
    );
    t.row(
        "sha256 64 MiB: runtime, fuel + epochs (library default)",
        show(&tf),
        format!("deterministic fuel = {}", fuel.unwrap_or(0)),
    );
    t.row(
        "sha256 64 MiB: fuel + epochs, 256 MiB slots",
        show(&ts),
        "bounds-checked memory; 16× less reserved address space",
    );
}

/// The runner binary, built by `cargo bench` next to the bench in target/<profile>/.
fn runner_exe() -> std::path::PathBuf {
    let me = std::env::current_exe().unwrap();
    let dir = me.parent().unwrap().parent().unwrap();
    let p = dir.join("sonm-wasm-run");
    assert!(
        p.exists(),
        "{} missing: build it with `cargo build --release -p sonm-wasm-runtime --bin sonm-wasm-run`",
        p.display()
    );
    p
}

/// The same module under a default wasmtime engine (but for what `tweak` sets) with bare WASI:
/// the cost floor.
fn plain_wasmtime(
    bytes: &[u8],
    io_on_thread: bool,
    tweak: impl FnOnce(&mut wasmtime::Config),
) -> impl Fn(&Path, &Path) -> Duration {
    use wasmtime::{Config, Engine, Linker, Module, Store};
    use wasmtime_wasi::{FsPerms, WasiCtxBuilder, p1};
    let mut config = Config::new();
    tweak(&mut config);
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, bytes).unwrap();
    let mut linker: Linker<p1::WasiP1Ctx> = Linker::new(&engine);
    p1::add_to_linker_sync(&mut linker, |c| c).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    move |input: &Path, out: &Path| {
        std::fs::create_dir_all(out).unwrap();
        let ctx = WasiCtxBuilder::new()
            .preopened_dir(input, "/input", FsPerms::ReadOnly)
            .unwrap()
            .preopened_dir(out, "/output", FsPerms::ReadWrite)
            .unwrap()
            .allow_blocking_current_thread(io_on_thread)
            .build_p1();
        let mut store = Store::new(&engine, ctx);
        let t0 = Instant::now();
        let i = pre.instantiate(&mut store).unwrap();
        i.get_typed_func::<(), ()>(&mut store, "_start")
            .unwrap()
            .call(&mut store, ())
            .unwrap();
        t0.elapsed()
    }
}

fn memory(t: &mut Table) {
    let vm0 = status_kib("VmSize:");
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let vm1 = status_kib("VmSize:");
    t.row(
        "virtual address space reserved by the pool",
        format!("{:.1} GiB", (vm1 - vm0) as f64 / (1 << 20) as f64),
        format!(
            "{} slots × (4 GiB reservation + 32 MiB guard); config estimate {:.0} GiB",
            rt.config().max_concurrent_jobs,
            rt.config().reserved_address_space() as f64 / (1u64 << 30) as f64
        ),
    );
    let hello = rt.load_module(&job_bytes("hello.wasm")).unwrap();
    run_ok(&rt, &JobSpec::new(ModuleSource::Sha256(hello)));
    t.row(
        "peak RSS, one C hello job",
        format!("{:.1} MiB", status_kib("VmHWM:") as f64 / 1024.0),
        "whole bench process so far (runtime, engine, one compiled module)",
    );
    // 100 jobs alive at once: each computes for a while, so they overlap on 2 cores.
    let score = rt.load_module(&job_bytes("wasm-score.wasm")).unwrap();
    let mut spec = JobSpec::new(ModuleSource::Sha256(score));
    spec.args = vec!["3".into()];
    let hs: Vec<_> = (0..100).map(|_| rt.spawn(spec.clone()).unwrap()).collect();
    let mut peak_mem = 0;
    for h in hs {
        let r = h.join().unwrap();
        assert_eq!(r.termination, Termination::Exit(0));
        peak_mem = peak_mem.max(r.usage.peak_memory_bytes);
    }
    t.row(
        "peak RSS, 100 concurrent wasm-score jobs",
        format!("{:.1} MiB", status_kib("VmHWM:") as f64 / 1024.0),
        format!(
            "each job: {} KiB linear memory, its own thread",
            peak_mem / 1024
        ),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else named `quick` shortens the run.
    let quick = std::env::args().any(|a| a == "quick");
    // Sections can be picked by name (`-- throughput`); default: all.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["memory", "start", "throughput", "sha256"].contains(&a.as_str()))
        .collect();
    let want = |s: &str| picked.is_empty() || picked.iter().any(|p| p == s);
    let mut t = Table(Vec::new());
    let cache = tempfile::tempdir().unwrap();
    eprintln!("running (quick = {quick})");
    if want("memory") {
        memory(&mut t);
    }
    if want("start") {
        start_latency(&mut t, quick, cache.path());
    }
    if want("throughput") {
        throughput(&mut t, quick);
    }
    if want("sha256") {
        sha256_vs_native(&mut t, quick);
    }
    println!("| measurement | result | notes |\n|---|---|---|");
    for [a, b, c] in &t.0 {
        println!("| {a} | {b} | {c} |");
    }
}
