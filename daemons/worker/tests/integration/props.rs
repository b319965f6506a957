//! Property tests of the pure parts: ask plans never oversubscribe the box and derive honest
//! benchmarks; the billing schedule bills on time, closes forward deals at their end and never
//! before, and always makes progress.

use proptest::prelude::*;
use sonm_market::{Benchmark, Benchmarks, IdentityLevel, NetFlags};
use sonm_worker::billing::{Action, BillingPolicy, DealClock, next_action};
use sonm_worker::plan::{PlanError, PlanSpec, Plans, Resources, ask_benchmarks};

fn resources(
    max_cores: u32,
    max_ram: u64,
    max_disk: u64,
    max_gpus: u32,
) -> impl Strategy<Value = Resources> {
    (0..=max_cores, 0..=max_ram, 0..=max_disk, 0..=max_gpus).prop_map(|(c, r, s, g)| Resources {
        cpu_cores: c,
        ram_bytes: r,
        storage_bytes: s,
        gpus: g,
    })
}

#[derive(Debug, Clone)]
enum Op {
    Add(Resources, u8),
    Remove(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (resources(8, 1 << 34, 1 << 40, 4), 0u8..8).prop_map(|(r, f)| Op::Add(r, f)),
            1 => any::<usize>().prop_map(Op::Remove),
        ],
        0..60,
    )
}

fn spec(n: usize, slice: Resources, flags: u8) -> PlanSpec {
    PlanSpec {
        name: format!("p{n}"),
        slice,
        netflags: NetFlags::try_from(u64::from(flags & 7)).unwrap(),
        price: 1,
        duration: 0,
        identity_level: IdentityLevel::Anonymous,
    }
}

proptest! {
    /// Whatever plans are added and removed, the slices never add up to more than the box, an
    /// add is refused exactly when it does not fit (or offers what the box does not), and a
    /// removal frees exactly its slice.
    #[test]
    fn plans_never_oversubscribe(capacity in resources(16, 1 << 36, 1 << 42, 8), offered in 0u8..8, ops in ops()) {
        let offered = NetFlags::try_from(u64::from(offered)).unwrap();
        let mut plans = Plans::new(capacity, offered);
        let mut ids = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Add(slice, flags) => {
                    let s = spec(n, slice, flags);
                    let free = plans.free();
                    let fits = slice.fits_in(&free) && !slice.is_empty() && offered.covers(s.netflags);
                    let before = plans.allocated();
                    match plans.add(n as u64, s) {
                        Ok(()) => {
                            prop_assert!(fits);
                            prop_assert_eq!(plans.allocated(), before.checked_add(&slice).unwrap());
                            ids.push(n as u64);
                        }
                        Err(PlanError::Oversubscribed { .. }) => prop_assert!(!slice.fits_in(&free)),
                        Err(_) => prop_assert!(!fits),
                    }
                }
                Op::Remove(i) if !ids.is_empty() => {
                    let id = ids.remove(i % ids.len());
                    let slice = plans.get(id).unwrap().slice;
                    let before = plans.allocated();
                    plans.remove(id).unwrap();
                    prop_assert_eq!(plans.allocated(), before.saturating_sub(&slice));
                }
                Op::Remove(_) => {}
            }
            prop_assert!(plans.allocated().fits_in(&capacity));
            let sum = plans.iter().try_fold(Resources::default(), |acc, (_, p)| acc.checked_add(&p.slice));
            prop_assert_eq!(sum, Some(plans.allocated()));
        }
    }

    /// A slice's benchmarks never exceed the box's, and over disjoint slices the scaled ones
    /// (multi-core score, GPU rates) add up to at most the box's.
    #[test]
    fn ask_benchmarks_are_honest(
        values in prop::array::uniform13(0u64..u64::MAX / 2),
        cores in 1u32..64, gpus in 0u32..8,
        cuts in prop::collection::vec((0u32..64, 0u32..8), 1..6),
    ) {
        let mut box_bench = Benchmarks(values);
        box_bench.set(Benchmark::CpuCores, u64::from(cores));
        box_bench.set(Benchmark::GpuCount, u64::from(gpus));
        let capacity = Resources { cpu_cores: cores, ram_bytes: box_bench.get(Benchmark::RamSize),
            storage_bytes: box_bench.get(Benchmark::StorageSize), gpus };
        let mut plans = Plans::new(capacity, NetFlags::ALL);
        let mut totals = [0u128; 13];
        for (n, (c, g)) in cuts.into_iter().enumerate() {
            let slice = Resources { cpu_cores: c, ram_bytes: capacity.ram_bytes / 8, storage_bytes: 0, gpus: g };
            if plans.add(n as u64, spec(n, slice, 0)).is_err() {
                continue;
            }
            let b = ask_benchmarks(&box_bench, &capacity, &slice);
            prop_assert!(box_bench.dominates(&b), "slice {:?}: {} vs box {}", slice, b, box_bench);
            prop_assert_eq!(b.get(Benchmark::CpuCores), u64::from(c));
            prop_assert_eq!(b.get(Benchmark::GpuCount), u64::from(g));
            for (t, v) in totals.iter_mut().zip(b.0) {
                *t += u128::from(v);
            }
        }
        for bench in [Benchmark::CpuSysbenchMulti, Benchmark::GpuEthHashrate, Benchmark::GpuCashHashrate,
                      Benchmark::GpuRedshift, Benchmark::CpuCores, Benchmark::GpuCount, Benchmark::RamSize] {
            prop_assert!(totals[bench.index()] <= u128::from(box_bench.get(bench)), "{} oversold", bench);
        }
    }

    /// The schedule: waits always end in the future; bills only when an interval has passed;
    /// closes a forward deal exactly from its end on; never closes a spot deal.
    #[test]
    fn billing_schedule_is_sound(start in 0u64..1 << 40, duration in prop_oneof![Just(0u64), 1u64..1 << 20],
                                 since_bill in 0u64..1 << 21, elapsed in 0u64..1 << 22, interval in 1u64..100_000) {
        let last_bill = start + since_bill.min(elapsed);
        let now = start + elapsed;
        let deal = DealClock { start, duration, last_bill, active: true };
        let policy = BillingPolicy { interval };
        match next_action(&deal, now, &policy) {
            Action::Wait { until } => {
                prop_assert!(until > now);
                if let Some(end) = deal.end() { prop_assert!(until <= end); }
            }
            Action::Bill => {
                prop_assert!(now >= last_bill + interval);
                if let Some(end) = deal.end() { prop_assert!(now < end); }
            }
            Action::Close => {
                prop_assert!(duration > 0 && now >= start + duration);
            }
            Action::Done => prop_assert!(false, "an active deal is never done"),
        }
        if let Some(end) = deal.end() && now >= end {
            prop_assert_eq!(next_action(&deal, now, &policy), Action::Close);
        }
        prop_assert_eq!(next_action(&DealClock { active: false, ..deal }, now, &policy), Action::Done);
    }

    /// Following the schedule (billing when told, jumping to the wait's end) a forward deal is
    /// closed at its end after a bounded number of bills, and bills are at least an interval
    /// apart.
    #[test]
    fn a_forward_deal_runs_to_its_close(start in 0u64..1 << 40, duration in 1u64..1 << 16, interval in 1u64..5000) {
        let policy = BillingPolicy { interval };
        let mut deal = DealClock { start, duration, last_bill: start, active: true };
        let mut now = start;
        let mut bills = 0u64;
        for _ in 0..(2 * duration / interval + 4) {
            match next_action(&deal, now, &policy) {
                Action::Wait { until } => now = until,
                Action::Bill => {
                    prop_assert!(now - deal.last_bill >= interval);
                    deal.last_bill = now;
                    bills += 1;
                }
                Action::Close => {
                    prop_assert_eq!(now, start + duration);
                    prop_assert!(bills <= duration / interval);
                    return Ok(());
                }
                Action::Done => prop_assert!(false),
            }
        }
        prop_assert!(false, "not closed within the bound");
    }
}
