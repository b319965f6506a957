//! Queries over the store: each walks a secondary index in key order (so results
//! come sorted and pages continue from an opaque cursor, the hex of the last index
//! key), applies the filters the index does not cover, and stops after a page or a
//! bounded number of index entries.

use alloy::primitives::{Address, hex};
use heed::RoTxn;
use serde::Serialize;
use sonm_market::{
    Benchmarks, DealId, DealStatus, IdentityLevel, MatchContext, NetFlags, Order, OrderType,
};
use thiserror::Error;

use crate::follower::SharedBook;
use crate::index::{
    BillRow, CertificateRow, ChangeRequestRow, DealRow, KeeperRow, Key, OrderRow, OrderStatus,
    Record, SignedOrderRow, TransferRow,
};
use crate::storage::{
    DbError, Index, Role, Storage, deal_party_prefix, digest_of, order_author_prefix,
    order_market_prefix, signed_author_prefix, signed_market_prefix,
};

/// The most results a page may ask for.
pub const MAX_LIMIT: usize = 1000;
/// The most index entries one page looks at; a page that hits it comes back short
/// with a cursor to continue.
pub const MAX_SCAN: usize = 200_000;

impl From<sonm_http_query::BadQuery> for QueryError {
    fn from(e: sonm_http_query::BadQuery) -> Self {
        QueryError::BadRequest(e.0)
    }
}

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A page of results and, when there may be more, the cursor of the next page.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Orders: the type is required; status defaults to active.
#[derive(Clone, Debug)]
pub struct OrderQuery {
    pub order_type: OrderType,
    pub status: OrderStatus,
    pub author: Option<Address>,
    /// Orders that name this counterparty or none.
    pub counterparty: Option<Address>,
    pub price_min: Option<u128>,
    pub price_max: Option<u128>,
    pub duration_min: Option<u64>,
    pub duration_max: Option<u64>,
    /// Orders whose netflags cover these.
    pub netflags: Option<NetFlags>,
    /// Orders whose required identity level is at most this.
    pub identity_level: Option<IdentityLevel>,
    /// Orders whose every benchmark is at least this vector's.
    pub benchmarks: Option<Benchmarks>,
    pub limit: usize,
    pub cursor: Option<String>,
}

impl OrderQuery {
    pub fn new(order_type: OrderType) -> Self {
        OrderQuery {
            order_type,
            status: OrderStatus::Active,
            author: None,
            counterparty: None,
            price_min: None,
            price_max: None,
            duration_min: None,
            duration_max: None,
            netflags: None,
            identity_level: None,
            benchmarks: None,
            limit: 100,
            cursor: None,
        }
    }

    /// True when `row` passes the filters that the index does not apply.
    pub fn accepts(&self, row: &OrderRow) -> bool {
        row.status == self.status && self.accepts_order(&row.order)
    }

    /// True when `o` passes every filter but the status (which signed orders do not have).
    pub fn accepts_order(&self, o: &Order) -> bool {
        o.order_type == self.order_type
            && self.author.is_none_or(|a| o.author == a)
            && self
                .counterparty
                .is_none_or(|c| o.counterparty.is_none_or(|oc| oc == c))
            && self.price_min.is_none_or(|p| o.price >= p)
            && self.price_max.is_none_or(|p| o.price <= p)
            && self.duration_min.is_none_or(|d| o.duration >= d)
            && self.duration_max.is_none_or(|d| o.duration <= d)
            && self.netflags.is_none_or(|n| o.netflags.covers(n))
            && self.identity_level.is_none_or(|l| o.identity_level <= l)
            && self.benchmarks.is_none_or(|b| o.benchmarks.dominates(&b))
    }
}

fn check_limit(limit: usize) -> Result<usize, QueryError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError::BadRequest(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

fn parse_cursor(cursor: Option<&str>, prefix: &[u8]) -> Result<Option<Vec<u8>>, QueryError> {
    let Some(c) = cursor else { return Ok(None) };
    let bytes = hex::decode(c).map_err(|_| QueryError::BadRequest("malformed cursor".into()))?;
    if !bytes.starts_with(prefix) {
        return Err(QueryError::BadRequest(
            "the cursor belongs to another query".into(),
        ));
    }
    Ok(Some(bytes))
}

fn id_of(key: &[u8]) -> Result<u64, DbError> {
    key.len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| DbError::Corrupt("an index key shorter than an id".into()))
}

fn price_of(key: &[u8]) -> Option<u128> {
    let at = key.len().checked_sub(24)?;
    Some(u128::from_be_bytes(key[at..at + 16].try_into().ok()?))
}

/// Where a paged walk goes: the keys of `index` under `prefix`, from `lower` (or
/// after the cursor's key), at most `limit` items.
struct Scan<'a> {
    index: Index,
    prefix: &'a [u8],
    lower: Option<&'a [u8]>,
    cursor: Option<&'a str>,
    limit: usize,
}

/// A paged walk over one index: `take` turns a key into an item, skips it, or
/// ends the walk.
fn walk<T>(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    scan: Scan<'_>,
    mut take: impl FnMut(&[u8]) -> Result<Walk<T>, DbError>,
) -> Result<Page<T>, QueryError> {
    let Scan {
        index,
        prefix,
        lower,
        cursor,
        limit,
    } = scan;
    let limit = check_limit(limit)?;
    let after = parse_cursor(cursor, prefix)?;
    let mut items = Vec::new();
    let mut scanned = 0usize;
    let mut last: Option<Vec<u8>> = None;
    let mut exhausted = true;
    storage.scan_index(txn, index, prefix, lower, after.as_deref(), |key| {
        if items.len() == limit || scanned == MAX_SCAN {
            exhausted = false;
            return Ok(false);
        }
        scanned += 1;
        match take(key)? {
            Walk::Take(item) => items.push(item),
            Walk::Skip => {}
            Walk::Stop => return Ok(false),
        }
        last = Some(key.to_vec());
        Ok(true)
    })?;
    Ok(Page {
        items,
        next: if exhausted {
            None
        } else {
            last.map(hex::encode)
        },
    })
}

enum Walk<T> {
    Take(T),
    Skip,
    Stop,
}

fn check_price_range(q: &OrderQuery) -> Result<(), QueryError> {
    if let (Some(lo), Some(hi)) = (q.price_min, q.price_max)
        && lo > hi
    {
        return Err(QueryError::BadRequest(
            "price_min is above price_max".into(),
        ));
    }
    Ok(())
}

/// Orders by type and status (or author), sorted by price then id, filtered.
pub fn orders(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    q: &OrderQuery,
) -> Result<Page<OrderRow>, QueryError> {
    check_price_range(q)?;
    let (index, prefix) = match q.author {
        Some(a) => (
            Index::OrdersByAuthor,
            order_author_prefix(a, q.order_type, q.status),
        ),
        None => (
            Index::OrdersByMarket,
            order_market_prefix(q.order_type, q.status),
        ),
    };
    let lower = price_floor(&prefix, q.price_min);
    let scan = Scan {
        index,
        prefix: &prefix,
        lower: lower.as_deref(),
        cursor: q.cursor.as_deref(),
        limit: q.limit,
    };
    walk(storage, txn, scan, |key| {
        if let (Some(max), Some(price)) = (q.price_max, price_of(key))
            && price > max
        {
            return Ok(Walk::Stop);
        }
        let id = id_of(key)?;
        Ok(match storage.order(txn, id)? {
            Some(row) if q.accepts(&row) => Walk::Take(row),
            _ => Walk::Skip,
        })
    })
}

/// Where a walk of a price index from `price_min` starts: the prefix and the price.
fn price_floor(prefix: &[u8], price_min: Option<u128>) -> Option<Vec<u8>> {
    price_min.map(|p| [prefix, &p.to_be_bytes()].concat())
}

/// The most live signed orders of one side that [`live_signed`] returns: a bound on one
/// request's work, as page walks have theirs.
pub const MAX_SIGNED_SCAN: usize = 100_000;

/// Every live signed order of one side at `now`, cheapest first, at most [`MAX_SIGNED_SCAN`]
/// (for the market statistics, which count them with the placed orders).
pub fn live_signed(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    order_type: OrderType,
    now: u64,
) -> Result<Vec<SignedOrderRow>, QueryError> {
    let mut q = OrderQuery::new(order_type);
    q.limit = MAX_LIMIT;
    let mut all = Vec::new();
    loop {
        let page = signed_orders(storage, txn, &q, now)?;
        all.extend(page.items);
        match page.next {
            Some(next) if all.len() < MAX_SIGNED_SCAN => q.cursor = Some(next),
            _ => break,
        }
    }
    all.truncate(MAX_SIGNED_SCAN);
    Ok(all)
}

/// Live signed orders of one side (or one author's), sorted by price then digest, with the
/// filters of [`orders`] (the status aside: a signed order in the book is usable until it
/// expires or its nonce is spent, and then it is gone). Orders no longer live at `now` are
/// never returned, even before they are purged.
pub fn signed_orders(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    q: &OrderQuery,
    now: u64,
) -> Result<Page<SignedOrderRow>, QueryError> {
    check_price_range(q)?;
    let (index, prefix) = match q.author {
        Some(a) => (Index::SignedByAuthor, signed_author_prefix(a, q.order_type)),
        None => (Index::SignedByMarket, signed_market_prefix(q.order_type)),
    };
    let lower = price_floor(&prefix, q.price_min);
    let scan = Scan {
        index,
        prefix: &prefix,
        lower: lower.as_deref(),
        cursor: q.cursor.as_deref(),
        limit: q.limit,
    };
    walk(storage, txn, scan, |key| {
        // prefix, price (16), digest (32)
        let price = key
            .len()
            .checked_sub(48)
            .and_then(|at| key[at..at + 16].try_into().ok())
            .map(u128::from_be_bytes);
        if let (Some(max), Some(price)) = (q.price_max, price)
            && price > max
        {
            return Ok(Walk::Stop);
        }
        Ok(match storage.signed_order(txn, digest_of(key)?)? {
            Some(row) if row.live(now) && q.accepts_order(&row.order) => Walk::Take(row),
            _ => Walk::Skip,
        })
    })
}

/// Deals of a party in a role (any role by default), optionally of one status;
/// by status then id.
pub fn deals(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    party: Address,
    role: Role,
    status: Option<DealStatus>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page<DealRow>, QueryError> {
    let prefix = deal_party_prefix(role, party, status);
    let scan = Scan {
        index: Index::DealsByParty,
        prefix: &prefix,
        lower: None,
        cursor,
        limit,
    };
    walk(storage, txn, scan, |key| {
        let id = id_of(key)?;
        Ok(match storage.deal(txn, id)? {
            Some(row) => Walk::Take(row),
            None => Walk::Skip,
        })
    })
}

/// A deal's bills, oldest first.
pub fn bills(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    deal: DealId,
) -> Result<Vec<BillRow>, QueryError> {
    let mut out = Vec::new();
    storage.scan_index(txn, Index::Bills, &deal.to_be_bytes(), None, None, |key| {
        let seq = key
            .get(8..12)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| DbError::Corrupt("a bill key of the wrong length".into()))?;
        if let Some(Record::Bill(b)) = storage.record(txn, &Key::Bill(deal, seq))? {
            out.push(b);
        }
        Ok(true)
    })?;
    Ok(out)
}

/// A deal's change requests, by id.
pub fn change_requests(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    deal: DealId,
) -> Result<Vec<ChangeRequestRow>, QueryError> {
    let mut out = Vec::new();
    storage.scan_index(
        txn,
        Index::ChangesByDeal,
        &deal.to_be_bytes(),
        None,
        None,
        |key| {
            if let Some(Record::ChangeRequest(c)) =
                storage.record(txn, &Key::ChangeRequest(id_of(key)?))?
            {
                out.push(c);
            }
            Ok(true)
        },
    )?;
    Ok(out)
}

/// The addresses on `owner`'s blacklist.
pub fn blacklist(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    owner: Address,
) -> Result<Vec<Address>, QueryError> {
    let mut out = Vec::new();
    storage.scan_index(txn, Index::Blacklist, owner.as_slice(), None, None, |key| {
        out.push(Address::from_slice(&key[20..]));
        Ok(true)
    })?;
    Ok(out)
}

/// The gate transfers of an address: its locks (sent or to receive elsewhere),
/// oldest nonce first, then the payments it received.
pub fn transfers(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    party: Address,
) -> Result<Vec<TransferRow>, QueryError> {
    let mut out = Vec::new();
    storage.scan_index(
        txn,
        Index::TransfersByParty,
        party.as_slice(),
        None,
        None,
        |key| {
            let id = &key[21..];
            let k =
                match key[20] {
                    1 => Key::GateLock(id_of(key)?),
                    _ => Key::GatePayment(alloy::primitives::B256::try_from(id).map_err(|_| {
                        DbError::Corrupt("a transfer key of the wrong length".into())
                    })?),
                };
            if let Some(Record::Transfer(t)) = storage.record(txn, &k)? {
                out.push(t);
            }
            Ok(true)
        },
    )?;
    Ok(out)
}

/// Addresses whose identity level is `level` (above anonymous), by address.
pub fn profiles_by_level(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    level: IdentityLevel,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page<Address>, QueryError> {
    if level == IdentityLevel::Anonymous {
        return Err(QueryError::BadRequest(
            "anonymous is everyone without a level: ask for registered or above".into(),
        ));
    }
    let prefix = [level as u8];
    let scan = Scan {
        index: Index::ProfilesByLevel,
        prefix: &prefix,
        lower: None,
        cursor,
        limit,
    };
    walk(storage, txn, scan, |key| {
        Ok(Walk::Take(Address::from_slice(&key[1..])))
    })
}

/// Addresses with a live country certificate for `country` (two letters, any case),
/// by address, each once; with `level`, only those whose identity level is exactly it.
pub fn profiles_by_country(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    country: &str,
    level: Option<IdentityLevel>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page<Address>, QueryError> {
    let prefix = crate::index::parse_country(country.as_bytes()).ok_or_else(|| {
        QueryError::BadRequest(format!(
            "country {country:?} is not an ISO 3166-1 alpha-2 code (two letters)"
        ))
    })?;
    let subject_of = |key: &[u8]| Address::from_slice(&key[2..22]);
    // Keys run (country, subject, certificate id): a subject with several certificates
    // for the country comes in a row, possibly across a page boundary (the cursor's).
    let mut previous = match cursor.map(hex::decode) {
        Some(Ok(k)) if k.len() == 30 => Some(subject_of(&k)),
        _ => None,
    };
    let scan = Scan {
        index: Index::ProfilesByCountry,
        prefix: &prefix,
        lower: None,
        cursor,
        limit,
    };
    walk(storage, txn, scan, |key| {
        if key.len() != 30 {
            return Err(DbError::Corrupt(
                "a profiles_by_country key is not 30 bytes".into(),
            ));
        }
        let subject = subject_of(key);
        if previous.replace(subject) == Some(subject) {
            return Ok(Walk::Skip);
        }
        match level {
            Some(l) if storage.level(txn, subject)? != l => Ok(Walk::Skip),
            _ => Ok(Walk::Take(subject)),
        }
    })
}

/// The gate of this chain as its events left it.
#[derive(Debug, Serialize)]
pub struct GateInfo {
    /// Keeper signatures a payment needs (`None` before the gate's deploy is indexed).
    pub threshold: Option<u8>,
    /// Current keepers (daily limit above 0), frozen ones included, by address.
    pub keepers: Vec<KeeperRow>,
}

pub fn gate(storage: &Storage<'_>, txn: &RoTxn<'_>) -> Result<GateInfo, QueryError> {
    let threshold = match storage.record(txn, &Key::GateThreshold)? {
        Some(Record::GateThreshold(t)) => Some(t),
        _ => None,
    };
    let mut keepers = Vec::new();
    // From the zero address: LMDB refuses an empty key as a range start.
    storage.scan_index(
        txn,
        Index::GateKeepers,
        &[],
        Some(&[0u8; 20]),
        None,
        |key| {
            let keeper = Address::try_from(key)
                .map_err(|_| DbError::Corrupt("a gate_keepers key is not an address".into()))?;
            if let Some(Record::GateKeeper(row)) = storage.record(txn, &Key::GateKeeper(keeper))?
                && row.daily_limit > 0
            {
                keepers.push(row);
            }
            Ok(true)
        },
    )?;
    Ok(GateInfo { threshold, keepers })
}

/// What the registries say about an address.
#[derive(Debug, Serialize)]
pub struct Profile {
    pub address: Address,
    pub identity_level: IdentityLevel,
    /// The confirmed master, if any.
    pub master: Option<Address>,
    pub certificates: Vec<CertificateRow>,
}

pub fn profile(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    address: Address,
) -> Result<Profile, QueryError> {
    let mut certificates = Vec::new();
    storage.scan_index(
        txn,
        Index::CertsBySubject,
        address.as_slice(),
        None,
        None,
        |key| {
            if let Some(Record::Certificate(c)) =
                storage.record(txn, &Key::Certificate(id_of(key)?))?
            {
                certificates.push(c);
            }
            Ok(true)
        },
    )?;
    let master = storage.master_of(txn, address)?;
    Ok(Profile {
        address,
        identity_level: storage.level(txn, address)?,
        master: (master != address).then_some(master),
        certificates,
    })
}

/// The match rule's context answered from the store (levels, blacklists, masters).
pub struct StoreContext<'a, 'e> {
    pub storage: &'a Storage<'e>,
    pub txn: &'a RoTxn<'a>,
}

impl std::fmt::Debug for StoreContext<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreContext")
    }
}

impl MatchContext for StoreContext<'_, '_> {
    fn identity_level(&self, who: Address) -> IdentityLevel {
        self.storage.level(self.txn, who).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading a level");
            IdentityLevel::Anonymous
        })
    }
    fn is_blacklisted(&self, owner: Address, who: Address) -> bool {
        self.storage
            .is_listed(self.txn, owner, who)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading a blacklist");
                true
            })
    }
    fn master_of(&self, worker: Address) -> Address {
        self.storage
            .master_of(self.txn, worker)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading a master");
                worker
            })
    }
}

/// The best active orders that match order `id` (asks for a bid, cheapest first;
/// bids for an ask, best-paying first): the market crate's order book and match rule.
pub fn matches(
    storage: &Storage<'_>,
    txn: &RoTxn<'_>,
    book: &SharedBook,
    id: u64,
    limit: usize,
) -> Result<Vec<OrderRow>, QueryError> {
    let limit = check_limit(limit)?;
    let row = storage
        .order(txn, id)?
        .ok_or_else(|| QueryError::NotFound(format!("order {id} is not indexed")))?;
    if row.status != OrderStatus::Active {
        return Err(QueryError::BadRequest(format!("order {id} is not active")));
    }
    let ctx = StoreContext { storage, txn };
    let ids = book.read(|b| match row.order.order_type {
        OrderType::Bid => b.best_asks(&row.order, limit, &ctx),
        OrderType::Ask => b.best_bids(&row.order, limit, &ctx),
    });
    let ids = ids.map_err(|e| QueryError::BadRequest(e.to_string()))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = storage.order(txn, id)? {
            out.push(r);
        }
    }
    Ok(out)
}
