//! The harness of the end-to-end tests: a real anvil with the deployed contracts, and the real
//! daemon binaries from `target/debug` (`sonm-worker`, `sonm-node`, `sonm-dwh`, `sonm`) as
//! processes on free loopback ports, each with its log captured in the test's directory and
//! killed (SIGKILL) and reaped when dropped. Configurations follow `scripts/local-network.sh`.
//!
//! Needs `cargo build --workspace --bins` (scripts/test.sh does it), the pinned anvil
//! (`contracts/scripts/install-tools.sh`) and the example jobs (`wasm-runtime/jobs/build.sh`).

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use serde_json::Value;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::{SNM_WEI, provider};
use sonm_contracts::{Addresses, DealSnapshot, DeployConfig, Market, SNM, deploy};

/// The supplier's key (anvil's dev account 1), as in `scripts/local-network.sh`.
pub const SUPPLIER_KEY: &str = DEV_KEYS[1];
/// The customer's key (anvil's dev account 2).
pub const CONSUMER_KEY: &str = DEV_KEYS[2];
/// The worker's plan price, SNM wei per second.
pub const PRICE: u128 = 1_000_000_000;
/// A spot deal keeps one hour blocked ahead (Market.SPOT_PERIOD).
pub const SPOT_PERIOD: u128 = 3600;
/// One SNM in wei.
pub const SNM: u128 = SNM_WEI;

/// Runs a future that may use alloy (tokio-based) on smol, as the daemons do.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(f))
}

/// The workspace's `target/debug` (or `$CARGO_TARGET_DIR/debug`).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("debug"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug"),
    }
}

/// A daemon binary; panics with how to build it when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the daemons first with `cargo build --workspace --bins` \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

/// An example WASM job; panics with how to build it when it is missing.
pub fn example_job(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../wasm-runtime/jobs/build")
        .join(name);
    assert!(
        path.is_file(),
        "{}: build the example jobs with wasm-runtime/jobs/build.sh",
        path.display()
    );
    path
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`; then panics with
/// `what` and the logs `context` returns.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("{what}: gave up after {timeout:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon process with its stderr in `log`; SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `program args...` with stderr appended to `log`.
    pub fn spawn(program: &Path, args: &[&str], log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A deal as its events tell it, with its blocked balance (`Market.dealInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainDeal {
    pub start: u64,
    pub last_bill: u64,
    pub price: u128,
    /// 1 active, 2 closed.
    pub status: u8,
    pub blocked: u128,
}

/// The local chain: anvil with the contracts deployed and wired, in a temporary directory that
/// also holds every daemon's configuration, state and log.
#[derive(Debug)]
pub struct Net {
    pub dir: tempfile::TempDir,
    pub anvil: Anvil,
    pub addresses: Addresses,
    pub addresses_path: PathBuf,
}

impl Net {
    /// anvil (automine unless `anvil_args` says otherwise) + `sonm_contracts::deploy`, funding
    /// `fund` with SNM (wei).
    pub fn start(anvil_args: &[&str], fund: &[(Address, u128)]) -> Self {
        let anvil = Anvil::spawn_with(anvil_args)
            .unwrap_or_else(|e| panic!("{e} (install it with contracts/scripts/install-tools.sh)"));
        let dir = tempfile::tempdir().unwrap();
        let addresses = block_on(deploy(
            anvil.endpoint().parse().unwrap(),
            DEV_KEYS[0].parse().unwrap(),
            &DeployConfig {
                fund: fund.iter().map(|&(a, v)| (a, U256::from(v))).collect(),
                ..DeployConfig::default()
            },
        ))
        .unwrap();
        let addresses_path = dir.path().join("addresses.toml");
        addresses.write(&addresses_path).unwrap();
        Self {
            dir,
            anvil,
            addresses,
            addresses_path,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn rpc(&self) -> String {
        self.anvil.endpoint()
    }

    fn provider(&self) -> alloy::providers::DynProvider {
        provider(self.rpc().parse().unwrap())
    }

    /// Moves the chain's clock `secs` ahead and mines a block at the new time.
    pub fn increase_time(&self, secs: u64) {
        let p = self.provider();
        block_on(async move {
            let _: Value = p
                .raw_request("evm_increaseTime".into(), (secs,))
                .await
                .unwrap();
            let _: Value = p.raw_request("evm_mine".into(), ()).await.unwrap();
        });
    }

    /// The latest block's timestamp.
    pub fn chain_time(&self) -> u64 {
        let p = self.provider();
        block_on(async move { p.get_block_by_number(Default::default()).await })
            .unwrap()
            .map(|b| b.header.timestamp)
            .unwrap_or(0)
    }

    pub fn snm_balance(&self, who: Address) -> u128 {
        let snm = SNM::new(self.addresses.contracts.snm, self.provider());
        block_on(async move { snm.balanceOf(who).call().await })
            .unwrap()
            .to::<u128>()
    }

    pub fn deal(&self, id: u64) -> ChainDeal {
        let (p, market) = (self.provider(), self.addresses.contracts.market);
        let from = self.addresses.deploy_block;
        let d = block_on(async move { DealSnapshot::read(&p, market, id, from).await })
            .unwrap()
            .unwrap_or_else(|| panic!("deal {id} was never opened"));
        let blocked = if d.active() {
            let (market, state) = (Market::new(market, self.provider()), d.state());
            block_on(async move { market.dealInfo(state).call().await })
                .unwrap()
                .blocked
                .to::<u128>()
        } else {
            0
        };
        ChainDeal {
            start: d.start_time,
            last_bill: d.last_bill_time,
            price: d.price.to::<u128>(),
            status: if d.active() { 1 } else { 2 },
            blocked,
        }
    }

    /// The `paid` of every `DealBilled` of deal `id`, in chain order.
    pub fn bills(&self, id: u64) -> Vec<u128> {
        let market = Market::new(self.addresses.contracts.market, self.provider());
        let logs = block_on(async move {
            market
                .DealBilled_filter()
                .topic1(U256::from(id))
                .from_block(0)
                .query()
                .await
        })
        .unwrap();
        logs.into_iter().map(|(e, _)| e.paid.to::<u128>()).collect()
    }

    /// The `DealClosed` events of deal `id`: (closed by, refund).
    pub fn closes(&self, id: u64) -> Vec<(Address, u128)> {
        let market = Market::new(self.addresses.contracts.market, self.provider());
        let logs = block_on(async move {
            market
                .DealClosed_filter()
                .topic1(U256::from(id))
                .from_block(0)
                .query()
                .await
        })
        .unwrap();
        logs.into_iter()
            .map(|(e, _)| (e.closedBy, e.refunded.to::<u128>()))
            .collect()
    }
}

pub fn address_of(key: &str) -> Address {
    key.parse::<PrivateKeySigner>().unwrap().address()
}

/// How the worker is configured.
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    /// Seconds between bills of a deal.
    pub billing_interval: u64,
    /// The chain loop's period.
    pub poll_interval_ms: u64,
    /// One-core spot plans at [`PRICE`], each sold as its own ask.
    pub plans: usize,
    /// Sell through asks signed off chain and published to this DWH (`[market] asks =
    /// "signed"`); `None`: asks placed on chain.
    pub signed_asks_dwh: Option<String>,
}

/// Billing every 600 s, a 200 ms chain loop, one plan, placed asks.
impl Default for WorkerOpts {
    fn default() -> Self {
        Self {
            billing_interval: 600,
            poll_interval_ms: 200,
            plans: 1,
            signed_asks_dwh: None,
        }
    }
}

/// The supplier's `sonm-worker` process: spot plans at [`PRICE`], restartable on the same
/// configuration and state.
#[derive(Debug)]
pub struct Worker {
    pub config: PathBuf,
    pub listen: String,
    pub address: Address,
    pub process: Daemon,
}

impl Worker {
    /// Writes the worker's configuration (billing every `billing_interval` seconds) and starts
    /// it; returns once it logs that it is serving.
    pub fn start(net: &Net, billing_interval: u64) -> Self {
        Self::start_with(
            net,
            WorkerOpts {
                billing_interval,
                ..WorkerOpts::default()
            },
        )
    }

    /// Like [`Worker::start`], configured by `opts`.
    pub fn start_with(net: &Net, opts: WorkerOpts) -> Self {
        Self::start_with_rpc(net, opts, &[net.rpc()])
    }

    /// Like [`Worker::start_with`], with the chain endpoints `rpc` (failover in this order).
    pub fn start_with_rpc(net: &Net, opts: WorkerOpts, rpc: &[String]) -> Self {
        let WorkerOpts {
            billing_interval,
            poll_interval_ms,
            plans,
            signed_asks_dwh,
        } = opts;
        let market = match signed_asks_dwh {
            Some(dwh) => format!("dwh_url = \"{dwh}\"\n\n[market]\nasks = \"signed\"\n"),
            None => String::new(),
        };
        let plans: String = (0..plans)
            .map(|i| {
                format!(
                    "\n[[plans]]\nname = \"one-core-{i}\"\ncpu_cores = 1\nram = \"128MiB\"\n\
                     storage = \"100MB\"\nprice = {PRICE}\nduration = 0\nnetflags = \"outbound\"\n"
                )
            })
            .collect();
        let key_file = net.path("worker.key");
        std::fs::write(&key_file, SUPPLIER_KEY).unwrap();
        let listen = format!("127.0.0.1:{}", free_udp_port());
        let config = net.path("worker.toml");
        std::fs::write(
            &config,
            format!(
                r#"state_dir = "{state}"
key_file = "{key}"
rpc_url = {rpc}
addresses = "{addresses}"
listen = "{listen}"
netflags = "outbound"
poll_interval_ms = {poll_interval_ms}
max_task_wall_time_ms = 600000
{market}
[benchmarks]
wasm_score_module = "{score}"
wasm_score_rounds = 20
cpu_ms = 20

[billing]
interval = {billing_interval}
{plans}"#,
                state = net.path("worker").display(),
                key = key_file.display(),
                rpc = toml_list(rpc),
                addresses = net.addresses_path.display(),
                score = example_job("wasm-score.wasm").display(),
            ),
        )
        .unwrap();
        let mut w = Self {
            process: Daemon::spawn(
                &bin("sonm-worker"),
                &["--config", config.to_str().unwrap(), "run"],
                &net.path("worker.log"),
            ),
            config,
            listen,
            address: address_of(SUPPLIER_KEY),
        };
        w.wait_running(1);
        w
    }

    /// Starts the worker again on the same configuration and state (after [`Daemon::kill9`]).
    pub fn restart(&mut self) {
        let runs = self.process.log_text().matches("worker running").count();
        self.process = Daemon::spawn(
            &bin("sonm-worker"),
            &["--config", self.config.to_str().unwrap(), "run"],
            &self.process.log.clone(),
        );
        self.wait_running(runs + 1);
    }

    fn wait_running(&mut self, runs: usize) {
        let log = self.process.log.clone();
        wait_for(
            "the worker serving",
            Duration::from_secs(60),
            || std::fs::read_to_string(&log).unwrap_or_default(),
            || {
                assert!(
                    self.process.alive(),
                    "the worker exited; log:\n{}",
                    self.process.log_text()
                );
                (self.process.log_text().matches("worker running").count() >= runs).then_some(())
            },
        );
    }
}

/// The DWH indexing the chain (0 confirmations, as in local-network.sh).
#[derive(Debug)]
pub struct Dwh {
    pub url: String,
    pub process: Daemon,
}

impl Dwh {
    pub fn start(net: &Net) -> Self {
        let listen = format!("127.0.0.1:{}", free_tcp_port());
        let config = net.path("dwh.toml");
        std::fs::write(
            &config,
            format!(
                "endpoints = [\"{rpc}\"]\naddresses = \"{addresses}\"\nlisten = \"{listen}\"\n\
                 data_dir = \"{data}\"\nconfirmations = 0\npoll_interval_ms = 100\nmap_size_mib = 256\n",
                rpc = net.rpc(),
                addresses = net.addresses_path.display(),
                data = net.path("dwh").display(),
            ),
        )
        .unwrap();
        let process = Daemon::spawn(
            &bin("sonm-dwh"),
            &["--config", config.to_str().unwrap()],
            &net.path("dwh.log"),
        );
        let dwh = Self {
            url: format!("http://{listen}"),
            process,
        };
        let status = format!("{}/v1/status", dwh.url);
        wait_for(
            "the DWH indexing",
            Duration::from_secs(60),
            || dwh.process.log_text(),
            || http_get(&status).filter(|v| v["number"].is_u64()),
        );
        dwh
    }
}

/// GET `url` as JSON; `None` unless 200.
pub fn http_get(url: &str) -> Option<Value> {
    let mut r = ureq::get(url).call().ok()?;
    r.body_mut().read_json().ok()
}

/// The customer's `sonm-node` process, its key imported into a keystore by `sonm-node keygen`.
#[derive(Debug)]
pub struct Node {
    pub url: String,
    pub address: Address,
    pub process: Daemon,
}

impl Node {
    /// Starts the node for `key`, knowing `worker`'s address; searching through `dwh` if given.
    pub fn start(net: &Net, key: &str, worker: &Worker, dwh: Option<&Dwh>) -> Self {
        Self::start_with_rpc(net, key, worker, dwh, &net.rpc())
    }

    /// Like [`Node::start`], with the node's chain endpoint `rpc` (a proxy in front of anvil).
    pub fn start_with_rpc(
        net: &Net,
        key: &str,
        worker: &Worker,
        dwh: Option<&Dwh>,
        rpc: &str,
    ) -> Self {
        Self::start_with_rpcs(net, key, worker, dwh, &[rpc.to_owned()])
    }

    /// Like [`Node::start`], with the chain endpoints `rpc` (failover in this order).
    pub fn start_with_rpcs(
        net: &Net,
        key: &str,
        worker: &Worker,
        dwh: Option<&Dwh>,
        rpc: &[String],
    ) -> Self {
        let d = net.dir.path();
        import_node_key(d, key);
        let port = free_tcp_port();
        let dwh_line = dwh
            .map(|w| format!("dwh_url = \"{}\"\n", w.url))
            .unwrap_or_default();
        let config = d.join("node.toml");
        std::fs::write(
            &config,
            format!(
                r#"keystore = "{keystore}"
password_file = "{password}"
rpc_url = {rpc}
addresses = "{addresses}"
listen = "127.0.0.1:{port}"
quic_bind = "127.0.0.1:0"
{dwh_line}
[workers]
"{supplier}" = "{listen}"
"#,
                keystore = d.join("node-key.json").display(),
                password = d.join("node.password").display(),
                rpc = toml_list(rpc),
                addresses = net.addresses_path.display(),
                supplier = worker.address,
                listen = worker.listen,
            ),
        )
        .unwrap();
        Self::launch(net, key, port, &config)
    }

    /// `sonm --node URL --json ARGS...`: the JSON on success, stderr on failure.
    pub fn sonm(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(bin("sonm"))
            .arg("--node")
            .arg(&self.url)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("sonm {args:?}: not JSON ({e})"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Like [`Node::sonm`], requiring success.
    pub fn sonm_ok(&self, args: &[&str]) -> Value {
        self.sonm(args).unwrap_or_else(|e| {
            panic!(
                "sonm {args:?} failed: {e}\nnode log:\n{}",
                self.process.log_text()
            )
        })
    }

    /// Waits for the worker's ask on the market; returns its id.
    pub fn find_ask(&self) -> u64 {
        wait_for(
            "the worker's ask on the market",
            Duration::from_secs(60),
            || self.process.log_text(),
            || {
                let v = self.sonm_ok(&["market", "asks", "--benchmarks", "cpu-cores=1"]);
                v["orders"][0]["id"].as_u64()
            },
        )
    }

    /// Quick-buys ask `ask` as a spot deal; returns the deal id.
    pub fn buy(&self, ask: u64) -> u64 {
        let deal = self.sonm_ok(&["deal", "buy", &ask.to_string(), "--duration", "0"]);
        assert_eq!(deal["status"], "active", "{deal}");
        deal["id"].as_u64().unwrap()
    }

    /// Starts the job of `spec` (a job spec file) on `deal`; returns the task id.
    pub fn start_task(&self, deal: u64, spec: &Path) -> u64 {
        let v = self.sonm_ok(&["task", "start", &deal.to_string(), spec.to_str().unwrap()]);
        v["task"].as_u64().unwrap()
    }

    /// The task's status as the node reports it (the JSON of `sonm task status`).
    pub fn task_status(&self, deal: u64, task: u64) -> Result<Value, String> {
        self.sonm(&["task", "status", &deal.to_string(), &task.to_string()])
    }
}

/// Writes a job spec running `module` with `wall_time_ms`; returns its path.
pub fn job_spec(dir: &Path, name: &str, module: &Path, wall_time_ms: u64) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[module]\npath = \"{}\"\n\n[limits]\nmemory_bytes = 33554432\nwall_time_ms = {wall_time_ms}\n",
            module.display()
        ),
    )
    .unwrap();
    path
}

/// A WASM module (WAT text: the runtime compiles it) that spins until it is stopped.
pub fn spinning_module(dir: &Path) -> PathBuf {
    let path = dir.join("spin.wat");
    std::fs::write(
        &path,
        "(module (memory (export \"memory\") 1)\n  (func (export \"_start\") (loop $l (br $l))))\n",
    )
    .unwrap();
    path
}

/// Every log of the network's daemons, for failure messages.
pub fn logs(net: &Net) -> String {
    ["worker.log", "node.log", "dwh.log", "rendezvous.log"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(net.path(f)).unwrap_or_default()
            )
        })
        .collect()
}

// ------------------------------------------------------------------ rendezvous and NAT
// (rendezvous_restart.rs and scripts/local-network.sh share this topology)

/// How the simulated NAT in front of the worker maps and filters (as in sonm-rendezvous's
/// NAT tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// MASQUERADE: ports kept, replies only from where the worker sent: hole punching works.
    PortRestricted,
    /// MASQUERADE --random: a fresh port per destination: only the relay works.
    Symmetric,
}

/// A worker's home behind a simulated NAT: a router namespace whose `wan` side is on a veth
/// pair with this (root) namespace, and a worker namespace on its LAN. The host side gets
/// `host_ip`, where anvil, the rendezvous server and the node must listen to be reachable.
/// Unsolicited traffic from the host is dropped at the router, so the worker's private address
/// is unreachable and the node can reach the worker only through the rendezvous. Dropping it
/// deletes both namespaces (the veth pairs, routes and iptables rules go with them).
#[derive(Debug)]
pub struct NatSite {
    pub router_ns: String,
    pub worker_ns: String,
    /// This namespace's address on the veth towards the router.
    pub host_ip: String,
    /// The router's WAN address: what the host sees the worker's traffic come from.
    pub router_ip: String,
    /// The worker's private address on the router's LAN.
    pub worker_ip: String,
}

fn run_cmd(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NatSite {
    /// Whether namespaces and iptables can be used here (root, iproute2, iptables).
    pub fn available() -> Result<(), String> {
        run_cmd(&["iptables", "--version"]).map_err(|e| format!("iptables unavailable ({e})"))?;
        let probe = format!("se2eprobe{}", std::process::id());
        run_cmd(&["ip", "netns", "add", &probe])
            .map_err(|e| format!("cannot create a network namespace ({e})"))?;
        let _ = run_cmd(&["ip", "netns", "del", &probe]);
        Ok(())
    }

    /// Builds the site; its subnets (10.212.k.0/24 and the next) are chosen from this
    /// process's id, apart from the rendezvous NAT tests' (10.200/15) and the script's.
    pub fn build(kind: NatKind) -> Result<Self, String> {
        let pid = std::process::id();
        let k = 100 + 2 * (pid % 60);
        let mut site = Self {
            router_ns: format!("se2e{pid}r"),
            worker_ns: String::new(),
            host_ip: format!("10.212.{k}.1"),
            router_ip: format!("10.212.{k}.2"),
            worker_ip: format!("10.212.{}.2", k + 1),
        };
        let (r, host_if) = (site.router_ns.clone(), format!("se{pid}h"));
        let lan_gw = format!("10.212.{}.1", k + 1);
        run_cmd(&["ip", "netns", "add", &r])?;
        let w = format!("se2e{pid}w");
        run_cmd(&["ip", "netns", "add", &w])?;
        site.worker_ns = w.clone();
        let ipt = |rule: &[&str]| {
            let mut args = vec!["ip", "netns", "exec", &r, "iptables"];
            args.extend_from_slice(rule);
            run_cmd(&args)
        };
        let mut masquerade = vec![
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ];
        if kind == NatKind::Symmetric {
            masquerade.push("--random");
        }
        let host_cidr = format!("{}/24", site.host_ip);
        let router_cidr = format!("{}/24", site.router_ip);
        let worker_cidr = format!("{}/24", site.worker_ip);
        let lan_cidr = format!("{lan_gw}/24");
        let lan_net = format!("10.212.{}.0/24", k + 1);
        for cmd in [
            &["ip", "-n", &r, "link", "set", "lo", "up"][..],
            &["ip", "-n", &w, "link", "set", "lo", "up"],
            &[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "wan", "netns", &r,
            ],
            &["ip", "addr", "add", &host_cidr, "dev", &host_if],
            &["ip", "link", "set", &host_if, "up"],
            &["ip", "-n", &r, "addr", "add", &router_cidr, "dev", "wan"],
            &["ip", "-n", &r, "link", "set", "wan", "up"],
            &[
                "ip", "-n", &r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                "netns", &w,
            ],
            &["ip", "-n", &r, "addr", "add", &lan_cidr, "dev", "lan"],
            &["ip", "-n", &r, "link", "set", "lan", "up"],
            &["ip", "-n", &w, "addr", "add", &worker_cidr, "dev", "eth0"],
            &["ip", "-n", &w, "link", "set", "eth0", "up"],
            &["ip", "-n", &w, "route", "add", "default", "via", &lan_gw],
            // The worker's LAN is routed to the router (not out of this machine), which
            // drops what the worker did not ask for, as a home router does.
            &[
                "ip",
                "route",
                "add",
                &lan_net,
                "via",
                &site.router_ip,
                "dev",
                &host_if,
            ],
            &[
                "ip",
                "netns",
                "exec",
                &r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        ] {
            run_cmd(cmd)?;
        }
        // Nothing listens on the router: unsolicited UDP there is dropped rather than recorded
        // by conntrack (a recorded inbound flow could take the port a punch needs).
        ipt(&["-A", "INPUT", "-i", "wan", "-p", "udp", "-j", "DROP"])?;
        ipt(&[
            "-A",
            "FORWARD",
            "-i",
            "wan",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "DROP",
        ])?;
        ipt(&masquerade)?;
        Ok(site)
    }

    /// `ip netns exec <worker namespace>`: the prefix of a command run as the worker's box.
    pub fn exec_prefix(&self) -> [&str; 3] {
        ["netns", "exec", &self.worker_ns]
    }
}

impl Drop for NatSite {
    fn drop(&mut self) {
        // Processes inside must be gone first (the Daemons are dropped before the site).
        for ns in [&self.worker_ns, &self.router_ns] {
            if !ns.is_empty() {
                let _ = run_cmd(&["ip", "netns", "del", ns]);
            }
        }
    }
}

/// A `sonm-rendezvous` process with its key in a file (so a restart keeps its address).
#[derive(Debug)]
pub struct Rendezvous {
    pub listen: std::net::SocketAddr,
    pub address: Address,
    config: PathBuf,
    pub process: Daemon,
}

impl Rendezvous {
    /// Starts the server on `ip` (a free port; relays on the same IP); returns once it serves.
    pub fn start(net: &Net, ip: &str) -> Self {
        let port = UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
        // anvil's dev key 3: an identity no other party here uses.
        let key = DEV_KEYS[3];
        let key_file = net.path("rendezvous.key");
        std::fs::write(&key_file, key.trim_start_matches("0x")).unwrap();
        let config = net.path("rendezvous.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\nrelay_ip = \"{ip}\"\nkey_file = \"{}\"\n",
                key_file.display()
            ),
        )
        .unwrap();
        let mut rv = Self {
            listen,
            address: address_of(key),
            process: Self::spawn(&config, &net.path("rendezvous.log")),
            config,
        };
        rv.wait_serving(1);
        rv
    }

    /// `kill -9`, then the server again on the same address, key and configuration.
    pub fn restart(&mut self) {
        let runs = self.process.log_text().matches("serving").count();
        self.process.kill9();
        self.process = Self::spawn(&self.config, &self.process.log.clone());
        self.wait_serving(runs + 1);
    }

    /// sonm-rendezvous logs to stdout: both streams go to `log`.
    fn spawn(config: &Path, log: &Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin("sonm-rendezvous"))
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sonm-rendezvous: {e}"));
        Daemon {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    fn wait_serving(&mut self, runs: usize) {
        let log = self.process.log.clone();
        wait_for(
            "the rendezvous server serving",
            Duration::from_secs(30),
            || std::fs::read_to_string(&log).unwrap_or_default(),
            || {
                assert!(
                    self.process.alive(),
                    "sonm-rendezvous exited:\n{}",
                    self.process.log_text()
                );
                (self.process.log_text().matches("serving").count() >= runs).then_some(())
            },
        )
    }
}

/// `sonm-node keygen --import-hex-file` of `key` into `<dir>/node-key.json`, password in
/// `<dir>/node.password`.
impl Node {
    /// Runs `sonm-node` with the configuration at `config` (API on `port`) and waits until
    /// its API answers.
    fn launch(net: &Net, key: &str, port: u16, config: &Path) -> Self {
        let node = Self {
            url: format!("http://127.0.0.1:{port}"),
            address: address_of(key),
            process: Daemon::spawn(
                &bin("sonm-node"),
                &["--config", config.to_str().unwrap()],
                &net.path("node.log"),
            ),
        };
        wait_for(
            "the node's API",
            Duration::from_secs(60),
            || node.process.log_text(),
            || node.sonm(&["balance"]).ok(),
        );
        node
    }
}

fn import_node_key(dir: &Path, key: &str) {
    std::fs::write(dir.join("node.password"), "e2e password\n").unwrap();
    std::fs::write(dir.join("consumer.key"), key).unwrap();
    let out = Command::new(bin("sonm-node"))
        .args(["keygen", "--keystore"])
        .arg(dir.join("node-key.json"))
        .arg("--password-file")
        .arg(dir.join("node.password"))
        .arg("--import-hex-file")
        .arg(dir.join("consumer.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sonm-node keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(dir.join("consumer.key")).unwrap();
}

impl Worker {
    /// The worker as in `scripts/local-network.sh` under NAT: in `site`'s worker namespace,
    /// its task service on its private address, publishing itself to `rv`, reaching the chain
    /// at the host's side of the NAT. ([`Worker::restart`] would start it outside the
    /// namespace: not for this one.)
    pub fn start_behind_nat(net: &Net, site: &NatSite, rv: &Rendezvous) -> Self {
        let key_file = net.path("worker.key");
        std::fs::write(&key_file, SUPPLIER_KEY).unwrap();
        // Its own namespace: any port is free there.
        let listen = format!("{}:15010", site.worker_ip);
        let config = net.path("worker.toml");
        std::fs::write(
            &config,
            format!(
                r#"state_dir = "{state}"
key_file = "{key}"
rpc_url = "http://{host}:{port}"
addresses = "{addresses}"
listen = "{listen}"
netflags = "outbound"
poll_interval_ms = 200
rendezvous = "{rv}"
rendezvous_address = "{rv_address}"

[benchmarks]
wasm_score_module = "{score}"
wasm_score_rounds = 20
cpu_ms = 20

[[plans]]
name = "one-core"
cpu_cores = 1
ram = "128MiB"
storage = "100MB"
price = {PRICE}
duration = 0
netflags = "outbound"
"#,
                state = net.path("worker").display(),
                key = key_file.display(),
                host = site.host_ip,
                port = net.anvil.port(),
                addresses = net.addresses_path.display(),
                rv = rv.listen,
                rv_address = rv.address,
                score = example_job("wasm-score.wasm").display(),
            ),
        )
        .unwrap();
        let worker = bin("sonm-worker");
        let mut args = site.exec_prefix().to_vec();
        args.extend([
            worker.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "run",
        ]);
        let mut w = Self {
            process: Daemon::spawn(Path::new("ip"), &args, &net.path("worker.log")),
            config,
            listen,
            address: address_of(SUPPLIER_KEY),
        };
        w.wait_running(1);
        w
    }

    /// How many times the worker has published itself to a rendezvous server (each new
    /// connection to the server publishes once; refreshes are not counted).
    pub fn publishes(&self) -> usize {
        self.process
            .log_text()
            .matches("published to the rendezvous server")
            .count()
    }
}

impl Node {
    /// The node as in `scripts/local-network.sh`: no address for any worker, only the
    /// rendezvous server `rv`; its QUIC socket on `quic_ip` (one the worker's NAT reaches).
    pub fn start_via_rendezvous(net: &Net, key: &str, rv: &Rendezvous, quic_ip: &str) -> Self {
        let d = net.dir.path();
        import_node_key(d, key);
        let port = free_tcp_port();
        let config = d.join("node.toml");
        std::fs::write(
            &config,
            format!(
                r#"keystore = "{keystore}"
password_file = "{password}"
rpc_url = "{rpc}"
addresses = "{addresses}"
listen = "127.0.0.1:{port}"
quic_bind = "{quic_ip}:0"
rendezvous = "{rv}"
rendezvous_address = "{rv_address}"
"#,
                keystore = d.join("node-key.json").display(),
                password = d.join("node.password").display(),
                rpc = net.rpc(),
                addresses = net.addresses_path.display(),
                rv = rv.listen,
                rv_address = rv.address,
            ),
        )
        .unwrap();
        Self::launch(net, key, port, &config)
    }

    /// The paths of the connections the node made through the rendezvous, in order, as it
    /// logged them: "direct path" or "relay".
    pub fn rendezvous_paths(&self) -> Vec<String> {
        self.process
            .log_text()
            .lines()
            .filter_map(|l| {
                l.split("reached the worker through the rendezvous (")
                    .nth(1)
            })
            .filter_map(|rest| rest.split(')').next())
            .map(str::to_owned)
            .collect()
    }
}

// ------------------------------------------------------------------ chain RPC endpoints
// (rpc_failover.rs and the round-trip benchmark)

/// `["a", "b"]`: a TOML list of strings (the `rpc_url` of the daemons' configurations).
pub fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Time an endpoint spent answering (a union of in-flight intervals) and its request count.
#[derive(Debug, Default)]
struct Busy {
    in_flight: u32,
    since: Option<Instant>,
    total: Duration,
    requests: u64,
}

/// What an [`RpcProxy`] relayed: busy time and requests. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Meter(std::sync::Arc<std::sync::Mutex<Busy>>);

impl Meter {
    fn begin(&self) {
        let mut b = self.0.lock().unwrap();
        if b.in_flight == 0 {
            b.since = Some(Instant::now());
        }
        b.in_flight += 1;
        b.requests += 1;
    }

    fn end(&self) {
        let mut b = self.0.lock().unwrap();
        b.in_flight -= 1;
        if b.in_flight == 0 {
            let since = b.since.take().unwrap();
            b.total += since.elapsed();
        }
    }

    /// (busy time so far, requests so far).
    pub fn read(&self) -> (Duration, u64) {
        let b = self.0.lock().unwrap();
        let open = b.since.map(|s| s.elapsed()).unwrap_or_default();
        (b.total + open, b.requests)
    }
}

/// Reads one HTTP/1.1 message (head + body framed by Content-Length or chunked) from `r`;
/// `None` at the end of the stream or on an error.
fn read_http_message(r: &mut std::io::BufReader<std::net::TcpStream>) -> Option<Vec<u8>> {
    use std::io::{BufRead, Read};
    let mut msg = Vec::new();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(v) = text.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if text.starts_with("transfer-encoding:") && text.contains("chunked") {
            chunked = true;
        }
        msg.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let mut size = Vec::new();
            r.read_until(b'\n', &mut size).ok()?;
            msg.extend_from_slice(&size);
            let n = usize::from_str_radix(
                String::from_utf8_lossy(&size)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            msg.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; length];
        r.read_exact(&mut body).ok()?;
        msg.extend_from_slice(&body);
    }
    Some(msg)
}

/// A JSON-RPC (HTTP/1.1) proxy on a free loopback port in front of an endpoint, metering every
/// request. [`RpcProxy::kill`] (or drop) takes it away as a dying endpoint goes: the port is
/// closed (connections are refused) and every open connection is shut down.
#[derive(Debug)]
pub struct RpcProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub meter: Meter,
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl RpcProxy {
    /// A proxy in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Self {
        use std::io::{BufReader, Write};
        use std::net::TcpStream;
        use std::sync::atomic::Ordering;
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let meter = Meter::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let (meter, stop, connections) = (meter.clone(), stop.clone(), connections.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return; // drops the listener: the port is closed
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    {
                        let mut open = connections.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                    }
                    let meter = meter.clone();
                    std::thread::spawn(move || {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let mut from_client = BufReader::new(client.try_clone().unwrap());
                        let mut from_server = BufReader::new(server.try_clone().unwrap());
                        let (mut to_client, mut to_server) = (client, server);
                        while let Some(request) = read_http_message(&mut from_client) {
                            meter.begin();
                            let response = if to_server.write_all(&request).is_ok() {
                                read_http_message(&mut from_server)
                            } else {
                                None
                            };
                            let sent = response.is_some_and(|r| to_client.write_all(&r).is_ok());
                            meter.end();
                            if !sent {
                                return;
                            }
                        }
                    });
                }
            })
        };
        Self {
            url: format!("http://{addr}"),
            meter,
            addr,
            stop,
            connections,
            accept: Some(accept),
        }
    }

    /// Requests relayed so far.
    pub fn requests(&self) -> u64 {
        self.meter.read().1
    }

    /// Closes the port and shuts every open connection down.
    pub fn kill(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the listener.
        let _ = std::net::TcpStream::connect(self.addr);
        let _ = accept.join();
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.kill();
    }
}
