//! The Gates' routes: `POST /v1/token/deposit`, `POST /v1/token/withdraw` `{amount}` (SNM
//! wei) and `GET /v1/token/transfers`. The work is in `crate::gates`.

use serde::Deserialize;
use serde_json::{Value, json};
use sonm_http_query::Params;

use super::{Amount, Answer, body_json};
use crate::error::ApiError;
use crate::node::Node;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GateAmount {
    /// SNM wei.
    amount: Amount,
}

/// `op` is `deposit`, `withdraw` or `transfers`.
pub(super) fn route(
    node: &Node,
    method: &str,
    op: &str,
    params: Params,
    body: &[u8],
) -> Result<Answer, ApiError> {
    let want = if op == "transfers" { "get" } else { "post" };
    if method != want {
        return Err(ApiError::MethodNotAllowed(format!(
            "/v1/token/{op} takes {}",
            want.to_uppercase()
        )));
    }
    params.finish()?;
    match op {
        "transfers" => {
            let transfers = node.gate_transfers()?;
            Ok(Answer::json(200, &json!({ "transfers": transfers })))
        }
        _ => {
            let req: GateAmount = body_json(body)?;
            let amount = req.amount.u256("amount")?;
            let view = if op == "deposit" {
                node.deposit(amount)?
            } else {
                node.withdraw(amount)?
            };
            Ok(Answer::json(200, &view))
        }
    }
}

/// The paths above, for the OpenAPI document.
pub(super) fn openapi_paths() -> Value {
    let error = json!({ "description": "error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    let ok = |description: &str| {
        json!({
            "200": { "description": description, "content": { "application/json": {} } },
            "default": error.clone(),
        })
    };
    let amount = json!({ "required": true, "description": "the amount",
        "content": { "application/json": { "schema": { "type": "object", "required": ["amount"], "properties": {
            "amount": { "type": "string", "description": "SNM wei, above 0 and at most 2^96 - 1 (the Gate's cap)" } } } } } });
    let transfer = "{direction: deposit|withdraw, src_chain, dst_chain, nonce, transfer_id, to, amount, tx, block, paid}";
    json!({
        "/v1/token/deposit": { "post": {
            "summary": "Move SNM from the main chain to the node's address on the SONM chain: approve and Gate.lock on the main chain ([main_chain] must be configured: else 422 no_main_chain); gate keepers pay it on the SONM chain",
            "requestBody": amount.clone(),
            "responses": ok(&format!("the lock: {transfer}")) } },
        "/v1/token/withdraw": { "post": {
            "summary": "Move SNM from the SONM chain to the node's address on the main chain: approve and Gate.lock on the SONM chain; gate keepers pay it on the main chain",
            "requestBody": amount,
            "responses": ok(&format!("the lock: {transfer}")) } },
        "/v1/token/transfers": { "get": {
            "summary": "The node's locks on both Gates, each with whether the other Gate has paid it (its paid(transferId))",
            "responses": ok(&format!("{{transfers: [{transfer}]}}")) } },
    })
}
