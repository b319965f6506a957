//! Deposits and withdrawals through the Gates, end to end: two real anvil chains (main 1001,
//! SONM 2002) with the contracts on each, three gate keepers with threshold 2 of which keeper 3
//! is stopped (sonm-keeper's `testnet` harness, the keepers' own tests' network), a real
//! `sonm-node` process configured with both chains, and the `sonm` binary. Each effect is read
//! back from the chains.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and the `sonm` binary (`cargo build
//! --bins`).

use std::path::Path;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use serde_json::Value;
use sonm_contracts::deploy::SNM_WEI;
use sonm_keeper::testnet::{Net, TestChain, block_on, wait_for};
use sonm_node::gates::transfer_id;

use crate::common;
use common::{Process, free_tcp_port, http, keygen, sonm, sonm_fails, sonm_json, start_node};

fn snm(n: u128) -> U256 {
    U256::from(n * SNM_WEI)
}

/// Transactions sent by `who` on `chain` (to tell that a refused request sent nothing).
fn sent(chain: &TestChain, who: Address) -> u64 {
    let p = chain.reader();
    block_on(async { p.get_transaction_count(who).await }).unwrap()
}

/// Writes a node config for the SONM chain (and the main chain, if given); starts the node.
fn node(
    d: &Path,
    name: &str,
    sonm_chain: &TestChain,
    main: Option<&TestChain>,
) -> (Process, String, std::path::PathBuf) {
    let port = free_tcp_port();
    let mut text = format!(
        "keystore = {:?}\npassword_file = {:?}\nrpc_url = \"{}\"\naddresses = {:?}\nlisten = \"127.0.0.1:{port}\"\nquic_bind = \"127.0.0.1:0\"\n",
        d.join("node-key.json"),
        d.join("node.password"),
        sonm_chain.anvil.endpoint(),
        sonm_chain.addresses_file,
    );
    if let Some(main) = main {
        // A list of endpoints, as rpc_url takes it.
        text.push_str(&format!(
            "\n[main_chain]\nrpc_url = [\"{}\"]\naddresses = {:?}\n",
            main.anvil.endpoint(),
            main.addresses_file
        ));
    }
    let config = d.join(format!("{name}.toml"));
    std::fs::write(&config, text).unwrap();
    let log = d.join(format!("{name}.log"));
    let process = start_node(&config, port, &log);
    (process, format!("http://127.0.0.1:{port}"), log)
}

fn u256(v: &Value) -> U256 {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a string"))
        .parse()
        .unwrap()
}

#[test]
fn deposit_and_withdraw_through_the_gates_with_a_keeper_stopped() {
    let net = Net::new();
    // Keeper 3 is stopped throughout: keepers 1 and 2 make the threshold.
    let _k1 = net.start(1, &[]);
    let _k2 = net.start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let me = keygen(d);
    let gas = U256::from(1000u128 * SNM_WEI);
    net.main.fund(me, snm(100), gas);
    net.sonm.fund(me, snm(10), gas);

    let (_node, url, log) = node(d, "node", &net.sonm, Some(&net.main));
    let cli = |args: &[&str]| sonm_json(&url, args, &log);

    // --- Both chains' balances.
    let b = cli(&["balance"]);
    assert_eq!(u256(&b["snm"]), snm(10));
    assert_eq!(b["main_chain"]["chain_id"], net.main.id());
    assert_eq!(u256(&b["main_chain"]["snm"]), snm(100));
    assert_eq!(u256(&b["main_chain"]["eth"]), gas);
    let human = sonm(&url, &["balance"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("main chain 1001"), "{human}");

    // --- Deposit 5 SNM: locked on the main chain, paid on the SONM chain by the keepers.
    let lock = cli(&["token", "deposit", "5"]);
    assert_eq!(lock["direction"], "deposit");
    assert_eq!(lock["src_chain"], net.main.id());
    assert_eq!(lock["dst_chain"], net.sonm.id());
    assert_eq!(u256(&lock["amount"]), snm(5));
    assert_eq!(lock["to"].as_str().unwrap().parse::<Address>().unwrap(), me);
    let nonce = lock["nonce"].as_u64().unwrap();
    let id = transfer_id(net.main.id(), net.main.addresses.contracts.gate, nonce);
    assert_eq!(
        lock["transfer_id"]
            .as_str()
            .unwrap()
            .parse::<B256>()
            .unwrap(),
        id
    );
    assert_eq!(lock["paid"], false);
    assert_eq!(net.main.balance(me), snm(95));
    wait_for("the deposit paid on the SONM chain", || {
        (net.sonm.balance(me) > snm(10)).then_some(())
    });
    assert_eq!(net.sonm.balance(me), snm(15), "exactly 5 SNM arrived");
    assert_eq!(net.main.balance(me), snm(95));
    assert_eq!(net.sonm.paid_events(&net.main, nonce), 1);
    let transfers = cli(&["token", "transfers"]);
    let list = transfers["transfers"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{transfers}");
    assert_eq!(list[0]["transfer_id"], lock["transfer_id"]);
    assert_eq!(list[0]["paid"], true);

    // --- Withdraw 2.5 SNM the other way.
    let back = cli(&["token", "withdraw", "2.5"]);
    assert_eq!(back["direction"], "withdraw");
    assert_eq!(back["src_chain"], net.sonm.id());
    assert_eq!(back["dst_chain"], net.main.id());
    let half = U256::from(5 * SNM_WEI / 2);
    assert_eq!(u256(&back["amount"]), half);
    assert_eq!(net.sonm.balance(me), snm(15) - half);
    wait_for("the withdrawal paid on the main chain", || {
        (net.main.balance(me) > snm(95)).then_some(())
    });
    assert_eq!(net.main.balance(me), snm(95) + half);
    let back_nonce = back["nonce"].as_u64().unwrap();
    assert_eq!(net.main.paid_events(&net.sonm, back_nonce), 1);
    let transfers = cli(&["token", "transfers"]);
    let list = transfers["transfers"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{transfers}");
    assert!(list.iter().all(|t| t["paid"] == true), "{transfers}");
    assert_eq!(list[1]["direction"], "withdraw");
    let table = sonm(&url, &["token", "transfers"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("DIRECTION") && table.contains("withdraw") && table.contains("2.5"),
        "{table}"
    );
    let b = cli(&["balance"]);
    assert_eq!(u256(&b["snm"]), snm(15) - half);
    assert_eq!(u256(&b["main_chain"]["snm"]), snm(95) + half);

    // --- Bad input: a 4xx with {code, message}, and nothing sent on either chain.
    let (main_sent, sonm_sent) = (sent(&net.main, me), sent(&net.sonm, me));
    let cap = (U256::from(1) << 96usize).to_string();
    let over_balance = snm(1000).to_string();
    let cases: &[(&str, &str, Option<String>, u16)] = &[
        (
            "POST",
            "/v1/token/deposit",
            Some(format!(r#"{{"amount": "{over_balance}"}}"#)),
            409,
        ),
        (
            "POST",
            "/v1/token/withdraw",
            Some(format!(r#"{{"amount": "{over_balance}"}}"#)),
            409,
        ),
        (
            "POST",
            "/v1/token/deposit",
            Some(format!(r#"{{"amount": "{cap}"}}"#)),
            400,
        ),
        (
            "POST",
            "/v1/token/withdraw",
            Some(format!(r#"{{"amount": "{cap}"}}"#)),
            400,
        ),
        (
            "POST",
            "/v1/token/deposit",
            Some(r#"{"amount": "0"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/token/deposit",
            Some(r#"{"amount": "-5"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/token/deposit",
            Some(r#"{"amount": "5 SNM"}"#.into()),
            400,
        ),
        (
            "POST",
            "/v1/token/deposit",
            Some(r#"{"amount": "1", "to": "0x00"}"#.into()),
            400,
        ),
        ("POST", "/v1/token/deposit", Some("[1]".into()), 400),
        ("POST", "/v1/token/deposit", Some("{not json".into()), 400),
        ("POST", "/v1/token/deposit", None, 400),
        (
            "POST",
            "/v1/token/deposit?amount=1",
            Some(r#"{"amount": "1"}"#.into()),
            400,
        ),
        ("GET", "/v1/token/deposit", None, 405),
        ("POST", "/v1/token/transfers", None, 405),
        ("GET", "/v1/token/transfers?all=1", None, 400),
    ];
    for (method, path, body, want) in cases {
        let (status, v) = http(method, &format!("{url}{path}"), body.as_deref());
        assert_eq!(status, *want, "{method} {path} {body:?}: {v}");
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{method} {path}: {v}"
        );
    }
    // Through the CLI: over the Gate's cap (10^11 SNM > 2^96 wei) and a malformed amount.
    let err = sonm_fails(&url, &["token", "deposit", "100000000000"]);
    assert!(err.contains("bad_request") && err.contains("2^96"), "{err}");
    let err = sonm_fails(&url, &["token", "withdraw", "five"]);
    assert!(err.contains("not an amount"), "{err}");
    assert_eq!(
        (sent(&net.main, me), sent(&net.sonm, me)),
        (main_sent, sonm_sent),
        "a refused request sent a transaction"
    );

    // --- A node without [main_chain]: the gate routes say so, the balance has no main chain.
    let (_plain, plain_url, _) = node(d, "plain", &net.sonm, None);
    for (method, path, body) in [
        ("POST", "/v1/token/deposit", Some(r#"{"amount": "1"}"#)),
        ("POST", "/v1/token/withdraw", Some(r#"{"amount": "1"}"#)),
        ("GET", "/v1/token/transfers", None),
    ] {
        let (status, v) = http(method, &format!("{plain_url}{path}"), body);
        assert_eq!(
            (status, v["code"].as_str()),
            (422, Some("no_main_chain")),
            "{v}"
        );
        assert!(
            v["message"].as_str().unwrap().contains("[main_chain]"),
            "{v}"
        );
    }
    let err = sonm_fails(&plain_url, &["token", "deposit", "1"]);
    assert!(err.contains("no_main_chain"), "{err}");
    let b = sonm_json(&plain_url, &["balance"], &log);
    assert!(b.get("main_chain").is_none(), "{b}");

    // No request failed with a 5xx.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("request failed"), "{text}");
}
