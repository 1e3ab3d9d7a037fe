//! One test per validation rule, each asserting the field the error names.

use std::time::Duration;

use node_config::{ConfigError, KubeletConfiguration, NodeAllocatableEnforcement};

const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

/// Parses `body`, expects it to be invalid, and checks every named field is reported.
#[track_caller]
fn rejects(body: &str, fields: &[&str]) -> ConfigError {
    let err = format!("{HEADER}{body}")
        .parse::<KubeletConfiguration>()
        .expect_err("the configuration should be invalid");
    assert!(
        matches!(err, ConfigError::Invalid { .. }),
        "expected a validation error, got {err}"
    );
    for field in fields {
        assert!(err.names_field(field), "{field} not named in: {err}");
    }
    let text = err.to_string();
    assert!(!text.ends_with('.'), "no trailing period: {text}");
    err
}

#[track_caller]
fn accepts(body: &str) -> KubeletConfiguration {
    format!("{HEADER}{body}")
        .parse()
        .unwrap_or_else(|e| panic!("should be valid: {e}"))
}

/// Validates a programmatically changed default configuration.
#[track_caller]
fn rejects_value(change: impl FnOnce(&mut KubeletConfiguration), field: &str) {
    let mut c = KubeletConfiguration::default();
    change(&mut c);
    let err = c.validate().expect_err("should be invalid");
    assert!(err.names_field(field), "{field} not named in: {err}");
}

#[test]
fn port_range() {
    rejects("port: 70000\n", &["port"]);
    rejects("port: -1\n", &["port"]);
    rejects_value(|c| c.port = 0, "port");
    accepts("port: 65535\n");
}

#[test]
fn read_only_and_healthz_port_range() {
    rejects("readOnlyPort: 65536\n", &["readOnlyPort"]);
    rejects("healthzPort: -5\n", &["healthzPort"]);
    assert_eq!(accepts("readOnlyPort: 0\n").read_only_port, 0);
}

#[test]
fn image_gc_percent_ranges() {
    rejects(
        "imageGCHighThresholdPercent: 101\n",
        &["imageGCHighThresholdPercent"],
    );
    rejects(
        "imageGCLowThresholdPercent: -1\n",
        &["imageGCLowThresholdPercent"],
    );
    rejects_value(
        |c| c.image_gc_high_threshold_percent = 150,
        "imageGCHighThresholdPercent",
    );
    accepts("imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 0\n");
}

#[test]
fn image_gc_low_below_high() {
    rejects(
        "imageGCHighThresholdPercent: 70\nimageGCLowThresholdPercent: 70\n",
        &["imageGCLowThresholdPercent"],
    );
}

#[test]
fn image_maximum_gc_age_zero_or_above_minimum() {
    rejects(
        "imageMinimumGCAge: 5m\nimageMaximumGCAge: 5m\n",
        &["imageMaximumGCAge"],
    );
    rejects("imageMaximumGCAge: -1h\n", &["imageMaximumGCAge"]);
    accepts("imageMaximumGCAge: 0s\n");
    assert_eq!(
        accepts("imageMaximumGCAge: 24h\n").image_maximum_gc_age,
        Duration::from_secs(86_400)
    );
}

#[test]
fn durations_must_not_be_negative() {
    for field in [
        "syncFrequency",
        "fileCheckFrequency",
        "httpCheckFrequency",
        "nodeStatusUpdateFrequency",
        "nodeStatusReportFrequency",
        "runtimeRequestTimeout",
        "imageMinimumGCAge",
        "evictionPressureTransitionPeriod",
        "volumeStatsAggPeriod",
        "containerLogMonitorInterval",
    ] {
        rejects(&format!("{field}: -1s\n"), &[field]);
    }
    rejects(
        "authentication:\n  webhook:\n    cacheTTL: -1s\n",
        &["authentication.webhook.cacheTTL"],
    );
    rejects(
        "authorization:\n  webhook:\n    cacheAuthorizedTTL: -1s\n",
        &["authorization.webhook.cacheAuthorizedTTL"],
    );
}

#[test]
fn periodic_durations_must_be_positive() {
    rejects_value(|c| c.sync_frequency = Duration::ZERO, "syncFrequency");
    rejects_value(
        |c| c.file_check_frequency = Duration::ZERO,
        "fileCheckFrequency",
    );
    rejects_value(
        |c| c.http_check_frequency = Duration::ZERO,
        "httpCheckFrequency",
    );
    rejects_value(
        |c| c.node_status_update_frequency = Duration::ZERO,
        "nodeStatusUpdateFrequency",
    );
    rejects_value(
        |c| c.node_status_report_frequency = Duration::ZERO,
        "nodeStatusReportFrequency",
    );
    rejects_value(
        |c| c.runtime_request_timeout = Duration::ZERO,
        "runtimeRequestTimeout",
    );
}

#[test]
fn counts_must_not_be_negative() {
    for field in [
        "maxPods",
        "eventRecordQPS",
        "eventBurst",
        "registryPullQPS",
        "registryBurst",
        "kubeAPIQPS",
        "kubeAPIBurst",
        "podsPerCore",
        "maxOpenFiles",
    ] {
        rejects(&format!("{field}: -1\n"), &[field]);
    }
    assert_eq!(accepts("eventRecordQPS: 0\n").event_record_qps, 0);
}

#[test]
fn node_lease_duration_positive() {
    rejects(
        "nodeLeaseDurationSeconds: -3\n",
        &["nodeLeaseDurationSeconds"],
    );
    rejects_value(
        |c| c.node_lease_duration_seconds = 0,
        "nodeLeaseDurationSeconds",
    );
}

#[test]
fn cgroup_driver_is_cgroupfs_or_systemd() {
    rejects("cgroupDriver: upstart\n", &["cgroupDriver"]);
    rejects("cgroupDriver: Systemd\n", &["cgroupDriver"]);
    accepts("cgroupDriver: systemd\n");
}

#[test]
fn enumerated_modes() {
    rejects("hairpinMode: always\n", &["hairpinMode"]);
    rejects("authorization:\n  mode: RBAC\n", &["authorization.mode"]);
    accepts("hairpinMode: none\nauthorization:\n  mode: AlwaysAllow\n");
}

#[test]
fn addresses_are_ip_addresses() {
    rejects("address: localhost\n", &["address"]);
    rejects("healthzBindAddress: 300.1.1.1\n", &["healthzBindAddress"]);
    rejects("clusterDNS: [10.0.0.10, dns.local]\n", &["clusterDNS[1]"]);
    let c = accepts("address: \"::\"\nclusterDNS: [\"fd00::10\"]\n");
    assert!(c.address.is_ipv6());
}

#[test]
fn register_with_taints_are_valid_taints() {
    rejects(
        "registerWithTaints:\n- key: a\n  effect: NoRun\n",
        &["registerWithTaints[0].effect"],
    );
    rejects(
        "registerWithTaints:\n- key: a\n  effect: NoSchedule\n- key: b\n  effect: \"\"\n",
        &["registerWithTaints[1].effect"],
    );
    rejects(
        "registerWithTaints:\n- key: \"bad key\"\n  effect: NoExecute\n",
        &["registerWithTaints[0].key"],
    );
    rejects(
        "registerWithTaints:\n- key: a\n  value: \"not valid!\"\n  effect: NoExecute\n",
        &["registerWithTaints[0].value"],
    );
    rejects(
        "registerWithTaints:\n- key: a\n  effect: NoExecute\n  timeAdded: \"2024-01-01T00:00:00Z\"\n",
        &["registerWithTaints[0].timeAdded"],
    );
    let c = accepts(
        "registerWithTaints:\n- key: example.com/dedicated\n  value: gpu\n  effect: PreferNoSchedule\n",
    );
    assert_eq!(
        c.register_with_taints[0].effect,
        node_config::TaintEffect::PreferNoSchedule
    );
}

#[test]
fn max_parallel_image_pulls_rules() {
    rejects(
        "serializeImagePulls: false\nmaxParallelImagePulls: 0\n",
        &["maxParallelImagePulls"],
    );
    rejects("maxParallelImagePulls: -2\n", &["maxParallelImagePulls"]);
    rejects(
        "serializeImagePulls: true\nmaxParallelImagePulls: 3\n",
        &["maxParallelImagePulls"],
    );
    accepts("serializeImagePulls: true\nmaxParallelImagePulls: 1\n");
    accepts("serializeImagePulls: false\nmaxParallelImagePulls: 4\n");
}

#[test]
fn shutdown_grace_periods() {
    rejects(
        "shutdownGracePeriod: 10s\nshutdownGracePeriodCriticalPods: 20s\n",
        &["shutdownGracePeriodCriticalPods"],
    );
    rejects("shutdownGracePeriod: 500ms\n", &["shutdownGracePeriod"]);
    rejects(
        "shutdownGracePeriod: 10s\nshutdownGracePeriodCriticalPods: 100ms\n",
        &["shutdownGracePeriodCriticalPods"],
    );
    rejects("shutdownGracePeriod: -1s\n", &["shutdownGracePeriod"]);
    accepts("shutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 10s\n");
}

#[test]
fn container_log_rotation() {
    rejects("containerLogMaxFiles: 1\n", &["containerLogMaxFiles"]);
    rejects("containerLogMaxFiles: -1\n", &["containerLogMaxFiles"]);
    rejects("containerLogMaxSize: ten\n", &["containerLogMaxSize"]);
    rejects("containerLogMaxSize: -10Mi\n", &["containerLogMaxSize"]);
    rejects("containerLogMaxWorkers: 0\n", &["containerLogMaxWorkers"]);
    rejects(
        "containerLogMonitorInterval: 1s\n",
        &["containerLogMonitorInterval"],
    );
    let c = accepts("containerLogMaxFiles: 2\ncontainerLogMaxSize: 1.5Mi\n");
    assert_eq!(c.container_log_max_size.as_bytes(), 1_572_864);
}

#[test]
fn eviction_unknown_signal() {
    rejects(
        "evictionHard:\n  swap.available: 1Gi\n",
        &["evictionHard[swap.available]"],
    );
    rejects(
        "evictionMinimumReclaim:\n  disk.available: 1Gi\n",
        &["evictionMinimumReclaim[disk.available]"],
    );
}

#[test]
fn eviction_bad_quantity() {
    rejects(
        "evictionHard:\n  memory.available: 100MB\n",
        &["evictionHard[memory.available]"],
    );
    rejects(
        "evictionHard:\n  memory.available: \"0\"\n",
        &["evictionHard[memory.available]"],
    );
}

#[test]
fn eviction_percentage_range() {
    rejects(
        "evictionHard:\n  nodefs.available: 101%\n",
        &["evictionHard[nodefs.available]"],
    );
    rejects(
        "evictionSoft:\n  nodefs.available: -5%\nevictionSoftGracePeriod:\n  nodefs.available: 1m\n",
        &["evictionSoft[nodefs.available]"],
    );
    let c = accepts("evictionHard:\n  nodefs.available: 100%\n  imagefs.available: 0%\n");
    assert!(
        c.eviction_thresholds().unwrap().is_empty(),
        "0% and 100% disable"
    );
}

#[test]
fn eviction_soft_needs_grace_period() {
    rejects(
        "evictionSoft:\n  memory.available: 500Mi\n",
        &["evictionSoftGracePeriod[memory.available]"],
    );
    rejects(
        "evictionSoft:\n  memory.available: 500Mi\nevictionSoftGracePeriod:\n  memory.available: soon\n",
        &["evictionSoftGracePeriod[memory.available]"],
    );
    rejects(
        "evictionSoftGracePeriod:\n  memory.available: -1m\n",
        &["evictionSoftGracePeriod[memory.available]"],
    );
}

#[test]
fn eviction_minimum_reclaim_not_negative() {
    rejects(
        "evictionMinimumReclaim:\n  memory.available: -1Mi\n",
        &["evictionMinimumReclaim[memory.available]"],
    );
    rejects(
        "evictionMinimumReclaim:\n  nodefs.available: 0%\n",
        &["evictionMinimumReclaim[nodefs.available]"],
    );
}

#[test]
fn enforce_node_allocatable_rules() {
    rejects(
        "enforceNodeAllocatable: [pods, everything]\n",
        &["enforceNodeAllocatable[1]"],
    );
    rejects(
        "enforceNodeAllocatable: [none, pods]\n",
        &["enforceNodeAllocatable[0]"],
    );
    rejects(
        "enforceNodeAllocatable: [pods, pods]\n",
        &["enforceNodeAllocatable[1]"],
    );
    rejects(
        "enforceNodeAllocatable: [system-reserved]\n",
        &["systemReservedCgroup"],
    );
    rejects(
        "enforceNodeAllocatable: [kube-reserved-compressible]\n",
        &["kubeReservedCgroup"],
    );
    rejects(
        "enforceNodeAllocatable: [system-reserved, system-reserved-compressible]\nsystemReservedCgroup: /system.slice\n",
        &["enforceNodeAllocatable"],
    );
    rejects(
        "cgroupsPerQOS: false\nenforceNodeAllocatable: [pods]\n",
        &["cgroupsPerQOS"],
    );
    let c = accepts("cgroupsPerQOS: false\nenforceNodeAllocatable: [none]\n");
    assert_eq!(
        c.enforce_node_allocatable,
        [NodeAllocatableEnforcement::None]
    );
}

#[test]
fn system_cgroups_need_cgroup_root() {
    rejects("systemCgroups: /system.slice\n", &["systemCgroups"]);
    accepts("systemCgroups: /system.slice\ncgroupRoot: /\n");
}

#[test]
fn oom_score_adj_range() {
    rejects("oomScoreAdj: -1001\n", &["oomScoreAdj"]);
    accepts("oomScoreAdj: 1000\n");
}

#[test]
fn node_status_max_images_at_least_minus_one() {
    rejects("nodeStatusMaxImages: -2\n", &["nodeStatusMaxImages"]);
    accepts("nodeStatusMaxImages: -1\n");
}

#[test]
fn pod_logs_dir_absolute_clean_ascii() {
    rejects("podLogsDir: var/log/pods\n", &["podLogsDir"]);
    rejects("podLogsDir: /var/log/../pods\n", &["podLogsDir"]);
    rejects("podLogsDir: /var/log/pöds\n", &["podLogsDir"]);
}

#[test]
fn reserved_resources() {
    rejects("kubeReserved:\n  gpu: \"1\"\n", &["kubeReserved[gpu]"]);
    rejects(
        "systemReserved:\n  memory: -1Gi\n",
        &["systemReserved[memory]"],
    );
    accepts(
        "systemReserved:\n  cpu: 500m\n  memory: 1Gi\n  ephemeral-storage: 1Gi\n  pid: \"1000\"\n",
    );
}

#[test]
fn container_runtime_endpoint_required() {
    rejects_value(
        |c| c.container_runtime_endpoint.clear(),
        "containerRuntimeEndpoint",
    );
}

#[test]
fn all_errors_are_collected() {
    let err = rejects(
        "port: 0\nmaxPods: -1\nimageGCHighThresholdPercent: 200\ncgroupDriver: nope\n\
         containerLogMaxFiles: 0\nevictionSoft:\n  memory.available: 1Gi\n\
         registerWithTaints:\n- key: a\n  effect: Bad\n",
        &[
            "maxPods",
            "imageGCHighThresholdPercent",
            "cgroupDriver",
            "containerLogMaxFiles",
            "evictionSoftGracePeriod[memory.available]",
            "registerWithTaints[0].effect",
        ],
    );
    assert!(err.field_errors().len() >= 6, "{err}");
    for e in err.field_errors() {
        assert!(!e.message.ends_with('.'), "{e}");
        assert!(
            e.message.chars().next().is_some_and(|c| !c.is_uppercase()),
            "lowercase: {e}"
        );
    }
}

#[test]
fn system_log_query_needs_its_feature_gate_and_the_log_handler() {
    let err = rejects("enableSystemLogQuery: true\n", &["enableSystemLogQuery"]);
    assert!(
        err.to_string()
            .contains("NodeLogQuery feature gate is required"),
        "{err}"
    );
    let err = rejects(
        "enableSystemLogQuery: true\nenableSystemLogHandler: false\nfeatureGates:\n  NodeLogQuery: true\n",
        &["enableSystemLogQuery"],
    );
    assert!(
        err.to_string()
            .contains("enableSystemLogHandler is required for enableSystemLogQuery"),
        "{err}"
    );
    let c = accepts("enableSystemLogQuery: true\nfeatureGates:\n  NodeLogQuery: true\n");
    assert!(c.enable_system_log_query);
    assert!(!accepts("").enable_system_log_query, "off by default");
}

#[test]
fn memory_throttling_factor_in_range_with_memory_qos() {
    let err = rejects(
        "featureGates:\n  MemoryQoS: true\nmemoryThrottlingFactor: 1.5\n",
        &["memoryThrottlingFactor"],
    );
    assert!(
        err.to_string()
            .contains("1.5 must be greater than 0 and less than or equal to 1.0"),
        "{err}"
    );
    rejects(
        "featureGates:\n  MemoryQoS: true\nmemoryThrottlingFactor: 0\n",
        &["memoryThrottlingFactor"],
    );
    let c = accepts("featureGates:\n  MemoryQoS: true\nmemoryThrottlingFactor: 0.8\n");
    assert_eq!(c.memory_throttling_factor, 0.8);
    // Without the gate it is not looked at, as upstream.
    accepts("memoryThrottlingFactor: 7\n");
    assert_eq!(accepts("").memory_throttling_factor, 0.9);
}

#[test]
fn cpu_cfs_quota_period_needs_its_gate_and_a_range() {
    assert_eq!(accepts("").cpu_cfs_quota_period, Duration::from_millis(100));
    let err = rejects("cpuCFSQuotaPeriod: 50ms\n", &["cpuCFSQuotaPeriod"]);
    assert!(
        err.to_string()
            .contains("requires feature gate CustomCPUCFSQuotaPeriod"),
        "{err}"
    );
    let c = accepts("cpuCFSQuotaPeriod: 50ms\nfeatureGates:\n  CustomCPUCFSQuotaPeriod: true\n");
    assert_eq!(c.cpu_cfs_quota_period, Duration::from_millis(50));
    let err = rejects(
        "cpuCFSQuotaPeriod: 2s\nfeatureGates:\n  CustomCPUCFSQuotaPeriod: true\n",
        &["cpuCFSQuotaPeriod"],
    );
    assert!(err.to_string().contains("between 1ms and 1sec"), "{err}");
}

#[test]
fn swap_behavior_and_crash_loop_maximum() {
    assert_eq!(accepts("").swap_behavior, node_config::SwapBehavior::NoSwap);
    assert_eq!(
        accepts("memorySwap:\n  swapBehavior: LimitedSwap\n").swap_behavior,
        node_config::SwapBehavior::LimitedSwap
    );
    rejects(
        "memorySwap:\n  swapBehavior: UnlimitedSwap\n",
        &["memorySwap.swapBehavior"],
    );
    let c = accepts("crashLoopBackOff:\n  maxContainerRestartPeriod: 30s\n");
    assert_eq!(
        c.max_container_restart_period,
        Some(Duration::from_secs(30))
    );
    rejects(
        "crashLoopBackOff:\n  maxContainerRestartPeriod: 10m\n",
        &["crashLoopBackOff.maxContainerRestartPeriod"],
    );
    let err = rejects(
        "crashLoopBackOff:\n  maxContainerRestartPeriod: 30s\nfeatureGates:\n  KubeletCrashLoopBackOffMax: false\n",
        &["crashLoopBackOff.maxContainerRestartPeriod"],
    );
    assert!(
        err.to_string()
            .contains("KubeletCrashLoopBackOffMax not enabled"),
        "{err}"
    );
}
