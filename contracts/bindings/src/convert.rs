//! Orders between the chain's encoding ([`Market::Order`]) and the market model
//! ([`sonm_market::Order`]), and the Market's match errors as [`Mismatch`]es.

use alloy::primitives::U256;
use sonm_market::{
    Benchmark, Benchmarks, IdentityLevel, Mismatch, NetFlags, Order, OrderError, OrderId, OrderType,
};
use thiserror::Error;

use crate::bindings::Market;

/// Why an order read from the chain (an `OrderPlaced` event, calldata) does not fit
/// the market model. The model's own checks come through as [`OrderError`]; what
/// only the chain's wider types can carry has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainOrderError {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error("price {0} wei/s does not fit in 128 bits")]
    PriceOutOfRange(U256),
    #[error("netflags {0:#x} has bits far above the known ones")]
    NetFlagsOutOfRange(U256),
    #[error("order id {0} does not fit in 64 bits")]
    IdOutOfRange(U256),
}

/// An order id as the chain counts them (`uint256`), as the model's [`OrderId`].
pub fn order_id_from_chain(id: U256) -> Result<OrderId, ChainOrderError> {
    u64::try_from(id).map_err(|_| ChainOrderError::IdOutOfRange(id))
}

/// Reads a chain order into the model. Every field is checked: order type 1 or 2,
/// price within `u128`, only the three known netflag bits, identity level 0..=3,
/// exactly 13 benchmarks. This decodes what the chain holds; the chain has already
/// applied the rules of [`Order::validate`] at placement.
pub fn market_order(id: OrderId, order: &Market::Order) -> Result<Order, ChainOrderError> {
    let order_type = OrderType::try_from(u64::from(order.orderType))?;
    let price =
        u128::try_from(order.price).map_err(|_| ChainOrderError::PriceOutOfRange(order.price))?;
    let netflag_bits = u64::try_from(order.netflags)
        .map_err(|_| ChainOrderError::NetFlagsOutOfRange(order.netflags))?;
    let netflags = NetFlags::try_from(netflag_bits)?;
    let identity_level = IdentityLevel::try_from(u64::from(order.identityLevel))?;
    let benchmarks = Benchmarks::from_slice(&order.benchmarks)?;
    Ok(Order {
        id,
        order_type,
        author: order.author,
        counterparty: (!order.counterparty.is_zero()).then_some(order.counterparty),
        duration: order.duration,
        price,
        netflags,
        identity_level,
        blacklist: (!order.blacklist.is_zero()).then_some(order.blacklist),
        tag: order.tag,
        benchmarks,
    })
}

/// The chain's encoding of a model order (its id is not part of it). Always
/// succeeds: every model value fits the chain's types. The chain has limits of its
/// own (price < 2^96, duration < 2^40) that `placeOrder` enforces.
pub fn chain_order(order: &Order) -> Market::Order {
    Market::Order {
        orderType: order.order_type.code(),
        author: order.author,
        counterparty: order.counterparty.unwrap_or_default(),
        duration: order.duration,
        price: U256::from(order.price),
        netflags: U256::from(order.netflags.bits()),
        identityLevel: order.identity_level as u8,
        blacklist: order.blacklist.unwrap_or_default(),
        tag: order.tag,
        benchmarks: order.benchmarks.as_array().to_vec(),
    }
}

/// A placed order as one side of `openDeal`/`quickBuy` (its id and the order the chain holds
/// the hash of; the signed-order fields unused).
pub fn placed_ref(order: &Order) -> Market::OrderRef {
    Market::OrderRef {
        id: U256::from(order.id),
        order: chain_order(order),
        expiry: 0,
        nonce: U256::ZERO,
        signature: alloy::primitives::Bytes::new(),
    }
}

impl From<&Order> for Market::Order {
    fn from(order: &Order) -> Self {
        chain_order(order)
    }
}

/// The match-rule clause a Market error stands for, as the model names it; `None`
/// for errors that are not about the match (unknown orders, validation, deals).
///
/// The Market checks the clauses in another order than [`sonm_market::check_match`]
/// (chain: types, benchmarks, netflags, price, duration, counterparties, levels,
/// blacklists; model: types, price, duration, netflags, benchmarks, levels,
/// counterparties, blacklists), so for a pair that breaks several clauses the two
/// may name different ones. They agree on whether a pair matches, and on the reason
/// when only one clause is broken (`tests/integration/match_parity.rs`). The chain is finer
/// than the model: both counterparty errors map to [`Mismatch::Counterparty`], both
/// blacklist errors to [`Mismatch::Blacklisted`].
pub fn mismatch_of(error: &Market::MarketErrors) -> Option<Mismatch> {
    use Market::MarketErrors as E;
    Some(match error {
        E::WrongOrderType(_) => Mismatch::OrderTypes,
        E::BenchmarkNotMet(e) => {
            Mismatch::Benchmark(Benchmark::from_index(usize::try_from(e.index).ok()?)?)
        }
        E::NetflagsNotCovered(_) => Mismatch::NetFlags,
        E::PriceNotMatched(_) => Mismatch::Price,
        E::DurationMismatch(_) => Mismatch::Duration,
        E::AskCounterpartyMismatch(_) | E::BidCounterpartyMismatch(_) => Mismatch::Counterparty,
        E::ConsumerLevelTooLow(_) => Mismatch::BidderIdentity,
        E::SupplierLevelTooLow(_) => Mismatch::AskerIdentity,
        E::SupplierBlacklisted(_) | E::ConsumerBlacklisted(_) => Mismatch::Blacklisted,
        _ => return None,
    })
}
