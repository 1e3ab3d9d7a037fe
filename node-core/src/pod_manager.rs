//! The pods the node should run, by UID, with their full names (`name_namespace`).

use std::collections::BTreeMap;
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Pod;

/// `name_namespace`, upstream's pod full name.
pub fn full_name(pod: &Pod) -> String {
    format!(
        "{}_{}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default()
    )
}

/// Whether an init container is a sidecar (a restartable init container,
/// `restartPolicy: Always`).
pub fn is_sidecar(container: &k8s_openapi::api::core::v1::Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// Upstream `ContainerShouldRestart` (ContainerRestartRules): whether a container that exited
/// with `exit_code` is started again. A container with its own `restartPolicy` checks its
/// `restartPolicyRules` first (the first `Restart` rule whose exit codes match restarts it),
/// then its policy; one without follows the pod's `restartPolicy` (`pod_policy`).
pub fn container_should_restart(
    container: &k8s_openapi::api::core::v1::Container,
    pod_policy: &str,
    exit_code: i32,
) -> bool {
    let by_policy = |policy: &str| match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    };
    let Some(own) = container.restart_policy.as_deref() else {
        return by_policy(pod_policy);
    };
    for rule in container.restart_policy_rules.iter().flatten() {
        let Some(codes) = rule.exit_codes.as_ref() else {
            continue;
        };
        let listed = codes.values.iter().flatten().any(|v| *v == exit_code);
        let matches = match codes.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if matches && rule.action == "Restart" {
            return true;
        }
    }
    by_policy(own)
}

/// The pod's `restartPolicy` (`Always` when unset).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// A pod's UID (empty if unset).
pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The desired pods.
#[derive(Debug, Default)]
pub struct PodManager {
    pods: RwLock<BTreeMap<String, Pod>>,
    /// Mirror pods (the API server's copies of static pods), by full name: never run.
    mirrors: RwLock<BTreeMap<String, Pod>>,
}

/// An ephemeral container as the container it runs as (the same fields but
/// `targetContainerName`).
pub fn ephemeral_as_container(
    e: &k8s_openapi::api::core::v1::EphemeralContainer,
) -> Option<k8s_openapi::api::core::v1::Container> {
    let mut value = serde_json::to_value(e).ok()?;
    if let Some(map) = value.as_object_mut() {
        map.remove("targetContainerName");
    }
    serde_json::from_value(value).ok()
}

/// Whether the pod is a mirror pod (it carries `kubernetes.io/config.mirror`).
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::config::CONFIG_MIRROR_ANNOTATION))
}

impl PodManager {
    /// An empty manager.
    pub fn new() -> Self {
        PodManager::default()
    }

    /// Adds or replaces a pod.
    pub fn add(&self, pod: Pod) {
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(uid(&pod).to_string(), pod);
        }
    }

    /// Removes a pod by UID.
    pub fn remove(&self, uid: &str) -> Option<Pod> {
        self.pods.write().ok()?.remove(uid)
    }

    /// The pod with this UID.
    pub fn get(&self, uid: &str) -> Option<Pod> {
        self.pods.read().ok()?.get(uid).cloned()
    }

    /// Whether a pod with this UID is desired.
    pub fn contains(&self, uid: &str) -> bool {
        self.pods.read().is_ok_and(|p| p.contains_key(uid))
    }

    /// The UIDs of all desired pods.
    pub fn uids(&self) -> Vec<String> {
        self.pods
            .read()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Records a mirror pod seen on the API server.
    pub fn set_mirror(&self, pod: Pod) {
        if let Ok(mut mirrors) = self.mirrors.write() {
            mirrors.insert(full_name(&pod), pod);
        }
    }

    /// Forgets the mirror pod with this UID (gone from the API server).
    pub fn remove_mirror(&self, uid_: &str) {
        if let Ok(mut mirrors) = self.mirrors.write() {
            mirrors.retain(|_, p| uid(p) != uid_);
        }
    }

    /// The mirror pod of the static pod named `full_name`.
    pub fn mirror_of(&self, full_name: &str) -> Option<Pod> {
        self.mirrors.read().ok()?.get(full_name).cloned()
    }

    /// Every mirror pod.
    pub fn mirrors(&self) -> Vec<Pod> {
        self.mirrors
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// All desired pods.
    pub fn pods(&self) -> Vec<Pod> {
        self.pods
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }
}
