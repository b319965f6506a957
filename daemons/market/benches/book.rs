//! The order book on a market-sized book: the index against the brute-force scan in
//! the same run, the book's memory, and the cost of updates.
//!
//! `cargo bench -p sonm-market` prints a table (per-query percentiles over every bid)
//! and then runs criterion's statistics on the hot operations.
//! `SONM_BENCH_ASKS` sets the book size (default 1,000,000).

#![allow(unsafe_code)] // The counting allocator below; nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sonm_market::{
    Address, B256, BENCHMARK_COUNT, Benchmark, Benchmarks, IdentityLevel, NetFlags, Order,
    OrderBook, OrderType, StaticContext, scan_best_asks,
};

/// Counts live heap bytes, so the book's memory is measured, not estimated.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only keeps a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const K: usize = 10;
const BIDS: usize = 10_000;
/// Bids also timed by brute force (each scan reads the whole book).
const BRUTE_SAMPLE: usize = 100;

const GIB: f64 = (1u64 << 30) as f64;
const GB: f64 = 1e9;
const MBIT: f64 = 1e6;
const MHS: f64 = 1e6;
/// Price scale: wei per second for one "capacity unit" (roughly a core-hour's worth).
const UNIT_PRICE: f64 = 2e11;

/// A hardware class: the typical benchmark vector of a kind of box, and its price.
#[derive(Clone)]
struct Class {
    bench: [f64; BENCHMARK_COUNT],
    price: f64,
    weight: u32,
}

fn class(cores: f64, single: f64, ram_gib: f64, storage_gb: f64, net_mbit: f64) -> Class {
    let mut b = [0.0; BENCHMARK_COUNT];
    b[Benchmark::CpuSysbenchSingle.index()] = single;
    b[Benchmark::CpuSysbenchMulti.index()] = single * cores * 0.9;
    b[Benchmark::CpuCores.index()] = cores;
    b[Benchmark::RamSize.index()] = ram_gib * GIB;
    b[Benchmark::StorageSize.index()] = storage_gb * GB;
    b[Benchmark::NetDownload.index()] = net_mbit * MBIT;
    b[Benchmark::NetUpload.index()] = net_mbit * MBIT * 0.5;
    b[Benchmark::WasmScore.index()] = single * 2.0;
    let capacity = cores * single / 1000.0 + ram_gib / 4.0 + storage_gb / 500.0;
    Class {
        bench: b,
        price: capacity * UNIT_PRICE,
        weight: 1,
    }
}

fn gpu(mut c: Class, count: f64, mem_gb: f64, eth_mhs: f64) -> Class {
    c.bench[Benchmark::GpuCount.index()] = count;
    c.bench[Benchmark::GpuMem.index()] = mem_gb * GB;
    c.bench[Benchmark::GpuEthHashrate.index()] = count * eth_mhs * MHS;
    c.bench[Benchmark::GpuCashHashrate.index()] = count * eth_mhs * 0.02 * MHS;
    c.bench[Benchmark::GpuRedshift.index()] = count * mem_gb * 40.0;
    c.price += count * mem_gb / 2.0 * UNIT_PRICE;
    c
}

/// A few dozen kinds of box: edge boards, CPU servers, GPU rigs.
fn classes() -> Vec<Class> {
    let mut out = Vec::new();
    for (ram, storage) in [(1.0, 16.0), (2.0, 32.0), (4.0, 64.0), (8.0, 128.0)] {
        for (cores, single) in [(4.0, 350.0), (8.0, 600.0)] {
            let mut c = class(cores, single, ram, storage, 100.0);
            c.weight = 4; // edge boards are many
            out.push(c);
        }
    }
    for cores in [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0] {
        for (ram_per_core, storage) in [(2.0, 250.0), (4.0, 1000.0), (8.0, 4000.0)] {
            let mut c = class(cores, 1100.0, cores * ram_per_core, storage, 1000.0);
            c.weight = 3;
            out.push(c);
        }
    }
    for (count, mem, eth) in [
        (1.0, 8.0, 30.0),
        (1.0, 12.0, 45.0),
        (2.0, 16.0, 60.0),
        (4.0, 24.0, 95.0),
        (6.0, 8.0, 30.0),
        (8.0, 12.0, 45.0),
        (8.0, 24.0, 120.0),
        (8.0, 80.0, 125.0),
    ] {
        out.push(gpu(class(8.0, 900.0, 32.0, 500.0, 1000.0), count, mem, eth));
    }
    out
}

fn pick<'a>(rng: &mut SmallRng, classes: &'a [Class]) -> &'a Class {
    let total: u32 = classes.iter().map(|c| c.weight).sum();
    let mut r = rng.random_range(0..total);
    for c in classes {
        if r < c.weight {
            return c;
        }
        r -= c.weight;
    }
    unreachable!()
}

fn noisy(rng: &mut SmallRng, v: f64, spread: f64) -> u64 {
    (v * (1.0 + spread * rng.random_range(-1.0..1.0))).round() as u64
}

fn flags(rng: &mut SmallRng, p_out: f64, p_in: f64, p_pub: f64) -> NetFlags {
    let mut f = NetFlags::NONE;
    for (flag, p) in [
        (NetFlags::OUTBOUND, p_out),
        (NetFlags::INBOUND, p_in),
        (NetFlags::PUBLIC_IP, p_pub),
    ] {
        if rng.random_bool(p) {
            f = f.union(flag);
        }
    }
    f
}

fn base(id: u64, order_type: OrderType, author: u64) -> Order {
    Order {
        id,
        order_type,
        author: Address::left_padding_from(&author.to_be_bytes()),
        counterparty: None,
        duration: 0,
        price: 0,
        netflags: NetFlags::NONE,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::ZERO,
        benchmarks: Benchmarks::ZERO,
    }
}

const COUNTS: [Benchmark; 2] = [Benchmark::CpuCores, Benchmark::GpuCount];

fn realistic_ask(rng: &mut SmallRng, classes: &[Class], id: u64) -> Order {
    let c = pick(rng, classes);
    let mut o = base(id, OrderType::Ask, rng.random_range(0..50_000));
    for b in Benchmark::ALL {
        let v = c.bench[b.index()];
        let spread = if COUNTS.contains(&b) { 0.0 } else { 0.1 };
        o.benchmarks.set(b, noisy(rng, v, spread));
    }
    o.price = u128::from(noisy(rng, c.price, 0.2));
    o.duration = if rng.random_bool(0.6) {
        0
    } else {
        [3600, 86_400, 7 * 86_400, 30 * 86_400][rng.random_range(0..4)]
    };
    o.netflags = flags(rng, 0.95, 0.4, 0.15);
    o.identity_level = match rng.random_range(0..100) {
        0..90 => IdentityLevel::Anonymous,
        90..98 => IdentityLevel::Registered,
        _ => IdentityLevel::Identified,
    };
    if rng.random_bool(0.005) {
        o.counterparty = Some(Address::repeat_byte(0xcc));
    }
    o
}

fn realistic_bid(rng: &mut SmallRng, classes: &[Class], id: u64) -> Order {
    let c = pick(rng, classes);
    let mut o = base(id, OrderType::Bid, 1_000_000 + rng.random_range(0..10_000));
    let wanted: Vec<Benchmark> = Benchmark::ALL
        .into_iter()
        .filter(|b| c.bench[b.index()] > 0.0)
        .collect();
    let n = rng.random_range(2..=6).min(wanted.len());
    for _ in 0..n {
        let b = wanted[rng.random_range(0..wanted.len())];
        let v = c.bench[b.index()] * rng.random_range(0.5..1.0);
        o.benchmarks.set(b, v as u64);
    }
    o.price = (c.price * rng.random_range(0.9..1.6)) as u128;
    o.duration = if rng.random_bool(0.6) {
        0
    } else {
        [3600, 86_400][rng.random_range(0..2)]
    };
    o.netflags = flags(rng, 0.8, 0.2, 0.05);
    o
}

/// Upper ends of the uniform adversarial market, per benchmark.
fn maxima(classes: &[Class]) -> [f64; BENCHMARK_COUNT] {
    let mut m = [0.0f64; BENCHMARK_COUNT];
    for c in classes {
        for (i, v) in c.bench.iter().enumerate() {
            m[i] = m[i].max(*v);
        }
    }
    m
}

fn uniform_ask(rng: &mut SmallRng, max: &[f64; BENCHMARK_COUNT], id: u64) -> Order {
    let mut o = base(id, OrderType::Ask, rng.random_range(0..50_000));
    for b in Benchmark::ALL {
        o.benchmarks
            .set(b, (max[b.index()] * rng.random::<f64>()) as u64);
    }
    o.price = rng.random_range(1..1_000_000_000_000_000u128);
    o.netflags = NetFlags::try_from(rng.random_range(0..8u64)).unwrap();
    o
}

fn uniform_bid(rng: &mut SmallRng, max: &[f64; BENCHMARK_COUNT], id: u64) -> Order {
    let mut o = base(id, OrderType::Bid, 1_000_000 + rng.random_range(0..10_000));
    // Every benchmark constrained; about one ask in a thousand qualifies.
    for b in Benchmark::ALL {
        o.benchmarks
            .set(b, (max[b.index()] * rng.random_range(0.0..0.75)) as u64);
    }
    o.price = rng.random_range(1..1_000_000_000_000_000u128);
    o
}

struct Stats {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: *times.last().unwrap(),
    }
}

fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

struct Market {
    name: &'static str,
    asks: Vec<Order>,
    bids: Vec<Order>,
}

fn measure(market: &Market, ctx: &StaticContext) -> OrderBook {
    let before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let leaf: usize = std::env::var("SONM_BENCH_LEAF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(sonm_market::DEFAULT_LEAF_CAPACITY);
    let mut book = OrderBook::with_leaf_capacity(leaf);
    for a in &market.asks {
        book.insert(a).unwrap();
    }
    let build = start.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let n = market.asks.len();

    // Every bid through the index, each timed.
    let mut index_times = Vec::with_capacity(market.bids.len());
    let mut found = 0usize;
    for bid in &market.bids {
        let t = Instant::now();
        let r = black_box(book.best_asks(bid, K, ctx).unwrap());
        index_times.push(t.elapsed());
        found += r.len();
    }
    // A sample through brute force; the index's times for the same bids come from
    // the loop above, where the book is warm as it is in a running daemon (timing
    // them right after a scan would measure the caches the scan flushed).
    let sample = &market.bids[..BRUTE_SAMPLE.min(market.bids.len())];
    let index_sample = index_times[..sample.len()].to_vec();
    let mut brute_times = Vec::new();
    for bid in sample {
        let t = Instant::now();
        let want = black_box(scan_best_asks(&market.asks, bid, K, ctx));
        brute_times.push(t.elapsed());
        let got = book.best_asks(bid, K, ctx).unwrap();
        assert_eq!(
            got, want,
            "index and brute force disagree on bid {}",
            bid.id
        );
    }
    // Updates: cancel a spread of orders, then insert them again.
    let churn: Vec<&Order> = market.asks.iter().step_by((n / 10_000).max(1)).collect();
    let t = Instant::now();
    for o in &churn {
        book.cancel(o.id).unwrap();
    }
    let cancel = t.elapsed() / churn.len() as u32;
    let t = Instant::now();
    for o in &churn {
        book.insert(o).unwrap();
    }
    let insert = t.elapsed() / churn.len() as u32;

    let idx = stats(index_times);
    let brute = stats(brute_times);
    let idx_s = stats(index_sample);
    println!(
        "\n## {} market: {} asks, {} bids, k = {K}",
        market.name,
        n,
        market.bids.len()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| index match, all bids: p50 / p90 / p99 / max (µs) | {} / {} / {} / {} |",
        us(idx.p50),
        us(idx.p90),
        us(idx.p99),
        us(idx.max)
    );
    println!(
        "| brute force, {} bids: p50 / p99 (µs) | {} / {} |",
        sample.len(),
        us(brute.p50),
        us(brute.p99)
    );
    println!(
        "| index on the same {} bids: p50 / p99 (µs) | {} / {} |",
        sample.len(),
        us(idx_s.p50),
        us(idx_s.p99)
    );
    println!(
        "| speed-up at p50 (brute / index, same bids) | {:.0}× |",
        brute.p50.as_secs_f64() / idx_s.p50.as_secs_f64()
    );
    println!(
        "| matches found per bid (mean, of {K}) | {:.2} |",
        found as f64 / market.bids.len() as f64
    );
    println!(
        "| book memory, index included | {:.1} MiB, {} B/order |",
        bytes as f64 / (1 << 20) as f64,
        bytes / n as isize
    );
    println!(
        "| build by inserts | {:.2} s ({:.2} µs/order) |",
        build.as_secs_f64(),
        build.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "| insert / cancel (µs, mean of {}) | {} / {} |",
        churn.len(),
        us(insert),
        us(cancel)
    );
    println!("| tree depth | {} |", book.depth());
    book
}

/// Criterion's statistics for one search after another, cycling through the bids.
fn bench_matching(
    c: &mut Criterion,
    label: &str,
    market: &Market,
    book: &OrderBook,
    ctx: &StaticContext,
) {
    let mut i = 0;
    c.bench_function(&format!("{label}/best_asks k={K}"), |b| {
        b.iter(|| {
            i = (i + 1) % market.bids.len();
            book.best_asks(&market.bids[i], K, ctx).unwrap()
        })
    });
}

fn main() {
    let n: usize = std::env::var("SONM_BENCH_ASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let classes = classes();
    let mut rng = SmallRng::seed_from_u64(2018);
    let ctx = StaticContext::default();

    let realistic = Market {
        name: "realistic",
        asks: (0..n as u64)
            .map(|i| realistic_ask(&mut rng, &classes, i + 1))
            .collect(),
        bids: (0..BIDS as u64)
            .map(|i| realistic_bid(&mut rng, &classes, 10_000_000 + i))
            .collect(),
    };
    println!(
        "# order book benchmark ({} hardware classes)",
        classes.len()
    );
    let mut book = measure(&realistic, &ctx);

    let mut c = Criterion::default().configure_from_args();
    bench_matching(&mut c, "realistic", &realistic, &book, &ctx);
    let mut j = 0;
    c.bench_function("realistic/cancel+insert", |b| {
        b.iter(|| {
            j = (j + 7919) % realistic.asks.len();
            let o = &realistic.asks[j];
            book.cancel(o.id).unwrap();
            book.insert(o).unwrap();
        })
    });
    drop(book);
    drop(realistic);

    let max = maxima(&classes);
    let adversarial = Market {
        name: "adversarial (uniform asks, bids on all 13 benchmarks)",
        asks: (0..n as u64)
            .map(|i| uniform_ask(&mut rng, &max, i + 1))
            .collect(),
        bids: (0..BIDS as u64)
            .map(|i| uniform_bid(&mut rng, &max, 10_000_000 + i))
            .collect(),
    };
    let book = measure(&adversarial, &ctx);
    bench_matching(&mut c, "adversarial", &adversarial, &book, &ctx);
    c.final_summary();
}
