//! The example jobs, the job spec formats, and the local runner.

use crate::common;

use std::process::Command;

use common::{c_job, hello_wat_path, run, runtime};
use sonm_wasm_runtime::{JobSpec, Limits, ModuleSource, Termination};

#[test]
fn hello_wat_prints_and_reports_usage() {
    let rt = runtime();
    let r = run(&rt, &JobSpec::new(ModuleSource::Path(hello_wat_path())));
    assert_eq!(r.termination, Termination::Exit(0));
    assert_eq!(r.stdout.text(), "hello from wat\n");
    assert!(!r.stdout.truncated);
    let fuel = r.usage.fuel_consumed.expect("fuel metering is the default");
    assert!(fuel > 0 && fuel < 100, "{fuel}");
    assert_eq!(r.usage.peak_memory_bytes, 64 << 10);
    assert!(r.usage.wall_time >= r.usage.cpu_time / 2);
}

#[test]
fn hello_c_prints_its_arguments() {
    let rt = runtime();
    let mut spec = JobSpec::new(ModuleSource::Path(c_job("hello")));
    spec.args = vec!["big".into(), "world".into()];
    let r = run(&rt, &spec);
    assert_eq!(r.termination, Termination::Exit(0), "{r:?}");
    assert_eq!(r.stdout.text(), "hello from wasm big world\n");
    assert!(r.stderr.bytes.is_empty());
}

#[test]
fn fuel_is_deterministic() {
    let rt = runtime();
    let mut spec = JobSpec::new(ModuleSource::Path(c_job("hello")));
    spec.args = vec!["x".into()];
    let a = run(&rt, &spec).usage.fuel_consumed.unwrap();
    // A second runtime (fresh compile) must count the same.
    let b = run(&runtime(), &spec).usage.fuel_consumed.unwrap();
    let c = run(&rt, &spec).usage.fuel_consumed.unwrap();
    assert_eq!((a, a), (b, c));
    // Fuel follows the work: a longer argument list costs more.
    spec.args = vec!["x".into(); 50];
    assert!(run(&rt, &spec).usage.fuel_consumed.unwrap() > a);
}

#[test]
fn random_seed_makes_random_get_reproducible() {
    let rt = runtime();
    // Prints 16 bytes from random_get.
    let mut spec = common::wat(
        r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $rand (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $rand (i32.const 64) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    let bytes = |rt: &sonm_wasm_runtime::Runtime, spec: &JobSpec| run(rt, spec).stdout.bytes;
    assert_ne!(
        bytes(&rt, &spec),
        bytes(&rt, &spec),
        "OS randomness by default"
    );
    spec.random_seed = Some(42);
    let a = bytes(&rt, &spec);
    assert_eq!(a.len(), 16);
    assert_eq!(a, bytes(&runtime(), &spec));
    spec.random_seed = Some(43);
    assert_ne!(a, bytes(&rt, &spec));
}

fn sha256_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("sub/deeper")).unwrap();
    std::fs::write(input.join("empty"), b"").unwrap();
    std::fs::write(input.join("hello.txt"), b"hello\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(input.join("sub/big.bin"), &big).unwrap();
    std::fs::write(input.join("sub/deeper/z"), b"zzz").unwrap();
    dir
}

#[test]
fn sha256_job_matches_sha256sum() {
    let rt = runtime();
    let dir = sha256_fixture();
    let mut spec = JobSpec::new(ModuleSource::Path(c_job("sha256")));
    spec.input_dir = Some(dir.path().join("in"));
    spec.output_dir = Some(dir.path().join("out"));
    let r = run(&rt, &spec);
    assert_eq!(r.termination, Termination::Exit(0), "{r:?}");
    assert_eq!(r.stdout.text(), "hashed 4 files\n");
    let ours = std::fs::read_to_string(dir.path().join("out/SHA256SUMS")).unwrap();
    let expected = Command::new("sha256sum")
        .args(["empty", "hello.txt", "sub/big.bin", "sub/deeper/z"])
        .current_dir(dir.path().join("in"))
        .output()
        .expect("sha256sum (coreutils)");
    assert!(expected.status.success());
    assert_eq!(ours, String::from_utf8(expected.stdout).unwrap());
    assert_eq!(r.output_files.len(), 1);
    assert_eq!(r.output_files[0].path.to_str(), Some("SHA256SUMS"));
    assert_eq!(r.output_files[0].size, ours.len() as u64);
    assert_eq!(r.usage.output_bytes_written, ours.len() as u64);

    // Same input, same fuel: billable and checkable by re-running.
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let again = run(&rt, &spec);
    assert_eq!(again.usage.fuel_consumed, r.usage.fuel_consumed);
}

#[test]
fn wasm_score_prints_a_score() {
    let rt = runtime();
    let mut spec = JobSpec::new(ModuleSource::Path(c_job("wasm-score")));
    spec.args = vec!["5".into()];
    let r = run(&rt, &spec);
    assert_eq!(r.termination, Termination::Exit(0), "{r:?}");
    let out = r.stdout.text();
    let score: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("wasm-score "))
        .expect("score line")
        .parse()
        .unwrap();
    assert!(score > 0.0, "{out}");
    assert!(out.contains("rounds 5\n") && out.contains("checksum "));
}

#[test]
fn spec_reads_toml_and_json() {
    let toml_text = r#"
args = ["a", "b"]
input_dir = "in"
output_dir = "/tmp/out"

[module]
path = "hello.wasm"

[env]
LANG = "C"

[limits]
memory_bytes = 1048576
fuel = 1000
wall_time_ms = 500
"#;
    let spec = JobSpec::from_toml(toml_text).unwrap();
    assert_eq!(spec.module, ModuleSource::Path("hello.wasm".into()));
    assert_eq!(spec.args, ["a", "b"]);
    assert_eq!(spec.env["LANG"], "C");
    assert_eq!(
        spec.limits,
        Limits {
            memory_bytes: 1 << 20,
            fuel: Some(1000),
            wall_time_ms: 500,
            ..Limits::default()
        }
    );
    let mut uncapped = spec.clone();
    uncapped.limits.fuel = None;
    assert_eq!(
        JobSpec::from_toml(&uncapped.to_toml().unwrap()).unwrap(),
        uncapped
    );
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(JobSpec::from_json(&json).unwrap(), spec);
    assert_eq!(JobSpec::from_toml(&spec.to_toml().unwrap()).unwrap(), spec);
    let by_hash = JobSpec::from_json(&format!(
        r#"{{"module": {{"sha256": "{}"}}}}"#,
        "0".repeat(64)
    ));
    assert!(matches!(by_hash.unwrap().module, ModuleSource::Sha256(_)));
    // Typos in limits are errors, not silently ignored limits.
    let err =
        JobSpec::from_toml("[module]\npath = \"x\"\n[limits]\nmemroy_bytes = 1\n").unwrap_err();
    assert!(err.to_string().contains("memroy_bytes"), "{err}");

    // From a file: relative paths are relative to the spec file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("job.toml");
    std::fs::write(&p, toml_text).unwrap();
    let spec = JobSpec::from_file(&p).unwrap();
    assert_eq!(
        spec.module,
        ModuleSource::Path(dir.path().join("hello.wasm"))
    );
    assert_eq!(spec.input_dir, Some(dir.path().join("in")));
    assert_eq!(spec.output_dir, Some("/tmp/out".into()));
}

#[test]
fn example_specs_and_readme_spec_parse_and_run() {
    let jobs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    c_job("hello");
    let rt = runtime();
    let r = run(
        &rt,
        &JobSpec::from_file(&jobs.join("hello/job.toml")).unwrap(),
    );
    assert_eq!(r.stdout.text(), "hello from wasm from a job spec\n");
    let score = JobSpec::from_file(&jobs.join("wasm-score/job.toml")).unwrap();
    assert!(matches!(score.module, ModuleSource::Path(p) if p.ends_with("build/wasm-score.wasm")));

    // The spec shown in the README is a valid spec.
    let readme = std::fs::read_to_string(jobs.join("../README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block in the README");
    let spec = JobSpec::from_toml(block).unwrap();
    assert_eq!(spec.random_seed, Some(42));
    assert_eq!(
        spec.limits,
        Limits {
            fuel: Some(10_000_000_000),
            ..Limits::default()
        }
    );
}

#[test]
fn runner_prints_result_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/f"), b"abc").unwrap();
    let spec = format!(
        "input_dir = \"in\"\noutput_dir = \"out\"\n[module]\npath = {:?}\n",
        c_job("sha256")
    );
    std::fs::write(dir.path().join("job.toml"), spec).unwrap();
    let bin = env!("CARGO_BIN_EXE_sonm-wasm-run");

    let out = Command::new(bin)
        .arg("--json")
        .arg(dir.path().join("job.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["termination"]["exit"], 0);
    assert_eq!(v["stdout"]["bytes"], "hashed 1 files\n");
    assert!(v["usage"]["fuel_consumed"].as_u64().unwrap() > 0);
    assert_eq!(v["output_files"][0]["path"], "SHA256SUMS");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/SHA256SUMS")).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  f\n"
    );

    let out = Command::new(bin)
        .arg(dir.path().join("job.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("exit code      0") && text.contains("fuel           "),
        "{text}"
    );

    // A job stopped by a limit: exit status 100 and the cause printed.
    std::fs::write(
        dir.path().join("loop.toml"),
        "[module]\npath = \"loop.wat\"\n[limits]\nfuel = 1000\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("loop.wat"),
        r#"(module (func (export "_start") (loop $l (br $l))))"#,
    )
    .unwrap();
    let out = Command::new(bin)
        .arg(dir.path().join("loop.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fuel exhausted"));

    // Without in-code checks only the watchdog can stop it: it ends the process at the limit.
    std::fs::write(
        dir.path().join("loop-none.toml"),
        "[module]\npath = \"loop.wat\"\n[limits]\nwall_time_ms = 300\n",
    )
    .unwrap();
    let t = std::time::Instant::now();
    let out = Command::new(bin)
        .args(["--json", "--metering", "none"])
        .arg(dir.path().join("loop-none.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["termination"]["trap"]["cause"], "wall_time");
    // And a normal job under `none` runs to the end, with no fuel count.
    let out = Command::new(bin)
        .args(["--json", "--metering", "none"])
        .arg(dir.path().join("job.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["usage"]["fuel_consumed"].is_null());

    // Bad arguments and a job that cannot start.
    assert_eq!(Command::new(bin).output().unwrap().status.code(), Some(2));
    let out = Command::new(bin)
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101));
}
