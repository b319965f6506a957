//! Hostile and broken jobs: each ends with a typed cause, and the runtime keeps working.

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_healthy, c_job, run, runtime, wat};
use sonm_wasm_runtime::{
    JobError, JobSpec, Limits, ModuleSource, Runtime, RuntimeConfig, Termination, TrapCause,
};

fn trap_of(rt: &Runtime, spec: &JobSpec) -> TrapCause {
    let r = run(rt, spec);
    match r.termination {
        Termination::Trap(t) => t,
        ref other => panic!("expected a trap, got {other:?}: {r:?}"),
    }
}

#[test]
fn garbage_bytes_are_an_invalid_module() {
    let rt = runtime();
    let spec = JobSpec::new(ModuleSource::Bytes(
        b"\0asm\x07\0\0\0 this is not wasm".to_vec(),
    ));
    let err = rt.run(&spec, &Default::default()).unwrap_err();
    assert!(matches!(err, JobError::InvalidModule(_)), "{err}");
    let spec = JobSpec::new(ModuleSource::Bytes(vec![0xde, 0xad, 0xbe, 0xef]));
    assert!(matches!(
        rt.run(&spec, &Default::default()),
        Err(JobError::InvalidModule(_))
    ));
    assert_healthy(&rt);
}

#[test]
fn truncated_module_is_an_invalid_module() {
    let rt = runtime();
    let bytes = std::fs::read(c_job("hello")).unwrap();
    let spec = JobSpec::new(ModuleSource::Bytes(bytes[..bytes.len() / 2].to_vec()));
    let err = rt.run(&spec, &Default::default()).unwrap_err();
    assert!(matches!(err, JobError::InvalidModule(_)), "{err}");
    assert_healthy(&rt);
}

#[test]
fn non_wasi_imports_are_refused() {
    let rt = runtime();
    let spec = wat(r#"(module (import "env" "open_socket" (func)) (func (export "_start")))"#);
    match rt.run(&spec, &Default::default()) {
        Err(JobError::UnsupportedImport { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "open_socket"));
        }
        other => panic!("{other:?}"),
    }
    // A WASI-named function that does not exist cannot be linked either.
    let spec = wat(
        r#"(module (import "wasi_snapshot_preview1" "sock_connect" (func)) (func (export "_start")))"#,
    );
    assert!(matches!(
        rt.run(&spec, &Default::default()),
        Err(JobError::Link(_))
    ));
    assert_healthy(&rt);
}

#[test]
fn module_without_start_is_refused() {
    let rt = runtime();
    let spec = wat(r#"(module (memory (export "memory") 1) (func (export "main")))"#);
    let err = rt.run(&spec, &Default::default()).unwrap_err();
    assert!(matches!(err, JobError::MissingStart), "{err}");
    // `_start` with the wrong signature is not a command either.
    let spec = wat(r#"(module (func (export "_start") (param i32)))"#);
    assert!(matches!(
        rt.run(&spec, &Default::default()),
        Err(JobError::MissingStart)
    ));
    assert_healthy(&rt);
}

const INFINITE_LOOP: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let rt = runtime();
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.fuel = Some(5_000_000);
    assert_eq!(
        trap_of(&rt, &spec),
        TrapCause::OutOfFuel { limit: 5_000_000 }
    );
    assert_healthy(&rt);
}

#[test]
fn infinite_loop_hits_the_wall_time_limit() {
    let rt = runtime();
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.fuel = None;
    spec.limits.wall_time_ms = 150;
    let t = Instant::now();
    assert_eq!(trap_of(&rt, &spec), TrapCause::WallTime { limit_ms: 150 });
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_healthy(&rt);
}

#[test]
fn a_job_stopped_by_wall_time_reports_fuel_as_unknown_not_zero() {
    // The engine's fuel count is stale when the epoch check stops a job (fuel lives in a
    // register until the next call); the report must not pass that off as a measurement.
    let rt = runtime();
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.fuel = None;
    spec.limits.wall_time_ms = 100;
    let report = run(&rt, &spec);
    assert_eq!(
        report.termination,
        Termination::Trap(TrapCause::WallTime { limit_ms: 100 })
    );
    assert_eq!(report.usage.fuel_consumed, None);
    assert!(
        report.usage.cpu_time > Duration::ZERO,
        "CPU time is what bills it"
    );
    // A job that ends by itself still reports its fuel.
    let hello = JobSpec::new(ModuleSource::Path(common::hello_wat_path()));
    assert!(run(&rt, &hello).usage.fuel_consumed.unwrap() > 0);
}

#[test]
fn wall_time_is_enforced_after_the_ticker_went_idle() {
    // The epoch ticker parks after ~200 idle ticks; the next job must wake it.
    let rt = runtime();
    rt.load_module(INFINITE_LOOP.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.fuel = None;
    spec.limits.wall_time_ms = 100;
    let t = Instant::now();
    assert_eq!(trap_of(&rt, &spec), TrapCause::WallTime { limit_ms: 100 });
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn memory_grow_bomb_hits_the_memory_limit() {
    let rt = runtime();
    let mut spec = wat(r#"(module (memory (export "memory") 1)
             (func (export "_start") (loop $l (drop (memory.grow (i32.const 16))) (br $l))))"#);
    spec.limits.memory_bytes = 8 << 20;
    let r = run(&rt, &spec);
    match r.termination {
        Termination::Trap(TrapCause::MemoryLimit { limit, requested }) => {
            assert_eq!(limit, 8 << 20);
            assert!(requested > limit);
        }
        other => panic!("{other:?}"),
    }
    assert!(r.usage.peak_memory_bytes <= 8 << 20, "{:?}", r.usage);
    assert!(r.usage.peak_memory_bytes > 4 << 20, "{:?}", r.usage);
    assert_healthy(&rt);
}

#[test]
fn initial_memory_over_the_limit_is_refused() {
    let rt = runtime();
    let mut spec = wat(r#"(module (memory (export "memory") 200) (func (export "_start")))"#);
    spec.limits.memory_bytes = 1 << 20;
    assert!(matches!(trap_of(&rt, &spec), TrapCause::MemoryLimit { .. }));
    assert_healthy(&rt);
}

#[test]
fn memory_limit_above_the_pool_slot_is_refused() {
    let rt = runtime();
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.memory_bytes = rt.config().max_memory_bytes + 1;
    let err = rt.run(&spec, &Default::default()).unwrap_err();
    assert!(
        matches!(
            err,
            JobError::LimitTooHigh {
                what: "memory_bytes",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unbounded_recursion_overflows_the_wasm_stack() {
    let rt = runtime();
    let spec = wat(
        r#"(module (func $f (param i64) (call $f (i64.add (local.get 0) (i64.const 1))))
                   (func (export "_start") (call $f (i64.const 0))))"#,
    );
    assert_eq!(trap_of(&rt, &spec), TrapCause::StackOverflow);
    assert_healthy(&rt);
}

#[test]
fn wasm_traps_are_typed() {
    let rt = runtime();
    let spec = wat(r#"(module (func (export "_start") unreachable))"#);
    assert!(matches!(trap_of(&rt, &spec), TrapCause::Wasm(m) if m.contains("unreachable")));
    assert_healthy(&rt);
}

/// A job that `path_open`s `path` relative to preopen fd 3 with the given flags and exits with
/// the errno (0 when the open worked).
fn open_job(path: &str, lookup_flags: u32, oflags: u32, rights: u64) -> JobSpec {
    wat(&format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{path}")
  (func (export "_start")
    (call $exit (call $open (i32.const 3) (i32.const {lookup_flags}) (i32.const 100)
      (i32.const {len}) (i32.const {oflags}) (i64.const {rights}) (i64.const 0) (i32.const 0)
      (i32.const 16)))))"#,
        len = path.len()
    ))
}

const FD_READ: u64 = 1 << 1;
const FD_WRITE: u64 = 1 << 6;
const SYMLINK_FOLLOW: u32 = 1;
const O_CREAT: u32 = 1;

fn input_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.txt"), "inside").unwrap();
    std::fs::write(dir.path().join("secret"), "host secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("in/escape")).unwrap();
    std::os::unix::fs::symlink("a.txt", dir.path().join("in/fine")).unwrap();
    dir
}

fn with_input(mut spec: JobSpec, dir: &tempfile::TempDir) -> JobSpec {
    spec.input_dir = Some(dir.path().join("in"));
    spec
}

fn assert_violation(rt: &Runtime, spec: &JobSpec, want_path: &str) {
    assert_violation_of(rt, spec, "path_open", want_path);
}

fn assert_violation_of(rt: &Runtime, spec: &JobSpec, want_op: &str, want_path: &str) {
    let r = run(rt, spec);
    match &r.termination {
        Termination::Trap(TrapCause::SandboxViolation { op, path }) => {
            assert_eq!(op, want_op);
            assert_eq!(path, want_path);
        }
        other => panic!("expected a sandbox violation for {want_path}, got {other:?}"),
    }
    // Nothing of the host leaks: no output at all.
    assert!(r.stdout.bytes.is_empty() && r.stderr.bytes.is_empty());
}

#[test]
fn input_files_and_inner_symlinks_are_readable() {
    let rt = runtime();
    let dir = input_fixture();
    for p in ["a.txt", "fine"] {
        let r = run(
            &rt,
            &with_input(open_job(p, SYMLINK_FOLLOW, 0, FD_READ), &dir),
        );
        assert_eq!(r.termination, Termination::Exit(0), "{p}");
    }
}

#[test]
fn reading_dotdot_is_a_sandbox_violation() {
    let rt = runtime();
    let dir = input_fixture();
    assert_violation(
        &rt,
        &with_input(open_job("../secret", 0, 0, FD_READ), &dir),
        "../secret",
    );
    assert_healthy(&rt);
}

#[test]
fn absolute_path_is_a_sandbox_violation() {
    let rt = runtime();
    let dir = input_fixture();
    let spec = with_input(open_job("/etc/passwd", 0, 0, FD_READ), &dir);
    assert_violation(&rt, &spec, "/etc/passwd");
    assert_healthy(&rt);
}

#[test]
fn symlink_out_of_input_is_a_sandbox_violation() {
    let rt = runtime();
    let dir = input_fixture();
    let spec = with_input(open_job("escape", SYMLINK_FOLLOW, 0, FD_READ), &dir);
    assert_violation(&rt, &spec, "escape");
    assert_healthy(&rt);
}

#[test]
fn stat_outside_input_is_a_sandbox_violation() {
    let rt = runtime();
    let dir = input_fixture();
    let stat = |path: &str| {
        with_input(
            wat(&format!(
                r#"(module
  (import "wasi_snapshot_preview1" "path_filestat_get"
    (func $stat (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{path}")
  (func (export "_start")
    (call $exit (call $stat (i32.const 3) (i32.const 1) (i32.const 100) (i32.const {})
      (i32.const 1024)))))"#,
                path.len()
            )),
            &dir,
        )
    };
    assert_eq!(run(&rt, &stat("a.txt")).termination, Termination::Exit(0));
    assert_violation_of(&rt, &stat("../secret"), "path_filestat_get", "../secret");
    assert_violation_of(&rt, &stat("escape"), "path_filestat_get", "escape");
    assert_healthy(&rt);
}

#[test]
fn links_are_refused() {
    // A hard link from /input (fd 3) into /output (fd 4) would make an input file writable.
    let rt = runtime();
    let dir = input_fixture();
    let mut spec = with_input(
        wat(r#"(module
  (import "wasi_snapshot_preview1" "path_link"
    (func $link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "a.txt")
  (data (i32.const 200) "/etc/passwd")
  (func (export "_start")
    (if (i32.ne (call $link (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5)
                            (i32.const 4) (i32.const 100) (i32.const 5)) (i32.const 58))
      (then (call $exit (i32.const 1))))
    (call $exit (call $symlink (i32.const 200) (i32.const 11) (i32.const 4) (i32.const 100)
      (i32.const 5)))))"#),
        &dir,
    );
    spec.output_dir = Some(dir.path().join("out"));
    assert_eq!(run(&rt, &spec).termination, Termination::Exit(58));
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        0
    );
}

#[test]
fn writing_into_input_is_a_sandbox_violation() {
    let rt = runtime();
    let dir = input_fixture();
    let spec = with_input(open_job("new.txt", 0, O_CREAT, FD_WRITE), &dir);
    assert_violation(&rt, &spec, "new.txt");
    assert!(!dir.path().join("in/new.txt").exists());
    assert_healthy(&rt);
}

/// Opens /output/<name> (preopen fd 3) and writes 60,000-byte chunks until stopped.
const OUTPUT_WRITER: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "big.bin")
  (func (export "_start") (local $e i32)
    (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 7)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
    (if (local.get $e) (then (call $exit (local.get $e))))
    (i32.store (i32.const 32) (i32.const 1024))
    (i32.store (i32.const 36) (i32.const 60000))
    (loop $l
      (local.set $e (call $write (i32.load (i32.const 16)) (i32.const 32) (i32.const 1) (i32.const 48)))
      (if (local.get $e) (then (call $exit (local.get $e))))
      (br $l))))"#;

#[test]
fn writing_past_the_output_quota_stops_the_job() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = wat(OUTPUT_WRITER);
    spec.output_dir = Some(dir.path().join("out"));
    spec.limits.output_bytes = 1 << 20;
    let r = run(&rt, &spec);
    assert_eq!(
        r.trap(),
        Some(&TrapCause::OutputQuota { limit: 1 << 20 }),
        "{r:?}"
    );
    // Charged before the write: the disk never holds more than the quota.
    let size = std::fs::metadata(dir.path().join("out/big.bin"))
        .unwrap()
        .len();
    assert!(size <= 1 << 20 && size > (1 << 20) - 60_000, "{size}");
    assert_eq!(r.usage.output_bytes_written, size);
    assert_eq!(r.output_files.len(), 1);
    assert_eq!(r.output_files[0].size, size);
    assert_healthy(&rt);
}

/// Creates /output/f<i> (preopen fd 3) for i = 0, 1, ... until stopped, with `create`: a
/// `path_open` with O_CREAT or a `path_create_directory`. From the second round on it also
/// re-opens `faaaa` (the first entry) with O_CREAT and with O_CREAT|O_EXCL, which create nothing
/// and must not count.
fn entry_bomb(mkdir: bool) -> JobSpec {
    let create = if mkdir {
        "(local.set $e (call $mkdir (i32.const 3) (i32.const 100) (i32.const 5)))"
    } else {
        "(local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5)
          (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
        (drop (call $close (i32.load (i32.const 16))))"
    };
    let digit = |k: u32| {
        format!(
            "(i32.store8 (i32.const {at}) (i32.add (i32.const 97)
              (i32.and (i32.shr_u (local.get $i) (i32.const {shift})) (i32.const 15))))",
            at = 101 + k,
            shift = 4 * k
        )
    };
    let digits: String = (0..4).map(digit).collect();
    wat(&format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory"
    (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "fxxxx")
  (data (i32.const 200) "faaaa")
  (func (export "_start") (local $i i32) (local $e i32)
    (loop $l
      {digits}
      {create}
      (if (local.get $e) (then (call $exit (local.get $e))))
      (if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 5)
          (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
        (then (drop (call $close (i32.load (i32.const 16))))))
      (drop (call $open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 5)
          (i32.const 5) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))"#
    ))
}

fn entries_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn creating_files_past_the_entry_limit_stops_the_job() {
    let rt = runtime();
    for round in 0..2 {
        // The count is per job: the same runtime stops the second job at the same place.
        let dir = tempfile::tempdir().unwrap();
        let mut spec = entry_bomb(false);
        spec.output_dir = Some(dir.path().join("out"));
        spec.limits.output_entries = 10;
        let r = run(&rt, &spec);
        assert_eq!(
            r.trap(),
            Some(&TrapCause::OutputEntries { limit: 10 }),
            "round {round}: {r:?}"
        );
        // Stopped before the 11th creation; re-opening faaaa counted nothing.
        assert_eq!(entries_in(&dir.path().join("out")), 10);
        assert_eq!(r.output_files.len(), 10);
        assert_healthy(&rt);
    }
}

#[test]
fn creating_directories_past_the_entry_limit_stops_the_job() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = entry_bomb(true);
    spec.output_dir = Some(dir.path().join("out"));
    spec.limits.output_entries = 7;
    let r = run(&rt, &spec);
    assert_eq!(
        r.trap(),
        Some(&TrapCause::OutputEntries { limit: 7 }),
        "{r:?}"
    );
    assert_eq!(entries_in(&dir.path().join("out")), 7);
    assert_healthy(&rt);
}

#[test]
fn the_default_entry_limit_stops_an_inode_bomb() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = entry_bomb(false);
    spec.output_dir = Some(dir.path().join("out"));
    let limit = Limits::default().output_entries;
    assert_eq!(limit, 1024);
    let r = run(&rt, &spec);
    assert_eq!(r.trap(), Some(&TrapCause::OutputEntries { limit }), "{r:?}");
    assert_eq!(entries_in(&dir.path().join("out")) as u64, limit);
    assert_healthy(&rt);
}

#[test]
fn files_already_in_the_output_dir_do_not_count() {
    // A job re-opening (O_CREAT) a file that was there before it started creates nothing.
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.txt"), "x").unwrap();
    let mut spec = open_job("old.txt", 0, O_CREAT, FD_WRITE);
    spec.output_dir = Some(out);
    spec.limits.output_entries = 0;
    assert_eq!(run(&rt, &spec).termination, Termination::Exit(0));
    // With no entries allowed, a new file is refused before it exists.
    let mut spec = open_job("new.txt", 0, O_CREAT, FD_WRITE);
    spec.output_dir = Some(dir.path().join("out"));
    spec.limits.output_entries = 0;
    let r = run(&rt, &spec);
    assert_eq!(
        r.trap(),
        Some(&TrapCause::OutputEntries { limit: 0 }),
        "{r:?}"
    );
    assert!(!dir.path().join("out/new.txt").exists());
    assert_healthy(&rt);
}

#[test]
fn flooding_stdout_is_cut_at_the_limit() {
    let rt = runtime();
    let mut spec = wat(r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "flood")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 5))
    (loop $l (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))"#);
    spec.limits.stdout_bytes = 1000;
    let r = run(&rt, &spec);
    assert_eq!(r.trap(), Some(&TrapCause::StdoutLimit { limit: 1000 }));
    assert!(r.stdout.truncated);
    assert_eq!(r.stdout.bytes.len(), 1000);
    assert!(r.stdout.text().starts_with("floodflood"));
    assert_healthy(&rt);
}

#[test]
fn flooding_stderr_is_cut_at_the_limit() {
    let rt = runtime();
    let mut spec = wat(r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (loop $l (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))"#);
    spec.limits.stderr_bytes = 10_000;
    let r = run(&rt, &spec);
    assert_eq!(r.trap(), Some(&TrapCause::StderrLimit { limit: 10_000 }));
    assert!(r.stderr.truncated && r.stderr.bytes.len() == 10_000);
    assert_healthy(&rt);
}

#[test]
fn renumbering_or_closing_stdio_is_refused() {
    // fd_renumber onto stdout would let a file write escape the quota accounting.
    let rt = runtime();
    let spec = wat(r#"(module
  (import "wasi_snapshot_preview1" "fd_renumber" (func $ren (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $close (i32.const 1)) (then (call $exit (i32.const 1))))
    (call $exit (call $ren (i32.const 3) (i32.const 1)))))"#);
    assert_eq!(run(&rt, &spec).termination, Termination::Exit(58)); // ENOTSUP
}

#[test]
fn cancel_stops_a_running_job() {
    let rt = runtime();
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.fuel = None;
    spec.limits.wall_time_ms = 60_000;
    rt.load_module(INFINITE_LOOP.as_bytes()).unwrap(); // compile outside the timed part
    let handle = rt.spawn(spec).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    handle.cancel_handle().cancel();
    let r = handle.join().unwrap();
    assert_eq!(r.trap(), Some(&TrapCause::Cancelled));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        r.usage.wall_time >= Duration::from_millis(50),
        "{:?}",
        r.usage
    );
    assert_healthy(&rt);
}

#[test]
fn hostile_jobs_do_not_starve_others() {
    let rt = Runtime::new(RuntimeConfig {
        max_concurrent_jobs: 64,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hello = c_job("hello");
    rt.load_module(&std::fs::read(&hello).unwrap()).unwrap();
    // Two spinning jobs (as many as the machine has cores) with a 3 s wall-time limit.
    let hostile: Vec<_> = (0..2)
        .map(|_| {
            let mut s = wat(INFINITE_LOOP);
            s.limits = Limits {
                fuel: None,
                wall_time_ms: 3_000,
                ..Limits::default()
            };
            rt.spawn(s).unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let normal: Vec<_> = (0..48)
        .map(|i| {
            let mut s = JobSpec::new(ModuleSource::Path(hello.clone()));
            s.args = vec![i.to_string()];
            rt.spawn(s).unwrap()
        })
        .collect();
    for (i, h) in normal.into_iter().enumerate() {
        let r = h.join().unwrap();
        assert_eq!(r.termination, Termination::Exit(0));
        assert_eq!(r.stdout.text(), format!("hello from wasm {i}\n"));
    }
    let normal_done = t.elapsed();
    assert!(
        normal_done < Duration::from_millis(2_500),
        "{normal_done:?}"
    );
    for h in hostile {
        let r = h.join().unwrap();
        assert_eq!(r.trap(), Some(&TrapCause::WallTime { limit_ms: 3_000 }));
        assert!(
            r.usage.wall_time < Duration::from_millis(3_500),
            "{:?}",
            r.usage
        );
    }
}

#[test]
fn a_full_pool_refuses_new_jobs_until_a_slot_frees() {
    let rt = Runtime::new(RuntimeConfig {
        max_concurrent_jobs: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    rt.load_module(INFINITE_LOOP.as_bytes()).unwrap();
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.fuel = None;
    let busy = rt.spawn(spec).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let hello = JobSpec::new(ModuleSource::Path(common::hello_wat_path()));
    let err = rt.run(&hello, &Default::default()).unwrap_err();
    assert!(matches!(err, JobError::Busy { limit: 1 }), "{err}");
    busy.cancel_handle().cancel();
    assert_eq!(busy.join().unwrap().trap(), Some(&TrapCause::Cancelled));
    assert_healthy(&rt);
}

#[test]
fn a_fuel_cap_without_fuel_metering_is_refused() {
    let rt = Runtime::new(RuntimeConfig {
        metering: sonm_wasm_runtime::Metering::EpochOnly,
        max_concurrent_jobs: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut spec = wat(INFINITE_LOOP);
    spec.limits.fuel = Some(1000);
    let err = rt.run(&spec, &Default::default()).unwrap_err();
    assert!(matches!(err, JobError::FuelNotMetered), "{err}");
    assert_healthy(&rt);
}

#[test]
fn unknown_cached_module_is_an_error() {
    let rt = runtime();
    let spec = JobSpec::new(ModuleSource::Sha256("ab".repeat(32)));
    assert!(matches!(
        rt.run(&spec, &Default::default()),
        Err(JobError::ModuleNotCached(_))
    ));
}
