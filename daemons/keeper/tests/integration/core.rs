//! Property tests of the keeper's core, with real keys and real signatures: random sequences
//! of observations (heads, locks, paid marks, peers' signatures, genuine, forged or garbage)
//! and time, with the invariants checked after every poll.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, Signature, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use proptest::prelude::*;
use sonm_contracts::anvil::DEV_KEYS;
use sonm_keeper::core::{
    Action, ChainParams, GateRef, HALF_N, Keeper, Lock, Params, TransferKey, recover,
    transfer_digest,
};

const A: GateRef = GateRef {
    chain_id: 101,
    gate: Address::repeat_byte(0xaa),
};
const B: GateRef = GateRef {
    chain_id: 202,
    gate: Address::repeat_byte(0xbb),
};
const THRESHOLD: usize = 2;

/// secp256k1's group order.
const N: U256 = U256::from_be_bytes(alloy::primitives::hex!(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
));

/// Three keepers (anvil's dev keys 1..=3) and an outsider (key 0).
fn keys() -> (Vec<PrivateKeySigner>, PrivateKeySigner) {
    let keepers = DEV_KEYS[1..4].iter().map(|k| k.parse().unwrap()).collect();
    (keepers, DEV_KEYS[0].parse().unwrap())
}

fn params(me: Address, keepers: &BTreeSet<Address>, confirmations: u64) -> Params {
    let chain = |gate| ChainParams {
        gate,
        keepers: keepers.clone(),
        threshold: THRESHOLD,
        confirmations,
    };
    Params {
        me,
        turns: keepers.clone(),
        chains: [chain(A), chain(B)],
        turn_delay_ms: 1000,
        fetch_interval_ms: 300,
        resubmit_ms: 5000,
        refused_ms: 4000,
    }
}

fn gates(src_chain: u64) -> (GateRef, GateRef) {
    if src_chain == A.chain_id {
        (A, B)
    } else {
        (B, A)
    }
}

fn digest_of(lock: &Lock) -> alloy::primitives::B256 {
    let (src, dst) = gates(lock.src_chain);
    transfer_digest(src, dst, lock.nonce, lock.to, lock.amount)
}

fn sign(signer: &PrivateKeySigner, lock: &Lock) -> [u8; 65] {
    signer.sign_hash_sync(&digest_of(lock)).unwrap().as_bytes()
}

#[derive(Clone, Debug)]
enum Op {
    Head {
        b: bool,
        head: u64,
    },
    Lock {
        b: bool,
        nonce: u64,
        block: u64,
        to: u8,
        amount: u64,
        wrong_dst: bool,
    },
    Paid {
        b: bool,
        nonce: u64,
    },
    /// A peer's answer: `who` 0..3 a keeper, 3 the outsider; `how` 0 genuine, 1 over another
    /// amount, 2 the high-s twin, 3 garbage, 4 v as 0/1.
    PeerSig {
        b: bool,
        nonce: u64,
        who: usize,
        how: u8,
        junk: Vec<u8>,
    },
    Tick {
        ms: u64,
    },
    /// The gate on chain `b` refused keeper `who`'s signature.
    Refused {
        b: bool,
        who: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Few transfers, mostly consistent locks and genuine signatures, so that many runs get as
    // far as submitting; the rest is noise the core must survive.
    let how =
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8), 1 => Just(4u8)];
    prop_oneof![
        3 => (any::<bool>(), 0u64..30).prop_map(|(b, head)| Op::Head { b, head }),
        3 => (any::<bool>(), 1u64..3, 0u64..25, prop::bool::weighted(0.1), prop::bool::weighted(0.05)).prop_map(
            |(b, nonce, block, odd, wrong_dst)| Op::Lock {
                b,
                nonce,
                block,
                to: if odd { 2 } else { 1 },
                amount: nonce * 10,
                wrong_dst,
            }
        ),
        1 => (any::<bool>(), 1u64..3).prop_map(|(b, nonce)| Op::Paid { b, nonce }),
        6 => (any::<bool>(), 1u64..3, 0usize..4, how, prop::collection::vec(any::<u8>(), 0..70)).prop_map(
            |(b, nonce, who, how, junk)| Op::PeerSig { b, nonce, who, how, junk }
        ),
        3 => (0u64..3000).prop_map(|ms| Op::Tick { ms }),
        1 => (any::<bool>(), 0usize..3).prop_map(|(b, who)| Op::Refused { b, who }),
    ]
}

fn chain_of(b: bool) -> GateRef {
    if b { B } else { A }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever it observes, a keeper signs only confirmed locks, never submits a paid
    /// transfer, and submits only `threshold` valid keeper signatures in ascending order.
    /// Nor does it use a signer the destination gate refused, while the refusal stands.
    /// (About 40% of the generated runs submit at least once, as measured when tuning `op`.)
    #[test]
    fn submissions_are_valid_and_never_for_a_paid_transfer(
        me in 0usize..3,
        confirmations in 0u64..4,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let (signers, outsider) = keys();
        let keepers: BTreeSet<Address> = signers.iter().map(|s| s.address()).collect();
        let mut keeper = Keeper::new(params(signers[me].address(), &keepers, confirmations));
        let mut heads: BTreeMap<u64, u64> = BTreeMap::new();
        // Every lock fed, per transfer (the core keeps one of them).
        let mut fed: BTreeMap<TransferKey, Vec<Lock>> = BTreeMap::new();
        let mut paid: BTreeSet<TransferKey> = BTreeSet::new();
        let mut now = 0u64;
        // (destination chain, signer) -> until when the gate's refusal stands.
        let mut refused: BTreeMap<(u64, Address), u64> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Head { b, head } => {
                    heads.insert(chain_of(b).chain_id, head);
                    keeper.head(chain_of(b).chain_id, head);
                }
                Op::Lock { b, nonce, block, to, amount, wrong_dst } => {
                    let (src, dst) = gates(chain_of(b).chain_id);
                    let lock = Lock {
                        src_chain: src.chain_id,
                        nonce,
                        to: Address::repeat_byte(to),
                        amount: U256::from(amount),
                        dst_chain: if wrong_dst { 999 } else { dst.chain_id },
                        block,
                    };
                    fed.entry(lock.key()).or_default().push(lock.clone());
                    keeper.locked(lock);
                }
                Op::Paid { b, nonce } => {
                    let key = TransferKey { src_chain: chain_of(b).chain_id, nonce };
                    paid.insert(key);
                    keeper.paid(key);
                }
                Op::PeerSig { b, nonce, who, how, junk } => {
                    let key = TransferKey { src_chain: chain_of(b).chain_id, nonce };
                    let signer = if who < 3 { &signers[who] } else { &outsider };
                    let lock = fed.get(&key).and_then(|l| l.last().cloned()).unwrap_or(Lock {
                        src_chain: key.src_chain,
                        nonce,
                        to: Address::repeat_byte(1),
                        amount: U256::from(1),
                        dst_chain: gates(key.src_chain).1.chain_id,
                        block: 0,
                    });
                    let bytes: Vec<u8> = match how {
                        0 => sign(signer, &lock).to_vec(),
                        1 => sign(signer, &Lock { amount: lock.amount + U256::from(1), ..lock }).to_vec(),
                        2 => {
                            let s = Signature::from_raw(&sign(signer, &lock)).unwrap();
                            Signature::new(s.r(), N - s.s(), !s.v()).as_bytes().to_vec()
                        }
                        3 => junk,
                        _ => {
                            let mut raw = sign(signer, &lock);
                            raw[64] -= 27;
                            raw.to_vec()
                        }
                    };
                    if let Ok(used) = keeper.peer_signature(key, &bytes) {
                        prop_assert!(keepers.contains(&used), "used a non-keeper's signature");
                        prop_assert!(how == 0 || how == 1, "used a malformed signature");
                    }
                }
                Op::Tick { ms } => now += ms,
                Op::Refused { b, who } => {
                    let (chain, signer) = (chain_of(b).chain_id, signers[who].address());
                    refused.insert((chain, signer), now + 4000);
                    keeper.signer_refused(chain, signer, now);
                }
            }
            for action in keeper.poll(now) {
                match action {
                    Action::Sign { key, digest } => {
                        prop_assert!(!paid.contains(&key), "signed a paid transfer");
                        let head = heads.get(&key.src_chain).copied();
                        let ok = fed.get(&key).into_iter().flatten().any(|l| {
                            digest_of(l) == digest
                                && head.is_some_and(|h| h >= l.block + confirmations)
                        });
                        prop_assert!(ok, "signed {key:?} before its lock was confirmed");
                        let sig = signers[me].sign_hash_sync(&digest).unwrap().as_bytes();
                        keeper.signed(key, &sig).unwrap();
                    }
                    Action::Fetch { key } => prop_assert!(!paid.contains(&key)),
                    Action::Submit { lock, src, dst, signatures } => {
                        let key = lock.key();
                        prop_assert!(!paid.contains(&key), "submitted a paid transfer");
                        prop_assert_eq!((src, dst), gates(key.src_chain));
                        prop_assert_eq!(lock.dst_chain, dst.chain_id);
                        prop_assert!(fed[&key].contains(&lock));
                        let head = heads[&key.src_chain];
                        prop_assert!(head >= lock.block + confirmations);
                        prop_assert_eq!(signatures.len(), THRESHOLD);
                        let digest = digest_of(&lock);
                        let mut last = Address::ZERO;
                        for (signer, sig) in &signatures {
                            prop_assert!(*signer > last, "signers not ascending");
                            last = *signer;
                            prop_assert!(keepers.contains(signer));
                            prop_assert!(
                                refused.get(&(dst.chain_id, *signer)).is_none_or(|until| now >= *until),
                                "used a signer the gate refused"
                            );
                            prop_assert!(sig.s() <= HALF_N);
                            prop_assert_eq!(recover(&digest, &sig.as_bytes()), Ok(*signer));
                        }
                    }
                }
            }
        }
    }

    /// Three keepers, one of them stopped, exchanging signatures: the transfer is paid once,
    /// by one keeper, within a few turns, whatever the nonce (and so the turn order).
    #[test]
    fn one_live_keeper_pays_once_while_another_is_stopped(
        stopped in 0usize..3,
        nonce in 1u64..50,
        confirmations in 0u64..4,
        b in any::<bool>(),
    ) {
        let (signers, _) = keys();
        let keepers: BTreeSet<Address> = signers.iter().map(|s| s.address()).collect();
        let live: Vec<usize> = (0..3).filter(|i| *i != stopped).collect();
        let mut cores: Vec<Keeper> = live
            .iter()
            .map(|i| Keeper::new(params(signers[*i].address(), &keepers, confirmations)))
            .collect();
        let (src, dst) = gates(chain_of(b).chain_id);
        let lock = Lock {
            src_chain: src.chain_id,
            nonce,
            to: Address::repeat_byte(7),
            amount: U256::from(1000),
            dst_chain: dst.chain_id,
            block: 10,
        };
        let mut served: Vec<Option<Vec<u8>>> = vec![None; live.len()];
        let mut payments = Vec::new();
        let mut now = 0;
        let mut head = 10;
        while now < 10_000 {
            for (c, core) in cores.iter_mut().enumerate() {
                core.head(src.chain_id, head);
                core.locked(lock.clone());
                let actions = core.poll(now);
                for action in actions {
                    match action {
                        Action::Sign { key, digest } => {
                            let sig = signers[live[c]].sign_hash_sync(&digest).unwrap().as_bytes();
                            core.signed(key, &sig).unwrap();
                            served[c] = Some(sig.to_vec());
                        }
                        Action::Fetch { key } => {
                            for (p, answer) in served.iter().enumerate() {
                                if p != c
                                    && let Some(bytes) = answer
                                {
                                    core.peer_signature(key, bytes).unwrap();
                                }
                            }
                        }
                        Action::Submit { signatures, .. } => payments.push((live[c], signatures)),
                    }
                }
                if !payments.is_empty() {
                    break;
                }
            }
            if !payments.is_empty() {
                // The chain pays at once and every keeper's follower sees it.
                for core in &mut cores {
                    core.paid(lock.key());
                }
                for core in &mut cores {
                    prop_assert!(core.poll(now + 100_000).is_empty());
                }
                break;
            }
            now += 100;
            head += 1;
        }
        prop_assert_eq!(payments.len(), 1, "paid {} times", payments.len());
        // Two turns at most: the stopped keeper's, then a live one's.
        prop_assert!(now <= 2 * 1000 + 1000, "paid only at {now} ms");
    }
}

/// The gate's owner raises the threshold, removes a keeper, then removes this keeper: each
/// change read from the chain takes effect at the next poll, without a restart.
#[test]
fn gate_config_changes_take_effect_at_once() {
    let (signers, _) = keys();
    let keepers: BTreeSet<Address> = signers.iter().map(|s| s.address()).collect();
    let me = &signers[0];
    let mut core = Keeper::new(params(me.address(), &keepers, 0));
    let lock = |nonce| Lock {
        src_chain: A.chain_id,
        nonce,
        to: Address::repeat_byte(7),
        amount: U256::from(1000),
        dst_chain: B.chain_id,
        block: 10,
    };
    fn submitted(actions: &[Action]) -> Option<Vec<Address>> {
        actions.iter().find_map(|a| match a {
            Action::Submit { signatures, .. } => Some(signatures.iter().map(|(k, _)| *k).collect()),
            _ => None,
        })
    }
    // Polls 10 s apart, past any turn (1 s per rank) and resubmit pause (5 s).
    fn poll(core: &mut Keeper, now: &mut u64) -> Vec<Action> {
        *now += 10_000;
        core.poll(*now)
    }
    // A keeper whose turn comes later needs a second poll once it is ready.
    fn submission(core: &mut Keeper, now: &mut u64) -> Option<Vec<Address>> {
        let first = poll(core, now);
        submitted(&first).or_else(|| submitted(&poll(core, now)))
    }
    let mut now = 1_000_000;
    core.head(A.chain_id, 20);
    let first = lock(1);
    core.locked(first.clone());
    core.signed(first.key(), &sign(me, &first)).unwrap();
    core.peer_signature(first.key(), &sign(&signers[1], &first))
        .unwrap();
    assert_eq!(submission(&mut core, &mut now).map(|s| s.len()), Some(2));

    // Threshold 3: two signatures no longer suffice; the third is fetched, then used.
    core.gate_config(B.chain_id, 3, keepers.clone());
    let actions = poll(&mut core, &mut now);
    assert!(
        submitted(&actions).is_none(),
        "submitted below the threshold"
    );
    assert!(actions.iter().any(|a| matches!(a, Action::Fetch { .. })));
    core.peer_signature(first.key(), &sign(&signers[2], &first))
        .unwrap();
    assert_eq!(submission(&mut core, &mut now).map(|s| s.len()), Some(3));

    // Keeper 1 removed, threshold back to 2: its signature, held, is never submitted.
    let without_1: BTreeSet<Address> = keepers
        .iter()
        .copied()
        .filter(|k| *k != signers[1].address())
        .collect();
    core.gate_config(B.chain_id, 2, without_1.clone());
    let signed_by = submission(&mut core, &mut now).expect("keepers 0 and 2 suffice");
    assert_eq!(
        signed_by.into_iter().collect::<BTreeSet<_>>(),
        without_1,
        "a removed keeper's signature was submitted"
    );

    // This keeper removed: a new transfer is no longer signed by it.
    let others: BTreeSet<Address> = keepers
        .iter()
        .copied()
        .filter(|k| *k != me.address())
        .collect();
    core.gate_config(B.chain_id, 2, others);
    let second = lock(2);
    core.locked(second);
    assert!(
        !poll(&mut core, &mut now)
            .iter()
            .any(|a| matches!(a, Action::Sign { .. })),
        "signed for a gate that no longer lists this keeper"
    );
}
