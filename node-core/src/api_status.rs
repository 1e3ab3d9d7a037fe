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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus as ApiPodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::config::{API_SOURCE, CONFIG_SOURCE_ANNOTATION};
use crate::pod_manager::{PodManager, full_name, uid};
use crate::pod_workers::{PodWorkerState, PodWorkers};
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
    pods: Arc<PodManager>,
    statuses: Arc<StatusManager>,
    workers: Arc<PodWorkers>,
}

impl std::fmt::Debug for ApiStatusSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiStatusSync").finish_non_exhaustive()
    }
}

/// The strategic-merge patch of a pod's status: the status, with the UID as precondition.
pub fn status_patch(pod: &Pod, status: &ApiPodStatus) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        status: Some(status.clone()),
        ..Default::default()
    }
}

impl ApiStatusSync {
    /// A sync over the engine's pods, statuses and workers.
    pub fn new(
        client: Client,
        pods: Arc<PodManager>,
        statuses: Arc<StatusManager>,
        workers: Arc<PodWorkers>,
    ) -> Self {
        ApiStatusSync {
            client,
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
            let wanted: HashSet<String> = pods.iter().map(|p| uid(p).to_string()).collect();
            sent.retain(|u, _| wanted.contains(u));
            deleted.retain(|u| wanted.contains(u));
            for pod in pods {
                let id = uid(&pod).to_string();
                if deleted.contains(&id) {
                    continue;
                }
                if let Some(status) = self.statuses.get(&id)
                    && sent.get(&id) != Some(&status)
                    && self.patch(&pod, &status).await
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

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    /// Patches the status; whether the API server took it (a pod that is gone or was replaced
    /// counts as done: there is nothing to write to).
    async fn patch(&self, pod: &Pod, status: &ApiPodStatus) -> bool {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let params = PatchParams::default();
        match self
            .api(pod)
            .patch_status(name, &params, &Patch::Strategic(status_patch(pod, status)))
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
        let patch = serde_json::to_value(status_patch(&pod, &status)).unwrap();
        assert_eq!(patch["metadata"], serde_json::json!({"uid": "u-1"}));
        assert_eq!(patch["status"], serde_json::json!({"phase": "Running"}));
        assert!(patch.get("spec").is_none(), "{patch}");
    }
}
