//! A client of `sonm-dwh`'s query API (HTTP/JSON, `GET` only), shared by the node and the worker:
//! one place that knows how the DWH answers (404 = none, pages with an opaque `next` cursor).

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use sonm_market::Order;
use thiserror::Error;

/// The DWH's largest page (`limit` ≤ 1000).
pub const MAX_PAGE: usize = 1000;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A request that failed: the DWH unreachable (`status: None`), an HTTP status other than 200
/// and 404, or an answer that does not decode.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("DWH {url}: {message}")]
pub struct DwhError {
    pub url: String,
    pub status: Option<u16>,
    pub message: String,
}

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
        }
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
