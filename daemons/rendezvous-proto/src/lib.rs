//! The rendezvous protocol with no I/O: what `sonm-rendezvous` and its clients say to each
//! other, and the server's decisions, as plain values and a state machine driven by the caller's
//! clock. Sockets, tasks and randomness live in `sonm-rendezvous`.
//!
//! - [`msg`]: requests, responses, notifications; the signed worker [`Record`].
//! - [`Server`]: records with expiry, replay protection, per-peer token buckets, punch
//!   introductions and relay consent.
//! - [`datagram`]: the small non-QUIC datagrams sent from a QUIC socket (punch, relay bind).
//! - [`TokenBucket`]: the rate limiter, shared with the relay's data path.

pub mod bucket;
pub mod datagram;
pub mod msg;
pub mod server;

pub use alloy_primitives::Address;
pub use bucket::{Rate, TokenBucket};
pub use datagram::Control;
pub use msg::{
    ALPN, Candidates, Notify, NotifyAck, PunchNotify, Record, RecordError, Refusal, RelayAllocated,
    Request, Response, SignedRecord, TOKEN_LEN,
};
pub use server::{Ctx, Effect, Limits, Outcome, Server, Stats};
