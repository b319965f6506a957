//! Shared by the integration tests: an anvil per test and a way to run async code.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;

use alloy::providers::DynProvider;
use alloy::transports::http::reqwest::Url;
use sonm_contracts::anvil::Anvil;

/// Runs a future the way the daemons do: smol on the outside, a tokio reactor for
/// reqwest through async-compat.
pub fn block_on<F: Future>(future: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(future))
}

/// A fresh anvil, or a panic that says how to install it.
pub fn anvil(args: &[&str]) -> Anvil {
    Anvil::spawn_with(args).unwrap_or_else(|e| panic!("{e}"))
}

pub fn url(anvil: &Anvil) -> Url {
    anvil.endpoint().parse().expect("anvil's endpoint is a URL")
}

/// A provider without a wallet: transactions go out as eth_sendTransaction from
/// anvil's unlocked dev accounts (`.from(account)`).
pub fn unlocked(anvil: &Anvil) -> DynProvider {
    sonm_contracts::deploy::provider(url(anvil))
}

pub use sonm_contracts::anvil::confirm;
