//! A customer's big job and a chatty one through the node and the CLI: real anvil,
//! sonm-worker, sonm-node and `sonm` processes. A 24 MiB input (more than the old one-message
//! limit of 16 MiB) goes up in chunks and the sha256 job's digest matches; `sonm task logs -f`
//! prints every line of a job that prints over time, in order, and exits when it ends.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sonm_e2e::{CONSUMER_KEY, Net, Node, SNM, Worker, address_of, bin, example_job};

/// Prints "line 0" .. "line 4", one every 300 ms (busy-waiting on the monotonic clock).
const TICKER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "line 0\n")
  (func $ns (result i64)
    (drop (call $now (i32.const 1) (i64.const 0) (i32.const 200)))
    (i64.load (i32.const 200)))
  (func (export "_start") (local $i i32) (local $t i64)
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 7))
    (loop $l
      (i32.store8 (i32.const 105) (i32.add (i32.const 48) (local.get $i)))
      (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $t (call $ns))
      (loop $wait
        (br_if $wait (i64.lt_u (i64.sub (call $ns) (local.get $t)) (i64.const 300000000))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 5))))))"#;

fn spec(
    dir: &std::path::Path,
    name: &str,
    module: &std::path::Path,
    input: Option<&std::path::Path>,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let input = input.map_or(String::new(), |d| {
        format!("input_dir = \"{}\"\n", d.display())
    });
    std::fs::write(
        &path,
        format!(
            "{input}[module]\npath = \"{}\"\n\n[limits]\nmemory_bytes = 33554432\nwall_time_ms = 60000\n",
            module.display()
        ),
    )
    .unwrap();
    path
}

fn sha256_hex(bytes: &[u8]) -> String {
    // The sha256 job's own answer is checked against `sha256sum`, the reference here.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&f).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn a_big_input_goes_up_in_chunks_and_logs_follow_a_running_job() {
    let customer = address_of(CONSUMER_KEY);
    let net = Net::start(&[], &[(customer, 1_000 * SNM)]);
    let worker = Worker::start(&net, 3600);
    let node = Node::start(&net, CONSUMER_KEY, &worker, None);
    let deal = node.buy(node.find_ask());
    let dir = net.dir.path();

    // --- 24 MiB of input through the node's staged upload.
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(input.join("big.bin"), &big).unwrap();
    let job = spec(dir, "sha", &example_job("sha256.wasm"), Some(&input));
    let t = Instant::now();
    let task = node.start_task(deal, &job);
    let out = dir.join("out");
    let result = node.sonm_ok(&[
        "task",
        "result",
        &deal.to_string(),
        &task.to_string(),
        "--wait",
        "120",
        "--out",
        out.to_str().unwrap(),
    ]);
    eprintln!("24 MiB job through the node in {:?}", t.elapsed());
    assert_eq!(result["exit"]["code"], 0, "{result}");
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums, format!("{}  big.bin\n", sha256_hex(&big)));

    // --- The same start through the API with a progress token: the node reports its upload
    // while the request runs (what the CLI's bar draws), and forgets it afterwards.
    let body = serde_json::json!({ "job_spec": job, "progress": "e2e-1" });
    let url = format!("{}/v1/deals/{deal}/tasks", node.url);
    let seen = std::thread::scope(|scope| {
        let post = scope.spawn(|| {
            ureq::post(&url)
                .send_json(&body)
                .unwrap()
                .body_mut()
                .read_json::<serde_json::Value>()
                .unwrap()
        });
        let mut seen = Vec::new();
        while !post.is_finished() {
            if let Some(v) = sonm_e2e::http_get(&format!("{}/v1/transfers/e2e-1", node.url)) {
                seen.push((v["done"].as_u64().unwrap(), v["total"].as_u64().unwrap()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (post.join().unwrap()["task"].as_u64().unwrap(), seen)
    });
    let (task, seen) = seen;
    let total = big.len() as u64 + std::fs::metadata(example_job("sha256.wasm")).unwrap().len();
    assert!(
        seen.iter().any(|&(d, t)| t == total && d > 0),
        "progress of the {total}-byte upload was reported: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert!(sonm_e2e::http_get(&format!("{}/v1/transfers/e2e-1", node.url)).is_none());
    // The slice has one core: let that task end first.
    node.sonm_ok(&[
        "task",
        "result",
        &deal.to_string(),
        &task.to_string(),
        "--wait",
        "120",
    ]);

    // --- `sonm task logs -f` on a job that prints over time.
    let ticker = dir.join("ticker.wat");
    std::fs::write(&ticker, TICKER).unwrap();
    let task = node.start_task(deal, &spec(dir, "ticker", &ticker, None));
    let mut follow = Command::new(bin("sonm"))
        .args([
            "--node",
            &node.url,
            "task",
            "logs",
            "-f",
            &deal.to_string(),
            &task.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while follow.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "logs -f did not end with its task");
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = follow.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        String::from_utf8(done.stdout).unwrap(),
        "line 0\nline 1\nline 2\nline 3\nline 4\n"
    );
    let status = node.task_status(deal, task).unwrap();
    assert_eq!(
        status["status"], "finished",
        "logs -f ended only once the task had: {status}"
    );
}
