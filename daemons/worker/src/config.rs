//! The worker's configuration, `/etc/sonm/worker.toml`:
//!
//! ```toml
//! state_dir = "/var/lib/sonm/worker"
//! key_file = "/etc/sonm/worker.key"        # hex secp256k1 key: the worker's Ethereum identity
//! # The chain's JSON-RPC endpoint, or several of the same chain in order of preference:
//! # requests fail over to the next on a transport error (refused, reset, timeout) and stay
//! # there; an endpoint on another chain is refused. Plain http:// only.
//! rpc_url = ["http://127.0.0.1:8545", "http://127.0.0.1:8546"]
//! addresses = "/etc/sonm/addresses.toml"   # written by sonm-deploy
//! listen = "0.0.0.0:15010"                 # QUIC task service (ALPN sonm-worker/2)
//! netflags = "outbound,inbound"            # what the box offers
//! poll_interval_ms = 2000
//! wasm_metering = "epoch"   # or "fuel": how tasks run unless they ask for fuel (see below)
//! containers = false        # true: also run native containers with runc (needs root)
//! # Containers whose plan offers `outbound` get a veth with NAT: one /30 each of this subnet;
//! # they never reach the host itself, other containers, 169.254.0.0/16 (metadata) or these
//! # ranges (the supplier's LAN; default: every RFC 1918 range and 100.64.0.0/10).
//! container_subnet = "10.217.0.0/16"
//! container_denied = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]
//! # How long finished tasks' results (outputs, stdout, stderr; kept on disk under
//! # <state_dir>/results) stay fetchable after their deal ended, in seconds.
//! result_retention_s = 86400
//! master = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"   # optional: receives the payouts
//! # Optional: publish this worker to a sonm-rendezvous server (host:port) from the task
//! # service's own UDP socket, so that customers behind NAT (or without its address) reach
//! # it; the server's Ethereum address, when given, is pinned at the handshake.
//! rendezvous = "127.0.0.1:7666"
//! rendezvous_address = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
//! # Optional: Prometheus metrics over HTTP (keep it on localhost or a scrape network).
//! metrics_listen = "127.0.0.1:9110"
//! # Optional: the sonm-dwh that signed asks are published to (default: [autotrader]'s dwh_url).
//! dwh_url = "http://127.0.0.1:8090"
//!
//! # How the plans' asks are offered: "placed" (default: placeOrder on chain, cancelOrder to
//! # withdraw) or "signed" (signed off chain, published to the DWH, withdrawn with one
//! # cancelNonces per 256 asks; needs dwh_url or [autotrader]'s). A signed ask expires
//! # signed_ttl_s after it is signed and is signed again (same nonce) before that.
//! [market]
//! asks = "placed"
//! signed_ttl_s = 3600
//!
//! [benchmarks]
//! wasm_score_module = "/usr/share/sonm/wasm-score.wasm"
//!
//! [billing]
//! interval = 600
//!
//! [[plans]]
//! name = "half"
//! cpu_cores = 1
//! ram = "1GiB"
//! storage = "10GB"
//! price = 1000000000      # SNM wei per second
//! duration = 3600         # seconds; 0 = spot
//! netflags = "outbound"
//!
//! # Optional: the autotrader (Optimus) re-plans the box against the DWH's open bids and the
//! # matcher takes bids for our asks (src/autotrader.rs documents every key).
//! [autotrader]
//! dwh_url = "http://127.0.0.1:8090"
//! interval = 60                 # seconds between rounds
//! [autotrader.floor]            # SNM wei per unit-hour (or [autotrader.floor_usd], micro-USD)
//! core_hour = 100000000000000
//! ram_gib_hour = 20000000000000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sonm_market::{Address, Benchmark, IdentityLevel, NetFlags};

use crate::bench::BenchConfig;
use crate::billing::BillingPolicy;
use crate::plan::{PlanSpec, Resources};

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
    #[error("plan {plan:?}: {field}: {message}")]
    Plan {
        plan: String,
        field: &'static str,
        message: String,
    },
    #[error(
        "[market] asks = \"signed\" publishes the asks to a DWH: set dwh_url (or [autotrader]'s dwh_url)"
    )]
    SignedWithoutDwh,
    #[error(
        "[market] signed_ttl_s = {0}: it must be {MIN_SIGNED_TTL_S}..={MAX_SIGNED_TTL_S} seconds \
         (the DWH takes signed orders that expire at most 7 days ahead)"
    )]
    SignedTtl(u64),
}

/// Shortest lifetime of a signed ask: it is signed again when a third of it is left, which
/// must leave the chain loop (`poll_interval_ms`) a few rounds to do it.
pub const MIN_SIGNED_TTL_S: u64 = 10;
/// Longest: the DWH refuses a signed order expiring more than 7 days ahead.
pub const MAX_SIGNED_TTL_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub state_dir: PathBuf,
    pub key_file: PathBuf,
    /// One endpoint (`"http://…"`) or a list of endpoints of the same chain.
    pub rpc_url: sonm_contracts::RpcUrls,
    pub addresses: PathBuf,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Network access the box offers (`outbound,inbound,public-ip` or `none`).
    #[serde(default = "default_netflags")]
    pub netflags: String,
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
    /// Tasks that may run at once on the whole box (the runtime's pool slots).
    #[serde(default = "default_max_tasks")]
    pub max_concurrent_tasks: u32,
    /// Longest wall time of a task on a spot deal, milliseconds.
    #[serde(default = "default_max_wall")]
    pub max_task_wall_time_ms: u64,
    /// How tasks are metered unless they ask for fuel. `epoch` (default): wall time and cancel
    /// only, the fastest code that can still be stopped; deals are billed per second, so no
    /// fuel is needed to bill. `fuel`: every task counts fuel (a few percent slower). A task
    /// that asks for `fuel_metered` (or caps fuel) always gets a fuel-metered run.
    #[serde(default)]
    pub wasm_metering: WasmMetering,
    /// Run native containers (`runc`, from `PATH`) for deals' consumers. Off by default: a
    /// supplier opts in, and the worker must then run as root (see the README and
    /// `systemd/sonm-worker.service.d/containers.conf`). When on but runc cannot run here,
    /// container tasks are refused with the reason.
    #[serde(default)]
    pub containers: bool,
    /// The private subnet outbound containers get their addresses from (a /30 per task).
    #[serde(default = "default_container_subnet")]
    pub container_subnet: String,
    /// Destinations outbound containers may not reach (the supplier's LAN), besides the host,
    /// the other containers and link-local addresses, which are always denied.
    #[serde(default = "default_container_denied")]
    pub container_denied: Vec<String>,
    /// Seconds a finished task's result (kept on disk under `<state_dir>/results`, across
    /// restarts) stays fetchable after its deal ended; then it is removed (the receipt stays).
    #[serde(default = "default_result_retention")]
    pub result_retention_s: u64,
    /// The master address that receives this worker's payouts (it confirms the registration
    /// on chain with `confirmWorker`); none: the worker is paid itself.
    #[serde(default)]
    pub master: Option<Address>,
    /// A sonm-rendezvous server (`host:port`) to publish this worker to; none: customers
    /// must know the task service's address.
    #[serde(default)]
    pub rendezvous: Option<String>,
    /// The rendezvous server's Ethereum address, pinned at the handshake (none: any).
    #[serde(default)]
    pub rendezvous_address: Option<Address>,
    /// Where to serve Prometheus metrics over HTTP (e.g. `127.0.0.1:9110`); none: not served.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The sonm-dwh that signed asks are published to; none: `[autotrader]`'s `dwh_url`.
    #[serde(default)]
    pub dwh_url: Option<String>,
    /// How the plans' asks are offered (`[market]`).
    #[serde(default)]
    pub market: MarketConfig,
    #[serde(default)]
    pub benchmarks: BenchConfig,
    #[serde(default)]
    pub billing: BillingPolicy,
    #[serde(default)]
    pub plans: Vec<PlanConfig>,
    /// The autotrader and the matcher (`crate::autotrader`); none: the plans are `[[plans]]`.
    #[serde(default)]
    pub autotrader: Option<crate::autotrader::AutotraderConfig>,
}

/// `[market]`: how the plans' asks are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    #[serde(default)]
    pub asks: AskMode,
    /// Seconds a signed ask stays buyable after it is signed (its `expiry`); it is signed
    /// again, with the same nonce, when a third of that is left.
    #[serde(default = "default_signed_ttl")]
    pub signed_ttl_s: u64,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            asks: AskMode::default(),
            signed_ttl_s: default_signed_ttl(),
        }
    }
}

/// How a plan's ask reaches the market.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AskMode {
    /// `placeOrder` on chain (≈ 69k gas; withdrawn with `cancelOrder`).
    #[default]
    Placed,
    /// Signed off chain (EIP-712) and published to the DWH's signed-order book (free; withdrawn
    /// with `cancelNonces`, one transaction per 256 asks).
    Signed,
}

/// The worker's production metering (`wasm_metering`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WasmMetering {
    #[default]
    Epoch,
    Fuel,
}

impl WasmMetering {
    pub fn runtime_metering(self) -> sonm_wasm_runtime::Metering {
        match self {
            WasmMetering::Epoch => sonm_wasm_runtime::Metering::EpochOnly,
            WasmMetering::Fuel => sonm_wasm_runtime::Metering::Fuel,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15010))
}
fn default_netflags() -> String {
    "outbound".into()
}
fn default_container_subnet() -> String {
    crate::containers::DEFAULT_SUBNET.into()
}
fn default_container_denied() -> Vec<String> {
    crate::containers::DEFAULT_DENIED
        .iter()
        .map(|d| d.to_string())
        .collect()
}
fn default_poll() -> u64 {
    2000
}
fn default_max_tasks() -> u32 {
    8
}
fn default_max_wall() -> u64 {
    3_600_000
}
fn default_result_retention() -> u64 {
    24 * 3600
}
fn default_signed_ttl() -> u64 {
    3600
}

/// A plan as written in the configuration (human units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    #[serde(default)]
    pub cpu_cores: u32,
    /// `"2GiB"`, `"512MB"`, or a number of bytes.
    #[serde(default)]
    pub ram: Option<String>,
    #[serde(default)]
    pub storage: Option<String>,
    #[serde(default)]
    pub gpus: u32,
    /// SNM wei per second.
    pub price: u64,
    /// Seconds; 0 = spot.
    #[serde(default)]
    pub duration: u64,
    #[serde(default = "default_netflags")]
    pub netflags: String,
    #[serde(default)]
    pub identity_level: IdentityLevel,
}

impl PlanConfig {
    pub fn to_spec(&self) -> Result<PlanSpec, ConfigError> {
        let bytes = |field: &'static str, text: &Option<String>| -> Result<u64, ConfigError> {
            match text {
                None => Ok(0),
                Some(t) => Benchmark::RamSize
                    .unit()
                    .parse(t)
                    .map_err(|m| ConfigError::Plan {
                        plan: self.name.clone(),
                        field,
                        message: m.into(),
                    }),
            }
        };
        Ok(PlanSpec {
            name: self.name.clone(),
            slice: Resources {
                cpu_cores: self.cpu_cores,
                ram_bytes: bytes("ram", &self.ram)?,
                storage_bytes: bytes("storage", &self.storage)?,
                gpus: self.gpus,
            },
            netflags: self
                .netflags
                .parse()
                .map_err(|e: sonm_market::OrderError| ConfigError::Plan {
                    plan: self.name.clone(),
                    field: "netflags",
                    message: e.to_string(),
                })?,
            price: u128::from(self.price),
            duration: self.duration,
            identity_level: self.identity_level,
        })
    }
}

impl Config {
    /// A configuration with what has no default given and everything else as a TOML file that
    /// names only these four keys gets it (the same defaults as serde's). Code and tests build
    /// on it with `Config { .., ..Config::new(..) }`, so a new optional key touches one place.
    pub fn new(
        state_dir: PathBuf,
        key_file: PathBuf,
        rpc_url: sonm_contracts::RpcUrls,
        addresses: PathBuf,
    ) -> Self {
        Self {
            state_dir,
            key_file,
            rpc_url,
            addresses,
            listen: default_listen(),
            netflags: default_netflags(),
            poll_interval_ms: default_poll(),
            max_concurrent_tasks: default_max_tasks(),
            max_task_wall_time_ms: default_max_wall(),
            wasm_metering: WasmMetering::default(),
            containers: false,
            container_subnet: default_container_subnet(),
            container_denied: default_container_denied(),
            result_retention_s: default_result_retention(),
            master: None,
            rendezvous: None,
            rendezvous_address: None,
            metrics_listen: None,
            dwh_url: None,
            market: MarketConfig::default(),
            benchmarks: BenchConfig::default(),
            billing: BillingPolicy::default(),
            plans: Vec::new(),
            autotrader: None,
        }
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// What the types alone cannot say: signed asks need a DWH and a TTL the DWH takes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.market.asks == AskMode::Signed {
            if self.dwh().is_none() {
                return Err(ConfigError::SignedWithoutDwh);
            }
            let ttl = self.market.signed_ttl_s;
            if !(MIN_SIGNED_TTL_S..=MAX_SIGNED_TTL_S).contains(&ttl) {
                return Err(ConfigError::SignedTtl(ttl));
            }
        }
        Ok(())
    }

    /// The DWH: `dwh_url`, else `[autotrader]`'s.
    pub fn dwh(&self) -> Option<&str> {
        self.dwh_url
            .as_deref()
            .or(self.autotrader.as_ref().map(|a| a.dwh_url.as_str()))
    }

    /// Whether the plans' asks are signed and published rather than placed.
    pub fn signed_asks(&self) -> bool {
        self.market.asks == AskMode::Signed
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    pub fn offered_netflags(&self) -> Result<NetFlags, ConfigError> {
        self.netflags
            .parse()
            .map_err(|e: sonm_market::OrderError| ConfigError::Parse {
                path: PathBuf::from("netflags"),
                message: e.to_string(),
            })
    }

    /// Outbound networking for containers (`container_subnet`, `container_denied`).
    pub fn container_net(&self) -> Result<crate::containers::NetConfig, ConfigError> {
        crate::containers::NetConfig::new(&self.container_subnet, &self.container_denied).map_err(
            |e| ConfigError::Parse {
                path: PathBuf::from("container_subnet/container_denied"),
                message: e.to_string(),
            },
        )
    }

    pub fn plan_specs(&self) -> Result<Vec<PlanSpec>, ConfigError> {
        self.plans.iter().map(PlanConfig::to_spec).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_has_the_file_defaults() {
        let toml = r#"
            state_dir = "/s"
            key_file = "/k"
            rpc_url = "http://127.0.0.1:8545"
            addresses = "/a"
        "#;
        let parsed = Config::from_toml(toml, Path::new("w.toml")).unwrap();
        let built = Config::new(
            "/s".into(),
            "/k".into(),
            "http://127.0.0.1:8545".parse().unwrap(),
            "/a".into(),
        );
        assert_eq!(built, parsed);
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//! ").unwrap_or("").to_owned() + "\n")
            .collect();
        let c = Config::from_toml(&example, Path::new("example")).unwrap();
        assert_eq!(c.listen.port(), 15010);
        assert_eq!(c.rpc_url.urls().len(), 2);
        assert_eq!(c.wasm_metering, WasmMetering::Epoch);
        assert_eq!(c.result_retention_s, 86_400);
        assert_eq!(c.rendezvous.as_deref(), Some("127.0.0.1:7666"));
        assert!(c.rendezvous_address.is_some());
        let autotrader = c.autotrader.as_ref().expect("[autotrader]");
        assert_eq!(autotrader.floor.core_hour, 100_000_000_000_000);
        let plans = c.plan_specs().unwrap();
        assert_eq!(plans[0].slice.ram_bytes, 1 << 30);
        assert_eq!(plans[0].slice.storage_bytes, 10_000_000_000);
        assert_eq!(plans[0].netflags, NetFlags::OUTBOUND);
        assert_eq!(
            c.offered_netflags().unwrap(),
            NetFlags::OUTBOUND.union(NetFlags::INBOUND)
        );
        assert!(Config::from_toml("state_dir = 1", Path::new("x")).is_err());
    }

    #[test]
    fn signed_asks_need_a_dwh_and_a_ttl_the_dwh_takes() {
        let base = "state_dir = \"/s\"\nkey_file = \"/k\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
                    addresses = \"/a\"\n";
        let parse = |extra: &str| Config::from_toml(&format!("{base}{extra}"), Path::new("w"));
        let placed = parse("").unwrap();
        assert_eq!(placed.market.asks, AskMode::Placed);
        assert!(!placed.signed_asks());
        assert!(matches!(
            parse("[market]\nasks = \"signed\"\n"),
            Err(ConfigError::SignedWithoutDwh)
        ));
        let signed = parse("dwh_url = \"http://d:1\"\n[market]\nasks = \"signed\"\n").unwrap();
        assert!(signed.signed_asks());
        assert_eq!(signed.dwh(), Some("http://d:1"));
        assert_eq!(signed.market.signed_ttl_s, 3600);
        // The autotrader's DWH serves too.
        let at =
            parse("[market]\nasks = \"signed\"\n[autotrader]\ndwh_url = \"http://a:2\"\n").unwrap();
        assert_eq!(at.dwh(), Some("http://a:2"));
        for ttl in [0, MIN_SIGNED_TTL_S - 1, MAX_SIGNED_TTL_S + 1] {
            let err = parse(&format!(
                "dwh_url = \"http://d:1\"\n[market]\nasks = \"signed\"\nsigned_ttl_s = {ttl}\n"
            ))
            .unwrap_err();
            assert!(
                matches!(err, ConfigError::SignedTtl(t) if t == ttl),
                "{err}"
            );
        }
        let err = parse("[market]\nasks = \"offchain\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = parse("[market]\nsigned = true\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        // The documented example's `[market]` is the default.
        let doc: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//! ").unwrap_or("").to_owned() + "\n")
            .collect();
        let example = Config::from_toml(&doc, Path::new("example")).unwrap();
        assert_eq!(example.market, MarketConfig::default());
        assert_eq!(example.dwh(), Some("http://127.0.0.1:8090"));
    }

    #[test]
    fn wasm_metering_defaults_to_epoch_and_refuses_unknown_kinds() {
        let example: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .filter(|l| !l.contains("wasm_metering"))
            .map(|l| l.strip_prefix("//! ").unwrap_or("").to_owned() + "\n")
            .collect();
        // Top-level keys go before the first table.
        let parse = |line: &str| Config::from_toml(&format!("{line}\n{example}"), Path::new("w"));
        assert_eq!(parse("").unwrap().wasm_metering, WasmMetering::Epoch);
        let fuel = parse("wasm_metering = \"fuel\"").unwrap().wasm_metering;
        assert_eq!(fuel.runtime_metering(), sonm_wasm_runtime::Metering::Fuel);
        let err = parse("wasm_metering = \"none\"").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { message, .. } if message.contains("wasm_metering")),
            "{err}"
        );
    }
}
