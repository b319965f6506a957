//! Typed errors: [`JobError`] for a job that could not start, [`TrapCause`] for a job that
//! started and was stopped.

use serde::{Deserialize, Serialize};

/// Why a running job was stopped before it exited on its own. Also the error value the runtime's
/// host functions raise inside wasmtime, so that a trap can be traced back to its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum TrapCause {
    #[error("fuel exhausted (limit {limit} units)")]
    OutOfFuel { limit: u64 },
    #[error("wall-time limit of {limit_ms} ms exceeded")]
    WallTime { limit_ms: u64 },
    #[error("cancelled from outside")]
    Cancelled,
    #[error("memory limit of {limit} bytes exceeded (asked for {requested})")]
    MemoryLimit { limit: u64, requested: u64 },
    #[error("table limit of {limit} elements exceeded")]
    TableLimit { limit: u64 },
    #[error("WASM stack exhausted (unbounded recursion?)")]
    StackOverflow,
    #[error("stdout limit of {limit} bytes exceeded")]
    StdoutLimit { limit: u64 },
    #[error("stderr limit of {limit} bytes exceeded")]
    StderrLimit { limit: u64 },
    #[error("output directory quota of {limit} bytes exceeded")]
    OutputQuota { limit: u64 },
    #[error("output directory limit of {limit} created files and directories exceeded")]
    OutputEntries { limit: u64 },
    #[error("sandbox violation: {op} of {path:?} refused")]
    SandboxViolation { op: String, path: String },
    /// A WASM trap (unreachable, out-of-bounds access, division by zero, ...).
    #[error("wasm trap: {0}")]
    Wasm(String),
    /// Anything else raised while the job ran; the text is the runtime's, never the host's
    /// environment.
    #[error("job failed: {0}")]
    Other(String),
}

/// Why a job could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid job spec: {0}")]
    Spec(String),
    #[error("invalid module: {0}")]
    InvalidModule(String),
    #[error("module imports {module}::{name}, which is not WASI preview 1")]
    UnsupportedImport { module: String, name: String },
    #[error("module cannot be linked: {0}")]
    Link(String),
    #[error("module has no `_start` function (not a WASI command)")]
    MissingStart,
    #[error("module {0} is not cached; send its bytes")]
    ModuleNotCached(String),
    #[error("limit {what} = {asked} exceeds what this runtime allows ({max})")]
    LimitTooHigh {
        what: &'static str,
        asked: u64,
        max: u64,
    },
    /// The spec caps fuel but this runtime does not count it (`Metering::EpochOnly`/`None`): the
    /// cap could not be honoured, so the job is refused rather than run uncapped.
    #[error("the job caps fuel, but this runtime runs without fuel metering")]
    FuelNotMetered,
    /// Every pool slot is taken; retry when a running job ends.
    #[error("all {limit} job slots are in use")]
    Busy { limit: u32 },
    #[error("cannot prepare the job's sandbox: {0}")]
    Sandbox(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wasmtime: {0}")]
    Engine(String),
}
