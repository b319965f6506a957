//! `sonm-deploy`: deploys the SONM contracts to an RPC endpoint, wires them, funds
//! test accounts if asked, and writes the addresses file the daemons read.

use std::path::PathBuf;

use alloy::primitives::aliases::{U96, U192};
use alloy::primitives::{Address, U256};
use alloy::transports::http::reqwest::Url;
use anyhow::{Context, Result, bail};
use clap::Parser;
use sonm_contracts::deploy::SNM_WEI;
use sonm_contracts::{DeployConfig, GateConfig, deploy, load_signer};

/// The environment variable holding the deployer's hex private key when no
/// --key-file is given.
const KEY_ENV: &str = "SONM_DEPLOY_KEY";

/// Deploy SNM, ProfileRegistry, Blacklist, OracleUSD, Market and Gate, wire them,
/// and write their addresses as TOML.
///
/// The deployer key is read from --key-file (hex, 0x optional), else from the
/// SONM_DEPLOY_KEY environment variable. For a local anvil, its first dev key
/// works: SONM_DEPLOY_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// JSON-RPC endpoint (HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    rpc_url: Url,
    /// File holding the deployer's hex private key (else $SONM_DEPLOY_KEY).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Where to write the addresses file.
    #[arg(long, short, default_value = "addresses.toml")]
    out: PathBuf,
    /// SNM supply minted to the deployer, in whole SNM.
    #[arg(long, default_value_t = 1_000_000_000)]
    supply_snm: u64,
    /// OracleUSD's initial rate, USD per SNM scaled by 1e18.
    #[arg(long, default_value = "50000000000000000")]
    oracle_price: U192,
    /// Keeper signatures a gate transfer needs.
    #[arg(long, default_value_t = 1)]
    gate_threshold: u8,
    /// A gate keeper and its daily limit in whole SNM, as ADDRESS=LIMIT (repeatable).
    #[arg(long = "keeper", value_parser = parse_keeper)]
    keepers: Vec<(Address, U96)>,
    /// SNM sent to the gate as its reserve, in whole SNM.
    #[arg(long, default_value_t = 0)]
    gate_reserve_snm: u64,
    /// A ProfileRegistry validator and its level 1..3, as ADDRESS=LEVEL (repeatable).
    #[arg(long = "validator", value_parser = parse_validator)]
    validators: Vec<(Address, u8)>,
    /// An account to fund with SNM (repeatable).
    #[arg(long = "fund")]
    fund: Vec<Address>,
    /// SNM sent to each --fund account, in whole SNM.
    #[arg(long, default_value_t = 1_000_000)]
    fund_snm: u64,
}

fn snm(whole: u64) -> U256 {
    U256::from(whole) * U256::from(SNM_WEI)
}

fn parse_keeper(s: &str) -> Result<(Address, U96), String> {
    let (addr, limit) = s.split_once('=').ok_or("expected ADDRESS=LIMIT")?;
    let addr = addr.parse::<Address>().map_err(|e| e.to_string())?;
    let limit = limit.parse::<u64>().map_err(|e| e.to_string())?;
    let wei = U96::from(limit)
        .checked_mul(U96::from(SNM_WEI))
        .ok_or("the daily limit does not fit in uint96")?;
    Ok((addr, wei))
}

fn parse_validator(s: &str) -> Result<(Address, u8), String> {
    let (addr, level) = s.split_once('=').ok_or("expected ADDRESS=LEVEL")?;
    let addr = addr.parse::<Address>().map_err(|e| e.to_string())?;
    match level.parse::<u8>() {
        Ok(level @ 1..=3) => Ok((addr, level)),
        _ => Err(format!("level {level} is not 1, 2 or 3")),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let signer = load_signer(args.key_file.as_deref(), KEY_ENV)?;
    let config = DeployConfig {
        snm_supply: snm(args.supply_snm),
        oracle_price: args.oracle_price,
        gate: GateConfig {
            threshold: args.gate_threshold,
            keepers: args.keepers,
            reserve: snm(args.gate_reserve_snm),
        },
        validators: args.validators,
        fund: args.fund.iter().map(|a| (*a, snm(args.fund_snm))).collect(),
    };
    let spent = config.gate.reserve + config.fund.iter().map(|(_, v)| *v).sum::<U256>();
    if spent > config.snm_supply {
        bail!("the gate reserve and the funded accounts need more SNM than the supply");
    }
    let deployer = signer.address();
    let addresses = smol::block_on(async_compat::Compat::new(deploy(
        args.rpc_url.clone(),
        signer,
        &config,
    )))
    .with_context(|| format!("deploying to {} as {deployer}", args.rpc_url))?;
    addresses
        .write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{}", addresses.to_toml()?);
    eprintln!("sonm-deploy: wrote {}", args.out.display());
    Ok(())
}
