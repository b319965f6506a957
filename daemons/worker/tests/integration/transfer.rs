//! The task protocol's bulk paths over real QUIC between a real worker (library, in process,
//! on a real anvil with the deployed contracts) and the customer's client: a 40 MiB input
//! uploaded in chunks and hashed by the sha256 job, refusals of bad uploads that leave nothing
//! behind, an output bigger than a frame downloaded and verified, and logs followed live.
//!
//! Needs `contracts/scripts/install-tools.sh` (anvil) and `wasm-runtime/jobs/build.sh`.

use crate::common;

use common::Customer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use sha2::{Digest, Sha256};
use sonm_contracts::anvil::{Anvil, DEV_KEYS};
use sonm_contracts::deploy::signing_provider;
use sonm_market::IdentityLevel;
use sonm_net::{Connection, EthKey};
use sonm_worker::bench::BenchConfig;
use sonm_worker::billing::BillingPolicy;
use sonm_worker::client::{TaskClient, client_endpoint};
use sonm_worker::config::PlanConfig;
use sonm_worker::proto::{
    ALPN, Blob, Exit, File, MAX_FRAME, Request, Response, StartWasm, StartWasmStaged, TaskError,
    TaskLimits,
};
use sonm_worker::{Config, Worker};

fn block_on<F: Future>(future: F) -> F::Output {
    smol::block_on(async_compat::Compat::new(future))
}

/// Writes 6 MiB of 0x5a to `/output/big.bin` (fd 4: the worker preopens `/input`, then
/// `/output`).
const BIG_OUTPUT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "big.bin")
  (func (export "_start") (local $i i32)
    (if (call $open (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 1)
          (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 16))
      (then unreachable))
    (memory.fill (i32.const 65536) (i32.const 0x5a) (i32.const 65536))
    (i32.store (i32.const 32) (i32.const 65536))
    (i32.store (i32.const 36) (i32.const 65536))
    (loop $l
      (if (call $w (i32.load (i32.const 16)) (i32.const 32) (i32.const 1) (i32.const 40))
        (then unreachable))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 96))))))"#;

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

fn config(dir: &std::path::Path, anvil: &Anvil) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        netflags: "outbound".into(),
        poll_interval_ms: 100,
        max_concurrent_tasks: 4,
        max_task_wall_time_ms: 60_000,
        benchmarks: BenchConfig {
            cpu_ms: 20,
            wasm_score_rounds: 20,
            ..BenchConfig::default()
        },
        billing: BillingPolicy { interval: 3600 },
        plans: vec![PlanConfig {
            name: "spot".into(),
            cpu_cores: 2,
            ram: Some("256MiB".into()),
            // The deal's staging cap.
            storage: Some("100MB".into()),
            gpus: 0,
            price: 1_000_000_000,
            duration: 0,
            netflags: "outbound".into(),
            identity_level: IdentityLevel::Anonymous,
        }],
        ..Config::new(
            dir.join("state"),
            dir.join("worker.key"),
            anvil.endpoint().parse().unwrap(),
            dir.join("addresses.toml"),
        )
    }
}

async fn raw(
    key: &PrivateKeySigner,
    addr: SocketAddr,
    worker: alloy::primitives::Address,
) -> Connection {
    let key = EthKey::from_bytes(&key.to_bytes().0).unwrap();
    let endpoint = client_endpoint(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.connect(addr, ALPN, Some(worker)).await.unwrap()
}

async fn ask(conn: &Connection, req: Request) -> Response {
    conn.request(&req, Duration::from_secs(30)).await.unwrap()
}

fn refused(resp: Response) -> TaskError {
    match resp {
        Response::Error(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn big_inputs_and_outputs_travel_in_chunks_and_logs_follow_a_running_task() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let sha256_wasm = std::fs::read(sonm_wasm_runtime::example_jobs_dir().join("sha256.wasm"))
        .expect("wasm-runtime/jobs/build.sh builds sha256.wasm");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &anvil);
    block_on(async {
        let url: alloy::transports::http::reqwest::Url = anvil.endpoint().parse().unwrap();
        let consumer: PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
        let stranger: PrivateKeySigner = DEV_KEYS[3].parse().unwrap();
        let addresses =
            common::deploy_for_worker(&anvil.endpoint(), &config.addresses, &config.key_file).await;
        let worker = Arc::new(Worker::open(config.clone()).await.unwrap());
        worker.sync_plans().await.unwrap();
        let ask_order = worker.plans().unwrap()[0].ask.clone().expect("ask placed");
        let provider = signing_provider(url.clone(), consumer.clone());
        let customer = Customer {
            key: consumer.clone(),
            provider: provider.clone(),
            addresses: addresses.clone(),
        };
        customer.approve().await;
        let bid = customer.bid_for(1, 0, 1_500_000_000, 0).await;
        let deal = customer.open_deal(&ask_order, &bid).await;
        worker.sync_deals().await.unwrap();

        let endpoint = worker.endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let _server = smol::spawn(worker.clone().serve(endpoint.clone()));
        let consumer_key = EthKey::from_bytes(&consumer.to_bytes().0).unwrap();
        let client_ep = client_endpoint(&consumer_key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let client = TaskClient::connect(&client_ep, addr, worker.address())
            .await
            .unwrap();

        // --- 40 MiB of input (more than two frames' worth of the old 16 MiB limit), staged in
        // chunks by the client, moved into the task, hashed by the job.
        let big: Vec<u8> = (0..40u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let t = std::time::Instant::now();
        let progress = std::sync::Mutex::new(Vec::new());
        let task = client
            .start_wasm_with_progress(
                StartWasm {
                    deal,
                    module: sha256_wasm.clone(),
                    args: Vec::new(),
                    inputs: vec![
                        File {
                            path: "big.bin".into(),
                            bytes: big.clone(),
                        },
                        File {
                            path: "small.txt".into(),
                            bytes: b"hi\n".to_vec(),
                        },
                    ],
                    limits: TaskLimits::default(),
                },
                &|done, total| progress.lock().unwrap().push((done, total)),
            )
            .await
            .unwrap();
        let result = client
            .wait_result(task, Duration::from_millis(50), 1200)
            .await
            .unwrap();
        eprintln!("40 MiB staged and hashed in {:?}", t.elapsed());
        assert_eq!(result.exit, Exit::Code(0));
        let sums = String::from_utf8(result.outputs[0].bytes.clone()).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert!(
            sums.contains(&format!("{}  big.bin", hex(&Sha256::digest(&big)))),
            "{sums}"
        );
        assert!(sums.contains(&format!("{}  small.txt", hex(&Sha256::digest(b"hi\n")))));
        let progress = progress.into_inner().unwrap();
        let total = (big.len() + sha256_wasm.len()) as u64;
        assert_eq!(
            progress.last(),
            Some(&(total, total)),
            "progress reached the total"
        );
        assert!(progress.len() >= 40, "reported per chunk");
        assert_eq!(worker.staged_upload_files(), 0, "the uploads were consumed");
        drop(big);

        // --- Bad uploads are refused, typed, and leave nothing behind.
        let conn = raw(&consumer, addr, worker.address()).await;
        let other = raw(&stranger, addr, worker.address()).await;
        let data = vec![1u8; 3000];
        let sha: [u8; 32] = Sha256::digest(&data).into();
        let begin = |total_size, sha256| Request::BeginUpload {
            deal,
            total_size,
            sha256,
        };
        let Response::UploadBegun { upload } = ask(&conn, begin(3000, sha)).await else {
            panic!()
        };
        assert!(matches!(
            refused(ask(&other, begin(3000, sha)).await),
            TaskError::NotConsumer { .. }
        ));
        // A stranger's chunk: refused, and the owner's upload is untouched.
        let chunk = |offset: u64, bytes: &[u8]| Request::Chunk {
            upload,
            offset,
            bytes: bytes.to_vec(),
        };
        assert_eq!(
            refused(ask(&other, chunk(0, &data[..1000])).await),
            TaskError::NotYourUpload { upload }
        );
        assert!(matches!(
            ask(&conn, chunk(0, &data[..1000])).await,
            Response::ChunkTaken { received: 1000 }
        ));
        // A wrong offset: refused, and the upload is gone.
        assert_eq!(
            refused(ask(&conn, chunk(500, &data[1000..])).await),
            TaskError::WrongOffset {
                upload,
                expected: 1000,
                got: 500
            }
        );
        assert_eq!(
            (
                worker.staged_upload_files(),
                worker.staged_upload_bytes(deal)
            ),
            (0, 0)
        );
        assert_eq!(
            refused(ask(&conn, Request::Commit { upload }).await),
            TaskError::UnknownUpload(upload)
        );
        // A commit whose bytes do not hash to the declared sha256.
        let Response::UploadBegun { upload } = ask(&conn, begin(3000, [7; 32])).await else {
            panic!()
        };
        let chunk = Request::Chunk {
            upload,
            offset: 0,
            bytes: data.clone(),
        };
        assert!(matches!(
            ask(&conn, chunk).await,
            Response::ChunkTaken { received: 3000 }
        ));
        assert!(matches!(
            refused(ask(&conn, Request::Commit { upload }).await),
            TaskError::UploadMismatch { .. }
        ));
        assert_eq!(worker.staged_upload_files(), 0);
        // A start naming it is refused too.
        let staged = StartWasmStaged {
            deal,
            module: Blob::Upload(upload),
            args: Vec::new(),
            inputs: Vec::new(),
            limits: TaskLimits::default(),
        };
        assert_eq!(
            refused(ask(&conn, Request::StartWasmStaged(staged)).await),
            TaskError::UnknownUpload(upload)
        );
        // Over the deal's cap (its slice's 100 MB of storage).
        assert!(matches!(
            refused(ask(&conn, begin(200_000_000, sha)).await),
            TaskError::UploadTooLarge {
                asked: 200_000_000,
                cap: 100_000_000,
                ..
            }
        ));
        assert_eq!(
            (
                worker.staged_upload_files(),
                worker.staged_upload_bytes(deal)
            ),
            (0, 0)
        );

        // --- An output bigger than a frame, downloaded in chunks and verified.
        let task = client
            .start_wasm(StartWasm {
                deal,
                module: BIG_OUTPUT.as_bytes().to_vec(),
                args: Vec::new(),
                inputs: Vec::new(),
                limits: TaskLimits::default(),
            })
            .await
            .unwrap();
        let result = client
            .wait_result(task, Duration::from_millis(50), 600)
            .await
            .unwrap();
        assert_eq!(result.exit, Exit::Code(0));
        assert_eq!(result.outputs.len(), 1);
        assert_eq!(result.outputs[0].path, "big.bin");
        assert!(result.outputs[0].bytes.len() > MAX_FRAME as usize);
        assert_eq!(result.outputs[0].bytes, vec![0x5a; 96 << 16]);

        // --- Logs followed while the task runs: every line, in order, then the end.
        let task = client
            .start_wasm(StartWasm {
                deal,
                module: TICKER.as_bytes().to_vec(),
                args: Vec::new(),
                inputs: Vec::new(),
                limits: TaskLimits::default(),
            })
            .await
            .unwrap();
        let (mut out, mut reads_while_running) = (Vec::new(), 0);
        loop {
            let chunk = client.logs(task, out.len() as u64, 0).await.unwrap();
            if !chunk.finished && !chunk.stdout.is_empty() {
                reads_while_running += 1;
            }
            out.extend_from_slice(&chunk.stdout);
            if chunk.finished && chunk.stdout.is_empty() {
                break;
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "line 0\nline 1\nline 2\nline 3\nline 4\n"
        );
        assert!(
            reads_while_running >= 2,
            "lines arrived while it ran: {reads_while_running}"
        );
        // A stranger reads nothing.
        assert_eq!(
            refused(
                ask(
                    &other,
                    Request::Logs {
                        task,
                        stdout_offset: 0,
                        stderr_offset: 0
                    }
                )
                .await
            ),
            TaskError::NotYourTask { task }
        );
    });
}
