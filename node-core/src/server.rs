//! The engine's read-only HTTP endpoints, as an axum router the binary merges with others:
//! `GET /pods` (a v1 PodList of the node's pods with their current statuses, as upstream's
//! `/pods`) and `GET /healthz`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;

use crate::kubelet::Health;
use crate::pod_manager::PodManager;
use crate::status::StatusManager;

#[derive(Clone)]
struct Endpoints {
    pods: Arc<PodManager>,
    statuses: Arc<StatusManager>,
    health: Arc<Health>,
    sync_frequency: Duration,
}

/// The router of `/pods` and `/healthz`.
pub fn router(
    pods: Arc<PodManager>,
    statuses: Arc<StatusManager>,
    health: Arc<Health>,
    sync_frequency: Duration,
) -> Router {
    Router::new()
        .route("/pods", get(list_pods))
        .route("/healthz", get(healthz))
        .with_state(Endpoints {
            pods,
            statuses,
            health,
            sync_frequency,
        })
}

/// The node's pods, each with its latest status.
pub fn pod_list(pods: &PodManager, statuses: &StatusManager) -> k8s_openapi::List<Pod> {
    let mut items: Vec<Pod> = pods
        .pods()
        .into_iter()
        .map(|mut pod| {
            if let Some(status) = pod.metadata.uid.as_deref().and_then(|u| statuses.get(u)) {
                pod.status = Some(status);
            }
            pod
        })
        .collect();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    k8s_openapi::List {
        items,
        metadata: Default::default(),
    }
}

async fn list_pods(State(e): State<Endpoints>) -> Response {
    match serde_json::to_vec(&pod_list(&e.pods, &e.statuses)) {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn healthz(State(e): State<Endpoints>) -> Response {
    // Upstream: the sync loop is unhealthy when it has not run for max(2 x syncFrequency, 5m).
    let limit = (2 * e.sync_frequency)
        .max(Duration::from_secs(300))
        .as_secs() as i64;
    match e.health.since_last_loop() {
        Some(age) if age <= limit => (StatusCode::OK, "ok").into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "[+]ping ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n",
        )
            .into_response(),
    }
}
