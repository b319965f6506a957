//! What a finished job gives back.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::TrapCause;

/// How the job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    /// `_start` returned (code 0) or the guest called `proc_exit(code)`.
    Exit(i32),
    /// The runtime stopped the job.
    Trap(TrapCause),
}

/// A captured stream, cut at its limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    #[serde(with = "lossy_utf8")]
    pub bytes: Vec<u8>,
    /// The guest wrote more than the limit; `bytes` holds the first `limit` bytes.
    pub truncated: bool,
}

impl Captured {
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// A file the job left in its output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Relative to the output directory.
    pub path: PathBuf,
    pub size: u64,
}

/// Resources the job used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Fuel consumed: deterministic for a job that does not read the clock or random bytes,
    /// so it can be billed and re-checked by re-running. `None` when the engine runs without fuel,
    /// or when wall time or a cancel stopped the job (the count is not known then: bill such a
    /// job by `cpu_time`).
    pub fuel_consumed: Option<u64>,
    /// CPU time of the thread that ran the job (instantiation and `_start`).
    #[serde(with = "micros")]
    pub cpu_time: Duration,
    /// Wall time from instantiation to the end of `_start`.
    #[serde(with = "micros")]
    pub wall_time: Duration,
    /// The largest linear memory size the job reached, bytes.
    pub peak_memory_bytes: u64,
    /// Bytes written into the output directory (counted at each write).
    pub output_bytes_written: u64,
}

/// The whole result of a job that started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// Lowercase hex sha256 of the module's bytes.
    pub module_sha256: String,
    pub termination: Termination,
    pub stdout: Captured,
    pub stderr: Captured,
    pub output_files: Vec<OutputFile>,
    pub usage: Usage,
}

impl JobReport {
    /// The exit code, or the cause that stopped the job.
    pub fn exit_code(&self) -> Result<i32, TrapCause> {
        match &self.termination {
            Termination::Exit(c) => Ok(*c),
            Termination::Trap(t) => Err(t.clone()),
        }
    }

    /// The trap cause, if the runtime stopped the job.
    pub fn trap(&self) -> Option<&TrapCause> {
        match &self.termination {
            Termination::Trap(t) => Some(t),
            Termination::Exit(_) => None,
        }
    }
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// Output is shown as text (lossy), which is what people read; the exact bytes are in memory.
mod lossy_utf8 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}
