//! The pod statuses back to the API server (feature `api`; upstream `status_manager.go`'s
//! API half).
//!
//! For every pod of the `api` source, the status the engine generated is sent when it differs
//! from the last one the API server accepted, and at least every [`STATUS_SYNC_PERIOD`] for
//! pods whose last attempt failed: a strategic-merge PATCH of the `status` subresource with
//! typed k8s-openapi values and the pod's UID as precondition (a pod deleted and recreated
//! under the same name is never written with another pod's status). Conditions owned by others
//! (DisruptionTarget, readiness gates) are left alone by the merge. Once a pod with a
//! deletion timestamp has terminated and its volumes are torn down (its worker finished), the
//! pod object is deleted with grace period 0 and the UID precondition, as upstream.
//!
//! Static pods get mirror pods (upstream `mirror_client.go`): a copy of the static pod on the
//! API server, annotated `kubernetes.io/config.mirror` with the static pod's hash and owned
//! by the Node (NodeRestriction wants that), created when missing, replaced when stale (an
//! older hash, or being deleted), deleted when its static pod goes; the static pod's status
//! is written to its mirror (the mirror's UID as precondition). Mirror pods never run: the
//! engine only records them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus as ApiPodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::config::{
    API_SOURCE, CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION,
};
use crate::pod_manager::{PodManager, full_name, uid};
use crate::pod_workers::{PodWorkerState, PodWorkers, is_static_pod};
use crate::status::StatusManager;

/// Upstream `syncPeriod` of the status manager: a full pass this often.
pub const STATUS_SYNC_PERIOD: Duration = Duration::from_secs(10);

/// Whether the pod came from the API server.
pub fn is_api_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s == API_SOURCE)
}

/// Sends the statuses of API pods and deletes terminated ones.
pub struct ApiStatusSync {
    client: Client,
    node_name: String,
    pods: Arc<PodManager>,
    statuses: Arc<StatusManager>,
    workers: Arc<PodWorkers>,
}

impl std::fmt::Debug for ApiStatusSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiStatusSync").finish_non_exhaustive()
    }
}

/// The static pod's hash (`kubernetes.io/config.hash`, else its UID).
fn config_hash(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| uid(pod).to_string())
}

fn mirror_hash(mirror: &Pod) -> Option<&str> {
    mirror
        .metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MIRROR_ANNOTATION)
        .map(String::as_str)
}

/// The mirror pod of static pod `pod`: its name, namespace, labels and annotations (with
/// `kubernetes.io/config.mirror` set to `hash`, the kubelet's local ones left out), its spec
/// bound to the node, owned by the Node.
pub fn mirror_pod(pod: &Pod, hash: &str, node_name: &str, node_uid: Option<String>) -> Pod {
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(CONFIG_SOURCE_ANNOTATION);
    annotations.remove(crate::config::CONFIG_SEEN_ANNOTATION);
    annotations.insert(CONFIG_MIRROR_ANNOTATION.into(), hash.into());
    let mut spec = pod.spec.clone().unwrap_or_default();
    spec.node_name = Some(node_name.into());
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            labels: pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: node_uid.map(|uid| {
                vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: node_name.into(),
                        uid,
                        controller: Some(true),
                        block_owner_deletion: None,
                    },
                ]
            }),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    }
}

/// Condition types only the kubelet writes that come and go: one the new status lacks is
/// deleted from the API's copy (a strategic merge keeps list items it is not told to delete).
const DROPPABLE_CONDITIONS: [&str; 2] = [
    crate::resize::POD_RESIZE_PENDING,
    crate::resize::POD_RESIZE_IN_PROGRESS,
];

/// The strategic-merge patch of a pod's status: the status, with the UID as precondition,
/// and a `$patch: delete` for each resize condition the API's copy (`pod`, or `previous`, the
/// status last sent) has and the new status does not (upstream's two-way merge patch does the
/// same).
pub fn status_patch(
    pod: &Pod,
    status: &ApiPodStatus,
    previous: Option<&ApiPodStatus>,
) -> serde_json::Value {
    let typed = Pod {
        metadata: ObjectMeta {
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        status: Some(status.clone()),
        ..Default::default()
    };
    let mut patch = serde_json::to_value(typed).unwrap_or_default();
    let kinds = |s: Option<&ApiPodStatus>| -> Vec<String> {
        s.and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.type_.clone())
            .collect()
    };
    let now = kinds(Some(status));
    let mut had = kinds(pod.status.as_ref());
    had.extend(kinds(previous));
    let gone: Vec<serde_json::Value> = DROPPABLE_CONDITIONS
        .iter()
        .filter(|k| had.iter().any(|h| h == *k) && !now.iter().any(|n| n == *k))
        .map(|k| serde_json::json!({"type": k, "$patch": "delete"}))
        .collect();
    if !gone.is_empty()
        && let Some(status) = patch.get_mut("status").and_then(|s| s.as_object_mut())
    {
        let conditions = status
            .entry("conditions")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let Some(list) = conditions.as_array_mut() {
            list.extend(gone);
        }
    }
    patch
}

impl ApiStatusSync {
    /// A sync over the engine's pods, statuses and workers.
    pub fn new(
        client: Client,
        node_name: &str,
        pods: Arc<PodManager>,
        statuses: Arc<StatusManager>,
        workers: Arc<PodWorkers>,
    ) -> Self {
        ApiStatusSync {
            client,
            node_name: node_name.to_string(),
            pods,
            statuses,
            workers,
        }
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        // What the API server last accepted, by UID; pods deleted, by UID.
        let mut sent: HashMap<String, ApiPodStatus> = HashMap::new();
        let mut deleted: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(STATUS_SYNC_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.statuses.changed() => {}
                _ = tick.tick() => {}
            }
            let pods: Vec<Pod> = self.pods.pods().into_iter().filter(is_api_pod).collect();
            let mut wanted: HashSet<String> = pods.iter().map(|p| uid(p).to_string()).collect();
            wanted.extend(self.pods.mirrors().iter().map(|m| uid(m).to_string()));
            sent.retain(|u, _| wanted.contains(u));
            deleted.retain(|u| wanted.contains(u));
            self.sync_mirrors(&mut sent).await;
            for pod in pods {
                let id = uid(&pod).to_string();
                if deleted.contains(&id) {
                    continue;
                }
                if let Some(status) = self.statuses.get(&id)
                    && sent.get(&id) != Some(&status)
                    && self.patch(&pod, &status, sent.get(&id)).await
                {
                    sent.insert(id.clone(), status);
                }
                if pod.metadata.deletion_timestamp.is_some()
                    && self.workers.state(&id) == Some(PodWorkerState::Finished)
                    && sent.contains_key(&id)
                    && self.delete(&pod).await
                {
                    deleted.insert(id);
                }
            }
        }
    }

    /// Creates, replaces and deletes mirror pods, and writes static pods' statuses to them.
    async fn sync_mirrors(&self, sent: &mut HashMap<String, ApiPodStatus>) {
        let statics: Vec<Pod> = self.pods.pods().into_iter().filter(is_static_pod).collect();
        let names: HashSet<String> = statics.iter().map(full_name).collect();
        for mirror in self.pods.mirrors() {
            if !names.contains(&full_name(&mirror)) {
                info!(pod = %full_name(&mirror), "deleting the mirror pod of a static pod that is gone");
                self.delete_mirror(&mirror).await;
            }
        }
        for pod in statics {
            let id = uid(&pod).to_string();
            let hash = config_hash(&pod);
            match self.pods.mirror_of(&full_name(&pod)) {
                // Deleted by someone (it waits for the node to confirm), or from an older
                // manifest: removed at once, and created afresh once the watch saw it go.
                Some(mirror)
                    if mirror.metadata.deletion_timestamp.is_some()
                        || mirror_hash(&mirror) != Some(hash.as_str()) =>
                {
                    info!(pod = %full_name(&pod), "replacing a deleted or stale mirror pod");
                    self.delete_mirror(&mirror).await;
                }
                Some(mirror) => {
                    let mirror_uid = uid(&mirror).to_string();
                    if let Some(status) = self.statuses.get(&id)
                        && sent.get(&mirror_uid) != Some(&status)
                        && self.patch(&mirror, &status, sent.get(&mirror_uid)).await
                    {
                        sent.insert(mirror_uid, status);
                    }
                }
                None if !self.workers.is_pod_termination_requested(&id) => {
                    self.create_mirror(&pod, &hash).await;
                }
                None => {}
            }
        }
    }

    async fn create_mirror(&self, pod: &Pod, hash: &str) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let node_uid = match nodes.get(&self.node_name).await {
            Ok(node) => node.metadata.uid,
            Err(e) => {
                debug!(node = %self.node_name, error = %e, "the node is not registered yet: no mirror pod");
                return;
            }
        };
        let mirror = mirror_pod(pod, hash, &self.node_name, node_uid);
        match self
            .api(pod)
            .create(&kube::api::PostParams::default(), &mirror)
            .await
        {
            Ok(_) => info!(pod = %full_name(pod), "mirror pod created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                warn!(pod = %full_name(pod), error = %e, "creating the mirror pod failed; retrying")
            }
        }
    }

    async fn delete_mirror(&self, mirror: &Pod) {
        let name = mirror.metadata.name.as_deref().unwrap_or_default();
        // Grace 0: a mirror pod has nothing to stop (upstream `DeleteMirrorPod`).
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: mirror.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api(mirror).delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                warn!(pod = %full_name(mirror), error = %e, "deleting the mirror pod failed; retrying")
            }
        }
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    /// Patches the status; whether the API server took it (a pod that is gone or was replaced
    /// counts as done: there is nothing to write to).
    async fn patch(
        &self,
        pod: &Pod,
        status: &ApiPodStatus,
        previous: Option<&ApiPodStatus>,
    ) -> bool {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let params = PatchParams::default();
        match self
            .api(pod)
            .patch_status(
                name,
                &params,
                &Patch::Strategic(status_patch(pod, status, previous)),
            )
            .await
        {
            Ok(_) => {
                debug!(pod = %full_name(pod), phase = ?status.phase, "status sent");
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                debug!(pod = %full_name(pod), code = e.code, "pod gone or replaced; its status is not sent");
                true
            }
            Err(e) => {
                warn!(pod = %full_name(pod), error = %e, "sending the pod's status failed; retrying");
                false
            }
        }
    }

    /// Deletes the terminated pod's object (grace 0, UID precondition); whether it is gone.
    async fn delete(&self, pod: &Pod) -> bool {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api(pod).delete(name, &params).await {
            Ok(_) => {
                info!(pod = %full_name(pod), "pod terminated and deleted from the API server");
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                warn!(pod = %full_name(pod), error = %e, "deleting the terminated pod failed; retrying");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_pod_copies_the_static_pod_bound_to_and_owned_by_the_node() {
        let static_pod = Pod {
            metadata: ObjectMeta {
                name: Some("etcd-n1".into()),
                namespace: Some("kube-system".into()),
                uid: Some("hash-1".into()),
                labels: Some([("component".to_string(), "etcd".to_string())].into()),
                annotations: Some(
                    [
                        (CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string()),
                        (CONFIG_HASH_ANNOTATION.to_string(), "hash-1".to_string()),
                        ("team".to_string(), "infra".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(config_hash(&static_pod), "hash-1");
        let mirror = mirror_pod(&static_pod, "hash-1", "n1", Some("node-uid".into()));
        assert_eq!(
            mirror.metadata.uid, None,
            "the API server gives it its own UID"
        );
        assert_eq!(mirror_hash(&mirror), Some("hash-1"));
        let annotations = mirror.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["team"], "infra");
        assert!(!annotations.contains_key(CONFIG_SOURCE_ANNOTATION));
        assert_eq!(mirror.metadata.labels, static_pod.metadata.labels);
        assert_eq!(mirror.spec.unwrap().node_name.as_deref(), Some("n1"));
        let owner = &mirror.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Node", "node-uid")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn the_patch_carries_the_uid_precondition_and_the_status_only() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                uid: Some("u-1".into()),
                labels: Some([("a".to_string(), "b".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let status = ApiPodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        let patch = status_patch(&pod, &status, None);
        assert_eq!(patch["metadata"], serde_json::json!({"uid": "u-1"}));
        assert_eq!(patch["status"], serde_json::json!({"phase": "Running"}));
        assert!(patch.get("spec").is_none(), "{patch}");
        // A resize condition the API still has is deleted; others are left to the merge.
        let condition = |kind: &str| k8s_openapi::api::core::v1::PodCondition {
            type_: kind.into(),
            status: "True".into(),
            ..Default::default()
        };
        let previous = ApiPodStatus {
            conditions: Some(vec![condition("PodResizeInProgress"), condition("Ready")]),
            ..Default::default()
        };
        let patch = status_patch(&pod, &status, Some(&previous));
        assert_eq!(
            patch["status"]["conditions"],
            serde_json::json!([{"type": "PodResizeInProgress", "$patch": "delete"}])
        );
    }
}
