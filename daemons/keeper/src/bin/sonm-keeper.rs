//! `sonm-keeper`: the gate keeper daemon. Reads the TOML configuration and runs the keeper
//! until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    stop_on_signal(stop.clone())?;
    daemon::run(&config, &stop, |_| notify_ready()).context("sonm-keeper stopped")?;
    tracing::info!("stopped");
    Ok(())
}

/// Sets `stop` when SIGTERM or SIGINT arrives: the loop finishes its action at hand (a
/// `pay` being awaited included) and returns.
fn stop_on_signal(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let mut signals =
        Signals::new([Signal::Term, Signal::Int]).context("installing SIGTERM/SIGINT handlers")?;
    std::thread::spawn(move || {
        smol::block_on(async {
            if signals.next().await.is_some() {
                stop.store(true, Ordering::Relaxed);
            }
        })
    });
    Ok(())
}

/// Tells systemd that the keeper is ready (a no-op outside systemd).
fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify READY=1: {e}");
    }
}
