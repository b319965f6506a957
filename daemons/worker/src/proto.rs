//! The task protocol: one request and one response per QUIC stream (sonm-net's framed
//! request/response, postcard), ALPN [`ALPN`]. The peer is the QUIC identity's verified
//! Ethereum address; nothing in the messages claims who is asking.

use serde::{Deserialize, Serialize};
use sonm_market::{Address, DealId};

use crate::receipt::SignedReceipt;

/// The task service's ALPN.
/// `/2`: receipts say whether fuel was metered, and a task can ask for fuel metering.
/// `/3`: staged uploads, chunked result downloads and log reads (see [`Request`]).
pub const ALPN: &[u8] = b"sonm-worker/3";

/// Largest frame the worker accepts or sends: a chunk, or a result's stdout and stderr (each
/// at most 1 MiB) with its output list. Bulk bytes travel in [`CHUNK_SIZE`] chunks.
pub const MAX_FRAME: u32 = 4 << 20;

/// Most bytes of one upload chunk or one download answer.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Largest start request sent in one message; bigger modules, inputs and rootfs tars go
/// through a staged upload (the client decides, see `client::TaskClient::start_wasm`).
pub const INLINE_MAX: usize = 1 << 20;

/// Most bytes of each stream one [`Request::Logs`] answer carries.
pub const LOG_CHUNK: usize = 256 << 10;

pub type UploadId = u64;

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
    // `/3`, appended so the tags above stay.
    /// Stages `total_size` bytes whose sha256 is `sha256` for a start request of `deal`.
    BeginUpload {
        deal: DealId,
        total_size: u64,
        sha256: [u8; 32],
    },
    /// The next bytes of an upload: `offset` must be what the worker has received so far.
    Chunk {
        upload: UploadId,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Ends an upload: refused (and the staged bytes removed) unless size and sha256 match.
    Commit {
        upload: UploadId,
    },
    StartWasmStaged(StartWasmStaged),
    StartContainerStaged(StartContainerStaged),
    /// A finished task's result with each output's size and sha256 instead of its bytes.
    ResultInfo {
        task: TaskId,
    },
    /// Up to [`CHUNK_SIZE`] bytes of output `path` of a finished task from `offset` (to the end
    /// of the `CHUNK_SIZE`-aligned chunk that holds it: each chunk is checked on its own).
    Download {
        task: TaskId,
        path: String,
        offset: u64,
    },
    /// Up to [`LOG_CHUNK`] bytes of each of stdout and stderr from the given offsets.
    Logs {
        task: TaskId,
        stdout_offset: u64,
        stderr_offset: u64,
    },
}

/// Bytes carried in the start request, or a committed upload of the same deal (consumed by
/// the start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blob {
    Inline(Vec<u8>),
    Upload(UploadId),
}

/// [`StartWasm`] whose module and inputs may name uploads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartWasmStaged {
    pub deal: DealId,
    pub module: Blob,
    pub args: Vec<String>,
    /// `(path, bytes)` as in [`File`].
    pub inputs: Vec<(String, Blob)>,
    pub limits: TaskLimits,
}

/// [`StartContainer`] whose rootfs may name an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartContainerStaged {
    pub deal: DealId,
    pub rootfs: Blob,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub limits: TaskLimits,
}

/// An output file of a result, named by its size and sha256 (fetch it with
/// [`Request::Download`]; the receipt's output digest covers the sha256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputInfo {
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// [`TaskResult`] without the output bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    pub task: TaskId,
    pub deal: DealId,
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub outputs: Vec<OutputInfo>,
    pub receipt: SignedReceipt,
}

/// What a [`Request::Logs`] read returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The task has ended: once this chunk is empty, nothing more will come.
    pub finished: bool,
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
    Started {
        task: TaskId,
    },
    Status(TaskStatus),
    Result(Box<TaskResult>),
    Stopping,
    Error(TaskError),
    // `/3`
    UploadBegun {
        upload: UploadId,
    },
    /// Bytes of the upload received so far.
    ChunkTaken {
        received: u64,
    },
    Committed {
        upload: UploadId,
    },
    ResultInfo(Box<ResultInfo>),
    Data {
        bytes: Vec<u8>,
    },
    Logs(LogChunk),
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
    /// Its outputs were removed (its deal ended longer ago than the worker's retention), or
    /// were never kept (a worker before on-disk results); status and receipt are kept.
    #[error(
        "task {0}'s outputs are gone (removed some time after its deal ended); its receipt is kept"
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
    // `/3`: staged uploads and downloads.
    #[error("no upload {0} (never begun, or removed: refused, expired, used, or its deal ended)")]
    UnknownUpload(UploadId),
    #[error("upload {upload} belongs to another consumer")]
    NotYourUpload { upload: UploadId },
    #[error(
        "upload of {asked} bytes for deal {deal} exceeds its staging cap of {cap} ({used} in use)"
    )]
    UploadTooLarge {
        deal: DealId,
        asked: u64,
        used: u64,
        cap: u64,
    },
    #[error("upload {upload}: chunk at offset {got}, expected {expected}; the upload is removed")]
    WrongOffset {
        upload: UploadId,
        expected: u64,
        got: u64,
    },
    #[error(
        "upload {upload}: chunk of {len} bytes at {offset} exceeds the declared {total}; the upload is removed"
    )]
    UploadOverrun {
        upload: UploadId,
        offset: u64,
        len: u64,
        total: u64,
    },
    #[error(
        "upload {upload}: {received} bytes with sha256 {got} do not match the declared {total} bytes with sha256 {expected}; the upload is removed"
    )]
    UploadMismatch {
        upload: UploadId,
        received: u64,
        total: u64,
        expected: String,
        got: String,
    },
    #[error("upload {upload} is not committed (or belongs to another deal)")]
    UploadNotReady { upload: UploadId },
    #[error("task {task} has no output {path:?}")]
    UnknownOutput { task: TaskId, path: String },
    /// Appended last, so that the variants before it keep their wire index.
    #[error("deal {0} is being closed: the worker is in maintenance and takes no new tasks on it")]
    DealClosing(DealId),
    /// A kept output (or stdout/stderr) whose bytes on the worker's disk no longer match what
    /// was recorded when the task ended (disk corruption, tampering): refused, never served.
    #[error("task {task}: stored {path:?} no longer matches its recorded sha256; refused")]
    ResultCorrupt { task: TaskId, path: String },
}
