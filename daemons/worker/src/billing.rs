//! When to bill a deal and when to close it. Pure: the caller brings the deal as the chain holds
//! it and the time; the chain loop does what [`next_action`] says.
//!
//! - A deal is billed once `interval` seconds have passed since its last bill (the chain pays
//!   the master for that time and, for a spot deal, tops the consumer's blocking up to an hour
//!   ahead: a spot interval under an hour keeps the deal funded ahead).
//! - A forward deal is closed from its end on (closing bills it to its end); before its end it
//!   is never closed (the chain would refuse: `DealNotEnded`).
//! - A spot deal is never closed by this schedule (maintenance or an unpaying consumer close it
//!   elsewhere; the chain closes it itself when a bill cannot be paid).

use serde::{Deserialize, Serialize};

/// The schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingPolicy {
    /// Seconds between bills (at least 1).
    pub interval: u64,
}

impl Default for BillingPolicy {
    fn default() -> Self {
        // Under the spot deals' hour of blocking, so a paying consumer's deal never runs dry.
        Self { interval: 600 }
    }
}

/// The parts of a deal the schedule reads (times in unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DealClock {
    pub start: u64,
    /// 0 = spot.
    pub duration: u64,
    pub last_bill: u64,
    pub active: bool,
}

impl DealClock {
    /// A forward deal's end; `None` for spot.
    pub fn end(&self) -> Option<u64> {
        (self.duration != 0).then(|| self.start.saturating_add(self.duration))
    }
}

/// What to do with a deal now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing before `until` (> now).
    Wait {
        until: u64,
    },
    Bill,
    Close,
    /// The deal is closed: nothing more, ever.
    Done,
}

/// The action for `deal` at `now`.
pub fn next_action(deal: &DealClock, now: u64, policy: &BillingPolicy) -> Action {
    if !deal.active {
        return Action::Done;
    }
    let interval = policy.interval.max(1);
    let due = deal.last_bill.saturating_add(interval);
    match deal.end() {
        Some(end) if now >= end => Action::Close,
        Some(end) if now >= due => {
            // A bill right before the end is wasted gas: the close bills to the end anyway.
            if end.saturating_sub(now) < interval / 4 {
                Action::Wait { until: end }
            } else {
                Action::Bill
            }
        }
        Some(end) => Action::Wait {
            until: due.min(end),
        },
        None if now >= due => Action::Bill,
        None => Action::Wait { until: due },
    }
}
