//! The crate's integration tests, one module per file, linked into one binary: each test
//! binary links the crate's whole dependency tree, so one binary instead of one per file
//! saves CI most of its link time and gigabytes of disk.

mod blacklist;
mod fresh_deal;
mod insolvent;
mod rendezvous_restart;
mod rpc_failover;
mod signed_deal;
mod task_transfer;
mod worker_admin;
mod worker_kill9;
