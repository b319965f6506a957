//! The digest and transfer id the keeper computes are the ones the real Gate computes
//! (`transferDigest`, `transferId` views on a deployed Gate on anvil), and a signature made as
//! the keeper makes it recovers, under the core's rules, to the keeper.

use alloy::primitives::{Address, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::{DeployConfig, Gate};
use sonm_keeper::core::{GateRef, recover, transfer_digest, transfer_id};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(f))
}

#[test]
fn digests_and_ids_match_the_gate_contract() {
    let anvil = Anvil::spawn_with(&["--chain-id", "777"]).unwrap_or_else(|e| panic!("{e}"));
    let url = anvil.endpoint().parse().unwrap();
    let deployer: PrivateKeySigner = DEV_KEYS[0].parse().unwrap();
    let addresses = block_on(sonm_contracts::deploy(
        url,
        deployer,
        &DeployConfig::default(),
    ))
    .unwrap();
    let dst = GateRef {
        chain_id: 777,
        gate: addresses.contracts.gate,
    };
    let p = sonm_contracts::deploy::provider(anvil.endpoint().parse().unwrap());
    let gate = Gate::new(dst.gate, &p);
    let keeper: PrivateKeySigner = DEV_KEYS[1].parse().unwrap();

    // Few cases: each is two calls to a real chain.
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let values = (
        any::<u64>(),
        any::<[u8; 20]>(),
        any::<u64>(),
        any::<[u8; 20]>(),
        any::<u128>(),
    );
    runner
        .run(&values, |(src_chain, src_gate, nonce, to, amount)| {
            let src = GateRef {
                chain_id: src_chain,
                gate: Address::from(src_gate),
            };
            let (to, amount) = (Address::from(to), U256::from(amount));
            let digest = transfer_digest(src, dst, nonce, to, amount);
            let onchain = block_on(async {
                gate.transferDigest(
                    U256::from(src_chain),
                    src.gate,
                    U256::from(nonce),
                    to,
                    amount,
                )
                .call()
                .await
            })
            .unwrap();
            prop_assert_eq!(digest, onchain);
            let id = block_on(async {
                gate.transferId(U256::from(src_chain), src.gate, U256::from(nonce))
                    .call()
                    .await
            })
            .unwrap();
            prop_assert_eq!(transfer_id(src, nonce), id);
            let sig = keeper.sign_hash_sync(&digest).unwrap().as_bytes();
            prop_assert_eq!(recover(&digest, &sig), Ok(keeper.address()));
            Ok(())
        })
        .unwrap();
}
