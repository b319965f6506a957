//! `kill -9` of the worker in the middle of a deal and of a task, then a restart. Real
//! processes: anvil, sonm-worker, sonm-node and the sonm CLI. The deal runs across the crash
//! and is billed on both sides of it; the chain's clock moves while the worker is down. Checks:
//! the deal continues (a new task runs on it after the restart), the seconds the worker was
//! down are billed by the restarted worker (not lost), nothing is billed twice (the
//! `DealBilled` payouts add up to price × (close − start), which is exactly the supplier's
//! balance change and the customer's loss), the finished task's status, receipt and outputs
//! survive (the same verified result as before the crash), and the task that was running at
//! the crash is reported lost.

use std::time::Duration;

use sonm_e2e::{
    CONSUMER_KEY, Net, Node, PRICE, SNM, Worker, address_of, example_job, job_spec, logs,
    spinning_module, wait_for,
};

#[test]
fn the_worker_killed_mid_deal_bills_neither_less_nor_twice_after_its_restart() {
    let customer = address_of(CONSUMER_KEY);
    let funds = 1_000 * SNM;
    let net = Net::start(&[], &[(customer, funds)]);
    // Billing every 600 s (the default).
    let mut worker = Worker::start(&net, 600);
    let node = Node::start(&net, CONSUMER_KEY, &worker, None);
    let supplier_before = net.snm_balance(worker.address);

    let deal = node.buy(node.find_ask());
    let d = deal.to_string();

    // A job that finishes (its result fetched, receipt verified by the node)...
    let hello = job_spec(net.dir.path(), "hello", &example_job("hello.wasm"), 30_000);
    let done = node.start_task(deal, &hello);
    let done_s = done.to_string();
    let result = node.sonm_ok(&["task", "result", &d, &done_s, "--wait", "60"]);
    assert_eq!(result["exit"]["kind"], "exit", "{result}");
    assert_eq!(result["exit"]["code"], 0, "{result}");
    assert_eq!(result["receipt"]["verified"], true, "{result}");
    // ... and one that is running when the worker dies.
    let spin = job_spec(
        net.dir.path(),
        "spin",
        &spinning_module(net.dir.path()),
        300_000,
    );
    let running = node.start_task(deal, &spin);

    // A first bill, 700 s (chain time) after the start.
    net.increase_time(700);
    wait_for(
        "the first bill",
        Duration::from_secs(60),
        || logs(&net),
        || (!net.bills(deal).is_empty()).then_some(()),
    );
    assert_eq!(
        node.task_status(deal, running).unwrap()["status"],
        "running"
    );

    // kill -9; 700 s pass on the chain while the worker is down.
    worker.process.kill9();
    net.increase_time(700);
    let down_until = net.chain_time();
    assert_eq!(net.deal(deal).status, 1, "the deal outlives the worker");
    worker.restart();

    // The restarted worker bills the time it was down.
    let after = wait_for(
        "the bill after the restart",
        Duration::from_secs(60),
        || logs(&net),
        || {
            let d = net.deal(deal);
            (d.last_bill >= down_until).then_some(d)
        },
    );
    assert_eq!(after.status, 1, "still active");
    assert_eq!(
        net.bills(deal).len(),
        2,
        "one bill on each side of the crash"
    );

    // The deal continues: a new task runs on it.
    let again = node.start_task(deal, &hello);
    assert!(again > running, "task ids are not reused");
    let r = node.sonm_ok(&["task", "result", &d, &again.to_string(), "--wait", "60"]);
    assert_eq!(r["exit"]["code"], 0, "{r}");
    assert_eq!(r["receipt"]["verified"], true, "{r}");

    // The finished task: its status and its result survived (kept on the worker's disk).
    let s = node.task_status(deal, done).unwrap();
    assert_eq!(s["status"], "finished", "{s}");
    let kept = node.sonm_ok(&["task", "result", &d, &done_s]);
    assert_eq!(kept["receipt"]["verified"], true, "{kept}");
    assert_eq!(kept["outputs"], result["outputs"], "{kept}");
    assert_eq!(kept["stdout"], result["stdout"], "{kept}");
    assert_eq!(
        kept["receipt"]["outputs_sha256"], result["receipt"]["outputs_sha256"],
        "{kept}"
    );
    // The running task: reported lost.
    let s = node.task_status(deal, running).unwrap();
    assert_eq!(s["status"], "failed", "{s}");
    assert!(
        s["error"].as_str().unwrap_or_default().contains("lost"),
        "{s}"
    );

    // The customer closes: the payouts add up to exactly price × the seconds the deal ran.
    let closed = node.sonm_ok(&["deal", "close", &d]);
    assert_eq!(closed["status"], "closed", "{closed}");
    let end = net.deal(deal);
    assert_eq!(end.status, 2);
    let bills = net.bills(deal);
    assert_eq!(bills.len(), 3, "two bills and the close's: {bills:?}");
    let ran = u128::from(end.last_bill - end.start);
    assert!(ran >= 1400, "ran {ran} s");
    let paid: u128 = bills.iter().sum();
    assert_eq!(paid, PRICE * ran, "bills {bills:?} for {ran} s");
    assert_eq!(net.snm_balance(worker.address) - supplier_before, paid);
    assert_eq!(net.snm_balance(customer), funds - paid);
}
