//! The HTTP/JSON API on localhost, over `tiny_http` (the same small blocking server the DWH
//! uses, so the project has one HTTP server crate: a handful of worker threads, each taking
//! requests off one listener; the node's work is blocking RPC and QUIC calls anyway, so an async
//! server would buy nothing). Routing and parsing live in [`Api::handle`], free of sockets.
//!
//! Every error is `{"code", "message"}` with a 4xx for bad input (see [`ApiError`]); the OpenAPI
//! document is served at [`OPENAPI_PATH`] and lists exactly [`ROUTES`] (a test holds them
//! together).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sonm_market::{Address, Benchmarks, DealId, MAX_PRICE, NetFlags, Order};
use sonm_wasm_runtime::{JobSpec, ModuleSource};
use sonm_worker::proto::{Exit, File, StartWasm, TaskLimits, TaskResult, TaskStatus};

use sonm_http_query::Params;

use crate::error::ApiError;
use crate::market::AskQuery;
use crate::node::{Node, read_input_dir};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Largest request body (a module and its inputs travel base64-encoded in one request).
pub const MAX_BODY: usize = 24 << 20;

/// Every route: method and path template. The OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("get", "/v1/balance"),
    ("get", "/v1/orders"),
    ("post", "/v1/deals/quick-buy"),
    ("get", "/v1/deals/{id}"),
    ("post", "/v1/deals/{id}/close"),
    ("post", "/v1/deals/{id}/tasks"),
    ("get", "/v1/deals/{id}/tasks/{task}"),
    ("get", "/v1/deals/{id}/tasks/{task}/result"),
    ("post", "/v1/deals/{id}/tasks/{task}/stop"),
];

/// An answer: status and JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    fn json(status: u16, value: &impl Serialize) -> Answer {
        match serde_json::to_string(value) {
            Ok(body) => Answer { status, body },
            Err(e) => Answer::error(&ApiError::Internal(format!(
                "cannot encode the answer: {e}"
            ))),
        }
    }

    fn error(e: &ApiError) -> Answer {
        let (status, _) = e.status_code();
        Answer {
            status,
            body: serde_json::to_string(&e.body()).unwrap_or_default(),
        }
    }
}

/// An ask as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AskView {
    pub id: u64,
    pub supplier: Address,
    /// SNM wei per second (decimal string).
    pub price: String,
    pub duration: u64,
    pub netflags: String,
    pub identity_level: sonm_market::IdentityLevel,
    pub counterparty: Option<Address>,
    /// Human form, e.g. `cpu-cores=1 ram-size=128MiB`.
    pub benchmarks: String,
    /// The 13 values in DESIGN.md's order.
    pub benchmark_values: Vec<u64>,
}

impl From<&Order> for AskView {
    fn from(o: &Order) -> Self {
        AskView {
            id: o.id,
            supplier: o.author,
            price: o.price.to_string(),
            duration: o.duration,
            netflags: o.netflags.to_string(),
            identity_level: o.identity_level,
            counterparty: o.counterparty,
            benchmarks: o.benchmarks.to_string(),
            benchmark_values: o.benchmarks.as_array().to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickBuy {
    ask_id: u64,
    #[serde(default)]
    duration: u64,
    /// Where the supplier's task service is; remembered for the deal's tasks.
    #[serde(default)]
    worker_addr: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Close {
    #[serde(default)]
    blacklist: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum ModuleIn {
    /// The module's bytes, base64.
    Base64(String),
    /// A file on the node's machine.
    Path(PathBuf),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputIn {
    path: String,
    base64: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsIn {
    memory_bytes: Option<u64>,
    fuel: Option<u64>,
    wall_time_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartTask {
    /// A sonm-wasm-runtime job spec file on the node's machine (TOML, or JSON by extension):
    /// its module, args, input_dir and limits. Exclusive with `module`.
    #[serde(default)]
    job_spec: Option<PathBuf>,
    #[serde(default)]
    module: Option<ModuleIn>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    inputs: Vec<InputIn>,
    /// A directory on the node's machine whose files become inputs.
    #[serde(default)]
    input_dir: Option<PathBuf>,
    #[serde(default)]
    limits: LimitsIn,
    #[serde(default)]
    worker_addr: Option<SocketAddr>,
}

#[derive(Debug, Serialize)]
struct ExitView {
    /// `exit` or `trapped`.
    kind: &'static str,
    code: Option<i32>,
    trap: Option<String>,
}

fn exit_view(e: &Exit) -> ExitView {
    match e {
        Exit::Code(c) => ExitView {
            kind: "exit",
            code: Some(*c),
            trap: None,
        },
        Exit::Trapped(t) => ExitView {
            kind: "trapped",
            code: None,
            trap: Some(t.clone()),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    alloy::primitives::hex::encode(bytes)
}

fn result_json(r: &TaskResult) -> serde_json::Value {
    let rc = &r.receipt.receipt;
    let outputs: Vec<_> = r
        .outputs
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path,
                "size": f.bytes.len(),
                "base64": B64.encode(&f.bytes),
            })
        })
        .collect();
    serde_json::json!({
        "deal": r.deal,
        "task": r.task,
        "exit": exit_view(&r.exit),
        "stdout": String::from_utf8_lossy(&r.stdout),
        "stderr": String::from_utf8_lossy(&r.stderr),
        "outputs": outputs,
        "receipt": {
            "verified": true,
            "worker": rc.worker,
            "chain_id": rc.chain_id,
            "deal": rc.deal,
            "task": rc.task,
            "module_sha256": hex(&rc.module_sha256),
            "fuel": rc.fuel,
            "wall_time_us": rc.wall_time_us,
            "trapped": rc.trapped,
            "exit_code": rc.exit_code,
            "outputs_sha256": hex(&rc.outputs_sha256),
            "signature": format!("0x{}", hex(&r.receipt.signature)),
        },
    })
}

fn status_json(deal: DealId, task: u64, s: &TaskStatus) -> serde_json::Value {
    let (state, exit, error) = match s {
        TaskStatus::Running => ("running", None, None),
        TaskStatus::Finished(e) => ("finished", Some(exit_view(e)), None),
        TaskStatus::Failed(m) => ("failed", None, Some(m.clone())),
    };
    serde_json::json!({ "deal": deal, "task": task, "status": state, "exit": exit, "error": error })
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn from_str<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| e.to_string())
}

fn parse_id(what: &str, v: &str) -> Result<u64, ApiError> {
    v.parse()
        .map_err(|_| bad(format!("{what} {v:?} is not a number")))
}

/// The request body: a JSON object (an empty body counts as `{}`).
fn body_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_value(serde_json::json!({}))
            .map_err(|e| bad(format!("request body: {e}")));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("request body: {e}")))?;
    if !value.is_object() {
        return Err(bad("request body: expected a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| bad(format!("request body: {e}")))
}

/// The API over a node.
#[derive(Debug)]
pub struct Api<'n> {
    pub node: &'n Node,
}

impl Api<'_> {
    /// Answers one request (`url` with its query string).
    pub fn handle(&self, method: &str, url: &str, body: &[u8]) -> Answer {
        match self.route(method, url, body) {
            Ok(a) => a,
            Err(e) => {
                let (status, code) = e.status_code();
                if status >= 500 {
                    tracing::warn!(%method, %url, code, error = %e, "request failed");
                } else {
                    tracing::debug!(%method, %url, code, error = %e, "request refused");
                }
                Answer::error(&e)
            }
        }
    }

    fn route(&self, method: &str, url: &str, body: &[u8]) -> Result<Answer, ApiError> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let mut params = Params::parse(query)?;
        let segments: Vec<&str> = path
            .trim_end_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let method = method.to_ascii_lowercase();
        let only = |allowed: &str| {
            if method == allowed {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed(format!(
                    "{path} takes {}",
                    allowed.to_uppercase()
                )))
            }
        };
        let worker_addr = |params: &mut Params| params.take("worker_addr", from_str::<SocketAddr>);
        let node = self.node;
        match segments.as_slice() {
            ["openapi.json"] => {
                only("get")?;
                params.finish()?;
                Ok(Answer::json(200, &openapi()))
            }
            ["v1", "balance"] => {
                only("get")?;
                params.finish()?;
                Ok(Answer::json(200, &node.balance()?))
            }
            ["v1", "orders"] => {
                only("get")?;
                let kind = params.take("type", |v| Ok(v.to_owned()))?;
                if kind.as_deref().unwrap_or("ask") != "ask" {
                    return Err(bad("only type=ask is supported so far"));
                }
                let mut q = AskQuery::default();
                if let Some(b) = params.take("benchmarks", from_str::<Benchmarks>)? {
                    q.benchmarks = b;
                }
                if let Some(p) = params.take("max_price", from_str::<u128>)? {
                    if p > MAX_PRICE {
                        return Err(bad(format!(
                            "max_price {p} is over the chain's {MAX_PRICE}"
                        )));
                    }
                    q.max_price = p;
                }
                if let Some(d) = params.take("duration", from_str::<u64>)? {
                    q.duration = d;
                }
                if let Some(n) = params.take("netflags", from_str::<NetFlags>)? {
                    q.netflags = n;
                }
                q.supplier = params.take("supplier", from_str::<Address>)?;
                if let Some(l) = params.take("limit", from_str::<usize>)? {
                    q.limit = l.clamp(1, 1000);
                }
                params.finish()?;
                let asks: Vec<AskView> = node.find_asks(&q)?.iter().map(AskView::from).collect();
                Ok(Answer::json(200, &serde_json::json!({ "orders": asks })))
            }
            ["v1", "deals", "quick-buy"] => {
                only("post")?;
                params.finish()?;
                let req: QuickBuy = body_json(body)?;
                let deal = node.quick_buy(req.ask_id, req.duration)?;
                if let Some(addr) = req.worker_addr {
                    node.learn_worker(deal.supplier, addr);
                }
                Ok(Answer::json(200, &deal))
            }
            ["v1", "deals", id] => {
                only("get")?;
                params.finish()?;
                Ok(Answer::json(200, &node.deal(parse_id("deal id", id)?)?))
            }
            ["v1", "deals", id, "close"] => {
                only("post")?;
                params.finish()?;
                let id = parse_id("deal id", id)?;
                let req: Close = body_json(body)?;
                Ok(Answer::json(200, &node.close_deal(id, req.blacklist)?))
            }
            ["v1", "deals", id, "tasks"] => {
                only("post")?;
                params.finish()?;
                let deal = parse_id("deal id", id)?;
                let req: StartTask = body_json(body)?;
                let worker_addr = req.worker_addr;
                let start = start_wasm(deal, req)?;
                let task = node.start_task(start, worker_addr)?;
                Ok(Answer::json(
                    200,
                    &serde_json::json!({ "deal": deal, "task": task }),
                ))
            }
            ["v1", "deals", id, "tasks", task] => {
                only("get")?;
                let addr = worker_addr(&mut params)?;
                params.finish()?;
                let (deal, task) = (parse_id("deal id", id)?, parse_id("task id", task)?);
                let status = node.task_status(deal, task, addr)?;
                Ok(Answer::json(200, &status_json(deal, task, &status)))
            }
            ["v1", "deals", id, "tasks", task, "result"] => {
                only("get")?;
                let addr = worker_addr(&mut params)?;
                params.finish()?;
                let (deal, task) = (parse_id("deal id", id)?, parse_id("task id", task)?);
                let result = node.task_result(deal, task, addr)?;
                Ok(Answer::json(200, &result_json(&result)))
            }
            ["v1", "deals", id, "tasks", task, "stop"] => {
                only("post")?;
                let addr = worker_addr(&mut params)?;
                params.finish()?;
                let (deal, task) = (parse_id("deal id", id)?, parse_id("task id", task)?);
                node.stop_task(deal, task, addr)?;
                Ok(Answer::json(
                    200,
                    &serde_json::json!({ "deal": deal, "task": task, "stopping": true }),
                ))
            }
            _ => Err(ApiError::NotFound(format!(
                "no route {path} (see {OPENAPI_PATH})"
            ))),
        }
    }

    /// Serves requests on `server` with `threads` threads until `stop` is set.
    pub fn serve(&self, server: &tiny_http::Server, threads: usize, stop: &AtomicBool) {
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(Duration::from_millis(100)) {
                            Ok(Some(request)) => self.respond(request),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "accepting a request failed");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                });
            }
        });
    }

    fn respond(&self, mut request: tiny_http::Request) {
        let mut body = Vec::new();
        let read = request
            .as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body);
        let answer = match read {
            Err(e) => Answer::error(&bad(format!("reading the request body: {e}"))),
            Ok(_) if body.len() > MAX_BODY => Answer::error(&ApiError::TooLarge(MAX_BODY)),
            Ok(_) => {
                let method = request.method().as_str().to_owned();
                let url = request.url().to_owned();
                self.handle(&method, &url, &body)
            }
        };
        let mut response =
            tiny_http::Response::from_string(answer.body).with_status_code(answer.status);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        {
            response = response.with_header(h);
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "the client went away");
        }
    }
}

/// Builds the worker request from the API's task request (reading the files it names).
fn start_wasm(deal: DealId, req: StartTask) -> Result<StartWasm, ApiError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| bad(format!("reading module {}: {e}", p.display())))
    };
    let mut args = req.args;
    let mut limits = TaskLimits {
        memory_bytes: req.limits.memory_bytes,
        fuel: req.limits.fuel,
        wall_time_ms: req.limits.wall_time_ms,
    };
    let mut input_dir = req.input_dir;
    let module = match (req.job_spec, req.module) {
        (Some(_), Some(_)) => return Err(bad("give either job_spec or module, not both")),
        (None, None) => return Err(bad("a task needs a module (or a job_spec)")),
        (None, Some(ModuleIn::Base64(b))) => B64
            .decode(b.as_bytes())
            .map_err(|e| bad(format!("module is not base64: {e}")))?,
        (None, Some(ModuleIn::Path(p))) => read(&p)?,
        (Some(spec_path), None) => {
            let spec = JobSpec::from_file(&spec_path)
                .map_err(|e| bad(format!("job spec {}: {e}", spec_path.display())))?;
            if args.is_empty() {
                args = spec.args;
            }
            if input_dir.is_none() {
                input_dir = spec.input_dir;
            }
            limits = TaskLimits {
                memory_bytes: limits.memory_bytes.or(Some(spec.limits.memory_bytes)),
                fuel: limits.fuel.or(spec.limits.fuel),
                wall_time_ms: limits.wall_time_ms.or(Some(spec.limits.wall_time_ms)),
            };
            match spec.module {
                ModuleSource::Path(p) => read(&p)?,
                ModuleSource::Bytes(b) => b,
                ModuleSource::Sha256(_) => {
                    return Err(bad(
                        "a job spec for a worker needs the module's path or bytes",
                    ));
                }
            }
        }
    };
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for i in req.inputs {
        let bytes = B64
            .decode(i.base64.as_bytes())
            .map_err(|e| bad(format!("input {}: not base64: {e}", i.path)))?;
        inputs.push(File {
            path: i.path,
            bytes,
        });
    }
    if let Some(dir) = input_dir {
        inputs.extend(read_input_dir(&dir)?);
    }
    Ok(StartWasm {
        deal,
        module,
        args,
        inputs,
        limits,
    })
}

/// The OpenAPI 3.0 document of this API.
pub fn openapi() -> serde_json::Value {
    use serde_json::json;
    let query = |name: &str, description: &str| {
        json!({ "name": name, "in": "query", "required": false,
                "description": description, "schema": { "type": "string" } })
    };
    let path_param = |name: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "integer" } });
    let error = json!({ "description": "error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    let ok = |description: &str| {
        json!({
            "200": { "description": description, "content": { "application/json": {} } },
            "default": error.clone(),
        })
    };
    let body = |description: &str, schema: serde_json::Value| {
        json!({ "required": true, "description": description,
                "content": { "application/json": { "schema": schema } } })
    };
    let worker_addr = query(
        "worker_addr",
        "host:port of the supplier's task service, if the node's config does not know it",
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "sonm-node",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The customer's local SONM node. Amounts are SNM wei as decimal strings; prices are wei per second. Errors: {code, message} with a 4xx for bad input."
        },
        "paths": {
            "/openapi.json": { "get": { "summary": "This document", "responses": ok("OpenAPI 3.0") } },
            "/v1/balance": { "get": { "summary": "SNM and gas balances of the node's account, and the Market's allowance", "responses": ok("{address, snm, eth, market_allowance}") } },
            "/v1/orders": { "get": {
                "summary": "Active asks that match a spec, cheapest first",
                "parameters": [
                    query("type", "ask (the only type so far)"),
                    query("benchmarks", "e.g. \"cpu-cores=2 ram-size=1GiB\" (sonm-market's human form)"),
                    query("max_price", "highest price, SNM wei per second"),
                    query("duration", "seconds; 0 (default) = spot"),
                    query("netflags", "e.g. outbound,inbound"),
                    query("supplier", "only this supplier's asks"),
                    query("limit", "at most this many (default 100)"),
                ],
                "responses": ok("{orders: [Ask]}") } },
            "/v1/deals/quick-buy": { "post": {
                "summary": "Buy an ask at once (Market.quickBuy), approving the Market first if needed",
                "requestBody": body("the ask and the duration", json!({ "type": "object", "required": ["ask_id"], "properties": {
                    "ask_id": { "type": "integer" }, "duration": { "type": "integer", "description": "seconds, 0 = spot" },
                    "worker_addr": { "type": "string", "description": "host:port of the supplier's task service (remembered)" } } })),
                "responses": ok("the deal") } },
            "/v1/deals/{id}": { "get": { "summary": "A deal as the chain has it", "parameters": [path_param("id")], "responses": ok("the deal") } },
            "/v1/deals/{id}/close": { "post": {
                "summary": "Close the deal (Market.closeDeal), optionally blacklisting the supplier",
                "parameters": [path_param("id")],
                "requestBody": body("options", json!({ "type": "object", "properties": { "blacklist": { "type": "boolean" } } })),
                "responses": ok("the closed deal") } },
            "/v1/deals/{id}/tasks": { "post": {
                "summary": "Start a WASM task on the deal's worker",
                "parameters": [path_param("id")],
                "requestBody": body("the job: a job_spec path, or a module with inputs", json!({ "type": "object", "properties": {
                    "job_spec": { "type": "string", "description": "a sonm-wasm-runtime job spec on the node's machine" },
                    "module": { "type": "object", "description": "{\"base64\": ...} or {\"path\": ...}" },
                    "args": { "type": "array", "items": { "type": "string" } },
                    "inputs": { "type": "array", "items": { "type": "object", "properties": { "path": { "type": "string" }, "base64": { "type": "string" } } } },
                    "input_dir": { "type": "string" },
                    "limits": { "type": "object", "properties": { "memory_bytes": { "type": "integer" }, "fuel": { "type": "integer" }, "wall_time_ms": { "type": "integer" } } },
                    "worker_addr": { "type": "string" } } })),
                "responses": ok("{deal, task}") } },
            "/v1/deals/{id}/tasks/{task}": { "get": { "summary": "A task's status", "parameters": [path_param("id"), path_param("task"), worker_addr.clone()], "responses": ok("{deal, task, status: running|finished|failed, exit, error}") } },
            "/v1/deals/{id}/tasks/{task}/result": { "get": { "summary": "A finished task's stdout, outputs (base64) and usage receipt, verified against the deal's supplier", "parameters": [path_param("id"), path_param("task"), worker_addr.clone()], "responses": ok("the result") } },
            "/v1/deals/{id}/tasks/{task}/stop": { "post": { "summary": "Stop a running task", "parameters": [path_param("id"), path_param("task"), worker_addr], "responses": ok("{deal, task, stopping}") } },
        },
        "components": { "schemas": { "Error": { "type": "object", "required": ["code", "message"], "properties": {
            "code": { "type": "string" }, "message": { "type": "string" } } } } }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc = openapi();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn query_strings_are_decoded_and_checked() {
        let mut p = Params::parse("benchmarks=cpu-cores%3D1+ram-size%3D1GiB&limit=3").unwrap();
        let b = p
            .take("benchmarks", from_str::<Benchmarks>)
            .unwrap()
            .unwrap();
        assert_eq!(b.to_string(), "cpu-cores=1 ram-size=1GiB");
        assert!(p.finish().is_err(), "limit was not used");
        assert!(Params::parse("a=1&a=2").is_err());
        assert!(Params::parse("a=%zz").is_err());
    }

    #[test]
    fn a_task_request_needs_exactly_one_module() {
        let req: StartTask = serde_json::from_str(r#"{"args": []}"#).unwrap();
        assert!(matches!(start_wasm(1, req), Err(ApiError::BadRequest(_))));
        let req: StartTask =
            serde_json::from_str(r#"{"module": {"base64": "!!"}, "inputs": []}"#).unwrap();
        assert!(matches!(start_wasm(1, req), Err(ApiError::BadRequest(_))));
        let req: StartTask = serde_json::from_str(
            r#"{"module": {"base64": "AGFzbQ=="}, "inputs": [{"path": "a", "base64": "YWJj"}]}"#,
        )
        .unwrap();
        let s = start_wasm(1, req).unwrap();
        assert_eq!(s.module, b"\0asm");
        assert_eq!(s.inputs[0].bytes, b"abc");
        assert!(serde_json::from_str::<StartTask>(r#"{"modul": 1}"#).is_err());
    }
}
