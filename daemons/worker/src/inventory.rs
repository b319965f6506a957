//! What the box has: CPU model and cores, RAM, disk, GPUs.
//!
//! Read from `/proc` and `statvfs`; GPUs through NVML (nvml-wrapper), whose library is loaded at
//! run time: where it is missing or fails to initialise the box simply has no GPU.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why the inventory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot understand {0}")]
    Parse(&'static str),
}

/// One GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_bytes: u64,
}

/// The box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub cpu_model: String,
    /// Logical CPUs this process may use (affinity and cgroup quota respected).
    pub cpu_cores: u32,
    pub ram_bytes: u64,
    /// Space available (to an unprivileged user) on the state directory's filesystem.
    pub storage_bytes: u64,
    pub gpus: Vec<Gpu>,
}

impl Inventory {
    /// Takes the inventory; `storage_dir` names the filesystem whose space is sold.
    pub fn detect(storage_dir: &Path) -> Result<Self, InventoryError> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo =
            std::fs::read_to_string("/proc/meminfo").map_err(|source| InventoryError::Io {
                what: "/proc/meminfo".into(),
                source,
            })?;
        let cpu_cores = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let ram_bytes =
            parse_meminfo_total(&meminfo).ok_or(InventoryError::Parse("/proc/meminfo"))?;
        let stat = rustix::fs::statvfs(storage_dir).map_err(|e| InventoryError::Io {
            what: format!("statvfs {}", storage_dir.display()),
            source: e.into(),
        })?;
        Ok(Self {
            cpu_model: parse_cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cpu_cores,
            ram_bytes,
            storage_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
            gpus: detect_gpus(),
        })
    }

    /// The smallest memory among the GPUs (what one GPU of a slice is sure to have), 0 without.
    pub fn gpu_memory_each(&self) -> u64 {
        self.gpus.iter().map(|g| g.memory_bytes).min().unwrap_or(0)
    }
}

/// The CPU model from `/proc/cpuinfo` (`model name` on x86, `Model`/`Hardware`/`cpu model`
/// elsewhere).
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    for key in ["model name", "Model", "Hardware", "cpu model", "uarch"] {
        for line in cpuinfo.lines() {
            if let Some((k, v)) = line.split_once(':')
                && k.trim() == key
                && !v.trim().is_empty()
            {
                return Some(v.trim().to_owned());
            }
        }
    }
    None
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// GPUs through NVML. Any failure (no library, no driver, no device) means "no GPUs": logged,
/// never fatal.
#[cfg(feature = "nvml")]
pub fn detect_gpus() -> Vec<Gpu> {
    use nvml_wrapper::Nvml;
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(e) => {
            tracing::info!("no GPUs: NVML unavailable ({e})");
            return Vec::new();
        }
    };
    let count = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("no GPUs: NVML device count failed ({e})");
            return Vec::new();
        }
    };
    let mut gpus = Vec::new();
    for index in 0..count {
        let device = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("GPU {index} skipped: {e}");
                continue;
            }
        };
        let memory_bytes = match device.memory_info() {
            Ok(m) => m.total,
            Err(e) => {
                tracing::warn!("GPU {index} skipped: memory info: {e}");
                continue;
            }
        };
        gpus.push(Gpu {
            index,
            name: device.name().unwrap_or_else(|_| "unknown".into()),
            uuid: device.uuid().unwrap_or_default(),
            memory_bytes,
        });
    }
    gpus
}

/// Built without the `nvml` feature: no GPUs.
#[cfg(not(feature = "nvml"))]
pub fn detect_gpus() -> Vec<Gpu> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_meminfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            parse_cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(
            parse_cpu_model(arm).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(parse_cpu_model(""), None);
        let mem = "MemTotal:       24588812 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo_total(mem), Some(24_588_812 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: x kB\n"), None);
    }

    #[test]
    fn this_box_has_cores_ram_and_disk() {
        let inv = Inventory::detect(Path::new("/")).unwrap();
        assert!(inv.cpu_cores >= 1);
        assert!(inv.ram_bytes > 0);
        assert!(inv.storage_bytes > 0);
    }
}
