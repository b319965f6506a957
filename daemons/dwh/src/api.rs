//! The query API: HTTP/JSON on `tiny_http` (a small blocking server; each worker
//! thread takes requests off one listener and answers from its own LMDB read
//! transaction, so queries never wait for the indexer). The OpenAPI document is
//! served at [`OPENAPI_PATH`]; Prometheus metrics at `/metrics`.
//!
//! Routing and parsing are in [`Api::handle`], free of sockets, so tests can call it
//! directly as well as over HTTP.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use serde::Serialize;
use sonm_market::{Benchmarks, DealStatus, IdentityLevel, NetFlags, OrderType};

use crate::follower::{Metrics, SharedBook};
use crate::index::OrderStatus;
use sonm_http_query::Params;

use crate::query::{self, OrderQuery, QueryError};
use crate::storage::{Role, Storage};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// An answer: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    fn json(status: u16, value: &impl Serialize) -> Answer {
        match serde_json::to_string(value) {
            Ok(body) => Answer {
                status,
                content_type: "application/json",
                body,
            },
            Err(e) => Answer::error(500, &format!("cannot encode the answer: {e}")),
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": message }).to_string(),
        }
    }
}

/// The API over a store.
#[derive(Debug)]
pub struct Api<'s, 'e> {
    pub storage: &'s Storage<'e>,
    pub book: &'s SharedBook,
    pub metrics: &'s Metrics,
}

fn bad(message: impl Into<String>) -> QueryError {
    QueryError::BadRequest(message.into())
}

fn parse_from_str<T: FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| e.to_string())
}

fn parse_order_type(v: &str) -> Result<OrderType, String> {
    match v {
        "bid" => Ok(OrderType::Bid),
        "ask" => Ok(OrderType::Ask),
        _ => Err("expected bid or ask".into()),
    }
}

fn parse_order_status(v: &str) -> Result<OrderStatus, String> {
    match v {
        "active" => Ok(OrderStatus::Active),
        "cancelled" => Ok(OrderStatus::Cancelled),
        "matched" => Ok(OrderStatus::Matched),
        _ => Err("expected active, cancelled or matched".into()),
    }
}

fn parse_deal_status(v: &str) -> Result<DealStatus, String> {
    match v {
        "accepted" | "open" => Ok(DealStatus::Accepted),
        "closed" => Ok(DealStatus::Closed),
        _ => Err("expected accepted or closed".into()),
    }
}

fn parse_role(v: &str) -> Result<Role, String> {
    match v {
        "any" => Ok(Role::Any),
        "supplier" => Ok(Role::Supplier),
        "consumer" => Ok(Role::Consumer),
        "master" => Ok(Role::Master),
        _ => Err("expected any, supplier, consumer or master".into()),
    }
}

fn parse_level(v: &str) -> Result<IdentityLevel, String> {
    match v {
        "anonymous" => Ok(IdentityLevel::Anonymous),
        "registered" => Ok(IdentityLevel::Registered),
        "identified" => Ok(IdentityLevel::Identified),
        "professional" => Ok(IdentityLevel::Professional),
        n => n
            .parse::<u64>()
            .ok()
            .and_then(|n| IdentityLevel::try_from(n).ok())
            .ok_or_else(|| {
                "expected anonymous, registered, identified, professional or 0..3".into()
            }),
    }
}

fn parse_id(segment: &str, what: &str) -> Result<u64, QueryError> {
    segment
        .parse::<u64>()
        .map_err(|_| bad(format!("bad {what} id {segment:?}")))
}

fn parse_address(segment: &str) -> Result<Address, QueryError> {
    segment
        .parse::<Address>()
        .map_err(|_| bad(format!("bad address {segment:?}")))
}

impl Api<'_, '_> {
    /// Answers one request.
    pub fn handle(&self, method: &str, url: &str) -> Answer {
        let start = Instant::now();
        let answer = if method != "GET" {
            Answer::error(405, "only GET is served")
        } else {
            match self.route(url) {
                Ok(a) => a,
                Err(QueryError::BadRequest(m)) => {
                    self.metrics.bad_queries.fetch_add(1, Ordering::Relaxed);
                    Answer::error(400, &m)
                }
                Err(QueryError::NotFound(m)) => Answer::error(404, &m),
                Err(QueryError::Db(e)) => {
                    tracing::error!(error = %e, "query failed");
                    Answer::error(500, "storage error")
                }
            }
        };
        self.metrics
            .observe_query(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        answer
    }

    fn route(&self, url: &str) -> Result<Answer, QueryError> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let mut params = Params::parse(query)?;
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if path == OPENAPI_PATH {
            params.finish()?;
            return Ok(Answer::json(200, &openapi()));
        }
        if path == "/metrics" {
            params.finish()?;
            return Ok(Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: self.metrics.render(),
            });
        }
        let txn = self.storage.read_txn()?;
        let s = self.storage;
        let answer = match segments.as_slice() {
            ["v1", "status"] => Answer::json(200, &s.checkpoint_in(&txn)?),
            ["v1", "orders"] => {
                let order_type = params
                    .take("type", parse_order_type)?
                    .ok_or_else(|| bad("type (bid or ask) is required"))?;
                let mut q = OrderQuery::new(order_type);
                if let Some(st) = params.take("status", parse_order_status)? {
                    q.status = st;
                }
                q.author = params.take("author", parse_from_str)?;
                q.counterparty = params.take("counterparty", parse_from_str)?;
                q.price_min = params.take("price_min", parse_from_str)?;
                q.price_max = params.take("price_max", parse_from_str)?;
                q.duration_min = params.take("duration_min", parse_from_str)?;
                q.duration_max = params.take("duration_max", parse_from_str)?;
                q.netflags = params.take("netflags", parse_from_str::<NetFlags>)?;
                q.identity_level = params.take("identity_level", parse_level)?;
                q.benchmarks = params.take("benchmarks", parse_from_str::<Benchmarks>)?;
                if let Some(l) = params.take("limit", parse_from_str)? {
                    q.limit = l;
                }
                q.cursor = params.take("cursor", |c| Ok(c.to_owned()))?;
                params.finish()?;
                Answer::json(200, &query::orders(s, &txn, &q)?)
            }
            ["v1", "orders", id] => {
                let id = parse_id(id, "order")?;
                params.finish()?;
                let row = s
                    .order(&txn, id)?
                    .ok_or_else(|| QueryError::NotFound(format!("order {id} is not indexed")))?;
                Answer::json(200, &row)
            }
            ["v1", "orders", id, "matches"] => {
                let id = parse_id(id, "order")?;
                let limit = params.take("limit", parse_from_str)?.unwrap_or(10);
                params.finish()?;
                Answer::json(200, &query::matches(s, &txn, self.book, id, limit)?)
            }
            ["v1", "deals"] => {
                let party = params
                    .take("party", parse_from_str::<Address>)?
                    .ok_or_else(|| bad("party (an address) is required"))?;
                let role = params.take("role", parse_role)?.unwrap_or(Role::Any);
                let status = params.take("status", parse_deal_status)?;
                let limit = params.take("limit", parse_from_str)?.unwrap_or(100);
                let cursor = params.take("cursor", |c| Ok(c.to_owned()))?;
                params.finish()?;
                Answer::json(
                    200,
                    &query::deals(s, &txn, party, role, status, limit, cursor.as_deref())?,
                )
            }
            ["v1", "deals", id] => {
                let id = parse_id(id, "deal")?;
                params.finish()?;
                let row = s
                    .deal(&txn, id)?
                    .ok_or_else(|| QueryError::NotFound(format!("deal {id} is not indexed")))?;
                Answer::json(200, &row)
            }
            ["v1", "deals", id, "bills"] => {
                let id = parse_id(id, "deal")?;
                params.finish()?;
                Answer::json(200, &query::bills(s, &txn, id)?)
            }
            ["v1", "deals", id, "change-requests"] => {
                let id = parse_id(id, "deal")?;
                params.finish()?;
                Answer::json(200, &query::change_requests(s, &txn, id)?)
            }
            ["v1", "blacklists", owner] => {
                let owner = parse_address(owner)?;
                params.finish()?;
                Answer::json(200, &query::blacklist(s, &txn, owner)?)
            }
            ["v1", "transfers", address] => {
                let address = parse_address(address)?;
                params.finish()?;
                Answer::json(200, &query::transfers(s, &txn, address)?)
            }
            ["v1", "profiles"] => {
                let level = params.take("level", parse_level)?;
                let country = params.take("country", |c| Ok(c.to_owned()))?;
                let limit = params.take("limit", parse_from_str)?.unwrap_or(100);
                let cursor = params.take("cursor", |c| Ok(c.to_owned()))?;
                params.finish()?;
                let page = match (country, level) {
                    (Some(country), level) => query::profiles_by_country(
                        s,
                        &txn,
                        &country,
                        level,
                        limit,
                        cursor.as_deref(),
                    )?,
                    (None, Some(level)) => {
                        query::profiles_by_level(s, &txn, level, limit, cursor.as_deref())?
                    }
                    (None, None) => return Err(bad("country or level is required")),
                };
                Answer::json(200, &page)
            }
            ["v1", "gate"] => {
                params.finish()?;
                Answer::json(200, &query::gate(s, &txn)?)
            }
            ["v1", "stats"] => {
                let order_type = params
                    .take("type", parse_order_type)?
                    .ok_or_else(|| bad("type (bid or ask) is required"))?;
                params.finish()?;
                // Under the book's read lock: O(n log n) over the open orders of one side.
                let stats = self
                    .book
                    .read(|b| sonm_market::MarketStats::of(b.open_orders(order_type)));
                Answer::json(200, &stats)
            }
            ["v1", "profiles", address] => {
                let address = parse_address(address)?;
                params.finish()?;
                Answer::json(200, &query::profile(s, &txn, address)?)
            }
            _ => return Err(QueryError::NotFound(format!("no route {path}"))),
        };
        Ok(answer)
    }

    /// Serves `server` from `threads` worker threads until `stop` is set.
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

    fn respond(&self, request: tiny_http::Request) {
        let answer = self.handle(request.method().as_str(), request.url());
        let header =
            tiny_http::Header::from_bytes(&b"Content-Type"[..], answer.content_type.as_bytes());
        let mut response =
            tiny_http::Response::from_string(answer.body).with_status_code(answer.status);
        if let Ok(h) = header {
            response = response.with_header(h);
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "the client went away");
        }
    }
}

/// The OpenAPI 3.0 document of this API.
pub fn openapi() -> serde_json::Value {
    use serde_json::json;
    let param = |name: &str, description: &str, required: bool| {
        json!({ "name": name, "in": "query", "required": required,
                "description": description, "schema": { "type": "string" } })
    };
    let path_param = |name: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } });
    let ok = |description: &str| {
        json!({
            "200": { "description": description, "content": { "application/json": {} } },
            "400": { "description": "bad query: {\"error\": message}" },
            "404": { "description": "not found: {\"error\": message}" }
        })
    };
    json!({
        "openapi": "3.0.3",
        "info": { "title": "sonm-dwh", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Indexed SONM market state. Amounts are SNM wei, prices wei per second. Pages: {items, next}; pass next as cursor for the following page." },
        "paths": {
            "/v1/status": { "get": { "summary": "The last indexed block and its hash", "responses": ok("checkpoint or null") } },
            "/v1/orders": { "get": {
                "summary": "Orders of one type, sorted by price (then id), filtered, paginated",
                "parameters": [
                    param("type", "bid or ask", true),
                    param("status", "active (default), cancelled or matched", false),
                    param("author", "address", false),
                    param("counterparty", "orders naming this counterparty or none", false),
                    param("price_min", "wei/s, inclusive", false),
                    param("price_max", "wei/s, inclusive", false),
                    param("duration_min", "seconds, inclusive", false),
                    param("duration_max", "seconds, inclusive", false),
                    param("netflags", "orders covering these: outbound,inbound,public-ip or bits", false),
                    param("identity_level", "orders requiring at most this level", false),
                    param("benchmarks", "orders with every benchmark >= these, e.g. cpu-cores=4,ram-size=8GiB", false),
                    param("limit", "1..=1000, default 100", false),
                    param("cursor", "next of the previous page", false)
                ],
                "responses": ok("a page of orders") } },
            "/v1/orders/{id}": { "get": { "summary": "One order", "parameters": [path_param("id")], "responses": ok("the order") } },
            "/v1/orders/{id}/matches": { "get": {
                "summary": "The best active orders matching an active order (the market crate's rule and order book)",
                "parameters": [path_param("id"), param("limit", "1..=1000, default 10", false)],
                "responses": ok("orders, best first") } },
            "/v1/deals": { "get": {
                "summary": "Deals of a party, by status then id, paginated",
                "parameters": [
                    param("party", "address", true),
                    param("role", "any (default), supplier, consumer or master", false),
                    param("status", "accepted or closed", false),
                    param("limit", "1..=1000, default 100", false),
                    param("cursor", "next of the previous page", false)
                ],
                "responses": ok("a page of deals") } },
            "/v1/deals/{id}": { "get": { "summary": "One deal", "parameters": [path_param("id")], "responses": ok("the deal") } },
            "/v1/deals/{id}/bills": { "get": { "summary": "A deal's bills, oldest first", "parameters": [path_param("id")], "responses": ok("bills") } },
            "/v1/deals/{id}/change-requests": { "get": { "summary": "A deal's change requests", "parameters": [path_param("id")], "responses": ok("change requests") } },
            "/v1/blacklists/{owner}": { "get": { "summary": "The addresses an owner blacklisted", "parameters": [path_param("owner")], "responses": ok("addresses") } },
            "/v1/transfers/{address}": { "get": { "summary": "Gate transfers of an address: locks it sent or will receive elsewhere, then payments it received", "parameters": [path_param("address")], "responses": ok("transfers") } },
            "/v1/profiles": { "get": {
                "summary": "Addresses by country (a live certificate of attribute 1102 with an ISO 3166-1 alpha-2 value) and/or identity level, by address, paginated",
                "parameters": [
                    param("country", "two letters, e.g. DE (country or level is required)", false),
                    param("level", "registered, identified or professional (or 1..3); with country: exactly this level", false),
                    param("limit", "1..=1000, default 100", false),
                    param("cursor", "next of the previous page", false)
                ],
                "responses": ok("a page of addresses") } },
            "/v1/gate": { "get": { "summary": "This chain's gate: the keeper threshold and the current keepers (daily limit, frozen)", "responses": ok("the gate") } },
            "/v1/stats": { "get": {
                "summary": "Market depth and prices of one side's open orders, overall and per hardware class (power-of-two buckets of GPU count and CPU cores); nearest-rank price percentiles in SNM wei per second",
                "parameters": [param("type", "bid or ask", true)],
                "responses": ok("the statistics") } },
            "/v1/profiles/{address}": { "get": { "summary": "Identity level, master and certificates of an address", "parameters": [path_param("address")], "responses": ok("the profile") } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition" } } } }
        }
    })
}
