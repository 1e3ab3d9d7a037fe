//! Node-wide figures from `/proc` (under an injectable root) and from the filesystems:
//! memory on cgroup v2 hosts, network interfaces, process ids, boot time, `statfs` and disk
//! usage of a directory tree.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use node_core::stats::{FsStats, InterfaceStats, NetworkStats};

use super::StatsError;
use super::cgroup::{MemorySample, keyed, read, read_u64};

/// Interfaces upstream (cAdvisor) leaves out of the node's network figures.
const IGNORED_INTERFACES: [&str; 4] = ["lo", "veth", "docker", "nerdctl"];

/// The interface reported inline as the default, as upstream names it.
const DEFAULT_INTERFACE: &str = "eth0";

/// Where the `/proc` files are read.
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs::new("/proc")
    }
}

impl ProcFs {
    /// `/proc` at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The node's memory as the root cgroup of cgroup v2 reports it (runc reads
    /// `/proc/meminfo` there): usage = MemTotal - MemFree, working set = usage -
    /// Inactive(file), rss = AnonPages, faults from `/proc/vmstat`.
    pub fn node_memory(&self) -> Result<MemorySample, StatsError> {
        let path = self.path("meminfo");
        let text = read(&path)?;
        let kib = |key: &str| -> Result<u64, StatsError> {
            text.lines()
                .find_map(|l| {
                    let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                    rest.split_whitespace().next()?.parse::<u64>().ok()
                })
                .map(|v| v * 1024)
                .ok_or_else(|| StatsError::parse(&path, format!("no {key}")))
        };
        let total = kib("MemTotal")?;
        let usage = total.saturating_sub(kib("MemFree")?);
        let inactive = kib("Inactive(file)")?;
        let vmstat = read(&self.path("vmstat")).ok();
        Ok(MemorySample {
            usage,
            working_set: usage.saturating_sub(inactive),
            rss: kib("AnonPages").ok(),
            page_faults: vmstat.as_deref().and_then(|s| keyed(s, "pgfault")),
            major_page_faults: vmstat.as_deref().and_then(|s| keyed(s, "pgmajfault")),
            limit: Some(total),
        })
    }

    /// The host's interfaces from `net/dev`, without loopback and container-side devices; the
    /// default is `eth0` when present, else the first.
    pub fn network(&self) -> Result<NetworkStats, StatsError> {
        self.network_at(&self.path("net/dev"))
    }

    /// The interfaces of the network namespace process `pid` is in (a pod's, from one of its
    /// processes), as [`ProcFs::network`] reads the host's.
    pub fn network_of(&self, pid: u32) -> Result<NetworkStats, StatsError> {
        self.network_at(&self.path(&format!("{pid}/net/dev")))
    }

    fn network_at(&self, path: &Path) -> Result<NetworkStats, StatsError> {
        let path = path.to_path_buf();
        let interfaces =
            parse_net_dev(&read(&path)?).ok_or_else(|| StatsError::parse(&path, "malformed"))?;
        let interfaces: Vec<InterfaceStats> = interfaces
            .into_iter()
            .filter(|i| !IGNORED_INTERFACES.iter().any(|p| i.name.starts_with(p)))
            .collect();
        let default = interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .or_else(|| interfaces.first())
            .cloned()
            .unwrap_or_default();
        Ok(NetworkStats {
            time: None,
            default,
            interfaces,
        })
    }

    /// The largest usable process id: the smaller of `kernel.pid_max` and
    /// `kernel.threads-max`, as upstream.
    pub fn max_pid(&self) -> Result<u64, StatsError> {
        let pid_max = read_u64(&self.path("sys/kernel/pid_max"))?;
        let threads_max = read_u64(&self.path("sys/kernel/threads-max"))?;
        Ok(pid_max.min(threads_max))
    }

    /// Tasks on the node now (the total in `loadavg`'s `running/total`, what sysinfo's procs
    /// counts).
    pub fn tasks(&self) -> Result<u64, StatsError> {
        let path = self.path("loadavg");
        let text = read(&path)?;
        text.split_whitespace()
            .nth(3)
            .and_then(|f| f.split('/').nth(1))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| StatsError::parse(&path, "no running/total field"))
    }

    /// The node's boot time, seconds since the epoch (`stat`'s `btime`).
    pub fn boot_time(&self) -> Result<i64, StatsError> {
        let path = self.path("stat");
        keyed(&read(&path)?, "btime")
            .and_then(|t| i64::try_from(t).ok())
            .ok_or_else(|| StatsError::parse(&path, "no btime"))
    }
}

/// The interfaces of a `/proc/net/dev` text; `None` when a line is malformed.
pub fn parse_net_dev(text: &str) -> Option<Vec<InterfaceStats>> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let (name, counters) = line.split_once(':')?;
        let fields: Vec<u64> = counters
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if fields.len() < 16 {
            return None;
        }
        out.push(InterfaceStats {
            name: name.trim().to_string(),
            rx_bytes: Some(fields[0]),
            rx_errors: Some(fields[2]),
            tx_bytes: Some(fields[8]),
            tx_errors: Some(fields[10]),
        });
    }
    Some(out)
}

/// `statfs` of the filesystem holding `path`: capacity, available (to unprivileged users),
/// used (everything used on it) and inodes.
pub fn filesystem(path: &Path) -> Result<FsStats, StatsError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| StatsError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let frsize = st.fragment_size();
    let (blocks, free, avail) = (st.blocks(), st.blocks_free(), st.blocks_available());
    Ok(FsStats {
        time: None,
        capacity_bytes: Some(blocks.saturating_mul(frsize)),
        available_bytes: Some(avail.saturating_mul(frsize)),
        used_bytes: Some(blocks.saturating_sub(free).saturating_mul(frsize)),
        inodes: Some(st.files()),
        inodes_free: Some(st.files_free()),
        inodes_used: Some(st.files().saturating_sub(st.files_free())),
    })
}

/// Bytes (allocated blocks, as `du`) and inodes of the tree at `dir`, staying on its
/// filesystem and not following symbolic links. A missing `dir` is `None`; entries that vanish
/// while walking are skipped.
pub fn disk_usage(dir: &Path) -> Result<Option<(u64, u64)>, StatsError> {
    let root = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StatsError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let device = root.dev();
    let (mut bytes, mut inodes) = (root.blocks() * 512, 1u64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            bytes += meta.blocks() * 512;
            inodes += 1;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(Some((bytes, inodes)))
}
