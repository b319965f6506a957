//! The customer's side of the task protocol (what `sonm-node` will call): connect to a worker
//! by its address (the handshake fails for any other key), start a WASM task or a container
//! under a deal,
//! follow it, and fetch its result with the receipt verified.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sonm_market::Address;
use sonm_net::{Connection, Endpoint, EndpointConfig, EthKey, Identity, NetError};

use sha2::{Digest, Sha256};

use crate::proto::{
    ALPN, Blob, CHUNK_SIZE, File, INLINE_MAX, LogChunk, MAX_FRAME, Request, Response,
    StartContainer, StartContainerStaged, StartWasm, StartWasmStaged, TaskError, TaskId,
    TaskResult, TaskStatus, UploadId,
};
use crate::receipt::{ReceiptError, verify_result};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error("identity: {0}")]
    Identity(#[from] sonm_net::IdentityError),
    #[error("refused by the worker: {0}")]
    Refused(TaskError),
    #[error("receipt: {0}")]
    Receipt(#[from] ReceiptError),
    #[error("unexpected response: {0}")]
    Unexpected(String),
    #[error("task {0} did not finish in time")]
    Timeout(TaskId),
    #[error(
        "output {path:?} of task {task}: received {size} bytes with sha256 {got}, the worker announced {expected_size} bytes with sha256 {expected}"
    )]
    Integrity {
        task: TaskId,
        path: String,
        size: u64,
        got: String,
        expected_size: u64,
        expected: String,
    },
}

/// Files at most this big ride inline with a staged start; bigger ones are uploaded.
const STAGE_MIN: usize = 64 << 10;

/// What a transfer reports as it goes: bytes done and the total (uploads and downloads of one
/// call add up to one total).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

fn no_progress(_: u64, _: u64) {}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How long a client endpoint's certificate is valid; a node keeps its endpoints for days, so
/// they renew it (see `EndpointConfig::renew`).
const CLIENT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// A client endpoint (no server ALPN) for `key`, bound at `bind` (e.g. `127.0.0.1:0`).
pub fn client_endpoint(key: &EthKey, bind: SocketAddr) -> Result<Endpoint, ClientError> {
    let identity = Identity::generate(key, CLIENT_VALIDITY)?;
    let config = EndpointConfig {
        max_frame: MAX_FRAME,
        renew: Some((key.clone(), CLIENT_VALIDITY)),
        ..EndpointConfig::default()
    };
    Ok(Endpoint::bind(bind, identity, config)?)
}

/// As [`client_endpoint`], on an existing socket (one whose duplicate also punches and binds
/// relays for a rendezvous client), with a keep-alive (which keeps NAT mappings open).
pub fn client_endpoint_on(
    key: &EthKey,
    socket: UdpSocket,
    keep_alive: Option<Duration>,
) -> Result<Endpoint, ClientError> {
    let identity = Identity::generate(key, CLIENT_VALIDITY)?;
    let config = EndpointConfig {
        max_frame: MAX_FRAME,
        keep_alive,
        renew: Some((key.clone(), CLIENT_VALIDITY)),
        ..EndpointConfig::default()
    };
    Ok(Endpoint::from_socket(socket, identity, config)?)
}

/// A connection to one worker.
#[derive(Debug, Clone)]
pub struct TaskClient {
    conn: Connection,
    worker: Address,
}

impl TaskClient {
    /// Dials `addr`, requiring the peer to be `worker` (the deal's supplier).
    pub async fn connect(
        endpoint: &Endpoint,
        addr: SocketAddr,
        worker: Address,
    ) -> Result<Self, ClientError> {
        let conn = endpoint.connect(addr, ALPN, Some(worker)).await?;
        Ok(Self { conn, worker })
    }

    /// Wraps a connection made elsewhere (e.g. through the rendezvous), checking that its
    /// verified peer is `worker` and that it speaks the task protocol.
    pub fn from_connection(conn: Connection, worker: Address) -> Result<Self, ClientError> {
        if conn.peer_address() != worker || conn.alpn() != ALPN {
            return Err(ClientError::Unexpected(format!(
                "connection to {} ({:?}) is not {worker}'s task service",
                conn.peer_address(),
                String::from_utf8_lossy(conn.alpn())
            )));
        }
        Ok(Self { conn, worker })
    }

    pub fn worker(&self) -> Address {
        self.worker
    }

    async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        match self
            .conn
            .request::<_, Response>(req, REQUEST_TIMEOUT)
            .await?
        {
            Response::Error(e) => Err(ClientError::Refused(e)),
            r => Ok(r),
        }
    }

    /// Starts a WASM task: in one message when it is small, else with the module and the
    /// larger inputs uploaded in chunks first.
    pub async fn start_wasm(&self, start: StartWasm) -> Result<TaskId, ClientError> {
        self.start_wasm_with_progress(start, &no_progress).await
    }

    /// As [`TaskClient::start_wasm`], reporting the upload's progress.
    pub async fn start_wasm_with_progress(
        &self,
        start: StartWasm,
        progress: Progress<'_>,
    ) -> Result<TaskId, ClientError> {
        let size = start.module.len()
            + start
                .inputs
                .iter()
                .map(|f| f.bytes.len() + f.path.len())
                .sum::<usize>();
        let req = if size + 4096 <= INLINE_MAX {
            Request::StartWasm(start)
        } else {
            let staged = |f: &File| f.bytes.len() > STAGE_MIN;
            let total = start.module.len() as u64
                + start
                    .inputs
                    .iter()
                    .filter(|f| staged(f))
                    .map(|f| f.bytes.len() as u64)
                    .sum::<u64>();
            let mut done = 0;
            let module = Blob::Upload(
                self.upload(start.deal, &start.module, &mut done, total, progress)
                    .await?,
            );
            let mut inputs = Vec::with_capacity(start.inputs.len());
            for f in start.inputs {
                let blob = if staged(&f) {
                    Blob::Upload(
                        self.upload(start.deal, &f.bytes, &mut done, total, progress)
                            .await?,
                    )
                } else {
                    Blob::Inline(f.bytes)
                };
                inputs.push((f.path, blob));
            }
            Request::StartWasmStaged(StartWasmStaged {
                deal: start.deal,
                module,
                args: start.args,
                inputs,
                limits: start.limits,
            })
        };
        match self.call(&req).await? {
            Response::Started { task } => Ok(task),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Starts a native container (the worker must offer them: `containers = true`); a rootfs
    /// too big for one message is uploaded in chunks first.
    pub async fn start_container(&self, start: StartContainer) -> Result<TaskId, ClientError> {
        self.start_container_with_progress(start, &no_progress)
            .await
    }

    /// As [`TaskClient::start_container`], reporting the upload's progress.
    pub async fn start_container_with_progress(
        &self,
        start: StartContainer,
        progress: Progress<'_>,
    ) -> Result<TaskId, ClientError> {
        let req = if start.rootfs.len() + 4096 <= INLINE_MAX {
            Request::StartContainer(start)
        } else {
            let total = start.rootfs.len() as u64;
            let upload = self
                .upload(start.deal, &start.rootfs, &mut 0, total, progress)
                .await?;
            Request::StartContainerStaged(StartContainerStaged {
                deal: start.deal,
                rootfs: Blob::Upload(upload),
                args: start.args,
                env: start.env,
                limits: start.limits,
            })
        };
        match self.call(&req).await? {
            Response::Started { task } => Ok(task),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Stages `bytes` on the worker for a start request of `deal`: begin, chunks, commit.
    /// `done` counts bytes sent towards `total` for `progress`.
    pub async fn upload(
        &self,
        deal: sonm_market::DealId,
        bytes: &[u8],
        done: &mut u64,
        total: u64,
        progress: Progress<'_>,
    ) -> Result<UploadId, ClientError> {
        let begin = Request::BeginUpload {
            deal,
            total_size: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        };
        let upload = match self.call(&begin).await? {
            Response::UploadBegun { upload } => upload,
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        let mut offset = 0u64;
        for chunk in bytes.chunks(CHUNK_SIZE) {
            let req = Request::Chunk {
                upload,
                offset,
                bytes: chunk.to_vec(),
            };
            match self.call(&req).await? {
                Response::ChunkTaken { received } if received == offset + chunk.len() as u64 => {
                    offset = received;
                }
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
            *done += chunk.len() as u64;
            progress(*done, total);
        }
        match self.call(&Request::Commit { upload }).await? {
            Response::Committed { .. } => Ok(upload),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Up to a chunk of the task's stdout and stderr from the given offsets (live while it
    /// runs; `finished` once it ended).
    pub async fn logs(
        &self,
        task: TaskId,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<LogChunk, ClientError> {
        let req = Request::Logs {
            task,
            stdout_offset,
            stderr_offset,
        };
        match self.call(&req).await? {
            Response::Logs(chunk) => Ok(chunk),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn status(&self, task: TaskId) -> Result<TaskStatus, ClientError> {
        match self.call(&Request::Status { task }).await? {
            Response::Status(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn stop(&self, task: TaskId) -> Result<(), ClientError> {
        match self.call(&Request::Stop { task }).await? {
            Response::Stopping => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The result, after checking its receipt against the worker's address, the task, and the
    /// outputs received.
    pub async fn result(&self, task: TaskId) -> Result<TaskResult, ClientError> {
        self.result_with_progress(task, &no_progress).await
    }

    /// As [`TaskClient::result`]: the outputs are downloaded in chunks, each checked against
    /// the size and sha256 the worker announced (which the receipt's digest covers).
    pub async fn result_with_progress(
        &self,
        task: TaskId,
        progress: Progress<'_>,
    ) -> Result<TaskResult, ClientError> {
        let info = match self.call(&Request::ResultInfo { task }).await? {
            Response::ResultInfo(r) => *r,
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        let total: u64 = info.outputs.iter().map(|o| o.size).sum();
        let mut done = 0u64;
        let mut outputs = Vec::with_capacity(info.outputs.len());
        for o in &info.outputs {
            // Never more than announced, whatever the worker sends.
            let mut bytes = Vec::with_capacity(usize::try_from(o.size.min(64 << 20)).unwrap_or(0));
            let mut hasher = Sha256::new();
            while (bytes.len() as u64) < o.size {
                let req = Request::Download {
                    task,
                    path: o.path.clone(),
                    offset: bytes.len() as u64,
                };
                let chunk = match self.call(&req).await? {
                    Response::Data { bytes } => bytes,
                    other => return Err(ClientError::Unexpected(format!("{other:?}"))),
                };
                let room = o.size - bytes.len() as u64;
                if chunk.is_empty() || chunk.len() as u64 > room {
                    return Err(integrity(
                        task,
                        o,
                        bytes.len() as u64 + chunk.len() as u64,
                        &hasher,
                    ));
                }
                hasher.update(&chunk);
                bytes.extend_from_slice(&chunk);
                done += chunk.len() as u64;
                progress(done, total);
            }
            if <[u8; 32]>::from(hasher.clone().finalize()) != o.sha256 {
                return Err(integrity(task, o, bytes.len() as u64, &hasher));
            }
            outputs.push(File {
                path: o.path.clone(),
                bytes,
            });
        }
        let result = TaskResult {
            task: info.task,
            deal: info.deal,
            exit: info.exit,
            stdout: info.stdout,
            stderr: info.stderr,
            outputs,
            receipt: info.receipt,
        };
        verify_result(&result, self.worker)?;
        Ok(result)
    }

    /// Polls the status every `every` until the task is no longer running (at most `tries`
    /// times), then fetches the verified result.
    pub async fn wait_result(
        &self,
        task: TaskId,
        every: Duration,
        tries: u32,
    ) -> Result<TaskResult, ClientError> {
        for _ in 0..tries {
            match self.status(task).await? {
                TaskStatus::Running => smol::Timer::after(every).await,
                TaskStatus::Finished(_) => return self.result(task).await,
                TaskStatus::Failed(e) => {
                    return Err(ClientError::Refused(TaskError::BadRequest(e)));
                }
            };
        }
        Err(ClientError::Timeout(task))
    }
}

fn integrity(task: TaskId, o: &crate::proto::OutputInfo, size: u64, h: &Sha256) -> ClientError {
    ClientError::Integrity {
        task,
        path: o.path.clone(),
        size,
        got: hex(&h.clone().finalize()),
        expected_size: o.size,
        expected: hex(&o.sha256),
    }
}
