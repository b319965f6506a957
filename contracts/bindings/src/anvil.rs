//! A local anvil chain for tests and local networks: started from the pinned npm
//! install in `contracts/node_modules` on a free port, stopped when dropped.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Sends `call` as a test transaction and returns its receipt, which must be a success (it
/// panics otherwise, as a test does). Gas is the estimate with [`crate::gas_with_margin`], as
/// the daemons send theirs: a bare estimate can fall short when the next block's timestamp
/// takes a costlier path (a bill or a close across a billing boundary).
pub async fn confirm<P: alloy::providers::Provider, D: alloy::contract::CallDecoder>(
    what: &str,
    call: alloy::contract::CallBuilder<P, D>,
) -> alloy::rpc::types::TransactionReceipt {
    let gas = call
        .estimate_gas()
        .await
        .unwrap_or_else(|e| panic!("{what}: estimating gas: {e}"));
    let limit = crate::gas_with_margin(gas);
    let receipt = call
        .gas(limit)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .get_receipt()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        receipt.status(),
        "{what} reverted (gas used {} of {limit})",
        receipt.gas_used
    );
    receipt
}

/// Anvil's well-known development keys (accounts 0..3 of its default mnemonic), each
/// funded with 10,000 ETH on a fresh anvil. For local chains only.
pub const DEV_KEYS: [&str; 4] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

/// The chain id anvil uses unless told otherwise.
pub const ANVIL_CHAIN_ID: u64 = 31337;

/// The environment variable that overrides where the anvil binary is.
pub const ANVIL_ENV: &str = "SONM_ANVIL";

/// Why anvil could not be started.
#[derive(Debug, Error)]
pub enum AnvilError {
    #[error(
        "anvil not found at {0}: run contracts/scripts/install-tools.sh (or set {ANVIL_ENV} \
         to an anvil binary)"
    )]
    Missing(PathBuf),
    #[error("cannot find a free port: {0}")]
    Port(#[source] std::io::Error),
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("anvil exited during start-up ({status}): {stderr}")]
    Exited { status: String, stderr: String },
    #[error("anvil did not listen on port {port} within {waited:?}")]
    Timeout { port: u16, waited: Duration },
}

/// A running anvil; killed (and reaped) on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
}

impl Anvil {
    /// Where anvil is: `$SONM_ANVIL`, else the binary that
    /// `contracts/scripts/install-tools.sh` installs into `contracts/node_modules`.
    pub fn binary() -> PathBuf {
        match std::env::var_os(ANVIL_ENV) {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
        }
    }

    /// Starts anvil on a free local port with its defaults (chain id 31337, 10
    /// funded dev accounts, a block per transaction).
    pub fn spawn() -> Result<Self, AnvilError> {
        Self::spawn_with(&[])
    }

    /// Starts anvil with extra arguments (for example `["--accounts", "20"]`).
    pub fn spawn_with(args: &[&str]) -> Result<Self, AnvilError> {
        let path = Self::binary();
        if !path.is_file() {
            return Err(AnvilError::Missing(path));
        }
        let port = free_port().map_err(AnvilError::Port)?;
        let child = Command::new(&path)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--silent",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| AnvilError::Spawn {
                path: path.clone(),
                source,
            })?;
        let mut anvil = Anvil { child, port };
        anvil.wait_listening(Duration::from_secs(30))?;
        // Keep the pipe drained so that a chatty anvil can never block on it.
        if let Some(mut pipe) = anvil.child.stderr.take() {
            std::thread::spawn(move || std::io::copy(&mut pipe, &mut std::io::sink()));
        }
        Ok(anvil)
    }

    /// The JSON-RPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id (the real anvil, not a wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self, limit: Duration) -> Result<(), AnvilError> {
        let start = Instant::now();
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(AnvilError::Exited {
                    status: status.to_string(),
                    stderr,
                });
            }
            if start.elapsed() > limit {
                return Err(AnvilError::Timeout {
                    port: self.port,
                    waited: limit,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the OS picks it; anvil binds it right after).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
