//! A test harness, shared by this crate's tests and sonm-node's (deposits and withdrawals
//! through the node): two real anvil chains with the contracts deployed on each, each Gate
//! with three keepers (anvil's dev keys 1..=3), threshold 2 and a funded reserve, and keepers
//! run in process (`daemon::run`, as the binary does), each with its own LMDB directory and
//! HTTP port; a "stopped" keeper is one whose port nobody listens on.
//!
//! Not used by the daemon itself; it lives in the library (as `sonm_contracts::anvil` does)
//! so that other packages' tests start the very same network. It panics on failure, as a
//! test does.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alloy::primitives::aliases::U96;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use alloy::transports::http::reqwest::Url;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::{SNM_WEI, provider, signing_provider};
use sonm_contracts::{Addresses, DeployConfig, Gate, GateConfig, SNM};

use crate::core::{GateRef, TransferKey};
use crate::daemon::{self, ChainConfig, Config};

pub use sonm_contracts::anvil::confirm;

/// How deep a lock must be before the keepers sign it.
pub const CONFIRMATIONS: u64 = 3;
/// How long [`wait_for`] waits.
pub const WAIT: Duration = Duration::from_secs(90);

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(f))
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn signer(i: usize) -> PrivateKeySigner {
    DEV_KEYS[i].parse().unwrap()
}

/// Waits until `f` is `Some`, or panics after [`WAIT`] saying what it waited for.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One chain: anvil (automine, plus a block every 150 ms from a miner thread that can be
/// paused, so that confirmations come without transactions), the deployment, its file.
#[derive(Debug)]
pub struct TestChain {
    pub anvil: Anvil,
    pub addresses: Addresses,
    pub addresses_file: PathBuf,
    pub mining: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    miner: Option<JoinHandle<()>>,
}

impl TestChain {
    pub fn new(chain_id: u64, dir: &std::path::Path) -> Self {
        let anvil = Anvil::spawn_with(&["--chain-id", &chain_id.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        let url: Url = anvil.endpoint().parse().unwrap();
        let keepers = (1..=3)
            .map(|i| (signer(i).address(), U96::from(1_000_000 * SNM_WEI)))
            .collect();
        let config = DeployConfig {
            gate: GateConfig {
                threshold: 2,
                keepers,
                reserve: U256::from(1_000_000 * SNM_WEI),
            },
            ..DeployConfig::default()
        };
        let addresses = block_on(sonm_contracts::deploy(url, signer(0), &config)).unwrap();
        assert_eq!(addresses.chain_id, chain_id);
        let addresses_file = dir.join(format!("addresses-{chain_id}.toml"));
        addresses.write(&addresses_file).unwrap();
        let mining = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let miner = {
            let (mining, stop) = (mining.clone(), stop.clone());
            let endpoint = anvil.endpoint();
            std::thread::spawn(move || {
                let agent = ureq::Agent::new_with_defaults();
                while !stop.load(Ordering::Relaxed) {
                    if mining.load(Ordering::Relaxed) {
                        let _ = agent.post(&endpoint).send_json(serde_json::json!({
                            "jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": []
                        }));
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        TestChain {
            anvil,
            addresses,
            addresses_file,
            mining,
            stop,
            miner: Some(miner),
        }
    }

    pub fn id(&self) -> u64 {
        self.addresses.chain_id
    }

    pub fn gate(&self) -> GateRef {
        GateRef {
            chain_id: self.id(),
            gate: self.addresses.contracts.gate,
        }
    }

    pub fn reader(&self) -> DynProvider {
        provider(self.anvil.endpoint().parse().unwrap())
    }

    /// The user (the deployer, who holds the SNM) locks `amount` for `to` on `dst`; the nonce.
    pub fn lock(&self, to: Address, amount: u128, dst: u64) -> u64 {
        let p = signing_provider(self.anvil.endpoint().parse().unwrap(), signer(0));
        let c = self.addresses.contracts;
        block_on(async {
            let token = SNM::new(c.snm, &p);
            confirm("approve", token.approve(c.gate, U256::from(amount))).await;
            let r = confirm(
                "lock",
                Gate::new(c.gate, &p).lock(to, U256::from(amount), U256::from(dst)),
            )
            .await;
            let nonce = r.decoded_log::<Gate::Locked>().unwrap().data.nonce;
            u64::try_from(nonce).unwrap()
        })
    }

    /// Sends `to` `snm` SNM wei from the deployer and sets its gas balance to `eth` wei.
    pub fn fund(&self, to: Address, snm: U256, eth: U256) {
        let p = signing_provider(self.anvil.endpoint().parse().unwrap(), signer(0));
        block_on(async {
            confirm(
                "transfer",
                SNM::new(self.addresses.contracts.snm, &p).transfer(to, snm),
            )
            .await;
            let _: serde_json::Value = p
                .raw_request("anvil_setBalance".into(), (to, eth))
                .await
                .unwrap();
        });
    }

    pub fn balance(&self, who: Address) -> U256 {
        let p = self.reader();
        let token = SNM::new(self.addresses.contracts.snm, &p);
        block_on(async { token.balanceOf(who).call().await }).unwrap()
    }

    /// The `Paid` events of this gate for `nonce` locked on `src`.
    pub fn paid_events(&self, src: &TestChain, nonce: u64) -> usize {
        let filter = Filter::new()
            .address(self.addresses.contracts.gate)
            .event_signature(Gate::Paid::SIGNATURE_HASH)
            .from_block(0);
        let logs = block_on(self.reader().get_logs(&filter)).unwrap();
        logs.iter()
            .filter_map(|l| l.log_decode::<Gate::Paid>().ok())
            .filter(|p| {
                let e = &p.inner.data;
                e.srcChainId == U256::from(src.id())
                    && e.srcGate == src.addresses.contracts.gate
                    && e.nonce == U256::from(nonce)
            })
            .count()
    }
}

impl Drop for TestChain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(m) = self.miner.take() {
            let _ = m.join();
        }
    }
}

/// Both chains and the keepers' fixed places (ports, data directories, key files).
#[derive(Debug)]
pub struct Net {
    pub dir: tempfile::TempDir,
    pub main: TestChain,
    pub sonm: TestChain,
    pub ports: [u16; 3],
}

impl Net {
    /// Starts both chains (ids 1001, main, and 2002, SONM) and writes the keepers' key files.
    // Not `Default`: it starts processes and deploys contracts.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::INFO)
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let main = TestChain::new(1001, dir.path());
        let sonm = TestChain::new(2002, dir.path());
        for (i, key) in DEV_KEYS.iter().enumerate().skip(1) {
            std::fs::write(dir.path().join(format!("keeper{i}.key")), key).unwrap();
        }
        Net {
            dir,
            main,
            sonm,
            ports: [free_port(), free_port(), free_port()],
        }
    }

    pub fn url(&self, k: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[k - 1])
    }

    /// Keeper `k` (1..=3, anvil's dev key k) with `extra` peers besides the other two.
    pub fn config(&self, k: usize, extra: &[String]) -> Config {
        let chain = |c: &TestChain| ChainConfig {
            rpc_url: c.anvil.endpoint().parse().unwrap(),
            addresses: c.addresses_file.clone(),
            confirmations: CONFIRMATIONS,
            batch_blocks: 50,
        };
        let mut peers: Vec<String> = (1..=3).filter(|p| *p != k).map(|p| self.url(p)).collect();
        peers.extend_from_slice(extra);
        Config {
            key_file: self.dir.path().join(format!("keeper{k}.key")),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports[k - 1])),
            data_dir: self.dir.path().join(format!("keeper{k}")),
            peers,
            keepers: (1..=3).map(|i| signer(i).address()).collect(),
            main: chain(&self.main),
            sonm: chain(&self.sonm),
            poll_interval_ms: 100,
            turn_delay_ms: 1500,
            fetch_interval_ms: 200,
            resubmit_ms: 5000,
            refused_ms: 60_000,
            peer_timeout_ms: 1000,
            http_threads: 1,
        }
    }

    pub fn start(&self, k: usize, extra: &[String]) -> Running {
        let config = self.config(k, extra);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                daemon::run(&config, &stop, |addr| {
                    let _ = tx.send(addr);
                })
                .map_err(|e| e.to_string())
            })
        };
        if rx.recv_timeout(WAIT).is_err() {
            panic!("keeper {k} did not start: {:?}", handle.join());
        }
        Running {
            stop,
            handle: Some(handle),
        }
    }

    /// Keeper `k`'s signature of `key` as it serves it, if any.
    pub fn served(&self, k: usize, key: TransferKey) -> Option<String> {
        let url = format!(
            "{}/v1/signatures/{}/{}",
            self.url(k),
            key.src_chain,
            key.nonce
        );
        let mut r = ureq::get(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .ok()?;
        (r.status() == 200).then(|| r.body_mut().read_to_string().unwrap())
    }
}

/// A keeper running in process; stopped (and its thread joined) on drop.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl Running {
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
