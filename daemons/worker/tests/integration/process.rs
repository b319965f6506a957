//! The `sonm-worker` binary as a real process: it reads its TOML config, places its ask on a
//! real anvil, serves a customer's sha256 job over QUIC under a deal; then it is killed with
//! SIGKILL and restarted, and the deal is still served while nothing is placed twice; the
//! finished task's result is downloaded again (by its consumer only), an orphan results
//! directory is gone, and a stored output changed on disk is refused.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::signing_provider;
use sonm_contracts::{Market, SNM, chain_order, market_order, order_id_from_chain, placed_ref};
use sonm_market::{Benchmark, Benchmarks, IdentityLevel, NetFlags, Order, OrderType};
use sonm_net::EthKey;
use sonm_worker::bench::BenchConfig;
use sonm_worker::chain::Chain;
use sonm_worker::client::{ClientError, TaskClient, client_endpoint};
use sonm_worker::config::PlanConfig;
use sonm_worker::proto::{Exit, File, StartWasm, TaskError, TaskLimits, TaskStatus};
use sonm_worker::receipt::verify_result;
use sonm_worker::{Config, billing::BillingPolicy};

/// The worker process, killed (SIGKILL) and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(config: &Path, log: &Path) -> Process {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Process(
        Command::new(env!("CARGO_BIN_EXE_sonm-worker"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms, at most `tries` times, until it returns `Some`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    log: &Path,
    tries: u32,
    mut f: impl FnMut() -> F,
) -> T {
    for _ in 0..tries {
        if let Some(v) = f().await {
            return v;
        }
        smol::Timer::after(Duration::from_millis(50)).await;
    }
    panic!(
        "{what}: gave up; worker log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn the_worker_process_serves_a_deal_and_survives_kill_9() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let module_path = sonm_wasm_runtime::example_jobs_dir().join("sha256.wasm");
    let module = std::fs::read(&module_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run wasm-runtime/jobs/build.sh",
            module_path.display()
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let port = free_udp_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = Config {
        listen,
        netflags: "outbound".into(),
        poll_interval_ms: 100,
        max_concurrent_tasks: 2,
        max_task_wall_time_ms: 60_000,
        benchmarks: BenchConfig {
            cpu_ms: 20,
            wasm_score_rounds: 20,
            ..BenchConfig::default()
        },
        billing: BillingPolicy { interval: 600 },
        plans: vec![PlanConfig {
            name: "one-core".into(),
            cpu_cores: 1,
            ram: Some("128MiB".into()),
            storage: None,
            gpus: 0,
            price: 1_000_000_000,
            duration: 0,
            netflags: "outbound".into(),
            identity_level: IdentityLevel::Anonymous,
        }],
        ..Config::new(
            dir.path().join("state"),
            dir.path().join("worker.key"),
            anvil.endpoint().parse().unwrap(),
            dir.path().join("addresses.toml"),
        )
    };
    let config_path = dir.path().join("worker.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    smol::block_on(async_compat::Compat::new(async {
        let url: alloy::transports::http::reqwest::Url = anvil.endpoint().parse().unwrap();
        let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
        let consumer: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
        let addresses =
            common::deploy_for_worker(&anvil.endpoint(), &config.addresses, &config.key_file).await;
        // A read-only view of the supplier's orders.
        let view = Chain::connect(&config.rpc_url, supplier.clone(), &addresses)
            .await
            .unwrap();

        let worker = spawn_worker(&config_path, &log);
        let ask = until("the worker's ask", &log, 600, || async {
            let latest = view.block_number().await.ok()?;
            view.orders_placed(0, latest).await.ok()?.into_iter().next()
        })
        .await;
        assert_eq!(ask.benchmarks.get(Benchmark::RamSize), 128 << 20);

        // The customer opens a deal on the ask.
        let p = signing_provider(url.clone(), consumer.clone());
        let market = Market::new(addresses.contracts.market, &p);
        let token = SNM::new(addresses.contracts.snm, &p);
        let r = token
            .approve(addresses.contracts.market, U256::MAX)
            .send()
            .await
            .unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        let bid = Order {
            id: 0,
            order_type: OrderType::Bid,
            author: consumer.address(),
            counterparty: Some(supplier.address()),
            duration: 0,
            price: 1_000_000_000,
            netflags: NetFlags::OUTBOUND,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: Default::default(),
            benchmarks: Benchmarks::ZERO.with(Benchmark::CpuCores, 1),
        };
        let r = market.placeOrder(chain_order(&bid)).send().await.unwrap();
        let r = r.get_receipt().await.unwrap();
        let e = r.decoded_log::<Market::OrderPlaced>().unwrap();
        let bid = market_order(order_id_from_chain(e.orderId).unwrap(), &e.order).unwrap();
        let r = market
            .openDeal(placed_ref(&ask), placed_ref(&bid))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(r.status());
        let deal = r
            .decoded_log::<Market::DealOpened>()
            .unwrap()
            .dealId
            .to::<u64>();

        let key = EthKey::from_bytes(&consumer.to_bytes().0).unwrap();
        let endpoint = client_endpoint(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let start = StartWasm {
            deal,
            module,
            args: Vec::new(),
            inputs: vec![File {
                path: "a.txt".into(),
                bytes: b"abc".to_vec(),
            }],
            limits: TaskLimits::default(),
        };
        // sha256("abc")
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a.txt\n";
        let worker_address = supplier.address();
        let run = |start: StartWasm| {
            let endpoint = endpoint.clone();
            let log = log.clone();
            async move {
                let client = until("connecting to the worker", &log, 200, || async {
                    TaskClient::connect(&endpoint, listen, worker_address)
                        .await
                        .ok()
                })
                .await;
                let task = client.start_wasm(start).await.unwrap();
                client
                    .wait_result(task, Duration::from_millis(20), 3000)
                    .await
                    .unwrap()
            }
        };
        let result = run(start.clone()).await;
        assert_eq!(result.exit, Exit::Code(0));
        assert_eq!(String::from_utf8_lossy(&result.outputs[0].bytes), expected);

        // kill -9, restart: the deal is still known and served; no second ask for the sold slice.
        drop(worker);
        // What a crash between moving a result in and recording it leaves: removed at start.
        let results = config.state_dir.join("results");
        let orphan = results.join("999999");
        std::fs::create_dir_all(orphan.join("output")).unwrap();
        std::fs::write(orphan.join("output/x"), b"never recorded").unwrap();
        let mut worker = spawn_worker(&config_path, &log);
        let again = run(start).await;
        assert_eq!(again.exit, Exit::Code(0));
        assert_eq!(again.receipt.receipt.deal, deal);
        assert!(
            again.receipt.receipt.task > result.receipt.receipt.task,
            "task ids not reused"
        );
        let latest = view.block_number().await.unwrap();
        assert_eq!(
            view.orders_placed(0, latest).await.unwrap().len(),
            1,
            "one ask only"
        );

        assert!(
            !orphan.exists(),
            "the orphan results directory is removed at start"
        );

        // The task of the killed run: its status, receipt and outputs survived; its consumer
        // downloads every output again (checked against the announced sha256s and the receipt).
        let client = TaskClient::connect(&endpoint, listen, worker_address)
            .await
            .unwrap();
        let old_task = result.receipt.receipt.task;
        assert_eq!(
            client.status(old_task).await.unwrap(),
            TaskStatus::Finished(Exit::Code(0))
        );
        let kept = client.result(old_task).await.unwrap();
        verify_result(&kept, worker_address).unwrap();
        assert_eq!(kept, result, "the same result as before the kill");
        assert_eq!(String::from_utf8_lossy(&kept.outputs[0].bytes), expected);
        // Nobody else gets it.
        let stranger_key = EthKey::random();
        let stranger_endpoint =
            client_endpoint(&stranger_key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let stranger = TaskClient::connect(&stranger_endpoint, listen, worker_address)
            .await
            .unwrap();
        for refused in [
            stranger.result(old_task).await.map(drop),
            stranger.status(old_task).await.map(drop),
        ] {
            assert!(
                matches!(
                    refused,
                    Err(ClientError::Refused(TaskError::NotYourTask { .. }))
                ),
                "{refused:?}"
            );
        }
        // A stored output changed on disk is refused by the worker, typed, not served.
        let stored = results.join(format!("{old_task}/output/SHA256SUMS"));
        let mut bytes = std::fs::read(&stored).unwrap();
        bytes[0] ^= 0x20;
        std::fs::write(&stored, &bytes).unwrap();
        assert!(matches!(
            client.result(old_task).await,
            Err(ClientError::Refused(TaskError::ResultCorrupt { task, path }))
                if task == old_task && path == "SHA256SUMS"
        ));

        // SIGTERM: a graceful stop.
        let pid = worker.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = until("the worker's exit after SIGTERM", &log, 200, || {
            let exited = worker.0.try_wait().unwrap();
            async move { exited }
        })
        .await;
        assert!(status.success(), "exit status {status}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("stopping"), "log:\n{text}");
        // Shown with --nocapture.
        eprintln!("worker log:\n{text}");
    }));
}
