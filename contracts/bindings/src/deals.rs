//! A deal's state rebuilt from the Market's events: `DealOpened`, then each `DealBilled`
//! (the time billed up to), `DealChanged` (new price and duration) and `DealClosed`, in
//! chain order. The events carry every field, so node, worker and tests read a deal the same
//! way, with one log query filtered by the deal's id.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;

use crate::bindings::Market;
use crate::logs::LOG_WINDOW;

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
        let mut deal = None;
        for log in logs {
            Self::apply(&mut deal, id, log)?;
        }
        Ok(deal)
    }

    /// Applies one of deal `id`'s logs to what is known of it so far.
    fn apply(deal: &mut Option<Self>, id: u64, log: &Log) -> Result<(), DealLogError> {
        let Some(topic) = log.topic0() else {
            return Ok(());
        };
        let bad = |event: &'static str, e: alloy::sol_types::Error| DealLogError::Malformed {
            deal: id,
            event,
            message: e.to_string(),
        };
        if *topic == Market::DealOpened::SIGNATURE_HASH {
            let e = log
                .log_decode::<Market::DealOpened>()
                .map_err(|e| bad("DealOpened", e))?;
            *deal = Some(Self::opened(id, &e.inner.data));
            return Ok(());
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
        Ok(())
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
        let mut follower = DealFollower::new(market, id, from_block);
        follower.update(provider).await?;
        Ok(follower.snapshot().cloned())
    }
}

/// One deal followed through its logs: each [`update`](Self::update) reads only the blocks
/// since the last one, in windows of [`LOG_WINDOW`], so a daemon that bills a deal every few
/// minutes does not rescan its history each time. After a reorg that dropped a block already
/// read, the snapshot can be ahead of the chain; the Market then refuses the state
/// (`DealStateMismatch`) and the caller starts a fresh follower.
#[derive(Debug, Clone)]
pub struct DealFollower {
    market: Address,
    id: u64,
    next_block: u64,
    deal: Option<DealSnapshot>,
}

impl DealFollower {
    /// Follows deal `id` of `market` from `from_block` (at or before the deal's opening).
    pub fn new(market: Address, id: u64, from_block: u64) -> Self {
        Self {
            market,
            id,
            next_block: from_block,
            deal: None,
        }
    }

    /// The deal as of the last update; `None` if it has not opened (yet).
    pub fn snapshot(&self) -> Option<&DealSnapshot> {
        self.deal.as_ref()
    }

    /// Reads the deal's logs up to the latest block.
    pub async fn update<P: Provider>(
        &mut self,
        provider: &P,
    ) -> Result<Option<&DealSnapshot>, DealLogError> {
        let head = provider.get_block_number().await?;
        while self.next_block <= head {
            let to = head.min(self.next_block.saturating_add(LOG_WINDOW - 1));
            let filter = Filter::new()
                .address(self.market)
                .event_signature(vec![
                    Market::DealOpened::SIGNATURE_HASH,
                    Market::DealBilled::SIGNATURE_HASH,
                    Market::DealChanged::SIGNATURE_HASH,
                    Market::DealClosed::SIGNATURE_HASH,
                ])
                .topic1(U256::from(self.id))
                .from_block(self.next_block)
                .to_block(to);
            // Applied to a copy: a window that fails half-way leaves the follower as it was.
            let mut deal = self.deal.clone();
            for log in provider.get_logs(&filter).await? {
                DealSnapshot::apply(&mut deal, self.id, &log)?;
            }
            self.deal = deal;
            self.next_block = to + 1;
        }
        Ok(self.deal.as_ref())
    }
}
