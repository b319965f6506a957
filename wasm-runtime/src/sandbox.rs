//! Per-job state inside the store, and the guards around WASI preview 1: capped stdout/stderr,
//! the output-directory byte quota, refusal of sandbox escapes, coarse clocks, the memory limiter.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{AsContextMut, Caller, Extern, Linker, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::error::TrapCause;
use crate::report::Captured;

pub(crate) const WASI: &str = "wasi_snapshot_preview1";

/// WASI errno values the guards answer with or look at (witx `errno` enum).
const ERRNO_NOENT: i32 = 44;
const ERRNO_NOTSUP: i32 = 58;
/// `path_open` oflags (witx `oflags`).
const OFLAGS_CREAT: i32 = 1;
const OFLAGS_EXCL: i32 = 4;

/// The store's data for one job.
pub(crate) struct JobState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: Limiter,
    pub(crate) guard: IoGuard,
}

/// Linear memory and table limits; records the peak memory for the usage report.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) memory_limit: u64,
    pub(crate) table_elements: usize,
    pub(crate) peak_memory: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.memory_limit {
            // An error (not `Ok(false)`) traps the guest, so a grow bomb ends with a typed cause
            // instead of a guest that may loop on a failing `memory.grow`.
            return Err(TrapCause::MemoryLimit {
                limit: self.memory_limit,
                requested: desired,
            }
            .into());
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(TrapCause::TableLimit {
                limit: self.table_elements as u64,
            }
            .into());
        }
        Ok(true)
    }
}

/// Accounting of bytes written to files and of entries created in the output directory.
#[derive(Debug, Default)]
pub(crate) struct IoGuard {
    pub(crate) output_limit: u64,
    pub(crate) output_written: u64,
    pub(crate) entries_limit: u64,
    pub(crate) entries_created: u64,
}

impl IoGuard {
    pub(crate) fn new(output_limit: u64, entries_limit: u64) -> Self {
        Self {
            output_limit,
            output_written: 0,
            entries_limit,
            entries_created: 0,
        }
    }
}

/// Calls wasmtime-wasi's own implementation of the WASI function `$func` with the caller's
/// memory, exactly as its `add_to_linker_sync` glue does (hostcall fuel, then the async
/// implementation driven by wasmtime-wasi's `in_tokio`). A guard cannot call the unguarded
/// function through a `Func`: a host-to-host call has no caller instance, hence no memory.
macro_rules! delegate {
    ($caller:ident, $func:ident ( $($arg:expr),* $(,)? )) => {{
        let fuel = $caller.as_context_mut().hostcall_fuel();
        let Some(Extern::Memory(m)) = $caller.get_export("memory") else {
            wasmtime::bail!("missing required memory export");
        };
        let (mem, state) = m.data_and_store_mut(&mut $caller);
        let ctx = &mut state.wasi;
        WasiSnapshotPreview1::set_hostcall_fuel(ctx, fuel);
        let mut mem = wiggle::GuestMemory::Unshared(mem);
        let errno: i32 = wasmtime_wasi::runtime::in_tokio(
            wasmtime_wasi::p1::wasi_snapshot_preview1::$func(ctx, &mut mem $(, $arg)*),
        )?;
        errno
    }};
}

fn memory(caller: &mut Caller<'_, JobState>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

fn read_u32(data: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Length of the first non-empty iovec: wasmtime-wasi's p1 `fd_write` writes exactly that one
/// buffer per call, so it bounds what the call can write.
fn first_iov_len(caller: &mut Caller<'_, JobState>, iovs: i32, n: i32) -> u64 {
    let Some(mem) = memory(caller) else { return 0 };
    let data = mem.data(&*caller);
    // More iovecs than memory can hold: the original call refuses it (EFAULT), so do not scan.
    if u64::from(n as u32) * 8 > data.len() as u64 {
        return 0;
    }
    for i in 0..u64::from(n as u32) {
        let at = u64::from(iovs as u32) + 8 * i;
        match read_u32(data, at + 4) {
            Some(0) => continue,
            Some(len) => return u64::from(len),
            // Out of bounds: the original call reports EFAULT and writes nothing.
            None => return 0,
        }
    }
    0
}

fn read_path(caller: &mut Caller<'_, JobState>, ptr: i32, len: i32) -> String {
    let Some(mem) = memory(caller) else {
        return String::new();
    };
    let data = mem.data(&*caller);
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    data.get(ptr..ptr.saturating_add(len))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Fds 0-2 are the captured stdio streams; everything else a job can write to is a file in
/// `/output` (the input preopen is read-only, and there are no sockets).
fn is_file_fd(fd: i32) -> bool {
    !(0..=2).contains(&fd)
}

fn charge(caller: &mut Caller<'_, JobState>, upper_bound: u64) -> wasmtime::Result<()> {
    let g = &caller.data().guard;
    if g.output_written.saturating_add(upper_bound) > g.output_limit {
        return Err(TrapCause::OutputQuota {
            limit: g.output_limit,
        }
        .into());
    }
    Ok(())
}

/// Stops the job before it creates one more output entry than its limit allows.
fn charge_entry(caller: &mut Caller<'_, JobState>) -> wasmtime::Result<()> {
    let g = &caller.data().guard;
    if g.entries_created >= g.entries_limit {
        return Err(TrapCause::OutputEntries {
            limit: g.entries_limit,
        }
        .into());
    }
    Ok(())
}

fn record_entry(caller: &mut Caller<'_, JobState>, errno: i32) {
    if errno == 0 {
        caller.data_mut().guard.entries_created += 1;
    }
}

fn record_written(caller: &mut Caller<'_, JobState>, errno: i32, nwritten_ptr: i32) {
    if errno != 0 {
        return;
    }
    let Some(mem) = memory(caller) else { return };
    let n = read_u32(mem.data(&*caller), u64::from(nwritten_ptr as u32)).unwrap_or(0);
    caller.data_mut().guard.output_written += u64::from(n);
}

/// Wraps the WASI function `$func`, whose guest path is in the arguments `$path` and `$len`,
/// with [`escape_check`].
macro_rules! guard_path {
    ($linker:ident, $func:ident ( $($arg:ident : $ty:ty),* $(,)? ), $path:ident, $len:ident) => {
        $linker.func_wrap(
            WASI,
            stringify!($func),
            |mut caller: Caller<'_, JobState>, $($arg: $ty),*| {
                let errno = delegate!(caller, $func($($arg),*));
                escape_check(&mut caller, errno, stringify!($func), $path, $len)
            },
        )?;
    };
}

/// Installs the guarded WASI functions over the plain ones in `linker` (which must allow
/// shadowing).
pub(crate) fn add_guards(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    // Writes to files are charged against the output quota before they happen (so the disk
    // never holds more than the quota), and counted after with the real byte count.
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, JobState>, fd: i32, iovs: i32, n: i32, nw: i32| {
            if !is_file_fd(fd) {
                return Ok(delegate!(caller, fd_write(fd, iovs, n, nw)));
            }
            let bound = first_iov_len(&mut caller, iovs, n);
            charge(&mut caller, bound)?;
            let errno = delegate!(caller, fd_write(fd, iovs, n, nw));
            record_written(&mut caller, errno, nw);
            Ok(errno)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_pwrite",
        |mut caller: Caller<'_, JobState>, fd: i32, iovs: i32, n: i32, off: i64, nw: i32| {
            if is_file_fd(fd) {
                let bound = first_iov_len(&mut caller, iovs, n);
                charge(&mut caller, bound)?;
            }
            let errno = delegate!(caller, fd_pwrite(fd, iovs, n, off, nw));
            if is_file_fd(fd) {
                record_written(&mut caller, errno, nw);
            }
            Ok(errno)
        },
    )?;
    // Growing a file (even sparsely) counts as writing up to that size.
    linker.func_wrap(
        WASI,
        "fd_filestat_set_size",
        |mut caller: Caller<'_, JobState>, fd: i32, size: i64| {
            let grow = size as u64;
            charge(&mut caller, grow)?;
            let errno = delegate!(caller, fd_filestat_set_size(fd, size));
            if errno == 0 {
                let g = &mut caller.data_mut().guard;
                g.output_written = g.output_written.max(grow);
            }
            Ok(errno)
        },
    )?;
    // Links are refused outright. A hard link from /input into /output would make a read-only
    // input file writable through the output preopen; a symlink in /output could point the
    // worker at host files when it collects the results. Jobs get ENOTSUP and carry on.
    linker.func_wrap(
        WASI,
        "path_link",
        |_caller: Caller<'_, JobState>,
         _old_fd: i32,
         _flags: i32,
         _old_path: i32,
         _old_len: i32,
         _new_fd: i32,
         _new_path: i32,
         _new_len: i32|
         -> wasmtime::Result<i32> { Ok(ERRNO_NOTSUP) },
    )?;
    linker.func_wrap(
        WASI,
        "path_symlink",
        |_caller: Caller<'_, JobState>,
         _old_path: i32,
         _old_len: i32,
         _fd: i32,
         _new_path: i32,
         _new_len: i32|
         -> wasmtime::Result<i32> { Ok(ERRNO_NOTSUP) },
    )?;
    // The quota relies on fds 0-2 staying the stdio streams: closing or renumbering them would
    // let a file take their number and escape the accounting.
    linker.func_wrap(
        WASI,
        "fd_renumber",
        |_caller: Caller<'_, JobState>, _from: i32, _to: i32| -> wasmtime::Result<i32> {
            Ok(ERRNO_NOTSUP)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_close",
        |mut caller: Caller<'_, JobState>, fd: i32| -> wasmtime::Result<i32> {
            if !is_file_fd(fd) {
                // Keep the stream open; the guest sees a successful close.
                return Ok(0);
            }
            Ok(delegate!(caller, fd_close(fd)))
        },
    )?;
    // A path that resolves outside the preopens (`..`, an absolute path, a symlink pointing out)
    // is refused by cap-std with ENOTCAPABLE/EPERM; a job that tries it is stopped and the
    // attempt named, rather than left to probe the host.
    linker.func_wrap(
        WASI,
        "path_open",
        |mut caller: Caller<'_, JobState>,
         dirfd: i32,
         dirflags: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         rights: i64,
         inheriting: i64,
         fdflags: i32,
         fd_out: i32| {
            // O_CREAT counts against the entry limit only when it creates something. Without
            // O_EXCL the file may already exist: open it without O_CREAT first (one extra host
            // call per creating open; nothing else in the job runs in between), and count only
            // when that says it is not there.
            let creates = oflags & OFLAGS_CREAT != 0;
            if creates && oflags & OFLAGS_EXCL == 0 {
                let errno = delegate!(
                    caller,
                    path_open(
                        dirfd,
                        dirflags,
                        path,
                        path_len,
                        oflags & !OFLAGS_CREAT,
                        rights,
                        inheriting,
                        fdflags,
                        fd_out
                    )
                );
                if errno != ERRNO_NOENT {
                    return escape_check(&mut caller, errno, "path_open", path, path_len);
                }
            }
            if creates {
                charge_entry(&mut caller)?;
            }
            let errno = delegate!(
                caller,
                path_open(
                    dirfd, dirflags, path, path_len, oflags, rights, inheriting, fdflags, fd_out
                )
            );
            if creates {
                record_entry(&mut caller, errno);
            }
            escape_check(&mut caller, errno, "path_open", path, path_len)
        },
    )?;
    // The other calls that resolve a guest path get the same treatment.
    guard_path!(
        linker,
        path_filestat_get(fd: i32, flags: i32, path: i32, len: i32, buf: i32),
        path,
        len
    );
    guard_path!(
        linker,
        path_readlink(fd: i32, path: i32, len: i32, buf: i32, buf_len: i32, used: i32),
        path,
        len
    );
    linker.func_wrap(
        WASI,
        "path_create_directory",
        |mut caller: Caller<'_, JobState>, fd: i32, path: i32, len: i32| {
            charge_entry(&mut caller)?;
            let errno = delegate!(caller, path_create_directory(fd, path, len));
            record_entry(&mut caller, errno);
            escape_check(&mut caller, errno, "path_create_directory", path, len)
        },
    )?;
    guard_path!(linker, path_remove_directory(fd: i32, path: i32, len: i32), path, len);
    guard_path!(linker, path_unlink_file(fd: i32, path: i32, len: i32), path, len);
    // A rename is reported by its destination, the side that would leave the sandbox.
    guard_path!(
        linker,
        path_rename(fd: i32, old: i32, old_len: i32, new_fd: i32, path: i32, len: i32),
        path,
        len
    );
    guard_path!(linker, path_filestat_set_times(
        fd: i32, flags: i32, path: i32, len: i32, atim: i64, mtim: i64, fst: i32
    ), path, len);
    Ok(())
}

/// Stops the job when `errno` says the path it passed escapes the sandbox.
fn escape_check(
    caller: &mut Caller<'_, JobState>,
    errno: i32,
    op: &str,
    path: i32,
    path_len: i32,
) -> wasmtime::Result<i32> {
    if is_escape_errno(errno) {
        return Err(TrapCause::SandboxViolation {
            op: op.into(),
            path: read_path(caller, path, path_len),
        }
        .into());
    }
    Ok(errno)
}

/// `notcapable` (76) and `perm` (63): what cap-std answers for a path outside the sandbox, and
/// what the read-only input preopen answers for an attempt to write it.
fn is_escape_errno(errno: i32) -> bool {
    errno == 76 || errno == 63
}

/// Which captured stream a pipe is, for the trap cause.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StreamKind {
    Stdout,
    Stderr,
}

#[derive(Debug, Default)]
struct PipeBuf {
    bytes: Vec<u8>,
    truncated: bool,
}

/// A live view of a running job's captured stdout and stderr (for log following): pass it to
/// [`crate::Runtime::run_tapped`] and read from another thread while the job runs. What it
/// shows is bounded by the job's stdout/stderr limits.
#[derive(Debug, Clone, Default)]
pub struct OutputTap {
    stdout: Arc<Mutex<PipeBuf>>,
    stderr: Arc<Mutex<PipeBuf>>,
}

impl OutputTap {
    /// Up to `max` bytes of stdout (`stderr`: false) or stderr from byte `offset`, and the
    /// stream's length so far.
    pub fn read(&self, stderr: bool, offset: u64, max: usize) -> (Vec<u8>, u64) {
        let buf = if stderr { &self.stderr } else { &self.stdout };
        let b = buf.lock().unwrap_or_else(PoisonError::into_inner);
        let len = b.bytes.len();
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let to = from.saturating_add(max).min(len);
        (b.bytes[from..to].to_vec(), len as u64)
    }
}

/// A stdout/stderr capture that keeps the first `limit` bytes; the write that crosses the limit
/// keeps what fits and stops the job.
#[derive(Debug, Clone)]
pub(crate) struct CappedPipe {
    buf: Arc<Mutex<PipeBuf>>,
    limit: usize,
    kind: StreamKind,
}

impl CappedPipe {
    #[cfg(test)]
    pub(crate) fn new(limit: u64, kind: StreamKind) -> Self {
        Self::shared(limit, kind, &OutputTap::default())
    }

    /// A pipe whose captured bytes the `tap` can read while the job runs.
    pub(crate) fn shared(limit: u64, kind: StreamKind, tap: &OutputTap) -> Self {
        Self {
            buf: match kind {
                StreamKind::Stdout => tap.stdout.clone(),
                StreamKind::Stderr => tap.stderr.clone(),
            },
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            kind,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PipeBuf> {
        self.buf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn take(&self) -> Captured {
        // A copy, not a take: an [`OutputTap`] may still be reading (at most the stream's cap).
        let b = self.lock();
        Captured {
            bytes: b.bytes.clone(),
            truncated: b.truncated,
        }
    }

    /// Appends what fits; `Err(cause)` when `data` did not fit.
    fn append(&self, data: &[u8]) -> Result<(), TrapCause> {
        let mut b = self.lock();
        let room = self.limit.saturating_sub(b.bytes.len());
        if data.len() <= room {
            b.bytes.extend_from_slice(data);
            return Ok(());
        }
        b.bytes.extend_from_slice(&data[..room]);
        b.truncated = true;
        let limit = self.limit as u64;
        Err(match self.kind {
            StreamKind::Stdout => TrapCause::StdoutLimit { limit },
            StreamKind::Stderr => TrapCause::StderrLimit { limit },
        })
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes)
            .map_err(|cause| StreamError::Trap(cause.into()))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always accept a large chunk, so an overflowing write reaches `write` and is detected
        // there rather than being split into endless zero-sized permits.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Clock resolution offered to jobs: enough for timing a benchmark, too coarse for timing
/// side channels.
pub(crate) const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

fn coarse(d: Duration) -> Duration {
    let r = CLOCK_RESOLUTION.as_nanos();
    Duration::from_nanos(u64::try_from(d.as_nanos() / r * r).unwrap_or(u64::MAX))
}

pub(crate) struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }

    fn now(&self) -> Duration {
        coarse(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

/// Monotonic time since the job started, rounded down to [`CLOCK_RESOLUTION`].
pub(crate) struct CoarseMonotonicClock(pub(crate) Instant);

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        u64::try_from(coarse(self.0.elapsed()).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_pipe_keeps_the_prefix_and_names_the_stream() {
        let p = CappedPipe::new(10, StreamKind::Stderr);
        assert_eq!(p.append(b"0123456789"), Ok(()));
        assert_eq!(p.append(b""), Ok(()));
        assert_eq!(p.append(b"x"), Err(TrapCause::StderrLimit { limit: 10 }));
        let c = p.take();
        assert_eq!(
            (c.bytes.as_slice(), c.truncated),
            (&b"0123456789"[..], true)
        );

        let p = CappedPipe::new(4, StreamKind::Stdout);
        assert_eq!(
            p.append(b"abcdef"),
            Err(TrapCause::StdoutLimit { limit: 4 })
        );
        assert_eq!(p.take().bytes, b"abcd");
    }

    #[test]
    fn clocks_are_coarse() {
        let t = CoarseWallClock.now();
        assert_eq!(t.as_nanos() % CLOCK_RESOLUTION.as_nanos(), 0);
        let m = CoarseMonotonicClock(Instant::now() - Duration::from_micros(2_500));
        assert_eq!(m.now(), 2_000_000);
    }

    #[test]
    fn guest_reads_are_bounds_checked() {
        let mem = [1u8, 0, 0, 0, 2, 0, 0];
        assert_eq!(read_u32(&mem, 0), Some(1));
        assert_eq!(read_u32(&mem, 4), None);
        assert_eq!(read_u32(&mem, u64::MAX), None);
    }
}
