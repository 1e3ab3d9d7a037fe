//! The labels and annotations the kubelet puts on CRI sandboxes and containers, and reading
//! them back (upstream `pkg/kubelet/kuberuntime/labels.go`).
//!
//! Labels identify: a sandbox carries the pod's own labels plus its name, namespace and UID; a
//! container carries only those three and its name. Annotations carry what a kubelet needs to
//! handle a container it has no pod spec for (after a restart, or for an orphan): the spec hash,
//! the restart count, the termination-message settings, the grace periods and the preStop hook.
//!
//! [`ContainerInfo::from_cri`] and [`SandboxInfo::from_cri`] read them back and never fail:
//! a missing or garbled value is logged at debug level and read as its default.

use std::collections::HashMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, ContainerPort, LifecycleHandler, Pod};
use serde::Serialize;
use tracing::debug;

use crate::cri;

/// Label: the pod's name (sandboxes and containers).
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace (sandboxes and containers).
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label: the pod's UID (sandboxes and containers).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label: the container's name (containers).
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Annotation: [`hash_container`] of the spec the container was created from, lowercase hex.
pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
/// Annotation: the container's restart count, decimal.
pub const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Annotation: the container's `terminationMessagePath`.
pub const CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Annotation: the container's `terminationMessagePolicy`.
pub const CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation: the pod's `metadata.deletionGracePeriodSeconds`, when set.
pub const POD_DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Annotation: the pod's `spec.terminationGracePeriodSeconds`, when set.
pub const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str =
    "io.kubernetes.pod.terminationGracePeriod";
/// Annotation: the container's `lifecycle.preStop` handler as JSON, when set.
pub const CONTAINER_PRE_STOP_HANDLER_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
/// Annotation: the container's `ports` as a JSON array, when there are any.
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";

/// The API default of `terminationMessagePath`, used when a container leaves it unset.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The API default of `terminationMessagePolicy`, used when a container leaves it unset.
pub const DEFAULT_TERMINATION_MESSAGE_POLICY: &str = "File";

/// A pod's identity, as errors and log lines name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl PodRef {
    /// The identity of `pod` (empty strings for missing fields).
    pub fn of(pod: &Pod) -> Self {
        PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// Upstream's `format.Pod` spelling, `name_namespace(uid)`, which some upstream messages
    /// quote verbatim.
    pub fn upstream_format(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }
}

/// `namespace/name`.
impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Labels of the pod's sandbox: the pod's labels plus its name, namespace and UID.
pub fn sandbox_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    insert_pod_identity(&mut labels, pod);
    labels
}

/// Annotations of the pod's sandbox: the pod's annotations.
pub fn sandbox_annotations(pod: &Pod) -> HashMap<String, String> {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Labels of one of the pod's containers: pod name, namespace, UID and the container name.
pub fn container_labels(pod: &Pod, container: &Container) -> HashMap<String, String> {
    let mut labels = HashMap::with_capacity(4);
    insert_pod_identity(&mut labels, pod);
    labels.insert(CONTAINER_NAME_LABEL.into(), container.name.clone());
    labels
}

fn insert_pod_identity(labels: &mut HashMap<String, String>, pod: &Pod) {
    let pod = PodRef::of(pod);
    labels.insert(POD_NAME_LABEL.into(), pod.name);
    labels.insert(POD_NAMESPACE_LABEL.into(), pod.namespace);
    labels.insert(POD_UID_LABEL.into(), pod.uid);
}

/// Annotations of one of the pod's containers: hash, restart count, termination-message path
/// and policy (API defaults when unset), the grace periods and preStop handler when set, and
/// the ports when there are any.
pub fn container_annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut annotations = HashMap::with_capacity(8);
    annotations.insert(
        CONTAINER_HASH_ANNOTATION.into(),
        format!("{:x}", hash_container(container)),
    );
    annotations.insert(
        CONTAINER_RESTART_COUNT_ANNOTATION.into(),
        restart_count.to_string(),
    );
    annotations.insert(
        CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION.into(),
        container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into()),
    );
    annotations.insert(
        CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION.into(),
        container
            .termination_message_policy
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_POLICY.into()),
    );
    if let Some(seconds) = pod.metadata.deletion_grace_period_seconds {
        annotations.insert(
            POD_DELETION_GRACE_PERIOD_ANNOTATION.into(),
            seconds.to_string(),
        );
    }
    if let Some(seconds) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        annotations.insert(
            POD_TERMINATION_GRACE_PERIOD_ANNOTATION.into(),
            seconds.to_string(),
        );
    }
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        insert_json(
            &mut annotations,
            CONTAINER_PRE_STOP_HANDLER_ANNOTATION,
            pre_stop,
        );
    }
    if let Some(ports) = container.ports.as_ref().filter(|p| !p.is_empty()) {
        insert_json(&mut annotations, CONTAINER_PORTS_ANNOTATION, ports);
    }
    annotations
}

fn insert_json<T: Serialize>(annotations: &mut HashMap<String, String>, key: &str, value: &T) {
    match serde_json::to_string(value) {
        Ok(json) => {
            annotations.insert(key.into(), json);
        }
        Err(error) => debug!(annotation = key, %error, "cannot encode annotation value"),
    }
}

/// The hash of the parts of a container spec whose change restarts the container.
///
/// As upstream since 1.31, only `name` and `image` take part: 32-bit FNV-1a over the JSON
/// object `{"image":…,"name":…}`, widened to `u64`. The value is stable across restarts and
/// builds of this kubelet, and changes when the name or the image changes; it is not
/// byte-identical to the Go kubelet's (which hashes a debug dump of the JSON), so containers
/// created by a Go kubelet read as changed.
pub fn hash_container(container: &Container) -> u64 {
    #[derive(Serialize)]
    struct Hashed<'a> {
        image: &'a str,
        name: &'a str,
    }
    let json = serde_json::to_vec(&Hashed {
        image: container.image.as_deref().unwrap_or_default(),
        name: &container.name,
    })
    .unwrap_or_default();
    u64::from(fnv1a32(&json))
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(PRIME)
    })
}

/// What a container's CRI labels and annotations say about it.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ContainerInfo {
    /// The pod's name (empty if unknown).
    pub pod_name: String,
    /// The pod's namespace (empty if unknown).
    pub pod_namespace: String,
    /// The pod's UID (empty if unknown).
    pub pod_uid: String,
    /// The container's name (empty if unknown).
    pub container_name: String,
    /// The spec hash, if present and valid hex.
    pub hash: Option<u64>,
    /// The restart count (0 if missing or garbled).
    pub restart_count: u32,
    /// The pod's deletion grace period in seconds, if it was set.
    pub pod_deletion_grace_period: Option<i64>,
    /// The pod's termination grace period in seconds, if it was set.
    pub termination_grace_period: Option<i64>,
    /// The container's `terminationMessagePath` (empty if unknown).
    pub termination_message_path: String,
    /// The container's `terminationMessagePolicy` (empty if unknown).
    pub termination_message_policy: String,
    /// The container's preStop handler, if it had one.
    pub pre_stop_handler: Option<LifecycleHandler>,
    /// The container's ports.
    pub container_ports: Vec<ContainerPort>,
}

impl ContainerInfo {
    /// Reads a container's labels and annotations (as listed by the runtime).
    pub fn from_cri(
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
    ) -> Self {
        ContainerInfo {
            pre_stop_handler: parsed(annotations, CONTAINER_PRE_STOP_HANDLER_ANNOTATION, |s| {
                serde_json::from_str(s).ok()
            }),
            container_ports: parsed(annotations, CONTAINER_PORTS_ANNOTATION, |s| {
                serde_json::from_str(s).ok()
            })
            .unwrap_or_default(),
            ..ContainerInfo::summary(labels, annotations)
        }
    }

    /// [`ContainerInfo::from_cri`] without the JSON-encoded preStop handler and ports (left
    /// empty): what listings, statuses and GC read, on every relist.
    pub(crate) fn summary(
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
    ) -> Self {
        let label = |key: &str| {
            labels.get(key).cloned().unwrap_or_else(|| {
                debug!(label = key, "container label missing");
                String::new()
            })
        };
        ContainerInfo {
            pod_name: label(POD_NAME_LABEL),
            pod_namespace: label(POD_NAMESPACE_LABEL),
            pod_uid: label(POD_UID_LABEL),
            container_name: label(CONTAINER_NAME_LABEL),
            hash: parsed(annotations, CONTAINER_HASH_ANNOTATION, |s| {
                u64::from_str_radix(s, 16).ok()
            }),
            restart_count: parsed(annotations, CONTAINER_RESTART_COUNT_ANNOTATION, |s| {
                s.parse().ok()
            })
            .unwrap_or(0),
            pod_deletion_grace_period: parsed(
                annotations,
                POD_DELETION_GRACE_PERIOD_ANNOTATION,
                |s| s.parse().ok(),
            ),
            termination_grace_period: parsed(
                annotations,
                POD_TERMINATION_GRACE_PERIOD_ANNOTATION,
                |s| s.parse().ok(),
            ),
            termination_message_path: annotations
                .get(CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            termination_message_policy: annotations
                .get(CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            pre_stop_handler: None,
            container_ports: Vec::new(),
        }
    }
}

/// An optional annotation read with `parse`; a value that does not parse is logged and `None`.
fn parsed<T>(
    annotations: &HashMap<String, String>,
    key: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let raw = annotations.get(key)?;
    let value = parse(raw.trim());
    if value.is_none() {
        debug!(annotation = key, value = %raw, "unable to get label value from annotations");
    }
    value
}

/// What a sandbox's CRI labels (and metadata) say about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxInfo {
    /// The pod's name (empty if unknown).
    pub pod_name: String,
    /// The pod's namespace (empty if unknown).
    pub pod_namespace: String,
    /// The pod's UID (empty if unknown).
    pub pod_uid: String,
    /// The sandbox attempt (0 without metadata).
    pub attempt: u32,
    /// The pod's own labels: the sandbox labels without the kubelet's.
    pub labels: HashMap<String, String>,
}

impl SandboxInfo {
    /// Reads a sandbox's labels; values the labels lack are taken from `metadata` when given.
    pub fn from_cri(
        labels: &HashMap<String, String>,
        metadata: Option<&cri::PodSandboxMetadata>,
    ) -> Self {
        let pick = |key: &str, fallback: Option<&String>| {
            labels.get(key).or(fallback).cloned().unwrap_or_else(|| {
                debug!(label = key, "sandbox label missing");
                String::new()
            })
        };
        SandboxInfo {
            pod_name: pick(POD_NAME_LABEL, metadata.map(|m| &m.name)),
            pod_namespace: pick(POD_NAMESPACE_LABEL, metadata.map(|m| &m.namespace)),
            pod_uid: pick(POD_UID_LABEL, metadata.map(|m| &m.uid)),
            attempt: metadata.map_or(0, |m| m.attempt),
            labels: labels
                .iter()
                .filter(|(k, _)| {
                    ![POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL].contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("1234-abcd".into()),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                annotations: Some(BTreeMap::from([("note".to_string(), "x".to_string())])),
                deletion_grace_period_seconds: Some(5),
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: Some(30),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container() -> Container {
        Container {
            name: "app".into(),
            image: Some("busybox:1.36".into()),
            ports: Some(vec![ContainerPort {
                container_port: 80,
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["sleep".into(), "1".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sandbox_labels_and_annotations() {
        let labels = sandbox_labels(&pod());
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[POD_NAME_LABEL], "web");
        assert_eq!(labels[POD_NAMESPACE_LABEL], "default");
        assert_eq!(labels[POD_UID_LABEL], "1234-abcd");
        assert_eq!(labels.len(), 4);
        assert_eq!(
            sandbox_annotations(&pod()),
            HashMap::from([("note".to_string(), "x".to_string())])
        );
        let info = SandboxInfo::from_cri(&labels, None);
        assert_eq!(
            (
                info.pod_name.as_str(),
                info.pod_namespace.as_str(),
                info.pod_uid.as_str()
            ),
            ("web", "default", "1234-abcd")
        );
        assert_eq!(
            info.labels,
            HashMap::from([("app".to_string(), "web".to_string())])
        );
    }

    #[test]
    fn sandbox_info_falls_back_to_metadata() {
        let metadata = cri::PodSandboxMetadata {
            name: "n".into(),
            uid: "u".into(),
            namespace: "ns".into(),
            attempt: 3,
        };
        let info = SandboxInfo::from_cri(&HashMap::new(), Some(&metadata));
        assert_eq!(info.pod_name, "n");
        assert_eq!(info.pod_namespace, "ns");
        assert_eq!(info.pod_uid, "u");
        assert_eq!(info.attempt, 3);
    }

    #[test]
    fn container_labels_round_trip() {
        let (p, c) = (pod(), container());
        let labels = container_labels(&p, &c);
        assert_eq!(labels.len(), 4);
        let annotations = container_annotations(&p, &c, 7);
        let info = ContainerInfo::from_cri(&labels, &annotations);
        assert_eq!(info.pod_name, "web");
        assert_eq!(info.pod_namespace, "default");
        assert_eq!(info.pod_uid, "1234-abcd");
        assert_eq!(info.container_name, "app");
        assert_eq!(info.hash, Some(hash_container(&c)));
        assert_eq!(info.restart_count, 7);
        assert_eq!(info.pod_deletion_grace_period, Some(5));
        assert_eq!(info.termination_grace_period, Some(30));
        assert_eq!(info.termination_message_path, "/dev/termination-log");
        assert_eq!(info.termination_message_policy, "File");
        assert_eq!(
            info.pre_stop_handler,
            c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
        );
        assert_eq!(Some(info.container_ports), c.ports);
    }

    #[test]
    fn annotations_are_as_upstream() {
        let annotations = container_annotations(&pod(), &container(), 2);
        assert_eq!(annotations[CONTAINER_RESTART_COUNT_ANNOTATION], "2");
        assert_eq!(
            annotations[CONTAINER_HASH_ANNOTATION],
            format!("{:x}", hash_container(&container()))
        );
        assert_eq!(
            annotations[CONTAINER_PORTS_ANNOTATION],
            r#"[{"containerPort":80,"name":"http","protocol":"TCP"}]"#
        );
        assert_eq!(
            annotations[CONTAINER_PRE_STOP_HANDLER_ANNOTATION],
            r#"{"exec":{"command":["sleep","1"]}}"#
        );
        // Unset optional values leave their annotations out.
        let bare = container_annotations(&Pod::default(), &Container::default(), 0);
        assert_eq!(bare.len(), 4);
    }

    #[test]
    fn garbled_annotations_read_as_defaults() {
        let labels = HashMap::from([(POD_NAME_LABEL.to_string(), "web".to_string())]);
        let annotations: HashMap<String, String> = [
            (CONTAINER_HASH_ANNOTATION, "xyz"),
            (CONTAINER_RESTART_COUNT_ANNOTATION, "-1"),
            (POD_TERMINATION_GRACE_PERIOD_ANNOTATION, "soon"),
            (CONTAINER_PRE_STOP_HANDLER_ANNOTATION, "{not json"),
            (CONTAINER_PORTS_ANNOTATION, "[1,2]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let info = ContainerInfo::from_cri(&labels, &annotations);
        assert_eq!(info.pod_name, "web");
        assert_eq!(info.container_name, "");
        assert_eq!(info.hash, None);
        assert_eq!(info.restart_count, 0);
        assert_eq!(info.termination_grace_period, None);
        assert_eq!(info.pre_stop_handler, None);
        assert!(info.container_ports.is_empty());
        assert_eq!(
            ContainerInfo::from_cri(&HashMap::new(), &HashMap::new()),
            ContainerInfo::default()
        );
    }

    #[test]
    fn hash_is_stable_and_tracks_name_and_image() {
        let c = container();
        assert_eq!(hash_container(&c), hash_container(&c.clone()));
        // FNV-1a 32 of {"image":"busybox:1.36","name":"app"}, fixed so that a change in the
        // encoding (which would restart every container after an upgrade) fails this test.
        assert_eq!(
            hash_container(&c),
            u64::from(fnv1a32(br#"{"image":"busybox:1.36","name":"app"}"#))
        );
        assert!(hash_container(&c) <= u64::from(u32::MAX));
        let mut other_image = c.clone();
        other_image.image = Some("busybox:1.37".into());
        assert_ne!(hash_container(&c), hash_container(&other_image));
        let mut other_name = c.clone();
        other_name.name = "app2".into();
        assert_ne!(hash_container(&c), hash_container(&other_name));
        // Other fields do not restart the container.
        let mut other_args = c.clone();
        other_args.args = Some(vec!["x".into()]);
        assert_eq!(hash_container(&c), hash_container(&other_args));
    }

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn pod_ref_formats() {
        let p = PodRef::of(&pod());
        assert_eq!(p.to_string(), "default/web");
        assert_eq!(p.upstream_format(), "web_default(1234-abcd)");
    }
}
