//! The match rule of DESIGN.md, in one place. The chain re-checks the same rule in
//! `Market.openDeal`; the order book and the DWH call this function.

use std::collections::{HashMap, HashSet};

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::benchmarks::{Benchmark, Benchmarks};
use crate::order::{IdentityLevel, NetFlags, Order, OrderId, OrderType};

/// The fields of an order that the match rule reads. [`Order`] implements it, and so
/// does the order book's compact entry, so that both are judged by the same code.
pub trait OrderFields {
    fn id(&self) -> OrderId;
    fn order_type(&self) -> OrderType;
    fn author(&self) -> Address;
    fn counterparty(&self) -> Option<Address>;
    fn duration(&self) -> u64;
    fn price(&self) -> u128;
    fn netflags(&self) -> NetFlags;
    fn identity_level(&self) -> IdentityLevel;
    fn blacklist(&self) -> Option<Address>;
    fn benchmarks(&self) -> &Benchmarks;
}

impl OrderFields for Order {
    fn id(&self) -> OrderId {
        self.id
    }
    fn order_type(&self) -> OrderType {
        self.order_type
    }
    fn author(&self) -> Address {
        self.author
    }
    fn counterparty(&self) -> Option<Address> {
        self.counterparty
    }
    fn duration(&self) -> u64 {
        self.duration
    }
    fn price(&self) -> u128 {
        self.price
    }
    fn netflags(&self) -> NetFlags {
        self.netflags
    }
    fn identity_level(&self) -> IdentityLevel {
        self.identity_level
    }
    fn blacklist(&self) -> Option<Address> {
        self.blacklist
    }
    fn benchmarks(&self) -> &Benchmarks {
        &self.benchmarks
    }
}

/// What the rule needs to know beyond the two orders: profiles, blacklists, masters.
/// The DWH answers from its index, tests from [`StaticContext`].
pub trait MatchContext {
    /// The identity level the profile registry gives `who`.
    fn identity_level(&self, who: Address) -> IdentityLevel;
    /// True when `who` is on `owner`'s blacklist.
    fn is_blacklisted(&self, owner: Address, who: Address) -> bool;
    /// The master a worker address is registered under; itself when it has none.
    fn master_of(&self, worker: Address) -> Address {
        worker
    }
}

/// Why a bid and an ask do not match: the first rule that fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "rule", content = "benchmark")]
pub enum Mismatch {
    /// The first order is not a bid or the second not an ask.
    OrderTypes,
    /// The ask asks more than the bid offers.
    Price,
    /// Spot and forward do not mix, and a forward ask must last at least as long.
    Duration,
    /// The ask lacks a network capability the bid needs.
    NetFlags,
    /// The ask falls short on this benchmark.
    Benchmark(Benchmark),
    /// The bid's author is below the level the ask requires.
    BidderIdentity,
    /// The ask's author is below the level the bid requires.
    AskerIdentity,
    /// One of the orders names a different counterparty.
    Counterparty,
    /// One party is on a blacklist that applies to the other.
    Blacklisted,
}

/// Durations agree: both spot, or a forward ask at least as long as a forward bid.
pub const fn durations_agree(bid: u64, ask: u64) -> bool {
    (bid == 0 && ask == 0) || (bid > 0 && ask >= bid)
}

/// Checks the whole match rule; `Ok` when `bid` and `ask` may form a deal. Cheap
/// numeric rules run first, context look-ups last.
pub fn check_match(
    bid: &impl OrderFields,
    ask: &impl OrderFields,
    ctx: &impl MatchContext,
) -> Result<(), Mismatch> {
    if bid.order_type() != OrderType::Bid || ask.order_type() != OrderType::Ask {
        return Err(Mismatch::OrderTypes);
    }
    if ask.price() > bid.price() {
        return Err(Mismatch::Price);
    }
    if !durations_agree(bid.duration(), ask.duration()) {
        return Err(Mismatch::Duration);
    }
    if !ask.netflags().covers(bid.netflags()) {
        return Err(Mismatch::NetFlags);
    }
    if let Some(short) = ask.benchmarks().first_shortfall(bid.benchmarks()) {
        return Err(Mismatch::Benchmark(short));
    }
    let (consumer, supplier) = (bid.author(), ask.author());
    if ctx.identity_level(consumer) < ask.identity_level() {
        return Err(Mismatch::BidderIdentity);
    }
    if ctx.identity_level(supplier) < bid.identity_level() {
        return Err(Mismatch::AskerIdentity);
    }
    let master = ctx.master_of(supplier);
    if ask.counterparty().is_some_and(|c| c != consumer)
        || bid
            .counterparty()
            .is_some_and(|c| c != supplier && c != master)
    {
        return Err(Mismatch::Counterparty);
    }
    let listed =
        |list: Option<Address>, who: Address| list.is_some_and(|l| ctx.is_blacklisted(l, who));
    if listed(Some(consumer), master)
        || listed(bid.blacklist(), master)
        || listed(Some(supplier), consumer)
        || listed(ask.blacklist(), consumer)
    {
        return Err(Mismatch::Blacklisted);
    }
    Ok(())
}

/// True when `bid` and `ask` may form a deal.
pub fn matches(bid: &impl OrderFields, ask: &impl OrderFields, ctx: &impl MatchContext) -> bool {
    check_match(bid, ask, ctx).is_ok()
}

/// The reference search: every ask in `asks` is checked against `bid`; the `k`
/// cheapest matches come back, cheapest first, ties by id. The order book must
/// answer exactly this, without looking at every order.
pub fn scan_best_asks<'a>(
    asks: impl IntoIterator<Item = &'a Order>,
    bid: &impl OrderFields,
    k: usize,
    ctx: &impl MatchContext,
) -> Vec<OrderId> {
    let mut found: Vec<(u128, OrderId)> = asks
        .into_iter()
        .filter(|ask| matches(bid, *ask, ctx))
        .map(|ask| (ask.price, ask.id))
        .collect();
    found.sort_unstable();
    found.into_iter().take(k).map(|(_, id)| id).collect()
}

/// The reference search for an ask: the `k` best-paying matching bids, highest
/// price first, ties by id.
pub fn scan_best_bids<'a>(
    bids: impl IntoIterator<Item = &'a Order>,
    ask: &impl OrderFields,
    k: usize,
    ctx: &impl MatchContext,
) -> Vec<OrderId> {
    let mut found: Vec<(std::cmp::Reverse<u128>, OrderId)> = bids
        .into_iter()
        .filter(|bid| matches(*bid, ask, ctx))
        .map(|bid| (std::cmp::Reverse(bid.price), bid.id))
        .collect();
    found.sort_unstable();
    found.into_iter().take(k).map(|(_, id)| id).collect()
}

/// A [`MatchContext`] held in memory: for tests, benchmarks and tools that load a
/// snapshot. Unknown parties are anonymous, unlisted and their own masters.
#[derive(Clone, Debug, Default)]
pub struct StaticContext {
    pub levels: HashMap<Address, IdentityLevel>,
    /// (owner, listed) pairs.
    pub blacklists: HashSet<(Address, Address)>,
    /// worker → master.
    pub masters: HashMap<Address, Address>,
}

impl MatchContext for StaticContext {
    fn identity_level(&self, who: Address) -> IdentityLevel {
        self.levels.get(&who).copied().unwrap_or_default()
    }
    fn is_blacklisted(&self, owner: Address, who: Address) -> bool {
        !self.blacklists.is_empty() && self.blacklists.contains(&(owner, who))
    }
    fn master_of(&self, worker: Address) -> Address {
        self.masters.get(&worker).copied().unwrap_or(worker)
    }
}
