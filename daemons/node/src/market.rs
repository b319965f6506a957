//! Market search for the customer: where the open asks come from ([`AskSource`]) and which of
//! them match a bid built from the customer's spec (the match rule of `sonm-market`).
//!
//! Two sources: [`DwhAsks`] asks a `sonm-dwh` over HTTP (its `GET /v1/orders` with the price,
//! duration, netflags, benchmarks and counterparty filters, page by page, cheapest first), and
//! [`ChainAsks`] reads the chain's logs (`OrderPlaced` asks minus those cancelled or taken by a
//! deal, scanned incrementally from the deployment block) when no DWH is configured. Either
//! way a source only narrows the book: the node judges every candidate with
//! `sonm_market::check_match` itself (identity levels, blacklists and masters from the chain).

use std::collections::BTreeMap;
use std::sync::Mutex;

use alloy::primitives::B256;
use alloy::sol_types::Eip712Domain;
use serde::Deserialize;
use sonm_contracts::{
    Market, SignatureError, recover_signed_order, signed_order_digest, signed_ref,
};
use sonm_dwh_client::{OrderRow, Page, SignedOrder};
use sonm_market::{
    Address, Benchmark, Benchmarks, IdentityLevel, MAX_PRICE, MatchContext, NetFlags, Order,
    OrderId, OrderType, StaticContext, check_match, scan_best_asks,
};

use alloy::primitives::{Bytes, U256};
use sonm_market::DealId;

use crate::chain::{Chain, ChainError, Role};
use crate::records::{CertificateView, ChangeRequestView, OrderRecord, ProfileView};

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("{0}")]
    Source(String),
    /// The DWH could not be reached or gave an answer we cannot use.
    #[error("DWH {url}: {message}")]
    Dwh { url: String, message: String },
}

/// One page of a search: asks that may match, cheapest first (ties by id), and where the next
/// page starts (`None`: there is no more).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AskPage {
    pub asks: Vec<Order>,
    pub next: Option<String>,
}

/// Where the active asks come from. Blocking: called from the API's worker threads.
pub trait AskSource: Send + Sync + std::fmt::Debug {
    /// Active asks that may match `query`, from `cursor` (a previous page's `next`). A source
    /// may return more than matches (every active ask, for example), never fewer: the caller
    /// applies the match rule.
    fn search(&self, query: &AskQuery, cursor: Option<&str>) -> Result<AskPage, MarketError>;

    /// One active ask, or `None` if it is unknown, cancelled or taken.
    fn active_ask(&self, id: OrderId) -> Result<Option<Order>, MarketError>;
}

/// Asks from the chain's logs, kept in memory and brought up to date on every query.
#[derive(Debug)]
pub struct ChainAsks {
    chain: Chain,
    state: Mutex<Scan>,
}

#[derive(Debug)]
struct Scan {
    /// The next block to scan.
    next: u64,
    asks: BTreeMap<OrderId, Order>,
}

impl ChainAsks {
    pub fn new(chain: Chain) -> Self {
        let next = chain.addresses().deploy_block;
        Self {
            chain,
            state: Mutex::new(Scan {
                next,
                asks: BTreeMap::new(),
            }),
        }
    }

    /// Every active ask.
    pub fn active_asks(&self) -> Result<Vec<Order>, MarketError> {
        let mut scan = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let chain = &self.chain;
        let latest = crate::block_on(chain.block_number())?;
        if latest >= scan.next {
            let (placed, gone) = crate::block_on(chain.ask_events(scan.next, latest))?;
            // An order is removed only after it was placed: placements first, then removals.
            for ask in placed {
                scan.asks.insert(ask.id, ask);
            }
            for id in gone {
                scan.asks.remove(&id);
            }
            scan.next = latest + 1;
        }
        Ok(scan.asks.values().cloned().collect())
    }
}

impl AskSource for ChainAsks {
    /// Every active ask, in one page.
    fn search(&self, _query: &AskQuery, _cursor: Option<&str>) -> Result<AskPage, MarketError> {
        Ok(AskPage {
            asks: self.active_asks()?,
            next: None,
        })
    }

    fn active_ask(&self, id: OrderId) -> Result<Option<Order>, MarketError> {
        Ok(self.active_asks()?.into_iter().find(|o| o.id == id))
    }
}

/// Asks from a `sonm-dwh`'s HTTP API (`GET /v1/orders`, `GET /v1/orders/{id}`).
///
/// The DWH filters what it can from the order alone: price, duration, netflags, benchmarks
/// and the ask's counterparty (`counterparty=` the customer keeps asks naming us or nobody).
/// What needs other parties' state (identity levels, blacklists, a supplier's master when the
/// customer names a supplier) stays with the node's `check_match` pass. The DWH lags the
/// chain by its `confirmations`; `quickBuy` re-checks everything on chain.
#[derive(Debug)]
pub struct DwhAsks {
    dwh: Dwh,
    me: Address,
}

/// The node's view of a `sonm-dwh`'s query API, for the market search and for the node's own
/// records (orders, deals, change requests, blacklist, profiles); requests go through the one
/// DWH client (sonm-dwh-client).
#[derive(Debug, Clone)]
pub struct Dwh {
    client: sonm_dwh_client::Dwh,
}

/// `GET /v1/orders` pages are at most this long (the DWH's own limit).
pub const DWH_MAX_PAGE: usize = sonm_dwh_client::MAX_PAGE;

impl DwhAsks {
    /// A source asking `dwh` on behalf of `me`.
    pub fn new(dwh: Dwh, me: Address) -> Self {
        Self { dwh, me }
    }
}

impl Dwh {
    /// The DWH at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self {
            client: sonm_dwh_client::Dwh::new(base),
        }
    }

    /// The signed asks of the DWH's book that may match `query` for `me`, cheapest first, at
    /// most `max`: filtered by the DWH as the placed asks are (price, durations, netflags,
    /// benchmarks, counterparty; the supplier's when named); the rest of the rule is the
    /// caller's.
    pub fn signed_asks(
        &self,
        query: &AskQuery,
        me: Address,
        max: usize,
    ) -> Result<Vec<SignedOrder>, MarketError> {
        // The signed book takes the placed listing's filters but a status; pages are followed.
        let mut params: Vec<(&str, String)> = dwh_order_params(query, me, None)
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "status" | "limit"))
            .collect();
        if let Some(supplier) = query.supplier {
            params.push(("author", supplier.to_string()));
        }
        self.client
            .all("/v1/signed-orders", &params, max)
            .map(|listing| listing.items)
            .map_err(|e| MarketError::Dwh {
                url: e.url,
                message: e.message,
            })
    }

    /// The signed order `digest` if the DWH's book has it live.
    pub fn signed_order(&self, digest: B256) -> Result<Option<SignedOrder>, MarketError> {
        self.client
            .signed_order(digest)
            .map_err(|e| MarketError::Dwh {
                url: e.url,
                message: e.message,
            })
    }

    fn err(&self, message: impl Into<String>) -> MarketError {
        MarketError::Dwh {
            url: self.client.base().to_owned(),
            message: message.into(),
        }
    }

    /// GETs `path` with `params`; `Ok(None)` on 404.
    pub fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Option<T>, MarketError> {
        self.client.get(path, params).map_err(|e| MarketError::Dwh {
            url: e.url,
            message: e.message,
        })
    }
}

/// The DWH's `GET /v1/orders` parameters for the asks that may match `query` for `me`.
pub fn dwh_order_params(
    query: &AskQuery,
    me: Address,
    cursor: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut p = vec![("type", "ask".to_owned()), ("status", "active".to_owned())];
    if query.max_price < MAX_PRICE {
        p.push(("price_max", query.max_price.to_string()));
    }
    // The rule's durations: a spot bid takes spot asks only; a forward bid asks at least
    // as long (which leaves spot asks out, as they are 0).
    if query.duration == 0 {
        p.push(("duration_max", "0".to_owned()));
    } else {
        p.push(("duration_min", query.duration.to_string()));
    }
    if query.netflags != NetFlags::default() {
        p.push(("netflags", u64::from(query.netflags).to_string()));
    }
    let benchmarks: Vec<String> = Benchmark::ALL
        .into_iter()
        .filter(|&b| query.benchmarks.get(b) != 0)
        .map(|b| format!("{}={}", b.name(), query.benchmarks.get(b)))
        .collect();
    if !benchmarks.is_empty() {
        p.push(("benchmarks", benchmarks.join(",")));
    }
    // Asks naming another customer are not for us.
    p.push(("counterparty", me.to_string()));
    // Enough for the caller's page after the identity and blacklist pass drops some.
    p.push((
        "limit",
        query
            .limit
            .saturating_mul(2)
            .clamp(10, DWH_MAX_PAGE)
            .to_string(),
    ));
    if let Some(c) = cursor {
        p.push(("cursor", c.to_owned()));
    }
    p
}

impl AskSource for DwhAsks {
    fn search(&self, query: &AskQuery, cursor: Option<&str>) -> Result<AskPage, MarketError> {
        let params = dwh_order_params(query, self.me, cursor);
        let page: Page<OrderRow> = self
            .dwh
            .get("/v1/orders", &params)?
            .ok_or_else(|| self.dwh.err("GET /v1/orders: 404 (not a sonm-dwh?)"))?;
        Ok(AskPage {
            asks: page
                .items
                .into_iter()
                .filter(|r| r.status == "active" && r.order.order_type == OrderType::Ask)
                .map(|r| r.order)
                .collect(),
            next: page.next,
        })
    }

    fn active_ask(&self, id: OrderId) -> Result<Option<Order>, MarketError> {
        let row: Option<OrderRow> = self.dwh.get(&format!("/v1/orders/{id}"), &[])?;
        Ok(row
            .filter(|r| r.status == "active" && r.order.order_type == OrderType::Ask)
            .map(|r| r.order))
    }
}

/// The most pages one listing reads from the DWH (a page is up to [`DWH_MAX_PAGE`] rows).
const DWH_MAX_LIST_PAGES: usize = 100;

/// A DWH page of any rows.
/// The DWH's deal row: only the id is read (the node shows the chain's `getDeal`).
#[derive(Debug, Deserialize)]
struct DwhDealRow {
    deal: DwhDealId,
}

#[derive(Debug, Deserialize)]
struct DwhDealId {
    id: DealId,
}

/// The DWH's profile.
#[derive(Debug, Deserialize)]
struct DwhProfile {
    address: Address,
    identity_level: IdentityLevel,
    master: Option<Address>,
    certificates: Vec<DwhCertificate>,
}

#[derive(Debug, Deserialize)]
struct DwhCertificate {
    id: u64,
    validator: Address,
    attribute_type: U256,
    value: Bytes,
    revoked: bool,
}

/// The node's own records through the DWH.
impl Dwh {
    /// Every row of a paged listing (at most [`DWH_MAX_LIST_PAGES`] pages: more is an error,
    /// not a silently short list).
    fn all<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&'static str, String)],
    ) -> Result<Vec<T>, MarketError> {
        let listing = self
            .client
            .all(path, params, DWH_MAX_LIST_PAGES * DWH_MAX_PAGE)
            .map_err(|e| MarketError::Dwh {
                url: e.url,
                message: e.message,
            })?;
        if listing.truncated {
            return Err(self.err(format!("GET {path}: more than {DWH_MAX_LIST_PAGES} pages")));
        }
        Ok(listing.items)
    }

    /// `author`'s orders of every type and status, by id.
    pub fn orders_of(&self, author: Address) -> Result<Vec<OrderRecord>, MarketError> {
        let mut out = Vec::new();
        for t in ["bid", "ask"] {
            for status in ["active", "cancelled", "matched"] {
                let params = [
                    ("type", t.to_owned()),
                    ("status", status.to_owned()),
                    ("author", author.to_string()),
                ];
                out.extend(self.all::<OrderRecord>("/v1/orders", &params)?);
            }
        }
        out.sort_by_key(|r| r.order.id);
        Ok(out)
    }

    pub fn order(&self, id: OrderId) -> Result<Option<OrderRecord>, MarketError> {
        self.get(&format!("/v1/orders/{id}"), &[])
    }

    /// The ids of the deals `party` is in as `role`, by id.
    pub fn deal_ids(&self, party: Address, role: Role) -> Result<Vec<DealId>, MarketError> {
        let role = match role {
            Role::Any => "any",
            Role::Consumer => "consumer",
            Role::Supplier => "supplier",
        };
        let params = [("party", party.to_string()), ("role", role.to_owned())];
        let mut ids: Vec<DealId> = self
            .all::<DwhDealRow>("/v1/deals", &params)?
            .into_iter()
            .map(|r| r.deal.id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub fn change_requests(&self, deal: DealId) -> Result<Vec<ChangeRequestView>, MarketError> {
        Ok(self
            .get(&format!("/v1/deals/{deal}/change-requests"), &[])?
            .unwrap_or_default())
    }

    pub fn blacklist_of(&self, owner: Address) -> Result<Vec<Address>, MarketError> {
        Ok(self
            .get(&format!("/v1/blacklists/{owner}"), &[])?
            .unwrap_or_default())
    }

    pub fn profile(&self, who: Address) -> Result<ProfileView, MarketError> {
        let p: DwhProfile = self
            .get(&format!("/v1/profiles/{who}"), &[])?
            .ok_or_else(|| self.err(format!("GET /v1/profiles/{who}: 404")))?;
        Ok(ProfileView {
            address: p.address,
            identity_level: p.identity_level,
            master: p.master,
            certificates: p
                .certificates
                .into_iter()
                .map(|c| CertificateView {
                    id: c.id,
                    validator: c.validator,
                    attribute_type: c.attribute_type.to_string(),
                    value: c.value.to_string(),
                    revoked: c.revoked,
                })
                .collect(),
        })
    }
}

/// What a customer looks for; unset fields ask nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskQuery {
    pub benchmarks: Benchmarks,
    /// Highest acceptable price, SNM wei per second.
    pub max_price: u128,
    /// 0: spot; otherwise a forward deal of this many seconds.
    pub duration: u64,
    pub netflags: NetFlags,
    /// Asks of this supplier only.
    pub supplier: Option<Address>,
    pub limit: usize,
}

impl Default for AskQuery {
    fn default() -> Self {
        Self {
            benchmarks: Benchmarks::ZERO,
            max_price: MAX_PRICE,
            duration: 0,
            netflags: NetFlags::default(),
            supplier: None,
            limit: 100,
        }
    }
}

impl AskQuery {
    /// The bid the customer would place: what the asks are matched against.
    pub fn bid(&self, me: Address) -> Order {
        Order {
            id: 0,
            order_type: OrderType::Bid,
            author: me,
            counterparty: self.supplier,
            duration: self.duration,
            price: self.max_price,
            netflags: self.netflags,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: Default::default(),
            benchmarks: self.benchmarks,
        }
    }
}

/// The asks that could match `query` for `me` whatever the profiles and blacklists say (as if
/// `me` had the highest identity level and nobody listed anybody): what is worth looking up.
pub fn candidate_asks(asks: Vec<Order>, query: &AskQuery, me: Address) -> Vec<Order> {
    let bid = query.bid(me);
    let mut loose = StaticContext::default();
    loose.levels.insert(me, IdentityLevel::Professional);
    asks.into_iter()
        .filter(|ask| check_match(&bid, ask, &loose).is_ok())
        .collect()
}

/// The asks that match `query` for `me` under `ctx`, cheapest first (ties by id), at most
/// `query.limit`: `sonm_market::scan_best_asks`, the match rule's reference search. The chain
/// re-checks everything in `quickBuy`.
pub fn matching_asks(
    asks: &[Order],
    query: &AskQuery,
    me: Address,
    ctx: &impl MatchContext,
) -> Vec<Order> {
    let bid = query.bid(me);
    let ids = scan_best_asks(asks, &bid, query.limit, ctx);
    ids.into_iter()
        .filter_map(|id| asks.iter().find(|a| a.id == id).cloned())
        .collect()
}

/// Sorts asks as the search returns them: cheapest first, ties by id.
pub fn sort_cheapest_first(asks: &mut [Order]) {
    asks.sort_by_key(|a| (a.price, a.id));
}

/// Seconds a signed ask must stay usable after the node decides to buy it: the transaction must
/// land in a block before the ask's last second.
pub const SIGNED_ASK_MARGIN_S: u64 = 60;

/// Why a signed ask the DWH served is not bought (or not listed): the node re-checks what it
/// is handed, as the chain will.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedAskError {
    #[error("signed order {0} is a bid, not an ask")]
    NotAnAsk(B256),
    #[error("the DWH served signed order {served} for {asked}: its fields hash to {computed}")]
    WrongDigest {
        asked: B256,
        served: B256,
        computed: B256,
    },
    #[error("signed ask {digest}: {source}")]
    Signature {
        digest: B256,
        #[source]
        source: SignatureError,
    },
    #[error("signed ask {digest} is signed by {signer}, not by its author {author}")]
    NotAuthor {
        digest: B256,
        signer: Address,
        author: Address,
    },
    #[error(
        "signed ask {digest} expires at {expiry}: less than {SIGNED_ASK_MARGIN_S} s from now ({now})"
    )]
    Expiring { digest: B256, expiry: u64, now: u64 },
}

/// `signed`, served by a DWH for `digest`, checked as the Market will check it (and more: its
/// digest is the one asked for, it lasts [`SIGNED_ASK_MARGIN_S`] more), and turned into the
/// `OrderRef` that `quickBuy` takes. Pure.
pub fn verify_signed_ask(
    signed: &SignedOrder,
    digest: B256,
    domain: &Eip712Domain,
    now: u64,
) -> Result<Market::OrderRef, SignedAskError> {
    if signed.order.order_type != OrderType::Ask {
        return Err(SignedAskError::NotAnAsk(digest));
    }
    let order_ref = signed_ref(
        &signed.order,
        signed.expiry,
        signed.nonce,
        signed.signature.clone(),
    );
    let computed = signed_order_digest(&order_ref.order, signed.expiry, signed.nonce, domain);
    if computed != digest || signed.digest != digest {
        return Err(SignedAskError::WrongDigest {
            asked: digest,
            served: signed.digest,
            computed,
        });
    }
    let signer = recover_signed_order(&order_ref, domain)
        .map_err(|source| SignedAskError::Signature { digest, source })?;
    if signer != signed.order.author {
        return Err(SignedAskError::NotAuthor {
            digest,
            signer,
            author: signed.order.author,
        });
    }
    if signed.expiry < now.saturating_add(SIGNED_ASK_MARGIN_S) {
        return Err(SignedAskError::Expiring {
            digest,
            expiry: signed.expiry,
            now,
        });
    }
    Ok(order_ref)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonm_market::Benchmark;

    fn ask(id: OrderId, price: u128, cores: u64, duration: u64) -> Order {
        Order {
            id,
            order_type: OrderType::Ask,
            author: Address::repeat_byte(1),
            counterparty: None,
            duration,
            price,
            netflags: NetFlags::OUTBOUND,
            identity_level: IdentityLevel::Anonymous,
            blacklist: None,
            tag: Default::default(),
            benchmarks: Benchmarks::ZERO.with(Benchmark::CpuCores, cores),
        }
    }

    #[test]
    fn asks_match_by_spec_price_and_duration_cheapest_first() {
        let me = Address::repeat_byte(9);
        let ctx = StaticContext::default();
        let asks = [
            ask(1, 30, 4, 0),
            ask(2, 10, 1, 0),
            ask(3, 20, 2, 0),
            ask(4, 5, 8, 3600),
        ];
        let q = AskQuery {
            benchmarks: "cpu-cores=2".parse().unwrap(),
            ..AskQuery::default()
        };
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [3, 1]);
        let q = AskQuery { max_price: 25, ..q };
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [3]);
        let q = AskQuery {
            duration: 600,
            ..AskQuery::default()
        };
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [4]);
    }

    #[test]
    fn the_dwh_query_carries_the_filters_of_the_rule() {
        let me = Address::repeat_byte(9);
        let q = AskQuery {
            benchmarks: "cpu-cores=2,ram-size=1GiB".parse().unwrap(),
            max_price: 25,
            netflags: NetFlags::OUTBOUND,
            limit: 3,
            ..AskQuery::default()
        };
        let p: BTreeMap<_, _> = dwh_order_params(&q, me, Some("00ff")).into_iter().collect();
        assert_eq!(p["type"], "ask");
        assert_eq!(p["price_max"], "25");
        assert_eq!(p["duration_max"], "0");
        assert!(!p.contains_key("duration_min"));
        assert_eq!(p["netflags"], "1");
        assert_eq!(p["counterparty"], me.to_string());
        assert_eq!(p["cursor"], "00ff");
        assert_eq!(p["limit"], "10");
        // The DWH parses the benchmark vector back to the same values.
        assert_eq!(p["benchmarks"].parse::<Benchmarks>().unwrap(), q.benchmarks);
        // A forward search wants asks at least as long; no price bound when none was given.
        let q = AskQuery {
            duration: 600,
            ..AskQuery::default()
        };
        let p: BTreeMap<_, _> = dwh_order_params(&q, me, None).into_iter().collect();
        assert_eq!(p["duration_min"], "600");
        assert!(!p.contains_key("duration_max"));
        assert!(!p.contains_key("price_max") && !p.contains_key("benchmarks"));
        assert!(!p.contains_key("netflags") && !p.contains_key("cursor"));
        // What the DWH leaves in, the rule judges the same way: every ask it would return for
        // this query (duration >= 600) passes the loose check.
        let asks = vec![ask(1, 10, 1, 600), ask(2, 10, 1, 0), ask(3, 10, 1, 300)];
        let ids: Vec<_> = candidate_asks(asks, &q, me).iter().map(|a| a.id).collect();
        assert_eq!(ids, [1]);
    }

    #[test]
    fn identity_and_blacklists_come_from_the_context() {
        let me = Address::repeat_byte(9);
        let mut strict = ask(1, 10, 1, 0);
        strict.identity_level = IdentityLevel::Registered;
        let asks = vec![strict, ask(2, 20, 1, 0)];
        let q = AskQuery::default();
        // Both are worth looking up; an anonymous customer gets only the second.
        assert_eq!(candidate_asks(asks.clone(), &q, me).len(), 2);
        let mut ctx = StaticContext::default();
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [2]);
        ctx.levels.insert(me, IdentityLevel::Registered);
        let ids: Vec<_> = matching_asks(&asks, &q, me, &ctx)
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [1, 2]);
        // The supplier listed us.
        ctx.blacklists.insert((Address::repeat_byte(1), me));
        assert!(matching_asks(&asks, &q, me, &ctx).is_empty());
    }

    /// A signed ask by dev key 1, as a DWH would serve it, and the domain it is signed under.
    fn served_ask(expiry: u64) -> (SignedOrder, Eip712Domain) {
        let key: alloy::signers::local::PrivateKeySigner =
            sonm_contracts::anvil::DEV_KEYS[1].parse().unwrap();
        let domain = sonm_contracts::market_domain(31337, Address::repeat_byte(0x4d));
        let order = Order {
            author: key.address(),
            ..ask(0, 500, 2, 0)
        };
        let nonce = U256::from(3);
        let r = sonm_contracts::sign_order(&key, &order, expiry, nonce, &domain).unwrap();
        let digest = signed_order_digest(&r.order, expiry, nonce, &domain);
        let signed = SignedOrder {
            order,
            expiry,
            nonce,
            signature: r.signature,
            digest,
        };
        (signed, domain)
    }

    #[test]
    fn a_signed_ask_is_bought_only_as_its_author_signed_it() {
        let now = 1_000_000;
        let (good, domain) = served_ask(now + 3600);
        let d = good.digest;
        let r = verify_signed_ask(&good, d, &domain, now).unwrap();
        assert_eq!(
            (r.id, r.nonce, r.expiry),
            (U256::ZERO, U256::from(3), now + 3600)
        );

        // A field changed after signing: it no longer hashes to the digest asked for.
        let mut cheaper = good.clone();
        cheaper.order.price = 1;
        assert!(matches!(
            verify_signed_ask(&cheaper, d, &domain, now),
            Err(SignedAskError::WrongDigest { .. })
        ));
        // Another order served for the digest asked for.
        assert!(matches!(
            verify_signed_ask(&good, B256::repeat_byte(1), &domain, now),
            Err(SignedAskError::WrongDigest { .. })
        ));
        // Re-attributed to someone else, digest recomputed to match: the signature is not theirs.
        let mut stolen = good.clone();
        stolen.order.author = Address::repeat_byte(7);
        stolen.digest = signed_order_digest(
            &sonm_contracts::chain_order(&stolen.order),
            stolen.expiry,
            stolen.nonce,
            &domain,
        );
        assert!(matches!(
            verify_signed_ask(&stolen, stolen.digest, &domain, now),
            Err(SignedAskError::NotAuthor { .. })
        ));
        // Another chain's Market.
        let other = sonm_contracts::market_domain(1, Address::repeat_byte(0x4d));
        assert!(verify_signed_ask(&good, d, &other, now).is_err());
        // A garbled signature.
        let mut garbled = good.clone();
        garbled.signature = alloy::primitives::Bytes::from(vec![0u8; 64]);
        assert!(matches!(
            verify_signed_ask(&garbled, d, &domain, now),
            Err(SignedAskError::Signature { .. })
        ));
        // A bid.
        let mut bid = good.clone();
        bid.order.order_type = OrderType::Bid;
        assert_eq!(
            verify_signed_ask(&bid, d, &domain, now),
            Err(SignedAskError::NotAnAsk(d))
        );
        // Less than a minute left.
        let (soon, domain) = served_ask(now + SIGNED_ASK_MARGIN_S - 1);
        assert!(matches!(
            verify_signed_ask(&soon, soon.digest, &domain, now),
            Err(SignedAskError::Expiring { .. })
        ));
    }
}
