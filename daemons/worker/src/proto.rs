//! The task protocol: one request and one response per QUIC stream (sonm-net's framed
//! request/response, postcard), ALPN [`ALPN`]. The peer is the QUIC identity's verified
//! Ethereum address; nothing in the messages claims who is asking.

use serde::{Deserialize, Serialize};
use sonm_market::{Address, DealId};

use crate::receipt::SignedReceipt;

/// The task service's ALPN.
/// `/2`: receipts say whether fuel was metered, and a task can ask for fuel metering.
pub const ALPN: &[u8] = b"sonm-worker/2";

/// Largest frame the worker accepts or sends: a module, its inputs, or a result with its
/// outputs travel in one message for now (chunked transfer is still to do).
pub const MAX_FRAME: u32 = 16 << 20;

pub type TaskId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    StartWasm(StartWasm),
    Status {
        task: TaskId,
    },
    Result {
        task: TaskId,
    },
    Stop {
        task: TaskId,
    },
    /// Last, so the other requests keep their wire tags.
    StartContainer(StartContainer),
}

/// A file handed to a job under `/input` (path relative, `/`-separated, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Limits a customer asks for; each must be within the deal's slice (`None`: the slice's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    pub memory_bytes: Option<u64>,
    pub fuel: Option<u64>,
    pub wall_time_ms: Option<u64>,
    /// Run with fuel metering, so the receipt carries a deterministic fuel count that anyone can
    /// check by re-running the job (`sonm-wasm-run`). The code runs a few percent slower; the
    /// worker's default metering may have no fuel (deals are billed per second). Implied by
    /// `fuel`.
    pub fuel_metered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartWasm {
    pub deal: DealId,
    /// A WASI preview 1 command module (binary or WAT).
    pub module: Vec<u8>,
    pub args: Vec<String>,
    pub inputs: Vec<File>,
    pub limits: TaskLimits,
}

/// A native container (the worker must have `containers = true`): the customer's rootfs as a
/// tar, the program to run in it and its environment. The worker writes the OCI config itself
/// from these and the deal's slice; `limits.fuel` must be unset (containers count no fuel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartContainer {
    pub deal: DealId,
    /// A plain (uncompressed) tar of the root filesystem.
    pub rootfs: Vec<u8>,
    /// The program and its arguments (`args[0]` is looked up in `PATH`).
    pub args: Vec<String>,
    /// `NAME=value` entries (`PATH` defaults to the usual directories).
    pub env: Vec<String>,
    pub limits: TaskLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Started { task: TaskId },
    Status(TaskStatus),
    Result(Box<TaskResult>),
    Stopping,
    Error(TaskError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    Running,
    Finished(Exit),
    /// The job could not start (bad module, limits...).
    Failed(String),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    /// Stopped by the runtime (fuel, wall time, memory, sandbox, stop): its cause, as text.
    Trapped(String),
    /// A container the worker ended, and why (its receipt says `trapped`).
    Killed(KillCause),
}

/// Why the worker ended a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillCause {
    /// It used more memory than its limit (the kernel's OOM killer ended it).
    OomKilled,
    /// Its consumer stopped it, or its deal ended.
    Stopped,
    /// Its wall time ran out.
    WallTime,
}

/// A finished task: its output and the signed usage receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: TaskId,
    pub deal: DealId,
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Files the job left under `/output`, sorted by path.
    pub outputs: Vec<File>,
    pub receipt: SignedReceipt,
}

/// Why a request was refused. Typed, so a customer can tell "not yours" from "try later".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TaskError {
    #[error("deal {deal} is not yours: its consumer is {consumer}, you are {peer}")]
    NotConsumer {
        deal: DealId,
        consumer: Address,
        peer: Address,
    },
    #[error("no deal {0} on this worker")]
    UnknownDeal(DealId),
    #[error("deal {0} is closed")]
    DealClosed(DealId),
    #[error("no task {0}")]
    UnknownTask(TaskId),
    #[error("task {task} belongs to another consumer")]
    NotYourTask { task: TaskId },
    #[error(
        "task {0} finished before the worker restarted; its outputs are gone (its receipt is kept)"
    )]
    ResultGone(TaskId),
    #[error("task {0} has not finished")]
    NotFinished(TaskId),
    #[error("{what} {asked} exceeds the deal's slice ({max})")]
    LimitExceeded { what: String, asked: u64, max: u64 },
    #[error("deal {deal} already runs {limit} tasks (its slice's cores)")]
    TooManyTasks { deal: DealId, limit: u32 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("worker error: {0}")]
    Internal(String),
    /// This worker does not run containers; the reason says why (off, not root, no runc...).
    #[error("containers unavailable: {0}")]
    ContainersUnavailable(String),
    #[error("rootfs refused: {0}")]
    BadRootfs(crate::containers::RootfsError),
}
