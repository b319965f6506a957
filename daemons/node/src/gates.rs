//! SNM between the main chain and the SONM chain (the node's own chain) through the Gates
//! (contracts/src/Gate.sol): a deposit `lock`s SNM in the main chain's Gate for the same
//! address on the SONM chain, a withdrawal the other way; gate keepers (sonm-keeper) then pay
//! it from the other Gate's reserve. The node only locks and reads: `Locked` events from its
//! address on either Gate, and the other Gate's `paid(transferId)`.
//!
//! The main chain is optional (`[main_chain]` in the config); without it every gate operation
//! is `422 no_main_chain`. Amounts are checked before anything is sent: above zero, at most
//! the Gate's cap (2^96 - 1: keepers' limits are 96-bit, a larger lock could never be paid),
//! at most the balance on the source chain.

use std::sync::Mutex;

use alloy::primitives::{B256, TxHash, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use serde::Serialize;
use sonm_contracts::QueryWindowed as _;
use sonm_contracts::tx::{self, TxError, TxSender};
use sonm_contracts::{Addresses, Failover, FailoverOptions, Gate, RpcError, SNM};
use sonm_market::Address;

use crate::block_on;
use crate::chain::{ChainError, as_string, refusal_reason};
use crate::config::MainChainConfig;
use crate::error::ApiError;
use crate::node::Node;

/// The largest amount a Gate locks (`type(uint96).max`).
pub const MAX_GATE_AMOUNT: U256 = U256::from_limbs([u64::MAX, (1 << 32) - 1, 0, 0]);

/// Why the main chain could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MainChainError {
    #[error("[main_chain] addresses: {0}")]
    Addresses(#[from] sonm_contracts::AddressesError),
    #[error("[main_chain]: {0}")]
    Rpc(#[from] RpcError),
    #[error(
        "[main_chain] is chain {0}, the same chain as rpc_url: the main chain must be the other side of the Gates"
    )]
    SameChain(u64),
    #[error("[main_chain] addresses: no Gate deployed (its address is zero)")]
    NoGate,
}

/// A gate operation that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(
        "no main chain configured: add [main_chain] (rpc_url, addresses) to the node's config to deposit or withdraw"
    )]
    NoMainChain,
    /// The Gate (or the token) refused: its custom error, decoded. Nothing was sent.
    #[error("{what} refused on the {chain} chain by the {reason}")]
    Refused {
        what: &'static str,
        chain: &'static str,
        reason: String,
    },
    #[error("{chain} chain: {source}")]
    Chain {
        chain: &'static str,
        /// Boxed: keeps `ApiError` small.
        #[source]
        source: Box<ChainError>,
    },
}

/// The node's account on the main chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MainBalance {
    pub chain_id: u64,
    /// SNM wei.
    #[serde(serialize_with = "as_string")]
    pub snm: U256,
    /// Native coin (gas), wei.
    #[serde(serialize_with = "as_string")]
    pub eth: U256,
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Main chain → SONM chain.
    Deposit,
    /// SONM chain → main chain.
    Withdraw,
}

/// A lock of the node's, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferView {
    pub direction: Direction,
    pub src_chain: u64,
    pub dst_chain: u64,
    /// The source Gate's lock nonce.
    pub nonce: u64,
    /// `keccak256(abi.encode(srcChainId, srcGate, nonce))`: what the destination Gate's
    /// `paid` is keyed by.
    pub transfer_id: B256,
    pub to: Address,
    /// SNM wei.
    #[serde(serialize_with = "as_string")]
    pub amount: U256,
    /// The lock's transaction.
    pub tx: Option<TxHash>,
    pub block: Option<u64>,
    /// Whether the destination Gate has paid it.
    pub paid: bool,
}

/// The main chain: its Gate and token, signing as the node's key.
#[derive(Debug)]
pub struct MainChain {
    provider: DynProvider,
    sender: TxSender,
    addresses: Addresses,
    /// One main-chain writer at a time (its nonces are its own; the SONM chain has the node's).
    writer: Mutex<()>,
}

impl MainChain {
    /// Opens `[main_chain]`: reads its addresses file, checks that it is another chain than
    /// the SONM chain and that every endpoint that answers serves it.
    pub fn open(
        config: &MainChainConfig,
        signer: PrivateKeySigner,
        sonm_chain_id: u64,
    ) -> Result<Self, MainChainError> {
        let addresses = Addresses::read(&config.addresses)?;
        if addresses.chain_id == sonm_chain_id {
            return Err(MainChainError::SameChain(sonm_chain_id));
        }
        if addresses.contracts.gate == Address::ZERO {
            return Err(MainChainError::NoGate);
        }
        let failover = Failover::new(
            &config.rpc_url,
            addresses.chain_id,
            FailoverOptions::default(),
        )?;
        block_on(failover.probe())?;
        let provider = failover.signing_provider(signer.clone());
        let sender = TxSender::new(provider.clone(), signer, addresses.chain_id);
        tracing::info!(chain_id = addresses.chain_id, gate = %addresses.contracts.gate, "main chain configured: deposits and withdrawals through the Gates");
        Ok(Self {
            provider,
            sender,
            addresses,
            writer: Mutex::new(()),
        })
    }

    pub fn chain_id(&self) -> u64 {
        self.addresses.chain_id
    }

    fn side(&self) -> Side<'_> {
        Side {
            name: "main",
            provider: &self.provider,
            sender: &self.sender,
            addresses: &self.addresses,
        }
    }
}

/// A `Locked` event with its transaction and block.
type LockSeen = (Gate::Locked, Option<TxHash>, Option<u64>);

/// One chain's Gate and token, as the node reaches them.
#[derive(Clone, Copy)]
struct Side<'a> {
    /// `main` or `sonm`, for messages.
    name: &'static str,
    provider: &'a DynProvider,
    sender: &'a TxSender,
    addresses: &'a Addresses,
}

fn chain_err(chain: &'static str, source: ChainError) -> GateError {
    GateError::Chain {
        chain,
        source: Box::new(source),
    }
}

impl Side<'_> {
    fn err(&self, source: ChainError) -> GateError {
        chain_err(self.name, source)
    }

    fn call_err(&self, what: &'static str) -> impl FnOnce(alloy::contract::Error) -> GateError {
        let chain = self.name;
        move |e| {
            chain_err(
                chain,
                ChainError::Call {
                    what,
                    message: e.to_string(),
                },
            )
        }
    }

    fn tx_err(&self) -> impl FnOnce(TxError) -> GateError {
        let chain = self.name;
        move |e| match e {
            // The Gate's (or the token's) refusal at the estimate: nothing was sent.
            TxError::Refused { what, error } => GateError::Refused {
                what,
                chain,
                reason: refusal_reason(&error),
            },
            other => chain_err(chain, ChainError::from(other)),
        }
    }

    fn gate(&self) -> Gate::GateInstance<DynProvider> {
        Gate::new(self.addresses.contracts.gate, self.provider.clone())
    }

    fn snm(&self) -> SNM::SNMInstance<DynProvider> {
        SNM::new(self.addresses.contracts.snm, self.provider.clone())
    }

    fn snm_balance(&self, who: Address) -> Result<U256, GateError> {
        let snm = self.snm();
        block_on(async move { snm.balanceOf(who).call().await }).map_err(self.call_err("balanceOf"))
    }

    fn balance(&self, who: Address) -> Result<MainBalance, GateError> {
        let snm = self.snm_balance(who)?;
        let p = self.provider.clone();
        let eth = block_on(async move { p.get_balance(who).await }).map_err(|e| {
            self.err(ChainError::Call {
                what: "eth_getBalance",
                message: e.to_string(),
            })
        })?;
        Ok(MainBalance {
            chain_id: self.addresses.chain_id,
            snm,
            eth,
        })
    }

    /// Approves the Gate for `amount` if its allowance is short, then `lock(me, amount, dst)`.
    /// The caller holds this chain's writer lock and has checked the amount.
    fn lock(
        &self,
        me: Address,
        amount: U256,
        dst: u64,
    ) -> Result<(u64, TxHash, Option<u64>), GateError> {
        let (snm, gate_addr) = (self.snm(), self.addresses.contracts.gate);
        let allowance = {
            let snm = snm.clone();
            block_on(async move { snm.allowance(me, gate_addr).call().await })
                .map_err(self.call_err("allowance"))?
        };
        if allowance < amount {
            let sender = self.sender.clone();
            block_on(async move { sender.send("approve", snm.approve(gate_addr, amount)).await })
                .map_err(self.tx_err())?;
        }
        let (gate, sender) = (self.gate(), self.sender.clone());
        const WHAT: &str = "lock";
        let receipt = block_on(async move {
            sender
                .send(WHAT, gate.lock(me, amount, U256::from(dst)))
                .await
        })
        .map_err(self.tx_err())?;
        let event = tx::event::<Gate::Locked>(WHAT, &receipt).map_err(self.tx_err())?;
        let nonce =
            u64::try_from(event.nonce).map_err(|_| self.err(ChainError::Range("lock nonce")))?;
        Ok((nonce, receipt.transaction_hash, receipt.block_number))
    }

    /// The `Locked` events from `me` on this Gate bound for `dst`, oldest first.
    fn locks_from(&self, me: Address, dst: u64) -> Result<Vec<LockSeen>, GateError> {
        let (gate, from) = (self.gate(), self.addresses.deploy_block);
        let logs = block_on(async move {
            gate.Locked_filter()
                .topic2(me.into_word())
                .from_block(from)
                .query_windowed()
                .await
        })
        .map_err(self.call_err("Locked logs"))?;
        Ok(logs
            .into_iter()
            .filter(|(e, _)| e.dstChainId == U256::from(dst))
            .map(|(e, log)| (e, log.transaction_hash, log.block_number))
            .collect())
    }

    fn paid(&self, id: B256) -> Result<bool, GateError> {
        let gate = self.gate();
        block_on(async move { gate.paid(id).call().await }).map_err(self.call_err("paid"))
    }

    fn transfer_id(&self, nonce: u64) -> B256 {
        transfer_id(
            self.addresses.chain_id,
            self.addresses.contracts.gate,
            nonce,
        )
    }
}

/// The Gate's `transferId(srcChainId, srcGate, nonce)`.
pub fn transfer_id(src_chain: u64, src_gate: Address, nonce: u64) -> B256 {
    keccak256((U256::from(src_chain), src_gate, U256::from(nonce)).abi_encode())
}

/// Refuses an amount no Gate would lock (0, over 2^96 - 1) before anything is read or sent.
pub fn check_amount(amount: U256) -> Result<(), ApiError> {
    if amount.is_zero() {
        return Err(ApiError::BadRequest("amount must be above zero".into()));
    }
    if amount > MAX_GATE_AMOUNT {
        return Err(ApiError::BadRequest(format!(
            "amount {amount} SNM wei is over the Gate's cap of {MAX_GATE_AMOUNT} (2^96 - 1)"
        )));
    }
    Ok(())
}

impl Node {
    fn main(&self) -> Result<&MainChain, GateError> {
        self.main_chain().ok_or(GateError::NoMainChain)
    }

    /// The SONM chain (the node's own) as a gate side.
    fn sonm_side(&self) -> Side<'_> {
        let chain = self.chain();
        Side {
            name: "sonm",
            provider: chain.provider(),
            sender: chain.sender(),
            addresses: chain.addresses(),
        }
    }

    /// The node's balances on the main chain, if one is configured.
    pub(crate) fn main_balance(&self) -> Result<Option<MainBalance>, ApiError> {
        match self.main_chain() {
            None => Ok(None),
            Some(main) => Ok(Some(main.side().balance(self.address())?)),
        }
    }

    /// Locks `amount` SNM wei in the main chain's Gate for the node's address on the SONM
    /// chain (approving the Gate first when needed).
    pub fn deposit(&self, amount: U256) -> Result<TransferView, ApiError> {
        let main = self.main()?;
        check_amount(amount)?;
        let _writer = main.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.lock_on(main.side(), self.sonm_side(), Direction::Deposit, amount)
    }

    /// Locks `amount` SNM wei in the SONM chain's Gate for the node's address on the main
    /// chain.
    pub fn withdraw(&self, amount: U256) -> Result<TransferView, ApiError> {
        let main = self.main()?;
        check_amount(amount)?;
        let _writer = self.write_lock();
        self.lock_on(self.sonm_side(), main.side(), Direction::Withdraw, amount)
    }

    fn lock_on(
        &self,
        src: Side<'_>,
        dst: Side<'_>,
        direction: Direction,
        amount: U256,
    ) -> Result<TransferView, ApiError> {
        let me = self.address();
        let have = src.snm_balance(me)?;
        if have < amount {
            return Err(ApiError::Conflict(format!(
                "balance on the {} chain is {have} SNM wei, less than {amount}",
                src.name
            )));
        }
        let dst_chain = dst.addresses.chain_id;
        let (nonce, tx, block) = src.lock(me, amount, dst_chain)?;
        let transfer_id = src.transfer_id(nonce);
        tracing::info!(?direction, nonce, %transfer_id, %amount, "SNM locked in the Gate");
        Ok(TransferView {
            direction,
            src_chain: src.addresses.chain_id,
            dst_chain,
            nonce,
            transfer_id,
            to: me,
            amount,
            tx: Some(tx),
            block,
            paid: false,
        })
    }

    /// The node's locks on both Gates (deposits first, each oldest first), each with whether
    /// the other Gate has paid it.
    pub fn gate_transfers(&self) -> Result<Vec<TransferView>, ApiError> {
        let main = self.main()?;
        let me = self.address();
        let mut out = Vec::new();
        for (src, dst, direction) in [
            (main.side(), self.sonm_side(), Direction::Deposit),
            (self.sonm_side(), main.side(), Direction::Withdraw),
        ] {
            let dst_chain = dst.addresses.chain_id;
            for (e, tx, block) in src.locks_from(me, dst_chain)? {
                let nonce =
                    u64::try_from(e.nonce).map_err(|_| src.err(ChainError::Range("lock nonce")))?;
                let transfer_id = src.transfer_id(nonce);
                out.push(TransferView {
                    direction,
                    src_chain: src.addresses.chain_id,
                    dst_chain,
                    nonce,
                    transfer_id,
                    to: e.to,
                    amount: e.amount,
                    tx,
                    block,
                    paid: dst.paid(transfer_id)?,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_uint96_max() {
        assert_eq!(MAX_GATE_AMOUNT, (U256::from(1) << 96) - U256::from(1));
        assert!(check_amount(MAX_GATE_AMOUNT).is_ok());
        assert!(matches!(
            check_amount(MAX_GATE_AMOUNT + U256::from(1)),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            check_amount(U256::ZERO),
            Err(ApiError::BadRequest(_))
        ));
    }
}
