//! The wire form of `kubelet.config.k8s.io/v1beta1` `KubeletConfiguration`: field names and
//! value encodings exactly as in upstream files, every field optional.
//!
//! `None` means "not set in this document", which is what defaulting and drop-in merging need
//! to tell apart from an explicit zero. Most users want the resolved
//! [`crate::KubeletConfiguration`] instead; this module is for tools that read or write partial
//! documents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::quantity::Quantity;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The only accepted `kind`.
pub const KIND: &str = "KubeletConfiguration";

/// Upstream v1beta1 fields this crate accepts but does not interpret. They are kept verbatim
/// (and written back by `to_yaml`) so upstream files, such as the ones kubeadm writes, load
/// without "unknown field" errors; any other unknown name is rejected.
pub const UNINTERPRETED_FIELDS: &[&str] = &[
    "tlsCurvePreferences",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "enableContentionProfiling",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "runOnce",
    "contentType",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "configMapAndSecretChangeDetectionStrategy",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "logging",
    "shutdownGracePeriodByPodPriority",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "memoryReservationPolicy",
    "tracing",
    "userNamespaces",
];

/// `KubeletConfiguration` as written in a file. Every field is optional; see the module docs.
///
/// Field documentation gives the upstream name; the meaning and default of each field are
/// documented on the resolved [`crate::KubeletConfiguration`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletConfiguration {
    /// `apiVersion`, must be [`API_VERSION`].
    pub api_version: Option<String>,
    /// `kind`, must be [`KIND`].
    pub kind: Option<String>,

    /// `enableServer`.
    pub enable_server: Option<bool>,
    /// `staticPodPath` (relative paths resolve against the file's directory).
    pub static_pod_path: Option<String>,
    /// `podLogsDir` (relative paths resolve against the file's directory).
    pub pod_logs_dir: Option<String>,
    /// `syncFrequency`.
    pub sync_frequency: Option<Duration>,
    /// `fileCheckFrequency`.
    pub file_check_frequency: Option<Duration>,
    /// `httpCheckFrequency`.
    pub http_check_frequency: Option<Duration>,
    /// `staticPodURL`.
    #[serde(rename = "staticPodURL")]
    pub static_pod_url: Option<String>,
    /// `staticPodURLHeader`.
    #[serde(rename = "staticPodURLHeader")]
    pub static_pod_url_header: Option<BTreeMap<String, Vec<String>>>,
    /// `address`.
    pub address: Option<String>,
    /// `port`.
    pub port: Option<i32>,
    /// `readOnlyPort`.
    pub read_only_port: Option<i32>,
    /// `tlsCertFile` (relative paths resolve against the file's directory).
    pub tls_cert_file: Option<String>,
    /// `tlsPrivateKeyFile` (relative paths resolve against the file's directory).
    pub tls_private_key_file: Option<String>,
    /// `tlsCipherSuites`.
    pub tls_cipher_suites: Option<Vec<String>>,
    /// `tlsMinVersion`.
    pub tls_min_version: Option<String>,
    /// `rotateCertificates`.
    pub rotate_certificates: Option<bool>,
    /// `serverTLSBootstrap`.
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: Option<bool>,
    /// `authentication`.
    pub authentication: Option<KubeletAuthentication>,
    /// `authorization`.
    pub authorization: Option<KubeletAuthorization>,
    /// `registryPullQPS`.
    #[serde(rename = "registryPullQPS")]
    pub registry_pull_qps: Option<i32>,
    /// `registryBurst`.
    pub registry_burst: Option<i32>,
    /// `eventRecordQPS`.
    #[serde(rename = "eventRecordQPS")]
    pub event_record_qps: Option<i32>,
    /// `eventBurst`.
    pub event_burst: Option<i32>,
    /// `enableDebuggingHandlers`.
    pub enable_debugging_handlers: Option<bool>,
    /// `healthzPort`.
    pub healthz_port: Option<i32>,
    /// `healthzBindAddress`.
    pub healthz_bind_address: Option<String>,
    /// `oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `clusterDomain`.
    pub cluster_domain: Option<String>,
    /// `clusterDNS`.
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    /// `nodeStatusUpdateFrequency`.
    pub node_status_update_frequency: Option<Duration>,
    /// `nodeStatusReportFrequency`.
    pub node_status_report_frequency: Option<Duration>,
    /// `nodeLeaseDurationSeconds`.
    pub node_lease_duration_seconds: Option<i32>,
    /// `imageMinimumGCAge`.
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: Option<Duration>,
    /// `imageMaximumGCAge`.
    #[serde(rename = "imageMaximumGCAge")]
    pub image_maximum_gc_age: Option<Duration>,
    /// `imageGCHighThresholdPercent`.
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<i32>,
    /// `imageGCLowThresholdPercent`.
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<i32>,
    /// `volumeStatsAggPeriod`.
    pub volume_stats_agg_period: Option<Duration>,
    /// `kubeletCgroups`.
    pub kubelet_cgroups: Option<String>,
    /// `systemCgroups`.
    pub system_cgroups: Option<String>,
    /// `cgroupRoot`.
    pub cgroup_root: Option<String>,
    /// `cgroupsPerQOS`.
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: Option<bool>,
    /// `cgroupDriver`.
    pub cgroup_driver: Option<String>,
    /// `runtimeRequestTimeout`.
    pub runtime_request_timeout: Option<Duration>,
    /// `hairpinMode`.
    pub hairpin_mode: Option<String>,
    /// `maxPods`.
    pub max_pods: Option<i32>,
    /// `podCIDR`.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// `podPidsLimit`.
    pub pod_pids_limit: Option<i64>,
    /// `resolvConf` (relative paths resolve against the file's directory).
    pub resolv_conf: Option<String>,
    /// `cpuCFSQuota`.
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: Option<bool>,
    /// `cpuCFSQuotaPeriod`.
    #[serde(rename = "cpuCFSQuotaPeriod")]
    pub cpu_cfs_quota_period: Option<Duration>,
    /// `memorySwap`.
    pub memory_swap: Option<MemorySwapConfiguration>,
    /// `crashLoopBackOff`.
    pub crash_loop_back_off: Option<CrashLoopBackOffConfig>,
    /// `singleProcessOOMKill`.
    #[serde(rename = "singleProcessOOMKill")]
    pub single_process_oom_kill: Option<bool>,
    /// `nodeStatusMaxImages`.
    pub node_status_max_images: Option<i32>,
    /// `maxOpenFiles`.
    pub max_open_files: Option<i64>,
    /// `kubeAPIQPS`.
    #[serde(rename = "kubeAPIQPS")]
    pub kube_api_qps: Option<i32>,
    /// `kubeAPIBurst`.
    #[serde(rename = "kubeAPIBurst")]
    pub kube_api_burst: Option<i32>,
    /// `serializeImagePulls`.
    pub serialize_image_pulls: Option<bool>,
    /// `maxParallelImagePulls`.
    pub max_parallel_image_pulls: Option<i32>,
    /// `evictionHard`.
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// `evictionSoft`.
    pub eviction_soft: Option<BTreeMap<String, String>>,
    /// `evictionSoftGracePeriod`.
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    /// `evictionPressureTransitionPeriod`.
    pub eviction_pressure_transition_period: Option<Duration>,
    /// `evictionMaxPodGracePeriod`.
    pub eviction_max_pod_grace_period: Option<i32>,
    /// `evictionMinimumReclaim`.
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    /// `mergeDefaultEvictionSettings`.
    pub merge_default_eviction_settings: Option<bool>,
    /// `podsPerCore`.
    pub pods_per_core: Option<i32>,
    /// `enableControllerAttachDetach`.
    pub enable_controller_attach_detach: Option<bool>,
    /// `protectKernelDefaults`.
    pub protect_kernel_defaults: Option<bool>,
    /// `featureGates`.
    pub feature_gates: Option<BTreeMap<String, bool>>,
    /// `failSwapOn`.
    pub fail_swap_on: Option<bool>,
    /// `containerLogMaxSize`.
    pub container_log_max_size: Option<String>,
    /// `containerLogMaxFiles`.
    pub container_log_max_files: Option<i32>,
    /// `containerLogMaxWorkers`.
    pub container_log_max_workers: Option<i32>,
    /// `containerLogMonitorInterval`.
    pub container_log_monitor_interval: Option<Duration>,
    /// `streamingConnectionIdleTimeout`.
    pub streaming_connection_idle_timeout: Option<Duration>,
    /// `enableSystemLogHandler`.
    pub enable_system_log_handler: Option<bool>,
    /// `enableSystemLogQuery`.
    pub enable_system_log_query: Option<bool>,
    /// `systemReserved`.
    pub system_reserved: Option<BTreeMap<String, Quantity>>,
    /// `kubeReserved`.
    pub kube_reserved: Option<BTreeMap<String, Quantity>>,
    /// `systemReservedCgroup`.
    pub system_reserved_cgroup: Option<String>,
    /// `kubeReservedCgroup`.
    pub kube_reserved_cgroup: Option<String>,
    /// `enforceNodeAllocatable`.
    pub enforce_node_allocatable: Option<Vec<String>>,
    /// `allowedUnsafeSysctls`.
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    /// `volumePluginDir` (relative paths resolve against the file's directory).
    pub volume_plugin_dir: Option<String>,
    /// `providerID`.
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    /// `kernelMemcgNotification`.
    pub kernel_memcg_notification: Option<bool>,
    /// `memoryThrottlingFactor`.
    pub memory_throttling_factor: Option<f64>,
    /// `shutdownGracePeriod`.
    pub shutdown_grace_period: Option<Duration>,
    /// `shutdownGracePeriodCriticalPods`.
    pub shutdown_grace_period_critical_pods: Option<Duration>,
    /// `seccompDefault`.
    pub seccomp_default: Option<bool>,
    /// `registerWithTaints`.
    pub register_with_taints: Option<Vec<Taint>>,
    /// `registerNode`.
    pub register_node: Option<bool>,
    /// `localStorageCapacityIsolation`.
    pub local_storage_capacity_isolation: Option<bool>,
    /// `containerRuntimeEndpoint`.
    pub container_runtime_endpoint: Option<String>,
    /// `imageServiceEndpoint`.
    pub image_service_endpoint: Option<String>,
    /// `failCgroupV1`.
    #[serde(rename = "failCgroupV1")]
    pub fail_cgroup_v1: Option<bool>,

    /// The [`UNINTERPRETED_FIELDS`] present in the document, kept verbatim.
    #[serde(skip)]
    pub uninterpreted: BTreeMap<String, serde_json::Value>,
}

/// `memorySwap`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MemorySwapConfiguration {
    /// `swapBehavior`: `NoSwap` (or empty) or `LimitedSwap`.
    pub swap_behavior: Option<String>,
}

/// `crashLoopBackOff`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CrashLoopBackOffConfig {
    /// `maxContainerRestartPeriod`.
    pub max_container_restart_period: Option<Duration>,
}

/// One entry of `registerWithTaints` (the fields of a core/v1 `Taint`).
///
/// Declared here rather than taken from `k8s-openapi` so that this crate builds without a
/// Kubernetes version feature; see [`crate::Taint`] for the resolved form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Taint {
    /// `key`.
    pub key: String,
    /// `value`.
    pub value: Option<String>,
    /// `effect`: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// `timeAdded`; must not be set in a kubelet configuration.
    pub time_added: Option<String>,
}

/// `authentication`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletAuthentication {
    /// `x509`.
    pub x509: Option<KubeletX509Authentication>,
    /// `webhook`.
    pub webhook: Option<KubeletWebhookAuthentication>,
    /// `anonymous`.
    pub anonymous: Option<KubeletAnonymousAuthentication>,
}

/// `authentication.x509`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletX509Authentication {
    /// `clientCAFile` (relative paths resolve against the file's directory).
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<String>,
}

/// `authentication.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletWebhookAuthentication {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `cacheTTL`.
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: Option<Duration>,
}

/// `authentication.anonymous`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletAnonymousAuthentication {
    /// `enabled`.
    pub enabled: Option<bool>,
}

/// `authorization`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletAuthorization {
    /// `mode`: `Webhook` or `AlwaysAllow`.
    pub mode: Option<String>,
    /// `webhook`.
    pub webhook: Option<KubeletWebhookAuthorization>,
}

/// `authorization.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletWebhookAuthorization {
    /// `cacheAuthorizedTTL`.
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Option<Duration>,
    /// `cacheUnauthorizedTTL`.
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Option<Duration>,
}

impl KubeletConfiguration {
    /// Serializes to a JSON object: unset fields are omitted, [`UNINTERPRETED_FIELDS`] are
    /// included, and `apiVersion`/`kind` are always present.
    pub fn to_value(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        strip_nulls(&mut value);
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("apiVersion".into(), API_VERSION.into());
            map.insert("kind".into(), KIND.into());
            for (k, v) in &self.uninterpreted {
                map.insert(k.clone(), v.clone());
            }
        }
        value
    }
}

/// Removes `null` members from objects, recursively (not from arrays).
pub(crate) fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for v in map.values_mut() {
                strip_nulls(v);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                strip_nulls(v);
            }
        }
        _ => {}
    }
}
