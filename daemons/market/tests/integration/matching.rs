//! The match rule, one rule at a time: each test starts from a matching pair and
//! breaks exactly one thing.

use sonm_market::{
    Address, B256, Benchmark, IdentityLevel, Mismatch, NetFlags, Order, OrderType, StaticContext,
    check_match, matches,
};

const CONSUMER: Address = Address::repeat_byte(0xc0);
const SUPPLIER: Address = Address::repeat_byte(0x5a);
const MASTER: Address = Address::repeat_byte(0x3a);
const STRANGER: Address = Address::repeat_byte(0x99);

fn bid() -> Order {
    Order {
        id: 1,
        order_type: OrderType::Bid,
        author: CONSUMER,
        counterparty: None,
        duration: 3600,
        price: 100,
        netflags: NetFlags::OUTBOUND,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: "cpu-cores=4 ram-size=8GiB".parse().unwrap(),
    }
}

fn ask() -> Order {
    Order {
        id: 2,
        order_type: OrderType::Ask,
        author: SUPPLIER,
        counterparty: None,
        duration: 7200,
        price: 80,
        netflags: NetFlags::OUTBOUND.union(NetFlags::INBOUND),
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: "cpu-cores=8 ram-size=16GiB storage-size=100GB"
            .parse()
            .unwrap(),
    }
}

fn ctx() -> StaticContext {
    let mut c = StaticContext::default();
    c.masters.insert(SUPPLIER, MASTER);
    c
}

#[test]
fn the_base_pair_matches() {
    assert_eq!(check_match(&bid(), &ask(), &ctx()), Ok(()));
    assert!(matches(&bid(), &ask(), &ctx()));
}

#[test]
fn order_types_must_be_bid_then_ask() {
    assert_eq!(
        check_match(&ask(), &bid(), &ctx()),
        Err(Mismatch::OrderTypes)
    );
    let mut not_ask = ask();
    not_ask.order_type = OrderType::Bid;
    assert_eq!(
        check_match(&bid(), &not_ask, &ctx()),
        Err(Mismatch::OrderTypes)
    );
}

#[test]
fn the_ask_must_not_cost_more_than_the_bid_pays() {
    let mut a = ask();
    a.price = 100;
    assert_eq!(
        check_match(&bid(), &a, &ctx()),
        Ok(()),
        "equal price matches"
    );
    a.price = 101;
    assert_eq!(check_match(&bid(), &a, &ctx()), Err(Mismatch::Price));
}

#[test]
fn durations_must_agree() {
    let (mut b, mut a) = (bid(), ask());
    a.duration = 3599;
    assert_eq!(check_match(&b, &a, &ctx()), Err(Mismatch::Duration));
    a.duration = 3600;
    assert_eq!(check_match(&b, &a, &ctx()), Ok(()));
    a.duration = 0;
    assert_eq!(
        check_match(&b, &a, &ctx()),
        Err(Mismatch::Duration),
        "spot ask, forward bid"
    );
    b.duration = 0;
    assert_eq!(check_match(&b, &a, &ctx()), Ok(()), "both spot");
    a.duration = 7200;
    assert_eq!(
        check_match(&b, &a, &ctx()),
        Err(Mismatch::Duration),
        "forward ask, spot bid"
    );
}

#[test]
fn the_ask_must_offer_every_netflag_the_bid_needs() {
    let mut b = bid();
    b.netflags = NetFlags::PUBLIC_IP;
    assert_eq!(check_match(&b, &ask(), &ctx()), Err(Mismatch::NetFlags));
    b.netflags = NetFlags::INBOUND;
    assert_eq!(check_match(&b, &ask(), &ctx()), Ok(()));
}

#[test]
fn every_benchmark_of_the_ask_must_reach_the_bids() {
    for benchmark in Benchmark::ALL {
        let mut b = bid();
        let a = ask();
        b.benchmarks.set(benchmark, a.benchmarks.get(benchmark) + 1);
        assert_eq!(
            check_match(&b, &a, &ctx()),
            Err(Mismatch::Benchmark(benchmark)),
            "{benchmark}"
        );
        b.benchmarks.set(benchmark, a.benchmarks.get(benchmark));
        assert_eq!(check_match(&b, &a, &ctx()), Ok(()), "{benchmark} equal");
    }
}

#[test]
fn each_side_must_meet_the_identity_level_the_other_requires() {
    let mut c = ctx();
    let mut a = ask();
    a.identity_level = IdentityLevel::Registered;
    assert_eq!(check_match(&bid(), &a, &c), Err(Mismatch::BidderIdentity));
    c.levels.insert(CONSUMER, IdentityLevel::Identified);
    assert_eq!(check_match(&bid(), &a, &c), Ok(()));

    let mut b = bid();
    b.identity_level = IdentityLevel::Professional;
    assert_eq!(check_match(&b, &ask(), &c), Err(Mismatch::AskerIdentity));
    c.levels.insert(SUPPLIER, IdentityLevel::Professional);
    assert_eq!(check_match(&b, &ask(), &c), Ok(()));
}

#[test]
fn a_named_counterparty_must_be_the_other_party() {
    let mut a = ask();
    a.counterparty = Some(STRANGER);
    assert_eq!(check_match(&bid(), &a, &ctx()), Err(Mismatch::Counterparty));
    a.counterparty = Some(CONSUMER);
    assert_eq!(check_match(&bid(), &a, &ctx()), Ok(()));

    let mut b = bid();
    b.counterparty = Some(STRANGER);
    assert_eq!(check_match(&b, &ask(), &ctx()), Err(Mismatch::Counterparty));
    b.counterparty = Some(SUPPLIER);
    assert_eq!(check_match(&b, &ask(), &ctx()), Ok(()));
    b.counterparty = Some(MASTER);
    assert_eq!(
        check_match(&b, &ask(), &ctx()),
        Ok(()),
        "a bid may name the master"
    );
}

#[test]
fn blacklists_apply_both_ways_and_through_named_lists() {
    let listed = |owner, who| {
        let mut c = ctx();
        c.blacklists.insert((owner, who));
        c
    };
    // The consumer blacklisted the supplier's master.
    assert_eq!(
        check_match(&bid(), &ask(), &listed(CONSUMER, MASTER)),
        Err(Mismatch::Blacklisted)
    );
    // The supplier blacklisted the consumer.
    assert_eq!(
        check_match(&bid(), &ask(), &listed(SUPPLIER, CONSUMER)),
        Err(Mismatch::Blacklisted)
    );
    // A list named by the bid applies to the master.
    let mut b = bid();
    b.blacklist = Some(STRANGER);
    assert_eq!(
        check_match(&b, &ask(), &listed(STRANGER, MASTER)),
        Err(Mismatch::Blacklisted)
    );
    assert_eq!(check_match(&b, &ask(), &ctx()), Ok(()));
    // A list named by the ask applies to the consumer.
    let mut a = ask();
    a.blacklist = Some(MASTER);
    assert_eq!(
        check_match(&bid(), &a, &listed(MASTER, CONSUMER)),
        Err(Mismatch::Blacklisted)
    );
    // Someone else's list does not matter.
    assert_eq!(
        check_match(&bid(), &ask(), &listed(STRANGER, CONSUMER)),
        Ok(())
    );
}

#[test]
fn mismatches_serialise_with_the_rule_and_benchmark() {
    let json = serde_json::to_string(&Mismatch::Benchmark(Benchmark::GpuMem)).unwrap();
    assert_eq!(json, r#"{"rule":"benchmark","benchmark":"gpu-mem"}"#);
}
