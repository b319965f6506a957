//! Shared by the worker's integration tests: the chain set-up a worker reads (contracts deployed,
//! the customer funded, addresses and key written), and the customer's side of the chain
//! (approve the Market, place a bid, open and close a deal), as a real customer's node sends it.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::anvil::{DEV_KEYS, confirm};
use sonm_contracts::deploy::SNM_WEI;
use sonm_contracts::{
    Addresses, DealSnapshot, DeployConfig, Market, SNM, chain_order, deploy, market_order,
    order_id_from_chain, placed_ref,
};
use sonm_market::{Benchmark, Benchmarks, IdentityLevel, NetFlags, Order, OrderType};

/// Anvil's dev keys as the tests cast them: 0 deploys, 1 is the worker (supplier), 2 the
/// customer (funded with 1,000 SNM).
pub const SUPPLIER_KEY: &str = DEV_KEYS[1];
pub const CONSUMER_KEY: &str = DEV_KEYS[2];

/// Deploys the contracts on the chain at `url` with the customer funded, and writes what a
/// worker reads: the addresses file at `addresses` and the supplier's key at `key_file`.
pub async fn deploy_for_worker(url: &str, addresses: &Path, key_file: &Path) -> Addresses {
    let consumer: PrivateKeySigner = CONSUMER_KEY.parse().unwrap();
    let deployed = deploy(
        url.parse().unwrap(),
        DEV_KEYS[0].parse().unwrap(),
        &DeployConfig {
            fund: vec![(consumer.address(), U256::from(1_000u128 * SNM_WEI))],
            ..DeployConfig::default()
        },
    )
    .await
    .unwrap();
    deployed.write(addresses).unwrap();
    std::fs::write(key_file, format!("{SUPPLIER_KEY}\n")).unwrap();
    deployed
}

/// A customer: its key, a provider that signs with it, the contracts.
pub struct Customer {
    pub key: PrivateKeySigner,
    pub provider: DynProvider,
    pub addresses: Addresses,
}

impl Customer {
    pub fn market(&self) -> Market::MarketInstance<&DynProvider> {
        Market::new(self.addresses.contracts.market, &self.provider)
    }

    /// Lets the Market pull the customer's SNM (bids freeze, deals bill).
    pub async fn approve(&self) {
        let token = SNM::new(self.addresses.contracts.snm, &self.provider);
        confirm(
            "approve",
            token.approve(self.addresses.contracts.market, U256::MAX),
        )
        .await;
    }

    /// Places a bid for `cores` and `ram` bytes at `price` for `duration`; returns it with id.
    pub async fn bid_for(&self, cores: u64, ram: u64, price: u128, duration: u64) -> Order {
        let bid = Order {
            id: 0,
            order_type: OrderType::Bid,
            author: self.key.address(),
            counterparty: None,
            duration,
            price,
            netflags: NetFlags::OUTBOUND,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: Default::default(),
            benchmarks: Benchmarks::ZERO
                .with(Benchmark::CpuCores, cores)
                .with(Benchmark::RamSize, ram),
        };
        let r = confirm(
            "placeOrder(bid)",
            self.market().placeOrder(chain_order(&bid)),
        )
        .await;
        let event = r.decoded_log::<Market::OrderPlaced>().unwrap();
        market_order(order_id_from_chain(event.orderId).unwrap(), &event.order).unwrap()
    }

    /// Opens a deal from `ask` and `bid` (`openDeal`); returns its id.
    pub async fn open_deal(&self, ask: &Order, bid: &Order) -> u64 {
        let r = confirm(
            "openDeal",
            self.market().openDeal(placed_ref(ask), placed_ref(bid)),
        )
        .await;
        r.decoded_log::<Market::DealOpened>()
            .unwrap()
            .dealId
            .to::<u64>()
    }

    /// Closes deal `id` as its consumer, in its current state (rebuilt from its events).
    pub async fn close_deal(&self, id: u64) {
        let market = self.addresses.contracts.market;
        let state = DealSnapshot::read(&self.provider, market, id, 0)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("deal {id} was never opened"))
            .state();
        confirm(
            "closeDeal",
            self.market().closeDeal(U256::from(id), state, false),
        )
        .await;
    }

    /// Moves the chain's clock forward and mines a block.
    pub async fn advance(&self, seconds: u64) {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await
            .unwrap();
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_mine".into(), ())
            .await
            .unwrap();
    }
}
