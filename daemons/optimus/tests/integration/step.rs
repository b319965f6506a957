//! The re-planning thresholds on a scripted market: small moves are ignored, big ones re-plan
//! (after the cooldown), a deal's plan is planned around, freed capacity is re-sold.

use crate::common;

use sonm_market::{Order, StaticContext, check_match};
use sonm_optimus::{
    Action, ActivePlan, Market, Optimus, Outcome, ProportionalShaper, Slice, Trigger,
};

use common::GIB;

fn market() -> Vec<Order> {
    vec![
        common::bid(1, 4, 8, 0, 1_000, 0),
        common::bid(2, 8, 16, 0, 1_800, 0),
        common::bid(3, 2, 4, 0, 600, 3600),
    ]
}

fn scaled(bids: &[Order], num: u128, den: u128) -> Vec<Order> {
    bids.iter()
        .map(|b| Order {
            price: b.price * num / den,
            ..b.clone()
        })
        .collect()
}

fn apply(plans: &mut Vec<ActivePlan>, actions: &[Action], next: &mut u64) {
    for a in actions {
        match a {
            Action::Cancel(id) => plans.retain(|p| p.id != *id),
            Action::Place(plan) => {
                plans.push(ActivePlan {
                    id: *next,
                    plan: plan.clone(),
                    has_deal: false,
                });
                *next += 1;
            }
        }
    }
}

#[test]
fn replans_on_big_moves_only_and_never_touches_deals() {
    let shaper: ProportionalShaper = common::shaper(16, 64, 0, 0);
    let capacity = shaper.capacity;
    let cfg = common::config(36_000); // 10 wei/s per core, 1 per GiB
    let cooldown = cfg.thresholds.cooldown_s;
    let mut optimus = Optimus::new(cfg.clone(), shaper).unwrap();
    let ctx = StaticContext::default();
    let bids = market();
    let mut plans = Vec::new();
    let mut next = 1;

    // Nothing planned: everything is idle, so every bid gets a plan and the rest one ask.
    let d = optimus
        .step(
            capacity,
            &plans,
            &Market {
                bids: &bids,
                ctx: &ctx,
            },
            0,
        )
        .unwrap();
    assert!(matches!(
        d.outcome,
        Outcome::Replanned(Trigger::Idle { .. })
    ));
    let placed: Vec<_> = d
        .actions
        .iter()
        .map(|a| match a {
            Action::Place(p) => p.clone(),
            Action::Cancel(_) => panic!("nothing to cancel"),
        })
        .collect();
    assert_eq!(placed.len(), 4);
    for p in &placed[..3] {
        let bid = bids.iter().find(|b| Some(b.id) == p.sized_for).unwrap();
        assert_eq!(
            check_match(bid, &p.ask_order(&cfg, optimus.shaper()), &ctx),
            Ok(())
        );
        // Just under the bid: 0.5% less.
        assert_eq!(p.price, bid.price - bid.price / 200);
    }
    let leftover = &placed[3];
    assert_eq!(leftover.sized_for, None);
    assert_eq!(
        leftover.slice,
        Slice {
            cpu_cores: 2,
            ram_bytes: 36 * GIB,
            storage_bytes: 0,
            gpus: 0
        }
    );
    assert!(leftover.price >= cfg.floor.price(&leftover.slice));
    apply(&mut plans, &d.actions, &mut next);

    // Prices up 1%: under both thresholds (5% income, 10% drift): hold.
    let up1 = scaled(&bids, 101, 100);
    let d = optimus
        .step(
            capacity,
            &plans,
            &Market {
                bids: &up1,
                ctx: &ctx,
            },
            10_000,
        )
        .unwrap();
    assert_eq!(d.outcome, Outcome::Holding);
    assert!(d.actions.is_empty());

    // Prices up 50%: worth re-planning, but not within the cooldown of the last re-plan.
    let up50 = scaled(&bids, 3, 2);
    let d = optimus
        .step(
            capacity,
            &plans,
            &Market {
                bids: &up50,
                ctx: &ctx,
            },
            cooldown - 1,
        )
        .unwrap();
    assert_eq!(d.outcome, Outcome::CoolingDown { until: cooldown });
    let d = optimus
        .step(
            capacity,
            &plans,
            &Market {
                bids: &up50,
                ctx: &ctx,
            },
            10_000,
        )
        .unwrap();
    assert!(
        matches!(d.outcome, Outcome::Replanned(Trigger::Income { current, proposed }) if proposed > current),
        "{:?}",
        d.outcome
    );
    apply(&mut plans, &d.actions, &mut next);

    // Bid 2 takes its plan: the plan has a deal and the bid leaves the book. Nothing to do.
    let deal_plan = plans
        .iter_mut()
        .find(|p| p.plan.sized_for == Some(2))
        .unwrap();
    deal_plan.has_deal = true;
    let deal_id = deal_plan.id;
    let rest: Vec<Order> = up50.iter().filter(|b| b.id != 2).cloned().collect();
    let d = optimus
        .step(
            capacity,
            &plans,
            &Market {
                bids: &rest,
                ctx: &ctx,
            },
            20_000,
        )
        .unwrap();
    assert_eq!(d.outcome, Outcome::Unchanged);

    // A rich bid for the whole box cannot take the deal's cores; the deal stays.
    let mut greedy = rest.clone();
    greedy.push(common::bid(9, 16, 32, 0, 1_000_000, 0));
    let d = optimus
        .step(
            capacity,
            &plans,
            &Market {
                bids: &greedy,
                ctx: &ctx,
            },
            30_000,
        )
        .unwrap();
    assert!(!d.actions.contains(&Action::Cancel(deal_id)));
    assert!(d.proposal.plans.iter().all(|p| p.sized_for != Some(9)));

    // The deal ends and frees its slice: idle capacity is re-sold at once.
    plans.retain(|p| p.id != deal_id);
    let d = optimus
        .step(
            capacity,
            &plans,
            &Market {
                bids: &rest,
                ctx: &ctx,
            },
            30_001,
        )
        .unwrap();
    assert!(
        matches!(d.outcome, Outcome::Replanned(Trigger::Idle { .. })),
        "{:?}",
        d.outcome
    );
}

#[test]
fn without_bids_the_box_is_offered_at_the_floor() {
    let shaper = common::shaper(8, 16, 0, 0);
    let cfg = common::config(36_000);
    let mut optimus = Optimus::new(cfg.clone(), shaper).unwrap();
    let ctx = StaticContext::default();
    // A bid under the floor (8 cores at 10 wei/s each is 80) is no market.
    let cheap = [common::bid(1, 8, 0, 0, 50, 0)];
    let d = optimus
        .step(
            shaper.capacity,
            &[],
            &Market {
                bids: &cheap,
                ctx: &ctx,
            },
            0,
        )
        .unwrap();
    assert_eq!(d.proposal.candidates, 0);
    assert_eq!(d.actions.len(), 1);
    let Action::Place(p) = &d.actions[0] else {
        panic!("expected a placement")
    };
    assert_eq!(p.slice, shaper.capacity);
    assert_eq!(p.price, cfg.floor.price(&shaper.capacity));
    // 8 cores × 10 wei/s + 16 GiB × 1 wei/s.
    assert_eq!(p.price, 96);
}

#[test]
fn a_closure_is_a_shaper() {
    // The worker passes its own `ask_benchmarks` as a closure.
    let shaper = common::shaper(16, 64, 0, 0);
    let closure = move |s: &Slice| sonm_optimus::Shaper::benchmarks(&shaper, s);
    let ctx = StaticContext::default();
    let bids = market();
    let market = Market {
        bids: &bids,
        ctx: &ctx,
    };
    let mut by_struct = Optimus::new(common::config(36_000), shaper).unwrap();
    let mut by_closure = Optimus::new(common::config(36_000), closure).unwrap();
    let a = by_struct.step(shaper.capacity, &[], &market, 0).unwrap();
    let b = by_closure.step(shaper.capacity, &[], &market, 0).unwrap();
    assert_eq!(a.actions, b.actions);
    assert!(format!("{by_closure:?}").starts_with("Optimus"));
}
