//! The on-disk compiled-module cache: hits, and corrupt or foreign entries recompiled.

use crate::common;

use common::{c_job, run};
use sonm_wasm_runtime::{
    JobSpec, Metering, ModuleSource, Runtime, RuntimeConfig, RuntimeStats, Termination,
};

fn rt(dir: &std::path::Path, metering: Metering) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_owned()),
        metering,
        max_concurrent_jobs: 4,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn hello_by_hash(sha: &str) -> JobSpec {
    JobSpec::new(ModuleSource::Sha256(sha.to_owned()))
}

fn assert_hello(r: &sonm_wasm_runtime::JobReport) {
    assert_eq!(r.termination, Termination::Exit(0), "{r:?}");
    assert_eq!(r.stdout.text(), "hello from wasm\n");
}

#[test]
fn disk_cache_hits_and_rejects_corrupt_or_foreign_entries() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(c_job("hello")).unwrap();

    // First runtime compiles and writes the entry.
    let a = rt(dir.path(), Metering::Fuel);
    let sha = a.load_module(&bytes).unwrap();
    assert_eq!(a.stats().compiled, 1);
    let fuel = run(&a, &hello_by_hash(&sha)).usage.fuel_consumed;
    drop(a);

    // A second runtime (a restart) loads it from disk without compiling, by hash alone.
    let b = rt(dir.path(), Metering::Fuel);
    let r = run(&b, &hello_by_hash(&sha));
    assert_hello(&r);
    assert_eq!(r.usage.fuel_consumed, fuel);
    assert_eq!(
        b.stats(),
        RuntimeStats {
            compiled: 0,
            disk_hits: 1,
            disk_rejected: 0,
            jobs: 1,
            memory_evicted: 0,
            disk_evicted: 0,
        }
    );
    let entry = b.cache_entry_path(&sha).unwrap();
    drop(b);

    // Flip one byte in the middle of the artifact: detected by the checksum, recompiled.
    let mut data = std::fs::read(&entry).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    std::fs::write(&entry, &data).unwrap();
    let c = rt(dir.path(), Metering::Fuel);
    // By hash alone a rejected entry cannot be rebuilt: the module must be sent again.
    assert!(c.run(&hello_by_hash(&sha), &Default::default()).is_err());
    assert_hello(&run(&c, &JobSpec::new(ModuleSource::Bytes(bytes.clone()))));
    let s = c.stats();
    assert_eq!((s.compiled, s.disk_hits, s.disk_rejected), (1, 0, 2));
    drop(c);
    // The recompiled entry replaced the corrupt one.
    let d = rt(dir.path(), Metering::Fuel);
    assert_hello(&run(&d, &hello_by_hash(&sha)));
    assert_eq!(d.stats().disk_hits, 1);
    drop(d);

    // A truncated entry.
    let good = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &good[..good.len() - 100]).unwrap();
    let e = rt(dir.path(), Metering::Fuel);
    assert_hello(&run(&e, &JobSpec::new(ModuleSource::Bytes(bytes.clone()))));
    assert_eq!((e.stats().disk_rejected, e.stats().compiled), (1, 1));
    drop(e);

    // A foreign entry: a valid artifact of another engine configuration (no fuel) put where
    // this engine's entry belongs. Its header names the other fingerprint: rejected.
    let other_dir = tempfile::tempdir().unwrap();
    let f = rt(other_dir.path(), Metering::EpochOnly);
    f.load_module(&bytes).unwrap();
    let foreign = f.cache_entry_path(&sha).unwrap();
    assert_ne!(
        foreign.file_name(),
        entry.file_name(),
        "fingerprint is part of the file name"
    );
    std::fs::copy(&foreign, &entry).unwrap();
    drop(f);
    let g = rt(dir.path(), Metering::Fuel);
    let r = run(&g, &JobSpec::new(ModuleSource::Bytes(bytes.clone())));
    assert_hello(&r);
    assert!(r.usage.fuel_consumed.is_some());
    assert_eq!((g.stats().disk_rejected, g.stats().compiled), (1, 1));
    drop(g);

    // Garbage that is not an entry of this runtime at all.
    std::fs::write(&entry, b"not a cache entry").unwrap();
    let h = rt(dir.path(), Metering::Fuel);
    assert_hello(&run(&h, &JobSpec::new(ModuleSource::Bytes(bytes))));
    assert_eq!(h.stats().disk_rejected, 1);
}

#[test]
fn memory_cache_serves_repeat_jobs_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path(), Metering::Fuel);
    let spec = JobSpec::new(ModuleSource::Path(c_job("hello")));
    for _ in 0..3 {
        assert_hello(&run(&rt, &spec));
    }
    assert_eq!(rt.stats().compiled, 1);
    assert_eq!(rt.stats().disk_hits, 0);
}

/// A WAT hello whose module (and so its sha256) is named by `tag`, one letter: entries of
/// equal size.
fn hello_wat(tag: char) -> Vec<u8> {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello {tag}\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
    .into_bytes()
}

fn assert_says(rt: &Runtime, spec: &JobSpec, tag: char) {
    let r = run(rt, spec);
    assert_eq!(r.termination, Termination::Exit(0), "{r:?}");
    assert_eq!(r.stdout.text(), format!("hello {tag}\n"));
}

fn by_bytes(tag: char) -> JobSpec {
    JobSpec::new(ModuleSource::Bytes(hello_wat(tag)))
}

#[test]
fn memory_cache_drops_the_least_recently_used_module() {
    let rt = Runtime::new(RuntimeConfig {
        memory_cache_modules: 2,
        max_concurrent_jobs: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert_says(&rt, &by_bytes('a'), 'a');
    assert_says(&rt, &by_bytes('b'), 'b');
    // `a` is used again, so `b` is now the least recently used.
    assert_says(&rt, &by_bytes('a'), 'a');
    assert_says(&rt, &by_bytes('c'), 'c');
    let s = rt.stats();
    assert_eq!((s.compiled, s.memory_evicted), (3, 1));
    // `a` and `c` are still in memory...
    assert_says(&rt, &by_bytes('a'), 'a');
    assert_says(&rt, &by_bytes('c'), 'c');
    assert_eq!(rt.stats().compiled, 3);
    // ...`b` was dropped: by hash it is unknown (no disk cache); by bytes it is compiled again
    // and runs, dropping `a`, now the least recently used.
    let b = sha256_of(&hello_wat('b'));
    assert!(matches!(
        rt.run(&hello_by_hash(&b), &Default::default()),
        Err(sonm_wasm_runtime::JobError::ModuleNotCached(h)) if h == b
    ));
    assert_says(&rt, &by_bytes('b'), 'b');
    let s = rt.stats();
    assert_eq!((s.compiled, s.memory_evicted), (4, 2));
    assert_says(&rt, &by_bytes('c'), 'c');
    assert_eq!(rt.stats().compiled, 4);
    assert_says(&rt, &by_bytes('a'), 'a');
    assert_eq!(rt.stats().compiled, 5);
}

fn sha256_of(bytes: &[u8]) -> String {
    // The runtime names a module by the sha256 of its bytes; ask it without keeping anything.
    let rt = Runtime::new(RuntimeConfig {
        max_concurrent_jobs: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    rt.load_module(bytes).unwrap()
}

/// Lets the file system's coarse mtime clock (a kernel tick) move on between uses.
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(30));
}

#[test]
fn disk_cache_stays_within_its_budget_removing_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let entry_len = {
        let probe = rt(dir.path(), Metering::Fuel);
        let sha = probe.load_module(&hello_wat('z')).unwrap();
        let p = probe.cache_entry_path(&sha).unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::remove_file(p).unwrap();
        len
    };
    // Room for two entries and a half.
    let with_budget = |budget: u64| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.path().to_owned()),
            disk_cache_bytes: budget,
            max_concurrent_jobs: 2,
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let rt = with_budget(entry_len * 5 / 2);
    let [a, b, c] = ['a', 'b', 'c'].map(|t| sha256_of(&hello_wat(t)));
    let entry = |sha: &str| rt.cache_entry_path(sha).unwrap();
    rt.load_module(&hello_wat('a')).unwrap();
    tick();
    rt.load_module(&hello_wat('b')).unwrap();
    tick();
    // A disk hit marks `a` used: `b` becomes the least recently used entry.
    rt.clear_memory_cache();
    assert_says(&rt, &hello_by_hash(&a), 'a');
    assert_eq!(rt.stats().disk_hits, 1);
    tick();
    rt.load_module(&hello_wat('c')).unwrap();
    assert_eq!(rt.stats().disk_evicted, 1);
    assert!(entry(&a).exists() && !entry(&b).exists() && entry(&c).exists());

    // The evicted module is gone by hash (typed), and runs when sent again (recompiled).
    rt.clear_memory_cache();
    assert!(matches!(
        rt.run(&hello_by_hash(&b), &Default::default()),
        Err(sonm_wasm_runtime::JobError::ModuleNotCached(_))
    ));
    let compiled = rt.stats().compiled;
    tick();
    assert_says(&rt, &by_bytes('b'), 'b');
    assert_eq!(rt.stats().compiled, compiled + 1);
    // Its new entry pushed out the least recently used one, `a` (used before `c` was stored).
    assert_eq!(rt.stats().disk_evicted, 2);
    assert!(!entry(&a).exists() && entry(&b).exists() && entry(&c).exists());
    drop(rt);

    // A restart with a smaller budget prunes at once, keeping the newest entry (`b`).
    let small = with_budget(entry_len);
    assert_eq!(small.stats().disk_evicted, 1);
    assert!(!small.cache_entry_path(&c).unwrap().exists());
    assert_says(&small, &hello_by_hash(&b), 'b');
    assert_eq!(small.stats().disk_hits, 1);
}
