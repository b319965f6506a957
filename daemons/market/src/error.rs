//! Typed errors of the market model.

use thiserror::Error;

use crate::benchmarks::Benchmark;
use crate::order::OrderId;

/// Why an order (or one of its parts) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderError {
    #[error("benchmark vector has {got} values, expected {expected}")]
    BenchmarkCount { expected: usize, got: usize },
    #[error("a bid must offer a price above zero")]
    ZeroBidPrice,
    #[error("unknown netflag bits {bits:#x} (known: outbound=0x1, inbound=0x2, public-ip=0x4)")]
    UnknownNetFlags { bits: u64 },
    #[error("identity level {0} does not exist (0 anonymous .. 3 professional)")]
    UnknownIdentityLevel(u64),
    #[error("unknown order type {0} (1 bid, 2 ask)")]
    UnknownOrderType(u64),
    #[error("price {price} wei/s is above the chain's limit of 2^96-1")]
    PriceTooHigh { price: u128 },
    #[error("duration {0} s is above the chain's limit of 2^40-1")]
    DurationTooLong(u64),
}

/// Why a human benchmark string such as `ram-size=8GiB` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseBenchmarkError {
    #[error("`{0}` is not of the form name=value")]
    NotAPair(String),
    #[error(
        "unknown benchmark `{0}` (known: cpu-sysbench-multi, cpu-sysbench-single, cpu-cores, \
         ram-size, storage-size, net-download, net-upload, gpu-count, gpu-mem, gpu-eth-hashrate, \
         gpu-cash-hashrate, gpu-redshift, wasm-score)"
    )]
    UnknownBenchmark(String),
    #[error("benchmark {0} is given twice")]
    Duplicate(Benchmark),
    #[error("benchmark {benchmark}: cannot read `{value}`: {reason}")]
    BadValue {
        benchmark: Benchmark,
        value: String,
        reason: &'static str,
    },
}

/// Why the order book refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BookError {
    #[error("order {0} is already in the book")]
    Duplicate(OrderId),
    #[error("order {0} is not in the book")]
    Unknown(OrderId),
    #[error("order {id} is invalid: {source}")]
    Invalid {
        id: OrderId,
        #[source]
        source: OrderError,
    },
    #[error("the query order {0} is of the wrong type for this search")]
    WrongQueryType(OrderId),
}
