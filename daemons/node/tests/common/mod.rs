//! What the node's end-to-end tests share: processes, binaries, ports, hashing.
// Each test file uses its own subset.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;

use sha2::{Digest, Sha256};

/// Runs an alloy (tokio) future on smol, as the daemons do.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(f))
}

/// A child process, killed and reaped when dropped.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn node_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sonm-node")
}

/// Another package's binary (`sonm`, `sonm-dwh`): `cargo test` builds only this package's,
/// so `cargo build --bins` must have run (scripts/test.sh does).
pub(crate) fn other_bin(name: &str) -> PathBuf {
    let path = Path::new(node_bin()).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`; scripts/test.sh does)",
        path.display()
    );
    path
}

pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
