//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use sonm_wasm_runtime::{
    CancelHandle, JobReport, JobSpec, ModuleSource, Runtime, RuntimeConfig, Termination,
    example_jobs_dir,
};

/// A runtime with a small pool, so parallel tests do not each reserve hundreds of GiB.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_concurrent_jobs: 16,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

pub fn wat(text: &str) -> JobSpec {
    JobSpec::new(ModuleSource::Bytes(text.as_bytes().to_vec()))
}

pub fn hello_wat_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/hello/hello.wat")
}

/// A C example job built by `jobs/build.sh`. Missing: fail loudly, never skip.
pub fn c_job(name: &str) -> PathBuf {
    let p = example_jobs_dir().join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `wasm-runtime/jobs/build.sh` first (it installs clang-14, lld-14, \
         wasi-libc and builds the C example jobs)",
        p.display()
    );
    p
}

pub fn run(rt: &Runtime, spec: &JobSpec) -> JobReport {
    rt.run(spec, &CancelHandle::new())
        .expect("job should start")
}

/// The runtime still runs a normal job after whatever the test did to it.
pub fn assert_healthy(rt: &Runtime) {
    let r = run(rt, &JobSpec::new(ModuleSource::Path(hello_wat_path())));
    assert_eq!(r.termination, Termination::Exit(0), "{r:?}");
    assert_eq!(r.stdout.text(), "hello from wat\n");
}
