//! The DWH against a real anvil with the real contracts: a scripted market history
//! indexed and queried over HTTP, a kill -9 and restart, a reorg, a dying endpoint.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use common::{World, anvil, block_on, config, get, indexed_block, start, url, wait_until};
use serde_json::Value;
use sonm_dwh::OrderStatus;
use sonm_dwh::follower::{Follower, FollowerConfig, Metrics, SharedBook, Step};
use sonm_dwh::query::{self, OrderQuery};
use sonm_dwh::storage::{Role, Storage, open_env};
use sonm_market::{OrderType, scan_best_asks, scan_best_bids};

fn ids(items: &Value) -> Vec<u64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row["order"]["id"]
                .as_u64()
                .or(row["deal"]["id"].as_u64())
                .unwrap()
        })
        .collect()
}

/// Every page of `path` (which has no cursor), joined.
fn all_pages(addr: SocketAddr, path: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let p = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (status, body) = get(addr, &p);
        assert_eq!(status, 200, "{p}: {body}");
        out.extend(ids(&body["items"]));
        match body["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("too many pages");
}

fn sorted_by_price(orders: Vec<&sonm_market::Order>) -> Vec<u64> {
    let mut v: Vec<(u128, u64)> = orders.iter().map(|o| (o.price, o.id)).collect();
    v.sort();
    v.into_iter().map(|(_, id)| id).collect()
}

#[test]
fn indexes_a_market_history_and_answers_queries() {
    let anvil = anvil();
    let mut w = block_on(World::new(&anvil));
    block_on(w.script());
    let head = block_on(w.head());
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, handle) = start(config(vec![anvil.endpoint()], dir.path(), 7), &w);
    wait_until("the indexer to reach the head", || {
        indexed_block(addr).is_some_and(|n| n >= head)
    });
    let e = &w.expected;

    // Orders by type and status, sorted by price, over pages of 3.
    for (t, name) in [(OrderType::Ask, "ask"), (OrderType::Bid, "bid")] {
        assert_eq!(
            all_pages(addr, &format!("/v1/orders?type={name}&limit=3")),
            sorted_by_price(e.active(t)),
            "active {name}s"
        );
    }
    let cancelled: Vec<u64> = all_pages(addr, "/v1/orders?type=ask&status=cancelled");
    assert_eq!(
        cancelled,
        sorted_by_price(
            e.orders
                .values()
                .filter(|o| o.order_type == OrderType::Ask && e.cancelled.contains(&o.id))
                .collect()
        )
    );
    let matched = all_pages(addr, "/v1/orders?type=bid&status=matched");
    assert_eq!(
        matched,
        sorted_by_price(
            e.orders
                .values()
                .filter(|o| o.order_type == OrderType::Bid && e.matched.contains(&o.id))
                .collect()
        )
    );
    // Filters: benchmarks >= a vector, price range, author, duration, netflags, level.
    let asks = e.active(OrderType::Ask);
    let want = |f: &dyn Fn(&sonm_market::Order) -> bool| {
        sorted_by_price(asks.iter().copied().filter(|o| f(o)).collect())
    };
    let s1 = w.suppliers[0];
    let cases: Vec<(String, Vec<u64>)> = vec![
        (
            "benchmarks=cpu-cores%3D4,ram-size%3D2GiB".into(),
            want(&|o| o.benchmarks.0[2] >= 4 && o.benchmarks.0[3] >= 2 << 30),
        ),
        (
            "price_min=15&price_max=25".into(),
            want(&|o| (15..=25).contains(&o.price)),
        ),
        (format!("author={s1}"), want(&|o| o.author == s1)),
        (
            format!("author={s1}&price_min=20"),
            want(&|o| o.author == s1 && o.price >= 20),
        ),
        ("duration_min=1".into(), want(&|o| o.duration >= 1)),
        ("duration_max=0".into(), want(&|o| o.duration == 0)),
        (
            "netflags=inbound".into(),
            want(&|o| o.netflags.bits() & 2 != 0),
        ),
        (
            "identity_level=anonymous".into(),
            want(&|o| o.identity_level == sonm_market::IdentityLevel::Anonymous),
        ),
    ];
    for (filter, expected) in cases {
        let got = all_pages(addr, &format!("/v1/orders?type=ask&limit=2&{filter}"));
        assert_eq!(got, expected, "filter {filter}");
    }
    // Matching orders: the same answer as the market crate's reference scan.
    let bids = e.active(OrderType::Bid);
    let mut some_match = false;
    for bid in &bids {
        let want = scan_best_asks(asks.iter().copied(), *bid, 100, &e.ctx);
        some_match |= !want.is_empty();
        let (status, body) = get(addr, &format!("/v1/orders/{}/matches?limit=100", bid.id));
        assert_eq!(status, 200);
        assert_eq!(ids(&body), want, "matches of bid {}", bid.id);
    }
    assert!(some_match, "the script leaves some bids with matches");
    for ask in &asks {
        let want = scan_best_bids(bids.iter().copied(), *ask, 100, &e.ctx);
        let (_, body) = get(addr, &format!("/v1/orders/{}/matches?limit=100", ask.id));
        assert_eq!(ids(&body), want, "matches of ask {}", ask.id);
    }
    // Deals by party and role; bills, payouts, change requests.
    let parties: Vec<Address> = w
        .suppliers
        .iter()
        .chain(&w.consumers)
        .chain([&w.master])
        .copied()
        .collect();
    for party in &parties {
        for role in ["any", "supplier", "consumer", "master"] {
            let mut want: Vec<(bool, u64)> = e
                .deals
                .iter()
                .filter(|(_, d)| match role {
                    "supplier" => d.supplier == *party,
                    "consumer" => d.consumer == *party,
                    "master" => d.master == *party,
                    _ => [d.supplier, d.consumer, d.master].contains(party),
                })
                .map(|(id, d)| (d.closed, *id))
                .collect();
            want.sort();
            let want: Vec<u64> = want.into_iter().map(|(_, id)| id).collect();
            let got = all_pages(
                addr,
                &format!("/v1/deals?party={party}&role={role}&limit=1"),
            );
            assert_eq!(got, want, "deals of {party} as {role}");
            let closed = all_pages(
                addr,
                &format!("/v1/deals?party={party}&role={role}&status=closed"),
            );
            let want_closed: Vec<u64> = want
                .iter()
                .copied()
                .filter(|id| e.deals[id].closed)
                .collect();
            assert_eq!(closed, want_closed);
        }
    }
    for (id, d) in &e.deals {
        let (_, deal) = get(addr, &format!("/v1/deals/{id}"));
        assert_eq!(
            deal["deal"]["total_payout"].as_u64().map(u128::from),
            Some(d.paid),
            "payout of {id}"
        );
        assert_eq!(
            deal["deal"]["status"],
            if d.closed { "closed" } else { "accepted" }
        );
        let (_, bills) = get(addr, &format!("/v1/deals/{id}/bills"));
        assert_eq!(
            bills.as_array().unwrap().len() as u32,
            d.bills,
            "bills of {id}"
        );
        let (_, crs) = get(addr, &format!("/v1/deals/{id}/change-requests"));
        assert_eq!(crs.as_array().unwrap().len() as u32, d.change_requests);
    }
    assert!(e.deals.values().any(|d| d.bills >= 2 && d.closed));
    // Profiles, masters and blacklists.
    let [_, c2, c3] = w.consumers;
    let (_, page) = get(addr, "/v1/profiles?level=registered");
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "one registered address: {page}"
    );
    assert_eq!(get(addr, "/v1/profiles?level=anonymous").0, 400);
    let (_, p) = get(addr, &format!("/v1/profiles/{c2}"));
    assert_eq!(p["identity_level"], "registered");
    // Its level certificate and its two country certificates.
    assert_eq!(p["certificates"].as_array().unwrap().len(), 3);
    let (_, p) = get(addr, &format!("/v1/profiles/{}", w.suppliers[1]));
    assert_eq!(
        p["master"].as_str().map(str::to_lowercase),
        Some(w.master.to_string().to_lowercase())
    );
    // Profiles by country (each subject once, revoked and malformed certificates not
    // counted), with a level, and across pages of one.
    let lower = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_lowercase())
            .collect()
    };
    let want = |c: &str| -> Vec<String> {
        e.countries
            .get(c)
            .into_iter()
            .flatten()
            .map(|a| a.to_string().to_lowercase())
            .collect()
    };
    for c in ["DE", "FR"] {
        let (status, page) = get(addr, &format!("/v1/profiles?country={}", c.to_lowercase()));
        assert_eq!(status, 200, "{page}");
        assert_eq!(lower(&page), want(c), "country {c}");
    }
    assert_eq!(want("DE").len(), 2);
    let (_, page) = get(addr, "/v1/profiles?country=DE&level=registered");
    assert_eq!(lower(&page), vec![c2.to_string().to_lowercase()]);
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = get(addr, &format!("/v1/profiles?country=DE&limit=1{cursor}"));
        paged.extend(lower(&page));
        match page["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(paged, want("DE"), "pages of one");
    // The gate's keepers and threshold.
    let (_, gate) = get(addr, "/v1/gate");
    assert_eq!(
        gate["threshold"].as_u64(),
        Some(u64::from(e.gate_threshold)),
        "{gate}"
    );
    // (Limits above u64 come back as JSON numbers the test's parser reads as f64.)
    let keepers: Vec<(String, f64, bool)> = gate["keepers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["keeper"].as_str().unwrap().to_lowercase(),
                k["daily_limit"].as_f64().unwrap(),
                k["frozen"].as_bool().unwrap(),
            )
        })
        .collect();
    let want_keepers: Vec<(String, f64, bool)> = e
        .keepers
        .iter()
        .map(|(k, (l, f))| (k.to_string().to_lowercase(), *l as f64, *f))
        .collect();
    assert_eq!(keepers, want_keepers);
    // Market statistics: the same numbers as the market crate computes over the
    // orders the test expects to be open.
    for t in [OrderType::Ask, OrderType::Bid] {
        let name = if t == OrderType::Ask { "ask" } else { "bid" };
        let (status, stats) = get(addr, &format!("/v1/stats?type={name}"));
        assert_eq!(status, 200, "{stats}");
        let open = e.active(t);
        let want = sonm_market::MarketStats::of(open.iter().map(|o| (o.price, &o.benchmarks)));
        assert_eq!(stats, serde_json::to_value(&want).unwrap(), "{name} stats");
        assert_eq!(stats["orders"].as_u64(), Some(open.len() as u64));
        assert!(stats["classes"].as_array().unwrap().len() >= 2, "{stats}");
    }
    let (_, list) = get(addr, &format!("/v1/blacklists/{c3}"));
    assert_eq!(list.as_array().unwrap().len(), 1);
    // The gate lock, under its sender and its receiver.
    for party in [w.consumers[0], c2] {
        let (_, t) = get(addr, &format!("/v1/transfers/{party}"));
        let t = t.as_array().unwrap();
        assert_eq!(t.len(), 1, "{party}");
        assert_eq!(t[0]["locked"]["dst_chain"], 7, "{t:?}");
    }

    // Bad queries: 400 with a message.
    for bad in [
        "/v1/orders",
        "/v1/orders?type=foo",
        "/v1/orders?type=ask&benchmarks=bogus%3D1",
        "/v1/orders?type=ask&limit=0",
        "/v1/orders?type=ask&cursor=zz",
        "/v1/orders?type=ask&colour=red",
        "/v1/orders?type=ask&price_min=5&price_max=4",
        "/v1/orders?type=ask&type=bid",
        "/v1/deals?party=nobody",
        "/v1/orders/abc",
        "/v1/profiles/0x12",
        "/v1/profiles",
        "/v1/profiles?country=DEU",
        "/v1/profiles?country=D1",
        "/v1/stats",
        "/v1/stats?type=ask&limit=3",
    ] {
        let (status, body) = get(addr, bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}"
        );
    }
    assert_eq!(get(addr, "/v1/orders/999999").0, 404);
    let (status, doc) = get(addr, "/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/orders"].is_object());

    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

/// Everything the API says about orders and deals, to compare two runs.
fn snapshot(addr: SocketAddr, w: &World) -> Vec<Value> {
    let mut out = Vec::new();
    for t in ["ask", "bid"] {
        for s in ["active", "cancelled", "matched"] {
            out.push(get(addr, &format!("/v1/orders?type={t}&status={s}&limit=1000")).1);
        }
    }
    for id in w.expected.deals.keys() {
        out.push(get(addr, &format!("/v1/deals/{id}")).1);
        out.push(get(addr, &format!("/v1/deals/{id}/bills")).1);
    }
    out
}

#[test]
fn a_killed_daemon_resumes_from_its_checkpoint_without_duplicates() {
    let anvil = anvil();
    let mut w = block_on(World::new(&anvil));
    block_on(w.script());
    let head = block_on(w.head());
    let dir = tempfile::tempdir().unwrap();
    w.addresses
        .write(dir.path().join("addresses.toml"))
        .unwrap();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let toml = format!(
        "endpoints = [\"{}\"]\naddresses = \"{}\"\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n\
         confirmations = 0\nbatch_blocks = 1\npoll_interval_ms = 20\nmap_size_mib = 64\n",
        anvil.endpoint(),
        dir.path().join("addresses.toml").display(),
        dir.path().join("data").display(),
    );
    let config_path = dir.path().join("dwh.toml");
    std::fs::write(&config_path, toml).unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_sonm-dwh"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let up = |addr| TcpStream::connect(addr).is_ok();

    // First run: killed (SIGKILL) while it is still indexing, a block per batch.
    let mut child = spawn();
    wait_until("the API", || up(addr));
    let middle = w.addresses.deploy_block + (head - w.addresses.deploy_block) / 2;
    wait_until("half the chain", || {
        indexed_block(addr).is_some_and(|n| n >= middle)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the port to close", || !up(addr));

    // Second run: resumes where the first stopped, and ends with the same state as
    // a run that was never killed.
    let mut child = spawn();
    wait_until("the API again", || up(addr));
    let resumed = indexed_block(addr).expect("a checkpoint survived the kill");
    assert!(
        resumed >= middle,
        "resumed at {resumed}, before the kill it was at {middle}"
    );
    wait_until("the head", || {
        indexed_block(addr).is_some_and(|n| n >= head)
    });
    let killed = snapshot(addr, &w);
    child.kill().unwrap();
    child.wait().unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let (addr2, stop, handle) = start(config(vec![anvil.endpoint()], fresh.path(), 1000), &w);
    wait_until("the fresh run", || {
        indexed_block(addr2).is_some_and(|n| n >= head)
    });
    assert_eq!(killed, snapshot(addr2, &w));
    for (id, d) in &w.expected.deals {
        let (_, deal) = get(addr2, &format!("/v1/deals/{id}"));
        assert_eq!(deal["bills"].as_u64(), Some(u64::from(d.bills)));
    }
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

fn follower_config(endpoints: Vec<String>) -> FollowerConfig {
    let mut c = FollowerConfig::new(endpoints.iter().map(|e| e.parse().unwrap()).collect());
    c.confirmations = 0;
    c.poll_interval = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c.keep_blocks = 64;
    c
}

/// Steps until caught up; returns the steps taken.
fn catch_up(f: &mut Follower<'_, '_>) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..1000 {
        let step = block_on(f.step()).unwrap();
        eprintln!("step: {step:?}");
        if matches!(step, Step::Idle { .. }) {
            return steps;
        }
        steps.push(step);
    }
    panic!("no end in sight: {steps:?}");
}

#[test]
fn a_reorg_removes_the_rows_of_dropped_blocks() {
    let anvil = anvil();
    let mut w = block_on(World::new(&anvil));
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 64 << 20).unwrap();
    let storage = Storage::open(&env).unwrap();
    let book = SharedBook::default();
    let metrics = Metrics::default();
    let mut f = Follower::new(
        &storage,
        &book,
        &metrics,
        &w.addresses,
        follower_config(vec![anvil.endpoint()]),
    )
    .unwrap();
    let [s1, ..] = w.suppliers;
    let [c1, ..] = w.consumers;
    let bench = [1u64; 13];
    let kept = w.order(OrderType::Ask, s1, 10, 0, bench);
    let kept = block_on(w.place(kept));
    catch_up(&mut f);

    let snapshot: U256 = block_on(w.provider.raw_request("evm_snapshot".into(), ())).unwrap();
    let dropped_ask = w.order(OrderType::Ask, s1, 11, 0, bench);
    let dropped_ask = block_on(w.place(dropped_ask));
    let dropped_bid = w.order(OrderType::Bid, c1, 20, 0, bench);
    let dropped_bid = block_on(w.place(dropped_bid));
    let deal = block_on(w.open(&kept, &dropped_bid));
    catch_up(&mut f);
    let txn = storage.read_txn().unwrap();
    assert!(storage.deal(&txn, deal).unwrap().is_some());
    assert_eq!(
        storage.order(&txn, kept.id).unwrap().unwrap().status,
        OrderStatus::Matched
    );
    drop(txn);
    let old_head = block_on(w.head());

    // Back to the snapshot, and a different future: one other order, and enough
    // empty blocks to pass the old head.
    let reverted: bool =
        block_on(w.provider.raw_request("evm_revert".into(), (snapshot,))).unwrap();
    assert!(reverted);
    // alloy's receipt watcher follows new block numbers; after the chain went back a
    // fresh provider is needed to see receipts of the lower blocks.
    w.provider = sonm_contracts::deploy::provider(url(&anvil));
    let other = w.order(OrderType::Ask, s1, 99, 0, bench);
    let other = block_on(w.place(other));
    assert_eq!(other.id, dropped_ask.id, "the new branch reuses the id");
    while block_on(w.head()) <= old_head + 1 {
        let _: Value = block_on(w.provider.raw_request("evm_mine".into(), ())).unwrap();
    }
    let steps = catch_up(&mut f);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Reorg { .. })),
        "{steps:?}"
    );

    let txn = storage.read_txn().unwrap();
    assert!(
        storage.deal(&txn, deal).unwrap().is_none(),
        "the dropped deal is gone"
    );
    assert!(
        storage.order(&txn, dropped_bid.id).unwrap().is_none(),
        "the dropped bid is gone"
    );
    let row = storage.order(&txn, other.id).unwrap().unwrap();
    assert_eq!(row.order, other, "the id now holds the new branch's order");
    assert_eq!(
        storage.order(&txn, kept.id).unwrap().unwrap().status,
        OrderStatus::Active
    );
    // Secondary indexes follow: no deal for the consumer, the asks by price.
    let deals = query::deals(&storage, &txn, c1, Role::Any, None, 10, None).unwrap();
    assert!(deals.items.is_empty());
    let page = query::orders(&storage, &txn, &OrderQuery::new(OrderType::Ask)).unwrap();
    let ids: Vec<u64> = page.items.iter().map(|r| r.order.id).collect();
    assert_eq!(ids, vec![kept.id, other.id]);
    let bids = query::orders(&storage, &txn, &OrderQuery::new(OrderType::Bid)).unwrap();
    assert!(bids.items.is_empty());
    // And the order book: the kept ask is back, the dropped bid gone.
    assert!(
        book.read(|b| b.contains(kept.id) && b.contains(other.id) && !b.contains(dropped_bid.id))
    );
    assert_eq!(metrics.reorgs.load(Ordering::Relaxed), 1);
}

/// A TCP proxy to an endpoint, which can be made to die: it stops accepting and
/// cuts every connection.
struct Proxy {
    addr: SocketAddr,
    dead: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn new(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let dead = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (d, c) = (dead.clone(), conns.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let mut list = c.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener drops here: connections are refused from now on.
        });
        Proxy { addr, dead, conns }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Relaxed);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        wait_until("the proxy to stop listening", || {
            TcpStream::connect(self.addr).is_err()
        });
    }
}

#[test]
fn indexing_goes_on_when_one_of_two_endpoints_dies() {
    let anvil = anvil();
    let mut w = block_on(World::new(&anvil));
    let proxy = Proxy::new(SocketAddr::from((Ipv4Addr::LOCALHOST, anvil.port())));
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 64 << 20).unwrap();
    let storage = Storage::open(&env).unwrap();
    let book = SharedBook::default();
    let metrics = Metrics::default();
    let config = follower_config(vec![proxy.endpoint(), anvil.endpoint()]);
    let mut f = Follower::new(&storage, &book, &metrics, &w.addresses, config).unwrap();
    assert_eq!(f.endpoint().as_str(), format!("{}/", proxy.endpoint()));
    let stop = AtomicBool::new(false);
    let s1 = w.suppliers[0];
    std::thread::scope(|scope| {
        scope.spawn(|| f.run(&stop));
        let first = w.order(OrderType::Ask, s1, 10, 0, [1; 13]);
        let first = block_on(w.place(first));
        let indexed = |id| {
            let txn = storage.read_txn().unwrap();
            storage.order(&txn, id).unwrap().is_some()
        };
        wait_until("the first order", || indexed(first.id));
        proxy.kill();
        let second = w.order(OrderType::Ask, s1, 12, 0, [1; 13]);
        let second = block_on(w.place(second));
        wait_until("the second order, through the other endpoint", || {
            indexed(second.id)
        });
        stop.store(true, Ordering::Relaxed);
    });
    assert!(metrics.rpc_errors.load(Ordering::Relaxed) >= 1);
}

#[test]
fn an_endpoint_of_another_chain_is_refused() {
    let anvil = anvil();
    let w = block_on(World::new(&anvil));
    let mut addresses = w.addresses.clone();
    addresses.chain_id = 1;
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 16 << 20).unwrap();
    let storage = Storage::open(&env).unwrap();
    let (book, metrics) = (SharedBook::default(), Metrics::default());
    let mut f = Follower::new(
        &storage,
        &book,
        &metrics,
        &addresses,
        follower_config(vec![anvil.endpoint()]),
    )
    .unwrap();
    let err = block_on(f.step()).unwrap_err();
    assert!(err.is_endpoint_error(), "{err}");
    assert!(err.to_string().contains("chain 31337"), "{err}");
    assert_eq!(storage.checkpoint().unwrap(), None);
}
