//! Sandboxed, metered WASM jobs for the SONM worker.
//!
//! A [`JobSpec`] names a WASI preview 1 command module, its arguments and environment, an input
//! directory (read-only at `/input`), an output directory (read-write at `/output`, with a byte
//! quota) and limits (memory, fuel, wall time, stdout/stderr). [`Runtime::run`] runs it and
//! returns a [`JobReport`]: how it ended ([`Termination`], with a typed [`TrapCause`] when the
//! runtime stopped it), captured output, the files written, and [`Usage`] (deterministic fuel,
//! CPU and wall time, peak memory). Compiled modules are cached in memory (`InstancePre`) and on
//! disk ([`cache::DiskCache`]).

pub mod cache;
mod error;
mod report;
mod runtime;
mod sandbox;
mod spec;

pub use error::{JobError, TrapCause};
pub use report::{Captured, JobReport, OutputFile, Termination, Usage};
pub use runtime::{CancelHandle, JobHandle, Metering, Runtime, RuntimeConfig, RuntimeStats};
pub use sandbox::OutputTap;
pub use spec::{JobSpec, Limits, ModuleSource};

/// Where `jobs/build.sh` puts the example jobs (for tests, benches and the runner's examples).
pub fn example_jobs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/build")
}
