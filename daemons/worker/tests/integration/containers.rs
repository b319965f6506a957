//! Native containers against the real runc with a busybox-static rootfs the test builds: a
//! program's stdout and `/output`, the isolation it runs in, the memory limit (OOM-killed, typed),
//! stop on request and when the deal ends, wall time, logs read live while it runs, rootfs tars
//! that try to escape (refused, typed, nothing written outside), and the clean-up after a crash.
//!
//! Each test skips, saying exactly why, when it is not root, runc is missing or cannot start a
//! container here — unless `SONM_REQUIRE_CONTAINERS` is set (scripts/test.sh sets it when it
//! runs as root, having installed runc, busybox, iproute2 and nftables): then a skip is a
//! failure, so a start-up bug cannot pass as "this machine cannot run containers".
//! The stranger's refusal is in `tests/integration/e2e.rs` (it needs a deal on chain).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use sha2::{Digest, Sha256};
use sonm_market::Address;
use sonm_wasm_runtime::{Metering, Runtime, RuntimeConfig};
use sonm_worker::containers::{ContainerLimits, Containers, NetConfig, RootfsError, Runc};
use sonm_worker::proto::{Exit, KillCause, StartContainer, TaskError, TaskLimits, TaskStatus};
use sonm_worker::receipt::{Fuel, verify_result};
use sonm_worker::state::Store;
use sonm_worker::tasks::TaskRunner;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 16] = [
    "sh", "echo", "cat", "sleep", "dd", "mkdir", "id", "grep", "touch", "true", "ls", "nc", "ip",
    "sed", "seq", "head",
];

/// A rootfs tar: busybox-static and symlinks to it, as `bin/`.
fn busybox_rootfs() -> Vec<u8> {
    busybox_builder().into_inner().unwrap()
}

/// The rootfs being built (more entries may follow).
fn busybox_builder() -> tar::Builder<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir, "bin", std::io::empty()).unwrap();
    b.append_path_with_name(BUSYBOX, "bin/busybox").unwrap();
    for a in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    b
}

/// Prints why a test cannot run here and returns, or fails it where containers are required.
fn skip(why: impl std::fmt::Display) {
    if std::env::var_os("SONM_REQUIRE_CONTAINERS").is_some() {
        panic!("containers are required here (SONM_REQUIRE_CONTAINERS) but: {why}");
    }
    eprintln!("SKIP: {why}");
}

struct Harness {
    dir: tempfile::TempDir,
    runner: TaskRunner,
    key: PrivateKeySigner,
    instance: String,
}

const PEER: Address = Address::repeat_byte(7);

fn runtime(metering: Metering) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig {
            metering,
            max_concurrent_jobs: 1,
            ..RuntimeConfig::default()
        })
        .unwrap(),
    )
}

fn containers(state: &Path, instance: &str) -> Containers {
    Containers::new(state, true, PathBuf::from("runc"), instance.into())
}

/// A task runner with containers, or why this machine cannot run them (printed: the skip).
fn harness() -> Option<Harness> {
    harness_with(|c| c)
}

/// [`harness`] with its [`Containers`] changed by `setup` (a device directory, a network).
fn harness_with(setup: impl FnOnce(Containers) -> Containers) -> Option<Harness> {
    if !Path::new(BUSYBOX).exists() {
        skip(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let key = PrivateKeySigner::random();
    let instance = alloy::primitives::hex::encode(&key.address().as_slice()[..4]);
    let c = setup(containers(&state, &instance));
    if let Err(e) = &c.ready {
        skip(e);
        return None;
    }
    let runner = TaskRunner::new(
        runtime(Metering::EpochOnly),
        runtime(Metering::Fuel),
        8,
        state.join("tasks"),
        key.clone(),
        31337,
        Store::open(&state.join("lmdb")).unwrap(),
    )
    .with_containers(c);
    let h = Harness {
        dir,
        runner,
        key,
        instance,
    };
    // Whether runc can start a container on this kernel at all (crun cannot, on hybrid cgroups).
    h.start(1, vec!["true".into()], limits()).unwrap();
    if let TaskStatus::Failed(e) = h.wait(1) {
        skip(format!("runc cannot start a container here: {e}"));
        return None;
    }
    Some(h)
}

fn limits() -> ContainerLimits {
    ContainerLimits {
        memory_bytes: 64 << 20,
        cpu_cores: 1,
        wall_time_ms: 60_000,
        output_bytes: 1 << 20,
        output_entries: 100,
        rootfs_bytes: 16 << 20,
        gpus: Vec::new(),
        outbound: false,
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

impl Harness {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start_with(
        &self,
        task: u64,
        rootfs: Vec<u8>,
        args: Vec<String>,
        limits: ContainerLimits,
    ) -> Result<(), TaskError> {
        let req = StartContainer {
            deal: 1,
            rootfs,
            args,
            env: vec!["GREETING=hello".into()],
            limits: TaskLimits::default(),
        };
        self.runner.start_container(task, 1, PEER, req, limits)
    }

    fn start(
        &self,
        task: u64,
        args: Vec<String>,
        limits: ContainerLimits,
    ) -> Result<(), TaskError> {
        self.start_with(task, busybox_rootfs(), args, limits)
    }

    /// Waits (bounded) until `task` is no longer running.
    fn wait(&self, task: u64) -> TaskStatus {
        for _ in 0..1500 {
            match self.runner.status(task, PEER).unwrap() {
                TaskStatus::Running => std::thread::sleep(Duration::from_millis(20)),
                done => return done,
            }
        }
        panic!("task {task} still running after 30 s");
    }

    /// Waits (bounded) until runc lists `task`'s container as running.
    fn wait_running(&self, task: u64) {
        let runc = Runc {
            binary: "runc".into(),
            root: self.state().join("runc"),
        };
        let id = format!("sonm-{}-{task}", self.instance);
        for _ in 0..500 {
            if runc
                .list()
                .unwrap_or_default()
                .iter()
                .any(|c| c.id == id && c.status == "running")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("container {id} never ran");
    }
}

#[test]
fn a_container_runs_isolated_and_returns_stdout_outputs_and_a_receipt() {
    let Some(h) = harness() else { return };
    let script = "echo $GREETING; echo data > /output/result.txt; mkdir /output/d; echo x > /output/d/y; \
        touch /bin/x 2>/dev/null && echo rootfs-writable; touch /tmp/t && echo tmp-ok; \
        id -u; grep CapEff /proc/self/status; cat /proc/net/dev | grep -c :; \
        echo oops >&2; exit 3";
    h.start(2, sh(script), limits()).unwrap();
    assert_eq!(h.wait(2), TaskStatus::Finished(Exit::Code(3)));
    let r = h.runner.result(2, PEER).unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // Read-only rootfs, writable /tmp, root only in its user namespace, no capability, and a
    // network namespace with loopback only (one interface line in /proc/net/dev).
    assert_eq!(
        lines,
        ["hello", "tmp-ok", "0", "CapEff:\t0000000000000000", "1"],
        "{stdout}"
    );
    assert_eq!(r.stderr, b"oops\n");
    let outputs: Vec<(&str, &[u8])> = r
        .outputs
        .iter()
        .map(|f| (f.path.as_str(), &f.bytes[..]))
        .collect();
    assert_eq!(
        outputs,
        [("d/y", &b"x\n"[..]), ("result.txt", &b"data\n"[..])]
    );
    verify_result(&r, h.key.address()).unwrap();
    let receipt = &r.receipt.receipt;
    assert_eq!(receipt.fuel, Fuel::NotMetered);
    assert_eq!((receipt.trapped, receipt.exit_code), (false, 3));
    assert!(receipt.wall_time_us > 0);
    assert_eq!(
        receipt.module_sha256,
        <[u8; 32]>::from(Sha256::digest(busybox_rootfs()))
    );
    // The bundle and the container are gone.
    assert!(!h.state().join("containers/2").exists());
    let runc = Runc {
        binary: "runc".into(),
        root: h.state().join("runc"),
    };
    assert!(runc.list().unwrap().is_empty());
}

#[test]
fn a_memory_hog_is_oom_killed() {
    let Some(h) = harness() else { return };
    let hog = ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"];
    let small = ContainerLimits {
        memory_bytes: 32 << 20,
        ..limits()
    };
    h.start(2, hog.iter().map(|s| s.to_string()).collect(), small)
        .unwrap();
    assert_eq!(
        h.wait(2),
        TaskStatus::Finished(Exit::Killed(KillCause::OomKilled))
    );
    let r = h.runner.result(2, PEER).unwrap();
    assert!(r.receipt.receipt.trapped);
    verify_result(&r, h.key.address()).unwrap();
    // Within the limit the same program exits 0.
    let ok = ["dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1"];
    h.start(3, ok.iter().map(|s| s.to_string()).collect(), limits())
        .unwrap();
    assert_eq!(h.wait(3), TaskStatus::Finished(Exit::Code(0)));
}

#[test]
fn a_sleeping_container_is_stopped_on_request_on_deal_end_and_by_wall_time() {
    let Some(h) = harness() else { return };
    let sleep = || vec!["sleep".to_string(), "600".to_string()];
    h.start(2, sleep(), limits()).unwrap();
    h.wait_running(2);
    // Only its consumer may stop it.
    assert!(matches!(
        h.runner.stop(2, Address::repeat_byte(9)),
        Err(TaskError::NotYourTask { .. })
    ));
    h.runner.stop(2, PEER).unwrap();
    assert_eq!(
        h.wait(2),
        TaskStatus::Finished(Exit::Killed(KillCause::Stopped))
    );

    h.start(3, sleep(), limits()).unwrap();
    h.wait_running(3);
    // What the worker does when a deal closes.
    h.runner.stop_deal(1);
    assert_eq!(
        h.wait(3),
        TaskStatus::Finished(Exit::Killed(KillCause::Stopped))
    );

    let short = ContainerLimits {
        wall_time_ms: 500,
        ..limits()
    };
    h.start(4, sleep(), short).unwrap();
    assert_eq!(
        h.wait(4),
        TaskStatus::Finished(Exit::Killed(KillCause::WallTime))
    );
    assert_eq!(h.runner.running_for_deal(1), 0);
}

/// A tar entry with a raw name (`tar::Builder` refuses the unsafe ones we need).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn evil_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            b"pwned"
        } else {
            b""
        };
        raw_entry(&mut b, name, *kind, link, data);
    }
    b.into_inner().unwrap()
}

#[test]
fn rootfs_tars_that_escape_are_refused_and_write_nothing_outside() {
    let Some(h) = harness() else { return };
    use tar::EntryType::{Block, Char, Link, Regular, Symlink};
    let outside = h.dir.path().join("pwned");
    let abs = format!("{}", outside.display());
    type Case<'a> = (
        Vec<(&'a str, tar::EntryType, &'a str)>,
        fn(&RootfsError) -> bool,
    );
    let cases: Vec<Case<'_>> = vec![
        (vec![("../../../../pwned", Regular, "")], |e| {
            matches!(e, RootfsError::UnsafePath(_))
        }),
        (vec![("ok/../../../../../pwned", Regular, "")], |e| {
            matches!(e, RootfsError::UnsafePath(_))
        }),
        (vec![(&abs, Regular, "")], |e| {
            matches!(e, RootfsError::UnsafePath(_))
        }),
        (vec![("esc", Symlink, "../../../..")], |e| {
            matches!(e, RootfsError::LinkEscape { .. })
        }),
        (vec![("bin/esc", Symlink, "../../x")], |e| {
            matches!(e, RootfsError::LinkEscape { .. })
        }),
        // An absolute link is fine inside the container, but nothing is written through it.
        (vec![("up", Symlink, "/"), ("up/pwned", Regular, "")], |e| {
            matches!(e, RootfsError::ThroughLink(_))
        }),
        (vec![("d", Symlink, &abs), ("d/x", Regular, "")], |e| {
            matches!(e, RootfsError::ThroughLink(_))
        }),
        (vec![("hl", Link, "../../../../etc/passwd")], |e| {
            matches!(e, RootfsError::BadHardLink { .. })
        }),
        (vec![("hl", Link, "/etc/passwd")], |e| {
            matches!(e, RootfsError::BadHardLink { .. })
        }),
        (vec![("null", Char, "")], |e| {
            matches!(e, RootfsError::Special { .. })
        }),
        (vec![("sda", Block, "")], |e| {
            matches!(e, RootfsError::Special { .. })
        }),
        (vec![("tmp", Regular, "")], |e| {
            matches!(e, RootfsError::MountPoint(_))
        }),
    ];
    for (i, (entries, expected)) in cases.into_iter().enumerate() {
        let task = 10 + i as u64;
        let err = h
            .start_with(task, evil_tar(&entries), sh("true"), limits())
            .expect_err(&format!("{entries:?} accepted"));
        match &err {
            TaskError::BadRootfs(e) if expected(e) => {}
            other => panic!("{entries:?}: {other:?}"),
        }
        assert!(!outside.exists(), "{entries:?} wrote outside");
        assert!(!h.state().join(format!("containers/{task}")).exists());
    }
    assert!(!Path::new("/pwned").exists());
    // Too big, and setuid bits stripped from what is accepted.
    let big = ContainerLimits {
        rootfs_bytes: 1000,
        ..limits()
    };
    assert!(matches!(
        h.start(30, sh("true"), big),
        Err(TaskError::BadRootfs(RootfsError::TooBig { limit: 1000 }))
    ));
    let mut b = busybox_builder();
    let mut s = tar::Header::new_gnu();
    s.set_mode(0o4755);
    s.set_size(2);
    b.append_data(&mut s, "bin/suid", &b"#!"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    h.start_with(31, tar, sh("ls -l /bin/suid"), limits())
        .unwrap();
    h.wait(31);
    let out = h.runner.result(31, PEER).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("-rwxr-xr-x"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn leftovers_of_a_crash_are_deleted_at_start() {
    let Some(h) = harness() else { return };
    h.start(2, vec!["sleep".into(), "600".into()], limits())
        .unwrap();
    h.wait_running(2);
    // The worker "crashes": its runner is gone without stopping anything (its thread keeps
    // waiting on runc, as a kill -9 leaves the container running), and a new one starts.
    let Harness {
        dir,
        runner,
        instance,
        ..
    } = h;
    std::mem::forget(runner);
    let state = dir.path().join("state");
    let fresh = containers(&state, &instance);
    assert_eq!(fresh.clean_leftovers().unwrap(), 1);
    let runc = Runc {
        binary: "runc".into(),
        root: state.join("runc"),
    };
    assert!(runc.list().unwrap().is_empty());
    assert!(!state.join("containers/2").exists());
    // Its /output filesystem (a loop mount) is gone with it.
    nothing_mounted_under(&state);
    assert_eq!(fresh.clean_leftovers().unwrap(), 0);
}

#[test]
fn containers_are_refused_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TaskRunner::new(
        runtime(Metering::EpochOnly),
        runtime(Metering::Fuel),
        1,
        dir.path().join("tasks"),
        PrivateKeySigner::random(),
        31337,
        Store::open(&dir.path().join("lmdb")).unwrap(),
    )
    .with_containers(Containers::new(
        dir.path(),
        false,
        "runc".into(),
        "x".into(),
    ));
    let req = StartContainer {
        deal: 1,
        rootfs: busybox_rootfs_or_empty(),
        args: vec!["true".into()],
        env: Vec::new(),
        limits: TaskLimits::default(),
    };
    match runner.start_container(1, 1, PEER, req, limits()) {
        Err(TaskError::ContainersUnavailable(why)) => {
            assert!(why.contains("containers = false"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("containers").exists());
}

fn busybox_rootfs_or_empty() -> Vec<u8> {
    if Path::new(BUSYBOX).exists() {
        busybox_rootfs()
    } else {
        Vec::new()
    }
}

#[test]
fn a_running_container_s_logs_are_read_live_and_in_order() {
    let Some(h) = harness() else { return };
    let script = "for i in 0 1 2 3 4; do echo line $i; echo err $i >&2; sleep 0.3; done";
    h.start(9, sh(script), limits()).unwrap();
    let (mut out, mut err, mut live) = (Vec::new(), Vec::new(), 0);
    for _ in 0..600 {
        let chunk = h
            .runner
            .logs(9, PEER, out.len() as u64, err.len() as u64)
            .unwrap();
        if !chunk.finished && !chunk.stdout.is_empty() {
            live += 1;
        }
        out.extend_from_slice(&chunk.stdout);
        err.extend_from_slice(&chunk.stderr);
        if chunk.finished && chunk.stdout.is_empty() && chunk.stderr.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "line 0\nline 1\nline 2\nline 3\nline 4\n"
    );
    assert_eq!(
        String::from_utf8(err).unwrap(),
        "err 0\nerr 1\nerr 2\nerr 3\nerr 4\n"
    );
    assert!(live >= 2, "lines were read while it ran: {live}");
    assert!(matches!(
        h.runner.logs(9, Address::repeat_byte(8), 0, 0),
        Err(TaskError::NotYourTask { task: 9 })
    ));
}

/// Nothing of `state` is mounted any more (its `/output` filesystems are gone).
fn nothing_mounted_under(state: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state = state.to_string_lossy();
    assert!(
        !info.lines().any(|l| l.contains(&*state)),
        "still mounted under {state}:\n{info}"
    );
}

/// Waits (bounded) until `task`'s stdout contains `needle`; returns it.
fn wait_stdout(h: &Harness, task: u64, needle: &str) -> String {
    let mut out = Vec::new();
    for _ in 0..1500 {
        let c = h.runner.logs(task, PEER, out.len() as u64, 0).unwrap();
        out.extend_from_slice(&c.stdout);
        let text = String::from_utf8_lossy(&out).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(!c.finished, "task {task} ended without {needle:?}: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("task {task} never printed {needle:?}");
}

#[test]
fn output_quota_is_enforced_by_the_kernel_while_the_container_runs() {
    let Some(h) = harness() else { return };
    let quota = 1u64 << 20;
    let limits = ContainerLimits {
        output_bytes: quota,
        output_entries: 100,
        ..limits()
    };
    // 5 MiB into a 1 MiB /output: dd gets ENOSPC, the container goes on and exits 0.
    let script = "dd if=/dev/zero of=/output/big bs=64k count=80; echo dd=$?; sleep 1; exit 0";
    h.start(2, sh(script), limits.clone()).unwrap();
    let out = wait_stdout(&h, 2, "dd=");
    assert!(out.contains("dd=1"), "dd must fail: {out}");
    // While it runs: the host holds at most the quota for it, on a loop-mounted filesystem.
    let image = h.state().join("containers/2/output.img");
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(allocated <= quota, "{allocated} bytes on the host's disk");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let output = h.state().join("containers/2/output");
    assert!(
        info.lines()
            .any(|l| l.contains(&*output.to_string_lossy()) && l.contains(" ext4 ")),
        "{info}"
    );
    match h.wait(2) {
        TaskStatus::Failed(why) => {
            assert!(why.contains("filled /output"), "{why}");
            assert!(why.contains(&format!("{quota} bytes")), "{why}");
            assert!(why.contains("exited with code 0"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    nothing_mounted_under(&h.state());
    // The bundle (with the image) goes right after the status is set.
    let bundle = h.state().join("containers/2");
    for _ in 0..500 {
        if !bundle.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!bundle.exists());

    // Entries: 200 files where 100 may be; the kernel refuses the rest.
    let script =
        "for i in $(seq 1 200); do touch /output/f$i 2>/dev/null || break; done; echo i=$i";
    h.start(3, sh(script), limits.clone()).unwrap();
    match h.wait(3) {
        TaskStatus::Failed(why) => assert!(why.contains("100 entries"), "{why}"),
        other => panic!("{other:?}"),
    }
    nothing_mounted_under(&h.state());

    // The next task runs, and output within the quota comes back whole.
    h.start(4, sh("head -c 300000 /dev/zero > /output/ok"), limits)
        .unwrap();
    assert_eq!(h.wait(4), TaskStatus::Finished(Exit::Code(0)));
    let r = h.runner.result(4, PEER).unwrap();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].bytes.len(), 300_000);
    nothing_mounted_under(&h.state());
}

/// Makes character device `name` (`major:minor`, mode 0666) in `dir`.
fn mknod(dir: &Path, name: &str, major: u32, minor: u32) -> bool {
    std::process::Command::new("mknod")
        .args(["-m", "666"])
        .arg(dir.join(name))
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_gpu_slice_s_device_nodes_are_passed_through_and_usable() {
    // Stand-ins for NVIDIA nodes: /dev/null's numbers (1:3) for the GPUs and UVM, and the real
    // nvidiactl numbers (195:255) with no driver behind them, so an open that the device
    // cgroup lets through fails with ENXIO rather than EPERM.
    let devs = tempfile::tempdir().unwrap();
    for (name, major, minor) in [
        ("nvidiactl", 195, 255),
        ("nvidia-uvm", 1, 3),
        ("nvidia0", 1, 3),
        ("nvidia1", 1, 3),
    ] {
        if !mknod(devs.path(), name, major, minor) {
            skip(format!("cannot mknod in {}", devs.path().display()));
            return;
        }
    }
    let dir = devs.path().to_path_buf();
    let Some(h) = harness_with(|c| c.with_device_dir(dir)) else {
        return;
    };
    // The slice holds GPU 1 only.
    let gpu = ContainerLimits {
        gpus: vec![1],
        ..limits()
    };
    let script = "ls /dev | grep nvidia; echo written > /dev/nvidia1 && echo gpu-ok; \
        cat /dev/nvidia1; echo x > /dev/nvidiactl; echo x > /dev/nvidia-uvm && echo uvm-ok";
    h.start(2, sh(script), gpu).unwrap();
    assert_eq!(h.wait(2), TaskStatus::Finished(Exit::Code(0)));
    let r = h.runner.result(2, PEER).unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["nvidia-uvm", "nvidia1", "nvidiactl", "gpu-ok", "uvm-ok"],
        "{stdout}{stderr}"
    );
    // The cgroup let the open through to the (absent) driver: ENXIO, not EPERM.
    assert!(
        stderr.contains("nvidiactl: No such device or address"),
        "{stderr}"
    );
    // A slice without GPUs sees none of them.
    h.start(3, sh("ls /dev | grep nvidia; echo done"), limits())
        .unwrap();
    assert_eq!(h.wait(3), TaskStatus::Finished(Exit::Code(0)));
    let r = h.runner.result(3, PEER).unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "done\n");
}

/// A network namespace standing in for a network beyond the host (the internet, a LAN), routed
/// from the host over a veth (`<host>/24` here, `<server>/24` there), with a TCP server on port
/// 8080 that answers `name`; deleted (with its veth and server) when dropped.
struct StandIn {
    netns: String,
    server: std::process::Child,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

const INTERNET_HOST: &str = "203.0.113.1";
const INTERNET_SERVER: &str = "203.0.113.2";
const LAN_HOST: &str = "198.51.100.1";
const LAN_SERVER: &str = "198.51.100.2";

fn stand_in(name: &str, host: &str, server: &str) -> Result<StandIn, String> {
    let netns = format!("sonmtest-{name}-{}", std::process::id());
    let ip = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let host_link = format!("t{name}{}", std::process::id() % 100_000);
    ip(&["netns", "add", &netns])?;
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &netns, BUSYBOX, "nc", "-ll", "-p", "8080"])
        .args(["-e", "echo", name])
        .spawn();
    let net = StandIn {
        netns: netns.clone(),
        server: child.map_err(|e| format!("starting the server: {e}"))?,
    };
    ip(&[
        "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ])?;
    ip(&["addr", "add", &format!("{host}/24"), "dev", &host_link])?;
    ip(&["link", "set", &host_link, "up"])?;
    ip(&[
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{server}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &netns, "link", "set", "lo", "up"])?;
    Ok(net)
}

/// Stops task `.1` when dropped and waits (bounded) for its end, so a failed assertion does
/// not leave its container running.
struct StopOnDrop<'a>(&'a Harness, u64);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.runner.stop(self.1, PEER);
        for _ in 0..500 {
            match self.0.runner.status(self.1, PEER) {
                Ok(TaskStatus::Running) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
    }
}

/// The device check (`scripts/gpu-check.sh run`, on a machine with an NVIDIA GPU and its
/// driver): the host's GPU 0 and control nodes, passed into a container on a GPU slice by the
/// same path as above, open inside it; the driver answers, where the stand-ins above could not.
#[test]
#[ignore = "needs an NVIDIA GPU and its driver: scripts/gpu-check.sh run"]
fn a_real_gpu_opens_inside_a_gpu_container() {
    assert!(
        Path::new("/dev/nvidia0").exists() && Path::new("/dev/nvidiactl").exists(),
        "no /dev/nvidia0 or /dev/nvidiactl: not a machine with an NVIDIA driver loaded"
    );
    let Some(h) = harness() else {
        panic!("containers cannot run here (see the SKIP line above)");
    };
    let gpu = ContainerLimits {
        gpus: vec![0],
        ..limits()
    };
    let script = "ls /dev | grep nvidia; exec 3<>/dev/nvidiactl && echo ctl-open; \
        exec 4<>/dev/nvidia0 && echo gpu0-open";
    h.start(2, sh(script), gpu).unwrap();
    let status = h.wait(2);
    let r = h.runner.result(2, PEER).unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    println!("inside the container:\n{stdout}{stderr}");
    assert_eq!(status, TaskStatus::Finished(Exit::Code(0)), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    for want in ["nvidia0", "nvidiactl", "ctl-open", "gpu0-open"] {
        assert!(lines.contains(&want), "{want} missing: {stdout}{stderr}");
    }
}

#[test]
fn outbound_containers_reach_the_internet_and_nothing_of_the_host() {
    for tool in ["ip", "nft"] {
        let found = std::process::Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip(format!("`{tool}` is not installed (iproute2, nftables)"));
            return;
        }
    }
    // Its own subnet (other tests' workers on this host use the default one); the stand-in
    // LAN is the supplier's, denied.
    let net = NetConfig::new("10.219.0.0/24", &["198.51.100.0/24".into()]).unwrap();
    let Some(h) = harness_with(|c| c.with_net(net)) else {
        return;
    };
    let nets = stand_in("internet", INTERNET_HOST, INTERNET_SERVER)
        .and_then(|i| Ok((i, stand_in("lan", LAN_HOST, LAN_SERVER)?)));
    let _nets = match nets {
        Ok(n) => n,
        Err(e) => {
            skip(format!("cannot build the stand-in networks: {e}"));
            return;
        }
    };
    // A listener on the host's own addresses; nothing may connect to it.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = reached.clone();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = std::io::Write::write_all(&mut c, b"host\n");
        }
    });
    let outbound = ContainerLimits {
        outbound: true,
        ..limits()
    };
    // Another outbound container, listening: task 4 gets slot 4 of the /24, 10.219.0.18.
    h.start(
        4,
        sh("ip -o -4 addr show eth0; nc -ll -p 9000 -e echo peer"),
        outbound.clone(),
    )
    .unwrap();
    // Stopped (and its network torn down) even if an assertion below fails.
    let _listener_task = StopOnDrop(&h, 4);
    wait_stdout(&h, 4, "inet 10.219.0.18/30");
    let script = format!(
        "gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'); \
         nc -w 3 {INTERNET_SERVER} 8080 </dev/null; echo internet=$?; \
         nc -w 1 {INTERNET_HOST} {port} </dev/null; echo host-address=$?; \
         nc -w 1 ${{gw:-10.219.0.1}} {port} </dev/null; echo gateway=$?; \
         nc -w 1 10.219.0.18 9000 </dev/null; echo other-container=$?; \
         nc -w 1 {LAN_SERVER} 8080 </dev/null; echo lan=$?; \
         nc -w 1 169.254.169.254 80 </dev/null; echo metadata=$?"
    );
    h.start(2, sh(&script), outbound).unwrap();
    assert_eq!(h.wait(2), TaskStatus::Finished(Exit::Code(0)));
    let r = h.runner.result(2, PEER).unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "internet",
            "internet=0",
            "host-address=1",
            "gateway=1",
            "other-container=1",
            "lan=1",
            "metadata=1"
        ],
        "{stdout}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    h.runner.stop(4, PEER).unwrap();
    h.wait(4);
    // Without the netflag: loopback only, nothing reachable.
    h.start(3, sh(&script), limits()).unwrap();
    assert_eq!(h.wait(3), TaskStatus::Finished(Exit::Code(0)));
    let r = h.runner.result(3, PEER).unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "internet=1",
            "host-address=1",
            "gateway=1",
            "other-container=1",
            "lan=1",
            "metadata=1"
        ],
        "{stdout}"
    );
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Nothing of the tasks is left: no namespace, no veth.
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let prefix = format!("sonm-{}-", h.instance);
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&prefix));
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let link_prefix = format!("s{}h", &h.instance[..8]);
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&link_prefix),
        "{}",
        String::from_utf8_lossy(&links.stdout)
    );
    // The start-up clean-up removes the worker's table too.
    let table = format!("sonm_{}", h.instance);
    let listed = |t: &str| {
        std::process::Command::new("nft")
            .args(["list", "table", "inet", t])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(listed(&table));
    containers(&h.state(), &h.instance)
        .clean_leftovers()
        .unwrap();
    assert!(!listed(&table));
}
