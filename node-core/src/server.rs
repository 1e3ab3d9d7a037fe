//! The engine's read-only HTTP endpoints, as an axum router the binary merges with others:
//! `GET /pods` (a v1 PodList of the node's pods with their current statuses, as upstream's
//! `/pods`) and `GET /healthz`.

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "server")]
pub mod streaming;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(all(feature = "server", feature = "api"))]
pub mod webhook;

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

/// The router of `/healthz` alone (the plain healthz listener, `healthzPort`).
pub fn healthz_router(health: Arc<Health>, sync_frequency: Duration) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(Endpoints {
            pods: Arc::new(PodManager::new()),
            statuses: Arc::new(StatusManager::new()),
            health,
            sync_frequency,
        })
}

#[derive(Clone)]
struct Logs {
    pods: Arc<PodManager>,
    runtime: Arc<dyn crate::runtime::Runtime>,
}

/// The router of `/containerLogs/{namespace}/{pod}/{container}` (what `kubectl logs` reaches
/// through the API server): the container's CRI log file read per the request's
/// [`LogQuery`](crate::container_logs::LogQuery), streamed.
pub fn logs_router(pods: Arc<PodManager>, runtime: Arc<dyn crate::runtime::Runtime>) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(Logs { pods, runtime })
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

async fn container_logs(
    State(l): State<Logs>,
    axum::extract::Path((namespace, name, container)): axum::extract::Path<(
        String,
        String,
        String,
    )>,
    axum::extract::Query(query): axum::extract::Query<crate::container_logs::LogQuery>,
) -> Response {
    use crate::container_logs::read_logs;
    use crate::runtime::{ContainerState, PodUid};

    let options = match query.options(jiff::Timestamp::now()) {
        Ok(o) => o,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, message),
    };
    let Some(pod) = l.pods.pods().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str())
            && p.metadata.name.as_deref() == Some(name.as_str())
    }) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pod {name:?} does not exist"),
        );
    };
    let in_spec = pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == container)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
            || s.ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
    });
    if !in_spec {
        return error(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {name:?}"),
        );
    }
    let uid = PodUid::of(&pod);
    let status = match l.runtime.get_pod_status(&uid, &name, &namespace).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut instances = status.containers_named(&container);
    let newest = instances.next();
    let chosen = if query.previous.unwrap_or(false) {
        match instances.next() {
            Some(c) => c,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container {container:?} in pod {name:?} not found"
                    ),
                );
            }
        }
    } else {
        match newest {
            Some(c) if c.state != ContainerState::Created => c,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container {container:?} in pod {name:?} is waiting to start: ContainerCreating"
                    ),
                );
            }
        }
    };
    if chosen.log_path.is_empty() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("container {container:?} in pod {name:?} has no log file"),
        );
    }
    let path = std::path::PathBuf::from(&chosen.log_path);
    let id = chosen.id.clone();
    let running = (options.follow && chosen.state == ContainerState::Running).then(|| {
        let runtime = l.runtime.clone();
        let check: crate::container_logs::StillRunning = Box::new(move || {
            let (runtime, uid, name, namespace, id) = (
                runtime.clone(),
                uid.clone(),
                name.clone(),
                namespace.clone(),
                id.clone(),
            );
            Box::pin(async move {
                runtime
                    .get_pod_status(&uid, &name, &namespace)
                    .await
                    .map(|s| {
                        s.containers
                            .iter()
                            .any(|c| c.id == id && c.state == ContainerState::Running)
                    })
                    .unwrap_or(false)
            })
        });
        check
    });
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(read_logs(path, options, running, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (
        [("content-type", "text/plain")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}
