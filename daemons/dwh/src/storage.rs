//! LMDB storage (heed): primary records, their secondary indexes, the undo log of
//! the last blocks and the checkpoint, all written in one transaction per batch.
//!
//! Every database maps bytes to bytes. Numbers in keys are big-endian so that LMDB's
//! byte order is numeric order; values are postcard.
//!
//! | database | key | value |
//! |---|---|---|
//! | `orders` | id | [`OrderRow`] |
//! | `orders_by_market` | type, status, price (16 B), id | – |
//! | `orders_by_author` | author, type, status, price, id | – |
//! | `deals` | id | [`DealRow`] |
//! | `deals_by_party` | role, address, status, id | – |
//! | `bills` | deal, seq (4 B) | [`BillRow`](crate::index::BillRow) |
//! | `changes` / `changes_by_deal` | id / deal, id | [`ChangeRequestRow`] / – |
//! | `workers` | worker | [`WorkerRow`](crate::index::WorkerRow) |
//! | `blacklist` | owner, listed | – |
//! | `levels` | address | identity level |
//! | `certificates` / `certs_by_subject` | id / subject, id | [`CertificateRow`] / – |
//! | `gate_locks` / `gate_payments` | nonce / transfer id | [`TransferRow`] |
//! | `transfers_by_party` | address, kind (1 lock, 2 payment), nonce or transfer id | – |
//! | `profiles_by_level` | level, address | – |
//! | `gate_keepers` | keeper | [`KeeperRow`](crate::index::KeeperRow) (the threshold: `meta`, key `gate_threshold`) |
//! | `profiles_by_country` | country (2 B, upper case), subject, certificate id | – |
//! | `signed_orders` | digest | [`SignedOrderRow`] (posted through the API, not by blocks) |
//! | `signed_by_market` | type, price (16 B), digest | – |
//! | `signed_by_author` | author, type, price, digest | – |
//! | `signed_by_nonce` | author, nonce (32 B), digest | – |
//! | `signed_by_expiry` | expiry (8 B), digest | – |
//! | `nonces` | author, word (32 B) | the word's used or cancelled nonce bits (U256) |
//! | `blocks` | number | hash (blocks with events and batch ends, the last N) |
//! | `undo` | number | the block's [`Undo`] |
//! | `meta` | `checkpoint` | number, hash |

use std::ops::Bound;
use std::path::Path;

use alloy::primitives::{Address, B256, U256};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use serde::{Deserialize, Serialize};
use sonm_market::{DealStatus, OrderType};
use thiserror::Error;

use crate::index::{
    self, ApplyError, BlockEvents, BookChange, CertificateRow, ChangeRequestRow, DealRow, Key,
    OrderRow, OrderStatus, Record, SignedOrderRow, Store, TransferRow, Undo, nonce_bit,
};

/// The environment type the DWH uses: read transactions are not tied to a thread,
/// so that the HTTP workers can use them.
pub type DwhEnv = Env<WithoutTls>;

type Db<'e> = Database<'e, Bytes, Bytes>;

/// What went wrong in LMDB or in our encoding of it.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("LMDB: {0}")]
    Lmdb(#[from] heed::Error),
    #[error("encoding: {0}")]
    Encoding(#[from] postcard::Error),
    #[error("corrupt database: {0}")]
    Corrupt(String),
}

/// Why a batch could not be stored.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("indexing: {0}")]
    Apply(#[from] ApplyError<DbError>),
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: heed::Error,
    },
}

impl From<heed::Error> for StorageError {
    fn from(e: heed::Error) -> Self {
        StorageError::Db(DbError::Lmdb(e))
    }
}

/// Why a signed order was not added to the book (the checks that need the store; those that
/// need only the order are in [`crate::signed`]).
#[derive(Debug, Error)]
pub enum PostError {
    #[error("nonce {nonce} of {author} is used or cancelled on chain")]
    NonceSpent { author: Address, nonce: U256 },
    #[error("{author} has {limit} live signed orders, the most the book keeps per author")]
    AuthorLimit { author: Address, limit: usize },
    #[error("the book holds {limit} signed orders, the most it keeps: try again as they expire")]
    BookFull { limit: usize },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<heed::Error> for PostError {
    fn from(e: heed::Error) -> Self {
        PostError::Db(DbError::Lmdb(e))
    }
}

/// What a post did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// Added to the book.
    Created,
    /// The book has it already (the same digest): nothing changed.
    Known,
}

/// The last block indexed and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub number: u64,
    pub hash: B256,
}

const MAX_DBS: u32 = 40;

/// Opens (creating the directory) the LMDB environment of a data directory.
/// `map_size` is the most the file may grow to, in bytes.
pub fn open_env(path: &Path, map_size: usize) -> Result<DwhEnv, StorageError> {
    let err = |source| StorageError::Open {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(|e| err(heed::Error::Io(e)))?;
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(MAX_DBS);
    // SAFETY: LMDB's contract for opening is that the same file is not opened twice
    // in one process (heed refuses that itself) and that nothing else writes the
    // file behind LMDB's back: the data directory belongs to this daemon alone
    // (ARCHITECTURE.md: only the DWH owns its LMDB files), and we never write or
    // truncate the files directly.
    #[allow(unsafe_code)]
    let env = unsafe { options.open(path) };
    env.map_err(err)
}

#[derive(Clone, Copy, Debug)]
struct Dbs<'e> {
    orders: Db<'e>,
    orders_by_market: Db<'e>,
    orders_by_author: Db<'e>,
    deals: Db<'e>,
    deals_by_party: Db<'e>,
    bills: Db<'e>,
    changes: Db<'e>,
    changes_by_deal: Db<'e>,
    workers: Db<'e>,
    blacklist: Db<'e>,
    levels: Db<'e>,
    certificates: Db<'e>,
    certs_by_subject: Db<'e>,
    gate_locks: Db<'e>,
    gate_payments: Db<'e>,
    transfers_by_party: Db<'e>,
    profiles_by_level: Db<'e>,
    profiles_by_country: Db<'e>,
    gate_keepers: Db<'e>,
    signed_orders: Db<'e>,
    signed_by_market: Db<'e>,
    signed_by_author: Db<'e>,
    signed_by_nonce: Db<'e>,
    signed_by_expiry: Db<'e>,
    nonces: Db<'e>,
    blocks: Db<'e>,
    undo: Db<'e>,
    meta: Db<'e>,
}

impl<'e> heed::OnCommit for Dbs<'e> {
    type Committed = Dbs<'e>;
    fn on_commit(self, token: &heed::CommitToken) -> Dbs<'e> {
        Dbs {
            orders: self.orders.on_commit(token),
            orders_by_market: self.orders_by_market.on_commit(token),
            orders_by_author: self.orders_by_author.on_commit(token),
            deals: self.deals.on_commit(token),
            deals_by_party: self.deals_by_party.on_commit(token),
            bills: self.bills.on_commit(token),
            changes: self.changes.on_commit(token),
            changes_by_deal: self.changes_by_deal.on_commit(token),
            workers: self.workers.on_commit(token),
            blacklist: self.blacklist.on_commit(token),
            levels: self.levels.on_commit(token),
            certificates: self.certificates.on_commit(token),
            certs_by_subject: self.certs_by_subject.on_commit(token),
            gate_locks: self.gate_locks.on_commit(token),
            gate_payments: self.gate_payments.on_commit(token),
            transfers_by_party: self.transfers_by_party.on_commit(token),
            profiles_by_level: self.profiles_by_level.on_commit(token),
            profiles_by_country: self.profiles_by_country.on_commit(token),
            gate_keepers: self.gate_keepers.on_commit(token),
            signed_orders: self.signed_orders.on_commit(token),
            signed_by_market: self.signed_by_market.on_commit(token),
            signed_by_author: self.signed_by_author.on_commit(token),
            signed_by_nonce: self.signed_by_nonce.on_commit(token),
            signed_by_expiry: self.signed_by_expiry.on_commit(token),
            nonces: self.nonces.on_commit(token),
            blocks: self.blocks.on_commit(token),
            undo: self.undo.on_commit(token),
            meta: self.meta.on_commit(token),
        }
    }
}

/// The indexed data in an LMDB environment.
#[derive(Debug)]
pub struct Storage<'e> {
    env: &'e DwhEnv,
    dbs: Dbs<'e>,
}

/// A party's role in a deal, as kept in `deals_by_party`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Any,
    Supplier,
    Consumer,
    Master,
}

impl Role {
    pub const fn code(self) -> u8 {
        match self {
            Role::Any => 0,
            Role::Supplier => 1,
            Role::Consumer => 2,
            Role::Master => 3,
        }
    }
}

pub const fn deal_status_code(status: DealStatus) -> u8 {
    match status {
        DealStatus::Accepted => 1,
        DealStatus::Closed => 2,
    }
}

pub fn order_market_prefix(order_type: OrderType, status: OrderStatus) -> Vec<u8> {
    vec![order_type.code(), status.code()]
}

pub fn order_author_prefix(author: Address, order_type: OrderType, status: OrderStatus) -> Vec<u8> {
    let mut k = author.to_vec();
    k.extend([order_type.code(), status.code()]);
    k
}

fn order_tail(row: &OrderRow) -> Vec<u8> {
    let mut k = row.order.price.to_be_bytes().to_vec();
    k.extend(row.order.id.to_be_bytes());
    k
}

/// The `signed_by_market` prefix of one side of the signed-order book.
pub fn signed_market_prefix(order_type: OrderType) -> Vec<u8> {
    vec![order_type.code()]
}

/// The `signed_by_author` prefix of an author's signed orders of one side.
pub fn signed_author_prefix(author: Address, order_type: OrderType) -> Vec<u8> {
    let mut k = author.to_vec();
    k.push(order_type.code());
    k
}

/// The `signed_by_nonce` prefix of an author's nonces in `word` (`None` for a word no nonce
/// reaches: nonces are 256 bits, so words are below 2^248).
fn signed_nonce_prefix(author: Address, word: U256) -> Option<Vec<u8>> {
    let bytes = word.to_be_bytes::<32>();
    // The nonce's 32 big-endian bytes are the word's low 31 bytes, then the bit's index.
    (bytes[0] == 0).then(|| {
        let mut k = author.to_vec();
        k.extend(&bytes[1..]);
        k
    })
}

fn signed_index_entries<'e>(dbs: &Dbs<'e>, row: &SignedOrderRow) -> Vec<(Db<'e>, Vec<u8>)> {
    let o = &row.order;
    let mut tail = o.price.to_be_bytes().to_vec();
    tail.extend(row.digest.as_slice());
    let mut market = signed_market_prefix(o.order_type);
    market.extend(&tail);
    let mut by_author = signed_author_prefix(o.author, o.order_type);
    by_author.extend(&tail);
    let mut by_nonce = o.author.to_vec();
    by_nonce.extend(row.nonce.to_be_bytes::<32>());
    by_nonce.extend(row.digest.as_slice());
    let mut by_expiry = row.expiry.to_be_bytes().to_vec();
    by_expiry.extend(row.digest.as_slice());
    vec![
        (dbs.signed_by_market, market),
        (dbs.signed_by_author, by_author),
        (dbs.signed_by_nonce, by_nonce),
        (dbs.signed_by_expiry, by_expiry),
    ]
}

/// The digest at the end of a signed-order index key.
pub fn digest_of(key: &[u8]) -> Result<B256, DbError> {
    key.len()
        .checked_sub(32)
        .map(|at| B256::from_slice(&key[at..]))
        .ok_or_else(|| DbError::Corrupt("a signed-order index key shorter than a digest".into()))
}

fn deal_party_keys(row: &DealRow) -> Vec<Vec<u8>> {
    let d = &row.deal;
    let status = deal_status_code(d.status);
    let key = |role: Role, a: Address| {
        let mut k = vec![role.code()];
        k.extend(a.as_slice());
        k.push(status);
        k.extend(d.id.to_be_bytes());
        k
    };
    let mut keys = vec![
        key(Role::Supplier, d.supplier),
        key(Role::Consumer, d.consumer),
        key(Role::Master, d.master),
    ];
    let mut parties = vec![d.supplier, d.consumer, d.master];
    parties.sort();
    parties.dedup();
    keys.extend(parties.into_iter().map(|a| key(Role::Any, a)));
    keys
}

pub fn deal_party_prefix(role: Role, party: Address, status: Option<DealStatus>) -> Vec<u8> {
    let mut k = vec![role.code()];
    k.extend(party.as_slice());
    if let Some(s) = status {
        k.push(deal_status_code(s));
    }
    k
}

fn change_deal_key(row: &ChangeRequestRow) -> Vec<u8> {
    let mut k = row.deal.to_be_bytes().to_vec();
    k.extend(row.id.to_be_bytes());
    k
}

const CHECKPOINT: &[u8] = b"checkpoint";
/// The gate's threshold, a primary record kept beside the checkpoint.
const GATE_THRESHOLD: &[u8] = b"gate_threshold";

/// The primary database and key of a record.
fn locate<'e>(dbs: &Dbs<'e>, key: &Key) -> (Db<'e>, Vec<u8>) {
    match key {
        Key::Order(id) => (dbs.orders, id.to_be_bytes().to_vec()),
        Key::Deal(id) => (dbs.deals, id.to_be_bytes().to_vec()),
        Key::Bill(deal, seq) => {
            let mut k = deal.to_be_bytes().to_vec();
            k.extend(seq.to_be_bytes());
            (dbs.bills, k)
        }
        Key::ChangeRequest(id) => (dbs.changes, id.to_be_bytes().to_vec()),
        Key::Worker(a) => (dbs.workers, a.to_vec()),
        Key::Blacklist(owner, who) => {
            let mut k = owner.to_vec();
            k.extend(who.as_slice());
            (dbs.blacklist, k)
        }
        Key::Level(a) => (dbs.levels, a.to_vec()),
        Key::Certificate(id) => (dbs.certificates, id.to_be_bytes().to_vec()),
        Key::GateLock(nonce) => (dbs.gate_locks, nonce.to_be_bytes().to_vec()),
        Key::GatePayment(id) => (dbs.gate_payments, id.to_vec()),
        Key::GateKeeper(a) => (dbs.gate_keepers, a.to_vec()),
        Key::GateThreshold => (dbs.meta, GATE_THRESHOLD.to_vec()),
        Key::SignedOrder(digest) => (dbs.signed_orders, digest.to_vec()),
        Key::NonceWord(author, word) => {
            let mut k = author.to_vec();
            k.extend(word.to_be_bytes::<32>());
            (dbs.nonces, k)
        }
    }
}

/// The secondary index entries of a record.
fn index_entries<'e>(dbs: &Dbs<'e>, key: &Key, record: &Record) -> Vec<(Db<'e>, Vec<u8>)> {
    match record {
        Record::Order(row) => {
            let tail = order_tail(row);
            let mut m = order_market_prefix(row.order.order_type, row.status);
            m.extend(&tail);
            let mut a = order_author_prefix(row.order.author, row.order.order_type, row.status);
            a.extend(&tail);
            vec![(dbs.orders_by_market, m), (dbs.orders_by_author, a)]
        }
        Record::Deal(row) => deal_party_keys(row)
            .into_iter()
            .map(|k| (dbs.deals_by_party, k))
            .collect(),
        Record::ChangeRequest(row) => vec![(dbs.changes_by_deal, change_deal_key(row))],
        Record::Certificate(row) => {
            let mut k = row.subject.to_vec();
            k.extend(row.id.to_be_bytes());
            let mut entries = vec![(dbs.certs_by_subject, k)];
            entries.extend(country_key(row).map(|k| (dbs.profiles_by_country, k)));
            entries
        }
        Record::Level(level) => match key {
            Key::Level(who) => {
                let mut k = vec![*level as u8];
                k.extend(who.as_slice());
                vec![(dbs.profiles_by_level, k)]
            }
            _ => Vec::new(),
        },
        Record::Transfer(row) => transfer_party_keys(row)
            .into_iter()
            .map(|k| (dbs.transfers_by_party, k))
            .collect(),
        Record::SignedOrder(row) => signed_index_entries(dbs, row),
        _ => Vec::new(),
    }
}

/// The `profiles_by_country` key of a live country certificate.
fn country_key(row: &CertificateRow) -> Option<Vec<u8>> {
    let country = index::country_of(row)?;
    let mut k = country.to_vec();
    k.extend(row.subject.as_slice());
    k.extend(row.id.to_be_bytes());
    Some(k)
}

/// `transfers_by_party` keys: a lock under its sender and its receiver, a payment
/// under its receiver.
fn transfer_party_keys(row: &TransferRow) -> Vec<Vec<u8>> {
    let key = |party: Address, kind: u8, id: &[u8]| {
        let mut k = party.to_vec();
        k.push(kind);
        k.extend(id);
        k
    };
    match row {
        TransferRow::Locked {
            nonce, from, to, ..
        } => {
            let id = nonce.to_be_bytes();
            let mut keys = vec![key(*from, 1, &id)];
            if to != from {
                keys.push(key(*to, 1, &id));
            }
            keys
        }
        TransferRow::Paid { transfer, to, .. } => vec![key(*to, 2, transfer.as_slice())],
    }
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, DbError> {
    Ok(postcard::from_bytes(bytes)?)
}

fn read_record(dbs: &Dbs<'_>, txn: &RoTxn<'_>, key: &Key) -> Result<Option<Record>, DbError> {
    let (db, k) = locate(dbs, key);
    db.get(txn, &k)?.map(decode).transpose()
}

/// A write transaction seen as a [`Store`].
struct TxnStore<'t, 'e> {
    txn: &'t mut RwTxn<'e>,
    dbs: &'t Dbs<'e>,
}

impl Store for TxnStore<'_, '_> {
    type Error = DbError;

    fn get(&mut self, key: &Key) -> Result<Option<Record>, DbError> {
        read_record(self.dbs, self.txn, key)
    }

    fn put(&mut self, key: &Key, value: Option<&Record>) -> Result<(), DbError> {
        let (db, k) = locate(self.dbs, key);
        if let Some(old) = db.get(self.txn, &k)? {
            let old: Record = decode(old)?;
            for (idx, ik) in index_entries(self.dbs, key, &old) {
                idx.delete(self.txn, &ik)?;
            }
        }
        match value {
            Some(v) => {
                db.put(self.txn, &k, &postcard::to_allocvec(v)?)?;
                for (idx, ik) in index_entries(self.dbs, key, v) {
                    idx.put(self.txn, &ik, &[])?;
                }
            }
            None => {
                db.delete(self.txn, &k)?;
            }
        }
        Ok(())
    }

    fn signed_orders_in_word(
        &mut self,
        author: Address,
        word: U256,
    ) -> Result<Vec<(u8, B256)>, DbError> {
        let Some(prefix) = signed_nonce_prefix(author, word) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self.dbs.signed_by_nonce.prefix_iter(self.txn, &prefix)? {
            let (k, _) = item?;
            // author (20), nonce (32: the prefix's 31 and the low byte), digest (32)
            let low = *k.get(51).ok_or_else(|| {
                DbError::Corrupt("a signed_by_nonce key shorter than its nonce".into())
            })?;
            out.push((low, digest_of(k)?));
        }
        Ok(out)
    }
}

fn block_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_u64(bytes: &[u8]) -> Result<u64, DbError> {
    bytes.try_into().map(u64::from_be_bytes).map_err(|_| {
        DbError::Corrupt(format!(
            "a key of {} bytes where 8 are expected",
            bytes.len()
        ))
    })
}

fn read_hash(bytes: &[u8]) -> Result<B256, DbError> {
    B256::try_from(bytes).map_err(|_| DbError::Corrupt("a block hash is not 32 bytes".into()))
}

impl<'e> Storage<'e> {
    /// Opens (creating where missing) the databases.
    pub fn open(env: &'e DwhEnv) -> Result<Self, StorageError> {
        let wtxn = env.write_txn()?;
        let dbs =
            env.create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
                let mut db = |name: &str| opener.create_database::<Bytes, Bytes>(wtxn, Some(name));
                Ok(CommitOrAbort::<_, ()>::Commit(Dbs {
                    orders: db("orders")?,
                    orders_by_market: db("orders_by_market")?,
                    orders_by_author: db("orders_by_author")?,
                    deals: db("deals")?,
                    deals_by_party: db("deals_by_party")?,
                    bills: db("bills")?,
                    changes: db("changes")?,
                    changes_by_deal: db("changes_by_deal")?,
                    workers: db("workers")?,
                    blacklist: db("blacklist")?,
                    levels: db("levels")?,
                    certificates: db("certificates")?,
                    certs_by_subject: db("certs_by_subject")?,
                    gate_locks: db("gate_locks")?,
                    gate_payments: db("gate_payments")?,
                    transfers_by_party: db("transfers_by_party")?,
                    profiles_by_level: db("profiles_by_level")?,
                    profiles_by_country: db("profiles_by_country")?,
                    gate_keepers: db("gate_keepers")?,
                    signed_orders: db("signed_orders")?,
                    signed_by_market: db("signed_by_market")?,
                    signed_by_author: db("signed_by_author")?,
                    signed_by_nonce: db("signed_by_nonce")?,
                    signed_by_expiry: db("signed_by_expiry")?,
                    nonces: db("nonces")?,
                    blocks: db("blocks")?,
                    undo: db("undo")?,
                    meta: db("meta")?,
                }))
            })?;
        match dbs {
            CommitOrAbort::Commit(dbs) => {
                let storage = Storage { env, dbs };
                storage.backfill_country_index()?;
                Ok(storage)
            }
            CommitOrAbort::Abort(()) => {
                Err(DbError::Corrupt("database creation aborted".into()).into())
            }
        }
    }

    /// A data directory written before `profiles_by_country` existed has certificates but
    /// an empty country index: derive it once from the certificates (in one transaction).
    fn backfill_country_index(&self) -> Result<(), DbError> {
        let mut txn = self.env.write_txn()?;
        if !self.dbs.profiles_by_country.is_empty(&txn)? || self.dbs.certificates.is_empty(&txn)? {
            return Ok(());
        }
        let mut entries = Vec::new();
        for item in self.dbs.certificates.iter(&txn)? {
            let (_, v) = item?;
            let row: CertificateRow = decode(v)?;
            entries.extend(country_key(&row));
        }
        for k in &entries {
            self.dbs.profiles_by_country.put(&mut txn, k, &[])?;
        }
        txn.commit()?;
        if !entries.is_empty() {
            tracing::info!(
                entries = entries.len(),
                "built the country index from the certificates"
            );
        }
        Ok(())
    }

    pub fn read_txn(&self) -> Result<RoTxn<'e, WithoutTls>, DbError> {
        Ok(self.env.read_txn()?)
    }

    /// The last block indexed, `None` before the first batch.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, DbError> {
        let txn = self.read_txn()?;
        self.checkpoint_in(&txn)
    }

    pub fn checkpoint_in(&self, txn: &RoTxn<'_>) -> Result<Option<Checkpoint>, DbError> {
        self.dbs.meta.get(txn, CHECKPOINT)?.map(decode).transpose()
    }

    /// Applies `blocks` (ascending, all above the checkpoint and at most `end`), records
    /// their hashes and undo logs, moves the checkpoint to `end`, and forgets undo logs
    /// older than `keep` blocks behind `end`: all in one transaction. Returns what the
    /// order book must do once this has committed.
    pub fn commit_batch(
        &self,
        blocks: &[BlockEvents],
        end: Checkpoint,
        keep: u64,
    ) -> Result<Vec<BookChange>, StorageError> {
        let mut txn = self.env.write_txn()?;
        let mut book = Vec::new();
        for block in blocks {
            let applied = index::apply_block(
                &mut TxnStore {
                    txn: &mut txn,
                    dbs: &self.dbs,
                },
                block,
            )?;
            book.extend(applied.book);
            let k = block_key(block.number);
            self.dbs.blocks.put(&mut txn, &k, block.hash.as_slice())?;
            self.dbs.undo.put(
                &mut txn,
                &k,
                &postcard::to_allocvec(&applied.undo).map_err(DbError::from)?,
            )?;
        }
        self.dbs
            .blocks
            .put(&mut txn, &block_key(end.number), end.hash.as_slice())?;
        self.dbs.meta.put(
            &mut txn,
            CHECKPOINT,
            &postcard::to_allocvec(&end).map_err(DbError::from)?,
        )?;
        let oldest = block_key(end.number.saturating_sub(keep));
        let range = (Bound::Unbounded, Bound::Excluded(&oldest[..]));
        self.dbs.blocks.delete_range(&mut txn, &range)?;
        self.dbs.undo.delete_range(&mut txn, &range)?;
        txn.commit()?;
        Ok(book)
    }

    /// The recorded block hashes (blocks with events and batch ends of the last N
    /// blocks), newest first: where a reorg search looks for the fork point.
    pub fn recorded_blocks(&self) -> Result<Vec<Checkpoint>, DbError> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.blocks.rev_iter(&txn)? {
            let (k, v) = item?;
            out.push(Checkpoint {
                number: read_u64(k)?,
                hash: read_hash(v)?,
            });
        }
        Ok(out)
    }

    /// Undoes every block above `fork` (a recorded block that is still on the chain)
    /// and makes `fork` the checkpoint, in one transaction.
    pub fn unwind_to(&self, fork: Checkpoint) -> Result<Vec<BookChange>, StorageError> {
        let mut txn = self.env.write_txn()?;
        let above = block_key(fork.number + 1);
        let range = (Bound::Included(&above[..]), Bound::Unbounded);
        let mut undos: Vec<Undo> = Vec::new();
        for item in self.dbs.undo.rev_range(&txn, &range)? {
            let (_, v) = item?;
            undos.push(decode(v)?);
        }
        let mut book = Vec::new();
        for undo in undos {
            book.extend(index::undo_block(
                &mut TxnStore {
                    txn: &mut txn,
                    dbs: &self.dbs,
                },
                undo,
            )?);
        }
        self.dbs.undo.delete_range(&mut txn, &range)?;
        self.dbs.blocks.delete_range(&mut txn, &range)?;
        self.dbs
            .blocks
            .put(&mut txn, &block_key(fork.number), fork.hash.as_slice())?;
        self.dbs.meta.put(
            &mut txn,
            CHECKPOINT,
            &postcard::to_allocvec(&fork).map_err(DbError::from)?,
        )?;
        txn.commit()?;
        Ok(book)
    }

    // ------------------------------------------------------------ reads

    pub fn record(&self, txn: &RoTxn<'_>, key: &Key) -> Result<Option<Record>, DbError> {
        read_record(&self.dbs, txn, key)
    }

    pub fn order(&self, txn: &RoTxn<'_>, id: u64) -> Result<Option<OrderRow>, DbError> {
        match self.record(txn, &Key::Order(id))? {
            Some(Record::Order(row)) => Ok(Some(row)),
            None => Ok(None),
            Some(_) => Err(DbError::Corrupt(format!("order {id} holds another record"))),
        }
    }

    pub fn deal(&self, txn: &RoTxn<'_>, id: u64) -> Result<Option<DealRow>, DbError> {
        match self.record(txn, &Key::Deal(id))? {
            Some(Record::Deal(row)) => Ok(Some(row)),
            None => Ok(None),
            Some(_) => Err(DbError::Corrupt(format!("deal {id} holds another record"))),
        }
    }

    /// Every active order (to build the order book at start-up).
    pub fn active_orders(&self, txn: &RoTxn<'_>) -> Result<Vec<OrderRow>, DbError> {
        let mut out = Vec::new();
        for t in [OrderType::Bid, OrderType::Ask] {
            let prefix = order_market_prefix(t, OrderStatus::Active);
            for item in self.dbs.orders_by_market.prefix_iter(txn, &prefix)? {
                let (k, _) = item?;
                let id = read_u64(&k[k.len() - 8..])?;
                if let Some(row) = self.order(txn, id)? {
                    out.push(row);
                }
            }
        }
        Ok(out)
    }

    /// Index keys with `prefix`, strictly after `after` when given, at most `limit`.
    pub fn scan_index(
        &self,
        txn: &RoTxn<'_>,
        index: Index,
        prefix: &[u8],
        lower: Option<&[u8]>,
        after: Option<&[u8]>,
        mut visit: impl FnMut(&[u8]) -> Result<bool, DbError>,
    ) -> Result<(), DbError> {
        let db = match index {
            Index::OrdersByMarket => self.dbs.orders_by_market,
            Index::OrdersByAuthor => self.dbs.orders_by_author,
            Index::DealsByParty => self.dbs.deals_by_party,
            Index::ChangesByDeal => self.dbs.changes_by_deal,
            Index::Bills => self.dbs.bills,
            Index::Blacklist => self.dbs.blacklist,
            Index::CertsBySubject => self.dbs.certs_by_subject,
            Index::TransfersByParty => self.dbs.transfers_by_party,
            Index::ProfilesByLevel => self.dbs.profiles_by_level,
            Index::ProfilesByCountry => self.dbs.profiles_by_country,
            Index::GateKeepers => self.dbs.gate_keepers,
            Index::SignedByMarket => self.dbs.signed_by_market,
            Index::SignedByAuthor => self.dbs.signed_by_author,
        };
        let start = match (after, lower) {
            (Some(a), _) => Bound::Excluded(a),
            (None, Some(l)) => Bound::Included(l),
            (None, None) => Bound::Included(prefix),
        };
        for item in db.range(txn, &(start, Bound::Unbounded))? {
            let (k, _) = item?;
            if !k.starts_with(prefix) || !visit(k)? {
                break;
            }
        }
        Ok(())
    }

    pub fn signed_order(
        &self,
        txn: &RoTxn<'_>,
        digest: B256,
    ) -> Result<Option<SignedOrderRow>, DbError> {
        match self.record(txn, &Key::SignedOrder(digest))? {
            Some(Record::SignedOrder(row)) => Ok(Some(row)),
            None => Ok(None),
            Some(_) => Err(DbError::Corrupt(format!(
                "signed order {digest} holds another record"
            ))),
        }
    }

    /// Whether `author`'s signed-order nonce is used or cancelled, as far as indexed.
    pub fn nonce_spent(
        &self,
        txn: &RoTxn<'_>,
        author: Address,
        nonce: U256,
    ) -> Result<bool, DbError> {
        let (word, bit) = nonce_bit(nonce);
        Ok(match self.record(txn, &Key::NonceWord(author, word))? {
            Some(Record::NonceBits(bits)) => bits & bit != U256::ZERO,
            _ => false,
        })
    }

    /// Adds a checked signed order (its signature, order and expiry already verified) to the
    /// book, in one write transaction with the checks that need the store: the same digest is
    /// [`Posted::Known`]; a nonce indexed as used or cancelled is refused; so is an author's
    /// order beyond `per_author` live ones (its expired ones are deleted on the way).
    pub fn post_signed_order(
        &self,
        row: &SignedOrderRow,
        per_author: usize,
        total: usize,
        now: u64,
    ) -> Result<Posted, PostError> {
        let mut txn = self.env.write_txn()?;
        let mut store = TxnStore {
            txn: &mut txn,
            dbs: &self.dbs,
        };
        if store.get(&Key::SignedOrder(row.digest))?.is_some() {
            return Ok(Posted::Known);
        }
        let author = row.order.author;
        let (word, bit) = nonce_bit(row.nonce);
        if let Some(Record::NonceBits(bits)) = store.get(&Key::NonceWord(author, word))?
            && bits & bit != U256::ZERO
        {
            return Err(PostError::NonceSpent {
                author,
                nonce: row.nonce,
            });
        }
        // The author's orders of both sides: at most `per_author` live ones, plus those that
        // expired since the last purge.
        let mut live = 0usize;
        let mut expired = Vec::new();
        for item in self
            .dbs
            .signed_by_author
            .prefix_iter(store.txn, author.as_slice())?
        {
            let (k, _) = item?;
            let digest = digest_of(k)?;
            match read_record(&self.dbs, store.txn, &Key::SignedOrder(digest))? {
                Some(Record::SignedOrder(r)) if !r.live(now) => expired.push(digest),
                Some(Record::SignedOrder(_)) => live += 1,
                _ => return Err(DbError::Corrupt(format!("no signed order {digest}")).into()),
            }
        }
        for digest in &expired {
            store.put(&Key::SignedOrder(*digest), None)?;
        }
        if live >= per_author {
            txn.commit()?;
            return Err(PostError::AuthorLimit {
                author,
                limit: per_author,
            });
        }
        // Counted in O(1) (LMDB's own entry count), expired orders not yet purged included.
        if usize::try_from(self.dbs.signed_orders.len(store.txn)?).unwrap_or(usize::MAX) >= total {
            txn.commit()?;
            return Err(PostError::BookFull { limit: total });
        }
        store.put(
            &Key::SignedOrder(row.digest),
            Some(&Record::SignedOrder(row.clone())),
        )?;
        txn.commit()?;
        Ok(Posted::Created)
    }

    /// Deletes the signed orders that are no longer live at `now`. Returns how many; writes
    /// nothing (no transaction, no sync) when none expired.
    pub fn purge_expired_signed(&self, now: u64) -> Result<usize, DbError> {
        let collect = |txn: &RoTxn<'_>| -> Result<Vec<B256>, DbError> {
            let mut out = Vec::new();
            for item in self.dbs.signed_by_expiry.iter(txn)? {
                let (k, _) = item?;
                let expiry = read_u64(k.get(..8).unwrap_or_default())?;
                if expiry > now {
                    break;
                }
                out.push(digest_of(k)?);
            }
            Ok(out)
        };
        let read = self.read_txn()?;
        if collect(&read)?.is_empty() {
            return Ok(0);
        }
        drop(read);
        let mut txn = self.env.write_txn()?;
        let expired = collect(&txn)?;
        let mut store = TxnStore {
            txn: &mut txn,
            dbs: &self.dbs,
        };
        for digest in &expired {
            store.put(&Key::SignedOrder(*digest), None)?;
        }
        txn.commit()?;
        Ok(expired.len())
    }

    pub fn level(
        &self,
        txn: &RoTxn<'_>,
        who: Address,
    ) -> Result<sonm_market::IdentityLevel, DbError> {
        Ok(match self.record(txn, &Key::Level(who))? {
            Some(Record::Level(l)) => l,
            _ => sonm_market::IdentityLevel::Anonymous,
        })
    }

    pub fn is_listed(
        &self,
        txn: &RoTxn<'_>,
        owner: Address,
        who: Address,
    ) -> Result<bool, DbError> {
        Ok(self.record(txn, &Key::Blacklist(owner, who))?.is_some())
    }

    pub fn master_of(&self, txn: &RoTxn<'_>, worker: Address) -> Result<Address, DbError> {
        Ok(match self.record(txn, &Key::Worker(worker))? {
            Some(Record::Worker(w)) if w.confirmed => w.master,
            _ => worker,
        })
    }
}

/// The secondary indexes (and prefix-ordered primaries) that queries scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    OrdersByMarket,
    OrdersByAuthor,
    DealsByParty,
    ChangesByDeal,
    Bills,
    Blacklist,
    CertsBySubject,
    TransfersByParty,
    ProfilesByLevel,
    ProfilesByCountry,
    /// The primary `gate_keepers` table, by keeper address.
    GateKeepers,
    SignedByMarket,
    SignedByAuthor,
}
