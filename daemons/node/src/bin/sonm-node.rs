//! `sonm-node`: the customer's local node. Parses arguments and the TOML configuration, sets up
//! logging, and serves the library's HTTP/JSON API on localhost until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sonm_node::{Config, Node, api::Api, keystore};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "SONM node: the customer's local API (market, deals, tasks) on localhost"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "SONM_NODE_CONFIG",
        default_value = "/etc/sonm/node.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Run,
    /// Create a keystore (Web3 Secret Storage JSON) encrypted with the password in a file (or
    /// asked twice on the terminal), and print its address. Needs no configuration file.
    Keygen {
        /// Where to write the keystore (refuses to overwrite).
        #[arg(long)]
        keystore: PathBuf,
        /// The file holding the password (its first line); without it, the terminal is asked.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Import this hex private key (a file) instead of generating one.
        #[arg(long)]
        import_hex_file: Option<PathBuf>,
    },
    /// Print the keystore's address (decrypting it).
    Address,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Keygen {
            keystore: path,
            password_file,
            import_hex_file,
        } => {
            let import = import_hex_file
                .map(|p| {
                    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?;
            let signer = keystore::create(&path, password_file.as_deref(), import.as_deref())?;
            println!("{}", signer.address());
        }
        Command::Address => {
            let config = Config::load(&cli.config)?;
            let signer = keystore::load(&config.keystore, config.password_file.as_deref())?;
            println!("{}", signer.address());
        }
        Command::Run => {
            let config = Config::load(&cli.config)?;
            if !config.listen.ip().is_loopback() {
                tracing::warn!(listen = %config.listen, "the API is not on a loopback address: anyone who reaches it can spend this key's funds");
            }
            let node = Node::open(&config).context("starting the node")?;
            let (server, _) = sonm_http_serve::bind(config.listen)?;
            tracing::info!(address = %node.address(), listen = %config.listen, "sonm-node serving");
            let stop = Arc::new(AtomicBool::new(false));
            sonm_daemon::stop_on_signal(stop.clone())
                .context("installing SIGTERM/SIGINT handlers")?;
            sonm_daemon::notify_ready();
            Api { node: &node }.serve(&server, config.http_threads, &stop);
            tracing::info!("stopping");
        }
    }
    Ok(())
}
