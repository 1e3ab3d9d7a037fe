//! CPU, memory and process figures of a cgroup, on cgroup v1 and v2 alike, under an injectable
//! mount point (`/sys/fs/cgroup` on a node; a fixture directory in tests).
//!
//! Working set as upstream computes it (cAdvisor): usage minus inactive file pages, never
//! below 0. Every reader returns an error naming the file it could not read or parse; none
//! answers 0 for a figure it does not have.

use std::path::{Path, PathBuf};

use super::StatsError;

/// Memory figures of one cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// All memory charged to the cgroup (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage: u64,
    /// Usage minus inactive file pages.
    pub working_set: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss: Option<u64>,
    /// Cumulative minor page faults.
    pub page_faults: Option<u64>,
    /// Cumulative major page faults.
    pub major_page_faults: Option<u64>,
    /// The cgroup's limit, when it has one.
    pub limit: Option<u64>,
}

/// v1 reports "no limit" as a page-rounded `i64::MAX`; anything this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The cgroup hierarchy of the node: v1 (one mount per controller, what this machine has,
/// including hybrid hosts whose v2 mount has no controllers) or v2 (unified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroups {
    /// Controllers mounted at `<root>/<controller>`.
    V1 {
        /// Where the controllers are mounted (`/sys/fs/cgroup`).
        root: PathBuf,
    },
    /// The unified hierarchy at `root`.
    V2 {
        /// Where it is mounted (`/sys/fs/cgroup`).
        root: PathBuf,
    },
}

impl Cgroups {
    /// The hierarchy mounted at `mount`: v2 when its root has `cgroup.controllers`, else v1
    /// (a hybrid host's v2 mount elsewhere, with no controllers, carries no figures).
    pub fn detect(mount: impl Into<PathBuf>) -> Self {
        let root = mount.into();
        if root.join("cgroup.controllers").is_file() {
            Cgroups::V2 { root }
        } else {
            Cgroups::V1 { root }
        }
    }

    /// 1 or 2.
    pub fn version(&self) -> u8 {
        match self {
            Cgroups::V1 { .. } => 1,
            Cgroups::V2 { .. } => 2,
        }
    }

    /// The directory of `cgroup` (a path such as `/kubepods/besteffort/pod<uid>`, `/` for
    /// the root) for `controller` (ignored on v2).
    pub fn dir(&self, controller: &str, cgroup: &str) -> PathBuf {
        let cgroup = cgroup.trim_start_matches('/');
        match self {
            Cgroups::V1 { root } => root.join(controller).join(cgroup),
            Cgroups::V2 { root } => root.join(cgroup),
        }
    }

    /// Whether `cgroup` exists (in the memory hierarchy on v1).
    pub fn exists(&self, cgroup: &str) -> bool {
        self.dir("memory", cgroup).is_dir()
    }

    /// Cumulative CPU time of `cgroup`, nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat`'s
    /// `usage_usec`).
    pub fn cpu_usage_nanos(&self, cgroup: &str) -> Result<u64, StatsError> {
        match self {
            Cgroups::V1 { .. } => read_u64(&self.dir("cpuacct", cgroup).join("cpuacct.usage")),
            Cgroups::V2 { .. } => {
                let path = self.dir("cpu", cgroup).join("cpu.stat");
                let stat = read(&path)?;
                keyed(&stat, "usage_usec")
                    .map(|usec| usec.saturating_mul(1000))
                    .ok_or_else(|| StatsError::parse(&path, "no usage_usec"))
            }
        }
    }

    /// Memory figures of `cgroup`. The v2 root has no `memory.current`: read the node's
    /// memory from `/proc/meminfo` instead ([`super::host::node_memory`]).
    pub fn memory(&self, cgroup: &str) -> Result<MemorySample, StatsError> {
        let dir = self.dir("memory", cgroup);
        match self {
            Cgroups::V1 { .. } => {
                let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
                let stat_path = dir.join("memory.stat");
                let stat = read(&stat_path)?;
                let inactive = keyed(&stat, "total_inactive_file")
                    .ok_or_else(|| StatsError::parse(&stat_path, "no total_inactive_file"))?;
                let limit = read_u64(&dir.join("memory.limit_in_bytes"))
                    .ok()
                    .filter(|l| *l < V1_UNLIMITED);
                Ok(MemorySample {
                    usage,
                    working_set: usage.saturating_sub(inactive),
                    rss: keyed(&stat, "total_rss"),
                    page_faults: keyed(&stat, "total_pgfault"),
                    major_page_faults: keyed(&stat, "total_pgmajfault"),
                    limit,
                })
            }
            Cgroups::V2 { .. } => {
                let usage = read_u64(&dir.join("memory.current"))?;
                let stat_path = dir.join("memory.stat");
                let stat = read(&stat_path)?;
                let inactive = keyed(&stat, "inactive_file")
                    .ok_or_else(|| StatsError::parse(&stat_path, "no inactive_file"))?;
                let limit = read(&dir.join("memory.max"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                Ok(MemorySample {
                    usage,
                    working_set: usage.saturating_sub(inactive),
                    rss: keyed(&stat, "anon"),
                    page_faults: keyed(&stat, "pgfault"),
                    major_page_faults: keyed(&stat, "pgmajfault"),
                    limit,
                })
            }
        }
    }

    /// A process of `cgroup` or of one of its children (on v1 a pod's processes live in its
    /// containers' cgroups), from `cgroup.procs`.
    pub fn first_process(&self, cgroup: &str) -> Option<u32> {
        let dir = self.dir("pids", cgroup);
        let first = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .ok()?
                .lines()
                .find_map(|l| l.trim().parse::<u32>().ok())
        };
        first(&dir).or_else(|| {
            std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .find_map(|e| first(&e.path()))
        })
    }

    /// Processes (tasks) in `cgroup` (`pids.current`).
    pub fn processes(&self, cgroup: &str) -> Result<u64, StatsError> {
        read_u64(&self.dir("pids", cgroup).join("pids.current"))
    }
}

pub(super) fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn read_u64(path: &Path) -> Result<u64, StatsError> {
    let text = read(path)?;
    text.trim()
        .parse()
        .map_err(|_| StatsError::parse(path, format!("not a number: {:?}", text.trim())))
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`, `/proc/vmstat`).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}
