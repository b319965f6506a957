//! Slices of the box and the benchmarks an ask selling one may promise.

use serde::{Deserialize, Serialize};
use sonm_market::{Benchmark, Benchmarks};

/// The resource dimensions a slice has (cores, RAM, storage, GPUs): the knapsack's dimensions.
pub const DIMS: usize = 4;

/// Sellable resources: the box's capacity, a plan's slice, or what is free. The same fields as
/// `sonm_worker::plan::Resources`, so the worker converts field by field (this crate cannot
/// depend on the worker, which will depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Slice {
    pub cpu_cores: u32,
    pub ram_bytes: u64,
    pub storage_bytes: u64,
    pub gpus: u32,
}

impl Slice {
    pub const ZERO: Slice = Slice {
        cpu_cores: 0,
        ram_bytes: 0,
        storage_bytes: 0,
        gpus: 0,
    };

    pub fn is_empty(&self) -> bool {
        self.dims() == [0; DIMS]
    }

    /// The slice as the knapsack's weight vector.
    pub fn dims(&self) -> [u64; DIMS] {
        [
            u64::from(self.cpu_cores),
            self.ram_bytes,
            self.storage_bytes,
            u64::from(self.gpus),
        ]
    }

    /// The inverse of [`Slice::dims`]; counts above `u32::MAX` saturate.
    pub fn from_dims(d: [u64; DIMS]) -> Slice {
        Slice {
            cpu_cores: u32::try_from(d[0]).unwrap_or(u32::MAX),
            ram_bytes: d[1],
            storage_bytes: d[2],
            gpus: u32::try_from(d[3]).unwrap_or(u32::MAX),
        }
    }

    /// Componentwise sum, `None` on overflow.
    pub fn checked_add(&self, o: &Slice) -> Option<Slice> {
        Some(Slice {
            cpu_cores: self.cpu_cores.checked_add(o.cpu_cores)?,
            ram_bytes: self.ram_bytes.checked_add(o.ram_bytes)?,
            storage_bytes: self.storage_bytes.checked_add(o.storage_bytes)?,
            gpus: self.gpus.checked_add(o.gpus)?,
        })
    }

    /// Componentwise difference, saturating at 0.
    pub fn saturating_sub(&self, o: &Slice) -> Slice {
        Slice {
            cpu_cores: self.cpu_cores.saturating_sub(o.cpu_cores),
            ram_bytes: self.ram_bytes.saturating_sub(o.ram_bytes),
            storage_bytes: self.storage_bytes.saturating_sub(o.storage_bytes),
            gpus: self.gpus.saturating_sub(o.gpus),
        }
    }

    /// Every component ≤ `o`'s.
    pub fn fits_in(&self, o: &Slice) -> bool {
        self.dims().iter().zip(o.dims()).all(|(a, b)| *a <= b)
    }

    /// The sum of `slices`, `None` on overflow.
    pub fn sum<'a>(slices: impl IntoIterator<Item = &'a Slice>) -> Option<Slice> {
        slices
            .into_iter()
            .try_fold(Slice::ZERO, |acc, s| acc.checked_add(s))
    }
}

/// What an ask selling a slice promises. The worker passes its own rule
/// (`|s| sonm_worker::plan::ask_benchmarks(&box_bench, &capacity, &to_resources(s))`), so Optimus
/// sizes slices by exactly the vector the ASK order will carry.
///
/// Must be monotone: a slice that is larger in every dimension never promises less.
pub trait Shaper {
    fn benchmarks(&self, slice: &Slice) -> Benchmarks;
}

impl<F: Fn(&Slice) -> Benchmarks> Shaper for F {
    fn benchmarks(&self, slice: &Slice) -> Benchmarks {
        self(slice)
    }
}

/// The worker's rule (`sonm_worker::plan::ask_benchmarks`) restated for tests, benches and
/// callers without the worker: counts are the slice's, throughput scores scale with the slice's
/// share of cores or GPUs, per-thread scores and the network are the box's when the slice has a
/// core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProportionalShaper {
    pub box_benchmarks: Benchmarks,
    pub capacity: Slice,
}

fn scale(value: u64, part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    let scaled = u128::from(value) * u128::from(part.min(whole)) / u128::from(whole);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

impl Shaper for ProportionalShaper {
    fn benchmarks(&self, slice: &Slice) -> Benchmarks {
        use Benchmark as B;
        let bx = &self.box_benchmarks;
        let cores = u64::from(slice.cpu_cores);
        let gpus = u64::from(slice.gpus);
        let box_cores = u64::from(self.capacity.cpu_cores);
        let box_gpus = u64::from(self.capacity.gpus);
        let if_cpu = |b: B| if cores > 0 { bx.get(b) } else { 0 };
        let mut out = Benchmarks::ZERO;
        out.set(
            B::CpuSysbenchMulti,
            scale(bx.get(B::CpuSysbenchMulti), cores, box_cores),
        );
        out.set(B::CpuSysbenchSingle, if_cpu(B::CpuSysbenchSingle));
        out.set(B::CpuCores, cores.min(bx.get(B::CpuCores)));
        out.set(B::RamSize, slice.ram_bytes.min(bx.get(B::RamSize)));
        out.set(
            B::StorageSize,
            slice.storage_bytes.min(bx.get(B::StorageSize)),
        );
        out.set(B::NetDownload, if_cpu(B::NetDownload));
        out.set(B::NetUpload, if_cpu(B::NetUpload));
        out.set(B::GpuCount, gpus.min(bx.get(B::GpuCount)));
        out.set(B::GpuMem, if gpus > 0 { bx.get(B::GpuMem) } else { 0 });
        for rate in [B::GpuEthHashrate, B::GpuCashHashrate, B::GpuRedshift] {
            out.set(rate, scale(bx.get(rate), gpus, box_gpus));
        }
        out.set(B::WasmScore, if_cpu(B::WasmScore));
        out
    }
}

/// The slice dimension that buys more of a benchmark.
fn dim_of(b: Benchmark) -> usize {
    use Benchmark as B;
    match b {
        B::CpuSysbenchMulti
        | B::CpuSysbenchSingle
        | B::CpuCores
        | B::NetDownload
        | B::NetUpload
        | B::WasmScore => 0,
        B::RamSize => 1,
        B::StorageSize => 2,
        B::GpuCount | B::GpuMem | B::GpuEthHashrate | B::GpuCashHashrate | B::GpuRedshift => 3,
    }
}

/// True when `have` meets `want` on every benchmark that dimension `d` buys.
fn covers_dim(have: &Benchmarks, want: &Benchmarks, d: usize) -> bool {
    Benchmark::ALL
        .iter()
        .all(|&b| dim_of(b) != d || have.get(b) >= want.get(b))
}

/// The smallest slice within `limit` whose promised benchmarks dominate `want` (a bid's), or
/// `None` when even `limit` cannot serve it. A bid that asks for nothing gets one core: an ask
/// must sell something.
pub fn min_slice(shaper: &impl Shaper, want: &Benchmarks, limit: &Slice) -> Option<Slice> {
    use Benchmark as B;
    let mut lo = [0u64; DIMS];
    for b in Benchmark::ALL {
        let v = want.get(b);
        if v == 0 {
            continue;
        }
        // Counts are bought one for one; any other non-zero score needs at least one unit.
        let direct = match b {
            B::CpuCores | B::RamSize | B::StorageSize | B::GpuCount => v,
            _ => 1,
        };
        let d = dim_of(b);
        lo[d] = lo[d].max(direct);
    }
    if lo == [0; DIMS] {
        lo[0] = 1;
    }
    let lim = limit.dims();
    if (0..DIMS).any(|d| lo[d] > lim[d]) {
        return None;
    }
    // Raising one dimension never lowers a benchmark (monotone shaper), so each short
    // dimension is settled once by a binary search: at most DIMS rounds, then the final check.
    for _ in 0..=DIMS {
        let have = shaper.benchmarks(&Slice::from_dims(lo));
        let Some(short) = have.first_shortfall(want) else {
            return Some(Slice::from_dims(lo));
        };
        let d = dim_of(short);
        let ok = |v: u64| {
            let mut t = lo;
            t[d] = v;
            covers_dim(&shaper.benchmarks(&Slice::from_dims(t)), want, d)
        };
        if !ok(lim[d]) {
            return None;
        }
        // Invariant: lo[d] is short, hi is enough.
        let (mut short_at, mut hi) = (lo[d], lim[d]);
        while hi - short_at > 1 {
            let mid = short_at + (hi - short_at) / 2;
            if ok(mid) {
                hi = mid;
            } else {
                short_at = mid;
            }
        }
        lo[d] = hi;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn shaper() -> ProportionalShaper {
        let capacity = Slice {
            cpu_cores: 16,
            ram_bytes: 64 * GIB,
            storage_bytes: 1024 * GIB,
            gpus: 2,
        };
        let box_benchmarks = Benchmarks::ZERO
            .with(Benchmark::CpuSysbenchMulti, 16_000)
            .with(Benchmark::CpuSysbenchSingle, 1_000)
            .with(Benchmark::CpuCores, 16)
            .with(Benchmark::RamSize, 64 * GIB)
            .with(Benchmark::StorageSize, 1024 * GIB)
            .with(Benchmark::GpuCount, 2)
            .with(Benchmark::GpuMem, 8 * GIB)
            .with(Benchmark::GpuEthHashrate, 60_000_000);
        ProportionalShaper {
            box_benchmarks,
            capacity,
        }
    }

    #[test]
    fn min_slice_buys_throughput_with_cores_and_gpus() {
        let s = shaper();
        // 5,500 multi-thread points need 6 of the 16 cores (1,000 each); 2 cores asked.
        let want = Benchmarks::ZERO
            .with(Benchmark::CpuSysbenchMulti, 5_500)
            .with(Benchmark::CpuCores, 2)
            .with(Benchmark::RamSize, 3 * GIB)
            .with(Benchmark::GpuEthHashrate, 40_000_000);
        let got = min_slice(&s, &want, &s.capacity).unwrap();
        assert_eq!(
            got,
            Slice {
                cpu_cores: 6,
                ram_bytes: 3 * GIB,
                storage_bytes: 0,
                gpus: 2
            }
        );
        assert!(s.benchmarks(&got).dominates(&want));
        // One core less would fall short.
        let smaller = Slice {
            cpu_cores: 5,
            ..got
        };
        assert!(!s.benchmarks(&smaller).dominates(&want));
        // Beyond the box, or beyond the limit: none.
        let too_much = want.with(Benchmark::CpuSysbenchSingle, 1_001);
        assert_eq!(min_slice(&s, &too_much, &s.capacity), None);
        let limit = Slice {
            gpus: 1,
            ..s.capacity
        };
        assert_eq!(min_slice(&s, &want, &limit), None);
    }

    #[test]
    fn an_empty_bid_gets_one_core() {
        let s = shaper();
        let got = min_slice(&s, &Benchmarks::ZERO, &s.capacity).unwrap();
        assert_eq!(
            got,
            Slice {
                cpu_cores: 1,
                ..Slice::ZERO
            }
        );
    }
}
