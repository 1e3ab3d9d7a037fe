//! A container's CRI configuration (upstream `generateContainerConfig` and
//! `generateLinuxContainerConfig` in `pkg/kubelet/kuberuntime`), with the pieces it is made of:
//! environment variables and `$(VAR)` expansion (`makeEnvironmentVariables`), Linux resources
//! and OOM score (`calculateLinuxResources`, `GetContainerOOMScoreAdjust`), the effective
//! security context and the runAsNonRoot check (`verifyRunAsNonRoot`).
//!
//! Mounts come in ready-made ([`ContainerInputs::mounts`]: the volume manager's and the
//! termination-message file); devices are not supported yet.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::Pod;
//! use node_cri::runtime::container::{container_config, ContainerInputs, ContainerKind};
//! use node_cri::runtime::sandbox::NodeContext;
//!
//! # fn run(pod: &Pod) -> Result<(), node_cri::runtime::container::ContainerConfigError> {
//! let ctx = NodeContext::default();
//! let container = &pod.spec.as_ref().unwrap().containers[0];
//! let inputs = ContainerInputs {
//!     pod,
//!     container,
//!     kind: ContainerKind::Regular,
//!     restart_count: 0,
//!     pod_ips: &["10.88.0.5".to_string()],
//!     image_ref: "sha256:0123abcd",
//!     image_uid: Some(0),
//!     image_username: "",
//!     mounts: &[],
//! };
//! let config = container_config(&inputs, &ctx)?;
//! # let _ = config; Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use node_core::config::{API_SOURCE, CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION};
use node_core::downward::{self, parse_quantity};
use node_core::objects::{ObjectSource, SourceError};
use node_core::qos::{QosClass, effective_pod_qos};
use tracing::debug;

use super::labels::{PodRef, container_annotations, container_labels};
use super::sandbox::{
    NodeContext, check_user_namespaces, namespace_options, selinux_option, supplemental_groups,
};
use crate::cri;

/// The CFS period the kubelet sets, in microseconds.
pub const CPU_PERIOD_US: i64 = 100_000;
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const MILLI_CPU_TO_CPU: i64 = 1000;
const MIN_QUOTA_PERIOD: i64 = 1000;

/// OOM score of Guaranteed and node-critical containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// OOM score of BestEffort containers.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Priorities at or above this make a pod critical (`scheduling.SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Which list of the pod spec a container comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// An init container that runs to completion.
    Init,
    /// An init container with `restartPolicy: Always`: it keeps running beside the regular
    /// containers.
    Sidecar,
    /// A regular container (`spec.containers`).
    Regular,
    /// An ephemeral container (`spec.ephemeralContainers`, `kubectl debug`): started once in a
    /// running pod, never restarted.
    Ephemeral,
}

pub use node_core::pod_manager::ephemeral_as_container;

impl ContainerKind {
    /// The kind of the pod's container named `name`; `None` if the pod has no such container.
    pub fn of(pod: &Pod, name: &str) -> Option<Self> {
        let spec = pod.spec.as_ref()?;
        if let Some(c) = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)
        {
            return Some(if node_core::pod_manager::is_sidecar(c) {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            });
        }
        if spec.containers.iter().any(|c| c.name == name) {
            return Some(ContainerKind::Regular);
        }
        spec.ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
            .then_some(ContainerKind::Ephemeral)
    }
}

/// What a container's configuration is made from, besides the node context.
#[derive(Clone, Copy, Debug)]
pub struct ContainerInputs<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container, one of the pod's.
    pub container: &'a Container,
    /// Which list it comes from.
    pub kind: ContainerKind,
    /// How many times it was restarted: the CRI attempt and the log file name.
    pub restart_count: u32,
    /// The sandbox's IPs, for `status.podIP(s)`.
    pub pod_ips: &'a [String],
    /// The image the runtime resolved (its ImageStatus id), given to CreateContainer.
    pub image_ref: &'a str,
    /// The image's numeric user from ImageStatus; `None` when it has none (or a name).
    pub image_uid: Option<i64>,
    /// The image's user name from ImageStatus when it is not numeric; empty otherwise.
    pub image_username: &'a str,
    /// The container's mounts: its volumes, `/etc/hosts` and the termination-message file.
    pub mounts: &'a [cri::Mount],
}

/// Why a container's configuration could not be made. The message becomes the container's
/// `CreateContainerConfigError` waiting message; the runAsNonRoot ones are upstream's, word for
/// word. (The pod is boxed to keep `Result`s of this type small.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerConfigError {
    /// runAsNonRoot with `runAsUser: 0`.
    #[error("container's runAsUser breaks non-root policy (pod: {:?}, container: {container})", .pod.upstream_format())]
    RunAsUserBreaksNonRoot {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
    },
    /// runAsNonRoot, no runAsUser, and the image runs as root (uid 0 or no user at all).
    #[error("container has runAsNonRoot and image will run as root (pod: {:?}, container: {container})", .pod.upstream_format())]
    ImageRunsAsRoot {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
    },
    /// runAsNonRoot, no runAsUser, and the image names its user by name.
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {:?}, container: {container})", .pod.upstream_format())]
    ImageNonNumericUser {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
        /// The image's user.
        user: String,
    },
    /// runAsNonRoot, no runAsUser, and the image's uid is out of range.
    #[error("container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-(2147483647)): must be between 0 and 2147483647, inclusive (pod: {:?}, container: {container})", .pod.upstream_format())]
    ImageInvalidUid {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
        /// The image's uid.
        uid: i64,
    },
    /// A configMap or secret reference that cannot be resolved: this kubelet has no API server
    /// to read them from (an optional reference is skipped instead).
    #[error(
        "pod {pod} container {container}: {} refers to {kind} {}/{name}{}, which cannot be read without an API server",
        .variable.as_deref().map_or_else(|| "envFrom".to_string(), |v| format!("environment variable {v}")),
        .pod.namespace,
        .key.as_deref().map_or_else(String::new, |k| format!(" key {k:?}"))
    )]
    UnresolvableReference {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
        /// The variable (`None` for `envFrom`).
        variable: Option<String>,
        /// `configMap` or `secret`.
        kind: &'static str,
        /// The object's name, in the pod's namespace.
        name: String,
        /// The key (`None` for `envFrom`).
        key: Option<String>,
    },
    /// A configMap or secret an environment variable (or `envFrom`) refers to could not be
    /// had, or lacks the key: upstream's message (`couldn't get configMap ns/name: ...`,
    /// `couldn't find key k in ConfigMap ns/name`).
    #[error("{message}")]
    EnvObject {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
        /// What went wrong.
        message: String,
    },
    /// An environment variable's source cannot be evaluated.
    #[error("pod {pod} container {container}: environment variable {variable}: {reason}")]
    InvalidEnv {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
        /// The variable.
        variable: String,
        /// What is wrong.
        reason: String,
    },
    /// A field of the container or pod has a value the configuration cannot be made from.
    #[error("pod {pod} container {container}: {field}: {reason}")]
    InvalidField {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The container asks for something this kubelet does not do yet.
    #[error("pod {pod} container {container}: {what} is not supported")]
    Unsupported {
        /// The pod.
        pod: Box<PodRef>,
        /// The container.
        container: String,
        /// What it asks for.
        what: &'static str,
    },
}

/// The container's log file, relative to the sandbox's log directory:
/// `<name>/<restartCount>.log`.
pub fn container_log_path(name: &str, restart_count: u32) -> String {
    format!("{name}/{restart_count}.log")
}

/// The container's CRI configuration.
///
/// As upstream: metadata (attempt = restart count), image (`image_ref`, with the spec's image
/// as the user-specified one), command and args with `$(VAR)` expanded against the final
/// environment, working directory, environment ([`make_environment`]), labels and
/// annotations, log path, stdin/tty, and the Linux part: resources with the OOM score
/// ([`container_resources`]) and the security context (pod values where the container has
/// none, image user when no runAsUser, the pod's namespace modes and supplemental groups,
/// `no_new_privs` from `allowPrivilegeEscalation: false`, seccomp and AppArmor profiles,
/// masked and read-only paths). Fails the runAsNonRoot check with upstream's messages.
pub fn container_config(
    inputs: &ContainerInputs<'_>,
    ctx: &NodeContext,
) -> Result<cri::ContainerConfig, ContainerConfigError> {
    let envs = make_environment(
        inputs.pod,
        inputs.container,
        inputs.pod_ips,
        ctx,
        &EnvObjects::default(),
    )?;
    container_config_with_env(inputs, envs, ctx)
}

/// [`container_config`] with the container's environment already made
/// ([`make_environment`]), for a caller that needs it first (the runtime expands
/// `subPathExpr` from it).
pub(crate) fn container_config_with_env(
    inputs: &ContainerInputs<'_>,
    envs: Vec<cri::KeyValue>,
    ctx: &NodeContext,
) -> Result<cri::ContainerConfig, ContainerConfigError> {
    let (pod, container) = (inputs.pod, inputs.container);
    let key = Box::new(PodRef::of(pod));
    check_user_namespaces(pod).map_err(|what| ContainerConfigError::Unsupported {
        pod: key.clone(),
        container: container.name.clone(),
        what,
    })?;
    verify_run_as_non_root(pod, container, inputs.image_uid, inputs.image_username)?;

    let env_map: HashMap<&str, &str> = envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    let lookup = |name: &str| env_map.get(name).map(|v| v.to_string());
    let command = container
        .command
        .iter()
        .flatten()
        .map(|c| expand(c, lookup))
        .collect();
    let args = container
        .args
        .iter()
        .flatten()
        .map(|a| expand(a, lookup))
        .collect();

    let security_context = linux_security_context(inputs, ctx)?;
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt: inputs.restart_count,
        }),
        image: Some(cri::ImageSpec {
            image: inputs.image_ref.to_string(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        // Devices and CDI devices are not supported yet.
        mounts: inputs.mounts.to_vec(),
        devices: Vec::new(),
        labels: container_labels(pod, container),
        annotations: container_annotations(pod, container, inputs.restart_count),
        log_path: container_log_path(&container.name, inputs.restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(container_resources(pod, container, inputs.kind, ctx)),
            security_context: Some(security_context),
        }),
        windows: None,
        cdi_devices: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Resources

/// cpu shares for a cpu amount in millicores (upstream `MilliCPUToShares`): 2 for zero,
/// otherwise `milli * 1024 / 1000` within [2, 262144].
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(SHARES_PER_CPU) / MILLI_CPU_TO_CPU).clamp(MIN_SHARES, MAX_SHARES)
}

/// The CFS quota for a cpu limit in millicores over `period` µs (upstream `milliCPUToQuota`):
/// 0 (no quota) for no limit, otherwise `milli * period / 1000`, at least 1000.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: i64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period) / MILLI_CPU_TO_CPU).max(MIN_QUOTA_PERIOD)
}

/// Linux resources from a cpu request, cpu limit and memory limit (upstream
/// `calculateLinuxResources`): shares from the request, or from the limit when there is no
/// request; with CFS quota on (`cfs_period_us`), the period and the quota from the limit (0
/// without); memory limit only when non-zero.
pub fn linux_resources(
    cpu_request_millis: Option<i64>,
    cpu_limit_millis: i64,
    memory_limit_bytes: i64,
    cfs_period_us: Option<i64>,
) -> cri::LinuxContainerResources {
    let shares = milli_cpu_to_shares(cpu_request_millis.unwrap_or(cpu_limit_millis));
    let (cpu_period, cpu_quota) = match cfs_period_us {
        Some(period) => (period, milli_cpu_to_quota(cpu_limit_millis, period)),
        None => (0, 0),
    };
    cri::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory_limit_bytes,
        ..Default::default()
    }
}

/// A resource list of a spec.
type Resources = BTreeMap<String, ApiQuantity>;

/// The pod-level resources (`spec.resources`, PodLevelResources): its requests and limits.
fn pod_level(pod: &Pod) -> (Option<&Resources>, Option<&Resources>) {
    let r = pod.spec.as_ref().and_then(|s| s.resources.as_ref());
    (
        r.and_then(|r| r.requests.as_ref()),
        r.and_then(|r| r.limits.as_ref()),
    )
}

/// The container's Linux resources (upstream `generateLinuxContainerResources`):
/// [`linux_resources`] of its cpu request and limits, a missing limit taken from the pod-level
/// resources (PodLevelResources); [`oom_score_adj`]; a limit for each of the node's huge page
/// sizes ([`hugepage_limits`]); swap ([`swap_limit`]); `memory.oom.group` on cgroup v2 unless
/// `singleProcessOOMKill`; and MemoryQoS's `memory.min` / `memory.high`.
pub fn container_resources(
    pod: &Pod,
    container: &Container,
    kind: ContainerKind,
    ctx: &NodeContext,
) -> cri::LinuxContainerResources {
    let r = container.resources.as_ref();
    let (request_cpu, request_memory) =
        resource_millis_and_bytes(r.and_then(|r| r.requests.as_ref()));
    let (mut limit_cpu, mut limit_memory) =
        resource_millis_and_bytes(r.and_then(|r| r.limits.as_ref()));
    let (_, pod_limits) = pod_level(pod);
    if pod_limits.is_some() {
        let (pod_cpu, pod_memory) = resource_millis_and_bytes(pod_limits);
        if limit_cpu.unwrap_or(0) == 0 {
            limit_cpu = pod_cpu.or(limit_cpu);
        }
        if limit_memory.unwrap_or(0) == 0 {
            limit_memory = pod_memory.or(limit_memory);
        }
    }
    let mut resources = linux_resources(
        request_cpu,
        limit_cpu.unwrap_or(0),
        limit_memory.unwrap_or(0),
        ctx.cpu_cfs_quota.then_some(ctx.cpu_cfs_quota_period_us),
    );
    resources.oom_score_adj =
        oom_score_adj(pod, container, kind, ctx.machine_memory_capacity_bytes);
    resources.hugepage_limits = hugepage_limits(pod, container, &ctx.hugepage_sizes);
    swap_limit(
        &mut resources,
        pod,
        request_memory.unwrap_or(0),
        limit_memory.unwrap_or(0),
        ctx,
    );
    if ctx.oom_group {
        resources
            .unified
            .insert("memory.oom.group".to_string(), "1".to_string());
    }
    if let Some(factor) = ctx.memory_qos {
        resources.unified.extend(memory_qos(
            request_memory.unwrap_or(0),
            limit_memory.unwrap_or(0),
            ctx.allocatable.memory_bytes,
            factor,
        ));
    }
    resources
}

/// Upstream `GetHugepageLimitsFromResources`: a zero limit for each of the node's page sizes,
/// raised to the container's `hugepages-<size>` limit (or, when the container sets none, the
/// pod-level one). A page size the node lacks is left out: the runtime could not apply it.
pub fn hugepage_limits(
    pod: &Pod,
    container: &Container,
    node_sizes: &[String],
) -> Vec<cri::HugepageLimit> {
    let hugepages = |list: Option<&BTreeMap<String, ApiQuantity>>| -> Vec<(String, u64)> {
        list.into_iter()
            .flatten()
            .filter_map(|(name, amount)| {
                let size = super::host::hugepage_resource_bytes(name)?;
                let amount = amount.0.parse::<node_config::Quantity>().ok()?;
                Some((
                    super::host::page_size_name(size),
                    u64::try_from(amount.value()).unwrap_or(0),
                ))
            })
            .collect()
    };
    let mut wanted = hugepages(container.resources.as_ref().and_then(|r| r.limits.as_ref()));
    if wanted.is_empty() {
        wanted = hugepages(pod_level(pod).1);
    }
    node_sizes
        .iter()
        .map(|size| cri::HugepageLimit {
            page_size: size.clone(),
            limit: wanted
                .iter()
                .find(|(s, _)| s == size)
                .map_or(0, |(_, limit)| *limit),
        })
        .collect()
}

/// The container's swap limit (upstream `configureContainerSwapResources`), when the node has
/// a swap controller. NoSwap: on cgroup v1 memory+swap equals the memory limit, on v2
/// `memory.swap.max` is 0. LimitedSwap (v2): a Burstable container of a non-critical pod
/// whose memory request differs from its limit gets the share of the node's swap its request
/// is of the node's memory; every other container gets none.
pub fn swap_limit(
    resources: &mut cri::LinuxContainerResources,
    pod: &Pod,
    request_memory: i64,
    limit_memory: i64,
    ctx: &NodeContext,
) {
    use super::host::SwapController;
    match ctx.swap.controller {
        SwapController::Absent => {}
        SwapController::V1 => {
            resources.memory_swap_limit_in_bytes = resources.memory_limit_in_bytes
        }
        SwapController::V2 => {
            let limited = ctx.swap.behavior == node_config::SwapBehavior::LimitedSwap
                && effective_pod_qos(pod) == QosClass::Burstable
                && !(request_memory == 0 && limit_memory == 0)
                && request_memory != limit_memory
                && !is_critical_pod(pod)
                && ctx.machine_memory_capacity_bytes > 0;
            let swap = if limited {
                let share = request_memory as f64 / ctx.machine_memory_capacity_bytes as f64;
                (share * ctx.swap.capacity_bytes as f64) as i64
            } else {
                0
            };
            resources
                .unified
                .insert("memory.swap.max".to_string(), swap.to_string());
        }
    }
}
/// The page size `memory.high` is rounded down to (upstream's `defaultPageSize`).
const PAGE_SIZE: i64 = 4096;

/// `MemoryQoS`'s cgroup v2 settings of a container (upstream
/// `generateLinuxContainerResources`): `memory.min` = its memory request; unless request and
/// limit are equal, `memory.high` = request + factor x (limit, or node allocatable, - request),
/// rounded down to a page, when above the request.
pub fn memory_qos(
    request: i64,
    limit: i64,
    allocatable: i64,
    factor: f64,
) -> std::collections::HashMap<String, String> {
    let mut unified = std::collections::HashMap::new();
    if request != 0 {
        unified.insert("memory.min".to_string(), request.to_string());
    }
    if request != limit {
        let top = if limit != 0 { limit } else { allocatable };
        let high = if top > 0 {
            let raw = request as f64 + (top - request) as f64 * factor;
            (raw / PAGE_SIZE as f64).floor() as i64 * PAGE_SIZE
        } else {
            0
        };
        if high != 0 && high > request {
            unified.insert("memory.high".to_string(), high.to_string());
        }
    }
    unified
}

/// The container's OOM score adjustment (upstream `GetContainerOOMScoreAdjust`).
///
/// Node-critical pods (priority class `system-node-critical` on a critical pod) and
/// Guaranteed pods get -997, BestEffort pods 1000. Burstable containers get
/// `1000 - 1000 * memoryRequest / memoryCapacity`, a sidecar no more than its pod's regular
/// container with the smallest request, clamped to [3, 999]. With an unknown (zero) capacity,
/// Burstable containers get 999.
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    kind: ContainerKind,
    memory_capacity_bytes: i64,
) -> i64 {
    if is_node_critical_pod(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match effective_pod_qos(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let score = |request: i64| -> i64 {
        if memory_capacity_bytes <= 0 {
            return 1000;
        }
        let ratio = i128::from(request) * 1000 / i128::from(memory_capacity_bytes);
        1000 - i64::try_from(ratio).unwrap_or(i64::MAX).clamp(-1, 2000)
    };
    let mut adj = score(memory_request_bytes(container));
    if kind == ContainerKind::Sidecar {
        let smallest = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(memory_request_bytes)
            .min();
        if let Some(smallest) = smallest {
            adj = adj.min(score(smallest));
        }
    }
    if let Some(remaining) = remaining_pod_memory_request_per_container(pod) {
        adj = score(memory_request_bytes(container) + remaining);
    }
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return 1000 + GUARANTEED_OOM_SCORE_ADJ;
    }
    if adj >= BEST_EFFORT_OOM_SCORE_ADJ {
        return BEST_EFFORT_OOM_SCORE_ADJ - 1;
    }
    adj
}

/// With a pod-level memory request (PodLevelResources), the part of it the containers' own
/// requests leave, shared among all of the pod's containers (upstream
/// `remainingPodMemReqPerContainer`); `None` without a pod-level memory request.
fn remaining_pod_memory_request_per_container(pod: &Pod) -> Option<i64> {
    let (_, pod_request) = resource_millis_and_bytes(pod_level(pod).0);
    let pod_request = pod_request.filter(|&r| r != 0)?;
    let spec = pod.spec.as_ref()?;
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let long_running: i64 = spec
        .containers
        .iter()
        .chain(
            init.iter()
                .filter(|c| node_core::pod_manager::is_sidecar(c)),
        )
        .map(memory_request_bytes)
        .sum();
    let largest_init = init
        .iter()
        .filter(|c| !node_core::pod_manager::is_sidecar(c))
        .map(memory_request_bytes)
        .max()
        .unwrap_or(0);
    let count = (spec.containers.len() + init.len()).max(1) as i64;
    Some((pod_request - long_running.max(largest_init)) / count)
}

/// The container's memory request in bytes, defaulting to its limit, else 0.
fn memory_request_bytes(container: &Container) -> i64 {
    let r = container.resources.as_ref();
    let (_, request) = resource_millis_and_bytes(r.and_then(|r| r.requests.as_ref()));
    let (_, limit) = resource_millis_and_bytes(r.and_then(|r| r.limits.as_ref()));
    request.or(limit).unwrap_or(0)
}

/// A static or mirror pod, or one with a system-critical priority (upstream `IsCriticalPod`),
/// whose priority class is `system-node-critical`.
fn is_node_critical_pod(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical")
        && is_critical_pod(pod)
}

/// A static or mirror pod, or one with a system-critical priority (upstream `IsCriticalPod`).
fn is_critical_pod(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let is_static = annotation(CONFIG_SOURCE_ANNOTATION).is_some_and(|s| s != API_SOURCE);
    let is_mirror = annotation(CONFIG_MIRROR_ANNOTATION).is_some();
    let critical_priority = spec
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    is_static || is_mirror || critical_priority
}

/// A resource list's cpu in millicores and memory in bytes; `None` for a missing (or
/// unparsable) entry.
pub(crate) fn resource_millis_and_bytes(
    list: Option<&BTreeMap<String, ApiQuantity>>,
) -> (Option<i64>, Option<i64>) {
    (
        parse_quantity(list, "cpu").map(|q| q.milli_value()),
        parse_quantity(list, "memory").map(|q| q.value()),
    )
}

// ---------------------------------------------------------------------------------------------
// Security context

/// The pod-level values a container inherits when its own security context leaves them unset
/// (upstream `DetermineEffectiveSecurityContext`), plus the container's own.
struct EffectiveSecurity<'a> {
    own: Option<&'a SecurityContext>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    se_linux: Option<&'a k8s_openapi::api::core::v1::SELinuxOptions>,
    seccomp: Option<&'a k8s_openapi::api::core::v1::SeccompProfile>,
}

impl<'a> EffectiveSecurity<'a> {
    fn of(pod: &'a Pod, container: &'a Container) -> Self {
        let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let own = container.security_context.as_ref();
        EffectiveSecurity {
            own,
            run_as_user: own
                .and_then(|c| c.run_as_user)
                .or(psc.and_then(|p| p.run_as_user)),
            run_as_group: own
                .and_then(|c| c.run_as_group)
                .or(psc.and_then(|p| p.run_as_group)),
            run_as_non_root: own
                .and_then(|c| c.run_as_non_root)
                .or(psc.and_then(|p| p.run_as_non_root)),
            se_linux: own
                .and_then(|c| c.se_linux_options.as_ref())
                .or(psc.and_then(|p| p.se_linux_options.as_ref())),
            seccomp: own
                .and_then(|c| c.seccomp_profile.as_ref())
                .or(psc.and_then(|p| p.seccomp_profile.as_ref())),
        }
    }
}

/// Upstream `verifyRunAsNonRoot`: with an effective `runAsNonRoot: true`, the container must
/// not run as uid 0. An explicit runAsUser decides; otherwise the image's user does, an image
/// without a user counting as root and a named user as unverifiable.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_username: &str,
) -> Result<(), ContainerConfigError> {
    let sc = EffectiveSecurity::of(pod, container);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_ref = || Box::new(PodRef::of(pod));
    let name = || container.name.clone();
    if let Some(user) = sc.run_as_user {
        if user == 0 {
            return Err(ContainerConfigError::RunAsUserBreaksNonRoot {
                pod: pod_ref(),
                container: name(),
            });
        }
        return Ok(());
    }
    // Upstream getImageUser: a uid, else a user name, else root.
    let uid = match (image_uid, image_username) {
        (Some(uid), _) => uid,
        (None, user) if !user.is_empty() => {
            return Err(ContainerConfigError::ImageNonNumericUser {
                pod: pod_ref(),
                container: name(),
                user: user.to_string(),
            });
        }
        (None, _) => 0,
    };
    if uid == 0 {
        return Err(ContainerConfigError::ImageRunsAsRoot {
            pod: pod_ref(),
            container: name(),
        });
    }
    if !(0..=i64::from(i32::MAX)).contains(&uid) {
        return Err(ContainerConfigError::ImageInvalidUid {
            pod: pod_ref(),
            container: name(),
            uid,
        });
    }
    Ok(())
}

fn linux_security_context(
    inputs: &ContainerInputs<'_>,
    ctx: &NodeContext,
) -> Result<cri::LinuxContainerSecurityContext, ContainerConfigError> {
    let (pod, container) = (inputs.pod, inputs.container);
    let invalid = |field: &'static str, reason: String| ContainerConfigError::InvalidField {
        pod: Box::new(PodRef::of(pod)),
        container: container.name.clone(),
        field,
        reason,
    };
    let sc = EffectiveSecurity::of(pod, container);
    let own = sc.own;
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let (supplemental_groups, supplemental_groups_policy) = supplemental_groups(psc)
        .map_err(|reason| invalid("spec.securityContext.supplementalGroupsPolicy", reason))?;

    let mut run_as_user = sc.run_as_user.map(|value| cri::Int64Value { value });
    let mut run_as_username = String::new();
    if run_as_user.is_none() {
        run_as_user = inputs.image_uid.map(|value| cri::Int64Value { value });
        run_as_username = inputs.image_username.to_string();
    }

    let unmasked = own.and_then(|c| c.proc_mount.as_deref()) == Some("Unmasked");
    if unmasked && pod.spec.as_ref().and_then(|s| s.host_users) != Some(false) {
        return Err(invalid(
            "securityContext.procMount",
            "Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`".into(),
        ));
    }
    let (masked_paths, readonly_paths) = if unmasked {
        (Vec::new(), Vec::new())
    } else {
        (
            ctx.masked_paths.clone(),
            super::host::READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect(),
        )
    };
    Ok(cri::LinuxContainerSecurityContext {
        capabilities: own
            .and_then(|c| c.capabilities.as_ref())
            .map(|caps| cri::Capability {
                add_capabilities: caps.add.clone().unwrap_or_default(),
                drop_capabilities: caps.drop.clone().unwrap_or_default(),
                add_ambient_capabilities: Vec::new(),
            }),
        privileged: own.and_then(|c| c.privileged).unwrap_or(false),
        namespace_options: Some(namespace_options(pod)),
        selinux_options: sc.se_linux.map(selinux_option),
        run_as_user,
        run_as_group: sc.run_as_group.map(|value| cri::Int64Value { value }),
        run_as_username,
        readonly_rootfs: own
            .and_then(|c| c.read_only_root_filesystem)
            .unwrap_or(false),
        supplemental_groups,
        supplemental_groups_policy,
        no_new_privs: own.and_then(|c| c.allow_privilege_escalation) == Some(false),
        masked_paths,
        readonly_paths,
        seccomp: Some(seccomp_profile(sc.seccomp, ctx).map_err(|reason| {
            invalid("securityContext.seccompProfile.localhostProfile", reason)
        })?),
        apparmor: apparmor_profile(pod, container)
            .map_err(|reason| invalid("securityContext.appArmorProfile", reason))?,
        ..Default::default()
    })
}

fn profile(
    kind: cri::security_profile::ProfileType,
    localhost_ref: String,
) -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref,
    }
}

/// Upstream `getSeccompProfile`: the container's profile, else the pod's, else RuntimeDefault
/// with `seccompDefault` and Unconfined without. A Localhost profile is the file
/// `<seccomp root>/<localhostProfile>`; the runtime fails the container if it is missing.
fn seccomp_profile(
    seccomp: Option<&k8s_openapi::api::core::v1::SeccompProfile>,
    ctx: &NodeContext,
) -> Result<cri::SecurityProfile, String> {
    use cri::security_profile::ProfileType;
    match seccomp.map(|s| s.type_.as_str()) {
        Some("RuntimeDefault") => Ok(profile(ProfileType::RuntimeDefault, String::new())),
        Some("Localhost") => match seccomp.and_then(|s| s.localhost_profile.as_deref()) {
            Some(name) if !name.is_empty() => Ok(profile(
                ProfileType::Localhost,
                ctx.seccomp_root.join(name).to_string_lossy().into_owned(),
            )),
            _ => Err("localhostProfile must be set if seccompProfile type is Localhost.".into()),
        },
        Some(_) => Ok(profile(ProfileType::Unconfined, String::new())),
        None if ctx.seccomp_default => Ok(profile(ProfileType::RuntimeDefault, String::new())),
        None => Ok(profile(ProfileType::Unconfined, String::new())),
    }
}

/// Upstream `getAppArmorProfile`: the container's profile, else the pod's deprecated
/// `container.apparmor.security.beta.kubernetes.io/<name>` annotation, else the pod's profile;
/// `None` leaves the runtime's default.
fn apparmor_profile(
    pod: &Pod,
    container: &Container,
) -> Result<Option<cri::SecurityProfile>, String> {
    use cri::security_profile::ProfileType;
    let from_annotation = || {
        let key = format!(
            "container.apparmor.security.beta.kubernetes.io/{}",
            container.name
        );
        let value = pod.metadata.annotations.as_ref()?.get(&key)?;
        Some(match value.as_str() {
            "runtime/default" => AppArmorProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            },
            "unconfined" => AppArmorProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            },
            other => AppArmorProfile {
                type_: "Localhost".into(),
                localhost_profile: other.strip_prefix("localhost/").map(str::to_string),
            },
        })
    };
    let chosen = container
        .security_context
        .as_ref()
        .and_then(|c| c.app_armor_profile.clone())
        .or_else(from_annotation)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|p| p.app_armor_profile.clone())
        });
    let Some(chosen) = chosen else {
        return Ok(None);
    };
    match chosen.type_.as_str() {
        "RuntimeDefault" => Ok(Some(profile(ProfileType::RuntimeDefault, String::new()))),
        "Unconfined" => Ok(Some(profile(ProfileType::Unconfined, String::new()))),
        "Localhost" => match chosen.localhost_profile {
            Some(name) if !name.is_empty() => Ok(Some(profile(ProfileType::Localhost, name))),
            _ => Err("missing localhost apparmor profile name".into()),
        },
        other => Err(format!("unknown apparmor profile type: {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Environment

pub use node_core::expansion::expand;

/// The configMaps and secrets a container's environment refers to, as the node's object
/// source answered for each (fetched before the environment is made, which stays pure). A
/// name missing here means the node has no object source (standalone).
#[derive(Clone, Debug, Default)]
pub struct EnvObjects {
    /// configMaps by name.
    pub config_maps: HashMap<String, Result<ConfigMap, SourceError>>,
    /// Secrets by name.
    pub secrets: HashMap<String, Result<Secret, SourceError>>,
    /// The service environment variables (`None` on a node without services: standalone).
    pub services: Option<Result<BTreeMap<String, String>, String>>,
}

impl EnvObjects {
    /// The names of the configMaps and secrets `container`'s environment refers to.
    pub fn references(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
        for source in container.env_from.iter().flatten() {
            if let Some(r) = &source.config_map_ref {
                maps.insert(r.name.clone());
            }
            if let Some(r) = &source.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for from in container
            .env
            .iter()
            .flatten()
            .filter_map(|v| v.value_from.as_ref())
        {
            if let Some(r) = &from.config_map_key_ref {
                maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
        (maps, secrets)
    }

    /// Reads what `container` refers to from `source`, in `namespace`.
    pub async fn fetch(source: &dyn ObjectSource, namespace: &str, container: &Container) -> Self {
        let (maps, secrets) = EnvObjects::references(container);
        let mut out = EnvObjects::default();
        for name in maps {
            let got = source.config_map(namespace, &name).await;
            out.config_maps.insert(name, got);
        }
        for name in secrets {
            let got = source.secret(namespace, &name).await;
            out.secrets.insert(name, got);
        }
        out
    }
}

/// One object's data as strings: a configMap's `data`, or a secret's decoded `data`.
enum EnvData<'a> {
    ConfigMap(&'a ConfigMap),
    Secret(&'a Secret),
}

impl EnvData<'_> {
    fn get(&self, key: &str) -> Option<String> {
        match self {
            EnvData::ConfigMap(cm) => cm.data.as_ref()?.get(key).cloned(),
            EnvData::Secret(s) => s
                .data
                .as_ref()?
                .get(key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned()),
        }
    }

    fn entries(&self) -> Vec<(String, String)> {
        match self {
            EnvData::ConfigMap(cm) => cm
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            EnvData::Secret(s) => s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        }
    }
}

/// The container's environment (upstream `makeEnvironmentVariables`, standalone: no service
/// variables).
///
/// `envFrom` first, then `env` in declaration order: a `value` is expanded against the
/// variables before it; `valueFrom` resolves `fieldRef` (`metadata.name`, `.namespace`,
/// `.uid`, `.labels`, `.annotations` and their `['key']` forms, `spec.nodeName`,
/// `spec.serviceAccountName`, `status.podIP(s)`, `status.hostIP(s)`) and `resourceFieldRef`
/// (cpu, memory, ephemeral-storage and hugepages requests and limits, with the divisor; a
/// missing cpu or memory limit reads as node allocatable). ConfigMap and secret references
/// need an API server: a non-optional one is an error, an optional one is skipped. A name
/// declared twice appears once, where it was first declared, with its last value.
pub fn make_environment(
    pod: &Pod,
    container: &Container,
    pod_ips: &[String],
    ctx: &NodeContext,
    objects: &EnvObjects,
) -> Result<Vec<cri::KeyValue>, ContainerConfigError> {
    let key = Box::new(PodRef::of(pod));
    let mut env: Vec<cri::KeyValue> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    fn set(
        env: &mut Vec<cri::KeyValue>,
        index: &mut HashMap<String, usize>,
        name: &str,
        value: String,
    ) {
        match index.get(name) {
            Some(&i) => env[i].value = value,
            None => {
                index.insert(name.to_string(), env.len());
                env.push(cri::KeyValue {
                    key: name.to_string(),
                    value,
                });
            }
        }
    }
    let unresolvable = |variable: Option<&str>, kind, name: &str, key_name: Option<&str>| {
        ContainerConfigError::UnresolvableReference {
            pod: key.clone(),
            container: container.name.clone(),
            variable: variable.map(str::to_string),
            kind,
            name: name.to_string(),
            key: key_name.map(str::to_string),
        }
    };

    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let env_object = |message: String| ContainerConfigError::EnvObject {
        pod: key.clone(),
        container: container.name.clone(),
        message,
    };
    // The object `name` of `kind`: `Ok(None)` when it is absent and the reference optional.
    let lookup = |kind: &'static str,
                  name: &str,
                  optional: bool,
                  variable: Option<&str>,
                  key_name: Option<&str>|
     -> Result<Option<EnvData<'_>>, ContainerConfigError> {
        let found = match kind {
            "configMap" => objects
                .config_maps
                .get(name)
                .map(|r| r.as_ref().map(EnvData::ConfigMap)),
            _ => objects
                .secrets
                .get(name)
                .map(|r| r.as_ref().map(EnvData::Secret)),
        };
        match found {
            None if optional => Ok(None),
            None => Err(unresolvable(variable, kind, name, key_name)),
            Some(Ok(data)) => Ok(Some(data)),
            Some(Err(e)) if optional && e.is_absent() => Ok(None),
            Some(Err(e)) => Err(env_object(format!(
                "couldn't get {kind} {namespace}/{name}: {e}"
            ))),
        }
    };

    // Service variables: seen by `$(VAR)` expansion, added last where the container does not
    // set them (upstream's order).
    let service_env: BTreeMap<String, String> = match &objects.services {
        None => BTreeMap::new(),
        Some(Ok(env)) => env.clone(),
        Some(Err(e)) => return Err(env_object(e.clone())),
    };

    for source in container.env_from.iter().flatten() {
        let (kind, name, optional) = if let Some(cm) = &source.config_map_ref {
            ("configMap", cm.name.as_str(), cm.optional)
        } else if let Some(secret) = &source.secret_ref {
            ("secret", secret.name.as_str(), secret.optional)
        } else {
            continue;
        };
        let Some(data) = lookup(kind, name, optional == Some(true), None, None)? else {
            debug!(pod = %key, container = %container.name, kind, name, "skipping an optional envFrom source that is absent");
            continue;
        };
        let prefix = source.prefix.as_deref().unwrap_or_default();
        let mut entries = data.entries();
        entries.sort();
        for (k, v) in entries {
            set(&mut env, &mut index, &format!("{prefix}{k}"), v);
        }
    }

    for var in container.env.iter().flatten() {
        let invalid = |reason: String| ContainerConfigError::InvalidEnv {
            pod: key.clone(),
            container: container.name.clone(),
            variable: var.name.clone(),
            reason,
        };
        let value = match (var.value.as_deref(), var.value_from.as_ref()) {
            (Some(v), _) if !v.is_empty() => expand(v, |name| {
                index
                    .get(name)
                    .map(|&i| env[i].value.clone())
                    .or_else(|| service_env.get(name).cloned())
            }),
            (_, Some(from)) => {
                k8s_openapi::k8s_if_ge_1_34! {
                    if from.file_key_ref.is_some() {
                        return Err(ContainerConfigError::Unsupported {
                            pod: key.clone(),
                            container: container.name.clone(),
                            what: "an environment variable from a file (fileKeyRef)",
                        });
                    }
                }
                if let Some(field) = &from.field_ref {
                    field_value(field, pod, pod_ips, ctx).map_err(invalid)?
                } else if let Some(resource) = &from.resource_field_ref {
                    resource_value(resource, container, ctx).map_err(invalid)?
                } else if let Some((kind, label, name, k, optional)) = from
                    .config_map_key_ref
                    .as_ref()
                    .map(|r| ("configMap", "ConfigMap", &r.name, &r.key, r.optional))
                    .or_else(|| {
                        from.secret_key_ref
                            .as_ref()
                            .map(|r| ("secret", "Secret", &r.name, &r.key, r.optional))
                    })
                {
                    let optional = optional == Some(true);
                    let Some(data) = lookup(kind, name, optional, Some(&var.name), Some(k))? else {
                        debug!(pod = %key, container = %container.name, variable = %var.name, "skipping an optional reference that is absent");
                        continue;
                    };
                    match data.get(k) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(env_object(format!(
                                "couldn't find key {k} in {label} {namespace}/{name}"
                            )));
                        }
                    }
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        set(&mut env, &mut index, &var.name, value);
    }
    for (name, value) in service_env {
        if !index.contains_key(&name) {
            set(&mut env, &mut index, &name, value);
        }
    }
    Ok(env)
}

/// The node's addresses as upstream reports host IPs: the primary, then the first of the other
/// family.
fn host_ips(ctx: &NodeContext) -> Vec<IpAddr> {
    let Some(&primary) = ctx.node_ips.first() else {
        return Vec::new();
    };
    let mut ips = vec![primary];
    if let Some(&other) = ctx
        .node_ips
        .iter()
        .find(|ip| ip.is_ipv6() != primary.is_ipv6())
    {
        ips.push(other);
    }
    ips
}

/// The pod's IPs ordered as upstream `sortPodIPs`: the first of the node's primary family, then
/// the first of the other; anything that is not an IP is dropped.
fn sort_pod_ips(pod_ips: &[String], ctx: &NodeContext) -> Vec<String> {
    let v6_first = ctx.node_ips.first().is_some_and(IpAddr::is_ipv6);
    let parsed: Vec<(&String, IpAddr)> = pod_ips
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok().map(|ip| (s, ip)))
        .collect();
    let first_of = |v6: bool| {
        parsed
            .iter()
            .find(|(_, ip)| ip.is_ipv6() == v6)
            .map(|(s, _)| (*s).clone())
    };
    first_of(v6_first)
        .into_iter()
        .chain(first_of(!v6_first))
        .collect()
}

/// A `fieldRef`'s value: the environment-only paths that need the node (`spec.nodeName`,
/// `spec.serviceAccountName`, `status.hostIP(s)`, `status.podIP(s)`) here, the pod's metadata
/// through [`downward::pod_metadata_field`].
fn field_value(
    selector: &ObjectFieldSelector,
    pod: &Pod,
    pod_ips: &[String],
    ctx: &NodeContext,
) -> Result<String, String> {
    let path = downward::checked_field_path(selector)?;
    let spec = pod.spec.as_ref();
    let host_ips = || {
        let ips = host_ips(ctx);
        if ips.is_empty() {
            Err(format!("{path}: the node has no known IP address"))
        } else {
            Ok(ips)
        }
    };
    Ok(match path {
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ctx.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ips()?[0].to_string(),
        "status.hostIPs" => host_ips()?
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(","),
        "status.podIP" => sort_pod_ips(pod_ips, ctx)
            .into_iter()
            .next()
            .unwrap_or_default(),
        "status.podIPs" => sort_pod_ips(pod_ips, ctx).join(","),
        other => return downward::pod_metadata_field(pod, other),
    })
}

/// A `resourceFieldRef`'s value ([`downward::container_resource`]), a missing cpu or memory
/// limit reading as the node's allocatable.
fn resource_value(
    selector: &ResourceFieldSelector,
    container: &Container,
    ctx: &NodeContext,
) -> Result<String, String> {
    downward::container_resource(selector, container, &ctx.allocatable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar,
        EnvVarSource, PodSecurityContext, PodSpec, PodStatus, ResourceRequirements,
        SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use node_core::downward::NodeAllocatable;

    const UID: &str = "uid-1";
    const GI: i64 = 1 << 30;

    #[test]
    fn memory_qos_sets_min_from_the_request_and_high_between_request_and_limit() {
        let m = memory_qos(GI, 2 * GI, 8 * GI, 0.9);
        assert_eq!(m["memory.min"], GI.to_string());
        // 1Gi + 0.9 x 1Gi, rounded down to a page.
        let high = ((GI as f64 + 0.9 * GI as f64) / 4096.0).floor() as i64 * 4096;
        assert_eq!(m["memory.high"], high.to_string());
        // No limit: up to node allocatable.
        let m = memory_qos(GI, 0, 8 * GI, 0.9);
        let high = ((GI as f64 + 0.9 * 7.0 * GI as f64) / 4096.0).floor() as i64 * 4096;
        assert_eq!(m["memory.high"], high.to_string());
        // Request equal to limit (Guaranteed memory): memory.min only.
        let m = memory_qos(GI, GI, 8 * GI, 0.9);
        assert_eq!(m.len(), 1);
        // Nothing requested nor limited (request == limit == 0): nothing, as upstream.
        assert!(memory_qos(0, 0, 8 * GI, 0.9).is_empty());
        // Through the container's resources, only when enabled.
        let mut c = app();
        c.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "memory".into(),
                ApiQuantity("1Gi".into()),
            )])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                ApiQuantity("2Gi".into()),
            )])),
            ..Default::default()
        });
        let p = pod_with(vec![c.clone()]);
        let off = container_resources(&p, &c, ContainerKind::Regular, &ctx());
        assert!(off.unified.is_empty());
        let on = NodeContext {
            memory_qos: Some(0.9),
            ..ctx()
        };
        let r = container_resources(&p, &c, ContainerKind::Regular, &on);
        assert_eq!(r.unified["memory.min"], GI.to_string());
    }

    fn ctx() -> NodeContext {
        NodeContext {
            node_name: "node-1".into(),
            node_ips: vec![
                "192.0.2.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ],
            allocatable: NodeAllocatable {
                cpu_millis: 4000,
                memory_bytes: 8 * GI,
            },
            machine_memory_capacity_bytes: 10 * GI,
            ..NodeContext::default()
        }
    }

    fn app() -> Container {
        Container {
            name: "app".into(),
            image: Some("busybox:1.36".into()),
            ..Default::default()
        }
    }

    fn pod_with(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some(UID.into()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "fe\"x".to_string()),
                ])),
                annotations: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                service_account_name: Some("sa".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn q(items: &[(&str, &str)]) -> Option<BTreeMap<String, ApiQuantity>> {
        (!items.is_empty()).then(|| {
            items
                .iter()
                .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                .collect()
        })
    }

    fn with_resources(mut c: Container, req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        c.resources = Some(ResourceRequirements {
            requests: q(req),
            limits: q(lim),
            ..Default::default()
        });
        c
    }

    fn inputs<'a>(pod: &'a Pod, pod_ips: &'a [String]) -> ContainerInputs<'a> {
        let spec = pod.spec.as_ref().unwrap();
        ContainerInputs {
            pod,
            container: &spec.containers[0],
            kind: ContainerKind::Regular,
            restart_count: 3,
            pod_ips,
            image_ref: "sha256:abc",
            image_uid: Some(1000),
            image_username: "",
            mounts: &[],
        }
    }

    fn env_var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: path.into(),
                }),
                ..Default::default()
            }),
        }
    }

    fn resource(name: &str, res: &str, divisor: Option<&str>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: None,
                    divisor: divisor.map(|d| ApiQuantity(d.into())),
                    resource: res.into(),
                }),
                ..Default::default()
            }),
        }
    }

    fn env_of(pod: &Pod, pod_ips: &[String]) -> Vec<(String, String)> {
        let c = &pod.spec.as_ref().unwrap().containers[0];
        make_environment(pod, c, pod_ips, &ctx(), &EnvObjects::default())
            .unwrap()
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect()
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn expansion_rules() {
        let l = lookup(&[("A", "x"), ("B", "y$(A)")]);
        assert_eq!(expand("$(A)", &l), "x");
        assert_eq!(expand("pre-$(A)-$(A)-post", &l), "pre-x-x-post");
        assert_eq!(expand("$$(A)", &l), "$(A)");
        assert_eq!(expand("$$$(A)", &l), "$x");
        assert_eq!(expand("$(X)", &l), "$(X)");
        assert_eq!(expand("$()", &l), "$()");
        assert_eq!(expand("$(", &l), "$(");
        assert_eq!(expand("$(A", &l), "$(A");
        assert_eq!(expand("a$(A", &l), "a$(A");
        assert_eq!(expand("$", &l), "$");
        assert_eq!(expand("$A", &l), "$A");
        assert_eq!(expand("100$", &l), "100$");
        // Values are not expanded again.
        assert_eq!(expand("$(B)", &l), "y$(A)");
        assert_eq!(expand("é$(A)ü$é", &l), "éxü$é");
        assert_eq!(expand("", &l), "");
    }

    #[test]
    fn env_values_see_only_earlier_variables() {
        let mut c = app();
        c.env = Some(vec![
            env_var("FIRST", "1"),
            env_var("REF", "$(FIRST)-$(LATER)"),
            env_var("ESC", "$$(FIRST)"),
            env_var("LATER", "2"),
            env_var("FIRST", "one"),
            EnvVar {
                name: "EMPTY".into(),
                ..Default::default()
            },
        ]);
        let pod = pod_with(vec![c]);
        assert_eq!(
            env_of(&pod, &[]),
            [
                ("FIRST".to_string(), "one".to_string()),
                ("REF".into(), "1-$(LATER)".into()),
                ("ESC".into(), "$(FIRST)".into()),
                ("LATER".into(), "2".into()),
                ("EMPTY".into(), "".into()),
            ]
        );
    }

    #[test]
    fn env_field_refs() {
        let mut c = app();
        c.env = Some(vec![
            field("NAME", "metadata.name"),
            field("NS", "metadata.namespace"),
            field("UID", "metadata.uid"),
            field("APP", "metadata.labels['app']"),
            field("MISSING", "metadata.labels['nope']"),
            field("ANN", "metadata.annotations['a']"),
            field("LABELS", "metadata.labels"),
            field("NODE", "spec.nodeName"),
            field("SA", "spec.serviceAccountName"),
            field("POD_IP", "status.podIP"),
            field("POD_IPS", "status.podIPs"),
            field("HOST_IP", "status.hostIP"),
            field("HOST_IPS", "status.hostIPs"),
        ]);
        let pod = pod_with(vec![c]);
        let ips = [
            "fd00::5".to_string(),
            "10.88.0.5".to_string(),
            "bogus".to_string(),
        ];
        let env: HashMap<_, _> = env_of(&pod, &ips).into_iter().collect();
        assert_eq!(env["NAME"], "web");
        assert_eq!(env["NS"], "prod");
        assert_eq!(env["UID"], UID);
        assert_eq!(env["APP"], "web");
        assert_eq!(env["MISSING"], "");
        assert_eq!(env["ANN"], "b");
        assert_eq!(env["LABELS"], "app=\"web\"\ntier=\"fe\\\"x\"");
        // No spec.nodeName: this node.
        assert_eq!(env["NODE"], "node-1");
        assert_eq!(env["SA"], "sa");
        // The node is IPv4-first, so the pod's IPv4 address comes first.
        assert_eq!(env["POD_IP"], "10.88.0.5");
        assert_eq!(env["POD_IPS"], "10.88.0.5,fd00::5");
        assert_eq!(env["HOST_IP"], "192.0.2.10");
        assert_eq!(env["HOST_IPS"], "192.0.2.10,2001:db8::10");
    }

    #[test]
    fn env_unsupported_field_path_is_an_error() {
        let mut c = app();
        c.env = Some(vec![field("X", "spec.schedulerName")]);
        let pod = pod_with(vec![c]);
        let err = make_environment(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            &[],
            &ctx(),
            &EnvObjects::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod prod/web container app: environment variable X: unsupported fieldPath: spec.schedulerName"
        );
    }

    #[test]
    fn env_resource_field_refs() {
        let mut c = with_resources(
            app(),
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("memory", "128Mi"), ("ephemeral-storage", "1Gi")],
        );
        c.env = Some(vec![
            resource("REQ_CPU", "requests.cpu", None),
            resource("REQ_CPU_M", "requests.cpu", Some("1m")),
            resource("LIM_CPU", "limits.cpu", None),
            resource("LIM_CPU_M", "limits.cpu", Some("1m")),
            resource("REQ_MEM", "requests.memory", None),
            resource("LIM_MEM_MI", "limits.memory", Some("1Mi")),
            resource("LIM_MEM_G", "limits.memory", Some("1G")),
            resource("EPH", "limits.ephemeral-storage", Some("1Mi")),
        ]);
        let pod = pod_with(vec![c]);
        let env: HashMap<_, _> = env_of(&pod, &[]).into_iter().collect();
        assert_eq!(env["REQ_CPU"], "1"); // ceil(0.25)
        assert_eq!(env["REQ_CPU_M"], "250");
        // No cpu limit: node allocatable.
        assert_eq!(env["LIM_CPU"], "4");
        assert_eq!(env["LIM_CPU_M"], "4000");
        assert_eq!(env["REQ_MEM"], (64 << 20).to_string());
        assert_eq!(env["LIM_MEM_MI"], "128");
        assert_eq!(env["LIM_MEM_G"], "1"); // ceil(134217728 / 1e9)
        assert_eq!(env["EPH"], "1024");

        // No memory limit: node allocatable.
        let mut c = app();
        c.env = Some(vec![resource("LIM_MEM", "limits.memory", Some("1Gi"))]);
        let pod = pod_with(vec![c]);
        assert_eq!(
            env_of(&pod, &[]),
            [("LIM_MEM".to_string(), "8".to_string())]
        );

        let mut c = app();
        c.env = Some(vec![resource("BAD", "limits.gpu", None)]);
        let pod = pod_with(vec![c]);
        assert!(
            make_environment(
                &pod,
                &pod.spec.as_ref().unwrap().containers[0],
                &[],
                &ctx(),
                &EnvObjects::default()
            )
            .is_err()
        );
    }

    #[test]
    fn env_config_map_references() {
        let key_ref = |optional: Option<bool>| EnvVar {
            name: "CFG".into(),
            value: None,
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    key: "k".into(),
                    name: "settings".into(),
                    optional,
                }),
                ..Default::default()
            }),
        };
        let mut c = app();
        c.env = Some(vec![env_var("A", "1"), key_ref(None)]);
        let pod = pod_with(vec![c]);
        let err = make_environment(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            &[],
            &ctx(),
            &EnvObjects::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod prod/web container app: environment variable CFG refers to configMap prod/settings key \"k\", which cannot be read without an API server"
        );
        match err {
            ContainerConfigError::UnresolvableReference {
                variable,
                kind,
                name,
                ..
            } => {
                assert_eq!(
                    (variable.as_deref(), kind, name.as_str()),
                    (Some("CFG"), "configMap", "settings")
                );
            }
            other => panic!("unexpected {other:?}"),
        }

        // Optional references are skipped.
        let mut c = app();
        c.env = Some(vec![
            env_var("A", "1"),
            key_ref(Some(true)),
            EnvVar {
                name: "S".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        key: "k".into(),
                        name: "creds".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
            },
        ]);
        c.env_from = Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "all".into(),
                optional: Some(true),
            }),
            ..Default::default()
        }]);
        let pod = pod_with(vec![c.clone()]);
        assert_eq!(env_of(&pod, &[]), [("A".to_string(), "1".to_string())]);

        // A required envFrom source is an error.
        c.env_from.as_mut().unwrap()[0]
            .config_map_ref
            .as_mut()
            .unwrap()
            .optional = None;
        let pod = pod_with(vec![c]);
        let err = make_environment(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            &[],
            &ctx(),
            &EnvObjects::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod prod/web container app: envFrom refers to configMap prod/all, which cannot be read without an API server"
        );
    }

    #[test]
    fn env_from_api_objects_as_upstream() {
        use k8s_openapi::ByteString;
        let map = ConfigMap {
            data: Some(
                [
                    ("k".to_string(), "from-map".to_string()),
                    ("B".to_string(), "b".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let secret = Secret {
            data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Default::default()
        };
        let mut objects = EnvObjects::default();
        objects.config_maps.insert("settings".into(), Ok(map));
        objects.secrets.insert("creds".into(), Ok(secret));
        objects.config_maps.insert(
            "gone".into(),
            Err(SourceError::NotFound {
                resource: "configmap",
                name: "gone".into(),
            }),
        );
        let mut c = app();
        c.env_from = Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "settings".into(),
                optional: None,
            }),
            prefix: Some("CFG_".into()),
            ..Default::default()
        }]);
        c.env = Some(vec![
            EnvVar {
                name: "PASSWORD".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        key: "password".into(),
                        name: "creds".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
            EnvVar {
                name: "K".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        key: "k".into(),
                        name: "settings".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
            EnvVar {
                name: "MAYBE".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        key: "k".into(),
                        name: "gone".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
            },
        ]);
        let pod = pod_with(vec![c.clone()]);
        let env: Vec<(String, String)> = make_environment(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            &[],
            &ctx(),
            &objects,
        )
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
        assert_eq!(
            env,
            [
                ("CFG_B".to_string(), "b".to_string()),
                ("CFG_k".to_string(), "from-map".to_string()),
                ("PASSWORD".to_string(), "s3cret".to_string()),
                ("K".to_string(), "from-map".to_string()),
            ]
        );

        // A missing key, and a missing required object, fail with upstream's messages.
        let missing_key = |name: &str, key: &str| {
            let mut c = app();
            c.env = Some(vec![EnvVar {
                name: "X".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        key: key.into(),
                        name: name.into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            }]);
            let pod = pod_with(vec![c]);
            make_environment(
                &pod,
                &pod.spec.as_ref().unwrap().containers[0],
                &[],
                &ctx(),
                &objects,
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            missing_key("settings", "nope"),
            "couldn't find key nope in ConfigMap prod/settings"
        );
        assert_eq!(
            missing_key("gone", "k"),
            "couldn't get configMap prod/gone: configmap \"gone\" not found"
        );
    }

    #[test]
    fn service_variables_come_last_without_overriding_and_expand() {
        let mut objects = EnvObjects {
            services: Some(Ok([
                ("WEB_SERVICE_HOST".to_string(), "10.0.0.9".to_string()),
                ("OVERRIDDEN".to_string(), "from-service".to_string()),
            ]
            .into())),
            ..Default::default()
        };
        let mut c = app();
        c.env = Some(vec![
            env_var("OVERRIDDEN", "mine"),
            env_var("URL", "http://$(WEB_SERVICE_HOST)/"),
        ]);
        let pod = pod_with(vec![c.clone()]);
        let env: Vec<(String, String)> = make_environment(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            &[],
            &ctx(),
            &objects,
        )
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
        assert_eq!(
            env,
            [
                ("OVERRIDDEN".to_string(), "mine".to_string()),
                ("URL".to_string(), "http://10.0.0.9/".to_string()),
                ("WEB_SERVICE_HOST".to_string(), "10.0.0.9".to_string()),
            ]
        );
        objects.services = Some(Err(
            "services have not yet been read at least once, cannot construct envvars".into(),
        ));
        let err = make_environment(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            &[],
            &ctx(),
            &objects,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("services have not yet been read"),
            "{err}"
        );
    }

    #[test]
    fn command_and_args_use_the_final_environment() {
        let mut c = app();
        c.command = Some(vec!["/bin/$(CMD)".into(), "$(UNKNOWN)".into()]);
        c.args = Some(vec![
            "--name=$(POD)".into(),
            "$$(POD)".into(),
            "$(LATE)".into(),
        ]);
        c.env = Some(vec![
            env_var("CMD", "sh"),
            field("POD", "metadata.name"),
            env_var("LATE", "$(CMD)-late"),
        ]);
        c.working_dir = Some("/work/$(CMD)".into());
        let pod = pod_with(vec![c]);
        let config = container_config(&inputs(&pod, &[]), &ctx()).unwrap();
        assert_eq!(config.command, ["/bin/sh", "$(UNKNOWN)"]);
        assert_eq!(config.args, ["--name=web", "$(POD)", "sh-late"]);
        // The working directory is not expanded.
        assert_eq!(config.working_dir, "/work/$(CMD)");
    }

    #[test]
    fn config_basics() {
        let mut c = app();
        c.tty = Some(true);
        c.stdin = Some(true);
        let pod = pod_with(vec![c]);
        let config = container_config(&inputs(&pod, &[]), &ctx()).unwrap();
        let m = config.metadata.unwrap();
        assert_eq!((m.name.as_str(), m.attempt), ("app", 3));
        let image = config.image.unwrap();
        assert_eq!(image.image, "sha256:abc");
        assert_eq!(image.user_specified_image, "busybox:1.36");
        assert_eq!(config.log_path, "app/3.log");
        assert!(config.tty && config.stdin && !config.stdin_once);
        assert_eq!(config.labels["io.kubernetes.container.name"], "app");
        assert_eq!(
            config.annotations["io.kubernetes.container.restartCount"],
            "3"
        );
        let sc = config.linux.unwrap().security_context.unwrap();
        // The image's uid when the pod sets none.
        assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 1000 }));
        assert_eq!(sc.masked_paths, ctx().masked_paths);
        assert!(sc.masked_paths.len() > 12, "per-CPU thermal_throttle paths");
        assert_eq!(sc.readonly_paths.len(), 5);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            cri::security_profile::ProfileType::Unconfined as i32
        );
        assert_eq!(sc.apparmor, None);
    }

    #[test]
    fn log_paths() {
        assert_eq!(container_log_path("app", 0), "app/0.log");
        assert_eq!(container_log_path("sidecar", 12), "sidecar/12.log");
    }

    #[test]
    fn shares_and_quota() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), 0);
        assert_eq!(milli_cpu_to_quota(5, CPU_PERIOD_US), 1000);
        assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), 25_000);
    }

    #[test]
    fn resources_per_qos() {
        let c = ctx();
        // Guaranteed.
        let pod = pod_with(vec![with_resources(
            app(),
            &[],
            &[("cpu", "500m"), ("memory", "1Gi")],
        )]);
        let r = container_resources(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            ContainerKind::Regular,
            &c,
        );
        assert_eq!(r.cpu_shares, 512); // from the limit: no request
        assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
        assert_eq!(r.memory_limit_in_bytes, GI);
        assert_eq!(r.oom_score_adj, -997);
        // BestEffort.
        let pod = pod_with(vec![app()]);
        let r = container_resources(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            ContainerKind::Regular,
            &c,
        );
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
        assert_eq!(r.oom_score_adj, 1000);
        // Burstable: 1 GiB of 10 GiB requested -> 900.
        let pod = pod_with(vec![with_resources(
            app(),
            &[("cpu", "100m"), ("memory", "1Gi")],
            &[],
        )]);
        let r = container_resources(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            ContainerKind::Regular,
            &c,
        );
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (102, 0, 0)
        );
        assert_eq!(r.oom_score_adj, 900);
        // A request present but zero gives minimal shares even with a limit.
        let pod = pod_with(vec![with_resources(
            app(),
            &[("cpu", "0")],
            &[("cpu", "2")],
        )]);
        let r = container_resources(
            &pod,
            &pod.spec.as_ref().unwrap().containers[0],
            ContainerKind::Regular,
            &c,
        );
        assert_eq!((r.cpu_shares, r.cpu_quota), (2, 200_000));
    }

    #[test]
    fn oom_score_clamps_and_special_cases() {
        let cap = 10 * GI;
        let burstable = |mem: &str| pod_with(vec![with_resources(app(), &[("memory", mem)], &[])]);
        let adj = |pod: &Pod, kind| {
            let spec = pod.spec.as_ref().unwrap();
            let c = match kind {
                ContainerKind::Regular => &spec.containers[0],
                _ => &spec.init_containers.as_ref().unwrap()[0],
            };
            oom_score_adj(pod, c, kind, cap)
        };
        // Requesting (almost) everything clamps to 3; requesting nothing gives 999, not 1000.
        assert_eq!(adj(&burstable("10Gi"), ContainerKind::Regular), 3);
        assert_eq!(adj(&burstable("20Gi"), ContainerKind::Regular), 3);
        assert_eq!(adj(&burstable("1"), ContainerKind::Regular), 999);
        assert_eq!(adj(&burstable("5Gi"), ContainerKind::Regular), 500);
        // Unknown capacity.
        let p = burstable("1Gi");
        assert_eq!(
            oom_score_adj(
                &p,
                &p.spec.as_ref().unwrap().containers[0],
                ContainerKind::Regular,
                0
            ),
            999
        );
        // A sidecar is no more killable than the smallest regular container.
        let mut p = burstable("2Gi");
        p.spec.as_mut().unwrap().init_containers = Some(vec![with_resources(
            Container {
                name: "side".into(),
                restart_policy: Some("Always".into()),
                ..Default::default()
            },
            &[("memory", "1Gi")],
            &[],
        )]);
        assert_eq!(ContainerKind::of(&p, "side"), Some(ContainerKind::Sidecar));
        assert_eq!(adj(&p, ContainerKind::Sidecar), 800);
        // Node-critical static pods get the Guaranteed score.
        let mut p = burstable("1Gi");
        p.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        assert_eq!(
            adj(&p, ContainerKind::Regular),
            900,
            "not critical without a source"
        );
        p.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.source".to_string(),
            "file".to_string(),
        )]));
        assert_eq!(adj(&p, ContainerKind::Regular), -997);
        // The recorded QoS class wins over the spec.
        let mut p = burstable("1Gi");
        p.status = Some(PodStatus {
            qos_class: Some("BestEffort".into()),
            ..Default::default()
        });
        assert_eq!(adj(&p, ContainerKind::Regular), 1000);
    }

    fn non_root_pod(
        container_sc: Option<SecurityContext>,
        pod_sc: Option<PodSecurityContext>,
    ) -> Pod {
        let mut c = app();
        c.security_context = container_sc;
        let mut p = pod_with(vec![c]);
        p.spec.as_mut().unwrap().security_context = pod_sc;
        p
    }

    fn check(pod: &Pod, uid: Option<i64>, user: &str) -> Result<(), String> {
        verify_run_as_non_root(pod, &pod.spec.as_ref().unwrap().containers[0], uid, user)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn run_as_non_root() {
        let non_root = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        let p = non_root_pod(None, non_root.clone());
        let f = format!("(pod: \"web_prod({UID})\", container: app)");
        assert_eq!(check(&p, Some(1000), ""), Ok(()));
        assert_eq!(
            check(&p, Some(0), ""),
            Err(format!(
                "container has runAsNonRoot and image will run as root {f}"
            ))
        );
        assert_eq!(
            check(&p, None, ""),
            Err(format!(
                "container has runAsNonRoot and image will run as root {f}"
            ))
        );
        assert_eq!(
            check(&p, None, "nobody"),
            Err(format!(
                "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root {f}"
            ))
        );
        assert_eq!(
            check(&p, Some(-5), ""),
            Err(format!(
                "container has runAsNonRoot and image has an invalid user id (-5). (Must be 1-(2147483647)): must be between 0 and 2147483647, inclusive {f}"
            ))
        );
        // An explicit runAsUser decides; the container's overrides the pod's.
        let p = non_root_pod(
            Some(SecurityContext {
                run_as_user: Some(0),
                ..Default::default()
            }),
            Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(1000),
                ..Default::default()
            }),
        );
        assert_eq!(
            check(&p, Some(1000), ""),
            Err(format!("container's runAsUser breaks non-root policy {f}"))
        );
        let p = non_root_pod(
            None,
            Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(1000),
                ..Default::default()
            }),
        );
        assert_eq!(check(&p, Some(0), ""), Ok(()));
        // The container can lift the pod's requirement.
        let p = non_root_pod(
            Some(SecurityContext {
                run_as_non_root: Some(false),
                ..Default::default()
            }),
            non_root,
        );
        assert_eq!(check(&p, Some(0), ""), Ok(()));
        // No requirement at all.
        assert_eq!(check(&pod_with(vec![app()]), Some(0), ""), Ok(()));
        // container_config runs the check.
        let p = non_root_pod(
            None,
            Some(PodSecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            }),
        );
        let mut i = inputs(&p, &[]);
        i.image_uid = Some(0);
        assert!(matches!(
            container_config(&i, &ctx()),
            Err(ContainerConfigError::ImageRunsAsRoot { .. })
        ));
    }

    #[test]
    fn security_context_fields() {
        let p = non_root_pod(
            Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_group: Some(3000),
                ..Default::default()
            }),
            Some(PodSecurityContext {
                run_as_user: Some(1001),
                run_as_group: Some(2000),
                fs_group: Some(4000),
                supplemental_groups: Some(vec![5000]),
                seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
        );
        let config = container_config(&inputs(&p, &[]), &ctx()).unwrap();
        let sc = config.linux.unwrap().security_context.unwrap();
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
        assert_eq!(caps.drop_capabilities, ["ALL"]);
        assert!(sc.no_new_privs);
        assert!(sc.readonly_rootfs);
        assert!(!sc.privileged);
        assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 1001 }));
        assert_eq!(sc.run_as_username, "");
        assert_eq!(sc.run_as_group, Some(cri::Int64Value { value: 3000 }));
        assert_eq!(sc.supplemental_groups, [4000, 5000]);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            cri::security_profile::ProfileType::RuntimeDefault as i32
        );

        // no_new_privs only when allowPrivilegeEscalation is false.
        for (allow, privileged, expected) in [
            (None, None, false),
            (Some(true), None, false),
            (None, Some(true), false),
            (Some(false), None, true),
        ] {
            let p = non_root_pod(
                Some(SecurityContext {
                    allow_privilege_escalation: allow,
                    privileged,
                    ..Default::default()
                }),
                None,
            );
            let sc = container_config(&inputs(&p, &[]), &ctx())
                .unwrap()
                .linux
                .unwrap()
                .security_context
                .unwrap();
            assert_eq!(sc.no_new_privs, expected, "{allow:?} {privileged:?}");
            assert_eq!(sc.privileged, privileged == Some(true));
        }

        // An image user name is passed on when nothing sets a uid.
        let p = pod_with(vec![app()]);
        let mut i = inputs(&p, &[]);
        i.image_uid = None;
        i.image_username = "www";
        let sc = container_config(&i, &ctx())
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap();
        assert_eq!(sc.run_as_user, None);
        assert_eq!(sc.run_as_username, "www");
    }

    #[test]
    fn apparmor_sources() {
        let mut p = pod_with(vec![app()]);
        p.metadata.annotations = Some(BTreeMap::from([(
            "container.apparmor.security.beta.kubernetes.io/app".to_string(),
            "localhost/my-profile".to_string(),
        )]));
        let sc = container_config(&inputs(&p, &[]), &ctx())
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap();
        let aa = sc.apparmor.unwrap();
        assert_eq!(
            aa.profile_type,
            cri::security_profile::ProfileType::Localhost as i32
        );
        assert_eq!(aa.localhost_ref, "my-profile");
        p.spec.as_mut().unwrap().containers[0].security_context = Some(SecurityContext {
            app_armor_profile: Some(AppArmorProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        });
        let sc = container_config(&inputs(&p, &[]), &ctx())
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap();
        assert_eq!(
            sc.apparmor.unwrap().profile_type,
            cri::security_profile::ProfileType::Unconfined as i32
        );
    }

    #[test]
    fn namespace_modes_follow_the_pod() {
        use cri::NamespaceMode;
        let mut p = pod_with(vec![app()]);
        {
            let spec = p.spec.as_mut().unwrap();
            spec.host_network = Some(true);
            spec.host_pid = Some(true);
            spec.host_ipc = Some(true);
        }
        let sc = container_config(&inputs(&p, &[]), &ctx())
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap();
        let ns = sc.namespace_options.unwrap();
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                NamespaceMode::Node as i32,
                NamespaceMode::Node as i32,
                NamespaceMode::Node as i32
            )
        );
        let p = pod_with(vec![app()]);
        let sc = container_config(&inputs(&p, &[]), &ctx())
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap();
        let ns = sc.namespace_options.unwrap();
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                NamespaceMode::Pod as i32,
                NamespaceMode::Container as i32,
                NamespaceMode::Pod as i32
            )
        );
    }

    #[test]
    fn unsupported_requests_are_errors() {
        let mut p = pod_with(vec![app()]);
        p.spec.as_mut().unwrap().host_users = Some(false);
        assert!(matches!(
            container_config(&inputs(&p, &[]), &ctx()),
            Err(ContainerConfigError::Unsupported { .. })
        ));
        let p = non_root_pod(
            None,
            Some(PodSecurityContext {
                seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                    type_: "Localhost".into(),
                    localhost_profile: Some("p.json".into()),
                }),
                ..Default::default()
            }),
        );
        let config = container_config(&inputs(&p, &[]), &ctx()).unwrap();
        let seccomp = config.linux.unwrap().security_context.unwrap().seccomp;
        assert_eq!(
            seccomp,
            Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: "/var/lib/kubelet/seccomp/p.json".into(),
            })
        );
    }

    fn seccomp_of(p: &Pod, ctx: &NodeContext) -> Result<cri::SecurityProfile, String> {
        container_config(&inputs(p, &[]), ctx)
            .map(|c| c.linux.unwrap().security_context.unwrap().seccomp.unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn seccomp_default_and_localhost_profiles() {
        use cri::security_profile::ProfileType;
        let plain = pod_with(vec![app()]);
        let with_default = NodeContext {
            seccomp_default: true,
            seccomp_root: "/srv/kubelet/seccomp".into(),
            ..ctx()
        };
        assert_eq!(
            seccomp_of(&plain, &ctx()).unwrap().profile_type,
            ProfileType::Unconfined as i32
        );
        assert_eq!(
            seccomp_of(&plain, &with_default).unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
        // An explicit Unconfined stays unconfined with seccompDefault.
        let profile = |type_: &str, name: Option<&str>| {
            non_root_pod(
                Some(SecurityContext {
                    seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                        type_: type_.into(),
                        localhost_profile: name.map(str::to_string),
                    }),
                    ..Default::default()
                }),
                None,
            )
        };
        assert_eq!(
            seccomp_of(&profile("Unconfined", None), &with_default)
                .unwrap()
                .profile_type,
            ProfileType::Unconfined as i32
        );
        let local = seccomp_of(
            &profile("Localhost", Some("audit/deny.json")),
            &with_default,
        )
        .unwrap();
        assert_eq!(local.profile_type, ProfileType::Localhost as i32);
        assert_eq!(local.localhost_ref, "/srv/kubelet/seccomp/audit/deny.json");
        let err = seccomp_of(&profile("Localhost", None), &with_default).unwrap_err();
        assert!(
            err.contains("securityContext.seccompProfile.localhostProfile")
                && err.contains("localhostProfile must be set"),
            "{err}"
        );
    }

    #[test]
    fn unmasked_proc_mount_needs_a_user_namespace() {
        let p = non_root_pod(
            Some(SecurityContext {
                proc_mount: Some("Unmasked".into()),
                ..Default::default()
            }),
            None,
        );
        let err = container_config(&inputs(&p, &[]), &ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod prod/web container app: securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"
        );
    }

    #[test]
    fn huge_pages_swap_oom_group_and_cfs_period() {
        let node = NodeContext {
            hugepage_sizes: vec!["2MB".into(), "1GB".into()],
            ..ctx()
        };
        // Without a request every size is limited to zero.
        let p = pod_with(vec![with_resources(app(), &[("memory", "1Gi")], &[])]);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = container_resources(&p, c, ContainerKind::Regular, &node);
        let limits: Vec<_> = r
            .hugepage_limits
            .iter()
            .map(|l| (l.page_size.as_str(), l.limit))
            .collect();
        assert_eq!(limits, [("2MB", 0), ("1GB", 0)]);
        // A hugepages-2Mi limit raises that size only.
        let p = pod_with(vec![with_resources(
            app(),
            &[],
            &[("memory", "1Gi"), ("hugepages-2Mi", "64Mi")],
        )]);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = container_resources(&p, c, ContainerKind::Regular, &node);
        let limits: Vec<_> = r
            .hugepage_limits
            .iter()
            .map(|l| (l.page_size.as_str(), l.limit))
            .collect();
        assert_eq!(limits, [("2MB", 64 << 20), ("1GB", 0)]);
        // No swap controller: no swap setting; v1: memory+swap = memory; v2: memory.swap.max 0.
        assert_eq!(r.memory_swap_limit_in_bytes, 0);
        assert!(!r.unified.contains_key("memory.swap.max"));
        let v1 = NodeContext {
            swap: super::super::host::SwapSettings {
                controller: super::super::host::SwapController::V1,
                ..Default::default()
            },
            ..ctx()
        };
        let r = container_resources(&p, c, ContainerKind::Regular, &v1);
        assert_eq!(r.memory_swap_limit_in_bytes, GI);
        let v2 = NodeContext {
            swap: super::super::host::SwapSettings {
                controller: super::super::host::SwapController::V2,
                behavior: node_config::SwapBehavior::NoSwap,
                capacity_bytes: 4 * GI,
            },
            oom_group: true,
            ..ctx()
        };
        let r = container_resources(&p, c, ContainerKind::Regular, &v2);
        assert_eq!(r.unified["memory.swap.max"], "0");
        assert_eq!(r.unified["memory.oom.group"], "1");
        // LimitedSwap: a Burstable container gets its request's share of the node's swap.
        let limited = NodeContext {
            swap: super::super::host::SwapSettings {
                behavior: node_config::SwapBehavior::LimitedSwap,
                ..v2.swap
            },
            ..v2.clone()
        };
        let burst = pod_with(vec![with_resources(
            app(),
            &[("memory", "1Gi")],
            &[("memory", "2Gi")],
        )]);
        let c = &burst.spec.as_ref().unwrap().containers[0];
        let r = container_resources(&burst, c, ContainerKind::Regular, &limited);
        // 1 GiB of 10 GiB of memory -> a tenth of 4 GiB of swap.
        assert_eq!(r.unified["memory.swap.max"], (4 * GI / 10).to_string());
        let r = container_resources(&burst, c, ContainerKind::Regular, &v2);
        assert_eq!(r.unified["memory.swap.max"], "0");
        // cpuCFSQuotaPeriod, and no quota at all with cpuCFSQuota off.
        let capped = pod_with(vec![with_resources(app(), &[], &[("cpu", "500m")])]);
        let c = &capped.spec.as_ref().unwrap().containers[0];
        let fast = NodeContext {
            cpu_cfs_quota_period_us: 10_000,
            ..ctx()
        };
        let r = container_resources(&capped, c, ContainerKind::Regular, &fast);
        assert_eq!((r.cpu_period, r.cpu_quota), (10_000, 5_000));
        let off = NodeContext {
            cpu_cfs_quota: false,
            ..ctx()
        };
        let r = container_resources(&capped, c, ContainerKind::Regular, &off);
        assert_eq!((r.cpu_period, r.cpu_quota, r.cpu_shares), (0, 0, 512));
    }

    #[test]
    fn pod_level_resources_fill_in_limits_and_the_oom_score() {
        let mut p = pod_with(vec![
            with_resources(app(), &[("memory", "1Gi")], &[]),
            Container {
                name: "other".into(),
                ..app()
            },
        ]);
        p.spec.as_mut().unwrap().resources =
            Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "memory".into(),
                    ApiQuantity("3Gi".into()),
                )])),
                limits: Some(BTreeMap::from([
                    ("memory".into(), ApiQuantity("4Gi".into())),
                    ("cpu".into(), ApiQuantity("1".into())),
                ])),
                ..Default::default()
            });
        let spec = p.spec.as_ref().unwrap();
        let r = container_resources(&p, &spec.containers[1], ContainerKind::Regular, &ctx());
        assert_eq!(r.memory_limit_in_bytes, 4 * GI);
        assert_eq!(r.cpu_quota, 100_000);
        // 3 GiB at pod level, 1 GiB of it claimed: 1 GiB more for each of the two containers.
        // 2 GiB of 10 -> 800; 1 GiB of 10 -> 900.
        assert_eq!(r.oom_score_adj, 900);
        let r = container_resources(&p, &spec.containers[0], ContainerKind::Regular, &ctx());
        assert_eq!(r.oom_score_adj, 800);
    }

    #[test]
    fn container_kinds() {
        let mut p = pod_with(vec![app()]);
        p.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: "init".into(),
            ..Default::default()
        }]);
        assert_eq!(ContainerKind::of(&p, "app"), Some(ContainerKind::Regular));
        assert_eq!(ContainerKind::of(&p, "init"), Some(ContainerKind::Init));
        assert_eq!(ContainerKind::of(&p, "nope"), None);
    }
}
