//! The eviction manager on the kubelet engine: pods from its pod manager, evicted through
//! its pod workers; node-level reclaim through the runtime's container GC and node-images'
//! image GC.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use node_config::Signal;
use node_core::pod_manager::{PodManager, uid};
use node_core::pod_workers::{
    KillPodOptions, PodWorkerState, PodWorkers, StatusFn, UpdatePodOptions,
};
use node_core::runtime::{GcPolicy, PodStateProvider, Runtime};
use node_core::status::StatusManager;
use node_images::gc::ImageGcManager;
use tracing::{info, warn};

use crate::manager::{NodeReclaimer, PodEvictor};

/// Pods of the kubelet engine.
pub struct EnginePods {
    pods: Arc<PodManager>,
    workers: Arc<PodWorkers>,
    statuses: Arc<StatusManager>,
}

impl EnginePods {
    /// The engine's pod manager, pod workers and status manager.
    pub fn new(
        pods: Arc<PodManager>,
        workers: Arc<PodWorkers>,
        statuses: Arc<StatusManager>,
    ) -> Self {
        EnginePods {
            pods,
            workers,
            statuses,
        }
    }
}

impl PodEvictor for EnginePods {
    /// Admitted pods that are neither terminal nor already being stopped.
    fn active_pods(&self) -> Vec<Pod> {
        self.pods
            .pods()
            .into_iter()
            .filter(|p| {
                let id = uid(p);
                !self.workers.is_pod_termination_requested(id)
                    && !self.workers.is_pod_known_terminated(id)
                    && !self.statuses.is_terminal(id)
            })
            .collect()
    }

    fn evict(&self, pod: &Pod, grace_period: i64, status: StatusFn) {
        self.workers.update_pod(UpdatePodOptions::kill(
            pod.clone(),
            KillPodOptions {
                grace_period_override: Some(grace_period),
                status_fn: Some(status),
                evict: true,
                ..Default::default()
            },
        ));
    }

    /// Its worker finished: the containers stopped and the volumes (a memory-backed
    /// emptyDir's pages among them) torn down.
    fn is_cleaned_up(&self, pod: &Pod) -> bool {
        matches!(
            self.workers.state(uid(pod)),
            None | Some(PodWorkerState::Finished)
        )
    }
}

/// Dead containers, then unused images (upstream `reclaimNodeLevelResources` for the
/// filesystems).
pub struct RuntimeReclaimer {
    runtime: Arc<dyn Runtime>,
    pods: Arc<dyn PodStateProvider>,
    images: Option<Arc<ImageGcManager>>,
}

impl RuntimeReclaimer {
    /// Removes dead containers through `runtime` (`pods` says which pods are gone), and
    /// unused images through `images`.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        pods: Arc<dyn PodStateProvider>,
        images: Option<Arc<ImageGcManager>>,
    ) -> Self {
        RuntimeReclaimer {
            runtime,
            pods,
            images,
        }
    }
}

#[async_trait]
impl NodeReclaimer for RuntimeReclaimer {
    async fn reclaim(&self, signal: Signal) {
        info!(signal = %signal, "eviction manager: deleting dead containers");
        let policy = GcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 0,
            max_containers: None,
        };
        if let Err(e) = self
            .runtime
            .garbage_collect(&policy, self.pods.as_ref(), true)
            .await
        {
            warn!(error = %e, "eviction manager: container garbage collection failed");
        }
        if let Some(images) = &self.images {
            match images.delete_unused_images().await {
                Ok(report) => info!(report = ?report, "eviction manager: unused images deleted"),
                Err(e) => warn!(error = %e, "eviction manager: image garbage collection failed"),
            }
        }
    }
}
