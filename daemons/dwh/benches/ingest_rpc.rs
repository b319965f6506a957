//! RPC-bound ingest: the follower (the real code path, `Follower::step` over HTTP
//! JSON-RPC into a fresh LMDB store) over a local anvil chain of ≥ 100k orders placed
//! through the real contracts, with the storage path for the same events (decoded
//! events committed without RPC) as the baseline in the same run, and a breakdown of
//! where the time goes (anvil's eth_getLogs, our JSON parsing, ABI decoding, LMDB).
//!
//! `cargo bench -p sonm-dwh --bench ingest_rpc` (needs anvil:
//! `contracts/scripts/install-tools.sh`). Sizes: `SONM_DWH_BENCH_CHAIN_ORDERS` (default
//! 100,000), `SONM_DWH_BENCH_BATCHES` (the follower's `batch_blocks`, blocks per
//! eth_getLogs, comma-separated, default `1000,100,10`), `SONM_DWH_BENCH_RUNS` (runs per
//! batch size, default 3; medians are reported).
//!
//! The chain is generated once per size and contract build and kept as an anvil state
//! dump under `target/sonm-dwh-bench/` (about 1.2 GB for 100k orders: anvil keeps every
//! transaction's trace); later runs load it in seconds instead of generating it again.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::client::BatchRequest;
use alloy::rpc::types::{Filter, Log, TransactionInput, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use alloy::transports::http::reqwest::{self, Url};
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::SNM_WEI;
use sonm_contracts::{Addresses, DeployConfig, Market, SNM, chain_order, deploy};
use sonm_dwh::ChainEvent;
use sonm_dwh::event;
use sonm_dwh::follower::{Follower, FollowerConfig, Metrics, SharedBook, Step, followed};
use sonm_dwh::index::BlockEvents;
use sonm_dwh::storage::{Checkpoint, Storage, open_env};
use sonm_market::{Benchmarks, IdentityLevel, NetFlags, Order, OrderType};

/// Orders placed per block; every fifth order (by id) is cancelled in the next block,
/// so a block carries about 120 events.
const ORDERS_PER_BLOCK: usize = 100;
/// Anvil accounts: 0 deploys, the others trade.
const ACCOUNTS: usize = 20;
/// Bump when the generated history changes, so that an old dump is not reused.
const GENERATOR_VERSION: u32 = 2;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(future))
}

/// A fixed-seed xorshift, so every generation places the same orders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_order(rng: &mut Rng, author: Address, seq: u64) -> Order {
    let mut b = [0u64; 13];
    for v in b.iter_mut() {
        *v = rng.below(16);
    }
    Order {
        id: 0,
        order_type: if rng.below(2) == 0 {
            OrderType::Ask
        } else {
            OrderType::Bid
        },
        author,
        counterparty: None,
        duration: [0, 3600, 86_400][rng.below(3) as usize],
        price: u128::from(1 + rng.below(1_000_000)),
        netflags: NetFlags::try_from(rng.below(8)).unwrap(),
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::from(U256::from(seq)),
        benchmarks: Benchmarks(b),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is the first,
    // utime and stime the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// An anvil of our own rather than `sonm_contracts::anvil::Anvil`: generation must
/// stop it with SIGINT and wait, so that it writes its `--dump-state` file.
struct Node {
    child: Child,
    url: Url,
}

impl Node {
    fn spawn(args: &[&str]) -> Node {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let bin = Anvil::binary();
        assert!(
            bin.is_file(),
            "anvil not found at {}: run contracts/scripts/install-tools.sh",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--silent",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Loading a large state takes a while before anvil listens.
        let start = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("anvil exited during start-up: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "anvil did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Node {
            child,
            url: format!("http://127.0.0.1:{port}").parse().unwrap(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGINT, then wait: anvil writes its state dump on the way out.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -INT anvil");
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a generated chain holds, kept next to its state dump.
struct Chain {
    addresses: Addresses,
    head: u64,
    orders: u64,
    cancels: u64,
    /// Events of the deployment itself (the gate's threshold, and so on).
    setup_events: u64,
    generated_secs: f64,
}

impl Chain {
    fn to_json(&self) -> String {
        serde_json::json!({
            "addresses": self.addresses.to_toml().unwrap(),
            "head": self.head,
            "orders": self.orders,
            "cancels": self.cancels,
            "setup_events": self.setup_events,
            "generated_secs": self.generated_secs,
        })
        .to_string()
    }

    fn from_json(text: &str) -> Option<Chain> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(Chain {
            addresses: Addresses::from_toml(v["addresses"].as_str()?).ok()?,
            head: v["head"].as_u64()?,
            orders: v["orders"].as_u64()?,
            cancels: v["cancels"].as_u64()?,
            setup_events: v["setup_events"].as_u64()?,
            generated_secs: v["generated_secs"].as_f64()?,
        })
    }
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("sonm-dwh-bench")
}

/// A dump is reused only for the same size, generator and contract bytecode.
fn cache_key(orders: usize) -> String {
    let mut code = Vec::new();
    code.extend_from_slice(&Market::BYTECODE);
    code.extend_from_slice(&SNM::BYTECODE);
    let hash = keccak256(&code);
    format!(
        "ingest-rpc-{orders}-v{GENERATOR_VERSION}-{}",
        alloy::hex::encode(&hash[..6])
    )
}

fn tx(from: Address, to: Address, nonce: &mut u64, input: Vec<u8>) -> TransactionRequest {
    let t = TransactionRequest::default()
        .from(from)
        .to(to)
        .input(TransactionInput::new(Bytes::from(input)))
        .nonce(*nonce)
        // Set explicitly so that anvil estimates nothing; the block gas limit is raised
        // so that a block holds every pending transaction.
        .gas_limit(1_000_000)
        .gas_price(2_000_000_000);
    *nonce += 1;
    t
}

/// Generates the chain on a fresh anvil with mining off: per block, one JSON-RPC batch
/// of `eth_sendTransaction`s (anvil's unlocked accounts sign; nobody waits for a
/// receipt), then `evm_mine`, then the block's logs are read back to check that every
/// transaction succeeded and to learn the ids of the orders to cancel in the next one.
fn generate(n_orders: usize, state: &Path) -> Chain {
    let start = Instant::now();
    let node = Node::spawn(&[
        "--accounts",
        &ACCOUNTS.to_string(),
        "--gas-limit",
        "1000000000",
        "--dump-state",
        state.to_str().unwrap(),
    ]);
    let url = node.url.clone();
    let chain = block_on(async {
        let provider = sonm_contracts::deploy::provider(url.clone());
        let accounts = provider.get_accounts().await.unwrap();
        let traders: Vec<Address> = accounts[1..ACCOUNTS].to_vec();
        let key: PrivateKeySigner = DEV_KEYS[0].parse().unwrap();
        let config = DeployConfig {
            fund: traders
                .iter()
                .map(|a| (*a, U256::from(1_000_000u128 * SNM_WEI)))
                .collect(),
            ..DeployConfig::default()
        };
        let addresses = deploy(url.clone(), key, &config).await.unwrap();
        let market = addresses.contracts.market;
        let token = SNM::new(addresses.contracts.snm, &provider);
        for t in &traders {
            let receipt = token
                .approve(market, U256::MAX)
                .from(*t)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            assert!(receipt.status(), "approve");
        }
        let setup = provider
            .get_logs(
                &Filter::new()
                    .address(followed(&addresses.contracts).to_vec())
                    .from_block(addresses.deploy_block),
            )
            .await
            .unwrap();
        let mut setup_events = 0;
        for log in &setup {
            let ev = event::decode(
                &addresses.contracts,
                log.address(),
                log.topics(),
                &log.data().data,
            );
            setup_events += u64::from(ev.unwrap().is_some());
        }
        let _: serde_json::Value = provider
            .raw_request("evm_setAutomine".into(), (false,))
            .await
            .unwrap();
        let mut nonces = Vec::new();
        for t in &traders {
            nonces.push(provider.get_transaction_count(*t).await.unwrap());
        }
        let index: BTreeMap<Address, usize> =
            traders.iter().enumerate().map(|(i, a)| (*a, i)).collect();

        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let (mut placed, mut cancels, mut seq) = (0usize, 0usize, 0u64);
        let mut last_block: Vec<Order> = Vec::new();
        let mut head = 0;
        while placed < n_orders || !last_block.is_empty() {
            let client = provider.client();
            let mut batch = BatchRequest::new(client);
            let mut waiters = Vec::new();
            let to_cancel: Vec<&Order> = last_block.iter().filter(|o| o.id % 5 == 0).collect();
            for o in &to_cancel {
                let input = Market::cancelOrderCall {
                    orderId: U256::from(o.id),
                    order: chain_order(o),
                }
                .abi_encode();
                let t = tx(o.author, market, &mut nonces[index[&o.author]], input);
                waiters.push(
                    batch
                        .add_call::<_, B256>("eth_sendTransaction", &(t,))
                        .unwrap(),
                );
            }
            let n = ORDERS_PER_BLOCK.min(n_orders - placed);
            for _ in 0..n {
                seq += 1;
                let who = rng.below(traders.len() as u64) as usize;
                let o = random_order(&mut rng, traders[who], seq);
                let input = Market::placeOrderCall {
                    order: chain_order(&o),
                }
                .abi_encode();
                let t = tx(o.author, market, &mut nonces[who], input);
                waiters.push(
                    batch
                        .add_call::<_, B256>("eth_sendTransaction", &(t,))
                        .unwrap(),
                );
            }
            batch.send().await.unwrap();
            for w in waiters {
                w.await.unwrap();
            }
            let _: serde_json::Value = provider
                .raw_request("evm_mine".into(), serde_json::json!([]))
                .await
                .unwrap();
            head = provider.get_block_number().await.unwrap();
            let logs = provider
                .get_logs(
                    &Filter::new()
                        .address(market)
                        .from_block(head)
                        .to_block(head),
                )
                .await
                .unwrap();
            let mut new_orders = Vec::new();
            let mut cancelled = 0;
            for log in &logs {
                match event::decode(
                    &addresses.contracts,
                    log.address(),
                    log.topics(),
                    &log.data().data,
                )
                .unwrap()
                {
                    Some(ChainEvent::OrderPlaced(o)) => new_orders.push(o),
                    Some(ChainEvent::OrderCancelled { .. }) => cancelled += 1,
                    other => panic!("unexpected event {other:?}"),
                }
            }
            // A reverted transaction leaves no log: the counts prove that all succeeded.
            assert_eq!(new_orders.len(), n, "orders placed in block {head}");
            assert_eq!(
                cancelled,
                to_cancel.len(),
                "orders cancelled in block {head}"
            );
            placed += n;
            cancels += cancelled;
            last_block = new_orders;
        }
        Chain {
            addresses,
            head,
            orders: placed as u64,
            cancels: cancels as u64,
            setup_events,
            generated_secs: 0.0,
        }
    });
    node.stop();
    Chain {
        generated_secs: start.elapsed().as_secs_f64(),
        ..chain
    }
}

/// The follower from the deploy block to the head, into a fresh store:
/// (events, elapsed).
fn follow(url: &Url, addresses: &Addresses, batch_blocks: u64) -> (u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 8 << 30).unwrap();
    let storage = Storage::open(&env).unwrap();
    let book = SharedBook::default();
    let metrics = Metrics::default();
    let mut config = FollowerConfig::new(vec![url.clone()]);
    config.confirmations = 0;
    config.batch_blocks = batch_blocks;
    let mut follower = Follower::new(&storage, &book, &metrics, addresses, config).unwrap();
    let mut events = 0;
    let start = Instant::now();
    loop {
        match block_on(follower.step()).unwrap() {
            Step::Indexed { events: n, .. } => events += n as u64,
            Step::Idle { .. } => break,
            Step::Reorg { .. } => panic!("a reorg on a loaded chain"),
        }
    }
    (events, start.elapsed())
}

#[derive(serde::Deserialize)]
struct LogsResponse {
    result: Vec<Log>,
}

/// Where the time goes, stage by stage over the same batches as the follower:
/// anvil answering eth_getLogs (raw HTTP, body kept as bytes), our JSON parsing of the
/// body into alloy `Log`s, ABI decoding into `ChainEvent`s, then (the storage-path
/// baseline) committing the decoded batches to a fresh LMDB store.
struct Breakdown {
    /// The follower's other calls per batch: the head, the checkpoint's hash and the
    /// batch end's hash.
    other_calls: Duration,
    rpc: Duration,
    body_bytes: usize,
    json: Duration,
    abi: Duration,
    lmdb: Duration,
    events: u64,
    commits: usize,
}

fn breakdown(url: &Url, addresses: &Addresses, head: u64, batch_blocks: u64) -> Breakdown {
    let client = reqwest::Client::new();
    let provider = sonm_contracts::deploy::provider(url.clone());
    let contracts = addresses.contracts;
    let (mut rpc, mut json, mut abi) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut other_calls = Duration::ZERO;
    let (mut body_bytes, mut events) = (0, 0u64);
    let mut batches = Vec::new();
    let mut from = addresses.deploy_block;
    while from <= head {
        let to = head.min(from + batch_blocks - 1);
        let t = Instant::now();
        block_on(async {
            provider.get_block_number().await.unwrap();
            for number in [from.saturating_sub(1), to] {
                provider
                    .get_block_by_number(number.into())
                    .await
                    .unwrap()
                    .unwrap();
            }
        });
        other_calls += t.elapsed();
        let request = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
            "params": [{
                "address": followed(&contracts),
                "fromBlock": format!("{from:#x}"),
                "toBlock": format!("{to:#x}"),
            }],
        })
        .to_string();
        let t = Instant::now();
        let body = block_on(async {
            client
                .post(url.clone())
                .header("content-type", "application/json")
                .body(request)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        rpc += t.elapsed();
        body_bytes += body.len();

        let t = Instant::now();
        let logs = serde_json::from_slice::<LogsResponse>(&body)
            .unwrap()
            .result;
        json += t.elapsed();
        drop(body);

        let t = Instant::now();
        let mut blocks: BTreeMap<u64, Vec<ChainEvent>> = BTreeMap::new();
        for log in &logs {
            if let Some(ev) =
                event::decode(&contracts, log.address(), log.topics(), &log.data().data).unwrap()
            {
                blocks
                    .entry(log.block_number.unwrap())
                    .or_default()
                    .push(ev);
                events += 1;
            }
        }
        let batch: Vec<BlockEvents> = blocks
            .into_iter()
            .map(|(number, events)| BlockEvents {
                number,
                hash: B256::from(U256::from(number)),
                events,
            })
            .collect();
        abi += t.elapsed();
        batches.push((batch, to));
        from = to + 1;
    }

    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path(), 8 << 30).unwrap();
    let storage = Storage::open(&env).unwrap();
    let t = Instant::now();
    for (batch, to) in &batches {
        let end = Checkpoint {
            number: *to,
            hash: B256::from(U256::from(*to)),
        };
        storage.commit_batch(batch, end, 1024).unwrap();
    }
    Breakdown {
        other_calls,
        rpc,
        body_bytes,
        json,
        abi,
        lmdb: t.elapsed(),
        events,
        commits: batches.len(),
    }
}

fn main() {
    let n_orders = env_usize("SONM_DWH_BENCH_CHAIN_ORDERS", 100_000);
    let batch_sizes: Vec<u64> = std::env::var("SONM_DWH_BENCH_BATCHES")
        .unwrap_or_else(|_| "1000,100,10".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SONM_DWH_BENCH_BATCHES: numbers"))
        .filter(|&b| b > 0)
        .collect();
    assert!(
        !batch_sizes.is_empty(),
        "SONM_DWH_BENCH_BATCHES: no batch size"
    );
    let runs = env_usize("SONM_DWH_BENCH_RUNS", 3).max(1);
    println!("load average at start: {}", load_average());

    let dir = cache_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let key = cache_key(n_orders);
    let state = dir.join(format!("{key}.state.json"));
    let meta = dir.join(format!("{key}.meta.json"));
    let cached = std::fs::read_to_string(&meta)
        .ok()
        .and_then(|t| Chain::from_json(&t))
        .filter(|_| state.is_file());
    let chain = match cached {
        Some(chain) => chain,
        None => {
            let chain = generate(n_orders, &state);
            // Written last: a dump without its meta file is never trusted.
            std::fs::write(&meta, chain.to_json()).unwrap();
            println!(
                "generated {} orders + {} cancellations in {:.1} s ({:.0} tx/s), state in {}",
                chain.orders,
                chain.cancels,
                chain.generated_secs,
                (chain.orders + chain.cancels) as f64 / chain.generated_secs,
                state.display()
            );
            chain
        }
    };

    let start = Instant::now();
    let node = Node::spawn(&["--load-state", state.to_str().unwrap()]);
    let head =
        block_on(sonm_contracts::deploy::provider(node.url.clone()).get_block_number()).unwrap();
    assert_eq!(head, chain.head, "the loaded chain's head");
    let size = std::fs::metadata(&state).map_or(0, |m| m.len());
    let from = chain.addresses.deploy_block;
    let blocks = head - from + 1;
    let expected = chain.orders + chain.cancels + chain.setup_events;
    println!(
        "chain: {} orders + {} cancellations + {} deployment events = {expected} events in \
         blocks {from}..={head} ({blocks} blocks); generated once in {:.1} s, state {} MB \
         loaded in {:.1} s",
        chain.orders,
        chain.cancels,
        chain.setup_events,
        chain.generated_secs,
        size / 1_000_000,
        start.elapsed().as_secs_f64()
    );

    let row = |path: &str, batch: u64, took: &[Duration], note: String| {
        let s = took[took.len() / 2].as_secs_f64();
        let rate = |d: &Duration| expected as f64 / d.as_secs_f64();
        println!(
            "| {path} | {batch} | **{:.0}** ({:.0}–{:.0}) | {:.0} | {s:.2} s | {note} |",
            expected as f64 / s,
            rate(took.last().unwrap()),
            rate(&took[0]),
            blocks as f64 / s
        );
    };
    // Rounds over every batch size in turn, so that a burst of load from elsewhere on
    // the machine does not land on one size only; medians are reported.
    let mut follower: Vec<Vec<(Duration, f64, f64)>> = vec![Vec::new(); batch_sizes.len()];
    let mut breakdowns: Vec<Vec<Breakdown>> = batch_sizes.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, &b) in batch_sizes.iter().enumerate() {
            let (anvil0, self0) = (cpu_secs(&node.pid()), cpu_secs("self"));
            let (events, took) = follow(&node.url, &chain.addresses, b);
            let (anvil1, self1) = (cpu_secs(&node.pid()), cpu_secs("self"));
            assert_eq!(events, expected, "the follower indexed every event");
            follower[i].push((took, anvil1 - anvil0, self1 - self0));
            let bd = breakdown(&node.url, &chain.addresses, head, b);
            assert_eq!(bd.events, expected, "the breakdown decoded every event");
            breakdowns[i].push(bd);
        }
    }
    println!();
    println!(
        "| path | blocks per eth_getLogs | events/s, median of {runs} (min–max) | blocks/s | time | \
         CPU of the median run: anvil / this process |"
    );
    println!("|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (runs, &b) in follower.iter_mut().zip(&batch_sizes) {
        runs.sort_by_key(|r| r.0);
        let (took, anvil, this) = runs[runs.len() / 2];
        let times: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let note = format!("{anvil:.2} s / {this:.2} s");
        row("follower over HTTP (RPC-bound)", b, &times, note);
        medians.push(took);
    }
    for ((bds, &b), took) in breakdowns.iter().zip(&batch_sizes).zip(&medians) {
        let mut lmdb: Vec<Duration> = bds.iter().map(|bd| bd.lmdb).collect();
        lmdb.sort();
        let storage = lmdb[lmdb.len() / 2];
        let note = format!(
            "RPC-bound / storage-bound = {:.2}",
            storage.as_secs_f64() / took.as_secs_f64()
        );
        row(
            "baseline: storage path (commit_batch of the same decoded events)",
            b,
            &lmdb,
            note,
        );
    }

    println!();
    println!(
        "where the time goes: the follower's stages one after another, medians of {runs} \
         (anvil's answers read as raw HTTP bodies, then parsed by us)"
    );
    println!();
    println!(
        "| blocks per eth_getLogs | calls | JSON | anvil: head + 2 block hashes per call | \
         anvil: eth_getLogs | ours: JSON → alloy Logs | ours: ABI → ChainEvents | ours: LMDB commit | sum |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (bds, b) in breakdowns.iter().zip(&batch_sizes) {
        let median = |stage: fn(&Breakdown) -> Duration| {
            let mut v: Vec<Duration> = bds.iter().map(stage).collect();
            v.sort();
            v[v.len() / 2]
        };
        let parts = [
            median(|bd| bd.other_calls),
            median(|bd| bd.rpc),
            median(|bd| bd.json),
            median(|bd| bd.abi),
            median(|bd| bd.lmdb),
        ];
        let stages: Duration = parts.iter().sum();
        let cell = |d: &Duration| {
            format!(
                "{:.2} s ({:.0}%)",
                d.as_secs_f64(),
                100.0 * d.as_secs_f64() / stages.as_secs_f64()
            )
        };
        let cells: Vec<String> = parts.iter().map(cell).collect();
        let bd = &bds[0];
        println!(
            "| {b} | {} | {} MB ({} B/event) | {} | {:.2} s |",
            bd.commits,
            bd.body_bytes / 1_000_000,
            bd.body_bytes as u64 / bd.events.max(1),
            cells.join(" | "),
            stages.as_secs_f64()
        );
    }
    println!("load average at end: {}", load_average());
}
