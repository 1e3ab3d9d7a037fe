//! The kubelet's summary API types (`stats/v1alpha1`, upstream's
//! `k8s.io/kubelet/pkg/apis/stats/v1alpha1`, which k8s-openapi does not carry) and the seam
//! through which a runtime reports its pods' usage ([`RuntimeStatsSource`]).
//!
//! The types serialize to upstream's JSON field names, so that metrics-server, `kubectl top`
//! through it, and anything else reading `/stats/summary` parse our answer unchanged. Every
//! figure is optional: a figure the node could not read is left out, never reported as 0.

use std::path::PathBuf;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeError;

/// Names of the node's system containers in [`NodeStats::system_containers`].
pub mod system_container {
    /// The kubelet's own cgroup.
    pub const KUBELET: &str = "kubelet";
    /// The container runtime's cgroup.
    pub const RUNTIME: &str = "runtime";
    /// Everything not in a pod nor a system container.
    pub const MISC: &str = "misc";
    /// The cgroup all pods run under.
    pub const PODS: &str = "pods";
}

/// The answer of `/stats/summary`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The node's figures.
    pub node: NodeStats,
    /// One entry per pod.
    pub pods: Vec<PodStats>,
}

/// The node's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// The system containers (`pods`, `kubelet`, `runtime`, `misc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_containers: Vec<ContainerStats>,
    /// When the node-scoped collection started (the node's boot).
    pub start_time: Option<Time>,
    /// CPU of the whole node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory of the whole node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The node's network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// The filesystem of the kubelet's root directory (nodefs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    /// The runtime's filesystems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeFsStats>,
    /// Process ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

/// The runtime's filesystems (`runtime` in the node's figures).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeFsStats {
    /// Where images are stored; usedBytes is what images take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
    /// Where containers' writable layers are (the image filesystem unless the runtime splits
    /// them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_fs: Option<FsStats>,
}

/// Process ids on the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RlimitStats {
    /// When read.
    pub time: Option<Time>,
    /// The largest process id (the smaller of `kernel.pid_max` and `kernel.threads-max`).
    #[serde(default, rename = "maxpid", skip_serializing_if = "Option::is_none")]
    pub max_pid: Option<i64>,
    /// Processes (tasks) now.
    #[serde(default, rename = "curproc", skip_serializing_if = "Option::is_none")]
    pub running_processes: Option<i64>,
}

/// A pod's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// When its sandbox was created.
    pub start_time: Option<Time>,
    /// Its containers.
    pub containers: Vec<ContainerStats>,
    /// CPU of the pod cgroup (containers and overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory of the pod cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The pod's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// The pod's volumes.
    #[serde(default, rename = "volume", skip_serializing_if = "Vec::is_empty")]
    pub volume_stats: Vec<VolumeStats>,
    /// Writable layers, logs and local volumes together.
    #[serde(
        default,
        rename = "ephemeral-storage",
        skip_serializing_if = "Option::is_none"
    )]
    pub ephemeral_storage: Option<FsStats>,
    /// Processes of the pod.
    #[serde(
        default,
        rename = "process_stats",
        skip_serializing_if = "Option::is_none"
    )]
    pub process_stats: Option<ProcessStats>,
}

/// Which pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// A pod's processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// How many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

/// A container's figures (or a system container's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name.
    pub name: String,
    /// When it was created.
    pub start_time: Option<Time>,
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The writable layer: usedBytes is the layer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    /// The container's logs: usedBytes is the logs'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
    /// The runtime's id of the container: not part of the summary API (never serialized),
    /// it lets a provider find the container's cgroup.
    #[serde(skip)]
    pub container_id: Option<String>,
}

/// CPU usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When read.
    pub time: Option<Time>,
    /// Usage over the last sample window, in nanocores (core-nanoseconds per second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative usage, core-nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When read.
    pub time: Option<Time>,
    /// The limit (or the node's capacity) minus the working set; absent without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// All memory charged, caches included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file pages: what eviction reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory and swap cache.
    #[serde(default, rename = "rssBytes", skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Cumulative minor page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Cumulative major page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// One network interface's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// The interface's name.
    pub name: String,
    /// Bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// Receive errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    /// Bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// Transmit errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// Network usage: the default interface inline, every interface listed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    /// When read.
    pub time: Option<Time>,
    /// The default interface (`eth0` when there is one).
    #[serde(flatten)]
    pub default: InterfaceStats,
    /// All interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStats>,
}

/// A volume's usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeStats {
    /// The filesystem figures; usedBytes is the volume's.
    #[serde(flatten)]
    pub fs: FsStats,
    /// The volume's name in the pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Filesystem usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When read.
    pub time: Option<Time>,
    /// Bytes available to unprivileged users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// The filesystem's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Bytes used by what these figures describe (the whole filesystem for nodefs, a layer,
    /// the logs or a volume otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Free inodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// All inodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Inodes used by what these figures describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

/// A filesystem the runtime uses, as it reports it (CRI `ImageFsInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeFilesystem {
    /// Where the filesystem is mounted (or a directory on it).
    pub mountpoint: PathBuf,
    /// Bytes the runtime uses on it.
    pub used_bytes: Option<u64>,
    /// Inodes the runtime uses on it.
    pub inodes_used: Option<u64>,
}

/// The runtime's filesystems: images, and the writable layers when they are elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeFilesystems {
    /// Where images are stored.
    pub image: Option<RuntimeFilesystem>,
    /// Where containers' writable layers are, when the runtime splits it from the images.
    pub container: Option<RuntimeFilesystem>,
}

/// What the runtime measures of its pods, for the stats provider: per running pod its
/// reference and start, the sandbox's CPU, memory, network and processes where the runtime
/// has them, and per running container its CPU, memory and writable layer. Logs, volumes and
/// capacities are the stats provider's own work.
#[async_trait]
pub trait RuntimeStatsSource: Send + Sync {
    /// One entry per pod with a ready sandbox, containers that are running.
    async fn pod_stats(&self) -> Result<Vec<PodStats>, RuntimeError>;

    /// The runtime's filesystems.
    async fn filesystems(&self) -> Result<RuntimeFilesystems, RuntimeError>;
}

/// A [`Time`] from nanoseconds since the epoch (CRI's timestamps); `None` for 0 or out of
/// range.
pub fn time_from_nanos(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .ok()
        .map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_upstream_field_names() {
        let summary = Summary {
            node: NodeStats {
                node_name: "n".into(),
                rlimit: Some(RlimitStats {
                    time: None,
                    max_pid: Some(4194304),
                    running_processes: Some(300),
                }),
                network: Some(NetworkStats {
                    time: None,
                    default: InterfaceStats {
                        name: "eth0".into(),
                        rx_bytes: Some(1),
                        ..Default::default()
                    },
                    interfaces: Vec::new(),
                }),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                ephemeral_storage: Some(FsStats {
                    used_bytes: Some(5),
                    ..Default::default()
                }),
                process_stats: Some(ProcessStats {
                    process_count: Some(2),
                }),
                volume_stats: vec![VolumeStats {
                    fs: FsStats {
                        inodes_used: Some(3),
                        ..Default::default()
                    },
                    name: "data".into(),
                }],
                memory: Some(MemoryStats {
                    rss_bytes: Some(7),
                    working_set_bytes: Some(8),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["node"]["nodeName"], "n");
        assert_eq!(json["node"]["rlimit"]["maxpid"], 4194304);
        assert_eq!(json["node"]["rlimit"]["curproc"], 300);
        assert_eq!(json["node"]["network"]["name"], "eth0");
        assert_eq!(json["node"]["network"]["rxBytes"], 1);
        assert!(
            json["node"].get("cpu").is_none(),
            "absent figures are left out"
        );
        let pod = &json["pods"][0];
        assert_eq!(pod["podRef"]["uid"], "u");
        assert_eq!(pod["ephemeral-storage"]["usedBytes"], 5);
        assert_eq!(pod["process_stats"]["process_count"], 2);
        assert_eq!(pod["volume"][0]["name"], "data");
        assert_eq!(pod["volume"][0]["inodesUsed"], 3);
        assert_eq!(pod["memory"]["rssBytes"], 7);
        assert_eq!(pod["memory"]["workingSetBytes"], 8);
        assert_eq!(pod["containers"], serde_json::json!([]));
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn cri_timestamps_become_times() {
        assert_eq!(time_from_nanos(0), None);
        let t = time_from_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(t.0.as_second(), 1_700_000_000);
    }
}
