//! Native containers: a customer's rootfs (a tar) run by `runc` under a deal's slice.
//!
//! Nothing from the network is trusted: the customer sends a rootfs tar, arguments and
//! environment; the worker unpacks the tar itself ([`unpack_rootfs`]: entry by entry, nothing
//! written outside the rootfs, no device nodes, no setuid bits, a size cap) and writes the OCI
//! `config.json` itself ([`runtime_config`], pure) from the request and the slice. A customer's
//! OCI config is never accepted.
//!
//! Isolation (see the worker's README): runc runs as root, the container in its own user
//! namespace (container ids 0..65535 are host ids [`HOST_ID_BASE`]..+65535, so the container's
//! root is an unprivileged user on the host), with every capability dropped and
//! `noNewPrivileges`, new pid/ipc/uts/mount/network namespaces (the network one has only
//! loopback, unless the deal's plan offers outbound: then a veth with NAT, see [`NetConfig`]), a
//! read-only rootfs with a writable `/output` (a per-task filesystem of the output quota, so the
//! kernel stops writes past it: [`mount_output`]) and a tmpfs `/tmp`, and cgroup limits from the
//! slice (memory = memory+swap, CPU quota = cores × period, pids). The deal's GPUs are the only
//! devices added to runc's default minimal set.
//!
//! The I/O side: [`Containers`] keeps bundles under `<state>/containers/<task>` and runc's own
//! state under `<state>/runc` (its `--root`), so `runc list` there shows only this worker's
//! containers; [`Containers::run_task`] sets up `/output` and the network around runc and tears
//! them down after; a restart after a crash deletes what is left
//! ([`Containers::clean_leftovers`]). The pure parts (the config, the mkfs arguments, the
//! "full" rule, address slots, the nftables ruleset, the hook script) are functions of their
//! inputs, unit-tested.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sonm_wasm_runtime::CancelHandle;

/// First host uid/gid of the containers' user namespace (container root = this host id).
pub const HOST_ID_BASE: u32 = 100_000;
/// Ids mapped into the container (0..65535, as in a usual distribution rootfs).
pub const ID_RANGE: u32 = 65_536;
/// The CFS period; the quota is `cores × period`.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Processes and threads a container may have at once (a fork bomb stops there).
pub const PIDS_LIMIT: i64 = 1024;
/// Prefix of every container id this worker creates.
pub const ID_PREFIX: &str = "sonm-";
/// Directories the worker mounts over; they must be plain directories in the rootfs (it is
/// mounted read-only, so runc could not create them).
const MOUNT_POINTS: [&str; 5] = ["proc", "dev", "sys", "tmp", "output"];
/// Most bytes of arguments plus environment (the kernel's own limit is about 2 MiB).
const MAX_ARGS_BYTES: usize = 128 << 10;
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ------------------------------------------------------------------ the OCI config (pure)

/// The subset of the OCI runtime spec (1.0.2) the worker writes. Hand-written rather than
/// `oci-spec`: these few structs are all we emit, and the worker's footprint matters (edge boxes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub oci_version: String,
    pub process: Process,
    pub root: Root,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub linux: Linux,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hooks: Option<Hooks>,
}

/// OCI hooks: run by runc as root in the host's namespaces (never the customer's code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    pub create_runtime: Vec<Hook>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub terminal: bool,
    pub user: User,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub capabilities: Capabilities,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// Every set empty: the container's processes hold no capability, not even in their namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub path: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
    pub namespaces: Vec<Namespace>,
    pub devices: Vec<Device>,
    pub cgroups_path: String,
    pub resources: Resources,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    #[serde(rename = "containerID")]
    pub container_id: u32,
    #[serde(rename = "hostID")]
    pub host_id: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub devices: Vec<DeviceRule>,
    pub memory: Memory,
    pub cpu: Cpu,
    pub pids: Pids,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub major: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub minor: Option<i64>,
    pub access: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub limit: i64,
    /// Memory + swap (cgroup v1 semantics): equal to `limit`, so no swap at all.
    pub swap: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    pub quota: i64,
    pub period: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    pub limit: i64,
}

/// A host character device passed into the container (a GPU's nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Where the container sees it (`/dev/nvidia0`).
    pub path: String,
    /// The host's node (`<device dir>/nvidia0`).
    pub host_path: PathBuf,
    pub major: i64,
    pub minor: i64,
}

/// A container task's limits, derived by the worker from the deal's slice and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLimits {
    pub memory_bytes: u64,
    pub cpu_cores: u32,
    pub wall_time_ms: u64,
    /// Bytes and entries the task may leave in `/output`.
    pub output_bytes: u64,
    pub output_entries: u64,
    /// Bytes of file data the rootfs may unpack to.
    pub rootfs_bytes: u64,
    /// The host GPUs (NVIDIA indexes) of the deal's slice.
    pub gpus: Vec<u32>,
    /// The deal's plan offers outbound networking (netflag bit 0): the container gets its own
    /// veth with NAT to the outside (see [`NetConfig`]); otherwise only loopback.
    pub outbound: bool,
}

/// Everything the OCI config is made from: the customer's request (args, env, cwd) and the
/// limits the worker derived from the deal's slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Absolute; `/` when the request names none.
    pub cwd: String,
    pub memory_bytes: u64,
    pub cpu_cores: u32,
    /// The deal's GPUs' device nodes (with `/dev/nvidiactl` and `/dev/nvidia-uvm`), or none.
    pub devices: Vec<DeviceNode>,
    /// Host directory bound at `/output`.
    pub output_dir: PathBuf,
    /// The container's cgroup, relative to each hierarchy's root.
    pub cgroups_path: String,
    /// With outbound networking: the script (written at start by [`Containers::run_task`])
    /// that runc runs as a `createRuntime` hook to move the task's veth into the container's
    /// network namespace.
    pub network_hook: Option<PathBuf>,
}

/// A request that cannot become a container config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("a container needs a program: args is empty")]
    NoArgs,
    #[error("argument or environment entry contains a NUL byte")]
    Nul,
    #[error("environment entry {0:?} is not NAME=value")]
    BadEnv(String),
    #[error("working directory {0:?} is not an absolute path without `..`")]
    BadCwd(String),
    #[error("arguments and environment exceed {MAX_ARGS_BYTES} bytes")]
    TooLong,
    #[error("{0} must be positive")]
    Zero(&'static str),
}

fn s(v: &str) -> String {
    v.to_string()
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: s(destination),
        kind: s(kind),
        source: s(source),
        options: options.iter().map(|o| s(o)).collect(),
    }
}

/// The OCI runtime config for `plan`. Pure; every field the container's isolation rests on is
/// set here, from nothing but the plan.
pub fn runtime_config(plan: &ContainerPlan) -> Result<Spec, SpecError> {
    if plan.args.is_empty() {
        return Err(SpecError::NoArgs);
    }
    let total: usize = plan.args.iter().chain(&plan.env).map(|a| a.len() + 1).sum();
    if total > MAX_ARGS_BYTES {
        return Err(SpecError::TooLong);
    }
    if plan.args.iter().chain(&plan.env).any(|a| a.contains('\0')) {
        return Err(SpecError::Nul);
    }
    for e in &plan.env {
        match e.split_once('=') {
            Some((name, _)) if !name.is_empty() => {}
            _ => return Err(SpecError::BadEnv(e.clone())),
        }
    }
    let cwd_ok = plan.cwd.starts_with('/')
        && Path::new(&plan.cwd)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !cwd_ok {
        return Err(SpecError::BadCwd(plan.cwd.clone()));
    }
    if plan.memory_bytes == 0 {
        return Err(SpecError::Zero("memory"));
    }
    if plan.cpu_cores == 0 {
        return Err(SpecError::Zero("cpu cores"));
    }
    let mut env = plan.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, s(DEFAULT_PATH));
    }
    let memory = i64::try_from(plan.memory_bytes).unwrap_or(i64::MAX);
    let quota = i64::try_from(u64::from(plan.cpu_cores) * CPU_PERIOD_US).unwrap_or(i64::MAX);
    let ids = vec![IdMapping {
        container_id: 0,
        host_id: HOST_ID_BASE,
        size: ID_RANGE,
    }];
    // Deny every device, then allow the deal's GPUs; runc adds its default minimal set
    // (null, zero, full, random, urandom, tty, pts) on top of these rules.
    let mut rules = vec![DeviceRule {
        allow: false,
        kind: None,
        major: None,
        minor: None,
        access: s("rwm"),
    }];
    // The nodes are bind mounts, not `linux.devices`: in a user namespace runc cannot mknod
    // and binds the host node at the *same* path anyway; binding it ourselves lets the node
    // come from the worker's device directory (tests use nodes made in a temporary one).
    let mut device_mounts = Vec::new();
    for d in &plan.devices {
        device_mounts.push(mount(
            &d.path,
            "bind",
            &d.host_path.to_string_lossy(),
            &["bind", "rw", "nosuid", "noexec"],
        ));
        rules.push(DeviceRule {
            allow: true,
            kind: Some(s("c")),
            major: Some(d.major),
            minor: Some(d.minor),
            // No `m`: the container may use the node, not create others of its kind.
            access: s("rw"),
        });
    }
    let tmp_size = format!("size={}", plan.memory_bytes);
    let hooks = plan.network_hook.as_ref().map(|script| Hooks {
        create_runtime: vec![Hook {
            path: s("/bin/sh"),
            args: vec![s("sh"), script.to_string_lossy().into_owned()],
            env: vec![s("PATH=/usr/sbin:/usr/bin:/sbin:/bin")],
            timeout: 10,
        }],
    });
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &[]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        // tmpfs pages count against the memory cgroup, so its size is the memory limit.
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &tmp_size],
        ),
        // `noexec` as the filesystem under it is mounted: in the user namespace the kernel
        // refuses a bind that would drop a flag of its source.
        mount(
            "/output",
            "bind",
            &plan.output_dir.to_string_lossy(),
            &["rbind", "rw", "nosuid", "nodev", "noexec"],
        ),
    ];
    // After /dev's tmpfs, which they land in.
    mounts.extend(device_mounts);
    Ok(Spec {
        oci_version: s("1.0.2"),
        process: Process {
            terminal: false,
            user: User { uid: 0, gid: 0 },
            args: plan.args.clone(),
            env,
            cwd: plan.cwd.clone(),
            capabilities: Capabilities::default(),
            rlimits: vec![Rlimit {
                kind: s("RLIMIT_NOFILE"),
                hard: 1024,
                soft: 1024,
            }],
            no_new_privileges: true,
        },
        root: Root {
            path: s("rootfs"),
            readonly: true,
        },
        hostname: s("sonm-task"),
        mounts,
        hooks,
        linux: Linux {
            uid_mappings: ids.clone(),
            gid_mappings: ids,
            namespaces: ["pid", "network", "ipc", "uts", "mount", "user"]
                .iter()
                .map(|k| Namespace { kind: s(k) })
                .collect(),
            devices: Vec::new(),
            cgroups_path: plan.cgroups_path.clone(),
            resources: Resources {
                devices: rules,
                memory: Memory {
                    limit: memory,
                    swap: memory,
                },
                cpu: Cpu {
                    quota,
                    period: CPU_PERIOD_US,
                },
                pids: Pids { limit: PIDS_LIMIT },
            },
            // runc's defaults (`runc spec`): kernel interfaces a container has no business with.
            masked_paths: [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ]
            .iter()
            .map(|p| s(p))
            .collect(),
            readonly_paths: [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .iter()
            .map(|p| s(p))
            .collect(),
        },
    })
}

/// The device nodes for GPUs `indexes` (NVIDIA): the control and UVM nodes once, then
/// `/dev/nvidiaN` per GPU. `stat` gives a node's numbers (`None`: the node is missing).
pub fn gpu_device_nodes(
    device_dir: &Path,
    indexes: &[u32],
    stat: impl Fn(&Path) -> Option<(i64, i64)>,
) -> Result<Vec<DeviceNode>, String> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let mut names = vec![s("nvidiactl"), s("nvidia-uvm")];
    names.extend(indexes.iter().map(|i| format!("nvidia{i}")));
    names
        .into_iter()
        .map(|name| {
            let host_path = device_dir.join(&name);
            match stat(&host_path) {
                Some((major, minor)) => Ok(DeviceNode {
                    path: format!("/dev/{name}"),
                    host_path,
                    major,
                    minor,
                }),
                None => Err(format!(
                    "{} is missing (NVIDIA driver not loaded?)",
                    host_path.display()
                )),
            }
        })
        .collect()
}

/// The host GPU indexes of plan `plan`, given every plan holding a slice as (id, GPU count):
/// GPUs are handed out in plan-id order, so disjoint plans get disjoint GPUs.
pub fn gpu_indexes(plans: &[(u64, u32)], plan: u64) -> Vec<u32> {
    let mut sorted = plans.to_vec();
    sorted.sort_unstable();
    let mut first = 0u32;
    for (id, gpus) in sorted {
        if id == plan {
            return (first..first.saturating_add(gpus)).collect();
        }
        first = first.saturating_add(gpus);
    }
    Vec::new()
}

/// A host character device's (major, minor), if `path` is one.
pub fn stat_char_device(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    if !m.file_type().is_char_device() {
        return None;
    }
    let rdev = m.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    Some((i64::from(major), i64::from(minor)))
}

// ------------------------------------------------------------------ the rootfs

/// Why a rootfs tar was refused. Nothing is written outside the rootfs in any case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RootfsError {
    #[error("entry {0:?} is absolute or leaves the rootfs (`..`)")]
    UnsafePath(String),
    #[error("link {path:?} points outside the rootfs ({target:?})")]
    LinkEscape { path: String, target: String },
    #[error("hard link {path:?} must point to a file earlier in the archive, not {target:?}")]
    BadHardLink { path: String, target: String },
    #[error("entry {0:?} would be written through a symbolic link")]
    ThroughLink(String),
    #[error("entry {path:?} is a {kind}, which a rootfs may not contain")]
    Special { path: String, kind: String },
    #[error("the rootfs exceeds {limit} bytes unpacked")]
    TooBig { limit: u64 },
    #[error("the rootfs has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("/{0} must be a directory (or absent) in the rootfs")]
    MountPoint(String),
    #[error("entry {path:?} replaces a directory")]
    ReplacesDirectory { path: String },
    #[error("not a readable tar archive: {0}")]
    Malformed(String),
}

/// How much a rootfs may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// A tar path as plain relative components (`./` dropped); `None` if absolute or with `..`.
fn plain_components(path: &Path) -> Option<Vec<std::ffi::OsString>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a symbolic link at `link` (components) to the relative `target` stays inside the
/// root, resolved lexically as the kernel would from the link's directory. Absolute targets
/// are resolved inside the container's root by the kernel, and the worker never follows a
/// link it unpacked, so they are allowed (real images use them, e.g. for the ELF loader).
fn symlink_stays_inside(link: &[std::ffi::OsString], target: &Path) -> bool {
    if target.has_root() {
        return true;
    }
    let mut depth = link.len().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn host_id(id: u64) -> u32 {
    // Ids the container cannot map become its `nobody`.
    let id = u32::try_from(id)
        .ok()
        .filter(|i| *i < ID_RANGE)
        .unwrap_or(65_534);
    HOST_ID_BASE + id
}

/// Makes (or checks) the directories above `comps` under `root`, never following a link.
fn prepare_parents(
    root: &Path,
    comps: &[std::ffi::OsString],
    shown: &str,
) -> Result<PathBuf, RootfsError> {
    let mut dir = root.to_path_buf();
    for c in &comps[..comps.len().saturating_sub(1)] {
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RootfsError::ThroughLink(shown.to_string()));
            }
            Ok(_) => return Err(RootfsError::ThroughLink(shown.to_string())),
            Err(_) => {
                std::fs::create_dir(&dir).map_err(|e| io_malformed(&dir, e))?;
                let _ = std::os::unix::fs::lchown(&dir, Some(HOST_ID_BASE), Some(HOST_ID_BASE));
            }
        }
    }
    Ok(root.join(comps.iter().collect::<PathBuf>()))
}

fn io_malformed(path: &Path, e: std::io::Error) -> RootfsError {
    RootfsError::Malformed(format!("{}: {e}", path.display()))
}

/// Unpacks the rootfs tar `bytes` into the (empty, existing) directory `root`: regular files,
/// directories, symbolic links that stay inside and hard links to earlier files only; modes
/// without setuid/setgid/sticky bits; owners shifted into the container's id range; at most
/// `limits` (bytes of file data, entries). Then makes sure the mount points exist. Returns the
/// bytes of file data written. On an error the caller removes `root`.
pub fn unpack_rootfs(bytes: &[u8], root: &Path, limits: UnpackLimits) -> Result<u64, RootfsError> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| RootfsError::Malformed(e.to_string()))?;
    let (mut written, mut count) = (0u64, 0u64);
    for entry in entries {
        let mut entry = entry.map_err(|e| RootfsError::Malformed(e.to_string()))?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        count += 1;
        if count > limits.max_entries {
            return Err(RootfsError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_path = entry
            .path()
            .map_err(|e| RootfsError::Malformed(e.to_string()))?
            .into_owned();
        let shown = raw_path.to_string_lossy().into_owned();
        let comps =
            plain_components(&raw_path).ok_or_else(|| RootfsError::UnsafePath(shown.clone()))?;
        if comps.is_empty() {
            // `./` itself: the root, which exists.
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let uid = host_id(entry.header().uid().unwrap_or(0));
        let gid = host_id(entry.header().gid().unwrap_or(0));
        let dest = prepare_parents(root, &comps, &shown)?;
        // A later entry replaces an earlier one, as tar does, but never a directory (its
        // contents would silently go) and never by writing through a link.
        let existing = std::fs::symlink_metadata(&dest).ok();
        if let Some(m) = &existing {
            if m.file_type().is_dir() {
                if kind != EntryType::Directory {
                    return Err(RootfsError::ReplacesDirectory { path: shown });
                }
            } else {
                std::fs::remove_file(&dest).map_err(|e| io_malformed(&dest, e))?;
            }
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().unwrap_or(u64::MAX);
                if written.saturating_add(size) > limits.max_bytes {
                    return Err(RootfsError::TooBig {
                        limit: limits.max_bytes,
                    });
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&dest)
                    .map_err(|e| io_malformed(&dest, e))?;
                let n = std::io::copy(&mut (&mut entry).take(size), &mut f)
                    .map_err(|e| io_malformed(&dest, e))?;
                written += n;
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io_malformed(&dest, e))?;
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| io_malformed(&dest, e))?;
            }
            EntryType::Directory => {
                if existing.is_none() {
                    std::fs::create_dir(&dest).map_err(|e| io_malformed(&dest, e))?;
                }
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io_malformed(&dest, e))?;
                std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))
                    .map_err(|e| io_malformed(&dest, e))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| RootfsError::Malformed(e.to_string()))?
                    .ok_or_else(|| RootfsError::Malformed(format!("{shown}: link without target")))?
                    .into_owned();
                if target.as_os_str().is_empty() || !symlink_stays_inside(&comps, &target) {
                    return Err(RootfsError::LinkEscape {
                        path: shown,
                        target: target.to_string_lossy().into_owned(),
                    });
                }
                std::os::unix::fs::symlink(&target, &dest).map_err(|e| io_malformed(&dest, e))?;
                std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))
                    .map_err(|e| io_malformed(&dest, e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| RootfsError::Malformed(e.to_string()))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let bad = || RootfsError::BadHardLink {
                    path: shown.clone(),
                    target: target.to_string_lossy().into_owned(),
                };
                let tcomps = plain_components(&target)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(bad)?;
                // The target's directories must be real ones inside the root, and the target
                // a regular file already unpacked: a link can then only share our own data.
                let mut p = root.to_path_buf();
                for (i, c) in tcomps.iter().enumerate() {
                    p.push(c);
                    let m = std::fs::symlink_metadata(&p).map_err(|_| bad())?;
                    let last = i + 1 == tcomps.len();
                    if (last && !m.file_type().is_file()) || (!last && !m.file_type().is_dir()) {
                        return Err(bad());
                    }
                }
                std::fs::hard_link(&p, &dest).map_err(|e| io_malformed(&dest, e))?;
            }
            other => {
                let kind = match other {
                    EntryType::Char => "character device",
                    EntryType::Block => "block device",
                    EntryType::Fifo => "FIFO",
                    EntryType::GNUSparse => "sparse file",
                    _ => "special entry",
                };
                return Err(RootfsError::Special {
                    path: shown,
                    kind: kind.into(),
                });
            }
        }
    }
    for m in MOUNT_POINTS {
        let p = root.join(m);
        match std::fs::symlink_metadata(&p) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => return Err(RootfsError::MountPoint(m.into())),
            Err(_) => {
                std::fs::create_dir(&p).map_err(|e| io_malformed(&p, e))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| io_malformed(&p, e))?;
                std::os::unix::fs::lchown(&p, Some(HOST_ID_BASE), Some(HOST_ID_BASE))
                    .map_err(|e| io_malformed(&p, e))?;
            }
        }
    }
    Ok(written)
}

// ------------------------------------------------------------------ runc

/// Why this worker cannot run containers (a supplier opts in with `containers = true`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("containers are off on this worker (`containers = false` in its configuration)")]
    Disabled,
    #[error(
        "containers need root (runc creates namespaces and cgroups); the worker runs as uid {0}"
    )]
    NotRoot(u32),
    #[error("runc cannot run: {0}")]
    NoRunc(String),
    #[error("user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)")]
    NoUserNamespaces,
    #[error("no memory cgroup controller (neither cgroup v1 memory nor v2 with memory)")]
    NoMemoryCgroup,
}

/// A container's failure to run (not its program's exit).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("runc could not start the container: {0}")]
    Start(String),
    #[error("runc {command} failed: {message}")]
    Runc { command: String, message: String },
    #[error("{command} failed: {message}")]
    Tool { command: String, message: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// What `runc` reports for one container in `runc list --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub bundle: String,
}

/// The runc binary and this worker's runc state directory (`--root`).
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
}

impl Runc {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null());
        c
    }

    fn check(&self, args: &[&str]) -> Result<Vec<u8>, ContainerError> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(io_err(format!("running {}", self.binary.display())))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(ContainerError::Runc {
                command: args.join(" "),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// The containers under this root.
    pub fn list(&self) -> Result<Vec<Listed>, ContainerError> {
        let out = self.check(&["list", "--format", "json"])?;
        // runc prints `null` when there are none.
        let listed: Option<Vec<Listed>> =
            serde_json::from_slice(&out).map_err(|e| ContainerError::Runc {
                command: "list".into(),
                message: e.to_string(),
            })?;
        Ok(listed.unwrap_or_default())
    }

    pub fn kill(&self, id: &str) -> Result<(), ContainerError> {
        self.check(&["kill", id, "KILL"]).map(drop)
    }

    pub fn delete(&self, id: &str) -> Result<(), ContainerError> {
        self.check(&["delete", "--force", id]).map(drop)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.check(&["state", id]).is_ok()
    }
}

/// Checks what containers need on this host: root, a runc that runs, user namespaces and a
/// memory cgroup. Runs nothing in a container (the tests do that).
pub fn probe(runc: &Path) -> Result<String, Unavailable> {
    let uid = rustix::process::geteuid().as_raw();
    if uid != 0 {
        return Err(Unavailable::NotRoot(uid));
    }
    let out = Command::new(runc)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Unavailable::NoRunc(format!("{}: {e}", runc.display())))?;
    if !out.status.success() {
        return Err(Unavailable::NoRunc(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if userns == Some(0) {
        return Err(Unavailable::NoUserNamespaces);
    }
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
    if !v1 && !v2 {
        return Err(Unavailable::NoMemoryCgroup);
    }
    let version = String::from_utf8_lossy(&out.stdout);
    Ok(version.lines().next().unwrap_or("runc").trim().to_string())
}

/// How a container ended, when it was not its own exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    Oom,
    Stopped,
    WallTime,
}

/// A container that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code (128 + signal when a signal ended it), or why the worker killed it.
    pub end: Result<i32, Killed>,
    pub wall_time: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// OOM kills recorded in a kept container's memory cgroup (v1, else v2).
fn oom_kills(cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let read = |p: PathBuf, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(p).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    read(
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        "oom_kill",
    )
    .or_else(|| {
        read(
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            "oom_kill",
        )
    })
    .unwrap_or(0)
}

/// Copies `from` to the file `to`, keeping the first `cap` bytes and draining the rest (so the
/// container never blocks on a full pipe); returns what was kept.
fn capped_copy(mut from: impl Read, to: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::create(to)?;
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = cap.saturating_sub(kept.len() as u64) as usize;
        let take = n.min(room);
        if take > 0 {
            file.write_all(&buf[..take])?;
            kept.extend_from_slice(&buf[..take]);
        }
    }
    Ok(kept)
}

/// Runs the bundle at `bundle` as container `id` until it exits, `cancel` fires (stopped) or
/// `wall` passes; then reads its OOM count and deletes it. stdout/stderr go to
/// `<bundle>/stdout` and `<bundle>/stderr`, each capped at `output_cap` bytes.
pub fn run(
    runc: &Runc,
    bundle: &Path,
    id: &str,
    cgroups_path: &str,
    cancel: &CancelHandle,
    wall: Duration,
    output_cap: u64,
) -> Result<Outcome, ContainerError> {
    let started = Instant::now();
    // `--keep`: the container (and its cgroup) outlives its process, so its OOM count can be
    // read before `delete`.
    let mut child = runc
        .command()
        .args(["run", "--keep", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("running {}", runc.binary.display())))?;
    let pipe = |r: Option<Box<dyn Read + Send>>, name: &str| {
        let path = bundle.join(name);
        let r = r.expect("piped");
        std::thread::spawn(move || capped_copy(r, &path, output_cap).unwrap_or_default())
    };
    let out = pipe(child.stdout.take().map(|r| Box::new(r) as _), "stdout");
    let err = pipe(child.stderr.take().map(|r| Box::new(r) as _), "stderr");
    let deadline = started + wall;
    let mut killed: Option<(Killed, Instant)> = None;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io_err("waiting for runc"))? {
            break status;
        }
        let now = Instant::now();
        match killed {
            None => {
                let cause = if cancel.is_cancelled() {
                    Some(Killed::Stopped)
                } else if now >= deadline {
                    Some(Killed::WallTime)
                } else {
                    None
                };
                // Fails while runc is still creating the container; tried again next round.
                if let Some(cause) = cause
                    && runc.kill(id).is_ok()
                {
                    killed = Some((cause, now));
                }
                if cause.is_some() && killed.is_none() && now >= deadline + Duration::from_secs(10)
                {
                    // runc itself hangs: end it (its container, if any, goes at delete).
                    let _ = child.kill();
                    killed = Some((cause.unwrap_or(Killed::Stopped), now));
                }
            }
            Some((_, at)) if now >= at + Duration::from_secs(10) => {
                let _ = child.kill();
            }
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall_time = started.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let created = runc.exists(id);
    let ooms = if created { oom_kills(cgroups_path) } else { 0 };
    if created && let Err(e) = runc.delete(id) {
        tracing::warn!(container = id, "deleting: {e}");
    }
    if !created {
        let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(2048)..]);
        return Err(ContainerError::Start(tail.trim().to_string()));
    }
    let code = {
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    };
    let end = match killed {
        Some((cause, _)) => Err(cause),
        // runc reports a signal death as 128 + signal; SIGKILL with an OOM kill on record is
        // the memory limit.
        None if code == 128 + 9 && ooms > 0 => Err(Killed::Oom),
        None => Ok(code),
    };
    Ok(Outcome {
        end,
        wall_time,
        stdout,
        stderr,
    })
}

/// This worker's containers: where bundles go, its runc, and whether they can run at all.
#[derive(Debug, Clone)]
pub struct Containers {
    pub runc: Runc,
    /// `<state>/containers`: one bundle per task.
    pub dir: PathBuf,
    /// Part of every container id and cgroup path, unique per worker on a host (cgroups are
    /// host-wide): the worker's address, shortened.
    pub instance: String,
    pub ready: Result<String, Unavailable>,
    /// Where the host's GPU nodes are (`/dev`; tests point it at nodes they make).
    pub device_dir: PathBuf,
    /// Outbound networking: the tasks' subnet and what they may not reach.
    pub net: NetConfig,
    /// Held while this worker's nftables table is created (once).
    table_ready: Arc<Mutex<bool>>,
}

impl Containers {
    /// Containers under `state_dir`, checked with [`probe`] when `enabled`.
    pub fn new(state_dir: &Path, enabled: bool, runc_binary: PathBuf, instance: String) -> Self {
        let ready = if enabled {
            probe(&runc_binary)
        } else {
            Err(Unavailable::Disabled)
        };
        Self {
            runc: Runc {
                binary: runc_binary,
                root: state_dir.join("runc"),
            },
            dir: state_dir.join("containers"),
            instance,
            ready,
            device_dir: PathBuf::from("/dev"),
            net: NetConfig::default(),
            table_ready: Arc::new(Mutex::new(false)),
        }
    }

    /// GPU nodes from `dir` instead of `/dev`.
    pub fn with_device_dir(mut self, dir: PathBuf) -> Self {
        self.device_dir = dir;
        self
    }

    /// Outbound networking with `net` instead of [`NetConfig::default`].
    pub fn with_net(mut self, net: NetConfig) -> Self {
        self.net = net;
        self
    }

    /// The container id of `task` (runc's name, also its cgroup's name).
    pub fn id(&self, task: u64) -> String {
        format!("{ID_PREFIX}{}-{task}", self.instance)
    }

    pub fn cgroups_path(&self, task: u64) -> String {
        format!("/sonm/{}", self.id(task))
    }

    pub fn bundle(&self, task: u64) -> PathBuf {
        self.dir.join(task.to_string())
    }

    /// Deletes what an earlier run left (a crash or kill -9 while containers ran): every
    /// `sonm-*` container under this worker's runc root, then every bundle directory. Call at
    /// start, before any task. Returns how many containers were deleted.
    pub fn clean_leftovers(&self) -> Result<usize, ContainerError> {
        let mut deleted = 0;
        if self.runc.root.exists() && self.ready.is_ok() {
            for c in self.runc.list()? {
                if !c.id.starts_with(ID_PREFIX) {
                    continue;
                }
                let _ = self.runc.kill(&c.id);
                self.runc.delete(&c.id)?;
                tracing::info!(container = %c.id, status = %c.status, bundle = %c.bundle,
                    "deleted a container left by an earlier run");
                deleted += 1;
            }
        }
        if self.ready.is_ok() {
            // Once the containers are gone: network namespaces and veths of an earlier run,
            // its nftables table (made again at the next outbound task) and its /output
            // filesystems.
            self.clean_network();
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            for m in mounts_under(&mountinfo, &self.dir) {
                unmount(&m)?;
                tracing::info!(mount = %m.display(), "unmounted an /output left by an earlier run");
            }
        }
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries {
                    let p = e.map_err(io_err("listing bundles"))?.path();
                    std::fs::remove_dir_all(&p)
                        .map_err(io_err(format!("removing {}", p.display())))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("listing bundles")(e)),
        }
        Ok(deleted)
    }
}

// ------------------------------------------------------------------ a running task

/// A container that ran, with its `/output` files read back (or why they were refused).
#[derive(Debug)]
pub struct Finished {
    pub outcome: Outcome,
    pub outputs: Result<Vec<(String, Vec<u8>)>, String>,
}

impl Containers {
    /// Runs task `task`'s bundle (prepared, `config.json` written) to its end: `/output` on a
    /// filesystem of its quota, the veth when `limits.outbound`, runc, the outputs read back;
    /// then the network and the filesystem are torn down whatever happened.
    pub fn run_task(
        &self,
        task: u64,
        limits: &ContainerLimits,
        cancel: &CancelHandle,
        log_cap: u64,
    ) -> Result<Finished, ContainerError> {
        let bundle = self.bundle(task);
        let output = bundle.join("output");
        mount_output(&bundle, limits.output_bytes, limits.output_entries)?;
        let ran = self.run_mounted(task, limits, cancel, log_cap, &output);
        if let Err(e) = unmount(&output) {
            tracing::warn!(task, "unmounting /output: {e}");
        }
        ran
    }

    fn run_mounted(
        &self,
        task: u64,
        limits: &ContainerLimits,
        cancel: &CancelHandle,
        log_cap: u64,
        output: &Path,
    ) -> Result<Finished, ContainerError> {
        let id = self.id(task);
        let lease = if limits.outbound {
            Some(self.net_setup(task)?)
        } else {
            None
        };
        let outcome = run(
            &self.runc,
            &self.bundle(task),
            &id,
            &self.cgroups_path(task),
            cancel,
            Duration::from_millis(limits.wall_time_ms),
            log_cap,
        );
        if let Some(lease) = lease {
            self.net_teardown(&lease);
        }
        let outcome = outcome?;
        let outputs = match output_full(output, limits.output_bytes, limits.output_entries) {
            Some(hit) => Err(format!("{hit} ({})", describe_end(&outcome.end))),
            None => collect_outputs(output, limits.output_bytes, limits.output_entries),
        };
        Ok(Finished { outcome, outputs })
    }
}

fn describe_end(end: &Result<i32, Killed>) -> String {
    match end {
        Ok(code) => format!("the container exited with code {code}"),
        Err(Killed::Oom) => "the container was killed at its memory limit".into(),
        Err(Killed::Stopped) => "the container was stopped".into(),
        Err(Killed::WallTime) => "the container was killed at its wall time".into(),
    }
}

// ------------------------------------------------------------------ /output's quota

/// The image of a task's `/output` filesystem, in its bundle.
pub const OUTPUT_IMAGE: &str = "output.img";
/// The smallest filesystem mkfs.ext4 makes reliably; a smaller quota still gets this much
/// (what is read back stays capped at the quota).
pub const MIN_OUTPUT_FS: u64 = 64 << 10;
/// Inodes ext4 keeps for itself (1..=10, the root among them).
const EXT4_RESERVED_INODES: u64 = 10;

/// Why a task's `/output` refused its writes: the kernel enforced the quota while it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaHit {
    #[error(
        "the task filled /output: its quota is {quota} bytes and writes past it failed (ENOSPC)"
    )]
    Bytes { quota: u64 },
    #[error(
        "the task filled /output: its quota is {quota} entries and creating more failed (ENOSPC)"
    )]
    Entries { quota: u64 },
}

/// The size of a task's `/output` filesystem: its quota in whole KiB (ext4's block), at least
/// [`MIN_OUTPUT_FS`]. The image is sparse, so the host's disk holds at most this much for it.
pub fn output_fs_bytes(quota: u64) -> u64 {
    quota.max(MIN_OUTPUT_FS) / 1024 * 1024
}

/// mkfs.ext4's arguments for a task's `/output` image: no journal (a throwaway filesystem; the
/// journal would take the quota's space), no reserved blocks, inodes for `entries` (mkfs
/// rounds up to whole inode-table blocks), the root owned by the container's root.
pub fn mkfs_args(image: &Path, entries: u64) -> Vec<String> {
    let inodes = entries
        .saturating_add(EXT4_RESERVED_INODES)
        .min(u64::from(u32::MAX));
    vec![
        s("-q"),
        s("-F"),
        s("-O"),
        s("^has_journal"),
        s("-m"),
        s("0"),
        s("-N"),
        inodes.to_string(),
        s("-E"),
        format!("root_owner={HOST_ID_BASE}:{HOST_ID_BASE}"),
        image.to_string_lossy().into_owned(),
    ]
}

/// Whether a filesystem of `fs_bytes` with `avail` bytes and `free_inodes` inodes left was
/// filled: ext4 keeps a little back for its own metadata and a write of a whole buffer fails
/// before the last bytes, so "full" is within 64 KiB or 1% of the end. (The container's errno
/// is not visible here: a single write bigger than the rest fails and may leave more.)
pub fn judge_full(
    fs_bytes: u64,
    avail: u64,
    free_inodes: u64,
    quota_bytes: u64,
    quota_entries: u64,
) -> Option<QuotaHit> {
    if free_inodes == 0 {
        return Some(QuotaHit::Entries {
            quota: quota_entries,
        });
    }
    let margin = (64u64 << 10).max(fs_bytes / 100);
    (avail < margin).then_some(QuotaHit::Bytes { quota: quota_bytes })
}

/// [`judge_full`] on the mounted `/output` at `dir`.
fn output_full(dir: &Path, quota_bytes: u64, quota_entries: u64) -> Option<QuotaHit> {
    let st = rustix::fs::statvfs(dir).ok()?;
    judge_full(
        st.f_blocks.saturating_mul(st.f_frsize),
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_favail,
        quota_bytes,
        quota_entries,
    )
}

fn command_output(program: &str, args: &[&str]) -> Result<Vec<u8>, ContainerError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {program}")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(ContainerError::Tool {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Mounts a new ext4 filesystem of the task's quota (a sparse image in the bundle, on a loop
/// device) at `<bundle>/output`, nosuid, nodev, noexec. The kernel then refuses writes past the
/// quota while the container runs (ENOSPC), so a container cannot fill the host's disk.
///
/// Why a loop-mounted ext4 and not a tmpfs with `size=`/`nr_inodes=`: tmpfs pages are memory,
/// charged to the writer's memory cgroup, so the output quota would eat the container's memory
/// limit (a 64 MiB output in a 32 MiB container would be an OOM kill, not ENOSPC) and take RAM
/// from small boxes; ext4's pages are page cache, written back to the image on disk.
/// `mkfs.ext4` (e2fsprogs, Debian's "required") and util-linux's `mount -o loop` (which finds a
/// free loop device and frees it at unmount) are used instead of reimplementing the loop ioctls.
pub fn mount_output(bundle: &Path, quota_bytes: u64, entries: u64) -> Result<(), ContainerError> {
    let image = bundle.join(OUTPUT_IMAGE);
    let dir = bundle.join("output");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&image)
        .map_err(io_err(format!("creating {}", image.display())))?;
    f.set_len(output_fs_bytes(quota_bytes))
        .map_err(io_err("sizing the /output image"))?;
    drop(f);
    let args = mkfs_args(&image, entries);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command_output("mkfs.ext4", &args)?;
    let (image, dir_s) = (image.to_string_lossy(), dir.to_string_lossy());
    command_output(
        "mount",
        &[
            "-t",
            "ext4",
            "-o",
            "loop,nosuid,nodev,noexec",
            &image,
            &dir_s,
        ],
    )?;
    // mkfs's lost+found would be one of the task's outputs (and take its entries).
    if let Err(e) = std::fs::remove_dir(dir.join("lost+found")) {
        let _ = unmount(&dir);
        return Err(io_err("removing lost+found")(e));
    }
    Ok(())
}

/// Unmounts `dir` (the loop device goes with it); if something still holds it, detaches it
/// (the kernel frees it with its last user) rather than leave it mounted under the bundle.
pub fn unmount(dir: &Path) -> Result<(), ContainerError> {
    let dir = dir.to_string_lossy();
    command_output("umount", &[&dir])
        .or_else(|_| command_output("umount", &["--lazy", &dir]))
        .map(drop)
}

/// Mount points at or under `dir` in `mountinfo` (`/proc/self/mountinfo`'s text), deepest
/// first, so they can be unmounted in that order.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ------------------------------------------------------------------ outbound networking

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// A configured network that is not `a.b.c.d/n` with its host bits clear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("{0:?} is not an IPv4 network a.b.c.d/n")]
    BadCidr(String),
    #[error("{0:?} has host bits set")]
    HostBits(String),
    #[error("the containers' subnet {0} is smaller than one /30")]
    SubnetTooSmall(Ipv4Net),
}

impl Ipv4Net {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `other` lies inside this network.
    pub fn contains(self, other: Ipv4Net) -> bool {
        other.prefix >= self.prefix && u32::from(other.addr) & self.mask() == u32::from(self.addr)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = NetError;
    fn from_str(text: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadCidr(text.to_string());
        let (a, p) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(NetError::HostBits(text.to_string()));
        }
        Ok(net)
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Outbound networking for containers whose plan offers it: one /30 of `subnet` per task (the
/// host's end `.1`, the container's `.2`), masqueraded to the outside. The container may not
/// reach the host itself, other containers (the whole subnet), link-local addresses
/// (169.254.0.0/16: cloud metadata services) nor `denied` (the supplier's LAN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub subnet: Ipv4Net,
    pub denied: Vec<Ipv4Net>,
}

/// The containers' subnet by default: private, and unlikely to be a LAN's.
pub const DEFAULT_SUBNET: &str = "10.217.0.0/16";
/// Denied by default: every private (RFC 1918) and carrier-grade NAT range.
pub const DEFAULT_DENIED: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
];
/// Always denied: link-local, where cloud metadata services answer.
pub const LINK_LOCAL: &str = "169.254.0.0/16";

impl Default for NetConfig {
    fn default() -> Self {
        Self::new(
            DEFAULT_SUBNET,
            &DEFAULT_DENIED.iter().map(|d| s(d)).collect::<Vec<_>>(),
        )
        .expect("the defaults parse")
    }
}

impl NetConfig {
    /// From the configuration's strings.
    pub fn new(subnet: &str, denied: &[String]) -> Result<Self, NetError> {
        let subnet: Ipv4Net = subnet.parse()?;
        if subnet.prefix > 30 {
            return Err(NetError::SubnetTooSmall(subnet));
        }
        let denied = denied
            .iter()
            .map(|d| d.parse())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { subnet, denied })
    }

    /// How many tasks can have a /30 at once (interface names hold 5 hex digits of the slot).
    pub fn slots(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.subnet.prefix));
        (size / 4).min(1 << 20) as u32
    }

    /// The host's and the container's address of slot `slot`'s /30.
    pub fn slot_addresses(&self, slot: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
        if slot >= self.slots() {
            return None;
        }
        let base = u32::from(self.subnet.addr) + slot * 4;
        Some((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
    }

    /// Every denied destination, nested ranges dropped (an nftables interval set refuses
    /// overlaps), in order: link-local, the subnet, then the configured ones.
    pub fn denied_ranges(&self) -> Vec<Ipv4Net> {
        let mut all = vec![LINK_LOCAL.parse().expect("constant"), self.subnet];
        all.extend(self.denied.iter().copied());
        let mut kept: Vec<Ipv4Net> = Vec::new();
        for (i, n) in all.iter().enumerate() {
            let covered = all
                .iter()
                .enumerate()
                .any(|(j, m)| j != i && m.contains(*n) && (m != n || j < i));
            if !covered {
                kept.push(*n);
            }
        }
        kept
    }
}

/// The names of slot `slot`'s veth ends in the host (`host`, and the container's end until it
/// is moved and renamed `eth0`): 15 bytes at most, with the worker's instance so leftovers can
/// be told apart from another worker's.
pub fn link_names(instance: &str, slot: u32) -> (String, String) {
    let inst: String = instance.chars().take(8).collect();
    (format!("s{inst}h{slot:x}"), format!("s{inst}p{slot:x}"))
}

/// This worker's nftables table.
pub fn nft_table(instance: &str) -> String {
    let inst: String = instance
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("sonm_{inst}")
}

/// The nftables table (family `inet`: IPv4 and IPv6 alike) that confines every outbound
/// container of this worker. The host-side veths are the set `links` (a task's is added at
/// start, removed at its end). A packet from a container to the host itself is dropped at
/// input; forwarded to a denied range, or as IPv6 (the containers have no IPv6 route; only
/// link-local), dropped; connections into a container are dropped (outbound only); what is left
/// is masqueraded. Only drops are final across tables, so the host's own rules (a Docker host's
/// FORWARD policy DROP) still apply on top.
pub fn nft_ruleset(table: &str, net: &NetConfig) -> String {
    let denied: Vec<String> = net.denied_ranges().iter().map(|n| n.to_string()).collect();
    format!(
        "table inet {table} {{
  set links {{ type ifname; }}
  set denied {{ type ipv4_addr; flags interval; elements = {{ {denied} }} }}
  chain input {{ type filter hook input priority 0; policy accept;
    iifname @links drop
  }}
  chain forward {{ type filter hook forward priority 0; policy accept;
    iifname @links ip daddr @denied drop
    iifname @links meta nfproto ipv6 drop
    oifname @links ct state established,related accept
    oifname @links drop
  }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept;
    iifname @links oifname != @links masquerade
  }}
}}
",
        denied = denied.join(", ")
    )
}

/// The `createRuntime` hook's script: runc runs it as root in the host's namespaces once the
/// container's namespaces exist, with the container's state (JSON, one line) on stdin. It names
/// the container's network namespace `netns` and moves the veth end `peer` into it as `eth0`
/// with `container`/30, the default route via `host`. The namespace is runc's own (created in
/// the container's user namespace) rather than one made beforehand and joined by path: the
/// kernel lets a container mount a fresh /sys only in a network namespace its user namespace
/// owns.
pub fn hook_script(netns: &str, peer: &str, host: Ipv4Addr, container: Ipv4Addr) -> String {
    format!(
        "set -eu
pid=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p')
test -n \"$pid\"
ip netns attach {netns} \"$pid\"
ip link set {peer} netns {netns}
ip -n {netns} link set {peer} name eth0
ip -n {netns} addr add {container}/30 dev eth0
ip -n {netns} link set eth0 up
ip -n {netns} link set lo up
ip -n {netns} route add default via {host}
"
    )
}

/// A task's network: its veth's host end and the name of its network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLease {
    pub link: String,
    pub netns: String,
}

impl Containers {
    fn ensure_table(&self) -> Result<(), ContainerError> {
        let mut ready = self.table_ready.lock().unwrap_or_else(|e| e.into_inner());
        if *ready {
            return Ok(());
        }
        let table = nft_table(&self.instance);
        if command_output("nft", &["list", "table", "inet", &table]).is_err() {
            nft_apply(&nft_ruleset(&table, &self.net))?;
        }
        *ready = true;
        Ok(())
    }

    /// Before runc: a veth pair in a free /30 (the kernel's refusal of a taken interface name
    /// is the allocation, so two tasks never share one), the host end addressed and in the
    /// table's `links`, forwarding on, and the hook's script in the bundle.
    ///
    /// `ip` and `nft` are run rather than spoken to over netlink from a crate: they are
    /// iproute2 and nftables, on every Debian box, and a few commands per task are cheap.
    fn net_setup(&self, task: u64) -> Result<NetLease, ContainerError> {
        self.ensure_table()?;
        // The host routes between the containers' veths and its uplink (as Docker does).
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(io_err("enabling IPv4 forwarding"))?;
        let slots = self.net.slots();
        let first = (task % u64::from(slots)) as u32;
        let mut found = None;
        for i in 0..slots {
            let slot = (first + i) % slots;
            let (link, peer) = link_names(&self.instance, slot);
            match command_output(
                "ip",
                &["link", "add", &link, "type", "veth", "peer", "name", &peer],
            ) {
                Ok(_) => {
                    found = Some((slot, link, peer));
                    break;
                }
                Err(ContainerError::Tool { message, .. }) if message.contains("exists") => {}
                Err(e) => return Err(e),
            }
        }
        let Some((slot, link, peer)) = found else {
            return Err(ContainerError::Tool {
                command: "ip link add".into(),
                message: format!("all {slots} addresses of {} are taken", self.net.subnet),
            });
        };
        let lease = NetLease {
            link,
            netns: self.id(task),
        };
        let (host, container) = self.net.slot_addresses(slot).expect("slot < slots");
        let configured = (|| {
            // No IPv6 on the host end: the container could otherwise reach it link-local.
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", lease.link),
                "1",
            );
            command_output(
                "ip",
                &["addr", "add", &format!("{host}/30"), "dev", &lease.link],
            )?;
            command_output("ip", &["link", "set", &lease.link, "up"])?;
            nft_apply(&format!(
                "add element inet {} links {{ \"{}\" }}\n",
                nft_table(&self.instance),
                lease.link
            ))?;
            let script = self.bundle(task).join("network.sh");
            std::fs::write(&script, hook_script(&lease.netns, &peer, host, container))
                .map_err(io_err("writing the network hook"))
        })();
        match configured {
            Ok(()) => Ok(lease),
            Err(e) => {
                self.net_teardown(&lease);
                Err(e)
            }
        }
    }

    /// After the container is gone: the veth out of the table, the named namespace and the
    /// veth (gone with the namespace once the container's processes are; deleted here if the
    /// hook never moved it).
    fn net_teardown(&self, lease: &NetLease) {
        let _ = nft_apply(&format!(
            "delete element inet {} links {{ \"{}\" }}\n",
            nft_table(&self.instance),
            lease.link
        ));
        let _ = command_output("ip", &["netns", "delete", &lease.netns]);
        let _ = command_output("ip", &["link", "delete", &lease.link]);
    }

    /// What an earlier run's outbound tasks left: named namespaces `<id prefix>*`, host veths
    /// of this instance, the table. Errors are logged: a box without `ip`/`nft` has none.
    fn clean_network(&self) {
        let prefix = format!("{ID_PREFIX}{}-", self.instance);
        if let Ok(out) = command_output("ip", &["netns", "list"]) {
            for name in String::from_utf8_lossy(&out)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&prefix))
            {
                match command_output("ip", &["netns", "delete", name]) {
                    Ok(_) => tracing::info!(
                        netns = name,
                        "deleted a network namespace left by an earlier run"
                    ),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
        let (link0, _) = link_names(&self.instance, 0);
        let link_prefix = &link0[..link0.len() - 1];
        if let Ok(out) = command_output("ip", &["-o", "link", "show"]) {
            for name in String::from_utf8_lossy(&out).lines().filter_map(|l| {
                // "7: name@peer: <...>"
                let name = l.split(": ").nth(1)?;
                Some(name.split('@').next().unwrap_or(name).to_string())
            }) {
                if name.starts_with(link_prefix) {
                    let _ = command_output("ip", &["link", "delete", &name]);
                }
            }
        }
        let _ = command_output(
            "nft",
            &["delete", "table", "inet", &nft_table(&self.instance)],
        );
        *self.table_ready.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

/// Runs `nft -f -` on `rules` (one transaction).
fn nft_apply(rules: &str) -> Result<(), ContainerError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("running nft"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(io_err("writing to nft"))?;
    }
    let out = child.wait_with_output().map_err(io_err("running nft"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ContainerError::Tool {
            command: "nft -f -".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The regular files under `dir` (a task's `/output` after its container is gone), as
/// `/`-separated relative paths, sorted; links and special files are skipped and never
/// followed; at most `max_bytes` in all and `max_entries` entries.
pub fn collect_outputs(
    dir: &Path,
    max_bytes: u64,
    max_entries: u64,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut entries = 0u64;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        for e in std::fs::read_dir(&path).map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            entries += 1;
            if entries > max_entries {
                return Err(format!(
                    "the task left more than {max_entries} entries in /output"
                ));
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().map_err(|e| e.to_string())?;
            if ft.is_dir() {
                stack.push((e.path(), rel));
            } else if ft.is_file() {
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(e.path())
                    .map_err(|e| e.to_string())?;
                let mut bytes = Vec::new();
                (&mut f)
                    .take(max_bytes - total + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| e.to_string())?;
                total += bytes.len() as u64;
                if total > max_bytes {
                    return Err(format!(
                        "the task left more than {max_bytes} bytes in /output"
                    ));
                }
                out.push((rel, bytes));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ContainerPlan {
        ContainerPlan {
            args: vec!["echo".into(), "hi".into()],
            env: vec!["A=1".into()],
            cwd: "/".into(),
            memory_bytes: 256 << 20,
            cpu_cores: 2,
            devices: Vec::new(),
            output_dir: "/var/lib/sonm/worker/containers/7/output".into(),
            cgroups_path: "/sonm/sonm-x-7".into(),
            network_hook: None,
        }
    }

    #[test]
    fn the_config_isolates_and_limits() {
        let spec = runtime_config(&plan()).unwrap();
        let p = &spec.process;
        assert!(!p.terminal);
        assert!(p.no_new_privileges);
        assert_eq!(p.capabilities, Capabilities::default());
        assert_eq!(p.args, ["echo", "hi"]);
        assert_eq!(p.env, [DEFAULT_PATH, "A=1"]);
        assert!(spec.root.readonly);
        let m = &spec.linux.resources;
        assert_eq!((m.memory.limit, m.memory.swap), (256 << 20, 256 << 20));
        assert_eq!((m.cpu.quota, m.cpu.period), (200_000, 100_000));
        assert_eq!(m.pids.limit, PIDS_LIMIT);
        assert_eq!(m.devices.len(), 1);
        assert!(!m.devices[0].allow);
        assert!(spec.linux.devices.is_empty());
        let ns: Vec<_> = spec
            .linux
            .namespaces
            .iter()
            .map(|n| n.kind.as_str())
            .collect();
        for k in ["pid", "network", "ipc", "uts", "mount", "user"] {
            assert!(ns.contains(&k), "{k}");
        }
        assert_eq!(spec.linux.uid_mappings[0].host_id, HOST_ID_BASE);
        assert_eq!(spec.linux.uid_mappings, spec.linux.gid_mappings);
        let output = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/output")
            .unwrap();
        assert_eq!(output.source, "/var/lib/sonm/worker/containers/7/output");
        assert!(output.options.contains(&"rw".to_string()));
        let tmp = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/tmp")
            .unwrap();
        assert_eq!(tmp.kind, "tmpfs");
        // No other writable bind from the host.
        assert_eq!(spec.mounts.iter().filter(|m| m.kind == "bind").count(), 1);
        // The JSON runc reads: its field names.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["ociVersion"], "1.0.2");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["linux"]["uidMappings"][0]["containerID"], 0);
        assert_eq!(json["linux"]["uidMappings"][0]["hostID"], HOST_ID_BASE);
        assert_eq!(json["linux"]["cgroupsPath"], "/sonm/sonm-x-7");
        assert_eq!(
            json["linux"]["resources"]["devices"][0],
            serde_json::json!({"allow": false, "access": "rwm"})
        );
        let back: Spec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn a_customer_path_is_kept() {
        let spec = runtime_config(&ContainerPlan {
            env: vec!["PATH=/x".into()],
            ..plan()
        })
        .unwrap();
        assert_eq!(spec.process.env, ["PATH=/x"]);
    }

    #[test]
    fn gpus_get_their_nodes_and_cgroup_rules() {
        let stat = |p: &Path| match p.to_str()? {
            "/dev/nvidiactl" => Some((195, 255)),
            "/dev/nvidia-uvm" => Some((508, 0)),
            p => p
                .strip_prefix("/dev/nvidia")
                .and_then(|n| n.parse().ok())
                .map(|n| (195, n)),
        };
        let devices = gpu_device_nodes(Path::new("/dev"), &[1, 3], stat).unwrap();
        let spec = runtime_config(&ContainerPlan { devices, ..plan() }).unwrap();
        // Bound from the host's nodes, after /dev's tmpfs, usable but not executable.
        assert!(spec.linux.devices.is_empty());
        let dev = spec.mounts.iter().position(|m| m.destination == "/dev");
        let binds: Vec<_> = spec
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.destination.starts_with("/dev/nvidia"))
            .map(|(i, m)| {
                assert!(Some(i) > dev);
                assert_eq!(m.kind, "bind");
                assert!(!m.options.iter().any(|o| o == "nodev"), "{:?}", m.options);
                assert!(m.options.iter().any(|o| o == "noexec"));
                (m.source.as_str(), m.destination.as_str())
            })
            .collect();
        assert_eq!(
            binds,
            [
                ("/dev/nvidiactl", "/dev/nvidiactl"),
                ("/dev/nvidia-uvm", "/dev/nvidia-uvm"),
                ("/dev/nvidia1", "/dev/nvidia1"),
                ("/dev/nvidia3", "/dev/nvidia3")
            ]
        );
        // Another device directory: the container still sees /dev/nvidia*.
        let other = gpu_device_nodes(Path::new("/srv/gpu"), &[0], |_| Some((1, 3))).unwrap();
        assert_eq!(other[2].path, "/dev/nvidia0");
        assert_eq!(other[2].host_path, Path::new("/srv/gpu/nvidia0"));
        let rules = &spec.linux.resources.devices;
        assert!(!rules[0].allow, "deny all first");
        let allowed: Vec<_> = rules[1..]
            .iter()
            .map(|r| {
                (
                    r.allow,
                    r.kind.as_deref(),
                    r.major,
                    r.minor,
                    r.access.as_str(),
                )
            })
            .collect();
        assert_eq!(
            allowed,
            [
                (true, Some("c"), Some(195), Some(255), "rw"),
                (true, Some("c"), Some(508), Some(0), "rw"),
                (true, Some("c"), Some(195), Some(1), "rw"),
                (true, Some("c"), Some(195), Some(3), "rw"),
            ]
        );
        // No GPU in the slice: no NVIDIA node, whatever the host has.
        assert!(
            gpu_device_nodes(Path::new("/dev"), &[], stat)
                .unwrap()
                .is_empty()
        );
        assert!(gpu_device_nodes(Path::new("/dev"), &[0], |_| None).is_err());
    }

    #[test]
    fn gpus_go_to_plans_in_id_order() {
        let plans = [(5, 2), (2, 1), (9, 0), (7, 3)];
        assert_eq!(gpu_indexes(&plans, 2), [0]);
        assert_eq!(gpu_indexes(&plans, 5), [1, 2]);
        assert_eq!(gpu_indexes(&plans, 7), [3, 4, 5]);
        assert!(gpu_indexes(&plans, 9).is_empty());
        assert!(gpu_indexes(&plans, 1).is_empty());
    }

    #[test]
    fn bad_requests_are_refused() {
        let bad = |f: &dyn Fn(&mut ContainerPlan)| {
            let mut p = plan();
            f(&mut p);
            runtime_config(&p).unwrap_err()
        };
        assert_eq!(bad(&|p| p.args.clear()), SpecError::NoArgs);
        assert_eq!(bad(&|p| p.args.push("a\0b".into())), SpecError::Nul);
        assert!(matches!(
            bad(&|p| p.env.push("=x".into())),
            SpecError::BadEnv(_)
        ));
        assert!(matches!(
            bad(&|p| p.env.push("NOEQ".into())),
            SpecError::BadEnv(_)
        ));
        assert!(matches!(
            bad(&|p| p.cwd = "rel".into()),
            SpecError::BadCwd(_)
        ));
        assert!(matches!(
            bad(&|p| p.cwd = "/a/../..".into()),
            SpecError::BadCwd(_)
        ));
        assert_eq!(bad(&|p| p.memory_bytes = 0), SpecError::Zero("memory"));
        assert_eq!(
            bad(&|p| p.args.push("x".repeat(MAX_ARGS_BYTES))),
            SpecError::TooLong
        );
    }

    #[test]
    fn symlinks_are_judged_from_their_directory() {
        let c = |p: &str| plain_components(Path::new(p)).unwrap();
        assert!(symlink_stays_inside(&c("bin/sh"), Path::new("busybox")));
        assert!(symlink_stays_inside(
            &c("usr/bin/sh"),
            Path::new("../../bin/busybox")
        ));
        assert!(symlink_stays_inside(
            &c("lib64/ld.so"),
            Path::new("/lib/ld.so")
        ));
        assert!(!symlink_stays_inside(&c("bin/sh"), Path::new("../../etc")));
        assert!(!symlink_stays_inside(&c("x"), Path::new("..")));
        assert!(!symlink_stays_inside(&c("a/b"), Path::new("c/../../../d")));
        assert_eq!(plain_components(Path::new("./a/./b")).unwrap().len(), 2);
        assert!(plain_components(Path::new("/etc/passwd")).is_none());
        assert!(plain_components(Path::new("a/../b")).is_none());
    }

    #[test]
    fn outside_ids_become_nobody() {
        assert_eq!(host_id(0), HOST_ID_BASE);
        assert_eq!(host_id(1000), HOST_ID_BASE + 1000);
        assert_eq!(host_id(70_000), HOST_ID_BASE + 65_534);
    }

    #[test]
    fn the_output_filesystem_is_the_quota() {
        assert_eq!(output_fs_bytes(1 << 20), 1 << 20);
        assert_eq!(output_fs_bytes((1 << 20) + 1000), 1 << 20);
        assert_eq!(output_fs_bytes(10), MIN_OUTPUT_FS);
        let args = mkfs_args(Path::new("/b/output.img"), 100);
        let joined = args.join(" ");
        assert!(joined.contains("-O ^has_journal"), "{joined}");
        assert!(joined.contains("-m 0"), "{joined}");
        assert!(joined.contains("-N 110"), "{joined}");
        assert!(joined.contains("root_owner=100000:100000"), "{joined}");
        assert_eq!(args.last().unwrap(), "/b/output.img");
        // Full: no inode left, or within 64 KiB / 1% of the end.
        let mib = 1u64 << 20;
        assert_eq!(
            judge_full(mib, 500 << 10, 0, mib, 100),
            Some(QuotaHit::Entries { quota: 100 })
        );
        assert_eq!(
            judge_full(mib, 6 << 10, 80, mib, 100),
            Some(QuotaHit::Bytes { quota: mib })
        );
        assert_eq!(judge_full(mib, 500 << 10, 80, mib, 100), None);
        assert_eq!(
            judge_full(1000 * mib, 5 * mib, 80, 1000 * mib, 100),
            Some(QuotaHit::Bytes { quota: 1000 * mib })
        );
        assert_eq!(judge_full(1000 * mib, 20 * mib, 80, 1000 * mib, 100), None);
    }

    #[test]
    fn mounts_under_a_directory_deepest_first() {
        let info = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 7:0 / /var/lib/sonm/containers/3/output rw,nosuid - ext4 /dev/loop0 rw
41 22 7:1 / /var/lib/sonm/containers/4/out\\040put rw,nosuid - ext4 /dev/loop1 rw
42 40 0:5 / /var/lib/sonm/containers/3/output/x rw - tmpfs tmpfs rw
43 22 7:2 / /var/lib/sonm/containers-other/1 rw - ext4 /dev/loop2 rw
";
        let found = mounts_under(info, Path::new("/var/lib/sonm/containers"));
        assert_eq!(
            found,
            [
                PathBuf::from("/var/lib/sonm/containers/3/output/x"),
                PathBuf::from("/var/lib/sonm/containers/3/output"),
                PathBuf::from("/var/lib/sonm/containers/4/out put"),
            ]
        );
        assert_eq!(unescape_mountinfo("a\\134b\\"), "a\\b\\");
    }

    #[test]
    fn networks_parse_and_slots_get_their_own_slash_30() {
        let n: Ipv4Net = "10.217.0.0/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.217.0.0/16");
        assert!(matches!(
            "10.217.0.1/16".parse::<Ipv4Net>(),
            Err(NetError::HostBits(_))
        ));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0/8"] {
            assert!(
                matches!(bad.parse::<Ipv4Net>(), Err(NetError::BadCidr(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            NetConfig::new("10.0.0.0/31", &[]),
            Err(NetError::SubnetTooSmall(_))
        ));
        let c = NetConfig::default();
        assert_eq!(c.subnet, n);
        assert_eq!(c.slots(), 16384);
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            c.slot_addresses(0),
            Some((a("10.217.0.1"), a("10.217.0.2")))
        );
        assert_eq!(
            c.slot_addresses(65),
            Some((a("10.217.1.5"), a("10.217.1.6")))
        );
        assert_eq!(
            c.slot_addresses(16383),
            Some((a("10.217.255.253"), a("10.217.255.254")))
        );
        assert_eq!(c.slot_addresses(16384), None);
        // Slots never overlap: each /30 is four addresses apart.
        let small = NetConfig::new("192.0.2.0/28", &[]).unwrap();
        assert_eq!(small.slots(), 4);
        // A huge subnet is capped at what interface names can number.
        assert_eq!(NetConfig::new("10.0.0.0/8", &[]).unwrap().slots(), 1 << 20);
        // Names fit IFNAMSIZ (15 bytes) at the largest slot.
        let (h, p) = link_names("0123456789abcdef", (1 << 20) - 1);
        assert_eq!(
            (h.as_str(), p.as_str()),
            ("s01234567hfffff", "s01234567pfffff")
        );
        assert!(h.len() <= 15);
    }

    #[test]
    fn the_denied_ranges_and_the_ruleset() {
        let c = NetConfig::default();
        let denied: Vec<String> = c.denied_ranges().iter().map(|n| n.to_string()).collect();
        // The subnet is inside 10/8: dropped as nested (nft refuses overlapping intervals).
        assert_eq!(
            denied,
            [
                "169.254.0.0/16",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10"
            ]
        );
        let none = NetConfig::new("10.217.0.0/16", &[]).unwrap();
        let d2: Vec<String> = none.denied_ranges().iter().map(|n| n.to_string()).collect();
        assert_eq!(d2, ["169.254.0.0/16", "10.217.0.0/16"]);
        let dup = NetConfig::new("10.217.0.0/16", &["10.217.0.0/16".into()]).unwrap();
        assert_eq!(dup.denied_ranges().len(), 2);
        let rules = nft_ruleset("sonm_ab12", &none);
        assert!(rules.starts_with("table inet sonm_ab12 {"), "{rules}");
        assert!(rules.contains("elements = { 169.254.0.0/16, 10.217.0.0/16 }"));
        for r in [
            "iifname @links drop",
            "iifname @links ip daddr @denied drop",
            "oifname @links ct state established,related accept",
            "oifname @links drop",
            "iifname @links oifname != @links masquerade",
        ] {
            assert!(rules.contains(r), "{r}");
        }
        assert_eq!(nft_table("ab-12"), "sonm_ab12");
        let script = hook_script(
            "sonm-ab-7",
            "sabph3",
            "10.217.0.13".parse().unwrap(),
            "10.217.0.14".parse().unwrap(),
        );
        assert!(script.contains("ip netns attach sonm-ab-7 \"$pid\""));
        assert!(script.contains("ip -n sonm-ab-7 addr add 10.217.0.14/30 dev eth0"));
        assert!(script.contains("route add default via 10.217.0.13"));
        // The hook is in the config only for an outbound task.
        let spec = runtime_config(&ContainerPlan {
            network_hook: Some("/b/network.sh".into()),
            ..plan()
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["hooks"]["createRuntime"][0]["args"][1],
            "/b/network.sh"
        );
        let plain = serde_json::to_value(runtime_config(&plan()).unwrap()).unwrap();
        assert!(plain.get("hooks").is_none());
    }
}
