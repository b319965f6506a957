//! The indexed order book against the brute-force scan: on random books, random
//! updates and random queries, both must answer the same ids in the same order.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sonm_market::{
    Address, B256, BENCHMARK_COUNT, Benchmarks, BookError, IdentityLevel, NetFlags, Order,
    OrderBook, OrderId, OrderType, StaticContext, scan_best_asks, scan_best_bids,
};

const PARTIES: u8 = 6;

fn party() -> impl Strategy<Value = Address> {
    (0..PARTIES).prop_map(|i| Address::repeat_byte(i + 1))
}

fn sometimes_party() -> impl Strategy<Value = Option<Address>> {
    prop_oneof![8 => Just(None), 1 => party().prop_map(Some)]
}

fn level() -> impl Strategy<Value = IdentityLevel> {
    prop_oneof![
        6 => Just(IdentityLevel::Anonymous),
        1 => Just(IdentityLevel::Registered),
        1 => Just(IdentityLevel::Identified),
        1 => Just(IdentityLevel::Professional),
    ]
}

/// Small value ranges so that random bids and asks often match, and often tie on
/// price, which is where ordering bugs hide.
fn order(order_type: OrderType) -> impl Strategy<Value = Order> {
    let bench_max: u64 = if order_type == OrderType::Ask { 5 } else { 3 };
    let bench = prop_oneof![
        3 => Just(0u64),
        2 => 0..bench_max,
    ];
    (
        party(),
        sometimes_party(),
        prop_oneof![Just(0u64), 1..6u64],
        if order_type == OrderType::Bid {
            1..25u128
        } else {
            0..25u128
        },
        0..8u64,
        level(),
        sometimes_party(),
        proptest::collection::vec(bench, BENCHMARK_COUNT),
    )
        .prop_map(
            move |(author, counterparty, duration, price, flags, lvl, blacklist, bench)| Order {
                id: 0,
                order_type,
                author,
                counterparty,
                duration,
                price,
                netflags: NetFlags::try_from(flags).unwrap(),
                identity_level: lvl,
                blacklist,
                tag: B256::ZERO,
                benchmarks: Benchmarks::from_slice(&bench).unwrap(),
            },
        )
}

fn any_order() -> impl Strategy<Value = Order> {
    prop_oneof![order(OrderType::Ask), order(OrderType::Bid)]
}

fn context() -> impl Strategy<Value = StaticContext> {
    (
        proptest::collection::vec(level(), PARTIES as usize),
        proptest::collection::vec((party(), party()), 0..4),
        proptest::collection::vec((party(), party()), 0..3),
    )
        .prop_map(|(levels, blacklists, masters)| StaticContext {
            levels: (1..=PARTIES)
                .map(Address::repeat_byte)
                .zip(levels)
                .collect(),
            blacklists: blacklists.into_iter().collect(),
            masters: masters.into_iter().collect(),
        })
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Order),
    /// Cancels the n-th live order (modulo their number).
    Cancel(usize),
    BestAsks(Order, usize),
    BestBids(Order, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any_order().prop_map(Op::Insert),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (order(OrderType::Bid), 0..12usize).prop_map(|(o, k)| Op::BestAsks(o, k)),
        2 => (order(OrderType::Ask), 0..12usize).prop_map(|(o, k)| Op::BestBids(o, k)),
    ]
}

fn run(leaf_capacity: usize, ctx: &StaticContext, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut book = OrderBook::with_leaf_capacity(leaf_capacity);
    let mut live: BTreeMap<OrderId, Order> = BTreeMap::new();
    let mut next_id: OrderId = 1;
    let side = |live: &BTreeMap<OrderId, Order>, t| {
        live.values()
            .filter(|o| o.order_type == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    for op in ops {
        match op {
            Op::Insert(mut o) => {
                o.id = next_id;
                next_id += 1;
                book.insert(&o)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                live.insert(o.id, o);
            }
            Op::Cancel(n) => {
                if live.is_empty() {
                    prop_assert_eq!(book.cancel(next_id), Err(BookError::Unknown(next_id)));
                    continue;
                }
                let id = *live.keys().nth(n % live.len()).unwrap();
                live.remove(&id);
                prop_assert_eq!(book.cancel(id), Ok(()));
                prop_assert!(!book.contains(id));
            }
            Op::BestAsks(mut bid, k) => {
                bid.id = next_id + 1_000_000;
                let want = scan_best_asks(&side(&live, OrderType::Ask), &bid, k, ctx);
                prop_assert_eq!(book.best_asks(&bid, k, ctx).unwrap(), want);
            }
            Op::BestBids(mut ask, k) => {
                ask.id = next_id + 1_000_000;
                let want = scan_best_bids(&side(&live, OrderType::Bid), &ask, k, ctx);
                prop_assert_eq!(book.best_bids(&ask, k, ctx).unwrap(), want);
            }
        }
        prop_assert_eq!(book.len(), live.len());
    }
    book.check_invariants().map_err(TestCaseError::fail)?;
    // What statistics read: exactly the live orders of each side.
    for t in [OrderType::Ask, OrderType::Bid] {
        let mut got: Vec<(u128, Benchmarks)> = book.open_orders(t).map(|(p, b)| (p, *b)).collect();
        let mut want: Vec<(u128, Benchmarks)> = side(&live, t)
            .iter()
            .map(|o| (o.price, o.benchmarks))
            .collect();
        got.sort_by_key(|(p, b)| (*p, *b.as_array()));
        want.sort_by_key(|(p, b)| (*p, *b.as_array()));
        prop_assert_eq!(got, want);
    }
    // A final sweep: every live order as a query.
    for o in live.values() {
        let q = |o: &Order| {
            let mut q = o.clone();
            q.id = 0;
            q
        };
        match o.order_type {
            OrderType::Bid => prop_assert_eq!(
                book.best_asks(&q(o), 5, ctx).unwrap(),
                scan_best_asks(&side(&live, OrderType::Ask), o, 5, ctx)
            ),
            OrderType::Ask => prop_assert_eq!(
                book.best_bids(&q(o), 5, ctx).unwrap(),
                scan_best_bids(&side(&live, OrderType::Bid), o, 5, ctx)
            ),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn indexed_matching_equals_brute_force(
        leaf_capacity in prop_oneof![Just(2usize), Just(3), Just(4), Just(8), Just(64)],
        ctx in context(),
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        run(leaf_capacity, &ctx, ops)?;
    }
}

/// A deterministic generator for the large cases (proptest's shrinking is not
/// needed there, and its generation would dominate the run time).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn ask_with(id: OrderId, price: u128, rng: &mut Lcg) -> Order {
    let mut b = [0u64; BENCHMARK_COUNT];
    for v in &mut b {
        *v = rng.next() % 100;
    }
    Order {
        id,
        order_type: OrderType::Ask,
        author: Address::repeat_byte((id % 200) as u8),
        counterparty: None,
        duration: 0,
        price,
        netflags: NetFlags::ALL,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: Benchmarks(b),
    }
}

#[test]
fn sorted_inserts_keep_the_tree_shallow_and_cancels_shrink_it() {
    let mut rng = Lcg(7);
    let mut book = OrderBook::with_leaf_capacity(16);
    let n = 20_000u64;
    // Prices ascending with ids: the worst order for a tree that never rebalances.
    let asks: Vec<Order> = (1..=n)
        .map(|i| ask_with(i, u128::from(i), &mut rng))
        .collect();
    for a in &asks {
        book.insert(a).unwrap();
    }
    book.check_invariants().unwrap();
    let leaves = n as f64 / 16.0;
    let bound = (3.0 * leaves.log2()).ceil() as usize + 2;
    assert!(book.depth() <= bound, "depth {} > {bound}", book.depth());

    let ctx = StaticContext::default();
    let mut bid = ask_with(0, 10_000_000, &mut rng);
    bid.order_type = OrderType::Bid;
    bid.benchmarks = Benchmarks([0; BENCHMARK_COUNT])
        .with(sonm_market::Benchmark::CpuCores, 60)
        .with(sonm_market::Benchmark::RamSize, 70);
    let want = scan_best_asks(&asks, &bid, 10, &ctx);
    assert_eq!(want.len(), 10);
    assert_eq!(book.best_asks(&bid, 10, &ctx).unwrap(), want);

    // Cancel all but every 100th, from the cheap end.
    for a in asks.iter().filter(|a| a.id % 100 != 0) {
        book.cancel(a.id).unwrap();
    }
    book.check_invariants().unwrap();
    let rest: Vec<Order> = asks.iter().filter(|a| a.id % 100 == 0).cloned().collect();
    assert_eq!(book.len(), rest.len());
    assert!(book.depth() <= 8, "depth {} after shrinking", book.depth());
    assert_eq!(
        book.best_asks(&bid, 10, &ctx).unwrap(),
        scan_best_asks(&rest, &bid, 10, &ctx)
    );
}

#[test]
fn bad_operations_are_typed_errors_and_change_nothing() {
    let mut rng = Lcg(1);
    let mut book = OrderBook::new();
    let a = ask_with(5, 10, &mut rng);
    book.insert(&a).unwrap();
    assert_eq!(book.insert(&a), Err(BookError::Duplicate(5)));
    assert_eq!(book.cancel(6), Err(BookError::Unknown(6)));
    let ctx = StaticContext::default();
    assert_eq!(
        book.best_asks(&a, 3, &ctx),
        Err(BookError::WrongQueryType(5))
    );
    let mut bid = a.clone();
    bid.order_type = OrderType::Bid;
    bid.id = 9;
    assert_eq!(
        book.best_bids(&bid, 3, &ctx),
        Err(BookError::WrongQueryType(9))
    );
    assert_eq!(book.best_asks(&bid, 3, &ctx).unwrap(), vec![5]);
    assert_eq!(
        book.best_asks(&bid, 0, &ctx).unwrap(),
        Vec::<OrderId>::new()
    );
    assert_eq!(book.len_of(OrderType::Ask), 1);
    assert_eq!(book.len_of(OrderType::Bid), 0);
    book.check_invariants().unwrap();
}
