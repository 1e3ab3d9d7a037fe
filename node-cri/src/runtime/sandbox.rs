//! A pod's CRI sandbox configuration (upstream `generatePodSandboxConfig` and
//! `generatePodSandboxLinuxConfig` in `pkg/kubelet/kuberuntime`), with the pieces it is made
//! of: log directory, cgroup parent, DNS (`pkg/kubelet/network/dns`), hostname, port mappings,
//! namespace modes and the Linux security context.
//!
//! Everything here is a pure function of the pod and a [`NodeContext`], except that the DNS
//! configuration reads the node's resolv.conf ([`NodeContext::resolv_conf`]).
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::Pod;
//! use node_cri::runtime::sandbox::{pod_sandbox_config, NodeContext};
//!
//! # fn run(pod: &Pod) -> Result<(), node_cri::runtime::sandbox::SandboxConfigError> {
//! let ctx = NodeContext { node_name: "node-1".into(), ..NodeContext::default() };
//! let (config, warnings) = pod_sandbox_config(pod, 0, &ctx)?;
//! for warning in warnings {
//!     eprintln!("{}: {}", warning.reason, warning.message);
//! }
//! # let _ = config; Ok(()) }
//! ```

use std::collections::HashSet;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext};
use node_core::downward::NodeAllocatable;
use node_core::qos::{QosClass, effective_pod_qos};
use tracing::{error, warn};

use super::container::{linux_resources, resource_millis_and_bytes};
use super::host::{self, SwapSettings};
use super::labels::{PodRef, sandbox_annotations, sandbox_labels};
use crate::{CgroupDriver, cri};

/// Upstream `validation.MaxDNSNameservers`.
pub const MAX_DNS_NAMESERVERS: usize = 3;
/// Upstream `validation.MaxDNSSearchPaths`.
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
/// Upstream `validation.MaxDNSSearchListChars`.
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
/// Longest search domain kept (`DNS1123SubdomainMaxLength`); longer ones crash some resolvers.
const MAX_DNS_SEARCH_DOMAIN_CHARS: usize = 253;
/// Upstream reads at most this much of resolv.conf.
const MAX_RESOLV_CONF_BYTES: u64 = 10 << 20;
/// The DNS options of a pod using the cluster DNS.
const CLUSTER_DNS_OPTIONS: [&str; 1] = ["ndots:5"];
/// Longest kernel hostname.
const HOSTNAME_MAX_LEN: usize = 63;
/// Longest FQDN usable as the kernel hostname (`setHostnameAsFQDN`).
const FQDN_MAX_LEN: usize = 64;

/// Event reason: ClusterFirst DNS was asked for but the kubelet has no cluster DNS.
pub const REASON_MISSING_CLUSTER_DNS: &str = "MissingClusterDNS";
/// Event reason: the pod's DNS configuration exceeded a limit and was cut.
pub const REASON_DNS_CONFIG_FORMING: &str = "DNSConfigForming";

/// The node-level inputs of sandbox and container configuration.
///
/// [`Default`] gives upstream's defaults, with an empty node name and no addresses,
/// allocatable or capacity.
#[derive(Clone, Debug)]
pub struct NodeContext {
    /// The node's name (`--hostname-override` or the host name); `spec.nodeName` falls back to
    /// it.
    pub node_name: String,
    /// The node's addresses, primary first: `status.hostIP(s)` for the downward API, the
    /// address family preferred for pod IPs, and the family of the loopback nameserver when
    /// there is no resolv.conf.
    pub node_ips: Vec<IpAddr>,
    /// `clusterDNS`: the cluster DNS servers of ClusterFirst pods; empty makes ClusterFirst
    /// fall back to the host's DNS, with a `MissingClusterDNS` warning.
    pub cluster_dns: Vec<IpAddr>,
    /// `clusterDomain`, e.g. `cluster.local`; empty adds no cluster search domains.
    pub cluster_domain: String,
    /// `resolvConf`: the host resolver configuration that Default (and ClusterFirst) pods
    /// start from, read on every sandbox configuration. `None` is upstream's
    /// `--resolv-conf=""`: loopback nameservers and the search list `.`.
    pub resolv_conf: Option<PathBuf>,
    /// The root of pod log directories (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// `cgroupDriver`: how cgroup parents are spelled.
    pub cgroup_driver: CgroupDriver,
    /// `cgroupsPerQOS`: pods get `kubepods[/<qos>]/pod<uid>` cgroups; when false the cgroup
    /// parent is left to the runtime.
    pub cgroups_per_qos: bool,
    /// `cgroupRoot` in cgroupfs form (`/` by default).
    pub cgroup_root: String,
    /// Node allocatable cpu and memory: the downward API's `limits.cpu` and `limits.memory`
    /// of containers without those limits.
    pub allocatable: NodeAllocatable,
    /// The machine's memory capacity in bytes, for the OOM score of Burstable containers.
    pub machine_memory_capacity_bytes: i64,
    /// `MemoryQoS` (feature gate, alpha, cgroup v2 only) with its `memoryThrottlingFactor`:
    /// containers get `memory.min` from their request and `memory.high` between request and
    /// limit. `None`: off.
    pub memory_qos: Option<f64>,
    /// `seccompDefault`: a container that names no seccomp profile (nor does its pod) gets
    /// the runtime's default profile instead of none.
    pub seccomp_default: bool,
    /// Where `Localhost` seccomp profiles are found: `<rootDir>/seccomp`.
    pub seccomp_root: PathBuf,
    /// `cpuCFSQuota`: a CPU limit becomes a CFS quota.
    pub cpu_cfs_quota: bool,
    /// `cpuCFSQuotaPeriod` in microseconds.
    pub cpu_cfs_quota_period_us: i64,
    /// How containers' swap is limited.
    pub swap: SwapSettings,
    /// `memory.oom.group` for every container: on cgroup v2 unless `singleProcessOOMKill`,
    /// an OOM kill takes the whole container rather than one process.
    pub oom_group: bool,
    /// The host's huge page sizes (`2MB`, `1GB`; [`host::hugepage_sizes`]): each gets a zero
    /// limit in a container that does not ask for it.
    pub hugepage_sizes: Vec<String>,
    /// The paths masked in unprivileged containers ([`host::default_masked_paths`]).
    pub masked_paths: Vec<String>,
}

impl Default for NodeContext {
    fn default() -> Self {
        NodeContext {
            node_name: String::new(),
            node_ips: Vec::new(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroups_per_qos: true,
            cgroup_root: "/".into(),
            allocatable: NodeAllocatable::default(),
            machine_memory_capacity_bytes: 0,
            memory_qos: None,
            seccomp_default: false,
            seccomp_root: PathBuf::from("/var/lib/kubelet/seccomp"),
            cpu_cfs_quota: true,
            cpu_cfs_quota_period_us: super::container::CPU_PERIOD_US,
            swap: SwapSettings::default(),
            oom_group: false,
            hugepage_sizes: Vec::new(),
            masked_paths: host::default_masked_paths(host::usable_cpus()),
        }
    }
}

/// A problem with a pod's configuration that does not stop it; the caller records it as a
/// Warning event on the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The event reason, e.g. `MissingClusterDNS`.
    pub reason: &'static str,
    /// The event message.
    pub message: String,
}

/// Why a pod's sandbox configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxConfigError {
    /// The node's resolv.conf could not be read.
    #[error("pod {pod}: cannot read resolv.conf {}", path.display())]
    ReadResolvConf {
        /// The pod.
        pod: PodRef,
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The node's resolv.conf is malformed.
    #[error("pod {pod}: cannot parse resolv.conf {}: {reason}", path.display())]
    ParseResolvConf {
        /// The pod.
        pod: PodRef,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A pod field has a value the sandbox cannot be made from.
    #[error("pod {pod}: {field}: {reason}")]
    InvalidField {
        /// The pod.
        pod: PodRef,
        /// The field, e.g. `spec.hostname`.
        field: &'static str,
        /// What is wrong, in upstream's words where upstream has them.
        reason: String,
    },
    /// The pod asks for something this kubelet does not do yet.
    #[error("pod {pod}: {what} is not supported")]
    Unsupported {
        /// The pod.
        pod: PodRef,
        /// What the pod asks for.
        what: &'static str,
    },
}

/// The pod's log directory: `<pod_logs_dir>/<namespace>_<name>_<uid>` (upstream
/// `BuildPodLogsDirectory`). Container logs go below it, see
/// [`container_log_path`](super::container::container_log_path).
pub fn pod_log_directory(pod_logs_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    pod_logs_dir.join(format!("{namespace}_{name}_{uid}"))
}

/// The cgroup parent of the pod's sandbox and containers, as the runtime expects it.
///
/// With `cgroupsPerQOS` the pod cgroup is `kubepods/pod<uid>` (Guaranteed),
/// `kubepods/burstable/pod<uid>` or `kubepods/besteffort/pod<uid>` under `cgroupRoot`:
/// - cgroupfs: `/kubepods/burstable/pod<uid>`;
/// - systemd: the expanded slice path, `-` in names written `_`:
///   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice`.
///
/// Without `cgroupsPerQOS` the result is empty and the runtime picks (upstream's pod container
/// manager then answers `""` too).
pub fn pod_cgroup_parent(pod: &Pod, qos: QosClass, ctx: &NodeContext) -> String {
    if !ctx.cgroups_per_qos {
        return String::new();
    }
    node_core::qos::pod_cgroup(
        &ctx.cgroup_root,
        ctx.cgroup_driver,
        qos,
        &PodRef::of(pod).uid,
    )
}

/// The pod's sandbox configuration for the given attempt, with the warnings to record on the
/// pod (`MissingClusterDNS`, `DNSConfigForming`).
///
/// Mirrors upstream: metadata, labels and annotations, DNS, hostname (not for hostNetwork
/// pods), log directory, port mappings of the regular containers, and the Linux part: cgroup
/// parent, sysctls, namespace modes, privileged (if any container is), the pod's user, group
/// and supplemental groups, SELinux options, `RuntimeDefault` seccomp, and the pod's
/// aggregate resources and overhead.
pub fn pod_sandbox_config(
    pod: &Pod,
    attempt: u32,
    ctx: &NodeContext,
) -> Result<(cri::PodSandboxConfig, Vec<ConfigWarning>), SandboxConfigError> {
    let key = PodRef::of(pod);
    let (dns, warnings) = pod_dns_config(pod, ctx)?;
    let hostname = if is_host_network(pod) {
        String::new()
    } else {
        let (hostname, domain) = pod_hostname_and_domain(pod, &ctx.cluster_domain)?;
        kernel_hostname(pod, &hostname, &domain)?
    };
    let log_directory = pod_log_directory(&ctx.pod_logs_dir, &key.namespace, &key.name, &key.uid);
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: key.name.clone(),
            uid: key.uid.clone(),
            namespace: key.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: log_directory.to_string_lossy().into_owned(),
        dns_config: Some(dns),
        port_mappings: port_mappings(pod),
        labels: sandbox_labels(pod),
        annotations: sandbox_annotations(pod),
        linux: Some(linux_sandbox_config(pod, ctx)?),
        windows: None,
    };
    Ok((config, warnings))
}

fn linux_sandbox_config(
    pod: &Pod,
    ctx: &NodeContext,
) -> Result<cri::LinuxPodSandboxConfig, SandboxConfigError> {
    let key = PodRef::of(pod);
    check_user_namespaces(pod).map_err(|what| SandboxConfigError::Unsupported {
        pod: key.clone(),
        what,
    })?;
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let (supplemental_groups, supplemental_groups_policy) =
        supplemental_groups(psc).map_err(|reason| SandboxConfigError::InvalidField {
            pod: key.clone(),
            field: "spec.securityContext.supplementalGroupsPolicy",
            reason,
        })?;
    let security_context = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        selinux_options: psc
            .and_then(|sc| sc.se_linux_options.as_ref())
            .map(selinux_option),
        run_as_user: psc
            .and_then(|sc| sc.run_as_user)
            .map(|value| cri::Int64Value { value }),
        run_as_group: psc
            .and_then(|sc| sc.run_as_group)
            .map(|value| cri::Int64Value { value }),
        readonly_rootfs: false,
        supplemental_groups,
        supplemental_groups_policy,
        privileged: has_privileged_container(pod),
        // Upstream forces the sandbox to RuntimeDefault so that pods can use least-privilege
        // seccomp profiles (kubernetes#84623).
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let sysctls = psc
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    Ok(cri::LinuxPodSandboxConfig {
        cgroup_parent: pod_cgroup_parent(pod, effective_pod_qos(pod), ctx),
        security_context: Some(security_context),
        sysctls,
        overhead: Some(overhead_resources(pod, ctx)),
        resources: Some(sandbox_resources(pod, ctx)),
    })
}

/// Whether the pod uses the node's network namespace.
pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The namespace modes of the pod's sandbox and containers (upstream `NamespacesForPod`):
/// network NODE with hostNetwork else POD; pid NODE with hostPID, POD with
/// shareProcessNamespace, else CONTAINER; ipc NODE with hostIPC else POD; user namespace NODE
/// (pods with `hostUsers: false` are refused before this is used).
pub fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    use cri::NamespaceMode;
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let network = if flag(|s| s.host_network) {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    let pid = if flag(|s| s.host_pid) {
        NamespaceMode::Node
    } else if flag(|s| s.share_process_namespace) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    let ipc = if flag(|s| s.host_ipc) {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    cri::NamespaceOption {
        network: network as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        target_id: String::new(),
        userns_options: Some(cri::UserNamespace {
            mode: NamespaceMode::Node as i32,
            uids: Vec::new(),
            gids: Vec::new(),
        }),
    }
}

/// Refuses `hostUsers: false`: user namespaces need ID mappings this kubelet does not
/// allocate yet.
pub(crate) fn check_user_namespaces(pod: &Pod) -> Result<(), &'static str> {
    match pod.spec.as_ref().and_then(|s| s.host_users) {
        Some(false) => Err("a user namespace (spec.hostUsers: false)"),
        _ => Ok(()),
    }
}

/// The pod-level supplemental groups (fsGroup first, then supplementalGroups) and the CRI
/// supplemental groups policy.
pub(crate) fn supplemental_groups(
    psc: Option<&PodSecurityContext>,
) -> Result<(Vec<i64>, i32), String> {
    let Some(psc) = psc else {
        return Ok((Vec::new(), 0));
    };
    let mut groups: Vec<i64> = psc.fs_group.into_iter().collect();
    groups.extend(psc.supplemental_groups.iter().flatten().copied());
    // volumes issue: upstream also adds the GIDs the pod's volumes ask for
    // (GetExtraSupplementalGroupsForPod); they come with the volume manager.
    let policy = match psc.supplemental_groups_policy.as_deref() {
        None | Some("Merge") => cri::SupplementalGroupsPolicy::Merge,
        Some("Strict") => cri::SupplementalGroupsPolicy::Strict,
        Some(other) => return Err(format!("unsupported supplementalGroupsPolicy: {other}")),
    };
    Ok((groups, policy as i32))
}

pub(crate) fn selinux_option(o: &k8s_openapi::api::core::v1::SELinuxOptions) -> cri::SeLinuxOption {
    cri::SeLinuxOption {
        user: o.user.clone().unwrap_or_default(),
        role: o.role.clone().unwrap_or_default(),
        r#type: o.type_.clone().unwrap_or_default(),
        level: o.level.clone().unwrap_or_default(),
    }
}

/// Whether any container (init, regular or ephemeral) is privileged.
fn has_privileged_container(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let privileged = |sc: Option<&k8s_openapi::api::core::v1::SecurityContext>| {
        sc.and_then(|sc| sc.privileged).unwrap_or(false)
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| privileged(c.security_context.as_ref()))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()))
}

/// The port mappings of the pod's regular containers (upstream `MakePortMappings`): every
/// declared port, the runtime using those with a host port; a port whose name (or, unnamed,
/// whose family, protocol, host IP and ports) repeats within a container is dropped.
pub fn port_mappings(pod: &Pod) -> Vec<cri::PortMapping> {
    let mut mappings = Vec::new();
    for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let mut names = HashSet::new();
        for port in container.ports.iter().flatten() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let host_ip = port.host_ip.clone().unwrap_or_default();
            let host_port = port.host_port.unwrap_or(0);
            let name = match port.name.as_deref() {
                Some(name) if !name.is_empty() => name.to_string(),
                _ => {
                    let family = match host_ip.parse::<IpAddr>() {
                        _ if host_ip.is_empty() => "any",
                        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => "v6",
                        _ => "v4",
                    };
                    format!(
                        "{family}-{protocol}-{host_ip}:{}:{host_port}",
                        port.container_port
                    )
                }
            };
            if !names.insert(name.clone()) {
                warn!(
                    container = %container.name,
                    port = %name,
                    "port name conflicted, it is defined more than once"
                );
                continue;
            }
            let protocol = match protocol {
                "TCP" => cri::Protocol::Tcp,
                "UDP" => cri::Protocol::Udp,
                "SCTP" => cri::Protocol::Sctp,
                other => {
                    warn!(protocol = other, "unknown protocol, defaulting to TCP");
                    cri::Protocol::Tcp
                }
            };
            mappings.push(cri::PortMapping {
                protocol: protocol as i32,
                container_port: port.container_port,
                host_port,
                host_ip,
            });
        }
    }
    mappings
}

/// The pod's resources as the sandbox reports them (upstream `calculateSandboxResources`):
/// cpu shares from the aggregate cpu request, quota from the aggregate cpu limit, memory limit
/// from the aggregate memory limit. Aggregates follow upstream `PodRequests`/`PodLimits`:
/// regular and sidecar containers add up, an init container counts with the sidecars started
/// before it, and the pod needs the larger of the two; pod-level resources win when set.
fn sandbox_resources(pod: &Pod, ctx: &NodeContext) -> cri::LinuxContainerResources {
    let requests = pod_aggregate(pod, Which::Requests);
    let limits = pod_aggregate(pod, Which::Limits);
    let mut resources = linux_resources(
        requests.cpu_millis,
        limits.cpu_millis.unwrap_or(0),
        limits.memory_bytes.unwrap_or(0),
        ctx.cpu_cfs_quota.then_some(ctx.cpu_cfs_quota_period_us),
    );
    if ctx.oom_group {
        resources
            .unified
            .insert("memory.oom.group".to_string(), "1".to_string());
    }
    resources
}

/// `spec.overhead` as resources, requests equal to limits (upstream
/// `convertOverheadToLinuxResources`); empty without overhead.
fn overhead_resources(pod: &Pod, ctx: &NodeContext) -> cri::LinuxContainerResources {
    let Some(overhead) = pod.spec.as_ref().and_then(|s| s.overhead.as_ref()) else {
        return cri::LinuxContainerResources::default();
    };
    let (cpu, memory) = resource_millis_and_bytes(Some(overhead));
    let cpu = cpu.unwrap_or(0);
    linux_resources(
        Some(cpu),
        cpu,
        memory.unwrap_or(0),
        ctx.cpu_cfs_quota.then_some(ctx.cpu_cfs_quota_period_us),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Requests,
    Limits,
}

/// cpu (millicores) and memory (bytes); `None` when no container names the resource.
#[derive(Clone, Copy, Default)]
struct CpuMem {
    cpu_millis: Option<i64>,
    memory_bytes: Option<i64>,
}

impl CpuMem {
    fn of(container: &Container, which: Which) -> Self {
        let r = container.resources.as_ref();
        let (cpu, memory) = match which {
            Which::Limits => resource_millis_and_bytes(r.and_then(|r| r.limits.as_ref())),
            Which::Requests => {
                // A missing request defaults to the limit.
                let (lc, lm) = resource_millis_and_bytes(r.and_then(|r| r.limits.as_ref()));
                let (rc, rm) = resource_millis_and_bytes(r.and_then(|r| r.requests.as_ref()));
                (rc.or(lc), rm.or(lm))
            }
        };
        CpuMem {
            cpu_millis: cpu,
            memory_bytes: memory,
        }
    }

    fn add(self, other: Self) -> Self {
        let add = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        CpuMem {
            cpu_millis: add(self.cpu_millis, other.cpu_millis),
            memory_bytes: add(self.memory_bytes, other.memory_bytes),
        }
    }

    fn max(self, other: Self) -> Self {
        let max = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        CpuMem {
            cpu_millis: max(self.cpu_millis, other.cpu_millis),
            memory_bytes: max(self.memory_bytes, other.memory_bytes),
        }
    }
}

fn pod_aggregate(pod: &Pod, which: Which) -> CpuMem {
    let Some(spec) = pod.spec.as_ref() else {
        return CpuMem::default();
    };
    let mut total = spec
        .containers
        .iter()
        .fold(CpuMem::default(), |acc, c| acc.add(CpuMem::of(c, which)));
    let mut sidecars = CpuMem::default();
    let mut init = CpuMem::default();
    for c in spec.init_containers.iter().flatten() {
        let own = CpuMem::of(c, which);
        let needed = if node_core::pod_manager::is_sidecar(c) {
            total = total.add(own);
            sidecars = sidecars.add(own);
            sidecars
        } else {
            own.add(sidecars)
        };
        init = init.max(needed);
    }
    let mut result = total.max(init);
    if let Some(pod_level) = spec.resources.as_ref() {
        let (limit_cpu, limit_memory) = resource_millis_and_bytes(pod_level.limits.as_ref());
        let (cpu, memory) = match which {
            Which::Limits => (limit_cpu, limit_memory),
            Which::Requests => {
                // Pod-level requests default to pod-level limits too.
                let (cpu, memory) = resource_millis_and_bytes(pod_level.requests.as_ref());
                (cpu.or(limit_cpu), memory.or(limit_memory))
            }
        };
        result.cpu_millis = cpu.or(result.cpu_millis);
        result.memory_bytes = memory.or(result.memory_bytes);
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Hostname

/// The pod's hostname and domain (upstream `GeneratePodHostNameAndDomain`): `spec.hostname`
/// (a DNS-1123 label) or the pod name, cut to 63 characters with trailing `-` and `.` removed;
/// the domain is `<subdomain>.<namespace>.svc.<clusterDomain>` when `spec.subdomain` is set,
/// else empty.
pub fn pod_hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, String), SandboxConfigError> {
    let key = PodRef::of(pod);
    let spec = pod.spec.as_ref();
    let mut hostname = key.name.clone();
    if let Some(h) = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        if let Err(reason) = dns1123_label(h) {
            return Err(SandboxConfigError::InvalidField {
                pod: key,
                field: "spec.hostname",
                reason: format!("pod Hostname {h:?} is not a valid DNS label: {reason}"),
            });
        }
        hostname = h.to_string();
    }
    if hostname.len() > HOSTNAME_MAX_LEN {
        let mut cut = HOSTNAME_MAX_LEN;
        while !hostname.is_char_boundary(cut) {
            cut -= 1;
        }
        let truncated = hostname[..cut].trim_end_matches(['-', '.']).to_string();
        error!(
            pod = %key,
            hostname_max_len = HOSTNAME_MAX_LEN,
            truncated_hostname = %truncated,
            "hostname for pod was too long, truncated it"
        );
        if truncated.is_empty() {
            return Err(SandboxConfigError::InvalidField {
                pod: key.clone(),
                field: "metadata.name",
                reason: format!("hostname for pod {:?} was invalid: {hostname:?}", key.name),
            });
        }
        hostname = truncated;
    }
    let mut domain = String::new();
    if let Some(sub) = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        if let Err(reason) = dns1123_label(sub) {
            return Err(SandboxConfigError::InvalidField {
                pod: key,
                field: "spec.subdomain",
                reason: format!("pod Subdomain {sub:?} is not a valid DNS label: {reason}"),
            });
        }
        domain = format!("{sub}.{}.svc.{cluster_domain}", key.namespace);
    }
    Ok((hostname, domain))
}

/// The kernel hostname: the FQDN with `setHostnameAsFQDN` and a domain, else the hostname.
fn kernel_hostname(pod: &Pod, hostname: &str, domain: &str) -> Result<String, SandboxConfigError> {
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    if domain.is_empty() || !as_fqdn {
        return Ok(hostname.to_string());
    }
    let fqdn = format!("{hostname}.{domain}");
    if fqdn.len() > FQDN_MAX_LEN {
        return Err(SandboxConfigError::InvalidField {
            pod: PodRef::of(pod),
            field: "spec.setHostnameAsFQDN",
            reason: format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX_LEN} characters is the max, {} characters requested)",
                fqdn.len()
            ),
        });
    }
    Ok(fqdn)
}

/// Upstream's `IsDNS1123Label` as one message (node-core's validation, joined by `;`).
fn dns1123_label(value: &str) -> Result<(), String> {
    let errors = node_core::config::dns1123_label(value);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join(";"))
    }
}

// ---------------------------------------------------------------------------------------------
// DNS

/// A parsed resolv.conf: what upstream's `parseResolvConf` keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The last `search` line, `.` dropped and trailing dots trimmed.
    pub searches: Vec<String>,
    /// `options`, merged by name (a later value replaces an earlier one in place).
    pub options: Vec<String>,
}

/// Parses resolv.conf text as upstream does. A `nameserver` line without an address is an
/// error (`nameserver list is empty`); other unknown lines are ignored.
pub fn parse_resolv_conf(text: &str) -> Result<ResolvConf, String> {
    let mut conf = ResolvConf::default();
    let mut errors = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => match fields.next() {
                Some(server) => conf.nameservers.push(server.to_string()),
                None => errors.push("nameserver list is empty"),
            },
            Some("search") => {
                conf.searches = fields
                    .filter(|s| *s != ".")
                    .map(|s| s.strip_suffix('.').unwrap_or(s).to_string())
                    .collect();
            }
            Some("options") => {
                for option in fields {
                    merge_resolv_option(&mut conf.options, option);
                }
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(conf)
    } else {
        Err(errors.join(", "))
    }
}

fn option_name(option: &str) -> &str {
    option.split(':').next().unwrap_or(option)
}

fn merge_resolv_option(options: &mut Vec<String>, option: &str) {
    let name = option_name(option);
    match options.iter_mut().find(|o| option_name(o) == name) {
        Some(existing) => *existing = option.to_string(),
        None => options.push(option.to_string()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DnsType {
    Cluster,
    Host,
    None,
}

fn pod_dns_type(pod: &Pod) -> DnsType {
    match pod.spec.as_ref().and_then(|s| s.dns_policy.as_deref()) {
        Some("None") => DnsType::None,
        Some("ClusterFirstWithHostNet") => DnsType::Cluster,
        // ClusterFirst is the API default.
        Some("ClusterFirst") | None => {
            if is_host_network(pod) {
                DnsType::Host
            } else {
                DnsType::Cluster
            }
        }
        Some("Default") => DnsType::Host,
        Some(other) => {
            error!(
                pod = %PodRef::of(pod),
                dns_policy = other,
                "failed to get DNS type for pod, falling back to ClusterFirst policy"
            );
            DnsType::Cluster
        }
    }
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// The pod's DNS configuration (upstream `GetPodDNS`), with the warnings to record.
///
/// The base is the host's resolv.conf (read from [`NodeContext::resolv_conf`]). By
/// `dnsPolicy`: `ClusterFirst` (not hostNetwork) and `ClusterFirstWithHostNet` use the cluster
/// DNS servers, the search list `<ns>.svc.<domain> svc.<domain> <domain>` plus the host's, and
/// `ndots:5`; without cluster DNS they fall back to the host's configuration with a
/// `MissingClusterDNS` warning. `Default` (and `ClusterFirst` with hostNetwork) use the host's,
/// `None` starts empty. `spec.dnsConfig` is merged in last, then the limits apply: 3
/// nameservers, 32 search domains of at most 253 characters, 2048 characters of search line,
/// with a `DNSConfigForming` warning when something was cut.
pub fn pod_dns_config(
    pod: &Pod,
    ctx: &NodeContext,
) -> Result<(cri::DnsConfig, Vec<ConfigWarning>), SandboxConfigError> {
    let key = PodRef::of(pod);
    let host = match &ctx.resolv_conf {
        None => ResolvConf::default(),
        Some(path) => read_resolv_conf(path).map_err(|e| match e {
            Ok(source) => SandboxConfigError::ReadResolvConf {
                pod: key.clone(),
                path: path.clone(),
                source,
            },
            Err(reason) => SandboxConfigError::ParseResolvConf {
                pod: key.clone(),
                path: path.clone(),
                reason,
            },
        })?,
    };
    let mut warnings = Vec::new();
    let mut conf = host;
    let mut use_host = false;
    match pod_dns_type(pod) {
        DnsType::None => conf = ResolvConf::default(),
        DnsType::Cluster if !ctx.cluster_dns.is_empty() => {
            conf.nameservers = ctx.cluster_dns.iter().map(IpAddr::to_string).collect();
            if !ctx.cluster_domain.is_empty() {
                let d = &ctx.cluster_domain;
                let mut searches = Vec::new();
                push_unique(
                    &mut searches,
                    [
                        format!("{}.svc.{d}", key.namespace),
                        format!("svc.{d}"),
                        d.clone(),
                    ],
                );
                push_unique(&mut searches, conf.searches.drain(..));
                conf.searches = searches;
            }
            conf.options = CLUSTER_DNS_OPTIONS.iter().map(|o| o.to_string()).collect();
        }
        DnsType::Cluster => {
            let node_message = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
            warn!(pod = %key, "{node_message}");
            warnings.push(ConfigWarning {
                reason: REASON_MISSING_CLUSTER_DNS,
                message: format!("pod: {:?}. {node_message}", key.upstream_format()),
            });
            use_host = true;
        }
        DnsType::Host => use_host = true,
    }
    if use_host && ctx.resolv_conf.is_none() {
        // `--resolv-conf=""`: point at a local resolver, which in practice disables lookups.
        for ip in &ctx.node_ips {
            conf.nameservers
                .push(if ip.is_ipv6() { "::1" } else { "127.0.0.1" }.to_string());
        }
        if conf.nameservers.is_empty() {
            conf.nameservers.push("127.0.0.1".into());
        }
        conf.searches = vec![".".into()];
    }
    if let Some(pod_dns) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        push_unique(
            &mut conf.nameservers,
            pod_dns.nameservers.iter().flatten().cloned(),
        );
        push_unique(
            &mut conf.searches,
            pod_dns.searches.iter().flatten().cloned(),
        );
        let mut options: Vec<(String, String)> = conf
            .options
            .iter()
            .map(|o| match o.split_once(':') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => (o.clone(), String::new()),
            })
            .collect();
        for option in pod_dns.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            let value = option.value.clone().unwrap_or_default();
            match options.iter_mut().find(|(n, _)| *n == name) {
                Some(existing) => existing.1 = value,
                None => options.push((name, value)),
            }
        }
        conf.options = options
            .into_iter()
            .map(|(n, v)| if v.is_empty() { n } else { format!("{n}:{v}") })
            .collect();
    }
    fit_dns_limits(&mut conf, &mut warnings);
    Ok((
        cri::DnsConfig {
            servers: conf.nameservers,
            searches: conf.searches,
            options: conf.options,
        },
        warnings,
    ))
}

/// Reads and parses resolv.conf: `Err(Ok(io))` when unreadable, `Err(Err(reason))` when
/// malformed.
fn read_resolv_conf(path: &Path) -> Result<ResolvConf, Result<std::io::Error, String>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_RESOLV_CONF_BYTES).read_to_end(&mut bytes))
        .map_err(Ok)?;
    parse_resolv_conf(&String::from_utf8_lossy(&bytes)).map_err(Err)
}

fn fit_dns_limits(conf: &mut ResolvConf, warnings: &mut Vec<ConfigWarning>) {
    if conf.nameservers.len() > MAX_DNS_NAMESERVERS {
        conf.nameservers.truncate(MAX_DNS_NAMESERVERS);
        warnings.push(ConfigWarning {
            reason: REASON_DNS_CONFIG_FORMING,
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                conf.nameservers.join(" ")
            ),
        });
    }
    let mut exceeded = false;
    if conf.searches.len() > MAX_DNS_SEARCH_PATHS {
        conf.searches.truncate(MAX_DNS_SEARCH_PATHS);
        exceeded = true;
    }
    let before = conf.searches.len();
    conf.searches
        .retain(|s| s.len() <= MAX_DNS_SEARCH_DOMAIN_CHARS);
    exceeded |= conf.searches.len() != before;
    let mut line_len = conf.searches.join(" ").len();
    if line_len > MAX_DNS_SEARCH_LIST_CHARS {
        while line_len > MAX_DNS_SEARCH_LIST_CHARS {
            match conf.searches.pop() {
                Some(last) => line_len = line_len.saturating_sub(last.len() + 1),
                None => break,
            }
        }
        exceeded = true;
    }
    if exceeded {
        warnings.push(ConfigWarning {
            reason: REASON_DNS_CONFIG_FORMING,
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                conf.searches.join(" ")
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, PodDNSConfig, PodDNSConfigOption, PodSpec, ResourceRequirements,
        SecurityContext, Sysctl,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    const UID: &str = "11111111-2222-3333-4444-555555555555";

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some(UID.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(p: &mut Pod) -> &mut PodSpec {
        p.spec.as_mut().unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        ctx: NodeContext,
    }

    fn fixture(resolv: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, resolv).unwrap();
        let ctx = NodeContext {
            node_name: "node-1".into(),
            node_ips: vec!["192.0.2.10".parse().unwrap()],
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            resolv_conf: Some(path),
            ..NodeContext::default()
        };
        Fixture { dir, ctx }
    }

    const HOST_RESOLV: &str = "# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch old.example\nsearch example.com. corp.example . \noptions ndots:2 timeout:1\noptions ndots:3\n";

    fn dns(p: &Pod, ctx: &NodeContext) -> (cri::DnsConfig, Vec<ConfigWarning>) {
        pod_dns_config(p, ctx).unwrap()
    }

    #[test]
    fn resolv_conf_parsing() {
        let conf = parse_resolv_conf(HOST_RESOLV).unwrap();
        assert_eq!(conf.nameservers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(conf.searches, ["example.com", "corp.example"]);
        assert_eq!(conf.options, ["ndots:3", "timeout:1"]);
        assert_eq!(
            parse_resolv_conf("nameserver\n").unwrap_err(),
            "nameserver list is empty"
        );
    }

    #[test]
    fn dns_cluster_first() {
        let f = fixture(HOST_RESOLV);
        let (d, w) = dns(&pod(), &f.ctx);
        assert!(w.is_empty());
        assert_eq!(d.servers, ["10.96.0.10"]);
        assert_eq!(
            d.searches,
            [
                "prod.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "example.com",
                "corp.example"
            ]
        );
        assert_eq!(d.options, ["ndots:5"]);
        // Explicit ClusterFirst is the same; so is ClusterFirstWithHostNet on the host network.
        let mut p = pod();
        spec(&mut p).dns_policy = Some("ClusterFirstWithHostNet".into());
        spec(&mut p).host_network = Some(true);
        assert_eq!(dns(&p, &f.ctx).0, d);
    }

    #[test]
    fn dns_cluster_first_on_host_network_uses_host() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        spec(&mut p).dns_policy = Some("ClusterFirst".into());
        spec(&mut p).host_network = Some(true);
        let (d, w) = dns(&p, &f.ctx);
        assert!(w.is_empty());
        assert_eq!(d.servers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(d.searches, ["example.com", "corp.example"]);
        assert_eq!(d.options, ["ndots:3", "timeout:1"]);
    }

    #[test]
    fn dns_default_uses_host() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        spec(&mut p).dns_policy = Some("Default".into());
        let (d, _) = dns(&p, &f.ctx);
        assert_eq!(d.servers, ["192.0.2.53", "192.0.2.54"]);
        // Without a resolv.conf: loopback resolvers of the node's families, search ".".
        let mut ctx = f.ctx.clone();
        ctx.resolv_conf = None;
        ctx.node_ips = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        let (d, _) = dns(&p, &ctx);
        assert_eq!(d.servers, ["127.0.0.1", "::1"]);
        assert_eq!(d.searches, ["."]);
        assert!(d.options.is_empty());
        ctx.node_ips.clear();
        assert_eq!(dns(&p, &ctx).0.servers, ["127.0.0.1"]);
    }

    #[test]
    fn dns_cluster_first_without_cluster_dns_falls_back_with_warning() {
        let mut f = fixture(HOST_RESOLV);
        f.ctx.cluster_dns.clear();
        let (d, w) = dns(&pod(), &f.ctx);
        assert_eq!(d.servers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(d.searches, ["example.com", "corp.example"]);
        assert_eq!(
            w,
            [ConfigWarning {
                reason: "MissingClusterDNS",
                message: format!(
                    "pod: \"web_prod({UID})\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy."
                ),
            }]
        );
    }

    #[test]
    fn dns_none_takes_only_the_pod_config_and_merges() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        spec(&mut p).dns_policy = Some("None".into());
        spec(&mut p).dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "1.1.1.1".into()]),
            searches: Some(vec!["a.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("1".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        });
        let (d, w) = dns(&p, &f.ctx);
        assert!(w.is_empty());
        assert_eq!(d.servers, ["1.1.1.1"]);
        assert_eq!(d.searches, ["a.example"]);
        assert_eq!(d.options, ["ndots:1", "edns0"]);
        // Merged into a cluster config, the pod's option value wins.
        spec(&mut p).dns_policy = None;
        let (d, _) = dns(&p, &f.ctx);
        assert_eq!(d.servers, ["10.96.0.10", "1.1.1.1"]);
        assert_eq!(d.searches.last().map(String::as_str), Some("a.example"));
        assert_eq!(d.options, ["ndots:1", "edns0"]);
    }

    #[test]
    fn dns_limits() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        spec(&mut p).dns_policy = Some("None".into());
        let long = "x".repeat(254);
        let mut searches: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        searches.insert(0, long);
        spec(&mut p).dns_config = Some(PodDNSConfig {
            nameservers: Some((1..=5).map(|i| format!("192.0.2.{i}")).collect()),
            searches: Some(searches),
            options: None,
        });
        let (d, w) = dns(&p, &f.ctx);
        assert_eq!(d.servers, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        // 32 kept by count, then the over-long one dropped.
        assert_eq!(d.searches.len(), 31);
        assert_eq!(d.searches[0], "d0.example");
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].reason, "DNSConfigForming");
        assert_eq!(
            w[0].message,
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 192.0.2.1 192.0.2.2 192.0.2.3"
        );
        assert!(w[1].message.starts_with(
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: d0.example d1.example"
        ));
        // The 2048-character line limit drops domains from the end.
        let searches: Vec<String> = (0..10).map(|i| format!("{i}{}", "y".repeat(249))).collect();
        spec(&mut p).dns_config = Some(PodDNSConfig {
            searches: Some(searches),
            ..Default::default()
        });
        let (d, w) = dns(&p, &f.ctx);
        assert_eq!(d.searches.len(), 8);
        assert!(d.searches.join(" ").len() <= MAX_DNS_SEARCH_LIST_CHARS);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn dns_resolv_conf_errors() {
        let mut f = fixture("nameserver\n");
        assert!(matches!(
            pod_dns_config(&pod(), &f.ctx),
            Err(SandboxConfigError::ParseResolvConf { .. })
        ));
        f.ctx.resolv_conf = Some(f.dir.path().join("missing"));
        let err = pod_dns_config(&pod(), &f.ctx).unwrap_err();
        assert!(matches!(err, SandboxConfigError::ReadResolvConf { .. }));
        assert!(
            err.to_string()
                .starts_with("pod prod/web: cannot read resolv.conf")
        );
    }

    #[test]
    fn log_directory() {
        assert_eq!(
            pod_log_directory(Path::new("/var/log/pods"), "ns", "name", "uid"),
            PathBuf::from("/var/log/pods/ns_name_uid")
        );
    }

    #[test]
    fn cgroup_parents() {
        let p = pod();
        let mut ctx = NodeContext::default();
        let u = UID.replace('-', "_");
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::Guaranteed, &ctx),
            format!("/kubepods/pod{UID}")
        );
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::Burstable, &ctx),
            format!("/kubepods/burstable/pod{UID}")
        );
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::BestEffort, &ctx),
            format!("/kubepods/besteffort/pod{UID}")
        );
        ctx.cgroup_root = "/custom/root/".into();
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::BestEffort, &ctx),
            format!("/custom/root/kubepods/besteffort/pod{UID}")
        );
        ctx.cgroup_root = "/".into();
        ctx.cgroup_driver = CgroupDriver::Systemd;
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::Guaranteed, &ctx),
            format!("/kubepods.slice/kubepods-pod{u}.slice")
        );
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::Burstable, &ctx),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice")
        );
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::BestEffort, &ctx),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice")
        );
        ctx.cgroup_root = "/my-root".into();
        assert_eq!(
            pod_cgroup_parent(&p, QosClass::Guaranteed, &ctx),
            format!("/my_root.slice/my_root-kubepods.slice/my_root-kubepods-pod{u}.slice")
        );
        ctx.cgroups_per_qos = false;
        assert_eq!(pod_cgroup_parent(&p, QosClass::Guaranteed, &ctx), "");
    }

    #[test]
    fn hostnames() {
        let mut p = pod();
        assert_eq!(
            pod_hostname_and_domain(&p, "cluster.local").unwrap().0,
            "web"
        );
        spec(&mut p).hostname = Some("host-a".into());
        spec(&mut p).subdomain = Some("sub".into());
        assert_eq!(
            pod_hostname_and_domain(&p, "cluster.local").unwrap(),
            ("host-a".into(), "sub.prod.svc.cluster.local".into())
        );
        spec(&mut p).hostname = Some("Bad_Host".into());
        let err = pod_hostname_and_domain(&p, "cluster.local").unwrap_err();
        assert!(
            err.to_string().contains(
                "pod Hostname \"Bad_Host\" is not a valid DNS label: a lowercase RFC 1123 label"
            ),
            "{err}"
        );
        // Long pod names are cut to 63 characters without a trailing '-' or '.'.
        let mut p = pod();
        p.metadata.name = Some(format!("{}-.{}", "a".repeat(61), "b".repeat(10)));
        assert_eq!(pod_hostname_and_domain(&p, "").unwrap().0, "a".repeat(61));
        p.metadata.name = Some("c".repeat(70));
        assert_eq!(pod_hostname_and_domain(&p, "").unwrap().0, "c".repeat(63));
    }

    #[test]
    fn hostname_as_fqdn() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        spec(&mut p).subdomain = Some("sub".into());
        spec(&mut p).set_hostname_as_fqdn = Some(true);
        let (config, _) = pod_sandbox_config(&p, 0, &f.ctx).unwrap();
        assert_eq!(config.hostname, "web.sub.prod.svc.cluster.local");
        // Without setHostnameAsFQDN the subdomain does not change the kernel hostname.
        spec(&mut p).set_hostname_as_fqdn = None;
        assert_eq!(pod_sandbox_config(&p, 0, &f.ctx).unwrap().0.hostname, "web");
        // An FQDN over 64 characters is an error.
        spec(&mut p).set_hostname_as_fqdn = Some(true);
        spec(&mut p).hostname = Some("h".repeat(40));
        let err = pod_sandbox_config(&p, 0, &f.ctx).unwrap_err();
        assert!(
            err.to_string()
                .contains("is too long (64 characters is the max, 67 characters requested)"),
            "{err}"
        );
    }

    #[test]
    fn sandbox_config() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        p.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        spec(&mut p).containers[0].ports = Some(vec![
            ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                name: Some("http".into()),
                ..Default::default()
            },
            ContainerPort {
                container_port: 53,
                protocol: Some("UDP".into()),
                host_ip: Some("127.0.0.1".into()),
                ..Default::default()
            },
            ContainerPort {
                container_port: 81,
                name: Some("http".into()),
                ..Default::default()
            },
        ]);
        spec(&mut p).security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(2000),
            fs_group: Some(3000),
            supplemental_groups: Some(vec![4000]),
            sysctls: Some(vec![Sysctl {
                name: "net.ipv4.ip_unprivileged_port_start".into(),
                value: "0".into(),
            }]),
            ..Default::default()
        });
        spec(&mut p).init_containers = Some(vec![Container {
            name: "init".into(),
            security_context: Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let (config, warnings) = pod_sandbox_config(&p, 2, &f.ctx).unwrap();
        assert!(warnings.is_empty());
        let m = config.metadata.unwrap();
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.uid.as_str(),
                m.attempt
            ),
            ("web", "prod", UID, 2)
        );
        assert_eq!(config.hostname, "web");
        assert_eq!(
            config.log_directory,
            format!("/var/log/pods/prod_web_{UID}")
        );
        assert_eq!(config.labels["app"], "web");
        assert_eq!(config.labels["io.kubernetes.pod.uid"], UID);
        assert_eq!(
            config.port_mappings,
            [
                cri::PortMapping {
                    protocol: cri::Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: 8080,
                    host_ip: String::new(),
                },
                cri::PortMapping {
                    protocol: cri::Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 0,
                    host_ip: "127.0.0.1".into(),
                },
            ]
        );
        let linux = config.linux.unwrap();
        assert_eq!(
            linux.cgroup_parent,
            format!("/kubepods/besteffort/pod{UID}")
        );
        assert_eq!(linux.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
        let sc = linux.security_context.unwrap();
        assert!(sc.privileged);
        assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 1000 }));
        assert_eq!(sc.run_as_group, Some(cri::Int64Value { value: 2000 }));
        assert_eq!(sc.supplemental_groups, [3000, 4000]);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            cri::security_profile::ProfileType::RuntimeDefault as i32
        );
        let ns = sc.namespace_options.unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        // BestEffort: minimal shares, no quota, no memory limit.
        let r = linux.resources.unwrap();
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.cpu_period,
                r.memory_limit_in_bytes
            ),
            (2, 0, 100_000, 0)
        );
    }

    #[test]
    fn host_network_sandbox_has_no_hostname() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        spec(&mut p).host_network = Some(true);
        let (config, _) = pod_sandbox_config(&p, 0, &f.ctx).unwrap();
        assert_eq!(config.hostname, "");
        let ns = config
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    }

    #[test]
    fn namespace_modes() {
        use cri::NamespaceMode::{Container as C, Node, Pod as P};
        let mut p = pod();
        let ns = namespace_options(&p);
        assert_eq!((ns.network, ns.pid, ns.ipc), (P as i32, C as i32, P as i32));
        assert_eq!(ns.userns_options.unwrap().mode, Node as i32);
        spec(&mut p).share_process_namespace = Some(true);
        assert_eq!(namespace_options(&p).pid, P as i32);
        spec(&mut p).host_pid = Some(true);
        spec(&mut p).host_ipc = Some(true);
        spec(&mut p).host_network = Some(true);
        let ns = namespace_options(&p);
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (Node as i32, Node as i32, Node as i32)
        );
    }

    #[test]
    fn user_namespaces_are_refused() {
        let f = fixture(HOST_RESOLV);
        let mut p = pod();
        spec(&mut p).host_users = Some(false);
        let err = pod_sandbox_config(&p, 0, &f.ctx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod prod/web: a user namespace (spec.hostUsers: false) is not supported"
        );
    }

    #[test]
    fn sandbox_resources_aggregate_sidecars_and_overhead() {
        let q = |items: &[(&str, &str)]| {
            Some(
                items
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let mut p = pod();
        spec(&mut p).containers[0].resources = Some(ResourceRequirements {
            requests: q(&[("cpu", "500m")]),
            limits: q(&[("cpu", "1"), ("memory", "256Mi")]),
            ..Default::default()
        });
        spec(&mut p).init_containers = Some(vec![
            Container {
                name: "sidecar".into(),
                restart_policy: Some("Always".into()),
                resources: Some(ResourceRequirements {
                    requests: q(&[("cpu", "250m")]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Container {
                name: "init".into(),
                resources: Some(ResourceRequirements {
                    requests: q(&[("cpu", "2")]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        spec(&mut p).overhead = q(&[("cpu", "100m"), ("memory", "10Mi")]);
        let r = sandbox_resources(&p, &NodeContext::default());
        // max(500m + 250m, 2000m + 250m) = 2250m -> 2304 shares; limits 1 cpu, 256Mi.
        assert_eq!(r.cpu_shares, 2304);
        assert_eq!(r.cpu_quota, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 256 << 20);
        let o = overhead_resources(&p, &NodeContext::default());
        assert_eq!(
            (o.cpu_shares, o.cpu_quota, o.memory_limit_in_bytes),
            (102, 10_000, 10 << 20)
        );
        assert_eq!(
            overhead_resources(&pod(), &NodeContext::default()),
            cri::LinuxContainerResources::default()
        );
        // Pod-level resources win; their requests default to their limits.
        spec(&mut p).resources = Some(ResourceRequirements {
            limits: q(&[("cpu", "3"), ("memory", "1Gi")]),
            ..Default::default()
        });
        let r = sandbox_resources(&p, &NodeContext::default());
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (3072, 300_000, 1 << 30)
        );
    }
}
