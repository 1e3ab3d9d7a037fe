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

/// A pod's UID (empty if unset).
pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The desired pods.
#[derive(Debug, Default)]
pub struct PodManager {
    pods: RwLock<BTreeMap<String, Pod>>,
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

    /// All desired pods.
    pub fn pods(&self) -> Vec<Pod> {
        self.pods
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }
}
