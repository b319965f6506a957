//! `sonm-worker`: the supplier's daemon as a library; the `sonm-worker` binary only parses its
//! arguments and configuration and wires these parts together.
//!
//! - [`inventory`]: what the box has (CPU, RAM, disk, GPUs through NVML loaded at run time).
//! - [`bench`]: the 13-value benchmark vector, measured once and cached in the state directory.
//! - [`plan`]: ask plans, slices of the box that never oversubscribe it, and the ASK orders
//!   derived from them (pure).
//! - [`billing`]: when to bill and when to close a deal (pure).
//! - [`state`]: plans, their orders, deals and tasks in LMDB (heed).
//! - [`chain`]: the Market contract through the bindings: place/cancel asks, watch deals, bill,
//!   close.
//! - [`proto`] and [`receipt`]: the task protocol over QUIC (ALPN [`proto::ALPN`]) and the
//!   usage receipts the worker signs with its Ethereum key.
//! - [`tasks`]: WASM tasks run by `sonm-wasm-runtime` within a deal's slice, and native
//!   containers run by runc ([`containers`]: the OCI config, the rootfs unpacking, runc).
//! - [`uploads`]: staged uploads (chunks into the state directory, verified at commit).
//! - [`worker`]: the daemon: state, chain loop, and the task service that only a deal's consumer
//!   may use; [`client`]: the customer's side of the protocol.
//! - [`admin`]: the supplier's admin protocol (ALPN [`admin::ADMIN_ALPN`]), for the worker's
//!   own key or its confirmed master only; [`metrics`]: Prometheus counters (`metrics_listen`).
//! - [`autotrader`]: `[autotrader]`, Optimus's view of the plans and the DWH client; the loop
//!   that re-plans the box and takes matching bids runs in [`worker`].
//! - [`signed`]: `[market] asks = "signed"`, which asks to sign, sign again, publish or withdraw,
//!   and which plan a used nonce sold (pure); the signing, the DWH and `cancelNonces` run in
//!   [`worker`].

pub mod admin;
pub mod autotrader;
pub mod bench;
pub mod billing;
pub mod chain;
pub mod client;
pub mod config;
pub mod containers;
pub mod inventory;
pub mod metrics;
pub mod plan;
pub mod proto;
pub mod receipt;
pub mod results;
pub mod signed;
pub mod state;
pub mod tasks;
pub mod uploads;
pub mod worker;

pub use config::Config;
pub use worker::{Worker, WorkerError};
