//! On-disk cache of compiled modules, keyed by (module sha256, engine fingerprint).
//!
//! File layout: `MAGIC | engine fingerprint (32) | module sha256 (32) | artifact sha256 (32) |
//! artifact length (u64 LE) | artifact`. An entry is used only when every field matches and the
//! artifact's checksum is right; wasmtime then runs its own compatibility check in
//! `Module::deserialize`. Anything else (a torn write, a flipped bit, an artifact of another
//! engine configuration or wasmtime version) is reported and recompiled, never trusted.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module, Precompiled};

const MAGIC: &[u8; 16] = b"SONM-CWASM-v1\0\0\0";
const HEADER_LEN: usize = MAGIC.len() + 32 * 3 + 8;

/// The result of a cache lookup.
#[derive(Debug)]
pub enum CacheLookup {
    Hit(Module),
    Miss,
    /// An entry exists but was refused; the reason is for logs and tests.
    Rejected(String),
}

/// A directory of compiled modules for one engine configuration, kept within a byte budget.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    fingerprint: [u8; 32],
    budget_bytes: u64,
}

/// What the cache's file names end with (temporary files do not).
const ENTRY_SUFFIX: &str = ".cwasm";

/// Feeds `Hash` output into sha256, so the fingerprint is stable across processes (std's
/// `DefaultHasher` makes no such promise).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A digest of everything that makes compiled code valid for `engine`: wasmtime's own
/// compatibility hash (version, target, compiler flags, tunables such as fuel and epochs) and
/// this crate's version (the host functions the code is linked against).
pub fn engine_fingerprint(engine: &Engine) -> [u8; 32] {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.update(concat!("sonm-wasm-runtime ", env!("CARGO_PKG_VERSION")).as_bytes());
    h.0.finalize().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl DiskCache {
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            fingerprint: engine_fingerprint(engine),
            budget_bytes: u64::MAX,
        })
    }

    /// Keeps the directory's entries (of every engine configuration: runtimes may share it)
    /// within `bytes`; see [`DiskCache::prune`].
    pub fn with_byte_budget(mut self, bytes: u64) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// Removes the least recently used entries until the entries' total size is within the
    /// budget; returns how many were removed. "Used" is the file's mtime, which `store` sets and
    /// every hit refreshes (atime is not reliable: `noatime`/`relatime` mounts).
    pub fn prune(&self) -> std::io::Result<u64> {
        let mut entries = Vec::new();
        let mut total: u64 = 0;
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            if !e.file_name().to_string_lossy().ends_with(ENTRY_SUFFIX) {
                continue;
            }
            // Gone meanwhile (another runtime pruned it): nothing to count.
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            total = total.saturating_add(meta.len());
            entries.push((meta.modified()?, e.path(), meta.len()));
        }
        if total <= self.budget_bytes {
            return Ok(0);
        }
        entries.sort();
        let mut removed = 0;
        for (_, path, len) in entries {
            if total <= self.budget_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            total -= len;
        }
        Ok(removed)
    }

    /// The file holding `module_sha256` (hex) for this engine.
    pub fn entry_path(&self, module_sha256: &str) -> PathBuf {
        self.dir.join(format!(
            "{module_sha256}-{}{ENTRY_SUFFIX}",
            &hex(&self.fingerprint)[..16]
        ))
    }

    pub fn load(&self, engine: &Engine, module_sha256: &str) -> CacheLookup {
        let Some(module_sha) = unhex(module_sha256) else {
            return CacheLookup::Rejected(format!("bad module hash {module_sha256:?}"));
        };
        let (file, bytes) = match read_entry(&self.entry_path(module_sha256)) {
            Ok(fb) => fb,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheLookup::Miss,
            Err(e) => return CacheLookup::Rejected(format!("read: {e}")),
        };
        match self.check(&bytes, &module_sha) {
            Err(why) => CacheLookup::Rejected(why),
            Ok(artifact) => match deserialize(engine, artifact) {
                Ok(m) => {
                    // Marks the entry used, for `prune`. Failing costs only LRU precision.
                    let _ = file.set_modified(std::time::SystemTime::now());
                    CacheLookup::Hit(m)
                }
                Err(e) => CacheLookup::Rejected(format!("wasmtime refused the artifact: {e}")),
            },
        }
    }

    fn check<'a>(&self, bytes: &'a [u8], module_sha: &[u8; 32]) -> Result<&'a [u8], String> {
        if bytes.len() < HEADER_LEN {
            return Err("shorter than the header".into());
        }
        let (header, artifact) = bytes.split_at(HEADER_LEN);
        let (magic, rest) = header.split_at(MAGIC.len());
        let (fp, rest) = rest.split_at(32);
        let (msha, rest) = rest.split_at(32);
        let (asha, len) = rest.split_at(32);
        if magic != MAGIC {
            return Err("not a cache entry of this runtime".into());
        }
        if fp != self.fingerprint {
            return Err("compiled for another engine configuration".into());
        }
        if msha != module_sha {
            return Err("entry is for another module".into());
        }
        let len = u64::from_le_bytes(len.try_into().map_err(|_| "header")?);
        if len != artifact.len() as u64 {
            return Err(format!("length {} != header's {len}", artifact.len()));
        }
        if Sha256::digest(artifact)[..] != *asha {
            return Err("artifact checksum mismatch (corrupt)".into());
        }
        Ok(artifact)
    }

    /// Writes the entry atomically (temp file + rename), so readers never see half of it.
    pub fn store(&self, module_sha256: &str, module: &Module) -> std::io::Result<()> {
        let module_sha = unhex(module_sha256).ok_or_else(|| std::io::Error::other("bad hash"))?;
        let artifact = module.serialize().map_err(std::io::Error::other)?;
        let path = self.entry_path(module_sha256);
        let mut tmp = tempfile_in(&self.dir)?;
        tmp.1.write_all(MAGIC)?;
        tmp.1.write_all(&self.fingerprint)?;
        tmp.1.write_all(&module_sha)?;
        tmp.1.write_all(&Sha256::digest(&artifact))?;
        tmp.1.write_all(&(artifact.len() as u64).to_le_bytes())?;
        tmp.1.write_all(&artifact)?;
        tmp.1.sync_data()?;
        fs::rename(&tmp.0, path)
    }
}

/// The entry's bytes, and the open file (to mark it used without opening it again).
fn read_entry(path: &Path) -> std::io::Result<(fs::File, Vec<u8>)> {
    use std::io::Read as _;
    let mut f = fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok((f, bytes))
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, f))
}

// `Module::deserialize` is unsafe because wasmtime runs the artifact's machine code as is.
// It is sound here because the bytes reach it only after (1) the header proves they were written
// by `DiskCache::store` for this exact engine fingerprint and module, (2) the sha256 of the
// artifact matches the one recorded at store time (no corruption), (3) wasmtime says they are a
// module precompiled for a compatible engine. The cache directory belongs to the worker and is
// never reachable from a job's preopens, so only this code writes it.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Module> {
    match Engine::detect_precompiled(artifact) {
        Some(Precompiled::Module) => {}
        other => wasmtime::bail!("not a precompiled module ({other:?})"),
    }
    // SAFETY: see the comment above the function.
    unsafe { Module::deserialize(engine, artifact) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let b: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(&hex(&b)), Some(b));
        assert_eq!(unhex("00"), None);
        assert_eq!(unhex(&"zz".repeat(32)), None);
        assert_eq!(unhex(&"é".repeat(32)), None);
    }

    #[test]
    fn fingerprint_depends_on_the_engine_configuration() {
        let a = Engine::default();
        let mut c = wasmtime::Config::new();
        c.consume_fuel(true);
        let b = Engine::new(&c).unwrap();
        assert_eq!(
            engine_fingerprint(&a),
            engine_fingerprint(&Engine::default())
        );
        assert_ne!(engine_fingerprint(&a), engine_fingerprint(&b));
    }
}
