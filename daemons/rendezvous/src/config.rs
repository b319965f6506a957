//! The daemon's TOML configuration (`/etc/sonm/rendezvous.toml`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sonm_rendezvous_proto::{Limits, Rate};

use crate::relay::RelayLimits;
use crate::server::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

/// The file as written; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// UDP address of the QUIC control endpoint.
    pub listen: SocketAddr,
    /// IP the relay sockets bind to.
    pub relay_ip: IpAddr,
    /// IP advertised for relay sessions (required when `relay_ip` is unspecified).
    pub relay_advertise_ip: Option<IpAddr>,
    /// The server's Ethereum secret key, 32 bytes hex; created (mode 0600) when missing.
    pub key_file: PathBuf,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: String,
    pub idle_timeout_secs: u64,
    /// New connections per second from one IP, and their burst.
    pub handshakes_per_ip_per_sec: u64,
    pub handshake_burst_per_ip: u64,
    pub limits: FileLimits,
    pub relay: RelayLimits,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7666)),
            relay_ip: IpAddr::from([0, 0, 0, 0]),
            relay_advertise_ip: None,
            key_file: PathBuf::from("/var/lib/sonm/rendezvous.key"),
            log_level: "info".into(),
            idle_timeout_secs: 60,
            handshakes_per_ip_per_sec: 20,
            handshake_burst_per_ip: 50,
            limits: FileLimits::default(),
            relay: RelayLimits::default(),
        }
    }
}

/// [`Limits`] in file units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileLimits {
    pub record_ttl_secs: u64,
    pub max_clock_skew_secs: u64,
    pub max_records: usize,
    pub max_candidates: usize,
    pub requests_per_sec: u64,
    pub request_burst: u64,
    pub max_peers: usize,
    pub intro_ttl_secs: u64,
    pub punch_delay_ms: u32,
    pub max_relay_sessions: usize,
    pub max_relay_sessions_per_peer: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            record_ttl_secs: l.record_ttl_ms / 1000,
            max_clock_skew_secs: l.max_clock_skew_s,
            max_records: l.max_records,
            max_candidates: l.max_candidates,
            requests_per_sec: l.requests.per_s,
            request_burst: l.requests.burst,
            max_peers: l.max_peers,
            intro_ttl_secs: l.intro_ttl_ms / 1000,
            punch_delay_ms: l.punch_delay_ms,
            max_relay_sessions: l.max_relay_sessions,
            max_relay_sessions_per_peer: l.max_relay_sessions_per_peer,
        }
    }
}

impl FileConfig {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.server_config()?;
        Ok(config)
    }

    /// The server's settings; checks what the types cannot.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        if self.relay_ip.is_unspecified() && self.relay_advertise_ip.is_none() {
            return Err(ConfigError::Invalid(
                "relay_advertise_ip is required when relay_ip is unspecified (0.0.0.0 or ::)",
            ));
        }
        let l = &self.limits;
        if l.requests_per_sec == 0
            || l.request_burst == 0
            || self.handshakes_per_ip_per_sec == 0
            || self.handshake_burst_per_ip == 0
        {
            return Err(ConfigError::Invalid(
                "request and handshake rates and bursts must be positive",
            ));
        }
        if self.relay.bytes_per_s == 0 || self.relay.burst_bytes < 1500 {
            return Err(ConfigError::Invalid(
                "relay.bytes_per_s must be positive and relay.burst_bytes at least one datagram (1500)",
            ));
        }
        Ok(ServerConfig {
            listen: self.listen,
            relay_ip: self.relay_ip,
            relay_advertise_ip: self.relay_advertise_ip,
            limits: Limits {
                record_ttl_ms: l.record_ttl_secs.saturating_mul(1000),
                max_clock_skew_s: l.max_clock_skew_secs,
                max_records: l.max_records,
                max_candidates: l.max_candidates,
                requests: Rate {
                    per_s: l.requests_per_sec,
                    burst: l.request_burst,
                },
                max_peers: l.max_peers,
                intro_ttl_ms: l.intro_ttl_secs.saturating_mul(1000),
                punch_delay_ms: l.punch_delay_ms,
                max_relay_sessions: l.max_relay_sessions,
                max_relay_sessions_per_peer: l.max_relay_sessions_per_peer,
            },
            relay: self.relay.clone(),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            handshakes_per_ip: Rate {
                per_s: self.handshakes_per_ip_per_sec,
                burst: self.handshake_burst_per_ip,
            },
            // Derived from the key, which this file only names (see main.rs).
            reset_seed: None,
            renew: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../rendezvous.example.toml");
        let c = FileConfig::parse(text).unwrap();
        assert_eq!(c.listen.port(), 7666);
        assert_eq!(c.limits.request_burst, 40);
        assert!(c.server_config().is_ok());
    }

    #[test]
    fn unspecified_relay_ip_needs_an_advertised_one() {
        let e = FileConfig::parse("relay_ip = \"0.0.0.0\"").unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)));
        let e = FileConfig::parse("nonsense = 1").unwrap_err();
        assert!(matches!(e, ConfigError::Toml(_)));
    }
}
