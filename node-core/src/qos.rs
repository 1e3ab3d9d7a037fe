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
