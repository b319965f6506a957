//! The customer blacklists the supplier when closing, then cannot buy its next ask. Real
//! processes: anvil, sonm-dwh, sonm-worker, sonm-node (searching through the DWH) and the sonm
//! CLI. (daemons/node/tests/integration/flow.rs already checks that `close --blacklist` hides the supplier's
//! asks from the node's search on chain logs; this test goes further: the node searches through
//! the DWH, which still lists the re-listed ask, and buying it by id is refused.)

use std::time::Duration;

use sonm_e2e::{CONSUMER_KEY, Dwh, Net, Node, SNM, Worker, address_of, http_get, logs, wait_for};

#[test]
fn a_blacklisted_supplier_cannot_be_bought_again() {
    let customer = address_of(CONSUMER_KEY);
    let net = Net::start(&[], &[(customer, 1_000 * SNM)]);
    let dwh = Dwh::start(&net);
    let worker = Worker::start(&net, 600);
    let node = Node::start(&net, CONSUMER_KEY, &worker, Some(&dwh));

    let first = node.find_ask();
    let deal = node.buy(first);
    let closed = node.sonm_ok(&["deal", "close", &deal.to_string(), "--blacklist"]);
    assert_eq!(closed["status"], "closed", "{closed}");

    // The worker puts its slice back on sale: a new ask, which the DWH lists (it lists every
    // active ask; whose blacklist applies is the buyer's business).
    let asks_url = format!("{}/v1/orders?type=ask", dwh.url);
    let next = wait_for(
        "the worker's next ask in the DWH",
        Duration::from_secs(60),
        || logs(&net),
        || {
            let v = http_get(&asks_url)?;
            v["items"]
                .as_array()?
                .iter()
                .filter_map(|o| o["order"]["id"].as_u64())
                .find(|&id| id != first)
        },
    );

    // The node's search leaves it out...
    let found = node.sonm_ok(&["market", "asks"]);
    assert_eq!(found["orders"], serde_json::json!([]), "{found}");
    // ... and buying it by id is refused, with the reason, and nothing moves.
    let before = net.snm_balance(customer);
    let err = node
        .sonm(&["deal", "buy", &next.to_string(), "--duration", "0"])
        .expect_err("a blacklisted supplier's ask cannot be bought");
    assert!(err.to_lowercase().contains("blacklist"), "{err}");
    assert_eq!(net.snm_balance(customer), before);
}
