//! The indexing core and the LMDB store without a chain: apply and undo, indexes,
//! pages, the API's answers to bad queries, the signed-order book's nonces, pages and
//! expiry.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::anvil::DEV_KEYS;
use sonm_contracts::{market_domain, sign_order};
use sonm_dwh::api::Api;
use sonm_dwh::follower::{Metrics, SharedBook};
use sonm_dwh::index::{BlockEvents, Key, MemStore, Record, apply_block, undo_block};
use sonm_dwh::query::{self, OrderQuery};
use sonm_dwh::signed::SignedPolicy;
use sonm_dwh::storage::{Checkpoint, Role, Storage, open_env};
use sonm_dwh::{ChainEvent, OrderStatus, SignedOrderRow};
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
        signed: &policy(256),
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

fn policy(per_author: usize) -> SignedPolicy {
    SignedPolicy {
        domain: market_domain(31337, addr(0x4d)),
        max_ttl_s: 7 * 24 * 3600,
        per_author,
        total: 1_000,
    }
}

/// A signed-order row as the book keeps it; the signature is not checked by the core.
fn signed_row(author: u8, nonce: u64, digest: u8) -> SignedOrderRow {
    SignedOrderRow {
        order: order(0, OrderType::Ask, author, 10, 1),
        expiry: 1_000,
        nonce: U256::from(nonce),
        signature: Bytes::from(vec![0u8; 65]),
        digest: B256::repeat_byte(digest),
    }
}

#[test]
fn spent_nonces_take_signed_orders_out_and_undo_brings_them_back() {
    let mut store = MemStore::default();
    // Author 1: nonce 5 twice (a re-priced order with the same nonce), 7 and 9 (word 0), 261
    // (word 1, bit 5); author 2: nonce 5.
    let rows = [
        signed_row(1, 5, 0xa1),
        signed_row(1, 5, 0xa2),
        signed_row(1, 7, 0xa3),
        signed_row(1, 9, 0xa4),
        signed_row(1, 261, 0xa5),
        signed_row(2, 5, 0xb1),
    ];
    for r in &rows {
        sonm_dwh::Store::put(
            &mut store,
            &Key::SignedOrder(r.digest),
            Some(&Record::SignedOrder(r.clone())),
        )
        .unwrap();
    }
    let digests = |s: &MemStore| -> Vec<u8> {
        s.records
            .keys()
            .filter_map(|k| match k {
                Key::SignedOrder(d) => Some(d[0]),
                _ => None,
            })
            .collect()
    };
    let bits = |s: &MemStore, who: u8, word: u64| match s
        .records
        .get(&Key::NonceWord(addr(who), U256::from(word)))
    {
        Some(Record::NonceBits(b)) => *b,
        _ => U256::ZERO,
    };
    let one = |i: u64| U256::from(1) << i as usize;
    let blocks = [
        block(
            1,
            vec![ChainEvent::SignedOrderUsed {
                digest: B256::repeat_byte(0xa1),
                author: addr(1),
                nonce: U256::from(5),
                deal: 1,
            }],
        ),
        block(
            2,
            vec![ChainEvent::NoncesCancelled {
                author: addr(1),
                word: U256::ZERO,
                mask: one(7) | one(200) | one(5),
            }],
        ),
    ];
    let before = store.clone();
    let used = apply_block(&mut store, &blocks[0]).unwrap();
    // Both orders of nonce 5 are gone (the chain takes neither now); author 2's nonce 5 is
    // another author's.
    assert_eq!(digests(&store), vec![0xa3, 0xa4, 0xa5, 0xb1]);
    assert_eq!(bits(&store, 1, 0), one(5));
    assert_eq!(bits(&store, 2, 0), U256::ZERO);
    let after_use = store.clone();
    let cancelled = apply_block(&mut store, &blocks[1]).unwrap();
    assert_eq!(digests(&store), vec![0xa4, 0xa5, 0xb1], "nonce 7 cancelled");
    assert_eq!(bits(&store, 1, 0), one(5) | one(7) | one(200));
    assert_eq!(bits(&store, 1, 1), U256::ZERO);
    // A nonce used twice contradicts the chain; cancelling a spent one again does not.
    let twice = apply_block(&mut store.clone(), &blocks[0]).unwrap_err();
    assert!(twice.to_string().contains("spent before"), "{twice}");
    apply_block(&mut store.clone(), &blocks[1]).unwrap();
    // Undone in reverse, each block restores exactly the state before it.
    undo_block(&mut store, cancelled.undo).unwrap();
    assert_eq!(store, after_use);
    undo_block(&mut store, used.undo).unwrap();
    assert_eq!(store, before);
    assert_eq!(digests(&store).len(), 6);
}

/// A signed ask of dev key `k` (its address the author), priced `price`.
fn signed_post(k: usize, price: u128, nonce: u64, expiry: u64) -> (SignedOrderRow, Vec<u8>) {
    let key: PrivateKeySigner = DEV_KEYS[k].parse().unwrap();
    let mut o = order(0, OrderType::Ask, 0, price, 2);
    o.author = key.address();
    let domain = policy(0).domain;
    let r = sign_order(&key, &o, expiry, U256::from(nonce), &domain).unwrap();
    let digest = sonm_contracts::signed_order_digest(&r.order, expiry, r.nonce, &domain);
    let body = serde_json::json!({
        "order": o, "expiry": expiry, "nonce": format!("{:#x}", r.nonce), "signature": r.signature,
    });
    let row = SignedOrderRow {
        order: o,
        expiry,
        nonce: r.nonce,
        signature: r.signature,
        digest,
    };
    (row, body.to_string().into_bytes())
}

#[test]
fn lmdb_signed_book_pages_spends_unwinds_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 16 << 20).unwrap();
    let storage = Storage::open(&env).unwrap();
    let (book, metrics, policy) = (SharedBook::default(), Metrics::default(), policy(4));
    let api = Api {
        storage: &storage,
        book: &book,
        metrics: &metrics,
        signed: &policy,
    };
    let now = sonm_dwh::signed::unix_now();
    let expiry = now + 3600;
    // Key 1: four asks (nonces 1..=4), key 2: one; the bound is 4 per author.
    let posts: Vec<(SignedOrderRow, Vec<u8>)> = [(1, 30, 1), (1, 10, 2), (1, 20, 3), (2, 15, 1)]
        .into_iter()
        .map(|(k, price, nonce)| signed_post(k, price, nonce, expiry))
        .collect();
    for (row, body) in &posts {
        let a = api.post("/v1/signed-orders", body);
        assert_eq!(a.status, 201, "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["digest"], serde_json::to_value(row.digest).unwrap());
    }
    assert_eq!(api.post("/v1/signed-orders", &posts[0].1).status, 200);
    let digests = |path: &str| -> Vec<B256> {
        let mut out = Vec::new();
        let mut next = String::new();
        loop {
            let a = api.handle("GET", &format!("{path}{next}"));
            assert_eq!(a.status, 200, "{path}: {}", a.body);
            let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            for item in v["items"].as_array().unwrap() {
                let row: SignedOrderRow = serde_json::from_value(item.clone()).unwrap();
                out.push(row.digest);
            }
            match v["next"].as_str() {
                Some(c) => next = format!("&cursor={c}"),
                None => return out,
            }
        }
    };
    let d = |i: usize| posts[i].0.digest;
    // Cheapest first, in pages of one; filters; the other side is empty.
    assert_eq!(
        digests("/v1/signed-orders?type=ask&limit=1"),
        vec![d(1), d(3), d(2), d(0)]
    );
    let author = posts[0].0.order.author;
    assert_eq!(
        digests(&format!(
            "/v1/signed-orders?type=ask&author={author}&price_min=11"
        )),
        vec![d(2), d(0)]
    );
    assert_eq!(
        digests("/v1/signed-orders?type=ask&price_max=15&limit=1"),
        vec![d(1), d(3)]
    );
    assert!(digests("/v1/signed-orders?type=bid").is_empty());
    let one = api.handle("GET", &format!("/v1/signed-orders/{}", d(1)));
    assert_eq!(one.status, 200);
    let row: SignedOrderRow = serde_json::from_str(&one.body).unwrap();
    assert_eq!(row, posts[1].0, "everything a buyer needs, as signed");

    // The bound: a fourth order of key 1 fits, a fifth does not.
    let (_, fourth) = signed_post(1, 40, 4, expiry);
    assert_eq!(api.post("/v1/signed-orders", &fourth).status, 201);
    let (_, fifth) = signed_post(1, 50, 5, expiry);
    let a = api.post("/v1/signed-orders", &fifth);
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("author_limit"), "{}", a.body);
    // The book's own bound (5 held): another author is refused, a known order still answers.
    let full = SignedPolicy {
        total: 5,
        ..policy.clone()
    };
    let api_full = Api {
        signed: &full,
        ..api
    };
    let (_, other) = signed_post(3, 60, 1, expiry);
    let a = api_full.post("/v1/signed-orders", &other);
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("book_full"), "{}", a.body);
    assert_eq!(api_full.post("/v1/signed-orders", &posts[0].1).status, 200);

    // Nonce 2 of key 1 used in block 1: the order leaves the book, the nonce is spent.
    let cp = |n: u64| Checkpoint {
        number: n,
        hash: B256::from(U256::from(n * 1000 + 7)),
    };
    storage
        .commit_batch(&[block(1, vec![])], cp(1), 100)
        .unwrap();
    let used = block(
        2,
        vec![ChainEvent::SignedOrderUsed {
            digest: d(1),
            author,
            nonce: U256::from(2),
            deal: 1,
        }],
    );
    storage.commit_batch(&[used], cp(2), 100).unwrap();
    assert_eq!(
        digests("/v1/signed-orders?type=ask"),
        vec![d(3), d(2), d(0), posts_digest(&fourth)]
    );
    assert_eq!(
        api.handle("GET", &format!("/v1/signed-orders/{}", d(1)))
            .status,
        404
    );
    let a = api.post("/v1/signed-orders", &posts[1].1);
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("nonce_used"), "{}", a.body);
    // With one of key 1's orders gone, a fifth fits.
    assert_eq!(api.post("/v1/signed-orders", &fifth).status, 201);
    // The block is unwound (a reorg): the order is back, its nonce free.
    storage.unwind_to(cp(1)).unwrap();
    assert_eq!(
        digests("/v1/signed-orders?type=ask&limit=2"),
        vec![
            d(1),
            d(3),
            d(2),
            d(0),
            posts_digest(&fourth),
            posts_digest(&fifth)
        ]
    );
    let txn = storage.read_txn().unwrap();
    assert!(!storage.nonce_spent(&txn, author, U256::from(2)).unwrap());
    drop(txn);
    assert_eq!(api.post("/v1/signed-orders", &posts[1].1).status, 200);

    // Expiry: not returned once past, then purged from storage.
    let txn = storage.read_txn().unwrap();
    let later =
        query::signed_orders(&storage, &txn, &OrderQuery::new(OrderType::Ask), expiry).unwrap();
    assert!(later.items.is_empty(), "nothing is live at its expiry");
    drop(txn);
    assert_eq!(storage.purge_expired_signed(now).unwrap(), 0);
    assert_eq!(storage.purge_expired_signed(expiry).unwrap(), 6);
    let txn = storage.read_txn().unwrap();
    assert!(storage.signed_order(&txn, d(0)).unwrap().is_none());
    drop(txn);

    // Bad queries and refusals that need no chain.
    for bad in [
        "/v1/signed-orders",
        "/v1/signed-orders?type=ask&status=active",
        "/v1/signed-orders?type=ask&price_min=3&price_max=2",
        "/v1/signed-orders?type=ask&limit=0",
        "/v1/signed-orders/0x12",
    ] {
        assert_eq!(api.handle("GET", bad).status, 400, "{bad}");
    }
    let a = api.handle(
        "GET",
        &format!("/v1/signed-orders/{}", B256::repeat_byte(7)),
    );
    assert_eq!(a.status, 404);
    assert_eq!(api.post("/v1/orders", b"{}").status, 405);
    assert_eq!(api.post("/v1/signed-orders?x=1", &fifth).status, 400);
}

fn posts_digest(body: &[u8]) -> B256 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let o: Order = serde_json::from_value(v["order"].clone()).unwrap();
    let nonce: U256 = serde_json::from_value(v["nonce"].clone()).unwrap();
    sonm_contracts::signed_order_digest(
        &sonm_contracts::chain_order(&o),
        v["expiry"].as_u64().unwrap(),
        nonce,
        &policy(0).domain,
    )
}
