//! The model's types: parsing, validation and their typed errors.

use sonm_market::{
    Address, B256, BENCHMARK_COUNT, Benchmark, Benchmarks, BookError, IdentityLevel, MAX_DURATION,
    MAX_PRICE, NetFlags, Order, OrderBook, OrderError, OrderType, ParseBenchmarkError, Unit,
    billing_period,
};

fn order(order_type: OrderType, price: u128) -> Order {
    Order {
        id: 1,
        order_type,
        author: Address::repeat_byte(1),
        counterparty: None,
        duration: 0,
        price,
        netflags: NetFlags::NONE,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: Benchmarks::ZERO,
    }
}

#[test]
fn benchmark_names_and_indices_round_trip() {
    for (i, b) in Benchmark::ALL.into_iter().enumerate() {
        assert_eq!(b.index(), i);
        assert_eq!(Benchmark::from_index(i), Some(b));
        assert_eq!(Benchmark::from_name(b.name()), Some(b));
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, format!("\"{}\"", b.name()));
    }
    assert_eq!(Benchmark::from_index(BENCHMARK_COUNT), None);
    assert_eq!(Benchmark::RamSize.name(), "ram-size");
    assert_eq!(Benchmark::WasmScore.index(), 12);
}

#[test]
fn human_benchmark_strings_parse_with_units() {
    let b: Benchmarks = "ram-size=8GiB, cpu-cores=4 gpu-mem=12GB net-download=100Mbit \
                         gpu-eth-hashrate=30.5MH/s storage-size=1.5TiB cpu-sysbench-multi=12k"
        .parse()
        .unwrap();
    assert_eq!(b.get(Benchmark::RamSize), 8 << 30);
    assert_eq!(b.get(Benchmark::CpuCores), 4);
    assert_eq!(b.get(Benchmark::GpuMem), 12_000_000_000);
    assert_eq!(b.get(Benchmark::NetDownload), 100_000_000);
    assert_eq!(b.get(Benchmark::GpuEthHashrate), 30_500_000);
    assert_eq!(b.get(Benchmark::StorageSize), 3 << 39);
    assert_eq!(b.get(Benchmark::CpuSysbenchMulti), 12_000);
    assert_eq!(b.get(Benchmark::GpuCount), 0, "unnamed benchmarks are zero");
    // Units are read without regard to case: the benchmark fixes their kind.
    let lower: Benchmarks = "ram-size=8gib".parse().unwrap();
    assert_eq!(lower.get(Benchmark::RamSize), 8 << 30);
    assert_eq!("".parse::<Benchmarks>().unwrap(), Benchmarks::ZERO);
    assert_eq!("-".parse::<Benchmarks>().unwrap(), Benchmarks::ZERO);
}

#[test]
fn benchmarks_display_in_the_shortest_exact_unit_and_parse_back() {
    let b: Benchmarks = "ram-size=8GiB cpu-cores=4 gpu-mem=12GB net-upload=1Gbit"
        .parse()
        .unwrap();
    let shown = b.to_string();
    assert_eq!(
        shown,
        "cpu-cores=4 ram-size=8GiB net-upload=1Gbit/s gpu-mem=12GB"
    );
    assert_eq!(shown.parse::<Benchmarks>().unwrap(), b);
    assert_eq!(Benchmarks::ZERO.to_string(), "-");
    assert_eq!(Unit::Bytes.format(1023), "1023");
    assert_eq!(Unit::Bytes.format(0), "0");
}

#[test]
fn unparsable_benchmark_strings_are_typed_errors() {
    let err = |s: &str| s.parse::<Benchmarks>().unwrap_err();
    assert_eq!(
        err("ram-size"),
        ParseBenchmarkError::NotAPair("ram-size".into())
    );
    assert_eq!(
        err("ram=8GiB"),
        ParseBenchmarkError::UnknownBenchmark("ram".into())
    );
    assert_eq!(
        err("cpu-cores=4 cpu-cores=8"),
        ParseBenchmarkError::Duplicate(Benchmark::CpuCores)
    );
    for (text, reason) in [
        ("ram-size=8XB", "unknown unit"),
        ("ram-size=GiB", "no number"),
        ("ram-size=1.2.3GiB", "more than one decimal point"),
        ("ram-size=99999999999TiB", "number too large"),
        ("ram-size=18446744073709551616", "number too large"),
        ("net-download=100MH/s", "unknown unit"),
    ] {
        match err(text) {
            ParseBenchmarkError::BadValue { reason: r, .. } => assert_eq!(r, reason, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    // The message names the benchmark and the value.
    let msg = err("gpu-mem=lots").to_string();
    assert!(msg.contains("gpu-mem") && msg.contains("lots"), "{msg}");
}

#[test]
fn a_benchmark_vector_of_the_wrong_length_is_refused() {
    assert_eq!(
        Benchmarks::from_slice(&[1, 2, 3]),
        Err(OrderError::BenchmarkCount {
            expected: 13,
            got: 3
        })
    );
    assert!(Benchmarks::from_slice(&[7; 13]).is_ok());
    // The same check guards deserialisation from the wire.
    let err = serde_json::from_str::<Benchmarks>("[1,2,3,4,5,6,7,8,9,10,11,12,13,14]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("14 values, expected 13"), "{err}");
    let ok: Benchmarks = serde_json::from_str("[1,2,3,4,5,6,7,8,9,10,11,12,13]").unwrap();
    assert_eq!(ok.get(Benchmark::WasmScore), 13);
}

#[test]
fn unknown_netflag_bits_are_refused() {
    assert_eq!(
        NetFlags::try_from(0b1000),
        Err(OrderError::UnknownNetFlags { bits: 0b1000 })
    );
    assert_eq!(NetFlags::try_from(0b111), Ok(NetFlags::ALL));
    assert!(serde_json::from_str::<NetFlags>("255").is_err());
    assert_eq!(serde_json::from_str::<NetFlags>("5").unwrap().bits(), 5);
    assert_eq!(
        "outbound,public-ip".parse::<NetFlags>().unwrap(),
        NetFlags::OUTBOUND.union(NetFlags::PUBLIC_IP)
    );
    assert!("outbound,teleport".parse::<NetFlags>().is_err());
    assert_eq!(NetFlags::ALL.to_string(), "outbound,inbound,public-ip");
    assert!(NetFlags::ALL.covers(NetFlags::INBOUND));
    assert!(!NetFlags::OUTBOUND.covers(NetFlags::INBOUND));
}

#[test]
fn identity_levels_and_order_types_decode_from_chain_codes() {
    assert_eq!(IdentityLevel::try_from(3), Ok(IdentityLevel::Professional));
    assert_eq!(
        IdentityLevel::try_from(4),
        Err(OrderError::UnknownIdentityLevel(4))
    );
    assert!(IdentityLevel::Anonymous < IdentityLevel::Registered);
    assert_eq!(OrderType::try_from(1), Ok(OrderType::Bid));
    assert_eq!(OrderType::try_from(2), Ok(OrderType::Ask));
    assert_eq!(OrderType::try_from(0), Err(OrderError::UnknownOrderType(0)));
    for t in [OrderType::Bid, OrderType::Ask] {
        assert_eq!(OrderType::try_from(u64::from(t.code())), Ok(t));
    }
}

#[test]
fn a_bid_with_zero_price_is_refused_and_an_ask_may_be_free() {
    assert_eq!(
        order(OrderType::Bid, 0).validate(),
        Err(OrderError::ZeroBidPrice)
    );
    assert_eq!(order(OrderType::Bid, 1).validate(), Ok(()));
    assert_eq!(order(OrderType::Ask, 0).validate(), Ok(()));
    // The book refuses it with the order's id and the cause.
    let mut book = OrderBook::new();
    assert_eq!(
        book.insert(&order(OrderType::Bid, 0)),
        Err(BookError::Invalid {
            id: 1,
            source: OrderError::ZeroBidPrice
        })
    );
    assert!(book.is_empty());
}

#[test]
fn prices_and_durations_beyond_the_chain_are_refused() {
    assert_eq!(order(OrderType::Bid, MAX_PRICE).validate(), Ok(()));
    let huge = order(OrderType::Bid, MAX_PRICE + 1);
    assert_eq!(
        huge.validate(),
        Err(OrderError::PriceTooHigh {
            price: MAX_PRICE + 1
        })
    );
    let mut long = order(OrderType::Ask, 1);
    long.duration = MAX_DURATION;
    assert_eq!(long.validate(), Ok(()));
    long.duration += 1;
    assert_eq!(
        long.validate(),
        Err(OrderError::DurationTooLong(MAX_DURATION + 1))
    );
    // As on chain, an order may name its own author (self-dealing is not forbidden).
    let mut selfish = order(OrderType::Ask, 5);
    selfish.counterparty = Some(selfish.author);
    assert_eq!(selfish.validate(), Ok(()));
}

#[test]
fn frozen_sum_covers_the_first_billing_period() {
    assert_eq!(billing_period(0), 3600, "spot blocks an hour");
    assert_eq!(
        billing_period(600),
        600,
        "a short forward deal blocks all of it"
    );
    assert_eq!(billing_period(7 * 86400), 86400, "at most a day");
    let mut bid = order(OrderType::Bid, 10);
    assert_eq!(bid.frozen_sum(), Ok(36_000));
    bid.duration = 100;
    assert_eq!(bid.frozen_sum(), Ok(1_000));
}

#[test]
fn orders_round_trip_through_json() {
    let mut o = order(OrderType::Ask, 42);
    o.benchmarks = "cpu-cores=8 ram-size=16GiB".parse().unwrap();
    o.netflags = NetFlags::OUTBOUND;
    o.counterparty = Some(Address::repeat_byte(9));
    let json = serde_json::to_string(&o).unwrap();
    assert!(json.contains("\"order_type\":\"ask\""), "{json}");
    assert_eq!(serde_json::from_str::<Order>(&json).unwrap(), o);
}
