//! The engine's read-only HTTP endpoints, as an axum router the binary merges with others:
//! `GET /pods` (a v1 PodList of the node's pods with their current statuses, as upstream's
//! `/pods`) and `GET /healthz`.

#[cfg(feature = "server")]
pub mod auth;
#[cfg(all(feature = "server", any(feature = "api", test)))]
pub(crate) mod cache;
#[cfg(feature = "server")]
pub mod node_log_query;
#[cfg(feature = "server")]
pub mod node_logs;
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
        .route("/healthz/ping", get(healthz_ok))
        .route("/healthz/log", get(healthz_ok))
        .route("/healthz/syncloop", get(healthz_syncloop))
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

/// Whether the sync loop ran lately (upstream `SyncLoopHealthCheck`: within
/// max(2 x syncFrequency, 5m)).
fn syncloop_healthy(e: &Endpoints) -> bool {
    let limit = (2 * e.sync_frequency)
        .max(Duration::from_secs(300))
        .as_secs() as i64;
    e.health.since_last_loop().is_some_and(|age| age <= limit)
}

/// `/healthz`: every check (ping, log, syncloop), as upstream's healthz handler.
async fn healthz(State(e): State<Endpoints>) -> Response {
    if syncloop_healthy(&e) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n",
        )
            .into_response()
    }
}

/// `/healthz/ping` and `/healthz/log`: always ok.
async fn healthz_ok() -> Response {
    (StatusCode::OK, "ok").into_response()
}

/// `/healthz/syncloop`.
async fn healthz_syncloop(State(e): State<Endpoints>) -> Response {
    if syncloop_healthy(&e) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error: syncloop failed\n",
        )
            .into_response()
    }
}

/// The router of `/healthz` alone (the plain healthz listener, `healthzPort`).
pub fn healthz_router(health: Arc<Health>, sync_frequency: Duration) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/ping", get(healthz_ok))
        .route("/healthz/log", get(healthz_ok))
        .route("/healthz/syncloop", get(healthz_syncloop))
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

/// `/configz`: the effective configuration as `{"kubeletconfig": {...}}` (the
/// `kubelet.config.k8s.io/v1beta1` fields, without `apiVersion` and `kind`, as upstream).
pub fn configz_router(config: serde_json::Value) -> Router {
    let mut config = config;
    if let Some(map) = config.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    let body = Arc::new(serde_json::json!({ "kubeletconfig": config }).to_string());
    Router::new().route(
        "/configz",
        get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], (*body).clone()).into_response() }
        }),
    )
}

/// `/runningpods/`: the pods the runtime runs (upstream: from the runtime, not the
/// configuration), each with its name, namespace, UID and containers.
pub fn running_pods_router(runtime: Arc<dyn crate::runtime::Runtime>) -> Router {
    Router::new()
        .route("/runningpods/", get(running_pods))
        .with_state(runtime)
}

async fn running_pods(State(runtime): State<Arc<dyn crate::runtime::Runtime>>) -> Response {
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let running = match runtime.get_pods(false).await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let items: Vec<Pod> = running
        .into_iter()
        .map(|p| Pod {
            metadata: ObjectMeta {
                name: Some(p.name),
                namespace: Some(p.namespace),
                uid: Some(p.uid.to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: p
                    .containers
                    .into_iter()
                    .map(|c| Container {
                        name: c.name,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    match serde_json::to_vec(&k8s_openapi::List {
        items,
        metadata: Default::default(),
    }) {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /metrics`: the kubelet's metrics ([`crate::metrics::KubeletMetrics`]) in the
/// Prometheus text format.
/// `kubelet_running_pods` and `kubelet_running_containers` are counted from a listing of
/// `runtime` at each scrape (PLEG relists only every five minutes while it follows the
/// runtime's events, so its counts could be that old).
pub fn metrics_router(
    metrics: Arc<crate::metrics::KubeletMetrics>,
    runtime: Arc<dyn crate::runtime::Runtime>,
) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/metrics/probes", get(serve_probe_metrics))
        .with_state((metrics, runtime))
}

async fn serve_metrics(
    State((metrics, runtime)): State<(
        Arc<crate::metrics::KubeletMetrics>,
        Arc<dyn crate::runtime::Runtime>,
    )>,
) -> Response {
    match runtime.get_pods(true).await {
        Ok(pods) => metrics.set_running_from(&pods),
        Err(e) => tracing::debug!(error = %e, "listing the runtime's pods for /metrics"),
    }
    (
        [("content-type", crate::metrics::TEXT_CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}

async fn serve_probe_metrics(
    State((metrics, _)): State<(
        Arc<crate::metrics::KubeletMetrics>,
        Arc<dyn crate::runtime::Runtime>,
    )>,
) -> Response {
    (
        [("content-type", crate::metrics::TEXT_CONTENT_TYPE)],
        metrics.encode_probes(),
    )
        .into_response()
}

/// Which server a request came to, as upstream's `server_type` label: the authenticated
/// server (`readwrite`) or the read-only port (`readonly`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerType {
    /// The authenticated server on `port`.
    ReadWrite,
    /// The read-only port.
    ReadOnly,
}

impl ServerType {
    fn label(self) -> &'static str {
        match self {
            ServerType::ReadWrite => "readwrite",
            ServerType::ReadOnly => "readonly",
        }
    }
}

/// Middleware counting requests as upstream's server metrics (`kubelet_http_requests_total`,
/// `_duration_seconds`, `kubelet_http_inflight_requests`); add it with
/// `axum::middleware::from_fn_with_state((metrics, server_type), record_http)`.
pub async fn record_http(
    State((metrics, server_type)): State<(Arc<crate::metrics::KubeletMetrics>, ServerType)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = crate::metrics::http_path_bucket(request.uri().path());
    // Upstream's long-running requests: the streaming ones.
    let long_running = matches!(path, "exec" | "attach" | "portForward" | "debug");
    let method = request.method().as_str().to_ascii_lowercase();
    let labels = [
        method.as_str(),
        path,
        server_type.label(),
        if long_running { "true" } else { "false" },
    ];
    /// Decrements the in-flight gauge however the request ends (a client that goes away
    /// drops the future).
    struct Inflight(prometheus::IntGauge);
    impl Drop for Inflight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let inflight = Inflight(metrics.http_inflight_requests.with_label_values(&labels));
    inflight.0.inc();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    drop(inflight);
    metrics.http_requests.with_label_values(&labels).inc();
    metrics
        .http_requests_duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
