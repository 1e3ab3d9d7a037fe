//! Conversion between the wire form ([`v1beta1::KubeletConfiguration`]) and the resolved
//! [`KubeletConfiguration`].
//!
//! `from_wire` expects a defaulted document. Values that do not fit their typed field (a port
//! out of range, an address that is not an IP, an unknown enum name) are reported as field
//! errors and replaced by the default so that the remaining checks can still run.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::defaults;
use crate::duration::Duration as GoDuration;
use crate::error::FieldError;
use crate::eviction::{parse_grace_map, parse_value_map};
use crate::quantity::Quantity;
use crate::types::{
    Authentication, Authorization, AuthorizationMode, CgroupDriver, HairpinMode,
    KubeletConfiguration, NodeAllocatableEnforcement, SwapBehavior, Taint, TaintEffect,
};
use crate::v1beta1::{
    self, KubeletAnonymousAuthentication, KubeletAuthentication, KubeletAuthorization,
    KubeletWebhookAuthentication, KubeletWebhookAuthorization, KubeletX509Authentication,
};

type StdDuration = std::time::Duration;

struct Ctx<'a> {
    errors: &'a mut Vec<FieldError>,
}

impl Ctx<'_> {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn duration(&mut self, field: &str, value: Option<GoDuration>, default: i64) -> StdDuration {
        match value {
            Some(d) if d.is_negative() => {
                self.push(field, format!("{d} must not be negative"));
                StdDuration::from_secs(default.unsigned_abs())
            }
            Some(d) => d.as_std(),
            None => StdDuration::from_secs(default.unsigned_abs()),
        }
    }

    fn port(&mut self, field: &str, value: Option<i32>, default: u16, allow_zero: bool) -> u16 {
        let v = value.unwrap_or(i32::from(default));
        match u16::try_from(v) {
            Ok(0) if !allow_zero => {
                self.push(field, "0 must be between 1 and 65535, inclusive");
                default
            }
            Ok(p) => p,
            Err(_) => {
                let low = if allow_zero { 0 } else { 1 };
                self.push(
                    field,
                    format!("{v} must be between {low} and 65535, inclusive"),
                );
                default
            }
        }
    }

    fn non_negative(&mut self, field: &str, value: Option<i32>, default: u32) -> u32 {
        let v = value.unwrap_or(default as i32);
        u32::try_from(v).unwrap_or_else(|_| {
            self.push(field, format!("{v} must not be a negative number"));
            default
        })
    }

    fn percent(&mut self, field: &str, value: Option<i32>, default: u8) -> u8 {
        let v = value.unwrap_or(i32::from(default));
        match u8::try_from(v) {
            Ok(p) if p <= 100 => p,
            _ => {
                self.push(field, format!("{v} must be between 0 and 100, inclusive"));
                default
            }
        }
    }

    fn ip(&mut self, field: &str, value: Option<&str>, default: &str) -> IpAddr {
        let text = value.unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.push(field, format!("{text:?} is not a valid IP address"));
            default.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
        })
    }

    fn parse_enum<T: FromStr<Err = crate::ConfigError>>(
        &mut self,
        field: &str,
        value: Option<&str>,
        default: T,
    ) -> T {
        match value {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|e: crate::ConfigError| {
                self.push(field, e.to_string());
                default
            }),
        }
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|s| !s.is_empty()).cloned()
}

fn path(value: &Option<String>) -> Option<PathBuf> {
    non_empty(value).map(PathBuf::from)
}

fn path_string(value: &Option<PathBuf>) -> Option<String> {
    value.as_ref().map(|p| p.to_string_lossy().into_owned())
}

fn go(d: StdDuration) -> Option<GoDuration> {
    Some(GoDuration::from(d))
}

fn to_i32(v: u32) -> Option<i32> {
    Some(i32::try_from(v).unwrap_or(i32::MAX))
}

/// Converts a defaulted wire document, recording conversion problems in `errors`.
pub(crate) fn from_wire(
    w: &v1beta1::KubeletConfiguration,
    errors: &mut Vec<FieldError>,
) -> KubeletConfiguration {
    let mut cx = Ctx { errors };
    let cx = &mut cx;

    let authn = w.authentication.clone().unwrap_or_default();
    let authn_webhook = authn.webhook.unwrap_or_default();
    let authz = w.authorization.clone().unwrap_or_default();
    let authz_webhook = authz.webhook.unwrap_or_default();

    let mut cluster_dns = Vec::new();
    for (i, entry) in w.cluster_dns.iter().flatten().enumerate() {
        match entry.parse::<IpAddr>() {
            Ok(ip) => cluster_dns.push(ip),
            Err(_) => cx.push(
                &format!("clusterDNS[{i}]"),
                format!("{entry:?} is not a valid IP address"),
            ),
        }
    }

    let mut enforce_node_allocatable = Vec::new();
    for (i, entry) in w.enforce_node_allocatable.iter().flatten().enumerate() {
        match entry.parse::<NodeAllocatableEnforcement>() {
            Ok(v) => enforce_node_allocatable.push(v),
            Err(e) => cx.push(&format!("enforceNodeAllocatable[{i}]"), e.to_string()),
        }
    }

    let mut register_with_taints = Vec::new();
    for (i, taint) in w.register_with_taints.iter().flatten().enumerate() {
        if taint.time_added.is_some() {
            cx.push(
                &format!("registerWithTaints[{i}].timeAdded"),
                "must not be set",
            );
        }
        match taint.effect.parse::<TaintEffect>() {
            Ok(effect) => register_with_taints.push(Taint {
                key: taint.key.clone(),
                value: non_empty(&taint.value),
                effect,
            }),
            Err(e) => cx.push(&format!("registerWithTaints[{i}].effect"), e.to_string()),
        }
    }

    let empty = BTreeMap::new();
    let eviction_hard = parse_value_map(
        "evictionHard",
        w.eviction_hard.as_ref().unwrap_or(&empty),
        cx.errors,
    );
    let eviction_soft = parse_value_map(
        "evictionSoft",
        w.eviction_soft.as_ref().unwrap_or(&empty),
        cx.errors,
    );
    let eviction_soft_grace_period = parse_grace_map(
        "evictionSoftGracePeriod",
        w.eviction_soft_grace_period.as_ref().unwrap_or(&empty),
        cx.errors,
    );
    let eviction_minimum_reclaim = parse_value_map(
        "evictionMinimumReclaim",
        w.eviction_minimum_reclaim.as_ref().unwrap_or(&empty),
        cx.errors,
    );

    let container_log_max_size = {
        let text = w
            .container_log_max_size
            .as_deref()
            .unwrap_or(defaults::DEFAULT_CONTAINER_LOG_MAX_SIZE);
        text.parse::<Quantity>().unwrap_or_else(|e| {
            cx.push("containerLogMaxSize", e.to_string());
            Quantity::from_bytes(10 << 20)
        })
    };

    let max_parallel_image_pulls = match w.max_parallel_image_pulls {
        None => None,
        Some(n) => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                cx.push(
                    "maxParallelImagePulls",
                    format!("{n} must be a positive number"),
                );
                None
            }
        },
    };

    let node_lease_duration_seconds = {
        let v = w.node_lease_duration_seconds.unwrap_or(40);
        u32::try_from(v).unwrap_or_else(|_| {
            cx.push(
                "nodeLeaseDurationSeconds",
                format!("{v} must be greater than 0"),
            );
            40
        })
    };
    let container_log_max_files = {
        let v = w.container_log_max_files.unwrap_or(5);
        u32::try_from(v).unwrap_or_else(|_| {
            cx.push(
                "containerLogMaxFiles",
                format!("{v} must be greater than 1"),
            );
            5
        })
    };
    let container_log_max_workers = {
        let v = w.container_log_max_workers.unwrap_or(1);
        u32::try_from(v).unwrap_or_else(|_| {
            cx.push(
                "containerLogMaxWorkers",
                format!("{v} must be greater than or equal to 1"),
            );
            1
        })
    };
    let max_open_files = {
        let v = w.max_open_files.unwrap_or(1_000_000);
        u64::try_from(v).unwrap_or_else(|_| {
            cx.push("maxOpenFiles", format!("{v} must not be a negative number"));
            1_000_000
        })
    };

    KubeletConfiguration {
        enable_server: w.enable_server.unwrap_or(true),
        static_pod_path: path(&w.static_pod_path),
        pod_logs_dir: path(&w.pod_logs_dir)
            .unwrap_or_else(|| PathBuf::from(defaults::DEFAULT_POD_LOGS_DIR)),
        sync_frequency: cx.duration("syncFrequency", w.sync_frequency, 60),
        file_check_frequency: cx.duration("fileCheckFrequency", w.file_check_frequency, 20),
        http_check_frequency: cx.duration("httpCheckFrequency", w.http_check_frequency, 20),
        static_pod_url: non_empty(&w.static_pod_url),
        static_pod_url_header: w.static_pod_url_header.clone().unwrap_or_default(),
        address: cx.ip("address", w.address.as_deref(), "0.0.0.0"),
        port: cx.port("port", w.port, defaults::DEFAULT_PORT as u16, false),
        read_only_port: cx.port("readOnlyPort", w.read_only_port, 0, true),
        tls_cert_file: path(&w.tls_cert_file),
        tls_private_key_file: path(&w.tls_private_key_file),
        tls_cipher_suites: w.tls_cipher_suites.clone().unwrap_or_default(),
        tls_min_version: non_empty(&w.tls_min_version),
        rotate_certificates: w.rotate_certificates.unwrap_or(false),
        server_tls_bootstrap: w.server_tls_bootstrap.unwrap_or(false),
        authentication: Authentication {
            client_ca_file: path(&authn.x509.unwrap_or_default().client_ca_file),
            webhook_enabled: authn_webhook.enabled.unwrap_or(true),
            webhook_cache_ttl: cx.duration(
                "authentication.webhook.cacheTTL",
                authn_webhook.cache_ttl,
                120,
            ),
            anonymous_enabled: authn.anonymous.unwrap_or_default().enabled.unwrap_or(false),
        },
        authorization: Authorization {
            mode: cx.parse_enum(
                "authorization.mode",
                authz.mode.as_deref(),
                AuthorizationMode::Webhook,
            ),
            webhook_cache_authorized_ttl: cx.duration(
                "authorization.webhook.cacheAuthorizedTTL",
                authz_webhook.cache_authorized_ttl,
                300,
            ),
            webhook_cache_unauthorized_ttl: cx.duration(
                "authorization.webhook.cacheUnauthorizedTTL",
                authz_webhook.cache_unauthorized_ttl,
                30,
            ),
        },
        registry_pull_qps: cx.non_negative("registryPullQPS", w.registry_pull_qps, 5),
        registry_burst: cx.non_negative("registryBurst", w.registry_burst, 10),
        event_record_qps: cx.non_negative("eventRecordQPS", w.event_record_qps, 50),
        event_burst: cx.non_negative("eventBurst", w.event_burst, 100),
        enable_debugging_handlers: w.enable_debugging_handlers.unwrap_or(true),
        healthz_port: cx.port(
            "healthzPort",
            w.healthz_port,
            defaults::DEFAULT_HEALTHZ_PORT as u16,
            true,
        ),
        healthz_bind_address: cx.ip(
            "healthzBindAddress",
            w.healthz_bind_address.as_deref(),
            "127.0.0.1",
        ),
        oom_score_adj: w.oom_score_adj.unwrap_or(defaults::DEFAULT_OOM_SCORE_ADJ),
        cluster_domain: non_empty(&w.cluster_domain),
        cluster_dns,
        node_status_update_frequency: cx.duration(
            "nodeStatusUpdateFrequency",
            w.node_status_update_frequency,
            10,
        ),
        node_status_report_frequency: cx.duration(
            "nodeStatusReportFrequency",
            w.node_status_report_frequency,
            300,
        ),
        node_lease_duration_seconds,
        image_minimum_gc_age: cx.duration("imageMinimumGCAge", w.image_minimum_gc_age, 120),
        image_maximum_gc_age: cx.duration("imageMaximumGCAge", w.image_maximum_gc_age, 0),
        image_gc_high_threshold_percent: cx.percent(
            "imageGCHighThresholdPercent",
            w.image_gc_high_threshold_percent,
            85,
        ),
        image_gc_low_threshold_percent: cx.percent(
            "imageGCLowThresholdPercent",
            w.image_gc_low_threshold_percent,
            80,
        ),
        volume_stats_agg_period: cx.duration("volumeStatsAggPeriod", w.volume_stats_agg_period, 60),
        kubelet_cgroups: non_empty(&w.kubelet_cgroups),
        system_cgroups: non_empty(&w.system_cgroups),
        cgroup_root: non_empty(&w.cgroup_root),
        cgroups_per_qos: w.cgroups_per_qos.unwrap_or(true),
        cgroup_driver: cx.parse_enum(
            "cgroupDriver",
            w.cgroup_driver.as_deref(),
            CgroupDriver::Cgroupfs,
        ),
        runtime_request_timeout: cx.duration(
            "runtimeRequestTimeout",
            w.runtime_request_timeout,
            120,
        ),
        hairpin_mode: cx.parse_enum(
            "hairpinMode",
            w.hairpin_mode.as_deref(),
            HairpinMode::PromiscuousBridge,
        ),
        max_pods: cx.non_negative("maxPods", w.max_pods, 110),
        pod_cidr: non_empty(&w.pod_cidr),
        pod_pids_limit: w.pod_pids_limit.unwrap_or(-1),
        resolv_conf: match &w.resolv_conf {
            None => Some(PathBuf::from(defaults::DEFAULT_RESOLV_CONF)),
            Some(s) if s.is_empty() => None,
            Some(s) => Some(PathBuf::from(s)),
        },
        cpu_cfs_quota: w.cpu_cfs_quota.unwrap_or(true),
        cpu_cfs_quota_period: w
            .cpu_cfs_quota_period
            .map_or(StdDuration::from_millis(100), |d| {
                cx.duration("cpuCFSQuotaPeriod", Some(d), 0)
            }),
        swap_behavior: cx.parse_enum(
            "memorySwap.swapBehavior",
            w.memory_swap
                .as_ref()
                .and_then(|m| m.swap_behavior.as_deref())
                .filter(|s| !s.is_empty()),
            SwapBehavior::NoSwap,
        ),
        max_container_restart_period: w
            .crash_loop_back_off
            .as_ref()
            .and_then(|c| c.max_container_restart_period)
            .map(|d| cx.duration("crashLoopBackOff.maxContainerRestartPeriod", Some(d), 0)),
        single_process_oom_kill: w.single_process_oom_kill,
        node_status_max_images: w.node_status_max_images.unwrap_or(50),
        max_open_files,
        kube_api_qps: cx.non_negative("kubeAPIQPS", w.kube_api_qps, 50),
        kube_api_burst: cx.non_negative("kubeAPIBurst", w.kube_api_burst, 100),
        serialize_image_pulls: w.serialize_image_pulls.unwrap_or(true),
        max_parallel_image_pulls,
        eviction_hard,
        eviction_soft,
        eviction_soft_grace_period,
        eviction_pressure_transition_period: cx.duration(
            "evictionPressureTransitionPeriod",
            w.eviction_pressure_transition_period,
            300,
        ),
        eviction_max_pod_grace_period: w.eviction_max_pod_grace_period.unwrap_or(0),
        eviction_minimum_reclaim,
        merge_default_eviction_settings: w.merge_default_eviction_settings.unwrap_or(false),
        pods_per_core: cx.non_negative("podsPerCore", w.pods_per_core, 0),
        enable_controller_attach_detach: w.enable_controller_attach_detach.unwrap_or(true),
        protect_kernel_defaults: w.protect_kernel_defaults.unwrap_or(false),
        feature_gates: w.feature_gates.clone().unwrap_or_default(),
        fail_swap_on: w.fail_swap_on.unwrap_or(true),
        container_log_max_size,
        container_log_max_files,
        container_log_max_workers,
        container_log_monitor_interval: cx.duration(
            "containerLogMonitorInterval",
            w.container_log_monitor_interval,
            10,
        ),
        streaming_connection_idle_timeout: cx.duration(
            "streamingConnectionIdleTimeout",
            w.streaming_connection_idle_timeout,
            4 * 3600,
        ),
        enable_system_log_handler: w.enable_system_log_handler.unwrap_or(true),
        enable_system_log_query: w.enable_system_log_query.unwrap_or(false),
        system_reserved: w.system_reserved.clone().unwrap_or_default(),
        kube_reserved: w.kube_reserved.clone().unwrap_or_default(),
        system_reserved_cgroup: non_empty(&w.system_reserved_cgroup),
        kube_reserved_cgroup: non_empty(&w.kube_reserved_cgroup),
        enforce_node_allocatable,
        allowed_unsafe_sysctls: w.allowed_unsafe_sysctls.clone().unwrap_or_default(),
        volume_plugin_dir: path(&w.volume_plugin_dir)
            .unwrap_or_else(|| PathBuf::from(defaults::DEFAULT_VOLUME_PLUGIN_DIR)),
        provider_id: non_empty(&w.provider_id),
        // On unless turned off: the choice over upstream's `false`.
        kernel_memcg_notification: w.kernel_memcg_notification.unwrap_or(true),
        memory_throttling_factor: w.memory_throttling_factor.unwrap_or(0.9),
        shutdown_grace_period: cx.duration("shutdownGracePeriod", w.shutdown_grace_period, 0),
        shutdown_grace_period_critical_pods: cx.duration(
            "shutdownGracePeriodCriticalPods",
            w.shutdown_grace_period_critical_pods,
            0,
        ),
        seccomp_default: w.seccomp_default.unwrap_or(false),
        register_with_taints,
        register_node: w.register_node.unwrap_or(true),
        local_storage_capacity_isolation: w.local_storage_capacity_isolation.unwrap_or(true),
        container_runtime_endpoint: non_empty(&w.container_runtime_endpoint)
            .unwrap_or_else(|| defaults::DEFAULT_CONTAINER_RUNTIME_ENDPOINT.to_string()),
        image_service_endpoint: non_empty(&w.image_service_endpoint),
        fail_cgroup_v1: w.fail_cgroup_v1.unwrap_or(true),
        uninterpreted: w.uninterpreted.clone(),
    }
}

/// The wire form of a resolved taint.
pub(crate) fn wire_taint(t: &Taint) -> v1beta1::Taint {
    v1beta1::Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: t.effect.as_str().to_string(),
        time_added: None,
    }
}

fn string_map<K: ToString, V: ToString>(map: &BTreeMap<K, V>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Converts back to the wire form with every field set, so that loading the result gives the
/// same configuration.
pub(crate) fn to_wire(c: &KubeletConfiguration) -> v1beta1::KubeletConfiguration {
    v1beta1::KubeletConfiguration {
        api_version: Some(v1beta1::API_VERSION.to_string()),
        kind: Some(v1beta1::KIND.to_string()),
        enable_server: Some(c.enable_server),
        static_pod_path: path_string(&c.static_pod_path),
        pod_logs_dir: Some(c.pod_logs_dir.to_string_lossy().into_owned()),
        sync_frequency: go(c.sync_frequency),
        file_check_frequency: go(c.file_check_frequency),
        http_check_frequency: go(c.http_check_frequency),
        static_pod_url: c.static_pod_url.clone(),
        static_pod_url_header: Some(c.static_pod_url_header.clone()),
        address: Some(c.address.to_string()),
        port: Some(i32::from(c.port)),
        read_only_port: Some(i32::from(c.read_only_port)),
        tls_cert_file: path_string(&c.tls_cert_file),
        tls_private_key_file: path_string(&c.tls_private_key_file),
        tls_cipher_suites: Some(c.tls_cipher_suites.clone()),
        tls_min_version: c.tls_min_version.clone(),
        rotate_certificates: Some(c.rotate_certificates),
        server_tls_bootstrap: Some(c.server_tls_bootstrap),
        authentication: Some(KubeletAuthentication {
            x509: Some(KubeletX509Authentication {
                client_ca_file: path_string(&c.authentication.client_ca_file),
            }),
            webhook: Some(KubeletWebhookAuthentication {
                enabled: Some(c.authentication.webhook_enabled),
                cache_ttl: go(c.authentication.webhook_cache_ttl),
            }),
            anonymous: Some(KubeletAnonymousAuthentication {
                enabled: Some(c.authentication.anonymous_enabled),
            }),
        }),
        authorization: Some(KubeletAuthorization {
            mode: Some(c.authorization.mode.as_str().to_string()),
            webhook: Some(KubeletWebhookAuthorization {
                cache_authorized_ttl: go(c.authorization.webhook_cache_authorized_ttl),
                cache_unauthorized_ttl: go(c.authorization.webhook_cache_unauthorized_ttl),
            }),
        }),
        registry_pull_qps: to_i32(c.registry_pull_qps),
        registry_burst: to_i32(c.registry_burst),
        event_record_qps: to_i32(c.event_record_qps),
        event_burst: to_i32(c.event_burst),
        enable_debugging_handlers: Some(c.enable_debugging_handlers),
        healthz_port: Some(i32::from(c.healthz_port)),
        healthz_bind_address: Some(c.healthz_bind_address.to_string()),
        oom_score_adj: Some(c.oom_score_adj),
        cluster_domain: c.cluster_domain.clone(),
        cluster_dns: Some(c.cluster_dns.iter().map(ToString::to_string).collect()),
        node_status_update_frequency: go(c.node_status_update_frequency),
        node_status_report_frequency: go(c.node_status_report_frequency),
        node_lease_duration_seconds: to_i32(c.node_lease_duration_seconds),
        image_minimum_gc_age: go(c.image_minimum_gc_age),
        image_maximum_gc_age: go(c.image_maximum_gc_age),
        image_gc_high_threshold_percent: Some(i32::from(c.image_gc_high_threshold_percent)),
        image_gc_low_threshold_percent: Some(i32::from(c.image_gc_low_threshold_percent)),
        volume_stats_agg_period: go(c.volume_stats_agg_period),
        kubelet_cgroups: c.kubelet_cgroups.clone(),
        system_cgroups: c.system_cgroups.clone(),
        cgroup_root: c.cgroup_root.clone(),
        cgroups_per_qos: Some(c.cgroups_per_qos),
        cgroup_driver: Some(c.cgroup_driver.as_str().to_string()),
        runtime_request_timeout: go(c.runtime_request_timeout),
        hairpin_mode: Some(c.hairpin_mode.as_str().to_string()),
        max_pods: to_i32(c.max_pods),
        pod_cidr: c.pod_cidr.clone(),
        pod_pids_limit: Some(c.pod_pids_limit),
        resolv_conf: Some(path_string(&c.resolv_conf).unwrap_or_default()),
        cpu_cfs_quota: Some(c.cpu_cfs_quota),
        cpu_cfs_quota_period: go(c.cpu_cfs_quota_period),
        memory_swap: Some(v1beta1::MemorySwapConfiguration {
            swap_behavior: Some(c.swap_behavior.as_str().to_string()),
        }),
        crash_loop_back_off: Some(v1beta1::CrashLoopBackOffConfig {
            max_container_restart_period: c.max_container_restart_period.map(GoDuration::from),
        }),
        single_process_oom_kill: c.single_process_oom_kill,
        node_status_max_images: Some(c.node_status_max_images),
        max_open_files: Some(i64::try_from(c.max_open_files).unwrap_or(i64::MAX)),
        kube_api_qps: to_i32(c.kube_api_qps),
        kube_api_burst: to_i32(c.kube_api_burst),
        serialize_image_pulls: Some(c.serialize_image_pulls),
        max_parallel_image_pulls: c.max_parallel_image_pulls.and_then(to_i32),
        eviction_hard: Some(string_map(&c.eviction_hard)),
        eviction_soft: Some(string_map(&c.eviction_soft)),
        eviction_soft_grace_period: Some(
            c.eviction_soft_grace_period
                .iter()
                .map(|(k, v)| (k.to_string(), GoDuration::from(*v).to_string()))
                .collect(),
        ),
        eviction_pressure_transition_period: go(c.eviction_pressure_transition_period),
        eviction_max_pod_grace_period: Some(c.eviction_max_pod_grace_period),
        eviction_minimum_reclaim: Some(string_map(&c.eviction_minimum_reclaim)),
        merge_default_eviction_settings: Some(c.merge_default_eviction_settings),
        pods_per_core: to_i32(c.pods_per_core),
        enable_controller_attach_detach: Some(c.enable_controller_attach_detach),
        protect_kernel_defaults: Some(c.protect_kernel_defaults),
        feature_gates: Some(c.feature_gates.clone()),
        fail_swap_on: Some(c.fail_swap_on),
        container_log_max_size: Some(c.container_log_max_size.to_string()),
        container_log_max_files: to_i32(c.container_log_max_files),
        container_log_max_workers: to_i32(c.container_log_max_workers),
        container_log_monitor_interval: go(c.container_log_monitor_interval),
        streaming_connection_idle_timeout: go(c.streaming_connection_idle_timeout),
        enable_system_log_handler: Some(c.enable_system_log_handler),
        enable_system_log_query: Some(c.enable_system_log_query),
        system_reserved: Some(c.system_reserved.clone()),
        kube_reserved: Some(c.kube_reserved.clone()),
        system_reserved_cgroup: c.system_reserved_cgroup.clone(),
        kube_reserved_cgroup: c.kube_reserved_cgroup.clone(),
        enforce_node_allocatable: Some(
            c.enforce_node_allocatable
                .iter()
                .map(|e| e.as_str().to_string())
                .collect(),
        ),
        allowed_unsafe_sysctls: Some(c.allowed_unsafe_sysctls.clone()),
        volume_plugin_dir: Some(c.volume_plugin_dir.to_string_lossy().into_owned()),
        provider_id: c.provider_id.clone(),
        kernel_memcg_notification: Some(c.kernel_memcg_notification),
        memory_throttling_factor: Some(c.memory_throttling_factor),
        shutdown_grace_period: go(c.shutdown_grace_period),
        shutdown_grace_period_critical_pods: go(c.shutdown_grace_period_critical_pods),
        seccomp_default: Some(c.seccomp_default),
        register_with_taints: Some(c.register_with_taints.iter().map(wire_taint).collect()),
        register_node: Some(c.register_node),
        local_storage_capacity_isolation: Some(c.local_storage_capacity_isolation),
        container_runtime_endpoint: Some(c.container_runtime_endpoint.clone()),
        image_service_endpoint: c.image_service_endpoint.clone(),
        fail_cgroup_v1: Some(c.fail_cgroup_v1),
        uninterpreted: c.uninterpreted.clone(),
    }
}
