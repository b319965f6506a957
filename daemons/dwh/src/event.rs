//! The contracts' events as the indexer sees them: decoded from raw logs into typed
//! values (the market model's types where there are some), with every number checked
//! to fit.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolEventInterface;
use serde::{Deserialize, Serialize};
use sonm_contracts::{
    Blacklist, ChainOrderError, ContractAddresses, Gate, Market, ProfileRegistry,
};
use sonm_market::{DealId, IdentityLevel, Order, OrderId, OrderType};
use thiserror::Error;

/// A change request's id.
pub type RequestId = u64;

/// One decoded event of the Market, the ProfileRegistry or the Blacklist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainEvent {
    OrderPlaced(Order),
    OrderCancelled {
        id: OrderId,
    },
    DealOpened {
        id: DealId,
        supplier: Address,
        consumer: Address,
        master: Address,
        ask: OrderId,
        bid: OrderId,
        price: u128,
        duration: u64,
        start: u64,
        blocked: u128,
    },
    DealBilled {
        id: DealId,
        paid: u128,
        blocked: u128,
        billed_until: u64,
    },
    DealClosed {
        id: DealId,
        /// `None` when the deal closed because the consumer could not pay.
        closed_by: Option<Address>,
        end: u64,
        refunded: u128,
        blacklisted: bool,
    },
    ChangeRequestCreated {
        id: RequestId,
        deal: DealId,
        requester: Address,
        price: u128,
        duration: u64,
    },
    ChangeRequestApproved {
        id: RequestId,
        by: Address,
    },
    ChangeRequestCancelled {
        id: RequestId,
        by: Address,
    },
    DealChanged {
        id: DealId,
        price: u128,
        duration: u64,
    },
    WorkerAnnounced {
        worker: Address,
        master: Address,
    },
    WorkerConfirmed {
        worker: Address,
        master: Address,
    },
    WorkerRemoved {
        worker: Address,
        master: Address,
    },
    Blacklisted {
        owner: Address,
        who: Address,
    },
    Unblacklisted {
        owner: Address,
        who: Address,
    },
    IdentityLevelChanged {
        subject: Address,
        level: IdentityLevel,
    },
    CertificateIssued {
        id: u64,
        validator: Address,
        subject: Address,
        attribute_type: U256,
        value: Bytes,
    },
    CertificateRevoked {
        id: u64,
        by: Address,
    },
    /// SNM locked in this chain's Gate, to be paid on `dst_chain`.
    GateLocked {
        nonce: u64,
        from: Address,
        to: Address,
        amount: u128,
        dst_chain: u64,
    },
    /// A transfer from another chain's gate, paid here.
    GatePaid {
        transfer: B256,
        src_chain: u64,
        src_gate: Address,
        nonce: u64,
        to: Address,
        amount: u128,
    },
    /// A gate keeper added, its daily limit changed, or removed (limit 0).
    GateKeeperSet {
        keeper: Address,
        daily_limit: u128,
    },
    GateKeeperFrozen {
        keeper: Address,
        frozen: bool,
    },
    /// Keeper signatures a payment needs.
    GateThresholdSet {
        threshold: u8,
    },
    /// A signed order (off chain, digest `digest`) taken by deal `deal`: `author`'s `nonce` is
    /// spent.
    SignedOrderUsed {
        digest: B256,
        author: Address,
        nonce: U256,
        deal: DealId,
    },
    /// `author` cancelled its signed-order nonces `word * 256 + i` for each bit i of `mask`.
    NoncesCancelled {
        author: Address,
        word: U256,
        mask: U256,
    },
}

/// Why a log from one of our contracts could not be read.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("log of {contract} does not decode: {source}")]
    Abi {
        contract: &'static str,
        #[source]
        source: alloy::sol_types::Error,
    },
    #[error("order in OrderPlaced does not fit the market model: {0}")]
    Order(#[from] ChainOrderError),
    #[error("{what} = {value} is out of range")]
    OutOfRange { what: &'static str, value: U256 },
    #[error("OrderPlaced {id}: the indexed type or author differs from the order's")]
    Inconsistent { id: OrderId },
}

fn small<T: TryFrom<U256>>(what: &'static str, value: U256) -> Result<T, DecodeError> {
    T::try_from(value).map_err(|_| DecodeError::OutOfRange { what, value })
}

/// Which of our contracts emitted a log, or `None` for any other address (those logs
/// are ignored).
pub fn decode(
    contracts: &ContractAddresses,
    address: Address,
    topics: &[B256],
    data: &[u8],
) -> Result<Option<ChainEvent>, DecodeError> {
    if address == contracts.market {
        decode_market(topics, data)
    } else if address == contracts.blacklist {
        decode_blacklist(topics, data)
    } else if address == contracts.profile_registry {
        decode_profiles(topics, data)
    } else if address == contracts.gate {
        decode_gate(topics, data)
    } else {
        Ok(None)
    }
}

fn decode_market(topics: &[B256], data: &[u8]) -> Result<Option<ChainEvent>, DecodeError> {
    use Market::MarketEvents as E;
    let event = E::decode_raw_log(topics, data).map_err(|source| DecodeError::Abi {
        contract: "Market",
        source,
    })?;
    Ok(Some(match event {
        E::OrderPlaced(e) => {
            let id = small("order id", e.orderId)?;
            let order = sonm_contracts::market_order(id, &e.order)?;
            if order.author != e.author
                || OrderType::try_from(u64::from(e.orderType)).ok() != Some(order.order_type)
            {
                return Err(DecodeError::Inconsistent { id });
            }
            ChainEvent::OrderPlaced(order)
        }
        E::OrderCancelled(e) => ChainEvent::OrderCancelled {
            id: small("order id", e.orderId)?,
        },
        E::DealOpened(e) => ChainEvent::DealOpened {
            id: small("deal id", e.dealId)?,
            supplier: e.supplier,
            consumer: e.consumer,
            master: e.master,
            ask: small("ask id", e.askId)?,
            bid: small("bid id", e.bidId)?,
            price: small("price", e.price)?,
            duration: e.duration,
            start: e.startTime,
            blocked: small("blocked", e.blocked)?,
        },
        E::DealBilled(e) => ChainEvent::DealBilled {
            id: small("deal id", e.dealId)?,
            paid: small("paid", e.paid)?,
            blocked: small("blocked", e.blocked)?,
            billed_until: e.billedUntil,
        },
        E::DealClosed(e) => ChainEvent::DealClosed {
            id: small("deal id", e.dealId)?,
            closed_by: (!e.closedBy.is_zero()).then_some(e.closedBy),
            end: e.endTime,
            refunded: small("refunded", e.refunded)?,
            blacklisted: e.blacklisted,
        },
        E::ChangeRequestCreated(e) => ChainEvent::ChangeRequestCreated {
            id: small("request id", e.requestId)?,
            deal: small("deal id", e.dealId)?,
            requester: e.requester,
            price: small("price", e.price)?,
            duration: e.duration,
        },
        E::ChangeRequestApproved(e) => ChainEvent::ChangeRequestApproved {
            id: small("request id", e.requestId)?,
            by: e.by,
        },
        E::ChangeRequestCancelled(e) => ChainEvent::ChangeRequestCancelled {
            id: small("request id", e.requestId)?,
            by: e.by,
        },
        E::DealChanged(e) => ChainEvent::DealChanged {
            id: small("deal id", e.dealId)?,
            price: small("price", e.price)?,
            duration: e.duration,
        },
        E::WorkerAnnounced(e) => ChainEvent::WorkerAnnounced {
            worker: e.worker,
            master: e.master,
        },
        E::WorkerConfirmed(e) => ChainEvent::WorkerConfirmed {
            worker: e.worker,
            master: e.master,
        },
        E::WorkerRemoved(e) => ChainEvent::WorkerRemoved {
            worker: e.worker,
            master: e.master,
        },
        E::SignedOrderUsed(e) => ChainEvent::SignedOrderUsed {
            digest: e.digest,
            author: e.author,
            nonce: e.nonce,
            deal: small("deal id", e.dealId)?,
        },
        E::NoncesCancelled(e) => ChainEvent::NoncesCancelled {
            author: e.author,
            word: e.word,
            mask: e.mask,
        },
    }))
}

fn decode_blacklist(topics: &[B256], data: &[u8]) -> Result<Option<ChainEvent>, DecodeError> {
    use Blacklist::BlacklistEvents as E;
    let event = E::decode_raw_log(topics, data).map_err(|source| DecodeError::Abi {
        contract: "Blacklist",
        source,
    })?;
    Ok(match event {
        E::Blacklisted(e) => Some(ChainEvent::Blacklisted {
            owner: e.owner,
            who: e.who,
        }),
        E::Unblacklisted(e) => Some(ChainEvent::Unblacklisted {
            owner: e.owner,
            who: e.who,
        }),
        _ => None,
    })
}

fn decode_profiles(topics: &[B256], data: &[u8]) -> Result<Option<ChainEvent>, DecodeError> {
    use ProfileRegistry::ProfileRegistryEvents as E;
    let event = E::decode_raw_log(topics, data).map_err(|source| DecodeError::Abi {
        contract: "ProfileRegistry",
        source,
    })?;
    Ok(match event {
        E::IdentityLevelChanged(e) => Some(ChainEvent::IdentityLevelChanged {
            subject: e.subject,
            level: IdentityLevel::try_from(u64::from(e.level)).map_err(|_| {
                DecodeError::OutOfRange {
                    what: "identity level",
                    value: U256::from(e.level),
                }
            })?,
        }),
        E::CertificateIssued(e) => Some(ChainEvent::CertificateIssued {
            id: small("certificate id", e.id)?,
            validator: e.validator,
            subject: e.subject,
            attribute_type: e.attributeType,
            value: e.value,
        }),
        E::CertificateRevoked(e) => Some(ChainEvent::CertificateRevoked {
            id: small("certificate id", e.id)?,
            by: e.by,
        }),
        _ => None,
    })
}

fn decode_gate(topics: &[B256], data: &[u8]) -> Result<Option<ChainEvent>, DecodeError> {
    use Gate::GateEvents as E;
    let event = E::decode_raw_log(topics, data).map_err(|source| DecodeError::Abi {
        contract: "Gate",
        source,
    })?;
    Ok(match event {
        E::Locked(e) => Some(ChainEvent::GateLocked {
            nonce: small("lock nonce", e.nonce)?,
            from: e.from,
            to: e.to,
            amount: small("amount", e.amount)?,
            dst_chain: small("destination chain", e.dstChainId)?,
        }),
        E::Paid(e) => Some(ChainEvent::GatePaid {
            transfer: e.transferId,
            src_chain: small("source chain", e.srcChainId)?,
            src_gate: e.srcGate,
            nonce: small("lock nonce", e.nonce)?,
            to: e.to,
            amount: small("amount", e.amount)?,
        }),
        E::KeeperSet(e) => Some(ChainEvent::GateKeeperSet {
            keeper: e.keeper,
            daily_limit: small("daily limit", e.dailyLimit)?,
        }),
        E::KeeperFrozen(e) => Some(ChainEvent::GateKeeperFrozen {
            keeper: e.keeper,
            frozen: e.frozen,
        }),
        E::ThresholdSet(e) => Some(ChainEvent::GateThresholdSet {
            threshold: e.threshold,
        }),
        _ => None,
    })
}
