//! Orders signed off chain (EIP-712), the way `Market.openDeal` checks them: the typed data
//! `SignedOrder(Order order,uint64 expiry,uint256 nonce)` under the domain "SONM Market",
//! version "1", the chain id and the Market's address. The digest is computed here, never
//! asked of an RPC node: a key signs only what it has hashed itself.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use thiserror::Error;

use crate::bindings::Market;
use crate::convert::chain_order;

/// The EIP-712 types, field for field as Market.sol's `ORDER_TYPEHASH` and
/// `SIGNED_ORDER_TYPEHASH` spell them (`tests/integration/signed.rs` checks the digest against the
/// contract's `signedOrderDigest`).
mod typed {
    alloy::sol! {
        struct Order {
            uint8 orderType;
            address author;
            address counterparty;
            uint64 duration;
            uint256 price;
            uint256 netflags;
            uint8 identityLevel;
            address blacklist;
            bytes32 tag;
            uint64[] benchmarks;
        }
        struct SignedOrder {
            Order order;
            uint64 expiry;
            uint256 nonce;
        }
    }
}

/// Why an order could not be signed.
#[derive(Debug, Error)]
pub enum SignError {
    #[error("the order's author is {author}, the key is {key}: an order is signed by its author")]
    NotAuthor { author: Address, key: Address },
    #[error("signing: {0}")]
    Signer(#[from] alloy::signers::Error),
}

/// The Market's EIP-712 domain on chain `chain_id`.
pub fn market_domain(chain_id: u64, market: Address) -> Eip712Domain {
    eip712_domain! {
        name: "SONM Market",
        version: "1",
        chain_id: chain_id,
        verifying_contract: market,
    }
}

/// What the author of `order` signs for it to be usable until `expiry` (a unix time) with
/// `nonce` (one use per author and nonce).
pub fn signed_order_digest(
    order: &Market::Order,
    expiry: u64,
    nonce: U256,
    domain: &Eip712Domain,
) -> B256 {
    let o = order.clone();
    typed::SignedOrder {
        order: typed::Order {
            orderType: o.orderType,
            author: o.author,
            counterparty: o.counterparty,
            duration: o.duration,
            price: o.price,
            netflags: o.netflags,
            identityLevel: o.identityLevel,
            blacklist: o.blacklist,
            tag: o.tag,
            benchmarks: o.benchmarks,
        },
        expiry,
        nonce,
    }
    .eip712_signing_hash(domain)
}

/// `order` signed by its author `key`, as one side of `openDeal`/`quickBuy`.
pub fn sign_order(
    key: &PrivateKeySigner,
    order: &sonm_market::Order,
    expiry: u64,
    nonce: U256,
    domain: &Eip712Domain,
) -> Result<Market::OrderRef, SignError> {
    if order.author != key.address() {
        return Err(SignError::NotAuthor {
            author: order.author,
            key: key.address(),
        });
    }
    let chain = chain_order(order);
    let digest = signed_order_digest(&chain, expiry, nonce, domain);
    // r, s, v with v = 27 + parity and a low s, as the Market requires.
    let signature = key.sign_hash_sync(&digest)?;
    Ok(Market::OrderRef {
        id: U256::ZERO,
        order: chain,
        expiry,
        nonce,
        signature: Bytes::copy_from_slice(&signature.as_bytes()),
    })
}
