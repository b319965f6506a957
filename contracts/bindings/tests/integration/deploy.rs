//! Deploys everything to a real anvil (through the library and through the
//! `sonm-deploy` binary), reads the addresses file back and asks every contract.

use crate::common;

use alloy::primitives::aliases::{U96, U192};
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::{anvil, block_on, unlocked};
use sonm_contracts::anvil::{ANVIL_CHAIN_ID, DEV_KEYS};
use sonm_contracts::deploy::SNM_WEI;
use sonm_contracts::{
    Addresses, Blacklist, DeployConfig, Gate, GateConfig, Market, OracleUSD, ProfileRegistry, SNM,
    deploy,
};

fn dev(i: usize) -> PrivateKeySigner {
    DEV_KEYS[i].parse().expect("dev key")
}

fn snm(whole: u64) -> U256 {
    U256::from(whole) * U256::from(SNM_WEI)
}

#[test]
fn deploys_wires_funds_and_writes_the_addresses_file() {
    let anvil = anvil(&[]);
    let deployer = dev(0);
    let (keeper, validator, funded) = (dev(1).address(), dev(2).address(), dev(3).address());
    let config = DeployConfig {
        snm_supply: snm(1_000_000),
        oracle_price: U192::from(12_345u64),
        gate: GateConfig {
            threshold: 2,
            keepers: vec![(keeper, U96::from(777u64))],
            reserve: snm(1_000),
        },
        validators: vec![(validator, 2)],
        fund: vec![(funded, snm(50))],
    };
    let addresses = block_on(deploy(common::url(&anvil), deployer.clone(), &config)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("addresses.toml");
    addresses.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("chain_id = 31337"), "{text}");
    assert!(text.contains("[contracts]"), "{text}");
    let read = Addresses::read(&path).unwrap();
    assert_eq!(read, addresses);
    assert_eq!(read.chain_id, ANVIL_CHAIN_ID);
    assert_eq!(read.deployer, deployer.address());
    assert_eq!(
        read.deploy_block, 1,
        "a fresh anvil mines SNM's deployment in block 1"
    );
    let c = read.contracts;
    let all = [
        c.snm,
        c.profile_registry,
        c.blacklist,
        c.oracle_usd,
        c.market,
        c.gate,
    ];
    for (i, a) in all.iter().enumerate() {
        assert!(!all[..i].contains(a), "two contracts at {a}");
    }

    block_on(async {
        let p = unlocked(&anvil);
        let token = SNM::new(c.snm, &p);
        let market = Market::new(c.market, &p);
        let gate = Gate::new(c.gate, &p);
        assert_eq!(token.totalSupply().call().await.unwrap(), snm(1_000_000));
        assert_eq!(token.balanceOf(funded).call().await.unwrap(), snm(50));
        assert_eq!(token.balanceOf(c.gate).call().await.unwrap(), snm(1_000));
        assert_eq!(
            token.balanceOf(deployer.address()).call().await.unwrap(),
            snm(1_000_000 - 1_000 - 50)
        );
        assert_eq!(market.token().call().await.unwrap(), c.snm);
        assert_eq!(market.profiles().call().await.unwrap(), c.profile_registry);
        assert_eq!(market.blacklist().call().await.unwrap(), c.blacklist);
        assert_eq!(
            Blacklist::new(c.blacklist, &p)
                .market()
                .call()
                .await
                .unwrap(),
            c.market
        );
        assert_eq!(gate.token().call().await.unwrap(), c.snm);
        assert_eq!(gate.threshold().call().await.unwrap(), 2);
        assert_eq!(gate.owner().call().await.unwrap(), deployer.address());
        assert_eq!(
            gate.keepers(keeper).call().await.unwrap().dailyLimit,
            U96::from(777u64)
        );
        let oracle = OracleUSD::new(c.oracle_usd, &p);
        assert_eq!(oracle.price().call().await.unwrap(), U192::from(12_345u64));
        let profiles = ProfileRegistry::new(c.profile_registry, &p);
        assert_eq!(profiles.validatorLevel(validator).call().await.unwrap(), 2);
        assert_eq!(profiles.owner().call().await.unwrap(), deployer.address());
        // The runtime code on chain is the artifact's (the same length: immutables
        // are filled in place; byte for byte where a contract has none).
        for (address, deployed) in [
            (c.snm, &SNM::DEPLOYED_BYTECODE),
            (c.profile_registry, &ProfileRegistry::DEPLOYED_BYTECODE),
            (c.blacklist, &Blacklist::DEPLOYED_BYTECODE),
            (c.oracle_usd, &OracleUSD::DEPLOYED_BYTECODE),
            (c.market, &Market::DEPLOYED_BYTECODE),
            (c.gate, &Gate::DEPLOYED_BYTECODE),
        ] {
            let code = p.get_code_at(address).await.unwrap();
            assert_eq!(code.len(), deployed.len(), "code at {address}");
        }
        assert_eq!(
            p.get_code_at(c.blacklist).await.unwrap(),
            Blacklist::DEPLOYED_BYTECODE
        );
    });
}

#[test]
fn the_binary_deploys_with_a_key_from_the_environment_or_a_file() {
    let anvil = anvil(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("addresses.toml");
    let funded: Address = dev(1).address();
    let run = |extra: &[&str], env_key: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sonm-deploy"));
        cmd.args(["--rpc-url", &anvil.endpoint(), "--out"])
            .arg(&out)
            .args(["--fund", &funded.to_string(), "--fund-snm", "7"])
            .args(extra)
            .env_remove("SONM_DEPLOY_KEY");
        if let Some(key) = env_key {
            cmd.env("SONM_DEPLOY_KEY", key);
        }
        cmd.output().unwrap()
    };

    let missing = run(&[], None);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("SONM_DEPLOY_KEY"), "{stderr}");

    let first = run(&[], Some(DEV_KEYS[0]));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let a = Addresses::read(&out).unwrap();
    assert_eq!(a.deployer, dev(0).address());
    assert_eq!(String::from_utf8_lossy(&first.stdout), a.to_toml().unwrap());

    // A key file (with 0x and a newline) for another deployer; a second deployment.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{}\n", DEV_KEYS[2])).unwrap();
    let second = run(&["--key-file", key_file.to_str().unwrap()], None);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let b = Addresses::read(&out).unwrap();
    assert_eq!(b.deployer, dev(2).address());
    assert_ne!(a.contracts.market, b.contracts.market);
    assert!(b.deploy_block > a.deploy_block);

    std::fs::write(&key_file, "not a key").unwrap();
    let bad = run(&["--key-file", key_file.to_str().unwrap()], None);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("not a hex secp256k1 private key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not a key"),
        "the key's text must not be echoed: {stderr}"
    );

    block_on(async {
        let p = unlocked(&anvil);
        for addresses in [&a, &b] {
            let token = SNM::new(addresses.contracts.snm, &p);
            assert_eq!(token.balanceOf(funded).call().await.unwrap(), snm(7));
            let market = Market::new(addresses.contracts.market, &p);
            assert_eq!(
                market.token().call().await.unwrap(),
                addresses.contracts.snm
            );
        }
    });
}

#[test]
fn a_missing_anvil_says_how_to_install_it() {
    let err = sonm_contracts::anvil::AnvilError::Missing("/nowhere/anvil".into());
    assert!(
        err.to_string()
            .contains("contracts/scripts/install-tools.sh")
    );
}
