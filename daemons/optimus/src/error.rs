//! Typed errors of the autotrader.

use thiserror::Error;

use crate::slice::Slice;

/// A configuration Optimus refuses to run with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("undercut of {0} basis points is above 10,000 (100%)")]
    Undercut(u32),
    #[error("fallback percentile {0} is above 100")]
    Percentile(u8),
    #[error(
        "exact solving up to {0} candidates could take hours; at most {max}",
        max = crate::planner::MAX_EXACT_LIMIT
    )]
    ExactLimit(usize),
}

/// Why a planning step could not run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptimusError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("plans with deals use {used:?}, more than the capacity {capacity:?}")]
    DealsExceedCapacity { used: Slice, capacity: Slice },
    #[error("the plans' slices overflow when added up")]
    Overflow,
}
