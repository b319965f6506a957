//! The on-disk compiled-module cache: hits, and corrupt or foreign entries recompiled.

mod common;

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
            jobs: 1
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
