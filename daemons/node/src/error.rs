//! The API's errors: each one has an HTTP status and a stable `code`, and reaches the client as
//! `{"code": ..., "message": ...}`. Bad input is always a 4xx.

use serde::Serialize;
use sonm_worker::client::ClientError;
use sonm_worker::proto::TaskError;

use crate::chain::ChainError;
use crate::gates::GateError;
use crate::market::MarketError;

impl From<sonm_http_query::BadQuery> for ApiError {
    fn from(e: sonm_http_query::BadQuery) -> Self {
        ApiError::BadRequest(e.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal: {0}")]
    Internal(String),
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    #[error(
        "no QUIC address known for worker {0}: add it under [workers] in the node's config, pass worker_addr, or set rendezvous"
    )]
    NoWorkerAddress(sonm_market::Address),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error(transparent)]
    Worker(#[from] ClientError),
    #[error("reaching the worker through the rendezvous: {0}")]
    Rendezvous(#[from] sonm_rendezvous::ClientError),
    /// Deposits and withdrawals through the Gates.
    #[error(transparent)]
    Gate(#[from] crate::gates::GateError),
}

/// The JSON body of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

fn task_error_code(e: &TaskError) -> (u16, &'static str) {
    match e {
        TaskError::NotConsumer { .. } => (403, "worker_not_consumer"),
        TaskError::NotYourTask { .. } => (403, "worker_not_your_task"),
        TaskError::UnknownDeal(_) => (404, "worker_unknown_deal"),
        TaskError::UnknownTask(_) => (404, "worker_unknown_task"),
        TaskError::DealClosed(_) => (409, "worker_deal_closed"),
        TaskError::NotFinished(_) => (409, "worker_not_finished"),
        TaskError::TooManyTasks { .. } => (429, "worker_too_many_tasks"),
        TaskError::ResultGone(_) => (410, "worker_result_gone"),
        TaskError::LimitExceeded { .. } => (400, "worker_limit_exceeded"),
        TaskError::BadRequest(_) => (400, "worker_bad_request"),
        TaskError::Internal(_) => (502, "worker_internal"),
        TaskError::ContainersUnavailable(_) => (501, "worker_containers_unavailable"),
        TaskError::BadRootfs(_) => (400, "worker_bad_rootfs"),
        // Staged uploads and downloads (the node's client drives them; these reach the API
        // only when something went wrong on the way).
        TaskError::UnknownUpload(_) => (404, "worker_unknown_upload"),
        TaskError::NotYourUpload { .. } => (403, "worker_not_your_upload"),
        TaskError::UploadTooLarge { .. } => (413, "worker_upload_too_large"),
        TaskError::WrongOffset { .. }
        | TaskError::UploadOverrun { .. }
        | TaskError::UploadMismatch { .. }
        | TaskError::UploadNotReady { .. } => (502, "worker_upload_failed"),
        TaskError::UnknownOutput { .. } => (404, "worker_unknown_output"),
        TaskError::DealClosing(_) => (409, "worker_deal_closing"),
        // The worker's own check of its stored bytes: the same failure as the client's.
        TaskError::ResultCorrupt { .. } => (502, "worker_output_corrupt"),
    }
}

impl ApiError {
    /// HTTP status and error code.
    pub fn status_code(&self) -> (u16, &'static str) {
        match self {
            ApiError::BadRequest(_) => (400, "bad_request"),
            ApiError::NotFound(_) => (404, "not_found"),
            ApiError::MethodNotAllowed(_) => (405, "method_not_allowed"),
            ApiError::Forbidden(_) => (403, "forbidden"),
            ApiError::Conflict(_) => (409, "conflict"),
            ApiError::TooLarge(_) => (413, "too_large"),
            ApiError::Internal(_) => (500, "internal"),
            ApiError::NoWorkerAddress(_) => (422, "no_worker_address"),
            ApiError::Chain(ChainError::Refused { .. }) => (409, "chain_refused"),
            ApiError::Market(MarketError::Dwh { .. }) => (502, "dwh"),
            ApiError::Chain(_) | ApiError::Market(_) => (502, "chain"),
            ApiError::Worker(ClientError::Refused(e)) => task_error_code(e),
            ApiError::Worker(ClientError::Receipt(_)) => (502, "receipt_invalid"),
            ApiError::Worker(ClientError::Timeout(_)) => (504, "worker_timeout"),
            ApiError::Worker(ClientError::Integrity { .. }) => (502, "worker_output_corrupt"),
            ApiError::Worker(_) => (502, "worker_unreachable"),
            ApiError::Rendezvous(sonm_rendezvous::ClientError::NotFound(_)) => {
                (404, "worker_not_published")
            }
            ApiError::Rendezvous(_) => (502, "rendezvous"),
            ApiError::Gate(GateError::NoMainChain) => (422, "no_main_chain"),
            ApiError::Gate(GateError::Refused { .. }) => (409, "chain_refused"),
            ApiError::Gate(GateError::Chain { .. }) => (502, "chain"),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.status_code().1.to_owned(),
            message: self.to_string(),
        }
    }
}
