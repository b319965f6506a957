//! The signed-order book against a real anvil with the real contracts and the real daemon:
//! asks signed in Rust are published through the client and listed, one is bought on chain
//! with `quickBuy` from what the book served and leaves it once indexed, another is cancelled
//! with `cancelNonces`, the book survives a restart, every refusal comes with its status and
//! reason, and a reorg that drops a use brings the order back.

use crate::common;

use std::sync::atomic::Ordering;

use alloy::primitives::{B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use common::{
    World, anvil, block_on, config, confirm, get, high_s_twin, post, signed_body, start, unix_now,
    url, wait_until,
};
use serde_json::Value;
use sonm_contracts::anvil::{ANVIL_CHAIN_ID, DEV_KEYS};
use sonm_contracts::{
    Market, chain_order, market_domain, sign_order, signed_order_digest, signed_ref,
};
use sonm_dwh::api::Api;
use sonm_dwh::follower::{Follower, FollowerConfig, Metrics, SharedBook, Step};
use sonm_dwh::query::{self, OrderQuery};
use sonm_dwh::signed::SignedPolicy;
use sonm_dwh::storage::{Storage, open_env};
use sonm_dwh_client::{Dwh, SignedOrder, SignedOrderQuery};
use sonm_market::{Order, OrderType};

const PATH: &str = "/v1/signed-orders";

fn key(i: usize) -> PrivateKeySigner {
    DEV_KEYS[i].parse().unwrap()
}

/// The digests of the live signed asks the client lists for `q`, in the DWH's order.
fn listed(dwh: &Dwh, q: &SignedOrderQuery) -> Vec<B256> {
    let l = dwh.signed_orders(q, 1000).unwrap();
    assert!(!l.truncated);
    l.items.iter().map(|r| r.digest).collect()
}

/// Posts a raw body: (status, reason).
fn refused(addr: std::net::SocketAddr, body: &[u8]) -> (u16, String) {
    let (status, v) = post(addr, PATH, body);
    assert!(
        v["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{status}: {v}"
    );
    (status, v["reason"].as_str().unwrap_or_default().to_owned())
}

/// What the chain takes for a signed order the book served.
fn order_ref(row: &SignedOrder) -> Market::OrderRef {
    signed_ref(&row.order, row.expiry, row.nonce, row.signature.clone())
}

#[test]
fn signed_asks_are_published_bought_cancelled_and_refused() {
    let anvil = anvil();
    let mut w = block_on(World::new(&anvil));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(vec![anvil.endpoint()], dir.path(), 1000);
    cfg.signed_orders_per_author = 3;
    let (addr, stop, handle) = start(cfg.clone(), &w);
    let dwh = Dwh::new(&format!("http://{addr}"));
    let [s1, s2, s3] = w.suppliers;
    let (k1, k2, k3) = (key(1), key(2), key(3));
    assert_eq!((k1.address(), k2.address(), k3.address()), (s1, s2, s3));
    let domain = market_domain(ANVIL_CHAIN_ID, w.addresses.contracts.market);
    let now = unix_now();
    let expiry = now + 3600;
    let bench = [1u64; 13];
    let sign = |w: &mut World, k: &PrivateKeySigner, price: u128, nonce: u64| {
        let o = w.order(OrderType::Ask, k.address(), price, 0, bench);
        let r = sign_order(k, &o, expiry, U256::from(nonce), &domain).unwrap();
        (o, r)
    };
    // s1: nonces 1, 2 and 300 (another bitmap word); s2: nonce 1.
    let (a, a_ref) = sign(&mut w, &k1, 10, 1);
    let (b, b_ref) = sign(&mut w, &k1, 12, 2);
    let (c, c_ref) = sign(&mut w, &k1, 11, 300);
    let (d, d_ref) = sign(&mut w, &k2, 9, 1);
    let mut digests = Vec::new();
    for (o, r) in [(&a, &a_ref), (&b, &b_ref), (&c, &c_ref), (&d, &d_ref)] {
        let posted = dwh
            .post_signed_order(o, expiry, r.nonce, &r.signature)
            .unwrap();
        assert!(posted.created);
        assert_eq!(
            posted.digest,
            signed_order_digest(&r.order, expiry, r.nonce, &domain)
        );
        digests.push(posted.digest);
    }
    let [da, db, dc, dd] = digests[..] else {
        unreachable!()
    };
    // The same order again: known, not added twice.
    let again = dwh
        .post_signed_order(&a, expiry, a_ref.nonce, &a_ref.signature)
        .unwrap();
    assert_eq!((again.digest, again.created), (da, false));
    // Listed cheapest first; by author; under a price; one by its digest, as signed.
    let asks = SignedOrderQuery::new(OrderType::Ask);
    assert_eq!(listed(&dwh, &asks), vec![dd, da, dc, db]);
    let mut by_s1 = asks.clone();
    by_s1.author = Some(s1);
    assert_eq!(listed(&dwh, &by_s1), vec![da, dc, db]);
    let mut cheap = asks.clone();
    cheap.price_max = Some(10);
    assert_eq!(listed(&dwh, &cheap), vec![dd, da]);
    assert!(listed(&dwh, &SignedOrderQuery::new(OrderType::Bid)).is_empty());
    // The market statistics count the four live signed asks with the placed ones.
    let side = [("type", "ask".to_owned())];
    let placed = dwh
        .get::<serde_json::Value>("/v1/orders", &side)
        .unwrap()
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .len() as u64;
    let stats = dwh
        .get::<serde_json::Value>("/v1/stats", &side)
        .unwrap()
        .unwrap();
    assert_eq!(stats["orders"].as_u64(), Some(placed + 4), "{stats}");
    let row = dwh.signed_order(da).unwrap().expect("listed");
    assert_eq!(
        (&row.order, row.expiry, row.nonce, &row.signature),
        (&a, expiry, a_ref.nonce, &a_ref.signature)
    );
    assert_eq!(dwh.signed_order(B256::repeat_byte(1)).unwrap(), None);

    // A consumer buys `a` with quickBuy from what the book served; once the use is indexed,
    // it is gone and its nonce cannot be posted again.
    let consumer = w.consumers[0];
    let receipt = block_on(confirm(
        "quickBuy (signed ask)",
        w.market().quickBuy(order_ref(&row), 0).from(consumer),
    ));
    let used = receipt
        .decoded_log::<Market::SignedOrderUsed>()
        .expect("SignedOrderUsed");
    assert_eq!(used.digest, da);
    wait_until("the use to be indexed", || {
        dwh.signed_order(da).unwrap().is_none()
    });
    assert_eq!(listed(&dwh, &asks), vec![dd, dc, db]);
    let err = dwh
        .post_signed_order(&a, expiry, a_ref.nonce, &a_ref.signature)
        .unwrap_err();
    assert_eq!(
        (err.status, err.reason.as_deref()),
        (Some(409), Some("nonce_used")),
        "{err}"
    );

    // s1 cancels nonce 300 (word 1, bit 44): `c` leaves the book.
    block_on(confirm(
        "cancelNonces",
        w.market()
            .cancelNonces(U256::from(1), U256::from(1) << 44)
            .from(s1),
    ));
    wait_until("the cancellation to be indexed", || {
        dwh.signed_order(dc).unwrap().is_none()
    });
    assert_eq!(listed(&dwh, &asks), vec![dd, db]);
    let err = dwh
        .post_signed_order(&c, expiry, c_ref.nonce, &c_ref.signature)
        .unwrap_err();
    assert_eq!(err.reason.as_deref(), Some("nonce_used"), "{err}");

    // A restart on the same directory: the book is still there.
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    let (addr, stop, handle) = start(cfg, &w);
    let dwh = Dwh::new(&format!("http://{addr}"));
    assert_eq!(listed(&dwh, &asks), vec![dd, db]);
    assert_eq!(dwh.signed_order(db).unwrap().unwrap().digest, db);

    // Refusals, each with its status and reason. A fresh order of s1's, signed right.
    let fresh = w.order(OrderType::Ask, s1, 20, 0, bench);
    let nonce = U256::from(7);
    let signed_with =
        |k: &PrivateKeySigner, o: &Order, expiry: u64, domain: &alloy::sol_types::Eip712Domain| {
            let digest = signed_order_digest(&chain_order(o), expiry, nonce, domain);
            Bytes::from(k.sign_hash_sync(&digest).unwrap().as_bytes().to_vec())
        };
    let good = signed_with(&k1, &fresh, expiry, &domain);
    let body = |o: &Order, expiry: u64, sig: &[u8]| signed_body(o, expiry, nonce, sig);
    let mut tampered = fresh.clone();
    tampered.price += 1;
    let mut placed = fresh.clone();
    placed.id = 5;
    let mut zero_bid = fresh.clone();
    zero_bid.order_type = OrderType::Bid;
    zero_bid.price = 0;
    let mut bad_v = good.to_vec();
    bad_v[64] = 29;
    let other_chain = market_domain(1, w.addresses.contracts.market);
    let other_market = market_domain(ANVIL_CHAIN_ID, w.addresses.contracts.snm);
    let past = now - 10;
    let too_far = unix_now() + 7 * 24 * 3600 + 600;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "another key",
            body(&fresh, expiry, &signed_with(&k2, &fresh, expiry, &domain)),
            400,
            "signer_not_author",
        ),
        (
            "a price changed after signing",
            body(&tampered, expiry, &good),
            400,
            "signer_not_author",
        ),
        (
            "another chain's domain",
            body(
                &fresh,
                expiry,
                &signed_with(&k1, &fresh, expiry, &other_chain),
            ),
            400,
            "signer_not_author",
        ),
        (
            "another Market's domain",
            body(
                &fresh,
                expiry,
                &signed_with(&k1, &fresh, expiry, &other_market),
            ),
            400,
            "signer_not_author",
        ),
        (
            "the high-s twin",
            body(&fresh, expiry, &high_s_twin(&good)),
            400,
            "high_s_signature",
        ),
        (
            "64 bytes",
            body(&fresh, expiry, &good[..64]),
            400,
            "malformed_signature",
        ),
        (
            "v = 29",
            body(&fresh, expiry, &bad_v),
            400,
            "malformed_signature",
        ),
        (
            "expired",
            body(&fresh, past, &signed_with(&k1, &fresh, past, &domain)),
            400,
            "expired",
        ),
        (
            "too far ahead",
            body(&fresh, too_far, &signed_with(&k1, &fresh, too_far, &domain)),
            400,
            "expiry_too_far",
        ),
        (
            "a placed order's id",
            body(&placed, expiry, &signed_with(&k1, &placed, expiry, &domain)),
            400,
            "bad_order",
        ),
        (
            "a bid of price 0",
            body(
                &zero_bid,
                expiry,
                &signed_with(&k1, &zero_bid, expiry, &domain),
            ),
            400,
            "bad_order",
        ),
        ("garbage", b"{not json".to_vec(), 400, "bad_json"),
        (
            "an unknown field",
            {
                let mut v: Value = serde_json::from_slice(&body(&fresh, expiry, &good)).unwrap();
                v["colour"] = "red".into();
                v.to_string().into_bytes()
            },
            400,
            "bad_json",
        ),
        (
            "a nonce that is not a number",
            {
                let mut v: Value = serde_json::from_slice(&body(&fresh, expiry, &good)).unwrap();
                v["nonce"] = "seven".into();
                v.to_string().into_bytes()
            },
            400,
            "bad_json",
        ),
        ("a body over 64 KiB", vec![b' '; 70 << 10], 413, "too_large"),
    ];
    for (what, body, status, reason) in cases {
        assert_eq!(refused(addr, &body), (status, reason.to_owned()), "{what}");
    }
    // The refused order itself is fine: accepted once it is signed right.
    let (status, v) = post(addr, PATH, &body(&fresh, expiry, &good));
    assert_eq!(status, 201, "{v}");

    // The bound per author (3 here): s3's fourth live order is refused, a known one is not.
    let mut s3_orders = Vec::new();
    for n in 0..4u64 {
        let (o, r) = sign(&mut w, &k3, 30 + u128::from(n), n);
        s3_orders.push((o, r));
    }
    for (o, r) in &s3_orders[..3] {
        let p = dwh
            .post_signed_order(o, expiry, r.nonce, &r.signature)
            .unwrap();
        assert!(p.created);
    }
    let (o, r) = &s3_orders[3];
    let err = dwh
        .post_signed_order(o, expiry, r.nonce, &r.signature)
        .unwrap_err();
    assert_eq!(
        (err.status, err.reason.as_deref()),
        (Some(429), Some("author_limit")),
        "{err}"
    );
    let (o, r) = &s3_orders[0];
    let known = dwh.post_signed_order(o, expiry, r.nonce, &r.signature);
    assert!(!known.unwrap().created);
    // Other methods and paths.
    assert_eq!(post(addr, "/v1/orders", b"{}").0, 405);
    assert_eq!(post(addr, "/v1/signed-orders?x=1", b"{}").0, 400);
    for bad in [
        "/v1/signed-orders",
        "/v1/signed-orders?type=ask&status=active",
        "/v1/signed-orders/0x12",
    ] {
        assert_eq!(get(addr, bad).0, 400, "{bad}");
    }
    let (_, doc) = get(addr, "/openapi.json");
    assert!(doc["paths"][PATH]["post"].is_object(), "{doc}");
    assert!(doc["paths"][PATH]["get"].is_object());
    assert!(doc["paths"]["/v1/signed-orders/{digest}"]["get"].is_object());
    let (_, metrics) = get(addr, "/metrics");
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("sonm_dwh_signed_orders_refused_total"),
        "{metrics}"
    );
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

/// Steps until caught up; returns the steps taken.
fn catch_up(f: &mut Follower<'_, '_>) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..1000 {
        let step = block_on(f.step()).unwrap();
        if matches!(step, Step::Idle { .. }) {
            return steps;
        }
        steps.push(step);
    }
    panic!("no end in sight: {steps:?}");
}

#[test]
fn a_reorg_that_drops_a_use_brings_the_signed_order_back() {
    let anvil = anvil();
    let mut w = block_on(World::new(&anvil));
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 64 << 20).unwrap();
    let storage = Storage::open(&env).unwrap();
    let (book, metrics) = (SharedBook::default(), Metrics::default());
    let mut fc = FollowerConfig::new(vec![anvil.endpoint().parse().unwrap()]);
    fc.confirmations = 0;
    fc.keep_blocks = 64;
    let mut f = Follower::new(&storage, &book, &metrics, &w.addresses, fc).unwrap();
    let policy = SignedPolicy::new(&w.addresses, 3600, 16, 10_000);
    let api = Api {
        storage: &storage,
        book: &book,
        metrics: &metrics,
        signed: &policy,
    };
    catch_up(&mut f);
    let k1 = key(1);
    let expiry = unix_now() + 600;
    let o = w.order(OrderType::Ask, k1.address(), 10, 0, [1; 13]);
    let r = sign_order(&k1, &o, expiry, U256::from(42), &policy.domain).unwrap();
    let a = api.post(PATH, &signed_body(&o, expiry, r.nonce, &r.signature));
    assert_eq!(a.status, 201, "{}", a.body);
    let digest = signed_order_digest(&r.order, expiry, r.nonce, &policy.domain);
    let live = |storage: &Storage<'_>| -> Vec<B256> {
        let txn = storage.read_txn().unwrap();
        let page =
            query::signed_orders(storage, &txn, &OrderQuery::new(OrderType::Ask), unix_now())
                .unwrap();
        page.items.iter().map(|r| r.digest).collect()
    };
    assert_eq!(live(&storage), vec![digest]);

    let snapshot: U256 = block_on(w.provider.raw_request("evm_snapshot".into(), ())).unwrap();
    block_on(confirm(
        "quickBuy",
        w.market().quickBuy(r.clone(), 0).from(w.consumers[0]),
    ));
    catch_up(&mut f);
    assert!(live(&storage).is_empty(), "used: out of the book");
    let txn = storage.read_txn().unwrap();
    assert!(storage.nonce_spent(&txn, k1.address(), r.nonce).unwrap());
    drop(txn);
    let old_head = block_on(w.head());

    // Another future without the purchase: the order is back, its nonce free again.
    let reverted: bool =
        block_on(w.provider.raw_request("evm_revert".into(), (snapshot,))).unwrap();
    assert!(reverted);
    w.provider = sonm_contracts::deploy::provider(url(&anvil));
    while block_on(w.head()) <= old_head + 1 {
        let _: Value = block_on(w.provider.raw_request("evm_mine".into(), ())).unwrap();
    }
    let steps = catch_up(&mut f);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Reorg { .. })),
        "{steps:?}"
    );
    assert_eq!(live(&storage), vec![digest], "the dropped use is undone");
    let txn = storage.read_txn().unwrap();
    assert!(!storage.nonce_spent(&txn, k1.address(), r.nonce).unwrap());
    drop(txn);
    // And it can be bought on this branch.
    block_on(confirm(
        "quickBuy again",
        w.market().quickBuy(r, 0).from(w.consumers[1]),
    ));
    catch_up(&mut f);
    assert!(live(&storage).is_empty());
}
