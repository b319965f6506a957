//! The daemon's configuration and its wiring: storage, order book, follower and
//! HTTP workers on scoped threads until a stop flag is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy::transports::http::reqwest::Url;
use serde::Deserialize;
use sonm_contracts::Addresses;
use thiserror::Error;

use crate::api::Api;
use crate::follower::{FollowError, Follower, FollowerConfig, Metrics, SharedBook};
use crate::signed::SignedPolicy;
use crate::storage::{self, DbError, Storage, StorageError};

/// `sonm-dwh`'s TOML configuration. Relative paths are relative to the working
/// directory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// JSON-RPC endpoints of one chain (plain HTTP): a list or one string. Also accepted as
    /// `rpc_url`, the key sonm-node and sonm-worker use for the same thing.
    #[serde(
        alias = "rpc_url",
        deserialize_with = "sonm_contracts::rpc::one_or_many"
    )]
    pub endpoints: Vec<String>,
    /// The addresses file written by `sonm-deploy`.
    pub addresses: PathBuf,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The LMDB directory.
    pub data_dir: PathBuf,
    #[serde(default = "defaults::confirmations")]
    pub confirmations: u64,
    #[serde(default = "defaults::batch_blocks")]
    pub batch_blocks: u64,
    #[serde(default = "defaults::keep_blocks")]
    pub keep_blocks: u64,
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "defaults::max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// The largest the LMDB file may grow, in MiB.
    #[serde(default = "defaults::map_size_mib")]
    pub map_size_mib: usize,
    #[serde(default = "defaults::http_threads")]
    pub http_threads: usize,
    /// The furthest ahead a signed order's expiry may be, in seconds.
    #[serde(default = "defaults::signed_order_max_ttl_s")]
    pub signed_order_max_ttl_s: u64,
    /// The most live signed orders one author may have in the book.
    #[serde(default = "defaults::signed_orders_per_author")]
    pub signed_orders_per_author: usize,
    /// The most signed orders the book holds (all authors).
    #[serde(default = "defaults::signed_orders_max")]
    pub signed_orders_max: usize,
}

mod defaults {
    pub(super) fn confirmations() -> u64 {
        12
    }
    pub(super) fn batch_blocks() -> u64 {
        1000
    }
    pub(super) fn keep_blocks() -> u64 {
        1024
    }
    pub(super) fn poll_interval_ms() -> u64 {
        1000
    }
    pub(super) fn max_backoff_ms() -> u64 {
        30_000
    }
    pub(super) fn map_size_mib() -> usize {
        16 * 1024
    }
    pub(super) fn http_threads() -> usize {
        4
    }
    pub(super) fn signed_order_max_ttl_s() -> u64 {
        7 * 24 * 3600
    }
    pub(super) fn signed_orders_per_author() -> usize {
        256
    }
    /// About 1 GB of LMDB (orders, their indexes and undo entries).
    pub(super) fn signed_orders_max() -> usize {
        1_000_000
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("endpoint {0:?} is not a URL")]
    Endpoint(String),
    #[error("no endpoints configured")]
    NoEndpoints,
}

impl Config {
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.follower()?;
        Ok(config)
    }

    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// The follower's settings.
    pub fn follower(&self) -> Result<FollowerConfig, ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| Url::parse(e).map_err(|_| ConfigError::Endpoint(e.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FollowerConfig {
            endpoints,
            confirmations: self.confirmations,
            batch_blocks: self.batch_blocks.max(1),
            keep_blocks: self.keep_blocks,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
        })
    }
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// Runs the DWH until `stop` is set: opens the store, loads the order book, follows
/// the chain on one thread and serves the API on `http_threads` others.
/// `on_listen` is told the bound address.
pub fn run(
    config: &Config,
    addresses: &Addresses,
    stop: &AtomicBool,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), DaemonError> {
    let follower_config = config.follower()?;
    let env = storage::open_env(&config.data_dir, config.map_size_mib << 20)?;
    let storage = Storage::open(&env)?;
    let book = SharedBook::load(&storage)?;
    let metrics = Metrics::default();
    if let Some(cp) = storage.checkpoint()? {
        metrics.checkpoint.store(cp.number, Ordering::Relaxed);
        tracing::info!(block = cp.number, hash = %cp.hash, "resuming from the checkpoint");
    }
    let mut follower = Follower::new(&storage, &book, &metrics, addresses, follower_config)?;
    let (server, bound) =
        sonm_http_serve::bind(config.listen).map_err(|e| DaemonError::Listen {
            addr: e.addr,
            reason: e.reason,
        })?;
    tracing::info!(%bound, "API listening");
    on_listen(bound);
    let signed = SignedPolicy::new(
        addresses,
        config.signed_order_max_ttl_s,
        config.signed_orders_per_author,
        config.signed_orders_max,
    );
    let api = Api {
        storage: &storage,
        book: &book,
        metrics: &metrics,
        signed: &signed,
    };
    std::thread::scope(|scope| {
        scope.spawn(|| follower.run(stop));
        api.serve(&server, config.http_threads, stop);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_a_list_or_one_string_and_rpc_url_is_their_other_name() {
        let rest = "addresses = \"a.toml\"\nlisten = \"127.0.0.1:8090\"\ndata_dir = \"d\"\n";
        let parse = |first: &str| Config::from_toml(&format!("{first}\n{rest}"), Path::new("x"));
        let two = r#"["http://127.0.0.1:8545", "http://10.0.0.2:8545"]"#;
        for text in [format!("endpoints = {two}"), format!("rpc_url = {two}")] {
            assert_eq!(parse(&text).unwrap().endpoints.len(), 2, "{text}");
        }
        let one = parse(r#"rpc_url = "http://127.0.0.1:8545""#).unwrap();
        assert_eq!(one.endpoints, ["http://127.0.0.1:8545"]);
        // Both names at once is a mistake, as is an empty list.
        assert!(parse(&format!("endpoints = {two}\nrpc_url = {two}")).is_err());
        assert!(parse("endpoints = []").is_err());
    }
}
