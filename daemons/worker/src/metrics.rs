//! Prometheus metrics (`metrics_listen`): counters kept in memory since start, rendered as the
//! text exposition format by hand (as the DWH does; a handful of series needs no library) and
//! served over a minimal HTTP/1.1 responder: any `GET` gets the metrics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sonm_market::{Address, DealId};

use crate::proto::{TaskId, TaskStatus};
use crate::state::DealState;
use crate::worker::Worker;

/// Longest request head read before answering (the request is never parsed further).
const MAX_HEAD: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Wasm,
    Container,
}

impl TaskKind {
    const ALL: [TaskKind; 2] = [TaskKind::Wasm, TaskKind::Container];

    fn label(self) -> &'static str {
        match self {
            TaskKind::Wasm => "wasm",
            TaskKind::Container => "container",
        }
    }
}

#[derive(Debug, Default)]
struct TaskCounts {
    started: HashMap<TaskKind, u64>,
    finished: HashMap<TaskKind, u64>,
    failed: HashMap<TaskKind, u64>,
    /// Tasks started and not yet seen ended: their consumer (the runner answers only it).
    running: HashMap<TaskId, (TaskKind, Address)>,
}

/// The worker's counters.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    tasks: Mutex<TaskCounts>,
    bills: AtomicU64,
    /// SNM wei paid out by our bills (elapsed × price).
    payout_wei: Mutex<u128>,
    chain_errors: AtomicU64,
    rendezvous: AtomicBool,
    /// The confirmed master, once the chain said so (for the rendezvous policy).
    master: Mutex<Option<Address>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            tasks: Mutex::default(),
            bills: AtomicU64::new(0),
            payout_wei: Mutex::new(0),
            chain_errors: AtomicU64::new(0),
            rendezvous: AtomicBool::new(false),
            master: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn task_started(&self, task: TaskId, kind: TaskKind, consumer: Address) {
        let mut t = lock(&self.tasks);
        *t.started.entry(kind).or_default() += 1;
        t.running.insert(task, (kind, consumer));
    }

    pub fn billed(&self, _deal: DealId, payout_wei: u128) {
        self.bills.fetch_add(1, Ordering::Relaxed);
        let mut p = lock(&self.payout_wei);
        *p = p.saturating_add(payout_wei);
    }

    pub fn chain_error(&self) {
        self.chain_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_rendezvous_connected(&self, up: bool) {
        self.rendezvous.store(up, Ordering::Relaxed);
    }

    pub fn rendezvous_connected(&self) -> bool {
        self.rendezvous.load(Ordering::Relaxed)
    }

    pub fn set_master(&self, master: Option<Address>) {
        *lock(&self.master) = master;
    }

    pub fn master(&self) -> Option<Address> {
        *lock(&self.master)
    }
}

impl Worker {
    /// Moves the tasks that ended since the last look to finished (an exit, a trap or a kill)
    /// or failed (could not start); returns how many still run. Called by each chain round
    /// too, so the set stays small without scrapes.
    pub(crate) fn settle_tasks(&self) -> usize {
        let mut t = lock(&self.metrics().tasks);
        let running: Vec<(TaskId, TaskKind, Address)> =
            t.running.iter().map(|(id, (k, c))| (*id, *k, *c)).collect();
        for (id, kind, consumer) in running {
            let ended = match self.task_status(id, consumer) {
                Some(TaskStatus::Running) => continue,
                Some(TaskStatus::Finished(_)) => &mut t.finished,
                Some(TaskStatus::Failed(_)) | None => &mut t.failed,
            };
            *ended.entry(kind).or_default() += 1;
            t.running.remove(&id);
        }
        t.running.len()
    }

    /// The Prometheus text of this worker's metrics.
    pub fn render_metrics(&self) -> String {
        let running = self.settle_tasks();
        let m = self.metrics();
        let open_deals = self
            .store()
            .deals()
            .map(|d| d.iter().filter(|d| d.state == DealState::Active).count())
            .unwrap_or(0);
        let t = lock(&m.tasks);
        let mut text = String::new();
        for (name, help, map) in [
            (
                "sonm_worker_tasks_started_total",
                "Tasks started, by kind.",
                &t.started,
            ),
            (
                "sonm_worker_tasks_finished_total",
                "Tasks that ran to an end (exit, trap or kill), by kind.",
                &t.finished,
            ),
            (
                "sonm_worker_tasks_failed_total",
                "Tasks that could not run (bad module, rootfs, limits), by kind.",
                &t.failed,
            ),
        ] {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
            for kind in TaskKind::ALL {
                let v = map.get(&kind).copied().unwrap_or(0);
                let _ = writeln!(text, "{name}{{kind=\"{}\"}} {v}", kind.label());
            }
        }
        drop(t);
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "sonm_worker_tasks_running",
            "gauge",
            "Tasks running now.",
            running.to_string(),
        );
        one(
            "sonm_worker_deals_open",
            "gauge",
            "Active deals on this worker's asks.",
            open_deals.to_string(),
        );
        one(
            "sonm_worker_bills_total",
            "counter",
            "Bills sent (Market.bill) that succeeded.",
            m.bills.load(Ordering::Relaxed).to_string(),
        );
        one(
            "sonm_worker_bills_payout_wei_total",
            "counter",
            "SNM wei paid out by this worker's bills.",
            lock(&m.payout_wei).to_string(),
        );
        one(
            "sonm_worker_chain_errors_total",
            "counter",
            "Chain RPC or transaction errors in the chain loop.",
            m.chain_errors.load(Ordering::Relaxed).to_string(),
        );
        one(
            "sonm_worker_rendezvous_connected",
            "gauge",
            "1 while published to the rendezvous server.",
            u8::from(m.rendezvous_connected()).to_string(),
        );
        one(
            "sonm_worker_uptime_seconds",
            "gauge",
            "Seconds since the worker started.",
            m.uptime().as_secs().to_string(),
        );
        text
    }

    /// Serves the metrics on `listener` until dropped (each connection on its own task).
    pub async fn serve_metrics(
        self: Arc<Self>,
        listener: smol::net::TcpListener,
    ) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let worker = self.clone();
            smol::spawn(async move {
                if let Err(e) = worker.answer_scrape(stream).await {
                    tracing::debug!(%peer, "metrics request: {e}");
                }
            })
            .detach();
        }
    }

    async fn answer_scrape(&self, mut stream: smol::net::TcpStream) -> std::io::Result<()> {
        use smol::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        let read_head = async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            std::io::Result::Ok(())
        };
        let timeout = async {
            smol::Timer::after(READ_TIMEOUT).await;
            Err(std::io::ErrorKind::TimedOut.into())
        };
        smol::future::or(read_head, timeout).await?;
        let (status, body) = if head.starts_with(b"GET ") {
            ("200 OK", self.render_metrics())
        } else {
            ("405 Method Not Allowed", "GET only\n".to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await
    }
}

/// Binds the metrics listener (at start, so a bad address fails the start).
pub fn bind(addr: SocketAddr) -> std::io::Result<smol::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    smol::net::TcpListener::try_from(std)
}
