//! Facts about the host that container configuration depends on: the huge page sizes the
//! kernel offers, the CPUs (for the masked `thermal_throttle` paths) and which swap controller
//! the cgroup hierarchy has. Read once at start-up into the [`NodeContext`].
//!
//! [`NodeContext`]: super::sandbox::NodeContext

use std::path::Path;

/// Where the kernel lists its huge page sizes (`hugepages-2048kB`, ...).
pub const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// Paths the runtime masks in every unprivileged container without `procMount: Unmasked`
/// (upstream `securitycontext.defaultMaskedPaths`), before the per-CPU entries.
const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the runtime makes read-only in the same containers (upstream
/// `securitycontext.defaultReadonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Upstream's masked paths for a host with `cpus` CPUs: the fixed list, then
/// `/sys/devices/system/cpu/cpu<N>/thermal_throttle` for each CPU.
pub fn default_masked_paths(cpus: usize) -> Vec<String> {
    MASKED_PATHS
        .iter()
        .map(|p| p.to_string())
        .chain((0..cpus).map(|n| format!("/sys/devices/system/cpu/cpu{n}/thermal_throttle")))
        .collect()
}

/// The CPUs this process may run on (Go's `runtime.NumCPU`: the affinity mask, not a cgroup
/// quota); 1 if the mask cannot be read.
pub fn usable_cpus() -> usize {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .count()
            .max(1),
        Err(_) => 1,
    }
}

/// The huge page sizes under `dir` in the CRI's spelling (`2MB`, `1GB`; upstream
/// `HugePageSizes`), sorted by size. A missing directory means none.
pub fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
            kb.parse::<u64>().ok().map(|kb| kb * 1024)
        })
        .collect();
    sizes.sort_unstable();
    sizes.into_iter().map(page_size_name).collect()
}

/// A page size in bytes as the CRI names it: the largest binary unit it is a whole multiple
/// of, or a decimal fraction of the next (`2097152` -> `2MB`, `1073741824` -> `1GB`).
pub fn page_size_name(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

/// The page size, in bytes, of a `hugepages-<size>` resource name (`hugepages-2Mi`).
pub fn hugepage_resource_bytes(resource: &str) -> Option<u64> {
    let size = resource.strip_prefix("hugepages-")?;
    let q = size.parse::<node_config::Quantity>().ok()?;
    u64::try_from(q.value()).ok().filter(|&b| b > 0)
}

/// Which swap limit the node's memory cgroup controller takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SwapController {
    /// None: no swap accounting (a v1 kernel without `memory.memsw.*`), so no swap limit is
    /// set.
    #[default]
    Absent,
    /// cgroup v1 `memory.memsw.limit_in_bytes`: memory plus swap.
    V1,
    /// cgroup v2 `memory.swap.max`: swap alone.
    V2,
}

impl SwapController {
    /// Detects the controller under the cgroup mount `root` (`/sys/fs/cgroup`), as upstream's
    /// `swapControllerAvailable`: on the unified hierarchy (`cgroup.controllers` at the root),
    /// v2 when the kubelet's own cgroup (`/proc/self/cgroup`) has `memory.swap.max`; otherwise
    /// v1 when the memory hierarchy has `memory.memsw.limit_in_bytes`.
    pub fn detect(root: &Path) -> Self {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        Self::detect_at(root, own)
    }

    /// [`detect`](Self::detect) with the kubelet's cgroup v2 path given.
    pub fn detect_at(root: &Path, own_cgroup: &str) -> Self {
        if root.join("cgroup.controllers").exists() {
            let own = root.join(own_cgroup.trim_start_matches('/'));
            return if own.join("memory.swap.max").exists() {
                SwapController::V2
            } else {
                SwapController::Absent
            };
        }
        if root.join("memory/memory.memsw.limit_in_bytes").exists() {
            SwapController::V1
        } else {
            SwapController::Absent
        }
    }
}

/// How containers' swap is limited: the node's controller, `memorySwap.swapBehavior` and the
/// node's swap capacity (for `LimitedSwap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapSettings {
    /// The node's swap controller; [`SwapController::Absent`] sets no limit at all.
    pub controller: SwapController,
    /// `memorySwap.swapBehavior`.
    pub behavior: node_config::SwapBehavior,
    /// The node's swap in bytes (`SwapTotal`).
    pub capacity_bytes: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_paths_end_with_each_cpus_thermal_throttle() {
        let paths = default_masked_paths(2);
        assert_eq!(paths.len(), 14);
        assert_eq!(paths[0], "/proc/asound");
        assert_eq!(
            &paths[12..],
            [
                "/sys/devices/system/cpu/cpu0/thermal_throttle",
                "/sys/devices/system/cpu/cpu1/thermal_throttle"
            ]
        );
        assert!(usable_cpus() >= 1);
    }

    #[test]
    fn huge_page_sizes_are_named_as_the_cri_names_them() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["hugepages-1048576kB", "hugepages-2048kB", "other"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        assert_eq!(hugepage_sizes(dir.path()), ["2MB", "1GB"]);
        assert!(hugepage_sizes(&dir.path().join("missing")).is_empty());
        assert_eq!(page_size_name(64 * 1024), "64KB");
        assert_eq!(hugepage_resource_bytes("hugepages-2Mi"), Some(2 << 20));
        assert_eq!(hugepage_resource_bytes("hugepages-1Gi"), Some(1 << 30));
        assert_eq!(hugepage_resource_bytes("memory"), None);
    }

    #[test]
    fn the_swap_controller_follows_the_hierarchy() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        std::fs::create_dir(v2.path().join("kubelet")).unwrap();
        assert_eq!(
            SwapController::detect_at(v2.path(), "/kubelet"),
            SwapController::Absent
        );
        std::fs::write(v2.path().join("kubelet/memory.swap.max"), "max\n").unwrap();
        assert_eq!(
            SwapController::detect_at(v2.path(), "/kubelet"),
            SwapController::V2
        );
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        assert_eq!(SwapController::detect(v1.path()), SwapController::Absent);
        std::fs::write(v1.path().join("memory/memory.memsw.limit_in_bytes"), "0").unwrap();
        assert_eq!(SwapController::detect(v1.path()), SwapController::V1);
    }
}
