//! `sonm-dwh`: the chain indexer daemon. Reads a TOML config, follows the chain
//! into LMDB and serves the query API until SIGINT/SIGTERM... or until killed:
//! every batch commits atomically with its checkpoint, so a kill loses nothing.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use sonm_contracts::Addresses;
use sonm_dwh::daemon::{self, Config};

/// The SONM chain indexer and query service.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration file.
    #[arg(
        long,
        short,
        env = "SONM_DWH_CONFIG",
        default_value = "/etc/sonm/dwh.toml"
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
    let addresses = Addresses::read(&config.addresses).with_context(|| {
        format!(
            "reading the addresses file named in {}",
            args.config.display()
        )
    })?;
    // Stopped by a signal's default action; nothing needs flushing (each batch commits
    // with its checkpoint), so no handler is installed.
    let stop = AtomicBool::new(false);
    // Ready once the API listens (the follower catches up in the background).
    daemon::run(&config, &addresses, &stop, |_| sonm_daemon::notify_ready())
        .context("sonm-dwh stopped")
}
