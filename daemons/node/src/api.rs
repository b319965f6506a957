//! The HTTP/JSON API on localhost, over sonm-http-serve (the same small blocking server the DWH
//! and the keepers use, so the project has one HTTP server crate: a handful of worker threads, each taking
//! requests off one listener; the node's work is blocking RPC and QUIC calls anyway, so an async
//! server would buy nothing). Routing and parsing live in [`Api::handle`], free of sockets.
//!
//! Every error is `{"code", "message"}` with a 4xx for bad input (see [`ApiError`]); the OpenAPI
//! document is served at [`OPENAPI_PATH`] and lists exactly [`ROUTES`] (a test holds them
//! together).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use alloy::primitives::{B256, U256};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sonm_market::{
    Address, Benchmarks, DealId, IdentityLevel, MAX_PRICE, NetFlags, Order, OrderType,
};
use sonm_wasm_runtime::{JobSpec, ModuleSource};
use sonm_worker::proto::{
    Exit, File, KillCause, StartContainer, StartWasm, TaskLimits, TaskResult, TaskStatus,
};
use sonm_worker::receipt::Fuel;

use sonm_dwh_client::SignedOrder;
use sonm_http_query::Params;
use sonm_http_serve::BodyError;

use crate::chain::Role;
use crate::error::ApiError;
use crate::market::AskQuery;
use crate::node::{Node, TrackedStart, read_input_dir};
use crate::records::OrderStatus;

mod gates;
mod transfer;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Largest request body (a module and its inputs travel base64-encoded in one request).
pub const MAX_BODY: usize = 24 << 20;

/// Every route: method and path template. The OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("get", "/v1/balance"),
    ("post", "/v1/token/transfer"),
    ("post", "/v1/token/approve"),
    ("get", "/v1/orders"),
    ("post", "/v1/orders"),
    ("get", "/v1/orders/own"),
    ("get", "/v1/orders/{id}"),
    ("post", "/v1/orders/{id}/cancel"),
    ("get", "/v1/deals"),
    ("post", "/v1/deals"),
    ("post", "/v1/deals/quick-buy"),
    ("get", "/v1/deals/{id}/change-requests"),
    ("post", "/v1/deals/{id}/change-requests"),
    ("post", "/v1/change-requests/{id}/approve"),
    ("post", "/v1/change-requests/{id}/cancel"),
    ("get", "/v1/blacklist"),
    ("post", "/v1/blacklist"),
    ("delete", "/v1/blacklist/{address}"),
    ("get", "/v1/profiles/{address}"),
    ("get", "/v1/deals/{id}"),
    ("post", "/v1/deals/{id}/close"),
    ("post", "/v1/deals/{id}/tasks"),
    ("get", "/v1/deals/{id}/tasks/{task}"),
    ("get", "/v1/deals/{id}/tasks/{task}/result"),
    ("post", "/v1/deals/{id}/tasks/{task}/stop"),
    // A task's output, read live, and uploads' progress (api/transfer.rs).
    ("get", "/v1/deals/{id}/tasks/{task}/logs"),
    ("get", "/v1/transfers/{token}"),
    // Deposits and withdrawals through the Gates (api/gates.rs).
    ("post", "/v1/token/deposit"),
    ("post", "/v1/token/withdraw"),
    ("get", "/v1/token/transfers"),
    // Worker admin for suppliers (admin.rs: `crate::admin::ROUTES`, checked equal below).
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
    /// A signed ask (id 0, never placed): what `quick-buy` takes as `signed_ask`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<B256>,
    /// A signed ask's last usable second (unix time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<u64>,
}

impl From<&SignedOrder> for AskView {
    fn from(s: &SignedOrder) -> Self {
        AskView {
            digest: Some(s.digest),
            expiry: Some(s.expiry),
            ..AskView::from(&s.order)
        }
    }
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
            digest: None,
            expiry: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickBuy {
    /// A placed ask, by its order id; or
    #[serde(default)]
    ask_id: Option<u64>,
    /// a signed ask of the DWH's book, by its digest.
    #[serde(default)]
    signed_ask: Option<B256>,
    #[serde(default)]
    duration: u64,
    /// Where the supplier's task service is; remembered for the deal's tasks.
    #[serde(default)]
    worker_addr: Option<SocketAddr>,
}

/// An amount in JSON: a decimal string (amounts exceed 2^53) or a small integer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Text(String),
    Number(u64),
}

impl Amount {
    fn u256(&self, what: &str) -> Result<U256, ApiError> {
        match self {
            Amount::Number(n) => Ok(U256::from(*n)),
            Amount::Text(t) => U256::from_str_radix(t.trim(), 10)
                .map_err(|e| bad(format!("{what} {t:?} is not a decimal amount: {e}"))),
        }
    }

    fn u128(&self, what: &str) -> Result<u128, ApiError> {
        u128::try_from(self.u256(what)?).map_err(|_| bad(format!("{what} is far too large")))
    }
}

/// A new order of the node's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrder {
    #[serde(rename = "type")]
    order_type: OrderType,
    /// The market crate's human form, e.g. `cpu-cores=2 ram-size=1GiB`; unset: all zero.
    #[serde(default)]
    benchmarks: Option<String>,
    /// SNM wei per second.
    price: Amount,
    #[serde(default)]
    duration: u64,
    /// e.g. `outbound,inbound`; unset: none.
    #[serde(default)]
    netflags: Option<String>,
    #[serde(default)]
    counterparty: Option<Address>,
    /// Required of the counterparty: anonymous, registered, identified, professional.
    #[serde(default)]
    identity_level: IdentityLevel,
    /// A further party whose blacklist applies.
    #[serde(default)]
    blacklist: Option<Address>,
}

impl CreateOrder {
    fn order(self) -> Result<Order, ApiError> {
        let benchmarks = match &self.benchmarks {
            Some(b) => b
                .parse::<Benchmarks>()
                .map_err(|e| bad(format!("benchmarks: {e}")))?,
            None => Benchmarks::ZERO,
        };
        let netflags = match &self.netflags {
            Some(n) => n
                .parse::<NetFlags>()
                .map_err(|e| bad(format!("netflags: {e}")))?,
            None => NetFlags::default(),
        };
        Ok(Order {
            id: 0,
            order_type: self.order_type,
            // The node's own address, set by the node.
            author: Address::ZERO,
            counterparty: self.counterparty,
            duration: self.duration,
            price: self.price.u128("price")?,
            netflags,
            identity_level: self.identity_level,
            blacklist: self.blacklist,
            tag: Default::default(),
            benchmarks,
        })
    }
}

/// The body of a request that takes no options: empty or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoOptions {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenDeal {
    ask_id: u64,
    bid_id: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewChangeRequest {
    /// SNM wei per second.
    price: Amount,
    /// Seconds; unset: the deal's current duration (a spot deal's stays 0).
    #[serde(default)]
    duration: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    to: Address,
    amount: Amount,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    amount: Amount,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listed {
    address: Address,
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
    /// Ask for a fuel-metered run (a deterministic count in the receipt).
    #[serde(default)]
    fuel_metered: bool,
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
    /// `wasm` (default) or `container`.
    #[serde(default)]
    kind: TaskKind,
    /// A container's root filesystem: a plain tar, base64 or a path on the node's machine.
    #[serde(default)]
    rootfs: Option<ModuleIn>,
    /// A container's environment, `NAME=value` entries.
    #[serde(default)]
    env: Vec<String>,
    /// A token (1-64 of `A-Za-z0-9_-`) under which `GET /v1/transfers/{token}` reports the
    /// upload's progress while this request runs.
    #[serde(default)]
    progress: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TaskKind {
    #[default]
    Wasm,
    Container,
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
        // A container the worker ended: `trap` names the cause.
        Exit::Killed(cause) => ExitView {
            kind: "killed",
            code: None,
            trap: Some(
                match cause {
                    KillCause::OomKilled => "oom_killed",
                    KillCause::Stopped => "stopped",
                    KillCause::WallTime => "wall_time",
                }
                .into(),
            ),
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
            // `null` unless counted; `fuel_metering` says why (not_metered, counted, unknown).
            "fuel": rc.fuel.count(),
            "fuel_metering": match rc.fuel {
                Fuel::NotMetered => "not_metered",
                Fuel::Counted(_) => "counted",
                Fuel::Unknown => "unknown",
            },
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

fn parse_address(v: &str) -> Result<Address, ApiError> {
    v.parse()
        .map_err(|e| bad(format!("{v:?} is not an address: {e}")))
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
        let one_of = |allowed: &[&str]| {
            if allowed.contains(&method.as_str()) {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed(format!(
                    "{path} takes {}",
                    allowed.join(" or ").to_uppercase()
                )))
            }
        };
        let only = |allowed: &str| one_of(&[allowed]);
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
            ["v1", "orders"] if method == "post" => {
                params.finish()?;
                let req: CreateOrder = body_json(body)?;
                Ok(Answer::json(200, &node.create_order(req.order()?)?))
            }
            ["v1", "orders"] => {
                one_of(&["get", "post"])?;
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
                // Placed and signed asks in one list, cheapest first.
                let placed = node.find_asks(&q)?;
                let signed = node.find_signed_asks(&q)?;
                let mut priced: Vec<(u128, AskView)> = placed
                    .iter()
                    .map(|o| (o.price, AskView::from(o)))
                    .chain(signed.iter().map(|s| (s.order.price, AskView::from(s))))
                    .collect();
                priced.sort_by_key(|(price, _)| *price);
                let asks: Vec<AskView> = priced.into_iter().take(q.limit).map(|(_, a)| a).collect();
                Ok(Answer::json(200, &serde_json::json!({ "orders": asks })))
            }
            ["v1", "token", "transfer"] => {
                only("post")?;
                params.finish()?;
                let req: Transfer = body_json(body)?;
                let amount = req.amount.u256("amount")?;
                Ok(Answer::json(200, &node.transfer(req.to, amount)?))
            }
            ["v1", "token", "approve"] => {
                only("post")?;
                params.finish()?;
                let req: Approve = body_json(body)?;
                Ok(Answer::json(
                    200,
                    &node.approve_market(req.amount.u256("amount")?)?,
                ))
            }
            ["v1", "orders", "own"] => {
                only("get")?;
                let order_type = params.take("type", |v| match v {
                    "bid" => Ok(OrderType::Bid),
                    "ask" => Ok(OrderType::Ask),
                    _ => Err(format!("{v:?} is not bid or ask")),
                })?;
                let status = params.take("status", from_str::<OrderStatus>)?;
                params.finish()?;
                let orders = node.orders(order_type, status)?;
                Ok(Answer::json(200, &serde_json::json!({ "orders": orders })))
            }
            ["v1", "orders", id] => {
                only("get")?;
                params.finish()?;
                Ok(Answer::json(200, &node.order(parse_id("order id", id)?)?))
            }
            ["v1", "orders", id, "cancel"] => {
                only("post")?;
                params.finish()?;
                let id = parse_id("order id", id)?;
                body_json::<NoOptions>(body)?;
                Ok(Answer::json(200, &node.cancel_order(id)?))
            }
            ["v1", "deals"] if method == "post" => {
                params.finish()?;
                let req: OpenDeal = body_json(body)?;
                Ok(Answer::json(200, &node.open_deal(req.ask_id, req.bid_id)?))
            }
            ["v1", "deals"] => {
                one_of(&["get", "post"])?;
                let role = params.take("role", from_str::<Role>)?;
                let status = params.take("status", |v| match v {
                    "active" | "closed" => Ok(v.to_owned()),
                    _ => Err(format!("{v:?} is not active or closed")),
                })?;
                params.finish()?;
                let deals = node.deals(role.unwrap_or(Role::Any), status.as_deref())?;
                Ok(Answer::json(200, &serde_json::json!({ "deals": deals })))
            }
            ["v1", "deals", id, "change-requests"] if method == "post" => {
                params.finish()?;
                let id = parse_id("deal id", id)?;
                let req: NewChangeRequest = body_json(body)?;
                let price = req.price.u128("price")?;
                let duration = match req.duration {
                    Some(d) => d,
                    None => node.deal(id)?.duration,
                };
                Ok(Answer::json(
                    200,
                    &node.create_change_request(id, price, duration)?,
                ))
            }
            ["v1", "deals", id, "change-requests"] => {
                one_of(&["get", "post"])?;
                params.finish()?;
                let requests = node.change_requests(parse_id("deal id", id)?)?;
                Ok(Answer::json(
                    200,
                    &serde_json::json!({ "change_requests": requests }),
                ))
            }
            [
                "v1",
                "change-requests",
                id,
                decision @ ("approve" | "cancel"),
            ] => {
                only("post")?;
                params.finish()?;
                let id = parse_id("change request id", id)?;
                body_json::<NoOptions>(body)?;
                Ok(Answer::json(
                    200,
                    &node.decide_change_request(id, *decision == "approve")?,
                ))
            }
            ["v1", "blacklist"] if method == "post" => {
                params.finish()?;
                let req: Listed = body_json(body)?;
                let listed = node.set_listed(req.address, true)?;
                Ok(Answer::json(
                    200,
                    &serde_json::json!({ "owner": node.address(), "listed": listed }),
                ))
            }
            ["v1", "blacklist"] => {
                one_of(&["get", "post"])?;
                let owner = params.take("owner", from_str::<Address>)?;
                params.finish()?;
                let owner = owner.unwrap_or(node.address());
                let listed = node.blacklist(owner)?;
                Ok(Answer::json(
                    200,
                    &serde_json::json!({ "owner": owner, "listed": listed }),
                ))
            }
            ["v1", "blacklist", who] => {
                only("delete")?;
                params.finish()?;
                let who = parse_address(who)?;
                let listed = node.set_listed(who, false)?;
                Ok(Answer::json(
                    200,
                    &serde_json::json!({ "owner": node.address(), "listed": listed }),
                ))
            }
            ["v1", "profiles", who] => {
                only("get")?;
                params.finish()?;
                let who = match *who {
                    "me" => node.address(),
                    other => parse_address(other)?,
                };
                Ok(Answer::json(200, &node.profile(who)?))
            }
            ["v1", "deals", "quick-buy"] => {
                only("post")?;
                params.finish()?;
                let req: QuickBuy = body_json(body)?;
                let deal = match (req.ask_id, req.signed_ask) {
                    (Some(id), None) => node.quick_buy(id, req.duration)?,
                    (None, Some(digest)) => node.quick_buy_signed(digest, req.duration)?,
                    _ => {
                        return Err(bad(
                            "name the ask: ask_id (placed) or signed_ask (a digest)",
                        ));
                    }
                };
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
                if let Some(token) = req.progress.clone() {
                    transfer::check_token(&token)?;
                    let start = match req.kind {
                        TaskKind::Wasm => TrackedStart::Wasm(start_wasm(deal, req)?),
                        TaskKind::Container => TrackedStart::Container(start_container(deal, req)?),
                    };
                    let task = node.start_tracked(start, worker_addr, token)?;
                    return Ok(Answer::json(
                        200,
                        &serde_json::json!({ "deal": deal, "task": task }),
                    ));
                }
                let task = match req.kind {
                    TaskKind::Wasm => node.start_task(start_wasm(deal, req)?, worker_addr)?,
                    TaskKind::Container => {
                        node.start_container(start_container(deal, req)?, worker_addr)?
                    }
                };
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
            ["v1", "deals", id, "tasks", task, "logs"] => {
                transfer::logs(node, &method, id, task, params)
            }
            ["v1", "transfers", token] => transfer::progress(node, &method, token, params),
            ["v1", "token", op @ ("deposit" | "withdraw" | "transfers")] => {
                gates::route(node, &method, op, params, body)
            }
            ["v1", "worker", rest @ ..] => Ok(Answer::json(
                200,
                &crate::admin::route(node, &method, rest, params, body)?,
            )),
            _ => Err(ApiError::NotFound(format!(
                "no route {path} (see {OPENAPI_PATH})"
            ))),
        }
    }

    /// Serves requests on `server` with `threads` threads until `stop` is set.
    pub fn serve(&self, server: &sonm_http_serve::Server, threads: usize, stop: &AtomicBool) {
        sonm_http_serve::serve(server, threads, stop, |request| {
            let answer = match request.body(MAX_BODY) {
                Err(BodyError::TooLarge(max)) => Answer::error(&ApiError::TooLarge(max)),
                Err(BodyError::Read(e)) => {
                    Answer::error(&bad(format!("reading the request body: {e}")))
                }
                Ok(body) => self.handle(request.method(), request.url(), &body),
            };
            sonm_http_serve::Reply::json(answer.status, answer.body)
        });
    }
}

/// Builds a container request from the API's task request (reading the rootfs it names).
fn start_container(deal: DealId, req: StartTask) -> Result<StartContainer, ApiError> {
    if req.job_spec.is_some() || req.module.is_some() || !req.inputs.is_empty() {
        return Err(bad(
            "a container takes a rootfs, args and env (no module, job_spec or inputs)",
        ));
    }
    if req.input_dir.is_some() || req.limits.fuel.is_some() || req.limits.fuel_metered {
        return Err(bad("a container takes no input_dir and counts no fuel"));
    }
    if req.args.is_empty() {
        return Err(bad("a container needs args (the program to run)"));
    }
    let rootfs = match req.rootfs {
        None => return Err(bad("a container needs a rootfs (a tar)")),
        Some(ModuleIn::Base64(b)) => B64
            .decode(b.as_bytes())
            .map_err(|e| bad(format!("rootfs is not base64: {e}")))?,
        Some(ModuleIn::Path(p)) => {
            std::fs::read(&p).map_err(|e| bad(format!("reading rootfs {}: {e}", p.display())))?
        }
    };
    Ok(StartContainer {
        deal,
        rootfs,
        args: req.args,
        env: req.env,
        limits: TaskLimits {
            memory_bytes: req.limits.memory_bytes,
            fuel: None,
            wall_time_ms: req.limits.wall_time_ms,
            fuel_metered: false,
        },
    })
}

/// Builds the worker request from the API's task request (reading the files it names).
fn start_wasm(deal: DealId, req: StartTask) -> Result<StartWasm, ApiError> {
    if req.kind != TaskKind::Wasm || req.rootfs.is_some() || !req.env.is_empty() {
        return Err(bad("rootfs and env are for kind = \"container\""));
    }
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| bad(format!("reading module {}: {e}", p.display())))
    };
    let mut args = req.args;
    let mut limits = TaskLimits {
        memory_bytes: req.limits.memory_bytes,
        fuel: req.limits.fuel,
        wall_time_ms: req.limits.wall_time_ms,
        fuel_metered: req.limits.fuel_metered,
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
                fuel_metered: limits.fuel_metered,
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
    let address_param = json!({ "name": "address", "in": "path", "required": true, "schema": { "type": "string" } });
    let order_schema = json!({ "type": "object", "required": ["type", "price"], "properties": {
        "type": { "type": "string", "enum": ["bid", "ask"] },
        "benchmarks": { "type": "string", "description": "e.g. \"cpu-cores=2 ram-size=1GiB\"" },
        "price": { "type": "string", "description": "SNM wei per second" },
        "duration": { "type": "integer", "description": "seconds; 0 = spot" },
        "netflags": { "type": "string", "description": "e.g. outbound,inbound" },
        "counterparty": { "type": "string" },
        "identity_level": { "type": "string", "enum": ["anonymous", "registered", "identified", "professional"] },
        "blacklist": { "type": "string" } } });
    let worker_addr = query(
        "worker_addr",
        "host:port of the supplier's task service, if the node's config does not know it",
    );
    // The node's own orders, deals, change requests, token, blacklist and profiles: a document
    // of their own, merged below (one `json!` of every path exceeds the macro's recursion).
    let account = json!({
            "/v1/orders": {
                "post": {
                "summary": "Place an order of the node's own (Market.placeOrder): a BID (its frozen sum approved first if needed) or an ASK",
                "requestBody": body("the order", order_schema.clone()),
                "responses": ok("the order, with its id") } },
            "/v1/orders/own": { "get": {
                "summary": "The node's own orders by id (from the DWH when configured, else the chain's logs)",
                "parameters": [query("type", "bid or ask"), query("status", "active, cancelled or matched")],
                "responses": ok("{orders: [Order]}") } },
            "/v1/orders/{id}": { "get": { "summary": "An order and its status (active, cancelled, matched with its deal)", "parameters": [path_param("id")], "responses": ok("the order") } },
            "/v1/orders/{id}/cancel": { "post": { "summary": "Cancel an active order of the node's own (Market.cancelOrder; a bid's frozen sum returns)", "parameters": [path_param("id")], "responses": ok("the cancelled order") } },
            "/v1/deals": {
                "get": {
                    "summary": "The node's deals (from the DWH when configured, else the chain's logs), each as the chain has it",
                    "parameters": [query("role", "any (default), consumer or supplier"), query("status", "active or closed")],
                    "responses": ok("{deals: [Deal]}") },
                "post": {
                    "summary": "Open a deal from an active ask and an active bid (Market.openDeal; the chain checks the match)",
                    "requestBody": body("the orders", json!({ "type": "object", "required": ["ask_id", "bid_id"], "properties": {
                        "ask_id": { "type": "integer" }, "bid_id": { "type": "integer" } } })),
                    "responses": ok("the deal") } },
            "/v1/deals/{id}/change-requests": {
                "get": { "summary": "A deal's change requests, oldest first", "parameters": [path_param("id")], "responses": ok("{change_requests: [ChangeRequest]}") },
                "post": {
                    "summary": "Ask the other side for a new price (and duration); a change only in the other side's favour applies at once",
                    "parameters": [path_param("id")],
                    "requestBody": body("the change", json!({ "type": "object", "required": ["price"], "properties": {
                        "price": { "type": "string", "description": "SNM wei per second" },
                        "duration": { "type": "integer", "description": "seconds; default: the deal's" } } })),
                    "responses": ok("the change request: {id, deal, requester, price, duration, status: pending|approved|cancelled}") } },
            "/v1/change-requests/{id}/approve": { "post": { "summary": "Approve the other side's pending change request", "parameters": [path_param("id")], "responses": ok("the change request") } },
            "/v1/change-requests/{id}/cancel": { "post": { "summary": "Withdraw (ours) or reject (theirs) a pending change request", "parameters": [path_param("id")], "responses": ok("the change request") } },
            "/v1/token/transfer": { "post": {
                "summary": "Send SNM (SNM.transfer)",
                "requestBody": body("recipient and amount", json!({ "type": "object", "required": ["to", "amount"], "properties": {
                    "to": { "type": "string" }, "amount": { "type": "string", "description": "SNM wei" } } })),
                "responses": ok("the balances after") } },
            "/v1/token/approve": { "post": {
                "summary": "Set what the Market may pull (SNM.approve)",
                "requestBody": body("the allowance", json!({ "type": "object", "required": ["amount"], "properties": {
                    "amount": { "type": "string", "description": "SNM wei" } } })),
                "responses": ok("the balances after") } },
            "/v1/blacklist": {
                "get": { "summary": "The addresses a blacklist holds", "parameters": [query("owner", "whose list (default: the node's)")], "responses": ok("{owner, listed: [address]}") },
                "post": {
                    "summary": "Add an address to the node's blacklist (Blacklist.add)",
                    "requestBody": body("the address", json!({ "type": "object", "required": ["address"], "properties": { "address": { "type": "string" } } })),
                    "responses": ok("{owner, listed}") } },
            "/v1/blacklist/{address}": { "delete": { "summary": "Remove an address from the node's blacklist (Blacklist.remove)", "parameters": [address_param.clone()], "responses": ok("{owner, listed}") } },
            "/v1/profiles/{address}": { "get": { "summary": "Identity level, confirmed master and certificates of an address (`me`: the node's)", "parameters": [address_param], "responses": ok("{address, identity_level, master, certificates: [{id, validator, attribute_type, value, revoked}]}") } },
    });
    let mut doc = json!({
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
                "summary": "Active asks that match a spec, cheapest first: placed asks, and (with a DWH) signed asks of its book, which carry a digest and an expiry and id 0",
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
                "summary": "Buy an ask at once (Market.quickBuy), approving the Market first if needed: a placed ask by ask_id, or a signed ask of the DWH's book by signed_ask (checked by the node first: digest, the author's signature, a minute of life left; 409 otherwise)",
                "requestBody": body("the ask and the duration", json!({ "type": "object", "properties": {
                    "ask_id": { "type": "integer", "description": "a placed ask (exactly one of ask_id, signed_ask)" },
                    "signed_ask": { "type": "string", "description": "a signed ask's digest, 0x and 32 bytes" },
                    "duration": { "type": "integer", "description": "seconds, 0 = spot" },
                    "worker_addr": { "type": "string", "description": "host:port of the supplier's task service (remembered)" } } })),
                "responses": ok("the deal") } },
            "/v1/deals/{id}": { "get": { "summary": "A deal as the chain has it", "parameters": [path_param("id")], "responses": ok("the deal") } },
            "/v1/deals/{id}/close": { "post": {
                "summary": "Close the deal (Market.closeDeal), optionally blacklisting the supplier",
                "parameters": [path_param("id")],
                "requestBody": body("options", json!({ "type": "object", "properties": { "blacklist": { "type": "boolean" } } })),
                "responses": ok("the closed deal") } },
            "/v1/deals/{id}/tasks": { "post": {
                "summary": "Start a WASM task (or, with kind = container, a native container) on the deal's worker",
                "parameters": [path_param("id")],
                "requestBody": body("the job: a job_spec path, or a module with inputs", json!({ "type": "object", "properties": {
                    "job_spec": { "type": "string", "description": "a sonm-wasm-runtime job spec on the node's machine" },
                    "module": { "type": "object", "description": "{\"base64\": ...} or {\"path\": ...}" },
                    "args": { "type": "array", "items": { "type": "string" } },
                    "inputs": { "type": "array", "items": { "type": "object", "properties": { "path": { "type": "string" }, "base64": { "type": "string" } } } },
                    "input_dir": { "type": "string" },
                    "limits": { "type": "object", "properties": { "memory_bytes": { "type": "integer" }, "fuel": { "type": "integer" }, "wall_time_ms": { "type": "integer" }, "fuel_metered": { "type": "boolean" } } },
                    "worker_addr": { "type": "string" },
                    "kind": { "type": "string", "enum": ["wasm", "container"] },
                    "rootfs": { "type": "object", "description": "a container's rootfs tar: {\"base64\": ...} or {\"path\": ...}" },
                    "env": { "type": "array", "items": { "type": "string" }, "description": "a container's NAME=value entries" },
                    "progress": { "type": "string", "description": "a token (1-64 of A-Za-z0-9_-): GET /v1/transfers/{token} reports the upload's progress while this request runs" } } })),
                "responses": ok("{deal, task}") } },
            "/v1/deals/{id}/tasks/{task}": { "get": { "summary": "A task's status", "parameters": [path_param("id"), path_param("task"), worker_addr.clone()], "responses": ok("{deal, task, status: running|finished|failed, exit, error}") } },
            "/v1/deals/{id}/tasks/{task}/result": { "get": { "summary": "A finished task's stdout, outputs (base64) and usage receipt, verified against the deal's supplier", "parameters": [path_param("id"), path_param("task"), worker_addr.clone()], "responses": ok("the result") } },
            "/v1/deals/{id}/tasks/{task}/stop": { "post": { "summary": "Stop a running task", "parameters": [path_param("id"), path_param("task"), worker_addr], "responses": ok("{deal, task, stopping}") } },
        },
        "components": { "schemas": { "Error": { "type": "object", "required": ["code", "message"], "properties": {
            "code": { "type": "string" }, "message": { "type": "string" } } } } }
    });
    if let (Some(paths), Some(more)) = (doc["paths"].as_object_mut(), account.as_object()) {
        for (path, ops) in more {
            let entry = paths.entry(path.clone()).or_insert_with(|| json!({}));
            if let (Some(entry), Some(ops)) = (entry.as_object_mut(), ops.as_object()) {
                entry.extend(ops.clone());
            }
        }
    }
    // A task's logs and uploads' progress (api/transfer.rs).
    if let (Some(paths), serde_json::Value::Object(more)) =
        (doc["paths"].as_object_mut(), transfer::openapi_paths())
    {
        paths.extend(more);
    }
    // Deposits and withdrawals through the Gates: new paths of their own (api/gates.rs).
    if let (Some(paths), serde_json::Value::Object(more)) =
        (doc["paths"].as_object_mut(), gates::openapi_paths())
    {
        paths.extend(more);
    }
    // Worker admin for suppliers (admin.rs).
    if let (Some(paths), serde_json::Value::Object(more)) =
        (doc["paths"].as_object_mut(), crate::admin::openapi_paths())
    {
        paths.extend(more);
    }
    doc
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

    #[test]
    fn a_container_request_takes_a_rootfs_args_and_env_only() {
        let parse = |s: &str| serde_json::from_str::<StartTask>(s).unwrap();
        let c = start_container(
            1,
            parse(
                r#"{"kind": "container", "rootfs": {"base64": "YWJj"}, "args": ["echo", "hi"],
                    "env": ["A=1"], "limits": {"memory_bytes": 1024, "wall_time_ms": null}}"#,
            ),
        )
        .unwrap();
        assert_eq!(
            (c.rootfs.as_slice(), c.env.as_slice()),
            (&b"abc"[..], &["A=1".to_string()][..])
        );
        assert_eq!(c.args, ["echo", "hi"]);
        assert_eq!(c.limits.memory_bytes, Some(1024));
        for bad in [
            r#"{"kind": "container", "args": ["x"]}"#,
            r#"{"kind": "container", "rootfs": {"base64": "YWJj"}}"#,
            r#"{"kind": "container", "rootfs": {"base64": "YWJj"}, "args": ["x"], "module": {"base64": "AA=="}}"#,
            r#"{"kind": "container", "rootfs": {"base64": "YWJj"}, "args": ["x"], "limits": {"fuel_metered": true}}"#,
        ] {
            assert!(
                matches!(start_container(1, parse(bad)), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
        // A WASM task with a container's fields is refused, not half-read.
        let wasm = parse(r#"{"module": {"base64": "AGFzbQ=="}, "env": ["A=1"]}"#);
        assert!(matches!(start_wasm(1, wasm), Err(ApiError::BadRequest(_))));
        assert!(serde_json::from_str::<StartTask>(r#"{"kind": "vm"}"#).is_err());
    }
}
