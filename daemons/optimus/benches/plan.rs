//! How long one planning round takes over 10, 1,000 and 100,000 open bids, against the part
//! no planner can skip (judging every bid: `candidates`) measured in the same run; the exact
//! solver at its limit (20 candidates); and how close the heuristic comes to the optimum.
//!
//! `cargo bench -p sonm-optimus` prints a quality line, then criterion's timings.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sonm_market::{
    Address, B256, Benchmark, Benchmarks, IdentityLevel, NetFlags, Order, OrderType, StaticContext,
};
use sonm_optimus::knapsack::{self, Item};
use sonm_optimus::{
    Action, ActivePlan, Config, Floor, Market, Optimus, ProportionalShaper, Slice, candidates,
    propose,
};

const GIB: u64 = 1 << 30;

/// A big box: 64 cores, 256 GiB, 4 TiB, 8 GPUs, so that many bids fit at once.
fn big_box() -> ProportionalShaper {
    let capacity = Slice {
        cpu_cores: 64,
        ram_bytes: 256 * GIB,
        storage_bytes: 4096 * GIB,
        gpus: 8,
    };
    ProportionalShaper {
        box_benchmarks: Benchmarks::ZERO
            .with(Benchmark::CpuSysbenchMulti, 64_000)
            .with(Benchmark::CpuSysbenchSingle, 1_000)
            .with(Benchmark::CpuCores, 64)
            .with(Benchmark::RamSize, 256 * GIB)
            .with(Benchmark::StorageSize, 4096 * GIB)
            .with(Benchmark::NetDownload, 1_000_000_000)
            .with(Benchmark::NetUpload, 1_000_000_000)
            .with(Benchmark::GpuCount, 8)
            .with(Benchmark::GpuMem, 16 * GIB)
            .with(Benchmark::GpuEthHashrate, 240_000_000)
            .with(Benchmark::WasmScore, 500),
        capacity,
    }
}

fn config() -> Config {
    Config::new(
        Address::repeat_byte(5),
        NetFlags::OUTBOUND.union(NetFlags::INBOUND),
        Floor {
            core_hour: 40 * 3600,
            ram_gib_hour: 4 * 3600,
            storage_gib_hour: 0,
            gpu_hour: 600 * 3600,
        },
    )
}

/// `n` bids shaped like the simulation's: most small CPU jobs, some large, some GPU; a tenth
/// need a public IP the box lacks.
fn bids(n: usize, seed: u64) -> Vec<Order> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let kind = rng.random_range(0..100u32);
            let (cores, ram, gpus) = if kind < 60 {
                (rng.random_range(1..=4u64), rng.random_range(2..=8u64), 0)
            } else if kind < 85 {
                (rng.random_range(6..=32), rng.random_range(16..=128), 0)
            } else {
                (
                    rng.random_range(2..=8),
                    rng.random_range(8..=32),
                    rng.random_range(1..=4),
                )
            };
            let fair = 100.0 * cores as f64 + 10.0 * ram as f64 + 1500.0 * gpus as f64;
            Order {
                id: i as u64 + 1,
                order_type: OrderType::Bid,
                author: Address::with_last_byte((i % 200) as u8 + 16),
                counterparty: None,
                duration: if rng.random_bool(0.6) { 0 } else { 3600 },
                price: (fair * rng.random_range(0.5..1.5)) as u128,
                netflags: if rng.random_bool(0.1) {
                    NetFlags::PUBLIC_IP
                } else {
                    NetFlags::OUTBOUND
                },
                identity_level: IdentityLevel::Anonymous,
                blacklist: None,
                tag: B256::ZERO,
                benchmarks: Benchmarks::ZERO
                    .with(Benchmark::CpuCores, cores)
                    .with(Benchmark::RamSize, ram * GIB)
                    .with(Benchmark::GpuCount, gpus),
            }
        })
        .collect()
}

/// Items of 20 candidates for the exact solver at its limit: the first 20 candidates.
fn twenty_items(seed: u64) -> (Vec<Item>, [u64; 4]) {
    let shaper = big_box();
    let cfg = config();
    let ctx = StaticContext::default();
    let bids = bids(40, seed);
    let cands = candidates(
        &cfg,
        &shaper,
        &shaper.capacity,
        &Market {
            bids: &bids,
            ctx: &ctx,
        },
    );
    let items = cands
        .iter()
        .take(20)
        .map(|c| Item {
            weight: c.plan.slice.dims(),
            value: c.plan.price,
        })
        .collect();
    (items, shaper.capacity.dims())
}

/// The heuristic's income as a share of the optimum over 200 instances of 20 candidates.
fn quality() {
    let mut ratios: Vec<f64> = (0..200)
        .map(|seed| {
            let (items, cap) = twenty_items(seed);
            let exact = knapsack::total(&items, &knapsack::solve_exact(&items, &cap));
            let greedy = knapsack::total(&items, &knapsack::solve_greedy(&items, &cap));
            greedy as f64 / exact.max(1) as f64
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let optimal = ratios.iter().filter(|&&r| r >= 1.0).count();
    println!(
        "heuristic / exact over 200 instances of 20 candidates: mean {mean:.4}, worst {:.4}, \
         optimal in {optimal}",
        ratios[0]
    );
}

fn main() {
    quality();
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let shaper = big_box();
    let cfg = config();
    let ctx = StaticContext::default();
    let mut group = c.benchmark_group("plan");
    for n in [10usize, 1_000, 100_000] {
        let bids = bids(n, 42);
        let market = Market {
            bids: &bids,
            ctx: &ctx,
        };
        if n == 100_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("candidates", n), &n, |b, _| {
            b.iter(|| black_box(candidates(&cfg, &shaper, &shaper.capacity, &market)))
        });
        group.bench_with_input(BenchmarkId::new("propose", n), &n, |b, _| {
            b.iter(|| {
                black_box(propose(
                    &cfg,
                    &shaper,
                    &shaper.capacity,
                    &shaper.capacity,
                    &market,
                ))
            })
        });
    }
    group.finish();
    // A whole step from the plans of the last one (the steady state): propose, then judge the
    // current and proposed plans against every bid.
    let mut group = c.benchmark_group("step");
    group.sample_size(10);
    for n in [1_000usize, 100_000] {
        let bids = bids(n, 42);
        let market = Market {
            bids: &bids,
            ctx: &ctx,
        };
        let mut optimus = Optimus::new(cfg.clone(), shaper).unwrap();
        let first = optimus.step(shaper.capacity, &[], &market, 0).unwrap();
        let plans: Vec<ActivePlan> = first
            .actions
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Action::Place(plan) => Some(ActivePlan {
                    id: i as u64,
                    plan,
                    has_deal: false,
                }),
                Action::Cancel(_) => None,
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("steady", n), &n, |b, _| {
            b.iter(|| black_box(optimus.step(shaper.capacity, &plans, &market, 1).unwrap()))
        });
    }
    group.finish();
    let (items, cap) = twenty_items(7);
    let mut group = c.benchmark_group("knapsack-20");
    group.bench_function("exact", |b| {
        b.iter(|| black_box(knapsack::solve_exact(&items, &cap)))
    });
    group.bench_function("greedy", |b| {
        b.iter(|| black_box(knapsack::solve_greedy(&items, &cap)))
    });
    group.bench_function("bounded", |b| {
        b.iter(|| black_box(knapsack::solve_large(&items, &cap)))
    });
    group.finish();
    c.final_summary();
}
