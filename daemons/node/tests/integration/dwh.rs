//! Market search through the DWH, with real processes: a real anvil with the deployed
//! contracts, a real worker (the `sonm-worker` library in this process) selling two one-core
//! slices, a real `sonm-dwh` process indexing the chain (0 confirmations), and a real
//! `sonm-node` process configured with `dwh_url`. The node finds the worker's asks through the
//! DWH's filtered order query (and judges them with the match rule), buys one, and the taken ask
//! leaves the search once the DWH has indexed the deal; with the DWH gone the search fails
//! with `502 dwh` (it does not fall back to the chain behind the customer's back).
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and the `sonm-dwh` binary:
//! `cargo build --bins` first (scripts/test.sh does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use serde_json::Value;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_market::{IdentityLevel, NetFlags, Order, OrderType};

use crate::common;
use common::{
    Process, RunningWorker, deploy_chain, free_tcp_port, node_bin, one_core_plan, other_bin,
    worker_config,
};

/// `sonm-dwh`.
fn dwh_bin() -> PathBuf {
    other_bin("sonm-dwh")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// GET `url` with `query`: (status, JSON body), or `None` if nothing answered.
fn get(url: &str, query: &[(&str, &str)]) -> Option<(u16, Value)> {
    let mut req = agent().get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut r = req.call().ok()?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `f` every 100 ms, at most `tries` times, until it gives `Some`.
fn wait_for<T>(tries: usize, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..tries {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn ids_of(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect()
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn ids(orders: &Value) -> Vec<u64> {
    orders["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no orders in {orders}"))
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_node_searches_the_market_through_a_real_dwh() {
    let dwh_bin = dwh_bin();
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (node_log, dwh_log) = (d.join("node.log"), d.join("dwh.log"));

    // --- The chain: contracts deployed, the customer (a dev account, so it has gas) funded.
    let customer: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
    let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
    let me = customer.address();
    let (_, addresses_path) = deploy_chain(&anvil, d, &[me], Vec::new());

    // --- The DWH, as a process, following the chain from the deploy block.
    let dwh_port = free_tcp_port();
    let dwh = format!("http://127.0.0.1:{dwh_port}");
    std::fs::write(
        d.join("dwh.toml"),
        format!(
            r#"endpoints = ["{rpc}"]
addresses = "{addresses}"
listen = "127.0.0.1:{dwh_port}"
data_dir = "{data}"
confirmations = 0
poll_interval_ms = 100
map_size_mib = 64
"#,
            rpc = anvil.endpoint(),
            addresses = addresses_path.display(),
            data = d.join("dwh-data").display(),
        ),
    )
    .unwrap();
    let mut dwh_process = Process(
        Command::new(&dwh_bin)
            .arg("--config")
            .arg(d.join("dwh.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&dwh_log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let status = wait_for(300, || {
        get(&format!("{dwh}/v1/status"), &[]).filter(|(s, v)| *s == 200 && !v.is_null())
    });
    assert!(
        status.is_some(),
        "the DWH did not index a block; log:\n{}",
        log(&dwh_log)
    );

    // --- The worker (in process), selling two one-core slices.
    let worker_config = worker_config(
        d,
        &anvil,
        &addresses_path,
        vec![one_core_plan("one-core-a"), one_core_plan("one-core-b")],
    );
    let worker_listen: SocketAddr = worker_config.listen;
    let _worker = RunningWorker::start(worker_config);

    // --- The node, as a process, searching through the DWH.
    std::fs::write(d.join("node.password"), "test password\n").unwrap();
    std::fs::write(d.join("customer.key"), DEV_KEYS[2]).unwrap();
    let out = Command::new(node_bin())
        .args(["keygen", "--keystore"])
        .arg(d.join("node-key.json"))
        .arg("--password-file")
        .arg(d.join("node.password"))
        .arg("--import-hex-file")
        .arg(d.join("customer.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api_port = free_tcp_port();
    let node = format!("http://127.0.0.1:{api_port}");
    std::fs::write(
        d.join("node.toml"),
        format!(
            r#"keystore = "{keystore}"
password_file = "{password}"
rpc_url = "{rpc}"
addresses = "{addresses}"
listen = "127.0.0.1:{api_port}"
quic_bind = "127.0.0.1:0"
dwh_url = "{dwh}"

[workers]
"{supplier}" = "{worker_listen}"
"#,
            keystore = d.join("node-key.json").display(),
            password = d.join("node.password").display(),
            rpc = anvil.endpoint(),
            addresses = addresses_path.display(),
            supplier = supplier.address(),
        ),
    )
    .unwrap();
    let _node_process = Process(
        Command::new(node_bin())
            .arg("--config")
            .arg(d.join("node.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&node_log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let up = wait_for(400, || {
        get(&format!("{node}/v1/balance"), &[]).filter(|(s, _)| *s == 200)
    });
    assert!(
        up.is_some(),
        "the node did not come up; log:\n{}",
        log(&node_log)
    );
    assert!(
        log(&node_log).contains("market search through the DWH"),
        "{}",
        log(&node_log)
    );

    // --- The worker's two asks, found through the DWH.
    let orders = format!("{node}/v1/orders");
    let spec = [
        ("type", "ask"),
        ("benchmarks", "cpu-cores=1,ram-size=64MiB"),
        ("max_price", "2000000000"),
    ];
    let found = wait_for(600, || {
        let (s, v) = get(&orders, &spec)?;
        assert_eq!(s, 200, "{v}\nnode log:\n{}", log(&node_log));
        (ids(&v).len() == 2).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "the worker's two asks did not appear through the DWH\nnode log:\n{}\nDWH log:\n{}",
            log(&node_log),
            log(&dwh_log)
        )
    });
    for a in found["orders"].as_array().unwrap() {
        assert_eq!(
            a["supplier"].as_str().unwrap().parse::<Address>().unwrap(),
            supplier.address()
        );
        assert_eq!(a["price"], "1000000000");
    }
    let asks = ids(&found);
    // The DWH holds the same two active asks.
    let (s, book) = get(&format!("{dwh}/v1/orders"), &[("type", "ask")]).unwrap();
    assert_eq!(s, 200);
    let in_dwh: Vec<u64> = book["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["order"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(in_dwh, asks);
    // The filters the DWH applies: too cheap, too big, too long, too demanding a network.
    for query in [
        vec![("type", "ask"), ("max_price", "999")],
        vec![("type", "ask"), ("benchmarks", "cpu-cores=64")],
        vec![("type", "ask"), ("duration", "3600")],
        vec![("type", "ask"), ("netflags", "inbound")],
    ] {
        let (s, v) = get(&orders, &query).unwrap();
        assert_eq!(s, 200, "{query:?}: {v}");
        assert!(ids(&v).is_empty(), "{query:?} should find nothing: {v}");
    }
    // A limit of one: the cheapest (ties by id).
    let mut one = spec.to_vec();
    one.push(("limit", "1"));
    assert_eq!(ids(&get(&orders, &one).unwrap().1), [asks[0]]);

    // --- Buy the first; the DWH sees the deal and the ask leaves the search.
    let (s, deal) = post(
        &format!("{node}/v1/deals/quick-buy"),
        &serde_json::json!({ "ask_id": asks[0], "duration": 0 }),
    );
    assert_eq!(s, 200, "{deal}\nnode log:\n{}", log(&node_log));
    let deal_id = deal["id"].as_u64().unwrap();
    let left = wait_for(300, || {
        let (_, v) = get(&orders, &spec)?;
        let left = ids(&v);
        (!left.contains(&asks[0])).then_some(left)
    })
    .unwrap_or_else(|| {
        panic!(
            "the taken ask stayed in the search\nDWH log:\n{}",
            log(&dwh_log)
        )
    });
    assert_eq!(left, [asks[1]]);
    let (s, row) = get(&format!("{dwh}/v1/orders/{}", asks[0]), &[]).unwrap();
    assert_eq!((s, row["status"].as_str()), (200, Some("matched")), "{row}");
    assert_eq!(row["deal"], deal_id);
    let (s, indexed) = get(&format!("{dwh}/v1/deals/{deal_id}"), &[]).unwrap();
    assert_eq!(s, 200, "{indexed}");
    assert_eq!(
        indexed["deal"]["consumer"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        me
    );
    assert_eq!(indexed["deal"]["ask"], asks[0]);
    // Buying the taken ask again: the DWH says it is no longer active.
    let (s, v) = post(
        &format!("{node}/v1/deals/quick-buy"),
        &serde_json::json!({ "ask_id": asks[0], "duration": 0 }),
    );
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");

    // --- The node's own records through the DWH: quick-buy's implicit bid (matched with the
    // deal), the deal as consumer, no change requests, the profile, the blacklist.
    let bid_row = wait_for(300, || {
        let (_, v) = get(&format!("{node}/v1/orders/own"), &[("type", "bid")])?;
        let orders = v["orders"].as_array()?.clone();
        (orders.len() == 1).then(|| orders[0].clone())
    })
    .unwrap_or_else(|| panic!("our bid through the DWH\nnode log:\n{}", log(&node_log)));
    assert_eq!(
        (bid_row["status"].as_str(), &bid_row["deal"]),
        (Some("matched"), &deal_id.into())
    );
    let bid_id = bid_row["id"].as_u64().unwrap();
    assert_eq!(deal["bid"], bid_id);
    let (s, shown) = get(&format!("{node}/v1/orders/{bid_id}"), &[]).unwrap();
    assert_eq!(
        (s, shown["status"].as_str()),
        (200, Some("matched")),
        "{shown}"
    );
    let (s, v) = get(&format!("{node}/v1/deals"), &[("role", "consumer")]).unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids_of(&v["deals"]), [deal_id]);
    let (_, v) = get(&format!("{node}/v1/deals"), &[("role", "supplier")]).unwrap();
    assert!(ids_of(&v["deals"]).is_empty(), "{v}");
    let (s, v) = get(&format!("{node}/v1/deals/{deal_id}/change-requests"), &[]).unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(v["change_requests"].as_array().unwrap().is_empty());
    let (s, v) = get(&format!("{node}/v1/profiles/me"), &[]).unwrap();
    assert_eq!(
        (s, v["identity_level"].as_str()),
        (200, Some("anonymous")),
        "{v}"
    );
    let who = supplier.address().to_string();
    let (s, v) = post(
        &format!("{node}/v1/blacklist"),
        &serde_json::json!({ "address": who }),
    );
    assert_eq!(s, 200, "{v}");
    wait_for(300, || {
        let (_, v) = get(&format!("{node}/v1/blacklist"), &[])?;
        (v["listed"][0].as_str()?.eq_ignore_ascii_case(&who)).then_some(())
    })
    .unwrap_or_else(|| panic!("the blacklist through the DWH\nDWH log:\n{}", log(&dwh_log)));

    // --- A signed ask (never placed: signed by its author, published to the DWH's book) is in
    // the same search, cheapest first, and is bought by its digest; the deal is the author's.
    let author: PrivateKeySigner = DEV_KEYS[3].parse().unwrap();
    let addresses = sonm_contracts::Addresses::read(&addresses_path).unwrap();
    let domain = sonm_contracts::market_domain(addresses.chain_id, addresses.contracts.market);
    let signed_ask = Order {
        id: 0,
        order_type: OrderType::Ask,
        author: author.address(),
        counterparty: None,
        duration: 0,
        price: 900_000_000,
        netflags: NetFlags::OUTBOUND,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: "cpu-cores=1,ram-size=128MiB".parse().unwrap(),
    };
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let nonce = U256::from(7);
    let signature = sonm_contracts::sign_order(&author, &signed_ask, expiry, nonce, &domain)
        .unwrap()
        .signature;
    let digest = sonm_dwh_client::Dwh::new(&dwh)
        .post_signed_order(&signed_ask, expiry, nonce, &signature)
        .unwrap()
        .digest;
    let (s, listed) = get(&orders, &spec).unwrap();
    assert_eq!(s, 200, "{listed}");
    let first = &listed["orders"][0];
    assert_eq!(
        (
            first["digest"].as_str(),
            first["id"].as_u64(),
            first["price"].as_str()
        ),
        (
            Some(digest.to_string().as_str()),
            Some(0),
            Some("900000000")
        ),
        "the signed ask is not the cheapest of the search: {listed}"
    );
    assert_eq!(first["expiry"], expiry);
    // The same filters leave it out (the DWH applies them to its signed book too).
    for query in [
        vec![("type", "ask"), ("max_price", "899999999")],
        vec![("type", "ask"), ("benchmarks", "cpu-cores=2")],
        vec![("type", "ask"), ("duration", "3600")],
        vec![("type", "ask"), ("netflags", "inbound")],
    ] {
        let (s, v) = get(&orders, &query).unwrap();
        assert_eq!(s, 200, "{query:?}: {v}");
        assert!(
            !v.to_string().contains(&digest.to_string()),
            "{query:?} should not find the signed ask: {v}"
        );
    }
    let buy = |body: Value| post(&format!("{node}/v1/deals/quick-buy"), &body);
    let (s, deal) = buy(serde_json::json!({ "signed_ask": digest, "duration": 0 }));
    assert_eq!(s, 200, "{deal}\nnode log:\n{}", log(&node_log));
    assert_eq!(
        deal["supplier"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        author.address()
    );
    assert_eq!(
        (deal["price"].as_str(), &deal["ask"]),
        (Some("900000000"), &Value::Null)
    );
    // Its nonce is spent: refused by the chain (409) until the DWH drops it, then unknown (404).
    let (s, v) = buy(serde_json::json!({ "signed_ask": digest, "duration": 0 }));
    assert!(s == 409 || s == 404, "bought twice? {s} {v}");
    // Unknown digests, and both or neither kind of ask named: refused before any transaction.
    let (s, v) = buy(serde_json::json!({ "signed_ask": B256::repeat_byte(9), "duration": 0 }));
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (s, _) = buy(serde_json::json!({ "signed_ask": digest, "ask_id": 1, "duration": 0 }));
    assert_eq!(s, 400);
    let (s, _) = buy(serde_json::json!({ "duration": 0 }));
    assert_eq!(s, 400);

    // Every query the node sent was one the DWH understood.
    let metrics = agent()
        .get(format!("{dwh}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("sonm_dwh_bad_queries_total 0\n"),
        "{metrics}\nDWH log:\n{}",
        log(&dwh_log)
    );

    // --- Without the DWH the search fails plainly (502 dwh), it does not go quiet.
    let _ = dwh_process.0.kill();
    let _ = dwh_process.0.wait();
    let (s, v) = get(&orders, &spec).unwrap();
    assert_eq!((s, v["code"].as_str()), (502, Some("dwh")), "{v}");
}
