//! The node's TOML configuration.
//!
//! ```toml
//! # The customer's key: a Web3 Secret Storage (Ethereum keystore) JSON file,
//! # made by `sonm-node keygen`, and the file holding its password (optional: without it the
//! # node asks for the password on the terminal, and refuses to start without one).
//! keystore = "/etc/sonm/node-key.json"
//! password_file = "/etc/sonm/node-key.password"
//! # The chain's JSON-RPC endpoint, or several of the same chain in order of preference:
//! # requests fail over to the next on a transport error (refused, reset, timeout) and stay
//! # there; an endpoint on another chain is refused. Plain http:// only.
//! rpc_url = ["http://127.0.0.1:8545", "http://127.0.0.1:8546"]
//! addresses = "/etc/sonm/addresses.toml"   # written by sonm-deploy
//! listen = "127.0.0.1:15030"               # the HTTP/JSON API: keep it on localhost
//! quic_bind = "0.0.0.0:0"                  # the QUIC client socket towards workers
//! http_threads = 4
//! # Optional: a sonm-dwh's query API for market search. Without it the node reads the
//! # asks from the chain's logs itself (rescanned from the deploy block at each start).
//! dwh_url = "http://127.0.0.1:8090"
//!
//! # Optional: a sonm-rendezvous server (host:port). A worker that is neither under
//! # [workers] nor named by the request is resolved there and reached through it (a direct
//! # hole-punched path, else its relay); the server's Ethereum address, when given, is pinned.
//! rendezvous = "127.0.0.1:7666"
//! rendezvous_address = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
//!
//! # Where a worker's QUIC task service is, when known: the worker's Ethereum address (the
//! # deal's supplier) → host:port. A task request may also name it (`worker_addr`), which the
//! # node then remembers for that deal. Both come before the rendezvous.
//! [workers]
//! "0x70997970c51812dc3a010c7d01b50e0d17dc79c8" = "127.0.0.1:15010"
//!
//! # Optional: the main chain, for deposits and withdrawals through the Gates (the chain above,
//! # `rpc_url`, is the SONM chain). Its endpoint(s) as `rpc_url`, and its sonm-deploy file.
//! [main_chain]
//! rpc_url = "http://127.0.0.1:9545"
//! addresses = "/etc/sonm/main-addresses.toml"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sonm_contracts::RpcUrls;
use sonm_market::Address;

/// Default address of the HTTP/JSON API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:15030";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub keystore: PathBuf,
    /// Its first line is the keystore's password; without it the password is asked on the
    /// terminal at start (refused when stdin is not one).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// One endpoint (`"http://…"`) or a list of endpoints of the same chain.
    pub rpc_url: RpcUrls,
    pub addresses: PathBuf,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_quic_bind")]
    pub quic_bind: SocketAddr,
    #[serde(default = "default_threads")]
    pub http_threads: usize,
    /// A sonm-dwh's HTTP API (`http://host:port`) for market search; `None`: chain logs.
    #[serde(default)]
    pub dwh_url: Option<String>,
    /// A sonm-rendezvous server (`host:port`) through which workers of unknown address are
    /// reached.
    #[serde(default)]
    pub rendezvous: Option<String>,
    /// The rendezvous server's Ethereum address, pinned at the handshake (none: any).
    #[serde(default)]
    pub rendezvous_address: Option<Address>,
    /// Worker address → QUIC address of its task service.
    #[serde(default)]
    pub workers: BTreeMap<Address, SocketAddr>,
    /// The main chain, whose Gate moves SNM to and from this (the SONM) chain; none: no
    /// deposits or withdrawals.
    #[serde(default)]
    pub main_chain: Option<MainChainConfig>,
}

/// `[main_chain]`: the other side of the Gates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MainChainConfig {
    /// One endpoint or a list of the same chain's endpoints (failover), as `rpc_url`.
    pub rpc_url: RpcUrls,
    /// The main chain's addresses file, written by sonm-deploy there.
    pub addresses: PathBuf,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("a valid constant")
}

fn default_quic_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn default_threads() -> usize {
    4
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(url) = &config.dwh_url
            && !url.starts_with("http://")
        {
            // The HTTP client is built without TLS: the DWH is on a trusted network.
            return Err(format!("dwh_url {url:?} must be an http:// URL"));
        }
        if config.http_threads == 0 {
            return Err("http_threads must be at least 1".into());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc: String = include_str!("config.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .skip_while(|l| !l.starts_with("```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = Config::from_toml(&doc).unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.workers.len(), 1);
        assert_eq!(config.rendezvous.as_deref(), Some("127.0.0.1:7666"));
        assert!(config.rendezvous_address.is_some());
        assert_eq!(config.dwh_url.as_deref(), Some("http://127.0.0.1:8090"));
        assert_eq!(config.rpc_url.urls().len(), 2);
        let main = config.main_chain.as_ref().expect("[main_chain]");
        assert_eq!(main.rpc_url.urls().len(), 1);
        assert_eq!(main.addresses, Path::new("/etc/sonm/main-addresses.toml"));
        // A single endpoint, as older configurations have it, still works.
        let one = doc.replace(
            r#"["http://127.0.0.1:8545", "http://127.0.0.1:8546"]"#,
            r#""http://127.0.0.1:8545""#,
        );
        assert_eq!(Config::from_toml(&one).unwrap().rpc_url.urls().len(), 1);
        let no_scheme = doc.replace("http://127.0.0.1:8090", "127.0.0.1:8090");
        assert!(Config::from_toml(&no_scheme).is_err());
        assert!(Config::from_toml("keystore = 1").is_err());
    }
}
