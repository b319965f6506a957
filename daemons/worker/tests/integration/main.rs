//! The crate's integration tests, one module per file, linked into one binary: each test
//! binary links the crate's whole dependency tree, so one binary instead of one per file
//! saves CI most of its link time and gigabytes of disk.

mod admin;
mod autotrader;
mod common;
mod containers;
mod e2e;
mod process;
mod props;
mod signed;
mod transfer;
