//! Property tests: Optimus never oversubscribes the box, never cancels a plan with a deal,
//! sizes every plan so that `check_match` accepts it with its bid, solves the knapsack exactly
//! where it claims to, and does not churn on an unchanged market.

use crate::common;

use std::collections::HashSet;

use proptest::prelude::*;
use sonm_market::{Address, Benchmark, IdentityLevel, NetFlags, Order, StaticContext, check_match};
use sonm_optimus::knapsack::{self, Item};
use sonm_optimus::{
    Action, ActivePlan, Config, Market, Optimus, Outcome, Plan, ProportionalShaper, Slice, Trigger,
    propose,
};

use common::{GIB, SUPPLIER};

const OTHER: Address = Address::repeat_byte(0xeeu8);

fn box_strategy() -> impl Strategy<Value = ProportionalShaper> {
    (1u32..=16, 1u64..=64, 0u64..=300, 0u32..=2).prop_map(|(c, r, s, g)| common::shaper(c, r, s, g))
}

/// Bids of every kind: some need more than the box has, some a network flag it lacks, some name
/// a counterparty or require a level the supplier lacks, some blacklist it.
fn bids_strategy(max: usize) -> impl Strategy<Value = (Vec<Order>, StaticContext)> {
    let one = (
        (0u64..=6, 0u64..=24, 0u64..=2, 0u64..=2, 0u64..=7_000),
        (1u128..=50_000, 0usize..3, 0u64..8, 0u64..=2, 0u8..6),
    );
    (
        proptest::collection::vec(one, 0..=max),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(raw, supplier_registered, blacklisting)| {
            let mut ctx = StaticContext::default();
            if supplier_registered {
                ctx.levels.insert(SUPPLIER, IdentityLevel::Registered);
            }
            let bids = raw
                .into_iter()
                .enumerate()
                .map(
                    |(i, ((c, r, s, g, multi), (price, dur, flags, level, who)))| {
                        let mut b = common::bid(i as u64 + 1, c, r, g, price, [0, 3600, 7200][dur]);
                        b.benchmarks.set(Benchmark::StorageSize, s * 100 * GIB);
                        if multi > c * 1_000 {
                            b.benchmarks.set(Benchmark::CpuSysbenchMulti, multi);
                        }
                        b.netflags = NetFlags::try_from(flags).unwrap();
                        b.identity_level = IdentityLevel::try_from(level).unwrap();
                        b.counterparty = match who {
                            4 => Some(SUPPLIER),
                            5 => Some(OTHER),
                            _ => None,
                        };
                        if blacklisting && i % 3 == 0 {
                            ctx.blacklists.insert((b.author, SUPPLIER));
                        }
                        b
                    },
                )
                .collect();
            (bids, ctx)
        })
}

fn config_strategy() -> impl Strategy<Value = Config> {
    (
        0u128..=20_000,
        0u32..=300,
        0u8..=100,
        prop_oneof![Just(0usize), Just(8), Just(20)],
    )
        .prop_map(|(floor, undercut, pct, exact)| {
            let mut cfg = common::config(floor);
            cfg.undercut_bps = undercut;
            cfg.fallback_percentile = pct;
            cfg.exact_limit = exact;
            cfg
        })
}

/// Carves plans out of the box: the first `deals` have deals; they always fit, the others may
/// not (a box that shrank).
fn plans_strategy() -> impl Strategy<Value = Vec<(u32, u64, bool, u128)>> {
    proptest::collection::vec((1u32..=6, 0u64..=16, any::<bool>(), 1u128..=20_000), 0..5)
}

fn build_plans(cfg: &Config, capacity: &Slice, raw: &[(u32, u64, bool, u128)]) -> Vec<ActivePlan> {
    let mut held = Slice::ZERO;
    let mut out = Vec::new();
    for (i, &(cores, ram, deal, price)) in raw.iter().enumerate() {
        let slice = Slice {
            cpu_cores: cores,
            ram_bytes: ram * GIB,
            storage_bytes: 0,
            gpus: 0,
        };
        let after = held.checked_add(&slice).unwrap();
        // Deals always fit the box; a plan without one may overshoot it.
        if deal && !after.fits_in(capacity) {
            continue;
        }
        if deal {
            held = after;
        }
        out.push(ActivePlan {
            id: 100 + i as u64,
            plan: Plan {
                slice,
                price,
                duration: 0,
                netflags: cfg.netflags,
                identity_level: cfg.buyer_identity,
                sized_for: None,
            },
            has_deal: deal,
        });
    }
    out
}

/// Applies actions as the worker would, checking each one: a cancel names a plan without a
/// deal, and after every placement the plans fit the box.
fn apply(plans: &mut Vec<ActivePlan>, actions: &[Action], capacity: &Slice, next_id: &mut u64) {
    for a in actions {
        match a {
            Action::Cancel(id) => {
                let pos = plans
                    .iter()
                    .position(|p| p.id == *id)
                    .expect("cancels a known plan");
                assert!(
                    !plans[pos].has_deal,
                    "cancelled plan {id}, which has a deal"
                );
                plans.remove(pos);
            }
            Action::Place(plan) => {
                plans.push(ActivePlan {
                    id: *next_id,
                    plan: plan.clone(),
                    has_deal: false,
                });
                *next_id += 1;
                let sold = Slice::sum(plans.iter().map(|p| &p.plan.slice)).unwrap();
                assert!(
                    sold.fits_in(capacity),
                    "{sold:?} oversubscribes {capacity:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn proposals_fit_and_every_sized_plan_matches_its_bid(
        shaper in box_strategy(),
        (bids, ctx) in bids_strategy(40),
        cfg in config_strategy(),
        held_cores in 0u32..=4,
    ) {
        let capacity = shaper.capacity;
        let free = capacity.saturating_sub(&Slice { cpu_cores: held_cores, ..Slice::ZERO });
        let market = Market { bids: &bids, ctx: &ctx };
        let p = propose(&cfg, &shaper, &capacity, &free, &market);
        let sold = Slice::sum(p.plans.iter().map(|p| &p.slice)).unwrap();
        prop_assert!(sold.fits_in(&free), "{:?} oversubscribes {:?}", sold, free);
        let mut seen = HashSet::new();
        let mut leftovers = 0;
        for plan in &p.plans {
            prop_assert!(!plan.slice.is_empty());
            prop_assert!(plan.price >= cfg.floor.price(&plan.slice), "under the floor");
            let Some(bid_id) = plan.sized_for else {
                leftovers += 1;
                continue;
            };
            prop_assert!(seen.insert(bid_id), "two plans for bid {}", bid_id);
            let bid = bids.iter().find(|b| b.id == bid_id).unwrap();
            prop_assert_eq!(check_match(bid, &plan.ask_order(&cfg, &shaper), &ctx), Ok(()));
            prop_assert!(plan.price <= bid.price);
        }
        prop_assert!(leftovers <= 1);
        prop_assert!(p.exact || p.candidates > cfg.exact_limit);
    }

    #[test]
    fn exact_equals_brute_force_and_beats_the_heuristic(
        raw in proptest::collection::vec(([0u64..=10, 0..=10, 0..=3, 0..=2], 0u128..=100), 0..=12),
        cap in [0u64..=20, 0..=20, 0..=5, 0..=3],
    ) {
        let items: Vec<Item> = raw.into_iter().map(|(weight, value)| Item { weight, value }).collect();
        let exact = knapsack::solve_exact(&items, &cap);
        let greedy = knapsack::solve_greedy(&items, &cap);
        let brute = knapsack::brute_force(&items, &cap);
        prop_assert!(knapsack::feasible(&items, &exact, &cap));
        prop_assert!(knapsack::feasible(&items, &greedy, &cap));
        prop_assert_eq!(knapsack::total(&items, &exact), knapsack::total(&items, &brute));
        prop_assert!(knapsack::total(&items, &exact) >= knapsack::total(&items, &greedy));
    }

    #[test]
    fn exact_equals_brute_force_up_to_sixteen_items(
        raw in proptest::collection::vec(([1u64..=10, 0..=10, 0..=3, 0..=2], 1u128..=1_000), 13..=16),
        cap in [5u64..=30, 5..=30, 0..=5, 0..=3],
    ) {
        let items: Vec<Item> = raw.into_iter().map(|(weight, value)| Item { weight, value }).collect();
        let exact = knapsack::solve_exact(&items, &cap);
        let greedy = knapsack::solve_greedy(&items, &cap);
        let brute = knapsack::brute_force(&items, &cap);
        prop_assert!(knapsack::feasible(&items, &exact, &cap));
        prop_assert_eq!(knapsack::total(&items, &exact), knapsack::total(&items, &brute));
        prop_assert!(knapsack::total(&items, &exact) >= knapsack::total(&items, &greedy));
    }

    #[test]
    fn steps_never_cancel_deals_never_oversubscribe_and_settle(
        shaper in box_strategy(),
        (bids, ctx) in bids_strategy(30),
        cfg in config_strategy(),
        raw_plans in plans_strategy(),
        now in 0u64..1_000_000,
        last in proptest::option::of(0u64..1_000_000),
    ) {
        let capacity = shaper.capacity;
        let mut plans = build_plans(&cfg, &capacity, &raw_plans);
        let deals: Vec<ActivePlan> = plans.iter().filter(|p| p.has_deal).cloned().collect();
        let cooldown = cfg.thresholds.cooldown_s;
        let mut optimus = Optimus::new(cfg, shaper).unwrap();
        let market = Market { bids: &bids, ctx: &ctx };
        if let Some(t) = last {
            // Put a re-plan in the past, so that the cooldown is exercised.
            let _ = optimus.step(capacity, &[], &Market { bids: &[], ctx: &ctx }, t).unwrap();
        }
        let before = optimus.last_replan();
        let d = optimus.step(capacity, &plans, &market, now).unwrap();
        for a in &d.actions {
            if let Action::Place(p) = a && let Some(id) = p.sized_for {
                let bid = bids.iter().find(|b| b.id == id).unwrap();
                let ask = p.ask_order(optimus.config(), optimus.shaper());
                prop_assert_eq!(check_match(bid, &ask, &ctx), Ok(()));
            }
        }
        let mut next_id = 1_000;
        apply(&mut plans, &d.actions, &capacity, &mut next_id);
        for deal in &deals {
            prop_assert!(plans.contains(deal), "deal plan {} was touched", deal.id);
        }
        let sold = Slice::sum(plans.iter().map(|p| &p.plan.slice)).unwrap();
        match &d.outcome {
            Outcome::Replanned(t) => {
                prop_assert!(!d.actions.is_empty());
                prop_assert!(sold.fits_in(&capacity));
                if matches!(t, Trigger::Income { .. } | Trigger::Drift { .. }) {
                    prop_assert!(before.is_none_or(|b| now >= b + cooldown), "re-planned while cooling down");
                }
                // The plans without a deal are now the proposal, under distinct names.
                let names: Vec<String> = plans.iter().filter(|p| !p.has_deal).map(|p| p.plan.name()).collect();
                prop_assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
                // The same market gives no further action.
                let again = optimus.step(capacity, &plans, &market, now + cooldown + 1).unwrap();
                prop_assert_eq!(again.outcome, Outcome::Unchanged);
                prop_assert!(again.actions.is_empty());
            }
            _ => {
                prop_assert!(d.actions.is_empty());
                prop_assert!(sold.fits_in(&capacity));
            }
        }
    }
}
