//! The customer's (and a worker-less supplier's) own business through the `sonm` CLI, against a
//! real `sonm-node` process on a real anvil with the deployed contracts, each effect checked on
//! chain: SNM transfer and Market allowance; a BID from a spec file and an ASK from flags,
//! listed, shown, one cancelled; a deal opened from our bid and a stranger's ask; change
//! requests created, cancelled and approved; the blacklist; the profile with a certificate.
//! Then bad input to every new route (a 4xx with `{code, message}`), and every route of the
//! OpenAPI document answered by the router.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and the `sonm` binary (`cargo build
//! --bins`).

use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use serde_json::Value;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::{provider, signing_provider};
use sonm_contracts::{
    Addresses, Blacklist, DealSnapshot, Market, ProfileRegistry, SNM, chain_order,
};
use sonm_market::{IdentityLevel, NetFlags, Order, OrderType};

use crate::common;
use common::{
    block_on, deploy_chain, free_tcp_port, give_gas, http, keygen, sonm, sonm_fails, sonm_json,
    start_node,
};

type Url = alloy::transports::http::reqwest::Url;

fn addr(v: &Value) -> Address {
    v.as_str().unwrap().parse().unwrap()
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect()
}

/// What the chain says, read with a plain provider.
struct OnChain {
    url: Url,
    addresses: Addresses,
}

impl OnChain {
    fn snm(&self, who: Address) -> U256 {
        block_on(async {
            let p = provider(self.url.clone());
            SNM::new(self.addresses.contracts.snm, &p)
                .balanceOf(who)
                .call()
                .await
                .unwrap()
        })
    }

    fn allowance(&self, who: Address) -> U256 {
        block_on(async {
            let p = provider(self.url.clone());
            SNM::new(self.addresses.contracts.snm, &p)
                .allowance(who, self.addresses.contracts.market)
                .call()
                .await
                .unwrap()
        })
    }

    /// Whether order `id` is active (its hash is stored).
    fn order_active(&self, id: u64) -> bool {
        block_on(async {
            let p = provider(self.url.clone());
            Market::new(self.addresses.contracts.market, &p)
                .orderHashes(U256::from(id))
                .call()
                .await
                .unwrap()
                != B256::ZERO
        })
    }

    /// `(status, price)` of deal `id` (status 1 active, 2 closed).
    fn deal(&self, id: u64) -> (u8, u128) {
        block_on(async {
            let p = provider(self.url.clone());
            let d = DealSnapshot::read(&p, self.addresses.contracts.market, id, 0)
                .await
                .unwrap()
                .unwrap();
            (if d.active() { 1 } else { 2 }, d.price.to::<u128>())
        })
    }

    /// A change request's status (1 pending, 2 approved, 3 cancelled).
    fn change_status(&self, id: u64) -> u8 {
        block_on(async {
            let p = provider(self.url.clone());
            Market::new(self.addresses.contracts.market, &p)
                .changeRequests(U256::from(id))
                .call()
                .await
                .unwrap()
                .status
        })
    }

    fn listed(&self, owner: Address, who: Address) -> bool {
        block_on(async {
            let p = provider(self.url.clone());
            Blacklist::new(self.addresses.contracts.blacklist, &p)
                .isListed(owner, who)
                .call()
                .await
                .unwrap()
        })
    }
}

#[test]
fn orders_deals_tokens_blacklist_and_profile_through_the_cli() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let node_log = d.join("node.log");
    let url: Url = anvil.endpoint().parse().unwrap();

    let me = keygen(d);
    let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
    let validator: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
    let friend = Address::repeat_byte(0x42);
    let (addresses, addresses_path) = deploy_chain(
        &anvil,
        d,
        &[me, supplier.address()],
        vec![(validator.address(), 2)],
    );
    give_gas(&anvil, me);
    let chain = OnChain {
        url: url.clone(),
        addresses: addresses.clone(),
    };

    let api_port = free_tcp_port();
    let node = format!("http://127.0.0.1:{api_port}");
    let config = d.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "keystore = \"{}\"\npassword_file = \"{}\"\nrpc_url = \"{}\"\naddresses = \"{}\"\nlisten = \"127.0.0.1:{api_port}\"\nquic_bind = \"127.0.0.1:0\"\n",
            d.join("node-key.json").display(),
            d.join("node.password").display(),
            anvil.endpoint(),
            addresses_path.display(),
        ),
    )
    .unwrap();
    let _node_process = start_node(&config, api_port, &node_log);
    let cli = |args: &[&str]| sonm_json(&node, args, &node_log);

    // --- Token: a transfer and the Market's allowance, as the chain sees them.
    let before = chain.snm(me);
    let after = cli(&["token", "transfer", &friend.to_string(), "5000"]);
    assert_eq!(chain.snm(friend), U256::from(5000));
    assert_eq!(chain.snm(me), before - U256::from(5000));
    assert_eq!(after["snm"], (before - U256::from(5000)).to_string());
    let approved = cli(&["token", "approve", "12345"]);
    assert_eq!(approved["market_allowance"], "12345");
    assert_eq!(chain.allowance(me), U256::from(12345));
    let err = sonm_fails(
        &node,
        &[
            "token",
            "transfer",
            &friend.to_string(),
            &U256::MAX.to_string(),
        ],
    );
    // The token's own refusal, decoded and named: nothing was sent.
    assert!(
        err.contains("HTTP 409")
            && err.contains("SNM contract")
            && err.contains("InsufficientBalance"),
        "{err}"
    );
    assert_eq!(chain.snm(friend), U256::from(5000));

    // --- Orders: a BID from a spec file (its first hour frozen, the allowance raised for it)
    // and an ASK from flags.
    let spec = d.join("bid.toml");
    std::fs::write(
        &spec,
        "benchmarks = \"cpu-cores=1 ram-size=64MiB\"\nprice = 1000\nduration = 0\nnetflags = \"outbound\"\n",
    )
    .unwrap();
    let before = chain.snm(me);
    let bid = cli(&["order", "create", "bid", "--spec", spec.to_str().unwrap()]);
    let bid_id = bid["id"].as_u64().unwrap();
    assert_eq!(bid["type"], "bid");
    assert_eq!(bid["status"], "active");
    assert_eq!(addr(&bid["author"]), me);
    assert_eq!(bid["benchmarks"], "cpu-cores=1 ram-size=64MiB");
    assert!(chain.order_active(bid_id));
    assert_eq!(chain.snm(me), before - U256::from(1000 * 3600));
    let ask = cli(&[
        "order",
        "create",
        "ask",
        "--benchmarks",
        "cpu-cores=4",
        "--price",
        "500",
        "--netflags",
        "outbound,inbound",
        "--identity-level",
        "registered",
    ]);
    let ask_id = ask["id"].as_u64().unwrap();
    assert_eq!(ask["identity_level"], "registered");
    assert_eq!(ask["netflags"], "outbound,inbound");
    assert!(chain.order_active(ask_id));
    let listed = cli(&["order", "list"]);
    assert_eq!(ids(&listed["orders"]), [bid_id, ask_id]);
    let table = sonm(&node, &["order", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("ID"));
    // Cancel the ask: gone from the chain, listed as cancelled.
    let cancelled = cli(&["order", "cancel", &ask_id.to_string()]);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(!chain.order_active(ask_id));
    let listed = cli(&["order", "list", "--status", "cancelled"]);
    assert_eq!(ids(&listed["orders"]), [ask_id]);
    let listed = cli(&["order", "list", "--type", "bid", "--status", "active"]);
    assert_eq!(ids(&listed["orders"]), [bid_id]);
    assert_eq!(
        cli(&["order", "show", &ask_id.to_string()])["status"],
        "cancelled"
    );
    let err = sonm_fails(&node, &["order", "cancel", &ask_id.to_string()]);
    assert!(err.contains("conflict"), "{err}");

    // --- A deal from our bid and a supplier's ask (placed on chain by the supplier).
    let supplier_ask = block_on(async {
        let p = signing_provider(url.clone(), supplier.clone());
        let ask = Order {
            id: 0,
            order_type: OrderType::Ask,
            author: supplier.address(),
            counterparty: None,
            duration: 0,
            price: 800,
            netflags: NetFlags::OUTBOUND,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: Default::default(),
            benchmarks: "cpu-cores=2 ram-size=1GiB".parse().unwrap(),
        };
        let r = Market::new(addresses.contracts.market, &p)
            .placeOrder(chain_order(&ask))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(r.status());
        r.decoded_log::<Market::OrderPlaced>()
            .unwrap()
            .orderId
            .to::<u64>()
    });
    // Someone else's order: shown, not cancellable by us.
    let theirs = cli(&["order", "show", &supplier_ask.to_string()]);
    assert_eq!(addr(&theirs["author"]), supplier.address());
    let err = sonm_fails(&node, &["order", "cancel", &supplier_ask.to_string()]);
    assert!(err.contains("forbidden"), "{err}");
    let before = chain.snm(me);
    let deal = cli(&[
        "deal",
        "open",
        "--ask",
        &supplier_ask.to_string(),
        "--bid",
        &bid_id.to_string(),
    ]);
    let deal_id = deal["id"].as_u64().unwrap();
    let deal_arg = deal_id.to_string();
    assert_eq!(deal["status"], "active");
    assert_eq!(addr(&deal["consumer"]), me);
    assert_eq!(addr(&deal["supplier"]), supplier.address());
    assert_eq!(chain.deal(deal_id), (1, 800));
    // The bid's excess over the ask's price came back.
    assert_eq!(chain.snm(me), before + U256::from(200 * 3600));
    let shown = cli(&["order", "show", &bid_id.to_string()]);
    assert_eq!(
        (shown["status"].clone(), shown["deal"].clone()),
        ("matched".into(), deal_id.into())
    );
    assert_eq!(ids(&cli(&["deal", "list"])["deals"]), [deal_id]);
    assert_eq!(
        ids(&cli(&["deal", "list", "--role", "consumer", "--status", "active"])["deals"]),
        [deal_id]
    );
    assert!(ids(&cli(&["deal", "list", "--role", "supplier"])["deals"]).is_empty());
    let table = sonm(&node, &["deal", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("ID"));

    // --- Change requests: ours (a lower price waits for the supplier) withdrawn; the
    // supplier's (a higher price) approved by us.
    let ours = cli(&["deal", "change", "create", &deal_arg, "--price", "700"]);
    let ours_id = ours["id"].as_u64().unwrap();
    assert_eq!(ours["status"], "pending");
    assert_eq!(chain.change_status(ours_id), 1);
    let err = sonm_fails(&node, &["deal", "change", "approve", &ours_id.to_string()]);
    assert!(err.contains("forbidden"), "{err}");
    let withdrawn = cli(&["deal", "change", "cancel", &ours_id.to_string()]);
    assert_eq!(withdrawn["status"], "cancelled");
    assert_eq!(chain.change_status(ours_id), 3);
    let theirs_id = block_on(async {
        let p = signing_provider(url.clone(), supplier.clone());
        let state = DealSnapshot::read(&p, addresses.contracts.market, deal_id, 0)
            .await
            .unwrap()
            .unwrap()
            .state();
        let r = Market::new(addresses.contracts.market, &p)
            .createChangeRequest(U256::from(deal_id), state, U256::from(900), 0)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(r.status());
        r.decoded_log::<Market::ChangeRequestCreated>()
            .unwrap()
            .requestId
            .to::<u64>()
    });
    let requests = cli(&["deal", "change", "list", &deal_arg]);
    assert_eq!(ids(&requests["change_requests"]), [ours_id, theirs_id]);
    assert_eq!(
        addr(&requests["change_requests"][1]["requester"]),
        supplier.address()
    );
    let approved = cli(&["deal", "change", "approve", &theirs_id.to_string()]);
    assert_eq!(approved["status"], "approved");
    assert_eq!(chain.change_status(theirs_id), 2);
    assert_eq!(chain.deal(deal_id), (1, 900));
    let err = sonm_fails(&node, &["deal", "change", "cancel", &theirs_id.to_string()]);
    assert!(err.contains("conflict"), "{err}");

    // --- The blacklist.
    let who = supplier.address();
    let v = cli(&["blacklist", "add", &who.to_string()]);
    assert_eq!(v["listed"].as_array().unwrap().len(), 1);
    assert!(chain.listed(me, who));
    let v = cli(&["blacklist", "list"]);
    assert_eq!(addr(&v["owner"]), me);
    assert_eq!(addr(&v["listed"][0]), who);
    let v = cli(&[
        "blacklist",
        "list",
        "--owner",
        &supplier.address().to_string(),
    ]);
    assert!(v["listed"].as_array().unwrap().is_empty());
    let v = cli(&["blacklist", "remove", &who.to_string()]);
    assert!(v["listed"].as_array().unwrap().is_empty());
    assert!(!chain.listed(me, who));

    // --- The profile: a validator certifies us at level 2 (identified).
    let profile = cli(&["profile", "show"]);
    assert_eq!(profile["identity_level"], "anonymous");
    assert!(profile["certificates"].as_array().unwrap().is_empty());
    block_on(async {
        let p = signing_provider(url.clone(), validator.clone());
        let r = ProfileRegistry::new(addresses.contracts.profile_registry, &p)
            .issueCertificate(me, U256::from(1002), Bytes::from_static(b"passport"))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(r.status());
    });
    let profile = cli(&["profile", "show", &me.to_string()]);
    assert_eq!(profile["identity_level"], "identified");
    let cert = &profile["certificates"][0];
    assert_eq!(addr(&cert["validator"]), validator.address());
    assert_eq!(cert["attribute_type"], "1002");
    assert_eq!(cert["value"], "0x70617373706f7274");
    assert_eq!(cert["revoked"], false);
    let human = sonm(&node, &["profile", "show"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("identified"));

    // --- Bad input to every new route: a 4xx with {code, message}, never a 500.
    let deal_path = format!("/v1/deals/{deal_id}/change-requests");
    let bad: Vec<(&str, String, Option<String>, u16)> = vec![
        (
            "POST",
            "/v1/token/transfer".into(),
            Some(r#"{"to": "nobody", "amount": "1"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/token/transfer".into(),
            Some(r#"{"to": "0x0000000000000000000000000000000000000042", "amount": "-1"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/token/transfer".into(),
            Some(r#"{"to": "0x0000000000000000000000000000000000000000", "amount": "1"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/token/approve".into(),
            Some(r#"{"amount": "lots"}"#.into()),
            400,
        ),
        ("POST", "/v1/token/approve".into(), Some("[]".into()), 400),
        ("GET", "/v1/token/approve".into(), None, 405),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "bid"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "offer", "price": "1"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "bid", "price": "0"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "ask", "price": "1", "benchmarks": "cpu-cores=lots"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "ask", "price": "1", "netflags": "carrier-pigeon"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "ask", "price": "1", "identity_level": "royal"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "ask", "price": "99999999999999999999999999999999"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/orders".into(),
            Some(r#"{"type": "ask", "price": "1", "colour": "red"}"#.into()),
            400,
        ),
        ("GET", "/v1/orders/own?status=lost".into(), None, 400),
        ("GET", "/v1/orders/own?type=offer".into(), None, 400),
        ("GET", "/v1/orders/own?colour=red".into(), None, 400),
        ("GET", "/v1/orders/999999".into(), None, 404),
        ("GET", "/v1/orders/x".into(), None, 400),
        ("POST", "/v1/orders/999999/cancel".into(), None, 404),
        ("POST", format!("/v1/orders/{bid_id}/cancel"), None, 409),
        (
            "POST",
            format!("/v1/orders/{supplier_ask}/cancel"),
            Some(r#"{"force": true}"#.into()),
            400,
        ),
        ("GET", "/v1/deals?role=boss".into(), None, 400),
        ("GET", "/v1/deals?status=lost".into(), None, 400),
        ("PUT", "/v1/deals".into(), None, 405),
        (
            "POST",
            "/v1/deals".into(),
            Some(r#"{"ask_id": 1}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/deals".into(),
            Some(r#"{"ask_id": 999999, "bid_id": 999998}"#.into()),
            404,
        ),
        (
            "POST",
            "/v1/deals".into(),
            Some(format!(r#"{{"ask_id": {bid_id}, "bid_id": {bid_id}}}"#)),
            400,
        ),
        (
            "POST",
            "/v1/deals".into(),
            Some(format!(
                r#"{{"ask_id": {supplier_ask}, "bid_id": {bid_id}}}"#
            )),
            409,
        ),
        ("GET", "/v1/deals/999999/change-requests".into(), None, 404),
        (
            "POST",
            deal_path.clone(),
            Some(r#"{"duration": 0}"#.into()),
            400,
        ),
        (
            "POST",
            deal_path.clone(),
            Some(r#"{"price": "abc"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/deals/999999/change-requests".into(),
            Some(r#"{"price": "1"}"#.into()),
            404,
        ),
        (
            "POST",
            "/v1/change-requests/999999/approve".into(),
            None,
            404,
        ),
        ("POST", "/v1/change-requests/x/cancel".into(), None, 400),
        (
            "POST",
            format!("/v1/change-requests/{theirs_id}/approve"),
            None,
            409,
        ),
        ("POST", "/v1/change-requests/1/reject".into(), None, 404),
        ("GET", "/v1/blacklist?owner=nobody".into(), None, 400),
        (
            "POST",
            "/v1/blacklist".into(),
            Some(r#"{"address": "nobody"}"#.into()),
            400,
        ),
        ("POST", "/v1/blacklist".into(), Some(r#"{}"#.into()), 400),
        ("DELETE", "/v1/blacklist/nobody".into(), None, 400),
        (
            "GET",
            "/v1/blacklist/0x0000000000000000000000000000000000000042".into(),
            None,
            405,
        ),
        ("GET", "/v1/profiles/nobody".into(), None, 400),
        ("POST", "/v1/profiles/me".into(), None, 405),
    ];
    for (method, path, body, want) in bad {
        let (status, answer) = http(method, &format!("{node}{path}"), body.as_deref());
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert!(
            answer["code"].is_string() && answer["message"].is_string(),
            "{method} {path}: {answer}"
        );
    }
    let err = sonm_fails(&node, &["order", "show", "999999"]);
    assert!(
        err.contains("no order 999999") && err.contains("not_found"),
        "{err}"
    );
    let err = sonm_fails(&node, &["order", "create", "bid", "--price", "0"]);
    assert!(err.contains("bad_request"), "{err}");
    let err = sonm_fails(
        &node,
        &["order", "create", "bid", "--spec", "/nonexistent.toml"],
    );
    assert!(err.contains("/nonexistent.toml"), "{err}");

    // --- Every route of the OpenAPI document reaches a handler (a bogus id or address is
    // refused by it, never with "no route" or a wrong method).
    let (status, doc) = http("GET", &format!("{node}/openapi.json"), None);
    assert_eq!(status, 200);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "999999")
                .replace("{task}", "1")
                .replace("{address}", "not-an-address");
            let method = method.to_uppercase();
            let body = (method == "POST").then_some("{\"bogus\": 1}");
            let (status, answer) = http(&method, &format!("{node}{concrete}"), body);
            let no_route = answer["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no route"));
            assert!(
                status != 405 && !no_route && status < 500,
                "{method} {path}: {status} {answer}"
            );
        }
    }
    check_log(&node_log);
}

/// The node logged no failed request (a 5xx).
fn check_log(log: &Path) {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!log.contains("request failed"), "{log}");
}

/// Without a password file the node asks for the keystore's password on a terminal (here a
/// pseudo-terminal from util-linux's `script`), and refuses plainly when there is none.
#[test]
fn the_keystore_password_is_asked_on_a_terminal_only() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let me = keygen(d);
    let config = d.join("node.toml");
    // `address` only decrypts the key: the chain is never asked.
    std::fs::write(
        &config,
        format!(
            "keystore = \"{}\"\nrpc_url = \"http://127.0.0.1:1\"\naddresses = \"{}\"\n",
            d.join("node-key.json").display(),
            d.join("addresses.toml").display(),
        ),
    )
    .unwrap();
    let out = Command::new(common::node_bin())
        .arg("--config")
        .arg(&config)
        .arg("address")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a terminal"), "{err}");

    let command = format!(
        "{} --config {} address",
        common::node_bin(),
        config.display()
    );
    let mut script = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux's `script` (a pseudo-terminal)");
    // Typed once the prompt is up, as a person would. (Whether the terminal echoes it depends
    // on when the prompt turns echo off, so the output is not checked for it.)
    let mut stdout = script.stdout.take().unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("Keystore password:") {
        let mut byte = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut stdout, &mut byte).unwrap(),
            1,
            "no prompt: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    let mut stdin = script.stdin.take().unwrap();
    stdin.write_all(b"test password\n").unwrap();
    std::io::Read::read_to_end(&mut stdout, &mut seen).unwrap();
    drop(stdin);
    let out = script.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&seen);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Keystore password:"), "{stdout}");
    let shown: Address = stdout.lines().last().unwrap().trim().parse().unwrap();
    assert_eq!(shown, me);
}
