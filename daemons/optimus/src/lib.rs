//! Optimus, the worker's autotrader. Given the box's capacity, its plans (those with a deal are
//! never touched), the open bids from the DWH and the supplier's floor prices, it decides how to
//! split the box into ask plans and at what prices so as to earn the most, and re-plans only
//! when the market has moved past a threshold.
//!
//! - [`slice`](mod@slice): slices of the box and the smallest slice that serves a bid ([`min_slice`]),
//!   judged by the benchmarks the worker's ASK order will carry ([`Shaper`]).
//! - [`price`]: the supplier's floor (in SNM wei, or in USD at the oracle's rate), the market's
//!   unit price, percentiles.
//! - [`knapsack`]: the multi-dimensional knapsack, exact (branch and bound) and heuristic
//!   (greedy by density with local improvement).
//! - [`planner`]: one round: candidates from bids, the knapsack, the leftover ask.
//! - [`step`]: the state machine the worker drives: `step(capacity, plans, market, now)`
//!   returns `Cancel`/`Place` actions.
//!
//! Pure: no I/O, no clock, no randomness. Whether a bid and an ask match is decided only by
//! `sonm_market::check_match`.

mod error;
pub mod knapsack;
pub mod planner;
pub mod price;
pub mod slice;
pub mod step;

pub use error::{ConfigError, OptimusError};
pub use planner::{
    Candidate, Config, MAX_EXACT_LIMIT, Market, Plan, Proposal, Thresholds, candidates, propose,
};
pub use price::{Floor, UsdFloor};
pub use slice::{ProportionalShaper, Shaper, Slice, min_slice};
pub use step::{Action, ActivePlan, Decision, Optimus, Outcome, PlanId, Trigger};
