//! Signed asks (`[market] asks = "signed"`), the pure part: which plans get a signed ask, which
//! are signed again before they expire, which are withdrawn, which the DWH must be sent again,
//! which plan a used nonce sold, and where a state's nonces start. The I/O (signing, the DWH,
//! `cancelNonces`, the deal scan) is `worker/signed.rs`.
//!
//! A plan's signed ask keeps its nonce for its whole life: it is signed again with a later
//! expiry but the same nonce, so every version of it is spent by one use or one cancel, and a
//! deal on any version names the plan through that nonce.

use std::collections::HashSet;

use alloy::primitives::{B256, U256};

use crate::plan::PlanId;
use crate::state::{PlanRecord, SignedAsk};

/// The first nonce of a state that never signed an ask: the first of the current second's
/// 256-nonce word (`now × 256`). A state directory started afresh for the same key (a reinstall)
/// then begins past every nonce an earlier one gave out, unless that one signed more than 256
/// asks per second of its life; the chain refuses a reused nonce all the same (`NonceUsed`).
pub fn first_nonce(now: u64) -> u64 {
    now.saturating_mul(256)
}

/// An ask expiring at `expiry` is signed again once no more than a third of its `ttl` is left:
/// a slow round or a DWH that is down for a while still leaves it on offer until the next
/// version is.
pub fn refresh_due(expiry: u64, now: u64, ttl: u64) -> bool {
    expiry.saturating_sub(now) <= ttl / 3
}

/// What a round does with the plans' signed asks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignedActions {
    /// Plans whose signed ask is withdrawn (its nonce cancelled on chain): removed, in
    /// maintenance, not offered any more, sold through another ask, or gone.
    pub withdraw: Vec<PlanId>,
    /// Plans that get a signed ask, with a fresh nonce.
    pub sign: Vec<PlanId>,
    /// Plans whose signed ask is signed again: same order and nonce, a later expiry.
    pub refresh: Vec<PlanId>,
}

/// Whether `plan` is one whose slice is on offer: not being removed and not sold.
fn for_sale(plan: &PlanRecord) -> bool {
    !plan.removing && plan.deal.is_none()
}

/// The round's actions for `plans` and their signed `asks` at `now`; `offer`: whether asks are
/// signed and offered at all (signed mode and not in maintenance).
pub fn signed_actions(
    plans: &[PlanRecord],
    asks: &[SignedAsk],
    offer: bool,
    now: u64,
    ttl: u64,
) -> SignedActions {
    let mut out = SignedActions::default();
    for ask in asks {
        match plans.iter().find(|p| p.id == ask.plan) {
            Some(p) if offer && for_sale(p) => {
                if refresh_due(ask.expiry, now, ttl) {
                    out.refresh.push(p.id);
                }
            }
            _ => out.withdraw.push(ask.plan),
        }
    }
    if offer {
        out.sign = plans
            .iter()
            .filter(|p| for_sale(p) && p.ask.is_none())
            .filter(|p| asks.iter().all(|a| a.plan != p.id))
            .map(|p| p.id)
            .collect();
    }
    out
}

/// The signed asks on offer at `now`: of plans for sale, not expired.
pub fn offered(plans: &[PlanRecord], asks: &[SignedAsk], now: u64) -> Vec<SignedAsk> {
    asks.iter()
        .filter(|a| a.expiry > now)
        .filter(|a| plans.iter().any(|p| p.id == a.plan && for_sale(p)))
        .cloned()
        .collect()
}

/// The asks of `offered` that the DWH does not list (its `listed` digests): never received,
/// signed again since, or lost (a DWH started with an empty book). They are posted.
pub fn to_publish<'a>(offered: &'a [SignedAsk], listed: &HashSet<B256>) -> Vec<&'a SignedAsk> {
    offered
        .iter()
        .filter(|a| !listed.contains(&a.digest))
        .collect()
}

/// The nonces of our signed orders that the DWH lists (`listed`) but no signed ask of this
/// state carries (`known`): signed by an earlier state of this key (a state directory wiped or
/// restored from an older copy). They are still buyable, with no slice behind them, so they are
/// cancelled. Each nonce once, ascending.
pub fn orphan_nonces(listed: &[U256], known: &[SignedAsk]) -> Vec<U256> {
    let mut orphans: Vec<U256> = listed
        .iter()
        .copied()
        .filter(|n| u64::try_from(*n).map_or(true, |n| known.iter().all(|a| a.nonce != n)))
        .collect();
    orphans.sort();
    orphans.dedup();
    orphans
}

/// The plan whose signed ask a deal used, from the nonce of its `SignedOrderUsed` (ours as
/// author): any version of the ask, since they all share it. `None`: not one of our plans' asks
/// (withdrawn, or signed by an earlier state of this key).
pub fn plan_of_nonce(asks: &[SignedAsk], nonce: U256) -> Option<PlanId> {
    let nonce = u64::try_from(nonce).ok()?;
    asks.iter().find(|a| a.nonce == nonce).map(|a| a.plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlanSpec, Resources, ask_order};
    use alloy::primitives::Bytes;
    use sonm_market::{Address, Benchmarks, IdentityLevel, NetFlags};

    fn plan(id: PlanId, deal: Option<u64>, removing: bool) -> PlanRecord {
        PlanRecord {
            id,
            spec: PlanSpec {
                name: format!("p{id}"),
                slice: Resources {
                    cpu_cores: 1,
                    ..Resources::default()
                },
                netflags: NetFlags::OUTBOUND,
                price: 10,
                duration: 0,
                identity_level: IdentityLevel::Anonymous,
            },
            ask: None,
            deal,
            removing,
            placing_since: None,
        }
    }

    fn ask(plan: PlanId, nonce: u64, expiry: u64) -> SignedAsk {
        let spec = PlanSpec {
            name: format!("p{plan}"),
            slice: Resources::default(),
            netflags: NetFlags::OUTBOUND,
            price: 10,
            duration: 0,
            identity_level: IdentityLevel::Anonymous,
        };
        SignedAsk {
            plan,
            order: ask_order(Address::repeat_byte(1), &spec, Benchmarks::ZERO),
            expiry,
            nonce,
            signature: Bytes::from(vec![1u8; 65]),
            digest: B256::from(U256::from(nonce * 1_000 + expiry)),
        }
    }

    #[test]
    fn nonces_start_at_the_current_seconds_word() {
        assert_eq!(first_nonce(0), 0);
        assert_eq!(first_nonce(1), 256);
        let now = 1_800_000_000;
        assert_eq!(first_nonce(now) % 256, 0, "the first of a word");
        // A state started one second later begins past 256 nonces of an earlier one.
        assert!(first_nonce(now + 1) >= first_nonce(now) + 256);
        assert_eq!(first_nonce(u64::MAX), u64::MAX);
    }

    #[test]
    fn an_ask_is_signed_again_when_a_third_of_its_life_is_left() {
        let ttl = 3_600;
        assert!(!refresh_due(10_000 + ttl, 10_000, ttl), "fresh");
        assert!(!refresh_due(10_000 + 1_201, 10_000, ttl));
        assert!(refresh_due(10_000 + 1_200, 10_000, ttl), "a third left");
        assert!(refresh_due(10_000, 10_000, ttl), "at its expiry");
        assert!(refresh_due(9_000, 10_000, ttl), "expired");
    }

    #[test]
    fn plans_for_sale_get_an_ask_and_keep_it_until_they_are_not() {
        let now = 1_000;
        let ttl = 300;
        let plans = vec![
            plan(1, None, false),    // no ask yet: signed
            plan(2, None, false),    // fresh ask: kept
            plan(3, None, false),    // ask near its expiry: signed again
            plan(4, Some(9), false), // sold: nothing to sign
            plan(5, None, true),     // removed, with an ask: withdrawn
            plan(6, None, true),     // removed, no ask: nothing
            PlanRecord {
                // A placed ask left from "placed" mode: withdrawn the placed way first.
                ask: Some(ask(0, 0, 0).order),
                ..plan(7, None, false)
            },
            plan(8, Some(4), false), // sold through another ask while it had a signed one
        ];
        let asks = vec![
            ask(2, 11, now + 250),
            ask(3, 12, now + 99),
            ask(5, 13, now + 250),
            ask(8, 14, now + 250),
            ask(42, 15, now + 250), // its plan is gone
        ];
        let a = signed_actions(&plans, &asks, true, now, ttl);
        assert_eq!(a.sign, vec![1]);
        assert_eq!(a.refresh, vec![3]);
        assert_eq!(a.withdraw, vec![5, 8, 42]);

        // Maintenance, or the "placed" mode: every signed ask goes, none is signed.
        let off = signed_actions(&plans, &asks, false, now, ttl);
        assert_eq!(off.withdraw, vec![2, 3, 5, 8, 42]);
        assert!(off.sign.is_empty() && off.refresh.is_empty());

        // Nothing to do for a placed-only state.
        let placed = signed_actions(&plans, &[], false, now, ttl);
        assert_eq!(placed, SignedActions::default());
    }

    #[test]
    fn what_the_dwh_does_not_list_is_posted_again() {
        let now = 1_000;
        let plans = vec![
            plan(1, None, false),
            plan(2, None, false),
            plan(3, None, true),
        ];
        let asks = vec![
            ask(1, 1, now + 10),
            ask(2, 2, now), // expired: the DWH refuses it, it is signed again first
            ask(3, 3, now + 10),
        ];
        let on_offer = offered(&plans, &asks, now);
        assert_eq!(on_offer, vec![asks[0].clone()]);
        let none = HashSet::new();
        assert_eq!(to_publish(&on_offer, &none), vec![&asks[0]]);
        let listed: HashSet<B256> = [asks[0].digest].into();
        assert!(to_publish(&on_offer, &listed).is_empty());
        // Signed again (a new digest): the old version's listing does not count.
        let again = vec![ask(1, 1, now + 20)];
        assert_eq!(to_publish(&again, &listed), vec![&again[0]]);
    }

    #[test]
    fn a_used_nonce_names_its_plan() {
        let asks = vec![ask(1, 300, 5), ask(2, 301, 5)];
        assert_eq!(plan_of_nonce(&asks, U256::from(301)), Some(2));
        assert_eq!(plan_of_nonce(&asks, U256::from(302)), None);
        assert_eq!(plan_of_nonce(&asks, U256::MAX), None);
        assert_eq!(plan_of_nonce(&[], U256::from(300)), None);
    }

    #[test]
    fn listed_nonces_no_ask_of_ours_carries_are_orphans() {
        let known = [ask(1, 700, 50), ask(2, 701, 50)];
        let listed = [
            U256::from(701),
            U256::from(5),
            U256::from(700),
            U256::from(5), // two versions of one forgotten ask
            U256::MAX,     // beyond any nonce this worker gives out
        ];
        assert_eq!(
            orphan_nonces(&listed, &known),
            vec![U256::from(5), U256::MAX]
        );
        assert!(orphan_nonces(&[U256::from(700)], &known).is_empty());
        assert_eq!(orphan_nonces(&[U256::from(9)], &[]), vec![U256::from(9)]);
    }
}
