//! Usage receipts: what a task used, signed by the worker's Ethereum key, checkable by anyone
//! who knows the worker's address (the deal's supplier on chain).
//!
//! The signed message is an EIP-191 personal message (as `personal_sign`) over fixed-width
//! fields:
//!
//! ```text
//! "sonm-worker usage receipt v2\0"   29 bytes: domain tag
//! || worker                          20 bytes
//! || chain_id, deal, task            u64 big-endian each
//! || module_sha256                   32 bytes
//! || fuel_kind                       1 byte: 0 not metered, 1 counted, 2 metered but unknown
//! || fuel                            u64 big-endian (0 unless counted)
//! || wall_time_us                    u64 big-endian
//! || exit_kind (0 code, 1 trap)      1 byte
//! || exit_code                       i32 big-endian (0 for a trap)
//! || outputs_sha256                  32 bytes: see outputs_digest
//! ```
//!
//! v2 (this) added `fuel_kind`: production runs are not fuel-metered (deals are billed per
//! second), so "no fuel" must not read as "zero fuel".

use alloy::primitives::Signature;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sonm_market::{Address, DealId};

use crate::proto::{Exit, File, TaskId, TaskResult};

/// Domain tag at the start of every receipt message.
pub const RECEIPT_DOMAIN: &[u8] = b"sonm-worker usage receipt v2\0";

/// The fuel a task used, as far as the worker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fuel {
    /// The task ran without fuel metering (the worker's default; ask for `fuel_metered`).
    NotMetered,
    /// Deterministic: re-running the module on the same input gives the same count.
    Counted(u64),
    /// Metered, but wall time or a cancel stopped the job before the count was known.
    Unknown,
}

impl Fuel {
    /// The count, when there is one.
    pub fn count(self) -> Option<u64> {
        match self {
            Fuel::Counted(n) => Some(n),
            Fuel::NotMetered | Fuel::Unknown => None,
        }
    }

    fn encode(self) -> (u8, u64) {
        match self {
            Fuel::NotMetered => (0, 0),
            Fuel::Counted(n) => (1, n),
            Fuel::Unknown => (2, 0),
        }
    }
}

/// Also reads a v1 receipt's bare number from the worker's store (v1 always metered fuel and
/// wrote 0 for unknown), so task records of an older worker still load. Such a receipt's
/// signature covers the v1 message and no longer verifies; the customer checked it back then.
impl<'de> Deserialize<'de> for Fuel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum V2 {
            NotMetered,
            Counted(u64),
            Unknown,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            V2(V2),
            V1(u64),
        }
        // Only the store (JSON) can hold v1; postcard on the wire cannot guess (untagged).
        let any = if d.is_human_readable() {
            Any::deserialize(d)?
        } else {
            Any::V2(V2::deserialize(d)?)
        };
        Ok(match any {
            Any::V2(V2::NotMetered) => Fuel::NotMetered,
            Any::V2(V2::Counted(n)) => Fuel::Counted(n),
            Any::V2(V2::Unknown) | Any::V1(0) => Fuel::Unknown,
            Any::V1(n) => Fuel::Counted(n),
        })
    }
}

/// What a task used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReceipt {
    pub worker: Address,
    pub chain_id: u64,
    pub deal: DealId,
    pub task: TaskId,
    pub module_sha256: [u8; 32],
    /// Whether fuel was metered and, if so, the count.
    pub fuel: Fuel,
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
        let mut m = Vec::with_capacity(RECEIPT_DOMAIN.len() + 20 + 24 + 32 + 17 + 5 + 32);
        m.extend_from_slice(RECEIPT_DOMAIN);
        m.extend_from_slice(self.worker.as_slice());
        m.extend_from_slice(&self.chain_id.to_be_bytes());
        m.extend_from_slice(&self.deal.to_be_bytes());
        m.extend_from_slice(&self.task.to_be_bytes());
        m.extend_from_slice(&self.module_sha256);
        let (fuel_kind, fuel) = self.fuel.encode();
        m.push(fuel_kind);
        m.extend_from_slice(&fuel.to_be_bytes());
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
    outputs_digest_of(
        files
            .iter()
            .map(|f| (f.path.as_str(), Sha256::digest(&f.bytes).into())),
    )
}

/// [`outputs_digest`] from each file's path and sha256 (the worker's side: its outputs are
/// hashed on disk, never held in memory).
pub fn outputs_digest_of<'a>(files: impl IntoIterator<Item = (&'a str, [u8; 32])>) -> [u8; 32] {
    let mut sorted: Vec<(&str, [u8; 32])> = files.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (path, sha256) in sorted {
        h.update((path.len() as u64).to_be_bytes());
        h.update(path.as_bytes());
        h.update(sha256);
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
        Exit::Trapped(_) | Exit::Killed(_) => r.trapped,
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
            fuel: Fuel::Counted(123_456),
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
        tampered.receipt.fuel = Fuel::Counted(123_457);
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
    fn the_message_says_whether_fuel_was_metered() {
        let key = PrivateKeySigner::random();
        let kinds = [Fuel::NotMetered, Fuel::Counted(0), Fuel::Unknown];
        let messages: Vec<Vec<u8>> = kinds
            .iter()
            .map(|&fuel| {
                UsageReceipt {
                    fuel,
                    ..receipt(key.address())
                }
                .message()
            })
            .collect();
        // Fixed width, and the domain tag names the version with the fuel kind.
        assert!(
            messages
                .iter()
                .all(|m| m.len() == 29 + 20 + 24 + 32 + 17 + 5 + 32)
        );
        assert!(messages[0].starts_with(b"sonm-worker usage receipt v2\0"));
        assert_ne!(messages[0], messages[1]);
        assert_ne!(messages[1], messages[2]);
        assert_ne!(messages[0], messages[2]);
        // A receipt without fuel cannot be passed off as one that counted zero.
        let signed = UsageReceipt {
            fuel: Fuel::NotMetered,
            ..receipt(key.address())
        }
        .sign(&key)
        .unwrap();
        signed.verify(key.address()).unwrap();
        let mut forged = signed;
        forged.receipt.fuel = Fuel::Counted(0);
        assert!(matches!(
            forged.verify(key.address()),
            Err(ReceiptError::WrongSigner { .. })
        ));
    }

    #[test]
    fn fuel_round_trips_and_reads_v1_records() {
        for fuel in [Fuel::NotMetered, Fuel::Counted(7), Fuel::Unknown] {
            let json = serde_json::to_string(&fuel).unwrap();
            assert_eq!(serde_json::from_str::<Fuel>(&json).unwrap(), fuel, "{json}");
            let wire = postcard::to_allocvec(&fuel).unwrap();
            assert_eq!(postcard::from_bytes::<Fuel>(&wire).unwrap(), fuel);
        }
        assert_eq!(
            serde_json::to_string(&Fuel::NotMetered).unwrap(),
            "\"not_metered\""
        );
        // A v1 worker stored a bare count, 0 for unknown.
        assert_eq!(
            serde_json::from_str::<Fuel>("42").unwrap(),
            Fuel::Counted(42)
        );
        assert_eq!(serde_json::from_str::<Fuel>("0").unwrap(), Fuel::Unknown);
        assert!(serde_json::from_str::<Fuel>("\"lots\"").is_err());
        assert!(serde_json::from_str::<Fuel>("-1").is_err());
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
