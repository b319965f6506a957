//! A task started right after quick-buy, on a worker whose chain loop has not yet seen the new
//! deal. Real processes: anvil, sonm-worker, sonm-node and the sonm CLI. The worker looks an
//! unknown deal up on the chain when asked for it, but at most once per 500 ms
//! (`RESCAN_MIN_INTERVAL`, against made-up ids flooding the RPC). A legitimate second deal
//! whose first task arrives within that window of another unknown-deal lookup is refused with
//! `worker_unknown_deal` (HTTP 404) although the deal is on chain: two customers (or one with
//! two deals) starting their first tasks within half a second of each other.

use sonm_e2e::{
    CONSUMER_KEY, Net, Node, SNM, Worker, WorkerOpts, address_of, example_job, job_spec,
};

#[test]
fn a_task_on_a_deal_just_bought_is_served_even_right_after_another_new_deal() {
    let customer = address_of(CONSUMER_KEY);
    let net = Net::start(&[], &[(customer, 1_000 * SNM)]);
    // A slow chain loop (10 s), so that only the request-triggered lookup finds new deals; two
    // slices on sale.
    let worker = Worker::start_with(
        &net,
        WorkerOpts {
            poll_interval_ms: 10_000,
            plans: 2,
            ..WorkerOpts::default()
        },
    );
    let node = Node::start(&net, CONSUMER_KEY, &worker, None);
    let asks = sonm_e2e::wait_for(
        "the worker's two asks",
        std::time::Duration::from_secs(60),
        || worker.process.log_text(),
        || {
            let v = node.sonm_ok(&["market", "asks", "--benchmarks", "cpu-cores=1"]);
            let ids: Vec<u64> = v["orders"]
                .as_array()?
                .iter()
                .filter_map(|o| o["id"].as_u64())
                .collect();
            (ids.len() == 2).then_some(ids)
        },
    );
    let hello = job_spec(net.dir.path(), "hello", &example_job("hello.wasm"), 30_000);

    let first = node.buy(asks[0]);
    node.start_task(first, &hello); // the worker looks the new deal up on the chain
    let second = node.buy(asks[1]);
    let started = node.sonm(&[
        "task",
        "start",
        &second.to_string(),
        hello.to_str().unwrap(),
    ]);
    assert!(
        started.is_ok(),
        "deal {second} is on chain, yet: {:?}\nworker log:\n{}",
        started,
        worker.process.log_text()
    );
}
