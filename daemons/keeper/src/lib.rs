//! The SONM gate keeper: moves SNM between the main chain and the SONM chain. It follows each
//! chain's Gate, signs every confirmed `Locked` transfer with its keeper key, serves its
//! signatures to the other keepers and fetches theirs, and pays the transfer on the other
//! chain once a threshold of keepers has signed, taking turns with the other keepers.
//!
//! - [`core`]: the decisions, a pure state machine (no I/O, time as an input);
//! - [`chain`]: a chain's Gate (confirmed events in batches, `paid`, `pay`);
//! - [`peer`]: the HTTP/JSON exchange of signatures between keepers;
//! - [`store`]: LMDB (checkpoints, locks, own signatures, paid marks);
//! - [`daemon`]: configuration and wiring;
//! - [`testnet`]: the test harness (two anvils, the contracts, keepers in process), shared
//!   with other packages' tests.

pub mod chain;
pub mod core;
pub mod daemon;
pub mod peer;
pub mod store;
pub mod testnet;
