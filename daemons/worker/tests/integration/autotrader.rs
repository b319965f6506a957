//! The autotrader and the matcher with real parts: anvil with the deployed contracts, a
//! `sonm-dwh` process indexing it, the worker in process running its loops (`run_until`), and
//! customers placing bids and closing deals on chain.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and the `sonm-dwh` binary in
//! `target/debug` (`cargo build -p sonm-dwh --bin sonm-dwh`; scripts/test.sh builds every
//! binary first); the harness says so when either is missing.

use crate::common;

use common::Customer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::Blacklist;
use sonm_contracts::anvil::DEV_KEYS;
use sonm_contracts::deploy::signing_provider;
use sonm_e2e::{Dwh, Net, address_of, block_on, wait_for};
use sonm_market::Order;
use sonm_optimus::Floor;
use sonm_worker::autotrader::{AutotraderConfig, slice_of};
use sonm_worker::bench::BenchConfig;
use sonm_worker::billing::BillingPolicy;
use sonm_worker::state::PlanRecord;
use sonm_worker::{Config, Worker};

const SUPPLIER: &str = DEV_KEYS[1];
const ALICE: &str = DEV_KEYS[2];
const BOB: &str = DEV_KEYS[3];
const SNM_WEI: u128 = 1_000_000_000_000_000_000;
const MIB: u64 = 1 << 20;

/// The floor, per unit-hour: 1e8 wei/s a core, 2e9 wei/s a GiB of RAM. Plans for the bids below
/// clear it; the rest of the box (GiBs of RAM) costs more than any of them offers, so only
/// plans sized for them can be taken.
const FLOOR_CORE_HOUR: u64 = 360_000_000_000;
const FLOOR_RAM_GIB_HOUR: u64 = 7_200_000_000_000;

fn autotrader(dwh: &Dwh) -> AutotraderConfig {
    toml::from_str(&format!(
        "dwh_url = \"{}\"\ninterval = 1\ncooldown = 0\n\
         [floor]\ncore_hour = {FLOOR_CORE_HOUR}\nram_gib_hour = {FLOOR_RAM_GIB_HOUR}\n",
        dwh.url
    ))
    .unwrap()
}

fn floor() -> Floor {
    Floor {
        core_hour: FLOOR_CORE_HOUR.into(),
        ram_gib_hour: FLOOR_RAM_GIB_HOUR.into(),
        ..Floor::default()
    }
}

/// The worker running its loops on a thread of its own until `stop`.
struct Running {
    worker: Arc<Worker>,
    stop: smol::channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(net: &Net, dwh: &Dwh) -> Self {
        // The worker's decisions appear with the test's output when it fails.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let key_file = net.path("worker.key");
        std::fs::write(&key_file, SUPPLIER).unwrap();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            netflags: "outbound".into(),
            poll_interval_ms: 200,
            max_concurrent_tasks: 2,
            max_task_wall_time_ms: 60_000,
            benchmarks: BenchConfig {
                cpu_ms: 20,
                wasm_score_rounds: 20,
                ..BenchConfig::default()
            },
            billing: BillingPolicy { interval: 600 },
            autotrader: Some(autotrader(dwh)),
            plans: Vec::new(),
            ..Config::new(
                net.path("worker"),
                key_file,
                net.rpc().parse().unwrap(),
                net.addresses_path.clone(),
            )
        };
        let worker = Arc::new(block_on(Worker::open(config)).unwrap());
        let endpoint = worker.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let w = worker.clone();
        let thread = std::thread::spawn(move || {
            block_on(w.run_until(endpoint, async move {
                let _ = stopped.recv().await;
            }))
        });
        Self {
            worker,
            stop,
            thread: Some(thread),
        }
    }

    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn plans(&self) -> Vec<PlanRecord> {
        self.worker.plans().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Customer {
    fn new(net: &Net, key: &str) -> Self {
        let key: PrivateKeySigner = key.parse().unwrap();
        let provider = signing_provider(net.rpc().parse().unwrap(), key.clone());
        let c = Self {
            key,
            provider,
            addresses: net.addresses.clone(),
        };
        block_on(c.approve());
        c
    }

    fn bid(&self, cores: u64, ram: u64, price: u128, duration: u64) -> Order {
        block_on(self.bid_for(cores, ram, price, duration))
    }

    fn blacklist(&self, who: alloy::primitives::Address) {
        block_on(async {
            let list = Blacklist::new(self.addresses.contracts.blacklist, &self.provider);
            let r = list
                .add(who)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            assert!(r.status(), "Blacklist.add reverted");
        });
    }
}

fn start_net() -> (Net, Dwh) {
    let net = Net::start(
        &[],
        &[
            (address_of(ALICE), 1_000 * SNM_WEI),
            (address_of(BOB), 1_000 * SNM_WEI),
        ],
    );
    let dwh = Dwh::start(&net);
    (net, dwh)
}

fn optimus_plans_with_asks(plans: &[PlanRecord]) -> Option<Vec<PlanRecord>> {
    let mine: Vec<PlanRecord> = plans
        .iter()
        .filter(|p| p.spec.name.starts_with("optimus-"))
        .cloned()
        .collect();
    (!mine.is_empty() && mine.iter().all(|p| p.ask.is_some())).then_some(mine)
}

/// The ASK order `id` as placed on chain.
fn ask_on_chain(worker: &Worker, id: u64) -> Order {
    block_on(async {
        let head = worker.chain().block_number().await.unwrap();
        worker
            .chain()
            .orders_placed(0, head)
            .await
            .unwrap()
            .into_iter()
            .find(|o| o.id == id)
            .expect("the ask's OrderPlaced")
    })
}

#[test]
fn the_autotrader_sells_to_the_bids_and_never_cancels_a_plan_with_a_deal() {
    let (net, dwh) = start_net();
    let run = Running::start(&net, &dwh);
    let worker = run.worker.clone();
    let me = worker.address();
    let capacity = worker.capacity();
    assert!(capacity.cpu_cores >= 2, "the test needs a box of 2 cores");
    let logs = || format!("DWH log:\n{}", dwh.process.log_text());

    // With no bids, Optimus offers the whole box at the floor.
    let initial = wait_for("the first plans", Duration::from_secs(60), logs, || {
        optimus_plans_with_asks(&run.plans())
    });

    // (a) Two customers' bids: the box is re-planned into asks sized and priced for them, and
    // the matcher opens both deals.
    let (alice, bob) = (Customer::new(&net, ALICE), Customer::new(&net, BOB));
    let bid_a = alice.bid(1, 256 * MIB, 1_000_000_000, 0);
    let bid_b = bob.bid(1, 512 * MIB, 1_500_000_000, 3600);
    let deals = wait_for("deals for both bids", Duration::from_secs(90), logs, || {
        let deals = worker.store().deals().unwrap();
        let of = |bid: u64| deals.iter().find(|d| d.bid == bid).cloned();
        Some((of(bid_a.id)?, of(bid_b.id)?))
    });
    let plans = run.plans();
    for old in &initial {
        assert!(
            plans.iter().all(|p| p.id != old.id),
            "initial plan {} replaced",
            old.spec.name
        );
        let ask = old.ask.as_ref().unwrap();
        assert!(
            !block_on(worker.chain().order_active(ask.id)).unwrap(),
            "its ask withdrawn"
        );
    }
    for (deal, bid) in [(&deals.0, &bid_a), (&deals.1, &bid_b)] {
        let plan = plans
            .iter()
            .find(|p| Some(p.id) == deal.plan)
            .expect("the deal's plan");
        assert_eq!(plan.spec.name, format!("optimus-bid-{}", bid.id));
        assert_eq!(plan.deal, Some(deal.id));
        let ask = ask_on_chain(&worker, deal.ask);
        assert_eq!(ask.author, me);
        assert!(
            ask.benchmarks.dominates(&bid.benchmarks),
            "the ask {} covers the bid {}",
            ask.benchmarks,
            bid.benchmarks
        );
        let floor = floor().price(&slice_of(&plan.spec.slice));
        assert!(
            floor <= ask.price && ask.price < bid.price,
            "floor {floor} <= ask {} < bid {}",
            ask.price,
            bid.price
        );
        assert_eq!(ask.duration, bid.duration);
        let on_chain = block_on(worker.chain().get_deal(deal.id, 0)).unwrap();
        assert!(on_chain.active);
        assert_eq!(
            (on_chain.supplier, on_chain.consumer, on_chain.price),
            (me, bid.author, ask.price)
        );
    }

    // (b) A richer bid for the whole box and a deal that ends: the box is re-planned around
    // Bob's deal, whose plan is never cancelled.
    let bob_plan = deals.1.plan.unwrap();
    let check_bob = || {
        let rec = worker.store().plan(bob_plan).unwrap();
        let rec = rec.expect("the plan with a deal is still there");
        assert_eq!(
            (rec.deal, rec.removing),
            (Some(deals.1.id), false),
            "the plan with a deal is untouched"
        );
    };
    let _whole_box = alice.bid(u64::from(capacity.cpu_cores), 256 * MIB, 100_000_000_000, 0);
    // Alice also blacklists the worker, then bids for a slice it could serve: the DWH does not
    // list that bid as a match, and the chain's view refuses it.
    alice.blacklist(me);
    // (More RAM than Alice's first slice: a plan of its own.)
    let bid_d = alice.bid(1, 384 * MIB, 1_000_000_000, 0);
    let indexed = format!("{}/v1/orders/{}", dwh.url, bid_d.id);
    wait_for(
        "the DWH indexing bid D",
        Duration::from_secs(30),
        logs,
        || sonm_e2e::http_get(&indexed),
    );
    block_on(alice.close_deal(deals.0.id));
    let alice_plan = deals.0.plan.unwrap();
    let d_name = format!("optimus-bid-{}", bid_d.id);
    let replanned = wait_for(
        "Alice's freed slice re-planned",
        Duration::from_secs(60),
        logs,
        || {
            check_bob();
            let plans = run.plans();
            let gone = plans
                .iter()
                .all(|p| p.id != alice_plan && p.spec.name != d_name);
            let leftover = plans
                .iter()
                .find(|p| p.spec.name.starts_with("optimus-leftover") && p.ask.is_some());
            (gone && leftover.is_some()).then(|| plans.clone())
        },
    );
    // The freed core was first planned for bid D (its ask, tagged with the plan's name, was
    // placed), the matcher refused D on the chain's view, and D left the planning: no deal,
    // the ask withdrawn, the bid still open.
    let d_ask = block_on(async {
        let head = worker.chain().block_number().await.unwrap();
        worker.chain().orders_placed(0, head).await.unwrap()
    })
    .into_iter()
    .find(|o| o.tag == sonm_worker::plan::plan_tag(&d_name))
    .expect("a plan sized for bid D was placed");
    assert!(!block_on(worker.chain().order_active(d_ask.id)).unwrap());
    assert!(block_on(worker.chain().order_live(&bid_d)).unwrap());
    assert!(
        worker
            .store()
            .deals()
            .unwrap()
            .iter()
            .all(|d| d.bid != bid_d.id),
        "no deal with a customer who blacklisted us"
    );
    // A few more rounds (1 s each) on the same market change nothing for Bob's plan.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        check_bob();
    }
    assert!(
        block_on(worker.chain().get_deal(deals.1.id, 0))
            .unwrap()
            .active
    );
    let leftover = replanned
        .iter()
        .find(|p| p.spec.name.starts_with("optimus-leftover"))
        .unwrap();
    let held = replanned
        .iter()
        .filter(|p| !p.removing || p.deal.is_some())
        .fold(0, |n, p| n + p.spec.slice.cpu_cores);
    assert!(
        held <= capacity.cpu_cores,
        "never oversubscribed: {held} cores"
    );
    assert!(leftover.spec.slice.cpu_cores >= 1);
    assert!(run.running());
}

#[test]
fn a_dwh_that_is_down_skips_the_rounds_and_keeps_the_plans() {
    let (net, mut dwh) = start_net();
    let run = Running::start(&net, &dwh);
    let worker = run.worker.clone();
    let logs = || String::new();
    wait_for("the first plans", Duration::from_secs(60), logs, || {
        optimus_plans_with_asks(&run.plans())
    });
    let snapshot = |plans: Vec<PlanRecord>| -> BTreeMap<u64, (String, Option<u64>)> {
        plans
            .into_iter()
            .map(|p| (p.id, (p.spec.name, p.ask.map(|a| a.id))))
            .collect()
    };
    let before = snapshot(run.plans());
    dwh.process.kill9();

    // A round now is skipped, and changes nothing.
    let mut at = worker.autotrader().expect("[autotrader] is set");
    let round = block_on(worker.autotrade_round(&mut at));
    assert!(round.skipped.is_some(), "{round:?}");
    assert!(round.cancelled.is_empty() && round.placed.is_empty());

    // The worker's own loop goes on through several rounds (1 s each).
    std::thread::sleep(Duration::from_secs(4));
    assert!(run.running(), "the worker keeps running");
    assert_eq!(snapshot(run.plans()), before, "plans unchanged");
    for (_, ask) in before.values() {
        let ask = ask.expect("placed");
        assert!(
            block_on(worker.chain().order_active(ask)).unwrap(),
            "ask {ask} still on sale"
        );
    }
}
