//! The keeper's configuration and wiring: the store, the two chains, the peers, the HTTP
//! server on worker threads, and the loop that feeds the core and carries out its actions,
//! until a stop flag is set.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde::Deserialize;
use sonm_contracts::{Addresses, AddressesError, KeyError, RpcUrls};
use thiserror::Error;

use crate::chain::{Chain, ChainError};
use crate::core::{Action, ChainParams, GateRef, Keeper, Params, TransferKey};
use crate::peer::{self, FetchError, Peers};
use crate::store::{self, Store, StoreError};

/// `sonm-keeper`'s TOML configuration. Relative paths are relative to the working directory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The keeper's private key (hex, `0x` optional).
    pub key_file: PathBuf,
    /// Where this keeper serves its signatures to the others.
    pub listen: SocketAddr,
    /// The LMDB directory.
    pub data_dir: PathBuf,
    /// The other keepers' base URLs (`http://host:port`).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Every keeper's address, this one's included: the only signers whose signatures are
    /// used (and only those the destination gate also lists as unfrozen keepers at start).
    pub keepers: Vec<Address>,
    pub main: ChainConfig,
    pub sonm: ChainConfig,
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The wait between one keeper's turn to submit a payment and the next one's.
    #[serde(default = "defaults::turn_delay_ms")]
    pub turn_delay_ms: u64,
    #[serde(default = "defaults::fetch_interval_ms")]
    pub fetch_interval_ms: u64,
    /// The least time between two submissions of one transfer by this keeper.
    #[serde(default = "defaults::resubmit_ms")]
    pub resubmit_ms: u64,
    /// How long a keeper whose signature a gate refused (frozen, over its daily limit) is
    /// left out of this keeper's submissions to that gate.
    #[serde(default = "defaults::refused_ms")]
    pub refused_ms: u64,
    #[serde(default = "defaults::peer_timeout_ms")]
    pub peer_timeout_ms: u64,
    #[serde(default = "defaults::http_threads")]
    pub http_threads: usize,
}

/// One chain: its endpoints, its addresses file (from `sonm-deploy`), and how deep a lock
/// must be before it is signed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    pub rpc_url: RpcUrls,
    pub addresses: PathBuf,
    #[serde(default = "defaults::confirmations")]
    pub confirmations: u64,
    #[serde(default = "defaults::batch_blocks")]
    pub batch_blocks: u64,
}

mod defaults {
    pub(super) fn poll_interval_ms() -> u64 {
        1000
    }
    pub(super) fn turn_delay_ms() -> u64 {
        15_000
    }
    pub(super) fn fetch_interval_ms() -> u64 {
        2000
    }
    pub(super) fn resubmit_ms() -> u64 {
        60_000
    }
    pub(super) fn refused_ms() -> u64 {
        3_600_000
    }
    pub(super) fn peer_timeout_ms() -> u64 {
        3000
    }
    pub(super) fn http_threads() -> usize {
        2
    }
    pub(super) fn confirmations() -> u64 {
        12
    }
    pub(super) fn batch_blocks() -> u64 {
        1000
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("keeper key: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Addresses(#[from] AddressesError),
    #[error("the main chain and the SONM chain are both chain {0}")]
    SameChain(u64),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(f))
}

/// Runs the keeper until `stop` is set. `on_listen` is told the bound address of the API.
pub fn run(
    config: &Config,
    stop: &AtomicBool,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), DaemonError> {
    let signer = sonm_contracts::load_signer(Some(&config.key_file), "SONM_KEEPER_KEY")?;
    let me = signer.address();
    let mut chains = Vec::new();
    let mut params = Vec::new();
    for c in [&config.main, &config.sonm] {
        let addresses = Addresses::read(&c.addresses)?;
        let gate = GateRef {
            chain_id: addresses.chain_id,
            gate: addresses.contracts.gate,
        };
        let chain = block_on(Chain::connect(
            &c.rpc_url,
            gate,
            addresses.deploy_block,
            c.confirmations,
            c.batch_blocks,
            signer.clone(),
        ))?;
        let (threshold, keepers) = read_gate(&chain, &config.keepers, me)?;
        params.push(ChainParams {
            gate,
            keepers,
            threshold,
            confirmations: c.confirmations,
        });
        chains.push(chain);
    }
    if params[0].gate.chain_id == params[1].gate.chain_id {
        return Err(DaemonError::SameChain(params[0].gate.chain_id));
    }
    let [main_params, sonm_params]: [ChainParams; 2] = params
        .try_into()
        .unwrap_or_else(|_| unreachable!("two chains were configured"));
    let mut keeper = Keeper::new(Params {
        me,
        turns: config.keepers.iter().copied().collect(),
        chains: [main_params, sonm_params],
        turn_delay_ms: config.turn_delay_ms,
        fetch_interval_ms: config.fetch_interval_ms,
        resubmit_ms: config.resubmit_ms,
        refused_ms: config.refused_ms,
    });

    let env = store::open_env(&config.data_dir)?;
    let store = Store::open(&env)?;
    restore(&mut keeper, &store)?;

    let (server, bound) =
        sonm_http_serve::bind(config.listen).map_err(|e| DaemonError::Listen {
            addr: e.addr,
            reason: e.reason,
        })?;
    tracing::info!(%me, %bound, "keeper serving its signatures");
    on_listen(bound);

    let driver = Driver {
        chains: [chains[0].clone(), chains[1].clone()],
        me,
        configured: &config.keepers,
        store: &store,
        signer,
        peers: Peers::new(&config.peers, Duration::from_millis(config.peer_timeout_ms)),
        poll_interval: Duration::from_millis(config.poll_interval_ms),
    };
    std::thread::scope(|scope| {
        scope.spawn(|| peer::serve(&server, &store, me, config.http_threads, stop));
        let _span = tracing::info_span!("keeper", %me).entered();
        driver.run(&mut keeper, stop);
    });
    Ok(())
}

/// The gate's threshold and which configured keepers it lists, unfrozen, now; warns about
/// what makes this keeper useless there.
fn read_gate(
    chain: &Chain,
    configured: &[Address],
    me: Address,
) -> Result<(usize, BTreeSet<Address>), DaemonError> {
    let id = chain.gate.chain_id;
    let (threshold, keepers) = block_on(chain.gate_config(configured))?;
    for k in configured.iter().filter(|k| !keepers.contains(*k)) {
        tracing::warn!(keeper = %k, chain = id, "not an (unfrozen) keeper of this gate: its signatures are not used here");
    }
    tracing::info!(chain = id, gate = %chain.gate.gate, threshold, keepers = keepers.len(), "gate");
    if !keepers.contains(&me) {
        tracing::warn!(%me, chain = id, "this key is not a keeper of this gate: relaying only, signing nothing for it");
    }
    if keepers.len() < usize::from(threshold) {
        tracing::warn!(
            chain = id,
            threshold,
            keepers = keepers.len(),
            "fewer usable keepers than the threshold: nothing can be paid here"
        );
    }
    Ok((threshold.into(), keepers))
}

/// Feeds the core what the store holds: locks, then paid transfers, then own signatures.
/// Heads are not restored: nothing is signed before the followers have seen the chains again.
fn restore(keeper: &mut Keeper, store: &Store<'_>) -> Result<(), StoreError> {
    let saved = store.load()?;
    let (locks, signatures, paid) = (saved.locks.len(), saved.signatures.len(), saved.paid.len());
    for lock in saved.locks {
        keeper.locked(lock);
    }
    for key in saved.paid {
        keeper.paid(key);
    }
    for (key, sig) in saved.signatures {
        if keeper.is_paid(key) {
            continue;
        }
        if let Err(e) = keeper.signed(key, &sig) {
            tracing::warn!(?key, error = %e, "a stored signature is not usable");
        }
    }
    tracing::info!(locks, signatures, paid, "restored");
    Ok(())
}

struct Driver<'s, 'e> {
    chains: [Chain; 2],
    me: Address,
    /// Every configured keeper, whose standing on each gate is read again when it changes.
    configured: &'s [Address],
    store: &'s Store<'e>,
    signer: PrivateKeySigner,
    peers: Peers,
    poll_interval: Duration,
}

impl Driver<'_, '_> {
    fn run(&self, keeper: &mut Keeper, stop: &AtomicBool) {
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut behind = false;
            for i in 0..2 {
                match self.follow(keeper, i) {
                    Ok(more) => behind |= more,
                    Err(e) => tracing::warn!(error = %e, "following the chain"),
                }
            }
            let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            let mut fetch = Vec::new();
            for action in keeper.poll(now) {
                match action {
                    Action::Fetch { key } => fetch.push(key),
                    other => self.act(keeper, other, now),
                }
            }
            self.fetch(keeper, &fetch);
            if !behind {
                sleep_unless(stop, self.poll_interval);
            }
        }
    }

    /// One batch from chain `i`, stored then fed to the core; `true` if a batch was read.
    fn follow(&self, keeper: &mut Keeper, i: usize) -> Result<bool, DaemonError> {
        let chain = &self.chains[i];
        let id = chain.gate.chain_id;
        let checkpoint = self.store.checkpoint(id)?;
        let batch = block_on(chain.step(checkpoint, self.chains[1 - i].gate))?;
        let Some(to) = batch.to else {
            keeper.head(id, batch.head);
            return Ok(false);
        };
        // Read before the batch is committed: a failed read retries the batch, so the change
        // is not skipped.
        if batch.gate_changed {
            let (threshold, keepers) = read_gate(chain, self.configured, self.me)?;
            keeper.gate_config(id, threshold, keepers);
        }
        self.store.commit_batch(id, &batch.locks, &batch.paid, to)?;
        keeper.head(id, batch.head);
        for lock in batch.locks {
            let key = lock.key();
            let observed = keeper.locked(lock);
            tracing::info!(?key, ?observed, "lock");
        }
        for key in batch.paid {
            keeper.paid(key);
        }
        Ok(true)
    }

    /// Asks every peer for its signatures of `keys`. A peer that cannot be reached is not
    /// asked again this round, so a dead or hanging peer costs one timeout per round.
    fn fetch(&self, keeper: &mut Keeper, keys: &[TransferKey]) {
        for url in self.peers.urls() {
            for key in keys {
                if keeper.is_paid(*key) {
                    continue;
                }
                match self.peers.fetch(url, *key) {
                    Ok(Some(bytes)) => match keeper.peer_signature(*key, &bytes) {
                        Ok(signer) => tracing::debug!(?key, %signer, peer = url, "peer signature"),
                        Err(e) => {
                            tracing::warn!(?key, peer = url, error = %e, "peer signature ignored")
                        }
                    },
                    Ok(None) => {}
                    Err(e @ FetchError::Http { .. }) => {
                        tracing::debug!(error = %e, "peer unreachable");
                        break;
                    }
                    Err(e) => tracing::warn!(?key, error = %e, "peer answer ignored"),
                }
            }
        }
    }

    fn act(&self, keeper: &mut Keeper, action: Action, now: u64) {
        match action {
            Action::Sign { key, digest } => {
                let signature = match self.signer.sign_hash_sync(&digest) {
                    Ok(s) => s.as_bytes(),
                    Err(e) => {
                        tracing::error!(?key, error = %e, "signing failed");
                        return;
                    }
                };
                // Stored before it is used or served: a restart finds it and does not sign again.
                if let Err(e) = self.store.put_signature(key, &signature) {
                    tracing::error!(?key, error = %e, "storing the signature failed");
                    return;
                }
                match keeper.signed(key, &signature) {
                    Ok(()) => tracing::info!(?key, "signed"),
                    Err(e) => tracing::error!(?key, error = %e, "own signature refused"),
                }
            }
            Action::Fetch { key } => self.fetch(keeper, &[key]),
            Action::Submit {
                lock,
                src,
                dst,
                signatures,
            } => {
                let key = lock.key();
                let Some(chain) = self.chains.iter().find(|c| c.gate == dst) else {
                    return;
                };
                // Paid already (by another keeper, or by us before a restart)?
                match block_on(chain.is_paid(src, lock.nonce)) {
                    Ok(true) => return self.mark_paid(keeper, key),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(?key, error = %e, "cannot tell whether it is paid");
                        return;
                    }
                }
                match block_on(chain.pay(&lock, src, &signatures)) {
                    Ok(tx) => {
                        tracing::info!(?key, %tx, to = %lock.to, amount = %lock.amount, "paid");
                        self.mark_paid(keeper, key);
                    }
                    Err(e) => {
                        tracing::warn!(?key, error = %e, "pay failed");
                        if let Some(signer) = e.refused_signer() {
                            keeper.signer_refused(dst.chain_id, signer, now);
                        }
                        // Changed since last read (the event is not confirmed yet, say).
                        if e.gate_config_stale() {
                            match read_gate(chain, self.configured, self.me) {
                                Ok((threshold, keepers)) => {
                                    keeper.gate_config(dst.chain_id, threshold, keepers);
                                }
                                Err(e) => tracing::warn!(error = %e, "reading the gate again"),
                            }
                        }
                        if matches!(block_on(chain.is_paid(src, lock.nonce)), Ok(true)) {
                            self.mark_paid(keeper, key);
                        }
                    }
                }
            }
        }
    }

    fn mark_paid(&self, keeper: &mut Keeper, key: TransferKey) {
        if let Err(e) = self.store.put_paid(key) {
            tracing::error!(?key, error = %e, "storing the paid mark failed");
        }
        keeper.paid(key);
    }
}

/// Sleeps for `pause`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let end = Instant::now() + pause;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_parses_with_defaults() {
        let text = r#"
key_file = "keeper.key"
listen = "127.0.0.1:9100"
data_dir = "data"
peers = ["http://10.0.0.2:9100"]
keepers = ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"]
[main]
rpc_url = ["http://127.0.0.1:8545", "http://127.0.0.1:8546"]
addresses = "main.toml"
[sonm]
rpc_url = "http://127.0.0.1:9545"
addresses = "sonm.toml"
confirmations = 3
"#;
        let c = Config::from_toml(text, Path::new("k.toml")).unwrap();
        assert_eq!(c.main.rpc_url.urls().len(), 2);
        assert_eq!((c.main.confirmations, c.sonm.confirmations), (12, 3));
        assert_eq!(c.turn_delay_ms, 15_000);
        assert!(Config::from_toml(&format!("{text}\nbogus = 1"), Path::new("k.toml")).is_err());
    }
}
