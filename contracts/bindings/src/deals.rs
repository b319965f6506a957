//! A deal's state rebuilt from the Market's events: `DealOpened`, then each `DealBilled`
//! (the time billed up to), `DealChanged` (new price and duration) and `DealClosed`, in
//! chain order. The events carry every field, so node, worker and tests read a deal the same
//! way, with one log query filtered by the deal's id.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;

use crate::bindings::Market;

/// How a closed deal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DealEnd {
    /// `Address::ZERO` when the deal closed because its consumer could not pay.
    pub closed_by: Address,
    pub end_time: u64,
    pub blacklisted: bool,
}

/// A deal as its events tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealSnapshot {
    pub id: u64,
    pub supplier: Address,
    pub consumer: Address,
    /// Receives the payouts: the supplier's master when the deal opened.
    pub master: Address,
    /// SNM wei per second.
    pub price: U256,
    pub start_time: u64,
    /// Seconds; 0 for a spot deal.
    pub duration: u64,
    /// Billed up to here.
    pub last_bill_time: u64,
    /// 0 when the side was a signed order.
    pub ask_id: U256,
    pub bid_id: U256,
    /// Set once the deal closed.
    pub end: Option<DealEnd>,
}

/// A log of the deal's that does not decode as the event its topic names.
#[derive(Debug, thiserror::Error)]
pub enum DealLogError {
    #[error("deal logs: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    #[error("deal {deal}: malformed {event} log: {message}")]
    Malformed {
        deal: u64,
        event: &'static str,
        message: String,
    },
    #[error("deal {deal}: a {event} log before its DealOpened")]
    BeforeOpened { deal: u64, event: &'static str },
}

impl DealSnapshot {
    fn opened(id: u64, e: &Market::DealOpened) -> Self {
        DealSnapshot {
            id,
            supplier: e.supplier,
            consumer: e.consumer,
            master: e.master,
            price: e.price,
            start_time: e.startTime,
            duration: e.duration,
            last_bill_time: e.startTime,
            ask_id: e.askId,
            bid_id: e.bidId,
            end: None,
        }
    }

    /// Folds the deal's logs (in chain order) into its state; `None` if it never opened.
    pub fn from_logs(id: u64, logs: &[Log]) -> Result<Option<Self>, DealLogError> {
        let mut deal: Option<DealSnapshot> = None;
        for log in logs {
            let Some(topic) = log.topic0() else { continue };
            let bad = |event: &'static str, e: alloy::sol_types::Error| DealLogError::Malformed {
                deal: id,
                event,
                message: e.to_string(),
            };
            if *topic == Market::DealOpened::SIGNATURE_HASH {
                let e = log
                    .log_decode::<Market::DealOpened>()
                    .map_err(|e| bad("DealOpened", e))?;
                deal = Some(Self::opened(id, &e.inner.data));
                continue;
            }
            let Some(d) = deal.as_mut() else {
                return Err(DealLogError::BeforeOpened {
                    deal: id,
                    event: "DealBilled/DealChanged/DealClosed",
                });
            };
            if *topic == Market::DealBilled::SIGNATURE_HASH {
                let e = log
                    .log_decode::<Market::DealBilled>()
                    .map_err(|e| bad("DealBilled", e))?;
                d.last_bill_time = e.inner.data.billedUntil;
            } else if *topic == Market::DealChanged::SIGNATURE_HASH {
                let e = log
                    .log_decode::<Market::DealChanged>()
                    .map_err(|e| bad("DealChanged", e))?;
                d.price = e.inner.data.price;
                d.duration = e.inner.data.duration;
            } else if *topic == Market::DealClosed::SIGNATURE_HASH {
                let e = log
                    .log_decode::<Market::DealClosed>()
                    .map_err(|e| bad("DealClosed", e))?;
                d.end = Some(DealEnd {
                    closed_by: e.inner.data.closedBy,
                    end_time: e.inner.data.endTime,
                    blacklisted: e.inner.data.blacklisted,
                });
            }
        }
        Ok(deal)
    }

    /// What `bill`, `closeDeal` and the change requests take as the deal's current state
    /// (the Market keeps only its hash).
    pub fn state(&self) -> Market::DealState {
        Market::DealState {
            supplier: self.supplier,
            consumer: self.consumer,
            master: self.master,
            price: self.price,
            startTime: self.start_time,
            duration: self.duration,
            lastBillTime: self.last_bill_time,
        }
    }

    /// Active: opened and not closed.
    pub fn active(&self) -> bool {
        self.end.is_none()
    }

    /// The deal's logs from `from_block` on (the Market's deploy block, or any block at or
    /// before the deal opened), folded. `None` if no deal has this id.
    pub async fn read<P: Provider>(
        provider: &P,
        market: Address,
        id: u64,
        from_block: u64,
    ) -> Result<Option<Self>, DealLogError> {
        let filter = Filter::new()
            .address(market)
            .event_signature(vec![
                Market::DealOpened::SIGNATURE_HASH,
                Market::DealBilled::SIGNATURE_HASH,
                Market::DealChanged::SIGNATURE_HASH,
                Market::DealClosed::SIGNATURE_HASH,
            ])
            .topic1(U256::from(id))
            .from_block(from_block);
        let logs = provider.get_logs(&filter).await?;
        Self::from_logs(id, &logs)
    }
}
