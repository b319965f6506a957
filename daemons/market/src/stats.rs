//! Market statistics: how deep each class of hardware is on one side of the market, and
//! what its orders ask or pay. Pure: the caller feeds the open orders (e.g. from
//! [`crate::OrderBook::open_orders`]).
//!
//! A class is a pair of power-of-two buckets — GPUs (0, 1, 2–3, 4–7, …) and CPU cores
//! (0, 1, 2–3, 4–7, …) — so that a supplier pricing a 4-core box and a customer looking
//! for one compare like with like, and the number of classes stays small (≤ 65 × 65)
//! whatever the market holds.

use serde::{Deserialize, Serialize};

use crate::{Benchmark, Benchmarks};

/// A power-of-two bucket of a count: `[min, max]`, both inclusive (`max` is `u64::MAX`
/// for the last bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bucket {
    pub min: u64,
    pub max: u64,
}

impl Bucket {
    /// The bucket holding `n`: 0 alone, then `[2^k, 2^(k+1) - 1]`.
    pub fn of(n: u64) -> Self {
        if n == 0 {
            return Bucket { min: 0, max: 0 };
        }
        let k = 63 - n.leading_zeros();
        let min = 1u64 << k;
        let max = if k == 63 { u64::MAX } else { (min << 1) - 1 };
        Bucket { min, max }
    }

    pub fn contains(&self, n: u64) -> bool {
        self.min <= n && n <= self.max
    }
}

/// A class of hardware: its GPU-count and CPU-core buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Class {
    pub gpus: Bucket,
    pub cores: Bucket,
}

impl Class {
    pub fn of(benchmarks: &Benchmarks) -> Self {
        Class {
            gpus: Bucket::of(benchmarks.get(Benchmark::GpuCount)),
            cores: Bucket::of(benchmarks.get(Benchmark::CpuCores)),
        }
    }
}

/// Prices (SNM wei per second) of a set of orders: extremes and nearest-rank percentiles
/// (the p-th percentile is the smallest price with at least p % of the orders at or below
/// it: always a price some order has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceSummary {
    pub min: u128,
    pub p10: u128,
    pub p25: u128,
    pub p50: u128,
    pub p75: u128,
    pub p90: u128,
    pub max: u128,
}

impl PriceSummary {
    /// The summary of `prices`, which it sorts; `None` when empty.
    pub fn of(prices: &mut [u128]) -> Option<Self> {
        if prices.is_empty() {
            return None;
        }
        prices.sort_unstable();
        let at = |p: usize| prices[nearest_rank(p, prices.len()) - 1];
        Some(PriceSummary {
            min: prices[0],
            p10: at(10),
            p25: at(25),
            p50: at(50),
            p75: at(75),
            p90: at(90),
            max: prices[prices.len() - 1],
        })
    }
}

/// The 1-based nearest rank of percentile `p` (1..=100) among `n` > 0 values:
/// ⌈p·n / 100⌉.
fn nearest_rank(p: usize, n: usize) -> usize {
    (p * n).div_ceil(100).max(1)
}

/// One class's depth and prices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassStats {
    pub class: Class,
    /// Open orders in the class.
    pub orders: u64,
    /// CPU cores and GPUs they offer (asks) or want (bids), summed.
    pub cores: u64,
    pub gpus: u64,
    pub price: PriceSummary,
}

/// Statistics of one side of the market.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketStats {
    /// Open orders in all.
    pub orders: u64,
    /// Over all classes; `None` for an empty side.
    pub price: Option<PriceSummary>,
    /// Non-empty classes, ordered by (GPUs, cores).
    pub classes: Vec<ClassStats>,
}

impl MarketStats {
    /// Statistics of `orders` (price, benchmarks), which may come in any order.
    pub fn of<'a>(orders: impl IntoIterator<Item = (u128, &'a Benchmarks)>) -> Self {
        let mut by_class: std::collections::BTreeMap<Class, (Vec<u128>, u64, u64)> =
            Default::default();
        let mut all = Vec::new();
        for (price, b) in orders {
            let entry = by_class.entry(Class::of(b)).or_default();
            entry.0.push(price);
            entry.1 = entry.1.saturating_add(b.get(Benchmark::CpuCores));
            entry.2 = entry.2.saturating_add(b.get(Benchmark::GpuCount));
            all.push(price);
        }
        let classes = by_class
            .into_iter()
            .filter_map(|(class, (mut prices, cores, gpus))| {
                Some(ClassStats {
                    class,
                    orders: prices.len() as u64,
                    cores,
                    gpus,
                    price: PriceSummary::of(&mut prices)?,
                })
            })
            .collect();
        MarketStats {
            orders: all.len() as u64,
            price: PriceSummary::of(&mut all),
            classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bench(cores: u64, gpus: u64) -> Benchmarks {
        Benchmarks::ZERO
            .with(Benchmark::CpuCores, cores)
            .with(Benchmark::GpuCount, gpus)
    }

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(Bucket::of(0), Bucket { min: 0, max: 0 });
        assert_eq!(Bucket::of(1), Bucket { min: 1, max: 1 });
        assert_eq!(Bucket::of(3), Bucket { min: 2, max: 3 });
        assert_eq!(Bucket::of(4), Bucket { min: 4, max: 7 });
        assert_eq!(Bucket::of(100), Bucket { min: 64, max: 127 });
        assert_eq!(
            Bucket::of(u64::MAX),
            Bucket {
                min: 1 << 63,
                max: u64::MAX
            }
        );
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut prices: Vec<u128> = (1..=10).rev().collect();
        let s = PriceSummary::of(&mut prices).unwrap();
        assert_eq!((s.min, s.p10, s.p25, s.p50), (1, 1, 3, 5));
        assert_eq!((s.p75, s.p90, s.max), (8, 9, 10));
        assert_eq!(PriceSummary::of(&mut []), None);
        let one = PriceSummary::of(&mut [7]).unwrap();
        assert_eq!(
            (one.min, one.p10, one.p50, one.p90, one.max),
            (7, 7, 7, 7, 7)
        );
    }

    #[test]
    fn classes_split_cpu_and_gpu_boxes() {
        let (a, b, c) = (bench(4, 0), bench(6, 0), bench(8, 2));
        let s = MarketStats::of([(30, &a), (10, &b), (100, &c)]);
        assert_eq!(s.orders, 3);
        assert_eq!(s.classes.len(), 2);
        let cpu = &s.classes[0];
        assert_eq!(cpu.class.cores, Bucket { min: 4, max: 7 });
        assert_eq!((cpu.orders, cpu.cores, cpu.gpus), (2, 10, 0));
        assert_eq!((cpu.price.min, cpu.price.max), (10, 30));
        let gpu = &s.classes[1];
        assert_eq!(gpu.class.gpus, Bucket { min: 2, max: 3 });
        assert_eq!((gpu.orders, gpu.price.p50), (1, 100));
        assert_eq!(s.price.map(|p| p.max), Some(100));
        let empty = MarketStats::of(std::iter::empty());
        assert_eq!(
            (empty.orders, empty.price, empty.classes.len()),
            (0, None, 0)
        );
    }

    proptest! {
        /// Every order lands in exactly the class whose buckets hold its counts; the
        /// classes' depths add up; each percentile has at least p % of the class at or
        /// below it and fewer than p % strictly below it.
        #[test]
        fn stats_agree_with_brute_force(
            orders in proptest::collection::vec((0u128..1_000, 0u64..40, 0u64..5), 0..200)
        ) {
            let benches: Vec<(u128, Benchmarks)> =
                orders.iter().map(|&(p, c, g)| (p, bench(c, g))).collect();
            let s = MarketStats::of(benches.iter().map(|(p, b)| (*p, b)));
            prop_assert_eq!(s.orders as usize, orders.len());
            prop_assert_eq!(s.classes.iter().map(|c| c.orders).sum::<u64>() as usize, orders.len());
            for c in &s.classes {
                let mine: Vec<u128> = orders
                    .iter()
                    .filter(|&&(_, cores, gpus)| c.class.cores.contains(cores) && c.class.gpus.contains(gpus))
                    .map(|&(p, _, _)| p)
                    .collect();
                prop_assert_eq!(mine.len() as u64, c.orders);
                for (p, v) in [(10, c.price.p10), (25, c.price.p25), (50, c.price.p50), (75, c.price.p75), (90, c.price.p90)] {
                    let at_or_below = mine.iter().filter(|&&x| x <= v).count();
                    let below = mine.iter().filter(|&&x| x < v).count();
                    prop_assert!(at_or_below * 100 >= p * mine.len());
                    prop_assert!(below * 100 < p * mine.len());
                    prop_assert!(mine.contains(&v));
                }
            }
        }
    }
}
