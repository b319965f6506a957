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
//! loopback), a read-only rootfs with a writable `/output` (a per-task host directory) and a tmpfs
//! `/tmp`, and cgroup limits from the slice (memory = memory+swap, CPU quota = cores × period,
//! pids). The deal's GPUs are the only devices added to runc's default minimal set.
//!
//! The I/O side: [`Containers`] keeps bundles under `<state>/containers/<task>` and runc's own
//! state under `<state>/runc` (its `--root`), so `runc list` there shows only this worker's
//! containers, and a restart after a crash deletes them ([`Containers::clean_leftovers`]).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
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
    pub path: String,
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
    let mut devices = Vec::new();
    for d in &plan.devices {
        devices.push(Device {
            path: d.path.clone(),
            kind: s("c"),
            major: d.major,
            minor: d.minor,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        });
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
        mounts: vec![
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
            mount(
                "/output",
                "bind",
                &plan.output_dir.to_string_lossy(),
                &["rbind", "rw", "nosuid", "nodev"],
            ),
        ],
        linux: Linux {
            uid_mappings: ids.clone(),
            gid_mappings: ids,
            namespaces: ["pid", "network", "ipc", "uts", "mount", "user"]
                .iter()
                .map(|k| Namespace { kind: s(k) })
                .collect(),
            devices,
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
    indexes: &[u32],
    stat: impl Fn(&str) -> Option<(i64, i64)>,
) -> Result<Vec<DeviceNode>, String> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let mut paths = vec![s("/dev/nvidiactl"), s("/dev/nvidia-uvm")];
    paths.extend(indexes.iter().map(|i| format!("/dev/nvidia{i}")));
    paths
        .into_iter()
        .map(|path| match stat(&path) {
            Some((major, minor)) => Ok(DeviceNode { path, major, minor }),
            None => Err(format!("{path} is missing (NVIDIA driver not loaded?)")),
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
pub fn stat_char_device(path: &str) -> Option<(i64, i64)> {
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
        }
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
        let stat = |p: &str| match p {
            "/dev/nvidiactl" => Some((195, 255)),
            "/dev/nvidia-uvm" => Some((508, 0)),
            p => p
                .strip_prefix("/dev/nvidia")
                .and_then(|n| n.parse().ok())
                .map(|n| (195, n)),
        };
        let devices = gpu_device_nodes(&[1, 3], stat).unwrap();
        let spec = runtime_config(&ContainerPlan { devices, ..plan() }).unwrap();
        let paths: Vec<_> = spec.linux.devices.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia1",
                "/dev/nvidia3"
            ]
        );
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
        assert!(gpu_device_nodes(&[], stat).unwrap().is_empty());
        assert!(gpu_device_nodes(&[0], |_| None).is_err());
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
}
