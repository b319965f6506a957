//! Sending a contract transaction and waiting for its receipt, once for every daemon: estimate
//! (a contract's refusal decoded), sign here, broadcast, wait for the receipt, require success;
//! [`event`] then finds what the transaction emitted.
//!
//! The transaction is signed here rather than by the provider's fillers so that its raw bytes
//! are at hand: while the receipt is awaited they are broadcast again now and then. After an
//! endpoint went away (see [`crate::rpc`]) the next one may never have seen the transaction;
//! the same signed bytes are safe to send any number of times (one nonce: mined at most once),
//! whereas sending the call afresh would take a new nonce and could run it twice.
//!
//! Nonces: the next one is the larger of the endpoint's pending count and the one after our last
//! broadcast (an endpoint we fail over to may not have our pending transaction yet); it is taken
//! under a lock, so concurrent sends of one [`TxSender`] get distinct nonces, and it is not
//! advanced when nothing was broadcast (alloy's cached nonce manager would be, leaving a gap that
//! no later transaction passes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::consensus::TxEnvelope;
use alloy::contract::{CallBuilder, CallDecoder};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, TxHash};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use alloy::transports::{RpcError, TransportError};
use smol::lock::Mutex;
use thiserror::Error;

use crate::bindings::{Blacklist, Gate, Market, OracleUSD, ProfileRegistry, SNM};
use crate::gas_with_margin;

/// Why a transaction did not do what was asked. `what` names the call (`"quickBuy"`).
#[derive(Debug, Error)]
pub enum TxError {
    /// The contract refused the call (its custom error, decoded): nothing was sent.
    #[error("{what} refused by the {} contract: {}", error.contract(), error.detail())]
    Refused {
        what: &'static str,
        error: Box<Refusal>,
    },
    /// Estimating failed otherwise (a revert without a known error, or the RPC): nothing sent.
    #[error("{what}: {source}")]
    Estimate {
        what: &'static str,
        #[source]
        source: Box<alloy::contract::Error>,
    },
    /// Preparing the transaction (fees, nonce) failed: nothing was sent.
    #[error("{what}: {source}")]
    Rpc {
        what: &'static str,
        #[source]
        source: Box<TransportError>,
    },
    #[error("{what}: cannot sign the transaction: {message}")]
    Sign { what: &'static str, message: String },
    /// The node answered the broadcast with an error and does not know the transaction.
    #[error("{what}: the node refused transaction {tx}: {message}")]
    Rejected {
        what: &'static str,
        tx: TxHash,
        message: String,
    },
    /// No receipt in time. The transaction may still be mined: do not send the call afresh
    /// without looking at the chain.
    #[error("{what}: no receipt for transaction {tx} after {waited:?}; it may still be mined")]
    Unconfirmed {
        what: &'static str,
        tx: TxHash,
        waited: Duration,
    },
    #[error("{what}: transaction {tx} reverted")]
    Reverted { what: &'static str, tx: TxHash },
    #[error("{what}: the receipt of {tx} has no {event} event")]
    NoEvent {
        what: &'static str,
        tx: TxHash,
        event: &'static str,
    },
}

/// A custom error of one of our contracts, decoded from a revert. Every caller of
/// [`TxSender::send`] gets its contract's refusals typed, whichever contract it called: a
/// token transfer over the balance is as much a refusal as a deal that does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Market(Market::MarketErrors),
    Token(SNM::SNMErrors),
    Gate(Gate::GateErrors),
    Profiles(ProfileRegistry::ProfileRegistryErrors),
    Blacklist(Blacklist::BlacklistErrors),
    Oracle(OracleUSD::OracleUSDErrors),
}

impl Refusal {
    /// The revert's custom error, if it is one of our contracts'. Errors are told apart by
    /// their 4-byte selector only, so one declared identically by two contracts
    /// (`ZeroAddress()`, `TransferFailed()`) is reported under the first in this order; its
    /// name and arguments are right either way, and the call's name says which contract.
    pub fn decode(e: &alloy::contract::Error) -> Option<Self> {
        e.as_decoded_interface_error::<Market::MarketErrors>()
            .map(Refusal::Market)
            .or_else(|| e.as_decoded_interface_error().map(Refusal::Token))
            .or_else(|| e.as_decoded_interface_error().map(Refusal::Gate))
            .or_else(|| e.as_decoded_interface_error().map(Refusal::Profiles))
            .or_else(|| e.as_decoded_interface_error().map(Refusal::Blacklist))
            .or_else(|| e.as_decoded_interface_error().map(Refusal::Oracle))
    }

    /// The contract whose error set the refusal was decoded from.
    pub fn contract(&self) -> &'static str {
        match self {
            Refusal::Market(_) => "Market",
            Refusal::Token(_) => "SNM",
            Refusal::Gate(_) => "Gate",
            Refusal::Profiles(_) => "ProfileRegistry",
            Refusal::Blacklist(_) => "Blacklist",
            Refusal::Oracle(_) => "OracleUSD",
        }
    }

    /// The error with its arguments, e.g. `InsufficientBalance(InsufficientBalance { .. })`.
    pub fn detail(&self) -> String {
        match self {
            Refusal::Market(e) => format!("{e:?}"),
            Refusal::Token(e) => format!("{e:?}"),
            Refusal::Gate(e) => format!("{e:?}"),
            Refusal::Profiles(e) => format!("{e:?}"),
            Refusal::Blacklist(e) => format!("{e:?}"),
            Refusal::Oracle(e) => format!("{e:?}"),
        }
    }
}

impl TxError {
    fn estimate(what: &'static str, e: alloy::contract::Error) -> Self {
        match Refusal::decode(&e) {
            Some(error) => TxError::Refused {
                what,
                error: Box::new(error),
            },
            None => TxError::Estimate {
                what,
                source: Box::new(e),
            },
        }
    }
}

/// How long to wait for a receipt, and how often to broadcast the transaction again meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOptions {
    pub timeout: Duration,
    pub rebroadcast: Duration,
}

impl Default for TxOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(180),
            rebroadcast: Duration::from_secs(2),
        }
    }
}

/// Sends transactions signed by one key through one provider (typically a
/// [`crate::rpc::Failover`] one). Clones share the nonce state.
#[derive(Debug, Clone)]
pub struct TxSender {
    provider: DynProvider,
    wallet: EthereumWallet,
    from: Address,
    chain_id: u64,
    /// The nonce after our last broadcast.
    next_nonce: Arc<Mutex<Option<u64>>>,
    options: TxOptions,
}

impl TxSender {
    pub fn new(provider: DynProvider, signer: PrivateKeySigner, chain_id: u64) -> Self {
        Self {
            provider,
            from: signer.address(),
            wallet: EthereumWallet::from(signer),
            chain_id,
            next_nonce: Arc::new(Mutex::new(None)),
            options: TxOptions::default(),
        }
    }

    pub fn with_options(mut self, options: TxOptions) -> Self {
        self.options = options;
        self
    }

    pub fn from(&self) -> Address {
        self.from
    }

    /// Sends `call` as a transaction (gas: the estimate with [`gas_with_margin`]) and waits for
    /// its receipt; `Err` unless it succeeded.
    pub async fn send<P: Provider, D: CallDecoder>(
        &self,
        what: &'static str,
        call: CallBuilder<P, D>,
    ) -> Result<TransactionReceipt, TxError> {
        let rpc = |source| TxError::Rpc {
            what,
            source: Box::new(source),
        };
        let call = call.from(self.from);
        let gas = call
            .estimate_gas()
            .await
            .map_err(|e| TxError::estimate(what, e))?;
        let fees = self.provider.estimate_eip1559_fees().await.map_err(rpc)?;
        let mut request = call
            .into_transaction_request()
            .with_gas_limit(gas_with_margin(gas))
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
            .with_chain_id(self.chain_id);

        let mut next = self.next_nonce.lock().await;
        let pending = self
            .provider
            .get_transaction_count(self.from)
            .pending()
            .await
            .map_err(rpc)?;
        let nonce = next.map_or(pending, |n| n.max(pending));
        request.set_nonce(nonce);
        let envelope: TxEnvelope =
            request
                .build(&self.wallet)
                .await
                .map_err(|e| TxError::Sign {
                    what,
                    message: e.to_string(),
                })?;
        let tx = *envelope.tx_hash();
        let raw = envelope.encoded_2718();
        match self.provider.send_raw_transaction(&raw).await {
            Ok(_) => *next = Some(nonce + 1),
            Err(RpcError::ErrorResp(answer)) => {
                // A transport failure may have made the failover send it twice: "already
                // known" then only means the first one got through.
                if !matches!(self.provider.get_transaction_by_hash(tx).await, Ok(Some(_))) {
                    return Err(TxError::Rejected {
                        what,
                        tx,
                        message: answer.message.into_owned(),
                    });
                }
                *next = Some(nonce + 1);
            }
            Err(e) => {
                // Every endpoint failed: it may have arrived or not. Wait for it (broadcasting
                // it again) rather than return an error that invites a fresh send.
                tracing::warn!(%tx, error = %e, "{what}: broadcast failed; waiting for the transaction anyway");
            }
        }
        drop(next);

        let receipt = self.wait(what, tx, &raw).await?;
        if !receipt.status() {
            return Err(TxError::Reverted { what, tx });
        }
        Ok(receipt)
    }

    async fn wait(
        &self,
        what: &'static str,
        tx: TxHash,
        raw: &[u8],
    ) -> Result<TransactionReceipt, TxError> {
        let poll = self
            .provider
            .client()
            .poll_interval()
            .min(Duration::from_secs(1));
        let start = Instant::now();
        let mut broadcast = Instant::now();
        loop {
            match self.provider.get_transaction_receipt(tx).await {
                Ok(Some(receipt)) => return Ok(receipt),
                Ok(None) => {}
                Err(e) => tracing::debug!(%tx, error = %e, "{what}: receipt not readable yet"),
            }
            if start.elapsed() >= self.options.timeout {
                return Err(TxError::Unconfirmed {
                    what,
                    tx,
                    waited: start.elapsed(),
                });
            }
            if broadcast.elapsed() >= self.options.rebroadcast {
                // "already known" and, once mined, "nonce too low" are the expected answers.
                if let Err(e) = self.provider.send_raw_transaction(raw).await {
                    tracing::debug!(%tx, error = %e, "{what}: broadcast again");
                }
                broadcast = Instant::now();
            }
            smol::Timer::after(poll).await;
        }
    }
}

/// The first `E` event in `receipt`.
pub fn event<E: SolEvent>(what: &'static str, receipt: &TransactionReceipt) -> Result<E, TxError> {
    receipt
        .decoded_log::<E>()
        .map(|log| log.data)
        .ok_or(TxError::NoEvent {
            what,
            tx: receipt.transaction_hash,
            event: E::SIGNATURE,
        })
}
