//! Usage receipts: what a task used, signed by the worker's Ethereum key, checkable by anyone
//! who knows the worker's address (the deal's supplier on chain).
//!
//! The signed message is an EIP-191 personal message (as `personal_sign`) over fixed-width
//! fields:
//!
//! ```text
//! "sonm-worker usage receipt v1\0"   29 bytes: domain tag
//! || worker                          20 bytes
//! || chain_id, deal, task            u64 big-endian each
//! || module_sha256                   32 bytes
//! || fuel, wall_time_us              u64 big-endian each
//! || exit_kind (0 code, 1 trap)      1 byte
//! || exit_code                       i32 big-endian (0 for a trap)
//! || outputs_sha256                  32 bytes: see outputs_digest
//! ```

use alloy::primitives::Signature;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sonm_market::{Address, DealId};

use crate::proto::{Exit, File, TaskId, TaskResult};

/// Domain tag at the start of every receipt message.
pub const RECEIPT_DOMAIN: &[u8] = b"sonm-worker usage receipt v1\0";

/// What a task used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReceipt {
    pub worker: Address,
    pub chain_id: u64,
    pub deal: DealId,
    pub task: TaskId,
    pub module_sha256: [u8; 32],
    /// Deterministic: re-running the module on the same input gives the same count.
    /// 0 when wall time or a cancel stopped the job (`trapped`): the count is unknown then.
    pub fuel: u64,
    pub wall_time_us: u64,
    /// False: the job exited with `exit_code`; true: the runtime stopped it (`exit_code` is 0).
    pub trapped: bool,
    pub exit_code: i32,
    pub outputs_sha256: [u8; 32],
}

/// A receipt and the worker's 65-byte signature (r || s || v).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: UsageReceipt,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("signature is malformed: {0}")]
    Malformed(String),
    #[error("receipt is signed by {signer}, not by the worker {expected}")]
    WrongSigner { expected: Address, signer: Address },
    #[error("receipt names worker {claimed}, expected {expected}")]
    WrongWorker { expected: Address, claimed: Address },
    #[error(
        "receipt is for deal {receipt}/task {receipt_task}, the result for deal {deal}/task {task}"
    )]
    WrongTask {
        receipt: DealId,
        receipt_task: TaskId,
        deal: DealId,
        task: TaskId,
    },
    #[error("the outputs received do not hash to the receipt's outputs_sha256")]
    OutputsMismatch,
    #[error("the exit status received differs from the receipt's")]
    ExitMismatch,
}

impl UsageReceipt {
    /// The exact bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(RECEIPT_DOMAIN.len() + 20 + 24 + 32 + 16 + 5 + 32);
        m.extend_from_slice(RECEIPT_DOMAIN);
        m.extend_from_slice(self.worker.as_slice());
        m.extend_from_slice(&self.chain_id.to_be_bytes());
        m.extend_from_slice(&self.deal.to_be_bytes());
        m.extend_from_slice(&self.task.to_be_bytes());
        m.extend_from_slice(&self.module_sha256);
        m.extend_from_slice(&self.fuel.to_be_bytes());
        m.extend_from_slice(&self.wall_time_us.to_be_bytes());
        m.push(u8::from(self.trapped));
        m.extend_from_slice(&self.exit_code.to_be_bytes());
        m.extend_from_slice(&self.outputs_sha256);
        m
    }

    /// Signs with the worker's key (whose address must be `self.worker`).
    pub fn sign(self, key: &PrivateKeySigner) -> Result<SignedReceipt, ReceiptError> {
        let signature = key
            .sign_message_sync(&self.message())
            .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        Ok(SignedReceipt {
            receipt: self,
            signature: signature.as_bytes().to_vec(),
        })
    }

    /// The exit status as the receipt encodes it.
    pub fn exit(&self) -> Exit {
        if self.trapped {
            Exit::Trapped(String::new())
        } else {
            Exit::Code(self.exit_code)
        }
    }
}

impl SignedReceipt {
    /// The address that signed it.
    pub fn signer(&self) -> Result<Address, ReceiptError> {
        let sig = Signature::from_raw(&self.signature)
            .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        sig.recover_address_from_msg(self.receipt.message())
            .map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// Checks that `worker` signed this receipt and that it names `worker`.
    pub fn verify(&self, worker: Address) -> Result<(), ReceiptError> {
        if self.receipt.worker != worker {
            return Err(ReceiptError::WrongWorker {
                expected: worker,
                claimed: self.receipt.worker,
            });
        }
        let signer = self.signer()?;
        if signer != worker {
            return Err(ReceiptError::WrongSigner {
                expected: worker,
                signer,
            });
        }
        Ok(())
    }
}

/// sha256 over the output files in path order: for each, the path's length (u64 BE), the path,
/// and the sha256 of its bytes. Order-independent input, one digest for the whole set.
pub fn outputs_digest(files: &[File]) -> [u8; 32] {
    let mut sorted: Vec<&File> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for f in sorted {
        h.update((f.path.len() as u64).to_be_bytes());
        h.update(f.path.as_bytes());
        h.update(Sha256::digest(&f.bytes));
    }
    h.finalize().into()
}

/// What a customer runs on a result: the receipt is the worker's, for this deal and task, and
/// matches the exit status and the output files actually received.
pub fn verify_result(result: &TaskResult, worker: Address) -> Result<(), ReceiptError> {
    let r = &result.receipt.receipt;
    result.receipt.verify(worker)?;
    if r.deal != result.deal || r.task != result.task {
        return Err(ReceiptError::WrongTask {
            receipt: r.deal,
            receipt_task: r.task,
            deal: result.deal,
            task: result.task,
        });
    }
    let exit_matches = match &result.exit {
        Exit::Code(c) => !r.trapped && r.exit_code == *c,
        Exit::Trapped(_) => r.trapped,
    };
    if !exit_matches {
        return Err(ReceiptError::ExitMismatch);
    }
    if outputs_digest(&result.outputs) != r.outputs_sha256 {
        return Err(ReceiptError::OutputsMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(worker: Address) -> UsageReceipt {
        UsageReceipt {
            worker,
            chain_id: 31337,
            deal: 7,
            task: 3,
            module_sha256: [1; 32],
            fuel: 123_456,
            wall_time_us: 789,
            trapped: false,
            exit_code: 0,
            outputs_sha256: outputs_digest(&[]),
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = PrivateKeySigner::random();
        let signed = receipt(key.address()).sign(&key).unwrap();
        signed.verify(key.address()).unwrap();
        // Every field is covered by the signature.
        let mut tampered = signed.clone();
        tampered.receipt.fuel += 1;
        assert!(matches!(
            tampered.verify(key.address()),
            Err(ReceiptError::WrongSigner { .. })
        ));
        let mut tampered = signed.clone();
        tampered.receipt.outputs_sha256[0] ^= 1;
        assert!(tampered.verify(key.address()).is_err());
        // Signed by someone else claiming the worker.
        let other = PrivateKeySigner::random();
        let forged = receipt(key.address()).sign(&other).unwrap();
        assert_eq!(
            forged.verify(key.address()),
            Err(ReceiptError::WrongSigner {
                expected: key.address(),
                signer: other.address()
            })
        );
        let mut garbage = signed;
        garbage.signature.truncate(10);
        assert!(matches!(
            garbage.verify(key.address()),
            Err(ReceiptError::Malformed(_))
        ));
    }

    #[test]
    fn outputs_digest_ignores_order_and_sees_content() {
        let a = File {
            path: "a".into(),
            bytes: b"1".to_vec(),
        };
        let b = File {
            path: "b".into(),
            bytes: b"2".to_vec(),
        };
        assert_eq!(
            outputs_digest(&[a.clone(), b.clone()]),
            outputs_digest(&[b.clone(), a.clone()])
        );
        let b2 = File {
            path: "b".into(),
            bytes: b"3".to_vec(),
        };
        assert_ne!(outputs_digest(&[a.clone(), b]), outputs_digest(&[a, b2]));
    }
}
