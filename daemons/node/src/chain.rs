//! The customer's side of the contracts, through `sonm-contracts`: balances, the Market allowance,
//! quick-buy, deals, closing. Every call runs inside `async_compat::Compat` (alloy's HTTP client
//! needs a tokio reactor), so callers stay on smol.

use alloy::primitives::{U256, aliases::U96};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest::Url;
use async_compat::Compat;
use serde::Serialize;
use sonm_contracts::{
    Addresses, Blacklist, Market, ProfileRegistry, SNM, chain_order, gas_with_margin,
    order_id_from_chain,
};
use sonm_market::{Address, DealId, IdentityLevel, Order, OrderId, StaticContext};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{what}: {message}")]
    Call { what: &'static str, message: String },
    /// The contract refused: its custom error, decoded.
    #[error("{what} refused by the Market contract: {reason}")]
    Refused { what: &'static str, reason: String },
    #[error("{what}: transaction reverted")]
    Reverted { what: &'static str },
    #[error("{what}: the receipt has no {event} event")]
    NoEvent {
        what: &'static str,
        event: &'static str,
    },
    #[error("chain id is {actual}, the addresses file is for {expected}")]
    WrongChain { expected: u64, actual: u64 },
    #[error("value out of range: {0}")]
    Range(&'static str),
    #[error("order read from the chain: {0}")]
    Order(#[from] sonm_contracts::ChainOrderError),
    #[error("identity level from the chain: {0}")]
    Level(#[from] sonm_market::OrderError),
}

fn call_err(what: &'static str) -> impl FnOnce(alloy::contract::Error) -> ChainError {
    move |e| match e.as_decoded_interface_error::<Market::MarketErrors>() {
        Some(reason) => ChainError::Refused {
            what,
            reason: format!("{reason:?}"),
        },
        None => ChainError::Call {
            what,
            message: e.to_string(),
        },
    }
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
}

fn as_string<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A deal as `getDeal` returns it, with what is derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DealView {
    pub id: DealId,
    /// `active`, `closed` (`getDeal` knows no other state for an existing deal).
    pub status: &'static str,
    pub supplier: Address,
    pub consumer: Address,
    pub master: Address,
    /// The ask and the bid it was opened from (from its `DealOpened` event).
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
    addresses: Addresses,
    me: Address,
}

impl Chain {
    /// Connects to `rpc_url` and checks that it is the chain of `addresses`.
    pub async fn connect(
        rpc_url: Url,
        signer: PrivateKeySigner,
        addresses: Addresses,
    ) -> Result<Self, ChainError> {
        let me = signer.address();
        let provider = sonm_contracts::deploy::signing_provider(rpc_url, signer);
        let p = provider.clone();
        let actual = Compat::new(async move { p.get_chain_id().await })
            .await
            .map_err(rpc_err("eth_chainId"))?;
        if actual != addresses.chain_id {
            return Err(ChainError::WrongChain {
                expected: addresses.chain_id,
                actual,
            });
        }
        Ok(Self {
            provider,
            addresses,
            me,
        })
    }

    pub fn address(&self) -> Address {
        self.me
    }

    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    fn market(&self) -> Market::MarketInstance<DynProvider> {
        Market::new(self.addresses.contracts.market, self.provider.clone())
    }

    fn snm(&self) -> SNM::SNMInstance<DynProvider> {
        SNM::new(self.addresses.contracts.snm, self.provider.clone())
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
            })
        })
        .await
    }

    /// Makes sure the Market may pull at least `needed` SNM wei (approves "unlimited" if not).
    pub async fn ensure_allowance(&self, needed: U256) -> Result<(), ChainError> {
        let (snm, me, market) = (self.snm(), self.me, self.addresses.contracts.market);
        Compat::new(async move {
            let have = snm
                .allowance(me, market)
                .call()
                .await
                .map_err(call_err("allowance"))?;
            if have >= needed {
                return Ok(());
            }
            let receipt = snm
                .approve(market, U256::MAX)
                .send()
                .await
                .map_err(call_err("approve"))?
                .get_receipt()
                .await
                .map_err(|e| ChainError::Call {
                    what: "approve",
                    message: e.to_string(),
                })?;
            if receipt.status() {
                Ok(())
            } else {
                Err(ChainError::Reverted { what: "approve" })
            }
        })
        .await
    }

    /// `quickBuy(ask, duration)`: the bid and the deal in one transaction. Returns the deal id.
    pub async fn quick_buy(&self, ask: &Order, duration: u64) -> Result<DealId, ChainError> {
        const WHAT: &str = "quickBuy";
        let market = self.market();
        let (id, chain) = (U256::from(ask.id), chain_order(ask));
        let receipt = Compat::new(async move {
            let call = market.quickBuy(id, chain, duration);
            let gas = call.estimate_gas().await.map_err(call_err(WHAT))?;
            let pending = call
                .gas(gas_with_margin(gas))
                .send()
                .await
                .map_err(call_err(WHAT))?;
            pending.get_receipt().await.map_err(|e| ChainError::Call {
                what: WHAT,
                message: e.to_string(),
            })
        })
        .await?;
        if !receipt.status() {
            return Err(ChainError::Reverted { what: WHAT });
        }
        let event = receipt
            .decoded_log::<Market::DealOpened>()
            .ok_or(ChainError::NoEvent {
                what: WHAT,
                event: "DealOpened",
            })?;
        u64::try_from(event.dealId).map_err(|_| ChainError::Range("deal id"))
    }

    /// The deal, or `None` if no deal has this id.
    pub async fn deal(&self, id: DealId) -> Result<Option<DealView>, ChainError> {
        let market = self.market();
        let r = Compat::new(async move { market.getDeal(U256::from(id)).call().await })
            .await
            .map_err(call_err("getDeal"))?;
        let d = r.deal;
        let status: u8 = d.status;
        let price: U96 = d.price;
        let status = match status {
            0 => return Ok(None),
            1 => "active",
            _ => "closed",
        };
        let market = self.market();
        let opened = Compat::new(async move {
            market
                .DealOpened_filter()
                .topic1(U256::from(id))
                .from_block(0)
                .query()
                .await
        })
        .await
        .map_err(call_err("DealOpened logs"))?;
        let (ask, bid) = match opened.first() {
            Some((e, _)) => (
                Some(order_id_from_chain(e.askId)?),
                Some(order_id_from_chain(e.bidId)?),
            ),
            None => (None, None),
        };
        Ok(Some(DealView {
            id,
            status,
            supplier: d.supplier,
            consumer: d.consumer,
            master: d.master,
            ask,
            bid,
            price: price.to::<u128>(),
            duration: d.duration.to::<u64>(),
            start: d.startTime.to::<u64>(),
            end: u64::try_from(r.endTime).map_err(|_| ChainError::Range("end time"))?,
            last_bill: d.lastBillTime.to::<u64>(),
            blocked: r.blocked,
        }))
    }

    /// `closeDeal(id, blacklist)`.
    pub async fn close_deal(&self, id: DealId, blacklist: bool) -> Result<(), ChainError> {
        const WHAT: &str = "closeDeal";
        let market = self.market();
        Compat::new(async move {
            let call = market.closeDeal(U256::from(id), blacklist);
            let gas = call.estimate_gas().await.map_err(call_err(WHAT))?;
            let receipt = call
                .gas(gas_with_margin(gas))
                .send()
                .await
                .map_err(call_err(WHAT))?
                .get_receipt()
                .await
                .map_err(|e| ChainError::Call {
                    what: WHAT,
                    message: e.to_string(),
                })?;
            if receipt.status() {
                Ok(())
            } else {
                Err(ChainError::Reverted { what: WHAT })
            }
        })
        .await
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
                .query()
                .await
                .map_err(call_err("OrderPlaced logs"))?;
            let cancelled = market
                .OrderCancelled_filter()
                .from_block(from)
                .to_block(to)
                .query()
                .await
                .map_err(call_err("OrderCancelled logs"))?;
            let dealt = market
                .DealOpened_filter()
                .from_block(from)
                .to_block(to)
                .query()
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
