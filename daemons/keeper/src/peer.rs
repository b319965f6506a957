//! Between keepers: each serves its own signatures over HTTP/JSON (sonm-http-serve) and fetches the
//! others' (ureq). Nothing fetched is trusted: the answer is only bytes, handed to the core,
//! which recovers the signer and checks it against the configured keepers.
//!
//! - `GET /v1/signatures/{src_chain}/{nonce}` → 200
//!   `{"keeper": "0x…", "src_chain": n, "nonce": n, "signature": "0x…65 bytes"}`, or 404 when
//!   this keeper has not signed that transfer (not seen, not confirmed yet, or not a keeper);
//! - `GET /v1/status` → 200 `{"keeper": "0x…"}`.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use alloy::primitives::{Address, hex};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::TransferKey;
use crate::store::Store;

/// The most bytes read from a peer's answer (a signature answer is about 250).
const MAX_ANSWER: u64 = 4096;

/// A signature as served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureAnswer {
    /// Who claims to have signed: informative only, the signer is recovered.
    pub keeper: Address,
    pub src_chain: u64,
    pub nonce: u64,
    /// 65 bytes, `0x`-prefixed hex: r, s, v (27 or 28).
    pub signature: String,
}

/// The answer to one request: status and JSON body.
fn answer(store: &Store<'_>, me: Address, method: &str, url: &str) -> (u16, String) {
    let error =
        |status, message: &str| (status, serde_json::json!({ "error": message }).to_string());
    if method != "GET" {
        return error(405, "only GET");
    }
    let path = url.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "status"] => (200, serde_json::json!({ "keeper": me }).to_string()),
        ["v1", "signatures", chain, nonce] => {
            let (Ok(src_chain), Ok(nonce)) = (chain.parse::<u64>(), nonce.parse::<u64>()) else {
                return error(400, "chain id and nonce are decimal integers");
            };
            let key = TransferKey { src_chain, nonce };
            match store.signature(key) {
                Ok(Some(sig)) => {
                    let body = SignatureAnswer {
                        keeper: me,
                        src_chain,
                        nonce,
                        signature: hex::encode_prefixed(sig),
                    };
                    match serde_json::to_string(&body) {
                        Ok(text) => (200, text),
                        Err(e) => error(500, &e.to_string()),
                    }
                }
                Ok(None) => error(404, "not signed by this keeper"),
                Err(e) => {
                    tracing::error!(error = %e, "reading a signature");
                    error(500, "storage error")
                }
            }
        }
        _ => error(404, "no such route"),
    }
}

/// Serves `store`'s signatures on `server` with `threads` workers until `stop` is set.
pub fn serve(
    server: &sonm_http_serve::Server,
    store: &Store<'_>,
    me: Address,
    threads: usize,
    stop: &AtomicBool,
) {
    sonm_http_serve::serve(server, threads, stop, |request| {
        let (status, body) = answer(store, me, request.method(), request.url());
        sonm_http_serve::Reply::json(status, body)
    });
}

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: not a signature answer: {message}")]
    Garbage { url: String, message: String },
}

/// Fetches peers' signatures.
#[derive(Debug, Clone)]
pub struct Peers {
    agent: ureq::Agent,
    urls: Vec<String>,
}

impl Peers {
    pub fn new(urls: &[String], timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Peers {
            agent,
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The signature bytes one peer serves for `key`: `Ok(None)` when it has none.
    pub fn fetch(&self, peer: &str, key: TransferKey) -> Result<Option<Vec<u8>>, FetchError> {
        let url = format!("{peer}/v1/signatures/{}/{}", key.src_chain, key.nonce);
        let http = |message: String| FetchError::Http {
            url: url.clone(),
            message,
        };
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(FetchError::Status { url, status });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| http(e.to_string()))?;
        let garbage = |message: String| FetchError::Garbage {
            url: url.clone(),
            message,
        };
        let parsed: SignatureAnswer =
            serde_json::from_str(&body).map_err(|e| garbage(e.to_string()))?;
        if parsed.src_chain != key.src_chain || parsed.nonce != key.nonce {
            return Err(garbage("for another transfer".into()));
        }
        let bytes = hex::decode(&parsed.signature).map_err(|e| garbage(e.to_string()))?;
        Ok(Some(bytes))
    }
}
