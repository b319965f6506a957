//! The keeper's decisions, free of I/O: what it has observed (locks and their blocks, the
//! chains' heads, paid transfers, signatures) and the time go in; what to do goes out
//! ([`Action`]). The daemon feeds it from its followers, its store and its peers, and
//! carries the actions out.
//!
//! Rules, each checked by the property tests:
//! - a transfer is signed only once its lock is `confirmations` blocks deep on the source
//!   chain (as seen by this keeper's own follower: the only way a lock gets in);
//! - a peer's signature counts only after its signer is recovered here and is a keeper of
//!   the destination gate (low s and v of 27/28, as `Gate.pay` demands);
//! - a submission carries `threshold` signatures in ascending signer order and is never
//!   made for a transfer known to be paid;
//! - keepers take turns: the keeper of rank r for a transfer (the keepers rotated by the
//!   nonce) submits r × `turn_delay` after it holds enough signatures, so normally one
//!   keeper pays and a stopped one only delays the next by one turn.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, B256, Signature, U256, keccak256};
use alloy::sol_types::{SolStruct, SolValue, eip712_domain};
use serde::{Deserialize, Serialize};
use sonm_contracts::SignatureError;

/// secp256k1 n / 2: `Gate.pay` refuses a signature with a larger s (the malleable twin).
pub use sonm_contracts::HALF_N;

/// The largest amount a gate accepts (keepers' limits are 96-bit).
pub const MAX_AMOUNT: U256 = U256::from_limbs([u64::MAX, (1 << 32) - 1, 0, 0]);

#[allow(missing_docs, unreachable_pub)]
mod eip712 {
    alloy::sol! {
        /// The message keepers sign (Gate.sol's `TRANSFER_TYPEHASH`).
        #[derive(Debug)]
        struct Transfer {
            uint256 srcChainId;
            address srcGate;
            uint256 nonce;
            address to;
            uint256 amount;
        }
    }
}

/// A chain and its Gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRef {
    pub chain_id: u64,
    pub gate: Address,
}

/// A transfer: the source chain and the source gate's lock nonce (the destination is the
/// other chain, and the source gate is fixed per chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TransferKey {
    pub src_chain: u64,
    pub nonce: u64,
}

/// A `Locked` event as this keeper's follower read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub src_chain: u64,
    pub nonce: u64,
    pub to: Address,
    pub amount: U256,
    pub dst_chain: u64,
    /// The block that holds the event.
    pub block: u64,
}

impl Lock {
    pub fn key(&self) -> TransferKey {
        TransferKey {
            src_chain: self.src_chain,
            nonce: self.nonce,
        }
    }
}

/// The digest keepers sign for paying `nonce` of `src` on `dst` (Gate.sol's
/// `transferDigest`, computed by the destination gate).
pub fn transfer_digest(src: GateRef, dst: GateRef, nonce: u64, to: Address, amount: U256) -> B256 {
    let domain = eip712_domain! {
        name: "SONM Gate",
        version: "1",
        chain_id: dst.chain_id,
        verifying_contract: dst.gate,
    };
    eip712::Transfer {
        srcChainId: U256::from(src.chain_id),
        srcGate: src.gate,
        nonce: U256::from(nonce),
        to,
        amount,
    }
    .eip712_signing_hash(&domain)
}

/// Gate.sol's `transferId`: what its `paid` mapping is keyed by.
pub fn transfer_id(src: GateRef, nonce: u64) -> B256 {
    keccak256((U256::from(src.chain_id), src.gate, U256::from(nonce)).abi_encode())
}

/// One chain's side of the keeper: its gate, who may sign payments *on* it, how many must,
/// and how deep a lock *on* it must be before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainParams {
    pub gate: GateRef,
    pub keepers: BTreeSet<Address>,
    pub threshold: usize,
    pub confirmations: u64,
}

/// The keeper's fixed parameters. Times are milliseconds on the caller's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// This keeper's address.
    pub me: Address,
    /// Every configured keeper, the same list at every keeper: the turn order is taken from
    /// it, not from a chain's keepers as this keeper saw them at start (keepers started at
    /// different times may see different sets, and would then compute clashing turns).
    pub turns: BTreeSet<Address>,
    /// The two chains (the main chain and the SONM chain, in either order).
    pub chains: [ChainParams; 2],
    /// The wait between one keeper's turn to submit and the next one's.
    pub turn_delay_ms: u64,
    /// The least time between two fetches of peers' signatures for one transfer.
    pub fetch_interval_ms: u64,
    /// The least time between two submissions of one transfer by this keeper.
    pub resubmit_ms: u64,
    /// How long a signer the gate refused (frozen, over its daily limit, removed) is left out
    /// of this keeper's submissions to that gate.
    pub refused_ms: u64,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sign `digest` with the keeper key, persist the signature (from where it is served
    /// to peers), then report it with [`Keeper::signed`].
    Sign { key: TransferKey, digest: B256 },
    /// Ask the peers for their signatures of the transfer and report each answer with
    /// [`Keeper::peer_signature`].
    Fetch { key: TransferKey },
    /// Check that the transfer is unpaid, then call `pay` on the destination gate with
    /// these signatures (ascending signers); report with [`Keeper::paid`] once paid.
    Submit {
        lock: Lock,
        src: GateRef,
        dst: GateRef,
        signatures: Vec<(Address, Signature)>,
    },
}

/// What became of an observed lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    New,
    Known,
    /// The same transfer with other contents than before: kept as first seen (as the store
    /// keeps it; it may have been signed already). A reorg deeper than the confirmations, or
    /// a lying RPC endpoint: worth an operator's look.
    Conflict,
    /// Not a transfer between our two chains, or one the gate could never pay.
    Ignored(&'static str),
}

/// Why a signature was not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigRejected {
    #[error("no such transfer is known (yet)")]
    UnknownTransfer,
    #[error("the transfer is paid already")]
    Paid,
    #[error("not a 65-byte signature with v of 27 or 28")]
    Malformed,
    #[error("s is in the upper half of the curve order")]
    HighS,
    #[error("no signer can be recovered")]
    Unrecoverable,
    #[error("the signer {0} is not a keeper of the destination gate")]
    NotKeeper(Address),
    #[error("the signature is {0}'s, not this keeper's own")]
    NotMine(Address),
}

#[derive(Clone, Debug)]
struct Entry {
    lock: Lock,
    /// Valid signatures by keepers of the destination gate, own included.
    signatures: BTreeMap<Address, Signature>,
    signed: bool,
    /// Since when this keeper has held `threshold` usable signatures.
    ready_since: Option<u64>,
    next_fetch: u64,
    next_submit: u64,
}

/// The keeper's state machine.
#[derive(Clone, Debug)]
pub struct Keeper {
    params: Params,
    heads: [Option<u64>; 2],
    /// Per destination side: signers its gate refused, and until when they are left out.
    refused: [BTreeMap<Address, u64>; 2],
    /// Transfers not known to be paid.
    pending: BTreeMap<TransferKey, Entry>,
    paid: BTreeSet<TransferKey>,
}

impl Keeper {
    pub fn new(params: Params) -> Self {
        Keeper {
            params,
            heads: [None; 2],
            refused: [BTreeMap::new(), BTreeMap::new()],
            pending: BTreeMap::new(),
            paid: BTreeSet::new(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    fn side(&self, chain_id: u64) -> Option<usize> {
        self.params
            .chains
            .iter()
            .position(|c| c.gate.chain_id == chain_id)
    }

    /// The source and destination chains of `key`.
    fn route(&self, key: TransferKey) -> Option<(&ChainParams, &ChainParams)> {
        let s = self.side(key.src_chain)?;
        Some((&self.params.chains[s], &self.params.chains[1 - s]))
    }

    /// The digest of `lock` for its destination gate.
    pub fn digest(&self, lock: &Lock) -> Option<B256> {
        let (src, dst) = self.route(lock.key())?;
        Some(transfer_digest(
            src.gate,
            dst.gate,
            lock.nonce,
            lock.to,
            lock.amount,
        ))
    }

    /// The newest head of `chain_id` (the follower's view).
    pub fn head(&mut self, chain_id: u64, head: u64) {
        if let Some(s) = self.side(chain_id) {
            self.heads[s] = Some(head);
        }
    }

    /// A `Locked` event read from the source chain.
    pub fn locked(&mut self, lock: Lock) -> Observed {
        let Some((_, dst)) = self.route(lock.key()) else {
            return Observed::Ignored("locked on a chain this keeper does not serve");
        };
        if lock.dst_chain != dst.gate.chain_id {
            return Observed::Ignored("for a destination chain this keeper does not serve");
        }
        if lock.to == Address::ZERO || lock.amount.is_zero() || lock.amount > MAX_AMOUNT {
            return Observed::Ignored("a recipient or amount the gate refuses");
        }
        let key = lock.key();
        if self.paid.contains(&key) {
            return Observed::Known;
        }
        match self.pending.get(&key) {
            Some(e) if e.lock == lock => Observed::Known,
            Some(_) => Observed::Conflict,
            None => {
                self.pending.insert(
                    key,
                    Entry {
                        lock,
                        signatures: BTreeMap::new(),
                        signed: false,
                        ready_since: None,
                        next_fetch: 0,
                        next_submit: 0,
                    },
                );
                Observed::New
            }
        }
    }

    /// The transfer is paid on its destination (a `Paid` event, the `paid` view, or our
    /// own receipt). Final: nothing is done for it any more.
    pub fn paid(&mut self, key: TransferKey) {
        self.pending.remove(&key);
        self.paid.insert(key);
    }

    pub fn is_paid(&self, key: TransferKey) -> bool {
        self.paid.contains(&key)
    }

    /// The gate on `dst_chain` refused `signer`'s signature (frozen, over its daily limit, no
    /// longer a keeper): leave it out of submissions there for a while, and let the transfers
    /// waiting on it go again at once with other signatures (the refused call sent nothing).
    pub fn signer_refused(&mut self, dst_chain: u64, signer: Address, now: u64) {
        let Some(d) = self.side(dst_chain) else {
            return;
        };
        self.refused[d].insert(signer, now.saturating_add(self.params.refused_ms));
        for e in self.pending.values_mut() {
            if e.lock.dst_chain == dst_chain && e.signatures.contains_key(&signer) {
                e.next_submit = now;
            }
        }
    }

    /// The gate on `chain_id` now wants `threshold` signatures from among `keepers` (the
    /// configured keepers it lists, unfrozen), read from the chain after its owner changed
    /// them. Signatures already held are kept (a keeper re-listed signs nothing twice) but only
    /// current keepers' are submitted; a transfer short of the new threshold fetches again.
    pub fn gate_config(&mut self, chain_id: u64, threshold: usize, keepers: BTreeSet<Address>) {
        let Some(side) = self.side(chain_id) else {
            return;
        };
        let chain = &mut self.params.chains[side];
        chain.threshold = threshold;
        chain.keepers = keepers;
    }

    /// This keeper's own signature, once persisted. Checked like any other.
    pub fn signed(&mut self, key: TransferKey, signature: &[u8]) -> Result<(), SigRejected> {
        let signer = self.accept(key, signature, true)?;
        if let Some(e) = self.pending.get_mut(&key) {
            e.signed = signer == self.params.me;
        }
        Ok(())
    }

    /// A signature a peer served for `key`: used only if it recovers, for the lock as this
    /// keeper read it, to a keeper of the destination gate.
    pub fn peer_signature(
        &mut self,
        key: TransferKey,
        signature: &[u8],
    ) -> Result<Address, SigRejected> {
        self.accept(key, signature, false)
    }

    fn accept(
        &mut self,
        key: TransferKey,
        bytes: &[u8],
        own: bool,
    ) -> Result<Address, SigRejected> {
        if self.paid.contains(&key) {
            return Err(SigRejected::Paid);
        }
        let entry = self.pending.get(&key).ok_or(SigRejected::UnknownTransfer)?;
        let digest = self
            .digest(&entry.lock)
            .ok_or(SigRejected::UnknownTransfer)?;
        let signer = recover(&digest, bytes)?;
        let (_, dst) = self.route(key).ok_or(SigRejected::UnknownTransfer)?;
        if !dst.keepers.contains(&signer) {
            return Err(SigRejected::NotKeeper(signer));
        }
        if own && signer != self.params.me {
            return Err(SigRejected::NotMine(signer));
        }
        let signature = Signature::from_raw(bytes).map_err(|_| SigRejected::Malformed)?;
        if let Some(e) = self.pending.get_mut(&key) {
            e.signatures.insert(signer, signature);
        }
        Ok(signer)
    }

    /// Transfers not yet paid, as far as this keeper knows.
    pub fn pending(&self) -> impl Iterator<Item = &Lock> {
        self.pending.values().map(|e| &e.lock)
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let me = self.params.me;
        let p = &self.params;
        for (key, e) in &mut self.pending {
            let Some(s) = p
                .chains
                .iter()
                .position(|c| c.gate.chain_id == key.src_chain)
            else {
                continue;
            };
            let (src, dst) = (&p.chains[s], &p.chains[1 - s]);
            let confirmed = self.heads[s]
                .and_then(|h| h.checked_sub(e.lock.block))
                .is_some_and(|depth| depth >= src.confirmations);
            if !confirmed {
                continue;
            }
            if !e.signed && dst.keepers.contains(&me) {
                actions.push(Action::Sign {
                    key: *key,
                    digest: transfer_digest(
                        src.gate,
                        dst.gate,
                        key.nonce,
                        e.lock.to,
                        e.lock.amount,
                    ),
                });
            }
            let threshold = dst.threshold.max(1);
            let refused = &self.refused[1 - s];
            let usable: Vec<(Address, Signature)> = e
                .signatures
                .iter()
                .filter(|(a, _)| {
                    dst.keepers.contains(*a) && refused.get(*a).is_none_or(|until| now >= *until)
                })
                .map(|(a, s)| (*a, *s))
                .collect();
            if usable.len() < threshold {
                // Turns count from when a keeper is ready again: keepers that all lost a
                // signer to a refusal and then all get a new one keep their stagger.
                e.ready_since = None;
                if now >= e.next_fetch {
                    e.next_fetch = now.saturating_add(p.fetch_interval_ms);
                    actions.push(Action::Fetch { key: *key });
                }
                continue;
            }
            let since = *e.ready_since.get_or_insert(now);
            let turn = since.saturating_add(rank(&p.turns, me, key.nonce) * p.turn_delay_ms);
            if now >= turn && now >= e.next_submit {
                e.next_submit = now.saturating_add(p.resubmit_ms);
                actions.push(Action::Submit {
                    lock: e.lock.clone(),
                    src: src.gate,
                    dst: dst.gate,
                    // A BTreeMap iterates in ascending address order, the order pay demands.
                    signatures: usable.into_iter().take(threshold).collect(),
                });
            }
        }
        actions
    }
}

/// The keeper's place in the submission order for `nonce`: the sorted keepers rotated by
/// the nonce, so that the first turn moves round. A non-keeper comes last.
pub fn rank(keepers: &BTreeSet<Address>, me: Address, nonce: u64) -> u64 {
    let n = keepers.len() as u64;
    match keepers.iter().position(|k| *k == me) {
        Some(i) => (i as u64 + n - nonce % n) % n,
        None => n,
    }
}

/// The signer of `digest`, under `Gate.pay`'s rules for a signature.
pub fn recover(digest: &B256, bytes: &[u8]) -> Result<Address, SigRejected> {
    sonm_contracts::recover_signature(digest, bytes).map_err(|e| match e {
        SignatureError::HighS => SigRejected::HighS,
        SignatureError::Unrecoverable => SigRejected::Unrecoverable,
        SignatureError::Length(_) | SignatureError::V(_) => SigRejected::Malformed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_rotate_with_the_nonce_and_are_a_permutation() {
        let keepers: BTreeSet<Address> = (1..=3u8).map(Address::repeat_byte).collect();
        for nonce in 0..6 {
            let mut ranks: Vec<u64> = keepers.iter().map(|k| rank(&keepers, *k, nonce)).collect();
            ranks.sort();
            assert_eq!(ranks, [0, 1, 2]);
        }
        let first = Address::repeat_byte(1);
        assert_eq!(rank(&keepers, first, 0), 0);
        assert_eq!(rank(&keepers, first, 1), 2);
        assert_eq!(rank(&keepers, Address::repeat_byte(9), 0), 3);
    }

    #[test]
    fn max_amount_is_the_largest_uint96() {
        assert_eq!(MAX_AMOUNT, (U256::from(1) << 96) - U256::from(1));
    }
}
