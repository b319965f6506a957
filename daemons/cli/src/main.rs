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

/// `sonm token deposit|withdraw|transfers`: the Gates.
mod gates;
/// `sonm task logs`, and the upload and download progress bars.
mod tasks;
/// `sonm worker ...`: a supplier's worker admin.
mod worker;

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
    /// SNM: transfer, what the Market may pull, deposit/withdraw through the gates.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The node's own orders: create (bid or ask), list, show, cancel.
    #[command(subcommand)]
    Order(OrderCmd),
    /// Deals.
    #[command(subcommand)]
    Deal(DealCmd),
    /// The node's blacklist (suppliers' masters, or customers, it will not deal with).
    #[command(subcommand)]
    Blacklist(BlacklistCmd),
    /// Identity level, master and certificates of an address.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// WASM tasks on a deal's worker.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Administer your worker (the node holds its key or its confirmed master's).
    Worker {
        #[command(flatten)]
        target: worker::Target,
        #[command(subcommand)]
        cmd: worker::WorkerCmd,
    },
    /// Print a shell completion script (e.g. `sonm completions bash > /etc/bash_completion.d/sonm`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
enum TokenCmd {
    /// Send SNM to an address; prints the balances after.
    Transfer {
        /// The recipient.
        to: String,
        /// SNM wei.
        amount: String,
    },
    /// Set what the Market may pull from the node's account (bids, deals); prints the
    /// balances after.
    Approve {
        /// SNM wei.
        amount: String,
    },
    /// deposit, withdraw, transfers: the Gates between the main chain and the SONM chain.
    #[command(flatten)]
    Gates(gates::GateCmd),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    Bid,
    Ask,
}

#[derive(Debug, Subcommand)]
enum OrderCmd {
    /// Place an order: a BID (what the customer wants; its first period is frozen) or an ASK
    /// (what a supplier without a worker sells). Fields come from --spec, then the flags.
    Create {
        /// bid or ask.
        #[arg(value_enum)]
        kind: Kind,
        /// A spec file (TOML, or JSON by extension) with the flags' fields: benchmarks,
        /// price, duration, netflags, counterparty, identity_level, blacklist.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// e.g. "cpu-cores=2 ram-size=1GiB".
        #[arg(long)]
        benchmarks: Option<String>,
        /// SNM wei per second.
        #[arg(long)]
        price: Option<String>,
        /// Seconds; 0 = spot.
        #[arg(long)]
        duration: Option<u64>,
        /// e.g. outbound,inbound.
        #[arg(long)]
        netflags: Option<String>,
        /// Only this party may take the order.
        #[arg(long)]
        counterparty: Option<String>,
        /// Required of the counterparty: anonymous, registered, identified, professional.
        #[arg(long)]
        identity_level: Option<String>,
        /// A further party whose blacklist applies.
        #[arg(long)]
        blacklist: Option<String>,
    },
    /// The node's own orders.
    List {
        /// bid or ask.
        #[arg(long = "type", value_enum)]
        kind: Option<Kind>,
        /// active, cancelled or matched.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show an order and its status.
    Show {
        /// The order id.
        id: u64,
    },
    /// Cancel an active order of the node's own.
    Cancel {
        /// The order id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum BlacklistCmd {
    /// The addresses a blacklist holds.
    List {
        /// Whose list (default: the node's).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Add an address to the node's list.
    Add { address: String },
    /// Remove an address from the node's list.
    Remove { address: String },
}

#[derive(Debug, Subcommand)]
enum ProfileCmd {
    /// Identity level, confirmed master and certificates.
    Show {
        /// The address (default: the node's).
        address: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ChangeCmd {
    /// Ask the other side for a new price (and duration, for a forward deal).
    Create {
        /// The deal id.
        deal: u64,
        /// SNM wei per second.
        #[arg(long)]
        price: String,
        /// Seconds (default: the deal's).
        #[arg(long)]
        duration: Option<u64>,
    },
    /// A deal's change requests.
    List {
        /// The deal id.
        deal: u64,
    },
    /// Approve the other side's pending request.
    Approve {
        /// The change request id.
        id: u64,
    },
    /// Withdraw ours, or reject theirs.
    Cancel {
        /// The change request id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum DealCmd {
    /// The node's deals (as consumer or supplier).
    List {
        /// any, consumer or supplier.
        #[arg(long)]
        role: Option<String>,
        /// active or closed.
        #[arg(long)]
        status: Option<String>,
    },
    /// Open a deal from an active ask and an active bid.
    Open {
        /// The ask's order id.
        #[arg(long)]
        ask: u64,
        /// The bid's order id.
        #[arg(long)]
        bid: u64,
    },
    /// Change requests: a new price or duration for a deal.
    #[command(subcommand)]
    Change(ChangeCmd),
    /// Buy an ask at once (quick-buy); prints the deal.
    Buy {
        /// The ask (from `sonm market asks`): a placed ask's order id, or a signed ask's digest
        /// (0x and 64 hex digits).
        ask: String,
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
        /// Run with fuel metering: the receipt then carries a deterministic fuel count that
        /// `sonm-wasm-run` reproduces (a few percent slower; implied by a fuel limit).
        #[arg(long)]
        fuel: bool,
        /// host:port of the worker's task service, if the node's config does not know it.
        #[arg(long)]
        worker_addr: Option<String>,
    },
    /// Start a native container on the deal's worker (it must offer them): a rootfs tar and
    /// the program to run in it; prints the task id.
    StartContainer {
        /// The deal id.
        deal: u64,
        /// The root filesystem as a plain tar, read by the node on this machine.
        #[arg(long)]
        rootfs: PathBuf,
        /// An environment entry NAME=value (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Memory limit in bytes (default: the deal's slice).
        #[arg(long)]
        memory_bytes: Option<u64>,
        /// Wall-time limit in milliseconds (default: what the deal allows).
        #[arg(long)]
        wall_time_ms: Option<u64>,
        /// host:port of the worker's task service, if the node's config does not know it.
        #[arg(long)]
        worker_addr: Option<String>,
        /// The program and its arguments (after `--`).
        #[arg(last = true, required = true)]
        args: Vec<String>,
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
    /// What a task printed (stdout to stdout, stderr to stderr); `-f` follows it until it
    /// ends.
    Logs {
        /// The deal id.
        deal: u64,
        /// The task id (from `sonm task start`).
        task: u64,
        /// Keep printing what the task prints until it ends.
        #[arg(short, long)]
        follow: bool,
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

    fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.answer(self.agent.delete(format!("{}{path}", self.base)).call())
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

const ORDER_FIELDS: &[&str] = &[
    "id",
    "type",
    "status",
    "deal",
    "author",
    "counterparty",
    "price",
    "duration",
    "netflags",
    "identity_level",
    "blacklist",
    "benchmarks",
];

const BALANCE_FIELDS: &[&str] = &["address", "snm", "eth", "market_allowance"];

const CHANGE_FIELDS: &[&str] = &["id", "deal", "requester", "price", "duration", "status"];

/// Prints the rows of `items` as a table of `columns` (header, field), or `empty`.
fn print_items(items: &Value, columns: &[(&str, &str)], empty: &str) {
    let rows: Vec<Vec<String>> = items
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| columns.iter().map(|(_, k)| s(&item[*k])).collect())
        .collect();
    if rows.is_empty() {
        println!("{empty}");
    } else {
        let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
        print_table(&headers, &rows);
    }
}

/// An order's fields from a spec file (TOML, or JSON by extension) and the flags over it.
fn order_body(
    kind: Kind,
    spec: Option<&Path>,
    flags: Vec<(&str, Option<Value>)>,
) -> anyhow::Result<Value> {
    let mut body = match spec {
        None => json!({}),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading order spec {}", path.display()))?;
            let value: Value = if path.extension().is_some_and(|e| e == "json") {
                serde_json::from_str(&text)
                    .with_context(|| format!("order spec {}", path.display()))?
            } else {
                toml::from_str(&text).with_context(|| format!("order spec {}", path.display()))?
            };
            if !value.is_object() {
                bail!("order spec {}: expected a table of fields", path.display());
            }
            value
        }
    };
    for (key, value) in flags {
        if let Some(v) = value {
            body[key] = v;
        }
    }
    // Prices and amounts travel as decimal strings (they exceed 2^53); a spec may write a number.
    if let Some(n) = body.get("price").and_then(Value::as_u64) {
        body["price"] = json!(n.to_string());
    }
    body["type"] = json!(match kind {
        Kind::Bid => "bid",
        Kind::Ask => "ask",
    });
    Ok(body)
}

fn exit_text(exit: &Value) -> String {
    match exit["kind"].as_str() {
        Some("exit") => format!("exit code {}", s(&exit["code"])),
        Some("trapped") => format!("trapped: {}", s(&exit["trap"])),
        Some("killed") => format!("killed: {}", s(&exit["trap"])),
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
                print_fields(v, BALANCE_FIELDS);
                gates::print_main_balance(v);
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
                            // A signed ask is bought by its digest (its id is 0).
                            if o["digest"].is_string() {
                                s(&o["digest"])
                            } else {
                                s(&o["id"])
                            },
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
                            "ID (or DIGEST)",
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
        Command::Token(TokenCmd::Transfer { to, amount }) => {
            let v = node.post(
                "/v1/token/transfer",
                &[],
                &json!({ "to": to, "amount": amount }),
            )?;
            show(&v, &|v| print_fields(v, BALANCE_FIELDS));
        }
        Command::Token(TokenCmd::Gates(cmd)) => gates::run(&node, cmd, &show)?,
        Command::Worker { target, cmd } => worker::run(&node, &target, cmd, &show)?,
        Command::Token(TokenCmd::Approve { amount }) => {
            let v = node.post("/v1/token/approve", &[], &json!({ "amount": amount }))?;
            show(&v, &|v| print_fields(v, BALANCE_FIELDS));
        }
        Command::Order(OrderCmd::Create {
            kind,
            spec,
            benchmarks,
            price,
            duration,
            netflags,
            counterparty,
            identity_level,
            blacklist,
        }) => {
            let body = order_body(
                kind,
                spec.as_deref(),
                vec![
                    ("benchmarks", benchmarks.map(Value::from)),
                    ("price", price.map(Value::from)),
                    ("duration", duration.map(Value::from)),
                    ("netflags", netflags.map(Value::from)),
                    ("counterparty", counterparty.map(Value::from)),
                    ("identity_level", identity_level.map(Value::from)),
                    ("blacklist", blacklist.map(Value::from)),
                ],
            )?;
            let v = node.post("/v1/orders", &[], &body)?;
            show(&v, &|v| print_fields(v, ORDER_FIELDS));
        }
        Command::Order(OrderCmd::List { kind, status }) => {
            let kind = kind.map(|k| match k {
                Kind::Bid => "bid",
                Kind::Ask => "ask",
            });
            let query: Vec<_> = [opt("type", &kind), opt("status", &status)]
                .into_iter()
                .flatten()
                .collect();
            let v = node.get("/v1/orders/own", &query)?;
            show(&v, &|v| {
                print_items(
                    &v["orders"],
                    &[
                        ("ID", "id"),
                        ("TYPE", "type"),
                        ("STATUS", "status"),
                        ("DEAL", "deal"),
                        ("PRICE (wei/s)", "price"),
                        ("DURATION", "duration"),
                        ("NET", "netflags"),
                        ("BENCHMARKS", "benchmarks"),
                    ],
                    "no orders",
                )
            });
        }
        Command::Order(OrderCmd::Show { id }) => {
            let v = node.get(&format!("/v1/orders/{id}"), &[])?;
            show(&v, &|v| print_fields(v, ORDER_FIELDS));
        }
        Command::Order(OrderCmd::Cancel { id }) => {
            let v = node.post(&format!("/v1/orders/{id}/cancel"), &[], &json!({}))?;
            show(&v, &|v| print_fields(v, ORDER_FIELDS));
        }
        Command::Deal(DealCmd::List { role, status }) => {
            let query: Vec<_> = [opt("role", &role), opt("status", &status)]
                .into_iter()
                .flatten()
                .collect();
            let v = node.get("/v1/deals", &query)?;
            show(&v, &|v| {
                print_items(
                    &v["deals"],
                    &[
                        ("ID", "id"),
                        ("STATUS", "status"),
                        ("SUPPLIER", "supplier"),
                        ("CONSUMER", "consumer"),
                        ("PRICE (wei/s)", "price"),
                        ("DURATION", "duration"),
                        ("START", "start"),
                    ],
                    "no deals",
                )
            });
        }
        Command::Deal(DealCmd::Open { ask, bid }) => {
            let v = node.post("/v1/deals", &[], &json!({ "ask_id": ask, "bid_id": bid }))?;
            show(&v, &|v| print_fields(v, DEAL_FIELDS));
        }
        Command::Deal(DealCmd::Change(ChangeCmd::Create {
            deal,
            price,
            duration,
        })) => {
            let mut body = json!({ "price": price });
            if let Some(d) = duration {
                body["duration"] = json!(d);
            }
            let v = node.post(&format!("/v1/deals/{deal}/change-requests"), &[], &body)?;
            show(&v, &|v| print_fields(v, CHANGE_FIELDS));
        }
        Command::Deal(DealCmd::Change(ChangeCmd::List { deal })) => {
            let v = node.get(&format!("/v1/deals/{deal}/change-requests"), &[])?;
            show(&v, &|v| {
                print_items(
                    &v["change_requests"],
                    &[
                        ("ID", "id"),
                        ("STATUS", "status"),
                        ("REQUESTER", "requester"),
                        ("PRICE (wei/s)", "price"),
                        ("DURATION", "duration"),
                    ],
                    "no change requests",
                )
            });
        }
        Command::Deal(DealCmd::Change(ChangeCmd::Approve { id })) => {
            let v = node.post(
                &format!("/v1/change-requests/{id}/approve"),
                &[],
                &json!({}),
            )?;
            show(&v, &|v| print_fields(v, CHANGE_FIELDS));
        }
        Command::Deal(DealCmd::Change(ChangeCmd::Cancel { id })) => {
            let v = node.post(&format!("/v1/change-requests/{id}/cancel"), &[], &json!({}))?;
            show(&v, &|v| print_fields(v, CHANGE_FIELDS));
        }
        Command::Blacklist(cmd) => {
            let v = match cmd {
                BlacklistCmd::List { owner } => {
                    let query: Vec<_> = opt("owner", &owner).into_iter().collect();
                    node.get("/v1/blacklist", &query)?
                }
                BlacklistCmd::Add { address } => {
                    node.post("/v1/blacklist", &[], &json!({ "address": address }))?
                }
                BlacklistCmd::Remove { address } => {
                    node.delete(&format!("/v1/blacklist/{address}"))?
                }
            };
            show(&v, &|v| {
                let listed = v["listed"].as_array().cloned().unwrap_or_default();
                if listed.is_empty() {
                    println!("{} lists nobody", s(&v["owner"]));
                } else {
                    println!("{} lists:", s(&v["owner"]));
                    for a in &listed {
                        println!("  {}", s(a));
                    }
                }
            });
        }
        Command::Profile(ProfileCmd::Show { address }) => {
            let address = address.unwrap_or_else(|| "me".to_owned());
            let v = node.get(&format!("/v1/profiles/{address}"), &[])?;
            show(&v, &|v| {
                print_fields(v, &["address", "identity_level", "master"]);
                println!();
                print_items(
                    &v["certificates"],
                    &[
                        ("CERTIFICATE", "id"),
                        ("VALIDATOR", "validator"),
                        ("ATTRIBUTE", "attribute_type"),
                        ("VALUE", "value"),
                        ("REVOKED", "revoked"),
                    ],
                    "no certificates",
                )
            });
        }
        Command::Deal(DealCmd::Buy {
            ask,
            duration,
            worker_addr,
        }) => {
            let mut body = json!({ "duration": duration });
            if ask.starts_with("0x") {
                body["signed_ask"] = json!(ask);
            } else {
                let id: u64 = ask.parse().map_err(|_| {
                    anyhow::anyhow!("{ask:?} is neither an order id nor a signed ask's 0x digest")
                })?;
                body["ask_id"] = json!(id);
            }
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
            fuel,
            worker_addr,
        }) => {
            // The node runs on this machine: it reads the spec, its module and its inputs.
            let job = std::fs::canonicalize(&job)
                .with_context(|| format!("job spec {}", job.display()))?;
            let mut body = json!({ "job_spec": job });
            if fuel {
                body["limits"] = json!({ "fuel_metered": true });
            }
            if let Some(a) = worker_addr {
                body["worker_addr"] = json!(a);
            }
            let v = tasks::start_with_progress(
                &node,
                &format!("/v1/deals/{deal}/tasks"),
                body,
                !json_out,
            )?;
            show(&v, &|v| {
                println!("task {} started on deal {}", s(&v["task"]), s(&v["deal"]))
            });
        }
        Command::Task(TaskCmd::StartContainer {
            deal,
            rootfs,
            env,
            memory_bytes,
            wall_time_ms,
            worker_addr,
            args,
        }) => {
            // The node runs on this machine and reads the tar.
            let rootfs = std::fs::canonicalize(&rootfs)
                .with_context(|| format!("rootfs {}", rootfs.display()))?;
            let mut body = json!({
                "kind": "container",
                "rootfs": { "path": rootfs },
                "args": args,
                "env": env,
                "limits": { "memory_bytes": memory_bytes, "wall_time_ms": wall_time_ms },
            });
            if let Some(a) = worker_addr {
                body["worker_addr"] = json!(a);
            }
            let v = tasks::start_with_progress(
                &node,
                &format!("/v1/deals/{deal}/tasks"),
                body,
                !json_out,
            )?;
            show(&v, &|v| {
                println!(
                    "container task {} started on deal {}",
                    s(&v["task"]),
                    s(&v["deal"])
                )
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
            let v = tasks::get_with_progress(
                &node,
                &format!("/v1/deals/{deal}/tasks/{task}/result"),
                &q,
                !json_out,
            )?;
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
                let fuel = match r["fuel_metering"].as_str() {
                    Some("counted") => s(&r["fuel"]),
                    Some("unknown") => "unknown (stopped before the count)".into(),
                    _ => "not metered".into(),
                };
                println!(
                    "--- receipt: verified, signed by worker {}\nfuel {}  wall {} us  module sha256 {}\noutputs sha256 {}",
                    s(&r["worker"]),
                    fuel,
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
        Command::Task(TaskCmd::Logs {
            deal,
            task,
            follow,
            worker_addr,
        }) => tasks::logs(&node, deal, task, follow, &worker_addr)?,
        Command::Completions { shell } => {
            // Generated from the command definitions: the node is not asked.
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "sonm", &mut std::io::stdout());
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
    fn the_commands_are_well_formed_and_complete_in_every_shell() {
        let mut command = <Cli as clap::CommandFactory>::command();
        command.clone().debug_assert();
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "sonm", &mut script);
            let script = String::from_utf8(script).unwrap();
            for word in ["order", "blacklist", "profile", "token", "change"] {
                assert!(script.contains(word), "{shell}: {word}");
            }
        }
    }

    #[test]
    fn an_order_takes_the_spec_file_then_the_flags() {
        let dir = std::env::temp_dir().join(format!("sonm-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_spec = dir.join("bid.toml");
        std::fs::write(
            &toml_spec,
            "benchmarks = \"cpu-cores=2\"\nprice = 1000\nnetflags = \"outbound\"\n",
        )
        .unwrap();
        let body = order_body(
            Kind::Bid,
            Some(&toml_spec),
            vec![("netflags", Some(json!("inbound"))), ("duration", None)],
        )
        .unwrap();
        assert_eq!(
            body,
            json!({ "type": "bid", "benchmarks": "cpu-cores=2", "price": "1000", "netflags": "inbound" })
        );
        let json_spec = dir.join("ask.json");
        std::fs::write(&json_spec, r#"{"price": "5", "type": "bid"}"#).unwrap();
        let body = order_body(Kind::Ask, Some(&json_spec), vec![]).unwrap();
        assert_eq!(body, json!({ "type": "ask", "price": "5" }));
        std::fs::write(&json_spec, "[1]").unwrap();
        assert!(order_body(Kind::Ask, Some(&json_spec), vec![]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_never_land_outside_the_directory() {
        let dir = Path::new("/tmp/out");
        assert_eq!(safe_join(dir, "a/b.txt").unwrap(), dir.join("a/b.txt"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(safe_join(dir, bad).is_err(), "{bad}");
        }
    }
}
