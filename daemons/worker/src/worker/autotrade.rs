//! The autotrader's and the matcher's loop (`[autotrader]`; see `crate::autotrader` for the
//! configuration and the pure glue). Each round: read the open bids from the DWH, let Optimus
//! re-plan the box if the market moved (cancel first, then place), place the new asks, then
//! take the best matching bid of each of our asks, re-validated against the chain.
//!
//! A DWH that does not answer skips the round: the plans and their asks stay as they are.

use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use alloy::primitives::U256;
use sonm_contracts::{Addresses, TxError, signed_ref};
use sonm_market::{Address, DealId, IdentityLevel, Mismatch, Order, OrderId, StaticContext};
use sonm_optimus::{Action, Floor, Optimus, Outcome};

use super::{Worker, WorkerError, lock, now};
use crate::autotrader::{
    AutotraderConfig, AutotraderError, BoxShaper, Dwh, optimus_view, per_hour, spec_for,
};
use crate::chain::ChainError;
use crate::plan::PlanId;

/// How many of the DWH's best matches of one ask are tried in a round.
const MATCHES_PER_ASK: usize = 5;
/// A signed ask that expires within this many seconds of the chain's time is not used to open
/// a deal (the transaction lands a block later); the chain loop signs it again first.
const SIGNED_EXPIRY_MARGIN_S: u64 = 2;

/// What the loop keeps between rounds.
#[derive(Debug)]
pub struct Autotrader {
    cfg: AutotraderConfig,
    dwh: Dwh,
    /// Built at the first round, and again when the floor moves (a USD floor follows the
    /// oracle); it keeps the time of the last re-plan for the cooldown.
    optimus: Option<(Floor, Optimus<BoxShaper>)>,
    oracle: Option<Address>,
    /// Open bids the chain's view refused for our asks (a level, a blacklist): left out of
    /// planning while they stay open, so no plan waits for a bid it can never take.
    refused: HashSet<OrderId>,
    dwh_down: bool,
}

impl Autotrader {
    pub fn new(cfg: AutotraderConfig, oracle: Option<Address>) -> Self {
        Self {
            dwh: Dwh::new(&cfg.dwh_url),
            cfg,
            optimus: None,
            oracle,
            refused: HashSet::new(),
            dwh_down: false,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Why the round was skipped (the DWH did not answer).
    pub skipped: Option<String>,
    pub outcome: Option<Outcome>,
    pub cancelled: Vec<PlanId>,
    pub placed: Vec<PlanId>,
    pub deals: Vec<DealId>,
}

/// How taking one bid went.
enum Take {
    Opened(DealId),
    /// The bid is no longer active on chain as the DWH described it (taken, cancelled).
    BidGone,
    /// Our ask is no longer active (a deal took it).
    AskGone,
    Refused(Mismatch),
}

impl Worker {
    /// The autotrader for this worker's configuration, if `[autotrader]` is set.
    pub fn autotrader(&self) -> Option<Autotrader> {
        let cfg = self.config.autotrader.clone()?;
        let oracle = Addresses::read(&self.config.addresses)
            .ok()
            .map(|a| a.contracts.oracle_usd);
        Some(Autotrader::new(cfg, oracle))
    }

    /// Runs a round every `interval` until dropped.
    pub(super) async fn autotrader_loop(self: Arc<Self>, mut at: Autotrader) {
        tracing::info!(dwh = %at.cfg.dwh_url, replan = at.cfg.replan,
            match_bids = at.cfg.match_bids, "autotrader on");
        loop {
            self.autotrade_round(&mut at).await;
            smol::Timer::after(at.cfg.interval()).await;
        }
    }

    /// One round: bids, re-plan, asks, matches. Failures are logged; the next round retries.
    pub async fn autotrade_round(&self, at: &mut Autotrader) -> Round {
        let mut round = Round::default();
        if self.in_maintenance() {
            // No re-plan, no ask, no new deal while the supplier has the box in maintenance.
            round.skipped = Some("maintenance".into());
            return round;
        }
        let (dwh, max) = (at.dwh.clone(), at.cfg.max_bids);
        let bids = match smol::unblock(move || dwh.open_bids(max)).await {
            Ok(b) => b,
            Err(e) => {
                // Once per outage, not every round.
                if at.dwh_down {
                    tracing::debug!("autotrader: {e}; round skipped, plans kept");
                } else {
                    tracing::warn!("autotrader: {e}; rounds skipped, plans kept, until it answers");
                }
                at.dwh_down = true;
                round.skipped = Some(e.to_string());
                return round;
            }
        };
        if std::mem::take(&mut at.dwh_down) {
            tracing::info!("autotrader: the DWH answers again");
        }
        at.refused.retain(|id| bids.iter().any(|b| b.id == *id));
        if at.cfg.replan
            && let Err(e) = self.replan(at, &bids, &mut round).await
        {
            tracing::warn!("autotrader: {e}");
        }
        if let Err(e) = self.sync_plans().await {
            tracing::warn!("plans: {e}");
        }
        if at.cfg.match_bids
            && let Err(e) = self.match_asks(at, &bids, &mut round).await
        {
            tracing::warn!("matcher: {e}");
        }
        round
    }

    async fn replan(
        &self,
        at: &mut Autotrader,
        bids: &[Order],
        round: &mut Round,
    ) -> Result<(), WorkerError> {
        let rate = match (at.cfg.floor_usd, at.oracle) {
            (Some(_), Some(oracle)) => Some(self.chain.usd_rate(oracle).await?),
            _ => None,
        };
        let floor = at.cfg.floor(rate)?;
        let capacity = self.capacity();
        if at.optimus.as_ref().is_none_or(|(f, _)| *f != floor) {
            let shaper = BoxShaper {
                box_benchmarks: self.measured.benchmarks,
                capacity,
            };
            let cfg = at
                .cfg
                .optimus(self.address(), self.config.offered_netflags()?, floor)?;
            let optimus = Optimus::new(cfg, shaper).map_err(AutotraderError::from)?;
            at.optimus = Some((floor, optimus));
        }
        self.drop_dead_asks().await?;
        let records = self.store.plans()?;
        let (free, plans) = optimus_view(&records, &capacity);
        let bids: Vec<Order> = bids
            .iter()
            .filter(|b| !at.refused.contains(&b.id))
            .cloned()
            .collect();
        let ctx = self.planning_context(&bids, at.cfg.buyer_identity).await?;
        let Some((_, optimus)) = at.optimus.as_mut() else {
            return Ok(());
        };
        let market = sonm_optimus::Market {
            bids: &bids,
            ctx: &ctx,
        };
        let d = match optimus.step(free, &plans, &market, now()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("autotrader: Optimus refused the round: {e}");
                return Ok(());
            }
        };
        match &d.outcome {
            Outcome::Replanned(trigger) => tracing::info!(
                ?trigger,
                bids = bids.len(),
                candidates = d.proposal.candidates,
                current_per_hour = per_hour(d.current_income),
                proposed_per_hour = per_hour(d.proposed_income),
                "autotrader: re-planning"
            ),
            other => tracing::debug!(outcome = ?other, bids = bids.len(), "autotrader: plans kept"),
        }
        round.outcome = Some(d.outcome.clone());
        let mut actions = d.actions;
        if self.config.signed_asks() {
            // All the cancels at once: one cancelNonces per 256-nonce word for every ask.
            let cancels: Vec<PlanId> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Cancel(id) => Some(*id),
                    Action::Place(_) => None,
                })
                .collect();
            actions.retain(|a| matches!(a, Action::Place(_)));
            if !cancels.is_empty() {
                match self.withdraw_signed_for_replan(&cancels).await {
                    Ok(cancelled) => {
                        for id in cancels {
                            if cancelled.contains(&id) {
                                tracing::info!(plan = id, "autotrader: plan and its ask cancelled");
                                round.cancelled.push(id);
                            } else {
                                tracing::info!(plan = id, "autotrader: plan kept: a deal took it");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(plans = ?cancels, "autotrader: cancelling: {e}"),
                }
            }
        }
        for action in actions {
            match action {
                Action::Cancel(id) => match self.withdraw_for_replan(id).await {
                    Ok(true) => {
                        tracing::info!(plan = id, "autotrader: plan and its ask cancelled");
                        round.cancelled.push(id);
                    }
                    Ok(false) => {
                        tracing::info!(plan = id, "autotrader: plan kept: a deal took it")
                    }
                    Err(e) => tracing::warn!(plan = id, "autotrader: cancelling: {e}"),
                },
                Action::Place(plan) => {
                    let names: HashSet<String> = self
                        .store
                        .plans()?
                        .into_iter()
                        .map(|r| r.spec.name)
                        .collect();
                    let spec = spec_for(&plan, |n| names.contains(n));
                    let name = spec.name.clone();
                    match self.add_plan(spec) {
                        Ok(id) => {
                            tracing::info!(plan = id, %name, sized_for = ?plan.sized_for,
                                cores = plan.slice.cpu_cores, ram = plan.slice.ram_bytes,
                                gpus = plan.slice.gpus, price = plan.price,
                                expected_per_hour = per_hour(plan.price),
                                "autotrader: plan placed");
                            round.placed.push(id);
                        }
                        Err(e) => tracing::warn!(%name, "autotrader: plan not admitted: {e}"),
                    }
                }
            }
        }
        Ok(())
    }

    /// What the match rule needs for planning: our level and master, and the bidders' levels
    /// when buyers must have one. Blacklists are judged by the matcher on the chain's view
    /// (a refused bid is then left out of planning).
    async fn planning_context(
        &self,
        bids: &[Order],
        buyer_identity: IdentityLevel,
    ) -> Result<StaticContext, WorkerError> {
        let me = self.address();
        let mut ctx = StaticContext::default();
        ctx.levels.insert(me, self.chain.level_of(me).await?);
        ctx.masters.insert(me, self.chain.master_of().await?);
        if buyer_identity > IdentityLevel::Anonymous {
            for bid in bids {
                if let Entry::Vacant(slot) = ctx.levels.entry(bid.author) {
                    slot.insert(self.chain.level_of(bid.author).await?);
                }
            }
        }
        Ok(ctx)
    }

    /// Withdraws an Optimus plan: its ask is cancelled on chain first, and only then is its
    /// slice freed, so a deal that takes the ask meanwhile keeps its slice. False when a deal
    /// holds the plan (Optimus never asks that; checked again against the chain here).
    async fn withdraw_for_replan(&self, id: PlanId) -> Result<bool, WorkerError> {
        let _chain = self.chain_lock.lock().await;
        // A deal opened since the step is recorded before anything is cancelled.
        self.sync_deals_locked().await?;
        let Some(rec) = self.store.plan(id)? else {
            return Ok(false);
        };
        if rec.deal.is_some() || rec.removing {
            return Ok(false);
        }
        if let Some(ask) = &rec.ask {
            let cancelled = if self.chain.order_active(ask.id).await? {
                self.chain.cancel_order(ask).await
            } else {
                Ok(())
            };
            // Refused (most likely taken a moment ago) or already gone: a deal opened since the
            // scan above is recorded on the plan by a scan now, and keeps it.
            if cancelled.is_err() || !self.chain.order_active(ask.id).await? {
                self.sync_deals_locked().await?;
                if self.store.plan(id)?.is_some_and(|r| r.deal.is_some()) {
                    return Ok(false);
                }
            }
            cancelled?;
        }
        let _ = lock(&self.plans).remove(id);
        self.store.delete_plan(id)?;
        Ok(true)
    }

    /// Forgets asks of ours that are no longer active on chain without a deal (cancelled just
    /// before a crash recorded it), so that they are placed again or withdrawn cleanly.
    async fn drop_dead_asks(&self) -> Result<(), WorkerError> {
        let _chain = self.chain_lock.lock().await;
        self.sync_deals_locked().await?;
        if self.config.signed_asks() {
            // Signed asks whose nonce is spent without a deal of ours: forgotten likewise.
            let plans: Vec<PlanId> = self
                .store
                .plans()?
                .into_iter()
                .filter(|p| !p.removing && p.deal.is_none())
                .map(|p| p.id)
                .collect();
            self.forget_spent_signed_locked(&plans).await?;
        }
        let mut dead = Vec::new();
        for rec in self.store.plans()? {
            if let Some(ask) = &rec.ask
                && !rec.removing
                && rec.deal.is_none()
                && !self.chain.order_active(ask.id).await?
            {
                dead.push(rec.id);
            }
        }
        if dead.is_empty() {
            return Ok(());
        }
        // A deal may have taken an ask between the scan above and the look-up: scan again.
        self.sync_deals_locked().await?;
        for id in dead {
            let Some(mut rec) = self.store.plan(id)? else {
                continue;
            };
            if rec.deal.is_none()
                && let Some(ask) = &rec.ask
            {
                tracing::warn!(
                    plan = rec.id,
                    order = ask.id,
                    "ask no longer on chain: forgotten"
                );
                rec.ask = None;
                self.store.put_plan(&rec)?;
            }
        }
        Ok(())
    }

    /// For each of our active asks, the DWH's best matching bids (the one its plan was sized
    /// for first), re-validated against the chain, and the first that passes taken.
    ///
    /// The bid a plan was sized for is tried even when the DWH does not list it: the DWH judges
    /// blacklists and levels too, and only the chain's verdict puts a bid out of planning.
    async fn match_asks(
        &self,
        at: &mut Autotrader,
        open: &[Order],
        round: &mut Round,
    ) -> Result<(), WorkerError> {
        if self.config.signed_asks() {
            return self.match_signed_asks(at, open, round).await;
        }
        for rec in self.store.plans()? {
            let Some(ask) = rec.ask.clone() else { continue };
            if rec.removing || rec.deal.is_some() {
                continue;
            }
            let dwh = at.dwh.clone();
            let mut bids = smol::unblock(move || dwh.matches(ask.id, MATCHES_PER_ASK))
                .await
                .map_err(WorkerError::from)?;
            let sized_for = crate::autotrader::optimus_purpose(&rec.spec.name).flatten();
            if let Some(own) = sized_for.and_then(|id| open.iter().find(|b| b.id == id))
                && !bids.iter().any(|b| b.id == own.id)
            {
                bids.push(own.clone());
            }
            // Stable: the rest stay best-paying first.
            bids.sort_by_key(|b| Some(b.id) != sized_for);
            bids.retain(|b| !at.refused.contains(&b.id));
            for bid in &bids {
                let taken = self.take_bid(&ask, bid).await;
                if after_take(
                    at,
                    round,
                    taken,
                    rec.id,
                    &format!("order {}", ask.id),
                    bid,
                    ask.price,
                ) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The matcher for signed asks: the DWH's matches are computed for placed orders, so the
    /// round's open bids are matched here, by the one match rule, against each signed ask of a
    /// plan for sale (the bid its plan was sized for first), and the first that the chain's
    /// view accepts is taken with `openDeal(signed ask, placed bid)`.
    async fn match_signed_asks(
        &self,
        at: &mut Autotrader,
        open: &[Order],
        round: &mut Round,
    ) -> Result<(), WorkerError> {
        let asks = self.store.signed_asks()?;
        if asks.is_empty() {
            return Ok(());
        }
        let plans = self.store.plans()?;
        let bids: Vec<Order> = open
            .iter()
            .filter(|b| !at.refused.contains(&b.id))
            .cloned()
            .collect();
        // Bidders' levels are read only when an ask asks for one.
        let level = asks
            .iter()
            .map(|a| a.order.identity_level)
            .max()
            .unwrap_or_default();
        let ctx = self.planning_context(&bids, level).await?;
        for ask in asks {
            let Some(rec) = plans.iter().find(|p| p.id == ask.plan) else {
                continue;
            };
            if rec.removing || rec.deal.is_some() {
                continue;
            }
            let sized_for = crate::autotrader::optimus_purpose(&rec.spec.name).flatten();
            let mut ids = sonm_market::scan_best_bids(&bids, &ask.order, MATCHES_PER_ASK, &ctx);
            if let Some(own) = sized_for
                && bids.iter().any(|b| b.id == own)
                && !ids.contains(&own)
            {
                ids.push(own);
            }
            // Stable: the rest stay best-paying first.
            ids.sort_by_key(|id| Some(*id) != sized_for);
            for id in ids {
                let Some(bid) = bids.iter().find(|b| b.id == id) else {
                    continue;
                };
                if at.refused.contains(&id) {
                    continue;
                }
                let taken = self.take_bid_signed(ask.plan, ask.nonce, bid).await;
                let label = format!("signed nonce {}", ask.nonce);
                if after_take(at, round, taken, rec.id, &label, bid, ask.order.price) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Takes `bid` with plan `plan`'s signed ask (nonce `nonce`, its latest version) if the ask
    /// is still ours to sell (not spent, not about to expire), the bid is active exactly as
    /// read, and the match rule accepts them with the chain's view.
    async fn take_bid_signed(
        &self,
        plan: PlanId,
        nonce: u64,
        bid: &Order,
    ) -> Result<Take, WorkerError> {
        let _chain = self.chain_lock.lock().await;
        let Some(ask) = self.store.signed_ask(plan)?.filter(|a| a.nonce == nonce) else {
            return Ok(Take::AskGone);
        };
        // The deal opens a block later: an ask that expires by then is signed again first.
        let chain_now = self.chain.chain_time().await?;
        if ask.expiry <= chain_now.saturating_add(SIGNED_EXPIRY_MARGIN_S)
            || self.chain.nonce_used(U256::from(nonce)).await?
        {
            return Ok(Take::AskGone);
        }
        if !self.chain.order_live(bid).await? {
            return Ok(Take::BidGone);
        }
        let ctx = self.chain.match_context(bid, &ask.order).await?;
        if let Err(m) = sonm_market::check_match(bid, &ask.order, &ctx) {
            return Ok(Take::Refused(m));
        }
        let ask_ref = signed_ref(&ask.order, ask.expiry, U256::from(nonce), ask.signature);
        match self.chain.open_deal_ref(ask_ref, bid).await {
            Ok(deal) => {
                // Maps the deal to the plan through its SignedOrderUsed.
                self.sync_deals_locked().await?;
                Ok(Take::Opened(deal))
            }
            // Taken or cancelled between our read and the send (nothing was sent).
            Err(ChainError::Tx(TxError::Refused { .. })) => Ok(Take::BidGone),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes `bid` for our `ask` if the chain still holds both exactly as read and the match
    /// rule accepts them with the chain's levels, master and blacklists.
    async fn take_bid(&self, ask: &Order, bid: &Order) -> Result<Take, WorkerError> {
        let _chain = self.chain_lock.lock().await;
        if !self.chain.order_live(ask).await? {
            return Ok(Take::AskGone);
        }
        if !self.chain.order_live(bid).await? {
            return Ok(Take::BidGone);
        }
        let ctx = self.chain.match_context(bid, ask).await?;
        if let Err(m) = sonm_market::check_match(bid, ask, &ctx) {
            return Ok(Take::Refused(m));
        }
        match self.chain.open_deal(ask, bid).await {
            Ok(deal) => {
                self.sync_deals_locked().await?;
                Ok(Take::Opened(deal))
            }
            // Taken between our read and the send (the chain refused: nothing was sent).
            Err(ChainError::Tx(TxError::Refused { .. })) => Ok(Take::BidGone),
            Err(e) => Err(e.into()),
        }
    }
}

/// Logs and records how taking `bid` with plan `plan`'s ask (`ask` names it in the logs) at
/// `price` went; `true` when no further bid should be tried for this ask (a deal opened, the
/// ask gone, or an error).
fn after_take(
    at: &mut Autotrader,
    round: &mut Round,
    taken: Result<Take, WorkerError>,
    plan: PlanId,
    ask: &str,
    bid: &Order,
    price: u128,
) -> bool {
    match taken {
        Ok(Take::Opened(deal)) => {
            tracing::info!(deal, plan, ask, bid = bid.id, consumer = %bid.author, price,
                income_per_hour = per_hour(price), "matcher: deal opened");
            round.deals.push(deal);
            true
        }
        Ok(Take::BidGone) => {
            tracing::debug!(bid = bid.id, "matcher: bid already taken or cancelled");
            false
        }
        Ok(Take::AskGone) => true,
        Ok(Take::Refused(m)) => {
            tracing::info!(bid = bid.id, ask, rule = ?m,
                "matcher: the chain's view refuses this bid; left out from now on");
            at.refused.insert(bid.id);
            false
        }
        Err(e) => {
            tracing::warn!(bid = bid.id, ask, "matcher: {e}");
            true
        }
    }
}
