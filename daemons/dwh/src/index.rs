//! The pure indexing core: applies one block's decoded events to a [`Store`],
//! recording for every write the value it replaced, so that the block can be undone
//! exactly (reorgs). No I/O of its own: the LMDB store and the in-memory test store
//! implement [`Store`].

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};
use sonm_market::{Deal, DealId, DealStatus, IdentityLevel, Order, OrderId};
use thiserror::Error;

use crate::event::{ChainEvent, RequestId};

/// Where an order stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Active,
    Cancelled,
    /// Taken by a deal.
    Matched,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 3] = [
        OrderStatus::Active,
        OrderStatus::Cancelled,
        OrderStatus::Matched,
    ];
    /// The byte used in index keys.
    pub const fn code(self) -> u8 {
        match self {
            OrderStatus::Active => 1,
            OrderStatus::Cancelled => 2,
            OrderStatus::Matched => 3,
        }
    }
}

/// An order with what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub order: Order,
    pub status: OrderStatus,
    /// The deal that took it.
    pub deal: Option<DealId>,
    pub placed_block: u64,
}

/// A deal (the market model's [`Deal`], kept up to date from the events) and how it
/// ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealRow {
    pub deal: Deal,
    /// Who closed it; `None` while open or when it closed because the consumer could
    /// not pay.
    pub closed_by: Option<Address>,
    pub blacklisted: bool,
    /// Returned to the consumer at the close.
    pub refunded: u128,
    /// How many bills (the next bill's sequence number).
    pub bills: u32,
    pub opened_block: u64,
}

/// One `DealBilled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillRow {
    pub deal: DealId,
    pub seq: u32,
    pub paid: u128,
    pub blocked: u128,
    pub billed_until: u64,
    pub block: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStatus {
    Pending,
    Approved,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequestRow {
    pub id: RequestId,
    pub deal: DealId,
    pub requester: Address,
    pub price: u128,
    pub duration: u64,
    pub status: ChangeStatus,
    /// Who approved or cancelled it.
    pub decided_by: Option<Address>,
}

/// A worker's relation to a master: announced by the worker, then confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub worker: Address,
    pub master: Address,
    pub confirmed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRow {
    pub id: u64,
    pub validator: Address,
    pub subject: Address,
    pub attribute_type: U256,
    pub value: Bytes,
    pub revoked: bool,
}

/// The certificate attribute type that carries a country: an ISO 3166-1 alpha-2 code
/// as its value (two ASCII letters, any case). A convention of the DWH and its clients;
/// the ProfileRegistry treats every attribute but the levels (1001–1003) as plain data.
pub const COUNTRY_ATTRIBUTE: u64 = 1102;

/// The country a live certificate states (upper case), if it is a country certificate
/// with a well-formed value.
pub fn country_of(row: &CertificateRow) -> Option<[u8; 2]> {
    if row.revoked || row.attribute_type != U256::from(COUNTRY_ATTRIBUTE) {
        return None;
    }
    parse_country(&row.value)
}

/// Two ASCII letters, as upper case.
pub fn parse_country(value: &[u8]) -> Option<[u8; 2]> {
    match value {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// A gate transfer seen on this chain: a lock here, or a payment of another chain's lock.
/// (Externally tagged: postcard cannot read internally tagged enums.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferRow {
    Locked {
        nonce: u64,
        from: Address,
        to: Address,
        amount: u128,
        dst_chain: u64,
        block: u64,
    },
    Paid {
        transfer: B256,
        src_chain: u64,
        src_gate: Address,
        nonce: u64,
        to: Address,
        amount: u128,
        block: u64,
    },
}

/// A gate keeper as the Gate holds it: a daily limit of 0 means "not a keeper" (removed,
/// or frozen before removal: the flag stays, as on chain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperRow {
    pub keeper: Address,
    pub daily_limit: u128,
    pub frozen: bool,
}

/// An order signed off chain by its author, as posted to the DWH's signed-order book and
/// served to buyers: everything `openDeal`/`quickBuy` take for it (`sonm_contracts::signed_ref`)
/// and its EIP-712 digest. Posted through the API, never by a block; a block that uses or
/// cancels its nonce deletes it (through the undo log, so a reorg brings it back).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOrderRow {
    /// The order (id 0: it is never placed).
    pub order: Order,
    /// The last unix second at which the chain takes it.
    pub expiry: u64,
    pub nonce: U256,
    /// 65 bytes r, s, v (low s, v 27 or 28).
    pub signature: Bytes,
    pub digest: B256,
}

impl SignedOrderRow {
    /// Whether a buyer can still use it: a transaction sent now lands in a later block, so an
    /// order whose last second is now is no longer offered.
    pub fn live(&self, now: u64) -> bool {
        self.expiry > now
    }
}

/// The Market's nonce bitmap coordinates of a signed-order nonce: its word (`nonce >> 8`) and
/// its bit in that word (`1 << (nonce & 255)`).
pub fn nonce_bit(nonce: U256) -> (U256, U256) {
    (nonce >> 8usize, U256::from(1) << usize::from(nonce.byte(0)))
}

/// A primary record's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    Order(OrderId),
    Deal(DealId),
    Bill(DealId, u32),
    ChangeRequest(RequestId),
    Worker(Address),
    /// (owner, listed)
    Blacklist(Address, Address),
    Level(Address),
    Certificate(u64),
    /// A lock by its nonce.
    GateLock(u64),
    /// A payment by its transfer id.
    GatePayment(B256),
    GateKeeper(Address),
    GateThreshold,
    /// A signed order by its EIP-712 digest.
    SignedOrder(B256),
    /// (author, word): the author's used or cancelled signed-order nonces `word * 256 + i`.
    NonceWord(Address, U256),
}

/// A primary record. Secondary indexes are derived from these by the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Order(OrderRow),
    Deal(DealRow),
    Bill(BillRow),
    ChangeRequest(ChangeRequestRow),
    Worker(WorkerRow),
    Listed,
    Level(IdentityLevel),
    Certificate(CertificateRow),
    Transfer(TransferRow),
    GateKeeper(KeeperRow),
    GateThreshold(u8),
    SignedOrder(SignedOrderRow),
    /// Bit i set: nonce `word * 256 + i` is used or cancelled (absent: none of the word).
    NonceBits(U256),
}

/// Key/value storage of primary records. `put(key, None)` deletes. A store keeps
/// its secondary indexes in step with every `put`.
pub trait Store {
    type Error: std::error::Error + Send + Sync + 'static;
    fn get(&mut self, key: &Key) -> Result<Option<Record>, Self::Error>;
    fn put(&mut self, key: &Key, value: Option<&Record>) -> Result<(), Self::Error>;
    /// The signed orders of `author` whose nonce lies in `word` (`nonce >> 8 == word`): each
    /// nonce's low byte (its bit in the word) and the order's digest. The one lookup besides
    /// `get`: a used or cancelled nonce must find the signed orders it ends.
    fn signed_orders_in_word(
        &mut self,
        author: Address,
        word: U256,
    ) -> Result<Vec<(u8, B256)>, Self::Error>;
}

/// One block's events in log order, with its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockEvents {
    pub number: u64,
    pub hash: B256,
    pub events: Vec<ChainEvent>,
}

/// The values a block replaced, oldest write first: undoing restores them in reverse.
pub type Undo = Vec<(Key, Option<Record>)>;

/// What the in-memory order book must do after a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BookChange {
    Insert(Box<Order>),
    Remove(OrderId),
}

/// Why an event could not be applied: the events contradict what is indexed (an
/// event for a deal never opened, ...). With a complete history from the deploy
/// block this does not happen.
#[derive(Debug, Error)]
pub enum ApplyError<E: std::error::Error + 'static> {
    #[error("storage: {0}")]
    Store(#[source] E),
    #[error("block {block}: {what} {id} is not indexed")]
    Missing {
        block: u64,
        what: &'static str,
        id: String,
    },
    #[error("block {block}: order {id} placed twice")]
    Duplicate { block: u64, id: OrderId },
    #[error("block {block}: signed-order nonce {nonce} of {author} used, but it was spent before")]
    NonceSpent {
        block: u64,
        author: Address,
        nonce: U256,
    },
}

/// A store wrapper that records what each write replaced and how the order book
/// must change.
struct Tracked<'a, S: Store> {
    store: &'a mut S,
    undo: Undo,
    book: Vec<BookChange>,
}

impl<S: Store> Tracked<'_, S> {
    fn get(&mut self, key: &Key) -> Result<Option<Record>, ApplyError<S::Error>> {
        self.store.get(key).map_err(ApplyError::Store)
    }

    fn put(&mut self, key: Key, value: Option<Record>) -> Result<(), ApplyError<S::Error>> {
        let old = self.get(&key)?;
        book_change(&old, &value, &mut self.book);
        self.store
            .put(&key, value.as_ref())
            .map_err(ApplyError::Store)?;
        self.undo.push((key, old));
        Ok(())
    }
}

fn active_order(record: &Option<Record>) -> Option<&Order> {
    match record {
        Some(Record::Order(row)) if row.status == OrderStatus::Active => Some(&row.order),
        _ => None,
    }
}

fn book_change(old: &Option<Record>, new: &Option<Record>, out: &mut Vec<BookChange>) {
    match (active_order(old), active_order(new)) {
        (Some(o), None) => out.push(BookChange::Remove(o.id)),
        (None, Some(n)) => out.push(BookChange::Insert(Box::new(n.clone()))),
        _ => {}
    }
}

/// The result of applying or undoing a block.
#[derive(Debug, Default)]
pub struct Applied {
    pub undo: Undo,
    pub book: Vec<BookChange>,
}

/// Applies a block's events in order. On error the store may hold part of the
/// block: the caller aborts its transaction.
pub fn apply_block<S: Store>(
    store: &mut S,
    block: &BlockEvents,
) -> Result<Applied, ApplyError<S::Error>> {
    let mut t = Tracked {
        store,
        undo: Vec::new(),
        book: Vec::new(),
    };
    for event in &block.events {
        apply_event(&mut t, block.number, event)?;
    }
    Ok(Applied {
        undo: t.undo,
        book: t.book,
    })
}

/// Restores what a block replaced (its [`Undo`], newest write first).
pub fn undo_block<S: Store>(store: &mut S, undo: Undo) -> Result<Vec<BookChange>, S::Error> {
    let mut book = Vec::new();
    for (key, old) in undo.into_iter().rev() {
        let current = store.get(&key)?;
        book_change(&current, &old, &mut book);
        store.put(&key, old.as_ref())?;
    }
    Ok(book)
}

fn missing<E: std::error::Error>(
    block: u64,
    what: &'static str,
    id: impl ToString,
) -> ApplyError<E> {
    ApplyError::Missing {
        block,
        what,
        id: id.to_string(),
    }
}

fn get_order<S: Store>(
    t: &mut Tracked<'_, S>,
    block: u64,
    id: OrderId,
) -> Result<OrderRow, ApplyError<S::Error>> {
    match t.get(&Key::Order(id))? {
        Some(Record::Order(row)) => Ok(row),
        _ => Err(missing(block, "order", id)),
    }
}

fn get_deal<S: Store>(
    t: &mut Tracked<'_, S>,
    block: u64,
    id: DealId,
) -> Result<DealRow, ApplyError<S::Error>> {
    match t.get(&Key::Deal(id))? {
        Some(Record::Deal(row)) => Ok(row),
        _ => Err(missing(block, "deal", id)),
    }
}

fn get_change<S: Store>(
    t: &mut Tracked<'_, S>,
    block: u64,
    id: RequestId,
) -> Result<ChangeRequestRow, ApplyError<S::Error>> {
    match t.get(&Key::ChangeRequest(id))? {
        Some(Record::ChangeRequest(row)) => Ok(row),
        _ => Err(missing(block, "change request", id)),
    }
}

fn apply_event<S: Store>(
    t: &mut Tracked<'_, S>,
    block: u64,
    event: &ChainEvent,
) -> Result<(), ApplyError<S::Error>> {
    match event {
        ChainEvent::OrderPlaced(order) => {
            if t.get(&Key::Order(order.id))?.is_some() {
                return Err(ApplyError::Duplicate {
                    block,
                    id: order.id,
                });
            }
            let row = OrderRow {
                order: order.clone(),
                status: OrderStatus::Active,
                deal: None,
                placed_block: block,
            };
            t.put(Key::Order(order.id), Some(Record::Order(row)))
        }
        ChainEvent::OrderCancelled { id } => {
            let mut row = get_order(t, block, *id)?;
            row.status = OrderStatus::Cancelled;
            t.put(Key::Order(*id), Some(Record::Order(row)))
        }
        ChainEvent::DealOpened {
            id,
            supplier,
            consumer,
            master,
            ask,
            bid,
            price,
            duration,
            start,
            blocked,
        } => {
            // Order ids start at 1: 0 is a side that was a signed order, never placed here.
            for order in [*ask, *bid].into_iter().filter(|&o| o != 0) {
                let mut row = get_order(t, block, order)?;
                row.status = OrderStatus::Matched;
                row.deal = Some(*id);
                t.put(Key::Order(order), Some(Record::Order(row)))?;
            }
            let deal = Deal {
                id: *id,
                supplier: *supplier,
                consumer: *consumer,
                master: *master,
                ask: *ask,
                bid: *bid,
                price: *price,
                duration: *duration,
                start: *start,
                end: if *duration == 0 { 0 } else { start + duration },
                blocked: *blocked,
                total_payout: 0,
                last_bill: *start,
                status: DealStatus::Accepted,
            };
            let row = DealRow {
                deal,
                closed_by: None,
                blacklisted: false,
                refunded: 0,
                bills: 0,
                opened_block: block,
            };
            t.put(Key::Deal(*id), Some(Record::Deal(row)))
        }
        ChainEvent::DealBilled {
            id,
            paid,
            blocked,
            billed_until,
        } => {
            let mut row = get_deal(t, block, *id)?;
            let bill = BillRow {
                deal: *id,
                seq: row.bills,
                paid: *paid,
                blocked: *blocked,
                billed_until: *billed_until,
                block,
            };
            t.put(Key::Bill(*id, row.bills), Some(Record::Bill(bill)))?;
            row.bills += 1;
            row.deal.total_payout = row.deal.total_payout.saturating_add(*paid);
            row.deal.blocked = *blocked;
            row.deal.last_bill = *billed_until;
            t.put(Key::Deal(*id), Some(Record::Deal(row)))
        }
        ChainEvent::DealClosed {
            id,
            closed_by,
            end,
            refunded,
            blacklisted,
        } => {
            let mut row = get_deal(t, block, *id)?;
            row.deal.status = DealStatus::Closed;
            row.deal.end = *end;
            row.deal.blocked = 0;
            row.closed_by = *closed_by;
            row.refunded = *refunded;
            row.blacklisted = *blacklisted;
            t.put(Key::Deal(*id), Some(Record::Deal(row)))
        }
        ChainEvent::ChangeRequestCreated {
            id,
            deal,
            requester,
            price,
            duration,
        } => {
            get_deal(t, block, *deal)?;
            let row = ChangeRequestRow {
                id: *id,
                deal: *deal,
                requester: *requester,
                price: *price,
                duration: *duration,
                status: ChangeStatus::Pending,
                decided_by: None,
            };
            t.put(Key::ChangeRequest(*id), Some(Record::ChangeRequest(row)))
        }
        ChainEvent::ChangeRequestApproved { id, by }
        | ChainEvent::ChangeRequestCancelled { id, by } => {
            let mut row = get_change(t, block, *id)?;
            row.status = if matches!(event, ChainEvent::ChangeRequestApproved { .. }) {
                ChangeStatus::Approved
            } else {
                ChangeStatus::Cancelled
            };
            row.decided_by = Some(*by);
            t.put(Key::ChangeRequest(*id), Some(Record::ChangeRequest(row)))
        }
        ChainEvent::DealChanged {
            id,
            price,
            duration,
        } => {
            let mut row = get_deal(t, block, *id)?;
            row.deal.price = *price;
            row.deal.duration = *duration;
            if *duration != 0 {
                row.deal.end = row.deal.start + duration;
            }
            t.put(Key::Deal(*id), Some(Record::Deal(row)))
        }
        ChainEvent::WorkerAnnounced { worker, master } => {
            let row = WorkerRow {
                worker: *worker,
                master: *master,
                confirmed: false,
            };
            t.put(Key::Worker(*worker), Some(Record::Worker(row)))
        }
        ChainEvent::WorkerConfirmed { worker, master } => {
            let row = WorkerRow {
                worker: *worker,
                master: *master,
                confirmed: true,
            };
            t.put(Key::Worker(*worker), Some(Record::Worker(row)))
        }
        ChainEvent::WorkerRemoved { worker, .. } => t.put(Key::Worker(*worker), None),
        ChainEvent::Blacklisted { owner, who } => {
            t.put(Key::Blacklist(*owner, *who), Some(Record::Listed))
        }
        ChainEvent::Unblacklisted { owner, who } => t.put(Key::Blacklist(*owner, *who), None),
        ChainEvent::IdentityLevelChanged { subject, level } => t.put(
            Key::Level(*subject),
            (*level != IdentityLevel::Anonymous).then_some(Record::Level(*level)),
        ),
        ChainEvent::CertificateIssued {
            id,
            validator,
            subject,
            attribute_type,
            value,
        } => {
            let row = CertificateRow {
                id: *id,
                validator: *validator,
                subject: *subject,
                attribute_type: *attribute_type,
                value: value.clone(),
                revoked: false,
            };
            t.put(Key::Certificate(*id), Some(Record::Certificate(row)))
        }
        ChainEvent::CertificateRevoked { id, .. } => {
            let mut row = match t.get(&Key::Certificate(*id))? {
                Some(Record::Certificate(row)) => row,
                _ => return Err(missing(block, "certificate", id)),
            };
            row.revoked = true;
            t.put(Key::Certificate(*id), Some(Record::Certificate(row)))
        }
        ChainEvent::GateLocked {
            nonce,
            from,
            to,
            amount,
            dst_chain,
        } => {
            let row = TransferRow::Locked {
                nonce: *nonce,
                from: *from,
                to: *to,
                amount: *amount,
                dst_chain: *dst_chain,
                block,
            };
            t.put(Key::GateLock(*nonce), Some(Record::Transfer(row)))
        }
        ChainEvent::GatePaid {
            transfer,
            src_chain,
            src_gate,
            nonce,
            to,
            amount,
        } => {
            let row = TransferRow::Paid {
                transfer: *transfer,
                src_chain: *src_chain,
                src_gate: *src_gate,
                nonce: *nonce,
                to: *to,
                amount: *amount,
                block,
            };
            t.put(Key::GatePayment(*transfer), Some(Record::Transfer(row)))
        }
        ChainEvent::GateKeeperSet {
            keeper,
            daily_limit,
        } => {
            let frozen = match t.get(&Key::GateKeeper(*keeper))? {
                Some(Record::GateKeeper(row)) => row.frozen,
                _ => false,
            };
            let row = KeeperRow {
                keeper: *keeper,
                daily_limit: *daily_limit,
                frozen,
            };
            t.put(Key::GateKeeper(*keeper), Some(Record::GateKeeper(row)))
        }
        ChainEvent::GateKeeperFrozen { keeper, frozen } => {
            let mut row = match t.get(&Key::GateKeeper(*keeper))? {
                Some(Record::GateKeeper(row)) => row,
                _ => return Err(missing(block, "gate keeper", keeper)),
            };
            row.frozen = *frozen;
            t.put(Key::GateKeeper(*keeper), Some(Record::GateKeeper(row)))
        }
        ChainEvent::GateThresholdSet { threshold } => {
            t.put(Key::GateThreshold, Some(Record::GateThreshold(*threshold)))
        }
        ChainEvent::SignedOrderUsed { author, nonce, .. } => {
            let (word, bit) = nonce_bit(*nonce);
            if !spend_nonces(t, *author, word, bit)? {
                // The Market takes a nonce once: a second use contradicts the history.
                return Err(ApplyError::NonceSpent {
                    block,
                    author: *author,
                    nonce: *nonce,
                });
            }
            Ok(())
        }
        ChainEvent::NoncesCancelled { author, word, mask } => {
            // Cancelling a spent nonce again is allowed on chain (the bits are OR-ed).
            spend_nonces(t, *author, *word, *mask).map(|_| ())
        }
    }
}

/// Marks `author`'s nonces `word * 256 + i` for each bit i of `mask` as spent and deletes the
/// signed orders that carry one of them (every order of that nonce, whatever its digest: the
/// chain takes none of them any more). Returns whether every bit of `mask` was new.
fn spend_nonces<S: Store>(
    t: &mut Tracked<'_, S>,
    author: Address,
    word: U256,
    mask: U256,
) -> Result<bool, ApplyError<S::Error>> {
    let key = Key::NonceWord(author, word);
    let old = match t.get(&key)? {
        Some(Record::NonceBits(bits)) => bits,
        _ => U256::ZERO,
    };
    if old | mask != old {
        t.put(key, Some(Record::NonceBits(old | mask)))?;
    }
    let spent = t
        .store
        .signed_orders_in_word(author, word)
        .map_err(ApplyError::Store)?;
    for (low, digest) in spent {
        if mask.bit(usize::from(low)) {
            t.put(Key::SignedOrder(digest), None)?;
        }
    }
    Ok(old & mask == U256::ZERO)
}

/// A [`Store`] in memory, for tests and tools. No secondary indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    pub records: BTreeMap<Key, Record>,
}

impl Store for MemStore {
    type Error = std::convert::Infallible;
    fn get(&mut self, key: &Key) -> Result<Option<Record>, Self::Error> {
        Ok(self.records.get(key).cloned())
    }
    fn put(&mut self, key: &Key, value: Option<&Record>) -> Result<(), Self::Error> {
        match value {
            Some(v) => self.records.insert(key.clone(), v.clone()),
            None => self.records.remove(key),
        };
        Ok(())
    }
    fn signed_orders_in_word(
        &mut self,
        author: Address,
        word: U256,
    ) -> Result<Vec<(u8, B256)>, Self::Error> {
        // A scan: the test store has no secondary indexes.
        Ok(self
            .records
            .values()
            .filter_map(|r| match r {
                Record::SignedOrder(row)
                    if row.order.author == author && nonce_bit(row.nonce).0 == word =>
                {
                    Some((row.nonce.byte(0), row.digest))
                }
                _ => None,
            })
            .collect())
    }
}
