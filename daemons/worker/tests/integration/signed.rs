//! Signed asks (`[market] asks = "signed"`) with real parts: anvil with the deployed contracts,
//! `sonm-dwh` processes indexing it (the signed-order book), the worker in process, and a
//! customer buying on chain with `quickBuy` from what the DWH lists.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil), the `sonm-dwh` binary in `target/debug`
//! (`cargo build -p sonm-dwh --bin sonm-dwh`) and the example jobs (`wasm-runtime/jobs/build.sh`);
//! each says so when missing.

use crate::common::Customer;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::anvil::DEV_KEYS;
use sonm_contracts::deploy::{provider, signing_provider};
use sonm_contracts::{
    Market, QueryWindowed, Refusal, market_domain, nonce_bit, recover_signed_order, signed_ref,
};
use sonm_dwh_client::{SignedOrder, SignedOrderQuery};
use sonm_e2e::{Daemon, Net, address_of, bin, block_on, free_tcp_port, http_get, wait_for};
use sonm_market::{IdentityLevel, Order, OrderType};
use sonm_net::EthKey;
use sonm_worker::admin::{AdminRequest, AdminResponse};
use sonm_worker::autotrader::AutotraderConfig;
use sonm_worker::bench::BenchConfig;
use sonm_worker::billing::BillingPolicy;
use sonm_worker::client::{ClientError, TaskClient, client_endpoint};
use sonm_worker::config::{AskMode, MarketConfig, PlanConfig};
use sonm_worker::plan::plan_tag;
use sonm_worker::proto::{Exit, File, StartWasm, TaskError, TaskLimits};
use sonm_worker::receipt::verify_result;
use sonm_worker::state::{DealState, SignedAsk};
use sonm_worker::{Config, Worker};

const SUPPLIER: &str = DEV_KEYS[1];
const CUSTOMER: &str = DEV_KEYS[2];
const SNM_WEI: u128 = 1_000_000_000_000_000_000;
/// What the Market's `cancelNonces` may cost at most: a fresh bitmap word (22.1k) on 21k base.
const CANCEL_GAS_BOUND: u64 = 60_000;

/// A `sonm-dwh` process at a fixed address: it can be killed and started again there, with
/// its book kept or wiped.
struct DwhProc {
    url: String,
    data: PathBuf,
    config: PathBuf,
    log: PathBuf,
    process: Option<Daemon>,
}

impl DwhProc {
    fn start(net: &Net) -> Self {
        let listen = format!("127.0.0.1:{}", free_tcp_port());
        let (data, config, log) = (net.path("dwh"), net.path("dwh.toml"), net.path("dwh.log"));
        std::fs::write(
            &config,
            format!(
                "endpoints = [\"{rpc}\"]\naddresses = \"{addresses}\"\nlisten = \"{listen}\"\n\
                 data_dir = \"{data}\"\nconfirmations = 0\npoll_interval_ms = 100\nmap_size_mib = 256\n",
                rpc = net.rpc(),
                addresses = net.addresses_path.display(),
                data = data.display(),
            ),
        )
        .unwrap();
        let mut dwh = Self {
            url: format!("http://{listen}"),
            data,
            config,
            log,
            process: None,
        };
        dwh.spawn();
        dwh
    }

    fn spawn(&mut self) {
        let args = ["--config", self.config.to_str().unwrap()];
        self.process = Some(Daemon::spawn(&bin("sonm-dwh"), &args, &self.log));
        let status = format!("{}/v1/status", self.url);
        wait_for(
            "the DWH indexing",
            Duration::from_secs(60),
            || self.log_text(),
            || http_get(&status).filter(|v| v["number"].is_u64()),
        );
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> sonm_dwh_client::Dwh {
        sonm_dwh_client::Dwh::new(&self.url)
    }

    /// The live signed asks of `author` the DWH lists.
    fn listed(&self, author: Address) -> Vec<SignedOrder> {
        let query = SignedOrderQuery {
            author: Some(author),
            ..SignedOrderQuery::new(OrderType::Ask)
        };
        self.client().signed_orders(&query, 100).unwrap().items
    }

    /// Waits until the DWH serves `ask` (`listed`) or no longer does.
    fn wait_listed(&self, ask: &SignedAsk, listed: bool) {
        let what = format!("the DWH listing {} is {listed}", ask.digest);
        wait_for(
            &what,
            Duration::from_secs(30),
            || self.log_text(),
            || {
                let served = self.client().signed_order(ask.digest).ok()?.is_some();
                (served == listed).then_some(())
            },
        );
    }
}

fn plan(name: &str, cores: u32, ram: &str, duration: u64) -> PlanConfig {
    PlanConfig {
        name: name.into(),
        cpu_cores: cores,
        ram: Some(ram.into()),
        storage: Some("100MB".into()),
        gpus: 0,
        price: 1_000_000_000,
        duration,
        netflags: "outbound".into(),
        identity_level: IdentityLevel::Anonymous,
    }
}

fn config(net: &Net, dwh: &DwhProc, ttl: u64, plans: Vec<PlanConfig>) -> Config {
    let key_file = net.path("worker.key");
    std::fs::write(&key_file, SUPPLIER).unwrap();
    Config {
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
        billing: BillingPolicy { interval: 2 },
        dwh_url: Some(dwh.url.clone()),
        market: MarketConfig {
            asks: AskMode::Signed,
            signed_ttl_s: ttl,
        },
        plans,
        ..Config::new(
            net.path("worker"),
            key_file,
            net.rpc().parse().unwrap(),
            net.addresses_path.clone(),
        )
    }
}

fn open(config: &Config) -> Arc<Worker> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    Arc::new(block_on(Worker::open(config.clone())).unwrap())
}

fn customer(net: &Net) -> Customer {
    let key: PrivateKeySigner = CUSTOMER.parse().unwrap();
    let c = Customer {
        provider: signing_provider(net.rpc().parse().unwrap(), key.clone()),
        key,
        addresses: net.addresses.clone(),
    };
    block_on(c.approve());
    c
}

fn signed_asks(worker: &Worker) -> Vec<SignedAsk> {
    worker.store().signed_asks().unwrap()
}

fn ask_of(worker: &Worker, plan: &str) -> SignedAsk {
    let id = worker
        .plans()
        .unwrap()
        .into_iter()
        .find(|p| p.spec.name == plan)
        .unwrap_or_else(|| panic!("plan {plan}"))
        .id;
    worker
        .store()
        .signed_ask(id)
        .unwrap()
        .unwrap_or_else(|| panic!("plan {plan} has a signed ask"))
}

/// `quickBuy(signed ask, duration)` as the customer sends it; the receipt.
fn quick_buy(
    c: &Customer,
    ask: &SignedOrder,
    duration: u64,
) -> alloy::rpc::types::TransactionReceipt {
    let r = signed_ref(&ask.order, ask.expiry, ask.nonce, ask.signature.clone());
    block_on(async {
        let pending = c.market().quickBuy(r, duration).send().await.unwrap();
        pending.get_receipt().await.unwrap()
    })
}

/// The Market's refusal of `quickBuy(ask, duration)` (simulated: nothing is sent).
fn quick_buy_refusal(c: &Customer, ask: &SignedOrder, duration: u64) -> Option<Refusal> {
    let r = signed_ref(&ask.order, ask.expiry, ask.nonce, ask.signature.clone());
    let err = block_on(async { c.market().quickBuy(r, duration).call().await }).unwrap_err();
    Refusal::decode(&err)
}

fn is_nonce_used(refusal: Option<Refusal>) -> bool {
    matches!(
        refusal,
        Some(Refusal::Market(Market::MarketErrors::NonceUsed(_)))
    )
}

/// Every `cancelNonces` of `author` so far: (word, mask, gas its transaction used).
fn nonce_cancels(net: &Net, author: Address) -> Vec<(U256, U256, u64)> {
    let p = provider(net.rpc().parse().unwrap());
    let market = Market::new(net.addresses.contracts.market, p.clone());
    block_on(async move {
        let logs = market
            .NoncesCancelled_filter()
            .topic1(author.into_word())
            .from_block(0)
            .query_windowed()
            .await
            .unwrap();
        let mut out = Vec::new();
        for (e, log) in logs {
            let tx = log.transaction_hash.unwrap();
            let receipt = p.get_transaction_receipt(tx).await.unwrap().unwrap();
            out.push((e.word, e.mask, receipt.gas_used));
        }
        out
    })
}

/// The mask of one `cancelNonces` word covering exactly `asks` (all in that word).
fn mask_of(asks: &[&SignedAsk]) -> (U256, U256) {
    let word = nonce_bit(U256::from(asks[0].nonce)).0;
    let mask = asks.iter().fold(U256::ZERO, |m, a| {
        let (w, bit) = nonce_bit(U256::from(a.nonce));
        assert_eq!(w, word, "one word");
        m | bit
    });
    (word, mask)
}

fn placed_by(worker: &Worker) -> Vec<Order> {
    block_on(async {
        let head = worker.chain().block_number().await.unwrap();
        worker.chain().orders_placed(0, head).await.unwrap()
    })
}

fn inputs() -> Vec<File> {
    vec![File {
        path: "hello.txt".into(),
        bytes: b"hello, signed fog\n".to_vec(),
    }]
}

#[test]
fn a_signed_ask_is_published_bought_served_billed_and_withdrawn() {
    let net = Net::start(&[], &[(address_of(CUSTOMER), 1_000 * SNM_WEI)]);
    let dwh = DwhProc::start(&net);
    let config = config(
        &net,
        &dwh,
        3600,
        vec![
            plan("spot", 1, "256MiB", 0),
            plan("forward", 1, "128MiB", 3600),
        ],
    );
    let worker = open(&config);
    let me = worker.address();

    // --- Each plan's ask is signed and published; nothing is placed on chain.
    block_on(worker.sync_plans()).unwrap();
    let asks = signed_asks(&worker);
    assert_eq!(asks.len(), 2);
    assert_ne!(asks[0].nonce, asks[1].nonce);
    assert!(placed_by(&worker).is_empty(), "no placeOrder");
    assert!(worker.plans().unwrap().iter().all(|p| p.ask.is_none()));
    let domain = market_domain(net.addresses.chain_id, net.addresses.contracts.market);
    let listed = dwh.listed(me);
    assert_eq!(listed.len(), 2, "both asks listed");
    for ask in &asks {
        let item = listed
            .iter()
            .find(|o| o.digest == ask.digest)
            .expect("listed");
        assert_eq!(
            (item.nonce, item.expiry),
            (U256::from(ask.nonce), ask.expiry)
        );
        let r = signed_ref(&item.order, item.expiry, item.nonce, item.signature.clone());
        assert_eq!(
            recover_signed_order(&r, &domain),
            Ok(me),
            "the worker's key"
        );
        let now = net.chain_time();
        assert!(ask.expiry > now + 3000 && ask.expiry <= now + 3600 + 5);
    }

    // --- A customer buys the spot ask from the DWH's listing with quickBuy.
    let customer = customer(&net);
    let spot = ask_of(&worker, "spot");
    let forward = ask_of(&worker, "forward");
    let item = listed
        .iter()
        .find(|o| o.order.tag == plan_tag("spot"))
        .unwrap();
    let receipt = quick_buy(&customer, item, 0);
    assert!(receipt.status(), "quickBuy reverted");
    let opened = receipt.decoded_log::<Market::DealOpened>().unwrap();
    assert_eq!(opened.askId, U256::ZERO, "a signed ask");
    let deal = opened.dealId.to::<u64>();
    eprintln!("gas: quickBuy of a signed ask {}", receipt.gas_used);

    // The worker maps the deal to the plan through the SignedOrderUsed of its transaction.
    block_on(worker.sync_deals()).unwrap();
    let rec = worker.store().deal(deal).unwrap().expect("deal recorded");
    assert_eq!(rec.plan, Some(spot.plan));
    assert_eq!(
        (rec.consumer, rec.ask, rec.state),
        (customer.key.address(), 0, DealState::Active)
    );
    let sold = worker.store().plan(spot.plan).unwrap().unwrap();
    assert_eq!(sold.deal, Some(deal));
    assert_eq!(worker.store().signed_ask(spot.plan).unwrap(), None, "spent");
    // Sold: not signed again.
    block_on(worker.sync_plans()).unwrap();
    assert_eq!(worker.store().signed_ask(spot.plan).unwrap(), None);
    dwh.wait_listed(&spot, false);
    // The admin protocol shows the supplier the same asks (the other plan's).
    assert_eq!(signed_asks(&worker).len(), 1);
    assert_eq!(
        block_on(worker.handle_admin(AdminRequest::SignedAsks)).unwrap(),
        AdminResponse::SignedAsks(signed_asks(&worker))
    );

    // --- The deal's consumer runs a task, within the plan's slice, and gets a verified receipt.
    let module = std::fs::read(sonm_e2e::example_job("sha256.wasm")).unwrap();
    let endpoint = worker.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let _server = smol::spawn(worker.clone().serve(endpoint.clone()));
    let consumer_key = EthKey::from_bytes(&customer.key.to_bytes().0).unwrap();
    block_on(async {
        let local = client_endpoint(&consumer_key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let client = TaskClient::connect(&local, addr, me).await.unwrap();
        let start = StartWasm {
            deal,
            module,
            args: Vec::new(),
            inputs: inputs(),
            limits: TaskLimits::default(),
        };
        let task = client.start_wasm(start.clone()).await.unwrap();
        let result = client
            .wait_result(task, Duration::from_millis(20), 3000)
            .await
            .unwrap();
        assert_eq!(result.exit, Exit::Code(0));
        verify_result(&result, me).unwrap();
        assert_eq!(result.receipt.receipt.deal, deal);
        // The plan's slice bounds the task: more memory than its 256 MiB is refused.
        let greedy = StartWasm {
            limits: TaskLimits {
                memory_bytes: Some(512 << 20),
                ..TaskLimits::default()
            },
            ..start
        };
        assert!(matches!(
            client.start_wasm(greedy).await,
            Err(ClientError::Refused(TaskError::LimitExceeded { max, .. })) if max == 256 << 20
        ));
    });

    // --- Billing, as for a placed ask.
    let before = block_on(worker.chain().get_deal(deal, 0)).unwrap();
    block_on(customer.advance(5));
    block_on(worker.bill_due()).unwrap();
    let after = block_on(worker.chain().get_deal(deal, 0)).unwrap();
    assert!(after.active && after.last_bill > before.last_bill, "billed");
    assert!(!net.bills(deal).is_empty());

    // --- Removing the forward plan cancels its nonce on chain before the plan goes.
    let old = listed
        .iter()
        .find(|o| o.digest == forward.digest)
        .unwrap()
        .clone();
    worker.remove_plan(forward.plan).unwrap();
    // Until its nonce is cancelled the ask can be bought: its slice is not free yet.
    let cores = worker.capacity().cpu_cores;
    assert!(cores >= 2, "the test needs a box of 2 cores");
    let rest = plan("rest", cores - 1, "64MiB", 0).to_spec().unwrap();
    assert!(
        worker.add_plan(rest.clone()).is_err(),
        "the slice is still on sale"
    );
    block_on(worker.sync_plans()).unwrap();
    assert!(
        worker.store().plan(forward.plan).unwrap().is_none(),
        "deleted"
    );
    assert!(signed_asks(&worker).is_empty());
    assert!(block_on(worker.chain().nonce_used(U256::from(forward.nonce))).unwrap());
    assert!(
        is_nonce_used(quick_buy_refusal(&customer, &old, 3600)),
        "the old ask is refused with NonceUsed"
    );
    dwh.wait_listed(&forward, false);
    let cancels = nonce_cancels(&net, me);
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    let (word, mask) = mask_of(&[&forward]);
    assert_eq!((cancels[0].0, cancels[0].1), (word, mask));
    eprintln!("gas: cancelNonces of 1 ask {}", cancels[0].2);
    assert!(cancels[0].2 < CANCEL_GAS_BOUND, "{cancels:?}");
    assert!(placed_by(&worker).is_empty(), "still nothing placed");
    // Cancelled: the slice is free.
    worker.add_plan(rest).unwrap();
}

#[test]
fn replacing_or_pausing_every_ask_costs_one_cancel_per_nonce_word() {
    let net = Net::start(&[], &[(address_of(CUSTOMER), 1_000 * SNM_WEI)]);
    let dwh = DwhProc::start(&net);
    let plans = (0..3)
        .map(|i| plan(&format!("ram-{i}"), 0, "64MiB", 0))
        .collect();
    let worker = open(&config(&net, &dwh, 3600, plans));
    let me = worker.address();
    block_on(worker.sync_plans()).unwrap();
    let first = signed_asks(&worker);
    assert_eq!(first.len(), 3);
    for a in &first {
        dwh.wait_listed(a, true);
    }

    // --- Re-pricing (the admin's replace_asks): every ask withdrawn in one transaction, then
    // signed afresh with new nonces and published.
    let mut withdrawn = block_on(worker.replace_asks()).unwrap();
    withdrawn.sort_unstable();
    let mut plans: Vec<u64> = first.iter().map(|a| a.plan).collect();
    plans.sort_unstable();
    assert_eq!(withdrawn, plans);
    let cancels = nonce_cancels(&net, me);
    assert_eq!(
        cancels.len(),
        1,
        "one cancelNonces for three asks: {cancels:?}"
    );
    assert_eq!(
        (cancels[0].0, cancels[0].1),
        mask_of(&first.iter().collect::<Vec<_>>())
    );
    eprintln!(
        "gas: cancelNonces of 3 asks (replace_asks) {}",
        cancels[0].2
    );
    assert!(cancels[0].2 < CANCEL_GAS_BOUND);
    let second = signed_asks(&worker);
    assert_eq!(second.len(), 3);
    for a in &second {
        assert!(first.iter().all(|f| f.nonce != a.nonce), "fresh nonces");
        dwh.wait_listed(a, true);
    }
    for a in &first {
        assert!(block_on(worker.chain().nonce_used(U256::from(a.nonce))).unwrap());
        dwh.wait_listed(a, false);
    }

    // --- Maintenance: every ask withdrawn (one more transaction), none signed while it lasts,
    // and signed again when it ends.
    block_on(worker.set_maintenance(true)).unwrap();
    assert!(signed_asks(&worker).is_empty());
    let cancels = nonce_cancels(&net, me);
    assert_eq!(cancels.len(), 2, "{cancels:?}");
    assert_eq!(
        (cancels[1].0, cancels[1].1),
        mask_of(&second.iter().collect::<Vec<_>>())
    );
    eprintln!("gas: cancelNonces of 3 asks (maintenance) {}", cancels[1].2);
    block_on(worker.sync_plans()).unwrap();
    assert!(
        signed_asks(&worker).is_empty(),
        "none signed in maintenance"
    );
    let customer = customer(&net);
    for a in &second {
        let item = SignedOrder {
            order: a.order.clone(),
            expiry: a.expiry,
            nonce: U256::from(a.nonce),
            signature: a.signature.clone(),
            digest: a.digest,
        };
        assert!(is_nonce_used(quick_buy_refusal(&customer, &item, 0)));
        dwh.wait_listed(a, false);
    }
    block_on(worker.set_maintenance(false)).unwrap();
    let third = signed_asks(&worker);
    assert_eq!(third.len(), 3, "signed again after maintenance");
    for a in &third {
        dwh.wait_listed(a, true);
    }
    assert_eq!(
        nonce_cancels(&net, me).len(),
        2,
        "nothing cancelled by switching it off"
    );

    // --- An ask bought just before a withdrawal the worker has not seen yet: the withdrawal
    // finds the deal first, keeps that plan sold, and cancels only the others.
    let bought = &third[0];
    let item = dwh
        .listed(me)
        .into_iter()
        .find(|o| o.digest == bought.digest)
        .unwrap();
    let receipt = quick_buy(&customer, &item, 0);
    assert!(receipt.status());
    let deal = receipt
        .decoded_log::<Market::DealOpened>()
        .unwrap()
        .dealId
        .to::<u64>();
    let mut withdrawn = block_on(worker.replace_asks()).unwrap();
    withdrawn.sort_unstable();
    let others: Vec<&SignedAsk> = third.iter().filter(|a| a.plan != bought.plan).collect();
    assert_eq!(withdrawn, others.iter().map(|a| a.plan).collect::<Vec<_>>());
    let rec = worker.store().deal(deal).unwrap().expect("recorded");
    assert_eq!(rec.plan, Some(bought.plan));
    let sold = worker.store().plan(bought.plan).unwrap().unwrap();
    assert_eq!(sold.deal, Some(deal));
    assert_eq!(worker.store().signed_ask(bought.plan).unwrap(), None);
    let cancels = nonce_cancels(&net, me);
    assert_eq!(cancels.len(), 3, "{cancels:?}");
    assert_eq!((cancels[2].0, cancels[2].1), mask_of(&others));
    assert_eq!(
        signed_asks(&worker).len(),
        2,
        "the two others signed afresh"
    );
    assert!(placed_by(&worker).is_empty());
}

#[test]
fn nonces_outlive_a_restart_and_asks_are_signed_and_published_again() {
    let net = Net::start(&[], &[]);
    let mut dwh = DwhProc::start(&net);
    // A short life: the ask is signed again once a third of its 10 s is left.
    let config = config(&net, &dwh, 10, vec![plan("only", 1, "128MiB", 0)]);
    let worker = open(&config);
    block_on(worker.sync_plans()).unwrap();
    let first = ask_of(&worker, "only");
    dwh.wait_listed(&first, true);

    // --- A restart keeps the ask (same nonce, same digest) and the nonce counter.
    drop(worker);
    let worker = open(&config);
    block_on(worker.sync_plans()).unwrap();
    // (Signed again, if the restart took long, but under the same nonce.)
    let kept = ask_of(&worker, "only");
    assert_eq!(kept.nonce, first.nonce, "kept");
    block_on(worker.replace_asks()).unwrap();
    let second = ask_of(&worker, "only");
    assert_eq!(
        second.nonce,
        first.nonce + 1,
        "the counter went on after the restart"
    );
    drop(worker);
    let worker = open(&config);
    block_on(worker.replace_asks()).unwrap();
    let third = ask_of(&worker, "only");
    assert_eq!(third.nonce, second.nonce + 1);
    for replaced in [&first, &second] {
        let spent = block_on(worker.chain().nonce_used(U256::from(replaced.nonce))).unwrap();
        assert!(spent, "replaced ask {} cancelled", replaced.nonce);
    }
    dwh.wait_listed(&third, true);

    // --- Signed again before it expires: same nonce, a later expiry, a new digest, published.
    let refreshed = wait_for(
        "the ask signed again",
        Duration::from_secs(20),
        || dwh.log_text(),
        || {
            block_on(worker.sync_plans()).unwrap();
            let now = ask_of(&worker, "only");
            (now.expiry > third.expiry).then_some(now)
        },
    );
    assert_eq!(refreshed.nonce, third.nonce, "same nonce");
    assert_ne!(refreshed.digest, third.digest);
    assert!(
        refreshed.expiry > net.chain_time() + 6,
        "a fresh lifetime: {} at {}",
        refreshed.expiry,
        net.chain_time()
    );
    dwh.wait_listed(&refreshed, true);

    // --- A DWH that lost its book (restarted empty): the ask is posted again.
    dwh.kill();
    // A DWH that does not answer delays publication and fails nothing.
    block_on(worker.sync_plans()).unwrap();
    std::fs::remove_dir_all(&dwh.data).unwrap();
    dwh.spawn();
    let current = ask_of(&worker, "only");
    assert!(
        dwh.client().signed_order(current.digest).unwrap().is_none(),
        "lost"
    );
    block_on(worker.sync_plans()).unwrap();
    let current = ask_of(&worker, "only");
    dwh.wait_listed(&current, true);
}

/// A state directory wiped (or restored from an older copy) forgets the asks it signed; the
/// DWH still lists them and the chain would still take them, with no slice behind them. The new
/// state finds them in the DWH's listing of its author and cancels their nonces.
#[test]
fn a_wiped_state_cancels_the_signed_asks_it_forgot() {
    let net = Net::start(&[], &[]);
    let dwh = DwhProc::start(&net);
    let config = config(&net, &dwh, 3600, vec![plan("only", 1, "128MiB", 0)]);
    let worker = open(&config);
    block_on(worker.sync_plans()).unwrap();
    let forgotten = ask_of(&worker, "only");
    dwh.wait_listed(&forgotten, true);
    drop(worker);
    std::fs::remove_dir_all(&config.state_dir).unwrap();
    // A state started in a later second begins at a later nonce word.
    std::thread::sleep(Duration::from_millis(1100));

    let worker = open(&config);
    block_on(worker.sync_plans()).unwrap();
    let current = ask_of(&worker, "only");
    assert_ne!(current.nonce, forgotten.nonce);
    let used =
        |ask: &SignedAsk| block_on(worker.chain().nonce_used(U256::from(ask.nonce))).unwrap();
    assert!(used(&forgotten), "the forgotten ask is still buyable");
    assert!(!used(&current), "the current ask was cancelled too");
    let c = customer(&net);
    let served = dwh.client().signed_order(forgotten.digest).unwrap();
    if let Some(old) = served {
        assert!(is_nonce_used(quick_buy_refusal(&c, &old, 0)));
    }
    dwh.wait_listed(&forgotten, false);
    dwh.wait_listed(&current, true);
    // Once cancelled, a later round sends nothing more.
    let cancels = nonce_cancels(&net, current.order.author).len();
    block_on(worker.sync_plans()).unwrap();
    assert_eq!(nonce_cancels(&net, current.order.author).len(), cancels);
}

/// The floor, per unit-hour (as in autotrader.rs): plans for the bid clear it, the rest of the
/// box costs more than it offers.
const FLOOR_CORE_HOUR: u64 = 360_000_000_000;
const FLOOR_RAM_GIB_HOUR: u64 = 7_200_000_000_000;

/// The worker running its loops (`run_until`) on a thread of its own until dropped.
struct Running {
    worker: Arc<Worker>,
    stop: smol::channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(config: Config) -> Self {
        let worker = open(&config);
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
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_autotrader_takes_bids_with_its_signed_asks() {
    let net = Net::start(&[], &[(address_of(CUSTOMER), 1_000 * SNM_WEI)]);
    let dwh = DwhProc::start(&net);
    let autotrader: AutotraderConfig = toml::from_str(&format!(
        "dwh_url = \"{}\"\ninterval = 1\ncooldown = 0\n\
         [floor]\ncore_hour = {FLOOR_CORE_HOUR}\nram_gib_hour = {FLOOR_RAM_GIB_HOUR}\n",
        dwh.url
    ))
    .unwrap();
    // The DWH comes from [autotrader].
    let config = Config {
        autotrader: Some(autotrader),
        dwh_url: None,
        plans: Vec::new(),
        ..config(&net, &dwh, 3600, Vec::new())
    };
    let run = Running::start(config);
    let worker = run.worker.clone();
    let me = worker.address();
    let logs = || dwh.log_text();

    // With no bid, Optimus offers the box at the floor: signed asks, listed.
    let initial = wait_for(
        "the first signed asks",
        Duration::from_secs(60),
        logs,
        || {
            let asks = signed_asks(&worker);
            (!asks.is_empty()).then_some(asks)
        },
    );
    for a in &initial {
        dwh.wait_listed(a, true);
    }

    // A customer's bid: the box is re-planned (the first asks' nonces cancelled) and the
    // matcher opens the deal with openDeal(signed ask, placed bid).
    let customer = customer(&net);
    let bid = block_on(customer.bid_for(1, 256 << 20, 1_000_000_000, 0));
    let deal = wait_for("a deal for the bid", Duration::from_secs(90), logs, || {
        worker
            .store()
            .deals()
            .unwrap()
            .into_iter()
            .find(|d| d.bid == bid.id)
    });
    assert_eq!(deal.ask, 0, "opened on a signed ask");
    let plan = worker
        .store()
        .plan(deal.plan.expect("mapped to its plan"))
        .unwrap()
        .unwrap();
    assert_eq!(plan.spec.name, format!("optimus-bid-{}", bid.id));
    assert_eq!(plan.deal, Some(deal.id));
    let on_chain = block_on(worker.chain().get_deal(deal.id, 0)).unwrap();
    assert!(on_chain.active);
    assert_eq!(
        (on_chain.supplier, on_chain.consumer),
        (me, customer.key.address())
    );
    assert!(
        on_chain.price < bid.price,
        "at the ask's price, under the bid's"
    );
    for a in &initial {
        assert!(
            block_on(worker.chain().nonce_used(U256::from(a.nonce))).unwrap(),
            "the initial ask of plan {} withdrawn",
            a.plan
        );
        assert!(worker.store().plan(a.plan).unwrap().is_none(), "re-planned");
    }
    let cancels = nonce_cancels(&net, me);
    assert!(!cancels.is_empty());
    for (_, mask, gas) in &cancels {
        eprintln!(
            "gas: cancelNonces of {} asks (re-plan) {gas}",
            mask.count_ones()
        );
        assert!(*gas < CANCEL_GAS_BOUND);
    }
    assert!(placed_by(&worker).is_empty(), "nothing placed");
}
