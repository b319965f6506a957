//! WASM tasks: each runs in `sonm-wasm-runtime` on its own thread, with its inputs written to
//! `<state>/tasks/<id>/input` (read-only at `/input`) and its outputs collected from
//! `<state>/tasks/<id>/output`; at the end the result gets a usage receipt signed by the worker
//! and the receipt is recorded in the store.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use alloy::signers::local::PrivateKeySigner;
use sha2::{Digest, Sha256};
use sonm_market::{Address, DealId};
use sonm_wasm_runtime::{CancelHandle, JobSpec, Limits, ModuleSource, Runtime, Termination};

use crate::proto::{Exit, File, StartWasm, TaskError, TaskId, TaskResult, TaskStatus};
use crate::receipt::{UsageReceipt, outputs_digest};
use crate::state::{Store, TaskRecord};

#[derive(Debug)]
enum State {
    Running(CancelHandle),
    Done(Arc<TaskResult>),
    Failed(String),
}

#[derive(Debug)]
struct Entry {
    deal: DealId,
    consumer: Address,
    state: State,
}

/// Runs tasks and keeps their results (in memory; receipts also in the store).
#[derive(Debug)]
pub struct TaskRunner {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    signer: PrivateKeySigner,
    chain_id: u64,
    store: Store,
    tasks: Arc<Mutex<HashMap<TaskId, Entry>>>,
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
    dir: PathBuf,
}

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
    pub fn new(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        signer: PrivateKeySigner,
        chain_id: u64,
        store: Store,
    ) -> Self {
        Self {
            runtime,
            dir,
            signer,
            chain_id,
            store,
            tasks: Arc::new(Mutex::new(HashMap::new())),
        }
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

    /// Starts `req` as task `task` for `consumer` under `deal` with `limits` (already checked
    /// against the slice).
    pub fn start(
        &self,
        task: TaskId,
        deal: DealId,
        consumer: Address,
        req: StartWasm,
        limits: Limits,
    ) -> Result<(), TaskError> {
        let task_dir = self.dir.join(task.to_string());
        let input = task_dir.join("input");
        let output = task_dir.join("output");
        let io = |e: std::io::Error| TaskError::Internal(format!("task directory: {e}"));
        std::fs::create_dir_all(&input).map_err(io)?;
        std::fs::create_dir_all(&output).map_err(io)?;
        for f in &req.inputs {
            let rel = safe_relative(&f.path)?;
            let path = input.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, &f.bytes).map_err(io)?;
        }
        let mut spec = JobSpec::new(ModuleSource::Bytes(req.module));
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
        let cancel = CancelHandle::new();
        lock(&self.tasks).insert(
            task,
            Entry {
                deal,
                consumer,
                state: State::Running(cancel.clone()),
            },
        );
        let runtime = self.runtime.clone();
        let finisher = Finisher {
            task,
            deal,
            consumer,
            signer: self.signer.clone(),
            chain_id: self.chain_id,
            store: self.store.clone(),
            tasks: self.tasks.clone(),
            dir: task_dir,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("task-{task}"))
            .stack_size(8 << 20)
            .spawn(move || {
                let outcome = runtime.run(&spec, &cancel);
                finisher.finish(outcome.map_err(|e| e.to_string()), &output);
            });
        if let Err(e) = spawned {
            lock(&self.tasks).remove(&task);
            return Err(TaskError::Internal(format!("cannot start a thread: {e}")));
        }
        Ok(())
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
            State::Done(r) => TaskStatus::Finished(r.exit.clone()),
            State::Failed(e) => TaskStatus::Failed(e.clone()),
        })
    }

    /// A task of an earlier run of the worker, from the store: its exit status and receipt
    /// survive a restart (its outputs do not yet), and one that was running when the worker
    /// died is reported as lost.
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
            (Some(r), _) => TaskStatus::Finished(r.receipt.exit()),
            (None, Some(e)) => TaskStatus::Failed(e),
            (None, None) => TaskStatus::Failed("lost: the worker stopped while it ran".into()),
        })
    }

    pub fn result(&self, task: TaskId, peer: Address) -> Result<Arc<TaskResult>, TaskError> {
        let tasks = lock(&self.tasks);
        if !tasks.contains_key(&task) {
            self.recorded_status(task, peer)?;
            return Err(TaskError::ResultGone(task));
        }
        match &Self::entry_for(&tasks, task, peer)?.state {
            State::Running(_) => Err(TaskError::NotFinished(task)),
            State::Done(r) => Ok(r.clone()),
            State::Failed(e) => Err(TaskError::BadRequest(e.clone())),
        }
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
        if let Err(e) = self.store.put_task(&record) {
            tracing::error!(task = self.task, "recording the task failed: {e}");
        }
        match &state {
            State::Done(r) => tracing::info!(task = self.task, deal = self.deal, exit = ?r.exit,
                fuel = r.receipt.receipt.fuel, "task finished"),
            State::Failed(e) => {
                tracing::info!(task = self.task, deal = self.deal, "task failed: {e}")
            }
            State::Running(_) => {}
        }
        if let Some(entry) = lock(&self.tasks).get_mut(&self.task) {
            entry.state = state;
        }
        // Outputs are in memory now; the files are not needed any more.
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn result(
        &self,
        report: sonm_wasm_runtime::JobReport,
        output: &Path,
    ) -> Result<TaskResult, String> {
        let mut outputs = Vec::new();
        for f in &report.output_files {
            let path = output.join(&f.path);
            // Symlinks are listed with size 0 and never followed.
            let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
            if !meta.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            outputs.push(File {
                path: f.path.to_string_lossy().replace('\\', "/"),
                bytes,
            });
        }
        outputs.sort_by(|a, b| a.path.cmp(&b.path));
        let exit = match &report.termination {
            Termination::Exit(c) => Exit::Code(*c),
            Termination::Trap(t) => Exit::Trapped(t.to_string()),
        };
        let mut module_sha256 = [0u8; 32];
        alloy::primitives::hex::decode_to_slice(&report.module_sha256, &mut module_sha256)
            .unwrap_or_else(|_| module_sha256 = Sha256::digest(b"").into());
        let receipt = UsageReceipt {
            worker: self.signer.address(),
            chain_id: self.chain_id,
            deal: self.deal,
            task: self.task,
            module_sha256,
            fuel: report.usage.fuel_consumed.unwrap_or(0),
            wall_time_us: u64::try_from(report.usage.wall_time.as_micros()).unwrap_or(u64::MAX),
            trapped: matches!(exit, Exit::Trapped(_)),
            exit_code: match exit {
                Exit::Code(c) => c,
                Exit::Trapped(_) => 0,
            },
            outputs_sha256: outputs_digest(&outputs),
        }
        .sign(&self.signer)
        .map_err(|e| e.to_string())?;
        Ok(TaskResult {
            task: self.task,
            deal: self.deal,
            exit,
            stdout: report.stdout.bytes,
            stderr: report.stderr.bytes,
            outputs,
            receipt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_paths_must_be_plain_and_relative() {
        assert!(safe_relative("a.txt").is_ok());
        assert!(safe_relative("dir/b.bin").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a\\b"] {
            assert!(safe_relative(bad).is_err(), "{bad:?}");
        }
    }
}
