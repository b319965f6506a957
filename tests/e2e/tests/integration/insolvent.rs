//! The customer runs out of funds. Real processes: anvil, sonm-dwh, sonm-worker, sonm-node and
//! the sonm CLI. The customer holds exactly the first hour's blocking of a spot deal
//! (price × 3600) and nothing more; it buys the worker's ask and starts a task that spins.
//! The chain's clock then moves half an hour ahead: the worker's next bill cannot top the
//! blocking up, so Market.sol pays the supplier from the blocking for the time that ran,
//! refunds the rest and closes the deal (`closedBy` = 0). The worker notices the close and
//! stops the task; the supplier got exactly price × billed seconds, and the customer lost
//! exactly that.

use std::time::Duration;

use sonm_e2e::{
    CONSUMER_KEY, Dwh, Net, Node, PRICE, SPOT_PERIOD, Worker, address_of, job_spec, logs,
    spinning_module, wait_for,
};

#[test]
fn a_customer_out_of_funds_loses_the_deal_and_the_supplier_is_paid_for_what_ran() {
    let customer = address_of(CONSUMER_KEY);
    let funds = PRICE * SPOT_PERIOD;
    let net = Net::start(&[], &[(customer, funds)]);
    let dwh = Dwh::start(&net);
    // Billing every 600 s (the default): the first bill comes after the clock jump below and
    // finds the customer unable to top the blocking up.
    let worker = Worker::start(&net, 600);
    let node = Node::start(&net, CONSUMER_KEY, &worker, Some(&dwh));
    let supplier_before = net.snm_balance(worker.address);
    assert_eq!(net.snm_balance(customer), funds);

    let ask = node.find_ask();
    let deal = node.buy(ask);
    assert_eq!(net.snm_balance(customer), 0, "the whole balance is blocked");
    let opened = net.deal(deal);
    assert_eq!(opened.status, 1);
    assert_eq!(opened.price, PRICE);
    assert_eq!(opened.blocked, funds);

    // A task that runs until it is stopped.
    let spec = job_spec(
        net.dir.path(),
        "spin",
        &spinning_module(net.dir.path()),
        300_000,
    );
    let task = node.start_task(deal, &spec);
    wait_for(
        "the task running",
        Duration::from_secs(30),
        || logs(&net),
        || {
            let s = node.task_status(deal, task).ok()?;
            (s["status"] == "running").then_some(())
        },
    );

    // Half an hour later (chain time), the worker bills and the chain closes the deal.
    net.increase_time(1800);
    let closed = wait_for(
        "the deal closed for want of funds",
        Duration::from_secs(60),
        || logs(&net),
        || {
            let d = net.deal(deal);
            (d.status == 2).then_some(d)
        },
    );
    let billed_seconds = u128::from(closed.last_bill - closed.start);
    assert!(
        (1800..SPOT_PERIOD).contains(&billed_seconds),
        "billed {billed_seconds} s: the deal ran a little over the half hour"
    );
    // Closed by the chain (closedBy = 0), not by either party.
    let closes = net.closes(deal);
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0].0, alloy::primitives::Address::ZERO, "{closes:?}");
    let paid = PRICE * billed_seconds;
    assert_eq!(closes[0].1, funds - paid, "the refund is what did not run");
    assert_eq!(
        net.bills(deal),
        [paid],
        "one bill, for the seconds that ran"
    );
    assert_eq!(
        net.snm_balance(worker.address) - supplier_before,
        paid,
        "the supplier got exactly price × billed seconds"
    );
    assert_eq!(net.snm_balance(customer), funds - paid);

    // The node sees the deal closed; the worker stopped the task and refuses new ones.
    let shown = node.sonm_ok(&["deal", "show", &deal.to_string()]);
    assert_eq!(shown["status"], "closed", "{shown}");
    let status = wait_for(
        "the task stopped",
        Duration::from_secs(30),
        || logs(&net),
        || {
            let s = node.task_status(deal, task).ok()?;
            (s["status"] != "running").then_some(s)
        },
    );
    assert_eq!(status["status"], "finished", "{status}");
    assert_eq!(status["exit"]["kind"], "trapped", "{status}");
    assert!(
        worker
            .process
            .log_text()
            .contains("deal closed; its tasks stopped"),
        "{}",
        logs(&net)
    );
    let err = node
        .sonm(&["task", "start", &deal.to_string(), spec.to_str().unwrap()])
        .unwrap_err();
    assert!(err.contains("closed"), "{err}");

    // The DWH indexed the same payout.
    let row = wait_for(
        "the DWH indexing the close",
        Duration::from_secs(30),
        || logs(&net),
        || {
            let v = sonm_e2e::http_get(&format!("{}/v1/deals/{deal}", dwh.url))?;
            (v["deal"]["status"] == "closed").then_some(v)
        },
    );
    assert_eq!(
        row["deal"]["total_payout"].to_string().trim_matches('"'),
        paid.to_string(),
        "{row}"
    );
}
