//! The node: its key, the chain, the market source and the QUIC client towards workers, with
//! the operations the API exposes as plain methods (blocking: the API runs them on its threads).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::{Addresses, Market, placed_ref};
use sonm_dwh_client::SignedOrder;
use sonm_market::{
    Address, DealId, MAX_PRICE, Order, OrderId, OrderType, durations_agree, frozen_sum,
};
use sonm_net::{Endpoint, EthKey};
use sonm_rendezvous::{ClientConfig as RendezvousConfig, Path as RendezvousPath, RendezvousClient};
use sonm_worker::client::{ClientError, TaskClient, client_endpoint, client_endpoint_on};
use sonm_worker::proto::{ALPN, StartContainer, StartWasm, TaskId, TaskResult, TaskStatus};

use crate::block_on;
use crate::chain::Role;
use crate::chain::{Balance, Chain, DealView};
use crate::config::Config;
use crate::error::ApiError;
use crate::market::{
    AskQuery, AskSource, ChainAsks, Dwh, DwhAsks, candidate_asks, matching_asks,
    sort_cheapest_first, verify_signed_ask,
};
use crate::records::{
    ChangeRequestView, ChangeStatus, OrderRecord, OrderStatus, OrderView, ProfileView,
};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    #[error(transparent)]
    Addresses(#[from] sonm_contracts::AddressesError),
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    #[error("QUIC client: {0}")]
    Quic(#[from] ClientError),
    #[error("key: {0}")]
    Key(#[from] sonm_net::IdentityError),
    #[error("rendezvous server {0:?} is not a host:port that resolves")]
    RendezvousAddr(String),
    #[error(transparent)]
    MainChain(#[from] crate::gates::MainChainError),
    #[error("QUIC socket at {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Keep-alive of the node's QUIC endpoint when it talks to a rendezvous server: keeps the NAT
/// mapping towards the server (and a relayed path) open.
const RENDEZVOUS_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The node's side of the rendezvous: connected on first use, reconnected when the connection
/// has gone away, always on the node's one QUIC endpoint (punches leave from its socket).
#[derive(Debug)]
struct Rendezvous {
    config: RendezvousConfig,
    key: EthKey,
    /// A duplicate of the endpoint's UDP socket.
    raw: UdpSocket,
    client: Mutex<Option<RendezvousClient>>,
}

/// The most pages of a source one market search reads.
pub const MAX_SEARCH_PAGES: usize = 10;

/// The customer's node.
#[derive(Debug)]
pub struct Node {
    chain: Chain,
    asks: Box<dyn AskSource>,
    /// Where listings (orders, deals, change requests, blacklist, profiles) come from when
    /// set; the chain's logs otherwise. What the node acts on is always read from the chain
    /// (the DWH lags it by its confirmations).
    dwh: Option<Dwh>,
    endpoint: Endpoint,
    /// Worker → QUIC address: the config's, then what requests taught.
    workers: Mutex<BTreeMap<Address, SocketAddr>>,
    /// Connections by worker and address (`None`: reached through the rendezvous).
    clients: Mutex<HashMap<(Address, Option<SocketAddr>), TaskClient>>,
    rendezvous: Option<Rendezvous>,
    /// How each worker reached through the rendezvous was last connected.
    paths: Mutex<BTreeMap<Address, RendezvousPath>>,
    /// One chain writer at a time, so nonces stay in order.
    writer: Mutex<()>,
    /// `[main_chain]`: the other side of the Gates (deposits, withdrawals); see `gates`.
    main_chain: Option<crate::gates::MainChain>,
    /// Uploads to workers in flight, by the token their start request named: (bytes sent,
    /// total), for `GET /v1/transfers/{token}` (the CLI's progress bar).
    transfers: Mutex<HashMap<String, (u64, u64)>>,
}

impl Node {
    /// Opens the node from its configuration: decrypts the key, checks the chain.
    pub fn open(config: &Config) -> Result<Self, OpenError> {
        let signer = crate::keystore::load(&config.keystore, config.password_file.as_deref())?;
        let addresses = Addresses::read(&config.addresses)?;
        Self::with_signer(config, signer, addresses)
    }

    /// As [`Node::open`], with the key and addresses already loaded.
    pub fn with_signer(
        config: &Config,
        signer: PrivateKeySigner,
        addresses: Addresses,
    ) -> Result<Self, OpenError> {
        let key = EthKey::from_bytes(&signer.to_bytes().0)?;
        // The main chain signs with the same key (deposits go to the same address).
        let main_signer = signer.clone();
        let chain = block_on(Chain::connect(&config.rpc_url, signer, addresses))?;
        let main_chain = match &config.main_chain {
            Some(main) => Some(crate::gates::MainChain::open(
                main,
                main_signer,
                chain.addresses().chain_id,
            )?),
            None => None,
        };
        let (endpoint, rendezvous) = match &config.rendezvous {
            None => (client_endpoint(&key, config.quic_bind)?, None),
            Some(server) => {
                let addr = server
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| OpenError::RendezvousAddr(server.clone()))?;
                let socket_err = |source| OpenError::Socket {
                    addr: config.quic_bind,
                    source,
                };
                let socket = UdpSocket::bind(config.quic_bind).map_err(socket_err)?;
                let raw = socket.try_clone().map_err(socket_err)?;
                let local = socket.local_addr().map_err(socket_err)?;
                let endpoint = client_endpoint_on(&key, socket, Some(RENDEZVOUS_KEEP_ALIVE))?;
                let mut rv = RendezvousConfig::new(addr, config.rendezvous_address);
                if !local.ip().is_unspecified() {
                    rv.private = vec![local];
                }
                tracing::info!(rendezvous = %addr, "workers of unknown address are reached through the rendezvous");
                let rendezvous = Rendezvous {
                    config: rv,
                    key: key.clone(),
                    raw,
                    client: Mutex::new(None),
                };
                (endpoint, Some(rendezvous))
            }
        };
        let dwh = config.dwh_url.as_deref().map(Dwh::new);
        let asks: Box<dyn AskSource> = match &dwh {
            Some(client) => {
                tracing::info!(dwh = %config.dwh_url.as_deref().unwrap_or_default(), "market search through the DWH (and the node's own records)");
                Box::new(DwhAsks::new(client.clone(), chain.address()))
            }
            None => {
                tracing::info!("no dwh_url: market search through the chain's logs");
                Box::new(ChainAsks::new(chain.clone()))
            }
        };
        Ok(Self {
            asks,
            dwh,
            chain,
            endpoint,
            workers: Mutex::new(config.workers.clone()),
            clients: Mutex::new(HashMap::new()),
            rendezvous,
            paths: Mutex::new(BTreeMap::new()),
            writer: Mutex::new(()),
            main_chain,
            transfers: Mutex::new(HashMap::new()),
        })
    }

    /// The main chain, when `[main_chain]` is configured (the Gates' other side).
    pub(crate) fn main_chain(&self) -> Option<&crate::gates::MainChain> {
        self.main_chain.as_ref()
    }

    /// Held while sending on the node's own (SONM) chain, so nonces stay in order.
    pub(crate) fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces where asks come from.
    pub fn with_ask_source(mut self, asks: Box<dyn AskSource>) -> Self {
        self.asks = asks;
        self
    }

    pub fn address(&self) -> Address {
        self.chain.address()
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn balance(&self) -> Result<Balance, ApiError> {
        let mut balance = block_on(self.chain.balance())?;
        balance.main_chain = self.main_balance()?;
        Ok(balance)
    }

    /// The asks matching `query`, cheapest first, at most `query.limit`: the source's pages
    /// (cheapest first) judged by the match rule, until the limit is reached, the source has no
    /// more, or [`MAX_SEARCH_PAGES`] pages were read.
    pub fn find_asks(&self, query: &AskQuery) -> Result<Vec<Order>, ApiError> {
        let me = self.address();
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_SEARCH_PAGES {
            let page = self.asks.search(query, cursor.as_deref())?;
            let candidates = candidate_asks(page.asks, query, me);
            if !candidates.is_empty() {
                let ctx = block_on(self.chain.match_context(me, &candidates))?;
                found.extend(matching_asks(&candidates, query, me, &ctx));
            }
            cursor = page.next;
            if found.len() >= query.limit || cursor.is_none() {
                break;
            }
        }
        if cursor.is_some() && found.len() < query.limit {
            tracing::warn!(
                pages = MAX_SEARCH_PAGES,
                found = found.len(),
                "market search stopped after its page limit"
            );
        }
        sort_cheapest_first(&mut found);
        found.truncate(query.limit);
        Ok(found)
    }

    /// The signed asks of the DWH's book matching `query`, cheapest first, at most
    /// `query.limit`; none without a DWH. Each is checked as [`Node::quick_buy_signed`] checks
    /// it, and one that fails is left out (and logged): a DWH is not trusted.
    pub fn find_signed_asks(&self, query: &AskQuery) -> Result<Vec<SignedOrder>, ApiError> {
        let Some(dwh) = &self.dwh else {
            return Ok(Vec::new());
        };
        let me = self.address();
        let (domain, now) = (self.chain.market_domain(), unix_now());
        // The DWH filtered them as placed asks are; identity levels and blacklists remain.
        let listed = dwh.signed_asks(query, me, query.limit.saturating_mul(2).max(10))?;
        let usable: Vec<SignedOrder> = listed
            .into_iter()
            .filter(|s| match verify_signed_ask(s, s.digest, &domain, now) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "a signed ask from the DWH left out");
                    false
                }
            })
            .collect();
        let candidates =
            candidate_asks(usable.iter().map(|s| s.order.clone()).collect(), query, me);
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = block_on(self.chain.match_context(me, &candidates))?;
        let matching = matching_asks(&candidates, query, me, &ctx);
        // Signed asks carry id 0: judged by their order, equal orders alike.
        let mut found: Vec<SignedOrder> = usable
            .into_iter()
            .filter(|s| matching.contains(&s.order))
            .collect();
        found.sort_by_key(|s| (s.order.price, s.digest));
        found.truncate(query.limit);
        Ok(found)
    }

    /// Buys ask `ask_id` for `duration` seconds (0: spot) with `quickBuy`, approving the Market
    /// to pull SNM first if it may not. Returns the new deal.
    pub fn quick_buy(&self, ask_id: OrderId, duration: u64) -> Result<DealView, ApiError> {
        let ask = self
            .asks
            .active_ask(ask_id)?
            .ok_or_else(|| ApiError::NotFound(format!("no active ask {ask_id}")))?;
        if !durations_agree(duration, ask.duration) {
            return Err(ApiError::BadRequest(duration_refusal(
                &format!("ask {ask_id}"),
                ask.duration,
            )));
        }
        let deal = self.buy(&ask, placed_ref(&ask), duration, &format!("ask {ask_id}"))?;
        tracing::info!(deal, ask = ask_id, supplier = %ask.author, "deal opened by quick-buy");
        self.deal(deal)
    }

    /// Buys the signed ask `digest` of the DWH's book for `duration` seconds (0: spot) with
    /// `quickBuy`. The ask is checked here before anything is sent (its digest, its author's
    /// signature over the Market's domain, a minute of life left): a DWH is not trusted.
    pub fn quick_buy_signed(&self, digest: B256, duration: u64) -> Result<DealView, ApiError> {
        let dwh = self.dwh.as_ref().ok_or_else(|| {
            ApiError::BadRequest("signed asks are listed by a DWH: set dwh_url".into())
        })?;
        let signed = dwh
            .signed_order(digest)?
            .ok_or_else(|| ApiError::NotFound(format!("no live signed ask {digest}")))?;
        let order_ref = verify_signed_ask(&signed, digest, &self.chain.market_domain(), unix_now())
            .map_err(|e| ApiError::Conflict(e.to_string()))?;
        let label = format!("signed ask {digest}");
        if !durations_agree(duration, signed.order.duration) {
            return Err(ApiError::BadRequest(duration_refusal(
                &label,
                signed.order.duration,
            )));
        }
        let deal = self.buy(&signed.order, order_ref, duration, &label)?;
        tracing::info!(deal, %digest, supplier = %signed.order.author, "deal opened by quick-buy of a signed ask");
        self.deal(deal)
    }

    /// Approves what `quickBuy` of `ask` for `duration` blocks, if needed, and sends it.
    fn buy(
        &self,
        ask: &Order,
        order_ref: Market::OrderRef,
        duration: u64,
        label: &str,
    ) -> Result<DealId, ApiError> {
        let blocked = frozen_sum(ask.price, duration)
            .map_err(|e| ApiError::BadRequest(format!("{label}: {e}")))?;
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        block_on(self.chain.ensure_allowance(U256::from(blocked)))?;
        Ok(block_on(self.chain.quick_buy(order_ref, duration))?)
    }

    pub fn deal(&self, id: DealId) -> Result<DealView, ApiError> {
        block_on(self.chain.deal(id))?.ok_or_else(|| ApiError::NotFound(format!("no deal {id}")))
    }

    /// Closes our deal `id`, optionally blacklisting its supplier's master.
    pub fn close_deal(&self, id: DealId, blacklist: bool) -> Result<DealView, ApiError> {
        let deal = self.deal(id)?;
        let me = self.address();
        if deal.consumer != me && deal.supplier != me {
            return Err(ApiError::Forbidden(format!(
                "deal {id} is between {} and {}, not yours ({me})",
                deal.supplier, deal.consumer
            )));
        }
        if deal.status != "active" {
            return Err(ApiError::Conflict(format!("deal {id} is already closed")));
        }
        {
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            block_on(self.chain.close_deal(id, blacklist))?;
        }
        tracing::info!(deal = id, blacklist, "deal closed");
        self.deal(id)
    }

    /// Runs one chain write at a time (nonces stay in order).
    pub(crate) fn write<T>(&self, f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    /// Places `order` as the node's own (a bid's frozen sum is approved first if the Market's
    /// allowance is short). Returns it with its id.
    pub fn create_order(&self, mut order: Order) -> Result<OrderView, ApiError> {
        order.author = self.address();
        order
            .validate()
            .map_err(|e| ApiError::BadRequest(format!("order: {e}")))?;
        let id = self.write(|| {
            if order.order_type == OrderType::Bid {
                let frozen = order
                    .frozen_sum()
                    .map_err(|e| ApiError::BadRequest(format!("order: {e}")))?;
                block_on(self.chain.ensure_allowance(U256::from(frozen)))?;
            }
            Ok(block_on(self.chain.place_order(&order))?)
        })?;
        order.id = id;
        tracing::info!(order = id, kind = %order.order_type, "order placed");
        Ok(OrderView::from(&OrderRecord {
            order,
            status: OrderStatus::Active,
            deal: None,
        }))
    }

    /// The node's own orders, by id, optionally of one type and status.
    pub fn orders(
        &self,
        order_type: Option<OrderType>,
        status: Option<OrderStatus>,
    ) -> Result<Vec<OrderView>, ApiError> {
        let me = self.address();
        let records = match &self.dwh {
            Some(dwh) => dwh.orders_of(me)?,
            None => block_on(self.chain.orders_of(me))?,
        };
        Ok(records
            .iter()
            .filter(|r| order_type.is_none_or(|t| r.order.order_type == t))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .map(OrderView::from)
            .collect())
    }

    pub fn order(&self, id: OrderId) -> Result<OrderView, ApiError> {
        let record = match &self.dwh {
            Some(dwh) => dwh.order(id)?,
            None => block_on(self.chain.order(id))?,
        };
        record
            .as_ref()
            .map(OrderView::from)
            .ok_or_else(|| ApiError::NotFound(format!("no order {id}")))
    }

    /// An order as the chain has it now (what the node acts on).
    fn chain_order(&self, id: OrderId) -> Result<OrderRecord, ApiError> {
        block_on(self.chain.order(id))?.ok_or_else(|| ApiError::NotFound(format!("no order {id}")))
    }

    /// Cancels the node's own active order `id` (a bid's frozen sum returns).
    pub fn cancel_order(&self, id: OrderId) -> Result<OrderView, ApiError> {
        let mut record = self.chain_order(id)?;
        let me = self.address();
        if record.order.author != me {
            return Err(ApiError::Forbidden(format!(
                "order {id} is {}'s, not yours ({me})",
                record.order.author
            )));
        }
        if record.status != OrderStatus::Active {
            return Err(ApiError::Conflict(format!(
                "order {id} is not active ({})",
                record.status
            )));
        }
        self.write(|| Ok(block_on(self.chain.cancel_order(&record.order))?))?;
        tracing::info!(order = id, "order cancelled");
        record.status = OrderStatus::Cancelled;
        Ok(OrderView::from(&record))
    }

    /// Opens a deal from an active ask and an active bid (`openDeal`; anyone may, the chain
    /// checks that they match).
    pub fn open_deal(&self, ask_id: OrderId, bid_id: OrderId) -> Result<DealView, ApiError> {
        let ask = self.chain_order(ask_id)?;
        let bid = self.chain_order(bid_id)?;
        for (r, want) in [(&ask, OrderType::Ask), (&bid, OrderType::Bid)] {
            if r.order.order_type != want {
                return Err(ApiError::BadRequest(format!(
                    "order {} is a {}, not a {want}",
                    r.order.id, r.order.order_type
                )));
            }
            if r.status != OrderStatus::Active {
                return Err(ApiError::Conflict(format!(
                    "order {} is not active ({})",
                    r.order.id, r.status
                )));
            }
        }
        let deal = self.write(|| Ok(block_on(self.chain.open_deal(&ask.order, &bid.order))?))?;
        tracing::info!(deal, ask = ask_id, bid = bid_id, "deal opened");
        self.deal(deal)
    }

    /// The node's deals as `role`, by id, optionally only `active` or `closed` ones.
    pub fn deals(&self, role: Role, status: Option<&str>) -> Result<Vec<DealView>, ApiError> {
        let me = self.address();
        let ids = match &self.dwh {
            Some(dwh) => dwh.deal_ids(me, role)?,
            None => block_on(self.chain.deal_ids(me, role))?,
        };
        let mut out = Vec::with_capacity(ids.len());
        // The chain's view of each: the DWH only says which.
        for id in ids {
            let deal = self.deal(id)?;
            if status.is_none_or(|s| deal.status == s) {
                out.push(deal);
            }
        }
        Ok(out)
    }

    /// Our active deal `id`, or why we may not act on it.
    fn our_active_deal(&self, id: DealId) -> Result<DealView, ApiError> {
        let deal = self.deal(id)?;
        let me = self.address();
        if deal.consumer != me && deal.supplier != me {
            return Err(ApiError::Forbidden(format!(
                "deal {id} is between {} and {}, not yours ({me})",
                deal.supplier, deal.consumer
            )));
        }
        if deal.status != "active" {
            return Err(ApiError::Conflict(format!("deal {id} is closed")));
        }
        Ok(deal)
    }

    /// Asks the other side of deal `id` for a new price (and duration, for a forward deal).
    /// A change that only favours the other side applies at once (status `approved`).
    pub fn create_change_request(
        &self,
        deal: DealId,
        price: u128,
        duration: u64,
    ) -> Result<ChangeRequestView, ApiError> {
        self.our_active_deal(deal)?;
        if price > MAX_PRICE {
            return Err(ApiError::BadRequest(format!(
                "price {price} is over the chain's {MAX_PRICE}"
            )));
        }
        let id = self.write(|| {
            Ok(block_on(
                self.chain.create_change_request(deal, price, duration),
            )?)
        })?;
        tracing::info!(deal, request = id, "change request created");
        self.change_request(id)
    }

    fn change_request(&self, id: u64) -> Result<ChangeRequestView, ApiError> {
        block_on(self.chain.change_requests(None, Some(id)))?
            .pop()
            .ok_or_else(|| ApiError::NotFound(format!("no change request {id}")))
    }

    /// Approves (the other side's) or cancels (either side's) pending change request `id`.
    pub fn decide_change_request(
        &self,
        id: u64,
        approve: bool,
    ) -> Result<ChangeRequestView, ApiError> {
        let request = self.change_request(id)?;
        self.our_active_deal(request.deal)?;
        if request.status != ChangeStatus::Pending {
            return Err(ApiError::Conflict(format!(
                "change request {id} is not pending"
            )));
        }
        if approve && request.requester == self.address() {
            return Err(ApiError::Forbidden(format!(
                "change request {id} is yours: the other side approves it"
            )));
        }
        self.write(|| Ok(block_on(self.chain.decide_change_request(id, approve))?))?;
        tracing::info!(request = id, approve, "change request decided");
        self.change_request(id)
    }

    /// The change requests of deal `id`, oldest first.
    pub fn change_requests(&self, deal: DealId) -> Result<Vec<ChangeRequestView>, ApiError> {
        self.deal(deal)?;
        Ok(match &self.dwh {
            Some(dwh) => dwh.change_requests(deal)?,
            None => block_on(self.chain.change_requests(Some(deal), None))?,
        })
    }

    /// Sends `amount` SNM wei to `to`. Returns the balances after.
    pub fn transfer(&self, to: Address, amount: U256) -> Result<Balance, ApiError> {
        if to.is_zero() {
            return Err(ApiError::BadRequest(
                "cannot transfer to the zero address".into(),
            ));
        }
        // Over the balance, the token refuses (`InsufficientBalance`, 409) and nothing is sent.
        self.write(|| Ok(block_on(self.chain.transfer(to, amount))?))?;
        tracing::info!(%to, %amount, "SNM transferred");
        self.balance()
    }

    /// Sets what the Market may pull to `amount` SNM wei. Returns the balances after.
    pub fn approve_market(&self, amount: U256) -> Result<Balance, ApiError> {
        self.write(|| Ok(block_on(self.chain.approve_market(amount))?))?;
        tracing::info!(%amount, "Market allowance set");
        self.balance()
    }

    /// The addresses `owner` lists.
    pub fn blacklist(&self, owner: Address) -> Result<Vec<Address>, ApiError> {
        Ok(match &self.dwh {
            Some(dwh) => dwh.blacklist_of(owner)?,
            None => block_on(self.chain.blacklist_of(owner))?,
        })
    }

    /// Adds `who` to (or removes it from) the node's own blacklist. Returns the list after,
    /// from the chain (the DWH may not have seen the change yet).
    pub fn set_listed(&self, who: Address, listed: bool) -> Result<Vec<Address>, ApiError> {
        if who.is_zero() {
            return Err(ApiError::BadRequest("the zero address".into()));
        }
        self.write(|| Ok(block_on(self.chain.set_listed(who, listed))?))?;
        tracing::info!(%who, listed, "blacklist changed");
        Ok(block_on(self.chain.blacklist_of(self.address()))?)
    }

    pub fn profile(&self, who: Address) -> Result<ProfileView, ApiError> {
        Ok(match &self.dwh {
            Some(dwh) => dwh.profile(who)?,
            None => block_on(self.chain.profile(who))?,
        })
    }

    /// Remembers where `worker`'s task service is.
    pub fn learn_worker(&self, worker: Address, addr: SocketAddr) {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(worker, addr);
    }

    fn worker_addr(&self, worker: Address) -> Option<SocketAddr> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&worker)
            .copied()
    }

    /// How `worker` was last reached through the rendezvous (direct or relayed), if it was.
    pub fn rendezvous_path(&self, worker: Address) -> Option<RendezvousPath> {
        self.paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&worker)
            .copied()
    }

    /// The connected rendezvous client (connecting, or reconnecting, first).
    fn rendezvous_client(&self, rv: &Rendezvous) -> Result<RendezvousClient, ApiError> {
        let mut client = rv.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = client.as_ref().filter(|c| c.is_connected()) {
            return Ok(c.clone());
        }
        let raw = rv
            .raw
            .try_clone()
            .map_err(|e| ApiError::Internal(format!("duplicating the QUIC socket: {e}")))?;
        // The node serves nothing: it never punches or relays for a peer that names it.
        let c = block_on(RendezvousClient::from_endpoint(
            self.endpoint.clone(),
            raw,
            &rv.key,
            rv.config.clone(),
            std::sync::Arc::new(|_| false),
        ))?;
        *client = Some(c.clone());
        Ok(c)
    }

    /// A connection to `worker`'s admin service (see `crate::admin`): at `addr`, else at its
    /// configured address, else through the rendezvous. Not cached: admin requests are rare.
    pub(crate) fn admin_connect(
        &self,
        worker: Address,
        addr: Option<SocketAddr>,
    ) -> Result<sonm_net::Connection, ApiError> {
        use sonm_worker::admin::ADMIN_ALPN;
        match (addr.or_else(|| self.worker_addr(worker)), &self.rendezvous) {
            (Some(addr), _) => Ok(
                block_on(self.endpoint.connect(addr, ADMIN_ALPN, Some(worker)))
                    .map_err(ClientError::Net)?,
            ),
            (None, Some(rv)) => {
                let client = self.rendezvous_client(rv)?;
                Ok(block_on(client.connect_via_rendezvous(worker, ADMIN_ALPN))?.0)
            }
            (None, None) => Err(ApiError::NoWorkerAddress(worker)),
        }
    }

    /// Resolves `worker` at the rendezvous and connects to its task service: a direct
    /// (hole-punched) path if one opens in time, else through the relay.
    fn connect_via_rendezvous(
        &self,
        rv: &Rendezvous,
        worker: Address,
    ) -> Result<TaskClient, ApiError> {
        let client = self.rendezvous_client(rv)?;
        let (conn, path) = block_on(client.connect_via_rendezvous(worker, ALPN))?;
        match path {
            RendezvousPath::Direct(addr) => {
                tracing::info!(%worker, %addr, "reached the worker through the rendezvous (direct path)");
            }
            RendezvousPath::Relay(addr) => {
                tracing::info!(%worker, %addr, "reached the worker through the rendezvous (relay)");
                // The relay lives in the server's process: once our connection to the server
                // ends (a restarted server resets it at our next keep-alive), this one would
                // only time out (30 s). Closed, the next request dials through the new server.
                let (client, conn) = (client.clone(), conn.clone());
                smol::spawn(async move {
                    let server_gone = async {
                        client.closed().await;
                        tracing::info!(%worker, "the rendezvous connection ended: closing the relayed connection");
                        conn.close(0, b"rendezvous server gone");
                    };
                    smol::future::or(server_gone, async {
                        conn.closed().await;
                    })
                    .await;
                })
                .detach();
            }
        }
        self.paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(worker, path);
        Ok(TaskClient::from_connection(conn, worker)?)
    }

    /// Runs `f` against the deal's worker over QUIC, reconnecting once if the cached connection
    /// has gone away.
    fn with_worker<T>(
        &self,
        deal: DealId,
        worker_addr: Option<SocketAddr>,
        f: impl Fn(TaskClient) -> Result<T, ClientError>,
    ) -> Result<T, ApiError> {
        let supplier = self.deal(deal)?.supplier;
        // An address given with the request is remembered once the worker answered there; a
        // worker of unknown address is reached through the rendezvous (`None`).
        let addr = worker_addr.or_else(|| self.worker_addr(supplier));
        if addr.is_none() && self.rendezvous.is_none() {
            return Err(ApiError::NoWorkerAddress(supplier));
        }
        let key = (supplier, addr);
        let clients = || self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let cached = clients().get(&key).cloned();
        if let Some(client) = cached {
            match f(client) {
                // The connection had gone away (worker restarted, idle timeout): dial again.
                // Only for connection-level failures: a request that timed out may have been
                // served, and starting a task twice would cost the customer.
                Err(ClientError::Net(e @ sonm_net::NetError::Connection(_))) => {
                    tracing::info!(error = %e, worker = %supplier, "reconnecting to the worker");
                    clients().remove(&key);
                }
                // Any other network failure: the next request dials afresh.
                Err(ClientError::Net(e)) => {
                    clients().remove(&key);
                    return Err(ClientError::Net(e).into());
                }
                other => return Ok(other?),
            }
        }
        let client = match (addr, &self.rendezvous) {
            (Some(addr), _) => block_on(TaskClient::connect(&self.endpoint, addr, supplier))?,
            (None, Some(rv)) => self.connect_via_rendezvous(rv, supplier)?,
            (None, None) => return Err(ApiError::NoWorkerAddress(supplier)),
        };
        clients().insert(key, client.clone());
        if let (Some(addr), Some(_)) = (addr, worker_addr) {
            self.learn_worker(supplier, addr);
        }
        Ok(f(client)?)
    }

    /// Starts a WASM task on the deal's worker. The worker decides whether we may (only the
    /// deal's consumer may) and refuses with a typed error otherwise.
    pub fn start_task(
        &self,
        start: StartWasm,
        worker_addr: Option<SocketAddr>,
    ) -> Result<TaskId, ApiError> {
        let deal = start.deal;
        let task =
            self.with_worker(deal, worker_addr, |c| block_on(c.start_wasm(start.clone())))?;
        tracing::info!(deal, task, "task started");
        Ok(task)
    }

    /// Starts a native container on the deal's worker (which must offer them); refused by the
    /// worker, typed, as a WASM task would be.
    pub fn start_container(
        &self,
        start: StartContainer,
        worker_addr: Option<SocketAddr>,
    ) -> Result<TaskId, ApiError> {
        let deal = start.deal;
        let task = self.with_worker(deal, worker_addr, |c| {
            block_on(c.start_container(start.clone()))
        })?;
        tracing::info!(deal, task, "container started");
        Ok(task)
    }

    pub fn task_status(
        &self,
        deal: DealId,
        task: TaskId,
        worker_addr: Option<SocketAddr>,
    ) -> Result<TaskStatus, ApiError> {
        self.with_worker(deal, worker_addr, |c| block_on(c.status(task)))
    }

    /// The task's result; its receipt was verified against the deal's supplier, the task and
    /// the outputs received (a failed check is an error, never a result).
    pub fn task_result(
        &self,
        deal: DealId,
        task: TaskId,
        worker_addr: Option<SocketAddr>,
    ) -> Result<TaskResult, ApiError> {
        let result = self.with_worker(deal, worker_addr, |c| block_on(c.result(task)))?;
        if result.deal != deal {
            return Err(ApiError::NotFound(format!(
                "task {task} belongs to deal {}, not {deal}",
                result.deal
            )));
        }
        Ok(result)
    }

    pub fn stop_task(
        &self,
        deal: DealId,
        task: TaskId,
        worker_addr: Option<SocketAddr>,
    ) -> Result<(), ApiError> {
        self.with_worker(deal, worker_addr, |c| block_on(c.stop(task)))
    }

    /// As [`Node::start_task`] (`container`: [`Node::start_container`]), publishing the
    /// upload's progress under `token` until it returns.
    pub fn start_tracked(
        &self,
        start: TrackedStart,
        worker_addr: Option<SocketAddr>,
        token: String,
    ) -> Result<TaskId, ApiError> {
        let transfers = &self.transfers;
        let set = |v: Option<(u64, u64)>| {
            let mut t = transfers.lock().unwrap_or_else(|e| e.into_inner());
            match v {
                Some(v) => t.insert(token.clone(), v),
                None => t.remove(&token),
            };
        };
        set(Some((0, 0)));
        let progress = |done, total| set(Some((done, total)));
        let (deal, what) = match &start {
            TrackedStart::Wasm(s) => (s.deal, "task"),
            TrackedStart::Container(s) => (s.deal, "container"),
        };
        let task = self.with_worker(deal, worker_addr, |c| match &start {
            TrackedStart::Wasm(s) => block_on(c.start_wasm_with_progress(s.clone(), &progress)),
            TrackedStart::Container(s) => {
                block_on(c.start_container_with_progress(s.clone(), &progress))
            }
        });
        set(None);
        let task = task?;
        tracing::info!(deal, task, "{what} started");
        Ok(task)
    }

    /// Bytes sent and the total of the upload tracked as `token`, while it runs.
    pub fn transfer_progress(&self, token: &str) -> Option<(u64, u64)> {
        self.transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .copied()
    }

    /// What the task printed from the given offsets (live while it runs).
    pub fn task_logs(
        &self,
        deal: DealId,
        task: TaskId,
        stdout_offset: u64,
        stderr_offset: u64,
        worker_addr: Option<SocketAddr>,
    ) -> Result<sonm_worker::proto::LogChunk, ApiError> {
        self.with_worker(deal, worker_addr, |c| {
            block_on(c.logs(task, stdout_offset, stderr_offset))
        })
    }
}

/// Reads every file under `dir` as task inputs (paths relative, `/`-separated, sorted).
pub fn read_input_dir(dir: &Path) -> Result<Vec<sonm_worker::proto::File>, ApiError> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut Vec<sonm_worker::proto::File>,
    ) -> Result<(), ApiError> {
        let err = |e: std::io::Error| {
            ApiError::BadRequest(format!("reading input dir {}: {e}", dir.display()))
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type().map_err(err)?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| ApiError::BadRequest("input path outside its dir".into()))?;
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(sonm_worker::proto::File {
                    path: rel.join("/"),
                    bytes: std::fs::read(&path).map_err(err)?,
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// A start request whose upload progress is tracked ([`Node::start_tracked`]).
#[derive(Debug)]
pub enum TrackedStart {
    Wasm(StartWasm),
    Container(StartContainer),
}

/// Why `duration` cannot buy an ask (`label`) lasting `ask_duration` (0: spot).
fn duration_refusal(label: &str, ask_duration: u64) -> String {
    if ask_duration == 0 {
        format!("{label} is spot: buy it with duration 0")
    } else {
        format!("{label} lasts {ask_duration} s: duration must be between 1 and that")
    }
}

/// Seconds since the epoch, on this machine's clock (the chain's is close to it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
