//! `sonm-rendezvous`: lets a customer reach a worker behind NAT. The server keeps workers'
//! records, tells two peers each other's candidates so they punch at the same time, and relays
//! their QUIC datagrams when no direct path opens. The client side runs in the worker and the
//! node. The protocol's rules are in `sonm-rendezvous-proto`; this crate is its I/O.

pub mod client;
pub mod config;
pub mod relay;
pub mod server;

pub use client::{ClientConfig, ClientError, Path, RelayPolicy, RendezvousClient};
pub use config::{ConfigError, FileConfig};
pub use relay::{PacketTap, RelayLimits};
pub use server::{RendezvousServer, ServerConfig, ServerError, ServerStats};
pub use sonm_rendezvous_proto as proto;
