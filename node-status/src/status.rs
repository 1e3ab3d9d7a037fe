//! The node status setters (upstream `pkg/kubelet/nodestatus`): from what the node is and how
//! it is doing, the Node's `status` as upstream reports it. Pure functions of their inputs
//! and the time, so that every rule is unit-tested without an API server.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeRuntimeHandler, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// How many images the status lists at most by default (`nodeStatusMaxImages`).
pub const DEFAULT_MAX_IMAGES: usize = 50;
/// How many names of one image the status lists (upstream `maxNamesPerImageInNodeStatus`).
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// What the machine is (upstream cAdvisor's machine info and the kubelet's version info).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineInfo {
    /// Hardware threads, in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// The capacity of the kubelet's root filesystem in bytes, when known.
    pub ephemeral_storage_bytes: Option<i64>,
    /// Huge page sizes (`2Mi`, `1Gi`) with the bytes reserved in each.
    pub hugepages: Vec<(String, i64)>,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid`.
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
}

/// Resources kept from pods: `kubeReserved` + `systemReserved` + the hard eviction
/// thresholds, each in the unit of its resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Millicores.
    pub cpu_millis: i64,
    /// Bytes of memory.
    pub memory_bytes: i64,
    /// Bytes of ephemeral storage.
    pub ephemeral_storage_bytes: i64,
}

impl Reserved {
    /// What upstream's node allocatable keeps from pods: `kubeReserved` + `systemReserved`
    /// (cpu, memory, ephemeral-storage) + the hard eviction thresholds of `memory.available`
    /// and `nodefs.available` (percentages taken of the machine's capacity), unless
    /// `ignore_hard_eviction` (`--experimental-allocatable-ignore-eviction`).
    pub fn from_config(
        config: &node_config::KubeletConfiguration,
        machine: &MachineInfo,
        ignore_hard_eviction: bool,
    ) -> Result<Reserved, node_config::ConfigError> {
        let mut r = Reserved::default();
        for map in [&config.kube_reserved, &config.system_reserved] {
            for (resource, q) in map {
                match resource.as_str() {
                    "cpu" => r.cpu_millis += q.milli_value(),
                    "memory" => r.memory_bytes += q.value(),
                    "ephemeral-storage" => r.ephemeral_storage_bytes += q.value(),
                    _ => {}
                }
            }
        }
        if ignore_hard_eviction {
            return Ok(r);
        }
        for t in config.eviction_thresholds()? {
            if !t.is_hard() {
                continue;
            }
            let (capacity, slot) = match t.signal {
                node_config::Signal::MemoryAvailable => (machine.memory_bytes, &mut r.memory_bytes),
                node_config::Signal::NodeFsAvailable => (
                    machine.ephemeral_storage_bytes.unwrap_or(0),
                    &mut r.ephemeral_storage_bytes,
                ),
                _ => continue,
            };
            let capacity = node_config::Quantity::from_bytes(u64::try_from(capacity).unwrap_or(0));
            *slot += t.value.quantity_for_capacity(&capacity).value();
        }
        Ok(r)
    }
}

/// Which pressure conditions hold (the eviction manager's verdict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    /// MemoryPressure.
    pub memory: bool,
    /// DiskPressure.
    pub disk: bool,
    /// PIDPressure.
    pub pid: bool,
}

pub use node_core::runtime::{RuntimeFeatures, RuntimeHandler};

/// An image the runtime holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Repo digests.
    pub repo_digests: Vec<String>,
    /// Repo tags.
    pub repo_tags: Vec<String>,
    /// Size in bytes.
    pub size_bytes: i64,
}

/// Everything the node status is computed from.
#[derive(Clone, Debug, Default)]
pub struct NodeStatusInputs {
    /// The node's hostname (the `Hostname` address).
    pub hostname: String,
    /// The node's IP addresses (`InternalIP`), in order of preference.
    pub node_ips: Vec<IpAddr>,
    /// The machine.
    pub machine: MachineInfo,
    /// `maxPods` (or `podsPerCore` × cores when smaller and set).
    pub max_pods: i64,
    /// What is kept from pods.
    pub reserved: Reserved,
    /// `containerd://1.7.24`.
    pub container_runtime_version: String,
    /// The kubelet's version.
    pub kubelet_version: String,
    /// The kubelet server's port (`port`, 10250).
    pub kubelet_port: i32,
    /// Why the node is not ready (runtime down, network not ready, PLEG not healthy);
    /// empty when it is.
    pub not_ready: Vec<String>,
    /// The pressure conditions.
    pub pressure: Pressure,
    /// The runtime's images.
    pub images: Vec<ImageInfo>,
    /// How many images to list (`nodeStatusMaxImages`; negative: all).
    pub max_images: i32,
    /// The runtime's handlers.
    pub runtime_handlers: Vec<RuntimeHandler>,
    /// The runtime's features (`status.features`), where it reports them.
    pub runtime_features: Option<RuntimeFeatures>,
}

fn quantity(v: i64) -> Quantity {
    Quantity(v.to_string())
}

fn cpu_quantity(millis: i64) -> Quantity {
    if millis % 1000 == 0 {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

fn bytes_quantity(bytes: i64) -> Quantity {
    if bytes != 0 && bytes % (1 << 10) == 0 {
        Quantity(format!("{}Ki", bytes >> 10))
    } else {
        quantity(bytes)
    }
}

/// Capacity and allocatable (upstream `MachineInfo` setter): cpu, memory, pods,
/// ephemeral-storage, hugepages-*; allocatable = capacity − reserved, never negative, and
/// memory allocatable also less the huge pages.
pub fn capacity_and_allocatable(
    inputs: &NodeStatusInputs,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let m = &inputs.machine;
    let r = &inputs.reserved;
    let mut capacity = BTreeMap::new();
    let mut allocatable = BTreeMap::new();
    capacity.insert("cpu".to_string(), cpu_quantity(m.cpu_millis));
    allocatable.insert(
        "cpu".to_string(),
        cpu_quantity((m.cpu_millis - r.cpu_millis).max(0)),
    );
    let hugepages: i64 = m.hugepages.iter().map(|(_, b)| *b).sum();
    capacity.insert("memory".to_string(), bytes_quantity(m.memory_bytes));
    allocatable.insert(
        "memory".to_string(),
        bytes_quantity((m.memory_bytes - r.memory_bytes - hugepages).max(0)),
    );
    capacity.insert("pods".to_string(), quantity(inputs.max_pods));
    allocatable.insert("pods".to_string(), quantity(inputs.max_pods));
    if let Some(storage) = m.ephemeral_storage_bytes {
        capacity.insert("ephemeral-storage".to_string(), bytes_quantity(storage));
        allocatable.insert(
            "ephemeral-storage".to_string(),
            bytes_quantity((storage - r.ephemeral_storage_bytes).max(0)),
        );
    }
    for (size, bytes) in &m.hugepages {
        capacity.insert(format!("hugepages-{size}"), bytes_quantity(*bytes));
        allocatable.insert(format!("hugepages-{size}"), bytes_quantity(*bytes));
    }
    (capacity, allocatable)
}

/// The addresses: each node IP as `InternalIP`, then the `Hostname`.
pub fn addresses(inputs: &NodeStatusInputs) -> Vec<NodeAddress> {
    let mut out: Vec<NodeAddress> = inputs
        .node_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    out.push(NodeAddress {
        type_: "Hostname".into(),
        address: inputs.hostname.clone(),
    });
    out
}

/// Checks a `--node-ip` as upstream's `validateNodeIP`: not loopback, multicast, link-local
/// or unspecified.
pub fn validate_node_ip(ip: IpAddr) -> Result<(), String> {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if ip.is_loopback() {
        Err("nodeIP can't be loopback address".into())
    } else if ip.is_multicast() {
        Err("nodeIP can't be a multicast address".into())
    } else if link_local {
        Err("nodeIP can't be a link-local unicast address".into())
    } else if ip.is_unspecified() {
        Err("nodeIP can't be an all zeros address".into())
    } else {
        Ok(())
    }
}

/// The node's conditions: MemoryPressure, DiskPressure, PIDPressure and Ready, in upstream's
/// order, with upstream's reasons and messages. A condition's `lastTransitionTime` stays as
/// in `previous` unless its status changes; every heartbeat is `now`.
pub fn conditions(
    previous: &[NodeCondition],
    inputs: &NodeStatusInputs,
    now: Timestamp,
) -> Vec<NodeCondition> {
    let p = inputs.pressure;
    let ready_message = if inputs.not_ready.is_empty() {
        "kubelet is posting ready status".to_string()
    } else {
        inputs.not_ready.join(", ")
    };
    let wanted: [(&str, bool, &str, String); 4] = [
        if p.memory {
            (
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available".into(),
            )
        } else {
            (
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".into(),
            )
        },
        if p.disk {
            (
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure".into(),
            )
        } else {
            (
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".into(),
            )
        },
        if p.pid {
            (
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available".into(),
            )
        } else {
            (
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available".into(),
            )
        },
        if inputs.not_ready.is_empty() {
            ("Ready", true, "KubeletReady", ready_message)
        } else {
            ("Ready", false, "KubeletNotReady", ready_message)
        },
    ];
    wanted
        .into_iter()
        .map(|(kind, holds, reason, message)| {
            let status = if holds { "True" } else { "False" };
            let transition = previous
                .iter()
                .find(|c| c.type_ == kind && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_: kind.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// The images, largest first, at most `max_images` (all when negative), each with at most
/// [`MAX_NAMES_PER_IMAGE`] names (digests first, then tags), as upstream.
pub fn images(inputs: &NodeStatusInputs) -> Vec<ContainerImage> {
    let mut sorted: Vec<&ImageInfo> = inputs.images.iter().collect();
    sorted.sort_by_key(|image| std::cmp::Reverse(image.size_bytes));
    let limit = usize::try_from(inputs.max_images).unwrap_or(usize::MAX);
    sorted
        .into_iter()
        .take(limit)
        .map(|image| ContainerImage {
            names: Some(
                image
                    .repo_digests
                    .iter()
                    .chain(&image.repo_tags)
                    .take(MAX_NAMES_PER_IMAGE)
                    .cloned()
                    .collect(),
            ),
            size_bytes: Some(image.size_bytes),
        })
        .collect()
}

/// The node's status from `inputs` at `now`, carrying condition transition times over from
/// `previous`.
pub fn node_status(
    previous: Option<&NodeStatus>,
    inputs: &NodeStatusInputs,
    now: Timestamp,
) -> NodeStatus {
    let (capacity, allocatable) = capacity_and_allocatable(inputs);
    let m = &inputs.machine;
    let empty = Vec::new();
    let previous_conditions = previous
        .and_then(|s| s.conditions.as_ref())
        .unwrap_or(&empty);
    let max_images = inputs.max_images;
    NodeStatus {
        addresses: Some(addresses(inputs)),
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions(previous_conditions, inputs, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: inputs.kubelet_port,
            }),
        }),
        images: (max_images != 0).then(|| images(inputs)),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().to_string(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: inputs.container_runtime_version.clone(),
            kernel_version: m.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: inputs.kubelet_version.clone(),
            machine_id: m.machine_id.clone(),
            operating_system: std::env::consts::OS.to_string(),
            os_image: m.os_image.clone(),
            system_uuid: m.system_uuid.clone(),
            swap: None,
        }),
        runtime_handlers: (!inputs.runtime_handlers.is_empty()).then(|| {
            inputs
                .runtime_handlers
                .iter()
                .map(|h| NodeRuntimeHandler {
                    name: Some(h.name.clone()),
                    features: Some(k8s_openapi::api::core::v1::NodeRuntimeHandlerFeatures {
                        recursive_read_only_mounts: Some(h.recursive_read_only_mounts),
                        user_namespaces: Some(h.user_namespaces),
                    }),
                })
                .collect()
        }),
        features: inputs
            .runtime_features
            .map(|f| k8s_openapi::api::core::v1::NodeFeatures {
                supplemental_groups_policy: Some(f.supplemental_groups_policy),
            }),
        ..Default::default()
    }
}

/// The architecture in Go's naming (`amd64`, `arm64`), as Kubernetes reports it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether the status changed in anything but the conditions' heartbeat times (upstream
/// `nodeStatusHasChanged`): only then is it sent before the report frequency has passed.
pub fn status_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    fn strip(s: &NodeStatus) -> NodeStatus {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    }
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests;
