//! `sonm-rv-probe`: checks NAT traversal through a rendezvous server from where it runs.
//! `worker` publishes a fresh identity and echoes; `connect` reaches a worker and says how
//! (direct or relay) and how long it took. The NAT simulation tests drive it in namespaces.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use sonm_net::{Address, Endpoint, EthKey};
use sonm_rendezvous::{ClientConfig, Path, RendezvousClient};

/// The probe's own application protocol: echo.
const PROBE_ALPN: &[u8] = b"sonm-rv-probe/1";

#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The rendezvous server's UDP address.
    #[arg(long)]
    server: SocketAddr,
    /// The server's Ethereum address, checked at the handshake.
    #[arg(long)]
    server_address: Option<Address>,
    /// Local UDP address.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish and echo until killed; prints `ready <address> <observed>` once published.
    Worker {
        /// Private candidates to publish.
        #[arg(long)]
        private: Vec<SocketAddr>,
    },
    /// Connect to a worker and print one JSON line: path, address, milliseconds.
    Connect {
        #[arg(long)]
        worker: Address,
        #[arg(long, default_value_t = 1500)]
        direct_deadline_ms: u64,
        #[arg(long, default_value_t = 5000)]
        relay_deadline_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Echo(Vec<u8>);

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let mut config = ClientConfig::new(args.server, args.server_address);
    smol::block_on(async {
        match args.command {
            Command::Worker { private } => {
                config.private = private;
                config.endpoint.server_alpns = vec![PROBE_ALPN.to_vec()];
                let client = RendezvousClient::bind(args.listen, &EthKey::random(), config)
                    .await
                    .context("connecting to the rendezvous server")?;
                let observed = client.publish().await.context("publishing")?;
                println!("ready {} {observed}", client.address());
                std::io::stdout().flush()?;
                serve(client.endpoint().clone()).await;
                Ok(())
            }
            Command::Connect {
                worker,
                direct_deadline_ms,
                relay_deadline_ms,
            } => {
                config.direct_deadline = Duration::from_millis(direct_deadline_ms);
                config.relay_deadline = Duration::from_millis(relay_deadline_ms);
                let client = RendezvousClient::bind(args.listen, &EthKey::random(), config)
                    .await
                    .context("connecting to the rendezvous server")?;
                let started = Instant::now();
                let (conn, path) = client
                    .connect_via_rendezvous(worker, PROBE_ALPN)
                    .await
                    .context("connecting to the worker")?;
                let ms = started.elapsed().as_millis();
                let back: Echo = conn
                    .request(&Echo(b"probe".to_vec()), Duration::from_secs(5))
                    .await
                    .context("echo")?;
                if back != Echo(b"probe".to_vec()) {
                    bail!("echo came back wrong");
                }
                let (kind, via) = match path {
                    Path::Direct(a) => ("direct", a),
                    Path::Relay(a) => ("relay", a),
                };
                println!("{{\"path\":\"{kind}\",\"via\":\"{via}\",\"ms\":{ms}}}");
                // Tell the worker and the server we are done before exiting.
                client.endpoint().close();
                client.endpoint().wait_idle().await;
                Ok(())
            }
        }
    })
}

async fn serve(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        smol::spawn(async move {
            let Ok(conn) = incoming.handshake().await else {
                return;
            };
            while let Ok((echo, responder)) = conn.accept_request::<Echo>().await {
                let _ = responder.respond(&echo).await;
            }
        })
        .detach();
    }
}
