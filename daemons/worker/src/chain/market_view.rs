//! What the matcher and the autotrader read from the chain and send to it: whether an order is
//! active exactly as the DWH describes it, what the match rule needs about the parties, the
//! OracleUSD rate, and `openDeal`.

use alloy::primitives::{U256, keccak256};
use alloy::sol_types::SolValue;
use async_compat::Compat;
use sonm_contracts::tx;
use sonm_contracts::{Blacklist, Market, OracleUSD, ProfileRegistry, chain_order, placed_ref};
use sonm_market::{Address, DealId, IdentityLevel, Order, StaticContext};

use super::{Chain, ChainError, call_err};

impl Chain {
    /// Whether `order` is active on chain exactly as given: the Market keeps the hash of each
    /// active order (`keccak256(abi.encode(order))`, deleted when it is cancelled or taken),
    /// which is what `openDeal` checks.
    pub async fn order_live(&self, order: &Order) -> Result<bool, ChainError> {
        let market = self.market();
        let id = U256::from(order.id);
        let stored = Compat::new(async move { market.orderHashes(id).call().await })
            .await
            .map_err(call_err("orderHashes"))?;
        Ok(!stored.is_zero() && stored == keccak256(chain_order(order).abi_encode()))
    }

    /// The profile registry's identity level of `who`.
    pub async fn level_of(&self, who: Address) -> Result<IdentityLevel, ChainError> {
        let market = self.market();
        let provider = self.provider.clone();
        let level = Compat::new(async move {
            let registry = market.profiles().call().await?;
            ProfileRegistry::new(registry, provider)
                .levelOf(who)
                .call()
                .await
        })
        .await
        .map_err(call_err("levelOf"))?;
        IdentityLevel::try_from(u64::from(level)).map_err(|_| ChainError::Range("identity level"))
    }

    /// What the match rule needs to judge `bid` against our `ask`, read from the chain: both
    /// parties' levels, our master, and the four blacklist entries `openDeal` checks.
    pub async fn match_context(
        &self,
        bid: &Order,
        ask: &Order,
    ) -> Result<StaticContext, ChainError> {
        let (consumer, supplier) = (bid.author, ask.author);
        let mut ctx = StaticContext::default();
        ctx.levels.insert(consumer, self.level_of(consumer).await?);
        ctx.levels.insert(supplier, self.level_of(supplier).await?);
        let market = self.market();
        let master = Compat::new(async move { market.masterOf(supplier).call().await })
            .await
            .map_err(call_err("masterOf"))?;
        ctx.masters.insert(supplier, master);
        let pairs = [
            Some((consumer, master)),
            bid.blacklist.map(|l| (l, master)),
            Some((supplier, consumer)),
            ask.blacklist.map(|l| (l, consumer)),
        ];
        let market = self.market();
        let provider = self.provider.clone();
        let list = Compat::new(async move { market.blacklist().call().await })
            .await
            .map_err(call_err("blacklist"))?;
        let blacklist = Blacklist::new(list, provider);
        for (owner, who) in pairs.into_iter().flatten() {
            let b = blacklist.clone();
            let listed = Compat::new(async move { b.isListed(owner, who).call().await })
                .await
                .map_err(call_err("isListed"))?;
            if listed {
                ctx.blacklists.insert((owner, who));
            }
        }
        Ok(ctx)
    }

    /// OracleUSD's rate at `oracle`: USD per SNM × 1e18.
    pub async fn usd_rate(&self, oracle: Address) -> Result<u128, ChainError> {
        let o = OracleUSD::new(oracle, self.provider.clone());
        let price = Compat::new(async move { o.price().call().await })
            .await
            .map_err(call_err("OracleUSD.price"))?;
        u128::try_from(price).map_err(|_| ChainError::Range("OracleUSD price"))
    }

    /// `openDeal(ask, bid)`, as anyone may call it (here: the ask's supplier taking a bid).
    pub async fn open_deal(&self, ask: &Order, bid: &Order) -> Result<DealId, ChainError> {
        self.open_deal_ref(placed_ref(ask), bid).await
    }

    /// `openDeal(ask, placed bid)` with our ask as a reference: placed, or signed
    /// (`sonm_contracts::signed_ref`).
    pub async fn open_deal_ref(
        &self,
        ask: Market::OrderRef,
        bid: &Order,
    ) -> Result<DealId, ChainError> {
        const WHAT: &str = "openDeal";
        let market = self.market();
        let call = market.openDeal(ask, placed_ref(bid));
        let receipt = self.send(WHAT, call).await?;
        let event = tx::event::<Market::DealOpened>(WHAT, &receipt)?;
        u64::try_from(event.dealId).map_err(|_| ChainError::Range("deal id"))
    }
}
