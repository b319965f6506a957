//! `sonm-keeper`: the gate keeper daemon. Reads the TOML configuration and runs the keeper
//! until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use sonm_keeper::daemon::{self, Config};

/// The SONM gate keeper: pays transfers between the main chain and the SONM chain.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration file.
    #[arg(
        long,
        short,
        env = "SONM_KEEPER_CONFIG",
        default_value = "/etc/sonm/keeper.toml"
    )]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let args = Args::parse();
    let config = Config::read(&args.config)?;
    let stop = Arc::new(AtomicBool::new(false));
    sonm_daemon::stop_on_signal(stop.clone()).context("installing SIGTERM/SIGINT handlers")?;
    daemon::run(&config, &stop, |_| sonm_daemon::notify_ready()).context("sonm-keeper stopped")?;
    tracing::info!("stopped");
    Ok(())
}
