//! The re-planning state machine: the worker calls [`Optimus::step`] from its loop with the box's
//! plans, the DWH's open bids and the time, and applies the actions it returns.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sonm_market::{MatchContext, Order, OrderId, check_match};

use crate::error::{ConfigError, OptimusError};
use crate::planner::{Config, Market, Plan, Proposal, propose, quote};
use crate::price;
use crate::slice::{Shaper, Slice};

/// The worker's id for a plan.
pub type PlanId = u64;

/// A plan the box has now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivePlan {
    pub id: PlanId,
    pub plan: Plan,
    /// A deal runs on it: Optimus never cancels it and plans around its slice.
    pub has_deal: bool,
}

/// What the worker does, in the order given (cancels first, so each placement is admitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Withdraw the plan and its ASK order.
    Cancel(PlanId),
    /// Admit the plan and place its ASK order.
    Place(Plan),
}

/// Why a step re-planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// The plans add up to more than the capacity (it shrank): always re-planned.
    Oversubscribed,
    /// The new plans sell resources the current ones leave unsold (a deal ended, the box
    /// grew, or nothing is planned yet): re-planned even while cooling down.
    Idle { unsold: Slice },
    /// The new plans would earn more than the income threshold above the current ones.
    Income { current: u128, proposed: u128 },
    /// A plan's price is further than the drift threshold from what Optimus would ask now.
    Drift {
        plan: PlanId,
        price: u128,
        market: u128,
    },
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The plans are already what Optimus would propose.
    Unchanged,
    /// The market moved, but not past a threshold.
    Holding,
    /// A threshold was passed, but the last re-plan was too recent.
    CoolingDown {
        until: u64,
    },
    Replanned(Trigger),
}

/// A step's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Empty unless the outcome is [`Outcome::Replanned`].
    pub actions: Vec<Action>,
    pub outcome: Outcome,
    /// What the current plans without a deal earn per second, each matched to a distinct bid.
    pub current_income: u128,
    /// What the proposal earns, judged the same way.
    pub proposed_income: u128,
    pub proposal: Proposal,
}

/// The autotrader. Pure: the worker owns the plans and the clock; Optimus keeps only its
/// configuration and when it last re-planned (for the cooldown).
#[derive(Clone)]
pub struct Optimus<S> {
    cfg: Config,
    shaper: S,
    last_replan: Option<u64>,
}

// By hand: the shaper is usually a closure, which has no Debug.
impl<S> std::fmt::Debug for Optimus<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimus")
            .field("cfg", &self.cfg)
            .field("last_replan", &self.last_replan)
            .finish_non_exhaustive()
    }
}

impl<S: Shaper> Optimus<S> {
    pub fn new(cfg: Config, shaper: S) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            shaper,
            last_replan: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn shaper(&self) -> &S {
        &self.shaper
    }

    /// When the last step that returned actions ran.
    pub fn last_replan(&self) -> Option<u64> {
        self.last_replan
    }

    /// One round at `now` (unix seconds): plans the part of `capacity` that no deal holds
    /// against `market`'s bids and, when a trigger fires, returns the cancels and placements
    /// that turn the plans without a deal into the proposal (plans with the same terms are
    /// kept). Plans with a deal are never cancelled; after the actions the plans fit
    /// `capacity`. The caller is expected to apply the actions it gets.
    pub fn step<C: MatchContext>(
        &mut self,
        capacity: Slice,
        plans: &[ActivePlan],
        market: &Market<'_, C>,
        now: u64,
    ) -> Result<Decision, OptimusError> {
        let held = Slice::sum(plans.iter().filter(|p| p.has_deal).map(|p| &p.plan.slice))
            .ok_or(OptimusError::Overflow)?;
        if !held.fits_in(&capacity) {
            return Err(OptimusError::DealsExceedCapacity {
                used: held,
                capacity,
            });
        }
        let free = capacity.saturating_sub(&held);
        let open: Vec<&ActivePlan> = plans.iter().filter(|p| !p.has_deal).collect();
        let proposal = propose(&self.cfg, &self.shaper, &capacity, &free, market);

        let current: Vec<&Plan> = open.iter().map(|p| &p.plan).collect();
        let current_income = self.income(&current, market);
        let proposed_income = self.income(&proposal.plans.iter().collect::<Vec<_>>(), market);
        let (keep, place) = diff(&open, &proposal.plans);

        let sold = Slice::sum(current.iter().map(|p| &p.slice)).ok_or(OptimusError::Overflow)?;
        let outcome = if !sold.fits_in(&free) {
            Outcome::Replanned(Trigger::Oversubscribed)
        } else if place.is_empty() && keep.len() == open.len() {
            Outcome::Unchanged
        } else if let Some(unsold) = unsold(&sold, &proposal.plans) {
            Outcome::Replanned(Trigger::Idle { unsold })
        } else {
            // The remaining triggers respect the cooldown: prices wobble, orders cost gas.
            let until = self
                .last_replan
                .map_or(0, |t| t.saturating_add(self.cfg.thresholds.cooldown_s));
            let fired = self
                .income_trigger(current_income, proposed_income)
                .or_else(|| self.drift_trigger(&capacity, &open, &proposal, market));
            match fired {
                None => Outcome::Holding,
                Some(_) if now < until => Outcome::CoolingDown { until },
                Some(t) => Outcome::Replanned(t),
            }
        };
        let mut actions = Vec::new();
        if matches!(outcome, Outcome::Replanned(_)) {
            let cancel = (0..open.len()).filter(|i| !keep.contains(i));
            actions.extend(cancel.map(|i| Action::Cancel(open[i].id)));
            actions.extend(
                place
                    .iter()
                    .map(|&i| Action::Place(proposal.plans[i].clone())),
            );
            self.last_replan = Some(now);
        }
        Ok(Decision {
            actions,
            outcome,
            current_income,
            proposed_income,
            proposal,
        })
    }

    /// What `plans` earn per second if each is taken by a distinct open bid it matches: plans
    /// first claim the bid they were sized for, then the rest claim any, dearest plan first.
    fn income<C: MatchContext>(&self, plans: &[&Plan], market: &Market<'_, C>) -> u128 {
        let asks: Vec<Order> = plans
            .iter()
            .map(|p| p.ask_order(&self.cfg, &self.shaper))
            .collect();
        let mut taken: HashSet<OrderId> = HashSet::new();
        let mut earning = vec![false; plans.len()];
        for (i, p) in plans.iter().enumerate() {
            let Some(bid_id) = p.sized_for else { continue };
            let own = market.bids.iter().find(|b| b.id == bid_id);
            if let Some(bid) = own
                && !taken.contains(&bid_id)
                && check_match(bid, &asks[i], market.ctx).is_ok()
            {
                taken.insert(bid_id);
                earning[i] = true;
            }
        }
        let mut rest: Vec<usize> = (0..plans.len()).filter(|&i| !earning[i]).collect();
        rest.sort_by_key(|&i| std::cmp::Reverse(plans[i].price));
        for i in rest {
            let hit = market
                .bids
                .iter()
                .find(|b| !taken.contains(&b.id) && check_match(*b, &asks[i], market.ctx).is_ok());
            if let Some(bid) = hit {
                taken.insert(bid.id);
                earning[i] = true;
            }
        }
        plans
            .iter()
            .zip(&earning)
            .filter(|(_, e)| **e)
            .fold(0u128, |acc, (p, _)| acc.saturating_add(p.price))
    }

    fn income_trigger(&self, current: u128, proposed: u128) -> Option<Trigger> {
        let bps = u128::from(self.cfg.thresholds.income_bps);
        (proposed.saturating_mul(10_000) > current.saturating_mul(10_000 + bps))
            .then_some(Trigger::Income { current, proposed })
    }

    /// The first plan whose price is off by more than the drift threshold from what Optimus
    /// would ask for it now: just under its bid while that bid is open and matches, otherwise
    /// the market's unit price for its slice.
    fn drift_trigger<C: MatchContext>(
        &self,
        capacity: &Slice,
        open: &[&ActivePlan],
        proposal: &Proposal,
        market: &Market<'_, C>,
    ) -> Option<Trigger> {
        let bps = u128::from(self.cfg.thresholds.drift_bps);
        open.iter().find_map(|p| {
            let plan = &p.plan;
            let mut ask = plan.ask_order(&self.cfg, &self.shaper);
            // Judge everything but the price, which is what is being checked.
            ask.price = 0;
            let own_bid = plan.sized_for.and_then(|id| {
                market
                    .bids
                    .iter()
                    .find(|b| b.id == id && check_match(*b, &ask, market.ctx).is_ok())
            });
            let reference = match own_bid {
                Some(bid) => price::undercut(bid.price, self.cfg.undercut_bps)
                    .max(self.cfg.floor.price(&plan.slice)),
                None => quote(&self.cfg, capacity, proposal.unit_price, &plan.slice),
            };
            let gap = plan.price.abs_diff(reference);
            (gap.saturating_mul(10_000) > reference.saturating_mul(bps)).then_some(Trigger::Drift {
                plan: p.id,
                price: plan.price,
                market: reference,
            })
        })
    }
}

/// Which current plans (by position) have a proposed twin, and which
/// proposed plans (by position) have none and must be placed.
fn diff(open: &[&ActivePlan], proposed: &[Plan]) -> (Vec<usize>, Vec<usize>) {
    let mut used = vec![false; open.len()];
    let mut place = Vec::new();
    for (j, p) in proposed.iter().enumerate() {
        // Same terms and same purpose: names (see `Plan::name`) then stay unique.
        let twin = |i: usize| {
            !used[i] && open[i].plan.same_terms(p) && open[i].plan.sized_for == p.sized_for
        };
        match (0..open.len()).find(|&i| twin(i)) {
            Some(i) => used[i] = true,
            None => place.push(j),
        }
    }
    let keep = (0..open.len()).filter(|&i| used[i]).collect();
    (keep, place)
}

/// What the proposal sells beyond what `sold` covers, if anything.
fn unsold(sold: &Slice, proposed: &[Plan]) -> Option<Slice> {
    let want = Slice::sum(proposed.iter().map(|p| &p.slice))?;
    let extra = want.saturating_sub(sold);
    (!extra.is_empty()).then_some(extra)
}
