//! In-place pod resize (`InPlacePodVerticalScaling`, GA): the resources the kubelet has
//! *allocated* to each pod, apart from the ones its spec asks for.
//!
//! A pod is allocated its spec's resources when it is admitted. When its spec's resources
//! change later (the API server's `resize` subresource), the change is allocated only if the
//! node can hold it, as upstream's allocation manager decides: a pod asking for more than the
//! node's allocatable is `Infeasible`, one that does not fit beside the other pods' allocations
//! is `Deferred` (tried again at its next sync), anything else is allocated at once. The
//! runtime always works from the allocated resources ([`Allocations::allocated_pod`]): it then
//! resizes the running containers to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};

use crate::admission::{ResourceList, request_of};

/// Condition type: a resize the kubelet has not allocated yet.
pub const POD_RESIZE_PENDING: &str = "PodResizePending";
/// Condition type: allocated resources not yet applied to the running containers.
pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";
/// The sync error (and the `PodResizeInProgress` condition's message) of a resize the
/// runtime could not apply.
pub const RESIZE_ERROR: &str = "ResizeError";
/// Condition reason: the resize waits until the node has room for it.
pub const REASON_DEFERRED: &str = "Deferred";
/// Condition reason: the node can never hold the resize.
pub const REASON_INFEASIBLE: &str = "Infeasible";

/// The resources of one pod: each container's (init and regular, by name) and the pod-level
/// ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allocation {
    containers: BTreeMap<String, Option<ResourceRequirements>>,
    pod: Option<ResourceRequirements>,
}

impl Allocation {
    /// The resources `pod`'s spec asks for.
    pub fn of(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Allocation::default();
        };
        Allocation {
            containers: spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| (c.name.clone(), c.resources.clone()))
                .collect(),
            pod: spec.resources.clone(),
        }
    }

    /// `pod` with these resources in its spec.
    fn apply_to(&self, pod: &Pod) -> Pod {
        let mut pod = pod.clone();
        if let Some(spec) = pod.spec.as_mut() {
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                if let Some(resources) = self.containers.get(&c.name) {
                    c.resources = resources.clone();
                }
            }
            spec.resources = self.pod.clone();
        }
        pod
    }
}

/// A resize the kubelet did not allocate, and why (the `PodResizePending` condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// [`REASON_DEFERRED`] or [`REASON_INFEASIBLE`].
    pub reason: &'static str,
    /// Upstream's message, e.g. `Node didn't have enough capacity: memory, requested: ...`.
    pub message: String,
}

/// The allocations of the pods the node runs, by UID, with their pending resizes.
#[derive(Debug, Default)]
pub struct Allocations {
    inner: Mutex<HashMap<String, (Allocation, Option<Pending>)>>,
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

impl Allocations {
    /// Allocates `pod` its spec's resources unless it has an allocation already (admission).
    pub fn admit(&self, pod: &Pod) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .entry(uid(pod).to_string())
            .or_insert_with(|| (Allocation::of(pod), None));
    }

    /// `pod` as the runtime must run it: its spec with the allocated resources; `None` when
    /// that is the spec itself (no allocation, or the allocation is the spec's).
    pub fn allocated_pod(&self, pod: &Pod) -> Option<Pod> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (allocation, _) = inner.get(uid(pod))?;
        (*allocation != Allocation::of(pod)).then(|| allocation.apply_to(pod))
    }

    /// Whether `pod`'s spec asks for other resources than it was allocated (or is pending).
    pub fn changed(&self, pod: &Pod) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.get(uid(pod)).is_some_and(|(allocation, pending)| {
            pending.is_some() || *allocation != Allocation::of(pod)
        })
    }

    /// The resize `pod` waits for, if any.
    pub fn pending(&self, pod: &Pod) -> Option<Pending> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.get(uid(pod)).and_then(|(_, p)| p.clone())
    }

    /// Decides on a change of `pod`'s spec resources (upstream `handlePodResourcesResize`):
    /// allocates it when the node's `allocatable` holds it beside `others` (the other active
    /// pods, as allocated), and otherwise records it as pending. Returns the pending resize.
    pub fn resize(&self, pod: &Pod, others: &[Pod], allocatable: &ResourceList) -> Option<Pending> {
        let wanted = Allocation::of(pod);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner
            .entry(uid(pod).to_string())
            .or_insert_with(|| (wanted.clone(), None));
        if entry.0 == wanted {
            entry.1 = None;
            return None;
        }
        let decision = fits(pod, others, allocatable);
        match decision {
            None => *entry = (wanted, None),
            Some(ref pending) => entry.1 = Some(pending.clone()),
        }
        decision
    }

    /// The UIDs of the pods with a pending resize.
    pub fn pending_uids(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .iter()
            .filter(|(_, (_, pending))| pending.is_some())
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Forgets a pod that is gone.
    pub fn forget(&self, uid: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

/// Whether `pod` (with its spec's resources) fits the node: `None` if so, else why not, in
/// upstream's words (memory first for an infeasible resize).
fn fits(pod: &Pod, others: &[Pod], allocatable: &ResourceList) -> Option<Pending> {
    let resources = ["memory", "cpu"];
    for resource in resources {
        let requested = request_of(pod, resource);
        let capacity = allocatable.get(resource).copied().unwrap_or(i64::MAX);
        if requested > capacity {
            return Some(Pending {
                reason: REASON_INFEASIBLE,
                message: format!(
                    "Node didn't have enough capacity: {resource}, requested: {requested}, capacity: {capacity}"
                ),
            });
        }
    }
    for resource in ["cpu", "memory"] {
        let requested = request_of(pod, resource);
        let capacity = allocatable.get(resource).copied().unwrap_or(i64::MAX);
        let used: i64 = others.iter().map(|p| request_of(p, resource)).sum();
        if requested.saturating_add(used) > capacity {
            return Some(Pending {
                reason: REASON_DEFERRED,
                message: format!(
                    "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(uid: &str, cpu: &str, memory: &str) -> Pod {
        let list = BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ]);
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(list.clone()),
                        limits: Some(list),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn limit(p: &Pod, name: &str) -> String {
        p.spec.as_ref().unwrap().containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()[name]
            .0
            .clone()
    }

    #[test]
    fn a_resize_that_fits_is_allocated_one_that_does_not_waits_or_is_infeasible() {
        let allocatable: ResourceList =
            [("cpu".to_string(), 2000), ("memory".to_string(), 4 << 30)].into();
        let a = Allocations::default();
        let other = pod("other", "1", "1Gi");
        let others = std::slice::from_ref(&other);
        a.admit(&pod("p", "500m", "1Gi"));
        // Unchanged: nothing pending, the spec as it is.
        assert_eq!(
            a.resize(&pod("p", "500m", "1Gi"), others, &allocatable),
            None
        );
        // Fits beside the other pod.
        let bigger = pod("p", "1", "2Gi");
        assert_eq!(a.resize(&bigger, others, &allocatable), None);
        assert_eq!(
            limit(
                &a.allocated_pod(&bigger).unwrap_or(bigger.clone()),
                "memory"
            ),
            "2Gi"
        );
        // Beyond the node: infeasible, the allocation stays.
        let huge = pod("p", "1", "8Gi");
        let pending = a.resize(&huge, others, &allocatable).unwrap();
        assert_eq!(pending.reason, REASON_INFEASIBLE);
        assert_eq!(
            pending.message,
            format!(
                "Node didn't have enough capacity: memory, requested: {}, capacity: {}",
                8u64 << 30,
                4u64 << 30
            )
        );
        assert_eq!(limit(&a.allocated_pod(&huge).unwrap(), "memory"), "2Gi");
        assert_eq!(a.pending(&huge), Some(pending));
        // Within the node but not beside the other pod: deferred until it leaves.
        let wide = pod("p", "1500m", "2Gi");
        let pending = a.resize(&wide, others, &allocatable).unwrap();
        assert_eq!(pending.reason, REASON_DEFERRED);
        assert_eq!(
            pending.message,
            "Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000"
        );
        assert_eq!(limit(&a.allocated_pod(&wide).unwrap(), "cpu"), "1");
        assert_eq!(a.resize(&wide, &[], &allocatable), None);
        assert!(a.allocated_pod(&wide).is_none());
        assert_eq!(a.pending(&wide), None);
        a.forget("p");
        assert!(a.allocated_pod(&huge).is_none());
    }
}
