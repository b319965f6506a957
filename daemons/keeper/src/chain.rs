//! One chain's edge: reads its Gate's `Locked` and `Paid` events in batches, only from blocks
//! `confirmations` deep (so an event that a reorg may still remove is never seen), notices the
//! owner's changes to the keepers and threshold, asks whether a transfer is paid, and sends
//! `pay` through sonm-contracts' transaction path.

use std::collections::BTreeSet;

use alloy::primitives::{Address, TxHash, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use alloy::transports::TransportError;
use sonm_contracts::{
    Failover, FailoverOptions, Gate, Refusal, RpcError, RpcUrls, TxError, TxSender,
};
use thiserror::Error;

use crate::core::{GateRef, Lock, TransferKey, transfer_id};

#[derive(Debug, Error)]
pub enum ChainError {
    #[error("chain {chain}: {source}")]
    Endpoints {
        chain: u64,
        #[source]
        source: RpcError,
    },
    #[error("chain {chain}: RPC: {source}")]
    Rpc {
        chain: u64,
        #[source]
        source: Box<TransportError>,
    },
    #[error("chain {chain}: gate call {what}: {source}")]
    Call {
        chain: u64,
        what: &'static str,
        #[source]
        source: Box<alloy::contract::Error>,
    },
    #[error("chain {chain}: {source}")]
    Tx {
        chain: u64,
        #[source]
        source: Box<TxError>,
    },
}

impl ChainError {
    /// The gate refused a `pay` for a reason its owner's configuration explains (too few
    /// signatures for its threshold, a signer no longer an unfrozen keeper): worth reading its
    /// configuration again.
    pub fn gate_config_stale(&self) -> bool {
        let ChainError::Tx { source, .. } = self else {
            return false;
        };
        let TxError::Refused { error, .. } = source.as_ref() else {
            return false;
        };
        matches!(
            error.as_ref(),
            Refusal::Gate(
                Gate::GateErrors::NotEnoughSignatures(_)
                    | Gate::GateErrors::KeeperIsFrozen(_)
                    | Gate::GateErrors::NotKeeper(_)
            )
        )
    }

    /// The keeper whose signature the gate refused when `pay` was estimated (frozen, over
    /// its daily limit, or no longer a keeper); nothing was sent then.
    pub fn refused_signer(&self) -> Option<Address> {
        let ChainError::Tx { source, .. } = self else {
            return None;
        };
        let TxError::Refused { error, .. } = source.as_ref() else {
            return None;
        };
        match error.as_ref() {
            Refusal::Gate(Gate::GateErrors::KeeperIsFrozen(e)) => Some(e.keeper),
            Refusal::Gate(Gate::GateErrors::KeeperOverLimit(e)) => Some(e.keeper),
            Refusal::Gate(Gate::GateErrors::NotKeeper(e)) => Some(e.signer),
            _ => None,
        }
    }
}

/// What one step read: blocks `from..=to` (nothing when `to` is `None`: no new confirmed
/// block), with the head it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub head: u64,
    pub to: Option<u64>,
    pub locks: Vec<Lock>,
    /// Transfers from the other chain that this chain's gate paid.
    pub paid: Vec<TransferKey>,
    /// The owner changed the threshold or a keeper (`ThresholdSet`, `KeeperSet`,
    /// `KeeperFrozen`): the gate's configuration must be read again.
    pub gate_changed: bool,
}

/// A chain with its gate, for reading and for paying.
#[derive(Debug, Clone)]
pub struct Chain {
    pub gate: GateRef,
    provider: DynProvider,
    sender: TxSender,
    start_block: u64,
    confirmations: u64,
    batch_blocks: u64,
}

impl Chain {
    /// Connects to the endpoints (checking that each serves `gate.chain_id`).
    pub async fn connect(
        urls: &RpcUrls,
        gate: GateRef,
        start_block: u64,
        confirmations: u64,
        batch_blocks: u64,
        signer: PrivateKeySigner,
    ) -> Result<Self, ChainError> {
        let endpoints = |source| ChainError::Endpoints {
            chain: gate.chain_id,
            source,
        };
        let failover =
            Failover::new(urls, gate.chain_id, FailoverOptions::default()).map_err(endpoints)?;
        failover.probe().await.map_err(endpoints)?;
        let provider = failover.provider();
        Ok(Chain {
            gate,
            sender: TxSender::new(provider.clone(), signer, gate.chain_id),
            provider,
            start_block,
            confirmations,
            batch_blocks: batch_blocks.max(1),
        })
    }

    fn rpc(&self, source: TransportError) -> ChainError {
        ChainError::Rpc {
            chain: self.gate.chain_id,
            source: Box::new(source),
        }
    }

    fn call(&self, what: &'static str) -> impl FnOnce(alloy::contract::Error) -> ChainError {
        let chain = self.gate.chain_id;
        move |source| ChainError::Call {
            chain,
            what,
            source: Box::new(source),
        }
    }

    fn contract(&self) -> Gate::GateInstance<&DynProvider> {
        Gate::new(self.gate.gate, &self.provider)
    }

    /// The gate's signature threshold.
    pub async fn threshold(&self) -> Result<u8, ChainError> {
        self.contract()
            .threshold()
            .call()
            .await
            .map_err(self.call("threshold"))
    }

    /// The gate's threshold now, and which of `candidates` may sign payments by it now. The
    /// latest state, not the confirmed one: it is what the gate checks a `pay` against.
    pub async fn gate_config(
        &self,
        candidates: &[Address],
    ) -> Result<(u8, BTreeSet<Address>), ChainError> {
        let threshold = self.threshold().await?;
        let mut keepers = BTreeSet::new();
        for k in candidates {
            if self.is_keeper(*k).await? {
                keepers.insert(*k);
            }
        }
        Ok((threshold, keepers))
    }

    /// Whether `keeper` may sign payments by this gate now (a keeper, not frozen).
    pub async fn is_keeper(&self, keeper: Address) -> Result<bool, ChainError> {
        let k = self
            .contract()
            .keepers(keeper)
            .call()
            .await
            .map_err(self.call("keepers"))?;
        Ok(!k.dailyLimit.is_zero() && !k.frozen)
    }

    /// Whether this gate paid `nonce` of `src` (at the latest block).
    pub async fn is_paid(&self, src: GateRef, nonce: u64) -> Result<bool, ChainError> {
        self.contract()
            .paid(transfer_id(src, nonce))
            .call()
            .await
            .map_err(self.call("paid"))
    }

    /// Pays `lock` (locked on `src`) with `signatures` (ascending signers).
    pub async fn pay(
        &self,
        lock: &Lock,
        src: GateRef,
        signatures: &[(Address, alloy::primitives::Signature)],
    ) -> Result<TxHash, ChainError> {
        let sigs = signatures
            .iter()
            .map(|(_, s)| Gate::Signature {
                v: s.v_byte(),
                r: s.r().into(),
                s: s.s().into(),
            })
            .collect();
        let gate = self.contract();
        let call = gate.pay(
            U256::from(src.chain_id),
            src.gate,
            U256::from(lock.nonce),
            lock.to,
            lock.amount,
            sigs,
        );
        let receipt = self
            .sender
            .send("pay", call)
            .await
            .map_err(|e| ChainError::Tx {
                chain: self.gate.chain_id,
                source: Box::new(e),
            })?;
        Ok(receipt.transaction_hash)
    }

    /// Reads the next batch after `checkpoint` (the last block read; `None` at first,
    /// reading from the deployment's block). `other` is the gate at the other end.
    pub async fn step(&self, checkpoint: Option<u64>, other: GateRef) -> Result<Batch, ChainError> {
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| self.rpc(e))?;
        let from = checkpoint.map_or(self.start_block, |c| c + 1);
        let safe = head.saturating_sub(self.confirmations);
        let mut batch = Batch {
            head,
            ..Batch::default()
        };
        if from > safe || head < self.confirmations {
            return Ok(batch);
        }
        let to = safe.min(from.saturating_add(self.batch_blocks - 1));
        let filter = Filter::new()
            .address(self.gate.gate)
            .event_signature(vec![
                Gate::Locked::SIGNATURE_HASH,
                Gate::Paid::SIGNATURE_HASH,
                Gate::ThresholdSet::SIGNATURE_HASH,
                Gate::KeeperSet::SIGNATURE_HASH,
                Gate::KeeperFrozen::SIGNATURE_HASH,
            ])
            .from_block(from)
            .to_block(to);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| self.rpc(e))?;
        for log in logs {
            if log.removed || log.address() != self.gate.gate {
                continue;
            }
            let Some(block) = log.block_number.filter(|b| (from..=to).contains(b)) else {
                tracing::warn!(
                    chain = self.gate.chain_id,
                    "a log outside the range asked for"
                );
                continue;
            };
            if [
                Gate::ThresholdSet::SIGNATURE_HASH,
                Gate::KeeperSet::SIGNATURE_HASH,
                Gate::KeeperFrozen::SIGNATURE_HASH,
            ]
            .contains(&log.topic0().copied().unwrap_or_default())
            {
                batch.gate_changed = true;
            } else if let Ok(l) = log.log_decode::<Gate::Locked>() {
                let e = l.inner.data;
                let (Ok(nonce), Ok(dst_chain)) =
                    (u64::try_from(e.nonce), u64::try_from(e.dstChainId))
                else {
                    tracing::warn!(chain = self.gate.chain_id, nonce = %e.nonce, "lock with an out-of-range nonce or chain id ignored");
                    continue;
                };
                batch.locks.push(Lock {
                    src_chain: self.gate.chain_id,
                    nonce,
                    to: e.to,
                    amount: e.amount,
                    dst_chain,
                    block,
                });
            } else if let Ok(p) = log.log_decode::<Gate::Paid>() {
                let e = p.inner.data;
                if e.srcGate != other.gate || e.srcChainId != U256::from(other.chain_id) {
                    continue;
                }
                if let Ok(nonce) = u64::try_from(e.nonce) {
                    batch.paid.push(TransferKey {
                        src_chain: other.chain_id,
                        nonce,
                    });
                }
            }
        }
        batch.to = Some(to);
        Ok(batch)
    }
}
