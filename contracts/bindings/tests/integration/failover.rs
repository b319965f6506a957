//! The failover transport (`rpc::Failover`) and the transaction helper (`tx::TxSender`) against
//! real anvils: a closed port, an endpoint that accepts and never answers, an endpoint on another
//! chain, and an endpoint that dies while a transaction sent through it waits for its receipt.

use crate::common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::{anvil, block_on};
use sonm_contracts::anvil::{ANVIL_CHAIN_ID, DEV_KEYS};
use sonm_contracts::rpc::{Failover, FailoverOptions, RpcError, RpcUrls};
use sonm_contracts::tx::{self, TxError, TxOptions, TxSender};
use sonm_contracts::{DeployConfig, SNM, deploy};

/// A local port nothing listens on (bound, then released).
fn closed_port() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

fn urls(list: &[&str]) -> RpcUrls {
    RpcUrls::new(list).unwrap()
}

fn quick() -> FailoverOptions {
    FailoverOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        recheck_after: Duration::from_secs(30),
    }
}

/// A TCP forwarder to `upstream` that can be switched off (its open connections shut, then it
/// accepts and drops every new one, as a node that went away) and on again.
struct Switch {
    url: String,
    on: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Switch {
    fn new(upstream: &str) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let (flag, conns) = (on.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                conns.lock().unwrap().push(client.try_clone().unwrap());
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c2, mut s2) = (client, server);
                std::thread::spawn(move || std::io::copy(&mut c1, &mut s1));
                std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
            }
        });
        Switch { url, on, open }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            for c in self.open.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[test]
fn the_list_parses_from_a_string_or_a_list_and_refuses_what_cannot_work() {
    #[derive(serde::Deserialize, Debug)]
    struct C {
        rpc_url: RpcUrls,
    }
    let one: C = toml::from_str(r#"rpc_url = "http://127.0.0.1:8545""#).unwrap();
    assert_eq!(one.rpc_url.urls().len(), 1);
    let two: C =
        toml::from_str(r#"rpc_url = ["http://127.0.0.1:8545", "http://10.0.0.2:8545"]"#).unwrap();
    assert_eq!(two.rpc_url.urls()[1].as_str(), "http://10.0.0.2:8545/");
    for bad in [
        "rpc_url = []",
        r#"rpc_url = "https://example.org""#,
        r#"rpc_url = ["http://a:1", "nonsense"]"#,
        "rpc_url = 5",
    ] {
        let err = toml::from_str::<C>(bad).unwrap_err().to_string();
        assert!(
            err.contains("endpoint") || err.contains("URL"),
            "{bad}: {err}"
        );
    }
    // A single URL serializes back as a string, several as a list.
    assert_eq!(
        toml::to_string(&toml::Table::from_iter([(
            "rpc_url".to_owned(),
            toml::Value::try_from(&two.rpc_url).unwrap()
        )]))
        .unwrap()
        .trim(),
        r#"rpc_url = ["http://127.0.0.1:8545/", "http://10.0.0.2:8545/"]"#
    );
}

#[test]
fn reads_move_past_a_closed_port_and_a_silent_endpoint_and_stay_where_they_are_served() {
    let chain = anvil(&[]);
    // Accepts connections and never answers: only the request timeout gets past it. It counts
    // the connections it gets, so that a request sent there shows.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let reached = Arc::new(AtomicUsize::new(0));
    {
        let reached = reached.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in silent.incoming() {
                reached.fetch_add(1, Ordering::SeqCst);
                held.push(c);
            }
        });
    }
    let closed = closed_port();
    let failover = Failover::new(
        &urls(&[&closed, &silent_url, &chain.endpoint()]),
        ANVIL_CHAIN_ID,
        quick(),
    )
    .unwrap();
    let provider = failover.provider();
    let p = provider.clone();
    let id = block_on(async move { p.get_chain_id().await }).unwrap();
    assert_eq!(id, ANVIL_CHAIN_ID);
    assert_eq!(
        failover.current().as_str(),
        format!("{}/", chain.endpoint())
    );
    let tried = reached.load(Ordering::SeqCst);
    assert!(tried >= 1, "the silent endpoint was tried");
    // The next requests go straight to the endpoint that served.
    let p = provider.clone();
    block_on(async move {
        p.get_block_number().await.unwrap();
        p.get_chain_id().await.unwrap();
    });
    assert_eq!(reached.load(Ordering::SeqCst), tried, "sticky");
    // Start-up probe: one endpoint answers, so the list is usable.
    block_on(failover.probe()).unwrap();

    // When every endpoint is down, the error says so instead of hanging.
    drop(chain);
    let p = provider.clone();
    assert!(block_on(async move { p.get_block_number().await }).is_err());
    let down = Failover::new(&urls(&[&closed]), ANVIL_CHAIN_ID, quick()).unwrap();
    assert!(matches!(
        block_on(down.probe()),
        Err(RpcError::Unreachable(_))
    ));
}

#[test]
fn requests_go_back_to_the_preferred_endpoint_once_it_answers_again() {
    let (a, b) = (anvil(&[]), anvil(&[]));
    let primary = Switch::new(&a.endpoint());
    let options = FailoverOptions {
        recheck_after: Duration::from_millis(200),
        ..quick()
    };
    let failover = Failover::new(
        &urls(&[&primary.url, &b.endpoint()]),
        ANVIL_CHAIN_ID,
        options,
    )
    .unwrap();
    let provider = failover.provider();
    let read = || {
        let p = provider.clone();
        block_on(async move { p.get_block_number().await }).unwrap()
    };
    read();
    assert_eq!(failover.current().as_str(), format!("{}/", primary.url));
    // The primary goes away: requests move to the second endpoint and stay there while the
    // primary stays down, rechecks included.
    primary.set(false);
    read();
    assert_eq!(failover.current().as_str(), format!("{}/", b.endpoint()));
    std::thread::sleep(Duration::from_millis(300));
    read();
    assert_eq!(failover.current().as_str(), format!("{}/", b.endpoint()));
    // Back: within a recheck period the next request goes to it again.
    primary.set(true);
    read();
    let deadline = Instant::now() + Duration::from_secs(5);
    while failover.current().as_str() != format!("{}/", primary.url) {
        assert!(Instant::now() < deadline, "never went back to the primary");
        std::thread::sleep(Duration::from_millis(50));
        read();
    }
}

#[test]
fn an_endpoint_on_another_chain_is_refused_and_never_used() {
    let right = anvil(&[]);
    let wrong = anvil(&["--chain-id", "4242"]);
    // The wrong chain is taller, so a read served by it would show.
    let w = sonm_contracts::deploy::provider(wrong.endpoint().parse().unwrap());
    block_on(async move {
        for _ in 0..5 {
            let _: serde_json::Value = w.raw_request("evm_mine".into(), ()).await.unwrap();
        }
    });
    let list = urls(&[&wrong.endpoint(), &right.endpoint()]);
    let failover = Failover::new(&list, ANVIL_CHAIN_ID, quick()).unwrap();
    match block_on(failover.probe()) {
        Err(RpcError::WrongChain {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (ANVIL_CHAIN_ID, 4242)),
        other => panic!("{other:?}"),
    }
    // Without the probe (the endpoint was down at start, say), the first request checks it.
    let failover = Failover::new(&list, ANVIL_CHAIN_ID, quick()).unwrap();
    let p = failover.provider();
    let (height, id) = block_on(async move {
        (
            p.get_block_number().await.unwrap(),
            p.get_chain_id().await.unwrap(),
        )
    });
    assert_eq!((height, id), (0, ANVIL_CHAIN_ID));
    assert_eq!(
        failover.current().as_str(),
        format!("{}/", right.endpoint())
    );
}

#[test]
fn a_transaction_is_sent_once_and_its_event_found_past_a_closed_port() {
    let chain = anvil(&[]);
    let deployer: PrivateKeySigner = DEV_KEYS[0].parse().unwrap();
    let addresses = block_on(deploy(
        chain.endpoint().parse().unwrap(),
        deployer.clone(),
        &DeployConfig::default(),
    ))
    .unwrap();
    let failover = Failover::new(
        &urls(&[&closed_port(), &chain.endpoint()]),
        ANVIL_CHAIN_ID,
        quick(),
    )
    .unwrap();
    let me = deployer.address();
    let provider = failover.signing_provider(deployer.clone());
    let sender = TxSender::new(provider.clone(), deployer, ANVIL_CHAIN_ID);
    let snm = SNM::new(addresses.contracts.snm, provider.clone());
    let to = Address::repeat_byte(7);
    let (before, s, token) = (
        block_on({
            let p = provider.clone();
            async move { p.get_transaction_count(me).await }
        })
        .unwrap(),
        sender.clone(),
        snm.clone(),
    );
    let transfer = block_on(async move {
        let receipt = s
            .send("transfer", token.transfer(to, U256::from(5)))
            .await?;
        tx::event::<SNM::Transfer>("transfer", &receipt)
    })
    .unwrap();
    assert_eq!((transfer.to, transfer.value), (to, U256::from(5)));
    let p = provider.clone();
    let after = block_on(async move { p.get_transaction_count(me).await }).unwrap();
    assert_eq!(after, before + 1, "exactly one transaction");

    // A refusal is typed and sends nothing: more than the deployer holds.
    let (s, token) = (sender.clone(), snm.clone());
    let err = block_on(async move {
        s.send("transfer", token.transfer(to, U256::MAX))
            .await
            .map(|_| ())
    })
    .unwrap_err();
    assert!(
        matches!(err, TxError::Estimate { .. } | TxError::Refused { .. }),
        "{err}"
    );
    let p = provider.clone();
    let last = block_on(async move { p.get_transaction_count(me).await }).unwrap();
    assert_eq!(last, after);
}

/// Two anvils of the same chain id that do not share transactions (like two nodes of a
/// network whose gossip has not reached each other): the first does not mine. The transaction
/// is broadcast to the first, which then dies; the helper, waiting for the receipt, fails over
/// and broadcasts the same signed bytes to the second, which mines them. The account's nonce
/// there is 1: the call was not sent again as a new transaction.
#[test]
fn a_transaction_waiting_for_its_receipt_when_its_endpoint_dies_is_mined_once_elsewhere() {
    let first = anvil(&["--no-mining"]);
    let second = anvil(&[]);
    let key: PrivateKeySigner = DEV_KEYS[3].parse().unwrap();
    let failover = Failover::new(
        &urls(&[&first.endpoint(), &second.endpoint()]),
        ANVIL_CHAIN_ID,
        quick(),
    )
    .unwrap();
    block_on(failover.probe()).unwrap();
    let provider = failover.signing_provider(key.clone());
    let sender =
        TxSender::new(provider.clone(), key.clone(), ANVIL_CHAIN_ID).with_options(TxOptions {
            timeout: Duration::from_secs(60),
            rebroadcast: Duration::from_millis(200),
        });
    // Any transaction will do: a call to an address without code succeeds on both chains.
    let target = SNM::new(Address::repeat_byte(9), provider.clone());
    let first_url = first.endpoint();
    let waiter = std::thread::spawn(move || {
        block_on(async move {
            sender
                .send("poke", target.transfer(Address::ZERO, U256::ZERO))
                .await
        })
    });
    // Wait until the first endpoint holds the transaction in its pool, then kill it.
    let direct = sonm_contracts::deploy::provider(first_url.parse().unwrap());
    let who = key.address();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = direct.clone();
        let pending = block_on(async move { d.get_transaction_count(who).pending().await });
        if pending.is_ok_and(|n| n == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transaction never reached the first endpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first);
    let receipt = waiter.join().unwrap().unwrap();
    assert!(receipt.status());
    let s = sonm_contracts::deploy::provider(second.endpoint().parse().unwrap());
    let nonce = block_on(async move { s.get_transaction_count(who).await }).unwrap();
    assert_eq!(nonce, 1, "mined once, with the nonce it was signed with");
    assert_eq!(
        failover.current().as_str(),
        format!("{}/", second.endpoint())
    );
}
