//! `GET /v1/deals/{id}/tasks/{task}/logs?stdout_offset=&stderr_offset=`: what a task printed
//! from those byte offsets (live while it runs), base64, with the offsets to ask from next and
//! whether it has ended. `sonm task logs -f` polls it until `finished` and nothing new.
//!
//! `GET /v1/transfers/{token}`: bytes sent and the total of the upload of a start request that
//! named `progress: token`, while it runs (the CLI's progress bar polls it).

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sonm_http_query::Params;

use super::{Answer, from_str, parse_id};
use crate::error::ApiError;
use crate::node::Node;

/// A progress token: short and plain, since it is a map key and a path segment.
pub(super) fn check_token(token: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "progress: 1 to 64 characters of A-Za-z0-9_-".into(),
        ))
    }
}

pub(super) fn progress(
    node: &Node,
    method: &str,
    token: &str,
    params: Params,
) -> Result<Answer, ApiError> {
    if method != "get" {
        return Err(ApiError::MethodNotAllowed(
            "/v1/transfers/{token} takes GET".into(),
        ));
    }
    params.finish()?;
    check_token(token)?;
    let (done, total) = node.transfer_progress(token).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no upload in flight under {token:?} (not started, or over)"
        ))
    })?;
    Ok(Answer::json(
        200,
        &json!({ "token": token, "done": done, "total": total }),
    ))
}

pub(super) fn logs(
    node: &Node,
    method: &str,
    deal: &str,
    task: &str,
    mut params: Params,
) -> Result<Answer, ApiError> {
    if method != "get" {
        return Err(ApiError::MethodNotAllowed(
            "/v1/deals/{id}/tasks/{task}/logs takes GET".into(),
        ));
    }
    let addr = params.take("worker_addr", from_str::<SocketAddr>)?;
    let stdout_offset = params.take("stdout_offset", from_str::<u64>)?.unwrap_or(0);
    let stderr_offset = params.take("stderr_offset", from_str::<u64>)?.unwrap_or(0);
    params.finish()?;
    let (deal, task) = (parse_id("deal id", deal)?, parse_id("task id", task)?);
    let chunk = node.task_logs(deal, task, stdout_offset, stderr_offset, addr)?;
    Ok(Answer::json(
        200,
        &json!({
            "deal": deal,
            "task": task,
            "stdout": B64.encode(&chunk.stdout),
            "stderr": B64.encode(&chunk.stderr),
            "stdout_offset": stdout_offset + chunk.stdout.len() as u64,
            "stderr_offset": stderr_offset + chunk.stderr.len() as u64,
            "finished": chunk.finished,
        }),
    ))
}

pub(super) fn openapi_paths() -> Value {
    let error = json!({ "description": "error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    let param = |name: &str, inn: &str, required: bool, ty: &str, description: &str| {
        json!({ "name": name, "in": inn, "required": required, "description": description,
            "schema": { "type": ty } })
    };
    json!({
        "/v1/deals/{id}/tasks/{task}/logs": { "get": {
            "summary": "What a task printed from the given byte offsets, read live while it runs (at most 256 KiB of each stream per call); poll with the returned offsets until finished is true and nothing new came",
            "parameters": [
                param("id", "path", true, "integer", "the deal"),
                param("task", "path", true, "integer", "the task"),
                param("stdout_offset", "query", false, "integer", "byte offset into stdout (default 0)"),
                param("stderr_offset", "query", false, "integer", "byte offset into stderr (default 0)"),
                param("worker_addr", "query", false, "string", "host:port of the supplier's task service, if the node's config does not know it"),
            ],
            "responses": {
                "200": { "description": "{deal, task, stdout (base64), stderr (base64), stdout_offset, stderr_offset (next), finished}", "content": { "application/json": {} } },
                "default": error.clone(),
            } } },
        "/v1/transfers/{token}": { "get": {
            "summary": "Bytes sent to the worker and the total of the upload of a start request that named this progress token, while it runs (total 0: nothing staged yet, or a job small enough for one message)",
            "parameters": [param("token", "path", true, "string", "the start request's progress token")],
            "responses": {
                "200": { "description": "{token, done, total}", "content": { "application/json": {} } },
                "default": error,
            } } },
    })
}
