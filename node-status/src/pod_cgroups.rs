//! Pod cgroups on Linux, cgroup v1 and v2 (upstream's QoS and pod container managers with
//! the cgroupfs driver): `kubepods` sized to node allocatable, `kubepods/burstable` and
//! `kubepods/besteffort`, and one `pod<uid>` cgroup per pod under its QoS class with the
//! pod's CPU shares, CFS quota, memory limit and `podPidsLimit`.
//!
//! Written by hand, a handful of files per cgroup: the Rust cgroup crates either pull a D-Bus
//! stack in (cgroups-rs) or manage containers rather than bare hierarchies.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use node_config::CgroupDriver;
use node_core::qos::{
    CFS_PERIOD_US, QosClass, milli_cpu_to_shares, pod_cgroup, pod_qos, pods_cgroup,
};
use node_core::runtime::PodCgroups;
use tracing::{debug, info};

use crate::stats::cgroup::Cgroups;

/// The v1 controllers pod cgroups are made in (cpu and cpuacct are usually one hierarchy).
const V1_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// What `kubepods` is sized to (node allocatable, with `enforceNodeAllocatable: pods`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocatable {
    /// CPU, millicores.
    pub cpu_milli: i64,
    /// Memory, bytes (`None`: no limit).
    pub memory: Option<i64>,
    /// Process IDs (`None`: no limit).
    pub pids: Option<i64>,
}

/// Pod cgroups under `cgroupRoot` on the node's hierarchy.
#[derive(Debug)]
pub struct LinuxPodCgroups {
    cgroups: Cgroups,
    cgroup_root: String,
    driver: CgroupDriver,
    pod_pids_limit: Option<i64>,
    cfs_quota: bool,
    /// `cpuCFSQuotaPeriod` in µs.
    cfs_period: i64,
    /// The Burstable cgroup's CPU shares as last written.
    burstable_shares: std::sync::Mutex<Option<u64>>,
    /// `MemoryQoS` (cgroup v2 only): `memory.min` from memory requests.
    memory_qos: bool,
    /// The QoS classes' `memory.min` as last written (Burstable, kubepods).
    memory_mins: std::sync::Mutex<Option<(i64, i64)>>,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let path = dir.join(file);
    std::fs::write(&path, value)
        .map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// v2's `cpu.weight` for v1 `cpu.shares` (runc's conversion).
fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

impl LinuxPodCgroups {
    /// Pod cgroups on `cgroups` below `cgroup_root` (cgroup names as `driver` spells them),
    /// with `podPidsLimit` (-1 or 0: none) and `cpuCFSQuota`.
    pub fn new(
        cgroups: Cgroups,
        cgroup_root: impl Into<String>,
        driver: CgroupDriver,
        pod_pids_limit: i64,
        cfs_quota: bool,
    ) -> Self {
        LinuxPodCgroups {
            cgroups,
            cgroup_root: cgroup_root.into(),
            driver,
            pod_pids_limit: (pod_pids_limit > 0).then_some(pod_pids_limit),
            cfs_quota,
            cfs_period: CFS_PERIOD_US,
            burstable_shares: std::sync::Mutex::new(None),
            memory_qos: false,
            memory_mins: std::sync::Mutex::new(None),
        }
    }

    /// `cpuCFSQuotaPeriod` (µs): the CFS period of the pod cgroups and the one their quota is
    /// for (default 100000).
    pub fn with_cfs_period(mut self, period_us: i64) -> Self {
        if period_us > 0 {
            self.cfs_period = period_us;
        }
        self
    }

    fn resource_config(&self, pod: &Pod) -> node_core::qos::PodResourceConfig {
        node_core::qos::pod_resource_config_with_period(
            pod,
            self.cfs_quota.then_some(self.cfs_period),
        )
    }

    /// `MemoryQoS` (feature gate, alpha): on cgroup v2, each pod's cgroup gets `memory.min` =
    /// its memory requests, the Burstable cgroup the sum of its pods', `kubepods` the sum of
    /// the Burstable and Guaranteed pods' (upstream's QoS container manager). Nothing on v1.
    pub fn with_memory_qos(mut self, enabled: bool) -> Self {
        self.memory_qos = enabled && self.cgroups.version() == 2;
        self
    }

    /// The directories of `cgroup`: one per controller on v1 (one when controllers share a
    /// hierarchy), the one on v2.
    fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        match &self.cgroups {
            Cgroups::V2 { .. } => vec![self.cgroups.dir("", cgroup)],
            Cgroups::V1 { .. } => {
                let mut roots: Vec<PathBuf> = Vec::new();
                for controller in V1_CONTROLLERS {
                    let root = self.cgroups.dir(controller, "/");
                    if !root.join("cgroup.procs").is_file() {
                        // Not mounted: nothing to make there.
                        continue;
                    }
                    let real = std::fs::canonicalize(&root).unwrap_or(root);
                    if !roots.contains(&real) {
                        roots.push(real);
                    }
                }
                let cgroup = cgroup.trim_start_matches('/');
                roots.into_iter().map(|r| r.join(cgroup)).collect()
            }
        }
    }

    /// The controller directory of `cgroup` a file of `controller` is in.
    fn dir(&self, controller: &str, cgroup: &str) -> PathBuf {
        self.cgroups.dir(controller, cgroup)
    }

    fn create(&self, cgroup: &str) -> Result<(), String> {
        if let Cgroups::V2 { root } = &self.cgroups {
            // Controllers must be enabled in every ancestor's subtree.
            let mut dir = root.clone();
            let _ = write(&dir, "cgroup.subtree_control", "+cpu +memory +pids");
            for part in cgroup.split('/').filter(|p| !p.is_empty()) {
                dir.push(part);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                let _ = write(&dir, "cgroup.subtree_control", "+cpu +memory +pids");
            }
            return Ok(());
        }
        for dir in self.dirs(cgroup) {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Applies CPU shares, quota (µs per 100 ms), memory and pids limits to `cgroup`.
    fn apply(
        &self,
        cgroup: &str,
        shares: u64,
        quota: Option<i64>,
        memory: Option<i64>,
        pids: Option<i64>,
    ) -> Result<(), String> {
        match &self.cgroups {
            Cgroups::V1 { .. } => {
                let cpu = self.dir("cpu", cgroup);
                write(&cpu, "cpu.shares", &shares.to_string())?;
                // The period first: a quota is checked against it.
                if quota.is_some() {
                    write(&cpu, "cpu.cfs_period_us", &self.cfs_period.to_string())?;
                }
                write(&cpu, "cpu.cfs_quota_us", &quota.unwrap_or(-1).to_string())?;
                write(
                    &self.dir("memory", cgroup),
                    "memory.limit_in_bytes",
                    &memory.unwrap_or(-1).to_string(),
                )?;
                let pids_dir = self.dir("pids", cgroup);
                if pids_dir.is_dir() {
                    write(
                        &pids_dir,
                        "pids.max",
                        &pids.map_or("max".into(), |p| p.to_string()),
                    )?;
                }
            }
            Cgroups::V2 { .. } => {
                let dir = self.dir("", cgroup);
                write(&dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
                let quota = quota.map_or("max".into(), |q| q.to_string());
                write(&dir, "cpu.max", &format!("{quota} {}", self.cfs_period))?;
                write(
                    &dir,
                    "memory.max",
                    &memory.map_or("max".into(), |m| m.to_string()),
                )?;
                write(
                    &dir,
                    "pids.max",
                    &pids.map_or("max".into(), |p| p.to_string()),
                )?;
            }
        }
        Ok(())
    }

    /// Creates `kubepods` sized to `allocatable` and the Burstable and BestEffort cgroups
    /// (BestEffort with the minimum CPU shares).
    pub fn setup(&self, allocatable: Allocatable) -> Result<(), String> {
        let pods = pods_cgroup(&self.cgroup_root, self.driver);
        self.create(&pods)?;
        self.apply(
            &pods,
            milli_cpu_to_shares(allocatable.cpu_milli),
            None,
            allocatable.memory,
            allocatable.pids,
        )?;
        let (burstable, best_effort) = (
            self.qos_cgroup(QosClass::Burstable),
            self.qos_cgroup(QosClass::BestEffort),
        );
        self.create(&burstable)?;
        self.create(&best_effort)?;
        self.apply(&best_effort, 2, None, None, None)?;
        info!(cgroup = %pods, version = self.cgroups.version(), ?allocatable, "pod cgroups: kubepods sized to node allocatable");
        Ok(())
    }

    /// Applies a reservation to an existing cgroup (`systemReservedCgroup`,
    /// `kubeReservedCgroup` with `enforceNodeAllocatable` naming them): CPU shares for
    /// `cpu_milli`, and with `memory`, the memory limit (the `-compressible` enforcements pass
    /// none). The cgroup must exist, as upstream's refuses otherwise.
    pub fn enforce_reserved(
        &self,
        cgroup: &str,
        cpu_milli: i64,
        memory: Option<i64>,
    ) -> Result<(), String> {
        let missing: Vec<PathBuf> = self
            .dirs(cgroup)
            .into_iter()
            .filter(|d| !d.is_dir())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "cgroup {cgroup} does not exist ({})",
                missing
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let shares = milli_cpu_to_shares(cpu_milli);
        match &self.cgroups {
            Cgroups::V1 { .. } => {
                write(&self.dir("cpu", cgroup), "cpu.shares", &shares.to_string())?;
                if let Some(m) = memory {
                    write(
                        &self.dir("memory", cgroup),
                        "memory.limit_in_bytes",
                        &m.to_string(),
                    )?;
                }
            }
            Cgroups::V2 { .. } => {
                let dir = self.dir("", cgroup);
                write(&dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
                if let Some(m) = memory {
                    write(&dir, "memory.max", &m.to_string())?;
                }
            }
        }
        info!(cgroup, cpu_milli, ?memory, "reserved resources enforced");
        Ok(())
    }

    /// `memory.min` of the Burstable cgroup (its pods' memory requests) and of `kubepods`
    /// (the Burstable and Guaranteed pods' requests), written when they change.
    fn update_memory_mins(&self, pods: &[Pod]) {
        let sum = |qos: QosClass| -> i64 {
            pods.iter()
                .filter(|p| pod_qos(p) == qos)
                .map(|p| node_core::admission::request_of(p, "memory"))
                .sum()
        };
        let burstable = sum(QosClass::Burstable);
        let all = burstable + sum(QosClass::Guaranteed);
        let mut last = self.memory_mins.lock().unwrap_or_else(|e| e.into_inner());
        if *last == Some((burstable, all)) {
            return;
        }
        let pods_cgroup = pods_cgroup(&self.cgroup_root, self.driver);
        let result = write(
            &self.dir("", &self.qos_cgroup(QosClass::Burstable)),
            "memory.min",
            &burstable.to_string(),
        )
        .and_then(|()| write(&self.dir("", &pods_cgroup), "memory.min", &all.to_string()));
        match result {
            Ok(()) => *last = Some((burstable, all)),
            Err(e) => debug!(error = %e, "updating the QoS cgroups' memory.min"),
        }
    }

    fn qos_cgroup(&self, qos: QosClass) -> String {
        // The pod cgroup's parent.
        let pod = pod_cgroup(&self.cgroup_root, self.driver, qos, "x");
        pod.rsplit_once('/')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default()
    }
}

impl PodCgroups for LinuxPodCgroups {
    fn ensure(&self, pod: &Pod) -> Result<(), String> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let cgroup = pod_cgroup(&self.cgroup_root, self.driver, pod_qos(pod), uid);
        let config = self.resource_config(pod);
        self.create(&cgroup)?;
        self.apply(
            &cgroup,
            config.cpu_shares,
            config.cpu_quota,
            config.memory_limit,
            self.pod_pids_limit,
        )?;
        let request = node_core::admission::request_of(pod, "memory");
        if self.memory_qos && request > 0 {
            write(&self.dir("", &cgroup), "memory.min", &request.to_string())?;
        }
        Ok(())
    }

    fn memory_usage(&self, pod: &Pod) -> Option<u64> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let cgroup = pod_cgroup(&self.cgroup_root, self.driver, pod_qos(pod), uid);
        let file = match &self.cgroups {
            Cgroups::V1 { .. } => self.dir("memory", &cgroup).join("memory.usage_in_bytes"),
            Cgroups::V2 { .. } => self.dir("", &cgroup).join("memory.current"),
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    fn memory_limit(&self, pod: &Pod) -> Option<i64> {
        self.resource_config(pod).memory_limit
    }

    fn update_qos(&self, pods: &[Pod]) {
        let request: i64 = pods
            .iter()
            .filter(|p| pod_qos(p) == QosClass::Burstable)
            .map(|p| self.resource_config(p).cpu_request_milli)
            .sum();
        let shares = milli_cpu_to_shares(request);
        if self.memory_qos {
            self.update_memory_mins(pods);
        }
        let mut last = self
            .burstable_shares
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *last == Some(shares) {
            return;
        }
        let cgroup = self.qos_cgroup(QosClass::Burstable);
        let result = match &self.cgroups {
            Cgroups::V1 { .. } => {
                write(&self.dir("cpu", &cgroup), "cpu.shares", &shares.to_string())
            }
            Cgroups::V2 { .. } => write(
                &self.dir("", &cgroup),
                "cpu.weight",
                &shares_to_weight(shares).to_string(),
            ),
        };
        match result {
            Ok(()) => *last = Some(shares),
            Err(e) => debug!(error = %e, "updating the Burstable cgroup"),
        }
    }

    fn remove(&self, uid: &str) {
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let cgroup = pod_cgroup(&self.cgroup_root, self.driver, qos, uid);
            for dir in self.dirs(&cgroup) {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => debug!(dir = %dir.display(), "pod cgroup removed"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        debug!(dir = %dir.display(), error = %e, "pod cgroup not removed yet")
                    }
                }
            }
        }
    }
}
