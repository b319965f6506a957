//! The customer's round trip on a local network, through the node's HTTP API:
//! quick-buy → task start (the example `hello` WASM job) → result (receipt verified by the
//! node) → close. Median of N runs (`SONM_BENCH_RUNS`, default 10) after one warm-up run,
//! split into chain time and everything else.
//!
//! Chain time is measured, not guessed: the node talks to anvil through a small HTTP proxy in
//! this process that records when each JSON-RPC request arrives and when its response has been
//! relayed back; chain time is the union of those in-flight intervals (requests in parallel
//! count once) within each step. Everything else = step wall time − chain time: the node's own
//! work, QUIC to the worker, the worker's task run and receipt, the CLI-free HTTP to the node.
//! The worker talks to anvil directly (its background polling would otherwise count); a chain
//! read the worker makes on the critical path (a rescan for a deal it has not seen yet) is
//! therefore in "everything else".
//!
//! anvil runs with automine (a block per transaction, no `--block-time`), so chain time is
//! small and what is left is the software's. The daemons are the `target/debug` builds the
//! tests use.
//!
//! Run: `cargo test -p sonm-e2e --bench round_trip` (dev profile, no extra build of the
//! dependency tree) or `cargo bench -p sonm-e2e --bench round_trip` (bench profile for this
//! binary only; the daemons are the same). Not run in CI.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sonm_e2e::{
    CONSUMER_KEY, Meter, Net, Node, RpcProxy, SNM, Worker, address_of, example_job, wait_for,
};

fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = match body {
        None => agent.get(url).call().unwrap(),
        Some(b) if method == "POST" => agent.post(url).send_json(b).unwrap(),
        Some(_) => unreachable!("GET with a body"),
    };
    let status = r.status().as_u16();
    let v = r.body_mut().read_json().unwrap_or(Value::Null);
    (status, v)
}

fn ok(method: &str, url: &str, body: Option<Value>) -> Value {
    let (status, v) = call(method, url, body);
    assert_eq!(status, 200, "{method} {url}: {v}");
    v
}

const STEPS: [&str; 4] = ["quick-buy", "task start", "result", "close"];

/// One round trip: per step (wall, chain, chain requests).
fn round_trip(node: &str, meter: &Meter, ask: u64, module: &str) -> Vec<(Duration, Duration, u64)> {
    let mut out = Vec::new();
    let mut step = |f: &mut dyn FnMut() -> Value| {
        let (c0, n0) = meter.read();
        let t = Instant::now();
        let v = f();
        let wall = t.elapsed();
        let (c1, n1) = meter.read();
        out.push((wall, c1 - c0, n1 - n0));
        v
    };
    let deal = step(&mut || {
        ok(
            "POST",
            &format!("{node}/v1/deals/quick-buy"),
            Some(json!({ "ask_id": ask, "duration": 0 })),
        )
    })["id"]
        .as_u64()
        .unwrap();
    let task = step(&mut || {
        ok(
            "POST",
            &format!("{node}/v1/deals/{deal}/tasks"),
            Some(json!({ "module": { "path": module }, "limits": { "wall_time_ms": 30000 } })),
        )
    })["task"]
        .as_u64()
        .unwrap();
    let result = step(&mut || {
        let url = format!("{node}/v1/deals/{deal}/tasks/{task}/result");
        let start = Instant::now();
        loop {
            let (status, v) = call("GET", &url, None);
            if status == 200 {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no result: {status} {v}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    assert_eq!(result["exit"]["code"], 0, "{result}");
    assert_eq!(result["receipt"]["verified"], true, "{result}");
    step(&mut || {
        ok(
            "POST",
            &format!("{node}/v1/deals/{deal}/close"),
            Some(json!({})),
        )
    });
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --bench` passes nothing special. Either way:
    // run once, print the table.
    let runs: usize = std::env::var("SONM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let customer = address_of(CONSUMER_KEY);
    let net = Net::start(&[], &[(customer, 1_000 * SNM)]);
    let worker = Worker::start(&net, 600);
    let proxy = RpcProxy::start(&net.rpc());
    let meter = proxy.meter.clone();
    // The node reaches the chain through the proxy: its configuration's rpc_url.
    let node = Node::start_with_rpc(&net, CONSUMER_KEY, &worker, None, &proxy.url);
    let module = example_job("hello.wasm");
    let module = module.to_str().unwrap();

    let mut all = Vec::new();
    for run in 0..=runs {
        let ask = node.find_ask();
        let r = round_trip(&node.url, &meter, ask, module);
        if run > 0 {
            all.push(r); // run 0 warms up (QUIC connection, module cache)
        }
        // The worker re-lists the slice after the close: wait for it (not timed).
        wait_for(
            "the worker's ask again",
            Duration::from_secs(60),
            || worker.process.log_text(),
            || {
                let v = node.sonm_ok(&["market", "asks", "--benchmarks", "cpu-cores=1"]);
                (v["orders"][0]["id"].as_u64().is_some_and(|id| id != ask)).then_some(())
            },
        );
        // The worker looks a deal it has not seen yet up on the chain at most every 500 ms
        // and refuses it otherwise (see tests/integration/fresh_deal.rs): keep the runs further apart.
        std::thread::sleep(Duration::from_millis(600));
    }

    println!(
        "customer round trip through the node's HTTP API, median of {runs} runs (anvil automine; debug daemons)"
    );
    println!(
        "{:<12} {:>10} {:>10} {:>14} {:>10}",
        "step", "total ms", "chain ms", "else ms", "chain RPCs"
    );
    let row = |name: &str,
               wall: Vec<Duration>,
               chain: Vec<Duration>,
               other: Vec<Duration>,
               n: Vec<u64>| {
        let mut n = n;
        n.sort();
        println!(
            "{:<12} {:>10} {:>10} {:>14} {:>10}",
            name,
            ms(median(wall)),
            ms(median(chain)),
            ms(median(other)),
            n[n.len() / 2]
        );
    };
    for (i, name) in STEPS.iter().enumerate() {
        row(
            name,
            all.iter().map(|r| r[i].0).collect(),
            all.iter().map(|r| r[i].1).collect(),
            all.iter().map(|r| r[i].0.saturating_sub(r[i].1)).collect(),
            all.iter().map(|r| r[i].2).collect(),
        );
    }
    let sum = |r: &Vec<(Duration, Duration, u64)>,
               f: fn(&(Duration, Duration, u64)) -> Duration| {
        r.iter().map(f).sum::<Duration>()
    };
    row(
        "round trip",
        all.iter().map(|r| sum(r, |s| s.0)).collect(),
        all.iter().map(|r| sum(r, |s| s.1)).collect(),
        all.iter()
            .map(|r| sum(r, |s| s.0.saturating_sub(s.1)))
            .collect(),
        all.iter().map(|r| r.iter().map(|s| s.2).sum()).collect(),
    );
    let other = median(
        all.iter()
            .map(|r| sum(r, |s| s.0.saturating_sub(s.1)))
            .collect(),
    );
    println!(
        "goal: everything else <= 500 ms per round trip: {} ({} ms)",
        if other <= Duration::from_millis(500) {
            "met"
        } else {
            "NOT met"
        },
        ms(other)
    );
}
