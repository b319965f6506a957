//! A chain RPC endpoint going away while a second one serves (issue 9). Real processes: anvil,
//! sonm-worker, sonm-node and the sonm CLI. The worker and the node each have two endpoints of
//! the chain: first a JSON-RPC proxy in front of anvil (one per daemon, so that each one's use
//! of it is seen), then anvil itself. The customer buys the worker's ask and starts a task
//! through the proxies; then both proxies die (port closed, open connections shut down) while
//! the task runs. The flow goes on through the second endpoint: the worker bills, the task is
//! stopped and a new one runs, the customer closes. Every transaction ran once (one bill, one close), the payouts add
//! up to price × the seconds the deal ran and equal the supplier's gain and the customer's
//! loss, and both daemons' logs show the failover.

use std::time::Duration;

use sonm_e2e::{
    CONSUMER_KEY, Net, Node, PRICE, RpcProxy, SNM, Worker, WorkerOpts, address_of, example_job,
    job_spec, logs, spinning_module, wait_for,
};

#[test]
fn the_customer_flow_completes_when_the_first_chain_endpoint_dies_mid_flow() {
    let customer = address_of(CONSUMER_KEY);
    let funds = 1_000 * SNM;
    let net = Net::start(&[], &[(customer, funds)]);
    let mut worker_proxy = RpcProxy::start(&net.rpc());
    let mut node_proxy = RpcProxy::start(&net.rpc());
    // Billing every 600 s (the default).
    let worker = Worker::start_with_rpc(
        &net,
        WorkerOpts::default(),
        &[worker_proxy.url.clone(), net.rpc()],
    );
    let node = Node::start_with_rpcs(
        &net,
        CONSUMER_KEY,
        &worker,
        None,
        &[node_proxy.url.clone(), net.rpc()],
    );
    let supplier_before = net.snm_balance(worker.address);

    let ask = node.find_ask();
    assert!(
        worker_proxy.requests() > 0,
        "the worker placed its ask through its first endpoint"
    );
    let before_buy = node_proxy.requests();
    let deal = node.buy(ask);
    assert!(
        node_proxy.requests() > before_buy,
        "the node bought through its first endpoint"
    );
    let d = deal.to_string();
    let spin = job_spec(
        net.dir.path(),
        "spin",
        &spinning_module(net.dir.path()),
        300_000,
    );
    let running = node.start_task(deal, &spin);
    wait_for(
        "the task running",
        Duration::from_secs(30),
        || logs(&net),
        || (node.task_status(deal, running).ok()?["status"] == "running").then_some(()),
    );

    // Both first endpoints die mid-flow.
    worker_proxy.kill();
    node_proxy.kill();

    // The worker's chain loop goes on through anvil: it bills 700 s (chain time) later.
    net.increase_time(700);
    wait_for(
        "a bill after the failover",
        Duration::from_secs(60),
        || logs(&net),
        || (!net.bills(deal).is_empty()).then_some(()),
    );
    assert_eq!(net.bills(deal).len(), 1, "billed once");
    assert_eq!(
        node.task_status(deal, running).unwrap()["status"],
        "running"
    );

    // The deal goes on: the running task is stopped, a new one runs and its receipt verifies.
    node.sonm_ok(&["task", "stop", &d, &running.to_string()]);
    wait_for(
        "the task stopped",
        Duration::from_secs(30),
        || logs(&net),
        || (node.task_status(deal, running).ok()?["status"] != "running").then_some(()),
    );
    let hello = job_spec(net.dir.path(), "hello", &example_job("hello.wasm"), 30_000);
    let task = node.start_task(deal, &hello);
    let r = node.sonm_ok(&["task", "result", &d, &task.to_string(), "--wait", "60"]);
    assert_eq!(r["exit"]["code"], 0, "{r}");
    assert_eq!(r["receipt"]["verified"], true, "{r}");

    // The customer closes through the second endpoint.
    let closed = node.sonm_ok(&["deal", "close", &d]);
    assert_eq!(closed["status"], "closed", "{closed}");
    let end = net.deal(deal);
    assert_eq!(end.status, 2);
    assert_eq!(net.closes(deal).len(), 1, "closed once");
    let bills = net.bills(deal);
    assert_eq!(bills.len(), 2, "the bill and the close's: {bills:?}");
    let ran = u128::from(end.last_bill - end.start);
    assert!(ran >= 700, "ran {ran} s");
    let paid: u128 = bills.iter().sum();
    assert_eq!(paid, PRICE * ran, "bills {bills:?} for {ran} s");
    assert_eq!(net.snm_balance(worker.address) - supplier_before, paid);
    assert_eq!(net.snm_balance(customer), funds - paid);
    // The node reads its balance through the second endpoint too.
    let balance = node.sonm_ok(&["balance"]);
    assert_eq!(
        balance["snm"].as_str(),
        Some((funds - paid).to_string().as_str()),
        "{balance}"
    );

    // Both daemons say that they moved to the second endpoint.
    let anvil = format!("{}/", net.rpc());
    for (name, log, dead) in [
        ("worker", worker.process.log_text(), &worker_proxy.url),
        ("node", node.process.log_text(), &node_proxy.url),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("chain RPC failover"))
            .unwrap_or_else(|| panic!("no failover in the {name}'s log:\n{log}"));
        assert!(
            line.contains(&anvil) && line.contains(dead.as_str()),
            "{name}: {line}"
        );
    }
}
