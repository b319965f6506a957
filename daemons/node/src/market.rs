//! Market search for the customer: where the open asks come from ([`AskSource`]) and which of
//! them match a bid built from the customer's spec (the match rule of `sonm-market`).
//!
//! For now the asks come from the chain's logs ([`ChainAsks`]: `OrderPlaced` asks minus those
//! cancelled or taken by a deal, scanned incrementally from the deployment block). The DWH will
//! answer the same question from its index: it only has to implement [`AskSource`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use sonm_market::{
    Address, Benchmarks, IdentityLevel, MAX_PRICE, MatchContext, NetFlags, Order, OrderId,
    OrderType, StaticContext, check_match, scan_best_asks,
};

use crate::chain::{Chain, ChainError};

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("{0}")]
    Source(String),
}

/// Where the active asks come from. Blocking: called from the API's worker threads.
pub trait AskSource: Send + Sync + std::fmt::Debug {
    /// Every active ask.
    fn active_asks(&self) -> Result<Vec<Order>, MarketError>;

    /// One active ask, or `None` if it is unknown, cancelled or taken.
    fn active_ask(&self, id: OrderId) -> Result<Option<Order>, MarketError> {
        Ok(self.active_asks()?.into_iter().find(|o| o.id == id))
    }
}

/// Asks from the chain's logs, kept in memory and brought up to date on every query.
#[derive(Debug)]
pub struct ChainAsks {
    chain: Chain,
    state: Mutex<Scan>,
}

#[derive(Debug)]
struct Scan {
    /// The next block to scan.
    next: u64,
    asks: BTreeMap<OrderId, Order>,
}

impl ChainAsks {
    pub fn new(chain: Chain) -> Self {
        let next = chain.addresses().deploy_block;
        Self {
            chain,
            state: Mutex::new(Scan {
                next,
                asks: BTreeMap::new(),
            }),
        }
    }

    fn refresh(&self) -> Result<Vec<Order>, MarketError> {
        let mut scan = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let chain = &self.chain;
        let latest = crate::block_on(chain.block_number())?;
        if latest >= scan.next {
            let (placed, gone) = crate::block_on(chain.ask_events(scan.next, latest))?;
            // An order is removed only after it was placed: placements first, then removals.
            for ask in placed {
                scan.asks.insert(ask.id, ask);
            }
            for id in gone {
                scan.asks.remove(&id);
            }
            scan.next = latest + 1;
        }
        Ok(scan.asks.values().cloned().collect())
    }
}

impl AskSource for ChainAsks {
    fn active_asks(&self) -> Result<Vec<Order>, MarketError> {
        self.refresh()
    }
}

/// What a customer looks for; unset fields ask nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskQuery {
    pub benchmarks: Benchmarks,
    /// Highest acceptable price, SNM wei per second.
    pub max_price: u128,
    /// 0: spot; otherwise a forward deal of this many seconds.
    pub duration: u64,
    pub netflags: NetFlags,
    /// Asks of this supplier only.
    pub supplier: Option<Address>,
    pub limit: usize,
}

impl Default for AskQuery {
    fn default() -> Self {
        Self {
            benchmarks: Benchmarks::ZERO,
            max_price: MAX_PRICE,
            duration: 0,
            netflags: NetFlags::default(),
            supplier: None,
            limit: 100,
        }
    }
}

impl AskQuery {
    /// The bid the customer would place: what the asks are matched against.
    pub fn bid(&self, me: Address) -> Order {
        Order {
            id: 0,
            order_type: OrderType::Bid,
            author: me,
            counterparty: self.supplier,
            duration: self.duration,
            price: self.max_price,
            netflags: self.netflags,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: Default::default(),
            benchmarks: self.benchmarks,
        }
    }
}

/// The asks that could match `query` for `me` whatever the profiles and blacklists say (as if
/// `me` had the highest identity level and nobody listed anybody): what is worth looking up.
pub fn candidate_asks(asks: Vec<Order>, query: &AskQuery, me: Address) -> Vec<Order> {
    let bid = query.bid(me);
    let mut loose = StaticContext::default();
    loose.levels.insert(me, IdentityLevel::Professional);
    asks.into_iter()
        .filter(|ask| check_match(&bid, ask, &loose).is_ok())
        .collect()
}

/// The asks that match `query` for `me` under `ctx`, cheapest first (ties by id), at most
/// `query.limit`: `sonm_market::scan_best_asks`, the match rule's reference search. The chain
/// re-checks everything in `quickBuy`.
pub fn matching_asks(
    asks: &[Order],
    query: &AskQuery,
    me: Address,
    ctx: &impl MatchContext,
) -> Vec<Order> {
    let bid = query.bid(me);
    let ids = scan_best_asks(asks, &bid, query.limit, ctx);
    ids.into_iter()
        .filter_map(|id| asks.iter().find(|a| a.id == id).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonm_market::Benchmark;

    fn ask(id: OrderId, price: u128, cores: u64, duration: u64) -> Order {
        Order {
            id,
            order_type: OrderType::Ask,
            author: Address::repeat_byte(1),
            counterparty: None,
            duration,
            price,
            netflags: NetFlags::OUTBOUND,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: Default::default(),
            benchmarks: Benchmarks::ZERO.with(Benchmark::CpuCores, cores),
        }
    }

    #[test]
    fn asks_match_by_spec_price_and_duration_cheapest_first() {
        let me = Address::repeat_byte(9);
        let ctx = StaticContext::default();
        let asks = [
            ask(1, 30, 4, 0),
            ask(2, 10, 1, 0),
            ask(3, 20, 2, 0),
            ask(4, 5, 8, 3600),
        ];
        let q = AskQuery {
            benchmarks: "cpu-cores=2".parse().unwrap(),
            ..AskQuery::default()
        };
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [3, 1]);
        let q = AskQuery { max_price: 25, ..q };
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [3]);
        let q = AskQuery {
            duration: 600,
            ..AskQuery::default()
        };
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [4]);
    }

    #[test]
    fn identity_and_blacklists_come_from_the_context() {
        let me = Address::repeat_byte(9);
        let mut strict = ask(1, 10, 1, 0);
        strict.identity_level = IdentityLevel::Registered;
        let asks = vec![strict, ask(2, 20, 1, 0)];
        let q = AskQuery::default();
        // Both are worth looking up; an anonymous customer gets only the second.
        assert_eq!(candidate_asks(asks.clone(), &q, me).len(), 2);
        let mut ctx = StaticContext::default();
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [2]);
        ctx.levels.insert(me, IdentityLevel::Registered);
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [1, 2]);
        // The supplier listed us.
        ctx.blacklists.insert((Address::repeat_byte(1), me));
        assert!(matching_asks(&asks, &q, me, &ctx).is_empty());
    }
}
