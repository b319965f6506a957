//! Ask plans: slices of the box set aside for sale, each sold as one ASK order. Pure: no I/O.
//!
//! [`Plans`] admits a plan only if every resource it asks for is still free, so the plans never
//! oversubscribe the box; [`ask_benchmarks`] derives the benchmark vector an ask may promise from
//! the box's vector and the slice (never more than the box, and the plans' scaled values never
//! add up to more than the box's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sonm_market::{
    Address, B256, Benchmark, Benchmarks, IdentityLevel, MAX_DURATION, MAX_PRICE, NetFlags, Order,
    OrderType,
};

pub type PlanId = u64;

/// Sellable resources: the box's capacity, a plan's slice, or what is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_cores: u32,
    pub ram_bytes: u64,
    pub storage_bytes: u64,
    pub gpus: u32,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.cpu_cores == 0 && self.ram_bytes == 0 && self.storage_bytes == 0 && self.gpus == 0
    }

    /// Componentwise sum, `None` on overflow.
    pub fn checked_add(&self, o: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_cores: self.cpu_cores.checked_add(o.cpu_cores)?,
            ram_bytes: self.ram_bytes.checked_add(o.ram_bytes)?,
            storage_bytes: self.storage_bytes.checked_add(o.storage_bytes)?,
            gpus: self.gpus.checked_add(o.gpus)?,
        })
    }

    /// Componentwise difference, saturating at 0.
    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu_cores: self.cpu_cores.saturating_sub(o.cpu_cores),
            ram_bytes: self.ram_bytes.saturating_sub(o.ram_bytes),
            storage_bytes: self.storage_bytes.saturating_sub(o.storage_bytes),
            gpus: self.gpus.saturating_sub(o.gpus),
        }
    }

    /// Every component ≤ `o`'s.
    pub fn fits_in(&self, o: &Resources) -> bool {
        self.cpu_cores <= o.cpu_cores
            && self.ram_bytes <= o.ram_bytes
            && self.storage_bytes <= o.storage_bytes
            && self.gpus <= o.gpus
    }

    /// The first component of `self` that exceeds `free`, with both amounts.
    fn first_excess(&self, free: &Resources) -> Option<(Resource, u64, u64)> {
        [
            (
                Resource::CpuCores,
                self.cpu_cores.into(),
                free.cpu_cores.into(),
            ),
            (Resource::Ram, self.ram_bytes, free.ram_bytes),
            (Resource::Storage, self.storage_bytes, free.storage_bytes),
            (Resource::Gpus, self.gpus.into(), free.gpus.into()),
        ]
        .into_iter()
        .find(|&(_, asked, free)| asked > free)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    CpuCores,
    Ram,
    Storage,
    Gpus,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::CpuCores => "cpu cores",
            Resource::Ram => "RAM bytes",
            Resource::Storage => "storage bytes",
            Resource::Gpus => "GPUs",
        })
    }
}

/// One plan: a slice and the terms it is offered on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSpec {
    /// Unique among the plans (config plans are reconciled by name).
    pub name: String,
    pub slice: Resources,
    /// Network access the slice offers (within what the box offers).
    pub netflags: NetFlags,
    /// SNM wei per second.
    pub price: u128,
    /// Seconds; 0 = spot.
    pub duration: u64,
    /// Required of the buyer.
    pub identity_level: IdentityLevel,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PlanError {
    #[error("plan {0:?} sells nothing (every resource is 0)")]
    EmptySlice(String),
    #[error("plan {name:?} asks for {asked} {resource} but only {free} are free")]
    Oversubscribed {
        name: String,
        resource: Resource,
        asked: u64,
        free: u64,
    },
    #[error("plan {name:?} offers netflags {asked} but the box offers only {offered}")]
    NetFlags {
        name: String,
        asked: String,
        offered: String,
    },
    #[error("plan {0:?}: price must be > 0 and < 2^96 wei/s")]
    Price(String),
    #[error("plan {0:?}: duration must be < 2^40 s")]
    Duration(String),
    #[error("a plan named {0:?} exists")]
    DuplicateName(String),
    #[error("no plan {0}")]
    Unknown(PlanId),
}

/// The box's plans: admission never lets the sum of slices exceed the capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans {
    capacity: Resources,
    offered_netflags: NetFlags,
    plans: BTreeMap<PlanId, PlanSpec>,
    allocated: Resources,
}

impl Plans {
    pub fn new(capacity: Resources, offered_netflags: NetFlags) -> Self {
        Self {
            capacity,
            offered_netflags,
            plans: BTreeMap::new(),
            allocated: Resources::default(),
        }
    }

    pub fn capacity(&self) -> Resources {
        self.capacity
    }

    /// The sum of every plan's slice (always fits in the capacity).
    pub fn allocated(&self) -> Resources {
        self.allocated
    }

    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.allocated)
    }

    pub fn get(&self, id: PlanId) -> Option<&PlanSpec> {
        self.plans.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (PlanId, &PlanSpec)> {
        self.plans.iter().map(|(id, p)| (*id, p))
    }

    pub fn len(&self) -> usize {
        self.plans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<PlanId> {
        self.plans
            .iter()
            .find(|(_, p)| p.name == name)
            .map(|(id, _)| *id)
    }

    /// Would `spec` be admitted now?
    pub fn check(&self, spec: &PlanSpec) -> Result<(), PlanError> {
        if spec.slice.is_empty() {
            return Err(PlanError::EmptySlice(spec.name.clone()));
        }
        if spec.price == 0 || spec.price > MAX_PRICE {
            return Err(PlanError::Price(spec.name.clone()));
        }
        if spec.duration > MAX_DURATION {
            return Err(PlanError::Duration(spec.name.clone()));
        }
        if !self.offered_netflags.covers(spec.netflags) {
            return Err(PlanError::NetFlags {
                name: spec.name.clone(),
                asked: spec.netflags.to_string(),
                offered: self.offered_netflags.to_string(),
            });
        }
        if self.by_name(&spec.name).is_some() {
            return Err(PlanError::DuplicateName(spec.name.clone()));
        }
        if let Some((resource, asked, free)) = spec.slice.first_excess(&self.free()) {
            return Err(PlanError::Oversubscribed {
                name: spec.name.clone(),
                resource,
                asked,
                free,
            });
        }
        Ok(())
    }

    /// Admits `spec` under `id` (ids come from the store) if it fits.
    pub fn add(&mut self, id: PlanId, spec: PlanSpec) -> Result<(), PlanError> {
        self.check(&spec)?;
        // check() proved slice ≤ free, so the sum stays ≤ capacity and cannot overflow.
        self.allocated = self
            .allocated
            .checked_add(&spec.slice)
            .unwrap_or(self.capacity);
        if let Some(old) = self.plans.insert(id, spec) {
            self.allocated = self.allocated.saturating_sub(&old.slice);
        }
        Ok(())
    }

    pub fn remove(&mut self, id: PlanId) -> Result<PlanSpec, PlanError> {
        let spec = self.plans.remove(&id).ok_or(PlanError::Unknown(id))?;
        self.allocated = self.allocated.saturating_sub(&spec.slice);
        Ok(spec)
    }
}

/// `value × part / whole`, rounded down (0 when `whole` is 0).
fn scale(value: u64, part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    let scaled = u128::from(value) * u128::from(part.min(whole)) / u128::from(whole);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// The benchmarks a slice can promise, from the whole box's:
/// - cores, RAM, storage, GPU count: the slice's own amounts;
/// - `cpu-sysbench-multi`: the box's, scaled by the slice's share of the cores;
/// - GPU hash rates and Redshift: the box's, scaled by its share of the GPUs; `gpu-mem`: per GPU,
///   0 without GPUs;
/// - `cpu-sysbench-single`, `wasm-score` (single-thread scores) and the network rates: the
///   box's, when the slice has at least one core (the network is shared, not sliced).
///
/// Every value is ≤ the box's, and the scaled ones add up to ≤ the box's over disjoint slices.
pub fn ask_benchmarks(
    box_bench: &Benchmarks,
    capacity: &Resources,
    slice: &Resources,
) -> Benchmarks {
    use Benchmark as B;
    let cores = u64::from(slice.cpu_cores);
    let box_cores = u64::from(capacity.cpu_cores);
    let gpus = u64::from(slice.gpus);
    let box_gpus = u64::from(capacity.gpus);
    let has_cpu = cores > 0;
    let mut b = Benchmarks::ZERO;
    b.set(
        B::CpuSysbenchMulti,
        scale(box_bench.get(B::CpuSysbenchMulti), cores, box_cores),
    );
    b.set(
        B::CpuSysbenchSingle,
        if has_cpu {
            box_bench.get(B::CpuSysbenchSingle)
        } else {
            0
        },
    );
    b.set(B::CpuCores, cores.min(box_bench.get(B::CpuCores)));
    b.set(B::RamSize, slice.ram_bytes.min(box_bench.get(B::RamSize)));
    b.set(
        B::StorageSize,
        slice.storage_bytes.min(box_bench.get(B::StorageSize)),
    );
    b.set(
        B::NetDownload,
        if has_cpu {
            box_bench.get(B::NetDownload)
        } else {
            0
        },
    );
    b.set(
        B::NetUpload,
        if has_cpu {
            box_bench.get(B::NetUpload)
        } else {
            0
        },
    );
    b.set(B::GpuCount, gpus.min(box_bench.get(B::GpuCount)));
    b.set(
        B::GpuMem,
        if gpus > 0 {
            box_bench.get(B::GpuMem)
        } else {
            0
        },
    );
    for hashrate in [B::GpuEthHashrate, B::GpuCashHashrate, B::GpuRedshift] {
        b.set(hashrate, scale(box_bench.get(hashrate), gpus, box_gpus));
    }
    b.set(
        B::WasmScore,
        if has_cpu {
            box_bench.get(B::WasmScore)
        } else {
            0
        },
    );
    b
}

/// The ASK order for a plan (id 0 until the chain gives it one).
pub fn ask_order(author: Address, spec: &PlanSpec, benchmarks: Benchmarks) -> Order {
    Order {
        id: 0,
        order_type: OrderType::Ask,
        author,
        counterparty: None,
        duration: spec.duration,
        price: spec.price,
        netflags: spec.netflags,
        identity_level: spec.identity_level,
        blacklist: None,
        tag: plan_tag(&spec.name),
        benchmarks,
    }
}

/// The order's tag: the plan's name, truncated to 32 bytes, zero-padded (for humans browsing
/// the market; nothing depends on it).
pub fn plan_tag(name: &str) -> B256 {
    let mut tag = [0u8; 32];
    let bytes = name.as_bytes();
    let n = bytes.len().min(32);
    tag[..n].copy_from_slice(&bytes[..n]);
    B256::from(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, cores: u32, ram: u64) -> PlanSpec {
        PlanSpec {
            name: name.into(),
            slice: Resources {
                cpu_cores: cores,
                ram_bytes: ram,
                storage_bytes: 0,
                gpus: 0,
            },
            netflags: NetFlags::OUTBOUND,
            price: 1,
            duration: 0,
            identity_level: IdentityLevel::Anonymous,
        }
    }

    #[test]
    fn admission_refuses_what_does_not_fit() {
        let cap = Resources {
            cpu_cores: 4,
            ram_bytes: 8 << 30,
            storage_bytes: 0,
            gpus: 0,
        };
        let mut p = Plans::new(cap, NetFlags::OUTBOUND);
        p.add(1, spec("a", 2, 4 << 30)).unwrap();
        assert!(matches!(
            p.add(2, spec("b", 3, 1)),
            Err(PlanError::Oversubscribed {
                resource: Resource::CpuCores,
                asked: 3,
                free: 2,
                ..
            })
        ));
        assert!(matches!(
            p.add(2, spec("a", 1, 1)),
            Err(PlanError::DuplicateName(_))
        ));
        let mut inbound = spec("c", 1, 1);
        inbound.netflags = NetFlags::INBOUND;
        assert!(matches!(p.add(3, inbound), Err(PlanError::NetFlags { .. })));
        assert!(matches!(
            p.add(3, spec("e", 0, 0)),
            Err(PlanError::EmptySlice(_))
        ));
        p.add(2, spec("b", 2, 4 << 30)).unwrap();
        assert_eq!(p.free(), Resources::default());
        p.remove(1).unwrap();
        assert_eq!(p.free().cpu_cores, 2);
        assert_eq!(p.remove(1), Err(PlanError::Unknown(1)));
    }

    #[test]
    fn tag_is_the_name() {
        assert_eq!(&plan_tag("small")[..5], b"small");
        assert_eq!(plan_tag(&"x".repeat(40))[31], b'x');
    }
}
