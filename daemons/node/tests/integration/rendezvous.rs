//! A worker reachable only through the rendezvous, with real parts on loopback: a real anvil
//! with the deployed contracts, a `sonm-rendezvous` server (in this process), a worker (the
//! library, as `sonm-worker run` runs it) that publishes itself from its task endpoint's socket,
//! and a node (the library) whose configuration has no `[workers]` entry: it buys the worker's
//! ask and runs the sha256 WASM job through a connection made by `connect_via_rendezvous`.
//! Then the worker's relay policy: a peer without a deal that names a victim address gets no
//! punch sent there and no relay session; the deal's customer gets both.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and `wasm-runtime/jobs/build.sh` (the
//! sha256 job); scripts/test.sh provides both.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_market::Address;
use sonm_net::{EthKey, Identity};
use sonm_node::Node;
use sonm_node::config::Config as NodeConfig;
use sonm_rendezvous::proto::{Control, Request, Response};
use sonm_rendezvous::{ClientConfig, Path, RendezvousClient, RendezvousServer, ServerConfig};
use sonm_worker::Config as WorkerConfig;
use sonm_worker::proto::{Exit, File, StartWasm, TaskLimits, TaskStatus};

use crate::common;
use common::{RunningWorker, block_on, deploy_chain, one_core_plan, sha256_hex, worker_config};

/// Every wait in this test is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// Polls `f` until it returns `Some`, at most [`LIMIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inputs() -> Vec<File> {
    vec![
        File {
            path: "hello.txt".into(),
            bytes: b"hello, fog\n".to_vec(),
        },
        File {
            path: "data/numbers.bin".into(),
            bytes: (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        },
    ]
}

/// A rendezvous client of `key` on a fresh loopback socket.
fn rendezvous_client(server: &RendezvousServer, key: &EthKey) -> RendezvousClient {
    let config = ClientConfig::new(server.local_addr().unwrap(), Some(server.address()));
    block_on(RendezvousClient::bind(
        "127.0.0.1:0".parse().unwrap(),
        key,
        config,
    ))
    .unwrap()
}

/// Asks the server to introduce `client` to `worker` naming `victim` as its only private
/// candidate, and consents to a relay; returns the punch datagrams `victim` then receives
/// from the worker's address within `wait`.
fn punch_and_relay(
    client: &RendezvousClient,
    worker: Address,
    victim: &UdpSocket,
    wait: Duration,
) -> Vec<(SocketAddr, Control)> {
    let introduce = Request::Punch {
        target: worker,
        private: vec![victim.local_addr().unwrap()],
    };
    match block_on(client.request(&introduce)).unwrap() {
        Response::Punch(_) => {}
        other => panic!("introduction refused: {other:?}"),
    }
    match block_on(client.request(&Request::Relay { peer: worker })).unwrap() {
        Response::RelayPending | Response::RelayAllocated(_) => {}
        other => panic!("relay request: {other:?}"),
    }
    victim
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < wait {
        if let Ok((n, from)) = victim.recv_from(&mut buf)
            && let Some(c) = Control::decode(&buf[..n])
        {
            got.push((from, c));
        }
    }
    got
}

#[test]
fn a_worker_known_only_through_the_rendezvous_runs_the_customers_job() {
    let module = sonm_wasm_runtime::example_jobs_dir().join("sha256.wasm");
    assert!(
        module.exists(),
        "{}: build the example jobs with wasm-runtime/jobs/build.sh",
        module.display()
    );
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // --- The chain: contracts deployed, the customer funded with SNM (dev keys have gas).
    let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
    let customer: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
    let (addresses, addresses_path) = deploy_chain(&anvil, d, &[customer.address()], Vec::new());

    // --- The rendezvous server.
    let server_key = EthKey::random();
    let server = RendezvousServer::start(
        Identity::generate(&server_key, Duration::from_secs(3600)).unwrap(),
        ServerConfig::default(),
    )
    .unwrap();
    let server_addr = server.local_addr().unwrap();

    // --- The worker, publishing itself there.
    let worker_config = WorkerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        rendezvous: Some(server_addr.to_string()),
        rendezvous_address: Some(server.address()),
        ..worker_config(d, &anvil, &addresses_path, vec![one_core_plan("one-core")])
    };
    let running = RunningWorker::start(worker_config);
    let worker = running.worker();
    assert_eq!(worker.address(), supplier.address());

    let stranger = rendezvous_client(&server, &EthKey::random());
    let (record, observed) = wait_for("the worker's record at the rendezvous", || {
        block_on(stranger.resolve(supplier.address())).ok()
    });
    assert_eq!(record.address, supplier.address());
    assert_eq!(observed.ip(), std::net::Ipv4Addr::LOCALHOST);
    let ask = wait_for("the worker's ask", || {
        worker.plans().unwrap().into_iter().find_map(|p| p.ask)
    });

    // --- The node: no [workers] entry, only the rendezvous.
    let node_config = NodeConfig::from_toml(&format!(
        r#"keystore = "{d}/unused-keystore.json"
password_file = "{d}/unused-password"
rpc_url = "{rpc}"
addresses = "{addresses}"
quic_bind = "127.0.0.1:0"
rendezvous = "{server_addr}"
rendezvous_address = "{server_address}"
"#,
        d = d.display(),
        rpc = anvil.endpoint(),
        addresses = addresses_path.display(),
        server_address = server.address(),
    ))
    .unwrap();
    assert!(node_config.workers.is_empty());
    let node = Node::with_signer(&node_config, customer.clone(), addresses.clone()).unwrap();

    // --- Buy, run the sha256 job, check its output: all through the rendezvous.
    let deal = node.quick_buy(ask.id, 0).unwrap();
    assert_eq!(deal.supplier, supplier.address());
    let start = StartWasm {
        deal: deal.id,
        module: std::fs::read(&module).unwrap(),
        args: Vec::new(),
        inputs: inputs(),
        limits: TaskLimits::default(),
    };
    let task = node.start_task(start, None).unwrap();
    let path = node
        .rendezvous_path(supplier.address())
        .expect("the worker was reached through the rendezvous");
    println!("node -> worker via rendezvous: {path:?}");
    // On loopback the published address answers at once: a direct, hole-punched path.
    assert!(matches!(path, Path::Direct(_)), "{path:?}");
    wait_for("the task to finish", || {
        match node.task_status(deal.id, task, None).unwrap() {
            TaskStatus::Running => None,
            done => Some(done),
        }
    });
    let result = node.task_result(deal.id, task, None).unwrap();
    assert_eq!(
        result.exit,
        Exit::Code(0),
        "stderr: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let sums = result
        .outputs
        .iter()
        .find(|f| f.path == "SHA256SUMS")
        .expect("SHA256SUMS written");
    let sums = String::from_utf8_lossy(&sums.bytes);
    for f in inputs() {
        assert!(
            sums.contains(&sha256_hex(&f.bytes)),
            "{} missing from {sums}",
            f.path
        );
    }

    // --- A peer without a deal cannot make the worker punch at an address it names, nor
    // open a relay session with it.
    let relays_before = server.stats().relay_sessions_opened;
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    let got = punch_and_relay(
        &stranger,
        supplier.address(),
        &victim,
        Duration::from_millis(2500),
    );
    assert!(
        got.is_empty(),
        "the worker punched for a peer without a deal: {got:?}"
    );
    assert_eq!(server.stats().relay_sessions_opened, relays_before);

    // --- The deal's customer (from another socket of the same key) gets both: the worker
    // punches towards the candidate it names, and agrees to a relay.
    let customer_key = EthKey::from_bytes(&customer.to_bytes().0).unwrap();
    let customer_rv = rendezvous_client(&server, &customer_key);
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    let got = punch_and_relay(
        &customer_rv,
        supplier.address(),
        &victim,
        Duration::from_millis(2500),
    );
    assert!(
        got.iter().any(|(_, c)| *c
            == Control::Punch {
                from: supplier.address()
            }),
        "the worker did not punch for its customer: {got:?}"
    );
    wait_for("the relay session for the customer", || {
        (server.stats().relay_sessions_opened > relays_before).then_some(())
    });

    drop(node);
    drop(running);
}
