//! What the node's end-to-end tests share: the chain set-up, processes, binaries, ports, hashing.
// Each test file uses its own subset.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use alloy::primitives::Address;
use serde_json::Value;

use sha2::{Digest, Sha256};

/// A one-core spot plan at 1 gwei per second named `name`.
pub(crate) fn one_core_plan(name: &str) -> sonm_worker::config::PlanConfig {
    sonm_worker::config::PlanConfig {
        name: name.into(),
        cpu_cores: 1,
        ram: Some("128MiB".into()),
        storage: Some("100MB".into()),
        gpus: 0,
        price: 1_000_000_000,
        duration: 0,
        netflags: "outbound".into(),
        identity_level: sonm_market::IdentityLevel::Anonymous,
    }
}

/// The node tests' in-process worker on `anvil`'s chain (contracts at `addresses`): dev key 1
/// (written to `dir/worker.key`), state in `dir/worker-state`, a free UDP port on loopback, a
/// 100 ms chain loop, light benchmarks, billing every 600 s, selling `plans`.
pub(crate) fn worker_config(
    dir: &Path,
    anvil: &sonm_contracts::anvil::Anvil,
    addresses: &Path,
    plans: Vec<sonm_worker::config::PlanConfig>,
) -> sonm_worker::Config {
    let config = sonm_worker::Config {
        listen: format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
        netflags: "outbound".into(),
        poll_interval_ms: 100,
        max_concurrent_tasks: 2,
        max_task_wall_time_ms: 60_000,
        benchmarks: sonm_worker::bench::BenchConfig {
            cpu_ms: 20,
            wasm_score_rounds: 20,
            ..sonm_worker::bench::BenchConfig::default()
        },
        billing: sonm_worker::billing::BillingPolicy { interval: 600 },
        plans,
        ..sonm_worker::Config::new(
            dir.join("worker-state"),
            dir.join("worker.key"),
            anvil.endpoint().parse().unwrap(),
            addresses.to_path_buf(),
        )
    };
    std::fs::write(&config.key_file, sonm_contracts::anvil::DEV_KEYS[1]).unwrap();
    config
}

/// The contracts deployed on `anvil` by dev key 0, each of `fund` holding 1,000 SNM and
/// `validators` set, their addresses written to `dir/addresses.toml`; returns both.
pub(crate) fn deploy_chain(
    anvil: &sonm_contracts::anvil::Anvil,
    dir: &Path,
    fund: &[Address],
    validators: Vec<(Address, u8)>,
) -> (sonm_contracts::Addresses, PathBuf) {
    use alloy::primitives::U256;
    use sonm_contracts::anvil::DEV_KEYS;
    let config = sonm_contracts::DeployConfig {
        fund: fund
            .iter()
            .map(|a| (*a, U256::from(1_000u128 * sonm_contracts::deploy::SNM_WEI)))
            .collect(),
        validators,
        ..sonm_contracts::DeployConfig::default()
    };
    let url = anvil.endpoint().parse().unwrap();
    let addresses = block_on(sonm_contracts::deploy(
        url,
        DEV_KEYS[0].parse().unwrap(),
        &config,
    ))
    .unwrap();
    let path = dir.join("addresses.toml");
    addresses.write(&path).unwrap();
    (addresses, path)
}

/// 1,000 ETH for gas to `who` (a key that is not one of anvil's funded dev accounts).
pub(crate) fn give_gas(anvil: &sonm_contracts::anvil::Anvil, who: Address) {
    use alloy::providers::Provider;
    let p = sonm_contracts::deploy::provider(anvil.endpoint().parse().unwrap());
    let _: Value =
        block_on(p.raw_request("anvil_setBalance".into(), (who, "0x3635C9ADC5DEA00000"))).unwrap();
}

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

/// The `sonm` CLI.
pub(crate) fn sonm_bin() -> PathBuf {
    other_bin("sonm")
}

/// Runs `sonm --node URL ARGS...`.
pub(crate) fn sonm(node: &str, args: &[&str]) -> Output {
    Command::new(sonm_bin())
        .arg("--node")
        .arg(node)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `sonm --json ...`, requires success, returns the JSON.
pub(crate) fn sonm_json(node: &str, args: &[&str], log: &Path) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = sonm(node, &all);
    assert!(
        out.status.success(),
        "sonm {args:?} failed: {}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `sonm ARGS...`, requires failure; returns stderr.
pub(crate) fn sonm_fails(node: &str, args: &[&str]) -> String {
    let out = sonm(node, args);
    assert!(!out.status.success(), "sonm {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A raw HTTP request to the node: (status, JSON body).
pub(crate) fn http(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = match body {
        None => agent.run(
            ureq::http::Request::builder()
                .method(method)
                .uri(url)
                .body(())
                .unwrap(),
        ),
        Some(b) => agent.run(
            ureq::http::Request::builder()
                .method(method)
                .uri(url)
                .header("Content-Type", "application/json")
                .body(b.to_owned())
                .unwrap(),
        ),
    };
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `sonm-node keygen` into `dir/node-key.json` with the password in `dir/node.password`;
/// returns the new key's address.
pub(crate) fn keygen(dir: &Path) -> Address {
    std::fs::write(dir.join("node.password"), "test password\n").unwrap();
    let out = Command::new(node_bin())
        .args(["keygen", "--keystore"])
        .arg(dir.join("node-key.json"))
        .arg("--password-file")
        .arg(dir.join("node.password"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Starts `sonm-node --config CONFIG` (stderr to `log`) and waits until `sonm balance`
/// succeeds against its API on `api_port`.
pub(crate) fn start_node(config: &Path, api_port: u16, log: &Path) -> Process {
    let log_file = std::fs::File::create(log).unwrap();
    let node = Process(
        Command::new(node_bin())
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{api_port}");
    for _ in 0..400 {
        if TcpListener::bind(("127.0.0.1", api_port)).is_err()
            && sonm(&url, &["balance"]).status.success()
        {
            return node;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the node did not come up; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The worker library serving on its own thread (as `sonm-worker run` does) until stopped or
/// dropped.
pub(crate) struct RunningWorker {
    /// `None` once stopped, so that the worker's state can be opened again (a restart).
    worker: Option<std::sync::Arc<sonm_worker::Worker>>,
    stop: smol::channel::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningWorker {
    pub(crate) fn start(config: sonm_worker::Config) -> Self {
        let worker =
            std::sync::Arc::new(block_on(sonm_worker::Worker::open(config.clone())).unwrap());
        let endpoint = worker.endpoint(config.listen).unwrap();
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let w = worker.clone();
        let thread = std::thread::spawn(move || {
            block_on(w.run_until(endpoint, async move {
                let _ = stopped.recv().await;
            }));
        });
        Self {
            worker: Some(worker),
            stop,
            thread: Some(thread),
        }
    }

    /// The running worker.
    pub(crate) fn worker(&self) -> std::sync::Arc<sonm_worker::Worker> {
        self.worker.clone().expect("the worker was stopped")
    }

    /// Stops the worker and waits for its thread; a panic there fails the test. The worker's
    /// state is closed when no other handle to it remains.
    pub(crate) fn stop(&mut self) {
        let _ = self.stop.send_blocking(());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.worker = None;
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        let _ = self.stop.send_blocking(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
