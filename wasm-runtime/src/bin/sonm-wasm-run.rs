//! `sonm-wasm-run [--json] [--cache-dir DIR] [--metering fuel|epoch-only|none] JOB.toml|JOB.json`
//!
//! Runs one job spec locally and prints its result and usage, so suppliers and customers can
//! try a job before buying time. Exit status: the job's exit code; 100 when the runtime stopped
//! the job (limit, trap, cancel); 101 when it could not start; 2 for bad arguments.
//!
//! With `--metering none` the generated code has no fuel or epoch checks, so nothing inside the
//! process can stop the job: a watchdog thread ends the whole process at the wall-time limit,
//! and a worker cancels the job by killing the process.

use std::path::PathBuf;
use std::process::ExitCode;

use sonm_wasm_runtime::{
    CancelHandle, JobReport, JobSpec, Metering, Runtime, RuntimeConfig, Termination,
};

const USAGE: &str = "usage: sonm-wasm-run [--json] [--cache-dir DIR] [--metering fuel|epoch-only|none] JOB.toml|JOB.json";

struct Args {
    json: bool,
    cache_dir: Option<PathBuf>,
    metering: Metering,
    spec: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut json = false;
    let mut cache_dir = None;
    let mut metering = Metering::Fuel;
    let mut spec = None;
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--json") => json = true,
            Some("--cache-dir") => {
                cache_dir = Some(it.next().ok_or("--cache-dir needs a value")?.into())
            }
            Some("--metering") => {
                metering = match it.next().as_ref().and_then(|v| v.to_str()) {
                    Some("fuel") => Metering::Fuel,
                    Some("epoch-only") => Metering::EpochOnly,
                    Some("none") => Metering::None,
                    _ => return Err("--metering is fuel, epoch-only or none".into()),
                }
            }
            Some("-h" | "--help") => return Err(String::new()),
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if spec.is_none() => spec = Some(PathBuf::from(a)),
            _ => return Err("only one job spec".into()),
        }
    }
    Ok(Args {
        json,
        cache_dir,
        metering,
        spec: spec.ok_or("missing job spec")?,
    })
}

fn print_human(r: &JobReport) {
    match &r.termination {
        Termination::Exit(c) => println!("exit code      {c}"),
        Termination::Trap(t) => println!("stopped        {t}"),
    }
    println!("module sha256  {}", r.module_sha256);
    let u = &r.usage;
    match u.fuel_consumed {
        Some(f) => println!("fuel           {f}"),
        None => println!("fuel           (not metered)"),
    }
    println!("cpu time       {:?}", u.cpu_time);
    println!("wall time      {:?}", u.wall_time);
    println!("peak memory    {} bytes", u.peak_memory_bytes);
    println!("output written {} bytes", u.output_bytes_written);
    for f in &r.output_files {
        println!("output file    {} ({} bytes)", f.path.display(), f.size);
    }
    for (name, c) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        if !c.bytes.is_empty() || c.truncated {
            let cut = if c.truncated { " (truncated)" } else { "" };
            println!("--- {name}{cut} ---");
            print!("{}", c.text());
            if !c.bytes.ends_with(b"\n") {
                println!();
            }
        }
    }
}

/// Ends the process at the wall-time limit: the only stop for a job compiled without checks.
fn watchdog(limit_ms: u64, json: bool) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(limit_ms));
        let cause = sonm_wasm_runtime::TrapCause::WallTime { limit_ms };
        if json {
            let t = Termination::Trap(cause);
            let v = serde_json::json!({ "termination": t, "killed_by": "watchdog" });
            println!("{v}");
        } else {
            println!("stopped        {cause} (watchdog)");
        }
        std::process::exit(100);
    });
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("sonm-wasm-run: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = JobSpec::from_file(&args.spec).and_then(|spec| {
        let rt = Runtime::new(RuntimeConfig {
            metering: args.metering,
            cache_dir: args.cache_dir,
            // One job: a small pool keeps the reserved address space small.
            max_concurrent_jobs: 1,
            ..RuntimeConfig::default()
        })?;
        if args.metering == Metering::None {
            watchdog(spec.limits.wall_time_ms, args.json);
        }
        rt.run(&spec, &CancelHandle::new())
    });
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("sonm-wasm-run: {e}"),
                }
            } else {
                print_human(&report);
            }
            match report.termination {
                Termination::Exit(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
                Termination::Trap(_) => ExitCode::from(100),
            }
        }
        Err(e) => {
            if args.json {
                let msg = serde_json::json!({ "error": e.to_string() });
                println!("{msg}");
            } else {
                eprintln!("sonm-wasm-run: {e}");
            }
            ExitCode::from(101)
        }
    }
}
