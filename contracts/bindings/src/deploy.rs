//! Deploys and wires the contracts (the order and wiring of `contracts/README.md`),
//! optionally funds accounts with SNM, and describes the result as [`Addresses`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::aliases::{U96, U192};
use alloy::primitives::{Address, TxHash, U256};
use alloy::providers::{DynProvider, PendingTransactionError, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::TransportError;
use alloy::transports::http::reqwest::Url;
use alloy::transports::utils::guess_local_url;
use thiserror::Error;

use crate::addresses::{Addresses, ContractAddresses};
use crate::bindings::{Blacklist, Gate, Market, OracleUSD, ProfileRegistry, SNM};

/// One SNM in wei (the token has 18 decimals).
pub const SNM_WEI: u128 = 1_000_000_000_000_000_000;

/// What to deploy besides the fixed set of contracts. The deployer owns everything
/// that has an owner and receives the whole SNM supply, from which the gate's reserve
/// and the funded accounts are paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployConfig {
    /// SNM minted to the deployer, in wei (at most 2^128 - 1).
    pub snm_supply: U256,
    /// OracleUSD's initial rate: USD per SNM scaled by 1e18 (must be > 0).
    pub oracle_price: U192,
    pub gate: GateConfig,
    /// ProfileRegistry validators to appoint, with their levels (1..=3).
    pub validators: Vec<(Address, u8)>,
    /// Accounts to send SNM to, in wei.
    pub fund: Vec<(Address, U256)>,
}

/// This chain's Gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Keeper signatures needed to pay a transfer (at least 1).
    pub threshold: u8,
    /// Keepers and their daily limits in SNM wei.
    pub keepers: Vec<(Address, U96)>,
    /// SNM sent to the gate as its reserve, in wei.
    pub reserve: U256,
}

impl Default for DeployConfig {
    /// One billion SNM, 0.05 USD/SNM, a gate with threshold 1 and no keepers, no
    /// validators, nobody funded.
    fn default() -> Self {
        DeployConfig {
            snm_supply: U256::from(1_000_000_000u128 * SNM_WEI),
            oracle_price: U192::from(50_000_000_000_000_000u64),
            gate: GateConfig {
                threshold: 1,
                keepers: Vec::new(),
                reserve: U256::ZERO,
            },
            validators: Vec::new(),
            fund: Vec::new(),
        }
    }
}

/// Why a deployment failed, and at which step.
#[derive(Debug, Error)]
pub enum DeployError {
    #[error("{step}: sending the transaction failed: {source}")]
    Send {
        step: String,
        #[source]
        source: alloy::contract::Error,
    },
    #[error("{step}: waiting for the receipt failed: {source}")]
    Receipt {
        step: String,
        #[source]
        source: PendingTransactionError,
    },
    #[error("{step}: transaction {tx} reverted")]
    Reverted { step: String, tx: TxHash },
    #[error("{step}: the receipt names no contract address")]
    NoContractAddress { step: String },
    #[error("{step}: the receipt names no block")]
    NoBlock { step: String },
    #[error("RPC: {0}")]
    Rpc(#[from] TransportError),
}

/// Why no deployer key could be loaded. Never contains the key itself.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("no key: give a key file or set {0}")]
    Missing(String),
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key from {0} is not a hex secp256k1 private key (64 hex digits, 0x optional)")]
    Invalid(String),
}

/// The deployer's key: from `key_file` when given (hex, surrounding whitespace and
/// a `0x` prefix allowed), else from the environment variable `env_var`.
pub fn load_signer(key_file: Option<&Path>, env_var: &str) -> Result<PrivateKeySigner, KeyError> {
    let (text, from) = match key_file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.to_owned(),
                source,
            })?,
            path.display().to_string(),
        ),
        None => (
            std::env::var(env_var).map_err(|_| KeyError::Missing(env_var.to_owned()))?,
            format!("${env_var}"),
        ),
    };
    text.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|_| KeyError::Invalid(from))
}

/// How often a provider for a local endpoint polls for receipts. alloy's default
/// for local endpoints is 250 ms, and anvil often answers `eth_sendTransaction`
/// just before the receipt is queryable, so waiting for each receipt would cost up
/// to a whole interval.
pub const LOCAL_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A provider for `rpc_url` that signs with `signer`.
pub fn signing_provider(rpc_url: Url, signer: PrivateKeySigner) -> DynProvider {
    let local = guess_local_url(&rpc_url);
    tune(
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(rpc_url)
            .erased(),
        local,
    )
}

/// A provider for `rpc_url` without a key: for reads, and on a dev chain for
/// transactions from its unlocked accounts (`.from(account)`).
pub fn provider(rpc_url: Url) -> DynProvider {
    let local = guess_local_url(&rpc_url);
    tune(ProviderBuilder::new().connect_http(rpc_url).erased(), local)
}

fn tune(provider: DynProvider, local: bool) -> DynProvider {
    if local {
        provider.client().set_poll_interval(LOCAL_POLL_INTERVAL);
    }
    provider
}

/// Deploys everything to `rpc_url`, signed by `signer` (who becomes the owner and
/// the SNM holder).
pub async fn deploy(
    rpc_url: Url,
    signer: PrivateKeySigner,
    config: &DeployConfig,
) -> Result<Addresses, DeployError> {
    let deployer = signer.address();
    deploy_with(&signing_provider(rpc_url, signer), deployer, config).await
}

/// [`deploy`] through a provider that signs (or sends from an unlocked account) as
/// `deployer`. Steps, each waiting for its receipt:
/// 1. `SNM(deployer, supply)`, `ProfileRegistry(deployer)`, `Blacklist(deployer)`,
///    `OracleUSD(deployer, price)`;
/// 2. `Market(snm, profileRegistry, blacklist)`;
/// 3. `blacklist.setMarket(market)`;
/// 4. `Gate(snm, deployer, threshold)`, `gate.setKeeper(k, limit)` per keeper, the
///    reserve sent to the gate;
/// 5. `profileRegistry.setValidator(v, level)` per validator;
/// 6. SNM sent to each funded account.
pub async fn deploy_with(
    provider: &DynProvider,
    deployer: Address,
    config: &DeployConfig,
) -> Result<Addresses, DeployError> {
    let chain_id = provider.get_chain_id().await?;
    let p = provider.clone();

    let (snm, deploy_block) = create(
        "deploy SNM",
        SNM::deploy_builder(p.clone(), deployer, config.snm_supply),
    )
    .await?;
    let (profile_registry, _) = create(
        "deploy ProfileRegistry",
        ProfileRegistry::deploy_builder(p.clone(), deployer),
    )
    .await?;
    let (blacklist, _) = create(
        "deploy Blacklist",
        Blacklist::deploy_builder(p.clone(), deployer),
    )
    .await?;
    let (oracle_usd, _) = create(
        "deploy OracleUSD",
        OracleUSD::deploy_builder(p.clone(), deployer, config.oracle_price),
    )
    .await?;
    let (market, _) = create(
        "deploy Market",
        Market::deploy_builder(p.clone(), snm, profile_registry, blacklist),
    )
    .await?;
    send(
        "blacklist.setMarket",
        Blacklist::new(blacklist, p.clone()).setMarket(market),
    )
    .await?;

    let (gate, _) = create(
        "deploy Gate",
        Gate::deploy_builder(p.clone(), snm, deployer, config.gate.threshold),
    )
    .await?;
    let gate_contract = Gate::new(gate, p.clone());
    for (keeper, limit) in &config.gate.keepers {
        send(
            &format!("gate.setKeeper({keeper})"),
            gate_contract.setKeeper(*keeper, *limit),
        )
        .await?;
    }
    let token = SNM::new(snm, p.clone());
    if !config.gate.reserve.is_zero() {
        send(
            "fund the gate's reserve",
            token.transfer(gate, config.gate.reserve),
        )
        .await?;
    }

    let profiles = ProfileRegistry::new(profile_registry, p.clone());
    for (validator, level) in &config.validators {
        send(
            &format!("profileRegistry.setValidator({validator}, {level})"),
            profiles.setValidator(*validator, *level),
        )
        .await?;
    }
    for (account, amount) in &config.fund {
        send(
            &format!("fund {account} with SNM"),
            token.transfer(*account, *amount),
        )
        .await?;
    }

    Ok(Addresses {
        chain_id,
        deploy_block,
        deployer,
        contracts: ContractAddresses {
            snm,
            profile_registry,
            blacklist,
            oracle_usd,
            market,
            gate,
        },
    })
}

/// Sends a call, waits for its receipt and requires success.
async fn send<P: Provider, D: CallDecoder>(
    step: &str,
    call: CallBuilder<P, D>,
) -> Result<TransactionReceipt, DeployError> {
    let pending = call.send().await.map_err(|source| DeployError::Send {
        step: step.to_owned(),
        source,
    })?;
    let receipt = pending
        .get_receipt()
        .await
        .map_err(|source| DeployError::Receipt {
            step: step.to_owned(),
            source,
        })?;
    if !receipt.status() {
        return Err(DeployError::Reverted {
            step: step.to_owned(),
            tx: receipt.transaction_hash,
        });
    }
    Ok(receipt)
}

/// Sends a contract creation; returns the new address and its block.
async fn create<P: Provider, D: CallDecoder>(
    step: &str,
    call: CallBuilder<P, D>,
) -> Result<(Address, u64), DeployError> {
    let receipt = send(step, call).await?;
    let address = receipt
        .contract_address
        .ok_or_else(|| DeployError::NoContractAddress {
            step: step.to_owned(),
        })?;
    let block = receipt.block_number.ok_or_else(|| DeployError::NoBlock {
        step: step.to_owned(),
    })?;
    Ok((address, block))
}
