//! The customer's side of the task protocol (what `sonm-node` will call): connect to a worker
//! by its address (the handshake fails for any other key), start a WASM task or a container
//! under a deal,
//! follow it, and fetch its result with the receipt verified.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sonm_market::Address;
use sonm_net::{Connection, Endpoint, EndpointConfig, EthKey, Identity, NetError};

use crate::proto::{
    ALPN, MAX_FRAME, Request, Response, StartContainer, StartWasm, TaskError, TaskId, TaskResult,
    TaskStatus,
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
}

/// A client endpoint (no server ALPN) for `key`, bound at `bind` (e.g. `127.0.0.1:0`).
pub fn client_endpoint(key: &EthKey, bind: SocketAddr) -> Result<Endpoint, ClientError> {
    let identity = Identity::generate(key, Duration::from_secs(24 * 3600))?;
    let config = EndpointConfig {
        max_frame: MAX_FRAME,
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
    let identity = Identity::generate(key, Duration::from_secs(24 * 3600))?;
    let config = EndpointConfig {
        max_frame: MAX_FRAME,
        keep_alive,
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

    pub async fn start_wasm(&self, start: StartWasm) -> Result<TaskId, ClientError> {
        match self.call(&Request::StartWasm(start)).await? {
            Response::Started { task } => Ok(task),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Starts a native container (the worker must offer them: `containers = true`).
    pub async fn start_container(&self, start: StartContainer) -> Result<TaskId, ClientError> {
        match self.call(&Request::StartContainer(start)).await? {
            Response::Started { task } => Ok(task),
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
        match self.call(&Request::Result { task }).await? {
            Response::Result(r) => {
                verify_result(&r, self.worker)?;
                Ok(*r)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
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
