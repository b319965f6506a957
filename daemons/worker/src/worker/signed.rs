//! Signed asks (`[market] asks = "signed"`): a plan's ask is signed off chain (EIP-712) and
//! published to the DWH's signed-order book instead of placed, signed again before it expires,
//! and withdrawn by cancelling its nonce on chain (`cancelNonces`, one transaction per 256-nonce
//! word however many asks). The decisions are `crate::signed`; this is their I/O.
//!
//! The ordering rule is the placed asks' one: a plan's slice is free only once its ask can no
//! longer be bought, i.e. after the cancel's receipt and a deal scan that would have seen a deal
//! that used the ask before the cancel (such a deal keeps the plan).

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use alloy::primitives::U256;
use sonm_dwh_client::{DwhError, SignedOrder, SignedOrderQuery};
use sonm_market::{Order, OrderType};

use super::{Worker, WorkerError, lock, new_deal_record, now};
use crate::chain::{OpenedDeal, SignedUse};
use crate::plan::PlanId;
use crate::signed::{
    first_nonce, offered, orphan_nonces, plan_of_nonce, signed_actions, to_publish,
};
use crate::state::SignedAsk;

/// How many of our live signed orders the DWH lists at most (its per-author bound is 256; a
/// plan has at most two versions listed while the older expires).
const MAX_LISTED: usize = 512;

impl Worker {
    /// `sync_plans` with signed asks: under the chain lock, withdraw what is no longer offered,
    /// delete removed plans, sign new asks and sign again those near their expiry; then
    /// publish to the DWH what it does not list. A DWH that does not answer delays
    /// publication (logged once per outage), it fails nothing.
    pub(super) async fn sync_signed_asks(&self) -> Result<(), WorkerError> {
        {
            let _chain = self.chain_lock.lock().await;
            self.sync_signed_locked().await?;
        }
        self.publish_signed_asks().await;
        Ok(())
    }

    async fn sync_signed_locked(&self) -> Result<(), WorkerError> {
        self.withdraw_placed_locked().await?;
        let now = now().max(self.chain.chain_time().await?);
        let ttl = self.config.market.signed_ttl_s;
        let offer = !self.in_maintenance();
        let actions = signed_actions(
            &self.store.plans()?,
            &self.store.signed_asks()?,
            offer,
            now,
            ttl,
        );
        if !actions.withdraw.is_empty() {
            self.withdraw_signed_locked(&actions.withdraw).await?;
        }
        // Removed plans that no ask and no deal hold any more: deleted, their slice free.
        let asks = self.store.signed_asks()?;
        for rec in self.store.plans()? {
            if rec.removing
                && rec.deal.is_none()
                && rec.ask.is_none()
                && asks.iter().all(|a| a.plan != rec.id)
            {
                self.store.delete_plan(rec.id)?;
                let _ = lock(&self.plans).remove(rec.id);
            }
        }
        let capacity = lock(&self.plans).capacity();
        for id in actions.sign {
            let Some(rec) = self.store.plan(id)? else {
                continue;
            };
            if rec.removing
                || rec.deal.is_some()
                || rec.ask.is_some()
                || self.store.signed_ask(id)?.is_some()
            {
                continue;
            }
            // Stored before anything is signed with it: a nonce is given out once.
            let nonce = self.store.next_ask_nonce(first_nonce(now))?;
            let ask = self.sign_ask(id, self.ask_for(&rec.spec, &capacity), nonce, now + ttl)?;
            self.store.put_signed_ask(&ask)?;
            tracing::info!(plan = id, nonce, expiry = ask.expiry, digest = %ask.digest,
                price = ask.order.price, benchmarks = %ask.order.benchmarks, "ask signed");
        }
        for id in actions.refresh {
            let Some(old) = self.store.signed_ask(id)? else {
                continue;
            };
            // The same order under the same nonce with a later expiry. Safe: the Market spends a
            // nonce once, so of all the versions of this ask at most one is ever used (the DWH
            // drops them all then), one cancel withdraws them all, and a deal on any version
            // names this plan through the nonce.
            let ask = self.sign_ask(id, old.order, old.nonce, now + ttl)?;
            self.store.put_signed_ask(&ask)?;
            tracing::info!(plan = id, nonce = ask.nonce, expiry = ask.expiry,
                digest = %ask.digest, "ask signed again before its expiry");
        }
        Ok(())
    }

    /// `order` (ours) signed for plan `plan` with `nonce`, usable until `expiry`.
    fn sign_ask(
        &self,
        plan: PlanId,
        order: Order,
        nonce: u64,
        expiry: u64,
    ) -> Result<SignedAsk, WorkerError> {
        let domain = self.chain.domain();
        let signed =
            sonm_contracts::sign_order(&self.signer, &order, expiry, U256::from(nonce), &domain)?;
        let digest =
            sonm_contracts::signed_order_digest(&signed.order, expiry, signed.nonce, &domain);
        Ok(SignedAsk {
            plan,
            order,
            expiry,
            nonce,
            signature: signed.signature,
            digest,
        })
    }

    /// Withdraws the signed asks of `plans`: their nonces cancelled on chain (one
    /// `cancelNonces` per 256-nonce word, nonces already spent left out), then a deal scan —
    /// a deal that used one of them before the cancel is recorded and keeps its plan — and only
    /// then the asks forgotten. Returns the plans whose ask was withdrawn.
    async fn withdraw_signed_locked(&self, plans: &[PlanId]) -> Result<Vec<PlanId>, WorkerError> {
        // Deals opened since the last scan first: their asks are spent, not cancelled.
        self.sync_deals_locked().await?;
        let mut asks = Vec::new();
        for &id in plans {
            asks.extend(self.store.signed_ask(id)?);
        }
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        for (word, mask) in sonm_contracts::nonce_masks(asks.iter().map(|a| U256::from(a.nonce))) {
            // Bits already set (used by a deal, or cancelled before a restart) cost nothing to
            // leave out; a word with none left sends nothing.
            let todo = mask & !self.chain.nonce_bitmap(word).await?;
            if todo.is_zero() {
                continue;
            }
            let gas = self.chain.cancel_nonces(word, todo).await?;
            tracing::info!(%word, asks = todo.count_ones(), gas,
                "signed asks withdrawn: their nonces cancelled on chain");
        }
        // After the cancel's receipt: a deal that used an ask before it is in these blocks.
        self.sync_deals_locked().await?;
        let mut withdrawn = Vec::new();
        for ask in asks {
            if self
                .store
                .signed_ask(ask.plan)?
                .is_some_and(|a| a.nonce == ask.nonce)
            {
                self.store.delete_signed_ask(ask.plan)?;
                withdrawn.push(ask.plan);
            }
        }
        Ok(withdrawn)
    }

    /// Signed asks left behind by `asks = "signed"` when the worker now places its asks: the
    /// same withdrawal (a state that never signed one reads one empty table and nothing else).
    pub(super) async fn withdraw_leftover_signed_locked(&self) -> Result<(), WorkerError> {
        let asks = self.store.signed_asks()?;
        if asks.is_empty() {
            return Ok(());
        }
        let plans: Vec<PlanId> = asks.iter().map(|a| a.plan).collect();
        let withdrawn = self.withdraw_signed_locked(&plans).await?;
        tracing::info!(plans = ?withdrawn, "signed asks withdrawn: asks are placed now");
        Ok(())
    }

    /// Placed asks left behind by `asks = "placed"`: cancelled on chain (`cancelOrder`) before
    /// the plan is signed. One already gone is forgotten only after a deal scan (a deal that
    /// took it keeps the plan).
    async fn withdraw_placed_locked(&self) -> Result<(), WorkerError> {
        for rec in self.store.plans()? {
            let Some(ask) = rec.ask.as_ref().filter(|_| rec.deal.is_none()) else {
                continue;
            };
            if self.chain.order_active(ask.id).await? {
                self.chain.cancel_order(ask).await?;
                tracing::info!(
                    plan = rec.id,
                    order = ask.id,
                    "placed ask withdrawn: asks are signed now"
                );
            }
            self.sync_deals_locked().await?;
            if let Some(mut now) = self.store.plan(rec.id)?
                && now.deal.is_none()
            {
                now.ask = None;
                now.placing_since = None;
                self.store.put_plan(&now)?;
            }
        }
        Ok(())
    }

    /// Posts to the DWH the asks on offer that it does not list (not yet received, signed
    /// again, or lost by a DWH that restarted with an empty book).
    async fn publish_signed_asks(&self) {
        // Nothing is on offer in maintenance (its asks were withdrawn under the lock).
        let Some(dwh) = self.dwh.clone().filter(|_| !self.in_maintenance()) else {
            return;
        };
        let (plans, asks) = match (self.store.plans(), self.store.signed_asks()) {
            (Ok(p), Ok(a)) => (p, a),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("publishing signed asks: {e}");
                return;
            }
        };
        // The DWH's clock judges expiry: the wall clock.
        let on_offer = offered(&plans, &asks, now());
        let query = SignedOrderQuery {
            author: Some(self.address()),
            ..SignedOrderQuery::new(OrderType::Ask)
        };
        let d = dwh.clone();
        let ours = match smol::unblock(move || d.signed_orders(&query, MAX_LISTED)).await {
            Ok(listing) => listing.items,
            Err(e) => return self.dwh_unreachable(&e),
        };
        self.cancel_orphan_signed(&ours).await;
        let listed: HashSet<_> = ours.into_iter().map(|o| o.digest).collect();
        let mut spent = Vec::new();
        for ask in to_publish(&on_offer, &listed) {
            let (d, a) = (dwh.clone(), ask.clone());
            let posted = smol::unblock(move || {
                d.post_signed_order(&a.order, a.expiry, U256::from(a.nonce), &a.signature)
            })
            .await;
            match posted {
                Ok(p) => tracing::info!(plan = ask.plan, digest = %p.digest, nonce = ask.nonce,
                    expiry = ask.expiry, dwh = %dwh.base(), "signed ask published"),
                // Spent on chain: by a deal (the scan records it) or a cancel.
                Err(e) if e.reason.as_deref() == Some("nonce_used") => spent.push(ask.plan),
                Err(e) if e.status.is_none() => return self.dwh_unreachable(&e),
                Err(e) => tracing::warn!(plan = ask.plan, "the DWH refused a signed ask: {e}"),
            }
        }
        if self.dwh_down.swap(false, Ordering::Relaxed) {
            tracing::info!(dwh = %dwh.base(), "the DWH answers again: signed asks published");
        }
        if !spent.is_empty() {
            let _chain = self.chain_lock.lock().await;
            if let Err(e) = self.forget_spent_signed_locked(&spent).await {
                tracing::warn!("signed asks the DWH calls spent: {e}");
            }
        }
    }

    /// Cancels the nonces of our signed orders that the DWH lists but no ask of this state
    /// carries ([`orphan_nonces`]: an earlier state of this key signed them): still buyable, with
    /// no slice behind them. The state is read after the listing, so an ask this state signed
    /// and posted is known; one withdrawn or sold since has its nonce spent on chain, and a
    /// spent bit is never sent again.
    async fn cancel_orphan_signed(&self, listed: &[SignedOrder]) {
        let known = match self.store.signed_asks() {
            Ok(a) => a,
            Err(e) => return tracing::warn!("looking for forgotten signed asks: {e}"),
        };
        let nonces: Vec<U256> = listed.iter().map(|o| o.nonce).collect();
        let orphans = orphan_nonces(&nonces, &known);
        if orphans.is_empty() {
            return;
        }
        let _chain = self.chain_lock.lock().await;
        for (word, mask) in sonm_contracts::nonce_masks(orphans) {
            let todo = match self.chain.nonce_bitmap(word).await {
                Ok(spent) => mask & !spent,
                Err(e) => return tracing::warn!("forgotten signed asks: {e}"),
            };
            if todo.is_zero() {
                continue;
            }
            match self.chain.cancel_nonces(word, todo).await {
                Ok(gas) => tracing::warn!(%word, asks = todo.count_ones(), gas,
                    "signed asks of this key that this state does not know (an earlier state \
                     signed them) were still buyable: their nonces cancelled"),
                Err(e) => tracing::warn!("cancelling forgotten signed asks: {e}"),
            }
        }
    }

    /// Once per outage: signed asks wait for the DWH, the worker goes on.
    fn dwh_unreachable(&self, e: &DwhError) {
        if self.dwh_down.swap(true, Ordering::Relaxed) {
            tracing::debug!("signed asks not published: {e}");
        } else {
            tracing::warn!("signed asks not published: {e}; published when the DWH answers");
        }
    }

    /// The signed asks of `plans` whose nonce the chain has spent: a deal that used one is
    /// recorded by a scan (and keeps its plan); the others were cancelled (before a crash
    /// recorded it, or by another state of this key) and are forgotten, so that their plans
    /// are signed afresh with a new nonce.
    pub(super) async fn forget_spent_signed_locked(
        &self,
        plans: &[PlanId],
    ) -> Result<(), WorkerError> {
        let mut spent = Vec::new();
        for &id in plans {
            if let Some(ask) = self.store.signed_ask(id)?
                && self.chain.nonce_used(U256::from(ask.nonce)).await?
            {
                spent.push(ask);
            }
        }
        if spent.is_empty() {
            return Ok(());
        }
        // Read after the nonces: a deal that spent one is in the blocks this scan reads.
        self.sync_deals_locked().await?;
        for ask in spent {
            if self
                .store
                .signed_ask(ask.plan)?
                .is_some_and(|a| a.nonce == ask.nonce)
            {
                tracing::warn!(
                    plan = ask.plan,
                    nonce = ask.nonce,
                    "signed ask spent on chain without a deal of ours: forgotten, signed afresh"
                );
                self.store.delete_signed_ask(ask.plan)?;
            }
        }
        Ok(())
    }

    /// `replace_asks` with signed asks: every offered plan's ask withdrawn in one
    /// `cancelNonces` per 256-nonce word, then signed afresh (new nonces) and published.
    pub(super) async fn replace_signed_asks(&self) -> Result<Vec<PlanId>, WorkerError> {
        let withdrawn = {
            let _chain = self.chain_lock.lock().await;
            let asks = self.store.signed_asks()?;
            let plans: Vec<PlanId> = self
                .store
                .plans()?
                .into_iter()
                .filter(|p| !p.removing && p.deal.is_none())
                .filter(|p| asks.iter().any(|a| a.plan == p.id))
                .map(|p| p.id)
                .collect();
            self.withdraw_signed_locked(&plans).await?
        };
        self.sync_plans().await?;
        Ok(withdrawn)
    }

    /// Withdraws Optimus's plans `plans` at once (one `cancelNonces` per word for all their
    /// asks) before their slices are freed; returns those withdrawn — a plan a deal took
    /// meanwhile is kept.
    pub(super) async fn withdraw_signed_for_replan(
        &self,
        plans: &[PlanId],
    ) -> Result<Vec<PlanId>, WorkerError> {
        let _chain = self.chain_lock.lock().await;
        // A deal opened since Optimus's step is recorded before anything is cancelled.
        self.sync_deals_locked().await?;
        let mut candidates = Vec::new();
        for &id in plans {
            if let Some(rec) = self.store.plan(id)?
                && rec.deal.is_none()
                && !rec.removing
            {
                candidates.push(id);
            }
        }
        self.withdraw_signed_locked(&candidates).await?;
        let mut cancelled = Vec::new();
        for id in candidates {
            let free = self.store.plan(id)?.is_some_and(|r| r.deal.is_none())
                && self.store.signed_ask(id)?.is_none();
            if free {
                let _ = lock(&self.plans).remove(id);
                self.store.delete_plan(id)?;
                cancelled.push(id);
            }
        }
        Ok(cancelled)
    }

    /// Records a deal opened on a signed ask of ours: sold from the plan whose ask had the
    /// nonce it used (any version of it), which is marked sold and loses its ask in the same
    /// transaction. An ask that is not, or no longer, a plan's is recorded without a plan, as an
    /// unknown placed ask is.
    pub(super) fn record_signed_deal(
        &self,
        opened: &OpenedDeal,
        used: SignedUse,
    ) -> Result<(), WorkerError> {
        let owner = plan_of_nonce(&self.store.signed_asks()?, used.nonce);
        let plan = match owner {
            Some(id) => self.store.plan(id)?.map(|p| p.id),
            None => None,
        };
        let rec = new_deal_record(opened, plan);
        match owner {
            Some(id) => self.store.open_signed_deal(&rec, id)?,
            None => self.store.put_deal(&rec)?,
        }
        tracing::info!(deal = rec.id, consumer = %rec.consumer, digest = %used.digest,
            nonce = %used.nonce, plan = ?rec.plan, duration = rec.duration,
            "deal opened on a signed ask");
        Ok(())
    }
}
