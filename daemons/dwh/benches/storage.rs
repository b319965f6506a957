//! The storage path, without a chain: ingest (decoded events committed to LMDB in
//! batches, as the follower commits them), orders-by-benchmarks queries, and the signed-order
//! book (posts through the API's own `signed::accept`, listings, stats), each with a baseline
//! measured in the same run.
//!
//! `cargo bench -p sonm-dwh --bench storage` (sizes: `SONM_DWH_BENCH_EVENTS`,
//! default 100,000; `SONM_DWH_BENCH_ORDERS`, default 1,000,000; `SONM_DWH_BENCH_SIGNED`,
//! default 20,000).

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use sonm_dwh::ChainEvent;
use sonm_dwh::follower::SharedBook;
use sonm_dwh::index::BlockEvents;
use sonm_dwh::query::{self, OrderQuery};
use sonm_dwh::storage::{Checkpoint, Storage, open_env};
use sonm_market::{Benchmarks, IdentityLevel, MarketStats, NetFlags, Order, OrderType};

/// A fixed-seed xorshift, so every run indexes the same orders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_order(rng: &mut Rng, id: u64) -> Order {
    let mut b = [0u64; 13];
    for v in b.iter_mut() {
        *v = rng.below(16);
    }
    Order {
        id,
        order_type: if rng.below(2) == 0 {
            OrderType::Ask
        } else {
            OrderType::Bid
        },
        author: Address::repeat_byte((rng.below(200) + 1) as u8),
        counterparty: None,
        duration: [0, 3600, 86_400][rng.below(3) as usize],
        price: u128::from(1 + rng.below(1_000_000)),
        netflags: NetFlags::try_from(rng.below(8)).unwrap(),
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: Benchmarks(b),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Commits `orders` as OrderPlaced events, 100 per block, 10 blocks per batch;
/// every fifth order is cancelled a block later. Returns (events, elapsed).
fn ingest(storage: &Storage<'_>, orders: &[Order]) -> (usize, Duration) {
    let mut events = 0;
    let start = Instant::now();
    let mut number = 0u64;
    for batch in orders.chunks(1000) {
        let mut blocks = Vec::new();
        for chunk in batch.chunks(100) {
            number += 1;
            let mut evs: Vec<ChainEvent> =
                chunk.iter().cloned().map(ChainEvent::OrderPlaced).collect();
            evs.extend(
                chunk
                    .iter()
                    .filter(|o| o.id % 5 == 0)
                    .map(|o| ChainEvent::OrderCancelled { id: o.id }),
            );
            events += evs.len();
            blocks.push(BlockEvents {
                number,
                hash: B256::from(alloy::primitives::U256::from(number)),
                events: evs,
            });
        }
        let end = Checkpoint {
            number,
            hash: B256::from(alloy::primitives::U256::from(number)),
        };
        storage.commit_batch(&blocks, end, 64).unwrap();
    }
    (events, start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n_events = env_usize("SONM_DWH_BENCH_EVENTS", 100_000);
    let n_orders = env_usize("SONM_DWH_BENCH_ORDERS", 1_000_000);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);

    let n_signed = env_usize("SONM_DWH_BENCH_SIGNED", 20_000);
    ingest_bench(n_events, &mut rng);
    query_bench(n_orders, &mut rng);
    signed_bench(n_signed, &mut rng);
}

/// The signed-order book: `n` asks signed by 200-order authors (under the per-author bound),
/// posted as the API posts them (JSON, checks, signature recovery, one LMDB write transaction
/// each), against signature recovery alone as the baseline; then the cheapest page and the
/// full scan the market statistics make.
fn signed_bench(n: usize, rng: &mut Rng) {
    use alloy::signers::local::PrivateKeySigner;
    use sonm_contracts::{market_domain, recover_signed_order, sign_order};
    use sonm_dwh::signed::{self, SignedPolicy};

    let domain = market_domain(31337, Address::repeat_byte(0x4d));
    let policy = SignedPolicy {
        domain: domain.clone(),
        max_ttl_s: 7 * 24 * 3600,
        per_author: 256,
        total: 1_000_000,
    };
    let now = 1_800_000_000;
    let expiry = now + 3600;
    let keys: Vec<PrivateKeySigner> = (0..n.div_ceil(200))
        .map(|i| PrivateKeySigner::from_bytes(&B256::from(U256::from(i as u64 + 1))).unwrap())
        .collect();
    let signed: Vec<_> = (0..n)
        .map(|i| {
            let key = &keys[i / 200];
            let order = Order {
                id: 0,
                order_type: OrderType::Ask,
                author: key.address(),
                ..random_order(rng, 0)
            };
            let r = sign_order(key, &order, expiry, U256::from(i as u64), &domain).unwrap();
            let body = serde_json::json!({
                "order": order,
                "expiry": expiry,
                "nonce": (i as u64).to_string(),
                "signature": r.signature,
            })
            .to_string();
            (r, body)
        })
        .collect();

    // Baseline: recovering each signature, nothing else.
    let start = Instant::now();
    for (r, _) in &signed {
        assert!(recover_signed_order(r, &domain).is_ok());
    }
    let recover = start.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 8 << 30).unwrap();
    let storage = Storage::open(&env).unwrap();
    let start = Instant::now();
    for (_, body) in &signed {
        signed::accept(&storage, &policy, body.as_bytes(), now).unwrap();
    }
    let posts = start.elapsed();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "signed-order posts (JSON, checks, recovery, one LMDB commit each): {n} in {posts:.2?} = {:.1} µs/post, {:.0} posts/s",
        per(posts),
        n as f64 / posts.as_secs_f64()
    );
    println!(
        "  baseline (signature recovery alone): {:.1} µs/order; posts cost {:.2}× it",
        per(recover),
        posts.as_secs_f64() / recover.as_secs_f64()
    );

    let txn = storage.read_txn().unwrap();
    let mut lat = Vec::new();
    for _ in 0..200 {
        let mut q = OrderQuery::new(OrderType::Ask);
        q.limit = 100;
        let start = Instant::now();
        let page = query::signed_orders(&storage, &txn, &q, now).unwrap();
        lat.push(start.elapsed());
        assert_eq!(page.items.len(), 100.min(n));
    }
    lat.sort();
    let start = Instant::now();
    let all = query::live_signed(&storage, &txn, OrderType::Ask, now).unwrap();
    let scan = start.elapsed();
    assert_eq!(all.len(), n.min(query::MAX_SIGNED_SCAN));
    let start = Instant::now();
    let stats = MarketStats::of(all.iter().map(|r| (r.order.price, &r.order.benchmarks)));
    let stats_took = start.elapsed();
    println!(
        "signed book, cheapest page of 100 over {n}: p50 {:.2?}, p99 {:.2?}; all live (the stats' scan) {scan:.2?}, stats over them {stats_took:.2?} ({} classes)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        stats.classes.len()
    );
}

/// Ingest: ~n_events events (orders and cancellations) into a fresh store.
fn ingest_bench(n_events: usize, rng: &mut Rng) {
    let orders: Vec<Order> = (1..=(n_events as u64 * 5 / 6))
        .map(|id| random_order(rng, id))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 8 << 30).unwrap();
    let storage = Storage::open(&env).unwrap();
    let (events, took) = ingest(&storage, &orders);
    println!(
        "ingest (storage path, 1000-event commits): {events} events in {took:.2?} = {:.0} events/s",
        events as f64 / took.as_secs_f64()
    );
    // Baseline: the same events decoded into an in-memory map (no LMDB).
    let start = Instant::now();
    let mut map = std::collections::BTreeMap::new();
    for o in &orders {
        map.insert(o.id, o.clone());
    }
    println!(
        "  baseline (BTreeMap insert of the same orders): {:.0} orders/s",
        orders.len() as f64 / start.elapsed().as_secs_f64()
    );
    drop(map);
}

/// Query: orders-by-benchmarks over n_orders indexed orders.
fn query_bench(n_orders: usize, rng: &mut Rng) {
    let orders: Vec<Order> = (1..=n_orders as u64)
        .map(|id| random_order(rng, id))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 16 << 30).unwrap();
    let storage = Storage::open(&env).unwrap();
    let (events, took) = ingest(&storage, &orders);
    println!(
        "indexed {} orders ({events} events) in {took:.2?}",
        orders.len()
    );
    let active_asks: Vec<&Order> = orders
        .iter()
        .filter(|o| o.order_type == OrderType::Ask && o.id % 5 != 0)
        .collect();
    let txn = storage.read_txn().unwrap();
    let mut lat = Vec::new();
    let mut base = Vec::new();
    for _ in 0..200 {
        // Two to four benchmarks required, at levels that leave a fair share.
        let mut want = [0u64; 13];
        for _ in 0..2 + rng.below(3) {
            want[rng.below(13) as usize] = rng.below(10);
        }
        let mut q = OrderQuery::new(OrderType::Ask);
        q.benchmarks = Some(Benchmarks(want));
        q.limit = 100;
        let start = Instant::now();
        let page = query::orders(&storage, &txn, &q).unwrap();
        lat.push(start.elapsed());
        // Baseline: a scan of the same orders in memory, sorted by price.
        let start = Instant::now();
        let mut hits: Vec<(u128, u64)> = active_asks
            .iter()
            .filter(|o| o.benchmarks.dominates(&Benchmarks(want)))
            .map(|o| (o.price, o.id))
            .collect();
        hits.sort_unstable();
        hits.truncate(100);
        base.push(start.elapsed());
        let got: Vec<u64> = page.items.iter().map(|r| r.order.id).collect();
        let expect: Vec<u64> = hits.iter().map(|(_, id)| *id).collect();
        assert_eq!(got, expect, "the query answers what the scan answers");
    }
    lat.sort();
    base.sort();
    println!(
        "orders-by-benchmarks, first page of 100 over {} orders: p50 {:.2?}, p99 {:.2?}",
        orders.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "  baseline (in-memory scan + sort): p50 {:.2?}, p99 {:.2?}",
        percentile(&base, 0.5),
        percentile(&base, 0.99)
    );
    drop(txn);

    // Market stats (/v1/stats): over the DWH's in-memory order book, as the API does.
    let book = SharedBook::load(&storage).unwrap();
    let mut took = Vec::new();
    let mut classes = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let stats = book.read(|b| MarketStats::of(b.open_orders(OrderType::Ask)));
        took.push(start.elapsed());
        classes = stats.classes.len();
        assert_eq!(stats.orders as usize, active_asks.len());
    }
    took.sort();
    // Baseline: the same statistics over a plain slice of the orders.
    let start = Instant::now();
    let want = MarketStats::of(active_asks.iter().map(|o| (o.price, &o.benchmarks)));
    let baseline = start.elapsed();
    assert_eq!(want.classes.len(), classes);
    println!(
        "market stats over {} open asks ({classes} classes): median {:.2?} of 5 (baseline over a slice: {baseline:.2?})",
        active_asks.len(),
        took[2]
    );
}
