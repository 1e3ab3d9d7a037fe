//! Every default, checked against upstream v1.36 `SetDefaults_KubeletConfiguration` and the
//! Linux `DefaultEvictionHard`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use node_config::{
    AuthorizationMode, CgroupDriver, HairpinMode, KubeletConfiguration, NodeAllocatableEnforcement,
    Quantity, Signal, ThresholdValue,
};

const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn parse(body: &str) -> KubeletConfiguration {
    format!("{HEADER}{body}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn assert_upstream_defaults(c: &KubeletConfiguration) {
    assert!(c.enable_server);
    assert_eq!(c.static_pod_path, None);
    assert_eq!(c.pod_logs_dir, PathBuf::from("/var/log/pods"));
    assert_eq!(c.sync_frequency, secs(60));
    assert_eq!(c.file_check_frequency, secs(20));
    assert_eq!(c.http_check_frequency, secs(20));
    assert_eq!(c.static_pod_url, None);
    assert!(c.static_pod_url_header.is_empty());
    assert_eq!(c.address, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(c.port, 10250);
    assert_eq!(c.read_only_port, 0);
    assert_eq!(c.tls_cert_file, None);
    assert_eq!(c.tls_private_key_file, None);
    assert!(c.tls_cipher_suites.is_empty());
    assert_eq!(c.tls_min_version, None);
    assert!(!c.rotate_certificates);
    assert!(!c.server_tls_bootstrap);
    assert_eq!(c.authentication.client_ca_file, None);
    assert!(!c.authentication.anonymous_enabled);
    assert!(c.authentication.webhook_enabled);
    assert_eq!(c.authentication.webhook_cache_ttl, secs(120));
    assert_eq!(c.authorization.mode, AuthorizationMode::Webhook);
    assert_eq!(c.authorization.webhook_cache_authorized_ttl, secs(300));
    assert_eq!(c.authorization.webhook_cache_unauthorized_ttl, secs(30));
    assert_eq!(c.registry_pull_qps, 5);
    assert_eq!(c.registry_burst, 10);
    assert_eq!(c.event_record_qps, 50);
    assert_eq!(c.event_burst, 100);
    assert!(c.enable_debugging_handlers);
    assert_eq!(c.healthz_port, 10248);
    assert_eq!(
        c.healthz_bind_address,
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(c.oom_score_adj, -999);
    assert_eq!(c.cluster_domain, None);
    assert!(c.cluster_dns.is_empty());
    assert_eq!(c.node_status_update_frequency, secs(10));
    assert_eq!(c.node_status_report_frequency, secs(300));
    assert_eq!(c.node_lease_duration_seconds, 40);
    assert_eq!(c.image_minimum_gc_age, secs(120));
    assert_eq!(c.image_maximum_gc_age, Duration::ZERO);
    assert_eq!(c.image_gc_high_threshold_percent, 85);
    assert_eq!(c.image_gc_low_threshold_percent, 80);
    assert_eq!(c.volume_stats_agg_period, secs(60));
    assert_eq!(c.kubelet_cgroups, None);
    assert_eq!(c.system_cgroups, None);
    assert_eq!(c.cgroup_root, None, "upstream has no cgroupRoot default");
    assert!(c.cgroups_per_qos);
    assert_eq!(c.cgroup_driver, CgroupDriver::Cgroupfs);
    assert_eq!(c.runtime_request_timeout, secs(120));
    assert_eq!(c.hairpin_mode, HairpinMode::PromiscuousBridge);
    assert_eq!(c.max_pods, 110);
    assert_eq!(c.pod_cidr, None);
    assert_eq!(c.pod_pids_limit, -1);
    assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
    assert!(c.cpu_cfs_quota);
    assert_eq!(c.node_status_max_images, 50);
    assert_eq!(c.max_open_files, 1_000_000);
    assert_eq!(c.kube_api_qps, 50);
    assert_eq!(c.kube_api_burst, 100);
    assert!(c.serialize_image_pulls);
    assert_eq!(c.max_parallel_image_pulls, None);
    let hard: BTreeMap<Signal, String> = c
        .eviction_hard
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    let want: BTreeMap<Signal, String> = [
        (Signal::MemoryAvailable, "100Mi"),
        (Signal::NodeFsAvailable, "10%"),
        (Signal::NodeFsInodesFree, "5%"),
        (Signal::ImageFsAvailable, "15%"),
        (Signal::ImageFsInodesFree, "5%"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(hard, want);
    assert!(c.eviction_soft.is_empty());
    assert!(c.eviction_soft_grace_period.is_empty());
    assert_eq!(c.eviction_pressure_transition_period, secs(300));
    assert_eq!(c.eviction_max_pod_grace_period, 0);
    assert!(c.eviction_minimum_reclaim.is_empty());
    assert!(!c.merge_default_eviction_settings);
    assert_eq!(c.pods_per_core, 0);
    assert!(c.enable_controller_attach_detach);
    assert!(!c.protect_kernel_defaults);
    assert!(c.feature_gates.is_empty());
    assert!(c.fail_swap_on);
    assert_eq!(
        c.container_log_max_size,
        "10Mi".parse::<Quantity>().unwrap()
    );
    assert_eq!(c.container_log_max_size.to_string(), "10Mi");
    assert_eq!(c.container_log_max_files, 5);
    assert_eq!(c.container_log_max_workers, 1);
    assert_eq!(c.container_log_monitor_interval, secs(10));
    assert!(c.system_reserved.is_empty());
    assert!(c.kube_reserved.is_empty());
    assert_eq!(c.system_reserved_cgroup, None);
    assert_eq!(c.kube_reserved_cgroup, None);
    assert_eq!(
        c.enforce_node_allocatable,
        vec![NodeAllocatableEnforcement::Pods]
    );
    assert!(c.allowed_unsafe_sysctls.is_empty());
    assert_eq!(
        c.volume_plugin_dir,
        PathBuf::from("/usr/libexec/kubernetes/kubelet-plugins/volume/exec/")
    );
    assert_eq!(c.provider_id, None);
    assert!(c.kernel_memcg_notification, "on by default (upstream: off)");
    assert_eq!(c.shutdown_grace_period, Duration::ZERO);
    assert_eq!(c.shutdown_grace_period_critical_pods, Duration::ZERO);
    assert!(!c.seccomp_default);
    assert!(c.register_with_taints.is_empty());
    assert!(c.register_node);
    assert!(c.local_storage_capacity_isolation);
    assert_eq!(
        c.container_runtime_endpoint,
        "unix:///run/containerd/containerd.sock"
    );
    assert_eq!(c.image_service_endpoint, None);
    assert_eq!(
        c.effective_image_service_endpoint(),
        "unix:///run/containerd/containerd.sock"
    );
    assert!(c.fail_cgroup_v1);
    assert!(c.uninterpreted.is_empty());
}

#[test]
fn default_is_upstream_default() {
    let c = KubeletConfiguration::default();
    assert_upstream_defaults(&c);
    c.validate().expect("the defaults are valid");
}

#[test]
fn minimal_file_gets_the_same_defaults() {
    let c = parse("");
    assert_upstream_defaults(&c);
    assert_eq!(c, KubeletConfiguration::default());
}

#[test]
fn zero_values_of_plain_fields_take_defaults() {
    // Upstream non-pointer fields treat their zero value as unset.
    let c = parse(
        "syncFrequency: 0s\nport: 0\nmaxPods: 0\neventBurst: 0\nnodeLeaseDurationSeconds: 0\n\
         address: \"\"\ncgroupDriver: \"\"\ncontainerLogMaxSize: \"\"\nimageMinimumGCAge: 0s\n\
         containerRuntimeEndpoint: \"\"\nauthorization:\n  mode: \"\"\n",
    );
    assert_eq!(c.sync_frequency, secs(60));
    assert_eq!(c.port, 10250);
    assert_eq!(c.max_pods, 110);
    assert_eq!(c.event_burst, 100);
    assert_eq!(c.node_lease_duration_seconds, 40);
    assert_eq!(c.address.to_string(), "0.0.0.0");
    assert_eq!(c.cgroup_driver, CgroupDriver::Cgroupfs);
    assert_eq!(c.container_log_max_size.to_string(), "10Mi");
    assert_eq!(c.image_minimum_gc_age, secs(120));
    assert_eq!(
        c.container_runtime_endpoint,
        "unix:///run/containerd/containerd.sock"
    );
    assert_eq!(c.authorization.mode, AuthorizationMode::Webhook);
}

#[test]
fn explicit_zero_of_pointer_fields_is_kept() {
    // Upstream pointer fields keep an explicit zero.
    let c = parse(
        "healthzPort: 0\neventRecordQPS: 0\nimageGCHighThresholdPercent: 10\n\
         imageGCLowThresholdPercent: 0\nregistryPullQPS: 0\nnodeStatusMaxImages: 0\n\
         resolvConf: \"\"\nevictionHard: {}\nenforceNodeAllocatable: []\n",
    );
    assert_eq!(c.healthz_port, 0);
    assert_eq!(c.event_record_qps, 0);
    assert_eq!(c.image_gc_low_threshold_percent, 0);
    assert_eq!(c.registry_pull_qps, 0);
    assert_eq!(c.node_status_max_images, 0);
    assert_eq!(c.resolv_conf, None, "an empty resolvConf disables DNS");
    assert!(
        c.eviction_hard.is_empty(),
        "an explicit {{}} is not defaulted"
    );
    assert!(c.enforce_node_allocatable.is_empty());
}

#[test]
fn node_status_report_frequency_follows_explicit_update_frequency() {
    let c = parse("nodeStatusUpdateFrequency: 20s\n");
    assert_eq!(c.node_status_update_frequency, secs(20));
    assert_eq!(c.node_status_report_frequency, secs(20));
    let c = parse("nodeStatusUpdateFrequency: 20s\nnodeStatusReportFrequency: 1m\n");
    assert_eq!(c.node_status_report_frequency, secs(60));
}

#[test]
fn parallel_image_pulls_imply_unserialized_pulls() {
    let c = parse("maxParallelImagePulls: 5\n");
    assert!(!c.serialize_image_pulls);
    assert_eq!(c.max_parallel_image_pulls, Some(5));
    let c = parse("maxParallelImagePulls: 1\n");
    assert!(c.serialize_image_pulls);
}

#[test]
fn negative_pod_pids_limit_becomes_minus_one() {
    assert_eq!(parse("podPidsLimit: -20\n").pod_pids_limit, -1);
    assert_eq!(parse("podPidsLimit: 0\n").pod_pids_limit, 0);
    assert_eq!(parse("podPidsLimit: 4096\n").pod_pids_limit, 4096);
}

#[test]
fn eviction_hard_replaces_defaults_unless_merging() {
    let c = parse("evictionHard:\n  memory.available: 200Mi\n");
    assert_eq!(c.eviction_hard.len(), 1);
    let c = parse("mergeDefaultEvictionSettings: true\nevictionHard:\n  memory.available: 200Mi\n");
    assert_eq!(c.eviction_hard.len(), 5);
    assert_eq!(
        c.eviction_hard[&Signal::MemoryAvailable],
        ThresholdValue::Quantity("200Mi".parse().unwrap())
    );
    assert_eq!(
        c.eviction_hard[&Signal::NodeFsAvailable],
        ThresholdValue::Percentage(10.0)
    );
}

#[test]
fn legacy_flag_defaults_without_a_file() {
    let c = node_config::ConfigLoader::new()
        .legacy_flag_defaults(true)
        .load()
        .unwrap();
    assert!(c.authentication.anonymous_enabled);
    assert!(!c.authentication.webhook_enabled);
    assert_eq!(c.authorization.mode, AuthorizationMode::AlwaysAllow);
    assert_eq!(c.read_only_port, 10255);
    let secure = node_config::ConfigLoader::new().load().unwrap();
    assert_eq!(secure, KubeletConfiguration::default());
}
