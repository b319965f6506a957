//! Prices: the supplier's floor, the USD conversion, and the market's unit price.

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use sonm_market::MAX_PRICE;

use crate::slice::{DIMS, Slice};

const GIB: u128 = 1 << 30;
const HOUR: u128 = 3600;

/// The least the supplier accepts, in SNM wei per unit-hour. A slice's floor is the sum over
/// its resources, per second, rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Floor {
    pub core_hour: u128,
    pub ram_gib_hour: u128,
    pub storage_gib_hour: u128,
    pub gpu_hour: u128,
}

impl Floor {
    /// The floor of `slice` in SNM wei per second: never 0 (the chain and the worker refuse a
    /// free plan) and never above the chain's limit.
    pub fn price(&self, slice: &Slice) -> u128 {
        let per_hour = u128::from(slice.cpu_cores)
            .saturating_mul(self.core_hour)
            .saturating_add(per_gib(slice.ram_bytes, self.ram_gib_hour))
            .saturating_add(per_gib(slice.storage_bytes, self.storage_gib_hour))
            .saturating_add(u128::from(slice.gpus).saturating_mul(self.gpu_hour));
        per_hour.div_ceil(HOUR).clamp(1, MAX_PRICE)
    }
}

/// `bytes / GiB × rate`, rounded up, without overflowing for any u64 byte count.
fn per_gib(bytes: u64, rate: u128) -> u128 {
    let exact = U256::from(bytes) * U256::from(rate);
    let q = exact.div_ceil(U256::from(GIB));
    u128::try_from(q).unwrap_or(u128::MAX)
}

/// A floor in micro-USD per unit-hour, for suppliers who think in dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsdFloor {
    pub core_hour: u128,
    pub ram_gib_hour: u128,
    pub storage_gib_hour: u128,
    pub gpu_hour: u128,
}

impl UsdFloor {
    /// The floor in SNM wei at `usd_per_snm_e18`, the `OracleUSD.price` scale (USD per SNM ×
    /// 1e18). Rounded up so that the supplier never sells below the dollar floor; `None` for a
    /// zero rate (the oracle refuses one).
    pub fn to_snm(&self, usd_per_snm_e18: u128) -> Option<Floor> {
        if usd_per_snm_e18 == 0 {
            return None;
        }
        // wei = µUSD / 1e6 USD × (1e18 wei/SNM) / (rate / 1e18 USD/SNM) = µUSD × 1e30 / rate.
        let scale = U256::from(10u8).pow(U256::from(30u8));
        let rate = U256::from(usd_per_snm_e18);
        let conv = |micro: u128| {
            let wei = (U256::from(micro) * scale).div_ceil(rate);
            u128::try_from(wei).unwrap_or(u128::MAX)
        };
        Some(Floor {
            core_hour: conv(self.core_hour),
            ram_gib_hour: conv(self.ram_gib_hour),
            storage_gib_hour: conv(self.storage_gib_hour),
            gpu_hour: conv(self.gpu_hour),
        })
    }
}

/// A slice's size in "boxes": the sum of its shares of the capacity, over the dimensions the
/// box has. Prices divided by it are comparable across bids of different shapes.
pub fn units(slice: &Slice, capacity: &Slice) -> f64 {
    let (s, c) = (slice.dims(), capacity.dims());
    (0..DIMS)
        .filter(|&d| c[d] > 0)
        .map(|d| s[d] as f64 / c[d] as f64)
        .sum()
}

/// The `pct`-th percentile (nearest rank) of `values`; sorts them. `None` when empty.
pub fn percentile(values: &mut [f64], pct: u8) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    let rank = (usize::from(pct.min(100)) * n).div_ceil(100).max(1);
    Some(values[rank - 1])
}

/// `price` less `bps` basis points, rounded down.
pub fn undercut(price: u128, bps: u32) -> u128 {
    price - price / 10_000 * u128::from(bps) - price % 10_000 * u128::from(bps) / 10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_sums_resources_per_second_rounded_up() {
        let f = Floor {
            core_hour: 3600,
            ram_gib_hour: 7200,
            storage_gib_hour: 0,
            gpu_hour: 36_000,
        };
        let s = Slice {
            cpu_cores: 2,
            ram_bytes: 3 << 29, // 1.5 GiB
            storage_bytes: 1 << 40,
            gpus: 1,
        };
        // 2×1 + 1.5×2 + 0 + 10 wei/s
        assert_eq!(f.price(&s), 15);
        assert_eq!(
            f.price(&Slice {
                cpu_cores: 1,
                ..Slice::ZERO
            }),
            1
        );
        assert_eq!(Floor::default().price(&s), 1, "never a free plan");
    }

    #[test]
    fn usd_floor_converts_at_the_oracle_rate() {
        // 0.05 USD per SNM; 0.01 USD per core-hour = 0.2 SNM = 2e17 wei.
        let f = UsdFloor {
            core_hour: 10_000,
            ..UsdFloor::default()
        }
        .to_snm(5 * 10u128.pow(16))
        .unwrap();
        assert_eq!(f.core_hour, 2 * 10u128.pow(17));
        assert_eq!(UsdFloor::default().to_snm(0), None);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&mut v, 50), Some(3.0));
        assert_eq!(percentile(&mut v, 0), Some(1.0));
        assert_eq!(percentile(&mut v, 100), Some(5.0));
        assert_eq!(percentile(&mut v, 21), Some(2.0));
        assert_eq!(percentile(&mut [], 50), None);
    }

    #[test]
    fn undercut_in_basis_points() {
        assert_eq!(undercut(10_000, 50), 9_950);
        assert_eq!(undercut(u128::MAX, 10_000), 0);
        assert_eq!(undercut(199, 100), 198);
    }
}
