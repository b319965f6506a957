//! Finished tasks' results on disk, `<state>/results/<task>/{stdout, stderr, output/…}`: a
//! task's `/output` directory is moved (renamed, not copied) there when it ends, and the store
//! describes every file (`StoredResult`: size, sha256, and the sha256 of each [`CHUNK_SIZE`]
//! piece) in the same transaction as the task's receipt. So a result is served after a restart
//! exactly as before it, and no output is held in memory: each download reads one chunk from
//! disk and checks it against its recorded hash before a byte leaves — bytes that changed on
//! disk are refused ([`TaskError::ResultCorrupt`]), never served.
//!
//! A directory without a record (a crash between the move and the commit, or a removal cut
//! short) is an orphan, removed at start; a record is deleted before its directory, so a
//! download racing a removal either reads the files it already opened (unlinked files keep
//! their bytes) or finds them gone ([`TaskError::ResultGone`]).

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use alloy::primitives::B256;
use sha2::{Digest, Sha256};

use crate::proto::{CHUNK_SIZE, Exit, TaskError, TaskId};
use crate::state::{StateError, Store, StoredFile, StoredResult};
use sonm_market::DealId;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a task may leave in `/output`, checked while its files are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl OutputLimits {
    /// No bound here (the WASM runtime enforced its quota while the job ran).
    pub const NONE: Self = Self {
        max_bytes: u64::MAX,
        max_entries: u64::MAX,
    };
}

/// The results directory and the store that describes it.
#[derive(Debug, Clone)]
pub struct Results {
    dir: PathBuf,
    store: Store,
}

impl Results {
    pub fn new(dir: PathBuf, store: Store) -> Self {
        Self { dir, store }
    }

    /// `<results>/<task>`.
    pub fn task_dir(&self, task: TaskId) -> PathBuf {
        self.dir.join(task.to_string())
    }

    /// Moves a finished task's `output` directory to `<results>/<task>/output`, writes its
    /// stdout and stderr beside it, and describes them all. Nothing is recorded here: the caller
    /// records the result with the task's receipt ([`Store::finish_task`]); until then the
    /// directory is an orphan that the next start removes. A refusal (over `limits`, I/O)
    /// leaves nothing under `<results>`.
    #[allow(clippy::too_many_arguments)]
    pub fn keep(
        &self,
        task: TaskId,
        deal: DealId,
        exit: Exit,
        output: &Path,
        stdout: &[u8],
        stderr: &[u8],
        limits: OutputLimits,
    ) -> Result<StoredResult, String> {
        // Described in place (the job has ended; nothing writes there any more), so a refusal
        // moves nothing.
        let outputs = match describe_outputs(output, limits) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.to_string()),
        };
        let dest = self.task_dir(task);
        let moved = std::fs::create_dir_all(&dest).and_then(|()| {
            match std::fs::rename(output, dest.join("output")) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(dest.join("output"))
                }
                // The state directory is one filesystem: a rename, never a copy. EXDEV (a
                // task directory mounted apart) fails the task rather than copying silently.
                other => other,
            }
        });
        self.finish(task, deal, exit, moved.map(|()| outputs), stdout, stderr)
    }

    /// Writes stdout and stderr beside the result's `output/` and describes them; on any
    /// failure (`outputs` included) removes the result's directory.
    fn finish(
        &self,
        task: TaskId,
        deal: DealId,
        exit: Exit,
        outputs: std::io::Result<Vec<StoredFile>>,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Result<StoredResult, String> {
        let dest = self.task_dir(task);
        let kept = outputs.and_then(|outputs| {
            std::fs::write(dest.join("stdout"), stdout)?;
            std::fs::write(dest.join("stderr"), stderr)?;
            // On disk before the store records it: a record never outlives its bytes in a
            // power loss (they would be refused as corrupt, but the result would be lost).
            sync_tree(&dest)?;
            sync_path(&self.dir)?;
            Ok(StoredResult {
                task,
                deal,
                exit,
                stdout: describe_bytes("stdout", stdout),
                stderr: describe_bytes("stderr", stderr),
                outputs,
            })
        });
        kept.map_err(|e| {
            self.discard(task);
            format!("keeping the result: {e}")
        })
    }

    /// As [`Results::keep`], for outputs that arrive as bytes (a container's, read back from
    /// its own `/output` filesystem): written to `<results>/<task>/output`.
    pub fn keep_files(
        &self,
        task: TaskId,
        deal: DealId,
        exit: Exit,
        files: Vec<(String, Vec<u8>)>,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Result<StoredResult, String> {
        let output = self.task_dir(task).join("output");
        let written = (|| -> std::io::Result<Vec<StoredFile>> {
            std::fs::create_dir_all(&output)?;
            let mut described = Vec::with_capacity(files.len());
            for (path, bytes) in files {
                if !Path::new(&path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(over(format!("output path {path:?} is not plain")));
                }
                let at = output.join(&path);
                if let Some(parent) = at.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&at, &bytes)?;
                described.push(describe_bytes(&path, &bytes));
            }
            described.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(described)
        })();
        self.finish(task, deal, exit, written, stdout, stderr)
    }

    /// Removes `<results>/<task>` (a result that was not recorded after all).
    pub fn discard(&self, task: TaskId) {
        let dir = self.task_dir(task);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(task, "removing {}: {e}", dir.display());
        }
    }

    /// Removes a kept result: its record first (nothing starts serving it after this), then
    /// its files.
    pub fn remove(&self, task: TaskId) -> Result<(), ResultsError> {
        self.store.delete_result(task)?;
        let dir = self.task_dir(task);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ResultsError::Io {
                what: format!("removing {}", dir.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// At start: removes every entry of the results directory the store does not describe,
    /// and every record whose directory is gone. Returns (directories, records) removed.
    pub fn clean_orphans(&self) -> Result<(usize, usize), ResultsError> {
        let known: HashSet<TaskId> = self.store.results()?.iter().map(|r| r.task).collect();
        let io = |what: String| move |source| ResultsError::Io { what, source };
        let mut dirs = 0;
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io(format!("listing {}", self.dir.display())))?;
                    let ours = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<TaskId>().ok())
                        .is_some_and(|t| known.contains(&t));
                    if ours {
                        continue;
                    }
                    let path = entry.path();
                    let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    removed.map_err(io(format!("removing {}", path.display())))?;
                    dirs += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("listing {}", self.dir.display()))(e)),
        }
        let mut records = 0;
        for task in known {
            if !self.task_dir(task).is_dir() {
                tracing::warn!(
                    task,
                    "kept result's directory is gone; forgetting the result"
                );
                self.store.delete_result(task)?;
                records += 1;
            }
        }
        Ok((dirs, records))
    }

    /// Up to [`CHUNK_SIZE`] bytes of output `file` of `result` from `offset` (to the end of the
    /// chunk that holds `offset`), checked against the chunk's recorded sha256.
    pub fn output_chunk(
        &self,
        result: &StoredResult,
        file: &StoredFile,
        offset: u64,
    ) -> Result<Vec<u8>, TaskError> {
        let rel = Path::new("output").join(&file.path);
        self.read_piece(result.task, &rel, file, offset)
    }

    /// The whole of stdout (`stderr = false`) or stderr, checked.
    pub fn log(&self, result: &StoredResult, stderr: bool) -> Result<Vec<u8>, TaskError> {
        let file = if stderr {
            &result.stderr
        } else {
            &result.stdout
        };
        let mut out = Vec::with_capacity(usize::try_from(file.size).unwrap_or(0));
        while (out.len() as u64) < file.size {
            let piece =
                self.read_piece(result.task, Path::new(&file.path), file, out.len() as u64)?;
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    fn read_piece(
        &self,
        task: TaskId,
        rel: &Path,
        file: &StoredFile,
        offset: u64,
    ) -> Result<Vec<u8>, TaskError> {
        if offset >= file.size {
            return Ok(Vec::new());
        }
        let corrupt = |why: &str| {
            tracing::warn!(task, path = %file.path, "kept result refused: {why}");
            TaskError::ResultCorrupt {
                task,
                path: file.path.clone(),
            }
        };
        let chunk = CHUNK_SIZE as u64;
        let index = offset / chunk;
        let start = index * chunk;
        let len = chunk.min(file.size - start);
        let expected = usize::try_from(index)
            .ok()
            .and_then(|i| file.chunks.get(i))
            .ok_or_else(|| corrupt("no chunk hash recorded"))?;
        let f = match std::fs::OpenOptions::new()
            .read(true)
            // Never through a link, whatever appeared there.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(self.task_dir(task).join(rel))
        {
            Ok(f) => f,
            // Removed by the retention between the record and the open: gone, not corrupt.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match self.store.result(task) {
                    Ok(Some(_)) => Err(corrupt("file missing")),
                    Ok(None) => Err(TaskError::ResultGone(task)),
                    Err(e) => Err(TaskError::Internal(e.to_string())),
                };
            }
            Err(e) => return Err(corrupt(&e.to_string())),
        };
        let meta = f
            .metadata()
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        if !meta.is_file() || meta.len() != file.size {
            return Err(corrupt(&format!(
                "{} bytes on disk, {} recorded",
                meta.len(),
                file.size
            )));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, start)
            .map_err(|e| corrupt(&e.to_string()))?;
        if <[u8; 32]>::from(Sha256::digest(&buf)) != expected.0 {
            return Err(corrupt(&format!("chunk {index} does not match its sha256")));
        }
        buf.drain(..(offset - start) as usize);
        Ok(buf)
    }
}

/// fsync of a file or directory by path, opened read-only without following a symlink.
fn sync_path(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?
        .sync_all()
}

/// fsync of every regular file and directory under `dir`, `dir` included, each directory
/// after what it holds (so names are durable with what they name). Symlinks and special files
/// are left alone: never followed, never opened (a FIFO would block the open). Iterative: a
/// job may nest directories as deep as the path length allows.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    let mut dirs = vec![dir.to_path_buf()];
    let mut next = 0;
    while let Some(d) = dirs.get(next).cloned() {
        next += 1;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                dirs.push(e.path());
            } else if ft.is_file() {
                sync_path(&e.path())?;
            }
        }
    }
    // Found parents first: the reverse syncs every directory after those inside it.
    dirs.iter().rev().try_for_each(|d| sync_path(d))
}

/// `bytes` described as a stored file named `name`.
fn describe_bytes(name: &str, bytes: &[u8]) -> StoredFile {
    StoredFile {
        path: name.into(),
        size: bytes.len() as u64,
        sha256: B256::from(<[u8; 32]>::from(Sha256::digest(bytes))),
        chunks: bytes
            .chunks(CHUNK_SIZE)
            .map(|c| B256::from(<[u8; 32]>::from(Sha256::digest(c))))
            .collect(),
    }
}

fn over(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

/// The regular files under `dir`, sorted by `/`-separated path, each hashed by streaming it
/// (never read whole). Symlinks and special files are skipped, never followed; names that are
/// not UTF-8 are skipped too (they could not be named in the protocol).
pub fn describe_outputs(dir: &Path, limits: OutputLimits) -> std::io::Result<Vec<StoredFile>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut entries = 0u64;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        for e in std::fs::read_dir(&path)? {
            let e = e?;
            entries += 1;
            if entries > limits.max_entries {
                return Err(over(format!(
                    "the task left more than {} entries in /output",
                    limits.max_entries
                )));
            }
            let Ok(name) = e.file_name().into_string() else {
                tracing::debug!("output {:?} skipped: not UTF-8", e.path());
                continue;
            };
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push((e.path(), rel));
            } else if ft.is_file() {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(e.path())?;
                let room = limits.max_bytes.saturating_sub(total);
                let file = describe_stream(rel, f, room).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::FileTooLarge {
                        over(format!(
                            "the task left more than {} bytes in /output",
                            limits.max_bytes
                        ))
                    } else {
                        e
                    }
                })?;
                total += file.size;
                out.push(file);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Hashes `reader` whole and per chunk; more than `room` bytes is `FileTooLarge`.
fn describe_stream(path: String, reader: impl Read, room: u64) -> std::io::Result<StoredFile> {
    let mut reader = reader.take(room.saturating_add(1));
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        // Fill a whole chunk (reads may come short) so chunk hashes follow the download grid.
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        size += filled as u64;
        if size > room {
            return Err(std::io::Error::from(std::io::ErrorKind::FileTooLarge));
        }
        whole.update(&buf[..filled]);
        chunks.push(B256::from(<[u8; 32]>::from(Sha256::digest(&buf[..filled]))));
        if filled < buf.len() {
            break;
        }
    }
    Ok(StoredFile {
        path,
        size,
        sha256: B256::from(<[u8; 32]>::from(whole.finalize())),
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_of(results: &Results, task: TaskId, files: &[(&str, Vec<u8>)]) -> StoredResult {
        let out = tempfile::tempdir().unwrap();
        for (p, b) in files {
            let p = out.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b).unwrap();
        }
        let output = out.path().to_path_buf();
        results
            .keep(
                task,
                1,
                Exit::Code(0),
                &output,
                b"out",
                b"",
                OutputLimits::NONE,
            )
            .unwrap()
    }

    fn record(store: &Store, r: &StoredResult) {
        let task = crate::state::TaskRecord {
            id: r.task,
            deal: r.deal,
            consumer: sonm_market::Address::ZERO,
            receipt: None,
            error: None,
        };
        store.finish_task(&task, Some(r)).unwrap();
    }

    #[test]
    fn kept_files_are_served_by_checked_chunks_and_refused_once_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lmdb")).unwrap();
        let results = Results::new(dir.path().join("results"), store.clone());
        let big: Vec<u8> = (0..(CHUNK_SIZE * 2 + 7)).map(|i| (i * 31) as u8).collect();
        let r = result_of(&results, 5, &[("a/big", big.clone()), ("e", Vec::new())]);
        record(&store, &r);
        assert_eq!(
            r.outputs
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["a/big", "e"]
        );
        let f = &r.outputs[0];
        assert_eq!((f.size, f.chunks.len()), (big.len() as u64, 3));
        assert_eq!(f.sha256.0, <[u8; 32]>::from(Sha256::digest(&big)));
        // Read back in the client's steps, and from an offset inside a chunk (to its end).
        let mut got = Vec::new();
        while got.len() < big.len() {
            got.extend(results.output_chunk(&r, f, got.len() as u64).unwrap());
        }
        assert_eq!(got, big);
        let mid = results.output_chunk(&r, f, 10).unwrap();
        assert_eq!(mid, big[10..CHUNK_SIZE]);
        assert_eq!(results.log(&r, false).unwrap(), b"out");
        assert!(
            results
                .output_chunk(&r, &r.outputs[1], 0)
                .unwrap()
                .is_empty()
        );

        // One byte flipped on disk: that chunk is refused, the others still served.
        let path = results.task_dir(5).join("output/a/big");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[CHUNK_SIZE + 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let refused = TaskError::ResultCorrupt {
            task: 5,
            path: "a/big".into(),
        };
        assert_eq!(
            results.output_chunk(&r, f, CHUNK_SIZE as u64),
            Err(refused.clone())
        );
        assert!(results.output_chunk(&r, f, 0).is_ok());
        // Truncated: refused on any chunk (the size no longer matches).
        std::fs::write(&path, &big[..100]).unwrap();
        assert_eq!(results.output_chunk(&r, f, 0), Err(refused));

        // Removed: gone, typed; an orphan directory and a record without one are cleaned.
        results.remove(5).unwrap();
        assert_eq!(
            results.output_chunk(&r, f, 0),
            Err(TaskError::ResultGone(5))
        );
        std::fs::create_dir_all(results.task_dir(77).join("output")).unwrap();
        std::fs::write(dir.path().join("results/junk"), b"x").unwrap();
        let r8 = result_of(&results, 8, &[]);
        record(&store, &r8);
        // A record whose directory is gone.
        record(&store, &StoredResult { task: 9, ..r8 });
        assert_eq!(results.clean_orphans().unwrap(), (2, 1));
        assert!(results.task_dir(8).is_dir());
        assert!(!results.task_dir(77).exists());
        assert_eq!(store.result(9).unwrap(), None);
    }

    /// Every file and directory is synced; a FIFO (whose open would block), a symlink to a
    /// FIFO and a dangling symlink are skipped, not opened or followed.
    #[test]
    fn sync_tree_syncs_files_and_dirs_and_opens_nothing_special() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"x").unwrap();
        std::fs::write(dir.path().join("g"), b"y").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("a/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path().join("a/fifo"), dir.path().join("to-fifo")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("a/b/dangling")).unwrap();
        // On a thread, so that a blocking open fails the test instead of hanging it.
        let root = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(sync_tree(&root).map_err(|e| e.to_string())));
        let done = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(done, Ok(Ok(())), "sync_tree blocked or failed");
        // A missing directory is an error, not a silent success.
        assert!(sync_tree(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn output_limits_refuse_and_move_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lmdb")).unwrap();
        let results = Results::new(dir.path().join("results"), store);
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("d")).unwrap();
        std::fs::write(out.join("d/a"), [1u8; 600]).unwrap();
        std::fs::write(out.join("b"), [2u8; 600]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("link")).unwrap();
        let keep = |limits| results.keep(1, 1, Exit::Code(0), &out, b"", b"", limits);
        let e = keep(OutputLimits {
            max_bytes: 1000,
            max_entries: 10,
        })
        .unwrap_err();
        assert!(e.contains("more than 1000 bytes"), "{e}");
        let e = keep(OutputLimits {
            max_bytes: 10_000,
            max_entries: 2,
        })
        .unwrap_err();
        assert!(e.contains("more than 2 entries"), "{e}");
        assert!(out.join("b").exists() && !results.task_dir(1).exists());
        let r = keep(OutputLimits::NONE).unwrap();
        // The symlink is not an output (and was never followed).
        assert_eq!(
            r.outputs
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["b", "d/a"]
        );
        assert!(!out.exists() && results.task_dir(1).join("output/d/a").exists());
    }
}
