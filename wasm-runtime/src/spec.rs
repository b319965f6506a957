//! The job spec: what to run, with which files, under which limits. Loaded from TOML or JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::JobError;

/// Where the module comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleSource {
    /// A `.wasm` (or `.wat`) file on the host. Relative paths are resolved against the spec
    /// file's directory by [`JobSpec::from_file`].
    Path(PathBuf),
    /// A module already known to the runtime (compiled before, in memory or in the disk cache),
    /// named by the lowercase hex sha256 of its bytes.
    Sha256(String),
    /// The module's bytes (binary or WAT text).
    Bytes(Vec<u8>),
}

/// Resource limits of one job. Every limit is enforced by the runtime, not trusted to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory, bytes (the pool allows one memory per module; also caps the initial size).
    pub memory_bytes: u64,
    /// Fuel (≈ WASM instructions) the job may burn. `None` (the default, and what an omitted
    /// key means): no instruction cap; wall time still applies and fuel is still counted.
    pub fuel: Option<u64>,
    /// Wall-clock time, milliseconds, enforced by epoch interruption.
    pub wall_time_ms: u64,
    /// Bytes of stdout kept; writing more stops the job (the kept prefix is returned).
    pub stdout_bytes: u64,
    /// Bytes of stderr kept; writing more stops the job.
    pub stderr_bytes: u64,
    /// Bytes the job may write into its output directory in total.
    pub output_bytes: u64,
    /// Files and directories the job may create in its output directory (an inode bomb is
    /// cheap in bytes). Counts creations, not live entries: removing one gives nothing back.
    pub output_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            fuel: None,
            wall_time_ms: 30_000,
            stdout_bytes: 1 << 20,
            stderr_bytes: 1 << 20,
            output_bytes: 64 << 20,
            output_entries: 1024,
        }
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub module: ModuleSource,
    /// `argv[1..]`; `argv[0]` is [`JobSpec::program_name`].
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host directory preopened read-only at `/input`.
    #[serde(default)]
    pub input_dir: Option<PathBuf>,
    /// Host directory preopened read-write at `/output` (created if missing).
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    /// Seed for the job's `random_get`. `None`: OS randomness. Set it when the run must be
    /// reproducible (fuel checked by re-running a job that draws random bytes).
    #[serde(default)]
    pub random_seed: Option<u64>,
    #[serde(default = "default_program_name")]
    pub program_name: String,
}

fn default_program_name() -> String {
    "job".to_owned()
}

impl JobSpec {
    /// A spec with default limits and no directories.
    pub fn new(module: ModuleSource) -> Self {
        Self {
            module,
            args: Vec::new(),
            env: BTreeMap::new(),
            input_dir: None,
            output_dir: None,
            limits: Limits::default(),
            random_seed: None,
            program_name: default_program_name(),
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, JobError> {
        toml::from_str(text).map_err(|e| JobError::Spec(e.to_string()))
    }

    pub fn from_json(text: &str) -> Result<Self, JobError> {
        serde_json::from_str(text).map_err(|e| JobError::Spec(e.to_string()))
    }

    pub fn to_toml(&self) -> Result<String, JobError> {
        toml::to_string(self).map_err(|e| JobError::Spec(e.to_string()))
    }

    /// Reads a `.json` file as JSON and anything else as TOML; relative paths in the spec are
    /// taken relative to the spec file, so a spec directory can be moved as a whole.
    pub fn from_file(path: &Path) -> Result<Self, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Io {
            what: format!("reading job spec {}", path.display()),
            source,
        })?;
        let mut spec = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)?
        } else {
            Self::from_toml(&text)?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let ModuleSource::Path(p) = &mut spec.module {
            rebase(p);
        }
        spec.input_dir.as_mut().map(rebase);
        spec.output_dir.as_mut().map(rebase);
        Ok(spec)
    }
}
