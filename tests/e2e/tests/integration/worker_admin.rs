//! A supplier administers its worker through its own node and the `sonm` CLI; its master,
//! once confirmed through its node, too; a stranger's node is refused. Real processes: anvil
//! with the contracts, sonm-worker (with a master and metrics), four sonm-node processes (the
//! worker's key, the master's, a stranger's, a customer's) and the CLI. After a task the
//! worker's Prometheus counters have moved.

use std::time::Duration;

use alloy::primitives::Address;
use serde_json::Value;
use sonm_contracts::anvil::DEV_KEYS;
use sonm_e2e::{
    CONSUMER_KEY, Daemon, Net, Node, SNM, SUPPLIER_KEY, Worker, address_of, bin, example_job,
    free_tcp_port, job_spec, logs, wait_for,
};

const MASTER_KEY: &str = DEV_KEYS[3];
/// Anvil's dev account 5: a key nobody named.
const STRANGER_KEY: &str = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";

/// A node for `key` under its own file names (`name`-*), knowing where the worker is.
fn start_node(net: &Net, name: &str, key: &str, worker: &Worker) -> Node {
    let d = net.dir.path();
    let file = |what: &str| d.join(format!("{name}-{what}"));
    std::fs::write(file("password"), "e2e password\n").unwrap();
    std::fs::write(file("key"), key).unwrap();
    let out = std::process::Command::new(bin("sonm-node"))
        .args(["keygen", "--keystore"])
        .arg(file("key.json"))
        .arg("--password-file")
        .arg(file("password"))
        .arg("--import-hex-file")
        .arg(file("key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_tcp_port();
    let config = file("node.toml");
    std::fs::write(
        &config,
        format!(
            "keystore = \"{}\"\npassword_file = \"{}\"\nrpc_url = \"{}\"\naddresses = \"{}\"\n\
             listen = \"127.0.0.1:{port}\"\nquic_bind = \"127.0.0.1:0\"\n\n[workers]\n\
             \"{}\" = \"{}\"\n",
            file("key.json").display(),
            file("password").display(),
            net.rpc(),
            net.addresses_path.display(),
            worker.address,
            worker.listen,
        ),
    )
    .unwrap();
    let node = Node {
        url: format!("http://127.0.0.1:{port}"),
        address: address_of(key),
        process: Daemon::spawn(
            &bin("sonm-node"),
            &["--config", config.to_str().unwrap()],
            &file("node.log"),
        ),
    };
    wait_for(
        "the node's API",
        Duration::from_secs(60),
        || node.process.log_text(),
        || node.sonm(&["balance"]).ok(),
    );
    node
}

/// One scrape of the worker's metrics.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn all_logs(net: &Net) -> String {
    let nodes: String = ["supplier", "master", "stranger"]
        .iter()
        .map(|n| {
            let f = net.path(&format!("{n}-node.log"));
            format!(
                "--- {n}\n{}",
                std::fs::read_to_string(f).unwrap_or_default()
            )
        })
        .collect();
    format!("{}{nodes}", logs(net))
}

/// The worker's configuration with `lines` put before its first table, then restarted.
fn reconfigure(worker: &mut Worker, lines: &str) {
    let text = std::fs::read_to_string(&worker.config).unwrap();
    std::fs::write(&worker.config, format!("{lines}{text}")).unwrap();
    worker.process.kill9();
    worker.restart();
}

fn plan_of(plans: &Value, name: &str) -> Value {
    plans
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plan {name} in {plans}"))
        .clone()
}

#[test]
fn a_supplier_administers_its_worker_from_its_node_and_strangers_are_refused() {
    let customer = address_of(CONSUMER_KEY);
    let master = address_of(MASTER_KEY);
    let net = Net::start(&[], &[(customer, 1_000 * SNM)]);
    let mut worker = Worker::start(&net, 2);
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    reconfigure(
        &mut worker,
        &format!("master = \"{master}\"\nmetrics_listen = \"{metrics}\"\n"),
    );
    let w = worker.address.to_string();
    let ctx = || all_logs(&net);

    // --- The node holding the worker's key.
    let supplier = start_node(&net, "supplier", SUPPLIER_KEY, &worker);
    let status = supplier.sonm_ok(&["worker", "status"]);
    assert_eq!(
        status["address"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        worker.address
    );
    assert_eq!(status["master"], Value::Null, "{status}");
    assert_eq!(
        status["configured_master"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        master
    );
    let inventory = supplier.sonm_ok(&["worker", "inventory"]);
    assert!(
        inventory["inventory"]["cpu_cores"].as_u64().unwrap() > 0,
        "{inventory}"
    );
    let devices = supplier.sonm_ok(&["worker", "devices"]);
    assert_eq!(devices["gpus"], serde_json::json!([]), "no NVML here");

    // Adding a plan places its ask on chain; removing it cancels the ask.
    let added = supplier.sonm_ok(&[
        "worker",
        "plan",
        "add",
        "extra",
        "--price",
        "2000000000",
        "--cpu-cores",
        "1",
        "--ram",
        "64MiB",
        "--storage",
        "10MB",
        "--netflags",
        "outbound",
    ]);
    assert_eq!(added["name"], "admin:extra", "{added}");
    let ask = added["ask"]["id"].as_u64().expect("placed at once");
    let order = supplier.sonm_ok(&["order", "show", &ask.to_string()]);
    assert_eq!(order["status"], "active", "{order}");
    let plan = added["id"].as_u64().unwrap().to_string();
    let removed = supplier.sonm_ok(&["worker", "plan", "remove", &plan]);
    assert_eq!(removed["removed"], true);
    let order = supplier.sonm_ok(&["order", "show", &ask.to_string()]);
    assert_eq!(order["status"], "cancelled", "{order}");
    let plans = supplier.sonm_ok(&["worker", "plans"]);
    assert!(
        plans
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "admin:extra")
    );

    // --- A stranger's node is refused, and the worker logs it.
    let stranger = start_node(&net, "stranger", STRANGER_KEY, &worker);
    for args in [
        vec!["worker", "status", "--worker", &w],
        vec!["worker", "plans", "--worker", &w],
        vec!["worker", "plan", "remove", &plan, "--worker", &w],
    ] {
        let err = stranger.sonm(&args).expect_err("a stranger is refused");
        assert!(err.contains("forbidden"), "{args:?}: {err}");
    }
    assert!(worker.process.log_text().contains("admin refused"));

    // --- The master confirms the worker through its node, then administers it.
    let boss = start_node(&net, "master", MASTER_KEY, &worker);
    let early = boss.sonm(&["worker", "status", "--worker", &w]);
    assert!(early.expect_err("not confirmed yet").contains("forbidden"));
    wait_for("the master's confirm", Duration::from_secs(60), ctx, || {
        // Refused by the chain until the worker has asked (registerWorker, on its next tick).
        boss.sonm(&["worker", "confirm", &w]).ok()
    });
    let status = boss.sonm_ok(&["worker", "status", "--worker", &w]);
    assert_eq!(
        status["master"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        master,
        "{status}"
    );

    // --- A customer buys the worker's configured plan: its removal is refused.
    let shopper = Node::start(&net, CONSUMER_KEY, &worker, None);
    let plans = boss.sonm_ok(&["worker", "plans", "--worker", &w]);
    let sold = plan_of(&plans, "one-core-0");
    let sold_ask = sold["ask"]["id"].as_u64().expect("its ask is on sale");
    let deal = shopper.buy(sold_ask);
    wait_for(
        "the worker sees the deal",
        Duration::from_secs(30),
        ctx,
        || {
            let s = boss.sonm_ok(&["worker", "status", "--worker", &w]);
            (s["open_deals"] == serde_json::json!([deal])).then_some(())
        },
    );
    let err = boss
        .sonm(&[
            "worker",
            "plan",
            "remove",
            &sold["id"].to_string(),
            "--worker",
            &w,
        ])
        .expect_err("a plan under a deal stays");
    assert!(
        err.contains("conflict") && err.contains("active deal"),
        "{err}"
    );

    // --- A task moves the worker's counters.
    let spec = job_spec(net.dir.path(), "hello", &example_job("hello.wasm"), 30_000);
    let task = shopper.start_task(deal, &spec);
    wait_for("the task's end", Duration::from_secs(60), ctx, || {
        let s = shopper.task_status(deal, task).ok()?;
        (s["status"] != "running").then_some(())
    });
    let text = wait_for("the counters", Duration::from_secs(30), ctx, || {
        let t = scrape(&metrics);
        (metric(&t, "sonm_worker_tasks_finished_total{kind=\"wasm\"}")? == 1.0
            && metric(&t, "sonm_worker_bills_total")? >= 1.0)
            .then_some(t)
    });
    assert_eq!(
        metric(&text, "sonm_worker_tasks_started_total{kind=\"wasm\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "sonm_worker_deals_open"), Some(1.0));
    assert!(metric(&text, "sonm_worker_bills_payout_wei_total").unwrap() > 0.0);
    assert_eq!(metric(&text, "sonm_worker_rendezvous_connected"), Some(0.0));

    // --- Maintenance through the CLI: the spot deal is closed, the asks withdrawn, and the
    // status says so.
    let spare = supplier.sonm_ok(&[
        "worker",
        "plan",
        "add",
        "spare",
        "--price",
        "2000000000",
        "--ram",
        "32MiB",
        "--storage",
        "10MB",
        "--netflags",
        "outbound",
    ]);
    let other_ask = spare["ask"]["id"].as_u64().expect("placed at once");
    let on = supplier.sonm_ok(&["worker", "maintenance", "on"]);
    assert_eq!(on["maintenance"], true, "{on}");
    let status = supplier.sonm_ok(&["worker", "status"]);
    assert_eq!(status["maintenance"], true, "{status}");
    assert_eq!(status["open_deals"], serde_json::json!([]), "{status}");
    let order = supplier.sonm_ok(&["order", "show", &other_ask.to_string()]);
    assert_eq!(order["status"], "cancelled", "{order}");
}
