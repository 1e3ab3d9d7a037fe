//! The Linux [`StatsProvider`]: cgroups, `/proc`, `statfs` and the runtime's pod stats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use node_config::CgroupDriver;
use node_core::qos::{QosClass, pod_cgroup, pods_cgroup};
use node_core::stats::{
    ContainerStats, CpuStats, FsStats, MemoryStats, NodeStats, PodStats, ProcessStats, RlimitStats,
    RuntimeFilesystem, RuntimeFsStats, RuntimeStatsSource, Summary, VolumeStats, system_container,
};
use tracing::debug;

use super::cgroup::{Cgroups, MemorySample};
use super::host::{ProcFs, disk_usage, filesystem};
use super::{StatsError, StatsProvider};

/// Volume plugins whose volumes are local ephemeral storage on the node's filesystem
/// (upstream's `IsLocalEphemeralVolume`: emptyDir not in memory, configMap, downwardAPI,
/// gitRepo), counted in a pod's `ephemeral-storage`.
const EPHEMERAL_PLUGINS: [&str; 4] = [
    "kubernetes.io~empty-dir",
    "kubernetes.io~configmap",
    "kubernetes.io~downward-api",
    "kubernetes.io~git-repo",
];

/// Where the Linux provider reads; every path injectable.
#[derive(Clone, Debug)]
pub struct LinuxStatsConfig {
    /// The node's name.
    pub node_name: String,
    /// The kubelet's root directory: nodefs is its filesystem, pods' volumes are under
    /// `<root>/pods/<uid>/volumes`.
    pub root_dir: PathBuf,
    /// Where container logs are (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// The cgroup hierarchy.
    pub cgroups: Cgroups,
    /// `/proc`.
    pub proc: ProcFs,
    /// `cgroupRoot`.
    pub cgroup_root: String,
    /// `cgroupDriver`: how pod cgroups are named.
    pub cgroup_driver: CgroupDriver,
    /// The node's memory capacity, for `availableBytes`.
    pub memory_capacity: u64,
}

impl LinuxStatsConfig {
    /// The node's defaults: `/sys/fs/cgroup` (v1 or v2 as mounted), `/proc`.
    pub fn new(node_name: impl Into<String>, root_dir: impl Into<PathBuf>) -> Self {
        LinuxStatsConfig {
            node_name: node_name.into(),
            root_dir: root_dir.into(),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            cgroups: Cgroups::detect("/sys/fs/cgroup"),
            proc: ProcFs::default(),
            cgroup_root: "/".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            memory_capacity: 0,
        }
    }
}

/// The previous cumulative CPU reading of each measured thing, for `usageNanoCores`. Only
/// what the last summary measured is kept.
#[derive(Default)]
struct CpuRates {
    previous: HashMap<String, (Instant, u64)>,
    current: HashMap<String, (Instant, u64)>,
}

impl CpuRates {
    fn rate(&mut self, key: &str, at: Instant, cumulative: u64) -> Option<u64> {
        self.current.insert(key.to_string(), (at, cumulative));
        let (then, before) = self.previous.get(key)?;
        let elapsed = at.checked_duration_since(*then)?.as_nanos();
        if elapsed == 0 || cumulative < *before {
            return None;
        }
        u64::try_from(u128::from(cumulative - before) * 1_000_000_000 / elapsed).ok()
    }

    fn finish(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

/// The Linux [`StatsProvider`].
pub struct LinuxStatsProvider {
    config: LinuxStatsConfig,
    runtime: Arc<dyn RuntimeStatsSource>,
    rates: Mutex<CpuRates>,
}

impl std::fmt::Debug for LinuxStatsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxStatsProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now() -> Option<Time> {
    Some(Time(Timestamp::now()))
}

fn memory_stats(sample: &MemorySample, capacity: Option<u64>) -> MemoryStats {
    MemoryStats {
        time: now(),
        available_bytes: capacity.map(|c| c.saturating_sub(sample.working_set)),
        usage_bytes: Some(sample.usage),
        working_set_bytes: Some(sample.working_set),
        rss_bytes: sample.rss,
        page_faults: sample.page_faults,
        major_page_faults: sample.major_page_faults,
    }
}

/// A runtime filesystem's figures: capacity from `statfs` of its mount point, usage as the
/// runtime reports it.
fn runtime_fs(fs: &RuntimeFilesystem) -> Result<FsStats, StatsError> {
    let whole = filesystem(&fs.mountpoint)?;
    Ok(FsStats {
        time: now(),
        used_bytes: fs.used_bytes,
        inodes_used: fs.inodes_used,
        ..whole
    })
}

/// `whole`'s capacity with the usage of one part of it.
fn part_of(whole: &Option<FsStats>, used: Option<(u64, u64)>) -> Option<FsStats> {
    let (bytes, inodes) = used?;
    Some(FsStats {
        time: now(),
        used_bytes: Some(bytes),
        inodes_used: Some(inodes),
        ..whole.clone().unwrap_or_default()
    })
}

fn add(total: &mut (u64, u64), fs: Option<&FsStats>) {
    if let Some(fs) = fs {
        total.0 += fs.used_bytes.unwrap_or(0);
        total.1 += fs.inodes_used.unwrap_or(0);
    }
}

/// A container's cgroup below its pod's, as containerd's CRI plugin makes it: `<pod>/<id>`
/// with cgroupfs, `<pod slice>/cri-containerd-<id>.scope` with systemd.
fn container_cgroup(pod_cgroup: &str, driver: node_config::CgroupDriver, id: &str) -> String {
    match driver {
        node_config::CgroupDriver::Systemd => format!("{pod_cgroup}/cri-containerd-{id}.scope"),
        _ => format!("{pod_cgroup}/{id}"),
    }
}

impl LinuxStatsProvider {
    /// A provider reading per `config`, the pods from `runtime`.
    pub fn new(config: LinuxStatsConfig, runtime: Arc<dyn RuntimeStatsSource>) -> Self {
        LinuxStatsProvider {
            config,
            runtime,
            rates: Mutex::new(CpuRates::default()),
        }
    }

    fn cpu(&self, key: &str, cgroup: &str) -> Result<CpuStats, StatsError> {
        let cumulative = self.config.cgroups.cpu_usage_nanos(cgroup)?;
        let rate = self.rates.lock().unwrap_or_else(|e| e.into_inner()).rate(
            key,
            Instant::now(),
            cumulative,
        );
        Ok(CpuStats {
            time: now(),
            usage_nano_cores: rate,
            usage_core_nano_seconds: Some(cumulative),
        })
    }

    fn node_memory(&self) -> Result<MemorySample, StatsError> {
        match self.config.cgroups {
            Cgroups::V1 { .. } => self.config.cgroups.memory("/"),
            Cgroups::V2 { .. } => self.config.proc.node_memory(),
        }
    }

    /// The pod's cgroup, whichever QoS class it was created under.
    fn pod_cgroup(&self, uid: &str) -> Option<String> {
        [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ]
        .into_iter()
        .map(|qos| {
            pod_cgroup(
                &self.config.cgroup_root,
                self.config.cgroup_driver,
                qos,
                uid,
            )
        })
        .find(|path| self.config.cgroups.exists(path))
    }

    /// The node's figures; CPU, memory and nodefs are required, as upstream's summary fails
    /// without its root cgroup and root filesystem.
    fn node_stats(
        &self,
        image_fs: &Option<FsStats>,
        container_fs: &Option<FsStats>,
    ) -> Result<NodeStats, StatsError> {
        let c = &self.config;
        let capacity = (c.memory_capacity > 0).then_some(c.memory_capacity);
        let mut node = NodeStats {
            node_name: c.node_name.clone(),
            start_time: c
                .proc
                .boot_time()
                .ok()
                .and_then(|s| Timestamp::from_second(s).ok())
                .map(Time),
            ..Default::default()
        };
        node.cpu = Some(self.cpu("node", "/")?);
        let memory = self.node_memory()?;
        node.memory = Some(memory_stats(&memory, capacity.or(memory.limit)));
        match c.proc.network() {
            Ok(mut n) => {
                n.time = now();
                node.network = Some(n);
            }
            Err(e) => debug!(error = %e, "node network figures"),
        }
        node.fs = Some(FsStats {
            time: now(),
            ..filesystem(&c.root_dir)?
        });
        if image_fs.is_some() || container_fs.is_some() {
            node.runtime = Some(RuntimeFsStats {
                image_fs: image_fs.clone(),
                container_fs: container_fs.clone(),
            });
        }
        let max_pid = c.proc.max_pid().ok();
        let tasks = c.proc.tasks().ok();
        if max_pid.is_some() || tasks.is_some() {
            node.rlimit = Some(RlimitStats {
                time: now(),
                max_pid: max_pid.and_then(|v| i64::try_from(v).ok()),
                running_processes: tasks.and_then(|v| i64::try_from(v).ok()),
            });
        }
        let pods = pods_cgroup(&c.cgroup_root, c.cgroup_driver);
        if c.cgroups.exists(&pods) {
            node.system_containers.push(ContainerStats {
                name: system_container::PODS.into(),
                start_time: node.start_time.clone(),
                cpu: self.cpu("pods", &pods).ok(),
                memory: c
                    .cgroups
                    .memory(&pods)
                    .ok()
                    .map(|m| memory_stats(&m, m.limit.or(capacity))),
                ..Default::default()
            });
        }
        Ok(node)
    }

    /// The pod's figures from its cgroup, its log directory and its volumes, over what the
    /// runtime reported.
    fn complete_pod(
        &self,
        pod: &mut PodStats,
        container_fs: &Option<FsStats>,
        logs_fs: &Option<FsStats>,
    ) {
        let c = &self.config;
        let uid = pod.pod_ref.uid.clone();
        let pod_cgroup = self.pod_cgroup(&uid);
        if let Some(cgroup) = &pod_cgroup {
            match self.cpu(&format!("pod/{uid}"), cgroup) {
                Ok(cpu) => pod.cpu = Some(cpu),
                Err(e) => debug!(pod = %uid, error = %e, "pod cpu figures"),
            }
            match c.cgroups.memory(cgroup) {
                Ok(m) => pod.memory = Some(memory_stats(&m, m.limit)),
                Err(e) => debug!(pod = %uid, error = %e, "pod memory figures"),
            }
            if let Ok(n) = c.cgroups.processes(cgroup) {
                pod.process_stats = Some(ProcessStats {
                    process_count: Some(n),
                });
            }
            // The pod's network namespace, through one of its processes.
            if pod.network.is_none()
                && let Some(pid) = c.cgroups.first_process(cgroup)
            {
                match c.proc.network_of(pid) {
                    Ok(mut n) => {
                        n.time = now();
                        pod.network = Some(n);
                    }
                    Err(e) => debug!(pod = %uid, error = %e, "pod network figures"),
                }
            }
        }
        let log_dir = c.pod_logs_dir.join(format!(
            "{}_{}_{}",
            pod.pod_ref.namespace, pod.pod_ref.name, uid
        ));
        let mut ephemeral = (0u64, 0u64);
        for container in &mut pod.containers {
            // CPU and memory from the container's own cgroup, read now.
            if let (Some(pod_cgroup), Some(id)) = (&pod_cgroup, &container.container_id) {
                let cgroup = container_cgroup(pod_cgroup, c.cgroup_driver, id);
                if c.cgroups.exists(&cgroup) {
                    if let Ok(cpu) =
                        self.cpu(&format!("container/{uid}/{}", container.name), &cgroup)
                    {
                        container.cpu = Some(cpu);
                    }
                    if let Ok(m) = c.cgroups.memory(&cgroup) {
                        container.memory = Some(memory_stats(&m, m.limit));
                    }
                }
            }
            if let Some(rootfs) = container.rootfs.as_mut()
                && let Some(whole) = container_fs
            {
                rootfs.capacity_bytes = whole.capacity_bytes;
                rootfs.available_bytes = whole.available_bytes;
                rootfs.inodes = whole.inodes;
                rootfs.inodes_free = whole.inodes_free;
            }
            if container
                .cpu
                .as_ref()
                .is_some_and(|c| c.usage_nano_cores.is_none())
                && let Some(cpu) = container.cpu.as_mut()
                && let Some(cumulative) = cpu.usage_core_nano_seconds
            {
                cpu.usage_nano_cores = self.rates.lock().unwrap_or_else(|e| e.into_inner()).rate(
                    &format!("container/{uid}/{}", container.name),
                    Instant::now(),
                    cumulative,
                );
            }
            let usage = disk_usage(&log_dir.join(&container.name)).ok().flatten();
            container.logs = part_of(logs_fs, usage);
            add(&mut ephemeral, container.rootfs.as_ref());
            add(&mut ephemeral, container.logs.as_ref());
        }
        let pod_dir = c.root_dir.join("pods").join(&uid);
        pod.volume_stats = self.volumes(&pod_dir.join("volumes"), &mut ephemeral);
        if let Ok(Some(hosts)) = disk_usage(&pod_dir.join("etc-hosts")) {
            ephemeral.0 += hosts.0;
            ephemeral.1 += hosts.1;
        }
        let nodefs = filesystem(&c.root_dir).ok();
        pod.ephemeral_storage = part_of(&nodefs, Some(ephemeral));
    }

    /// Each volume directory under `<pod>/volumes/<plugin>/<name>`: its usage (`du`) within
    /// its filesystem's capacity; local ephemeral ones added to `ephemeral`.
    fn volumes(&self, dir: &Path, ephemeral: &mut (u64, u64)) -> Vec<VolumeStats> {
        let mut out = Vec::new();
        let Ok(plugins) = std::fs::read_dir(dir) else {
            return out;
        };
        let root_dev = std::fs::metadata(&self.config.root_dir)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        for plugin in plugins.flatten() {
            let plugin_name = plugin.file_name().to_string_lossy().into_owned();
            let Ok(volumes) = std::fs::read_dir(plugin.path()) else {
                continue;
            };
            for volume in volumes.flatten() {
                let path = volume.path();
                let Ok(Some(used)) = disk_usage(&path) else {
                    continue;
                };
                let whole = filesystem(&path).ok();
                let on_nodefs = std::fs::metadata(&path)
                    .ok()
                    .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                    == root_dev;
                if on_nodefs && EPHEMERAL_PLUGINS.contains(&plugin_name.as_str()) {
                    ephemeral.0 += used.0;
                    ephemeral.1 += used.1;
                }
                if let Some(fs) = part_of(&whole, Some(used)) {
                    out.push(VolumeStats {
                        fs,
                        name: volume.file_name().to_string_lossy().into_owned(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[async_trait]
impl StatsProvider for LinuxStatsProvider {
    async fn summary(&self) -> Result<Summary, StatsError> {
        let (image_fs, container_fs) = self.runtime_filesystems().await?;
        let mut pods = self.runtime.pod_stats().await?;
        let node = self.node_stats(&image_fs, &container_fs)?;
        let logs_fs = filesystem(&self.config.pod_logs_dir).ok();
        for pod in &mut pods {
            self.complete_pod(pod, &container_fs, &logs_fs);
        }
        self.rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish();
        Ok(Summary { node, pods })
    }

    async fn node_summary(&self) -> Result<Summary, StatsError> {
        let (image_fs, container_fs) = self.runtime_filesystems().await?;
        let node = self.node_stats(&image_fs, &container_fs)?;
        Ok(Summary {
            node,
            pods: Vec::new(),
        })
    }
}

impl LinuxStatsProvider {
    /// The image filesystem and the containers' (the image one when not split), with
    /// `statfs` capacities.
    async fn runtime_filesystems(&self) -> Result<(Option<FsStats>, Option<FsStats>), StatsError> {
        let filesystems = self.runtime.filesystems().await?;
        let image_fs = match &filesystems.image {
            Some(fs) => Some(runtime_fs(fs)?),
            None => None,
        };
        let container_fs = match &filesystems.container {
            Some(fs) => Some(runtime_fs(fs)?),
            None => image_fs.clone(),
        };
        Ok((image_fs, container_fs))
    }
}
