//! Shared by the chain tests: an anvil with the real contracts, a scripted market
//! history with its expected state kept by hand, an HTTP GET and POST, bounded waits,
//! signed-order bodies.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest::Url;
use sonm_contracts::anvil::{ANVIL_CHAIN_ID, Anvil, DEV_KEYS};
use sonm_contracts::deploy::SNM_WEI;
use sonm_contracts::{
    Addresses, Blacklist, DealSnapshot, DeployConfig, Gate, Market, ProfileRegistry, SNM,
    chain_order, deploy, market_domain, market_order, order_id_from_chain, placed_ref, sign_order,
};
use sonm_dwh::daemon::{self, Config};
use sonm_market::{
    Benchmarks, DealId, IdentityLevel, NetFlags, Order, OrderId, OrderType, StaticContext,
};

/// The daemon's configuration for a test: no confirmations, short pauses, a small map.
pub fn config(endpoints: Vec<String>, dir: &Path, batch_blocks: u64) -> Config {
    Config {
        endpoints,
        addresses: dir.join("addresses.toml"),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        data_dir: dir.join("data"),
        confirmations: 0,
        batch_blocks,
        keep_blocks: 64,
        poll_interval_ms: 20,
        max_backoff_ms: 200,
        map_size_mib: 64,
        http_threads: 2,
        signed_order_max_ttl_s: 7 * 24 * 3600,
        signed_orders_per_author: 256,
        signed_orders_max: 10_000,
    }
}

/// Runs the daemon in this process until the returned flag is set.
pub fn start(
    config: Config,
    world: &World,
) -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let addresses = world.addresses.clone();
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        daemon::run(&config, &addresses, &flag, |a| tx.send(a).unwrap()).unwrap();
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (addr, stop, handle)
}

/// The last block the daemon at `addr` indexed.
pub fn indexed_block(addr: SocketAddr) -> Option<u64> {
    let (status, body) = get(addr, "/v1/status");
    assert_eq!(status, 200);
    body.get("number").and_then(serde_json::Value::as_u64)
}

pub fn block_on<F: Future>(future: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(future))
}

pub fn anvil() -> Anvil {
    Anvil::spawn_with(&["--accounts", "10"]).unwrap_or_else(|e| panic!("{e}"))
}

pub fn url(anvil: &Anvil) -> Url {
    anvil.endpoint().parse().unwrap()
}

/// Polls `check` every 20 ms for at most 60 s.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` over a fresh connection: (status, JSON body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned())),
    )
}

/// `POST path` with `body` (Content-Length) over a fresh connection: (status, JSON body).
pub fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned())),
    )
}

/// The JSON body of a post to the signed-order book.
pub fn signed_body(order: &Order, expiry: u64, nonce: U256, signature: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "order": order,
        "expiry": expiry,
        "nonce": nonce.to_string(),
        "signature": Bytes::copy_from_slice(signature),
    })
    .to_string()
    .into_bytes()
}

/// secp256k1's group order n.
const N: U256 = U256::from_be_bytes(alloy::primitives::hex!(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
));

/// The malleable twin of a low-s signature (s' = n - s, the other v): the same signer
/// recovers from it, and the Market refuses it.
pub fn high_s_twin(signature: &[u8]) -> Vec<u8> {
    let mut twin = signature.to_vec();
    let s = U256::from_be_slice(&signature[32..64]);
    twin[32..64].copy_from_slice(&(N - s).to_be_bytes::<32>());
    twin[64] = if signature[64] == 27 { 28 } else { 27 };
    twin
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub use sonm_contracts::anvil::confirm;

/// The market as the test expects it, kept by hand from what it did.
#[derive(Debug, Default)]
pub struct Expected {
    pub orders: BTreeMap<OrderId, Order>,
    pub cancelled: BTreeSet<OrderId>,
    pub matched: BTreeSet<OrderId>,
    /// deal id -> (supplier, consumer, master, closed, sum of DealBilled.paid, bills)
    pub deals: BTreeMap<DealId, ExpectedDeal>,
    pub ctx: StaticContext,
    /// Live country certificates: country (upper case) -> subjects.
    pub countries: BTreeMap<String, BTreeSet<Address>>,
    /// The gate: threshold, and keeper -> (daily limit, frozen).
    pub gate_threshold: u8,
    pub keepers: BTreeMap<Address, (u128, bool)>,
}

#[derive(Debug, Clone, Default)]
pub struct ExpectedDeal {
    pub supplier: Address,
    pub consumer: Address,
    pub master: Address,
    pub closed: bool,
    pub paid: u128,
    pub bills: u32,
    pub change_requests: u32,
}

impl Expected {
    pub fn active(&self, t: OrderType) -> Vec<&Order> {
        self.orders
            .values()
            .filter(|o| {
                o.order_type == t
                    && !self.cancelled.contains(&o.id)
                    && !self.matched.contains(&o.id)
            })
            .collect()
    }

    fn bills_of(&mut self, receipt: &TransactionReceipt) {
        for log in receipt.inner.logs() {
            if let Ok(e) = log.log_decode::<Market::DealBilled>() {
                let e = e.inner.data;
                let d = self
                    .deals
                    .get_mut(&u64::try_from(e.dealId).unwrap())
                    .unwrap();
                d.paid += u128::try_from(e.paid).unwrap();
                d.bills += 1;
            }
            if let Ok(e) = log.log_decode::<Market::DealClosed>() {
                let id = u64::try_from(e.inner.data.dealId).unwrap();
                self.deals.get_mut(&id).unwrap().closed = true;
            }
        }
    }
}

/// A deployed market with funded traders and the handles to act on it.
pub struct World {
    pub provider: DynProvider,
    pub addresses: Addresses,
    pub deployer: Address,
    pub suppliers: [Address; 3],
    pub consumers: [Address; 3],
    pub master: Address,
    pub expected: Expected,
    seq: u64,
}

impl World {
    pub async fn new(anvil: &Anvil) -> World {
        let provider = sonm_contracts::deploy::provider(url(anvil));
        let accounts = provider.get_accounts().await.unwrap();
        let key: PrivateKeySigner = DEV_KEYS[0].parse().unwrap();
        let suppliers = [accounts[1], accounts[2], accounts[3]];
        let consumers = [accounts[4], accounts[5], accounts[6]];
        let traders: Vec<Address> = suppliers.iter().chain(&consumers).copied().collect();
        let config = DeployConfig {
            validators: vec![(accounts[0], 3)],
            fund: traders
                .iter()
                .map(|a| (*a, U256::from(1_000_000u128 * SNM_WEI)))
                .collect(),
            ..DeployConfig::default()
        };
        let addresses = deploy(url(anvil), key, &config).await.unwrap();
        let token = SNM::new(addresses.contracts.snm, &provider);
        for t in &traders {
            confirm(
                "approve",
                token
                    .approve(addresses.contracts.market, U256::MAX)
                    .from(*t),
            )
            .await;
        }
        World {
            provider,
            addresses,
            deployer: accounts[0],
            suppliers,
            consumers,
            master: accounts[7],
            expected: Expected::default(),
            seq: 0,
        }
    }

    pub fn market(&self) -> Market::MarketInstance<&DynProvider> {
        Market::new(self.addresses.contracts.market, &self.provider)
    }

    /// An order template; the tag makes every order distinct.
    pub fn order(
        &mut self,
        order_type: OrderType,
        author: Address,
        price: u128,
        duration: u64,
        benchmarks: [u64; 13],
    ) -> Order {
        self.seq += 1;
        Order {
            id: 0,
            order_type,
            author,
            counterparty: None,
            duration,
            price,
            netflags: NetFlags::NONE,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: B256::from(U256::from(self.seq)),
            benchmarks: Benchmarks(benchmarks),
        }
    }

    pub async fn place(&mut self, order: Order) -> Order {
        let receipt = confirm(
            "placeOrder",
            self.market()
                .placeOrder(chain_order(&order))
                .from(order.author),
        )
        .await;
        let e = receipt
            .decoded_log::<Market::OrderPlaced>()
            .expect("OrderPlaced");
        let placed = market_order(order_id_from_chain(e.orderId).unwrap(), &e.order).unwrap();
        self.expected.orders.insert(placed.id, placed.clone());
        placed
    }

    pub async fn cancel(&mut self, order: &Order) {
        confirm(
            "cancelOrder",
            self.market()
                .cancelOrder(U256::from(order.id), chain_order(order))
                .from(order.author),
        )
        .await;
        self.expected.cancelled.insert(order.id);
    }

    pub async fn open(&mut self, ask: &Order, bid: &Order) -> DealId {
        let receipt = confirm(
            "openDeal",
            self.market()
                .openDeal(placed_ref(ask), placed_ref(bid))
                .from(self.deployer),
        )
        .await;
        let e = receipt
            .decoded_log::<Market::DealOpened>()
            .expect("DealOpened");
        let id = u64::try_from(e.dealId).unwrap();
        self.expected.matched.extend([ask.id, bid.id]);
        self.expected.deals.insert(
            id,
            ExpectedDeal {
                supplier: e.supplier,
                consumer: e.consumer,
                master: e.master,
                ..ExpectedDeal::default()
            },
        );
        id
    }

    /// Opens a deal from `ask`, signed off chain by its author (`key`) and never placed, and
    /// the placed `bid`: the deal's ask id is 0.
    pub async fn open_signed(
        &mut self,
        key: &PrivateKeySigner,
        ask: &Order,
        bid: &Order,
    ) -> DealId {
        let domain = market_domain(ANVIL_CHAIN_ID, self.addresses.contracts.market);
        let ask_ref = sign_order(key, ask, u64::MAX, U256::from(self.seq), &domain).unwrap();
        let receipt = confirm(
            "openDeal (signed ask)",
            self.market()
                .openDeal(ask_ref, placed_ref(bid))
                .from(self.deployer),
        )
        .await;
        let e = receipt
            .decoded_log::<Market::DealOpened>()
            .expect("DealOpened");
        assert_eq!(e.askId, U256::ZERO);
        let id = u64::try_from(e.dealId).unwrap();
        self.expected.matched.insert(bid.id);
        self.expected.deals.insert(
            id,
            ExpectedDeal {
                supplier: e.supplier,
                consumer: e.consumer,
                master: e.master,
                ..ExpectedDeal::default()
            },
        );
        id
    }

    /// Deal `id`'s state as its events tell it (what the Market's deal calls take).
    pub async fn state(&self, deal: DealId) -> Market::DealState {
        DealSnapshot::read(&self.provider, self.addresses.contracts.market, deal, 0)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("deal {deal} was never opened"))
            .state()
    }

    pub async fn bill(&mut self, deal: DealId, by: Address) {
        let state = self.state(deal).await;
        let market = self.market();
        let call = market.bill(U256::from(deal), state).from(by);
        let r = confirm("bill", call).await;
        self.expected.bills_of(&r);
    }

    pub async fn close(&mut self, deal: DealId, by: Address) {
        let state = self.state(deal).await;
        let market = self.market();
        let call = market.closeDeal(U256::from(deal), state, false);
        let r = confirm("closeDeal", call.from(by)).await;
        self.expected.bills_of(&r);
    }

    pub async fn change(&mut self, deal: DealId, by: Address, price: u128, duration: u64) {
        let state = self.state(deal).await;
        let market = self.market();
        let call = market.createChangeRequest(U256::from(deal), state, U256::from(price), duration);
        let r = confirm("createChangeRequest", call.from(by)).await;
        self.expected.bills_of(&r);
        self.expected.deals.get_mut(&deal).unwrap().change_requests += 1;
    }

    pub async fn advance(&self, seconds: u64) {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await
            .unwrap();
    }

    pub async fn set_level(&mut self, who: Address, level: IdentityLevel) {
        let profiles =
            ProfileRegistry::new(self.addresses.contracts.profile_registry, &self.provider);
        confirm(
            "issueCertificate",
            profiles
                .issueCertificate(who, U256::from(1000 + level as u64), Default::default())
                .from(self.deployer),
        )
        .await;
        self.expected.ctx.levels.insert(who, level);
    }

    /// Issues a country certificate (attribute 1102) and returns its id; `expected` says
    /// the country to expect it under (`None` for a malformed value).
    pub async fn set_country(&mut self, who: Address, value: &str, expected: Option<&str>) -> U256 {
        let profiles =
            ProfileRegistry::new(self.addresses.contracts.profile_registry, &self.provider);
        let r = confirm(
            "issueCertificate (country)",
            profiles
                .issueCertificate(who, U256::from(1102u64), value.as_bytes().to_vec().into())
                .from(self.deployer),
        )
        .await;
        if let Some(c) = expected {
            self.expected
                .countries
                .entry(c.into())
                .or_default()
                .insert(who);
        }
        r.inner
            .logs()
            .iter()
            .find_map(|l| l.log_decode::<ProfileRegistry::CertificateIssued>().ok())
            .expect("a CertificateIssued event")
            .inner
            .data
            .id
    }

    pub async fn revoke(&mut self, id: U256, who: Address, country: &str) {
        let profiles =
            ProfileRegistry::new(self.addresses.contracts.profile_registry, &self.provider);
        confirm(
            "revokeCertificate",
            profiles.revokeCertificate(id).from(self.deployer),
        )
        .await;
        if let Some(set) = self.expected.countries.get_mut(country) {
            set.remove(&who);
        }
    }

    /// Keepers `a` (limit 100 SNM) and `b` (50 SNM, then frozen), a third added and
    /// removed, and the threshold raised to 2.
    pub async fn gate_keepers(&mut self, a: Address, b: Address, gone: Address) {
        let gate = Gate::new(self.addresses.contracts.gate, &self.provider);
        let limit = |snm: u128| alloy::primitives::Uint::<96, 2>::from(snm * SNM_WEI);
        for (k, snm) in [(a, 100), (b, 50), (gone, 10)] {
            confirm(
                "setKeeper",
                gate.setKeeper(k, limit(snm)).from(self.deployer),
            )
            .await;
            self.expected.keepers.insert(k, (snm * SNM_WEI, false));
        }
        confirm("setFrozen", gate.setFrozen(b, true).from(self.deployer)).await;
        self.expected.keepers.get_mut(&b).unwrap().1 = true;
        confirm(
            "setKeeper 0",
            gate.setKeeper(gone, limit(0)).from(self.deployer),
        )
        .await;
        self.expected.keepers.remove(&gone);
        confirm("setThreshold", gate.setThreshold(2).from(self.deployer)).await;
        self.expected.gate_threshold = 2;
    }

    pub async fn blacklist(&mut self, owner: Address, who: Address) {
        let list = Blacklist::new(self.addresses.contracts.blacklist, &self.provider);
        confirm("blacklist.add", list.add(who).from(owner)).await;
        self.expected.ctx.blacklists.insert((owner, who));
    }

    pub async fn worker(&mut self, worker: Address, master: Address) {
        let m = self.market();
        confirm("registerWorker", m.registerWorker(master).from(worker)).await;
        confirm("confirmWorker", m.confirmWorker(worker).from(master)).await;
        self.expected.ctx.masters.insert(worker, master);
    }

    /// Locks `amount` SNM wei in the gate from `from`, for `to` on chain 7.
    pub async fn lock(&self, from: Address, to: Address, amount: u128) {
        let c = self.addresses.contracts;
        let token = SNM::new(c.snm, &self.provider);
        confirm(
            "approve gate",
            token.approve(c.gate, U256::from(amount)).from(from),
        )
        .await;
        let gate = Gate::new(c.gate, &self.provider);
        confirm(
            "gate.lock",
            gate.lock(to, U256::from(amount), U256::from(7)).from(from),
        )
        .await;
    }

    pub async fn head(&self) -> u64 {
        self.provider.get_block_number().await.unwrap()
    }

    /// A small market history: levels, a master, a blacklist entry, 14 asks and 8
    /// bids of varied prices, durations and benchmarks, two cancellations, three
    /// deals (one forward), bills, a close, a change request.
    pub async fn script(&mut self) {
        let [s1, s2, s3] = self.suppliers;
        let [c1, c2, c3] = self.consumers;
        self.set_level(c2, IdentityLevel::Registered).await;
        // Countries: two certificates for c2 (listed once), one revoked (not listed),
        // one malformed value (not indexed).
        self.set_country(c1, "de", Some("DE")).await;
        self.set_country(c2, "DE", Some("DE")).await;
        self.set_country(c2, "De", Some("DE")).await;
        self.set_country(s1, "FR", Some("FR")).await;
        let revoked = self.set_country(c3, "DE", Some("DE")).await;
        self.revoke(revoked, c3, "DE").await;
        self.set_country(s2, "Germany", None).await;
        self.gate_keepers(s3, c3, self.master).await;
        self.worker(s2, self.master).await;
        self.blacklist(c3, s3).await;

        let mut asks = Vec::new();
        for i in 0..14u64 {
            let author = [s1, s2, s3][(i % 3) as usize];
            let mut bench = [0u64; 13];
            bench[2] = 1 + i % 8; // cpu-cores
            bench[3] = (1 + i % 4) << 30; // ram-size
            let duration = if i % 4 == 3 { 7200 } else { 0 };
            let mut o = self.order(
                OrderType::Ask,
                author,
                u128::from(10 + (i * 7) % 23),
                duration,
                bench,
            );
            if i == 5 {
                o.identity_level = IdentityLevel::Registered;
            }
            if i % 5 == 0 {
                o.netflags = NetFlags::ALL;
            }
            asks.push(self.place(o).await);
        }
        let mut bids = Vec::new();
        for i in 0..8u64 {
            let author = [c1, c2, c3][(i % 3) as usize];
            let mut bench = [0u64; 13];
            bench[2] = 1 + i % 4;
            bench[3] = 1 << 30;
            let duration = if i % 4 == 3 { 3600 } else { 0 };
            let o = self.order(
                OrderType::Bid,
                author,
                u128::from(15 + i * 3),
                duration,
                bench,
            );
            bids.push(self.place(o).await);
        }
        self.cancel(&asks[13]).await;
        self.cancel(&bids[7].clone()).await;

        // Deals: ask 0 (price 10, 1 core) with bid 0 (price 15, 1 core, spot);
        // ask 7 (s2, forward 7200, 8 cores, price 13) with bid 3 (forward 3600, 4 cores, 24);
        // ask 1 (s2, price 17, 2 cores) with bid 1 (c2, price 18, 2 cores).
        let d1 = self.open(&asks[0].clone(), &bids[0].clone()).await;
        let d2 = self.open(&asks[7].clone(), &bids[3].clone()).await;
        let d3 = self.open(&asks[1].clone(), &bids[1].clone()).await;
        self.advance(600).await;
        self.bill(d1, c1).await;
        self.bill(d3, s2).await;
        self.advance(600).await;
        self.bill(d1, s1).await;
        self.close(d1, c1).await;
        self.change(d3, s2, 16, 0).await;
        self.change(d3, s2, 30, 0).await;
        // A signed ask of s1's (never placed) with bid 2 (c3, price 21, 3 cores, spot).
        let s1_key: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
        assert_eq!(s1_key.address(), s1);
        let mut bench = [0u64; 13];
        bench[2] = 4;
        bench[3] = 1 << 30;
        let signed_ask = self.order(OrderType::Ask, s1, 20, 0, bench);
        let d4 = self
            .open_signed(&s1_key, &signed_ask, &bids[2].clone())
            .await;
        self.bill(d4, s1).await;
        self.lock(c1, c2, 5 * SNM_WEI).await;
        let _ = d2;
    }
}
