//! The task protocol's bulk paths: staged uploads (only for an active deal's consumer, capped
//! per deal), starts that name them, a result's outputs downloaded in chunks, and log reads.

use std::path::Path;
use std::time::{Duration, Instant};

use sonm_market::Address;

use super::{Worker, WorkerError};
use crate::proto::{Blob, Request, Response, StartContainer, TaskError};
use crate::state::DealRecord;
use crate::tasks::{Payload, WasmJob};
use crate::uploads::Uploads;

/// Staged bytes of a deal whose slice names no storage.
const DEFAULT_UPLOAD_CAP: u64 = 2 << 30;
/// An upload with no chunk or commit for this long (or committed and not started) is removed.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) fn open_uploads(state_dir: &Path) -> Result<Uploads, WorkerError> {
    let dir = state_dir.join("uploads");
    Uploads::open(dir.clone(), UPLOAD_IDLE_TIMEOUT).map_err(|source| WorkerError::Io {
        what: format!("opening {}", dir.display()),
        source,
    })
}

impl Worker {
    /// Removes idle uploads (the chain loop calls this every round).
    pub(super) fn sweep_uploads(&self) {
        let n = self.uploads.sweep(Instant::now());
        if n > 0 {
            tracing::info!("removed {n} idle uploads");
        }
    }

    /// Bytes of staged uploads `deal` may hold: its slice's storage, or a default.
    fn upload_cap(&self, deal: &DealRecord) -> u64 {
        let storage = deal
            .plan
            .and_then(|p| self.store.plan(p).ok().flatten())
            .map_or(0, |p| p.spec.slice.storage_bytes);
        if storage > 0 {
            storage
        } else {
            DEFAULT_UPLOAD_CAP
        }
    }

    /// Staged bytes in use by `deal` (for tests and metrics).
    pub fn staged_upload_bytes(&self, deal: sonm_market::DealId) -> u64 {
        self.uploads.used(deal)
    }

    /// Files in the upload staging directory.
    pub fn staged_upload_files(&self) -> usize {
        self.uploads.files()
    }

    fn payload(&self, peer: Address, deal: u64, blob: Blob) -> Result<Payload, TaskError> {
        Ok(match blob {
            Blob::Inline(b) => Payload::Bytes(b),
            Blob::Upload(id) => Payload::Staged(self.uploads.take(peer, deal, id)?),
        })
    }

    pub(super) async fn handle_transfer(
        &self,
        peer: Address,
        req: Request,
    ) -> Result<Response, TaskError> {
        let now = Instant::now();
        match req {
            Request::BeginUpload {
                deal,
                total_size,
                sha256,
            } => {
                // Who may stage bytes: exactly who may start a task on the deal.
                let deal = self.authorize(peer, deal).await?;
                let cap = self.upload_cap(&deal);
                let upload = self
                    .uploads
                    .begin(deal.id, peer, total_size, sha256, cap, now)?;
                tracing::debug!(upload, deal = deal.id, total_size, "upload begun");
                Ok(Response::UploadBegun { upload })
            }
            Request::Chunk {
                upload,
                offset,
                bytes,
            } => {
                // At most a 1 MiB append: written on the executor thread, like LMDB writes.
                let received = self.uploads.chunk(peer, upload, offset, &bytes, now)?;
                Ok(Response::ChunkTaken { received })
            }
            Request::Commit { upload } => {
                self.uploads.commit(peer, upload, now)?;
                Ok(Response::Committed { upload })
            }
            Request::StartWasmStaged(start) => {
                // Taken before the deal is checked again: a refused start drops (removes) them.
                let module = self.payload(peer, start.deal, start.module)?;
                let mut inputs = Vec::with_capacity(start.inputs.len());
                for (path, blob) in start.inputs {
                    inputs.push((path, self.payload(peer, start.deal, blob)?));
                }
                let job = WasmJob {
                    module,
                    args: start.args,
                    inputs,
                    fuel_metered: start.limits.fuel_metered,
                };
                self.start_wasm_job(peer, start.deal, start.limits, job)
                    .await
            }
            Request::StartContainerStaged(start) => {
                let rootfs = self
                    .payload(peer, start.deal, start.rootfs)?
                    .into_bytes()
                    .map_err(|e| TaskError::Internal(format!("staged rootfs: {e}")))?;
                self.start_container(
                    peer,
                    StartContainer {
                        deal: start.deal,
                        rootfs,
                        args: start.args,
                        env: start.env,
                        limits: start.limits,
                    },
                )
                .await
            }
            Request::ResultInfo { task } => self
                .runner
                .result_info(task, peer)
                .map(|r| Response::ResultInfo(Box::new(r))),
            Request::Download { task, path, offset } => self
                .runner
                .download(task, peer, &path, offset)
                .map(|bytes| Response::Data { bytes }),
            Request::Logs {
                task,
                stdout_offset,
                stderr_offset,
            } => self
                .runner
                .logs(task, peer, stdout_offset, stderr_offset)
                .map(Response::Logs),
            other => Err(TaskError::BadRequest(format!(
                "not a transfer request: {other:?}"
            ))),
        }
    }
}
