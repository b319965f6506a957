//! The worker with real parts: a real anvil with the deployed contracts, the worker (library,
//! in process) placing its asks, a customer placing a matching bid and opening the deal on
//! chain, then running the example sha256 WASM job over QUIC and checking the result and the
//! signed usage receipt; a stranger and a deal-less request refused; billing, closing (by the
//! consumer, and by the worker at a forward deal's end), the results of an ended deal removed
//! after the retention, and a restart that loses nothing.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and `wasm-runtime/jobs/build.sh` (the
//! example jobs); the test says so when either is missing.

use crate::common;

use common::Customer;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use sha2::{Digest, Sha256};
use sonm_contracts::Market;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::signing_provider;
use sonm_market::{Benchmark, IdentityLevel};
use sonm_net::EthKey;
use sonm_worker::bench::BenchConfig;
use sonm_worker::billing::BillingPolicy;
use sonm_worker::client::{ClientError, TaskClient, client_endpoint};
use sonm_worker::config::PlanConfig;
use sonm_worker::proto::{Exit, File, StartContainer, StartWasm, TaskError, TaskLimits};
use sonm_worker::receipt::{Fuel, ReceiptError, verify_result};
use sonm_worker::state::DealState;
use sonm_worker::{Config, Worker};

fn block_on<F: Future>(future: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(future))
}

fn plan(name: &str, ram: &str, price: u64, duration: u64) -> PlanConfig {
    PlanConfig {
        name: name.into(),
        cpu_cores: 1,
        ram: Some(ram.into()),
        storage: Some("100MB".into()),
        gpus: 0,
        price,
        duration,
        netflags: "outbound".into(),
        identity_level: IdentityLevel::Anonymous,
    }
}

fn config(dir: &Path, anvil: &Anvil) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        netflags: "outbound".into(),
        poll_interval_ms: 100,
        max_concurrent_tasks: 4,
        max_task_wall_time_ms: 60_000,
        benchmarks: BenchConfig {
            cpu_ms: 20,
            wasm_score_rounds: 20,
            ..BenchConfig::default()
        },
        billing: BillingPolicy { interval: 2 },
        // Short, so that the test sees an ended deal's results go.
        result_retention_s: 1,
        master: Some(DEV_KEYS[3].parse::<PrivateKeySigner>().unwrap().address()),
        plans: vec![
            plan("spot-small", "256MiB", 1_000_000_000, 0),
            plan("forward-hour", "128MiB", 2_000_000_000, 3600),
        ],
        ..Config::new(
            dir.join("state"),
            dir.join("worker.key"),
            anvil.endpoint().parse().unwrap(),
            dir.join("addresses.toml"),
        )
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn inputs() -> Vec<File> {
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        File {
            path: "hello.txt".into(),
            bytes: b"hello, fog\n".to_vec(),
        },
        File {
            path: "data/big.bin".into(),
            bytes: big,
        },
        File {
            path: "data/empty".into(),
            bytes: Vec::new(),
        },
    ]
}

fn sha256_module() -> Vec<u8> {
    let path = sonm_wasm_runtime::example_jobs_dir().join("sha256.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the example jobs with wasm-runtime/jobs/build.sh",
            path.display()
        )
    })
}

async fn connect(key: &EthKey, addr: SocketAddr, worker: alloy::primitives::Address) -> TaskClient {
    let endpoint = client_endpoint(key, "127.0.0.1:0".parse().unwrap()).unwrap();
    TaskClient::connect(&endpoint, addr, worker).await.unwrap()
}

#[test]
fn a_customer_buys_a_slice_runs_a_job_and_gets_a_verified_receipt() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let module = sha256_module();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &anvil);
    block_on(async {
        let url: alloy::transports::http::reqwest::Url = anvil.endpoint().parse().unwrap();
        let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
        let consumer: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
        let addresses =
            common::deploy_for_worker(&anvil.endpoint(), &config.addresses, &config.key_file).await;

        // --- The worker sells its slices.
        let worker = Arc::new(Worker::open(config.clone()).await.unwrap());
        assert_eq!(worker.address(), supplier.address());
        assert!(worker.measured().wasm_score_measured, "wasm-score job ran");
        assert!(worker.benchmarks().get(Benchmark::WasmScore) > 0);
        // Registered under its master, which confirms: payouts go to the master.
        let master: PrivateKeySigner = DEV_KEYS[3].parse().unwrap();
        assert!(
            !worker.sync_master().await.unwrap(),
            "asked, not yet confirmed"
        );
        assert_eq!(
            worker.chain().pending_master().await.unwrap(),
            master.address()
        );
        assert!(!worker.sync_master().await.unwrap(), "asks only once");
        let master_market = Market::new(
            addresses.contracts.market,
            signing_provider(url.clone(), master.clone()),
        );
        let r = master_market
            .confirmWorker(supplier.address())
            .send()
            .await
            .unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        assert!(worker.sync_master().await.unwrap(), "confirmed");
        assert_eq!(worker.chain().master_of().await.unwrap(), master.address());

        worker.sync_plans().await.unwrap();
        let plans = worker.plans().unwrap();
        assert_eq!(plans.len(), 2);
        let small = plans.iter().find(|p| p.spec.name == "spot-small").unwrap();
        let forward = plans
            .iter()
            .find(|p| p.spec.name == "forward-hour")
            .unwrap();
        let small_ask = small.ask.clone().expect("ask placed");
        let forward_ask = forward.ask.clone().expect("ask placed");
        assert_eq!(small_ask.benchmarks.get(Benchmark::CpuCores), 1);
        assert_eq!(small_ask.benchmarks.get(Benchmark::RamSize), 256 << 20);
        assert_eq!(small_ask.author, supplier.address());
        assert!(worker.chain().order_active(small_ask.id).await.unwrap());

        // --- The customer buys the spot slice.
        let customer = Customer {
            provider: signing_provider(url.clone(), consumer.clone()),
            key: consumer.clone(),
            addresses: addresses.clone(),
        };
        customer.approve().await;
        let bid = customer.bid_for(1, 128 << 20, 1_500_000_000, 0).await;
        let deal = customer.open_deal(&small_ask, &bid).await;
        worker.sync_deals().await.unwrap();
        let rec = worker.store().deal(deal).unwrap().expect("deal recorded");
        assert_eq!(rec.consumer, consumer.address());
        assert_eq!(rec.state, DealState::Active);
        let small_now = worker.store().plan(small.id).unwrap().unwrap();
        assert_eq!((small_now.deal, small_now.ask.clone()), (Some(deal), None));

        // --- The task service.
        let endpoint = worker.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let server = smol::spawn(worker.clone().serve(endpoint.clone()));
        let consumer_key = EthKey::from_bytes(&consumer.to_bytes().0).unwrap();
        let client = connect(&consumer_key, addr, worker.address()).await;
        let start = StartWasm {
            deal,
            module: module.clone(),
            args: Vec::new(),
            inputs: inputs(),
            limits: TaskLimits::default(),
        };
        let task = client.start_wasm(start.clone()).await.unwrap();
        let result = client
            .wait_result(task, Duration::from_millis(20), 3000)
            .await
            .unwrap();
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
        let mut expected: Vec<(String, String)> = inputs()
            .into_iter()
            .map(|f| (f.path.clone(), sha256_hex(&f.bytes)))
            .collect();
        expected.sort();
        let expected: String = expected
            .iter()
            .map(|(p, h)| format!("{h}  {p}\n"))
            .collect();
        assert_eq!(String::from_utf8_lossy(&sums.bytes), expected);
        // The receipt (already checked by `result`): the worker's, this deal and task; no fuel
        // under the production metering (epochs), and it says so.
        let receipt = &result.receipt.receipt;
        assert_eq!(result.receipt.signer().unwrap(), supplier.address());
        assert_eq!((receipt.deal, receipt.task), (deal, task));
        assert_eq!(receipt.fuel, Fuel::NotMetered);
        assert_eq!(receipt.chain_id, addresses.chain_id);
        verify_result(&result, supplier.address()).unwrap();
        let mut tampered = result.clone();
        tampered.outputs[0].bytes.push(b'!');
        assert_eq!(
            verify_result(&tampered, supplier.address()),
            Err(ReceiptError::OutputsMismatch)
        );
        assert!(matches!(
            verify_result(&result, consumer.address()),
            Err(ReceiptError::WrongWorker { .. })
        ));
        // A task that asks for fuel gets a count, and it is deterministic: the same job twice
        // uses the same fuel (and gives the same outputs as the unmetered run).
        let metered = StartWasm {
            limits: TaskLimits {
                fuel_metered: true,
                ..TaskLimits::default()
            },
            ..start.clone()
        };
        let mut counts = Vec::new();
        for _ in 0..2 {
            let t = client.start_wasm(metered.clone()).await.unwrap();
            let r = client
                .wait_result(t, Duration::from_millis(20), 3000)
                .await
                .unwrap();
            verify_result(&r, supplier.address()).unwrap();
            assert_eq!(r.receipt.receipt.outputs_sha256, receipt.outputs_sha256);
            counts.push(r.receipt.receipt.fuel);
        }
        assert!(matches!(counts[0], Fuel::Counted(n) if n > 0), "{counts:?}");
        assert_eq!(counts[0], counts[1]);

        // A limit beyond the slice is refused.
        let greedy = StartWasm {
            limits: TaskLimits {
                memory_bytes: Some(1 << 30),
                ..TaskLimits::default()
            },
            ..start.clone()
        };
        assert!(matches!(
            client.start_wasm(greedy).await,
            Err(ClientError::Refused(TaskError::LimitExceeded { .. }))
        ));
        // A deal that does not exist (or is not this worker's) is refused.
        let dealless = StartWasm {
            deal: 999,
            ..start.clone()
        };
        assert_eq!(
            client.start_wasm(dealless).await.unwrap_err().to_string(),
            ClientError::Refused(TaskError::UnknownDeal(999)).to_string()
        );

        // --- A stranger (a valid identity, not the deal's consumer) is refused.
        let stranger_key = EthKey::random();
        let stranger = connect(&stranger_key, addr, worker.address()).await;
        match stranger.start_wasm(start.clone()).await {
            Err(ClientError::Refused(TaskError::NotConsumer {
                deal: d,
                consumer: c,
                peer,
            })) => {
                assert_eq!(
                    (d, c, peer),
                    (deal, consumer.address(), stranger_key.address())
                );
            }
            other => panic!("stranger was not refused: {other:?}"),
        }
        // The same check guards containers, before anything else is looked at.
        let container = StartContainer {
            deal,
            rootfs: Vec::new(),
            args: vec!["true".into()],
            env: Vec::new(),
            limits: TaskLimits::default(),
        };
        assert!(matches!(
            stranger.start_container(container.clone()).await,
            Err(ClientError::Refused(TaskError::NotConsumer { peer, .. })) if peer == stranger_key.address()
        ));
        // This worker has `containers = false`: the consumer is told so, typed.
        assert!(matches!(
            client.start_container(container).await,
            Err(ClientError::Refused(TaskError::ContainersUnavailable(_)))
        ));
        assert!(matches!(
            stranger.status(task).await,
            Err(ClientError::Refused(TaskError::NotYourTask { .. }))
        ));
        assert!(matches!(
            stranger.result(task).await,
            Err(ClientError::Refused(TaskError::NotYourTask { .. }))
        ));

        // --- Billing: after some chain time the worker bills the spot deal.
        let before = worker.chain().get_deal(deal, 0).await.unwrap();
        assert_eq!(before.master, master.address());
        customer.advance(5).await;
        worker.bill_due().await.unwrap();
        let after = worker.chain().get_deal(deal, 0).await.unwrap();
        assert!(after.active);
        assert!(
            after.last_bill > before.last_bill,
            "billed: {before:?} -> {after:?}"
        );

        // --- A forward deal on the other plan.
        let forward_bid = customer.bid_for(1, 64 << 20, 2_000_000_000, 3600).await;
        let forward_deal = customer.open_deal(&forward_ask, &forward_bid).await;
        worker.sync_deals().await.unwrap();

        // --- The consumer closes the spot deal while a task runs: the worker stops the task
        // (its receipt says so), frees the slice and sells it again.
        let endless = StartWasm {
            module: br#"(module (memory (export "memory") 1)
                          (func (export "_start") (loop $l (br $l))))"#
                .to_vec(),
            inputs: Vec::new(),
            ..metered.clone()
        };
        let looping = client.start_wasm(endless).await.unwrap();
        assert_eq!(
            client.status(looping).await.unwrap(),
            sonm_worker::proto::TaskStatus::Running
        );
        customer.close_deal(deal).await;
        worker.bill_due().await.unwrap();
        assert_eq!(
            worker.store().deal(deal).unwrap().unwrap().state,
            DealState::Closed
        );
        let stopped = client
            .wait_result(looping, Duration::from_millis(20), 3000)
            .await
            .unwrap();
        assert!(
            matches!(stopped.exit, Exit::Trapped(_)),
            "{:?}",
            stopped.exit
        );
        assert!(stopped.receipt.receipt.trapped);
        // A stopped job's fuel is unknown even when metered; its wall time is what counts.
        assert_eq!(stopped.receipt.receipt.fuel, Fuel::Unknown);
        assert!(stopped.receipt.receipt.wall_time_us > 0);
        assert!(matches!(
            client.start_wasm(start.clone()).await,
            Err(ClientError::Refused(TaskError::DealClosed(_)))
        ));

        // --- Retention: the ended deal's results stay fetchable for `result_retention_s`
        // (nothing sweeps until asked here), then they are removed; status and receipt stay.
        assert_eq!(client.result(task).await.unwrap(), result);
        let kept_dir = config.state_dir.join("results").join(task.to_string());
        assert!(kept_dir.is_dir());
        let mut swept = 0;
        for _ in 0..100 {
            swept = worker.sweep_results();
            if swept > 0 {
                break;
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        assert_eq!(swept, 4, "the deal's four finished tasks");
        assert!(!kept_dir.exists());
        assert!(matches!(
            client.result(task).await,
            Err(ClientError::Refused(TaskError::ResultGone(t))) if t == task
        ));
        assert_eq!(
            client.status(task).await.unwrap(),
            sonm_worker::proto::TaskStatus::Finished(Exit::Code(0))
        );
        assert_eq!(
            worker.store().task(task).unwrap().unwrap().receipt,
            Some(result.receipt.clone())
        );
        worker.sync_plans().await.unwrap();
        let small_again = worker.store().plan(small.id).unwrap().unwrap();
        assert_eq!(small_again.deal, None);
        let resold = small_again
            .ask
            .clone()
            .expect("a new ask for the freed slice");
        assert_ne!(resold.id, small_ask.id);

        // --- The forward deal ends: the worker closes it (billing it to its end).
        customer.advance(3601).await;
        worker.bill_due().await.unwrap();
        assert!(
            !worker
                .chain()
                .get_deal(forward_deal, 0)
                .await
                .unwrap()
                .active
        );
        assert_eq!(
            worker.store().deal(forward_deal).unwrap().unwrap().state,
            DealState::Closed
        );

        // --- Restart: everything is still there, nothing is placed twice.
        endpoint.close();
        drop(server);
        drop(client);
        drop(stranger);
        // The connections' tasks hold the worker until they notice the close.
        let mut worker = worker;
        for _ in 0..500 {
            match Arc::try_unwrap(worker) {
                Ok(w) => {
                    drop(w);
                    worker = Arc::new(Worker::open(config.clone()).await.unwrap());
                    break;
                }
                Err(w) => {
                    worker = w;
                    smol::Timer::after(Duration::from_millis(10)).await;
                }
            }
        }
        assert_eq!(
            Arc::strong_count(&worker),
            1,
            "the old worker was let go and reopened"
        );
        let deals = worker.store().deals().unwrap();
        assert_eq!(deals.len(), 2);
        assert!(deals.iter().all(|d| d.state == DealState::Closed));
        worker.sync_plans().await.unwrap();
        let small_after = worker.store().plan(small.id).unwrap().unwrap();
        assert_eq!(
            small_after.ask.map(|a| a.id),
            Some(resold.id),
            "not placed twice"
        );
        let forward_after = worker.store().plan(forward.id).unwrap().unwrap();
        assert!(
            forward_after.ask.is_some(),
            "the forward slice is on sale again"
        );
        assert_eq!(
            worker.store().task(task).unwrap().unwrap().receipt,
            Some(result.receipt.clone())
        );

        // --- Removing a plan withdraws its ask on chain.
        worker.remove_plan(small.id).unwrap();
        worker.sync_plans().await.unwrap();
        assert!(!worker.chain().order_active(resold.id).await.unwrap());
        assert!(worker.store().plan(small.id).unwrap().is_none());

        // --- A crash between sending placeOrder and recording the order's id: the next sync
        // finds the order on chain and adopts it instead of placing a second ask.
        let spec = plan("crashy", "64MiB", 3_000_000_000, 0).to_spec().unwrap();
        let id = worker.add_plan(spec.clone()).unwrap();
        let mut rec = worker.store().plan(id).unwrap().unwrap();
        let since = worker.chain().block_number().await.unwrap();
        rec.placing_since = Some(since);
        worker.store().put_plan(&rec).unwrap();
        let sent = worker
            .chain()
            .place_ask(&worker.ask_for(&spec, &worker.capacity()))
            .await
            .unwrap();
        worker.sync_plans().await.unwrap();
        let rec = worker.store().plan(id).unwrap().unwrap();
        assert_eq!(rec.ask.map(|a| a.id), Some(sent.id), "adopted");
        assert_eq!(rec.placing_since, None);
        let latest = worker.chain().block_number().await.unwrap();
        let placed = worker.chain().orders_placed(since, latest).await.unwrap();
        assert_eq!(placed.len(), 1, "placed once: {placed:?}");
    });
}
