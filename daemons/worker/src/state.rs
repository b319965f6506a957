//! The worker's state in LMDB (heed), under `<state dir>/lmdb`: plans with their ask orders,
//! the plans' signed asks (`[market] asks = "signed"`), deals, finished tasks with their
//! receipts, the results kept on disk (`crate::results`), and a few counters (the signed asks'
//! nonces among them). Every change is one write
//! transaction, so a restart (or a crash) finds the last committed state.
//!
//! Values are JSON (readable with `mdb_dump`, tolerant of added fields); keys are big-endian u64
//! ids, so iteration is in id order.

use std::path::Path;

use alloy::primitives::{B256, Bytes as ByteString};
use heed::byteorder::BE;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sonm_market::{Address, DealId, Order, OrderId};

use crate::plan::{PlanId, PlanSpec};
use crate::proto::{Exit, TaskId};
use crate::receipt::SignedReceipt;

/// Room for the state; LMDB grows the file only as it is used.
const MAP_SIZE: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("LMDB: {0}")]
    Lmdb(#[from] heed::Error),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {what} record: {message}")]
    Corrupt { what: &'static str, message: String },
}

/// A plan and where it stands on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub id: PlanId,
    pub spec: PlanSpec,
    /// The active ASK order for this plan (id and the order as placed, which `cancelOrder` needs
    /// back); `None` while none is placed (new, sold, or withdrawn).
    pub ask: Option<Order>,
    /// The deal the plan's slice is sold under, while it is active.
    pub deal: Option<DealId>,
    /// Removal asked for: the ask is withdrawn, then the record deleted.
    pub removing: bool,
    /// Set (to the block number then) just before a `placeOrder` is sent and cleared when its
    /// id is recorded: after a crash in between, the order is looked up from this block on and
    /// adopted instead of being placed twice.
    #[serde(default)]
    pub placing_since: Option<u64>,
}

/// A plan's ask signed off chain and published to the DWH (`[market] asks = "signed"`):
/// everything `openDeal`/`quickBuy` take for it (`sonm_contracts::signed_ref`) and its EIP-712
/// digest. Kept beside its plan's record, in a database of its own keyed by the plan's id, so
/// that the plan record (and the admin protocol that carries it) stays what it is for placed
/// asks. Deleted when a deal spends its nonce (with the deal's record, one transaction) or once
/// its nonce is cancelled on chain; until then the plan's slice is not free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAsk {
    pub plan: PlanId,
    /// The ASK order as signed (id 0).
    pub order: Order,
    /// The last unix second at which the chain takes it; moved later by signing again.
    pub expiry: u64,
    /// Allocated by [`Store::next_ask_nonce`]: never given out twice by this state.
    pub nonce: u64,
    /// 65 bytes r, s, v.
    pub signature: ByteString,
    /// The EIP-712 digest of (order, expiry, nonce): how the DWH names it.
    pub digest: B256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DealState {
    Active,
    Closed,
}

/// A deal on one of this worker's asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealRecord {
    pub id: DealId,
    pub consumer: Address,
    pub ask: OrderId,
    pub bid: OrderId,
    /// The plan whose ask was taken (`None` if the ask was not one of ours any more).
    pub plan: Option<PlanId>,
    pub price: u128,
    pub duration: u64,
    pub start: u64,
    pub last_bill: u64,
    pub state: DealState,
    /// When this worker saw the deal end (unix seconds): its tasks' results are kept for
    /// `result_retention_s` from then. `None` while active, and for deals closed by a worker
    /// that did not record it (the retention then counts from the first sweep that sees it).
    #[serde(default)]
    pub closed_at: Option<u64>,
    /// The block of its `DealOpened`: its logs are read from there (`None` for a deal recorded
    /// by an older worker: from the Market's deploy block).
    #[serde(default)]
    pub opened_block: Option<u64>,
}

/// A task: recorded when it starts (neither receipt nor error: running, or lost in a crash) and
/// again when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub deal: DealId,
    pub consumer: Address,
    pub receipt: Option<SignedReceipt>,
    pub error: Option<String>,
}

/// A file of a kept result (`<state>/results/<task>/…`): enough to serve it after a restart and
/// to refuse bytes that changed on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// `/`-separated, relative to the result's `output/` (or `stdout`, `stderr`).
    pub path: String,
    pub size: u64,
    /// Of the whole file: what the customer is told and the receipt's digest covers.
    pub sha256: B256,
    /// Of each `CHUNK_SIZE` piece, in order: every chunk served is checked against its own.
    pub chunks: Vec<B256>,
}

/// A finished task's result kept on disk under `<state>/results/<task>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResult {
    pub task: TaskId,
    pub deal: DealId,
    /// How it ended, exactly (the receipt encodes only a code or "trapped").
    pub exit: Exit,
    pub stdout: StoredFile,
    pub stderr: StoredFile,
    /// The `/output` files, sorted by path.
    pub outputs: Vec<StoredFile>,
}

const NEXT_PLAN: &str = "next-plan-id";
const NEXT_TASK: &str = "next-task-id";
const DEAL_SCAN: &str = "deal-scan-from-block";
/// 1 while the supplier has the worker in maintenance (see `Worker::set_maintenance`).
const MAINTENANCE: &str = "maintenance";
/// The next nonce a signed ask may use (absent until the first is signed).
const NEXT_ASK_NONCE: &str = "next-ask-nonce";

/// The open store.
#[derive(Debug, Clone)]
pub struct Store {
    env: Env,
    plans: Database<'static, U64<BE>, Bytes>,
    deals: Database<'static, U64<BE>, Bytes>,
    tasks: Database<'static, U64<BE>, Bytes>,
    meta: Database<'static, Str, Bytes>,
    /// Kept results by task id (only while their files are on disk).
    results: Database<'static, U64<BE>, Bytes>,
    /// Signed asks by plan id.
    signed_asks: Database<'static, U64<BE>, Bytes>,
}

type Dbs<'a> = (
    Database<'a, U64<BE>, Bytes>,
    Database<'a, U64<BE>, Bytes>,
    Database<'a, U64<BE>, Bytes>,
    Database<'a, Str, Bytes>,
    Database<'a, U64<BE>, Bytes>,
    Database<'a, U64<BE>, Bytes>,
);

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain data: encoding them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        what,
        message: e.to_string(),
    })
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let env = open_env(dir)?;
        let wtxn = env.write_txn()?;
        let (plans, deals, tasks, meta, results, signed_asks) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, heed::Error> {
                let dbs: Dbs<'_> = (
                    dbo.create_database(wtxn, Some("plans"))?,
                    dbo.create_database(wtxn, Some("deals"))?,
                    dbo.create_database(wtxn, Some("tasks"))?,
                    dbo.create_database(wtxn, Some("meta"))?,
                    dbo.create_database(wtxn, Some("results"))?,
                    dbo.create_database(wtxn, Some("signed-asks"))?,
                );
                Ok(CommitOrAbort::<_, ()>::Commit(dbs))
            })?
            .unwrap_commit();
        Ok(Self {
            env,
            plans,
            deals,
            tasks,
            meta,
            results,
            signed_asks,
        })
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, StateError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta.get(&rtxn, key)?.and_then(|b| {
            let arr: [u8; 8] = b.try_into().ok()?;
            Some(u64::from_be_bytes(arr))
        }))
    }

    fn set_meta_u64(&self, key: &str, value: u64) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        self.meta.put(&mut wtxn, key, &value.to_be_bytes())?;
        wtxn.commit()?;
        Ok(())
    }

    /// Allocates the next id of a counter (1, 2, ...), durably.
    fn next_id(&self, key: &str) -> Result<u64, StateError> {
        let mut wtxn = self.env.write_txn()?;
        let current = self
            .meta
            .get(&wtxn, key)?
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let next = current + 1;
        self.meta.put(&mut wtxn, key, &next.to_be_bytes())?;
        wtxn.commit()?;
        Ok(next)
    }

    pub fn next_plan_id(&self) -> Result<PlanId, StateError> {
        self.next_id(NEXT_PLAN)
    }

    pub fn next_task_id(&self) -> Result<TaskId, StateError> {
        self.next_id(NEXT_TASK)
    }

    /// Allocates a signed ask's nonce, durably, before anything is signed with it: the first is
    /// `first`, then one more each time, so a restart never gives one out again (a crash after
    /// the allocation only skips one).
    pub fn next_ask_nonce(&self, first: u64) -> Result<u64, StateError> {
        let mut wtxn = self.env.write_txn()?;
        let nonce = self
            .meta
            .get(&wtxn, NEXT_ASK_NONCE)?
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(first, u64::from_be_bytes);
        let next = nonce.checked_add(1).ok_or(StateError::Corrupt {
            what: "ask nonce",
            message: "the counter is at its end".into(),
        })?;
        self.meta
            .put(&mut wtxn, NEXT_ASK_NONCE, &next.to_be_bytes())?;
        wtxn.commit()?;
        Ok(nonce)
    }

    /// The first block not yet scanned for deals.
    pub fn deal_scan_from(&self) -> Result<Option<u64>, StateError> {
        self.meta_u64(DEAL_SCAN)
    }

    pub fn set_deal_scan_from(&self, block: u64) -> Result<(), StateError> {
        self.set_meta_u64(DEAL_SCAN, block)
    }

    /// Whether maintenance is on (off when never set).
    pub fn maintenance(&self) -> Result<bool, StateError> {
        Ok(self.meta_u64(MAINTENANCE)? == Some(1))
    }

    pub fn set_maintenance(&self, on: bool) -> Result<(), StateError> {
        self.set_meta_u64(MAINTENANCE, u64::from(on))
    }

    fn put<T: Serialize>(
        &self,
        db: Database<'static, U64<BE>, Bytes>,
        id: u64,
        value: &T,
    ) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        db.put(&mut wtxn, &id, &encode(value))?;
        wtxn.commit()?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(
        &self,
        what: &'static str,
        db: Database<'static, U64<BE>, Bytes>,
        id: u64,
    ) -> Result<Option<T>, StateError> {
        let rtxn = self.env.read_txn()?;
        db.get(&rtxn, &id)?.map(|b| decode(what, b)).transpose()
    }

    fn all<T: DeserializeOwned>(
        &self,
        what: &'static str,
        db: Database<'static, U64<BE>, Bytes>,
    ) -> Result<Vec<T>, StateError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in db.iter(&rtxn)? {
            let (_, bytes) = item?;
            out.push(decode(what, bytes)?);
        }
        Ok(out)
    }

    pub fn put_plan(&self, plan: &PlanRecord) -> Result<(), StateError> {
        self.put(self.plans, plan.id, plan)
    }

    pub fn plan(&self, id: PlanId) -> Result<Option<PlanRecord>, StateError> {
        self.get("plan", self.plans, id)
    }

    pub fn plans(&self) -> Result<Vec<PlanRecord>, StateError> {
        self.all("plan", self.plans)
    }

    pub fn delete_plan(&self, id: PlanId) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        self.plans.delete(&mut wtxn, &id)?;
        wtxn.commit()?;
        Ok(())
    }

    pub fn put_deal(&self, deal: &DealRecord) -> Result<(), StateError> {
        self.put(self.deals, deal.id, deal)
    }

    /// Records a new deal and marks its plan sold (its ask consumed), in one transaction.
    pub fn open_deal(
        &self,
        deal: &DealRecord,
        plan: Option<&PlanRecord>,
    ) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        self.deals.put(&mut wtxn, &deal.id, &encode(deal))?;
        if let Some(plan) = plan {
            self.plans.put(&mut wtxn, &plan.id, &encode(plan))?;
        }
        wtxn.commit()?;
        Ok(())
    }

    /// Records a new deal opened on a signed ask of `plan`, marks the plan sold and deletes its
    /// signed ask (its nonce is spent), in one transaction.
    pub fn open_signed_deal(&self, deal: &DealRecord, plan: PlanId) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        self.deals.put(&mut wtxn, &deal.id, &encode(deal))?;
        self.signed_asks.delete(&mut wtxn, &plan)?;
        if let Some(bytes) = self.plans.get(&wtxn, &plan)? {
            let mut rec: PlanRecord = decode("plan", bytes)?;
            rec.deal = Some(deal.id);
            self.plans.put(&mut wtxn, &plan, &encode(&rec))?;
        }
        wtxn.commit()?;
        Ok(())
    }

    pub fn put_signed_ask(&self, ask: &SignedAsk) -> Result<(), StateError> {
        self.put(self.signed_asks, ask.plan, ask)
    }

    pub fn signed_ask(&self, plan: PlanId) -> Result<Option<SignedAsk>, StateError> {
        self.get("signed ask", self.signed_asks, plan)
    }

    /// Every signed ask, by plan id.
    pub fn signed_asks(&self) -> Result<Vec<SignedAsk>, StateError> {
        self.all("signed ask", self.signed_asks)
    }

    pub fn delete_signed_ask(&self, plan: PlanId) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        self.signed_asks.delete(&mut wtxn, &plan)?;
        wtxn.commit()?;
        Ok(())
    }

    pub fn deal(&self, id: DealId) -> Result<Option<DealRecord>, StateError> {
        self.get("deal", self.deals, id)
    }

    pub fn deals(&self) -> Result<Vec<DealRecord>, StateError> {
        self.all("deal", self.deals)
    }

    pub fn put_task(&self, task: &TaskRecord) -> Result<(), StateError> {
        self.put(self.tasks, task.id, task)
    }

    pub fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StateError> {
        self.get("task", self.tasks, id)
    }

    /// Records how a task ended and, when its result is kept, that result: one transaction, so
    /// a receipt is never recorded without the outputs it covers (or the other way round).
    pub fn finish_task(
        &self,
        task: &TaskRecord,
        result: Option<&StoredResult>,
    ) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        self.tasks.put(&mut wtxn, &task.id, &encode(task))?;
        if let Some(r) = result {
            self.results.put(&mut wtxn, &r.task, &encode(r))?;
        }
        wtxn.commit()?;
        Ok(())
    }

    pub fn result(&self, task: TaskId) -> Result<Option<StoredResult>, StateError> {
        self.get("result", self.results, task)
    }

    /// Every kept result.
    pub fn results(&self) -> Result<Vec<StoredResult>, StateError> {
        self.all("result", self.results)
    }

    pub fn delete_result(&self, task: TaskId) -> Result<(), StateError> {
        let mut wtxn = self.env.write_txn()?;
        self.results.delete(&mut wtxn, &task)?;
        wtxn.commit()?;
        Ok(())
    }
}

// heed's `open` is unsafe: LMDB's memory map is undefined behaviour if the same file is opened
// twice in one process or modified by another program. The worker owns its state directory
// and opens it once (ARCHITECTURE.md: only the worker owns its state directory).
#[allow(unsafe_code)]
fn open_env(dir: &Path) -> Result<Env, heed::Error> {
    // SAFETY: see above; `dir` is the worker's private state directory, opened once.
    unsafe {
        EnvOpenOptions::new()
            .map_size(MAP_SIZE)
            .max_dbs(8)
            .open(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Resources;
    use sonm_market::{IdentityLevel, NetFlags};

    #[test]
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let plan = PlanRecord {
            id: 0,
            spec: PlanSpec {
                name: "p".into(),
                slice: Resources {
                    cpu_cores: 1,
                    ..Resources::default()
                },
                netflags: NetFlags::OUTBOUND,
                price: u128::from(u64::MAX) * 3,
                duration: 0,
                identity_level: IdentityLevel::Registered,
            },
            ask: None,
            deal: Some(4),
            removing: false,
            placing_since: Some(9),
        };
        let deal = DealRecord {
            id: 4,
            consumer: Address::repeat_byte(7),
            ask: 1,
            bid: 2,
            plan: Some(1),
            price: 5,
            duration: 60,
            start: 100,
            last_bill: 100,
            state: DealState::Active,
            closed_at: None,
            opened_block: Some(12),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let id = store.next_plan_id().unwrap();
            assert_eq!(id, 1);
            store
                .open_deal(&deal, Some(&PlanRecord { id, ..plan.clone() }))
                .unwrap();
            store.set_deal_scan_from(42).unwrap();
            assert_eq!(store.next_task_id().unwrap(), 1);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.plans().unwrap(), vec![PlanRecord { id: 1, ..plan }]);
        assert_eq!(store.deal(4).unwrap(), Some(deal));
        assert_eq!(store.deal_scan_from().unwrap(), Some(42));
        assert_eq!(store.next_plan_id().unwrap(), 2);
        assert_eq!(store.next_task_id().unwrap(), 2);
        store.delete_plan(1).unwrap();
        assert!(store.plan(1).unwrap().is_none());
    }

    #[test]
    fn signed_asks_and_their_nonces_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let plan = PlanRecord {
            id: 3,
            spec: PlanSpec {
                name: "p".into(),
                slice: Resources::default(),
                netflags: NetFlags::OUTBOUND,
                price: 5,
                duration: 0,
                identity_level: IdentityLevel::Anonymous,
            },
            ask: None,
            deal: None,
            removing: false,
            placing_since: None,
        };
        let ask = SignedAsk {
            plan: 3,
            order: crate::plan::ask_order(
                Address::repeat_byte(1),
                &plan.spec,
                sonm_market::Benchmarks::ZERO,
            ),
            expiry: 1_000,
            nonce: 0,
            signature: ByteString::from(vec![7u8; 65]),
            digest: B256::repeat_byte(9),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store.next_ask_nonce(500).unwrap(),
                500,
                "the first is `first`"
            );
            assert_eq!(
                store.next_ask_nonce(9_000).unwrap(),
                501,
                "then the counter"
            );
            store.put_plan(&plan).unwrap();
            store
                .put_signed_ask(&SignedAsk {
                    nonce: 501,
                    ..ask.clone()
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.next_ask_nonce(0).unwrap(),
            502,
            "never given out twice"
        );
        let kept = SignedAsk { nonce: 501, ..ask };
        assert_eq!(store.signed_asks().unwrap(), vec![kept.clone()]);
        assert_eq!(store.signed_ask(3).unwrap(), Some(kept.clone()));
        // A deal on it: recorded, the plan sold and the ask gone, together.
        let deal = DealRecord {
            id: 8,
            consumer: Address::repeat_byte(7),
            ask: 0,
            bid: 2,
            plan: Some(3),
            price: 5,
            duration: 0,
            start: 1,
            last_bill: 1,
            state: DealState::Active,
            closed_at: None,
            opened_block: Some(4),
        };
        store.open_signed_deal(&deal, 3).unwrap();
        assert_eq!(store.signed_ask(3).unwrap(), None);
        assert_eq!(store.plan(3).unwrap().unwrap().deal, Some(8));
        assert_eq!(store.deal(8).unwrap(), Some(deal));
        store
            .put_signed_ask(&SignedAsk { plan: 4, ..kept })
            .unwrap();
        store.delete_signed_ask(4).unwrap();
        assert!(store.signed_asks().unwrap().is_empty());
    }

    #[test]
    fn a_kept_result_is_recorded_with_its_task_and_old_deals_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = StoredFile {
            path: "out/a".into(),
            size: 3,
            sha256: B256::repeat_byte(1),
            chunks: vec![B256::repeat_byte(1)],
        };
        let result = StoredResult {
            task: 3,
            deal: 4,
            exit: Exit::Trapped("wall time".into()),
            stdout: StoredFile {
                path: "stdout".into(),
                ..file.clone()
            },
            stderr: StoredFile {
                path: "stderr".into(),
                ..file.clone()
            },
            outputs: vec![file],
        };
        let task = TaskRecord {
            id: 3,
            deal: 4,
            consumer: Address::repeat_byte(7),
            receipt: None,
            error: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.finish_task(&task, Some(&result)).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.task(3).unwrap(), Some(task));
        assert_eq!(store.result(3).unwrap(), Some(result.clone()));
        assert_eq!(store.results().unwrap(), vec![result]);
        store.delete_result(3).unwrap();
        assert_eq!(store.result(3).unwrap(), None);
        assert!(store.task(3).unwrap().is_some(), "the task record stays");

        // A deal recorded before `closed_at` existed.
        let old = r#"{"id":1,"consumer":"0x0707070707070707070707070707070707070707","ask":1,
            "bid":2,"plan":null,"price":5,"duration":0,"start":1,"last_bill":1,"state":"closed"}"#;
        let deal: DealRecord = decode("deal", old.as_bytes()).unwrap();
        assert_eq!((deal.state, deal.closed_at), (DealState::Closed, None));
        assert_eq!(deal.opened_block, None, "read from the deploy block");
    }
}
