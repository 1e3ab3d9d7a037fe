//! The resolved, defaulted configuration the rest of the kubelet consumes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;
use crate::eviction::{EvictionThreshold, Signal, ThresholdValue};
use crate::quantity::Quantity;
use crate::v1beta1;

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every accepted value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in the file format.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ConfigError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| ConfigError::InvalidEnum {
                        input: s.to_string(),
                        expected: $name::ALL.iter().map(|v| v.as_str()).collect(),
                    })
            }
        }
    };
}

string_enum! {
    /// How requests to the kubelet's server are authorized (`authorization.mode`).
    pub enum AuthorizationMode {
        /// Ask the API server with a SubjectAccessReview.
        Webhook => "Webhook",
        /// Allow every authenticated request.
        AlwaysAllow => "AlwaysAllow",
    }
}

string_enum! {
    /// The driver used to manipulate cgroups on the host (`cgroupDriver`).
    pub enum CgroupDriver {
        /// Write the cgroup filesystem directly.
        Cgroupfs => "cgroupfs",
        /// Ask systemd to manage cgroups as transient units.
        Systemd => "systemd",
    }
}

string_enum! {
    /// How the kubelet configures hairpin traffic (`hairpinMode`).
    pub enum HairpinMode {
        /// Make the container bridge promiscuous.
        PromiscuousBridge => "promiscuous-bridge",
        /// Set the hairpin flag on container veth interfaces.
        HairpinVeth => "hairpin-veth",
        /// Do nothing.
        None => "none",
    }
}

string_enum! {
    /// One entry of `enforceNodeAllocatable`.
    pub enum NodeAllocatableEnforcement {
        /// Enforce allocatable on the pods cgroup.
        Pods => "pods",
        /// Enforce `systemReserved` on `systemReservedCgroup`.
        SystemReserved => "system-reserved",
        /// Enforce only the compressible part (CPU) of `systemReserved`.
        SystemReservedCompressible => "system-reserved-compressible",
        /// Enforce `kubeReserved` on `kubeReservedCgroup`.
        KubeReserved => "kube-reserved",
        /// Enforce only the compressible part (CPU) of `kubeReserved`.
        KubeReservedCompressible => "kube-reserved-compressible",
        /// Enforce nothing; must be the only entry.
        None => "none",
    }
}

string_enum! {
    /// How containers may use the node's swap (`memorySwap.swapBehavior`).
    #[derive(Default)]
    pub enum SwapBehavior {
        /// No container uses swap (the default; an empty value means this too).
        #[default]
        NoSwap => "NoSwap",
        /// Burstable containers get swap in proportion to their memory request (cgroup v2).
        LimitedSwap => "LimitedSwap",
    }
}

string_enum! {
    /// The effect of a node taint.
    pub enum TaintEffect {
        /// Pods that do not tolerate the taint are not scheduled.
        NoSchedule => "NoSchedule",
        /// The scheduler avoids the node for pods that do not tolerate the taint.
        PreferNoSchedule => "PreferNoSchedule",
        /// Pods that do not tolerate the taint are evicted.
        NoExecute => "NoExecute",
    }
}

/// A taint the node registers with (`registerWithTaints`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    /// The taint key, a qualified name such as `node-role.kubernetes.io/edge`.
    pub key: String,
    /// The optional value, a label value.
    pub value: Option<String>,
    /// The effect.
    pub effect: TaintEffect,
}

/// How requests to the kubelet's server are authenticated (`authentication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// `x509.clientCAFile`: CA bundle for client certificates; `None` disables x509 auth.
    pub client_ca_file: Option<PathBuf>,
    /// `webhook.enabled`: bearer tokens checked with TokenReviews. Default `true`.
    pub webhook_enabled: bool,
    /// `webhook.cacheTTL`: how long token review results are cached. Default 2m.
    pub webhook_cache_ttl: Duration,
    /// `anonymous.enabled`: treat unauthenticated requests as `system:anonymous`.
    /// Default `false`.
    pub anonymous_enabled: bool,
}

/// How requests to the kubelet's server are authorized (`authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `mode`. Default [`AuthorizationMode::Webhook`].
    pub mode: AuthorizationMode,
    /// `webhook.cacheAuthorizedTTL`: cache time for allowed decisions. Default 5m.
    pub webhook_cache_authorized_ttl: Duration,
    /// `webhook.cacheUnauthorizedTTL`: cache time for denied decisions. Default 30s.
    pub webhook_cache_unauthorized_ttl: Duration,
}

/// A resolved `KubeletConfiguration`: every field has its value (defaults applied, relative
/// paths resolved) in a typed form.
///
/// [`Default`] gives the upstream v1beta1 defaults. Get one from a file with
/// [`crate::load`] or [`crate::ConfigLoader`]; print it with [`to_yaml`](Self::to_yaml).
/// Field docs name the file-format key and the default.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletConfiguration {
    /// `enableServer`: serve the kubelet API. Default `true`.
    pub enable_server: bool,
    /// `staticPodPath`: directory (or single file) of static pod manifests. Default none.
    pub static_pod_path: Option<PathBuf>,
    /// `podLogsDir`: root of pod log directories; must be absolute. Default `/var/log/pods`.
    pub pod_logs_dir: PathBuf,
    /// `syncFrequency`: maximum period between pod syncs. Default 1m.
    pub sync_frequency: Duration,
    /// `fileCheckFrequency`: how often `staticPodPath` is re-read. Default 20s.
    pub file_check_frequency: Duration,
    /// `httpCheckFrequency`: how often `staticPodURL` is re-fetched. Default 20s.
    pub http_check_frequency: Duration,
    /// `staticPodURL`: URL serving static pod manifests. Default none.
    pub static_pod_url: Option<String>,
    /// `staticPodURLHeader`: HTTP headers sent with `staticPodURL` requests. Default empty.
    pub static_pod_url_header: BTreeMap<String, Vec<String>>,
    /// `address`: IP the kubelet API listens on. Default `0.0.0.0`.
    pub address: IpAddr,
    /// `port`: kubelet API port. Default 10250.
    pub port: u16,
    /// `readOnlyPort`: unauthenticated read-only port; 0 disables. Default 0.
    pub read_only_port: u16,
    /// `tlsCertFile`: serving certificate. Default none (self-signed or bootstrap).
    pub tls_cert_file: Option<PathBuf>,
    /// `tlsPrivateKeyFile`: key for `tlsCertFile`. Default none.
    pub tls_private_key_file: Option<PathBuf>,
    /// `tlsCipherSuites`: allowed cipher suites (Go names). Default empty (library default).
    pub tls_cipher_suites: Vec<String>,
    /// `tlsMinVersion`: minimum TLS version (Go name, e.g. `VersionTLS12`). Default none.
    pub tls_min_version: Option<String>,
    /// `rotateCertificates`: rotate the client certificate via CSRs. Default `false`.
    pub rotate_certificates: bool,
    /// `serverTLSBootstrap`: request the serving certificate via CSRs. Default `false`.
    pub server_tls_bootstrap: bool,
    /// `authentication`.
    pub authentication: Authentication,
    /// `authorization`.
    pub authorization: Authorization,
    /// `registryPullQPS`: image pulls per second; 0 means unlimited. Default 5.
    pub registry_pull_qps: u32,
    /// `registryBurst`: burst of image pulls. Default 10.
    pub registry_burst: u32,
    /// `eventRecordQPS`: events created per second; 0 means unlimited. Default 50.
    pub event_record_qps: u32,
    /// `eventBurst`: burst of event creations. Default 100.
    pub event_burst: u32,
    /// `enableDebuggingHandlers`: logs, exec, attach, port-forward endpoints. Default `true`.
    pub enable_debugging_handlers: bool,
    /// `healthzPort`: localhost healthz port; 0 disables. Default 10248.
    pub healthz_port: u16,
    /// `healthzBindAddress`: healthz listen address. Default `127.0.0.1`.
    pub healthz_bind_address: IpAddr,
    /// `oomScoreAdj`: OOM score adjustment of the kubelet process. Default -999.
    pub oom_score_adj: i32,
    /// `clusterDomain`: DNS domain of the cluster, searched by containers. Default none.
    pub cluster_domain: Option<String>,
    /// `clusterDNS`: cluster DNS server IPs given to containers. Default empty.
    pub cluster_dns: Vec<IpAddr>,
    /// `nodeStatusUpdateFrequency`: how often node status is computed. Default 10s.
    pub node_status_update_frequency: Duration,
    /// `nodeStatusReportFrequency`: how often unchanged node status is posted. Default 5m,
    /// or `nodeStatusUpdateFrequency` when that is set explicitly.
    pub node_status_report_frequency: Duration,
    /// `nodeLeaseDurationSeconds`: duration set on the node Lease. Default 40.
    pub node_lease_duration_seconds: u32,
    /// `imageMinimumGCAge`: minimum age of an unused image before GC. Default 2m.
    pub image_minimum_gc_age: Duration,
    /// `imageMaximumGCAge`: unused images older than this are collected; zero disables.
    /// Default 0.
    pub image_maximum_gc_age: Duration,
    /// `imageGCHighThresholdPercent`: disk usage that always triggers image GC. Default 85.
    pub image_gc_high_threshold_percent: u8,
    /// `imageGCLowThresholdPercent`: disk usage image GC frees down to. Default 80.
    pub image_gc_low_threshold_percent: u8,
    /// `volumeStatsAggPeriod`: how often volume disk usage is computed. Default 1m.
    pub volume_stats_agg_period: Duration,
    /// `kubeletCgroups`: cgroup to isolate the kubelet in. Default none.
    pub kubelet_cgroups: Option<String>,
    /// `systemCgroups`: cgroup for non-kernel processes not in a container; requires
    /// `cgroupRoot`. Default none.
    pub system_cgroups: Option<String>,
    /// `cgroupRoot`: root cgroup for pods. Default none (the kubelet then uses `/` when
    /// `cgroupsPerQOS` is on).
    pub cgroup_root: Option<String>,
    /// `cgroupsPerQOS`: create the QoS cgroup hierarchy. Default `true`.
    pub cgroups_per_qos: bool,
    /// `cgroupDriver`. Default [`CgroupDriver::Cgroupfs`].
    pub cgroup_driver: CgroupDriver,
    /// `runtimeRequestTimeout`: timeout of runtime calls except long-running ones.
    /// Default 2m.
    pub runtime_request_timeout: Duration,
    /// `hairpinMode`. Default [`HairpinMode::PromiscuousBridge`].
    pub hairpin_mode: HairpinMode,
    /// `maxPods`: maximum pods on this node. Default 110.
    pub max_pods: u32,
    /// `podCIDR`: pod IP range, used in standalone mode only. Default none.
    pub pod_cidr: Option<String>,
    /// `podPidsLimit`: maximum PIDs per pod; -1 means the node allocatable limit.
    /// Default -1.
    pub pod_pids_limit: i64,
    /// `resolvConf`: resolver file the container DNS config is based on; `None` (an empty
    /// string in the file) disables DNS lookups. Default `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// `cpuCFSQuota`: enforce CPU limits with CFS quota. Default `true`.
    pub cpu_cfs_quota: bool,
    /// `cpuCFSQuotaPeriod`: the CFS period of containers with a CPU limit; another value than
    /// the default needs the `CustomCPUCFSQuotaPeriod` feature gate. Default 100ms.
    pub cpu_cfs_quota_period: Duration,
    /// `memorySwap.swapBehavior`. Default [`SwapBehavior::NoSwap`].
    pub swap_behavior: SwapBehavior,
    /// `crashLoopBackOff.maxContainerRestartPeriod`: the longest crash-loop back-off
    /// (between 1s and 5m; the `KubeletCrashLoopBackOffMax` gate). Default none (5m).
    pub max_container_restart_period: Option<Duration>,
    /// `singleProcessOOMKill`: when false on cgroup v2, an OOM kill takes the container's
    /// whole cgroup (`memory.oom.group`). Default none: true on cgroup v1, false on v2.
    pub single_process_oom_kill: Option<bool>,
    /// `nodeStatusMaxImages`: images reported in node status; -1 means no cap.
    /// Default 50.
    pub node_status_max_images: i32,
    /// `maxOpenFiles`: open file limit of the kubelet process. Default 1000000.
    pub max_open_files: u64,
    /// `kubeAPIQPS`: API server requests per second. Default 50.
    pub kube_api_qps: u32,
    /// `kubeAPIBurst`: API server request burst. Default 100.
    pub kube_api_burst: u32,
    /// `serializeImagePulls`: pull one image at a time. Default `true`, or `false` when
    /// `maxParallelImagePulls` is 2 or more.
    pub serialize_image_pulls: bool,
    /// `maxParallelImagePulls`: cap on parallel pulls; `None` means no cap. Default none.
    pub max_parallel_image_pulls: Option<u32>,
    /// `evictionHard`: hard eviction thresholds. Default `memory.available<100Mi`,
    /// `nodefs.available<10%`, `nodefs.inodesFree<5%`, `imagefs.available<15%`,
    /// `imagefs.inodesFree<5%`.
    pub eviction_hard: BTreeMap<Signal, ThresholdValue>,
    /// `evictionSoft`: soft eviction thresholds. Default empty.
    pub eviction_soft: BTreeMap<Signal, ThresholdValue>,
    /// `evictionSoftGracePeriod`: grace period of each soft threshold. Default empty.
    pub eviction_soft_grace_period: BTreeMap<Signal, Duration>,
    /// `evictionPressureTransitionPeriod`: wait before leaving a pressure condition.
    /// Default 5m.
    pub eviction_pressure_transition_period: Duration,
    /// `evictionMaxPodGracePeriod`: cap (seconds) on pod grace periods in soft evictions.
    /// Default 0.
    pub eviction_max_pod_grace_period: i32,
    /// `evictionMinimumReclaim`: minimum amount reclaimed per signal. Default empty.
    pub eviction_minimum_reclaim: BTreeMap<Signal, ThresholdValue>,
    /// `mergeDefaultEvictionSettings`: missing `evictionHard` signals inherit their
    /// defaults (already applied to `eviction_hard`). Default `false`.
    pub merge_default_eviction_settings: bool,
    /// `podsPerCore`: maximum pods per core; 0 means no limit. Default 0.
    pub pods_per_core: u32,
    /// `enableControllerAttachDetach`: leave volume attach/detach to the controller.
    /// Default `true`.
    pub enable_controller_attach_detach: bool,
    /// `protectKernelDefaults`: fail instead of tuning kernel flags. Default `false`.
    pub protect_kernel_defaults: bool,
    /// `featureGates`: feature gate overrides. Default empty.
    pub feature_gates: BTreeMap<String, bool>,
    /// `failSwapOn`: refuse to start with swap enabled. Default `true`.
    pub fail_swap_on: bool,
    /// `containerLogMaxSize`: size at which a container log is rotated. Default `10Mi`.
    pub container_log_max_size: Quantity,
    /// `containerLogMaxFiles`: rotated log files kept per container. Default 5.
    pub container_log_max_files: u32,
    /// `containerLogMaxWorkers`: concurrent log rotation workers. Default 1.
    pub container_log_max_workers: u32,
    /// `containerLogMonitorInterval`: how often logs are checked for rotation. Default 10s.
    pub container_log_monitor_interval: Duration,
    /// `streamingConnectionIdleTimeout`: an exec, attach or port-forward session with no
    /// traffic for this long is closed. Default 4h.
    pub streaming_connection_idle_timeout: Duration,
    /// `enableSystemLogHandler`: serve the node's `/var/log` at `/logs/`. Default `true`.
    pub enable_system_log_handler: bool,
    /// `enableSystemLogQuery`: answer `/logs/?query=…` (node log query; needs the
    /// `NodeLogQuery` feature gate and `enableSystemLogHandler`). Default `false`.
    pub enable_system_log_query: bool,
    /// `systemReserved`: resources reserved for system daemons (`cpu`, `memory`,
    /// `ephemeral-storage`, `pid`). Default empty.
    pub system_reserved: BTreeMap<String, Quantity>,
    /// `kubeReserved`: resources reserved for Kubernetes daemons. Default empty.
    pub kube_reserved: BTreeMap<String, Quantity>,
    /// `systemReservedCgroup`: cgroup enforcing `systemReserved`. Default none.
    pub system_reserved_cgroup: Option<String>,
    /// `kubeReservedCgroup`: cgroup enforcing `kubeReserved`. Default none.
    pub kube_reserved_cgroup: Option<String>,
    /// `enforceNodeAllocatable`. Default `[pods]`.
    pub enforce_node_allocatable: Vec<NodeAllocatableEnforcement>,
    /// `allowedUnsafeSysctls`: unsafe sysctls (or `prefix*` patterns) pods may set.
    /// Default empty.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// `volumePluginDir`: directory searched for flexvolume plugins.
    /// Default `/usr/libexec/kubernetes/kubelet-plugins/volume/exec/`.
    pub volume_plugin_dir: PathBuf,
    /// `providerID`: cloud provider ID of this node. Default none.
    pub provider_id: Option<String>,
    /// `kernelMemcgNotification`: wake the eviction manager when memory usage crosses a
    /// threshold (memory cgroup events on v1, a fast poll on v2) instead of only polling every
    /// 10 s. Default `true` here (upstream: `false`, and v1 only).
    pub kernel_memcg_notification: bool,
    /// `memoryThrottlingFactor`: with `MemoryQoS`, where between its memory request and
    /// limit a container's `memory.high` sits. Default `0.9`.
    pub memory_throttling_factor: f64,
    /// `shutdownGracePeriod`: total delay of node shutdown for pod termination; zero
    /// disables graceful shutdown. Default 0.
    pub shutdown_grace_period: Duration,
    /// `shutdownGracePeriodCriticalPods`: part of `shutdownGracePeriod` reserved for
    /// critical pods. Default 0.
    pub shutdown_grace_period_critical_pods: Duration,
    /// `seccompDefault`: use `RuntimeDefault` as the default seccomp profile.
    /// Default `false`.
    pub seccomp_default: bool,
    /// `registerWithTaints`: taints put on the node when it registers. Default empty.
    pub register_with_taints: Vec<Taint>,
    /// `registerNode`: register the node with the API server. Default `true`.
    pub register_node: bool,
    /// `localStorageCapacityIsolation`: ephemeral storage requests, limits and
    /// `emptyDir.sizeLimit`. Default `true`.
    pub local_storage_capacity_isolation: bool,
    /// `containerRuntimeEndpoint`: CRI runtime endpoint.
    /// Default `unix:///run/containerd/containerd.sock`.
    pub container_runtime_endpoint: String,
    /// `imageServiceEndpoint`: CRI image service endpoint; `None` means the runtime
    /// endpoint. Default none.
    pub image_service_endpoint: Option<String>,
    /// `failCgroupV1`: refuse to start on cgroup v1 hosts. Default `true`.
    pub fail_cgroup_v1: bool,
    /// Upstream fields this crate does not interpret, kept verbatim
    /// (see [`v1beta1::UNINTERPRETED_FIELDS`]).
    pub uninterpreted: BTreeMap<String, serde_json::Value>,
}

impl Default for KubeletConfiguration {
    /// The upstream v1beta1 defaults.
    fn default() -> Self {
        let mut wire = v1beta1::KubeletConfiguration::default();
        crate::defaults::set_defaults(&mut wire);
        let mut ignored = Vec::new();
        crate::resolve::from_wire(&wire, &mut ignored)
    }
}

impl KubeletConfiguration {
    /// The image service endpoint to use: `imageServiceEndpoint`, or the runtime endpoint.
    pub fn effective_image_service_endpoint(&self) -> &str {
        self.image_service_endpoint
            .as_deref()
            .unwrap_or(&self.container_runtime_endpoint)
    }

    /// Whether a feature gate is on: its `featureGates` entry, else its v1.36 default
    /// ([`crate::features::default_enabled`]).
    pub fn feature_enabled(&self, name: &str) -> bool {
        self.feature_gate(name)
            .unwrap_or_else(|| crate::features::default_enabled(name))
    }

    /// The explicit setting of a feature gate in `featureGates`, if any.
    pub fn feature_gate(&self, name: &str) -> Option<bool> {
        self.feature_gates.get(name).copied()
    }

    /// The eviction thresholds from `evictionHard`, `evictionSoft`,
    /// `evictionSoftGracePeriod` and `evictionMinimumReclaim` (upstream `ParseThresholdConfig`,
    /// without the allocatable thresholds). `0%` and `100%` entries, which disable a signal,
    /// are left out. Fails only if the maps break the rules [`validate`](Self::validate)
    /// checks.
    pub fn eviction_thresholds(&self) -> Result<Vec<EvictionThreshold>, ConfigError> {
        crate::eviction::build_thresholds(
            &self.eviction_hard,
            &self.eviction_soft,
            &self.eviction_soft_grace_period,
            &self.eviction_minimum_reclaim,
        )
    }

    /// The file form of this configuration, with every field set.
    pub fn to_wire(&self) -> v1beta1::KubeletConfiguration {
        crate::resolve::to_wire(self)
    }

    /// The configuration as a JSON object with `apiVersion` and `kind`, loadable again.
    pub fn to_json_value(&self) -> serde_json::Value {
        self.to_wire().to_value()
    }

    /// The configuration as pretty-printed JSON, `apiVersion` and `kind` first, loadable
    /// again.
    pub fn to_json(&self) -> String {
        let value = self.to_json_value();
        serde_json::to_string_pretty(&TypeMetaFirst(&value)).unwrap_or_default()
    }

    /// The configuration as YAML, `apiVersion` and `kind` first, loadable again (the
    /// effective configuration, like the kubelet's `/configz`).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        let value = self.to_json_value();
        serde_saphyr::to_string(&TypeMetaFirst(&value)).map_err(|e| ConfigError::Syntax {
            path: PathBuf::from("<output>"),
            source: Box::new(e),
        })
    }
}

/// Serializes a JSON object with `apiVersion` and `kind` ahead of the other (sorted) keys.
struct TypeMetaFirst<'a>(&'a serde_json::Value);

impl serde::Serialize for TypeMetaFirst<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let serde_json::Value::Object(map) = self.0 else {
            return self.0.serialize(serializer);
        };
        const FIRST: [&str; 2] = ["apiVersion", "kind"];
        let head = FIRST.iter().filter_map(|k| map.get_key_value(*k));
        let tail = map.iter().filter(|(k, _)| !FIRST.contains(&k.as_str()));
        serializer.collect_map(head.chain(tail))
    }
}
