//! Defaulting, as upstream `SetDefaults_KubeletConfiguration` (pkg/kubelet/apis/config/v1beta1,
//! v1.36) plus the `evictionHard` default the kubelet applies when loading a config file
//! (`cmd/kubelet/app/server.go` `loadConfigFile`, values from `pkg/kubelet/eviction/defaults_linux.go`).
//!
//! Upstream fields that are plain Go values (not pointers) treat their zero value as unset, so
//! for those both `None` and an explicit zero (`0`, `""`, `0s`) take the default. Pointer fields
//! only default when absent.

use std::collections::BTreeMap;

use crate::duration::Duration;
use crate::v1beta1::{
    KubeletAnonymousAuthentication, KubeletAuthentication, KubeletAuthorization,
    KubeletConfiguration, KubeletWebhookAuthentication, KubeletWebhookAuthorization,
    KubeletX509Authentication,
};

/// The kubelet's serving port (`ports.KubeletPort`).
pub const DEFAULT_PORT: i32 = 10250;
/// The legacy read-only port (`ports.KubeletReadOnlyPort`), only used by
/// [`apply_legacy_flag_defaults`].
pub const LEGACY_READ_ONLY_PORT: i32 = 10255;
/// `healthzPort` default.
pub const DEFAULT_HEALTHZ_PORT: i32 = 10248;
/// `oomScoreAdj` default (`qos.KubeletOOMScoreAdj`).
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -999;
/// `podLogsDir` default.
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";
/// `volumePluginDir` default.
pub const DEFAULT_VOLUME_PLUGIN_DIR: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/";
/// `resolvConf` default (`kubetypes.ResolvConfDefault` on Linux).
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// `containerRuntimeEndpoint` default.
pub const DEFAULT_CONTAINER_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
/// `containerLogMaxSize` default.
pub const DEFAULT_CONTAINER_LOG_MAX_SIZE: &str = "10Mi";
/// `enforceNodeAllocatable` default.
pub const DEFAULT_ENFORCE_NODE_ALLOCATABLE: &[&str] = &["pods"];
/// `evictionHard` default on Linux (`pkg/kubelet/eviction/defaults_linux.go`).
pub const DEFAULT_EVICTION_HARD: &[(&str, &str)] = &[
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
];

const fn secs(s: i64) -> Duration {
    Duration::from_secs(s)
}

fn or_default<T>(field: &mut Option<T>, default: impl FnOnce() -> T) {
    if field.is_none() {
        *field = Some(default());
    }
}

/// Defaults a Go non-pointer field: `None` and the zero value both take the default.
fn zero_or_default<T: PartialEq + Default>(field: &mut Option<T>, default: T) {
    if field.as_ref().is_none_or(|v| *v == T::default()) {
        *field = Some(default);
    }
}

fn string_or_default(field: &mut Option<String>, default: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(default.to_string());
    }
}

/// Fills every unset field with its upstream default, in place. Idempotent.
pub fn set_defaults(c: &mut KubeletConfiguration) {
    or_default(&mut c.enable_server, || true);
    zero_or_default(&mut c.sync_frequency, secs(60));
    zero_or_default(&mut c.file_check_frequency, secs(20));
    zero_or_default(&mut c.http_check_frequency, secs(20));
    string_or_default(&mut c.address, "0.0.0.0");
    zero_or_default(&mut c.port, DEFAULT_PORT);
    or_default(&mut c.read_only_port, || 0);
    or_default(&mut c.rotate_certificates, || false);
    or_default(&mut c.server_tls_bootstrap, || false);

    let authn = c
        .authentication
        .get_or_insert_with(KubeletAuthentication::default);
    authn
        .x509
        .get_or_insert_with(KubeletX509Authentication::default);
    let anonymous = authn
        .anonymous
        .get_or_insert_with(KubeletAnonymousAuthentication::default);
    or_default(&mut anonymous.enabled, || false);
    let webhook = authn
        .webhook
        .get_or_insert_with(KubeletWebhookAuthentication::default);
    or_default(&mut webhook.enabled, || true);
    zero_or_default(&mut webhook.cache_ttl, secs(120));

    let authz = c
        .authorization
        .get_or_insert_with(KubeletAuthorization::default);
    string_or_default(&mut authz.mode, "Webhook");
    let webhook = authz
        .webhook
        .get_or_insert_with(KubeletWebhookAuthorization::default);
    zero_or_default(&mut webhook.cache_authorized_ttl, secs(300));
    zero_or_default(&mut webhook.cache_unauthorized_ttl, secs(30));

    or_default(&mut c.registry_pull_qps, || 5);
    zero_or_default(&mut c.registry_burst, 10);
    or_default(&mut c.event_record_qps, || 50);
    zero_or_default(&mut c.event_burst, 100);
    or_default(&mut c.enable_debugging_handlers, || true);
    or_default(&mut c.healthz_port, || DEFAULT_HEALTHZ_PORT);
    string_or_default(&mut c.healthz_bind_address, "127.0.0.1");
    or_default(&mut c.oom_score_adj, || DEFAULT_OOM_SCORE_ADJ);

    // nodeStatusReportFrequency follows an explicitly set nodeStatusUpdateFrequency, for
    // backward compatibility; it must be defaulted first.
    if c.node_status_report_frequency.is_none_or(Duration::is_zero) {
        c.node_status_report_frequency = match c.node_status_update_frequency {
            Some(update) if !update.is_zero() => Some(update),
            _ => Some(secs(300)),
        };
    }
    zero_or_default(&mut c.node_status_update_frequency, secs(10));
    zero_or_default(&mut c.node_lease_duration_seconds, 40);
    zero_or_default(&mut c.image_minimum_gc_age, secs(120));
    or_default(&mut c.image_maximum_gc_age, || Duration::ZERO);
    or_default(&mut c.image_gc_high_threshold_percent, || 85);
    or_default(&mut c.image_gc_low_threshold_percent, || 80);
    zero_or_default(&mut c.volume_stats_agg_period, secs(60));
    or_default(&mut c.cgroups_per_qos, || true);
    string_or_default(&mut c.cgroup_driver, "cgroupfs");
    zero_or_default(&mut c.runtime_request_timeout, secs(120));
    string_or_default(&mut c.hairpin_mode, "promiscuous-bridge");
    zero_or_default(&mut c.max_pods, 110);
    if c.pod_pids_limit.is_none_or(|limit| limit < 0) {
        c.pod_pids_limit = Some(-1);
    }
    or_default(&mut c.resolv_conf, || DEFAULT_RESOLV_CONF.to_string());
    or_default(&mut c.cpu_cfs_quota, || true);
    or_default(&mut c.node_status_max_images, || 50);
    zero_or_default(&mut c.max_open_files, 1_000_000);
    or_default(&mut c.kube_api_qps, || 50);
    zero_or_default(&mut c.kube_api_burst, 100);
    if c.serialize_image_pulls.is_none() {
        // Parallel pulls requested via maxParallelImagePulls imply serializeImagePulls=false.
        let parallel = c.max_parallel_image_pulls.is_some_and(|n| n >= 2);
        c.serialize_image_pulls = Some(!parallel);
    }
    or_default(&mut c.eviction_hard, default_eviction_hard);
    if c.merge_default_eviction_settings == Some(true)
        && let Some(hard) = &mut c.eviction_hard
    {
        for (signal, value) in DEFAULT_EVICTION_HARD {
            hard.entry(signal.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    zero_or_default(&mut c.eviction_pressure_transition_period, secs(300));
    or_default(&mut c.eviction_max_pod_grace_period, || 0);
    or_default(&mut c.merge_default_eviction_settings, || false);
    or_default(&mut c.pods_per_core, || 0);
    or_default(&mut c.enable_controller_attach_detach, || true);
    or_default(&mut c.protect_kernel_defaults, || false);
    or_default(&mut c.fail_swap_on, || true);
    string_or_default(
        &mut c.container_log_max_size,
        DEFAULT_CONTAINER_LOG_MAX_SIZE,
    );
    or_default(&mut c.container_log_max_files, || 5);
    or_default(&mut c.container_log_max_workers, || 1);
    or_default(&mut c.container_log_monitor_interval, || secs(10));
    or_default(&mut c.streaming_connection_idle_timeout, || secs(4 * 3600));
    or_default(&mut c.enable_system_log_handler, || true);
    or_default(&mut c.enable_system_log_query, || false);
    or_default(&mut c.enforce_node_allocatable, || {
        DEFAULT_ENFORCE_NODE_ALLOCATABLE
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    string_or_default(&mut c.volume_plugin_dir, DEFAULT_VOLUME_PLUGIN_DIR);
    // On by default here (upstream: off): the eviction manager reacts to memory thresholds at once.
    or_default(&mut c.kernel_memcg_notification, || true);
    or_default(&mut c.memory_throttling_factor, || 0.9);
    or_default(&mut c.shutdown_grace_period, || Duration::ZERO);
    or_default(&mut c.shutdown_grace_period_critical_pods, || {
        Duration::ZERO
    });
    or_default(&mut c.seccomp_default, || false);
    or_default(&mut c.cpu_cfs_quota_period, || Duration::from_millis(100));
    or_default(&mut c.register_node, || true);
    or_default(&mut c.local_storage_capacity_isolation, || true);
    string_or_default(
        &mut c.container_runtime_endpoint,
        DEFAULT_CONTAINER_RUNTIME_ENDPOINT,
    );
    string_or_default(&mut c.pod_logs_dir, DEFAULT_POD_LOGS_DIR);
    or_default(&mut c.fail_cgroup_v1, || true);
}

/// The default `evictionHard` map.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    DEFAULT_EVICTION_HARD
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Upstream `applyLegacyDefaults`: the values the kubelet uses when it runs from flags alone,
/// without `--config` (anonymous auth on, token webhook off, `AlwaysAllow`, read-only port
/// 10255). Kept for compatibility; these are insecure.
pub fn apply_legacy_flag_defaults(c: &mut KubeletConfiguration) {
    let authn = c
        .authentication
        .get_or_insert_with(KubeletAuthentication::default);
    authn
        .anonymous
        .get_or_insert_with(KubeletAnonymousAuthentication::default)
        .enabled = Some(true);
    authn
        .webhook
        .get_or_insert_with(KubeletWebhookAuthentication::default)
        .enabled = Some(false);
    c.authorization
        .get_or_insert_with(KubeletAuthorization::default)
        .mode = Some("AlwaysAllow".to_string());
    c.read_only_port = Some(LEGACY_READ_ONLY_PORT);
}
