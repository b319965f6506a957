//! `sonm`: the command-line client of the local `sonm-node`. It speaks only the node's
//! HTTP/JSON API (`GET /openapi.json` describes it): one command per operation, human output by
//! default and the node's JSON with `--json`.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Where the node listens unless told otherwise (its config's default `listen`).
const DEFAULT_NODE: &str = "http://127.0.0.1:15030";

/// Largest answer read from the node (a result carries its outputs base64-encoded).
const MAX_ANSWER: u64 = 64 << 20;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "SONM command-line client (talks to the local sonm-node)"
)]
struct Cli {
    /// The node's API.
    #[arg(long, global = true, env = "SONM_NODE", default_value = DEFAULT_NODE)]
    node: String,
    /// Print the node's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// SNM and gas balances of the node's account.
    Balance,
    /// The market.
    #[command(subcommand)]
    Market(MarketCmd),
    /// Deals.
    #[command(subcommand)]
    Deal(DealCmd),
    /// WASM tasks on a deal's worker.
    #[command(subcommand)]
    Task(TaskCmd),
}

#[derive(Debug, Subcommand)]
enum MarketCmd {
    /// Active asks that match a spec, cheapest first.
    Asks {
        /// e.g. "cpu-cores=2 ram-size=1GiB".
        #[arg(long)]
        benchmarks: Option<String>,
        /// Highest price, SNM wei per second.
        #[arg(long)]
        max_price: Option<String>,
        /// Seconds; 0 = spot.
        #[arg(long)]
        duration: Option<u64>,
        /// e.g. outbound,inbound.
        #[arg(long)]
        netflags: Option<String>,
        /// Only this supplier's asks.
        #[arg(long)]
        supplier: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum DealCmd {
    /// Buy an ask at once (quick-buy); prints the deal.
    Buy {
        /// The ask's order id (from `sonm market asks`).
        ask_id: u64,
        /// Seconds; 0 = spot (must agree with the ask).
        #[arg(long, default_value_t = 0)]
        duration: u64,
        /// host:port of the supplier's task service, remembered by the node for this worker.
        #[arg(long)]
        worker_addr: Option<String>,
    },
    /// Show a deal.
    Show {
        /// The deal id.
        id: u64,
    },
    /// Close a deal.
    Close {
        /// The deal id.
        id: u64,
        /// Also blacklist the supplier (its master).
        #[arg(long)]
        blacklist: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TaskCmd {
    /// Start a WASM job on the deal's worker from a sonm-wasm-runtime job spec (module path,
    /// args, input_dir, limits); prints the task id.
    Start {
        /// The deal id.
        deal: u64,
        /// The job spec (TOML, or JSON by extension), read by the node on this machine.
        job: PathBuf,
        /// host:port of the worker's task service, if the node's config does not know it.
        #[arg(long)]
        worker_addr: Option<String>,
    },
    /// A task's status.
    Status {
        /// The deal id.
        deal: u64,
        /// The task id (from `sonm task start`).
        task: u64,
        /// host:port of the worker's task service, if the node's config does not know it.
        #[arg(long)]
        worker_addr: Option<String>,
    },
    /// A task's result: exit, stdout, outputs, and the verified usage receipt.
    Result {
        /// The deal id.
        deal: u64,
        /// The task id (from `sonm task start`).
        task: u64,
        /// Write the output files under this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wait up to this many seconds for the task to finish first.
        #[arg(long)]
        wait: Option<u64>,
        /// host:port of the worker's task service, if the node's config does not know it.
        #[arg(long)]
        worker_addr: Option<String>,
    },
    /// Stop a running task.
    Stop {
        /// The deal id.
        deal: u64,
        /// The task id (from `sonm task start`).
        task: u64,
        /// host:port of the worker's task service, if the node's config does not know it.
        #[arg(long)]
        worker_addr: Option<String>,
    },
}

/// The node's API.
struct Node {
    base: String,
    agent: ureq::Agent,
}

/// A refusal from the node: its `{code, message}`.
#[derive(Debug)]
struct Refused {
    status: u16,
    code: String,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for Refused {}

impl Node {
    fn new(base: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn answer(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut r = match r {
            Ok(r) => r,
            Err(e) => bail!(
                "cannot reach sonm-node at {}: {e}\nIs it running? Start it with `sonm-node --config node.toml`, or point --node / SONM_NODE at it.",
                self.base
            ),
        };
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .context("reading the node's answer")?;
        let value: Value = serde_json::from_str(&text).with_context(|| {
            format!("the node answered HTTP {status} with non-JSON: {text:.200}")
        })?;
        if status >= 400 {
            return Err(Refused {
                status,
                code: value["code"].as_str().unwrap_or("unknown").to_owned(),
                message: value["message"].as_str().unwrap_or(&text).to_owned(),
            }
            .into());
        }
        Ok(value)
    }

    fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.answer(req.call())
    }

    fn post(&self, path: &str, query: &[(&str, String)], body: &Value) -> anyhow::Result<Value> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.answer(req.send_json(body))
    }
}

fn opt<T: ToString>(name: &'static str, v: &Option<T>) -> Option<(&'static str, String)> {
    v.as_ref().map(|v| (name, v.to_string()))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_fields(value: &Value, keys: &[&str]) {
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    for k in keys {
        println!("{k:<width$}  {}", s(&value[*k]));
    }
}

const DEAL_FIELDS: &[&str] = &[
    "id",
    "status",
    "supplier",
    "consumer",
    "master",
    "ask",
    "bid",
    "price",
    "duration",
    "start",
    "end",
    "last_bill",
    "blocked",
];

fn exit_text(exit: &Value) -> String {
    match exit["kind"].as_str() {
        Some("exit") => format!("exit code {}", s(&exit["code"])),
        Some("trapped") => format!("trapped: {}", s(&exit["trap"])),
        _ => "-".into(),
    }
}

/// `path` under `dir`, refusing anything that would land outside it.
fn safe_join(dir: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let rel = Path::new(path);
    if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("the worker sent an output with an unsafe path {path:?}");
    }
    Ok(dir.join(rel))
}

fn write_outputs(result: &Value, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for o in result["outputs"].as_array().into_iter().flatten() {
        let path = safe_join(dir, o["path"].as_str().unwrap_or(""))?;
        let bytes = B64
            .decode(o["base64"].as_str().unwrap_or(""))
            .context("decoding an output")?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let node = Node::new(&cli.node);
    let json_out = cli.json;
    let show = |v: &Value, human: &dyn Fn(&Value)| {
        if json_out {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            human(v);
        }
    };
    match cli.command {
        Command::Balance => {
            let v = node.get("/v1/balance", &[])?;
            show(&v, &|v| {
                print_fields(v, &["address", "snm", "eth", "market_allowance"]);
            });
        }
        Command::Market(MarketCmd::Asks {
            benchmarks,
            max_price,
            duration,
            netflags,
            supplier,
            limit,
        }) => {
            let query: Vec<_> = [
                Some(("type", "ask".to_owned())),
                opt("benchmarks", &benchmarks),
                opt("max_price", &max_price),
                opt("duration", &duration),
                opt("netflags", &netflags),
                opt("supplier", &supplier),
                opt("limit", &limit),
            ]
            .into_iter()
            .flatten()
            .collect();
            let v = node.get("/v1/orders", &query)?;
            show(&v, &|v| {
                let rows: Vec<Vec<String>> = v["orders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| {
                        vec![
                            s(&o["id"]),
                            s(&o["supplier"]),
                            s(&o["price"]),
                            s(&o["duration"]),
                            s(&o["netflags"]),
                            s(&o["benchmarks"]),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no matching asks");
                } else {
                    print_table(
                        &[
                            "ID",
                            "SUPPLIER",
                            "PRICE (wei/s)",
                            "DURATION",
                            "NET",
                            "BENCHMARKS",
                        ],
                        &rows,
                    );
                }
            });
        }
        Command::Deal(DealCmd::Buy {
            ask_id,
            duration,
            worker_addr,
        }) => {
            let mut body = json!({ "ask_id": ask_id, "duration": duration });
            if let Some(a) = worker_addr {
                body["worker_addr"] = json!(a);
            }
            let v = node.post("/v1/deals/quick-buy", &[], &body)?;
            show(&v, &|v| print_fields(v, DEAL_FIELDS));
        }
        Command::Deal(DealCmd::Show { id }) => {
            let v = node.get(&format!("/v1/deals/{id}"), &[])?;
            show(&v, &|v| print_fields(v, DEAL_FIELDS));
        }
        Command::Deal(DealCmd::Close { id, blacklist }) => {
            let v = node.post(
                &format!("/v1/deals/{id}/close"),
                &[],
                &json!({ "blacklist": blacklist }),
            )?;
            show(&v, &|v| print_fields(v, DEAL_FIELDS));
        }
        Command::Task(TaskCmd::Start {
            deal,
            job,
            worker_addr,
        }) => {
            // The node runs on this machine: it reads the spec, its module and its inputs.
            let job = std::fs::canonicalize(&job)
                .with_context(|| format!("job spec {}", job.display()))?;
            let mut body = json!({ "job_spec": job });
            if let Some(a) = worker_addr {
                body["worker_addr"] = json!(a);
            }
            let v = node.post(&format!("/v1/deals/{deal}/tasks"), &[], &body)?;
            show(&v, &|v| {
                println!("task {} started on deal {}", s(&v["task"]), s(&v["deal"]))
            });
        }
        Command::Task(TaskCmd::Status {
            deal,
            task,
            worker_addr,
        }) => {
            let q: Vec<_> = opt("worker_addr", &worker_addr).into_iter().collect();
            let v = node.get(&format!("/v1/deals/{deal}/tasks/{task}"), &q)?;
            show(&v, &|v| {
                let extra = match v["status"].as_str() {
                    Some("finished") => format!(" ({})", exit_text(&v["exit"])),
                    Some("failed") => format!(" ({})", s(&v["error"])),
                    _ => String::new(),
                };
                println!("task {task} on deal {deal}: {}{extra}", s(&v["status"]));
            });
        }
        Command::Task(TaskCmd::Result {
            deal,
            task,
            out,
            wait,
            worker_addr,
        }) => {
            let q: Vec<_> = opt("worker_addr", &worker_addr).into_iter().collect();
            if let Some(secs) = wait {
                let until = Instant::now() + Duration::from_secs(secs);
                loop {
                    let v = node.get(&format!("/v1/deals/{deal}/tasks/{task}"), &q)?;
                    if v["status"] != "running" {
                        break;
                    }
                    if Instant::now() >= until {
                        bail!("task {task} still running after {secs} s");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let v = node.get(&format!("/v1/deals/{deal}/tasks/{task}/result"), &q)?;
            let written = match &out {
                Some(dir) => write_outputs(&v, dir)?,
                None => Vec::new(),
            };
            show(&v, &|v| {
                println!("task {task} on deal {deal}: {}", exit_text(&v["exit"]));
                let stdout = v["stdout"].as_str().unwrap_or("");
                if !stdout.is_empty() {
                    println!("--- stdout\n{}", stdout.trim_end());
                }
                let stderr = v["stderr"].as_str().unwrap_or("");
                if !stderr.is_empty() {
                    println!("--- stderr\n{}", stderr.trim_end());
                }
                let outputs: Vec<Vec<String>> = v["outputs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| vec![s(&o["path"]), s(&o["size"])])
                    .collect();
                if !outputs.is_empty() {
                    println!("--- outputs");
                    print_table(&["PATH", "BYTES"], &outputs);
                }
                for p in &written {
                    println!("wrote {}", p.display());
                }
                let r = &v["receipt"];
                println!(
                    "--- receipt: verified, signed by worker {}\nfuel {}  wall {} us  module sha256 {}\noutputs sha256 {}",
                    s(&r["worker"]),
                    s(&r["fuel"]),
                    s(&r["wall_time_us"]),
                    s(&r["module_sha256"]),
                    s(&r["outputs_sha256"]),
                );
            });
        }
        Command::Task(TaskCmd::Stop {
            deal,
            task,
            worker_addr,
        }) => {
            let q: Vec<_> = opt("worker_addr", &worker_addr).into_iter().collect();
            let v = node.post(
                &format!("/v1/deals/{deal}/tasks/{task}/stop"),
                &q,
                &json!({}),
            )?;
            show(&v, &|_| println!("task {task} on deal {deal}: stopping"));
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        match e.downcast_ref::<Refused>() {
            Some(r) => eprintln!("sonm: {r}"),
            None => eprintln!("sonm: {e:#}"),
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_never_land_outside_the_directory() {
        let dir = Path::new("/tmp/out");
        assert_eq!(safe_join(dir, "a/b.txt").unwrap(), dir.join("a/b.txt"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(safe_join(dir, bad).is_err(), "{bad}");
        }
    }
}
