//! Fixtures shared by the tests: a box, its shaper, bids.

#![allow(dead_code, unreachable_pub)]

use sonm_market::{
    Address, B256, Benchmark, Benchmarks, IdentityLevel, NetFlags, Order, OrderType,
};
use sonm_optimus::{Config, Floor, ProportionalShaper, Slice};

pub const GIB: u64 = 1 << 30;
pub const SUPPLIER: Address = Address::repeat_byte(0x5u8);

/// A box of `cores` cores, `ram_gib` GiB, `storage_gib` GiB of disk and `gpus` GPUs, with
/// benchmarks in proportion.
pub fn shaper(cores: u32, ram_gib: u64, storage_gib: u64, gpus: u32) -> ProportionalShaper {
    let capacity = Slice {
        cpu_cores: cores,
        ram_bytes: ram_gib * GIB,
        storage_bytes: storage_gib * GIB,
        gpus,
    };
    let box_benchmarks = Benchmarks::ZERO
        .with(Benchmark::CpuSysbenchMulti, u64::from(cores) * 1_000)
        .with(Benchmark::CpuSysbenchSingle, 1_000)
        .with(Benchmark::CpuCores, u64::from(cores))
        .with(Benchmark::RamSize, ram_gib * GIB)
        .with(Benchmark::StorageSize, storage_gib * GIB)
        .with(Benchmark::NetDownload, 100_000_000)
        .with(Benchmark::NetUpload, 100_000_000)
        .with(Benchmark::GpuCount, u64::from(gpus))
        .with(Benchmark::GpuMem, if gpus > 0 { 8 * GIB } else { 0 })
        .with(Benchmark::GpuEthHashrate, u64::from(gpus) * 30_000_000)
        .with(Benchmark::WasmScore, 500);
    ProportionalShaper {
        box_benchmarks,
        capacity,
    }
}

/// A floor of `per_core_hour` wei per core-hour and a tenth of that per GiB-hour of RAM.
pub fn config(per_core_hour: u128) -> Config {
    Config::new(
        SUPPLIER,
        NetFlags::OUTBOUND.union(NetFlags::INBOUND),
        Floor {
            core_hour: per_core_hour,
            ram_gib_hour: per_core_hour / 10,
            storage_gib_hour: 0,
            gpu_hour: per_core_hour * 10,
        },
    )
}

/// A bid for `cores` cores, `ram_gib` GiB and `gpus` GPUs at `price` wei/s.
pub fn bid(id: u64, cores: u64, ram_gib: u64, gpus: u64, price: u128, duration: u64) -> Order {
    Order {
        id,
        order_type: OrderType::Bid,
        author: Address::with_last_byte((id % 200) as u8 + 16),
        counterparty: None,
        duration,
        price,
        netflags: NetFlags::OUTBOUND,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: Benchmarks::ZERO
            .with(Benchmark::CpuCores, cores)
            .with(Benchmark::RamSize, ram_gib * GIB)
            .with(Benchmark::GpuCount, gpus),
    }
}
