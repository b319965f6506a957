//! One planning round: which bids to size plans for, at what prices, and what to ask for the
//! rest of the box.

use serde::{Deserialize, Serialize};
use sonm_market::{
    Address, B256, IdentityLevel, MAX_PRICE, MatchContext, NetFlags, Order, OrderId, OrderType,
    check_match,
};

use crate::error::ConfigError;
use crate::knapsack::{self, Item};
use crate::price::{self, Floor};
use crate::slice::{Shaper, Slice, min_slice};

/// When the market has moved enough to re-plan (see [`crate::Optimus::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Re-plan when the new plan set would earn more than this many basis points above what
    /// the current plans earn.
    pub income_bps: u32,
    /// Re-plan when a plan's price is more than this many basis points from the price Optimus
    /// would give it now.
    pub drift_bps: u32,
    /// Seconds after a re-plan during which income and drift do not trigger another (idle
    /// capacity always does).
    pub cooldown_s: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            income_bps: 500,
            drift_bps: 1_000,
            cooldown_s: 300,
        }
    }
}

/// What the supplier decided once: who sells, what the box offers, the floor and the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The worker's address, the asks' author (the match rule checks identity, counterparty
    /// and blacklists against it).
    pub author: Address,
    /// The network capabilities every plan offers (the box's).
    pub netflags: NetFlags,
    /// Required of buyers.
    pub buyer_identity: IdentityLevel,
    /// The address whose blacklist the asks carry (for example the master's).
    pub blacklist: Option<Address>,
    pub floor: Floor,
    /// How far under a bid's price a plan sized for it is priced, in basis points: the deal
    /// runs at the ask's price, so this is what the supplier gives up to win against other
    /// asks the bid also matches.
    pub undercut_bps: u32,
    /// The percentile of the matching bids' unit prices that prices leftover capacity.
    pub fallback_percentile: u8,
    /// The leftover ask's duration in seconds (0 = spot).
    pub fallback_duration: u64,
    /// Up to this many candidate bids the knapsack is solved exactly; above, by the heuristic.
    pub exact_limit: usize,
    pub thresholds: Thresholds,
}

impl Config {
    /// Defaults for everything but who sells, what the box offers and the floor.
    pub fn new(author: Address, netflags: NetFlags, floor: Floor) -> Self {
        Self {
            author,
            netflags,
            buyer_identity: IdentityLevel::Anonymous,
            blacklist: None,
            floor,
            undercut_bps: 50,
            fallback_percentile: 50,
            fallback_duration: 0,
            exact_limit: 20,
            thresholds: Thresholds::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.undercut_bps > 10_000 {
            return Err(ConfigError::Undercut(self.undercut_bps));
        }
        if self.fallback_percentile > 100 {
            return Err(ConfigError::Percentile(self.fallback_percentile));
        }
        if self.exact_limit > MAX_EXACT_LIMIT {
            return Err(ConfigError::ExactLimit(self.exact_limit));
        }
        Ok(())
    }
}

const NAME_PREFIX: &str = "optimus-";

/// The most candidates [`Config::exact_limit`] may send to the unbounded exact solver: its worst
/// case is 2^n nodes (about a second at 24 in release; hours at 60, measured). Above the limit
/// the bounded search gets close anyway.
pub const MAX_EXACT_LIMIT: usize = 24;

/// An ask plan as Optimus proposes it: the worker admits it into its `Plans` and places it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub slice: Slice,
    /// SNM wei per second.
    pub price: u128,
    /// Seconds; 0 = spot.
    pub duration: u64,
    pub netflags: NetFlags,
    pub identity_level: IdentityLevel,
    /// The bid it was sized for; `None` for the leftover ask.
    pub sized_for: Option<OrderId>,
}

impl Plan {
    /// The ASK order this plan becomes (id 0 and no tag until the worker places it).
    pub fn ask_order(&self, cfg: &Config, shaper: &impl Shaper) -> Order {
        Order {
            id: 0,
            order_type: OrderType::Ask,
            author: cfg.author,
            counterparty: None,
            duration: self.duration,
            price: self.price,
            netflags: self.netflags,
            identity_level: self.identity_level,
            blacklist: cfg.blacklist,
            tag: B256::ZERO,
            benchmarks: shaper.benchmarks(&self.slice),
        }
    }

    /// Same order on chain: everything but why it was made.
    pub fn same_terms(&self, o: &Plan) -> bool {
        (
            self.slice,
            self.price,
            self.duration,
            self.netflags,
            self.identity_level,
        ) == (o.slice, o.price, o.duration, o.netflags, o.identity_level)
    }

    /// A name for the worker's plan table, unique among the plans Optimus keeps and places in
    /// one step (one plan per bid, one leftover).
    pub fn name(&self) -> String {
        match self.sized_for {
            Some(bid) => format!("{NAME_PREFIX}bid-{bid}"),
            None => format!("{NAME_PREFIX}leftover"),
        }
    }

    /// The inverse of [`Plan::name`] for `sized_for`, so the worker can rebuild an
    /// [`crate::ActivePlan`] from its stored plan: `None` for a name Optimus did not give
    /// (a plan from the config, which the worker leaves out of the capacity it passes).
    pub fn sized_for_from_name(name: &str) -> Option<Option<OrderId>> {
        match name.strip_prefix(NAME_PREFIX)? {
            "leftover" => Some(None),
            rest => rest.strip_prefix("bid-")?.parse().ok().map(Some),
        }
    }
}

/// The open bids and what the match rule needs to judge them.
#[derive(Debug, Clone, Copy)]
pub struct Market<'a, C> {
    /// Open BID orders as the DWH returns them; anything else is ignored.
    pub bids: &'a [Order],
    pub ctx: &'a C,
}

/// A bid the box can serve, with the plan sized for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub bid_price: u128,
    pub plan: Plan,
}

/// The bids the box can serve within `free`, each with the smallest slice that meets its
/// benchmarks, priced just under the bid (never under the floor), and kept only when that ask
/// and the bid pass `check_match`.
pub fn candidates<C: MatchContext>(
    cfg: &Config,
    shaper: &impl Shaper,
    free: &Slice,
    market: &Market<'_, C>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for bid in market.bids {
        if bid.order_type != OrderType::Bid
            || bid.validate().is_err()
            || !cfg.netflags.covers(bid.netflags)
        {
            continue;
        }
        let Some(slice) = min_slice(shaper, &bid.benchmarks, free) else {
            continue;
        };
        let floor = cfg.floor.price(&slice);
        if floor > bid.price {
            continue;
        }
        let plan = Plan {
            slice,
            price: price::undercut(bid.price, cfg.undercut_bps).max(floor),
            duration: bid.duration,
            netflags: cfg.netflags,
            identity_level: cfg.buyer_identity,
            sized_for: Some(bid.id),
        };
        if check_match(bid, &plan.ask_order(cfg, shaper), market.ctx).is_ok() {
            out.push(Candidate {
                bid_price: bid.price,
                plan,
            });
        }
    }
    out
}

/// A planning round's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Plans sized for bids (by bid id), then the leftover ask if any.
    pub plans: Vec<Plan>,
    /// What the sized plans earn per second once their bids take them.
    pub income: u128,
    /// The market's price per "box" (see [`price::units`]) at the configured percentile of the
    /// candidates; `None` with no candidates.
    pub unit_price: Option<f64>,
    pub candidates: usize,
    /// True when the selection is proven optimal: always up to `exact_limit` candidates, and
    /// above it when the bounded search covered every candidate and finished.
    pub exact: bool,
}

/// Plans the `free` part of a box of `capacity`: the knapsack over the candidates, then one ask
/// for what is left (if it has a core: without one nothing can run on it) at the market's unit
/// price, never under the floor. The plans' slices never add up to more than `free`.
pub fn propose<C: MatchContext>(
    cfg: &Config,
    shaper: &impl Shaper,
    capacity: &Slice,
    free: &Slice,
    market: &Market<'_, C>,
) -> Proposal {
    let cands = candidates(cfg, shaper, free, market);
    let items: Vec<Item> = cands
        .iter()
        .map(|c| Item {
            weight: c.plan.slice.dims(),
            value: c.plan.price,
        })
        .collect();
    let (chosen, exact) = if cands.len() <= cfg.exact_limit {
        (knapsack::solve_exact(&items, &free.dims()), true)
    } else {
        knapsack::solve_large(&items, &free.dims())
    };
    let mut plans: Vec<Plan> = chosen.iter().map(|&i| cands[i].plan.clone()).collect();
    plans.sort_by_key(|p| p.sized_for);
    let income = knapsack::total(&items, &chosen);
    let unit_price = unit_price(cfg, capacity, &cands);
    let used = Slice::sum(plans.iter().map(|p| &p.slice)).unwrap_or(*free);
    let left = free.saturating_sub(&used);
    if left.cpu_cores > 0 {
        plans.push(Plan {
            slice: left,
            price: quote(cfg, capacity, unit_price, &left),
            duration: cfg.fallback_duration,
            netflags: cfg.netflags,
            identity_level: cfg.buyer_identity,
            sized_for: None,
        });
    }
    Proposal {
        plans,
        income,
        unit_price,
        candidates: cands.len(),
        exact,
    }
}

fn unit_price(cfg: &Config, capacity: &Slice, cands: &[Candidate]) -> Option<f64> {
    let mut unit: Vec<f64> = cands
        .iter()
        .map(|c| (c.bid_price as f64, price::units(&c.plan.slice, capacity)))
        .filter(|&(_, u)| u > 0.0)
        .map(|(p, u)| p / u)
        .collect();
    price::percentile(&mut unit, cfg.fallback_percentile)
}

/// The price for `slice` at the market's unit price, never under the floor.
pub(crate) fn quote(
    cfg: &Config,
    capacity: &Slice,
    unit_price: Option<f64>,
    slice: &Slice,
) -> u128 {
    let floor = cfg.floor.price(slice);
    let market = unit_price.map_or(0.0, |p| p * price::units(slice, capacity));
    // `as` saturates a float: NaN → 0, huge → u128::MAX, then the chain's cap.
    (market as u128).max(floor).min(MAX_PRICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let mut p = Plan {
            slice: Slice::ZERO,
            price: 1,
            duration: 0,
            netflags: NetFlags::NONE,
            identity_level: IdentityLevel::Anonymous,
            sized_for: Some(42),
        };
        assert_eq!(p.name(), "optimus-bid-42");
        assert_eq!(Plan::sized_for_from_name(&p.name()), Some(Some(42)));
        p.sized_for = None;
        assert_eq!(Plan::sized_for_from_name(&p.name()), Some(None));
        assert_eq!(Plan::sized_for_from_name("gpu-box"), None);
        assert_eq!(Plan::sized_for_from_name("optimus-bid-x"), None);
    }
}
