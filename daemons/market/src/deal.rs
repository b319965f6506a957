//! Deals: a matched bid and ask, billed per second.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::order::{OrderId, billing_period};

pub type DealId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DealStatus {
    Accepted,
    Closed,
}

/// A deal as the chain holds it. Times are unix seconds; amounts SNM wei.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    pub id: DealId,
    pub supplier: Address,
    pub consumer: Address,
    /// Receives the payouts; the supplier itself when it has no master.
    pub master: Address,
    pub ask: OrderId,
    pub bid: OrderId,
    /// SNM wei per second.
    pub price: u128,
    /// Seconds; 0 for spot.
    pub duration: u64,
    pub start: u64,
    /// When the deal closed, or for forward deals when it will end.
    pub end: u64,
    /// What the consumer has blocked and not yet been billed for.
    pub blocked: u128,
    pub total_payout: u128,
    pub last_bill: u64,
    pub status: DealStatus,
}

/// What one bill at `now` does to a deal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bill {
    /// Paid to the master.
    pub payout: u128,
    /// Time covered by the payout; the deal's `last_bill` moves to it.
    pub paid_until: u64,
    /// Blocked after the bill, before any top-up.
    pub blocked_after: u128,
    /// Needed from the consumer to keep the next billing period blocked (spot only).
    pub top_up: u128,
}

impl Deal {
    pub fn is_spot(&self) -> bool {
        self.duration == 0
    }

    /// The bill at `now`: seconds since the last bill (capped at the end of a forward
    /// deal) times price, never more than what is blocked. This is the arithmetic the
    /// Market contract does; the worker uses it to know when billing is due and the
    /// node to show what a deal will cost.
    pub fn bill_at(&self, now: u64) -> Bill {
        // An open spot deal runs until billed; anything else stops at its end.
        let end = if self.is_spot() && self.status == DealStatus::Accepted {
            u64::MAX
        } else {
            self.end
        };
        let until = now.min(end);
        let elapsed = until.saturating_sub(self.last_bill);
        let due = u128::from(elapsed).saturating_mul(self.price);
        let payout = due.min(self.blocked);
        // When the blocked balance runs short, only whole seconds that it covers count.
        let paid_seconds = if payout == due || self.price == 0 {
            elapsed
        } else {
            u64::try_from(payout / self.price).unwrap_or(u64::MAX)
        };
        let blocked_after = self.blocked - payout;
        let top_up = if self.is_spot() && self.status == DealStatus::Accepted {
            let want = self
                .price
                .saturating_mul(u128::from(billing_period(self.duration)));
            want.saturating_sub(blocked_after)
        } else {
            0
        };
        Bill {
            payout,
            paid_until: self.last_bill + paid_seconds,
            blocked_after,
            top_up,
        }
    }
}
