//! The signed-order book's front door: what `POST /v1/signed-orders` carries and every check
//! made before an order is stored. Suppliers publish asks signed off chain (free to publish and
//! to re-price) and buyers find them here; the chain checks them again when one is used, but the
//! book trusts nothing it receives either: an order it lists is one the chain would take now,
//! as far as the DWH has indexed.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::Eip712Domain;
use serde::Deserialize;
use sonm_contracts::{
    Addresses, SignatureError, market_domain, recover_signed_order, signed_order_digest, signed_ref,
};
use sonm_market::{Order, OrderError};
use thiserror::Error;

use crate::index::SignedOrderRow;
use crate::storage::{PostError, Posted, Storage};

/// The largest body a post may have.
pub const MAX_BODY: usize = 64 << 10;

/// What the book accepts: the Market's domain (from the addresses file the follower reads, so
/// an order signed for another chain or another Market is refused) and the bounds.
#[derive(Clone, Debug)]
pub struct SignedPolicy {
    pub domain: Eip712Domain,
    /// The furthest ahead an expiry may be, in seconds.
    pub max_ttl_s: u64,
    /// The most live signed orders one author may have in the book.
    pub per_author: usize,
    /// The most signed orders the book holds: keys are free, so the per-author bound alone
    /// does not bound the disk the book takes.
    pub total: usize,
}

impl SignedPolicy {
    /// The policy for the Market of `addresses`.
    pub fn new(addresses: &Addresses, max_ttl_s: u64, per_author: usize, total: usize) -> Self {
        SignedPolicy {
            domain: market_domain(addresses.chain_id, addresses.contracts.market),
            max_ttl_s,
            per_author,
            total,
        }
    }
}

/// The body of a post: the signed order as its author signed it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedOrderPost {
    /// The order, id 0.
    pub order: Order,
    /// The last unix second at which it may be used.
    pub expiry: u64,
    /// Decimal or `0x` hex (a string: it may not fit a JSON number's exact range).
    pub nonce: U256,
    /// `0x` and 65 bytes r, s, v.
    pub signature: Bytes,
}

/// Why a post was refused. [`Refusal::status`] and [`Refusal::reason`] are the HTTP status and
/// the `reason` of the JSON error.
#[derive(Debug, Error)]
pub enum Refusal {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("the body is not a signed order: {0}")]
    Json(String),
    #[error("order id is {0}: a signed order is never placed, its id is 0")]
    OrderId(u64),
    #[error("the order is invalid: {0}")]
    Order(#[from] OrderError),
    #[error("expired: its last second {expiry} is not after now ({now})")]
    Expired { expiry: u64, now: u64 },
    #[error("expiry {expiry} is more than {max_ttl_s} s after now ({now})")]
    ExpiryTooFar {
        expiry: u64,
        now: u64,
        max_ttl_s: u64,
    },
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    #[error(
        "signed by {signer}, not by the order's author {author} (another key, a field changed \
         after signing, or another chain's or Market's domain)"
    )]
    NotAuthor { signer: Address, author: Address },
    #[error(transparent)]
    Post(#[from] PostError),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::TooLarge(_) => 413,
            Refusal::Post(PostError::NonceSpent { .. }) => 409,
            Refusal::Post(PostError::AuthorLimit { .. }) => 429,
            Refusal::Post(PostError::BookFull { .. }) => 503,
            Refusal::Post(PostError::Db(_)) => 500,
            _ => 400,
        }
    }

    /// A stable name for the reason, for clients to act on.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "too_large",
            Refusal::Body(_) => "bad_body",
            Refusal::Json(_) => "bad_json",
            Refusal::OrderId(_) | Refusal::Order(_) => "bad_order",
            Refusal::Expired { .. } => "expired",
            Refusal::ExpiryTooFar { .. } => "expiry_too_far",
            Refusal::Signature(SignatureError::HighS) => "high_s_signature",
            Refusal::Signature(SignatureError::Unrecoverable) => "unrecoverable_signature",
            Refusal::Signature(_) => "malformed_signature",
            Refusal::NotAuthor { .. } => "signer_not_author",
            Refusal::Post(PostError::NonceSpent { .. }) => "nonce_used",
            Refusal::Post(PostError::AuthorLimit { .. }) => "author_limit",
            Refusal::Post(PostError::BookFull { .. }) => "book_full",
            Refusal::Post(PostError::Db(_)) => "storage",
        }
    }
}

/// The unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks what needs only the post itself: the order is a valid unplaced order, the expiry is
/// ahead of `now` by at most the policy's TTL, and the signature is well formed (as the Market
/// wants it) and recovers to the order's author over the Market's digest. Pure.
pub fn check(
    post: SignedOrderPost,
    policy: &SignedPolicy,
    now: u64,
) -> Result<SignedOrderRow, Refusal> {
    let SignedOrderPost {
        order,
        expiry,
        nonce,
        signature,
    } = post;
    if order.id != 0 {
        return Err(Refusal::OrderId(order.id));
    }
    order.validate()?;
    if expiry <= now {
        return Err(Refusal::Expired { expiry, now });
    }
    if expiry > now.saturating_add(policy.max_ttl_s) {
        return Err(Refusal::ExpiryTooFar {
            expiry,
            now,
            max_ttl_s: policy.max_ttl_s,
        });
    }
    let order_ref = signed_ref(&order, expiry, nonce, signature);
    let signer = recover_signed_order(&order_ref, &policy.domain)?;
    if signer != order.author {
        return Err(Refusal::NotAuthor {
            signer,
            author: order.author,
        });
    }
    let digest = signed_order_digest(&order_ref.order, expiry, nonce, &policy.domain);
    Ok(SignedOrderRow {
        order,
        expiry,
        nonce,
        signature: order_ref.signature,
        digest,
    })
}

/// A post's body read, checked and stored: what was done, and the row.
pub fn accept(
    storage: &Storage<'_>,
    policy: &SignedPolicy,
    body: &[u8],
    now: u64,
) -> Result<(Posted, SignedOrderRow), Refusal> {
    if body.len() > MAX_BODY {
        return Err(Refusal::TooLarge(MAX_BODY));
    }
    let post: SignedOrderPost =
        serde_json::from_slice(body).map_err(|e| Refusal::Json(e.to_string()))?;
    let row = check(post, policy, now)?;
    let posted = storage.post_signed_order(&row, policy.per_author, policy.total, now)?;
    Ok((posted, row))
}
