//! The admin protocol and the metrics with real parts: anvil with the contracts, the worker
//! (library, in process) serving QUIC, its own key, its master (before and after
//! `confirmWorker`) and a stranger as admin clients, a customer opening a deal on a plan an
//! admin added, a WASM task, a bill, and the Prometheus text scraped over HTTP.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and `wasm-runtime/jobs/build.sh`.

use crate::common;

use common::Customer;

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::Market;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::signing_provider;
use sonm_market::{Benchmark, IdentityLevel};
use sonm_net::EthKey;
use sonm_worker::admin::{AdminClient, AdminClientError, AdminError, AdminRequest, AdminResponse};
use sonm_worker::bench::BenchConfig;
use sonm_worker::billing::BillingPolicy;
use sonm_worker::client::{TaskClient, client_endpoint};
use sonm_worker::config::PlanConfig;
use sonm_worker::proto::{Exit, StartWasm, TaskLimits};
use sonm_worker::{Config, Worker};

fn block_on<F: Future>(future: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(future))
}

fn plan(name: &str, ram: &str, price: u64) -> PlanConfig {
    PlanConfig {
        name: name.into(),
        cpu_cores: 1,
        ram: Some(ram.into()),
        storage: Some("100MB".into()),
        gpus: 0,
        price,
        duration: 0,
        netflags: "outbound".into(),
        identity_level: IdentityLevel::Anonymous,
    }
}

fn config(dir: &Path, anvil: &Anvil, master: alloy::primitives::Address) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        netflags: "outbound".into(),
        poll_interval_ms: 100,
        max_concurrent_tasks: 2,
        max_task_wall_time_ms: 60_000,
        benchmarks: BenchConfig {
            cpu_ms: 20,
            wasm_score_rounds: 20,
            ..BenchConfig::default()
        },
        billing: BillingPolicy { interval: 2 },
        master: Some(master),
        plans: vec![plan("from-config", "128MiB", 1_000_000_000)],
        ..Config::new(
            dir.join("state"),
            dir.join("worker.key"),
            anvil.endpoint().parse().unwrap(),
            dir.join("addresses.toml"),
        )
    }
}

async fn admin(key: &str, addr: SocketAddr, worker: alloy::primitives::Address) -> AdminClient {
    let key = EthKey::from_bytes(&key.parse::<PrivateKeySigner>().unwrap().to_bytes().0).unwrap();
    let endpoint = client_endpoint(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
    AdminClient::connect(&endpoint, addr, worker).await.unwrap()
}

fn refused(r: Result<AdminResponse, AdminClientError>) -> AdminError {
    match r {
        Err(AdminClientError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// One scrape of the Prometheus text at `addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    text
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn the_owner_and_the_confirmed_master_administer_the_worker_and_strangers_are_refused() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
    let consumer: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
    let master: PrivateKeySigner = DEV_KEYS[3].parse().unwrap();
    let config = config(dir.path(), &anvil, master.address());
    block_on(async {
        let url: alloy::transports::http::reqwest::Url = anvil.endpoint().parse().unwrap();
        let addresses =
            common::deploy_for_worker(&anvil.endpoint(), &config.addresses, &config.key_file).await;

        let worker = Arc::new(Worker::open(config.clone()).await.unwrap());
        let endpoint = worker.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let _server = smol::spawn(worker.clone().serve(endpoint.clone()));
        let listener = sonm_worker::metrics::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        let _metrics = smol::spawn(worker.clone().serve_metrics(listener));
        worker.sync_plans().await.unwrap();

        // --- The worker's own key: status.
        let own = admin(DEV_KEYS[1], addr, supplier.address()).await;
        let AdminResponse::Status(status) = own.call(&AdminRequest::Status).await.unwrap() else {
            panic!("not a status")
        };
        assert_eq!(status.address, supplier.address());
        assert_eq!(status.master, None, "not confirmed yet");
        assert_eq!(status.configured_master, Some(master.address()));
        assert!(status.open_deals.is_empty());
        assert_eq!(status.plans, 1);
        // Its asks are placed: no signed ask to show.
        assert_eq!(
            own.call(&AdminRequest::SignedAsks).await.unwrap(),
            AdminResponse::SignedAsks(Vec::new())
        );

        // --- The master, registered but not confirmed, is refused; a stranger too.
        assert!(!worker.sync_master().await.unwrap(), "asked the master");
        let early = admin(DEV_KEYS[3], addr, supplier.address()).await;
        assert!(matches!(
            refused(early.call(&AdminRequest::Plans).await),
            AdminError::NotAdmin { peer, .. } if peer == master.address()
        ));
        let stranger_key = EthKey::random();
        let stranger_ep = client_endpoint(&stranger_key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let stranger = AdminClient::connect(&stranger_ep, addr, supplier.address())
            .await
            .unwrap();
        for req in [
            AdminRequest::Status,
            AdminRequest::Plans,
            AdminRequest::SignedAsks,
            AdminRequest::RemovePlan(1),
            AdminRequest::AddPlan(plan("theirs", "64MiB", 1)),
        ] {
            assert!(matches!(
                refused(stranger.call(&req).await),
                AdminError::NotAdmin { .. }
            ));
        }
        assert_eq!(
            worker.plans().unwrap().len(),
            1,
            "the stranger changed nothing"
        );

        // --- Confirmed (a chain call from the master's key), the master administers.
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
        let boss = admin(DEV_KEYS[3], addr, supplier.address()).await;
        let AdminResponse::PlanAdded(added) = boss
            .call(&AdminRequest::AddPlan(plan(
                "spot",
                "256MiB",
                1_000_000_000,
            )))
            .await
            .unwrap()
        else {
            panic!("not added")
        };
        assert_eq!(added.spec.name, "admin:spot");
        let ask = added.ask.clone().expect("its ask is placed at once");
        assert!(
            worker.chain().order_active(ask.id).await.unwrap(),
            "ask on chain"
        );
        assert_eq!(ask.benchmarks.get(Benchmark::RamSize), 256 << 20);
        let AdminResponse::Inventory(inv) = boss.call(&AdminRequest::Inventory).await.unwrap()
        else {
            panic!("not an inventory")
        };
        assert_eq!(inv.benchmarks, worker.benchmarks());
        assert!(inv.inventory.cpu_cores > 0);
        assert!(matches!(
            boss.call(&AdminRequest::Devices).await.unwrap(),
            AdminResponse::Devices(g) if g.is_empty() // no NVML on these machines
        ));

        // --- A deal on the added plan: its removal is refused.
        let customer = Customer {
            provider: signing_provider(url.clone(), consumer.clone()),
            key: consumer.clone(),
            addresses: addresses.clone(),
        };
        customer.approve().await;
        let bid = customer.bid_for(1, 128 << 20, 1_500_000_000, 0).await;
        let deal = customer.open_deal(&ask, &bid).await;
        worker.sync_deals().await.unwrap();
        assert_eq!(
            refused(boss.call(&AdminRequest::RemovePlan(added.id)).await),
            AdminError::PlanHasDeal {
                plan: added.id,
                deal
            }
        );
        assert_eq!(
            refused(boss.call(&AdminRequest::RemovePlan(999)).await),
            AdminError::UnknownPlan(999)
        );

        // --- The configuration's plan (no deal) is removed: its ask is cancelled on chain.
        let cfg_plan = worker
            .plans()
            .unwrap()
            .into_iter()
            .find(|p| p.spec.name == "from-config")
            .unwrap();
        let cfg_ask = cfg_plan.ask.clone().expect("placed");
        assert!(matches!(
            own.call(&AdminRequest::RemovePlan(cfg_plan.id)).await.unwrap(),
            AdminResponse::PlanRemoved(id) if id == cfg_plan.id
        ));
        assert!(
            !worker.chain().order_active(cfg_ask.id).await.unwrap(),
            "cancelled"
        );

        // --- A task and a bill move the counters.
        let before = scrape(metrics_addr);
        assert_eq!(
            metric(&before, "sonm_worker_tasks_started_total{kind=\"wasm\"}"),
            0.0
        );
        let consumer_key = EthKey::from_bytes(&consumer.to_bytes().0).unwrap();
        let task_ep = client_endpoint(&consumer_key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let tasks = TaskClient::connect(&task_ep, addr, supplier.address())
            .await
            .unwrap();
        let task = tasks
            .start_wasm(StartWasm {
                deal,
                module: br#"(module (memory (export "memory") 1) (func (export "_start")))"#
                    .to_vec(),
                args: Vec::new(),
                inputs: Vec::new(),
                limits: TaskLimits::default(),
            })
            .await
            .unwrap();
        let result = tasks
            .wait_result(task, Duration::from_millis(20), 3000)
            .await
            .unwrap();
        assert_eq!(result.exit, Exit::Code(0));
        customer.advance(10).await;
        worker.bill_due().await.unwrap();
        let after = scrape(metrics_addr);
        assert_eq!(
            metric(&after, "sonm_worker_tasks_started_total{kind=\"wasm\"}"),
            1.0
        );
        assert_eq!(
            metric(&after, "sonm_worker_tasks_finished_total{kind=\"wasm\"}"),
            1.0
        );
        assert_eq!(
            metric(&after, "sonm_worker_tasks_failed_total{kind=\"wasm\"}"),
            0.0
        );
        assert_eq!(metric(&after, "sonm_worker_tasks_running"), 0.0);
        assert_eq!(metric(&after, "sonm_worker_deals_open"), 1.0);
        assert_eq!(metric(&after, "sonm_worker_bills_total"), 1.0);
        assert!(metric(&after, "sonm_worker_bills_payout_wei_total") >= 10.0 * 1e9);
        assert_eq!(metric(&after, "sonm_worker_rendezvous_connected"), 0.0);
        assert_eq!(metric(&after, "sonm_worker_chain_errors_total"), 0.0);

        let AdminResponse::Status(status) = boss.call(&AdminRequest::Status).await.unwrap() else {
            panic!("not a status")
        };
        assert_eq!(status.master, Some(master.address()));
        assert_eq!(status.open_deals, vec![deal]);

        endpoint.close();
    });
}

/// Releases `worker` (its connections' tasks hold it until they notice the endpoint closed)
/// and opens it again from its state directory.
async fn restart(worker: Arc<Worker>, config: &Config) -> Arc<Worker> {
    let mut worker = worker;
    for _ in 0..500 {
        match Arc::try_unwrap(worker) {
            Ok(w) => {
                drop(w);
                return Arc::new(Worker::open(config.clone()).await.unwrap());
            }
            Err(w) => {
                worker = w;
                smol::Timer::after(Duration::from_millis(10)).await;
            }
        }
    }
    panic!("the worker is still held after 5 s");
}

#[test]
fn maintenance_withdraws_the_asks_closes_the_spot_deals_and_lets_forward_deals_run_to_their_end() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
    let consumer: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
    const SPOT_PRICE: u128 = 1_000_000_000;
    // No cores: three slices fit a two-core box; RAM tells them apart for the bids.
    let slice = |name: &str, ram: &str, duration: u64| PlanConfig {
        cpu_cores: 0,
        duration,
        ..plan(name, ram, SPOT_PRICE as u64)
    };
    let config = Config {
        master: None,
        plans: vec![
            slice("spot", "64MiB", 0),
            slice("forward", "96MiB", 3600),
            slice("free", "32MiB", 0),
        ],
        ..config(dir.path(), &anvil, supplier.address())
    };
    block_on(async {
        let url: alloy::transports::http::reqwest::Url = anvil.endpoint().parse().unwrap();
        let addresses =
            common::deploy_for_worker(&anvil.endpoint(), &config.addresses, &config.key_file).await;

        let worker = Arc::new(Worker::open(config.clone()).await.unwrap());
        let endpoint = worker.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let server = smol::spawn(worker.clone().serve(endpoint.clone()));
        worker.sync_plans().await.unwrap();
        let ask_of = |w: &Worker, name: &str| {
            w.plans()
                .unwrap()
                .into_iter()
                .find(|p| p.spec.name == name)
                .unwrap()
                .ask
        };
        let (spot_ask, fwd_ask) = (
            ask_of(&worker, "spot").expect("placed"),
            ask_of(&worker, "forward").expect("placed"),
        );
        let free_ask = ask_of(&worker, "free").expect("placed");

        let customer = Customer {
            provider: signing_provider(url.clone(), consumer.clone()),
            key: consumer.clone(),
            addresses: addresses.clone(),
        };
        customer.approve().await;
        let bid = customer.bid_for(0, 64 << 20, SPOT_PRICE, 0).await;
        let spot = customer.open_deal(&spot_ask, &bid).await;
        let bid = customer.bid_for(0, 96 << 20, SPOT_PRICE, 3600).await;
        let forward = customer.open_deal(&fwd_ask, &bid).await;
        worker.sync_deals().await.unwrap();
        let spot_start = worker.chain().get_deal(spot, 0).await.unwrap().start;
        customer.advance(10).await;

        // --- A stranger cannot switch maintenance.
        let stranger_key = EthKey::random();
        let stranger_ep = client_endpoint(&stranger_key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let stranger = AdminClient::connect(&stranger_ep, addr, supplier.address())
            .await
            .unwrap();
        assert!(matches!(
            refused(stranger.call(&AdminRequest::Maintenance { on: true }).await),
            AdminError::NotAdmin { .. }
        ));
        assert!(!worker.in_maintenance());
        assert!(worker.chain().order_active(free_ask.id).await.unwrap());

        // --- On: the free plan's ask is cancelled, the spot deal billed and closed.
        let own = admin(DEV_KEYS[1], addr, supplier.address()).await;
        let AdminResponse::Maintenance(status) = own
            .call(&AdminRequest::Maintenance { on: true })
            .await
            .unwrap()
        else {
            panic!("not a maintenance answer")
        };
        assert!(status.maintenance);
        assert_eq!(status.open_deals, vec![forward]);
        assert_eq!(status.forward_deals.len(), 1);
        assert_eq!(status.forward_deals[0].deal, forward);
        assert!(
            !worker.chain().order_active(free_ask.id).await.unwrap(),
            "the free plan's ask is cancelled on chain"
        );
        assert!(ask_of(&worker, "free").is_none());
        let closed = worker.chain().get_deal(spot, 0).await.unwrap();
        assert!(!closed.active, "the spot deal is closed on chain");
        assert!(closed.last_bill >= spot_start + 10);
        let market = Market::new(addresses.contracts.market, &customer.provider);
        let billed = market
            .DealBilled_filter()
            .topic1(U256::from(spot))
            .from_block(0)
            .query()
            .await
            .unwrap();
        assert!(billed.len() >= 2, "billed, then closed: {billed:?}");
        let paid: U256 = billed.iter().map(|(e, _)| e.paid).sum();
        assert_eq!(
            paid,
            U256::from(SPOT_PRICE * u128::from(closed.last_bill - spot_start)),
            "the supplier is paid for every second the deal ran"
        );
        let closers = market
            .DealClosed_filter()
            .topic1(U256::from(spot))
            .from_block(0)
            .query()
            .await
            .unwrap();
        assert_eq!(closers.len(), 1);
        assert_eq!(
            closers[0].0.closedBy,
            supplier.address(),
            "closed by the supplier"
        );
        assert!(
            worker.chain().get_deal(forward, 0).await.unwrap().active,
            "the forward deal runs to its end"
        );
        // The forward deal still takes tasks; the closed one does not.
        assert!(worker.authorize(consumer.address(), forward).await.is_ok());
        assert!(worker.authorize(consumer.address(), spot).await.is_err());
        // The chain loop keeps it so: nothing placed, the forward deal left open.
        worker.tick().await;
        assert!(ask_of(&worker, "free").is_none() && ask_of(&worker, "spot").is_none());
        assert!(worker.chain().get_deal(forward, 0).await.unwrap().active);

        // --- A restart keeps maintenance on: no ask placed.
        endpoint.close();
        drop(server);
        drop(own);
        drop(stranger);
        let worker = restart(worker, &config).await;
        assert!(worker.in_maintenance(), "kept in the state");
        worker.tick().await;
        for name in ["spot", "free"] {
            assert!(ask_of(&worker, name).is_none(), "{name}: no ask re-placed");
        }

        // --- The forward deal is closed at its end, as outside maintenance.
        customer.advance(3600).await;
        worker.bill_due().await.unwrap();
        assert!(!worker.chain().get_deal(forward, 0).await.unwrap().active);

        // --- Off: the asks are placed again.
        let endpoint = worker.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let _server = smol::spawn(worker.clone().serve(endpoint.clone()));
        let own = admin(DEV_KEYS[1], addr, supplier.address()).await;
        let AdminResponse::Maintenance(status) = own
            .call(&AdminRequest::Maintenance { on: false })
            .await
            .unwrap()
        else {
            panic!("not a maintenance answer")
        };
        assert!(!status.maintenance);
        assert!(status.open_deals.is_empty() && status.forward_deals.is_empty());
        for name in ["spot", "forward", "free"] {
            let ask = ask_of(&worker, name).unwrap_or_else(|| panic!("{name}: ask placed again"));
            assert!(worker.chain().order_active(ask.id).await.unwrap());
        }
        assert_ne!(ask_of(&worker, "free").unwrap().id, free_ask.id);
        endpoint.close();
    });
}
