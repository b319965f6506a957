//! The query API: HTTP/JSON on sonm-http-serve (tiny_http: a small blocking server; each worker
//! thread takes requests off one listener and answers from its own LMDB read
//! transaction, so queries never wait for the indexer). The OpenAPI document is
//! served at [`OPENAPI_PATH`]; Prometheus metrics at `/metrics`.
//!
//! Everything is `GET` but one route: `POST /v1/signed-orders` (the signed-order book, see
//! [`crate::signed`]), the only request whose body is read, bounded by [`MAX_BODY`].
//!
//! Routing and parsing are in [`Api::handle`] and [`Api::post`], free of sockets, so tests can
//! call them directly as well as over HTTP.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use alloy::primitives::{Address, B256};
use serde::Serialize;
use sonm_market::{Benchmarks, DealStatus, IdentityLevel, NetFlags, OrderType};

use crate::follower::{Metrics, SharedBook};
use crate::index::{OrderStatus, SignedOrderRow};
use sonm_http_query::Params;

use crate::query::{self, OrderQuery, QueryError};
use sonm_http_serve::BodyError;

use crate::signed::{self, MAX_BODY, Refusal, SignedPolicy};
use crate::storage::{Posted, Role, Storage};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// The signed-order book: `POST` to publish, `GET` to list.
pub const SIGNED_ORDERS_PATH: &str = "/v1/signed-orders";

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

    /// A refused post: the error's message and a stable `reason`.
    fn refusal(r: &Refusal) -> Answer {
        Answer {
            status: r.status(),
            content_type: "application/json",
            body: serde_json::json!({ "error": r.to_string(), "reason": r.reason() }).to_string(),
        }
    }
}

/// The API over a store.
#[derive(Debug)]
pub struct Api<'s, 'e> {
    pub storage: &'s Storage<'e>,
    pub book: &'s SharedBook,
    pub metrics: &'s Metrics,
    /// What the signed-order book accepts.
    pub signed: &'s SignedPolicy,
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

fn parse_digest(segment: &str) -> Result<B256, QueryError> {
    segment
        .parse::<B256>()
        .map_err(|_| bad(format!("bad digest {segment:?} (0x and 32 bytes of hex)")))
}

/// The parameters of an order listing: `type` (required), `status` when `with_status` (placed
/// orders have one, signed orders do not), the filters, `limit` and `cursor`.
fn order_query(params: &mut Params, with_status: bool) -> Result<OrderQuery, QueryError> {
    let order_type = params
        .take("type", parse_order_type)?
        .ok_or_else(|| bad("type (bid or ask) is required"))?;
    let mut q = OrderQuery::new(order_type);
    if with_status && let Some(st) = params.take("status", parse_order_status)? {
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
    Ok(q)
}

impl Api<'_, '_> {
    /// Answers one request.
    pub fn handle(&self, method: &str, url: &str) -> Answer {
        let start = Instant::now();
        let answer = if method != "GET" {
            Answer::error(
                405,
                &format!("only GET is served (and POST at {SIGNED_ORDERS_PATH})"),
            )
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

    /// Answers a `POST` with its body (read by the caller, see [`MAX_BODY`]). Only
    /// [`SIGNED_ORDERS_PATH`] takes one: 201 with the digest when the order is added to the
    /// book, 200 when the book had it, 4xx with `{error, reason}` when it is refused.
    pub fn post(&self, url: &str, body: &[u8]) -> Answer {
        let start = Instant::now();
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let answer = if path != SIGNED_ORDERS_PATH {
            Answer::error(
                405,
                &format!("only GET is served at {path} (POST only at {SIGNED_ORDERS_PATH})"),
            )
        } else if !query.is_empty() {
            self.metrics.bad_queries.fetch_add(1, Ordering::Relaxed);
            Answer::error(400, "a post takes no query parameters")
        } else {
            self.posted(signed::accept(
                self.storage,
                self.signed,
                body,
                signed::unix_now(),
            ))
        };
        self.metrics
            .observe_query(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        answer
    }

    /// The answer to a post, accepted or refused.
    fn posted(&self, result: Result<(Posted, SignedOrderRow), Refusal>) -> Answer {
        match result {
            Ok((posted, row)) => {
                self.metrics.signed_accepted.fetch_add(1, Ordering::Relaxed);
                let status = match posted {
                    Posted::Created => 201,
                    Posted::Known => 200,
                };
                Answer::json(status, &serde_json::json!({ "digest": row.digest }))
            }
            Err(r) => {
                self.metrics.signed_refused.fetch_add(1, Ordering::Relaxed);
                if r.status() >= 500 {
                    tracing::error!(error = %r, "storing a signed order failed");
                } else {
                    tracing::debug!(error = %r, reason = r.reason(), "signed order refused");
                }
                Answer::refusal(&r)
            }
        }
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
                let q = order_query(&mut params, true)?;
                params.finish()?;
                Answer::json(200, &query::orders(s, &txn, &q)?)
            }
            ["v1", "signed-orders"] => {
                let q = order_query(&mut params, false)?;
                params.finish()?;
                let page = query::signed_orders(s, &txn, &q, signed::unix_now())?;
                Answer::json(200, &page)
            }
            ["v1", "signed-orders", digest] => {
                let digest = parse_digest(digest)?;
                params.finish()?;
                let row = s
                    .signed_order(&txn, digest)?
                    .filter(|r| r.live(signed::unix_now()))
                    .ok_or_else(|| {
                        QueryError::NotFound(format!("signed order {digest} is not in the book"))
                    })?;
                Answer::json(200, &row)
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
                // The side's open orders: placed (the book, under its read lock) and signed
                // (live in the signed-order book); O(n log n).
                let signed = query::live_signed(s, &txn, order_type, signed::unix_now())?;
                let stats = self.book.read(|b| {
                    sonm_market::MarketStats::of(
                        b.open_orders(order_type)
                            .chain(signed.iter().map(|r| (r.order.price, &r.order.benchmarks))),
                    )
                });
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
    pub fn serve(&self, server: &sonm_http_serve::Server, threads: usize, stop: &AtomicBool) {
        sonm_http_serve::serve(server, threads, stop, |request| {
            let answer = self.respond(request);
            sonm_http_serve::Reply {
                status: answer.status,
                content_type: answer.content_type,
                body: answer.body,
            }
        });
    }

    fn respond(&self, request: &mut sonm_http_serve::Request<'_>) -> Answer {
        let is_post = request.method() == "POST";
        // Only the one route that takes a body reads it; every other request is answered
        // from its method and URL alone.
        if is_post && request.url().split('?').next() == Some(SIGNED_ORDERS_PATH) {
            match request.body(MAX_BODY) {
                Ok(body) => self.post(request.url(), &body),
                Err(BodyError::TooLarge(max)) => self.posted(Err(Refusal::TooLarge(max))),
                Err(BodyError::Read(e)) => self.posted(Err(Refusal::Body(e.to_string()))),
            }
        } else if is_post {
            self.post(request.url(), &[])
        } else {
            self.handle(request.method(), request.url())
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
    // The listings of placed and of signed orders take the same filters; placed ones a status.
    let order_params = |with_status: bool| {
        let mut params = vec![param("type", "bid or ask", true)];
        if with_status {
            params.push(param(
                "status",
                "active (default), cancelled or matched",
                false,
            ));
        }
        params.extend([
            param("author", "address", false),
            param(
                "counterparty",
                "orders naming this counterparty or none",
                false,
            ),
            param("price_min", "wei/s, inclusive", false),
            param("price_max", "wei/s, inclusive", false),
            param("duration_min", "seconds, inclusive", false),
            param("duration_max", "seconds, inclusive", false),
            param(
                "netflags",
                "orders covering these: outbound,inbound,public-ip or bits",
                false,
            ),
            param(
                "identity_level",
                "orders requiring at most this level",
                false,
            ),
            param(
                "benchmarks",
                "orders with every benchmark >= these, e.g. cpu-cores=4,ram-size=8GiB",
                false,
            ),
            param("limit", "1..=1000, default 100", false),
            param("cursor", "next of the previous page", false),
        ]);
        serde_json::Value::Array(params)
    };
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
                "parameters": order_params(true),
                "responses": ok("a page of orders") } },
            "/v1/orders/{id}": { "get": { "summary": "One order", "parameters": [path_param("id")], "responses": ok("the order") } },
            "/v1/orders/{id}/matches": { "get": {
                "summary": "The best active orders matching an active order (the market crate's rule and order book)",
                "parameters": [path_param("id"), param("limit", "1..=1000, default 10", false)],
                "responses": ok("orders, best first") } },
            "/v1/signed-orders": {
                "get": {
                    "summary": "The signed-order book: live orders signed off chain (not expired, nonce not used or cancelled as far as indexed) of one type, sorted by price (then digest), filtered, paginated. Each item is {order, expiry, nonce, signature, digest}: what openDeal/quickBuy take for it (id 0)",
                    "parameters": order_params(false),
                    "responses": ok("a page of signed orders") },
                "post": {
                    "summary": "Publishes an order signed off chain by its author (EIP-712 SignedOrder under the Market's domain). Checked: the order is valid with id 0; expiry is in the future and at most the configured TTL (default 7 days) ahead; the signature is 65 bytes r, s, v with v 27/28 and a low s and recovers to the order's author; the nonce is not used or cancelled as far as indexed; the author has fewer live signed orders than the bound (default 256). Body at most 64 KiB",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["order", "expiry", "nonce", "signature"],
                        "additionalProperties": false,
                        "properties": {
                            "order": { "type": "object", "description": "the order as /v1/orders serves it, id 0" },
                            "expiry": { "type": "integer", "description": "unix seconds: the last second the chain takes it" },
                            "nonce": { "type": "string", "description": "decimal or 0x hex, up to 2^256-1" },
                            "signature": { "type": "string", "description": "0x and 65 bytes r, s, v" }
                        } } } } },
                    "responses": {
                        "201": { "description": "added: {\"digest\": 0x...}", "content": { "application/json": {} } },
                        "200": { "description": "the book had it already: {\"digest\": 0x...}", "content": { "application/json": {} } },
                        "400": { "description": "refused: {\"error\": message, \"reason\": bad_json | bad_body | bad_order | expired | expiry_too_far | malformed_signature | high_s_signature | unrecoverable_signature | signer_not_author}" },
                        "409": { "description": "{\"error\", \"reason\": nonce_used}: the nonce is used or cancelled on chain" },
                        "413": { "description": "{\"error\", \"reason\": too_large}: the body is over 64 KiB" },
                        "429": { "description": "{\"error\", \"reason\": author_limit}: the author has the most live signed orders the book keeps" }
                    } } },
            "/v1/signed-orders/{digest}": { "get": { "summary": "One live signed order by its EIP-712 digest", "parameters": [path_param("digest")], "responses": ok("the signed order") } },
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
                "summary": "Market depth and prices of one side's open orders (placed, and live signed ones), overall and per hardware class (power-of-two buckets of GPU count and CPU cores); nearest-rank price percentiles in SNM wei per second",
                "parameters": [param("type", "bid or ask", true)],
                "responses": ok("the statistics") } },
            "/v1/profiles/{address}": { "get": { "summary": "Identity level, master and certificates of an address", "parameters": [path_param("address")], "responses": ok("the profile") } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition" } } } }
        }
    })
}
