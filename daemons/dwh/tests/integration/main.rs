//! The crate's integration tests, one module per file, linked into one binary: each test
//! binary links the crate's whole dependency tree, so one binary instead of one per file
//! saves CI most of its link time and gigabytes of disk.

mod chain;
mod common;
mod core;
mod signed;
