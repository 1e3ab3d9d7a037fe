//! Resource fit at admission (upstream's `noderesources` fit as the kubelet runs it in
//! `canAdmitPod`): a pod is admitted when its requests fit in the node's allocatable beside
//! the requests of the pods already admitted and not finished.
//!
//! A pod's request for a resource is upstream's `PodRequests`: the pod-level
//! `spec.resources.requests` when set; else the regular containers' sum plus the sidecars
//! (restartable init containers, which run alongside), or the largest regular init container
//! (plus the sidecars started before it) if that is more; plus the pod's `overhead`.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::downward::{NodeAllocatable, parse_quantity};
use crate::pod_manager::is_sidecar;

/// A pod's requests: cpu in millicores, memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// cpu, millicores.
    pub cpu_millis: i64,
    /// memory, bytes.
    pub memory_bytes: i64,
}

impl std::ops::Add for Requests {
    type Output = Requests;
    fn add(self, o: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
        }
    }
}

impl Requests {
    fn max(self, o: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            memory_bytes: self.memory_bytes.max(o.memory_bytes),
        }
    }

    fn of(list: Option<&std::collections::BTreeMap<String, ApiQuantity>>) -> Requests {
        Requests {
            cpu_millis: parse_quantity(list, "cpu").map_or(0, |q| q.milli_value()),
            memory_bytes: parse_quantity(list, "memory").map_or(0, |q| q.value()),
        }
    }

    fn of_container(c: &Container) -> Requests {
        Requests::of(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
    }
}

/// The pod's requests (upstream `PodRequests`).
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else {
        return Requests::default();
    };
    let overhead = Requests::of(spec.overhead.as_ref());
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref())
        && !pod_level.is_empty()
    {
        return Requests::of(Some(pod_level)) + overhead;
    }
    let mut sum = spec
        .containers
        .iter()
        .map(Requests::of_container)
        .fold(Requests::default(), |a, b| a + b);
    let (mut sidecars, mut init_max) = (Requests::default(), Requests::default());
    for init in spec.init_containers.iter().flatten() {
        let r = Requests::of_container(init);
        if is_sidecar(init) {
            sum = sum + r;
            sidecars = sidecars + r;
        } else {
            init_max = init_max.max(r + sidecars);
        }
    }
    sum.max(init_max) + overhead
}

/// Whether `pod` fits beside `admitted` (the requests of the pods admitted and not finished)
/// in `allocatable`: `Err((reason, message))` with upstream's `OutOfcpu` / `OutOfmemory` and
/// `Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000`.
pub fn fit(
    pod: &Pod,
    admitted: Requests,
    allocatable: NodeAllocatable,
) -> Result<(), (String, String)> {
    let wanted = pod_requests(pod);
    for (name, requested, used, capacity) in [
        (
            "cpu",
            wanted.cpu_millis,
            admitted.cpu_millis,
            allocatable.cpu_millis,
        ),
        (
            "memory",
            wanted.memory_bytes,
            admitted.memory_bytes,
            allocatable.memory_bytes,
        ),
    ] {
        if requested > 0 && requested + used > capacity {
            return Err((
                format!("OutOf{name}"),
                format!(
                    "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn container(name: &str, cpu: &str, memory: &str, sidecar: bool) -> Container {
        Container {
            name: name.into(),
            restart_policy: sidecar.then(|| "Always".into()),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), ApiQuantity(cpu.into())),
                        ("memory".to_string(), ApiQuantity(memory.into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn requests_as_upstream_sums_them() {
        let p = pod(
            vec![
                container("a", "100m", "64Mi", false),
                container("b", "200m", "64Mi", false),
            ],
            vec![],
        );
        assert_eq!(
            pod_requests(&p),
            Requests {
                cpu_millis: 300,
                memory_bytes: 128 << 20
            }
        );
        // A large regular init container wins; sidecars add to everything after them.
        let p = pod(
            vec![container("a", "100m", "64Mi", false)],
            vec![
                container("side", "50m", "16Mi", true),
                container("setup", "1", "32Mi", false),
            ],
        );
        assert_eq!(
            pod_requests(&p),
            Requests {
                cpu_millis: 1050,
                memory_bytes: 80 << 20
            }
        );
    }

    #[test]
    fn a_pod_that_does_not_fit_is_out_of_the_resource_with_upstreams_message() {
        let node = NodeAllocatable {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
        };
        let used = Requests {
            cpu_millis: 1500,
            memory_bytes: 512 << 20,
        };
        let big = pod(vec![container("a", "1", "64Mi", false)], vec![]);
        assert_eq!(
            fit(&big, used, node),
            Err((
                "OutOfcpu".to_string(),
                "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
                    .to_string()
            ))
        );
        let hungry = pod(vec![container("a", "100m", "1Gi", false)], vec![]);
        assert_eq!(fit(&hungry, used, node).unwrap_err().0, "OutOfmemory");
        let small = pod(vec![container("a", "100m", "64Mi", false)], vec![]);
        assert_eq!(fit(&small, used, node), Ok(()));
        let best_effort = pod(vec![Container::default()], vec![]);
        assert_eq!(
            fit(
                &best_effort,
                Requests {
                    cpu_millis: 5000,
                    memory_bytes: 5 << 30
                },
                node
            ),
            Ok(())
        );
    }
}
