//! The solvers for many candidates against the optimum on bid-shaped knapsacks: the heuristic
//! alone at 20 candidates (the exact solver's limit), and the heuristic plus bounded branch and
//! bound (what the planner runs above the limit) at 30.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sonm_optimus::knapsack::{self, Item};

/// Candidates shaped like the bench's bids on a 64-core, 256 GiB, 8-GPU box: mostly small CPU
/// jobs, some large, some with GPUs, priced ±50% around a reference.
fn instance(seed: u64, n: usize) -> Vec<Item> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
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
            Item {
                weight: [cores, ram, 0, gpus],
                value: (fair * rng.random_range(0.5..1.5)) as u128,
            }
        })
        .collect()
}

const CAP: [u64; 4] = [64, 256, 0, 8];

/// Mean and worst share of the optimum, and how often optimal, over `runs` instances of `n`.
fn compare(n: usize, runs: u64, solve: impl Fn(&[Item]) -> Vec<usize>) -> (f64, f64, usize) {
    let ratios: Vec<f64> = (0..runs)
        .map(|seed| {
            let items = instance(seed, n);
            let best = knapsack::total(&items, &knapsack::solve_exact(&items, &CAP));
            let got = solve(&items);
            assert!(knapsack::feasible(&items, &got, &CAP));
            knapsack::total(&items, &got) as f64 / best.max(1) as f64
        })
        .collect();
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let worst = ratios.iter().copied().fold(1.0, f64::min);
    (mean, worst, ratios.iter().filter(|&&r| r >= 1.0).count())
}

#[test]
fn the_heuristic_comes_close_to_the_optimum() {
    let (mean, worst, optimal) = compare(20, 300, |items| knapsack::solve_greedy(items, &CAP));
    println!("heuristic, 20 candidates: mean {mean:.4}, worst {worst:.4}, optimal {optimal}/300");
    assert!(mean >= 0.98, "mean {mean}");
    assert!(worst >= 0.85, "worst {worst}");
}

#[test]
fn bounded_search_improves_on_the_heuristic() {
    let (g_mean, _, g_opt) = compare(30, 50, |items| knapsack::solve_greedy(items, &CAP));
    let (mean, worst, optimal) = compare(30, 50, |items| knapsack::solve_large(items, &CAP).0);
    println!(
        "30 candidates: heuristic mean {g_mean:.4} (optimal {g_opt}/50); with bounded search \
         mean {mean:.4}, worst {worst:.4}, optimal {optimal}/50"
    );
    assert!(mean > g_mean && optimal > g_opt);
}
