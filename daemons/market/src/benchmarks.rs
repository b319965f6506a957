//! The benchmark vector: what a box can do, in the order the chain stores it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{OrderError, ParseBenchmarkError};

/// Number of benchmarks in every order's vector.
pub const BENCHMARK_COUNT: usize = 13;

/// One benchmark of the vector. The discriminant is its index on chain; serde uses
/// the same names as [`Benchmark::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum Benchmark {
    CpuSysbenchMulti = 0,
    CpuSysbenchSingle = 1,
    CpuCores = 2,
    RamSize = 3,
    StorageSize = 4,
    NetDownload = 5,
    NetUpload = 6,
    GpuCount = 7,
    GpuMem = 8,
    GpuEthHashrate = 9,
    GpuCashHashrate = 10,
    GpuRedshift = 11,
    WasmScore = 12,
}

/// What a benchmark's number counts, which decides the units a human may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A plain count (cores, GPUs).
    Count,
    /// A score without unit (sysbench events/s, Redshift, wasm-score); SI prefixes allowed.
    Score,
    /// Bytes: `KB`/`MB`/`GB`/`TB` are powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` of 1024.
    Bytes,
    /// Bits per second: `kbit`, `Mbit`, `Gbit` (also `Mbps`, `Mbit/s`).
    BitsPerSecond,
    /// Hashes per second: `kH/s`, `MH/s`, `GH/s`.
    HashesPerSecond,
}

impl Benchmark {
    /// Every benchmark, in vector order.
    pub const ALL: [Benchmark; BENCHMARK_COUNT] = [
        Benchmark::CpuSysbenchMulti,
        Benchmark::CpuSysbenchSingle,
        Benchmark::CpuCores,
        Benchmark::RamSize,
        Benchmark::StorageSize,
        Benchmark::NetDownload,
        Benchmark::NetUpload,
        Benchmark::GpuCount,
        Benchmark::GpuMem,
        Benchmark::GpuEthHashrate,
        Benchmark::GpuCashHashrate,
        Benchmark::GpuRedshift,
        Benchmark::WasmScore,
    ];

    /// Index in the vector.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The benchmark at `index`, if there is one.
    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    /// The name people and config files use.
    pub const fn name(self) -> &'static str {
        match self {
            Benchmark::CpuSysbenchMulti => "cpu-sysbench-multi",
            Benchmark::CpuSysbenchSingle => "cpu-sysbench-single",
            Benchmark::CpuCores => "cpu-cores",
            Benchmark::RamSize => "ram-size",
            Benchmark::StorageSize => "storage-size",
            Benchmark::NetDownload => "net-download",
            Benchmark::NetUpload => "net-upload",
            Benchmark::GpuCount => "gpu-count",
            Benchmark::GpuMem => "gpu-mem",
            Benchmark::GpuEthHashrate => "gpu-eth-hashrate",
            Benchmark::GpuCashHashrate => "gpu-cash-hashrate",
            Benchmark::GpuRedshift => "gpu-redshift",
            Benchmark::WasmScore => "wasm-score",
        }
    }

    /// The benchmark called `name` (exact, lower case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The unit of its value.
    pub const fn unit(self) -> Unit {
        match self {
            Benchmark::CpuCores | Benchmark::GpuCount => Unit::Count,
            Benchmark::RamSize | Benchmark::StorageSize | Benchmark::GpuMem => Unit::Bytes,
            Benchmark::NetDownload | Benchmark::NetUpload => Unit::BitsPerSecond,
            Benchmark::GpuEthHashrate | Benchmark::GpuCashHashrate => Unit::HashesPerSecond,
            Benchmark::CpuSysbenchMulti
            | Benchmark::CpuSysbenchSingle
            | Benchmark::GpuRedshift
            | Benchmark::WasmScore => Unit::Score,
        }
    }
}

impl fmt::Display for Benchmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const TI: u64 = 1 << 40;
const PI: u64 = 1 << 50;
const K: u64 = 1_000;
const M: u64 = 1_000_000;
const G: u64 = 1_000_000_000;
const T: u64 = 1_000_000_000_000;
const P: u64 = 1_000_000_000_000_000;

impl Unit {
    /// Suffixes accepted for this unit, largest first so that formatting picks the
    /// biggest one that divides the value exactly. Matched case-insensitively: the
    /// unit is fixed by the benchmark, so `gb` on `ram-size` can only mean bytes.
    fn suffixes(self) -> &'static [(&'static str, u64)] {
        match self {
            Unit::Count | Unit::Score => &[("P", P), ("T", T), ("G", G), ("M", M), ("k", K)],
            Unit::Bytes => &[
                ("PiB", PI),
                ("TiB", TI),
                ("GiB", GI),
                ("MiB", MI),
                ("KiB", KI),
                ("PB", P),
                ("TB", T),
                ("GB", G),
                ("MB", M),
                ("kB", K),
                ("B", 1),
                ("Pi", PI),
                ("Ti", TI),
                ("Gi", GI),
                ("Mi", MI),
                ("Ki", KI),
            ],
            Unit::BitsPerSecond => &[
                ("Tbit/s", T),
                ("Gbit/s", G),
                ("Mbit/s", M),
                ("kbit/s", K),
                ("bit/s", 1),
                ("Tbit", T),
                ("Gbit", G),
                ("Mbit", M),
                ("kbit", K),
                ("bit", 1),
                ("Tbps", T),
                ("Gbps", G),
                ("Mbps", M),
                ("kbps", K),
                ("bps", 1),
            ],
            Unit::HashesPerSecond => &[
                ("TH/s", T),
                ("GH/s", G),
                ("MH/s", M),
                ("kH/s", K),
                ("H/s", 1),
                ("TH", T),
                ("GH", G),
                ("MH", M),
                ("kH", K),
                ("H", 1),
            ],
        }
    }

    /// Parses `text` ("8GiB", "1.5 TB", "100Mbit", "4") into the base unit. Fractions are
    /// allowed and rounded down to a whole base unit.
    pub fn parse(self, text: &str) -> Result<u64, &'static str> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let suffix = suffix.trim();
        let multiplier = if suffix.is_empty() {
            1
        } else {
            self.suffixes()
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(suffix))
                .map(|&(_, m)| m)
                .ok_or("unknown unit")?
        };
        let number: String = number.chars().filter(|&c| c != '_').collect();
        let (int, frac) = number.split_once('.').unwrap_or((&number, ""));
        if int.is_empty() && frac.is_empty() {
            return Err("no number");
        }
        if frac.contains('.') {
            return Err("more than one decimal point");
        }
        if frac.len() > 18 {
            return Err("too many decimal places");
        }
        let parse = |s: &str| -> Result<u128, &'static str> {
            if s.is_empty() {
                Ok(0)
            } else {
                s.parse::<u128>().map_err(|_| "number too large")
            }
        };
        let whole = parse(int)?
            .checked_mul(u128::from(multiplier))
            .ok_or("number too large")?;
        let scale = 10u128.pow(frac.len() as u32);
        // frac < 10^18 and multiplier < 2^64, so this product fits in u128.
        let fraction = parse(frac)? * u128::from(multiplier) / scale;
        u64::try_from(whole + fraction).map_err(|_| "number too large")
    }

    /// Formats `value` in the unit that gives the shortest exact number
    /// (`8GiB`, `12GB`, `100Mbit/s`); a bare number when none divides it.
    pub fn format(self, value: u64) -> String {
        let canonical = |s: &str| match self {
            Unit::Bytes => s.ends_with('B'),
            Unit::BitsPerSecond => s.ends_with("bit/s"),
            Unit::HashesPerSecond => s.ends_with("/s"),
            Unit::Count | Unit::Score => true,
        };
        self.suffixes()
            .iter()
            .filter(|&&(s, m)| m > 1 && canonical(s) && value != 0 && value.is_multiple_of(m))
            .min_by_key(|&&(_, m)| value / m)
            .map(|&(s, m)| format!("{}{}", value / m, s))
            .unwrap_or_else(|| value.to_string())
    }
}

/// The benchmark vector of an order or a box. Serialized as an array of
/// [`BENCHMARK_COUNT`] numbers (the chain's layout); humans write
/// `"cpu-cores=4 ram-size=8GiB"` (see [`FromStr`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<u64>", into = "Vec<u64>")]
pub struct Benchmarks(pub [u64; BENCHMARK_COUNT]);

impl Benchmarks {
    /// All zero: a bid that asks for nothing in particular.
    pub const ZERO: Benchmarks = Benchmarks([0; BENCHMARK_COUNT]);

    /// A vector from a slice, which must have exactly [`BENCHMARK_COUNT`] values.
    pub fn from_slice(values: &[u64]) -> Result<Self, OrderError> {
        <[u64; BENCHMARK_COUNT]>::try_from(values)
            .map(Benchmarks)
            .map_err(|_| OrderError::BenchmarkCount {
                expected: BENCHMARK_COUNT,
                got: values.len(),
            })
    }

    pub fn get(&self, benchmark: Benchmark) -> u64 {
        self.0[benchmark.index()]
    }

    pub fn set(&mut self, benchmark: Benchmark, value: u64) {
        self.0[benchmark.index()] = value;
    }

    /// Builder form of [`Benchmarks::set`].
    pub fn with(mut self, benchmark: Benchmark, value: u64) -> Self {
        self.set(benchmark, value);
        self
    }

    /// True when every value is at least the other's: an ask with these
    /// benchmarks satisfies a bid asking for `other`.
    pub fn dominates(&self, other: &Benchmarks) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a >= b)
    }

    /// The first benchmark where `self` falls short of `other`.
    pub fn first_shortfall(&self, other: &Benchmarks) -> Option<Benchmark> {
        (0..BENCHMARK_COUNT)
            .find(|&i| self.0[i] < other.0[i])
            .and_then(Benchmark::from_index)
    }

    pub fn as_array(&self) -> &[u64; BENCHMARK_COUNT] {
        &self.0
    }
}

impl TryFrom<Vec<u64>> for Benchmarks {
    type Error = OrderError;
    fn try_from(values: Vec<u64>) -> Result<Self, Self::Error> {
        Benchmarks::from_slice(&values)
    }
}

impl From<Benchmarks> for Vec<u64> {
    fn from(b: Benchmarks) -> Self {
        b.0.to_vec()
    }
}

impl fmt::Debug for Benchmarks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Benchmarks({self})")
    }
}

/// Lists the non-zero benchmarks as `name=value` in human units; `-` when all are zero.
impl fmt::Display for Benchmarks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for b in Benchmark::ALL {
            let v = self.get(b);
            if v != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{}={}", b.name(), b.unit().format(v))?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// Parses `name=value` pairs separated by spaces or commas, e.g.
/// `"cpu-cores=4, ram-size=8GiB gpu-mem=12GB"`. Unnamed benchmarks are 0; `-` or an
/// empty string is the zero vector.
impl FromStr for Benchmarks {
    type Err = ParseBenchmarkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Benchmarks::ZERO;
        let mut seen = [false; BENCHMARK_COUNT];
        for pair in s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty() && *p != "-")
        {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| ParseBenchmarkError::NotAPair(pair.to_owned()))?;
            let benchmark = Benchmark::from_name(name.trim())
                .ok_or_else(|| ParseBenchmarkError::UnknownBenchmark(name.trim().to_owned()))?;
            if std::mem::replace(&mut seen[benchmark.index()], true) {
                return Err(ParseBenchmarkError::Duplicate(benchmark));
            }
            let parsed =
                benchmark
                    .unit()
                    .parse(value)
                    .map_err(|reason| ParseBenchmarkError::BadValue {
                        benchmark,
                        value: value.to_owned(),
                        reason,
                    })?;
            out.set(benchmark, parsed);
        }
        Ok(out)
    }
}
