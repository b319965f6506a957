//! `sonm worker status|inventory|devices|plans|plan add|plan remove|asks replace|maintenance|confirm`:
//! a supplier administers its worker through the node's `/v1/worker/...` (the node must hold
//! the worker's key or its confirmed master's; the worker refuses anyone else).

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::{Node, opt, print_fields, print_items, s};

/// Which worker, and where (both optional: the node's own address, and its config's
/// `[workers]` or the rendezvous).
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The worker's address (default: the node's own, for a node run with the worker's key).
    #[arg(long, global = true)]
    worker: Option<String>,
    /// host:port of the worker's QUIC service, if the node does not know it.
    #[arg(long, global = true)]
    worker_addr: Option<String>,
}

impl Target {
    fn query(&self) -> Vec<(&'static str, String)> {
        [
            opt("worker", &self.worker),
            opt("worker_addr", &self.worker_addr),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkerCmd {
    /// Address, master, uptime, running tasks and open deals.
    Status,
    /// The inventory and the benchmark vector.
    Inventory,
    /// GPUs as NVML reports them now.
    Devices,
    /// The ask plans and their asks.
    Plans,
    /// Add or remove an ask plan.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Withdraw and place again the asks of the plans without a deal.
    ReplaceAsks,
    /// On: cancel the asks, close the spot deals, let forward deals run to their end; off: sell
    /// again.
    Maintenance {
        #[arg(value_enum)]
        switch: Switch,
    },
    /// Confirm a worker that registered under this node's key (`Market.confirmWorker`).
    Confirm {
        /// The worker's address.
        worker_address: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlanCmd {
    /// Add a plan; its ask is placed at once (the name is stored as `admin:<name>`).
    Add {
        /// A name for the plan.
        name: String,
        /// SNM wei per second.
        #[arg(long)]
        price: u64,
        #[arg(long, default_value_t = 0)]
        cpu_cores: u32,
        /// e.g. 2GiB.
        #[arg(long)]
        ram: Option<String>,
        #[arg(long)]
        storage: Option<String>,
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        /// Seconds; 0 = spot.
        #[arg(long, default_value_t = 0)]
        duration: u64,
        #[arg(long)]
        netflags: Option<String>,
        /// anonymous, registered, identified or professional.
        #[arg(long)]
        identity_level: Option<String>,
    },
    /// Remove a plan and cancel its ask (refused while the plan has a deal).
    Remove {
        /// The plan's id (see `sonm worker plans`).
        id: u64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Switch {
    On,
    Off,
}

const STATUS_FIELDS: &[&str] = &[
    "address",
    "master",
    "configured_master",
    "uptime_s",
    "running_tasks",
    "open_deals",
    "plans",
    "rendezvous_connected",
    "maintenance",
];

/// The status, and in maintenance which forward deals still run and why.
fn print_status(v: &Value) {
    print_fields(v, STATUS_FIELDS);
    for d in v["forward_deals"].as_array().into_iter().flatten() {
        println!(
            "forward deal {} runs to its end at {} (the chain refuses to close it earlier)",
            s(&d["deal"]),
            s(&d["end"])
        );
    }
}

const PLAN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("CORES", "cpu_cores"),
    ("RAM", "ram_bytes"),
    ("GPUS", "gpus"),
    ("PRICE", "price"),
    ("DURATION", "duration"),
    ("ASK (ID OR DIGEST)", "ask_id"),
    ("DEAL", "deal"),
];

/// The plan with its ask named in one column: the placed ask's order id, or the signed ask's
/// digest.
fn with_ask_id(plan: &Value) -> Value {
    let mut p = plan.clone();
    p["ask_id"] = if plan["signed_ask"]["digest"].is_string() {
        plan["signed_ask"]["digest"].clone()
    } else {
        plan["ask"]["id"].clone()
    };
    p
}

/// Prints an answer: its JSON (`--json`), or the human form the closure prints.
type Show<'a> = dyn Fn(&Value, &dyn Fn(&Value)) + 'a;

pub(crate) fn run(
    node: &Node,
    target: &Target,
    cmd: WorkerCmd,
    show: &Show<'_>,
) -> anyhow::Result<()> {
    let q = target.query();
    match cmd {
        WorkerCmd::Status => {
            let v = node.get("/v1/worker/status", &q)?;
            show(&v, &print_status);
        }
        WorkerCmd::Inventory => {
            let v = node.get("/v1/worker/inventory", &q)?;
            show(&v, &|v| {
                let inv = &v["inventory"];
                print_fields(
                    inv,
                    &["cpu_model", "cpu_cores", "ram_bytes", "storage_bytes"],
                );
                println!(
                    "gpus           {}",
                    inv["gpus"].as_array().map_or(0, Vec::len)
                );
                println!("benchmarks     {}", s(&v["benchmarks"]));
            });
        }
        WorkerCmd::Devices => {
            let v = node.get("/v1/worker/devices", &q)?;
            show(&v, &|v| {
                print_items(
                    &v["gpus"],
                    &[
                        ("INDEX", "index"),
                        ("NAME", "name"),
                        ("UUID", "uuid"),
                        ("MEMORY", "memory_bytes"),
                    ],
                    "no GPUs (none, or NVML is not installed)",
                )
            });
        }
        WorkerCmd::Plans => {
            let v = node.get("/v1/worker/plans", &q)?;
            show(&v, &|v| {
                let rows: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(with_ask_id)
                    .collect();
                print_items(&Value::Array(rows), PLAN_COLUMNS, "no plans");
            });
        }
        WorkerCmd::Plan(PlanCmd::Add {
            name,
            price,
            cpu_cores,
            ram,
            storage,
            gpus,
            duration,
            netflags,
            identity_level,
        }) => {
            let mut body = json!({
                "name": name, "price": price, "cpu_cores": cpu_cores, "gpus": gpus,
                "duration": duration,
            });
            for (k, v) in [
                ("ram", ram),
                ("storage", storage),
                ("netflags", netflags),
                ("identity_level", identity_level),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let v = node.post("/v1/worker/plans", &q, &body)?;
            show(&v, &|v| {
                print_items(&json!([with_ask_id(v)]), PLAN_COLUMNS, "");
            });
        }
        WorkerCmd::Plan(PlanCmd::Remove { id }) => {
            let mut req = node
                .agent
                .delete(format!("{}/v1/worker/plans/{id}", node.base));
            for (k, v) in &q {
                req = req.query(*k, v);
            }
            let v = node.answer(req.call())?;
            show(&v, &|_| println!("plan {id} removed; its ask is cancelled"));
        }
        WorkerCmd::ReplaceAsks => {
            let v = node.post("/v1/worker/asks/replace", &q, &json!({}))?;
            show(&v, &|v| {
                println!("asks replaced for plans {}", s(&v["replaced"]))
            });
        }
        WorkerCmd::Maintenance { switch } => {
            let on = matches!(switch, Switch::On);
            let v = node.post("/v1/worker/maintenance", &q, &json!({ "on": on }))?;
            show(&v, &print_status);
        }
        WorkerCmd::Confirm { worker_address } => {
            let v = node.post(
                "/v1/worker/confirm",
                &[],
                &json!({ "worker": worker_address }),
            )?;
            show(&v, &|v| {
                println!("{} is now a worker of {}", s(&v["worker"]), s(&v["master"]))
            });
        }
    }
    Ok(())
}
