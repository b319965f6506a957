//! Differential test of the match rule: `sonm_market::check_match` against the
//! Market contract on a real anvil, over many random bid/ask pairs.
//!
//! A fixed world is set up on chain (identity levels through ProfileRegistry
//! certificates, blacklists, a confirmed and a pending master) and mirrored in a
//! `StaticContext`. For each pair both orders are placed on chain and `openDeal`
//! is run as an `eth_call`; its custom error is the chain's verdict.
//!
//! The two sides check the clauses in different orders (Rust: types, price,
//! duration, netflags, benchmarks, levels, counterparties, blacklists; Solidity:
//! types, benchmarks, netflags, price, duration, counterparties, levels,
//! blacklists), so a pair that breaks several clauses gets different first
//! reasons. The test therefore works out every clause a pair breaks (from the
//! orders and the world, clause by clause) and requires:
//! - match / no match: the same on both sides, for every pair;
//! - Rust's reason is the first broken clause in Rust's order, and the chain's
//!   reason the first in Solidity's order (so where only one clause is broken,
//!   which is the case for a good share of the pairs, both name the same one).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use common::{anvil, block_on, confirm, unlocked};
use sonm_contracts::anvil::DEV_KEYS;
use sonm_contracts::deploy::SNM_WEI;
use sonm_contracts::{
    Blacklist, DeployConfig, Market, ProfileRegistry, SNM, chain_order, deploy, market_order,
    mismatch_of, order_id_from_chain, placed_ref,
};
use sonm_market::{
    BENCHMARK_COUNT, Benchmark, Benchmarks, IdentityLevel, Mismatch, NetFlags, Order, OrderType,
    StaticContext, check_match, durations_agree,
};

const PAIRS: usize = 600;
const SEED: u64 = 0x5eed_0f50_4e4d;

/// SplitMix64: deterministic everywhere, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The parties. Suppliers author asks, consumers bids; masters and list owners
/// only appear as counterparties, masters and blacklists.
struct World {
    deployer: Address,
    suppliers: [Address; 3],
    consumers: [Address; 3],
    master: Address,
    pending_master: Address,
    list_owners: [Address; 2],
    ctx: StaticContext,
}

/// One clause of the match rule, at the chain's granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Clause {
    WrongType,
    Benchmark(usize),
    NetFlags,
    Price,
    Duration,
    AskCounterparty,
    BidCounterparty,
    ConsumerLevel,
    SupplierLevel,
    SupplierBlacklisted,
    ConsumerBlacklisted,
}

impl Clause {
    fn mismatch(self) -> Mismatch {
        match self {
            Clause::WrongType => Mismatch::OrderTypes,
            Clause::Benchmark(i) => Mismatch::Benchmark(Benchmark::ALL[i]),
            Clause::NetFlags => Mismatch::NetFlags,
            Clause::Price => Mismatch::Price,
            Clause::Duration => Mismatch::Duration,
            Clause::AskCounterparty | Clause::BidCounterparty => Mismatch::Counterparty,
            Clause::ConsumerLevel => Mismatch::BidderIdentity,
            Clause::SupplierLevel => Mismatch::AskerIdentity,
            Clause::SupplierBlacklisted | Clause::ConsumerBlacklisted => Mismatch::Blacklisted,
        }
    }

    /// Position in `sonm_market::check_match`'s order (ties: either may come first
    /// there, both map to the same Mismatch).
    fn rust_rank(self) -> u8 {
        match self {
            Clause::WrongType => 0,
            Clause::Price => 1,
            Clause::Duration => 2,
            Clause::NetFlags => 3,
            Clause::Benchmark(_) => 4,
            Clause::ConsumerLevel => 5,
            Clause::SupplierLevel => 6,
            Clause::AskCounterparty | Clause::BidCounterparty => 7,
            Clause::SupplierBlacklisted | Clause::ConsumerBlacklisted => 8,
        }
    }

    /// Position in `Market.openDeal`'s order (contracts/README.md).
    fn chain_rank(self) -> u8 {
        match self {
            Clause::WrongType => 0,
            Clause::Benchmark(_) => 1,
            Clause::NetFlags => 2,
            Clause::Price => 3,
            Clause::Duration => 4,
            Clause::AskCounterparty => 5,
            Clause::BidCounterparty => 6,
            Clause::ConsumerLevel => 7,
            Clause::SupplierLevel => 8,
            Clause::SupplierBlacklisted => 9,
            Clause::ConsumerBlacklisted => 10,
        }
    }

    fn from_chain(error: &Market::MarketErrors) -> Option<Clause> {
        use Market::MarketErrors as E;
        Some(match error {
            E::WrongOrderType(_) => Clause::WrongType,
            E::BenchmarkNotMet(e) => Clause::Benchmark(usize::try_from(e.index).ok()?),
            E::NetflagsNotCovered(_) => Clause::NetFlags,
            E::PriceNotMatched(_) => Clause::Price,
            E::DurationMismatch(_) => Clause::Duration,
            E::AskCounterpartyMismatch(_) => Clause::AskCounterparty,
            E::BidCounterpartyMismatch(_) => Clause::BidCounterparty,
            E::ConsumerLevelTooLow(_) => Clause::ConsumerLevel,
            E::SupplierLevelTooLow(_) => Clause::SupplierLevel,
            E::SupplierBlacklisted(_) => Clause::SupplierBlacklisted,
            E::ConsumerBlacklisted(_) => Clause::ConsumerBlacklisted,
            _ => return None,
        })
    }
}

/// Every clause the pair breaks, each judged on its own (benchmarks: the first
/// index that falls short, as both sides report).
fn broken_clauses(bid: &Order, ask: &Order, ctx: &StaticContext) -> Vec<Clause> {
    let mut broken = Vec::new();
    if bid.order_type != OrderType::Bid || ask.order_type != OrderType::Ask {
        broken.push(Clause::WrongType);
    }
    let (b, a) = (bid.benchmarks.as_array(), ask.benchmarks.as_array());
    if let Some(i) = (0..BENCHMARK_COUNT).find(|&i| a[i] < b[i]) {
        broken.push(Clause::Benchmark(i));
    }
    if bid.netflags.bits() & !ask.netflags.bits() != 0 {
        broken.push(Clause::NetFlags);
    }
    if ask.price > bid.price {
        broken.push(Clause::Price);
    }
    if !durations_agree(bid.duration, ask.duration) {
        broken.push(Clause::Duration);
    }
    let (consumer, supplier) = (bid.author, ask.author);
    let master = ctx.masters.get(&supplier).copied().unwrap_or(supplier);
    if ask.counterparty.is_some_and(|c| c != consumer) {
        broken.push(Clause::AskCounterparty);
    }
    if bid
        .counterparty
        .is_some_and(|c| c != supplier && c != master)
    {
        broken.push(Clause::BidCounterparty);
    }
    let level = |who| ctx.levels.get(&who).copied().unwrap_or_default();
    if level(consumer) < ask.identity_level {
        broken.push(Clause::ConsumerLevel);
    }
    if level(supplier) < bid.identity_level {
        broken.push(Clause::SupplierLevel);
    }
    let listed =
        |owner: Option<Address>, who| owner.is_some_and(|o| ctx.blacklists.contains(&(o, who)));
    if listed(Some(consumer), master) || listed(bid.blacklist, master) {
        broken.push(Clause::SupplierBlacklisted);
    }
    if listed(Some(supplier), consumer) || listed(ask.blacklist, consumer) {
        broken.push(Clause::ConsumerBlacklisted);
    }
    broken
}

fn random_pair(rng: &mut Rng, w: &World) -> (Order, Order) {
    let supplier = rng.pick(&w.suppliers);
    let consumer = rng.pick(&w.consumers);
    let mut ask_bench = [0u64; BENCHMARK_COUNT];
    let mut bid_bench = [0u64; BENCHMARK_COUNT];
    for i in 0..BENCHMARK_COUNT {
        ask_bench[i] = rng.below(4);
        bid_bench[i] = if rng.chance(99) {
            rng.below(ask_bench[i] + 1)
        } else {
            rng.below(4)
        };
    }
    let ask_flags = rng.below(8);
    let bid_flags = if rng.chance(93) {
        ask_flags & rng.below(8)
    } else {
        rng.below(8)
    };
    let ask_price = u128::from(rng.below(8));
    let bid_price = if rng.chance(93) {
        (ask_price + u128::from(rng.below(3))).max(1)
    } else {
        1 + u128::from(rng.below(8))
    };
    const DURATIONS: [u64; 3] = [0, 3600, 7200];
    let ask_duration = rng.pick(&DURATIONS);
    let bid_duration = if rng.chance(93) {
        match ask_duration {
            0 => 0,
            d => rng.pick(&[3600, d]),
        }
    } else {
        rng.pick(&DURATIONS)
    };
    let level = |rng: &mut Rng| {
        if rng.chance(88) {
            IdentityLevel::Anonymous
        } else {
            IdentityLevel::ALL[1 + rng.below(3) as usize]
        }
    };
    let ask_level = level(rng);
    let bid_level = level(rng);
    let ask_counterparty = rng
        .chance(8)
        .then(|| rng.pick(&[consumer, consumer, w.consumers[0], w.deployer]));
    let bid_counterparty = rng.chance(8).then(|| {
        rng.pick(&[
            supplier,
            w.master,
            w.master,
            w.pending_master,
            w.suppliers[0],
        ])
    });
    let ask_blacklist = rng
        .chance(8)
        .then(|| rng.pick(&[w.list_owners[0], w.list_owners[1], w.consumers[1]]));
    let bid_blacklist = rng
        .chance(8)
        .then(|| rng.pick(&[w.list_owners[0], w.list_owners[1], w.suppliers[2]]));
    let tag = |rng: &mut Rng| {
        let mut t = [0u8; 32];
        for chunk in t.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        B256::from(t)
    };
    let mut ask = Order {
        id: 0,
        order_type: OrderType::Ask,
        author: supplier,
        counterparty: ask_counterparty,
        duration: ask_duration,
        price: ask_price,
        netflags: NetFlags::try_from(ask_flags).unwrap(),
        identity_level: ask_level,
        blacklist: ask_blacklist,
        tag: tag(rng),
        benchmarks: Benchmarks(ask_bench),
    };
    let mut bid = Order {
        id: 0,
        order_type: OrderType::Bid,
        author: consumer,
        counterparty: bid_counterparty,
        duration: bid_duration,
        price: bid_price,
        netflags: NetFlags::try_from(bid_flags).unwrap(),
        identity_level: bid_level,
        blacklist: bid_blacklist,
        tag: tag(rng),
        benchmarks: Benchmarks(bid_bench),
    };
    // Now and then an order of the wrong type on one side (a bid must pay > 0).
    if rng.chance(2) {
        ask.order_type = OrderType::Bid;
        ask.price = ask.price.max(1);
    } else if rng.chance(2) {
        bid.order_type = OrderType::Ask;
    }
    (bid, ask)
}

/// A Mismatch's variant name (benchmarks together).
fn kind(m: Mismatch) -> String {
    match m {
        Mismatch::Benchmark(_) => "Benchmark".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Places `order` from its author; returns it with the id the chain gave it, as
/// read back from the OrderPlaced event through `market_order`.
async fn place(market: &Market::MarketInstance<&DynProvider>, order: &Order) -> Order {
    let receipt = confirm(
        "placeOrder",
        market.placeOrder(chain_order(order)).from(order.author),
    )
    .await;
    let event = receipt
        .decoded_log::<Market::OrderPlaced>()
        .expect("an OrderPlaced event");
    let id = order_id_from_chain(event.orderId).unwrap();
    let placed = market_order(id, &event.order).unwrap();
    let mut expected = order.clone();
    expected.id = id;
    assert_eq!(placed, expected, "the event's order, read back");
    placed
}

#[test]
fn check_match_agrees_with_the_market_contract() {
    let anvil = anvil(&["--accounts", "12"]);
    let started = std::time::Instant::now();
    block_on(async {
        let p = unlocked(&anvil);
        let accounts = p.get_accounts().await.unwrap();
        let deployer_key: PrivateKeySigner = DEV_KEYS[0].parse().unwrap();
        assert_eq!(accounts[0], deployer_key.address());
        let mut w = World {
            deployer: accounts[0],
            suppliers: [accounts[1], accounts[2], accounts[3]],
            consumers: [accounts[4], accounts[5], accounts[6]],
            master: accounts[7],
            pending_master: accounts[8],
            list_owners: [accounts[9], accounts[10]],
            ctx: StaticContext::default(),
        };
        let traders: Vec<Address> = w.suppliers.iter().chain(&w.consumers).copied().collect();
        let config = DeployConfig {
            validators: vec![(w.deployer, 3)],
            fund: traders
                .iter()
                .map(|a| (*a, U256::from(1_000u128 * SNM_WEI)))
                .collect(),
            ..DeployConfig::default()
        };
        let addresses = deploy(common::url(&anvil), deployer_key, &config)
            .await
            .unwrap();
        let c = addresses.contracts;
        let market = Market::new(c.market, &p);
        let token = SNM::new(c.snm, &p);
        let profiles = ProfileRegistry::new(c.profile_registry, &p);
        let blacklist = Blacklist::new(c.blacklist, &p);

        for trader in &traders {
            confirm("approve", token.approve(c.market, U256::MAX).from(*trader)).await;
        }
        // Identity levels through certificates of the level attributes 1001..1003.
        let [s1, s2, s3] = w.suppliers;
        let [c1, c2, c3] = w.consumers;
        let [x, y] = w.list_owners;
        let levels = [
            (s2, IdentityLevel::Identified),
            (s3, IdentityLevel::Professional),
            (c2, IdentityLevel::Registered),
            (c3, IdentityLevel::Professional),
            (w.master, IdentityLevel::Registered),
        ];
        for (who, level) in levels {
            let attribute = U256::from(1000 + level as u64);
            confirm(
                "issueCertificate",
                profiles
                    .issueCertificate(who, attribute, Default::default())
                    .from(w.deployer),
            )
            .await;
            w.ctx.levels.insert(who, level);
        }
        // s2 works for master (confirmed); s3 announced pending_master (not confirmed).
        confirm("registerWorker", market.registerWorker(w.master).from(s2)).await;
        confirm("confirmWorker", market.confirmWorker(s2).from(w.master)).await;
        confirm(
            "registerWorker",
            market.registerWorker(w.pending_master).from(s3),
        )
        .await;
        w.ctx.masters.insert(s2, w.master);
        // Blacklists: a consumer lists a master; a consumer lists a worker (whose
        // master it does not list); a supplier lists a consumer; the extra lists.
        let lists = [
            (c2, w.master),
            (c1, s2),
            (s1, c3),
            (x, s3),
            (x, w.master),
            (y, c1),
            (c2, w.pending_master),
        ];
        for (owner, who) in lists {
            confirm("blacklist.add", blacklist.add(who).from(owner)).await;
            w.ctx.blacklists.insert((owner, who));
        }
        // The world on chain is the one in the context.
        for who in accounts.iter().take(11) {
            let level = profiles.levelOf(*who).call().await.unwrap();
            assert_eq!(
                level,
                w.ctx.levels.get(who).copied().unwrap_or_default() as u8
            );
            let master = market.masterOf(*who).call().await.unwrap();
            assert_eq!(master, w.ctx.masters.get(who).copied().unwrap_or(*who));
        }
        let setup = started.elapsed();

        let mut rng = Rng(SEED);
        let mut matched = 0usize;
        let mut single = 0usize;
        let mut chain_reasons: BTreeMap<Clause, usize> = BTreeMap::new();
        let mut rust_reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut single_reasons: BTreeSet<String> = BTreeSet::new();
        for n in 0..PAIRS {
            let (bid, ask) = random_pair(&mut rng, &w);
            let ask = place(&market, &ask).await;
            let bid = place(&market, &bid).await;

            let rust = check_match(&bid, &ask, &w.ctx);
            let chain = match market
                .openDeal(placed_ref(&ask), placed_ref(&bid))
                .from(w.deployer)
                .call()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let decoded = e
                        .as_decoded_interface_error::<Market::MarketErrors>()
                        .unwrap_or_else(|| {
                            panic!("pair {n}: openDeal failed without a Market error: {e}")
                        });
                    let clause = Clause::from_chain(&decoded)
                        .unwrap_or_else(|| panic!("pair {n}: not a match error: {decoded:?}"));
                    assert_eq!(mismatch_of(&decoded), Some(clause.mismatch()));
                    Err(clause)
                }
            };
            let broken = broken_clauses(&bid, &ask, &w.ctx);
            let context = || {
                format!(
                    "pair {n}\nbid {bid:?}\nask {ask:?}\nbroken {broken:?}\nrust {rust:?}\nchain {chain:?}"
                )
            };

            // The verdict: the same on both sides.
            assert_eq!(
                rust.is_ok(),
                chain.is_ok(),
                "match verdicts differ: {}",
                context()
            );
            assert_eq!(rust.is_ok(), broken.is_empty(), "{}", context());
            // The reasons: each side's first broken clause in its own order.
            if let (Err(rust_reason), Err(chain_clause)) = (rust, chain) {
                let rust_first = broken.iter().min_by_key(|c| c.rust_rank()).unwrap();
                let chain_first = broken.iter().min_by_key(|c| c.chain_rank()).unwrap();
                assert_eq!(
                    rust_reason,
                    rust_first.mismatch(),
                    "rust's reason: {}",
                    context()
                );
                assert_eq!(
                    chain_clause,
                    *chain_first,
                    "the chain's reason: {}",
                    context()
                );
                if broken.len() == 1 {
                    assert_eq!(rust_reason, chain_clause.mismatch(), "{}", context());
                    single += 1;
                    single_reasons.insert(kind(rust_reason));
                }
                *chain_reasons
                    .entry(match chain_clause {
                        Clause::Benchmark(_) => Clause::Benchmark(0),
                        other => other,
                    })
                    .or_default() += 1;
                *rust_reasons.entry(kind(rust_reason)).or_default() += 1;
            } else {
                matched += 1;
            }
        }
        eprintln!(
            "{PAIRS} pairs: {matched} match, {single} broke exactly one clause; \
             setup {setup:?}, total {:?}\nchain reasons: {chain_reasons:?}\nrust reasons: {rust_reasons:?}",
            started.elapsed()
        );

        // Enough of both outcomes, and every clause seen failing on the chain.
        assert!(
            (PAIRS * 3 / 10..=PAIRS * 7 / 10).contains(&matched),
            "{matched} of {PAIRS} match"
        );
        let all = [
            Clause::WrongType,
            Clause::Benchmark(0),
            Clause::NetFlags,
            Clause::Price,
            Clause::Duration,
            Clause::AskCounterparty,
            Clause::BidCounterparty,
            Clause::ConsumerLevel,
            Clause::SupplierLevel,
            Clause::SupplierBlacklisted,
            Clause::ConsumerBlacklisted,
        ];
        for clause in all {
            assert!(
                chain_reasons.contains_key(&clause),
                "no pair failed on {clause:?} on chain"
            );
        }
        for clause in all {
            let m = kind(clause.mismatch());
            assert!(
                rust_reasons.contains_key(&m),
                "no pair failed on {m} in Rust"
            );
        }
        // And every Mismatch seen as the only broken clause, where both sides
        // must name it.
        for clause in all {
            let m = kind(clause.mismatch());
            assert!(
                single_reasons.contains(&m),
                "{m} never broke alone: {single_reasons:?}"
            );
        }
    });
}
