//! The kubelet's own metrics, named and labelled as upstream's (`pkg/kubelet/metrics`,
//! `pkg/kubelet/server/metrics`), in a [`prometheus::Registry`] of their own.
//!
//! One [`KubeletMetrics`] is made by the binary and handed to the pieces that record into it:
//! the engine (PLEG relists, running pods and containers, pod worker durations, pod start
//! durations), the CRI client (runtime operations), the kubelet server (HTTP requests) and,
//! later, the eviction manager. [`KubeletMetrics::encode`] writes the Prometheus text format
//! that `/metrics` serves; the registry can take more collectors (the process collector, a
//! custom agent's own metrics) through [`KubeletMetrics::registry`].

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Upstream's `podStartupDurationBuckets`.
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// The content type of the Prometheus text format (version 0.0.4), as upstream answers.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The states `kubelet_running_containers` counts, as upstream labels them.
pub const CONTAINER_STATES: [&str; 4] = ["created", "running", "exited", "unknown"];

/// The kubelet's metrics. Cheap to share behind an `Arc`; every recording is a few atomics.
#[derive(Clone)]
pub struct KubeletMetrics {
    registry: Registry,
    /// `kubelet_node_name{node}`: always 1.
    pub node_name: IntGaugeVec,
    /// `kubelet_running_pods`: pods with a running sandbox (set by PLEG's relist).
    pub running_pods: IntGauge,
    /// `kubelet_running_containers{container_state}` (set by PLEG's relist).
    pub running_containers: IntGaugeVec,
    /// `kubelet_pod_start_duration_seconds`: from the kubelet first seeing a pod to it running.
    pub pod_start_duration: Histogram,
    /// `kubelet_pod_worker_duration_seconds{operation_type}`: one sync of one pod (create,
    /// update, sync, kill).
    pub pod_worker_duration: HistogramVec,
    /// `kubelet_pleg_relist_duration_seconds`.
    pub pleg_relist_duration: Histogram,
    /// `kubelet_pleg_relist_interval_seconds`: between the starts of two relists.
    pub pleg_relist_interval: Histogram,
    /// `kubelet_pleg_last_seen_seconds`: when PLEG last relisted (Unix seconds).
    pub pleg_last_seen: Gauge,
    /// `kubelet_runtime_operations_total{operation_type}`.
    pub runtime_operations: IntCounterVec,
    /// `kubelet_runtime_operations_errors_total{operation_type}`.
    pub runtime_operations_errors: IntCounterVec,
    /// `kubelet_runtime_operations_duration_seconds{operation_type}`.
    pub runtime_operations_duration: HistogramVec,
    /// `kubelet_started_pods_total`: sandboxes created.
    pub started_pods: IntCounter,
    /// `kubelet_started_pods_errors_total`.
    pub started_pods_errors: IntCounter,
    /// `kubelet_started_containers_total{container_type}`.
    pub started_containers: IntCounterVec,
    /// `kubelet_evictions{eviction_signal}`: pods the kubelet evicted.
    pub evictions: IntCounterVec,
    /// `kubelet_http_requests_total{method,path,server_type,long_running}`.
    pub http_requests: IntCounterVec,
    /// `kubelet_http_requests_duration_seconds{method,path,server_type,long_running}`.
    pub http_requests_duration: HistogramVec,
    /// `kubelet_http_inflight_requests{method,path,server_type,long_running}`.
    pub http_inflight_requests: IntGaugeVec,
    /// `/metrics/probes`: the prober's metrics, in a registry of their own as upstream
    /// serves them.
    probes: Registry,
    /// `prober_probe_total{probe_type,result,container,pod,namespace,pod_uid}`.
    pub probe_total: IntCounterVec,
}

impl std::fmt::Debug for KubeletMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletMetrics").finish_non_exhaustive()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).subsystem("kubelet")
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .subsystem("kubelet")
        .buckets(buckets)
}

const HTTP_LABELS: &[&str] = &["method", "path", "server_type", "long_running"];
const PROBE_LABELS: &[&str] = &[
    "probe_type",
    "result",
    "container",
    "pod",
    "namespace",
    "pod_uid",
];

fn pod_labels(pod: &k8s_openapi::api::core::v1::Pod) -> (&str, &str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    )
}

impl KubeletMetrics {
    /// The metrics of the kubelet of node `node_name`, registered in a new registry.
    pub fn new(node_name: &str) -> Self {
        // The names and labels are constants: building them cannot fail.
        let m = Self::build().expect("the kubelet's metric definitions are valid");
        m.node_name.with_label_values(&[node_name]).set(1);
        m
    }

    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = KubeletMetrics {
            node_name: IntGaugeVec::new(
                opts("node_name", "The node's name. The count is always 1."),
                &["node"],
            )?,
            running_pods: IntGauge::with_opts(opts(
                "running_pods",
                "Number of pods that have a running pod sandbox",
            ))?,
            running_containers: IntGaugeVec::new(
                opts(
                    "running_containers",
                    "Number of containers currently running",
                ),
                &["container_state"],
            )?,
            pod_start_duration: Histogram::with_opts(hopts(
                "pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
                POD_START_BUCKETS.to_vec(),
            ))?,
            pod_worker_duration: HistogramVec::new(
                hopts(
                    "pod_worker_duration_seconds",
                    "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
                    prometheus::DEFAULT_BUCKETS.to_vec(),
                ),
                &["operation_type"],
            )?,
            pleg_relist_duration: Histogram::with_opts(hopts(
                "pleg_relist_duration_seconds",
                "Duration in seconds for relisting pods in PLEG.",
                prometheus::DEFAULT_BUCKETS.to_vec(),
            ))?,
            pleg_relist_interval: Histogram::with_opts(hopts(
                "pleg_relist_interval_seconds",
                "Interval in seconds between relisting in PLEG.",
                prometheus::DEFAULT_BUCKETS.to_vec(),
            ))?,
            pleg_last_seen: Gauge::with_opts(opts(
                "pleg_last_seen_seconds",
                "Timestamp in seconds when PLEG was last seen active.",
            ))?,
            runtime_operations: IntCounterVec::new(
                opts(
                    "runtime_operations_total",
                    "Cumulative number of runtime operations by operation type.",
                ),
                &["operation_type"],
            )?,
            runtime_operations_errors: IntCounterVec::new(
                opts(
                    "runtime_operations_errors_total",
                    "Cumulative number of runtime operation errors by operation type.",
                ),
                &["operation_type"],
            )?,
            runtime_operations_duration: HistogramVec::new(
                hopts(
                    "runtime_operations_duration_seconds",
                    "Duration in seconds of runtime operations. Broken down by operation type.",
                    prometheus::exponential_buckets(0.005, 2.5, 14)?,
                ),
                &["operation_type"],
            )?,
            started_pods: IntCounter::with_opts(opts(
                "started_pods_total",
                "Cumulative number of pods started",
            ))?,
            started_pods_errors: IntCounter::with_opts(opts(
                "started_pods_errors_total",
                "Cumulative number of errors when starting pods",
            ))?,
            started_containers: IntCounterVec::new(
                opts(
                    "started_containers_total",
                    "Cumulative number of containers started",
                ),
                &["container_type"],
            )?,
            evictions: IntCounterVec::new(
                opts(
                    "evictions",
                    "Cumulative number of pod evictions by eviction signal",
                ),
                &["eviction_signal"],
            )?,
            http_requests: IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "Number of the http requests received since the server started",
                ),
                HTTP_LABELS,
            )?,
            http_requests_duration: HistogramVec::new(
                hopts(
                    "http_requests_duration_seconds",
                    "Duration in seconds to serve http requests",
                    prometheus::DEFAULT_BUCKETS.to_vec(),
                ),
                HTTP_LABELS,
            )?,
            http_inflight_requests: IntGaugeVec::new(
                opts(
                    "http_inflight_requests",
                    "Number of the inflight http requests",
                ),
                HTTP_LABELS,
            )?,
            registry,
            probes: Registry::new(),
            probe_total: IntCounterVec::new(
                Opts::new(
                    "probe_total",
                    "Cumulative number of a liveness, readiness or startup probe for a container by result.",
                )
                .subsystem("prober"),
                PROBE_LABELS,
            )?,
        };
        m.probes.register(Box::new(m.probe_total.clone()))?;
        let r = &m.registry;
        r.register(Box::new(m.node_name.clone()))?;
        r.register(Box::new(m.running_pods.clone()))?;
        r.register(Box::new(m.running_containers.clone()))?;
        r.register(Box::new(m.pod_start_duration.clone()))?;
        r.register(Box::new(m.pod_worker_duration.clone()))?;
        r.register(Box::new(m.pleg_relist_duration.clone()))?;
        r.register(Box::new(m.pleg_relist_interval.clone()))?;
        r.register(Box::new(m.pleg_last_seen.clone()))?;
        r.register(Box::new(m.runtime_operations.clone()))?;
        r.register(Box::new(m.runtime_operations_errors.clone()))?;
        r.register(Box::new(m.runtime_operations_duration.clone()))?;
        r.register(Box::new(m.started_pods.clone()))?;
        r.register(Box::new(m.started_pods_errors.clone()))?;
        r.register(Box::new(m.started_containers.clone()))?;
        r.register(Box::new(m.evictions.clone()))?;
        r.register(Box::new(m.http_requests.clone()))?;
        r.register(Box::new(m.http_requests_duration.clone()))?;
        r.register(Box::new(m.http_inflight_requests.clone()))?;
        Ok(m)
    }

    /// The registry, for more collectors (the process collector, an agent's own metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one runtime (CRI) call: `call` is the CRI method (`RunPodSandbox`), counted
    /// under upstream's operation type (`run_podsandbox`).
    pub fn observe_runtime_operation(&self, call: &str, elapsed: Duration, failed: bool) {
        let operation = runtime_operation_type(call);
        self.runtime_operations
            .with_label_values(&[operation])
            .inc();
        self.runtime_operations_duration
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
        if failed {
            self.runtime_operations_errors
                .with_label_values(&[operation])
                .inc();
        }
    }

    /// Sets the running pods and the containers per state, as PLEG saw them.
    pub fn set_running(&self, pods: i64, containers: &[(&str, i64)]) {
        self.running_pods.set(pods);
        for state in CONTAINER_STATES {
            let n = containers
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum();
            self.running_containers.with_label_values(&[state]).set(n);
        }
    }

    /// Sets `kubelet_running_pods` (pods with a running sandbox) and
    /// `kubelet_running_containers` from a listing of the runtime's pods.
    pub fn set_running_from(&self, pods: &[crate::runtime::RuntimePod]) {
        use crate::runtime::ContainerState;
        let running = pods
            .iter()
            .filter(|p| {
                p.sandboxes
                    .iter()
                    .any(|s| s.state == ContainerState::Running)
            })
            .count();
        let mut states = [0i64; 4];
        for c in pods.iter().flat_map(|p| &p.containers) {
            states[match c.state {
                ContainerState::Created => 0,
                ContainerState::Running => 1,
                ContainerState::Exited => 2,
                ContainerState::Unknown => 3,
            }] += 1;
        }
        let counts: Vec<(&str, i64)> = CONTAINER_STATES.into_iter().zip(states).collect();
        self.set_running(i64::try_from(running).unwrap_or(i64::MAX), &counts);
    }

    /// Counts one probe of `container` of `pod` (`probe_type` `Liveness`, `Readiness`,
    /// `Startup`; `result` `successful`, `failed`, `unknown`).
    pub fn count_probe(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        container: &str,
        probe_type: &str,
        result: &str,
    ) {
        let (namespace, name, uid) = pod_labels(pod);
        self.probe_total
            .with_label_values(&[probe_type, result, container, name, namespace, uid])
            .inc();
    }

    /// Drops a container's probe series (its worker stopped): nothing grows with the pods
    /// that came and went.
    pub fn forget_probe_labels(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        container: &str,
        probe_type: &str,
    ) {
        let (namespace, name, uid) = pod_labels(pod);
        for result in ["successful", "failed", "unknown"] {
            let _ = self
                .probe_total
                .remove_label_values(&[probe_type, result, container, name, namespace, uid]);
        }
    }

    /// `/metrics/probes` in the Prometheus text format.
    pub fn encode_probes(&self) -> Vec<u8> {
        encode_families(&self.probes.gather())
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        encode_families(&self.registry.gather())
    }
}

/// `families` in the Prometheus text format.
pub fn encode_families(families: &[prometheus::proto::MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec fails only on a malformed family, which gather() never gives.
    if let Err(e) = TextEncoder::new().encode(families, &mut out) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    out
}

/// Upstream's `operation_type` of a CRI method (`RunPodSandbox` -> `run_podsandbox`,
/// `ListContainers` -> `list_containers`).
pub fn runtime_operation_type(call: &str) -> &'static str {
    match call {
        "Version" => "version",
        "Status" => "status",
        "RuntimeConfig" => "runtime_config",
        "RunPodSandbox" => "run_podsandbox",
        "StopPodSandbox" => "stop_podsandbox",
        "RemovePodSandbox" => "remove_podsandbox",
        "PodSandboxStatus" => "podsandbox_status",
        "ListPodSandbox" => "list_podsandbox",
        "CreateContainer" => "create_container",
        "StartContainer" => "start_container",
        "StopContainer" => "stop_container",
        "RemoveContainer" => "remove_container",
        "ListContainers" => "list_containers",
        "ContainerStatus" => "container_status",
        "UpdateContainerResources" => "update_container",
        "ReopenContainerLog" => "reopen_container_log",
        "ExecSync" => "exec_sync",
        "Exec" => "exec",
        "Attach" => "attach",
        "PortForward" => "port_forward",
        "ContainerStats" => "container_stats",
        "ListContainerStats" => "list_container_stats",
        "PodSandboxStats" => "podsandbox_stats",
        "ListPodSandboxStats" => "list_podsandbox_stats",
        "UpdateRuntimeConfig" => "update_runtime_config",
        "GetContainerEvents" => "get_container_events",
        "ListImages" => "list_images",
        "ImageStatus" => "image_status",
        "PullImage" => "pull_image",
        "RemoveImage" => "remove_image",
        "ImageFsInfo" => "image_fs_info",
        _ => "other",
    }
}

/// Upstream's `path` label of a request to the kubelet server: the first path segment when
/// it is one the server serves (`/stats/summary` -> `stats`), the metrics endpoints by name
/// (`metrics/cadvisor`), else `other`.
pub fn http_path_bucket(path: &str) -> &'static str {
    const METRICS: [&str; 4] = [
        "metrics/cadvisor",
        "metrics/probes",
        "metrics/resource",
        "metrics/slis",
    ];
    let trimmed = path.trim_start_matches('/');
    if let Some(m) = METRICS
        .iter()
        .find(|m| trimmed == **m || trimmed.starts_with(&format!("{m}/")))
    {
        return m;
    }
    match trimmed.split('/').next().unwrap_or("") {
        "attach" => "attach",
        "checkpoint" => "checkpoint",
        "configz" => "configz",
        "containerLogs" => "containerLogs",
        "debug" => "debug",
        "exec" => "exec",
        "healthz" => "healthz",
        "logs" => "logs",
        "metrics" => "metrics",
        "pods" => "pods",
        "portForward" => "portForward",
        "run" => "run",
        "runningpods" => "runningpods",
        "spec" => "spec",
        "stats" => "stats",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &KubeletMetrics) -> String {
        String::from_utf8(m.encode()).unwrap()
    }

    #[test]
    fn the_node_name_and_every_family_are_exposed_with_upstream_names() {
        let m = KubeletMetrics::new("node-a");
        let out = text(&m);
        assert!(
            out.contains("kubelet_node_name{node=\"node-a\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE kubelet_running_pods gauge"), "{out}");
        assert!(
            out.contains("# TYPE kubelet_pod_start_duration_seconds histogram"),
            "{out}"
        );
    }

    #[test]
    fn runtime_operations_are_counted_under_upstream_operation_types() {
        let m = KubeletMetrics::new("n");
        m.observe_runtime_operation("RunPodSandbox", Duration::from_millis(30), false);
        m.observe_runtime_operation("RunPodSandbox", Duration::from_millis(30), true);
        m.observe_runtime_operation("ListContainers", Duration::from_millis(1), false);
        let out = text(&m);
        assert!(
            out.contains("kubelet_runtime_operations_total{operation_type=\"run_podsandbox\"} 2"),
            "{out}"
        );
        assert!(
            out.contains(
                "kubelet_runtime_operations_errors_total{operation_type=\"run_podsandbox\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("kubelet_runtime_operations_total{operation_type=\"list_containers\"} 1"),
            "{out}"
        );
        assert!(out.contains(
            "kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"run_podsandbox\",le=\"0.03125\"} 2"
        ), "{out}");
    }

    #[test]
    fn running_containers_are_set_for_every_state() {
        let m = KubeletMetrics::new("n");
        m.set_running(3, &[("running", 4), ("exited", 1)]);
        m.set_running(2, &[("running", 2)]);
        let out = text(&m);
        assert!(out.contains("kubelet_running_pods 2\n"), "{out}");
        assert!(
            out.contains("kubelet_running_containers{container_state=\"running\"} 2\n"),
            "{out}"
        );
        // An earlier count of a state that has no container now is reset, not kept.
        assert!(
            out.contains("kubelet_running_containers{container_state=\"exited\"} 0\n"),
            "{out}"
        );
    }

    #[test]
    fn request_paths_are_bucketed_as_upstream() {
        for (path, bucket) in [
            ("/stats/summary", "stats"),
            ("/containerLogs/ns/pod/c", "containerLogs"),
            ("/metrics", "metrics"),
            ("/metrics/cadvisor", "metrics/cadvisor"),
            ("/metrics/resource", "metrics/resource"),
            ("/pods", "pods"),
            ("/exec/ns/pod/c", "exec"),
            ("/nonsense/x", "other"),
            ("/", "other"),
        ] {
            assert_eq!(http_path_bucket(path), bucket, "{path}");
        }
    }
}
