//! The keeper's LMDB store (heed): one database of byte keys, by prefix.
//!
//! | key | value |
//! |---|---|
//! | `c` chain (8 B) | the last block read from that chain (8 B) |
//! | `t` chain, nonce | a [`Lock`] read from that chain (JSON) |
//! | `s` chain, nonce | this keeper's signature of the transfer (65 B) |
//! | `p` chain, nonce | – (the transfer is paid) |
//!
//! Numbers are big-endian. A batch from a follower (its locks, the `Paid` events it saw and
//! its checkpoint) is one write transaction, so a restart neither misses nor re-reads part of
//! a batch; a signature is stored before it is served or used.

use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, WithoutTls};
use thiserror::Error;

use crate::core::{Lock, TransferKey};

/// The environment type: read transactions may move between threads (the HTTP workers).
pub type KeeperEnv = Env<WithoutTls>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: heed::Error,
    },
    #[error("LMDB: {0}")]
    Lmdb(#[from] heed::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

/// Opens (creating the directory) the LMDB environment of the data directory.
pub fn open_env(path: &Path) -> Result<KeeperEnv, StoreError> {
    let err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(|e| err(heed::Error::Io(e)))?;
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(1 << 30).max_dbs(1);
    // SAFETY: LMDB requires that the file is not opened twice in one process (heed refuses
    // that itself) and that nothing else writes it: the data directory belongs to this
    // keeper alone, and the files are only ever written through LMDB.
    #[allow(unsafe_code)]
    let env = unsafe { options.open(path) };
    env.map_err(err)
}

/// What a restart resumes from.
#[derive(Debug, Default)]
pub struct Saved {
    pub locks: Vec<Lock>,
    pub signatures: Vec<(TransferKey, Vec<u8>)>,
    pub paid: Vec<TransferKey>,
}

#[derive(Debug)]
pub struct Store<'e> {
    env: &'e KeeperEnv,
    db: Database<'e, Bytes, Bytes>,
}

fn key(prefix: u8, k: TransferKey) -> [u8; 17] {
    let mut out = [0; 17];
    out[0] = prefix;
    out[1..9].copy_from_slice(&k.src_chain.to_be_bytes());
    out[9..].copy_from_slice(&k.nonce.to_be_bytes());
    out
}

fn parse_key(bytes: &[u8]) -> Result<TransferKey, StoreError> {
    let bytes: &[u8; 17] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("a key of {} bytes", bytes.len())))?;
    let (chain, nonce) = bytes[1..].split_at(8);
    Ok(TransferKey {
        src_chain: u64::from_be_bytes(chain.try_into().unwrap_or_default()),
        nonce: u64::from_be_bytes(nonce.try_into().unwrap_or_default()),
    })
}

fn checkpoint_key(chain: u64) -> [u8; 9] {
    let mut out = [0; 9];
    out[0] = b'c';
    out[1..].copy_from_slice(&chain.to_be_bytes());
    out
}

impl<'e> Store<'e> {
    pub fn open(env: &'e KeeperEnv) -> Result<Self, StoreError> {
        let wtxn = env.write_txn()?;
        let db = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database::<Bytes, Bytes>(wtxn, Some("keeper"))
                .map(CommitOrAbort::<_, ()>::Commit)
        })?;
        match db {
            CommitOrAbort::Commit(db) => Ok(Store { env, db }),
            CommitOrAbort::Abort(()) => Err(StoreError::Corrupt("creation aborted".into())),
        }
    }

    /// The last block read from `chain`, `None` before the first batch.
    pub fn checkpoint(&self, chain: u64) -> Result<Option<u64>, StoreError> {
        let txn = self.env.read_txn()?;
        match self.db.get(&txn, &checkpoint_key(chain))? {
            None => Ok(None),
            Some(v) => Ok(Some(u64::from_be_bytes(v.try_into().map_err(|_| {
                StoreError::Corrupt("a checkpoint that is not 8 bytes".into())
            })?))),
        }
    }

    /// Records what a follower read from `chain` up to block `to`, in one transaction.
    pub fn commit_batch(
        &self,
        chain: u64,
        locks: &[Lock],
        paid: &[TransferKey],
        to: u64,
    ) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        for lock in locks {
            let k = key(b't', lock.key());
            // The first reading stands (it may have been signed): see core::Observed::Conflict.
            if self.db.get(&txn, &k)?.is_none() {
                let v = serde_json::to_vec(lock)
                    .map_err(|e| StoreError::Corrupt(format!("encoding a lock: {e}")))?;
                self.db.put(&mut txn, &k, &v)?;
            }
        }
        for p in paid {
            self.db.put(&mut txn, &key(b'p', *p), &[])?;
        }
        self.db
            .put(&mut txn, &checkpoint_key(chain), &to.to_be_bytes())?;
        txn.commit()?;
        Ok(())
    }

    pub fn put_signature(&self, k: TransferKey, signature: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.db.put(&mut txn, &key(b's', k), signature)?;
        txn.commit()?;
        Ok(())
    }

    pub fn signature(&self, k: TransferKey) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.db.get(&txn, &key(b's', k))?.map(<[u8]>::to_vec))
    }

    pub fn put_paid(&self, k: TransferKey) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.db.put(&mut txn, &key(b'p', k), &[])?;
        txn.commit()?;
        Ok(())
    }

    pub fn is_paid(&self, k: TransferKey) -> Result<bool, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.db.get(&txn, &key(b'p', k))?.is_some())
    }

    /// Everything a restart needs.
    pub fn load(&self) -> Result<Saved, StoreError> {
        let txn = self.env.read_txn()?;
        let mut saved = Saved::default();
        for prefix in [b't', b's', b'p'] {
            for row in self.db.prefix_iter(&txn, &[prefix])? {
                let (k, v) = row?;
                let k = parse_key(k)?;
                match prefix {
                    b't' => saved.locks.push(
                        serde_json::from_slice(v)
                            .map_err(|e| StoreError::Corrupt(format!("lock {k:?}: {e}")))?,
                    ),
                    b's' => saved.signatures.push((k, v.to_vec())),
                    _ => saved.paid.push(k),
                }
            }
        }
        Ok(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, U256};

    #[test]
    fn a_batch_and_signatures_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lock {
            src_chain: 7,
            nonce: 3,
            to: Address::repeat_byte(1),
            amount: U256::from(5),
            dst_chain: 8,
            block: 10,
        };
        {
            let env = open_env(dir.path()).unwrap();
            let store = Store::open(&env).unwrap();
            assert_eq!(store.checkpoint(7).unwrap(), None);
            let paid = TransferKey {
                src_chain: 8,
                nonce: 1,
            };
            store
                .commit_batch(7, std::slice::from_ref(&lock), &[paid], 12)
                .unwrap();
            store.put_signature(lock.key(), &[27; 65]).unwrap();
        }
        let env = open_env(dir.path()).unwrap();
        let store = Store::open(&env).unwrap();
        assert_eq!(store.checkpoint(7).unwrap(), Some(12));
        assert_eq!(store.checkpoint(8).unwrap(), None);
        let saved = store.load().unwrap();
        assert_eq!(saved.locks, std::slice::from_ref(&lock));
        assert_eq!(saved.signatures, [(lock.key(), vec![27; 65])]);
        assert_eq!(
            saved.paid,
            [TransferKey {
                src_chain: 8,
                nonce: 1
            }]
        );
        assert!(!store.is_paid(lock.key()).unwrap());
    }
}
