//! `sonm-node`: the customer's local node as a library; the `sonm-node` binary only parses its
//! arguments and configuration and serves [`api::Api`] over HTTP on localhost.
//!
//! - [`keystore`]: the key, a standard Ethereum keystore (Web3 Secret Storage) + password file.
//! - [`chain`]: balances, allowance, quick-buy, deals and closing through `sonm-contracts`.
//! - [`market`]: where active asks come from ([`market::AskSource`]: a sonm-dwh's query API
//!   when `dwh_url` is set, the chain's logs otherwise) and which match a spec (`sonm-market`'s
//!   rule).
//! - [`node`]: the operations, including WASM tasks on the deal's worker over QUIC
//!   (`sonm-worker`'s client, which verifies each result's signed receipt).
//! - [`records`]: the node's own orders, change requests and profiles as the API shows them,
//!   read from the DWH when `dwh_url` is set, else from the chain (`chain`).
//! - [`gates`]: deposits and withdrawals of SNM between the main chain (`[main_chain]`) and
//!   the SONM chain through the Gates.
//! - [`admin`]: worker admin for suppliers (`/v1/worker/...`), relayed to the worker's admin
//!   service over QUIC; master confirm on chain.
//! - [`api`]: the HTTP/JSON API (sonm-http-serve), its routes and its OpenAPI document.

pub mod admin;
pub mod api;
pub mod chain;
pub mod config;
pub mod error;
pub mod gates;
pub mod keystore;
pub mod market;
pub mod node;
pub mod records;

pub use config::Config;
pub use error::ApiError;
pub use node::Node;

/// Runs a future to completion on this thread, with a tokio reactor for alloy's HTTP client.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(future))
}
