//! The Market contract as the worker uses it, through `sonm-contracts`: place and cancel asks,
//! find the deals opened on them, read, bill and close deals.
//!
//! alloy's HTTP client needs a tokio reactor: every call here runs inside
//! `async_compat::Compat`, so callers can stay on smol. The chain is reached through one or more
//! RPC endpoints with failover (`sonm_contracts::rpc`); transactions go through
//! `sonm_contracts::tx::TxSender` (signed once, never sent afresh after a failover).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use alloy::primitives::{B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use async_compat::Compat;
use sonm_contracts::QueryWindowed as _;
use sonm_contracts::tx::{self, TxError, TxSender};
use sonm_contracts::{
    Addresses, DealFollower, Failover, FailoverOptions, Market, RpcError, RpcUrls, chain_order,
    market_order, order_id_from_chain,
};
use sonm_market::{Address, DealId, Order, OrderId};

// The matcher's and the autotrader's calls (openDeal, order hashes, levels, blacklists).
mod market_view;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{what}: {message}")]
    Call { what: &'static str, message: String },
    #[error(transparent)]
    Tx(#[from] TxError),
    #[error("order read from the chain: {0}")]
    Order(#[from] sonm_contracts::ChainOrderError),
    /// The endpoints: one on another chain, none answering, a bad URL.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("value out of range: {0}")]
    Range(&'static str),
}

fn call_err(what: &'static str) -> impl FnOnce(alloy::contract::Error) -> ChainError {
    move |e| ChainError::Call {
        what,
        message: e.to_string(),
    }
}

fn rpc_err(what: &'static str) -> impl FnOnce(alloy::transports::TransportError) -> ChainError {
    move |e| ChainError::Call {
        what,
        message: e.to_string(),
    }
}

/// A deal opened on one of our asks, from its `DealOpened` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedDeal {
    pub id: DealId,
    pub consumer: Address,
    pub ask: OrderId,
    pub bid: OrderId,
    pub price: u128,
    pub duration: u64,
    pub start: u64,
    /// The block it opened in: its logs are read from there.
    pub block: u64,
    /// When the ask was one of our signed asks (`ask` is 0): its use, from the
    /// `SignedOrderUsed` of the same deal.
    pub signed: Option<SignedUse>,
}

/// A signed ask of ours spent by a deal (`SignedOrderUsed` with us as author).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedUse {
    pub digest: B256,
    pub nonce: U256,
}

/// A deal as its events tell it ([`sonm_contracts::DealSnapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDeal {
    pub supplier: Address,
    /// Receives the payouts.
    pub master: Address,
    pub consumer: Address,
    pub start: u64,
    pub duration: u64,
    pub last_bill: u64,
    pub price: u128,
    /// Not closed.
    pub active: bool,
    /// What `bill` and `closeDeal` take: the Market stores only its hash.
    pub state: Market::DealState,
}

/// The Market contract, signing as the worker.
#[derive(Debug, Clone)]
pub struct Chain {
    provider: DynProvider,
    sender: TxSender,
    market: Address,
    me: Address,
    chain_id: u64,
    /// The deals being billed, each followed through its logs since the last read.
    followers: Arc<Mutex<HashMap<DealId, DealFollower>>>,
}

impl Chain {
    /// Connects to `rpc` (failing over between its endpoints) and checks that every endpoint
    /// that answers is the chain of `addresses`.
    pub async fn connect(
        rpc: &RpcUrls,
        signer: PrivateKeySigner,
        addresses: &Addresses,
    ) -> Result<Self, ChainError> {
        let me = signer.address();
        let failover = Failover::new(rpc, addresses.chain_id, FailoverOptions::default())?;
        Compat::new(failover.probe()).await?;
        let provider = failover.signing_provider(signer.clone());
        let sender = TxSender::new(provider.clone(), signer, addresses.chain_id);
        Ok(Self {
            provider,
            sender,
            market: addresses.contracts.market,
            me,
            chain_id: addresses.chain_id,
            followers: Arc::default(),
        })
    }

    /// Sends `call` (see [`TxSender::send`]) inside Compat.
    async fn send<P: Provider, D: alloy::contract::CallDecoder>(
        &self,
        what: &'static str,
        call: alloy::contract::CallBuilder<P, D>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        Ok(Compat::new(self.sender.send(what, call)).await?)
    }

    pub fn address(&self) -> Address {
        self.me
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn market(&self) -> Market::MarketInstance<DynProvider> {
        Market::new(self.market, self.provider.clone())
    }

    /// Places `order` (authored by us); returns it with the id the chain gave it.
    pub async fn place_ask(&self, order: &Order) -> Result<Order, ChainError> {
        const WHAT: &str = "placeOrder";
        let market = self.market();
        let receipt = self
            .send(WHAT, market.placeOrder(chain_order(order)))
            .await?;
        let event = tx::event::<Market::OrderPlaced>(WHAT, &receipt)?;
        let id = order_id_from_chain(event.orderId)?;
        Ok(market_order(id, &event.order)?)
    }

    /// Withdraws our active order `order` (as placed, with its id).
    pub async fn cancel_order(&self, order: &Order) -> Result<(), ChainError> {
        let market = self.market();
        let call = market.cancelOrder(U256::from(order.id), chain_order(order));
        self.send("cancelOrder", call).await?;
        Ok(())
    }

    /// Our payout address on chain: the confirmed master, or ourselves.
    pub async fn master_of(&self) -> Result<Address, ChainError> {
        let market = self.market();
        let me = self.me;
        Compat::new(async move { market.masterOf(me).call().await })
            .await
            .map_err(call_err("masterOf"))
    }

    /// The master we asked for and that has not confirmed yet (zero if none).
    pub async fn pending_master(&self) -> Result<Address, ChainError> {
        let market = self.market();
        let me = self.me;
        Compat::new(async move { market.pendingMaster(me).call().await })
            .await
            .map_err(call_err("pendingMaster"))
    }

    /// Asks `master` to take us as its worker (it confirms with `confirmWorker`).
    pub async fn register_worker(&self, master: Address) -> Result<(), ChainError> {
        let market = self.market();
        let call = market.registerWorker(master);
        self.send("registerWorker", call).await?;
        Ok(())
    }

    /// Whether order `id` is still active on chain (placed and neither cancelled nor dealt).
    pub async fn order_active(&self, id: OrderId) -> Result<bool, ChainError> {
        let market = self.market();
        let hash = Compat::new(async move { market.orderHashes(U256::from(id)).call().await })
            .await
            .map_err(call_err("orderHashes"))?;
        Ok(!hash.is_zero())
    }

    /// Our orders placed in blocks `from..=to` (from their `OrderPlaced` events).
    pub async fn orders_placed(&self, from: u64, to: u64) -> Result<Vec<Order>, ChainError> {
        let market = self.market();
        let me = self.me.into_word();
        let logs = Compat::new(async move {
            market
                .OrderPlaced_filter()
                .topic3(me)
                .from_block(from)
                .to_block(to)
                .query_windowed()
                .await
        })
        .await
        .map_err(call_err("OrderPlaced logs"))?;
        logs.into_iter()
            .map(|(e, _)| Ok(market_order(order_id_from_chain(e.orderId)?, &e.order)?))
            .collect()
    }

    /// The latest block number.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        let p = self.provider.clone();
        Compat::new(async move { p.get_block_number().await })
            .await
            .map_err(rpc_err("eth_blockNumber"))
    }

    /// The latest block's timestamp (the chain's "now").
    pub async fn chain_time(&self) -> Result<u64, ChainError> {
        let p = self.provider.clone();
        let block = Compat::new(async move { p.get_block_by_number(Default::default()).await })
            .await
            .map_err(rpc_err("eth_getBlockByNumber"))?;
        Ok(block.map(|b| b.header.timestamp).unwrap_or(0))
    }

    /// `DealOpened` events with us as supplier in blocks `from..=to`.
    pub async fn deals_opened(&self, from: u64, to: u64) -> Result<Vec<OpenedDeal>, ChainError> {
        let market = self.market();
        let me = self.me.into_word();
        let logs = Compat::new(async move {
            market
                .DealOpened_filter()
                .topic2(me)
                .from_block(from)
                .to_block(to)
                .query_windowed()
                .await
        })
        .await
        .map_err(call_err("DealOpened logs"))?;
        // Deals on signed asks (ask id 0) are told apart by their SignedOrderUsed, read only
        // when there are any.
        let uses = if logs.iter().any(|(e, _)| e.askId.is_zero()) {
            self.signed_uses(from, to).await?
        } else {
            HashMap::new()
        };
        logs.into_iter()
            .map(|(e, log)| {
                Ok(OpenedDeal {
                    block: log.block_number.unwrap_or(from),
                    signed: if e.askId.is_zero() {
                        uses.get(&e.dealId).copied()
                    } else {
                        None
                    },
                    id: u64::try_from(e.dealId).map_err(|_| ChainError::Range("deal id"))?,
                    consumer: e.consumer,
                    ask: order_id_from_chain(e.askId)?,
                    bid: order_id_from_chain(e.bidId)?,
                    price: u128::try_from(e.price).map_err(|_| ChainError::Range("price"))?,
                    duration: e.duration,
                    start: e.startTime,
                })
            })
            .collect()
    }

    /// Our signed orders spent in blocks `from..=to` (`SignedOrderUsed` with us as author), by
    /// the deal that spent each.
    async fn signed_uses(
        &self,
        from: u64,
        to: u64,
    ) -> Result<HashMap<U256, SignedUse>, ChainError> {
        let market = self.market();
        let me = self.me.into_word();
        let logs = Compat::new(async move {
            market
                .SignedOrderUsed_filter()
                .topic2(me)
                .from_block(from)
                .to_block(to)
                .query_windowed()
                .await
        })
        .await
        .map_err(call_err("SignedOrderUsed logs"))?;
        Ok(logs
            .into_iter()
            .map(|(e, _)| {
                let used = SignedUse {
                    digest: e.digest,
                    nonce: e.nonce,
                };
                (e.dealId, used)
            })
            .collect())
    }

    /// The Market's EIP-712 domain, which our signed asks are signed under.
    pub fn domain(&self) -> alloy::sol_types::Eip712Domain {
        sonm_contracts::market_domain(self.chain_id, self.market)
    }

    /// Cancels our signed orders whose nonces are `word × 256 + i` for each bit i of `mask`
    /// (`cancelNonces`: one transaction however many bits); returns the gas it used.
    pub async fn cancel_nonces(&self, word: U256, mask: U256) -> Result<u64, ChainError> {
        let market = self.market();
        let receipt = self
            .send("cancelNonces", market.cancelNonces(word, mask))
            .await?;
        Ok(receipt.gas_used)
    }

    /// Our spent (used or cancelled) nonces in 256-nonce word `word`, as bits.
    pub async fn nonce_bitmap(&self, word: U256) -> Result<U256, ChainError> {
        let market = self.market();
        let me = self.me;
        Compat::new(async move { market.nonceBitmap(me, word).call().await })
            .await
            .map_err(call_err("nonceBitmap"))
    }

    /// Whether our signed-order nonce `nonce` is spent (used by a deal or cancelled).
    pub async fn nonce_used(&self, nonce: U256) -> Result<bool, ChainError> {
        let market = self.market();
        let me = self.me;
        Compat::new(async move { market.nonceUsed(me, nonce).call().await })
            .await
            .map_err(call_err("nonceUsed"))
    }

    /// Deal `id` rebuilt from its events (the worker knows it from its `DealOpened`, in block
    /// `opened`): only the blocks since the last call are read.
    pub async fn get_deal(&self, id: DealId, opened: u64) -> Result<ChainDeal, ChainError> {
        let mut follower = lock(&self.followers)
            .remove(&id)
            .unwrap_or_else(|| DealFollower::new(self.market, id, opened));
        let provider = self.provider.clone();
        let (follower, read) = Compat::new(async move {
            let read = follower.update(&provider).await.map(|d| d.cloned());
            (follower, read)
        })
        .await;
        let d = read
            .map_err(|e| ChainError::Call {
                what: "deal logs",
                message: e.to_string(),
            })?
            .ok_or(ChainError::Call {
                what: "deal logs",
                message: format!("deal {id} has no DealOpened event"),
            })?;
        // Kept only after a good read: a failed window is read again next time.
        lock(&self.followers).insert(id, follower);
        Ok(ChainDeal {
            supplier: d.supplier,
            master: d.master,
            consumer: d.consumer,
            start: d.start_time,
            duration: d.duration,
            last_bill: d.last_bill_time,
            price: u128::try_from(d.price).map_err(|_| ChainError::Range("deal price"))?,
            active: d.active(),
            state: d.state(),
        })
    }

    /// Bills deal `id` (in `deal`'s state) up to now.
    pub async fn bill(&self, id: DealId, deal: &ChainDeal) -> Result<(), ChainError> {
        let market = self.market();
        let call = market.bill(U256::from(id), deal.state.clone());
        self.deal_call(id, "bill", call).await
    }

    /// Closes deal `id` (in `deal`'s state; a forward deal only from its end on).
    pub async fn close_deal(&self, id: DealId, deal: &ChainDeal) -> Result<(), ChainError> {
        let market = self.market();
        let call = market.closeDeal(U256::from(id), deal.state.clone(), false);
        self.deal_call(id, "closeDeal", call).await
    }

    /// Sends a call on deal `id` built from its followed state. If it fails (the consumer
    /// changed the deal meanwhile, a reorg dropped a bill already read), the deal is read
    /// from its opening again next time.
    async fn deal_call<P: Provider, D: alloy::contract::CallDecoder>(
        &self,
        id: DealId,
        what: &'static str,
        call: alloy::contract::CallBuilder<P, D>,
    ) -> Result<(), ChainError> {
        match self.send(what, call).await {
            Ok(_) => Ok(()),
            Err(e) => {
                lock(&self.followers).remove(&id);
                Err(e)
            }
        }
    }

    /// Stops following deal `id` (it ended).
    pub fn forget_deal(&self, id: DealId) {
        lock(&self.followers).remove(&id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves only a cache of deal logs behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
