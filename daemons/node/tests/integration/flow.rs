//! The customer's whole path with real parts: a real anvil with the deployed contracts, a real
//! worker (the `sonm-worker` library in this process, as its own tests run it) selling two
//! one-core slices, a real `sonm-node` process with a keystore made by `sonm-node keygen`, and
//! the `sonm` CLI binary driving it: balance, market search, quick-buy, the sha256 WASM job on
//! input files (result checked against locally computed sha256, receipt verified), close; bad
//! input answered with 4xx and a message; a task on someone else's deal refused by the worker.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil), `wasm-runtime/jobs/build.sh` (the
//! sha256 job), and the `sonm` binary: `cargo build --bins` first (scripts/test.sh does).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use serde_json::Value;
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::{SNM_WEI, provider, signing_provider};
use sonm_contracts::{Market, SNM, market_order, placed_ref};

use crate::common;
use common::{
    RunningWorker, block_on, deploy_chain, free_tcp_port, give_gas, http, keygen, node_bin,
    one_core_plan, sha256_hex, sonm, sonm_fails, sonm_json, start_node, worker_config,
};

#[test]
fn a_customer_buys_runs_a_job_and_closes_through_the_cli() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let module = sonm_wasm_runtime::example_jobs_dir().join("sha256.wasm");
    assert!(
        module.exists(),
        "{}: build the example jobs with wasm-runtime/jobs/build.sh",
        module.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let node_log = d.join("node.log");
    let url: alloy::transports::http::reqwest::Url = anvil.endpoint().parse().unwrap();

    // --- The customer's key: a keystore made by `sonm-node keygen`.
    let me = keygen(d);

    // --- The chain: contracts deployed, the customer funded with SNM and gas.
    let supplier: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();
    let stranger: PrivateKeySigner = DEV_KEYS[3].parse().unwrap();
    let (addresses, addresses_path) =
        deploy_chain(&anvil, d, &[me, stranger.address()], Vec::new());
    give_gas(&anvil, me);

    // --- The worker (in process), selling two one-core slices.
    let worker_config = worker_config(
        d,
        &anvil,
        &addresses_path,
        vec![one_core_plan("one-core-a"), one_core_plan("one-core-b")],
    );
    let worker_listen: SocketAddr = worker_config.listen;
    // Written out so the configuration can be read next to the node's.
    std::fs::write(
        d.join("worker.toml"),
        toml::to_string(&worker_config).unwrap(),
    )
    .unwrap();
    let mut worker = RunningWorker::start(worker_config.clone());

    // --- The node, as a process.
    let api_port = free_tcp_port();
    let node = format!("http://127.0.0.1:{api_port}");
    let node_config = format!(
        r#"keystore = "{keystore}"
password_file = "{password}"
rpc_url = "{rpc}"
addresses = "{addresses}"
listen = "127.0.0.1:{api_port}"
quic_bind = "127.0.0.1:0"

[workers]
"{supplier}" = "{worker_listen}"
"#,
        keystore = d.join("node-key.json").display(),
        password = d.join("node.password").display(),
        rpc = anvil.endpoint(),
        addresses = addresses_path.display(),
        supplier = supplier.address(),
    );
    let node_config_path = d.join("node.toml");
    std::fs::write(&node_config_path, &node_config).unwrap();

    let out = Command::new(node_bin())
        .arg("--config")
        .arg(&node_config_path)
        .arg("address")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<Address>()
            .unwrap(),
        me
    );

    // Before the node runs: the CLI says so.
    let err = sonm_fails(&node, &["balance"]);
    assert!(err.contains("Is it running?"), "{err}");

    let mut node_process = start_node(&node_config_path, api_port, &node_log);

    // --- Balance.
    let balance = sonm_json(&node, &["balance"], &node_log);
    assert_eq!(
        balance["address"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        me
    );
    assert_eq!(balance["snm"], (1_000u128 * SNM_WEI).to_string());
    let human = sonm(&node, &["balance"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("snm"));

    // --- Find the worker's asks (the worker places them on its first rounds).
    let spec = [
        "market",
        "asks",
        "--benchmarks",
        "cpu-cores=1 ram-size=64MiB",
        "--max-price",
        "2000000000",
    ];
    let mut asks = Vec::new();
    for _ in 0..600 {
        let v = sonm_json(&node, &spec, &node_log);
        asks = v["orders"].as_array().unwrap().clone();
        if asks.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(asks.len(), 2, "the worker's two asks");
    for a in &asks {
        assert_eq!(
            a["supplier"].as_str().unwrap().parse::<Address>().unwrap(),
            supplier.address()
        );
        assert_eq!(a["price"], "1000000000");
    }
    // Too cheap or too big: nothing.
    let v = sonm_json(&node, &["market", "asks", "--max-price", "999"], &node_log);
    assert!(v["orders"].as_array().unwrap().is_empty());
    let v = sonm_json(
        &node,
        &["market", "asks", "--benchmarks", "cpu-cores=64"],
        &node_log,
    );
    assert!(v["orders"].as_array().unwrap().is_empty());
    let table = sonm(&node, &spec);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("ID"));
    let ask_id = asks[0]["id"].as_u64().unwrap();
    let other_ask = asks[1]["id"].as_u64().unwrap();

    // --- Buy it.
    let deal = sonm_json(
        &node,
        &["deal", "buy", &ask_id.to_string(), "--duration", "0"],
        &node_log,
    );
    let deal_id = deal["id"].as_u64().unwrap();
    assert_eq!(deal["status"], "active");
    assert_eq!(
        deal["consumer"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        me
    );
    assert_eq!(
        deal["supplier"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        supplier.address()
    );
    let deal_arg = deal_id.to_string();
    let shown = sonm_json(&node, &["deal", "show", &deal_arg], &node_log);
    assert_eq!(shown["id"], deal_id);
    assert_eq!(shown["ask"], ask_id);
    // The ask is taken: the market no longer offers it.
    let v = sonm_json(&node, &spec, &node_log);
    let left: Vec<u64> = v["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(left, [other_ask]);

    // --- The sha256 job on input files, from a job spec.
    let job_dir = d.join("job");
    std::fs::create_dir_all(job_dir.join("in/sub")).unwrap();
    let files: [(&str, Vec<u8>); 3] = [
        ("hello.txt", b"hello, fog\n".to_vec()),
        (
            "sub/data.bin",
            (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("empty", Vec::new()),
    ];
    for (p, bytes) in &files {
        std::fs::write(job_dir.join("in").join(p), bytes).unwrap();
    }
    std::fs::write(
        job_dir.join("job.toml"),
        format!(
            "input_dir = \"in\"\n\n[module]\npath = \"{}\"\n\n[limits]\nmemory_bytes = 33554432\nwall_time_ms = 30000\n",
            module.display()
        ),
    )
    .unwrap();
    let job = job_dir.join("job.toml");
    let job = job.to_str().unwrap();
    let started = sonm_json(&node, &["task", "start", &deal_arg, job], &node_log);
    let task = started["task"].as_u64().unwrap().to_string();
    let out_dir = d.join("out");
    let result = sonm_json(
        &node,
        &[
            "task",
            "result",
            &deal_arg,
            &task,
            "--wait",
            "60",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &node_log,
    );
    assert_eq!(result["exit"]["kind"], "exit");
    assert_eq!(result["exit"]["code"], 0, "stderr: {}", result["stderr"]);
    let mut expected: Vec<(String, String)> = files
        .iter()
        .map(|(p, b)| (p.to_string(), sha256_hex(b)))
        .collect();
    expected.sort();
    let expected: String = expected
        .iter()
        .map(|(p, h)| format!("{h}  {p}\n"))
        .collect();
    assert_eq!(
        std::fs::read_to_string(out_dir.join("SHA256SUMS")).unwrap(),
        expected
    );
    let receipt = &result["receipt"];
    assert_eq!(receipt["verified"], true);
    // The worker's production metering counts no fuel, and the receipt says so.
    assert_eq!(receipt["fuel_metering"], "not_metered");
    assert!(receipt["fuel"].is_null());
    assert_eq!(
        receipt["worker"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        supplier.address()
    );
    assert_eq!(receipt["deal"], deal_id);
    assert_eq!(
        receipt["module_sha256"],
        sha256_hex(&std::fs::read(&module).unwrap())
    );
    let status = sonm_json(&node, &["task", "status", &deal_arg, &task], &node_log);
    assert_eq!(status["status"], "finished");
    let human = sonm(&node, &["task", "result", &deal_arg, &task]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("receipt: verified"));
    assert!(String::from_utf8_lossy(&human.stdout).contains("fuel not metered"));
    // `--fuel` asks for a fuel-metered run: the verified receipt carries the count.
    let metered = sonm_json(
        &node,
        &["task", "start", "--fuel", &deal_arg, job],
        &node_log,
    );
    let metered = metered["task"].as_u64().unwrap().to_string();
    let metered = sonm_json(
        &node,
        &["task", "result", &deal_arg, &metered, "--wait", "60"],
        &node_log,
    );
    assert_eq!(metered["receipt"]["fuel_metering"], "counted");
    assert!(metered["receipt"]["fuel"].as_u64().unwrap() > 0);

    // --- The worker restarts: the node's connection to it is gone and is dialled again; the
    // task's status survived on the worker.
    worker.stop();
    worker = RunningWorker::start(worker_config.clone());
    let mut status = Value::Null;
    for _ in 0..200 {
        let out = sonm(&node, &["--json", "task", "status", &deal_arg, &task]);
        if out.status.success() {
            status = serde_json::from_slice(&out.stdout).unwrap();
            break;
        }
        // Until the worker listens again: unreachable.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("worker_unreachable"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status["status"], "finished", "after the worker's restart");
    let log = std::fs::read_to_string(&node_log).unwrap();
    assert!(log.contains("reconnecting to the worker"), "{log}");

    // --- Bad input: 4xx with {code, message}, never 500.
    for (method, path, body, want) in [
        ("GET", "/v1/deals/999999", None, 404),
        ("GET", "/v1/deals/abc", None, 400),
        ("GET", "/v1/orders?benchmarks=cpu-cores%3Dlots", None, 400),
        ("GET", "/v1/orders?type=bid", None, 400),
        ("GET", "/v1/orders?max_price=-1", None, 400),
        ("GET", "/v1/orders?color=red", None, 400),
        ("POST", "/v1/deals/quick-buy", Some("{not json"), 400),
        (
            "POST",
            "/v1/deals/quick-buy",
            Some(r#"{"ask_id": "one"}"#),
            400,
        ),
        (
            "POST",
            "/v1/deals/quick-buy",
            Some(r#"{"ask_id": 999999}"#),
            404,
        ),
        ("POST", "/v1/deals/1/close", Some("[]"), 400),
        (
            "POST",
            &format!("/v1/deals/{deal_id}/tasks"),
            Some(r#"{"module": {"base64": "%%%"}}"#),
            400,
        ),
        (
            "POST",
            &format!("/v1/deals/{deal_id}/tasks"),
            Some(r#"{"job_spec": "/nonexistent/job.toml"}"#),
            400,
        ),
        (
            "GET",
            &format!("/v1/deals/{deal_id}/tasks/999999"),
            None,
            404,
        ),
        ("GET", &format!("/v1/deals/{deal_id}/tasks/x"), None, 400),
        (
            "GET",
            &format!("/v1/deals/{deal_id}/tasks/1?worker_addr=nowhere"),
            None,
            400,
        ),
        (
            "GET",
            &format!("/v1/deals/{deal_id}/tasks/999999/result"),
            None,
            404,
        ),
        (
            "POST",
            &format!("/v1/deals/{deal_id}/tasks/999999/stop"),
            None,
            404,
        ),
        ("POST", "/v1/deals/x/tasks/1/stop", None, 400),
        ("PUT", "/openapi.json", None, 405),
        (
            "POST",
            "/v1/deals/quick-buy",
            Some(r#"{"ask_id": 1, "color": "red"}"#),
            400,
        ),
        ("DELETE", "/v1/balance", None, 405),
        ("GET", "/v2/nothing", None, 404),
    ] {
        let (status, body) = http(method, &format!("{node}{path}"), body);
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{method} {path}: {body}"
        );
    }
    let err = sonm_fails(&node, &["deal", "show", "999999"]);
    assert!(
        err.contains("no deal 999999") && err.contains("not_found"),
        "{err}"
    );
    let err = sonm_fails(&node, &["market", "asks", "--benchmarks", "cpu-cores=lots"]);
    assert!(err.contains("bad_request"), "{err}");

    // --- A deal that is someone else's: the worker refuses, the node says why.
    let stranger_deal = block_on(async {
        let p = signing_provider(url.clone(), stranger.clone());
        let token = SNM::new(addresses.contracts.snm, &p);
        let r = token
            .approve(addresses.contracts.market, U256::MAX)
            .send()
            .await
            .unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        let market = Market::new(addresses.contracts.market, &p);
        let placed = market
            .OrderPlaced_filter()
            .topic1(U256::from(other_ask))
            .from_block(0)
            .query()
            .await
            .unwrap();
        let ask = market_order(other_ask, &placed[0].0.order).unwrap();
        let r = market
            .quickBuy(placed_ref(&ask), 0)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(r.status());
        r.decoded_log::<Market::DealOpened>()
            .unwrap()
            .dealId
            .to::<u64>()
    });
    // (The worker learns of a new deal from the chain within a few rounds.)
    let (mut status, mut body) = (0, Value::Null);
    for _ in 0..200 {
        (status, body) = http(
            "POST",
            &format!("{node}/v1/deals/{stranger_deal}/tasks"),
            Some(&format!(r#"{{"job_spec": "{job}"}}"#)),
        );
        if body["code"] != "worker_unknown_deal" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "worker_not_consumer", "{body}");
    let err = sonm_fails(&node, &["task", "start", &stranger_deal.to_string(), job]);
    assert!(err.contains("worker_not_consumer"), "{err}");
    // Nor may the node close it.
    let (status, body) = http(
        "POST",
        &format!("{node}/v1/deals/{stranger_deal}/close"),
        Some("{}"),
    );
    assert_eq!(status, 403, "{body}");

    // --- Close the deal, blacklisting the supplier.
    let closed = sonm_json(
        &node,
        &["deal", "close", &deal_arg, "--blacklist"],
        &node_log,
    );
    assert_eq!(closed["status"], "closed");
    // The worker puts the slice on sale again; the market search no longer offers it to us.
    let asks_on_chain = || {
        block_on(async {
            let p = provider(url.clone());
            let market = Market::new(addresses.contracts.market, &p);
            let placed = market
                .OrderPlaced_filter()
                .topic3(supplier.address().into_word())
                .from_block(0)
                .query()
                .await
                .unwrap();
            placed.len()
        })
    };
    let mut relisted = false;
    for _ in 0..600 {
        if asks_on_chain() == 3 {
            relisted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(relisted, "the worker re-lists the slice after the deal");
    let v = sonm_json(&node, &["market", "asks"], &node_log);
    assert!(
        v["orders"].as_array().unwrap().is_empty(),
        "blacklisted: {v}"
    );
    let err = sonm_fails(&node, &["deal", "close", &deal_arg]);
    assert!(err.contains("conflict"), "{err}");
    let human = sonm(&node, &["deal", "show", &deal_arg]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("closed"));

    // --- The OpenAPI document.
    let (status, doc) = http("GET", &format!("{node}/openapi.json"), None);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/deals/quick-buy"]["post"].is_object());

    // --- SIGTERM stops the node cleanly.
    let pid = node_process.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut exited = None;
    for _ in 0..200 {
        if let Some(s) = node_process.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&node_log).unwrap_or_default();
    assert!(
        exited.is_some_and(|s| s.success()),
        "node did not stop; log:\n{log}"
    );
    eprintln!("node config:\n{node_config}\nnode log:\n{log}");

    worker.stop();
}
