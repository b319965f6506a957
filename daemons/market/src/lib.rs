//! The SONM market model, shared by every daemon: orders and their benchmark vectors,
//! deals and their billing arithmetic, the match rule, and an order book that finds
//! the best matches for an order without scanning the book.
//!
//! Pure: no I/O, no clock, no randomness. Daemons feed it what they read from the
//! chain and the DWH.

mod benchmarks;
mod book;
mod deal;
mod error;
mod matching;
mod order;
mod stats;

pub use alloy_primitives::{Address, B256};
pub use benchmarks::{BENCHMARK_COUNT, Benchmark, Benchmarks, Unit};
pub use book::{DEFAULT_LEAF_CAPACITY, OrderBook};
pub use deal::{Bill, Deal, DealId, DealStatus};
pub use error::{BookError, OrderError, ParseBenchmarkError};
pub use matching::{
    MatchContext, Mismatch, OrderFields, StaticContext, check_match, durations_agree, matches,
    scan_best_asks, scan_best_bids,
};
pub use order::{
    IdentityLevel, MAX_BILLING_PERIOD, MAX_DURATION, MAX_PRICE, NetFlags, Order, OrderId,
    OrderType, SPOT_BILLING_PERIOD, billing_period, frozen_sum,
};
pub use stats::{Bucket, Class, ClassStats, MarketStats, PriceSummary};
