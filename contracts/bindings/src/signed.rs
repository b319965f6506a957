//! Orders signed off chain (EIP-712), the way `Market.openDeal` checks them: the typed data
//! `SignedOrder(Order order,uint64 expiry,uint256 nonce)` under the domain "SONM Market",
//! version "1", the chain id and the Market's address. The digest is computed here, never
//! asked of an RPC node: a key signs only what it has hashed itself. A signed order received from
//! someone else is checked with [`recover_signed_order`], under the Market's own rules for a
//! signature.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, Bytes, Signature, U256};
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

/// Why a signed order's signature yields no signer, under `Market._recover`'s rules (65 bytes r,
/// s, v; v 27 or 28; s in the lower half of the curve order): the chain would refuse it with
/// `InvalidSignature`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("a signature is 65 bytes (r, s, v), this one is {0}")]
    Length(usize),
    #[error("v is {0}, the Market takes 27 or 28")]
    V(u8),
    #[error("s is in the upper half of the curve order (the malleable twin of a valid signature)")]
    HighS,
    #[error("no signer can be recovered from the signature")]
    Unrecoverable,
}

/// secp256k1 n / 2 (`Signatures.HALF_N`): the Market refuses a signature with a larger s.
pub const HALF_N: U256 = U256::from_be_bytes(alloy::primitives::hex!(
    "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0"
));

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
    Ok(signed_ref(
        order,
        expiry,
        nonce,
        Bytes::copy_from_slice(&signature.as_bytes()),
    ))
}

/// A signed order as one side of `openDeal`/`quickBuy` (id 0), from its parts as they travel
/// off chain (the DWH's signed-order book keeps and serves exactly these).
pub fn signed_ref(
    order: &sonm_market::Order,
    expiry: u64,
    nonce: U256,
    signature: Bytes,
) -> Market::OrderRef {
    Market::OrderRef {
        id: U256::ZERO,
        order: chain_order(order),
        expiry,
        nonce,
        signature,
    }
}

/// Who signed `order_ref` (a signed order: its order, expiry and nonce under `domain`), checked
/// as the Market checks it when the order is used. The caller compares the signer with the
/// order's author: a tampered field, another domain or another key recover to another address.
pub fn recover_signed_order(
    order_ref: &Market::OrderRef,
    domain: &Eip712Domain,
) -> Result<Address, SignatureError> {
    let digest = signed_order_digest(&order_ref.order, order_ref.expiry, order_ref.nonce, domain);
    recover_signature(&digest, &order_ref.signature)
}

/// The signer of `digest`, under the rules of the contracts' `Signatures` library (the Market's
/// signed orders and the Gate's keeper signatures alike): 65 bytes r, s, v; v 27 or 28; a low s.
pub fn recover_signature(digest: &B256, bytes: &[u8]) -> Result<Address, SignatureError> {
    let raw: &[u8; 65] = bytes
        .try_into()
        .map_err(|_| SignatureError::Length(bytes.len()))?;
    if raw[64] != 27 && raw[64] != 28 {
        return Err(SignatureError::V(raw[64]));
    }
    let signature = Signature::from_raw_array(raw).map_err(|_| SignatureError::Unrecoverable)?;
    if signature.s() > HALF_N {
        return Err(SignatureError::HighS);
    }
    match signature.recover_address_from_prehash(digest) {
        // ecrecover's failure value, which the contracts refuse too.
        Ok(signer) if !signer.is_zero() => Ok(signer),
        _ => Err(SignatureError::Unrecoverable),
    }
}

/// Where `nonce` lives in the Market's `nonceBitmap[author]`: its 256-nonce word (`nonce >> 8`)
/// and its bit in that word (`1 << (nonce & 255)`).
pub fn nonce_bit(nonce: U256) -> (U256, U256) {
    let index = (nonce.as_limbs()[0] & 255) as usize;
    (nonce >> 8, U256::from(1u8) << index)
}

/// The `cancelNonces(word, mask)` calls that withdraw every nonce of `nonces`: one per 256-nonce
/// word, each with the bits of its nonces set, words ascending (one transaction per word however
/// many orders it cancels).
pub fn nonce_masks(nonces: impl IntoIterator<Item = U256>) -> Vec<(U256, U256)> {
    let mut words: BTreeMap<U256, U256> = BTreeMap::new();
    for nonce in nonces {
        let (word, bit) = nonce_bit(nonce);
        *words.entry(word).or_default() |= bit;
    }
    words.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_group_by_word_as_the_market_stores_them() {
        let n = |v: u64| U256::from(v);
        assert_eq!(nonce_bit(n(0)), (n(0), n(1)));
        assert_eq!(nonce_bit(n(255)), (n(0), U256::from(1u8) << 255));
        assert_eq!(nonce_bit(n(256 * 7 + 3)), (n(7), n(8)));
        let masks = nonce_masks([n(513), n(1), n(3), n(1), n(512)]);
        assert_eq!(masks, vec![(n(0), n(0b1010)), (n(2), n(0b11))]);
        assert!(nonce_masks([]).is_empty());
        let top = U256::MAX;
        assert_eq!(nonce_masks([top]), vec![(top >> 8, U256::from(1u8) << 255)]);
    }
}
