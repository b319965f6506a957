//! Orders both ways between the chain and the model, and the errors for what the
//! model cannot hold.

use alloy::primitives::{Address, B256, U256, address};
use sonm_contracts::{
    ChainOrderError, Market, chain_order, market_order, mismatch_of, order_id_from_chain,
};
use sonm_market::{
    Benchmark, Benchmarks, IdentityLevel, Mismatch, NetFlags, Order, OrderError, OrderType,
};

const ALICE: Address = address!("0x00000000000000000000000000000000000a11ce");
const BOB: Address = address!("0x0000000000000000000000000000000000000b0b");

fn model_order() -> Order {
    Order {
        id: 42,
        order_type: OrderType::Bid,
        author: ALICE,
        counterparty: Some(BOB),
        duration: 7200,
        price: u128::MAX,
        netflags: NetFlags::OUTBOUND.union(NetFlags::PUBLIC_IP),
        identity_level: IdentityLevel::Identified,
        blacklist: None,
        tag: B256::repeat_byte(7),
        benchmarks: Benchmarks::ZERO
            .with(Benchmark::ALL[12], 99)
            .with(Benchmark::ALL[0], 5),
    }
}

#[test]
fn round_trip() {
    let order = model_order();
    let chain = chain_order(&order);
    assert_eq!(chain.orderType, 1);
    assert_eq!(chain.counterparty, BOB);
    assert_eq!(chain.blacklist, Address::ZERO);
    assert_eq!(chain.price, U256::from(u128::MAX));
    assert_eq!(chain.netflags, U256::from(5));
    assert_eq!(chain.identityLevel, 2);
    assert_eq!(chain.benchmarks.len(), 13);
    assert_eq!(chain.benchmarks[12], 99);
    assert_eq!(Market::Order::from(&order), chain);
    assert_eq!(market_order(42, &chain), Ok(order.clone()));

    let mut ask = order;
    ask.order_type = OrderType::Ask;
    ask.counterparty = None;
    ask.blacklist = Some(BOB);
    ask.identity_level = IdentityLevel::Anonymous;
    ask.price = 0;
    let chain = chain_order(&ask);
    assert_eq!(
        (chain.orderType, chain.counterparty, chain.blacklist),
        (2, Address::ZERO, BOB)
    );
    assert_eq!(market_order(42, &chain), Ok(ask));
}

#[test]
fn out_of_range_values_are_typed_errors() {
    let good = chain_order(&model_order());
    let with = |f: &dyn Fn(&mut Market::Order)| {
        let mut o = good.clone();
        f(&mut o);
        market_order(1, &o)
    };
    assert_eq!(
        with(&|o| o.price = U256::from(u128::MAX) + U256::from(1)),
        Err(ChainOrderError::PriceOutOfRange(
            U256::from(u128::MAX) + U256::from(1)
        ))
    );
    assert_eq!(
        with(&|o| o.netflags = U256::from(8)),
        Err(ChainOrderError::Order(OrderError::UnknownNetFlags {
            bits: 8
        }))
    );
    assert_eq!(
        with(&|o| o.netflags = U256::MAX),
        Err(ChainOrderError::NetFlagsOutOfRange(U256::MAX))
    );
    assert_eq!(
        with(&|o| o.identityLevel = 4),
        Err(ChainOrderError::Order(OrderError::UnknownIdentityLevel(4)))
    );
    assert_eq!(
        with(&|o| o.benchmarks.pop().map(drop).unwrap_or_default()),
        Err(ChainOrderError::Order(OrderError::BenchmarkCount {
            expected: 13,
            got: 12
        }))
    );
    assert_eq!(
        with(&|o| o.benchmarks.push(0)),
        Err(ChainOrderError::Order(OrderError::BenchmarkCount {
            expected: 13,
            got: 14
        }))
    );
    assert_eq!(
        with(&|o| o.orderType = 3),
        Err(ChainOrderError::Order(OrderError::UnknownOrderType(3)))
    );
    assert_eq!(order_id_from_chain(U256::from(u64::MAX)), Ok(u64::MAX));
    assert_eq!(
        order_id_from_chain(U256::from(u64::MAX) + U256::from(1)),
        Err(ChainOrderError::IdOutOfRange(
            U256::from(u64::MAX) + U256::from(1)
        ))
    );
}

#[test]
fn match_errors_map_to_mismatches() {
    use Market::MarketErrors as E;
    let cases: Vec<(E, Option<Mismatch>)> = vec![
        (
            E::WrongOrderType(Market::WrongOrderType {
                orderId: U256::from(1),
            }),
            Some(Mismatch::OrderTypes),
        ),
        (
            E::BenchmarkNotMet(Market::BenchmarkNotMet {
                index: U256::from(12),
            }),
            Some(Mismatch::Benchmark(Benchmark::ALL[12])),
        ),
        (
            E::BenchmarkNotMet(Market::BenchmarkNotMet {
                index: U256::from(13),
            }),
            None,
        ),
        (
            E::NetflagsNotCovered(Market::NetflagsNotCovered {}),
            Some(Mismatch::NetFlags),
        ),
        (
            E::PriceNotMatched(Market::PriceNotMatched {}),
            Some(Mismatch::Price),
        ),
        (
            E::DurationMismatch(Market::DurationMismatch {}),
            Some(Mismatch::Duration),
        ),
        (
            E::AskCounterpartyMismatch(Market::AskCounterpartyMismatch {}),
            Some(Mismatch::Counterparty),
        ),
        (
            E::BidCounterpartyMismatch(Market::BidCounterpartyMismatch {}),
            Some(Mismatch::Counterparty),
        ),
        (
            E::ConsumerLevelTooLow(Market::ConsumerLevelTooLow {}),
            Some(Mismatch::BidderIdentity),
        ),
        (
            E::SupplierLevelTooLow(Market::SupplierLevelTooLow {}),
            Some(Mismatch::AskerIdentity),
        ),
        (
            E::SupplierBlacklisted(Market::SupplierBlacklisted {}),
            Some(Mismatch::Blacklisted),
        ),
        (
            E::ConsumerBlacklisted(Market::ConsumerBlacklisted {}),
            Some(Mismatch::Blacklisted),
        ),
        (
            E::UnknownOrder(Market::UnknownOrder {
                orderId: U256::from(1),
            }),
            None,
        ),
        (E::ZeroPrice(Market::ZeroPrice {}), None),
    ];
    for (error, expected) in cases {
        assert_eq!(mismatch_of(&error), expected, "{error:?}");
    }
}
