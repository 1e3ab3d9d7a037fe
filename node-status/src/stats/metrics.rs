//! The summary as Prometheus metrics: `/metrics/resource` (what metrics-server reads for
//! `kubectl top`, named as upstream's resource metrics collector) and the `container_*`
//! subset of `/metrics/cadvisor` that dashboards read.
//!
//! Every sample carries the time its figure was read as its timestamp, as upstream's
//! collectors give them (metrics-server computes rates from them).

use node_core::stats::{ContainerStats, CpuStats, MemoryStats, PodStats, Summary};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A metric family being filled; families left empty are not written (the text format has no
/// empty family).
struct Family {
    family: MetricFamily,
}

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        Family { family }
    }

    fn push(&mut self, labels: &[(&str, &str)], value: f64, time: Option<&Time>) {
        let mut metric = Metric::default();
        metric.set_label(
            labels
                .iter()
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect(),
        );
        match self.family.get_field_type() {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
        }
        if let Some(time) = time {
            metric.set_timestamp_ms(time.0.as_millisecond());
        }
        self.family.mut_metric().push(metric);
    }
}

fn finish(families: Vec<Family>) -> Vec<MetricFamily> {
    families
        .into_iter()
        .map(|f| f.family)
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// Cumulative CPU in core-seconds and its time.
fn cpu_seconds(cpu: Option<&CpuStats>) -> Option<(f64, Option<&Time>)> {
    let cpu = cpu?;
    Some((cpu.usage_core_nano_seconds? as f64 / 1e9, cpu.time.as_ref()))
}

fn working_set(memory: Option<&MemoryStats>) -> Option<(f64, Option<&Time>)> {
    let memory = memory?;
    Some((memory.working_set_bytes? as f64, memory.time.as_ref()))
}

/// Upstream's resource metrics (`/metrics/resource`) of `summary`; `Err` means the summary
/// could not be read (then only `scrape_error 1`).
pub fn resource_metrics(summary: Result<&Summary, ()>) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut node_cpu = Family::new(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        COUNTER,
    );
    let mut node_memory = Family::new(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        GAUGE,
    );
    let mut pod_cpu = Family::new(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        COUNTER,
    );
    let mut pod_memory = Family::new(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        GAUGE,
    );
    let mut container_cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        COUNTER,
    );
    let mut container_memory = Family::new(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        GAUGE,
    );
    let mut container_start = Family::new(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        GAUGE,
    );
    let mut scrape_error = Family::new(
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        GAUGE,
    );
    match summary {
        Err(()) => scrape_error.push(&[], 1.0, None),
        Ok(summary) => {
            scrape_error.push(&[], 0.0, None);
            let node = &summary.node;
            if let Some((v, t)) = cpu_seconds(node.cpu.as_ref()) {
                node_cpu.push(&[], v, t);
            }
            if let Some((v, t)) = working_set(node.memory.as_ref()) {
                node_memory.push(&[], v, t);
            }
            for pod in &summary.pods {
                let (name, namespace) = (&pod.pod_ref.name, &pod.pod_ref.namespace);
                let labels = [("namespace", namespace.as_str()), ("pod", name.as_str())];
                if let Some((v, t)) = cpu_seconds(pod.cpu.as_ref()) {
                    pod_cpu.push(&labels, v, t);
                }
                if let Some((v, t)) = working_set(pod.memory.as_ref()) {
                    pod_memory.push(&labels, v, t);
                }
                for c in &pod.containers {
                    let labels = [
                        ("container", c.name.as_str()),
                        ("namespace", namespace.as_str()),
                        ("pod", name.as_str()),
                    ];
                    if let Some((v, t)) = cpu_seconds(c.cpu.as_ref()) {
                        container_cpu.push(&labels, v, t);
                    }
                    if let Some((v, t)) = working_set(c.memory.as_ref()) {
                        container_memory.push(&labels, v, t);
                    }
                    if let Some(start) = &c.start_time {
                        let seconds = start.0.as_millisecond() as f64 / 1000.0;
                        container_start.push(&labels, seconds, Some(start));
                    }
                }
            }
        }
    }
    finish(vec![
        container_cpu,
        container_memory,
        container_start,
        node_cpu,
        node_memory,
        pod_cpu,
        pod_memory,
        scrape_error,
    ])
}

/// The labels cAdvisor puts on a container's series: `container`, `id` (the cgroup; `/` for
/// the node), `image`, `name` (the runtime's container), `namespace`, `pod`. The summary has
/// neither the cgroup nor the image of a container, so those are empty.
fn cadvisor_labels<'a>(
    container: &'a str,
    id: &'a str,
    pod: Option<&'a PodStats>,
) -> [(&'static str, &'a str); 6] {
    let (namespace, name) = pod
        .map(|p| (p.pod_ref.namespace.as_str(), p.pod_ref.name.as_str()))
        .unwrap_or(("", ""));
    [
        ("container", container),
        ("id", id),
        ("image", ""),
        ("name", ""),
        ("namespace", namespace),
        ("pod", name),
    ]
}

/// The `container_*` series of `/metrics/cadvisor` that dashboards read, from `summary`: the
/// node (`id="/"`), each pod (`container=""`, as cAdvisor's pod cgroup) and each container.
pub fn cadvisor_metrics(summary: &Summary) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        COUNTER,
    );
    let mut working = Family::new(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        GAUGE,
    );
    let mut usage = Family::new(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        GAUGE,
    );
    let mut rss = Family::new("container_memory_rss", "Size of RSS in bytes.", GAUGE);
    let mut fs_usage = Family::new(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        GAUGE,
    );
    let mut start = Family::new(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        GAUGE,
    );
    let mut rx = Family::new(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        COUNTER,
    );
    let mut tx = Family::new(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        COUNTER,
    );
    let mut memory = |labels: &[(&str, &str)], m: Option<&MemoryStats>| {
        let Some(m) = m else { return };
        let t = m.time.as_ref();
        if let Some(v) = m.working_set_bytes {
            working.push(labels, v as f64, t);
        }
        if let Some(v) = m.usage_bytes {
            usage.push(labels, v as f64, t);
        }
        if let Some(v) = m.rss_bytes {
            rss.push(labels, v as f64, t);
        }
    };
    let node = &summary.node;
    let labels = cadvisor_labels("", "/", None);
    if let Some((v, t)) = cpu_seconds(node.cpu.as_ref()) {
        cpu.push(&labels, v, t);
    }
    memory(&labels, node.memory.as_ref());
    for pod in &summary.pods {
        let labels = cadvisor_labels("", "", Some(pod));
        if let Some((v, t)) = cpu_seconds(pod.cpu.as_ref()) {
            cpu.push(&labels, v, t);
        }
        memory(&labels, pod.memory.as_ref());
        if let Some(network) = &pod.network {
            for interface in std::iter::once(&network.default).chain(&network.interfaces) {
                let mut labels: Vec<(&str, &str)> = labels.to_vec();
                labels.insert(2, ("interface", interface.name.as_str()));
                if let Some(v) = interface.rx_bytes {
                    rx.push(&labels, v as f64, network.time.as_ref());
                }
                if let Some(v) = interface.tx_bytes {
                    tx.push(&labels, v as f64, network.time.as_ref());
                }
            }
        }
        for c in &pod.containers {
            container_series(c, pod, &mut cpu, &mut fs_usage, &mut start, &mut memory);
        }
    }
    finish(vec![cpu, fs_usage, usage, rss, working, rx, tx, start])
}

fn container_series(
    c: &ContainerStats,
    pod: &PodStats,
    cpu: &mut Family,
    fs_usage: &mut Family,
    start: &mut Family,
    memory: &mut impl FnMut(&[(&str, &str)], Option<&MemoryStats>),
) {
    let labels = cadvisor_labels(&c.name, "", Some(pod));
    if let Some((v, t)) = cpu_seconds(c.cpu.as_ref()) {
        cpu.push(&labels, v, t);
    }
    memory(&labels, c.memory.as_ref());
    if let Some(rootfs) = &c.rootfs
        && let Some(used) = rootfs.used_bytes
    {
        let mut with_device: Vec<(&str, &str)> = labels.to_vec();
        with_device.insert(1, ("device", ""));
        fs_usage.push(&with_device, used as f64, rootfs.time.as_ref());
    }
    if let Some(t) = &c.start_time {
        start.push(&labels, t.0.as_millisecond() as f64 / 1000.0, Some(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_core::stats::{NodeStats, PodReference};

    fn time(ms: i64) -> Option<Time> {
        Some(Time(
            k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap(),
        ))
    }

    fn summary() -> Summary {
        let cpu = |ns: u64| {
            Some(CpuStats {
                time: time(1_700_000_000_000),
                usage_core_nano_seconds: Some(ns),
                ..Default::default()
            })
        };
        let memory = |ws: u64| {
            Some(MemoryStats {
                time: time(1_700_000_000_000),
                working_set_bytes: Some(ws),
                ..Default::default()
            })
        };
        Summary {
            node: NodeStats {
                node_name: "n".into(),
                cpu: cpu(357_350_000_000),
                memory: memory(1_000_000),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u".into(),
                },
                cpu: cpu(2_000_000_000),
                memory: memory(4096),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start_time: time(1_690_000_000_000),
                    cpu: cpu(1_500_000_000),
                    memory: memory(2048),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn text(families: &[MetricFamily]) -> String {
        String::from_utf8(node_core::metrics::encode_families(families)).unwrap()
    }

    #[test]
    fn resource_metrics_are_upstreams_with_timestamps() {
        let out = text(&resource_metrics(Ok(&summary())));
        for line in [
            "node_cpu_usage_seconds_total 357.35 1700000000000",
            "node_memory_working_set_bytes 1000000 1700000000000",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 2 1700000000000",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 4096 1700000000000",
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"web\"} 1.5 1700000000000",
            "container_memory_working_set_bytes{container=\"c\",namespace=\"default\",pod=\"web\"} 2048 1700000000000",
            "container_start_time_seconds{container=\"c\",namespace=\"default\",pod=\"web\"} 1690000000 1690000000000",
            "scrape_error 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert!(
            out.contains("# TYPE node_cpu_usage_seconds_total counter"),
            "{out}"
        );
    }

    #[test]
    fn a_failed_summary_is_a_scrape_error_and_nothing_else() {
        let out = text(&resource_metrics(Err(())));
        assert!(out.lines().any(|l| l == "scrape_error 1"), "{out}");
        assert!(!out.contains("node_cpu"), "{out}");
    }

    #[test]
    fn cadvisor_series_carry_cadvisors_labels() {
        let out = text(&cadvisor_metrics(&summary()));
        for line in [
            "container_cpu_usage_seconds_total{container=\"\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"} 357.35 1700000000000",
            "container_cpu_usage_seconds_total{container=\"c\",id=\"\",image=\"\",name=\"\",namespace=\"default\",pod=\"web\"} 1.5 1700000000000",
            "container_memory_working_set_bytes{container=\"\",id=\"\",image=\"\",name=\"\",namespace=\"default\",pod=\"web\"} 4096 1700000000000",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
