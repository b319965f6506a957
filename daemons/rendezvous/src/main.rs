//! The `sonm-rendezvous` daemon: reads its TOML config and key, serves until stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use sonm_net::{EthKey, Identity};
use sonm_rendezvous::{FileConfig, RendezvousServer};

/// NAT traversal and relay for SONM peers.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(
        long,
        short,
        env = "SONM_RENDEZVOUS_CONFIG",
        default_value = "/etc/sonm/rendezvous.toml"
    )]
    config: PathBuf,
    /// Overrides `listen` from the file.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Overrides `key_file` from the file.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut file =
        FileConfig::parse(&text).with_context(|| format!("in {}", args.config.display()))?;
    if let Some(listen) = args.listen {
        file.listen = listen;
    }
    if let Some(key_file) = args.key_file {
        file.key_file = key_file;
    }
    let level: tracing::Level = file
        .log_level
        .parse()
        .with_context(|| format!("log_level {:?}", file.log_level))?;
    tracing_subscriber::fmt().with_max_level(level).init();

    let key = load_or_create_key(&file.key_file)?;
    // Clients verify the binding at each handshake; the endpoint renews it before it expires.
    let validity = Duration::from_secs(30 * 24 * 3600);
    let identity = Identity::generate(&key, validity).context("creating the TLS identity")?;
    let mut config = file.server_config()?;
    // The key file persists, so the reset key does too: a restart resets old clients at once.
    config.reset_seed = Some(key.stateless_reset_seed());
    config.renew = Some((key.clone(), validity));
    let server = RendezvousServer::start(identity, config).context("starting the server")?;
    tracing::info!(address = %server.address(), "serving");
    sonm_daemon::notify_ready();
    smol::block_on(async {
        loop {
            smol::Timer::after(Duration::from_secs(60)).await;
            tracing::info!(stats = ?server.stats(), "stats");
        }
    })
}

fn load_or_create_key(path: &Path) -> Result<EthKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = alloy_primitives::hex::decode(text.trim())
                .with_context(|| format!("{} is not hex", path.display()))?;
            let secret: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} is not 32 bytes", path.display()))?;
            EthKey::from_bytes(&secret).context("invalid secret key")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = EthKey::random();
            write_secret(path, &alloy_primitives::hex::encode(key.to_bytes()))?;
            tracing::info!(path = %path.display(), address = %key.address(), "created a new key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
