//! WASM tasks: each runs in `sonm-wasm-runtime` on its own thread, with its inputs written to
//! `<state>/tasks/<id>/input` (read-only at `/input`) and its outputs left in
//! `<state>/tasks/<id>/output`; at the end that directory is moved to `<state>/results/<id>`
//! (`crate::results`), the result gets a usage receipt signed by the worker, and receipt and
//! result are recorded in the store together. Results are served from disk, before and after a
//! restart alike, until their deal's retention removes them.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use alloy::signers::local::PrivateKeySigner;
use sha2::{Digest, Sha256};
use sonm_market::{Address, DealId};
use sonm_wasm_runtime::{
    CancelHandle, JobError, JobSpec, Limits, Metering, ModuleSource, OutputTap, Runtime,
    Termination,
};

use crate::containers::{
    ContainerLimits, ContainerPlan, Containers, Killed, Unavailable, UnpackLimits,
};
use crate::proto::{
    Exit, File, KillCause, LOG_CHUNK, LogChunk, MAX_FRAME, OutputInfo, ResultInfo, StartContainer,
    StartWasm, TaskError, TaskId, TaskResult, TaskStatus,
};
use crate::receipt::{Fuel, SignedReceipt, UsageReceipt, outputs_digest_of};
use crate::results::{OutputLimits, Results, ResultsError};
use crate::state::{Store, StoredResult, TaskRecord};
use crate::uploads::TakenFile;

#[derive(Debug)]
enum State {
    Running(CancelHandle),
    Done(Arc<Ended>),
    Failed(String),
}

/// A task that ran to an end: its receipt and its result, kept on disk (not yet recorded while
/// it is being settled).
#[derive(Debug)]
struct Ended {
    receipt: SignedReceipt,
    kept: StoredResult,
}

#[derive(Debug)]
struct Entry {
    deal: DealId,
    consumer: Address,
    state: State,
    /// Where a running task's stdout and stderr can be read (its result's once it ended).
    logs: LogSource,
}

/// Where to read a running task's output from.
#[derive(Debug, Clone)]
enum LogSource {
    /// A WASM job's captured streams.
    Tap(OutputTap),
    /// A container's bundle, whose `stdout` and `stderr` files runc's pipes are copied to.
    Files(PathBuf),
}

impl LogSource {
    fn read(&self, stderr: bool, offset: u64) -> Vec<u8> {
        match self {
            LogSource::Tap(tap) => tap.read(stderr, offset, LOG_CHUNK).0,
            LogSource::Files(bundle) => read_at(
                &bundle.join(if stderr { "stderr" } else { "stdout" }),
                offset,
            ),
        }
    }
}

/// Up to [`LOG_CHUNK`] bytes of `path` from `offset` (nothing if it is not there yet).
fn read_at(path: &Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.take(LOG_CHUNK as u64).read_to_end(&mut out);
    }
    out
}

/// Up to `max` bytes of `bytes` from `offset`.
fn slice_from(bytes: &[u8], offset: u64, max: usize) -> Vec<u8> {
    let from = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    bytes[from..from.saturating_add(max).min(bytes.len())].to_vec()
}

/// A module, input file or rootfs of a start request: carried in it, or a committed upload.
#[derive(Debug)]
pub enum Payload {
    Bytes(Vec<u8>),
    Staged(TakenFile),
}

impl Payload {
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self {
            Payload::Bytes(b) => Ok(b),
            Payload::Staged(f) => std::fs::read(f.path()),
        }
    }

    /// Puts the bytes at `path`: an upload is moved there, not copied.
    fn place(self, path: &Path) -> std::io::Result<()> {
        match self {
            Payload::Bytes(b) => std::fs::write(path, b),
            Payload::Staged(f) => f.move_to(path),
        }
    }
}

/// A WASM job to start: [`StartWasm`] with its bytes possibly staged.
#[derive(Debug)]
pub struct WasmJob {
    pub module: Payload,
    pub args: Vec<String>,
    pub inputs: Vec<(String, Payload)>,
    pub fuel_metered: bool,
}

impl From<StartWasm> for WasmJob {
    fn from(req: StartWasm) -> Self {
        Self {
            module: Payload::Bytes(req.module),
            args: req.args,
            inputs: req
                .inputs
                .into_iter()
                .map(|f| (f.path, Payload::Bytes(f.bytes)))
                .collect(),
            fuel_metered: req.limits.fuel_metered,
        }
    }
}

/// Runs tasks; their results are kept on disk and in the store (see [`crate::results`]).
#[derive(Debug)]
pub struct TaskRunner {
    /// Production metering (the worker's `wasm_metering`).
    runtime: Arc<Runtime>,
    /// Fuel metering, for tasks that ask for it; the same runtime when production counts fuel.
    fuel_runtime: Arc<Runtime>,
    /// Tasks that may run at once across both runtimes (each has its own pool).
    max_running: u32,
    dir: PathBuf,
    signer: PrivateKeySigner,
    chain_id: u64,
    store: Store,
    tasks: Arc<Mutex<HashMap<TaskId, Entry>>>,
    /// Finished tasks' results, `<state>/results` beside the task directory.
    results: Results,
    /// Native containers, when the worker offers them (see [`TaskRunner::with_containers`]).
    containers: Option<Arc<Containers>>,
}

/// What finishing a task needs, moved to its thread.
struct Finisher {
    task: TaskId,
    deal: DealId,
    consumer: Address,
    signer: PrivateKeySigner,
    chain_id: u64,
    store: Store,
    tasks: Arc<Mutex<HashMap<TaskId, Entry>>>,
    results: Results,
    dir: PathBuf,
    metering: Metering,
}

/// What a task that was running when the worker died reports.
const LOST: &str = "lost: the worker stopped while it ran";

/// Room left in a frame for a one-message result's other fields.
const INLINE_SLACK: u64 = 64 << 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A safe relative path for an input file: non-empty, `/`-separated normal components only.
pub fn safe_relative(path: &str) -> Result<PathBuf, TaskError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.contains('\\');
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(TaskError::BadRequest(format!(
            "input path {path:?} is not a plain relative path"
        )))
    }
}

impl TaskRunner {
    /// `fuel_runtime` must meter fuel; `max_running` bounds the tasks running at once. Tasks
    /// run under `dir` (`<state>/tasks`); their results are kept in `results` beside it.
    pub fn new(
        runtime: Arc<Runtime>,
        fuel_runtime: Arc<Runtime>,
        max_running: u32,
        dir: PathBuf,
        signer: PrivateKeySigner,
        chain_id: u64,
        store: Store,
    ) -> Self {
        debug_assert_eq!(fuel_runtime.config().metering, Metering::Fuel);
        let results = Results::new(dir.parent().unwrap_or(&dir).join("results"), store.clone());
        Self {
            runtime,
            fuel_runtime,
            max_running,
            dir,
            signer,
            chain_id,
            store,
            tasks: Arc::new(Mutex::new(HashMap::new())),
            results,
            containers: None,
        }
    }

    /// Removes result directories the store does not know and records whose directory is
    /// gone (see [`Results::clean_orphans`]). Call at start, before any task.
    pub fn clean_result_orphans(&self) -> Result<(usize, usize), ResultsError> {
        self.results.clean_orphans()
    }

    /// Removes task `task`'s kept result (its deal's retention ran out); its record and receipt
    /// stay, and its outputs are [`TaskError::ResultGone`] from now on.
    pub fn remove_result(&self, task: TaskId) -> Result<(), ResultsError> {
        self.results.remove(task)
    }

    /// Runs container tasks too, with `containers` (whose `ready` says whether they can run).
    pub fn with_containers(mut self, containers: Containers) -> Self {
        self.containers = Some(Arc::new(containers));
        self
    }

    /// Removes what tasks of an earlier run left in the task directory (a crash or kill -9
    /// mid-task): their inputs and partial outputs. Call before starting any task.
    pub fn clean_orphans(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    std::fs::remove_dir_all(entry?.path())?;
                    removed += 1;
                }
                Ok(removed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Stops every running task (graceful shutdown).
    pub fn stop_all(&self) {
        for e in lock(&self.tasks).values() {
            if let State::Running(cancel) = &e.state {
                cancel.cancel();
            }
        }
    }

    /// Tasks of `deal` still running.
    pub fn running_for_deal(&self, deal: DealId) -> u32 {
        lock(&self.tasks)
            .values()
            .filter(|e| e.deal == deal && matches!(e.state, State::Running(_)))
            .count() as u32
    }

    /// Registers a running task and its finisher. Counted and inserted under one lock, so two
    /// starts cannot both take the last slot; WASM (two runtimes, two pools) and container
    /// tasks share the count, which keeps the whole box within `max_running`. `busy`: the
    /// task is over the limit and must be finished at once as busy.
    fn admit(
        &self,
        task: TaskId,
        deal: DealId,
        consumer: Address,
        dir: PathBuf,
        metering: Metering,
        logs: LogSource,
    ) -> (CancelHandle, bool, Finisher) {
        let cancel = CancelHandle::new();
        let busy = {
            let mut tasks = lock(&self.tasks);
            let running = tasks
                .values()
                .filter(|e| matches!(e.state, State::Running(_)))
                .count();
            tasks.insert(
                task,
                Entry {
                    deal,
                    consumer,
                    state: State::Running(cancel.clone()),
                    logs,
                },
            );
            running >= self.max_running as usize
        };
        let finisher = Finisher {
            task,
            deal,
            consumer,
            signer: self.signer.clone(),
            chain_id: self.chain_id,
            store: self.store.clone(),
            tasks: self.tasks.clone(),
            results: self.results.clone(),
            dir,
            metering,
        };
        (cancel, busy, finisher)
    }

    /// Starts `req` as task `task` for `consumer` under `deal` with `limits` (already checked
    /// against the slice). It runs fuel-metered when it asks for it or caps fuel, otherwise
    /// with the production metering.
    pub fn start(
        &self,
        task: TaskId,
        deal: DealId,
        consumer: Address,
        req: StartWasm,
        limits: Limits,
    ) -> Result<(), TaskError> {
        self.start_job(task, deal, consumer, req.into(), limits)
    }

    /// As [`TaskRunner::start`], for a job whose bytes may be staged uploads.
    pub fn start_job(
        &self,
        task: TaskId,
        deal: DealId,
        consumer: Address,
        req: WasmJob,
        limits: Limits,
    ) -> Result<(), TaskError> {
        let task_dir = self.dir.join(task.to_string());
        let prepared = Self::prepare_dirs(&task_dir, req.inputs);
        let module = match prepared.and_then(|()| {
            req.module
                .into_bytes()
                .map_err(|e| TaskError::Internal(format!("staged module: {e}")))
        }) {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&task_dir);
                return Err(e);
            }
        };
        let (input, output) = (task_dir.join("input"), task_dir.join("output"));
        let mut spec = JobSpec::new(ModuleSource::Bytes(module));
        spec.args = req.args;
        spec.input_dir = Some(input);
        spec.output_dir = Some(output.clone());
        spec.limits = limits;
        // Reproducible randomness, so that anyone can re-run the job to check its fuel.
        spec.random_seed = Some(0);
        spec.program_name = "task".into();

        self.store
            .put_task(&TaskRecord {
                id: task,
                deal,
                consumer,
                receipt: None,
                error: None,
            })
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        let runtime = if req.fuel_metered || spec.limits.fuel.is_some() {
            self.fuel_runtime.clone()
        } else {
            self.runtime.clone()
        };
        let tap = OutputTap::default();
        let (cancel, busy, finisher) = self.admit(
            task,
            deal,
            consumer,
            task_dir,
            runtime.config().metering,
            LogSource::Tap(tap.clone()),
        );
        if busy {
            // What a full runtime pool answers, so the customer sees one kind of "busy".
            let e = JobError::Busy {
                limit: self.max_running,
            };
            finisher.finish(Err(e.to_string()), &output);
            return Ok(());
        }
        let spawned = std::thread::Builder::new()
            .name(format!("task-{task}"))
            .stack_size(8 << 20)
            .spawn(move || {
                let outcome = runtime.run_tapped(&spec, &cancel, &tap);
                finisher.finish(outcome.map_err(|e| e.to_string()), &output);
            });
        if let Err(e) = spawned {
            lock(&self.tasks).remove(&task);
            return Err(TaskError::Internal(format!("cannot start a thread: {e}")));
        }
        Ok(())
    }

    /// `input/` (with the inputs) and `output/` under `task_dir`.
    fn prepare_dirs(task_dir: &Path, inputs: Vec<(String, Payload)>) -> Result<(), TaskError> {
        let input = task_dir.join("input");
        let io = |e: std::io::Error| TaskError::Internal(format!("task directory: {e}"));
        std::fs::create_dir_all(&input).map_err(io)?;
        std::fs::create_dir_all(task_dir.join("output")).map_err(io)?;
        for (path, bytes) in inputs {
            let path = input.join(safe_relative(&path)?);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            bytes.place(&path).map_err(io)?;
        }
        Ok(())
    }

    /// Up to [`LOG_CHUNK`] bytes of the task's stdout and stderr from the given offsets, read
    /// live while it runs.
    pub fn logs(
        &self,
        task: TaskId,
        peer: Address,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<LogChunk, TaskError> {
        let tasks = lock(&self.tasks);
        if !tasks.contains_key(&task) {
            // A task of an earlier run: it will print nothing more; what it printed is kept
            // with its result, if that is.
            drop(tasks);
            self.recorded_status(task, peer)?;
            return self.kept_logs(task, stdout_offset, stderr_offset);
        }
        let entry = Self::entry_for(&tasks, task, peer)?;
        Ok(match &entry.state {
            State::Running(_) => {
                let source = entry.logs.clone();
                // Read outside the table's lock (a container's are files).
                drop(tasks);
                LogChunk {
                    stdout: source.read(false, stdout_offset),
                    stderr: source.read(true, stderr_offset),
                    finished: false,
                }
            }
            State::Done(_) => {
                drop(tasks);
                return self.kept_logs(task, stdout_offset, stderr_offset);
            }
            State::Failed(_) => LogChunk {
                stdout: Vec::new(),
                stderr: Vec::new(),
                finished: true,
            },
        })
    }

    /// The task's result with each output named by size and sha256.
    pub fn result_info(&self, task: TaskId, peer: Address) -> Result<ResultInfo, TaskError> {
        let (kept, receipt) = self.kept(task, peer)?;
        Ok(ResultInfo {
            task: kept.task,
            deal: kept.deal,
            exit: kept.exit.clone(),
            stdout: self.results.log(&kept, false)?,
            stderr: self.results.log(&kept, true)?,
            outputs: kept
                .outputs
                .iter()
                .map(|f| OutputInfo {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256.0,
                })
                .collect(),
            receipt,
        })
    }

    /// Up to [`CHUNK_SIZE`] bytes of output `path` of the task's result from `offset`.
    pub fn download(
        &self,
        task: TaskId,
        peer: Address,
        path: &str,
        offset: u64,
    ) -> Result<Vec<u8>, TaskError> {
        let (kept, _) = self.kept(task, peer)?;
        let f = kept
            .outputs
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| TaskError::UnknownOutput {
                task,
                path: path.into(),
            })?;
        self.results.output_chunk(&kept, f, offset)
    }

    /// A finished task's kept result and receipt, for its consumer only. The same path before
    /// and after a restart: the store and the files, never memory.
    fn kept(
        &self,
        task: TaskId,
        peer: Address,
    ) -> Result<(StoredResult, SignedReceipt), TaskError> {
        {
            let tasks = lock(&self.tasks);
            if tasks.contains_key(&task) {
                match &Self::entry_for(&tasks, task, peer)?.state {
                    State::Running(_) => return Err(TaskError::NotFinished(task)),
                    State::Failed(e) => return Err(TaskError::BadRequest(e.clone())),
                    State::Done(_) => {}
                }
            }
        }
        let internal = |e: crate::state::StateError| TaskError::Internal(e.to_string());
        let rec = self.store.task(task).map_err(internal)?;
        let rec = rec.ok_or(TaskError::UnknownTask(task))?;
        if rec.consumer != peer {
            tracing::warn!(task, %peer, owner = %rec.consumer, "refused: task of another consumer");
            return Err(TaskError::NotYourTask { task });
        }
        let receipt = match (rec.receipt, rec.error) {
            (Some(r), _) => r,
            (None, Some(e)) => return Err(TaskError::BadRequest(e)),
            (None, None) => return Err(TaskError::BadRequest(LOST.into())),
        };
        match self.store.result(task).map_err(internal)? {
            Some(kept) => Ok((kept, receipt)),
            None => Err(TaskError::ResultGone(task)),
        }
    }

    /// A finished task's stdout and stderr from the given offsets, from its kept result (empty
    /// once that is gone).
    fn kept_logs(
        &self,
        task: TaskId,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<LogChunk, TaskError> {
        let kept = self
            .store
            .result(task)
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        let (stdout, stderr) = match kept {
            Some(k) => (self.results.log(&k, false)?, self.results.log(&k, true)?),
            None => (Vec::new(), Vec::new()),
        };
        Ok(LogChunk {
            stdout: slice_from(&stdout, stdout_offset, LOG_CHUNK),
            stderr: slice_from(&stderr, stderr_offset, LOG_CHUNK),
            finished: true,
        })
    }

    fn entry_for(
        tasks: &HashMap<TaskId, Entry>,
        task: TaskId,
        peer: Address,
    ) -> Result<&Entry, TaskError> {
        let entry = tasks.get(&task).ok_or(TaskError::UnknownTask(task))?;
        if entry.consumer != peer {
            tracing::warn!(task, %peer, owner = %entry.consumer, "refused: task of another consumer");
            return Err(TaskError::NotYourTask { task });
        }
        Ok(entry)
    }

    pub fn status(&self, task: TaskId, peer: Address) -> Result<TaskStatus, TaskError> {
        let tasks = lock(&self.tasks);
        if !tasks.contains_key(&task) {
            return self.recorded_status(task, peer);
        }
        Ok(match &Self::entry_for(&tasks, task, peer)?.state {
            State::Running(_) => TaskStatus::Running,
            State::Done(r) => TaskStatus::Finished(r.kept.exit.clone()),
            State::Failed(e) => TaskStatus::Failed(e.clone()),
        })
    }

    /// A task of an earlier run of the worker, from the store: its exit status and receipt
    /// survive a restart (its outputs too, while kept), and one that was running when the
    /// worker died is reported as lost.
    fn recorded_status(&self, task: TaskId, peer: Address) -> Result<TaskStatus, TaskError> {
        let rec = self
            .store
            .task(task)
            .map_err(|e| TaskError::Internal(e.to_string()))?
            .ok_or(TaskError::UnknownTask(task))?;
        if rec.consumer != peer {
            tracing::warn!(task, %peer, owner = %rec.consumer, "refused: task of another consumer");
            return Err(TaskError::NotYourTask { task });
        }
        Ok(match (rec.receipt, rec.error) {
            // The kept result has the exact exit (a trap's cause, a kill's); the receipt only
            // a code or "trapped".
            (Some(r), _) => match self.store.result(task) {
                Ok(Some(kept)) => TaskStatus::Finished(kept.exit),
                _ => TaskStatus::Finished(r.receipt.exit()),
            },
            (None, Some(e)) => TaskStatus::Failed(e),
            (None, None) => TaskStatus::Failed(LOST.into()),
        })
    }

    /// The whole result in one message (protocol `/2`), read from disk and checked. One that
    /// would not fit a frame is refused: fetch it with `ResultInfo` and `Download`.
    pub fn result(&self, task: TaskId, peer: Address) -> Result<TaskResult, TaskError> {
        let (kept, receipt) = self.kept(task, peer)?;
        let size: u64 =
            kept.outputs.iter().map(|f| f.size).sum::<u64>() + kept.stdout.size + kept.stderr.size;
        if size > u64::from(MAX_FRAME) - INLINE_SLACK {
            return Err(TaskError::BadRequest(format!(
                "task {task}'s result is {size} bytes, too big for one message: download it in chunks (ResultInfo, Download)"
            )));
        }
        let mut outputs = Vec::with_capacity(kept.outputs.len());
        for f in &kept.outputs {
            let mut bytes = Vec::with_capacity(f.size as usize);
            while (bytes.len() as u64) < f.size {
                bytes.extend(self.results.output_chunk(&kept, f, bytes.len() as u64)?);
            }
            outputs.push(File {
                path: f.path.clone(),
                bytes,
            });
        }
        Ok(TaskResult {
            task: kept.task,
            deal: kept.deal,
            exit: kept.exit.clone(),
            stdout: self.results.log(&kept, false)?,
            stderr: self.results.log(&kept, true)?,
            outputs,
            receipt,
        })
    }

    pub fn stop(&self, task: TaskId, peer: Address) -> Result<(), TaskError> {
        let tasks = lock(&self.tasks);
        if let State::Running(cancel) = &Self::entry_for(&tasks, task, peer)?.state {
            cancel.cancel();
        }
        Ok(())
    }

    /// Stops every running task of `deal` (the deal ended).
    pub fn stop_deal(&self, deal: DealId) {
        for e in lock(&self.tasks).values() {
            if let (true, State::Running(cancel)) = (e.deal == deal, &e.state) {
                cancel.cancel();
            }
        }
    }
}

impl Finisher {
    fn finish(self, outcome: Result<sonm_wasm_runtime::JobReport, String>, output: &Path) {
        let state = match outcome {
            Ok(report) => match self.result(report, output) {
                Ok(result) => State::Done(Arc::new(result)),
                Err(e) => State::Failed(e),
            },
            Err(e) => State::Failed(e),
        };
        self.settle(state);
    }

    /// Records how the task ended (receipt and kept result in one transaction), updates its
    /// entry and removes its directory.
    fn settle(self, mut state: State) {
        let record = TaskRecord {
            id: self.task,
            deal: self.deal,
            consumer: self.consumer,
            receipt: match &state {
                State::Done(r) => Some(r.receipt.clone()),
                _ => None,
            },
            error: match &state {
                State::Failed(e) => Some(e.clone()),
                _ => None,
            },
        };
        let kept = match &state {
            State::Done(r) => Some(&r.kept),
            _ => None,
        };
        if let Err(e) = self.store.finish_task(&record, kept) {
            tracing::error!(task = self.task, "recording the task failed: {e}");
            if kept.is_some() {
                // A result nobody can fetch is not kept.
                self.results.discard(self.task);
                state = State::Failed(format!("recording the result failed: {e}"));
            }
        }
        match &state {
            State::Done(r) => {
                tracing::info!(task = self.task, deal = self.deal, exit = ?r.kept.exit,
                fuel = ?r.receipt.receipt.fuel, outputs = r.kept.outputs.len(), "task finished")
            }
            State::Failed(e) => {
                tracing::info!(task = self.task, deal = self.deal, "task failed: {e}")
            }
            State::Running(_) => {}
        }
        if let Some(entry) = lock(&self.tasks).get_mut(&self.task) {
            entry.state = state;
        }
        // The outputs were moved to the results; the inputs are not needed any more.
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn result(&self, report: sonm_wasm_runtime::JobReport, output: &Path) -> Result<Ended, String> {
        let exit = match &report.termination {
            Termination::Exit(c) => Exit::Code(*c),
            Termination::Trap(t) => Exit::Trapped(t.to_string()),
        };
        // Moved to the results and hashed there, never read into memory; the runtime already
        // held the job to its output quota.
        let kept = self.results.keep(
            self.task,
            self.deal,
            exit.clone(),
            output,
            &report.stdout.bytes,
            &report.stderr.bytes,
            OutputLimits::NONE,
        )?;
        self.sign(
            kept,
            module_sha256_of(&report),
            fuel_of(self.metering, &report),
            report.usage.wall_time,
        )
    }

    /// The receipt over a kept result; a receipt that cannot be made discards the result.
    fn sign(
        &self,
        kept: StoredResult,
        module_sha256: [u8; 32],
        fuel: Fuel,
        wall_time: std::time::Duration,
    ) -> Result<Ended, String> {
        let exit = &kept.exit;
        let receipt = UsageReceipt {
            worker: self.signer.address(),
            chain_id: self.chain_id,
            deal: self.deal,
            task: self.task,
            module_sha256,
            fuel,
            wall_time_us: u64::try_from(wall_time.as_micros()).unwrap_or(u64::MAX),
            trapped: !matches!(exit, Exit::Code(_)),
            exit_code: match exit {
                Exit::Code(c) => *c,
                Exit::Trapped(_) | Exit::Killed(_) => 0,
            },
            outputs_sha256: outputs_digest_of(
                kept.outputs.iter().map(|f| (f.path.as_str(), f.sha256.0)),
            ),
        }
        .sign(&self.signer);
        match receipt {
            Ok(receipt) => Ok(Ended { receipt, kept }),
            Err(e) => {
                self.results.discard(self.task);
                Err(e.to_string())
            }
        }
    }
}

fn module_sha256_of(report: &sonm_wasm_runtime::JobReport) -> [u8; 32] {
    let mut module_sha256 = [0u8; 32];
    alloy::primitives::hex::decode_to_slice(&report.module_sha256, &mut module_sha256)
        .unwrap_or_else(|_| module_sha256 = Sha256::digest(b"").into());
    module_sha256
}

fn fuel_of(metering: Metering, report: &sonm_wasm_runtime::JobReport) -> Fuel {
    match (metering, report.usage.fuel_consumed) {
        (Metering::Fuel, Some(n)) => Fuel::Counted(n),
        (Metering::Fuel, None) => Fuel::Unknown,
        (Metering::EpochOnly | Metering::None, _) => Fuel::NotMetered,
    }
}

// ------------------------------------------------------------------ containers

/// Most entries a rootfs tar may have.
const MAX_ROOTFS_ENTRIES: u64 = 100_000;

impl TaskRunner {
    /// Starts `req` as container task `task` for `consumer` under `deal` with `limits` (already
    /// derived from the slice). The rootfs is unpacked and the OCI config written before this
    /// returns, so a bad rootfs or request is refused here, typed; the container then runs on
    /// its own thread.
    pub fn start_container(
        &self,
        task: TaskId,
        deal: DealId,
        consumer: Address,
        req: StartContainer,
        limits: ContainerLimits,
    ) -> Result<(), TaskError> {
        let containers = match &self.containers {
            Some(c) => c.clone(),
            None => {
                return Err(TaskError::ContainersUnavailable(
                    Unavailable::Disabled.to_string(),
                ));
            }
        };
        if let Err(e) = &containers.ready {
            return Err(TaskError::ContainersUnavailable(e.to_string()));
        }
        if req.limits.fuel.is_some() || req.limits.fuel_metered {
            return Err(TaskError::BadRequest(
                "containers are not fuel-metered: leave fuel unset".into(),
            ));
        }
        let devices = crate::containers::gpu_device_nodes(
            &containers.device_dir,
            &limits.gpus,
            crate::containers::stat_char_device,
        )
        .map_err(TaskError::Internal)?;
        let bundle = containers.bundle(task);
        let output = bundle.join("output");
        let plan = ContainerPlan {
            args: req.args,
            env: req.env,
            cwd: "/".into(),
            memory_bytes: limits.memory_bytes,
            cpu_cores: limits.cpu_cores,
            devices,
            output_dir: output.clone(),
            cgroups_path: containers.cgroups_path(task),
            network_hook: limits.outbound.then(|| bundle.join("network.sh")),
        };
        let spec = crate::containers::runtime_config(&plan)
            .map_err(|e| TaskError::BadRequest(e.to_string()))?;
        // Anything that fails below leaves nothing behind.
        if let Err(e) = prepare_bundle(&bundle, &req.rootfs, &spec, limits.rootfs_bytes) {
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(e);
        }
        let image_sha256: [u8; 32] = Sha256::digest(&req.rootfs).into();
        drop(req.rootfs);

        self.store
            .put_task(&TaskRecord {
                id: task,
                deal,
                consumer,
                receipt: None,
                error: None,
            })
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        let (cancel, busy, finisher) = self.admit(
            task,
            deal,
            consumer,
            bundle.clone(),
            Metering::None,
            LogSource::Files(bundle.clone()),
        );
        if busy {
            let e = JobError::Busy {
                limit: self.max_running,
            };
            finisher.settle(State::Failed(e.to_string()));
            return Ok(());
        }
        let spawned = std::thread::Builder::new()
            .name(format!("container-{task}"))
            .spawn(move || {
                let outcome =
                    containers.run_task(task, &limits, &cancel, Limits::default().stdout_bytes);
                let state = match outcome {
                    Ok(o) => match finisher.container_result(o, image_sha256) {
                        Ok(r) => State::Done(Arc::new(r)),
                        Err(e) => State::Failed(e),
                    },
                    Err(e) => State::Failed(e.to_string()),
                };
                finisher.settle(state);
            });
        if let Err(e) = spawned {
            lock(&self.tasks).remove(&task);
            return Err(TaskError::Internal(format!("cannot start a thread: {e}")));
        }
        Ok(())
    }

    /// Whether container tasks can run (`None`: not configured at all), with runc's version.
    pub fn containers_ready(&self) -> Option<Result<String, Unavailable>> {
        self.containers.as_ref().map(|c| c.ready.clone())
    }

    /// Cleans what containers of an earlier run left (see [`Containers::clean_leftovers`]).
    pub fn clean_container_leftovers(&self) -> Result<usize, crate::containers::ContainerError> {
        match &self.containers {
            Some(c) => c.clean_leftovers(),
            None => Ok(0),
        }
    }
}

/// The bundle of a container task: the rootfs unpacked (safely, capped), `output/` owned by the
/// container's root, and `config.json`.
fn prepare_bundle(
    bundle: &Path,
    rootfs_tar: &[u8],
    spec: &crate::containers::Spec,
    max_bytes: u64,
) -> Result<(), TaskError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| TaskError::Internal(format!("container bundle: {e}"));
    let rootfs = bundle.join("rootfs");
    let output = bundle.join("output");
    std::fs::create_dir_all(&rootfs).map_err(io)?;
    std::fs::create_dir(&output).map_err(io)?;
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    let base = crate::containers::HOST_ID_BASE;
    std::os::unix::fs::lchown(&output, Some(base), Some(base)).map_err(io)?;
    crate::containers::unpack_rootfs(
        rootfs_tar,
        &rootfs,
        UnpackLimits {
            max_bytes,
            max_entries: MAX_ROOTFS_ENTRIES,
        },
    )
    .map_err(TaskError::BadRootfs)?;
    let json = serde_json::to_vec_pretty(spec).map_err(|e| TaskError::Internal(e.to_string()))?;
    std::fs::write(bundle.join("config.json"), json).map_err(io)
}

impl Finisher {
    /// A container's result and its receipt: no fuel, its wall time, the sha256 of its rootfs
    /// tar in place of a module's, and its `/output` files — written to the results and served
    /// from there, like a WASM task's.
    fn container_result(
        &self,
        finished: crate::containers::Finished,
        image_sha256: [u8; 32],
    ) -> Result<Ended, String> {
        let o = finished.outcome;
        let exit = match o.end {
            Ok(code) => Exit::Code(code),
            Err(Killed::Oom) => Exit::Killed(KillCause::OomKilled),
            Err(Killed::Stopped) => Exit::Killed(KillCause::Stopped),
            Err(Killed::WallTime) => Exit::Killed(KillCause::WallTime),
        };
        // `containers` reads `/output` back from its own filesystem (gone once unmounted), so
        // the files arrive as bytes; they are written out and dropped here.
        let kept = self.results.keep_files(
            self.task,
            self.deal,
            exit,
            finished.outputs?,
            &o.stdout,
            &o.stderr,
        )?;
        self.sign(kept, image_sha256, Fuel::NotMetered, o.wall_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::TaskLimits;
    use sonm_wasm_runtime::RuntimeConfig;

    const HELLO: &str = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "hi\n")
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 3))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    const ENDLESS: &str =
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

    fn runtime(metering: Metering) -> Arc<Runtime> {
        Arc::new(
            Runtime::new(RuntimeConfig {
                metering,
                max_concurrent_jobs: 2,
                ..RuntimeConfig::default()
            })
            .unwrap(),
        )
    }

    fn request(module: &str, fuel_metered: bool) -> StartWasm {
        StartWasm {
            deal: 1,
            module: module.as_bytes().to_vec(),
            args: Vec::new(),
            inputs: Vec::new(),
            limits: TaskLimits {
                fuel_metered,
                ..TaskLimits::default()
            },
        }
    }

    /// Waits (bounded) until `task` is no longer running.
    fn wait(runner: &TaskRunner, task: TaskId, peer: Address) -> TaskStatus {
        for _ in 0..500 {
            match runner.status(task, peer).unwrap() {
                TaskStatus::Running => std::thread::sleep(std::time::Duration::from_millis(10)),
                done => return done,
            }
        }
        panic!("task {task} still running");
    }

    #[test]
    fn a_local_run_reproduces_a_metered_task_s_fuel() {
        // What a customer does to check a receipt: the same module, arguments and inputs, run
        // as the worker runs it (argv[0] "task", random seed 0, /input and /output).
        let module = std::fs::read(sonm_wasm_runtime::example_jobs_dir().join("sha256.wasm"))
            .expect("wasm-runtime/jobs/build.sh builds sha256.wasm");
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKeySigner::random();
        let peer = Address::repeat_byte(7);
        let runner = TaskRunner::new(
            runtime(Metering::EpochOnly),
            runtime(Metering::Fuel),
            2,
            dir.path().join("tasks"),
            key,
            31337,
            Store::open(&dir.path().join("lmdb")).unwrap(),
        );
        let inputs = vec![
            File {
                path: "a.txt".into(),
                bytes: b"abc".to_vec(),
            },
            File {
                path: "d/b.bin".into(),
                bytes: vec![7; 100_000],
            },
        ];
        let req = StartWasm {
            module: module.clone(),
            inputs: inputs.clone(),
            ..request("", true)
        };
        runner.start(1, 1, peer, req, Limits::default()).unwrap();
        assert_eq!(wait(&runner, 1, peer), TaskStatus::Finished(Exit::Code(0)));
        let Fuel::Counted(fuel) = runner.result(1, peer).unwrap().receipt.receipt.fuel else {
            panic!("a fuel-metered task has a count");
        };

        let local = tempfile::tempdir().unwrap();
        for f in &inputs {
            let p = local.path().join("in").join(&f.path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &f.bytes).unwrap();
        }
        let mut spec = JobSpec::new(ModuleSource::Bytes(module));
        spec.input_dir = Some(local.path().join("in"));
        spec.output_dir = Some(local.path().join("out"));
        spec.program_name = "task".into();
        spec.random_seed = Some(0);
        // A runtime configured as `sonm-wasm-run` configures it (one slot, no disk cache).
        let rt = Runtime::new(RuntimeConfig {
            max_concurrent_jobs: 1,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let report = rt.run(&spec, &CancelHandle::new()).unwrap();
        assert_eq!(report.termination, Termination::Exit(0));
        assert_eq!(report.usage.fuel_consumed, Some(fuel));
    }

    #[test]
    fn metering_follows_the_request_and_both_runtimes_share_the_task_cap() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKeySigner::random();
        let peer = Address::repeat_byte(7);
        let store = Store::open(&dir.path().join("lmdb")).unwrap();
        let runner = TaskRunner::new(
            runtime(Metering::EpochOnly),
            runtime(Metering::Fuel),
            1,
            dir.path().join("tasks"),
            key.clone(),
            31337,
            store,
        );
        let fuel_of = |task| runner.result(task, peer).unwrap().receipt.receipt.fuel;

        // Production metering (epochs): the receipt says no fuel was metered.
        runner
            .start(1, 1, peer, request(HELLO, false), Limits::default())
            .unwrap();
        assert_eq!(wait(&runner, 1, peer), TaskStatus::Finished(Exit::Code(0)));
        assert_eq!(fuel_of(1), Fuel::NotMetered);
        // Asked for: counted (and the same count again below).
        runner
            .start(2, 1, peer, request(HELLO, true), Limits::default())
            .unwrap();
        wait(&runner, 2, peer);
        let counted = fuel_of(2);
        assert!(matches!(counted, Fuel::Counted(n) if n > 0), "{counted:?}");
        // A fuel cap implies fuel metering (the epoch runtime would refuse it).
        let capped = Limits {
            fuel: Some(1_000_000),
            ..Limits::default()
        };
        runner
            .start(4, 1, peer, request(HELLO, false), capped)
            .unwrap();
        assert_eq!(wait(&runner, 4, peer), TaskStatus::Finished(Exit::Code(0)));
        assert_eq!(fuel_of(4), counted);
        runner
            .result(4, peer)
            .unwrap()
            .receipt
            .verify(key.address())
            .unwrap();

        // One task may run at once: a second one, on the other runtime, is refused as busy
        // even though that runtime's pool has room.
        runner
            .start(5, 1, peer, request(ENDLESS, false), Limits::default())
            .unwrap();
        runner
            .start(6, 1, peer, request(HELLO, true), Limits::default())
            .unwrap();
        let busy = JobError::Busy { limit: 1 }.to_string();
        assert_eq!(wait(&runner, 6, peer), TaskStatus::Failed(busy));
        runner.stop(5, peer).unwrap();
        assert!(matches!(
            wait(&runner, 5, peer),
            TaskStatus::Finished(Exit::Trapped(_))
        ));
        assert_eq!(fuel_of(5), Fuel::NotMetered);
        runner
            .start(7, 1, peer, request(HELLO, true), Limits::default())
            .unwrap();
        assert_eq!(wait(&runner, 7, peer), TaskStatus::Finished(Exit::Code(0)));
        assert_eq!(fuel_of(7), counted);
    }

    #[test]
    fn input_paths_must_be_plain_and_relative() {
        assert!(safe_relative("a.txt").is_ok());
        assert!(safe_relative("dir/b.bin").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a\\b"] {
            assert!(safe_relative(bad).is_err(), "{bad:?}");
        }
    }
}
