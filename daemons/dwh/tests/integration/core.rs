//! The indexing core and the LMDB store without a chain: apply and undo, indexes,
//! pages, the API's answers to bad queries.

use alloy::primitives::{Address, B256};
use sonm_dwh::api::Api;
use sonm_dwh::follower::{Metrics, SharedBook};
use sonm_dwh::index::{BlockEvents, MemStore, apply_block, undo_block};
use sonm_dwh::query::{self, OrderQuery};
use sonm_dwh::storage::{Checkpoint, Role, Storage, open_env};
use sonm_dwh::{ChainEvent, OrderStatus};
use sonm_market::{Benchmarks, IdentityLevel, NetFlags, Order, OrderType};

fn addr(n: u8) -> Address {
    Address::repeat_byte(n)
}

fn order(id: u64, t: OrderType, author: u8, price: u128, cores: u64) -> Order {
    let mut b = [0u64; 13];
    b[2] = cores;
    Order {
        id,
        order_type: t,
        author: addr(author),
        counterparty: None,
        duration: 0,
        price,
        netflags: NetFlags::NONE,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: Benchmarks(b),
    }
}

fn block(number: u64, events: Vec<ChainEvent>) -> BlockEvents {
    BlockEvents {
        number,
        hash: B256::from(alloy::primitives::U256::from(number * 1000 + 7)),
        events,
    }
}

/// Blocks 1..=4: orders, a deal with two bills and a close, a change request,
/// a worker, a blacklist entry and a level.
fn history() -> Vec<BlockEvents> {
    vec![
        block(
            1,
            vec![
                ChainEvent::OrderPlaced(order(1, OrderType::Ask, 1, 10, 4)),
                ChainEvent::OrderPlaced(order(2, OrderType::Ask, 2, 5, 2)),
                ChainEvent::OrderPlaced(order(3, OrderType::Bid, 3, 12, 2)),
                ChainEvent::IdentityLevelChanged {
                    subject: addr(3),
                    level: IdentityLevel::Identified,
                },
                ChainEvent::GateThresholdSet { threshold: 1 },
                ChainEvent::GateKeeperSet {
                    keeper: addr(6),
                    daily_limit: 100,
                },
                ChainEvent::GateKeeperSet {
                    keeper: addr(7),
                    daily_limit: 50,
                },
            ],
        ),
        block(
            2,
            vec![
                ChainEvent::OrderPlaced(order(4, OrderType::Ask, 1, 7, 8)),
                ChainEvent::OrderCancelled { id: 2 },
                ChainEvent::WorkerAnnounced {
                    worker: addr(1),
                    master: addr(9),
                },
                ChainEvent::WorkerConfirmed {
                    worker: addr(1),
                    master: addr(9),
                },
                ChainEvent::CertificateIssued {
                    id: 1,
                    validator: addr(8),
                    subject: addr(5),
                    attribute_type: alloy::primitives::U256::from(1102u64),
                    value: b"nl".to_vec().into(),
                },
            ],
        ),
        block(
            3,
            vec![
                ChainEvent::DealOpened {
                    id: 1,
                    supplier: addr(1),
                    consumer: addr(3),
                    master: addr(9),
                    ask: 1,
                    bid: 3,
                    price: 10,
                    duration: 0,
                    start: 100,
                    blocked: 36_000,
                },
                ChainEvent::DealBilled {
                    id: 1,
                    paid: 50,
                    blocked: 36_000,
                    billed_until: 105,
                },
                ChainEvent::ChangeRequestCreated {
                    id: 1,
                    deal: 1,
                    requester: addr(3),
                    price: 11,
                    duration: 0,
                },
            ],
        ),
        block(
            4,
            vec![
                ChainEvent::DealBilled {
                    id: 1,
                    paid: 70,
                    blocked: 0,
                    billed_until: 112,
                },
                ChainEvent::DealClosed {
                    id: 1,
                    closed_by: Some(addr(3)),
                    end: 112,
                    refunded: 35_930,
                    blacklisted: true,
                },
                ChainEvent::Blacklisted {
                    owner: addr(3),
                    who: addr(9),
                },
                ChainEvent::CertificateRevoked { id: 1, by: addr(8) },
                ChainEvent::GateKeeperFrozen {
                    keeper: addr(7),
                    frozen: true,
                },
                ChainEvent::GateKeeperSet {
                    keeper: addr(6),
                    daily_limit: 0,
                },
                ChainEvent::GateThresholdSet { threshold: 2 },
                ChainEvent::GateLocked {
                    nonce: 1,
                    from: addr(3),
                    to: addr(4),
                    amount: 500,
                    dst_chain: 7,
                },
                ChainEvent::GatePaid {
                    transfer: B256::repeat_byte(0xaa),
                    src_chain: 7,
                    src_gate: addr(8),
                    nonce: 3,
                    to: addr(3),
                    amount: 40,
                },
            ],
        ),
    ]
}

#[test]
fn every_block_undoes_exactly() {
    let mut store = MemStore::default();
    let mut states = vec![store.clone()];
    let mut undos = Vec::new();
    for b in history() {
        undos.push(apply_block(&mut store, &b).unwrap().undo);
        states.push(store.clone());
    }
    // orders, deal, bills, change request, worker, blacklist entry, level, certificate,
    // gate lock and payment, gate threshold and keepers
    assert_eq!(
        store.records.len(),
        4 + 1 + 2 + 1 + 1 + 1 + 1 + 1 + 2 + 1 + 2
    );
    while let Some(undo) = undos.pop() {
        undo_block(&mut store, undo).unwrap();
        states.pop();
        assert_eq!(&store, states.last().unwrap());
    }
    assert!(store.records.is_empty());
}

#[test]
fn events_for_unknown_rows_are_errors() {
    let mut store = MemStore::default();
    let err = apply_block(
        &mut store,
        &block(1, vec![ChainEvent::OrderCancelled { id: 5 }]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("order 5"), "{err}");
    let b = block(
        1,
        vec![ChainEvent::OrderPlaced(order(1, OrderType::Ask, 1, 1, 1))],
    );
    apply_block(&mut store, &b).unwrap();
    assert!(
        apply_block(&mut store, &b).is_err(),
        "an order placed twice"
    );
}

#[test]
fn lmdb_indexes_follow_batches_and_unwinds() {
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 16 << 20).unwrap();
    let storage = Storage::open(&env).unwrap();
    let blocks = history();
    let cp = |n: u64| Checkpoint {
        number: n,
        hash: B256::from(alloy::primitives::U256::from(n * 1000 + 7)),
    };
    storage.commit_batch(&blocks[..2], cp(2), 100).unwrap();
    let book = SharedBook::default();
    book.apply(storage.commit_batch(&blocks[2..], cp(5), 100).unwrap());
    assert_eq!(storage.checkpoint().unwrap(), Some(cp(5)));

    let txn = storage.read_txn().unwrap();
    let ask_ids = |q: &OrderQuery| -> Vec<u64> {
        query::orders(&storage, &txn, q)
            .unwrap()
            .items
            .iter()
            .map(|r| r.order.id)
            .collect()
    };
    assert_eq!(ask_ids(&OrderQuery::new(OrderType::Ask)), vec![4]);
    let mut q = OrderQuery::new(OrderType::Ask);
    q.status = OrderStatus::Matched;
    assert_eq!(ask_ids(&q), vec![1]);
    q.status = OrderStatus::Cancelled;
    assert_eq!(ask_ids(&q), vec![2]);
    let d = storage.deal(&txn, 1).unwrap().unwrap();
    assert_eq!(d.deal.total_payout, 120);
    assert_eq!(d.bills, 2);
    assert!(d.blacklisted);
    for (who, role) in [
        (1, Role::Supplier),
        (3, Role::Consumer),
        (9, Role::Master),
        (9, Role::Any),
    ] {
        let page = query::deals(&storage, &txn, addr(who), role, None, 10, None).unwrap();
        assert_eq!(page.items.len(), 1, "{who} as {role:?}");
    }
    assert!(
        query::deals(&storage, &txn, addr(1), Role::Consumer, None, 10, None)
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(query::bills(&storage, &txn, 1).unwrap().len(), 2);
    assert_eq!(query::change_requests(&storage, &txn, 1).unwrap().len(), 1);
    assert_eq!(
        query::blacklist(&storage, &txn, addr(3)).unwrap(),
        vec![addr(9)]
    );
    let p = query::profile(&storage, &txn, addr(1)).unwrap();
    assert_eq!(p.master, Some(addr(9)));
    assert_eq!(query::transfers(&storage, &txn, addr(3)).unwrap().len(), 2);
    assert_eq!(query::transfers(&storage, &txn, addr(4)).unwrap().len(), 1);
    let identified =
        query::profiles_by_level(&storage, &txn, IdentityLevel::Identified, 10, None).unwrap();
    assert_eq!(identified.items, vec![addr(3)]);
    // The country certificate was revoked in block 4.
    let nl = query::profiles_by_country(&storage, &txn, "NL", None, 10, None).unwrap();
    assert!(nl.items.is_empty());
    // The gate: keeper 6 removed, keeper 7 frozen, threshold raised, all in block 4.
    let gate = query::gate(&storage, &txn).unwrap();
    assert_eq!(gate.threshold, Some(2));
    let keepers: Vec<_> = gate
        .keepers
        .iter()
        .map(|k| (k.keeper, k.daily_limit, k.frozen))
        .collect();
    assert_eq!(keepers, vec![(addr(7), 50, true)]);
    drop(txn);

    // Unwind to block 2: the deal, its bills and the blacklist entry go; order 1 is
    // active again, and back in the book.
    book.apply(storage.unwind_to(cp(2)).unwrap());
    assert_eq!(storage.checkpoint().unwrap(), Some(cp(2)));
    let txn = storage.read_txn().unwrap();
    assert!(storage.deal(&txn, 1).unwrap().is_none());
    assert!(query::bills(&storage, &txn, 1).unwrap().is_empty());
    assert!(
        query::blacklist(&storage, &txn, addr(3))
            .unwrap()
            .is_empty()
    );
    assert!(
        query::deals(&storage, &txn, addr(9), Role::Any, None, 10, None)
            .unwrap()
            .items
            .is_empty()
    );
    let ids: Vec<u64> = query::orders(&storage, &txn, &OrderQuery::new(OrderType::Ask))
        .unwrap()
        .items
        .iter()
        .map(|r| r.order.id)
        .collect();
    assert_eq!(ids, vec![4, 1], "by price");
    assert!(book.read(|b| b.contains(1) && b.contains(3)));
    // The revocation is undone: the country index has the subject again.
    let nl = query::profiles_by_country(&storage, &txn, "nl", None, 10, None).unwrap();
    assert_eq!(nl.items, vec![addr(5)]);
    let gate = query::gate(&storage, &txn).unwrap();
    assert_eq!(gate.threshold, Some(1));
    let keepers: Vec<_> = gate
        .keepers
        .iter()
        .map(|k| (k.keeper, k.daily_limit, k.frozen))
        .collect();
    assert_eq!(keepers, vec![(addr(6), 100, false), (addr(7), 50, false)]);
    // The recorded blocks are those with events and the batch ends, newest first.
    let recorded: Vec<u64> = storage
        .recorded_blocks()
        .unwrap()
        .iter()
        .map(|c| c.number)
        .collect();
    assert_eq!(recorded, vec![2, 1]);
}

#[test]
fn pages_continue_from_their_cursor_and_bad_queries_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 16 << 20).unwrap();
    let storage = Storage::open(&env).unwrap();
    let events = (1..=25u64)
        .map(|i| {
            ChainEvent::OrderPlaced(order(
                i,
                OrderType::Bid,
                (i % 3) as u8,
                u128::from(i % 7 + 1),
                i % 5,
            ))
        })
        .collect();
    let book = SharedBook::default();
    book.apply(
        storage
            .commit_batch(
                &[block(1, events)],
                Checkpoint {
                    number: 1,
                    hash: B256::ZERO,
                },
                10,
            )
            .unwrap(),
    );
    let metrics = Metrics::default();
    let api = Api {
        storage: &storage,
        book: &book,
        metrics: &metrics,
    };
    let mut got = Vec::new();
    let mut path = "/v1/orders?type=bid&limit=4&benchmarks=cpu-cores%3D2".to_owned();
    for _ in 0..100 {
        let a = api.handle("GET", &path);
        assert_eq!(a.status, 200, "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        for row in v["items"].as_array().unwrap() {
            got.push((
                row["order"]["price"].as_u64().unwrap(),
                row["order"]["id"].as_u64().unwrap(),
            ));
        }
        match v["next"].as_str() {
            Some(c) => {
                path = format!("/v1/orders?type=bid&limit=4&benchmarks=cpu-cores%3D2&cursor={c}")
            }
            None => break,
        }
    }
    let mut want: Vec<(u64, u64)> = (1..=25u64)
        .filter(|i| i % 5 >= 2)
        .map(|i| (i % 7 + 1, i))
        .collect();
    want.sort();
    assert_eq!(got, want);

    let other_cursor = {
        let a = api.handle("GET", "/v1/orders?type=ask&limit=1");
        assert_eq!(a.status, 200);
        a
    };
    let _ = other_cursor;
    let first = api.handle("GET", "/v1/orders?type=bid&limit=1");
    let v: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    let cursor = v["next"].as_str().unwrap().to_owned();
    let a = api.handle("GET", &format!("/v1/orders?type=ask&cursor={cursor}"));
    assert_eq!(a.status, 400, "a cursor of another query");
    for bad in [
        "/v1/orders?type=bid&limit=1001",
        "/v1/orders?type=bid&netflags=sideways",
        "/v1/orders?type=bid&identity_level=9",
        "/v1/orders?type=bid&price_min=-1",
        "/v1/orders?type=bid&author=0xzz",
        "/v1/orders?type=bid&benchmarks=cpu-cores",
        "/v1/orders?type=bid&%zz=1",
        "/v1/deals",
        "/v1/deals?party=0x0000000000000000000000000000000000000001&role=boss",
        "/v1/deals?party=0x0000000000000000000000000000000000000001&status=dead",
    ] {
        let a = api.handle("GET", bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.body.contains("error"));
    }
    assert_eq!(api.handle("POST", "/v1/orders").status, 405);
    assert_eq!(api.handle("GET", "/v2/nothing").status, 404);
    let a = api.handle("GET", "/v1/orders/3/matches");
    assert_eq!(a.status, 200, "{}", a.body);
    // Every query answered so far is in the latency histogram: cumulative buckets that
    // never decrease and end at the count.
    let answered = metrics.queries.load(std::sync::atomic::Ordering::Relaxed);
    let body = api.handle("GET", "/metrics").body;
    assert!(body.contains("sonm_dwh_queries_total"));
    let buckets: Vec<u64> = body
        .lines()
        .filter(|l| l.starts_with("sonm_dwh_query_duration_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 10, "{body}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{body}");
    assert_eq!(*buckets.last().unwrap(), answered);
    assert!(body.contains(&format!(
        "sonm_dwh_query_duration_seconds_count {answered}\n"
    )));
    assert!(body.contains("le=\"0.001\""), "{body}");
}
