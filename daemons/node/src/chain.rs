//! The customer's side of the contracts, through `sonm-contracts`: balances, the Market allowance,
//! quick-buy, deals, closing. Every call runs inside `async_compat::Compat` (alloy's HTTP client
//! needs a tokio reactor), so callers stay on smol. The chain is reached through one or more RPC
//! endpoints with failover (`sonm_contracts::rpc`); transactions go through
//! `sonm_contracts::tx::TxSender` (signed once, never sent afresh after a failover).

use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use async_compat::Compat;
use serde::Serialize;
use sonm_contracts::QueryWindowed as _;
use sonm_contracts::tx::{self, Refusal, TxError, TxSender};
use sonm_contracts::{
    Addresses, Blacklist, DealSnapshot, Failover, FailoverOptions, Market, ProfileRegistry,
    RpcError, RpcUrls, SNM, chain_order, order_id_from_chain, placed_ref,
};
use sonm_market::{Address, DealId, IdentityLevel, Order, OrderId, OrderType, StaticContext};

use crate::records::{
    CertificateView, ChangeRequestView, ChangeStatus, OrderRecord, OrderStatus, ProfileView,
};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{what}: {message}")]
    Call { what: &'static str, message: String },
    /// The contract refused: its custom error, decoded (`reason` names the contract).
    #[error("{what} refused by the {reason}")]
    Refused { what: &'static str, reason: String },
    /// A transaction that did not go through (a refusal becomes [`ChainError::Refused`]).
    #[error(transparent)]
    Tx(TxError),
    /// The endpoints: one on another chain, none answering, a bad URL.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("value out of range: {0}")]
    Range(&'static str),
    #[error("order read from the chain: {0}")]
    Order(#[from] sonm_contracts::ChainOrderError),
    #[error("identity level from the chain: {0}")]
    Level(#[from] sonm_market::OrderError),
}

fn call_err(what: &'static str) -> impl FnOnce(alloy::contract::Error) -> ChainError {
    move |e| match Refusal::decode(&e) {
        Some(r) => ChainError::Refused {
            what,
            reason: refusal_reason(&r),
        },
        None => ChainError::Call {
            what,
            message: e.to_string(),
        },
    }
}

impl From<TxError> for ChainError {
    fn from(e: TxError) -> Self {
        match e {
            // One refusal for the API however it was found (a call or a transaction).
            TxError::Refused { what, error } => ChainError::Refused {
                what,
                reason: refusal_reason(&error),
            },
            other => ChainError::Tx(other),
        }
    }
}

/// "<contract> contract: <error>", the tail of a refusal's message.
pub(crate) fn refusal_reason(r: &Refusal) -> String {
    format!("{} contract: {}", r.contract(), r.detail())
}

fn rpc_err(what: &'static str) -> impl FnOnce(alloy::transports::TransportError) -> ChainError {
    move |e| ChainError::Call {
        what,
        message: e.to_string(),
    }
}

/// Balances of the node's account, in wei (decimal strings in JSON: they exceed 2^53).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub address: Address,
    /// SNM wei.
    #[serde(serialize_with = "as_string")]
    pub snm: U256,
    /// Native coin (gas), wei.
    #[serde(serialize_with = "as_string")]
    pub eth: U256,
    /// What the Market contract may pull (bids, quick-buy, billing), SNM wei.
    #[serde(serialize_with = "as_string")]
    pub market_allowance: U256,
    /// The same account on the main chain, when the node has one configured (`[main_chain]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_chain: Option<crate::gates::MainBalance>,
}

pub(crate) fn as_string<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A deal as its events tell it, with what is derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DealView {
    pub id: DealId,
    /// `active` or `closed`.
    pub status: &'static str,
    pub supplier: Address,
    pub consumer: Address,
    pub master: Address,
    /// The ask and the bid it was opened from (from its `DealOpened` event; `None` for a
    /// side that was a signed order).
    pub ask: Option<OrderId>,
    pub bid: Option<OrderId>,
    /// SNM wei per second.
    #[serde(serialize_with = "as_string")]
    pub price: u128,
    /// Seconds; 0 = spot.
    pub duration: u64,
    pub start: u64,
    /// A forward deal's scheduled end, a closed deal's end; 0 for an open spot deal.
    pub end: u64,
    pub last_bill: u64,
    /// Still blocked for the deal (0 once closed), SNM wei.
    #[serde(serialize_with = "as_string")]
    pub blocked: U256,
}

/// The Market and SNM contracts, signing as the node's key.
#[derive(Debug, Clone)]
pub struct Chain {
    provider: DynProvider,
    sender: TxSender,
    addresses: Addresses,
    me: Address,
}

impl Chain {
    /// Connects to `rpc` (failing over between its endpoints) and checks that every endpoint
    /// that answers is the chain of `addresses`.
    pub async fn connect(
        rpc: &RpcUrls,
        signer: PrivateKeySigner,
        addresses: Addresses,
    ) -> Result<Self, ChainError> {
        let me = signer.address();
        let failover = Failover::new(rpc, addresses.chain_id, FailoverOptions::default())?;
        Compat::new(failover.probe()).await?;
        let provider = failover.signing_provider(signer.clone());
        let sender = TxSender::new(provider.clone(), signer, addresses.chain_id);
        Ok(Self {
            provider,
            sender,
            addresses,
            me,
        })
    }

    pub fn address(&self) -> Address {
        self.me
    }

    /// The Market's EIP-712 domain: what signed orders for this chain are signed under.
    pub fn market_domain(&self) -> alloy::sol_types::Eip712Domain {
        sonm_contracts::market_domain(self.addresses.chain_id, self.addresses.contracts.market)
    }

    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The one transaction path of this chain (the Gate's `lock` goes through it too).
    pub(crate) fn sender(&self) -> &TxSender {
        &self.sender
    }

    fn market(&self) -> Market::MarketInstance<DynProvider> {
        Market::new(self.addresses.contracts.market, self.provider.clone())
    }

    fn snm(&self) -> SNM::SNMInstance<DynProvider> {
        SNM::new(self.addresses.contracts.snm, self.provider.clone())
    }

    fn blacklist(&self) -> Blacklist::BlacklistInstance<DynProvider> {
        Blacklist::new(self.addresses.contracts.blacklist, self.provider.clone())
    }

    fn profiles(&self) -> ProfileRegistry::ProfileRegistryInstance<DynProvider> {
        ProfileRegistry::new(
            self.addresses.contracts.profile_registry,
            self.provider.clone(),
        )
    }

    /// Logs are read from the deployment on: nothing of ours is older.
    fn first_block(&self) -> u64 {
        self.addresses.deploy_block
    }

    pub async fn balance(&self) -> Result<Balance, ChainError> {
        let (snm, p, me, market) = (
            self.snm(),
            self.provider.clone(),
            self.me,
            self.addresses.contracts.market,
        );
        Compat::new(async move {
            let tokens = snm
                .balanceOf(me)
                .call()
                .await
                .map_err(call_err("balanceOf"))?;
            let allowance = snm
                .allowance(me, market)
                .call()
                .await
                .map_err(call_err("allowance"))?;
            let eth = p.get_balance(me).await.map_err(rpc_err("eth_getBalance"))?;
            Ok(Balance {
                address: me,
                snm: tokens,
                eth,
                market_allowance: allowance,
                main_chain: None,
            })
        })
        .await
    }

    /// Makes sure the Market may pull at least `needed` SNM wei (approves "unlimited" if not).
    pub async fn ensure_allowance(&self, needed: U256) -> Result<(), ChainError> {
        let (snm, me, market) = (self.snm(), self.me, self.addresses.contracts.market);
        let sender = self.sender.clone();
        Compat::new(async move {
            let have = snm
                .allowance(me, market)
                .call()
                .await
                .map_err(call_err("allowance"))?;
            if have < needed {
                sender
                    .send("approve", snm.approve(market, U256::MAX))
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// `quickBuy(ask, duration)`: the bid and the deal in one transaction; `ask` placed
    /// ([`placed_ref`]) or signed off chain. Returns the deal id.
    pub async fn quick_buy(
        &self,
        ask: Market::OrderRef,
        duration: u64,
    ) -> Result<DealId, ChainError> {
        const WHAT: &str = "quickBuy";
        let (market, sender) = (self.market(), self.sender.clone());
        let receipt =
            Compat::new(async move { sender.send(WHAT, market.quickBuy(ask, duration)).await })
                .await?;
        let event = tx::event::<Market::DealOpened>(WHAT, &receipt)?;
        u64::try_from(event.dealId).map_err(|_| ChainError::Range("deal id"))
    }

    /// Deal `id` rebuilt from its events, or `None` if no deal has this id.
    async fn snapshot(&self, id: DealId) -> Result<Option<DealSnapshot>, ChainError> {
        let (p, market, from) = (
            self.provider.clone(),
            self.addresses.contracts.market,
            self.first_block(),
        );
        Compat::new(async move { DealSnapshot::read(&p, market, id, from).await })
            .await
            .map_err(|e| ChainError::Call {
                what: "deal logs",
                message: e.to_string(),
            })
    }

    /// The state `what` (`closeDeal`, a change request) takes for active deal `id`.
    async fn deal_state(
        &self,
        id: DealId,
        what: &'static str,
    ) -> Result<Market::DealState, ChainError> {
        match self.snapshot(id).await? {
            Some(d) if d.active() => Ok(d.state()),
            // What the chain would answer (the call is not sent).
            _ => Err(ChainError::Refused {
                what,
                reason: format!("Market contract: DealNotActive(DealNotActive {{ dealId: {id} }})"),
            }),
        }
    }

    /// The deal, or `None` if no deal has this id.
    pub async fn deal(&self, id: DealId) -> Result<Option<DealView>, ChainError> {
        let Some(d) = self.snapshot(id).await? else {
            return Ok(None);
        };
        let order = |id: U256| -> Result<Option<OrderId>, ChainError> {
            Ok(if id.is_zero() {
                None
            } else {
                Some(order_id_from_chain(id)?)
            })
        };
        let (blocked, end) = match d.end {
            Some(end) => (U256::ZERO, end.end_time),
            None => {
                let (market, state) = (self.market(), d.state());
                let info = Compat::new(async move { market.dealInfo(state).call().await })
                    .await
                    .map_err(call_err("dealInfo"))?;
                let end = u64::try_from(info.endTime).map_err(|_| ChainError::Range("end time"))?;
                (info.blocked, end)
            }
        };
        Ok(Some(DealView {
            id,
            status: if d.active() { "active" } else { "closed" },
            supplier: d.supplier,
            consumer: d.consumer,
            master: d.master,
            ask: order(d.ask_id)?,
            bid: order(d.bid_id)?,
            price: u128::try_from(d.price).map_err(|_| ChainError::Range("deal price"))?,
            duration: d.duration,
            start: d.start_time,
            end,
            last_bill: d.last_bill_time,
            blocked,
        }))
    }

    /// `closeDeal(id, state, blacklist)`.
    pub async fn close_deal(&self, id: DealId, blacklist: bool) -> Result<(), ChainError> {
        let state = self.deal_state(id, "closeDeal").await?;
        let (market, sender) = (self.market(), self.sender.clone());
        Compat::new(async move {
            sender
                .send(
                    "closeDeal",
                    market.closeDeal(U256::from(id), state, blacklist),
                )
                .await
        })
        .await?;
        Ok(())
    }

    /// What the match rule needs to judge `asks` for the customer `me` (whose bids require no
    /// identity level and name no extra blacklist): `me`'s identity level, each supplier's
    /// master, and the blacklist entries that could part them (`me`'s list holding the master,
    /// the supplier's or the ask's named list holding `me`).
    pub async fn match_context(
        &self,
        me: Address,
        asks: &[Order],
    ) -> Result<StaticContext, ChainError> {
        let c = &self.addresses.contracts;
        let profiles = ProfileRegistry::new(c.profile_registry, self.provider.clone());
        let blacklist = Blacklist::new(c.blacklist, self.provider.clone());
        let market = self.market();
        let asks = asks.to_vec();
        Compat::new(async move {
            let mut ctx = StaticContext::default();
            let level = profiles
                .levelOf(me)
                .call()
                .await
                .map_err(call_err("levelOf"))?;
            ctx.levels
                .insert(me, IdentityLevel::try_from(u64::from(level))?);
            let listed = |owner: Address, who: Address| {
                let blacklist = blacklist.clone();
                async move {
                    blacklist
                        .isListed(owner, who)
                        .call()
                        .await
                        .map_err(call_err("isListed"))
                }
            };
            for ask in &asks {
                let supplier = ask.author;
                if let std::collections::hash_map::Entry::Vacant(entry) =
                    ctx.masters.entry(supplier)
                {
                    let master = market
                        .masterOf(supplier)
                        .call()
                        .await
                        .map_err(call_err("masterOf"))?;
                    entry.insert(master);
                    if listed(me, master).await? {
                        ctx.blacklists.insert((me, master));
                    }
                    if listed(supplier, me).await? {
                        ctx.blacklists.insert((supplier, me));
                    }
                }
                if let Some(owner) = ask.blacklist
                    && !ctx.blacklists.contains(&(owner, me))
                    && listed(owner, me).await?
                {
                    ctx.blacklists.insert((owner, me));
                }
            }
            Ok(ctx)
        })
        .await
    }

    pub async fn block_number(&self) -> Result<u64, ChainError> {
        let p = self.provider.clone();
        Compat::new(async move { p.get_block_number().await })
            .await
            .map_err(rpc_err("eth_blockNumber"))
    }

    /// ASK orders placed in blocks `from..=to`, and the order ids that stopped being active in
    /// them (cancelled, or taken by a deal).
    pub async fn ask_events(
        &self,
        from: u64,
        to: u64,
    ) -> Result<(Vec<Order>, Vec<OrderId>), ChainError> {
        let market = self.market();
        let ask_type = alloy::primitives::B256::from(U256::from(2u8));
        let (placed, cancelled, dealt) = Compat::new(async move {
            let placed = market
                .OrderPlaced_filter()
                .topic2(ask_type)
                .from_block(from)
                .to_block(to)
                .query_windowed()
                .await
                .map_err(call_err("OrderPlaced logs"))?;
            let cancelled = market
                .OrderCancelled_filter()
                .from_block(from)
                .to_block(to)
                .query_windowed()
                .await
                .map_err(call_err("OrderCancelled logs"))?;
            let dealt = market
                .DealOpened_filter()
                .from_block(from)
                .to_block(to)
                .query_windowed()
                .await
                .map_err(call_err("DealOpened logs"))?;
            Ok::<_, ChainError>((placed, cancelled, dealt))
        })
        .await?;
        let mut asks = Vec::with_capacity(placed.len());
        for (e, _) in placed {
            asks.push(sonm_contracts::market_order(
                order_id_from_chain(e.orderId)?,
                &e.order,
            )?);
        }
        let mut gone = Vec::new();
        for (e, _) in cancelled {
            gone.push(order_id_from_chain(e.orderId)?);
        }
        for (e, _) in dealt {
            gone.push(order_id_from_chain(e.askId)?);
        }
        Ok((asks, gone))
    }
}

/// Whose side of a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Any,
    Consumer,
    Supplier,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Role::Any),
            "consumer" => Ok(Role::Consumer),
            "supplier" => Ok(Role::Supplier),
            _ => Err(format!("{s:?} is not any, consumer or supplier")),
        }
    }
}

fn change_status(code: u8) -> Option<ChangeStatus> {
    match code {
        1 => Some(ChangeStatus::Pending),
        2 => Some(ChangeStatus::Approved),
        3 => Some(ChangeStatus::Cancelled),
        _ => None,
    }
}

/// Orders, deals, change requests, tokens, blacklists and profiles: the node's own business,
/// read from the chain's logs and views when no DWH is configured.
impl Chain {
    /// `placeOrder(order)` (a bid's frozen sum must be approved first). Returns the order id.
    pub async fn place_order(&self, order: &Order) -> Result<OrderId, ChainError> {
        const WHAT: &str = "placeOrder";
        let (market, sender, chain) = (self.market(), self.sender.clone(), chain_order(order));
        let receipt =
            Compat::new(async move { sender.send(WHAT, market.placeOrder(chain)).await }).await?;
        let event = tx::event::<Market::OrderPlaced>(WHAT, &receipt)?;
        Ok(order_id_from_chain(event.orderId)?)
    }

    /// `cancelOrder(id, order)`: the chain checks the order against its stored hash.
    pub async fn cancel_order(&self, order: &Order) -> Result<(), ChainError> {
        let (market, sender) = (self.market(), self.sender.clone());
        let (id, chain) = (U256::from(order.id), chain_order(order));
        Compat::new(async move {
            sender
                .send("cancelOrder", market.cancelOrder(id, chain))
                .await
        })
        .await?;
        Ok(())
    }

    /// `openDeal(ask, bid)`. Returns the deal id.
    pub async fn open_deal(&self, ask: &Order, bid: &Order) -> Result<DealId, ChainError> {
        const WHAT: &str = "openDeal";
        let (market, sender) = (self.market(), self.sender.clone());
        let (ask, bid) = (placed_ref(ask), placed_ref(bid));
        let receipt =
            Compat::new(async move { sender.send(WHAT, market.openDeal(ask, bid)).await }).await?;
        let event = tx::event::<Market::DealOpened>(WHAT, &receipt)?;
        u64::try_from(event.dealId).map_err(|_| ChainError::Range("deal id"))
    }

    /// `(ask, bid) → deal` of the deals `party` is in as `role`.
    async fn deals_opened(
        &self,
        party: Address,
        role: Role,
    ) -> Result<Vec<(OrderId, OrderId, DealId)>, ChainError> {
        let (market, from) = (self.market(), self.first_block());
        let word = party.into_word();
        let logs = Compat::new(async move {
            let mut logs = Vec::new();
            if role != Role::Consumer {
                let f = market.DealOpened_filter().topic2(word).from_block(from);
                logs.extend(f.query_windowed().await?);
            }
            if role != Role::Supplier {
                let f = market.DealOpened_filter().topic3(word).from_block(from);
                logs.extend(f.query_windowed().await?);
            }
            Ok::<_, alloy::contract::Error>(logs)
        })
        .await
        .map_err(call_err("DealOpened logs"))?;
        let mut out = Vec::with_capacity(logs.len());
        for (e, _) in logs {
            out.push((
                order_id_from_chain(e.askId)?,
                order_id_from_chain(e.bidId)?,
                u64::try_from(e.dealId).map_err(|_| ChainError::Range("deal id"))?,
            ));
        }
        Ok(out)
    }

    /// The ids of the deals `party` is in as `role`, oldest first.
    pub async fn deal_ids(&self, party: Address, role: Role) -> Result<Vec<DealId>, ChainError> {
        let mut ids: Vec<DealId> = self
            .deals_opened(party, role)
            .await?
            .into_iter()
            .map(|(_, _, d)| d)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Every order `author` placed, with its status, oldest first.
    pub async fn orders_of(&self, author: Address) -> Result<Vec<OrderRecord>, ChainError> {
        let (market, from) = (self.market(), self.first_block());
        let word = author.into_word();
        let (placed, cancelled) = Compat::new(async move {
            let placed = market
                .OrderPlaced_filter()
                .topic3(word)
                .from_block(from)
                .query_windowed()
                .await?;
            let cancelled = market
                .OrderCancelled_filter()
                .topic2(word)
                .from_block(from)
                .query_windowed()
                .await?;
            Ok::<_, alloy::contract::Error>((placed, cancelled))
        })
        .await
        .map_err(call_err("order logs"))?;
        let taken = self.deals_opened(author, Role::Any).await?;
        let mut cancelled_ids = std::collections::HashSet::new();
        for (e, _) in cancelled {
            cancelled_ids.insert(order_id_from_chain(e.orderId)?);
        }
        let mut out = Vec::with_capacity(placed.len());
        for (e, _) in placed {
            let order = sonm_contracts::market_order(order_id_from_chain(e.orderId)?, &e.order)?;
            let deal = taken.iter().find_map(|&(ask, bid, deal)| {
                let ours = match order.order_type {
                    OrderType::Ask => ask,
                    OrderType::Bid => bid,
                };
                (ours == order.id).then_some(deal)
            });
            let status = if cancelled_ids.contains(&order.id) {
                OrderStatus::Cancelled
            } else if deal.is_some() {
                OrderStatus::Matched
            } else {
                OrderStatus::Active
            };
            out.push(OrderRecord {
                order,
                status,
                deal,
            });
        }
        out.sort_by_key(|r| r.order.id);
        Ok(out)
    }

    /// One order and its status, or `None` if no order has this id.
    pub async fn order(&self, id: OrderId) -> Result<Option<OrderRecord>, ChainError> {
        let (market, from) = (self.market(), self.first_block());
        let placed = Compat::new(async move {
            market
                .OrderPlaced_filter()
                .topic1(U256::from(id))
                .from_block(from)
                .query_windowed()
                .await
        })
        .await
        .map_err(call_err("OrderPlaced logs"))?;
        let Some((e, _)) = placed.first() else {
            return Ok(None);
        };
        let author = e.order.author;
        // The author's view has the status; it is one scan of that author's logs.
        Ok(self
            .orders_of(author)
            .await?
            .into_iter()
            .find(|r| r.order.id == id))
    }

    /// `createChangeRequest(deal, price, duration)`. Returns the request.
    pub async fn create_change_request(
        &self,
        deal: DealId,
        price: u128,
        duration: u64,
    ) -> Result<u64, ChainError> {
        const WHAT: &str = "createChangeRequest";
        let state = self.deal_state(deal, WHAT).await?;
        let (market, sender) = (self.market(), self.sender.clone());
        let receipt = Compat::new(async move {
            let call =
                market.createChangeRequest(U256::from(deal), state, U256::from(price), duration);
            sender.send(WHAT, call).await
        })
        .await?;
        let event = tx::event::<Market::ChangeRequestCreated>(WHAT, &receipt)?;
        u64::try_from(event.requestId).map_err(|_| ChainError::Range("request id"))
    }

    /// `approveChangeRequest(id)` (`approve`) or `cancelChangeRequest(id)`.
    pub async fn decide_change_request(&self, id: u64, approve: bool) -> Result<(), ChainError> {
        let (market, id) = (self.market(), U256::from(id));
        let deal = Compat::new(async move { market.changeRequests(id).call().await })
            .await
            .map_err(call_err("changeRequests"))?
            .dealId;
        let what = if approve {
            "approveChangeRequest"
        } else {
            "cancelChangeRequest"
        };
        let state = self.deal_state(deal, what).await?;
        let (market, sender) = (self.market(), self.sender.clone());
        Compat::new(async move {
            if approve {
                let call = market.approveChangeRequest(id, state);
                sender.send("approveChangeRequest", call).await
            } else {
                let call = market.cancelChangeRequest(id, state);
                sender.send("cancelChangeRequest", call).await
            }
        })
        .await?;
        Ok(())
    }

    /// The change requests of `deal` (all of them, if `deal` is `None`, only `id`), oldest
    /// first.
    pub async fn change_requests(
        &self,
        deal: Option<DealId>,
        id: Option<u64>,
    ) -> Result<Vec<ChangeRequestView>, ChainError> {
        let (market, from) = (self.market(), self.first_block());
        let m = market.clone();
        let created = Compat::new(async move {
            let mut f = m.ChangeRequestCreated_filter().from_block(from);
            if let Some(d) = deal {
                f = f.topic2(U256::from(d));
            }
            if let Some(i) = id {
                f = f.topic1(U256::from(i));
            }
            f.query_windowed().await
        })
        .await
        .map_err(call_err("ChangeRequestCreated logs"))?;
        let mut out = Vec::with_capacity(created.len());
        for (e, _) in created {
            let market = market.clone();
            let request = e.requestId;
            let r = Compat::new(async move { market.changeRequests(request).call().await })
                .await
                .map_err(call_err("changeRequests"))?;
            let status = change_status(r.status).ok_or(ChainError::Range("change status"))?;
            out.push(ChangeRequestView {
                id: u64::try_from(e.requestId).map_err(|_| ChainError::Range("request id"))?,
                deal: r.dealId,
                requester: e.requester,
                price: r.price.to::<u128>(),
                duration: r.duration.to::<u64>(),
                status,
            });
        }
        Ok(out)
    }

    /// `SNM.transfer(to, amount)`.
    pub async fn transfer(&self, to: Address, amount: U256) -> Result<(), ChainError> {
        let (snm, sender) = (self.snm(), self.sender.clone());
        Compat::new(async move { sender.send("transfer", snm.transfer(to, amount)).await }).await?;
        Ok(())
    }

    /// `SNM.approve(market, amount)`: what the Market may pull from now on.
    pub async fn approve_market(&self, amount: U256) -> Result<(), ChainError> {
        let (snm, sender, market) = (
            self.snm(),
            self.sender.clone(),
            self.addresses.contracts.market,
        );
        Compat::new(async move { sender.send("approve", snm.approve(market, amount)).await })
            .await?;
        Ok(())
    }

    /// `Market.confirmWorker(worker)`: the node's key becomes `worker`'s master (the worker
    /// must have asked with `registerWorker`; the chain refuses otherwise).
    pub async fn confirm_worker(&self, worker: Address) -> Result<(), ChainError> {
        let (market, sender) = (self.market(), self.sender.clone());
        Compat::new(async move {
            sender
                .send("confirmWorker", market.confirmWorker(worker))
                .await
        })
        .await?;
        Ok(())
    }

    /// The master `worker` is paid to (itself when it has none).
    pub async fn master_of(&self, worker: Address) -> Result<Address, ChainError> {
        let market = self.market();
        Compat::new(async move { market.masterOf(worker).call().await })
            .await
            .map_err(call_err("masterOf"))
    }

    /// `Blacklist.add(who)` or `Blacklist.remove(who)` on the node's own list.
    pub async fn set_listed(&self, who: Address, listed: bool) -> Result<(), ChainError> {
        let (blacklist, sender) = (self.blacklist(), self.sender.clone());
        Compat::new(async move {
            if listed {
                sender.send("blacklist add", blacklist.add(who)).await
            } else {
                sender.send("blacklist remove", blacklist.remove(who)).await
            }
        })
        .await?;
        Ok(())
    }

    /// The addresses `owner` lists now: those its `Blacklisted` logs name, still listed.
    pub async fn blacklist_of(&self, owner: Address) -> Result<Vec<Address>, ChainError> {
        let (blacklist, from) = (self.blacklist(), self.first_block());
        let b = blacklist.clone();
        let added = Compat::new(async move {
            b.Blacklisted_filter()
                .topic1(owner.into_word())
                .from_block(from)
                .query_windowed()
                .await
        })
        .await
        .map_err(call_err("Blacklisted logs"))?;
        let mut candidates: Vec<Address> = added.into_iter().map(|(e, _)| e.who).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut out = Vec::new();
        for who in candidates {
            let b = blacklist.clone();
            let listed = Compat::new(async move { b.isListed(owner, who).call().await })
                .await
                .map_err(call_err("isListed"))?;
            if listed {
                out.push(who);
            }
        }
        Ok(out)
    }

    /// `who`'s identity level, confirmed master and certificates (from `CertificateIssued`
    /// logs, each read back for whether it was revoked).
    pub async fn profile(&self, who: Address) -> Result<ProfileView, ChainError> {
        let (profiles, market, from) = (self.profiles(), self.market(), self.first_block());
        let (level, master, issued) = Compat::new(async move {
            let level = profiles
                .levelOf(who)
                .call()
                .await
                .map_err(call_err("levelOf"))?;
            let master = market
                .masterOf(who)
                .call()
                .await
                .map_err(call_err("masterOf"))?;
            let issued = profiles
                .CertificateIssued_filter()
                .topic3(who.into_word())
                .from_block(from)
                .query_windowed()
                .await
                .map_err(call_err("CertificateIssued logs"))?;
            let mut certificates = Vec::with_capacity(issued.len());
            for (e, _) in issued {
                let c = profiles
                    .getCertificate(e.id)
                    .call()
                    .await
                    .map_err(call_err("getCertificate"))?;
                certificates.push(CertificateView {
                    id: u64::try_from(e.id).map_err(|_| ChainError::Range("certificate id"))?,
                    validator: c.validator,
                    attribute_type: c.attributeType.to_string(),
                    value: c.value.to_string(),
                    revoked: c.revoked,
                });
            }
            Ok::<_, ChainError>((level, master, certificates))
        })
        .await?;
        Ok(ProfileView {
            address: who,
            identity_level: IdentityLevel::try_from(u64::from(level))?,
            master: (master != who).then_some(master),
            certificates: issued,
        })
    }
}
