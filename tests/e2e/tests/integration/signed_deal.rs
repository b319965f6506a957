//! The product's flow on a signed ask, with real processes: anvil, sonm-dwh, a sonm-worker
//! selling its slice through an ask signed off chain and published to the DWH, a sonm-node
//! searching the market through the DWH, and the sonm CLI: the ask is found by its digest,
//! bought, a WASM job runs on the deal with a verified receipt, the deal is closed and the
//! supplier is paid for what ran; the worker placed nothing on chain.

use std::time::Duration;

use sonm_e2e::{
    CONSUMER_KEY, Dwh, Net, Node, PRICE, SNM, Worker, WorkerOpts, address_of, example_job,
    http_get, job_spec, logs, wait_for,
};

#[test]
fn a_signed_ask_is_found_bought_used_and_paid_through_the_cli() {
    let customer = address_of(CONSUMER_KEY);
    let net = Net::start(&[], &[(customer, 1_000 * SNM)]);
    let dwh = Dwh::start(&net);
    let worker = Worker::start_with(
        &net,
        WorkerOpts {
            signed_asks_dwh: Some(dwh.url.clone()),
            ..WorkerOpts::default()
        },
    );
    let node = Node::start(&net, CONSUMER_KEY, &worker, Some(&dwh));
    let supplier_before = net.snm_balance(worker.address);

    let digest = wait_for(
        "the worker's signed ask on the market",
        Duration::from_secs(60),
        || logs(&net),
        || {
            let v = node.sonm_ok(&["market", "asks", "--benchmarks", "cpu-cores=1"]);
            v["orders"][0]["digest"].as_str().map(str::to_owned)
        },
    );
    let listed = node.sonm_ok(&["market", "asks", "--benchmarks", "cpu-cores=1"]);
    assert_eq!(listed["orders"][0]["id"], 0, "{listed}");
    let deal = node.sonm_ok(&["deal", "buy", &digest, "--duration", "0"]);
    assert_eq!(deal["status"], "active", "{deal}");
    assert!(
        deal["ask"].is_null(),
        "a signed ask has no order id: {deal}"
    );
    assert_eq!(
        deal["supplier"]
            .as_str()
            .unwrap()
            .parse::<alloy::primitives::Address>()
            .unwrap(),
        worker.address
    );
    let id = deal["id"].as_u64().unwrap();
    let d = id.to_string();

    let hello = job_spec(net.dir.path(), "hello", &example_job("hello.wasm"), 30_000);
    let task = node.start_task(id, &hello);
    let r = node.sonm_ok(&["task", "result", &d, &task.to_string(), "--wait", "60"]);
    assert_eq!(r["exit"]["code"], 0, "{r}");
    assert_eq!(r["receipt"]["verified"], true, "{r}");

    net.increase_time(30);
    let closed = node.sonm_ok(&["deal", "close", &d]);
    assert_eq!(closed["status"], "closed", "{closed}");
    let end = net.deal(id);
    let ran = u128::from(end.last_bill - end.start);
    let paid: u128 = net.bills(id).iter().sum();
    assert!(ran >= 30, "ran {ran} s");
    assert_eq!(paid, PRICE * ran);
    assert_eq!(net.snm_balance(worker.address) - supplier_before, paid);

    // Nothing placed on chain: the DWH indexed no ask, and its signed book no longer lists the
    // one that was bought.
    let placed = http_get(&format!("{}/v1/orders?type=ask", dwh.url)).unwrap();
    assert_eq!(
        placed["items"].as_array().map(Vec::len),
        Some(0),
        "{placed}"
    );
    wait_for(
        "the bought ask leaving the DWH's book",
        Duration::from_secs(30),
        || logs(&net),
        || {
            let page = http_get(&format!("{}/v1/signed-orders?type=ask", dwh.url))?;
            (!page.to_string().contains(&digest)).then_some(())
        },
    );
}
