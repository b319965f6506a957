//! `sonm-worker`: the supplier's daemon. Parses arguments and the TOML configuration, sets up
//! logging, and runs the library's [`sonm_worker::Worker`].

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_signal::{Signal, Signals};
use clap::{Parser, Subcommand};
use smol::stream::StreamExt;
use sonm_wasm_runtime::{Runtime, RuntimeConfig};
use sonm_worker::{Config, Worker, bench, inventory::Inventory};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "SONM worker: sells this box's resources and runs customers' tasks"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "SONM_WORKER_CONFIG",
        default_value = "/etc/sonm/worker.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker (the default).
    Run,
    /// Print the inventory and the benchmark vector (measured once, then cached) as JSON.
    Inventory,
    /// Print the plans and their asks as JSON.
    Plans,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let cli = Cli::parse();
    let config = Config::load(&cli.config)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Inventory => {
            std::fs::create_dir_all(&config.state_dir)
                .with_context(|| format!("creating {}", config.state_dir.display()))?;
            let inventory = Inventory::detect(&config.state_dir)?;
            // The worker's own metering, so the wasm-score matches what tasks get.
            let runtime = Runtime::new(RuntimeConfig {
                metering: config.wasm_metering.runtime_metering(),
                max_concurrent_jobs: 1,
                ..RuntimeConfig::default()
            })?;
            let measured = bench::load_or_measure(
                &config.state_dir,
                &inventory,
                &config.benchmarks,
                &runtime,
            )?;
            println!("{}", serde_json::to_string_pretty(&measured)?);
        }
        Command::Plans => smol::block_on(async {
            let worker = Worker::open(config).await?;
            println!("{}", serde_json::to_string_pretty(&worker.plans()?)?);
            anyhow::Ok(())
        })?,
        Command::Run => smol::block_on(async {
            let listen = config.listen;
            let worker = Arc::new(Worker::open(config).await.context("starting the worker")?);
            let endpoint = worker
                .endpoint(listen)
                .with_context(|| format!("listening on {listen}"))?;
            let mut signals = Signals::new([Signal::Term, Signal::Int])
                .context("installing SIGTERM/SIGINT handlers")?;
            let stop = async move {
                if let Some(Ok(signal)) = signals.next().await {
                    tracing::info!("{signal:?}: stopping");
                }
            };
            tracing::info!(address = %worker.address(), %listen, "worker running");
            sonm_daemon::notify_ready();
            worker.run_until(endpoint, stop).await;
            anyhow::Ok(())
        })?,
    }
    Ok(())
}
