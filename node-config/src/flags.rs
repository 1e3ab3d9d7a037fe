//! Command-line flag overrides: the upstream kubelet flags that set configuration fields, as a
//! typed struct, plus parsers for the flag value syntaxes.
//!
//! Flags take precedence over the config file and drop-ins, like upstream's
//! `kubeletConfigFlagPrecedence`: a set flag replaces the field (map-valued flags replace the
//! whole map), except `--feature-gates`, whose entries are merged over the file's gates.
//! Relative paths given on the command line are left as they are (relative to the working
//! directory), as upstream does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;

use crate::duration::Duration;
use crate::error::ConfigError;
use crate::quantity::Quantity;
use crate::types::{
    AuthorizationMode, CgroupDriver, HairpinMode, NodeAllocatableEnforcement, Taint, TaintEffect,
};
use crate::v1beta1::{
    self, KubeletAnonymousAuthentication, KubeletAuthentication, KubeletAuthorization,
    KubeletWebhookAuthentication, KubeletWebhookAuthorization, KubeletX509Authentication,
};

/// Values given on the command line for configuration fields; `None` means the flag was not
/// given. Each field names its upstream flag.
///
/// ```
/// use node_config::FlagOverrides;
/// let flags = FlagOverrides {
///     pod_manifest_path: Some("/etc/kubernetes/manifests".into()),
///     max_pods: Some(50),
///     ..Default::default()
/// };
/// assert!(!flags.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagOverrides {
    /// `--pod-manifest-path` → `staticPodPath`.
    pub pod_manifest_path: Option<PathBuf>,
    /// `--manifest-url` → `staticPodURL`.
    pub manifest_url: Option<String>,
    /// `--manifest-url-header` → `staticPodURLHeader`.
    pub manifest_url_header: Option<BTreeMap<String, Vec<String>>>,
    /// `--sync-frequency` → `syncFrequency`.
    pub sync_frequency: Option<Duration>,
    /// `--file-check-frequency` → `fileCheckFrequency`.
    pub file_check_frequency: Option<Duration>,
    /// `--http-check-frequency` → `httpCheckFrequency`.
    pub http_check_frequency: Option<Duration>,
    /// `--address` → `address`.
    pub address: Option<IpAddr>,
    /// `--port` → `port`.
    pub port: Option<u16>,
    /// `--read-only-port` → `readOnlyPort`.
    pub read_only_port: Option<u16>,
    /// `--healthz-port` → `healthzPort`.
    pub healthz_port: Option<u16>,
    /// `--healthz-bind-address` → `healthzBindAddress`.
    pub healthz_bind_address: Option<IpAddr>,
    /// `--tls-cert-file` → `tlsCertFile`.
    pub tls_cert_file: Option<PathBuf>,
    /// `--tls-private-key-file` → `tlsPrivateKeyFile`.
    pub tls_private_key_file: Option<PathBuf>,
    /// `--rotate-certificates` → `rotateCertificates`.
    pub rotate_certificates: Option<bool>,
    /// `--anonymous-auth` → `authentication.anonymous.enabled`.
    pub anonymous_auth: Option<bool>,
    /// `--authentication-token-webhook` → `authentication.webhook.enabled`.
    pub authentication_token_webhook: Option<bool>,
    /// `--authentication-token-webhook-cache-ttl` → `authentication.webhook.cacheTTL`.
    pub authentication_token_webhook_cache_ttl: Option<Duration>,
    /// `--client-ca-file` → `authentication.x509.clientCAFile`.
    pub client_ca_file: Option<PathBuf>,
    /// `--authorization-mode` → `authorization.mode`.
    pub authorization_mode: Option<AuthorizationMode>,
    /// `--authorization-webhook-cache-authorized-ttl` →
    /// `authorization.webhook.cacheAuthorizedTTL`.
    pub authorization_webhook_cache_authorized_ttl: Option<Duration>,
    /// `--authorization-webhook-cache-unauthorized-ttl` →
    /// `authorization.webhook.cacheUnauthorizedTTL`.
    pub authorization_webhook_cache_unauthorized_ttl: Option<Duration>,
    /// `--registry-qps` → `registryPullQPS`.
    pub registry_qps: Option<u32>,
    /// `--registry-burst` → `registryBurst`.
    pub registry_burst: Option<u32>,
    /// `--event-qps` → `eventRecordQPS`.
    pub event_qps: Option<u32>,
    /// `--event-burst` → `eventBurst`.
    pub event_burst: Option<u32>,
    /// `--cluster-domain` → `clusterDomain`.
    pub cluster_domain: Option<String>,
    /// `--cluster-dns` → `clusterDNS`.
    pub cluster_dns: Option<Vec<IpAddr>>,
    /// `--node-status-update-frequency` → `nodeStatusUpdateFrequency`.
    pub node_status_update_frequency: Option<Duration>,
    /// `--minimum-image-gc-age` → `imageMinimumGCAge`.
    pub minimum_image_gc_age: Option<Duration>,
    /// `--image-gc-high-threshold` → `imageGCHighThresholdPercent`.
    pub image_gc_high_threshold: Option<u8>,
    /// `--image-gc-low-threshold` → `imageGCLowThresholdPercent`.
    pub image_gc_low_threshold: Option<u8>,
    /// `--cgroup-root` → `cgroupRoot`.
    pub cgroup_root: Option<String>,
    /// `--cgroups-per-qos` → `cgroupsPerQOS`.
    pub cgroups_per_qos: Option<bool>,
    /// `--cgroup-driver` → `cgroupDriver`.
    pub cgroup_driver: Option<CgroupDriver>,
    /// `--kubelet-cgroups` → `kubeletCgroups`.
    pub kubelet_cgroups: Option<String>,
    /// `--system-cgroups` → `systemCgroups`.
    pub system_cgroups: Option<String>,
    /// `--runtime-request-timeout` → `runtimeRequestTimeout`.
    pub runtime_request_timeout: Option<Duration>,
    /// `--hairpin-mode` → `hairpinMode`.
    pub hairpin_mode: Option<HairpinMode>,
    /// `--max-pods` → `maxPods`.
    pub max_pods: Option<u32>,
    /// `--pod-cidr` → `podCIDR`.
    pub pod_cidr: Option<String>,
    /// `--pod-max-pids` → `podPidsLimit`.
    pub pod_max_pids: Option<i64>,
    /// `--resolv-conf` → `resolvConf` (an empty string disables DNS lookups).
    pub resolv_conf: Option<String>,
    /// `--serialize-image-pulls` → `serializeImagePulls`.
    pub serialize_image_pulls: Option<bool>,
    /// `--max-parallel-image-pulls` → `maxParallelImagePulls`.
    pub max_parallel_image_pulls: Option<u32>,
    /// `--eviction-hard` → `evictionHard` (see
    /// [`parse_threshold_flag`](crate::eviction::parse_threshold_flag)).
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// `--eviction-soft` → `evictionSoft`.
    pub eviction_soft: Option<BTreeMap<String, String>>,
    /// `--eviction-soft-grace-period` → `evictionSoftGracePeriod` (see [`parse_map_flag`]).
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    /// `--eviction-pressure-transition-period` → `evictionPressureTransitionPeriod`.
    pub eviction_pressure_transition_period: Option<Duration>,
    /// `--eviction-max-pod-grace-period` → `evictionMaxPodGracePeriod`.
    pub eviction_max_pod_grace_period: Option<i32>,
    /// `--eviction-minimum-reclaim` → `evictionMinimumReclaim`.
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    /// `--pods-per-core` → `podsPerCore`.
    pub pods_per_core: Option<u32>,
    /// `--feature-gates` → `featureGates`, merged over the file's gates (see
    /// [`parse_feature_gates_flag`]).
    pub feature_gates: Option<BTreeMap<String, bool>>,
    /// `--fail-swap-on` → `failSwapOn`.
    pub fail_swap_on: Option<bool>,
    /// `--container-log-max-size` → `containerLogMaxSize`.
    pub container_log_max_size: Option<Quantity>,
    /// `--container-log-max-files` → `containerLogMaxFiles`.
    pub container_log_max_files: Option<u32>,
    /// `--system-reserved` → `systemReserved`.
    pub system_reserved: Option<BTreeMap<String, Quantity>>,
    /// `--kube-reserved` → `kubeReserved`.
    pub kube_reserved: Option<BTreeMap<String, Quantity>>,
    /// `--system-reserved-cgroup` → `systemReservedCgroup`.
    pub system_reserved_cgroup: Option<String>,
    /// `--kube-reserved-cgroup` → `kubeReservedCgroup`.
    pub kube_reserved_cgroup: Option<String>,
    /// `--enforce-node-allocatable` → `enforceNodeAllocatable`.
    pub enforce_node_allocatable: Option<Vec<NodeAllocatableEnforcement>>,
    /// `--volume-plugin-dir` → `volumePluginDir`.
    pub volume_plugin_dir: Option<PathBuf>,
    /// `--provider-id` → `providerID`.
    pub provider_id: Option<String>,
    /// `--register-node` → `registerNode`.
    pub register_node: Option<bool>,
    /// `--register-with-taints` → `registerWithTaints` (see [`parse_taints_flag`]).
    pub register_with_taints: Option<Vec<Taint>>,
    /// `--container-runtime-endpoint` → `containerRuntimeEndpoint`.
    pub container_runtime_endpoint: Option<String>,
    /// `--image-service-endpoint` → `imageServiceEndpoint`.
    pub image_service_endpoint: Option<String>,
    /// `--kube-api-qps` → `kubeAPIQPS`.
    pub kube_api_qps: Option<u32>,
    /// `--kube-api-burst` → `kubeAPIBurst`.
    pub kube_api_burst: Option<u32>,
    /// `--node-status-max-images` → `nodeStatusMaxImages`.
    pub node_status_max_images: Option<i32>,
    /// `--max-open-files` → `maxOpenFiles`.
    pub max_open_files: Option<u64>,
    /// `--oom-score-adj` → `oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `--cpu-cfs-quota` → `cpuCFSQuota`.
    pub cpu_cfs_quota: Option<bool>,
    /// `--protect-kernel-defaults` → `protectKernelDefaults`.
    pub protect_kernel_defaults: Option<bool>,
    /// `--enable-controller-attach-detach` → `enableControllerAttachDetach`.
    pub enable_controller_attach_detach: Option<bool>,
    /// `--enable-debugging-handlers` → `enableDebuggingHandlers`.
    pub enable_debugging_handlers: Option<bool>,
    /// `--enable-server` → `enableServer`.
    pub enable_server: Option<bool>,
    /// `--local-storage-capacity-isolation` → `localStorageCapacityIsolation`.
    pub local_storage_capacity_isolation: Option<bool>,
    /// `--allowed-unsafe-sysctls` → `allowedUnsafeSysctls`.
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    /// `--tls-cipher-suites` → `tlsCipherSuites`.
    pub tls_cipher_suites: Option<Vec<String>>,
    /// `--tls-min-version` → `tlsMinVersion`.
    pub tls_min_version: Option<String>,
    /// `--seccomp-default` → `seccompDefault`.
    pub seccomp_default: Option<bool>,
}

/// Map-valued fields, which a flag replaces wholesale instead of merging key by key.
const REPLACED_MAPS: &[&str] = &[
    "staticPodURLHeader",
    "cpuManagerPolicyOptions",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionMinimumReclaim",
    "systemReserved",
    "kubeReserved",
];

fn path(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

fn i32_of(v: Option<u32>) -> Option<i32> {
    v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

impl FlagOverrides {
    /// Whether no flag is set.
    pub fn is_empty(&self) -> bool {
        *self == FlagOverrides::default()
    }

    /// The flags as a partial wire document (only the given flags set).
    pub fn to_wire(&self) -> v1beta1::KubeletConfiguration {
        let f = self;
        let authentication = (f.anonymous_auth.is_some()
            || f.authentication_token_webhook.is_some()
            || f.authentication_token_webhook_cache_ttl.is_some()
            || f.client_ca_file.is_some())
        .then(|| KubeletAuthentication {
            x509: f
                .client_ca_file
                .as_ref()
                .map(|p| KubeletX509Authentication {
                    client_ca_file: Some(p.to_string_lossy().into_owned()),
                }),
            webhook: (f.authentication_token_webhook.is_some()
                || f.authentication_token_webhook_cache_ttl.is_some())
            .then_some(KubeletWebhookAuthentication {
                enabled: f.authentication_token_webhook,
                cache_ttl: f.authentication_token_webhook_cache_ttl,
            }),
            anonymous: f
                .anonymous_auth
                .map(|enabled| KubeletAnonymousAuthentication {
                    enabled: Some(enabled),
                }),
        });
        let authz_webhook = (f.authorization_webhook_cache_authorized_ttl.is_some()
            || f.authorization_webhook_cache_unauthorized_ttl.is_some())
        .then_some(KubeletWebhookAuthorization {
            cache_authorized_ttl: f.authorization_webhook_cache_authorized_ttl,
            cache_unauthorized_ttl: f.authorization_webhook_cache_unauthorized_ttl,
        });
        let authorization =
            (f.authorization_mode.is_some() || authz_webhook.is_some()).then(|| {
                KubeletAuthorization {
                    mode: f.authorization_mode.map(|m| m.as_str().to_string()),
                    webhook: authz_webhook,
                }
            });
        v1beta1::KubeletConfiguration {
            static_pod_path: path(&f.pod_manifest_path),
            static_pod_url: f.manifest_url.clone(),
            static_pod_url_header: f.manifest_url_header.clone(),
            sync_frequency: f.sync_frequency,
            file_check_frequency: f.file_check_frequency,
            http_check_frequency: f.http_check_frequency,
            address: f.address.map(|a| a.to_string()),
            port: f.port.map(i32::from),
            read_only_port: f.read_only_port.map(i32::from),
            healthz_port: f.healthz_port.map(i32::from),
            healthz_bind_address: f.healthz_bind_address.map(|a| a.to_string()),
            tls_cert_file: path(&f.tls_cert_file),
            tls_private_key_file: path(&f.tls_private_key_file),
            rotate_certificates: f.rotate_certificates,
            authentication,
            authorization,
            registry_pull_qps: i32_of(f.registry_qps),
            registry_burst: i32_of(f.registry_burst),
            event_record_qps: i32_of(f.event_qps),
            event_burst: i32_of(f.event_burst),
            cluster_domain: f.cluster_domain.clone(),
            cluster_dns: f
                .cluster_dns
                .as_ref()
                .map(|ips| ips.iter().map(ToString::to_string).collect()),
            node_status_update_frequency: f.node_status_update_frequency,
            image_minimum_gc_age: f.minimum_image_gc_age,
            image_gc_high_threshold_percent: f.image_gc_high_threshold.map(i32::from),
            image_gc_low_threshold_percent: f.image_gc_low_threshold.map(i32::from),
            cgroup_root: f.cgroup_root.clone(),
            cgroups_per_qos: f.cgroups_per_qos,
            cgroup_driver: f.cgroup_driver.map(|d| d.as_str().to_string()),
            kubelet_cgroups: f.kubelet_cgroups.clone(),
            system_cgroups: f.system_cgroups.clone(),
            runtime_request_timeout: f.runtime_request_timeout,
            hairpin_mode: f.hairpin_mode.map(|m| m.as_str().to_string()),
            max_pods: i32_of(f.max_pods),
            pod_cidr: f.pod_cidr.clone(),
            pod_pids_limit: f.pod_max_pids,
            resolv_conf: f.resolv_conf.clone(),
            serialize_image_pulls: f.serialize_image_pulls,
            max_parallel_image_pulls: i32_of(f.max_parallel_image_pulls),
            eviction_hard: f.eviction_hard.clone(),
            eviction_soft: f.eviction_soft.clone(),
            eviction_soft_grace_period: f.eviction_soft_grace_period.clone(),
            eviction_pressure_transition_period: f.eviction_pressure_transition_period,
            eviction_max_pod_grace_period: f.eviction_max_pod_grace_period,
            eviction_minimum_reclaim: f.eviction_minimum_reclaim.clone(),
            pods_per_core: i32_of(f.pods_per_core),
            feature_gates: f.feature_gates.clone(),
            fail_swap_on: f.fail_swap_on,
            container_log_max_size: f.container_log_max_size.map(|q| q.to_string()),
            container_log_max_files: i32_of(f.container_log_max_files),
            system_reserved: f.system_reserved.clone(),
            kube_reserved: f.kube_reserved.clone(),
            system_reserved_cgroup: f.system_reserved_cgroup.clone(),
            kube_reserved_cgroup: f.kube_reserved_cgroup.clone(),
            enforce_node_allocatable: f
                .enforce_node_allocatable
                .as_ref()
                .map(|list| list.iter().map(|e| e.as_str().to_string()).collect()),
            volume_plugin_dir: path(&f.volume_plugin_dir),
            provider_id: f.provider_id.clone(),
            register_node: f.register_node,
            register_with_taints: f
                .register_with_taints
                .as_ref()
                .map(|taints| taints.iter().map(crate::resolve::wire_taint).collect()),
            container_runtime_endpoint: f.container_runtime_endpoint.clone(),
            image_service_endpoint: f.image_service_endpoint.clone(),
            kube_api_qps: i32_of(f.kube_api_qps),
            kube_api_burst: i32_of(f.kube_api_burst),
            node_status_max_images: f.node_status_max_images,
            max_open_files: f
                .max_open_files
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            oom_score_adj: f.oom_score_adj,
            cpu_cfs_quota: f.cpu_cfs_quota,
            protect_kernel_defaults: f.protect_kernel_defaults,
            enable_controller_attach_detach: f.enable_controller_attach_detach,
            enable_debugging_handlers: f.enable_debugging_handlers,
            enable_server: f.enable_server,
            local_storage_capacity_isolation: f.local_storage_capacity_isolation,
            allowed_unsafe_sysctls: f.allowed_unsafe_sysctls.clone(),
            tls_cipher_suites: f.tls_cipher_suites.clone(),
            tls_min_version: f.tls_min_version.clone(),
            seccomp_default: f.seccomp_default,
            ..Default::default()
        }
    }

    /// Applies the flags over a merged configuration document.
    pub(crate) fn apply(&self, merged: &mut Value) {
        if self.is_empty() {
            return;
        }
        apply_flag_patch(merged, self.to_wire().to_value());
    }
}

/// Applies flag values (a partial v1beta1 document) over a merged configuration document:
/// map-valued fields replace the whole map, the rest is a JSON merge patch (so that
/// `featureGates` merge key by key).
pub(crate) fn apply_flag_patch(merged: &mut Value, mut patch: Value) {
    if let Value::Object(fields) = &mut patch {
        fields.remove("apiVersion");
        fields.remove("kind");
        if let Value::Object(target) = merged {
            for key in REPLACED_MAPS {
                if let Some(value) = fields.remove(*key) {
                    target.insert((*key).to_string(), value);
                }
            }
        }
    }
    crate::load::merge_patch(merged, &patch);
}

/// Parses the `key=value,key2=value2` syntax of map flags (`--kube-reserved`,
/// `--eviction-soft-grace-period`, `--eviction-minimum-reclaim`, ...). Keys and values are
/// trimmed; empty items are skipped; later keys win.
pub fn parse_map_flag(flag: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in flag.split(',') {
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(ConfigError::InvalidFlag {
                input: item.to_string(),
                reason: "malformed pair, expected key=value",
            });
        };
        out.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(out)
}

/// Parses a boolean the way Go's `strconv.ParseBool` does (`1`, `t`, `true`, `TRUE`, ...).
pub fn parse_bool_flag(value: &str) -> Result<bool, ConfigError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ConfigError::InvalidFlag {
            input: value.to_string(),
            reason: "expected a boolean",
        }),
    }
}

/// Parses `--feature-gates` (`GateA=true,GateB=false`).
pub fn parse_feature_gates_flag(flag: &str) -> Result<BTreeMap<String, bool>, ConfigError> {
    parse_map_flag(flag)?
        .into_iter()
        .map(|(k, v)| parse_bool_flag(&v).map(|b| (k, b)))
        .collect()
}

/// Parses `--register-with-taints` (`key=value:Effect,key2:Effect`), as upstream
/// `taints.ParseTaints`.
pub fn parse_taints_flag(flag: &str) -> Result<Vec<Taint>, ConfigError> {
    let mut out = Vec::new();
    for spec in flag.split(',').filter(|s| !s.is_empty()) {
        let Some((key_value, effect)) = spec.rsplit_once(':') else {
            return Err(ConfigError::InvalidFlag {
                input: spec.to_string(),
                reason: "invalid taint spec, expected key[=value]:effect",
            });
        };
        let (key, value) = match key_value.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (key_value, None),
        };
        if key.is_empty() {
            return Err(ConfigError::InvalidFlag {
                input: spec.to_string(),
                reason: "invalid taint spec, expected key[=value]:effect",
            });
        }
        out.push(Taint {
            key: key.to_string(),
            value,
            effect: effect.parse::<TaintEffect>()?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_flags() {
        let m = parse_map_flag("cpu=200m, memory = 1Gi,").unwrap();
        assert_eq!(m["cpu"], "200m");
        assert_eq!(m["memory"], "1Gi");
        assert!(parse_map_flag("cpu").is_err());
        let gates = parse_feature_gates_flag("A=true,B=false,C=1").unwrap();
        assert!(gates["A"]);
        assert!(!gates["B"]);
        assert!(gates["C"]);
        assert!(parse_feature_gates_flag("A=yes").is_err());
    }

    #[test]
    fn taints_flag() {
        let t = parse_taints_flag("dedicated=gpu:NoSchedule,spot:PreferNoSchedule").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].key, "dedicated");
        assert_eq!(t[0].value.as_deref(), Some("gpu"));
        assert_eq!(t[0].effect, TaintEffect::NoSchedule);
        assert_eq!(t[1].value, None);
        assert!(parse_taints_flag("nokey").is_err());
        assert!(parse_taints_flag(":NoSchedule").is_err());
        assert!(parse_taints_flag("a:NoRun").is_err());
    }

    #[test]
    fn empty_flags_are_empty() {
        assert!(FlagOverrides::default().is_empty());
        let v = FlagOverrides::default().to_wire().to_value();
        assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{v}");
    }
}
