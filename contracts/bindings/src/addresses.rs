//! The addresses file: where a deployment's contracts live, written by `sonm-deploy`
//! and read by the daemons.
//!
//! ```toml
//! chain_id = 31337
//! deploy_block = 1
//! deployer = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
//!
//! [contracts]
//! snm = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
//! profile_registry = "0x..."
//! blacklist = "0x..."
//! oracle_usd = "0x..."
//! market = "0x..."
//! gate = "0x..."
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A deployment: the chain, the first block that holds any of its contracts (where
/// an indexer starts), who deployed it (the owner of the owned contracts), and the
/// contracts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addresses {
    pub chain_id: u64,
    pub deploy_block: u64,
    pub deployer: Address,
    pub contracts: ContractAddresses,
}

/// One address per contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractAddresses {
    pub snm: Address,
    pub profile_registry: Address,
    pub blacklist: Address,
    pub oracle_usd: Address,
    pub market: Address,
    pub gate: Address,
}

/// Why an addresses file could not be read or written.
#[derive(Debug, Error)]
pub enum AddressesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid addresses file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot encode the addresses as TOML: {0}")]
    Encode(#[from] toml::ser::Error),
}

impl Addresses {
    /// The file's text, with a header comment.
    pub fn to_toml(&self) -> Result<String, AddressesError> {
        Ok(format!(
            "# SONM contract addresses, written by sonm-deploy.\n{}",
            toml::to_string(self)?
        ))
    }

    /// Parses the file's text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads an addresses file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, AddressesError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| AddressesError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| AddressesError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the file: to a temporary file beside it, then renamed into place, so a
    /// reader never sees half a file.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), AddressesError> {
        let path = path.as_ref();
        let text = self.to_toml()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write_err = |source| AddressesError::Write {
            path: path.to_owned(),
            source,
        };
        fs::write(&tmp, text).map_err(write_err)?;
        fs::rename(&tmp, path).map_err(write_err)
    }
}
