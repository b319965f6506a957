//! Staged uploads: module, input and rootfs bytes too big for one message, received in chunks
//! into `<state>/uploads/<id>`, verified against the declared size and sha256 at commit, then
//! consumed by one start request of the same deal. Nothing here trusts the peer: the size is
//! declared (and capped per deal) before anything is written, every chunk must continue exactly
//! where the last one ended, and a refused chunk or commit removes the upload. Uploads idle
//! longer than the timeout, and those of a closed deal, are removed.
//!
//! Sockets are elsewhere: this is driven by [`crate::worker`] and tested on a directory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sonm_market::{Address, DealId};

use crate::proto::{CHUNK_SIZE, TaskError, UploadId};

#[derive(Debug)]
struct Staged {
    deal: DealId,
    owner: Address,
    total: u64,
    sha256: [u8; 32],
    received: u64,
    // Running hash, so commit does not re-read the file.
    hasher: Sha256,
    committed: bool,
    touched: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    next: UploadId,
    staged: HashMap<UploadId, Staged>,
}

/// The worker's staged uploads.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    idle_timeout: Duration,
    inner: Mutex<Inner>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn io(e: std::io::Error) -> TaskError {
    TaskError::Internal(format!("upload staging: {e}"))
}

impl Uploads {
    /// Uploads under `dir`; whatever an earlier run left there is removed (ids restart).
    pub fn open(dir: PathBuf, idle_timeout: Duration) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            idle_timeout,
            inner: Mutex::new(Inner {
                next: 1,
                staged: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: UploadId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn remove(&self, inner: &mut Inner, id: UploadId) {
        inner.staged.remove(&id);
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Bytes declared by the uploads of `deal` (what counts against its cap).
    pub fn used(&self, deal: DealId) -> u64 {
        self.lock()
            .staged
            .values()
            .filter(|s| s.deal == deal)
            .map(|s| s.total)
            .sum()
    }

    /// Files in the staging directory (for tests: nothing is left behind).
    pub fn files(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |d| d.count())
    }

    /// Begins an upload of `total` bytes for `deal` by `owner` (already authorised for the
    /// deal); refused when the deal's staged uploads would exceed `cap`.
    pub fn begin(
        &self,
        deal: DealId,
        owner: Address,
        total: u64,
        sha256: [u8; 32],
        cap: u64,
        now: Instant,
    ) -> Result<UploadId, TaskError> {
        let mut inner = self.lock();
        let used: u64 = inner
            .staged
            .values()
            .filter(|s| s.deal == deal)
            .map(|s| s.total)
            .sum();
        if used.saturating_add(total) > cap {
            return Err(TaskError::UploadTooLarge {
                deal,
                asked: total,
                used,
                cap,
            });
        }
        let id = inner.next;
        inner.next += 1;
        std::fs::File::create(self.path(id)).map_err(io)?;
        inner.staged.insert(
            id,
            Staged {
                deal,
                owner,
                total,
                sha256,
                received: 0,
                hasher: Sha256::new(),
                committed: false,
                touched: now,
            },
        );
        Ok(id)
    }

    /// The staged upload `id` if `peer` owns it. A stranger is refused and changes nothing.
    fn owned(inner: &mut Inner, id: UploadId, peer: Address) -> Result<&mut Staged, TaskError> {
        let s = inner
            .staged
            .get_mut(&id)
            .ok_or(TaskError::UnknownUpload(id))?;
        if s.owner != peer {
            tracing::warn!(upload = id, %peer, owner = %s.owner, "refused: upload of another consumer");
            return Err(TaskError::NotYourUpload { upload: id });
        }
        Ok(s)
    }

    /// Appends `bytes` at `offset`; returns the bytes received so far.
    pub fn chunk(
        &self,
        peer: Address,
        id: UploadId,
        offset: u64,
        bytes: &[u8],
        now: Instant,
    ) -> Result<u64, TaskError> {
        let mut inner = self.lock();
        let s = Self::owned(&mut inner, id, peer)?;
        let len = bytes.len() as u64;
        let refusal = if s.committed {
            Some(TaskError::BadRequest(format!("upload {id} is committed")))
        } else if offset != s.received {
            Some(TaskError::WrongOffset {
                upload: id,
                expected: s.received,
                got: offset,
            })
        } else if bytes.len() > CHUNK_SIZE || s.received + len > s.total {
            Some(TaskError::UploadOverrun {
                upload: id,
                offset,
                len,
                total: s.total,
            })
        } else {
            None
        };
        if let Some(e) = refusal {
            // A client out of step must start again; half an upload is of no use to anyone.
            self.remove(&mut inner, id);
            return Err(e);
        }
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(id))
            .and_then(|mut f| f.write_all(bytes));
        if let Err(e) = written {
            self.remove(&mut inner, id);
            return Err(io(e));
        }
        let s = inner.staged.get_mut(&id).expect("checked above");
        s.hasher.update(bytes);
        s.received += len;
        s.touched = now;
        Ok(s.received)
    }

    /// Verifies the size and sha256; a mismatch removes the upload.
    pub fn commit(&self, peer: Address, id: UploadId, now: Instant) -> Result<(), TaskError> {
        let mut inner = self.lock();
        let s = Self::owned(&mut inner, id, peer)?;
        if s.committed {
            return Ok(());
        }
        let got: [u8; 32] = s.hasher.clone().finalize().into();
        if s.received != s.total || got != s.sha256 {
            let e = TaskError::UploadMismatch {
                upload: id,
                received: s.received,
                total: s.total,
                expected: hex(&s.sha256),
                got: hex(&got),
            };
            self.remove(&mut inner, id);
            return Err(e);
        }
        s.committed = true;
        s.touched = now;
        Ok(())
    }

    /// Takes committed upload `id` of `deal` for a start request: the caller gets its file
    /// (to move or read, then remove) and the upload is gone from the table.
    pub fn take(&self, peer: Address, deal: DealId, id: UploadId) -> Result<TakenFile, TaskError> {
        let mut inner = self.lock();
        let s = Self::owned(&mut inner, id, peer)?;
        if !s.committed || s.deal != deal {
            return Err(TaskError::UploadNotReady { upload: id });
        }
        inner.staged.remove(&id);
        Ok(TakenFile(Some(self.path(id))))
    }

    /// Removes uploads idle (no chunk, no commit) for longer than the timeout, committed or
    /// not: a committed upload nobody starts would hold its deal's cap for ever.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let old: Vec<UploadId> = inner
            .staged
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.touched) > self.idle_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            self.remove(&mut inner, *id);
        }
        old.len()
    }

    /// Removes every upload of `deal` (it ended).
    pub fn drop_deal(&self, deal: DealId) {
        let mut inner = self.lock();
        let ids: Vec<UploadId> = inner
            .staged
            .iter()
            .filter(|(_, s)| s.deal == deal)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(&mut inner, id);
        }
    }
}

/// A committed upload's file, removed when dropped unless moved away with [`TakenFile::keep`].
#[derive(Debug)]
pub struct TakenFile(Option<PathBuf>);

impl TakenFile {
    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("present until kept")
    }

    /// Moves the file to `to` (same file system: the state directory).
    pub fn move_to(mut self, to: &Path) -> std::io::Result<()> {
        let from = self.0.take().expect("present until kept");
        std::fs::rename(&from, to).inspect_err(|_| {
            let _ = std::fs::remove_file(&from);
        })
    }
}

impl Drop for TakenFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Address = Address::repeat_byte(1);
    const STRANGER: Address = Address::repeat_byte(2);

    fn uploads() -> (tempfile::TempDir, Uploads) {
        let dir = tempfile::tempdir().unwrap();
        let u = Uploads::open(dir.path().join("uploads"), Duration::from_secs(60)).unwrap();
        (dir, u)
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn chunks_in_order_commit_and_are_taken_once() {
        let (_d, u) = uploads();
        let t = Instant::now();
        let data = vec![7u8; 2500];
        let id = u.begin(1, ME, 2500, sha(&data), 10_000, t).unwrap();
        assert_eq!(u.chunk(ME, id, 0, &data[..1000], t).unwrap(), 1000);
        assert_eq!(u.chunk(ME, id, 1000, &data[1000..], t).unwrap(), 2500);
        u.commit(ME, id, t).unwrap();
        assert!(matches!(
            u.take(ME, 2, id),
            Err(TaskError::UploadNotReady { .. })
        ));
        let f = u.take(ME, 1, id).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), data);
        drop(f);
        assert_eq!(u.files(), 0);
        assert!(matches!(
            u.take(ME, 1, id),
            Err(TaskError::UnknownUpload(_))
        ));
    }

    #[test]
    fn refusals_are_typed_and_leave_nothing_behind() {
        let (_d, u) = uploads();
        let t = Instant::now();
        // Over the cap, counting what the deal already stages.
        let a = u.begin(1, ME, 600, sha(&[0; 600]), 1000, t).unwrap();
        assert!(matches!(
            u.begin(1, ME, 500, [0; 32], 1000, t),
            Err(TaskError::UploadTooLarge {
                used: 600,
                cap: 1000,
                ..
            })
        ));
        // A stranger's chunk changes nothing.
        assert!(matches!(
            u.chunk(STRANGER, a, 0, &[0; 10], t),
            Err(TaskError::NotYourUpload { .. })
        ));
        assert_eq!(u.chunk(ME, a, 0, &[0; 100], t).unwrap(), 100);
        // A wrong offset removes the upload.
        assert!(matches!(
            u.chunk(ME, a, 50, &[0; 10], t),
            Err(TaskError::WrongOffset {
                expected: 100,
                got: 50,
                ..
            })
        ));
        assert_eq!((u.files(), u.used(1)), (0, 0));
        // A wrong hash removes it at commit.
        let b = u.begin(1, ME, 4, [9; 32], 1000, t).unwrap();
        u.chunk(ME, b, 0, b"abcd", t).unwrap();
        assert!(matches!(
            u.commit(ME, b, t),
            Err(TaskError::UploadMismatch { .. })
        ));
        // So does a chunk past the declared size.
        let c = u.begin(1, ME, 4, sha(b"abcd"), 1000, t).unwrap();
        assert!(matches!(
            u.chunk(ME, c, 0, b"abcde", t),
            Err(TaskError::UploadOverrun { .. })
        ));
        assert_eq!((u.files(), u.used(1)), (0, 0));
    }

    #[test]
    fn idle_uploads_and_closed_deals_are_swept() {
        let (_d, u) = uploads();
        let t = Instant::now();
        let a = u.begin(1, ME, 3, sha(b"abc"), 100, t).unwrap();
        let b = u.begin(2, ME, 3, sha(b"abc"), 100, t).unwrap();
        u.chunk(ME, b, 0, b"abc", t + Duration::from_secs(50))
            .unwrap();
        assert_eq!(u.sweep(t + Duration::from_secs(61)), 1);
        assert!(matches!(
            u.commit(ME, a, t),
            Err(TaskError::UnknownUpload(_))
        ));
        u.commit(ME, b, t + Duration::from_secs(61)).unwrap();
        u.drop_deal(2);
        assert_eq!(u.files(), 0);
    }
}
