//! The keeper against two real anvil chains (different chain ids) with the real contracts,
//! each Gate with three keepers, threshold 2 and a funded reserve: `sonm_keeper::testnet`
//! (shared with sonm-node's gate tests). Keepers run in process (the library's `daemon::run`,
//! as the binary does), each with its own LMDB directory and HTTP port; a "stopped" keeper is
//! one whose port nobody listens on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use sonm_contracts::Gate;
use sonm_contracts::deploy::{SNM_WEI, signing_provider};
use sonm_keeper::core::{GateRef, TransferKey, transfer_digest};
use sonm_keeper::daemon::ChainConfig;
use sonm_keeper::testnet::{
    CONFIRMATIONS, Net, TestChain, WAIT, block_on, confirm, signer, wait_for,
};

const AMOUNT: u128 = 5 * SNM_WEI;
/// Longer than the last keeper's turn (rank 2 × 1.5 s): time for a duplicate pay to show.
const SETTLE: Duration = Duration::from_millis(3500);

/// Keeper `k` as a process of the real binary, configured by a TOML file.
fn spawn(net: &Net, k: usize, extra: &[String]) -> Process {
    let c = net.config(k, extra);
    let chain = |name: &str, c: &ChainConfig| {
        format!(
            "[{name}]\nrpc_url = \"{}\"\naddresses = {:?}\nconfirmations = {}\nbatch_blocks = {}\n",
            c.rpc_url, c.addresses, c.confirmations, c.batch_blocks
        )
    };
    let quoted = |v: Vec<String>| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "key_file = {:?}\nlisten = \"{}\"\ndata_dir = {:?}\npeers = [{}]\nkeepers = [{}]\n\
         poll_interval_ms = {}\nturn_delay_ms = {}\nfetch_interval_ms = {}\nresubmit_ms = {}\n\
         peer_timeout_ms = {}\n{}{}",
        c.key_file,
        c.listen,
        c.data_dir,
        quoted(c.peers.clone()),
        quoted(c.keepers.iter().map(|a| a.to_string()).collect()),
        c.poll_interval_ms,
        c.turn_delay_ms,
        c.fetch_interval_ms,
        c.resubmit_ms,
        c.peer_timeout_ms,
        chain("main", &c.main),
        chain("sonm", &c.sonm),
    );
    let path = net.dir.path().join(format!("keeper{k}.toml"));
    std::fs::write(&path, text).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sonm-keeper"))
        .arg("--config")
        .arg(&path)
        .spawn()
        .unwrap();
    let url = format!("{}/v1/status", net.url(k));
    wait_for("the keeper process to listen", || {
        ureq::get(&url).call().ok()
    });
    Process(child)
}

/// A keeper process; killed on drop unless stopped.
struct Process(std::process::Child);

impl Process {
    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < WAIT, "the keeper ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Transactions sent by the three keepers on `chain` (each sends only `pay`).
fn keeper_transactions(chain: &TestChain) -> u64 {
    let p = chain.reader();
    (1..=3)
        .map(|k| block_on(async { p.get_transaction_count(signer(k).address()).await }).unwrap())
        .sum()
}

/// A peer that lies: alternately garbage and a well-formed answer carrying a valid signature
/// of the right transfer by a key that is not a keeper (anvil's dev key 4). Counts requests.
struct Liar {
    url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Liar {
    /// `transfers`: which (src, dst, to, amount) a nonce of each source chain stands for.
    fn start(transfers: Vec<(GateRef, GateRef, Address, U256)>) -> Self {
        let (server, addr) = sonm_http_serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{addr}");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let outsider: PrivateKeySigner =
            "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"
                .parse()
                .unwrap();
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                sonm_http_serve::serve(&server, 1, &stop, |request| {
                    let n = requests.fetch_add(1, Ordering::Relaxed);
                    let parts: Vec<&str> = request.url().split('/').collect();
                    let (chain, nonce) = (
                        parts.get(3).and_then(|s| s.parse::<u64>().ok()),
                        parts.get(4).and_then(|s| s.parse::<u64>().ok()),
                    );
                    let forged = chain.zip(nonce).and_then(|(chain, nonce)| {
                        let (src, dst, to, amount) =
                            transfers.iter().find(|t| t.0.chain_id == chain)?;
                        let digest = transfer_digest(*src, *dst, nonce, *to, *amount);
                        let sig = outsider.sign_hash_sync(&digest).ok()?;
                        Some(serde_json::json!({
                            "keeper": outsider.address(),
                            "src_chain": chain,
                            "nonce": nonce,
                            "signature": alloy::primitives::hex::encode_prefixed(sig.as_bytes()),
                        }))
                    });
                    let body = match (n % 2, forged) {
                        (1, Some(json)) => json.to_string(),
                        _ => "\u{0}garbage{{{ not json".to_owned(),
                    };
                    sonm_http_serve::Reply::json(200, body)
                });
            })
        };
        Liar {
            url,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeper 3 is stopped throughout; keepers 1 (in process) and 2 (the binary, from its TOML
/// file) also ask a lying peer. Locks on the main chain are paid on the SONM chain, among them
/// one whose first turn is the stopped keeper's, and a lock on the SONM chain is paid on the
/// main chain: each exactly once, by one `pay` transaction.
#[test]
fn transfers_cross_both_ways_with_a_keeper_stopped_and_a_lying_peer() {
    let net = Net::new();
    let to_b = Address::repeat_byte(0x42);
    let to_a = Address::repeat_byte(0x43);
    let amount = U256::from(AMOUNT);
    let liar = Liar::start(vec![
        (net.main.gate(), net.sonm.gate(), to_b, amount),
        (net.sonm.gate(), net.main.gate(), to_a, amount),
    ]);
    let extra = [liar.url.clone()];
    let _k1 = net.start(1, &extra);
    let k2 = spawn(&net, 2, &extra);

    // Keepers sorted by address are 2, 1, 3 and the first turn for nonce n is the
    // (n mod 3)-th keeper of that list rotated: nonce 1 starts with keeper 1, nonce 2 with
    // the stopped keeper 3.
    let first = net.main.lock(to_b, AMOUNT, net.sonm.id());
    let second = net.main.lock(to_b, AMOUNT, net.sonm.id());
    wait_for("two payments on the SONM chain", || {
        (net.sonm.balance(to_b) == amount * U256::from(2)).then_some(())
    });
    let back = net.sonm.lock(to_a, AMOUNT, net.main.id());
    wait_for("the payment on the main chain", || {
        (net.main.balance(to_a) == amount).then_some(())
    });

    // Every turn has come and gone: no keeper sends a late second pay.
    std::thread::sleep(SETTLE);
    assert_eq!(net.sonm.paid_events(&net.main, first), 1);
    assert_eq!(net.sonm.paid_events(&net.main, second), 1);
    assert_eq!(net.main.paid_events(&net.sonm, back), 1);
    assert_eq!(keeper_transactions(&net.sonm), 2, "one pay per transfer");
    assert_eq!(keeper_transactions(&net.main), 1, "one pay per transfer");
    assert!(
        liar.requests.load(Ordering::Relaxed) > 0,
        "the lying peer was never asked"
    );
    let key = TransferKey {
        src_chain: net.main.id(),
        nonce: second,
    };
    assert!(net.served(3, key).is_none());
    for k in [1, 2] {
        assert!(net.served(k, key).is_some(), "keeper {k} did not sign");
    }
    assert!(
        k2.terminate().success(),
        "the keeper process did not stop cleanly on SIGTERM"
    );
}

/// A lock on the main chain while it makes no blocks: keeper 1 does not sign it, before or
/// after a restart, until it is confirmed. Keeper 1 is then restarted after signing, with
/// keeper 2 started meanwhile: the transfer is paid exactly once, and keeper 1, restarted once
/// more after the payment, pays nothing again and records it as paid.
#[test]
fn a_restarted_keeper_signs_nothing_unconfirmed_and_pays_nothing_twice() {
    let net = Net::new();
    let to = Address::repeat_byte(0x44);
    let amount = U256::from(AMOUNT);

    let k1 = net.start(1, &[]);
    net.main.mining.store(false, Ordering::Relaxed);
    let nonce = net.main.lock(to, AMOUNT, net.sonm.id());
    let key = TransferKey {
        src_chain: net.main.id(),
        nonce,
    };
    // Keeper 1 polls every 100 ms: 1.5 s is many polls in which it could have signed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(net.served(1, key), None, "signed an unconfirmed lock");
    k1.stop();
    let k1 = net.start(1, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        net.served(1, key),
        None,
        "signed an unconfirmed lock after a restart"
    );

    net.main.mining.store(true, Ordering::Relaxed);
    let signature = wait_for("keeper 1's signature", || net.served(1, key));
    k1.stop();
    let k2 = net.start(2, &[]);
    let k1 = net.start(1, &[]);
    assert_eq!(
        net.served(1, key).as_ref(),
        Some(&signature),
        "the signature is kept"
    );
    wait_for("the payment", || {
        (net.sonm.balance(to) == amount).then_some(())
    });

    k1.stop();
    let k1 = net.start(1, &[]);
    // Blocks go by on both chains while both keepers run again.
    let head = block_on(net.sonm.reader().get_block_number()).unwrap();
    wait_for("more blocks on the SONM chain", || {
        let now = block_on(net.sonm.reader().get_block_number()).unwrap();
        (now > head + 2 * CONFIRMATIONS).then_some(())
    });
    k1.stop();
    k2.stop();
    assert_eq!(net.sonm.paid_events(&net.main, nonce), 1);
    assert_eq!(
        keeper_transactions(&net.sonm),
        1,
        "one pay, never a second try"
    );
    assert_eq!(net.sonm.balance(to), amount);

    let env = sonm_keeper::store::open_env(&net.dir.path().join("keeper1")).unwrap();
    let store = sonm_keeper::store::Store::open(&env).unwrap();
    assert!(
        store.is_paid(key).unwrap(),
        "keeper 1 does not know it is paid"
    );
}

/// Keeper 2 (the lowest address, so the first signer of any submission that has its
/// signature) is frozen on the SONM chain's gate after the keepers started. The keepers read
/// the change from the gate's event: keeper 2 signs nothing for that gate and keeper 1 would
/// not use its signature, so keepers 1 and 2 alone pay nothing and send nothing. Once keeper 3
/// runs, keepers 1 and 3 pay, once.
#[test]
fn a_keeper_frozen_on_chain_signs_nothing_and_the_others_pay() {
    let net = Net::new();
    let to = Address::repeat_byte(0x45);
    let amount = U256::from(AMOUNT);
    let _k1 = net.start(1, &[]);
    let _k2 = net.start(2, &[]);
    let p = signing_provider(net.sonm.anvil.endpoint().parse().unwrap(), signer(0));
    let frozen_at = block_on(confirm(
        "setFrozen",
        Gate::new(net.sonm.addresses.contracts.gate, &p).setFrozen(signer(2).address(), true),
    ))
    .block_number
    .unwrap();
    // Well past the event's confirmation (keepers poll every 100 ms) before the lock, so that
    // keeper 2 knows it is frozen before it could sign.
    wait_for("the freeze to be deep", || {
        let head = block_on(net.sonm.reader().get_block_number()).unwrap();
        (head >= frozen_at + CONFIRMATIONS + 10).then_some(())
    });

    let nonce = net.main.lock(to, AMOUNT, net.sonm.id());
    let key = TransferKey {
        src_chain: net.main.id(),
        nonce,
    };
    wait_for("keeper 1's signature", || net.served(1, key));
    // Both turns (1.5 s apart) come and go without a payment or a transaction.
    std::thread::sleep(Duration::from_millis(4000));
    assert_eq!(net.served(2, key), None, "a frozen keeper signed");
    assert_eq!(net.sonm.balance(to), U256::ZERO);
    assert_eq!(keeper_transactions(&net.sonm), 0, "a refused pay was sent");

    let _k3 = net.start(3, &[]);
    wait_for("the payment", || {
        (net.sonm.balance(to) == amount).then_some(())
    });
    std::thread::sleep(SETTLE);
    assert_eq!(net.sonm.paid_events(&net.main, nonce), 1);
    assert_eq!(
        keeper_transactions(&net.sonm),
        1,
        "one pay, no racing second one"
    );
}

/// The owner raises the SONM chain gate's threshold from 2 to 3 after the keepers started: a
/// transfer locked after that is paid with three signatures, once, without a restart (keepers
/// that kept the threshold they read at start would submit two, which the gate refuses).
#[test]
fn a_threshold_raised_on_chain_is_followed_without_a_restart() {
    let net = Net::new();
    let to = Address::repeat_byte(0x46);
    let amount = U256::from(AMOUNT);
    let _keepers = [net.start(1, &[]), net.start(2, &[]), net.start(3, &[])];
    let p = signing_provider(net.sonm.anvil.endpoint().parse().unwrap(), signer(0));
    block_on(confirm(
        "setThreshold",
        Gate::new(net.sonm.addresses.contracts.gate, &p).setThreshold(3),
    ));

    let nonce = net.main.lock(to, AMOUNT, net.sonm.id());
    wait_for("the payment", || {
        (net.sonm.balance(to) == amount).then_some(())
    });
    std::thread::sleep(SETTLE);
    assert_eq!(net.sonm.paid_events(&net.main, nonce), 1);
    assert_eq!(
        keeper_transactions(&net.sonm),
        1,
        "one pay, nothing refused sent"
    );
}
