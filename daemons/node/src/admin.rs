//! Worker admin for suppliers: `/v1/worker/...` relays to a worker's admin service over QUIC
//! (`sonm_worker::admin`, its second ALPN). The node must hold the worker's own key or its
//! confirmed master's: the worker decides, by the QUIC identity, and refuses anyone else
//! (a 403 here). Master confirm (`confirmWorker`) is a chain call from the node's key.
//!
//! Which worker: `?worker=0x…` (default: the node's own address, a node run with the worker's
//! key); where: `?worker_addr=host:port`, else `[workers]`, else the rendezvous.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sonm_http_query::Params;
use sonm_market::Address;
use sonm_worker::admin::{AdminClient, AdminClientError, AdminError, AdminRequest, AdminResponse};
use sonm_worker::client::ClientError;
use sonm_worker::config::PlanConfig;
use sonm_worker::state::PlanRecord;

use crate::api::AskView;
use crate::block_on;
use crate::error::ApiError;
use crate::node::Node;

/// The admin routes (listed in `api::ROUTES` and documented by [`openapi_paths`]).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/worker/status"),
    ("get", "/v1/worker/inventory"),
    ("get", "/v1/worker/devices"),
    ("get", "/v1/worker/plans"),
    ("post", "/v1/worker/plans"),
    ("delete", "/v1/worker/plans/{id}"),
    ("post", "/v1/worker/asks/replace"),
    ("post", "/v1/worker/maintenance"),
    ("post", "/v1/worker/confirm"),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Maintenance {
    on: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    worker: Address,
}

/// A plan as the API shows it.
#[derive(Debug, Serialize)]
pub struct PlanView {
    pub id: u64,
    pub name: String,
    pub cpu_cores: u32,
    pub ram_bytes: u64,
    pub storage_bytes: u64,
    pub gpus: u32,
    /// SNM wei per second (decimal string).
    pub price: String,
    pub duration: u64,
    /// Its active ask on chain, if placed.
    pub ask: Option<AskView>,
    /// Its ask signed off chain and published to the DWH, if it has one.
    pub signed_ask: Option<SignedAskView>,
    pub deal: Option<u64>,
    pub removing: bool,
}

/// A plan's signed ask: what customers buy it by, and until when.
#[derive(Debug, Clone, Serialize)]
pub struct SignedAskView {
    pub digest: alloy::primitives::B256,
    /// Unique to this ask across its versions (each signing moves the expiry, not the nonce).
    pub nonce: u64,
    /// The last unix second at which the chain takes this version.
    pub expiry: u64,
}

impl From<&sonm_worker::state::SignedAsk> for SignedAskView {
    fn from(a: &sonm_worker::state::SignedAsk) -> Self {
        SignedAskView {
            digest: a.digest,
            nonce: a.nonce,
            expiry: a.expiry,
        }
    }
}

impl From<&PlanRecord> for PlanView {
    fn from(p: &PlanRecord) -> Self {
        PlanView {
            id: p.id,
            name: p.spec.name.clone(),
            cpu_cores: p.spec.slice.cpu_cores,
            ram_bytes: p.spec.slice.ram_bytes,
            storage_bytes: p.spec.slice.storage_bytes,
            gpus: p.spec.slice.gpus,
            price: p.spec.price.to_string(),
            duration: p.spec.duration,
            ask: p.ask.as_ref().map(AskView::from),
            signed_ask: None,
            deal: p.deal,
            removing: p.removing,
        }
    }
}

fn refused(e: AdminClientError) -> ApiError {
    match e {
        AdminClientError::Refused(e @ AdminError::NotAdmin { .. }) => {
            ApiError::Forbidden(e.to_string())
        }
        AdminClientError::Refused(e @ AdminError::UnknownPlan(_)) => {
            ApiError::NotFound(e.to_string())
        }
        AdminClientError::Refused(e @ AdminError::PlanHasDeal { .. }) => {
            ApiError::Conflict(e.to_string())
        }
        AdminClientError::Refused(e @ AdminError::BadPlan(_)) => {
            ApiError::BadRequest(e.to_string())
        }
        AdminClientError::Refused(e @ AdminError::Internal(_)) => {
            ApiError::Worker(ClientError::Unexpected(e.to_string()))
        }
        AdminClientError::Net(e) => ApiError::Worker(ClientError::Net(e)),
        AdminClientError::Unexpected(m) => ApiError::Worker(ClientError::Unexpected(m)),
    }
}

fn unexpected(r: AdminResponse) -> ApiError {
    ApiError::Worker(ClientError::Unexpected(format!("{r:?}")))
}

/// One request to the worker's admin service.
fn call(
    node: &Node,
    worker: Address,
    addr: Option<SocketAddr>,
    req: &AdminRequest,
) -> Result<AdminResponse, ApiError> {
    let conn = node.admin_connect(worker, addr)?;
    let client = AdminClient::from_connection(conn, worker).map_err(refused)?;
    let r = block_on(client.call(req)).map_err(refused);
    client.close();
    r
}

/// Answers `/v1/worker/...` (`rest`: the segments after `worker`).
pub(crate) fn route(
    node: &Node,
    method: &str,
    rest: &[&str],
    mut params: Params,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let path = format!("/v1/worker/{}", rest.join("/"));
    let allowed = |allowed: &str| {
        if method == allowed {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed(format!(
                "{path} takes {}",
                allowed.to_uppercase()
            )))
        }
    };
    let target = |params: &mut Params| -> Result<(Address, Option<SocketAddr>), ApiError> {
        let worker = params
            .take("worker", |v| {
                v.parse::<Address>().map_err(|e| e.to_string())
            })?
            .unwrap_or_else(|| node.address());
        let addr = params.take("worker_addr", |v| {
            v.parse::<SocketAddr>().map_err(|e| e.to_string())
        })?;
        Ok((worker, addr))
    };
    fn json(v: &impl Serialize) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
    }
    match rest {
        ["status"] => {
            allowed("get")?;
            let (w, a) = target(&mut params)?;
            params.finish()?;
            match call(node, w, a, &AdminRequest::Status)? {
                AdminResponse::Status(status) => Ok(json(&status)),
                r => Err(unexpected(r)),
            }
        }
        ["inventory"] => {
            allowed("get")?;
            let (w, a) = target(&mut params)?;
            params.finish()?;
            match call(node, w, a, &AdminRequest::Inventory)? {
                AdminResponse::Inventory(v) => Ok(serde_json::json!({
                    "inventory": v.inventory,
                    "benchmarks": v.benchmarks.to_string(),
                    "benchmark_values": v.benchmarks.as_array().to_vec(),
                    "measured_at": v.measured_at,
                })),
                r => Err(unexpected(r)),
            }
        }
        ["devices"] => {
            allowed("get")?;
            let (w, a) = target(&mut params)?;
            params.finish()?;
            match call(node, w, a, &AdminRequest::Devices)? {
                AdminResponse::Devices(gpus) => Ok(serde_json::json!({ "gpus": gpus })),
                r => Err(unexpected(r)),
            }
        }
        ["plans"] if method == "post" => {
            let (w, a) = target(&mut params)?;
            params.finish()?;
            let plan: PlanConfig = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
            match call(node, w, a, &AdminRequest::AddPlan(plan))? {
                AdminResponse::PlanAdded(p) => Ok(json(&PlanView::from(&p))),
                r => Err(unexpected(r)),
            }
        }
        ["plans"] => {
            if method != "get" {
                return Err(ApiError::MethodNotAllowed(format!(
                    "{path} takes GET or POST"
                )));
            }
            let (w, a) = target(&mut params)?;
            params.finish()?;
            let plans = match call(node, w, a, &AdminRequest::Plans)? {
                AdminResponse::Plans(plans) => plans,
                r => return Err(unexpected(r)),
            };
            // A worker that predates the request answers an error: no signed asks shown.
            let signed = match call(node, w, a, &AdminRequest::SignedAsks) {
                Ok(AdminResponse::SignedAsks(asks)) => asks,
                other => {
                    tracing::debug!(?other, "no signed asks from the worker");
                    Vec::new()
                }
            };
            let views: Vec<PlanView> = plans
                .iter()
                .map(|p| PlanView {
                    signed_ask: signed
                        .iter()
                        .find(|s| s.plan == p.id)
                        .map(SignedAskView::from),
                    ..PlanView::from(p)
                })
                .collect();
            Ok(json(&views))
        }
        ["plans", id] => {
            allowed("delete")?;
            let id: u64 = id
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("plan id {id:?} is not a number")))?;
            let (w, a) = target(&mut params)?;
            params.finish()?;
            match call(node, w, a, &AdminRequest::RemovePlan(id))? {
                AdminResponse::PlanRemoved(id) => {
                    Ok(serde_json::json!({ "plan": id, "removed": true }))
                }
                r => Err(unexpected(r)),
            }
        }
        ["asks", "replace"] => {
            allowed("post")?;
            let (w, a) = target(&mut params)?;
            params.finish()?;
            match call(node, w, a, &AdminRequest::ReplaceAsks)? {
                AdminResponse::AsksReplaced(plans) => Ok(serde_json::json!({ "replaced": plans })),
                r => Err(unexpected(r)),
            }
        }
        ["maintenance"] => {
            allowed("post")?;
            let (w, a) = target(&mut params)?;
            params.finish()?;
            let req: Maintenance = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
            match call(node, w, a, &AdminRequest::Maintenance { on: req.on })? {
                AdminResponse::Maintenance(status) => Ok(json(&status)),
                r => Err(unexpected(r)),
            }
        }
        ["confirm"] => {
            allowed("post")?;
            params.finish()?;
            let req: Confirm = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
            node.confirm_worker(req.worker)?;
            Ok(serde_json::json!({ "worker": req.worker, "master": node.address() }))
        }
        _ => Err(ApiError::NotFound(format!("no route {path}"))),
    }
}

impl Node {
    /// Confirms `worker` as one of the node's workers on chain (`confirmWorker`), after
    /// checking the worker asked for it (a clear 409 rather than a reverted transaction).
    pub fn confirm_worker(&self, worker: Address) -> Result<(), ApiError> {
        if block_on(self.chain().master_of(worker))? == self.address() {
            return Ok(());
        }
        self.write(|| Ok(block_on(self.chain().confirm_worker(worker))?))?;
        tracing::info!(%worker, "confirmed as this node's worker");
        Ok(())
    }
}

/// The admin paths of the OpenAPI document (merged by `api::openapi`).
pub fn openapi_paths() -> serde_json::Value {
    use serde_json::json;
    let error = json!({ "description": "error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    let ok = |description: &str| {
        json!({
            "200": { "description": description, "content": { "application/json": {} } },
            "default": error.clone(),
        })
    };
    let q = |name: &str, description: &str| {
        json!({ "name": name, "in": "query", "required": false,
                "description": description, "schema": { "type": "string" } })
    };
    let target = json!([
        q(
            "worker",
            "the worker's address (default: the node's own, a node run with the worker's key)"
        ),
        q(
            "worker_addr",
            "host:port of the worker's QUIC service, if the config's [workers] does not know it"
        ),
    ]);
    let mut with_id = target.as_array().cloned().unwrap_or_default();
    with_id.push(
        json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }),
    );
    let plan_schema = json!({ "type": "object", "required": ["name", "price"], "properties": {
        "name": { "type": "string", "description": "stored as admin:<name>" },
        "cpu_cores": { "type": "integer" }, "ram": { "type": "string", "description": "e.g. 2GiB" },
        "storage": { "type": "string" }, "gpus": { "type": "integer" },
        "price": { "type": "integer", "description": "SNM wei per second" },
        "duration": { "type": "integer", "description": "seconds; 0 = spot" },
        "netflags": { "type": "string" },
        "identity_level": { "type": "string", "enum": ["anonymous", "registered", "identified", "professional"] } } });
    json!({
        "/v1/worker/status": { "get": { "summary": "The worker's address, master, uptime, running tasks and open deals (admin: the worker's key or its confirmed master)", "parameters": target.clone(), "responses": ok("{address, master, configured_master, uptime_s, running_tasks, open_deals, plans, rendezvous_connected, maintenance, forward_deals: [{deal, end}]}") } },
        "/v1/worker/inventory": { "get": { "summary": "The worker's inventory and benchmark vector", "parameters": target.clone(), "responses": ok("{inventory, benchmarks, benchmark_values, measured_at}") } },
        "/v1/worker/devices": { "get": { "summary": "The worker's GPUs as NVML reports them now (none without NVML)", "parameters": target.clone(), "responses": ok("{gpus: [{index, name, uuid, memory_bytes}]}") } },
        "/v1/worker/plans": {
            "get": { "summary": "The worker's ask plans and their asks (placed: ask; signed off chain: signed_ask {digest, nonce, expiry})", "parameters": target.clone(), "responses": ok("[plan]") },
            "post": { "summary": "Add an ask plan (its ask is placed at once)", "parameters": target.clone(),
                      "requestBody": { "required": true, "content": { "application/json": { "schema": plan_schema } } },
                      "responses": ok("the plan") } },
        "/v1/worker/plans/{id}": { "delete": { "summary": "Remove a plan and cancel its ask (refused, 409, while the plan has a deal)", "parameters": with_id, "responses": ok("{plan, removed}") } },
        "/v1/worker/asks/replace": { "post": { "summary": "Withdraw and place again the asks of the plans without a deal", "parameters": target.clone(), "responses": ok("{replaced: [plan id]}") } },
        "/v1/worker/maintenance": { "post": { "summary": "Maintenance on: cancel every ask and place none, bill and close the spot deals (their tasks stop), let the forward deals run to their end (the chain refuses an early close); off: place the plans' asks again. Kept across worker restarts",
            "parameters": target,
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["on"], "properties": { "on": { "type": "boolean" } } } } } },
            "responses": ok("the status after the switch (as /v1/worker/status)") } },
        "/v1/worker/confirm": { "post": { "summary": "Confirm a worker that registered under the node's key as its master (Market.confirmWorker)",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["worker"], "properties": { "worker": { "type": "string" } } } } } },
            "responses": ok("{worker, master}") } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_routes_are_api_routes() {
        for route in ROUTES {
            assert!(
                crate::api::ROUTES.contains(route),
                "{route:?} not in api::ROUTES"
            );
        }
        let documented = openapi_paths();
        for (method, path) in ROUTES {
            assert!(
                documented[path][method].is_object(),
                "{method} {path} undocumented"
            );
        }
    }
}
