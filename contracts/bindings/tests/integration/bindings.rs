//! The bindings are generated from the committed artifacts and nothing else: the
//! bytecode and every selector compiled into them equal what the artifact files
//! hold now. (`contracts/scripts/build.sh --check` keeps those files fresh against
//! the Solidity sources.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use alloy::hex;
use alloy::json_abi::JsonAbi;
use alloy::sol_types::SolInterface;
use sonm_contracts::{Blacklist, Gate, Market, OracleUSD, ProfileRegistry, SNM};

struct Artifact {
    abi: JsonAbi,
    bytecode: Vec<u8>,
    deployed: Vec<u8>,
}

fn artifact(name: &str) -> Artifact {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../artifacts")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("artifact is JSON");
    assert_eq!(json["contractName"], name, "{}", path.display());
    let abi: JsonAbi = serde_json::from_value(json["abi"].clone()).expect("abi");
    let code = |key: &str| hex::decode(json[key].as_str().expect("hex string")).expect("hex");
    Artifact {
        abi,
        bytecode: code("bytecode"),
        deployed: code("deployedBytecode"),
    }
}

fn set<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    items.into_iter().collect()
}

macro_rules! check_contract {
    ($name:literal, $module:ident, $calls:ident, $errors:ident, $events:ident) => {{
        let a = artifact($name);
        assert!(!a.bytecode.is_empty(), "{} has no bytecode", $name);
        assert_eq!(
            &$module::BYTECODE[..],
            &a.bytecode[..],
            "{}: creation bytecode",
            $name
        );
        assert_eq!(
            &$module::DEPLOYED_BYTECODE[..],
            &a.deployed[..],
            "{}: runtime bytecode",
            $name
        );
        assert_eq!(
            set($module::$calls::SELECTORS.iter().copied()),
            set(a.abi.functions().map(|f| f.selector().0)),
            "{}: function selectors",
            $name
        );
        assert_eq!(
            set($module::$errors::SELECTORS.iter().copied()),
            set(a.abi.errors().map(|e| e.selector().0)),
            "{}: error selectors",
            $name
        );
        assert_eq!(
            set($module::$events::SELECTORS.iter().copied()),
            set(a.abi.events().map(|e| e.selector().0)),
            "{}: event topics",
            $name
        );
    }};
}

#[test]
fn bindings_match_the_committed_artifacts() {
    check_contract!("SNM", SNM, SNMCalls, SNMErrors, SNMEvents);
    check_contract!(
        "ProfileRegistry",
        ProfileRegistry,
        ProfileRegistryCalls,
        ProfileRegistryErrors,
        ProfileRegistryEvents
    );
    check_contract!(
        "Blacklist",
        Blacklist,
        BlacklistCalls,
        BlacklistErrors,
        BlacklistEvents
    );
    check_contract!(
        "OracleUSD",
        OracleUSD,
        OracleUSDCalls,
        OracleUSDErrors,
        OracleUSDEvents
    );
    check_contract!("Market", Market, MarketCalls, MarketErrors, MarketEvents);
    check_contract!("Gate", Gate, GateCalls, GateErrors, GateEvents);
}

#[test]
fn every_match_clause_error_is_bound() {
    // The errors the differential test maps to Mismatch variants exist in the ABI.
    let names = set(artifact("Market").abi.errors().map(|e| e.name.clone()));
    for name in [
        "WrongOrderType",
        "BenchmarkNotMet",
        "NetflagsNotCovered",
        "PriceNotMatched",
        "DurationMismatch",
        "AskCounterpartyMismatch",
        "BidCounterpartyMismatch",
        "ConsumerLevelTooLow",
        "SupplierLevelTooLow",
        "SupplierBlacklisted",
        "ConsumerBlacklisted",
    ] {
        assert!(names.contains(name), "Market has no error {name}");
    }
    assert_eq!(Market::MarketErrors::COUNT, names.len());
}
