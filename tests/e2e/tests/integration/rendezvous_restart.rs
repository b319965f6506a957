//! The rendezvous server restarting under a live deal (issue 9, item 2). Real processes: anvil,
//! sonm-rendezvous, sonm-worker, sonm-node and the sonm CLI. The worker sits in a network
//! namespace behind a symmetric NAT (MASQUERADE --random), so the customer's node, which is
//! given no address for it, reaches it only through the rendezvous server's relay. A task runs
//! on the deal; the server is killed (-9) and started again on the same address and key; once
//! the worker has published itself again, a second task runs on the same deal: the relay it
//! went through died with the old server, so the node must notice and connect anew through
//! the new one.
//!
//! Needs root, iproute2 and iptables; skips with a message otherwise (CI runs as root).

use std::time::{Duration, Instant};

use sonm_e2e::{
    CONSUMER_KEY, NatKind, NatSite, Net, Node, Rendezvous, SNM, Worker, address_of, example_job,
    job_spec, logs, wait_for,
};

/// Runs the hello job on `deal` and checks its result (exit 0, receipt verified by the node);
/// returns how long start + result took.
fn run_hello(node: &Node, deal: u64, spec: &std::path::Path) -> Duration {
    let t = Instant::now();
    let task = node.start_task(deal, spec);
    let result = node.sonm_ok(&[
        "task",
        "result",
        &deal.to_string(),
        &task.to_string(),
        "--wait",
        "60",
    ]);
    assert_eq!(result["exit"]["kind"], "exit", "{result}");
    assert_eq!(result["exit"]["code"], 0, "{result}");
    assert_eq!(result["receipt"]["verified"], true, "{result}");
    t.elapsed()
}

#[test]
fn a_deal_goes_on_through_a_restarted_rendezvous_server() {
    if let Err(why) = NatSite::available() {
        println!(
            "SKIPPED the rendezvous restart test: {why}; it needs root, iproute2 and iptables"
        );
        return;
    }
    // Declared first, so dropped last: after every process in it is gone.
    let site = NatSite::build(NatKind::Symmetric).expect("building the NAT");
    let customer = address_of(CONSUMER_KEY);
    // anvil also listens on the host's side of the NAT, for the worker.
    let net = Net::start(&["--host", &site.host_ip], &[(customer, 1_000 * SNM)]);
    let mut rv = Rendezvous::start(&net, &site.host_ip);
    let worker = Worker::start_behind_nat(&net, &site, &rv);
    wait_for(
        "the worker published to the rendezvous",
        Duration::from_secs(30),
        || logs(&net),
        || (worker.publishes() >= 1).then_some(()),
    );
    let node = Node::start_via_rendezvous(&net, CONSUMER_KEY, &rv, &site.host_ip);
    let deal = node.buy(node.find_ask());
    let hello = job_spec(net.dir.path(), "hello", &example_job("hello.wasm"), 30_000);

    let first = run_hello(&node, deal, &hello);
    // A symmetric NAT leaves no direct path: the relay is the rendezvous server's.
    assert_eq!(node.rendezvous_paths(), ["relay"], "{}", logs(&net));

    rv.restart();
    let restarted = Instant::now();
    // The restarted server resets the worker's old connection at its next keep-alive (10 s),
    // and the worker redials after 1 s. (With a random reset key it learnt only at the idle
    // timeout: 70 s.)
    wait_for(
        "the worker published to the restarted rendezvous server",
        Duration::from_secs(30),
        || logs(&net),
        || (worker.publishes() >= 2).then_some(()),
    );
    let republished = restarted.elapsed();
    let second = run_hello(&node, deal, &hello);
    // The node closed the connection through the dead relay when its own connection to the
    // server was reset (rather than letting a request wait out the 30 s idle timeout)...
    assert!(
        node.process
            .log_text()
            .contains("the rendezvous connection ended: closing the relayed connection"),
        "{}",
        logs(&net)
    );
    // ... and the second task went through a relay of the new server.
    assert_eq!(
        node.rendezvous_paths(),
        ["relay", "relay"],
        "{}",
        logs(&net)
    );
    println!(
        "rendezvous restart: first task {first:?}; worker re-published {republished:?} after \
         the restart; second task {second:?}"
    );
}
