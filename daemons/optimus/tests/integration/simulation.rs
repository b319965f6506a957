//! A scripted market over simulated time: bids arrive, wait, and leave (someone else served
//! them), their prices drifting with a market level that cycles and wanders. The same script is
//! replayed against Optimus and against fixed pricing (three fixed plans at 0.6–1.4× the market's
//! price of the first hour); a matcher opens a deal whenever an ask matches an open bid (dearest
//! bid first, at the ask's price, as `Market.openDeal` does). Optimus must earn more than the
//! best of the fixed prices, and its thresholds must save orders against re-planning eagerly.
//!
//! `cargo test -p sonm-optimus --test integration simulation:: -- --nocapture` prints the totals.

use crate::common;

use std::f64::consts::TAU;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sonm_market::{NetFlags, Order, StaticContext, check_match};
use sonm_optimus::{
    Action, ActivePlan, Config, Market, Optimus, Plan, ProportionalShaper, Shaper, Slice,
    Thresholds,
};

use common::GIB;

const TICK: u64 = 300;
const HOUR: u64 = 3600;
const DAYS: u64 = 14;
const HORIZON: u64 = DAYS * 24 * HOUR;
/// Reference prices in wei/s at market level 1.
const CORE: f64 = 100.0;
const RAM_GIB: f64 = 10.0;
const GPU: f64 = 1_500.0;

/// One bid of the script: when it arrives and leaves, and how long a spot deal on it lasts.
struct Scripted {
    order: Order,
    arrives: u64,
    leaves: u64,
    spot_length: u64,
}

/// The market level at `t`: a three-day cycle of ±35% plus a bounded random walk.
fn script(seed: u64) -> Vec<Scripted> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut walk = 0.0f64;
    let mut out = Vec::new();
    let mut id = 1;
    for tick in 0..HORIZON / TICK {
        let t = tick * TICK;
        walk = (walk + rng.random_range(-0.015..0.015)).clamp(-0.3, 0.3);
        let level = 1.0 + 0.35 * (TAU * t as f64 / (3.0 * 24.0 * HOUR as f64)).sin() + walk;
        for _ in 0..u32::from(rng.random_bool(0.5)) {
            let kind = rng.random_range(0..100u32);
            let (cores, ram, gpus) = if kind < 60 {
                (rng.random_range(1..=4u64), rng.random_range(2..=8u64), 0)
            } else if kind < 85 {
                (rng.random_range(6..=12), rng.random_range(16..=48), 0)
            } else {
                (
                    rng.random_range(2..=6),
                    rng.random_range(8..=24),
                    rng.random_range(1..=2),
                )
            };
            let fair = CORE * cores as f64 + RAM_GIB * ram as f64 + GPU * gpus as f64;
            let price = (fair * level * rng.random_range(0.75..1.35)) as u128;
            let duration = if rng.random_bool(0.6) {
                0
            } else {
                rng.random_range(1..=24u64) * HOUR
            };
            let mut order = common::bid(id, cores, ram, gpus, price.max(1), duration);
            if rng.random_bool(0.1) {
                // Needs a public IP, which the box does not have: nobody here serves it.
                order.netflags = NetFlags::PUBLIC_IP;
            }
            out.push(Scripted {
                order,
                arrives: t,
                leaves: t + rng.random_range(2..=12u64) * TICK,
                spot_length: rng.random_range(1..=12u64) * HOUR,
            });
            id += 1;
        }
    }
    out
}

/// How a strategy manages the plans: Optimus re-plans; fixed pricing never changes a thing.
trait Strategy {
    fn tick(&mut self, now: u64, plans: &mut Vec<ActivePlan>, bids: &[Order], ctx: &StaticContext);
    /// A deal on `plan` ended: Optimus's worker frees the slice, fixed pricing sells it again.
    fn deal_ended(&mut self, plans: &mut Vec<ActivePlan>, plan: u64);
}

struct WithOptimus {
    optimus: Optimus<ProportionalShaper>,
    capacity: Slice,
    next_id: u64,
    replans: u64,
    /// Orders placed and cancelled: each costs gas.
    orders: u64,
}

impl Strategy for WithOptimus {
    fn tick(&mut self, now: u64, plans: &mut Vec<ActivePlan>, bids: &[Order], ctx: &StaticContext) {
        let d = self
            .optimus
            .step(self.capacity, plans, &Market { bids, ctx }, now)
            .unwrap();
        if !d.actions.is_empty() {
            self.replans += 1;
        }
        self.orders += d.actions.len() as u64;
        for a in d.actions {
            match a {
                Action::Cancel(id) => {
                    let pos = plans.iter().position(|p| p.id == id).unwrap();
                    assert!(!plans[pos].has_deal, "cancelled a plan with a deal");
                    plans.remove(pos);
                }
                Action::Place(plan) => {
                    plans.push(ActivePlan {
                        id: self.next_id,
                        plan,
                        has_deal: false,
                    });
                    self.next_id += 1;
                }
            }
        }
        let sold = Slice::sum(plans.iter().map(|p| &p.plan.slice)).unwrap();
        assert!(sold.fits_in(&self.capacity), "oversubscribed at {now}");
    }

    fn deal_ended(&mut self, plans: &mut Vec<ActivePlan>, plan: u64) {
        plans.retain(|p| p.id != plan);
    }
}

struct Fixed;

impl Strategy for Fixed {
    fn tick(&mut self, _: u64, _: &mut Vec<ActivePlan>, _: &[Order], _: &StaticContext) {}

    fn deal_ended(&mut self, plans: &mut Vec<ActivePlan>, plan: u64) {
        for p in plans.iter_mut().filter(|p| p.id == plan) {
            p.has_deal = false;
        }
    }
}

/// A deal's plan and when it ends.
struct Running {
    plan: u64,
    ends: u64,
}

/// Replays `script` against `strategy`; returns the income in wei over the horizon and the
/// number of deals.
fn run(
    script: &[Scripted],
    cfg: &Config,
    shaper: &ProportionalShaper,
    mut plans: Vec<ActivePlan>,
    strategy: &mut dyn Strategy,
) -> (u128, usize) {
    let ctx = StaticContext::default();
    let mut taken = vec![false; script.len()];
    let mut deals: Vec<Running> = Vec::new();
    let (mut income, mut count) = (0u128, 0usize);
    for now in (0..HORIZON).step_by(TICK as usize) {
        deals.retain(|d| {
            if d.ends <= now {
                strategy.deal_ended(&mut plans, d.plan);
                false
            } else {
                true
            }
        });
        let open: Vec<usize> = (0..script.len())
            .filter(|&i| !taken[i] && script[i].arrives <= now && now < script[i].leaves)
            .collect();
        let bids: Vec<Order> = open.iter().map(|&i| script[i].order.clone()).collect();
        strategy.tick(now, &mut plans, &bids, &ctx);
        // The matcher: each free ask takes the dearest open bid it matches.
        for p in plans.iter_mut().filter(|p| !p.has_deal) {
            let ask = p.plan.ask_order(cfg, shaper);
            let best = open
                .iter()
                .copied()
                .filter(|&i| !taken[i] && check_match(&script[i].order, &ask, &ctx).is_ok())
                .max_by_key(|&i| (script[i].order.price, std::cmp::Reverse(i)));
            if let Some(i) = best {
                taken[i] = true;
                p.has_deal = true;
                let length = match script[i].order.duration {
                    0 => script[i].spot_length,
                    d => d,
                };
                let ends = (now + length).min(HORIZON);
                income += p.plan.price * u128::from(ends - now);
                count += 1;
                deals.push(Running { plan: p.id, ends });
            }
        }
    }
    (income, count)
}

/// Three plans a supplier might configure by hand: two GPU halves (one spot, one forward for up
/// to a day) and the remaining CPUs, each at `markup` × the reference price of its slice (level
/// 1, what the market paid in its first hour).
fn fixed_plans(cfg: &Config, capacity: &Slice, markup: f64) -> Vec<ActivePlan> {
    let gpu_half = Slice {
        cpu_cores: 6,
        ram_bytes: 24 * GIB,
        storage_bytes: 0,
        gpus: 1,
    };
    let cpu_rest = Slice {
        cpu_cores: 4,
        ram_bytes: 16 * GIB,
        storage_bytes: 0,
        gpus: 0,
    };
    let total = Slice::sum([&gpu_half, &gpu_half, &cpu_rest]).unwrap();
    assert!(total.fits_in(capacity));
    let price = |s: &Slice| {
        ((CORE * f64::from(s.cpu_cores)
            + RAM_GIB * (s.ram_bytes / GIB) as f64
            + GPU * f64::from(s.gpus))
            * markup) as u128
    };
    [(gpu_half, 0), (gpu_half, 24 * HOUR), (cpu_rest, 0)]
        .into_iter()
        .enumerate()
        .map(|(i, (slice, duration))| ActivePlan {
            id: i as u64 + 1,
            plan: Plan {
                slice,
                price: price(&slice),
                duration,
                netflags: cfg.netflags,
                identity_level: cfg.buyer_identity,
                sized_for: None,
            },
            has_deal: false,
        })
        .collect()
}

#[test]
fn optimus_earns_more_than_fixed_pricing() {
    let shaper = common::shaper(16, 64, 0, 2);
    let capacity = shaper.capacity;
    // Floor: 40% of the reference prices.
    let mut cfg = common::config(40 * HOUR as u128);
    cfg.floor.ram_gib_hour = 4 * u128::from(HOUR);
    cfg.floor.gpu_hour = 600 * u128::from(HOUR);
    assert!(
        shaper
            .benchmarks(&capacity)
            .get(sonm_market::Benchmark::GpuCount)
            == 2
    );
    for seed in [1u64, 2, 3] {
        let script = script(seed);
        let mut optimus = WithOptimus {
            optimus: Optimus::new(cfg.clone(), shaper).unwrap(),
            capacity,
            next_id: 1,
            replans: 0,
            orders: 0,
        };
        let (smart, smart_deals) = run(&script, &cfg, &shaper, Vec::new(), &mut optimus);
        // The same without thresholds or cooldown: what they save in orders, and cost in income.
        let mut eager_cfg = cfg.clone();
        eager_cfg.thresholds = Thresholds {
            income_bps: 0,
            drift_bps: 0,
            cooldown_s: 0,
        };
        let mut eager = WithOptimus {
            optimus: Optimus::new(eager_cfg, shaper).unwrap(),
            capacity,
            next_id: 1,
            replans: 0,
            orders: 0,
        };
        let (eager_income, _) = run(&script, &cfg, &shaper, Vec::new(), &mut eager);
        println!(
            "seed {seed}: without thresholds: {eager_income} wei, {} orders placed or cancelled; \
             with them: {smart} wei, {} orders",
            eager.orders, optimus.orders
        );
        assert!(
            optimus.orders < eager.orders,
            "the thresholds saved no orders"
        );
        // The hand-set price at several markups over the reference, so that the comparison is
        // against the best fixed price in hindsight, not a badly chosen one.
        let (fixed, fixed_deals, markup) = [0.6, 0.8, 1.0, 1.2, 1.4]
            .into_iter()
            .map(|m| {
                let (income, deals) = run(
                    &script,
                    &cfg,
                    &shaper,
                    fixed_plans(&cfg, &capacity, m),
                    &mut Fixed,
                );
                println!("seed {seed}: fixed pricing ×{m:.1}: {income} wei ({deals} deals)");
                (income, deals, m)
            })
            .max_by_key(|&(income, _, _)| income)
            .unwrap();
        println!(
            "seed {seed}: {} bids over {DAYS} days; Optimus {smart} wei ({smart_deals} deals, \
             {} re-plans), best fixed (×{markup:.1}) {fixed} wei ({fixed_deals} deals): \
             Optimus/fixed = {:.2}",
            script.len(),
            optimus.replans,
            smart as f64 / fixed as f64
        );
        assert!(fixed > 0, "the baseline sold nothing: the script is broken");
        assert!(
            smart > fixed,
            "seed {seed}: Optimus {smart} ≤ fixed {fixed}"
        );
    }
}
