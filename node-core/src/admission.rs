//! Pod admission, as upstream's chain of admit handlers (`canAdmitPod`).
//!
//! Each pod the kubelet is asked to run passes every [`PodAdmitHandler`] in turn, beside the
//! pods already admitted and not finished; the first refusal rejects it (phase Failed, the
//! handler's reason and message). The engine's chain is [`SysctlAllowlist`], then
//! [`PredicateAdmitHandler`] (the pod's OS, resource fit, node affinity, node name, host
//! ports, NoExecute taints); callers add their own (eviction adds its handler) with
//! `Kubelet::add_admit_handler`.
//!
//! A pod's request for a resource is upstream's `PodRequests`: the regular containers' sum
//! plus the sidecars (restartable init containers, which run alongside), or the largest
//! regular init container (plus the sidecars started before it) if that is more; pod-level
//! `spec.resources.requests` replace cpu and memory; plus the pod's `overhead`. cpu is counted
//! in millicores, everything else in units (bytes for memory and storage).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use node_config::Quantity;

use crate::pod_manager::{is_mirror_pod, is_sidecar};
use crate::pod_workers::is_static_pod;
use crate::qos::{QosClass, pod_qos};

#[cfg(test)]
mod tests;

/// Requests or allocatable amounts by resource name: cpu in millicores, the rest in units.
pub type ResourceList = BTreeMap<String, i64>;

/// Why a pod was not admitted: upstream's reason (`OutOfcpu`, `NodeAffinity`,
/// `SysctlForbidden`, ...) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The reason, as the pod's status and the event carry it.
    pub reason: String,
    /// The message (the status says `Pod was rejected: <message>`).
    pub message: String,
}

impl Rejection {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What a handler decides on: the pod, and the other pods admitted and not finished.
#[derive(Clone, Copy, Debug)]
pub struct AdmitAttributes<'a> {
    /// The pod to admit.
    pub pod: &'a Pod,
    /// The active pods (admitted, not terminal, or terminal but still terminating).
    pub other_pods: &'a [Pod],
}

/// One link of the admission chain (upstream `PodAdmitHandler`).
pub trait PodAdmitHandler: Send + Sync {
    /// `Ok` admits; `Err` rejects with a reason and message.
    fn admit(&self, attrs: &AdmitAttributes<'_>) -> Result<(), Rejection>;
}

/// The Node as the kubelet knows it, for admission: the initial node before registration
/// (its default labels, `--node-labels`, `registerWithTaints`, allocatable), then the API
/// server's copy as a watch of it delivers.
#[derive(Debug)]
pub struct NodeView {
    node: RwLock<Arc<Node>>,
}

impl NodeView {
    /// A view starting at `node`.
    pub fn new(node: Node) -> Arc<Self> {
        Arc::new(NodeView {
            node: RwLock::new(Arc::new(node)),
        })
    }

    /// The node as last set.
    pub fn get(&self) -> Arc<Node> {
        self.node.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the node (a newer copy from the API server).
    pub fn set(&self, node: Node) {
        *self.node.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(node);
    }
}

/// The node's allocatable amounts.
pub fn allocatable_of(node: &Node) -> ResourceList {
    list_of(node.status.as_ref().and_then(|s| s.allocatable.as_ref()))
}

/// The amount of a quantity of resource `name` (millicores for cpu); `None` if unparsable.
pub fn amount(name: &str, q: &ApiQuantity) -> Option<i64> {
    let q = q.0.parse::<Quantity>().ok()?;
    Some(if name == "cpu" {
        q.milli_value()
    } else {
        q.value()
    })
}

fn list_of(list: Option<&BTreeMap<String, ApiQuantity>>) -> ResourceList {
    list.into_iter()
        .flatten()
        .filter_map(|(name, q)| amount(name, q).map(|v| (name.clone(), v)))
        .collect()
}

fn add(to: &mut ResourceList, from: &ResourceList) {
    for (name, v) in from {
        *to.entry(name.clone()).or_default() += v;
    }
}

fn max_into(to: &mut ResourceList, from: &ResourceList) {
    for (name, v) in from {
        let e = to.entry(name.clone()).or_default();
        *e = (*e).max(*v);
    }
}

fn container_requests(c: &Container) -> ResourceList {
    list_of(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// The pod's requests (upstream `PodRequests`).
pub fn pod_requests(pod: &Pod) -> ResourceList {
    let Some(spec) = pod.spec.as_ref() else {
        return ResourceList::new();
    };
    let mut sum = ResourceList::new();
    for c in &spec.containers {
        add(&mut sum, &container_requests(c));
    }
    let (mut sidecars, mut init_max) = (ResourceList::new(), ResourceList::new());
    for init in spec.init_containers.iter().flatten() {
        let r = container_requests(init);
        if is_sidecar(init) {
            add(&mut sum, &r);
            add(&mut sidecars, &r);
        } else {
            let mut with_sidecars = r;
            add(&mut with_sidecars, &sidecars);
            max_into(&mut init_max, &with_sidecars);
        }
    }
    max_into(&mut sum, &init_max);
    // Pod-level requests stand for the containers' in the resources they support.
    let pod_level = list_of(spec.resources.as_ref().and_then(|r| r.requests.as_ref()));
    for (name, v) in pod_level {
        if name == "cpu" || name == "memory" || name.starts_with("hugepages-") {
            sum.insert(name, v);
        }
    }
    add(&mut sum, &list_of(spec.overhead.as_ref()));
    sum
}

/// The pod's request of one resource (upstream `GetResourceRequest`: a pod is 1 of `pods`).
pub fn request_of(pod: &Pod, resource: &str) -> i64 {
    if resource == "pods" {
        return 1;
    }
    pod_requests(pod).get(resource).copied().unwrap_or(0)
}

/// Whether a resource name is an extended resource (upstream `IsExtendedResourceName`): a
/// qualified name outside the `kubernetes.io/` domain, not a `requests.` quota name.
pub fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// One reason a pod does not fit the node (upstream's `PredicateFailureReason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PredicateFailure {
    /// Not enough of a resource (`InsufficientResourceError`).
    Insufficient {
        /// The resource.
        resource: String,
        /// The pod's request.
        requested: i64,
        /// The other pods' requests.
        used: i64,
        /// The node's allocatable.
        capacity: i64,
    },
    /// A predicate failed (`PredicateFailureError`): its name and reason.
    Predicate {
        /// `NodeAffinity`, `NodeName`, `NodePorts` or `TaintToleration`.
        name: &'static str,
        /// The scheduler plugin's reason.
        reason: &'static str,
    },
}

/// Upstream `nodeaffinity.ErrReasonPod`.
pub const NODE_AFFINITY_REASON: &str = "node(s) didn't match Pod's node affinity/selector";
/// Upstream `nodename.ErrReason`.
pub const NODE_NAME_REASON: &str = "node(s) didn't match the requested node name";
/// Upstream `nodeports.ErrReason`.
pub const NODE_PORTS_REASON: &str = "node(s) didn't have free ports for the requested pod ports";
/// Upstream `tainttoleration.ErrReasonNotMatch`.
pub const TAINT_TOLERATION_REASON: &str = "node(s) had taints that the pod didn't tolerate";

impl PredicateFailure {
    /// The rejection upstream's predicate admit handler makes of it.
    pub fn rejection(&self) -> Rejection {
        match self {
            PredicateFailure::Insufficient {
                resource,
                requested,
                used,
                capacity,
            } => Rejection::new(
                format!("OutOf{resource}"),
                format!(
                    "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            ),
            PredicateFailure::Predicate { name, reason } => {
                Rejection::new(*name, format!("Predicate {name} failed: {reason}"))
            }
        }
    }
}

/// Resource fit (upstream `noderesources.Fits`): the pod count, then cpu, memory,
/// ephemeral-storage, then the other resources the pod requests, each against allocatable
/// less the other pods' requests. Extended resources the node does not list are dropped from
/// the pod's requests, as upstream (cluster-level resources); a resource the node lists no
/// allocatable for at all is not checked.
pub fn fits_resources(
    pod: &Pod,
    other_pods: &[Pod],
    allocatable: &ResourceList,
) -> Vec<PredicateFailure> {
    let mut out = Vec::new();
    if let Some(&allowed) = allocatable.get("pods") {
        let used = other_pods.len() as i64;
        if used + 1 > allowed {
            out.push(PredicateFailure::Insufficient {
                resource: "pods".into(),
                requested: 1,
                used,
                capacity: allowed,
            });
        }
    }
    let wanted = pod_requests(pod);
    let mut used = ResourceList::new();
    for p in other_pods {
        add(&mut used, &pod_requests(p));
    }
    let natives = ["cpu", "memory", "ephemeral-storage"];
    let others = wanted.keys().filter(|k| !natives.contains(&k.as_str()));
    for name in natives.iter().copied().chain(others.map(String::as_str)) {
        let requested = wanted.get(name).copied().unwrap_or(0);
        if requested <= 0 {
            continue;
        }
        let Some(&capacity) = allocatable.get(name) else {
            continue;
        };
        let used = used.get(name).copied().unwrap_or(0);
        if requested + used > capacity {
            out.push(PredicateFailure::Insufficient {
                resource: name.to_string(),
                requested,
                used,
                capacity,
            });
        }
    }
    out
}

fn label_value<'a>(labels: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    labels.get(key).map(String::as_str)
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(bound)) => {
                    if op == "Gt" {
                        v > bound
                    } else {
                        v < bound
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches (its expressions and fields all hold; an empty term
/// matches nothing, as upstream).
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, label_value(labels, &r.key)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

/// Whether the pod's `nodeSelector` and required node affinity match the node (upstream
/// `GetRequiredNodeAffinity(pod).Match(node)`).
pub fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(selector) = &spec.node_selector
        && selector
            .iter()
            .any(|(k, v)| label_value(labels, k) != Some(v.as_str()))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, name)),
    }
}

/// Whether a toleration tolerates a taint (upstream `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first NoExecute taint of the node the pod does not tolerate.
pub fn untolerated_no_execute_taint<'a>(pod: &Pod, node: &'a Node) -> Option<&'a Taint> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// The host ports the pod's regular containers ask for: (host IP, protocol, port), with
/// upstream's defaults (`0.0.0.0`, `TCP`).
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| {
            let ip = p.host_ip.as_deref().filter(|ip| !ip.is_empty());
            (
                ip.unwrap_or("0.0.0.0").to_string(),
                p.protocol.as_deref().unwrap_or("TCP").to_string(),
                p.host_port.unwrap_or_default(),
            )
        })
        .collect()
}

/// Whether the pod's host ports are free beside the other pods' (upstream `nodeports.Fits`:
/// the same protocol and port conflict when either IP is `0.0.0.0` or both are the same).
pub fn host_ports_fit(pod: &Pod, other_pods: &[Pod]) -> bool {
    let used: Vec<_> = other_pods.iter().flat_map(host_ports).collect();
    host_ports(pod).iter().all(|(ip, proto, port)| {
        !used.iter().any(|(uip, uproto, uport)| {
            uproto == proto && uport == port && (ip == "0.0.0.0" || uip == "0.0.0.0" || ip == uip)
        })
    })
}

/// Upstream's `generalFilter`: resource fit, node affinity, node name, host ports, and (but
/// for static pods) NoExecute taints; every failure, in that order.
pub fn general_filter(pod: &Pod, other_pods: &[Pod], node: &Node) -> Vec<PredicateFailure> {
    let allocatable = allocatable_of(node);
    let mut out = fits_resources(
        &without_missing_extended(pod, &allocatable),
        other_pods,
        &allocatable,
    );
    if !node_affinity_matches(pod, node) {
        out.push(PredicateFailure::Predicate {
            name: "NodeAffinity",
            reason: NODE_AFFINITY_REASON,
        });
    }
    let wanted = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if let Some(wanted) = wanted.filter(|n| !n.is_empty())
        && Some(wanted) != node.metadata.name.as_deref()
    {
        out.push(PredicateFailure::Predicate {
            name: "NodeName",
            reason: NODE_NAME_REASON,
        });
    }
    if !host_ports_fit(pod, other_pods) {
        out.push(PredicateFailure::Predicate {
            name: "NodePorts",
            reason: NODE_PORTS_REASON,
        });
    }
    if !is_static_pod(pod) && untolerated_no_execute_taint(pod, node).is_some() {
        out.push(PredicateFailure::Predicate {
            name: "TaintToleration",
            reason: TAINT_TOLERATION_REASON,
        });
    }
    out
}

/// The pod without the requests of extended resources the node does not list (upstream
/// `removeMissingExtendedResources`).
fn without_missing_extended(pod: &Pod, allocatable: &ResourceList) -> Pod {
    let mut pod = pod.clone();
    if let Some(spec) = pod.spec.as_mut() {
        let strip = |c: &mut Container| {
            if let Some(requests) = c.resources.as_mut().and_then(|r| r.requests.as_mut()) {
                requests.retain(|name, _| {
                    !is_extended_resource(name) || allocatable.contains_key(name)
                });
            }
        };
        spec.containers.iter_mut().for_each(strip);
        spec.init_containers.iter_mut().flatten().for_each(strip);
    }
    pod
}

/// What to do when a pod fails the predicates (upstream `AdmissionFailureHandler`): the
/// failures that remain (empty admits the pod), or an error.
pub trait AdmissionFailureHandler: Send + Sync {
    /// Handles the failures of `pod`.
    fn handle_admission_failure(
        &self,
        pod: &Pod,
        other_pods: &[Pod],
        failures: Vec<PredicateFailure>,
    ) -> Result<Vec<PredicateFailure>, String>;
}

/// Upstream's predicate admit handler: the pod's OS, then [`general_filter`] against the
/// node; failures go to the failure handler (critical pods preempt others), and the first
/// that remains rejects the pod.
pub struct PredicateAdmitHandler {
    node: Arc<NodeView>,
    failure_handler: Option<Arc<dyn AdmissionFailureHandler>>,
}

impl PredicateAdmitHandler {
    /// A handler checking pods against the node in `node`.
    pub fn new(
        node: Arc<NodeView>,
        failure_handler: Option<Arc<dyn AdmissionFailureHandler>>,
    ) -> Self {
        PredicateAdmitHandler {
            node,
            failure_handler,
        }
    }
}

impl PodAdmitHandler for PredicateAdmitHandler {
    fn admit(&self, attrs: &AdmitAttributes<'_>) -> Result<(), Rejection> {
        let pod = attrs.pod;
        let node = self.node.get();
        let os = std::env::consts::OS;
        // Upstream compares the pod's `kubernetes.io/os` label with the node's.
        let node_os = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/os"))
            .map_or(os, String::as_str);
        if let Some(label) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/os"))
            && label != node_os
        {
            return Err(Rejection::new(
                "PodOSSelectorNodeLabelDoesNotMatch",
                "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
            ));
        }
        if let Some(wanted) = pod.spec.as_ref().and_then(|s| s.os.as_ref())
            && wanted.name != os
        {
            return Err(Rejection::new(
                "PodOSNotSupported",
                "Failed to admit pod as the OS field doesn't match node OS",
            ));
        }
        if strict_groups_unsupported(pod, &node) {
            return Err(Rejection::new(
                "SupplementalGroupsPolicyNotSupported",
                "SupplementalGroupsPolicy=Strict is not supported in this node",
            ));
        }
        let mut failures = general_filter(pod, attrs.other_pods, &node);
        if !failures.is_empty()
            && let Some(handler) = &self.failure_handler
        {
            failures = handler
                .handle_admission_failure(pod, attrs.other_pods, failures)
                .map_err(|e| {
                    Rejection::new(
                        "UnexpectedAdmissionError",
                        format!(
                            "Unexpected error while attempting to recover from admission failure: {e}"
                        ),
                    )
                })?;
        }
        match failures.first() {
            None => Ok(()),
            Some(f) => Err(f.rejection()),
        }
    }
}

/// A pod asking for `supplementalGroupsPolicy: Strict` on a node whose runtime does not
/// honour it (upstream `rejectPodAdmissionBasedOnSupplementalGroupsPolicy`): the node's
/// `status.features` says so, or is missing from a node status that reports `nodeInfo`. A
/// standalone node's own view (no `nodeInfo`) leaves it to the runtime.
fn strict_groups_unsupported(pod: &Pod, node: &Node) -> bool {
    let strict = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.supplemental_groups_policy.as_deref())
        == Some("Strict");
    let Some(status) = node.status.as_ref().filter(|_| strict) else {
        return false;
    };
    match status.features.as_ref() {
        Some(f) => f.supplemental_groups_policy != Some(true),
        None => status.node_info.is_some(),
    }
}

/// Upstream `SystemCriticalPriority` (2 * 10^9).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Whether the pod is critical (upstream `IsCriticalPod`): static, mirror, or of system
/// critical priority.
pub fn is_critical_pod(pod: &Pod) -> bool {
    is_static_pod(pod)
        || is_mirror_pod(pod)
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// Whether `preemptor` may preempt `preemptee` (upstream `Preemptable`).
pub fn preemptable(preemptor: &Pod, preemptee: &Pod) -> bool {
    if is_critical_pod(preemptor) && !is_critical_pod(preemptee) {
        return true;
    }
    let priority = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority);
    match (priority(preemptor), priority(preemptee)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// What remains of `requirements` once `pods` are gone.
fn subtract(requirements: &[(String, i64)], pods: &[&Pod]) -> Vec<(String, i64)> {
    requirements
        .iter()
        .filter_map(|(name, quantity)| {
            let mut left = *quantity;
            for p in pods {
                left -= request_of(p, name);
                if left <= 0 {
                    break;
                }
            }
            (left > 0).then(|| (name.clone(), left))
        })
        .collect()
}

fn distance(requirements: &[(String, i64)], pod: &Pod) -> f64 {
    requirements
        .iter()
        .map(|(name, quantity)| {
            let remaining = (quantity - request_of(pod, name)) as f64;
            if remaining > 0.0 {
                (remaining / *quantity as f64).powi(2)
            } else {
                0.0
            }
        })
        .sum()
}

fn smaller_request(a: &Pod, b: &Pod) -> bool {
    for resource in ["memory", "cpu"] {
        let (ra, rb) = (request_of(a, resource), request_of(b, resource));
        if ra != rb {
            return ra < rb;
        }
    }
    true
}

fn by_distance(
    mut pods: Vec<&Pod>,
    mut requirements: Vec<(String, i64)>,
) -> Result<Vec<&Pod>, String> {
    let mut out = Vec::new();
    while !requirements.is_empty() {
        if pods.is_empty() {
            return Err(format!(
                "no set of running pods found to reclaim resources: {}",
                requirements_string(&requirements)
            ));
        }
        let mut best = (requirements.len() as f64 + 1.0, 0);
        for (i, p) in pods.iter().enumerate() {
            let d = distance(&requirements, p);
            if d < best.0 || (d == best.0 && smaller_request(p, pods[best.1])) {
                best = (d, i);
            }
        }
        let chosen = pods.swap_remove(best.1);
        requirements = subtract(&requirements, &[chosen]);
        out.push(chosen);
    }
    Ok(out)
}

fn requirements_string(requirements: &[(String, i64)]) -> String {
    let parts: String = requirements
        .iter()
        .map(|(n, q)| format!("(res: {n}, q: {q}), "))
        .collect();
    format!("[{parts}]")
}

/// The pods a critical pod preempts to free `requirements` (resource, amount missing), as
/// upstream's `getPodsToPreempt`: fewest guaranteed pods, then burstable, then best-effort,
/// each chosen by the shortest distance to what is still missing.
pub fn pods_to_preempt<'a>(
    pod: &Pod,
    pods: &'a [Pod],
    requirements: &[(String, i64)],
) -> Result<Vec<&'a Pod>, String> {
    let (mut best_effort, mut burstable, mut guaranteed) = (Vec::new(), Vec::new(), Vec::new());
    for p in pods.iter().filter(|p| preemptable(pod, p)) {
        match pod_qos(p) {
            QosClass::BestEffort => best_effort.push(p),
            QosClass::Burstable => burstable.push(p),
            QosClass::Guaranteed => guaranteed.push(p),
        }
    }
    let all: Vec<&Pod> = best_effort
        .iter()
        .chain(&burstable)
        .chain(&guaranteed)
        .copied()
        .collect();
    let unmet = subtract(requirements, &all);
    if !unmet.is_empty() {
        return Err(format!(
            "no set of running pods found to reclaim resources: {}",
            requirements_string(&unmet)
        ));
    }
    let lower: Vec<&Pod> = best_effort.iter().chain(&burstable).copied().collect();
    let guaranteed_out = by_distance(guaranteed, subtract(requirements, &lower))?;
    let without_burstable: Vec<&Pod> = best_effort
        .iter()
        .copied()
        .chain(guaranteed_out.iter().copied())
        .collect();
    let burstable_out = by_distance(burstable, subtract(requirements, &without_burstable))?;
    let without_best_effort: Vec<&Pod> = burstable_out
        .iter()
        .chain(&guaranteed_out)
        .copied()
        .collect();
    let best_effort_out = by_distance(best_effort, subtract(requirements, &without_best_effort))?;
    Ok(best_effort_out
        .into_iter()
        .chain(burstable_out)
        .chain(guaranteed_out)
        .collect())
}

/// The amounts a critical pod lacks: the insufficient resources among `failures`, or `None`
/// when some other predicate failed too (preemption cannot help then).
pub fn preemption_requirements(failures: &[PredicateFailure]) -> Option<Vec<(String, i64)>> {
    failures
        .iter()
        .map(|f| match f {
            PredicateFailure::Insufficient {
                resource,
                requested,
                used,
                capacity,
            } => Some((resource.clone(), requested - (capacity - used))),
            PredicateFailure::Predicate { .. } => None,
        })
        .collect()
}

/// The kernel namespace a sysctl belongs to (upstream component-helpers' `namespaceOf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysctlNamespace {
    /// The IPC namespace.
    Ipc,
    /// The network namespace.
    Net,
    /// The UTS namespace.
    Uts,
    /// The user namespace.
    User,
}

impl SysctlNamespace {
    fn as_str(self) -> &'static str {
        match self {
            SysctlNamespace::Ipc => "IPC",
            SysctlNamespace::Net => "Net",
            SysctlNamespace::Uts => "UTS",
            SysctlNamespace::User => "User",
        }
    }

    /// The namespace of a sysctl (dotted form), if it is known to be namespaced.
    pub fn of(sysctl: &str) -> Option<SysctlNamespace> {
        use SysctlNamespace::*;
        let exact = [
            ("kernel.domainname", Uts),
            ("kernel.sem", Ipc),
            ("kernel.shmall", Ipc),
            ("kernel.shmmax", Ipc),
            ("kernel.shmmni", Ipc),
            ("kernel.shm_rmid_forced", Ipc),
            ("kernel.shm", Ipc),
            ("kernel.msgmax", Ipc),
            ("kernel.msgmnb", Ipc),
            ("kernel.msgmni", Ipc),
            ("kernel.msg", Ipc),
        ];
        if let Some((_, ns)) = exact.iter().find(|(n, _)| *n == sysctl) {
            return Some(*ns);
        }
        [("net", Net), ("fs.mqueue", Ipc), ("user", User)]
            .iter()
            .find(|(p, _)| sysctl.starts_with(&format!("{p}.")))
            .map(|(_, ns)| *ns)
    }
}

/// A sysctl name in dotted form (upstream `NormalizeName`): `/` separators become `.`, and
/// `.` become `/`, unless the first separator is already a dot.
pub fn normalize_sysctl(name: &str) -> String {
    let Some(first) = name.find(['.', '/']) else {
        return name.to_string();
    };
    if name.as_bytes()[first] == b'.' {
        return name.to_string();
    }
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// Upstream's safe sysctls with the kernel version (major, minor) each needs.
const SAFE_SYSCTLS: &[(&str, (u32, u32))] = &[
    ("kernel.shm_rmid_forced", (0, 0)),
    ("net.ipv4.ip_local_port_range", (0, 0)),
    ("net.ipv4.tcp_syncookies", (0, 0)),
    ("net.ipv4.ping_group_range", (0, 0)),
    ("net.ipv4.ip_unprivileged_port_start", (0, 0)),
    ("net.ipv4.ip_local_reserved_ports", (3, 16)),
    ("net.ipv4.tcp_keepalive_time", (4, 5)),
    ("net.ipv4.tcp_fin_timeout", (4, 6)),
    ("net.ipv4.tcp_keepalive_intvl", (4, 5)),
    ("net.ipv4.tcp_keepalive_probes", (4, 5)),
    ("net.ipv4.tcp_rmem", (0, 0)),
    ("net.ipv4.tcp_wmem", (0, 0)),
];

/// The safe sysctls for a kernel of version `kernel` (upstream `SafeSysctlAllowlist`); those
/// that need a known version are left out when it is unknown.
pub fn safe_sysctls(kernel: Option<(u32, u32)>) -> Vec<&'static str> {
    SAFE_SYSCTLS
        .iter()
        .filter(|(_, needs)| *needs == (0, 0) || kernel.is_some_and(|k| k >= *needs))
        .map(|(name, _)| *name)
        .collect()
}

/// The running kernel's (major, minor) version.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The sysctl admit handler (upstream's `patternAllowlist`): a pod's sysctls must be safe or
/// in `allowedUnsafeSysctls` (names or `prefix*` patterns), and a net or IPC sysctl is refused
/// to a pod sharing the host's network or IPC namespace. Refusals are `SysctlForbidden`.
#[derive(Clone, Debug, Default)]
pub struct SysctlAllowlist {
    sysctls: HashMap<String, SysctlNamespace>,
    prefixes: Vec<(String, SysctlNamespace)>,
}

impl SysctlAllowlist {
    /// The safe sysctls of this kernel plus `allowed_unsafe`; an entry not known to be
    /// namespaced is an error naming it, as upstream's.
    pub fn new(allowed_unsafe: &[String]) -> Result<Self, String> {
        let mut list = SysctlAllowlist::default();
        let safe = safe_sysctls(kernel_version());
        for pattern in safe
            .iter()
            .map(|s| s.to_string())
            .chain(allowed_unsafe.iter().cloned())
        {
            let s = normalize_sysctl(&pattern);
            if let Some(prefix) = s.strip_suffix('*') {
                let ns = SysctlNamespace::of(prefix)
                    .ok_or_else(|| format!("the sysctls {s:?} are not known to be namespaced"))?;
                list.prefixes.push((prefix.to_string(), ns));
            } else {
                let ns = SysctlNamespace::of(&s)
                    .ok_or_else(|| format!("the sysctl {s:?} are not known to be namespaced"))?;
                list.sysctls.insert(s, ns);
            }
        }
        Ok(list)
    }

    fn validate(&self, sysctl: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let sysctl = normalize_sysctl(sysctl);
        let ns = self.sysctls.get(&sysctl).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| sysctl.starts_with(p.as_str()))
                .map(|(_, ns)| *ns)
        });
        match ns {
            None => Err(format!("{sysctl:?} not allowlisted")),
            Some(ns @ SysctlNamespace::Ipc) if host_ipc => Err(format!(
                "{sysctl:?} not allowed with host {} enabled",
                ns.as_str()
            )),
            Some(ns @ SysctlNamespace::Net) if host_net => Err(format!(
                "{sysctl:?} not allowed with host {} enabled",
                ns.as_str()
            )),
            Some(_) => Ok(()),
        }
    }
}

impl PodAdmitHandler for SysctlAllowlist {
    fn admit(&self, attrs: &AdmitAttributes<'_>) -> Result<(), Rejection> {
        let Some(spec) = attrs.pod.spec.as_ref() else {
            return Ok(());
        };
        let sysctls = spec
            .security_context
            .as_ref()
            .and_then(|s| s.sysctls.as_deref())
            .unwrap_or_default();
        for s in sysctls {
            self.validate(
                &s.name,
                spec.host_network.unwrap_or(false),
                spec.host_ipc.unwrap_or(false),
            )
            .map_err(|e| Rejection::new("SysctlForbidden", format!("forbidden sysctl: {e}")))?;
        }
        Ok(())
    }
}
