//! A client of `sonm-dwh`'s query API (HTTP/JSON), shared by the node and the worker: one place
//! that knows how the DWH answers (404 = none, pages with an opaque `next` cursor, refusals with
//! a `reason`). Everything is a `GET` but publishing to the signed-order book
//! ([`Dwh::post_signed_order`]).

use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sonm_market::{Order, OrderType};
use thiserror::Error;

/// The DWH's largest page (`limit` ≤ 1000).
pub const MAX_PAGE: usize = 1000;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A request that failed: the DWH unreachable (`status: None`), an HTTP status other than 200
/// and 404 (201 too for a post), or an answer that does not decode.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("DWH {url}: {message}")]
pub struct DwhError {
    pub url: String,
    pub status: Option<u16>,
    pub message: String,
    /// The DWH's name for why it refused a post (`nonce_used`, `signer_not_author`, ...: see
    /// its README), when it gave one.
    pub reason: Option<String>,
}

/// A signed order as the DWH's book serves it: everything `openDeal`/`quickBuy` take for it
/// (`sonm_contracts::signed_ref(&order, expiry, nonce, signature)`) and its EIP-712 digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOrder {
    /// The order, id 0 (never placed).
    pub order: Order,
    /// The last unix second at which the chain takes it.
    pub expiry: u64,
    pub nonce: U256,
    /// 65 bytes r, s, v.
    pub signature: Bytes,
    pub digest: B256,
}

/// A signed order accepted by the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub digest: B256,
    /// Added now (201); `false`: the book had it already (200).
    pub created: bool,
}

/// Which signed orders to list: one side, optionally one author's and a price range (SNM wei
/// per second, inclusive). The DWH returns them cheapest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOrderQuery {
    pub order_type: OrderType,
    pub author: Option<Address>,
    pub price_min: Option<u128>,
    pub price_max: Option<u128>,
}

impl SignedOrderQuery {
    /// Every live signed order of one side.
    pub fn new(order_type: OrderType) -> Self {
        SignedOrderQuery {
            order_type,
            author: None,
            price_min: None,
            price_max: None,
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        let side = match self.order_type {
            OrderType::Ask => "ask",
            OrderType::Bid => "bid",
        };
        let mut p = vec![("type", side.to_owned())];
        p.extend(self.author.map(|a| ("author", a.to_string())));
        p.extend(self.price_min.map(|v| ("price_min", v.to_string())));
        p.extend(self.price_max.map(|v| ("price_max", v.to_string())));
        p
    }
}

/// The body of a post, as the DWH reads it.
#[derive(Serialize)]
struct SignedOrderPost<'a> {
    order: &'a Order,
    expiry: u64,
    /// Decimal: a JSON number could not carry every nonce exactly.
    nonce: String,
    signature: &'a Bytes,
}

#[derive(Deserialize)]
struct PostAnswer {
    digest: B256,
}

/// Where the signed-order book is served.
const SIGNED_ORDERS: &str = "/v1/signed-orders";

/// The DWH's order row: the order and what happened to it (other fields ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct OrderRow {
    pub order: Order,
    /// `active`, `cancelled` or `matched`.
    pub status: String,
}

/// One page of a listing.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Every row of a paged listing, or as many as the bound allowed.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// The bound stopped the walk while the DWH had more.
    pub truncated: bool,
}

/// The DWH at one base URL.
#[derive(Debug, Clone)]
pub struct Dwh {
    base: String,
    agent: ureq::Agent,
}

impl Dwh {
    /// The DWH at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn err(&self, status: Option<u16>, message: impl Into<String>) -> DwhError {
        DwhError {
            url: self.base.clone(),
            status,
            message: message.into(),
            reason: None,
        }
    }

    /// Publishes a signed order to the DWH's book (`POST /v1/signed-orders`): `order` (id 0)
    /// signed by its author for use until `expiry` with `nonce` (`sonm_contracts::sign_order`
    /// makes all of these). A refusal is a [`DwhError`] with the status and the DWH's `reason`.
    pub fn post_signed_order(
        &self,
        order: &Order,
        expiry: u64,
        nonce: U256,
        signature: &Bytes,
    ) -> Result<Posted, DwhError> {
        let body = SignedOrderPost {
            order,
            expiry,
            nonce: nonce.to_string(),
            signature,
        };
        let mut r = self
            .agent
            .post(format!("{}{SIGNED_ORDERS}", self.base))
            .send_json(&body)
            .map_err(|e| self.err(None, e.to_string()))?;
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .read_to_string()
            .map_err(|e| self.err(Some(status), format!("reading the answer: {e}")))?;
        match status {
            200 | 201 => serde_json::from_str::<PostAnswer>(&text)
                .map(|a| Posted {
                    digest: a.digest,
                    created: status == 201,
                })
                .map_err(|e| {
                    self.err(
                        Some(status),
                        format!("POST {SIGNED_ORDERS}: unexpected answer: {e}"),
                    )
                }),
            _ => {
                let reason = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["reason"].as_str().map(str::to_owned));
                Err(DwhError {
                    reason,
                    ..self.err(
                        Some(status),
                        format!("POST {SIGNED_ORDERS}: HTTP {status}: {text:.300}"),
                    )
                })
            }
        }
    }

    /// The live signed orders `query` selects, cheapest first, pages followed up to
    /// `max_items`.
    pub fn signed_orders(
        &self,
        query: &SignedOrderQuery,
        max_items: usize,
    ) -> Result<Listing<SignedOrder>, DwhError> {
        self.all(SIGNED_ORDERS, &query.params(), max_items)
    }

    /// The signed order with `digest`, if the book has it live.
    pub fn signed_order(&self, digest: B256) -> Result<Option<SignedOrder>, DwhError> {
        self.get(&format!("{SIGNED_ORDERS}/{digest}"), &[])
    }

    /// GETs `path` with `params`; `Ok(None)` on 404.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Option<T>, DwhError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in params {
            req = req.query(k, v);
        }
        let mut r = req.call().map_err(|e| self.err(None, e.to_string()))?;
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .read_to_string()
            .map_err(|e| self.err(Some(status), format!("reading the answer: {e}")))?;
        match status {
            200 => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| self.err(Some(200), format!("GET {path}: unexpected answer: {e}"))),
            404 => Ok(None),
            _ => Err(self.err(
                Some(status),
                format!("GET {path}: HTTP {status}: {text:.300}"),
            )),
        }
    }

    /// The rows of the paged listing at `path`, pages of [`MAX_PAGE`] followed by their
    /// cursors, stopping once `max_items` are read (then `truncated` if the DWH had more).
    /// A listing the DWH does not serve (404) is an error: the base is not a sonm-dwh.
    pub fn all<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
        max_items: usize,
    ) -> Result<Listing<T>, DwhError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut p = params.to_vec();
            p.push(("limit", MAX_PAGE.min(max_items.max(1)).to_string()));
            if let Some(c) = cursor.take() {
                p.push(("cursor", c));
            }
            let page: Page<T> = self
                .get(path, &p)?
                .ok_or_else(|| self.err(Some(404), format!("GET {path}: 404 (not a sonm-dwh?)")))?;
            items.extend(page.items);
            match page.next {
                Some(next) if items.len() < max_items => cursor = Some(next),
                Some(_) => {
                    items.truncate(max_items);
                    return Ok(Listing {
                        items,
                        truncated: true,
                    });
                }
                None => {
                    let truncated = items.len() > max_items;
                    items.truncate(max_items);
                    return Ok(Listing { items, truncated });
                }
            }
        }
    }
}
