//! Pod quality-of-service classes, computed as the API server and the kubelet compute them
//! (`pkg/apis/core/v1/helper/qos`).
//!
//! The class decides the pod's cgroup parent, the OOM score of its containers and which pods
//! the eviction manager reclaims first. Only `cpu` and `memory` count, and only quantities
//! above zero:
//!
//! - **BestEffort**: no container (init or regular) requests or limits cpu or memory;
//! - **Guaranteed**: every container limits both cpu and memory, and the summed requests equal
//!   the summed limits;
//! - **Burstable**: anything else.
//!
//! When the pod sets pod-level resources (`spec.resources`), those decide instead of the
//! containers' (the `PodLevelResources` feature, on by default).
//!
//! ```
//! use k8s_openapi::api::core::v1::Pod;
//! use node_core::qos::{pod_qos, QosClass};
//!
//! let pod = Pod::default();
//! assert_eq!(pod_qos(&pod), QosClass::BestEffort);
//! assert_eq!(pod_qos(&pod).as_str(), "BestEffort");
//! ```

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use node_config::Quantity;

/// The resources that take part in the QoS decision.
const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// A pod's quality-of-service class (`status.qosClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Every container has equal cpu and memory requests and limits.
    Guaranteed,
    /// Some container requests or limits cpu or memory, but the pod is not Guaranteed.
    Burstable,
    /// No container requests or limits cpu or memory.
    BestEffort,
}

impl QosClass {
    /// The API spelling: `Guaranteed`, `Burstable` or `BestEffort`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// Reads the API spelling back; `None` for anything else.
    pub fn from_api(s: &str) -> Option<Self> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Computes the pod's QoS class from its spec, like upstream `ComputePodQOS`.
///
/// A cpu or memory request that is missing while the matching limit is set counts as equal to
/// the limit (the API server defaults requests from limits when it decodes a pod; pods read from
/// a manifest here may not have been defaulted). Quantities that do not parse are ignored.
pub fn pod_qos(pod: &Pod) -> QosClass {
    // Sums in nanounits, keyed by resource name.
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;

    let spec = pod.spec.as_ref();
    let pod_level = spec.and_then(|s| s.resources.as_ref());
    if let Some(resources) = pod_level.filter(|r| has_any(r)) {
        let found_limits = accumulate(resources, &mut requests, &mut limits);
        if !found_limits.iter().all(|f| *f) {
            guaranteed = false;
        }
    } else {
        let containers = spec.into_iter().flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        });
        for container in containers {
            let found_limits = match container.resources.as_ref() {
                Some(resources) => accumulate(resources, &mut requests, &mut limits),
                None => [false; 2],
            };
            if !found_limits.iter().all(|f| *f) {
                guaranteed = false;
            }
        }
    }

    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests
            .iter()
            .all(|(name, request)| limits.get(name) == Some(request))
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// The QoS class the pod reports: `status.qosClass` when it is set to a known class (the API
/// server sets it at creation and it never changes), otherwise [`pod_qos`]. Upstream
/// `GetPodQOS`.
pub fn effective_pod_qos(pod: &Pod) -> QosClass {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(QosClass::from_api)
        .unwrap_or_else(|| pod_qos(pod))
}

/// The value for the pod's `status.qosClass`: [`effective_pod_qos`] in its API spelling.
pub fn status_qos_string(pod: &Pod) -> String {
    effective_pod_qos(pod).as_str().to_string()
}

/// Whether pod-level resources name cpu or memory at all (otherwise the containers decide).
fn has_any(resources: &ResourceRequirements) -> bool {
    let names = |list: &Option<BTreeMap<String, ApiQuantity>>| {
        list.as_ref()
            .is_some_and(|l| l.keys().any(|k| QOS_RESOURCES.contains(&k.as_str())))
    };
    names(&resources.requests) || names(&resources.limits)
}

/// Adds one requirement set's positive cpu/memory requests and limits to the sums, the request
/// defaulting to the limit. Returns which of cpu and memory had a positive limit.
fn accumulate<'a>(
    resources: &ResourceRequirements,
    requests: &mut BTreeMap<&'a str, i128>,
    limits: &mut BTreeMap<&'a str, i128>,
) -> [bool; 2] {
    let mut found = [false; 2];
    for (i, &name) in QOS_RESOURCES.iter().enumerate() {
        let limit = positive(resources.limits.as_ref(), name);
        let request = match resources.requests.as_ref().and_then(|r| r.get(name)) {
            Some(_) => positive(resources.requests.as_ref(), name),
            None => limit,
        };
        if let Some(request) = request {
            add(requests, name, request);
        }
        if let Some(limit) = limit {
            found[i] = true;
            add(limits, name, limit);
        }
    }
    found
}

fn add<'a>(sums: &mut BTreeMap<&'a str, i128>, name: &'a str, q: Quantity) {
    let sum = sums.entry(name).or_insert(0);
    *sum = sum.saturating_add(q.nanos());
}

/// The named quantity of a resource list if it parses and is above zero.
fn positive(list: Option<&BTreeMap<String, ApiQuantity>>, name: &str) -> Option<Quantity> {
    crate::downward::parse_quantity(list, name).filter(|q| q.nanos() > 0)
}

/// The cgroup of a pod with `uid` of class `qos`, as upstream's pod container manager names
/// it under `cgroup_root` (with `cgroupsPerQOS`):
/// - cgroupfs: `/kubepods/pod<uid>` (Guaranteed), `/kubepods/burstable/pod<uid>`,
///   `/kubepods/besteffort/pod<uid>`;
/// - systemd: the expanded slice path, `-` in names written `_`:
///   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice`.
pub fn pod_cgroup(
    cgroup_root: &str,
    driver: node_config::CgroupDriver,
    qos: QosClass,
    uid: &str,
) -> String {
    let mut name: Vec<String> = cgroup_root
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    name.push("kubepods".into());
    match qos {
        QosClass::Guaranteed => {}
        QosClass::Burstable => name.push("burstable".into()),
        QosClass::BestEffort => name.push("besteffort".into()),
    }
    name.push(format!("pod{uid}"));
    cgroup_path(&name, driver)
}

/// The cgroup all pods run under (`/kubepods`, or `/kubepods.slice` with systemd) below
/// `cgroup_root`.
pub fn pods_cgroup(cgroup_root: &str, driver: node_config::CgroupDriver) -> String {
    let mut name: Vec<String> = cgroup_root
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    name.push("kubepods".into());
    cgroup_path(&name, driver)
}

/// A cgroup name (its components) as a path of `driver`.
fn cgroup_path(name: &[String], driver: node_config::CgroupDriver) -> String {
    use node_config::CgroupDriver;
    match driver {
        CgroupDriver::Cgroupfs => format!("/{}", name.join("/")),
        CgroupDriver::Systemd => {
            let mut path = String::new();
            let mut prefix = String::new();
            for component in name {
                let component = component.replace('-', "_");
                path.push('/');
                path.push_str(&prefix);
                path.push_str(&component);
                path.push_str(".slice");
                prefix.push_str(&component);
                prefix.push('-');
            }
            path
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};

    fn list(items: &[(&str, &str)]) -> Option<BTreeMap<String, ApiQuantity>> {
        if items.is_empty() {
            return None;
        }
        Some(
            items
                .iter()
                .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                .collect(),
        )
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: if init.is_empty() { None } else { Some(init) },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn best_effort_without_requests_or_limits() {
        assert_eq!(pod_qos(&Pod::default()), QosClass::BestEffort);
        assert_eq!(
            pod_qos(&pod(vec![container(&[], &[])], vec![])),
            QosClass::BestEffort
        );
        // Zero quantities and other resources do not count.
        let c = container(
            &[("cpu", "0"), ("ephemeral-storage", "1Gi")],
            &[("memory", "0")],
        );
        assert_eq!(pod_qos(&pod(vec![c], vec![])), QosClass::BestEffort);
    }

    #[test]
    fn guaranteed_when_requests_equal_limits() {
        let c = container(
            &[("cpu", "500m"), ("memory", "128Mi")],
            &[("cpu", "0.5"), ("memory", "134217728")],
        );
        assert_eq!(
            pod_qos(&pod(vec![c.clone()], vec![c])),
            QosClass::Guaranteed
        );
    }

    #[test]
    fn limits_only_count_as_requests() {
        let c = container(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        assert_eq!(pod_qos(&pod(vec![c], vec![])), QosClass::Guaranteed);
        // A request present but zero does not default from the limit.
        let c = container(&[("cpu", "0")], &[("cpu", "1"), ("memory", "1Gi")]);
        assert_eq!(pod_qos(&pod(vec![c], vec![])), QosClass::Burstable);
    }

    #[test]
    fn burstable_cases() {
        // Requests below limits.
        let c = container(
            &[("cpu", "100m"), ("memory", "64Mi")],
            &[("cpu", "1"), ("memory", "64Mi")],
        );
        assert_eq!(pod_qos(&pod(vec![c], vec![])), QosClass::Burstable);
        // Only a memory limit.
        let c = container(&[], &[("memory", "64Mi")]);
        assert_eq!(pod_qos(&pod(vec![c], vec![])), QosClass::Burstable);
        // One guaranteed container, one best-effort container.
        let g = container(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        let b = container(&[], &[]);
        assert_eq!(
            pod_qos(&pod(vec![g.clone(), b.clone()], vec![])),
            QosClass::Burstable
        );
        // An init container counts like the others.
        assert_eq!(pod_qos(&pod(vec![g], vec![b])), QosClass::Burstable);
        // Only requests.
        let c = container(&[("cpu", "1")], &[]);
        assert_eq!(pod_qos(&pod(vec![c], vec![])), QosClass::Burstable);
    }

    #[test]
    fn pod_level_resources_decide_when_set() {
        let mut p = pod(vec![container(&[], &[])], vec![]);
        p.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            limits: list(&[("cpu", "1"), ("memory", "1Gi")]),
            ..Default::default()
        });
        assert_eq!(pod_qos(&p), QosClass::Guaranteed);
        p.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            requests: list(&[("cpu", "1")]),
            ..Default::default()
        });
        assert_eq!(pod_qos(&p), QosClass::Burstable);
    }

    #[test]
    fn status_class_wins_for_effective_qos() {
        let mut p = pod(vec![container(&[], &[])], vec![]);
        assert_eq!(status_qos_string(&p), "BestEffort");
        p.status = Some(PodStatus {
            qos_class: Some("Guaranteed".into()),
            ..Default::default()
        });
        assert_eq!(effective_pod_qos(&p), QosClass::Guaranteed);
        assert_eq!(pod_qos(&p), QosClass::BestEffort);
        p.status.as_mut().unwrap().qos_class = Some("Weird".into());
        assert_eq!(effective_pod_qos(&p), QosClass::BestEffort);
    }

    #[test]
    fn names_round_trip() {
        for class in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            assert_eq!(QosClass::from_api(class.as_str()), Some(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        assert_eq!(QosClass::from_api("guaranteed"), None);
    }
}

/// The resources of a pod's cgroup (upstream `ResourceConfigForPod`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodResourceConfig {
    /// `cpu.shares` (v1; v2's `cpu.weight` is converted from it): from the CPU requests.
    pub cpu_shares: u64,
    /// CFS quota in microseconds per [`CFS_PERIOD_US`], when every container limits CPU
    /// (always for Guaranteed pods) and `cpuCFSQuota` is on.
    pub cpu_quota: Option<i64>,
    /// The memory limit in bytes, when every container limits memory.
    pub memory_limit: Option<i64>,
    /// The pod's CPU request, millicores (what the Burstable cgroup's shares sum up).
    pub cpu_request_milli: i64,
}

/// The default CFS period, microseconds.
pub const CFS_PERIOD_US: i64 = 100_000;

/// Upstream `MilliCPUToShares`: 1024 per CPU, between 2 and 262144.
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return 2;
    }
    u64::try_from((milli * 1024 / 1000).clamp(2, 262_144)).unwrap_or(2)
}

/// Upstream `MilliCPUToQuota`: the quota for `milli` CPUs per `period` µs, at least 1000.
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli <= 0 {
        return 0;
    }
    (milli * period / 1000).max(1000)
}

/// The pod's cgroup resources: CPU shares from its requests; quota and memory limit from the
/// sums of its containers' limits when every container (regular, sidecar; init containers
/// count by their maximum) declares one.
pub fn pod_resource_config(pod: &Pod, cfs_quota: bool) -> PodResourceConfig {
    pod_resource_config_with_period(pod, cfs_quota.then_some(CFS_PERIOD_US))
}

/// [`pod_resource_config`] with the CFS period (`cpuCFSQuotaPeriod`, µs) the quota is for;
/// `None`: no quota.
pub fn pod_resource_config_with_period(pod: &Pod, cfs_period: Option<i64>) -> PodResourceConfig {
    let qos = pod_qos(pod);
    if qos == QosClass::BestEffort {
        return PodResourceConfig {
            cpu_shares: 2,
            ..Default::default()
        };
    }
    let Some(spec) = pod.spec.as_ref() else {
        return PodResourceConfig::default();
    };
    let of = |c: &k8s_openapi::api::core::v1::Container, kind: &str, name: &str| {
        let list = c.resources.as_ref().and_then(|r| match kind {
            "requests" => r.requests.as_ref(),
            _ => r.limits.as_ref(),
        });
        crate::downward::parse_quantity(list, name).filter(|q| q.nanos() > 0)
    };
    let (mut cpu_declared, mut memory_declared) = (true, true);
    let (mut cpu_request, mut cpu_limit, mut memory_limit) = (0i64, 0i64, 0i64);
    let (mut init_cpu_request, mut init_cpu_limit, mut init_memory_limit) = (0i64, 0i64, 0i64);
    let init = spec.init_containers.iter().flatten();
    for c in spec
        .containers
        .iter()
        .chain(init.clone().filter(|c| crate::pod_manager::is_sidecar(c)))
    {
        // A request defaults to the limit (the API's defaulting, which static pods may lack).
        cpu_request += of(c, "requests", "cpu")
            .or_else(|| of(c, "limits", "cpu"))
            .map_or(0, |q| q.milli_value());
        match of(c, "limits", "cpu") {
            Some(q) => cpu_limit += q.milli_value(),
            None => cpu_declared = false,
        }
        match of(c, "limits", "memory") {
            Some(q) => memory_limit += q.value(),
            None => memory_declared = false,
        }
    }
    for c in init.filter(|c| !crate::pod_manager::is_sidecar(c)) {
        init_cpu_request = init_cpu_request.max(
            of(c, "requests", "cpu")
                .or_else(|| of(c, "limits", "cpu"))
                .map_or(0, |q| q.milli_value()),
        );
        match of(c, "limits", "cpu") {
            Some(q) => init_cpu_limit = init_cpu_limit.max(q.milli_value()),
            None => cpu_declared = false,
        }
        match of(c, "limits", "memory") {
            Some(q) => init_memory_limit = init_memory_limit.max(q.value()),
            None => memory_declared = false,
        }
    }
    let cpu_request = cpu_request.max(init_cpu_request);
    let cpu_limit = cpu_limit.max(init_cpu_limit);
    let memory_limit = memory_limit.max(init_memory_limit);
    let guaranteed = qos == QosClass::Guaranteed;
    PodResourceConfig {
        cpu_request_milli: cpu_request,
        cpu_shares: milli_cpu_to_shares(cpu_request),
        cpu_quota: cfs_period
            .filter(|_| guaranteed || cpu_declared)
            .map(|period| milli_cpu_to_quota(cpu_limit, period)),
        memory_limit: (guaranteed || memory_declared).then_some(memory_limit),
    }
}

#[cfg(test)]
mod resource_config_tests {
    use super::*;

    fn pod(containers: serde_json::Value, init: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": containers, "initContainers": init}
        }))
        .unwrap()
    }

    #[test]
    fn pod_cgroup_resources_follow_upstream() {
        let guaranteed = pod(
            serde_json::json!([
                {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}
            ]),
            serde_json::json!([]),
        );
        assert_eq!(
            pod_resource_config(&guaranteed, true),
            PodResourceConfig {
                cpu_shares: 768,
                cpu_quota: Some(75_000),
                memory_limit: Some(192 << 20),
                cpu_request_milli: 750,
            }
        );
        assert_eq!(pod_resource_config(&guaranteed, false).cpu_quota, None);
        // Burstable: one container without a memory limit, so no pod memory limit.
        let burstable = pod(
            serde_json::json!([
                {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1"}}}
            ]),
            serde_json::json!([{"name": "init", "resources": {"limits": {"cpu": "3", "memory": "2Gi"}}}]),
        );
        let c = pod_resource_config(&burstable, true);
        // b's request defaults to its limit: 100m + 1; the init container's 3 CPUs win.
        assert_eq!(c.cpu_shares, 3072);
        assert_eq!(
            c.cpu_quota,
            Some(300_000),
            "the init container's 3 CPUs win"
        );
        assert_eq!(c.memory_limit, None);
        let best_effort = pod(serde_json::json!([{"name": "a"}]), serde_json::json!([]));
        assert_eq!(
            pod_resource_config(&best_effort, true),
            PodResourceConfig {
                cpu_shares: 2,
                ..Default::default()
            }
        );
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(5, CFS_PERIOD_US), 1000);
    }
}
