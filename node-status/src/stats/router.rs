//! `GET /stats/summary`, `/metrics/resource` and `/metrics/cadvisor`, as upstream's kubelet
//! server serves them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::StatsProvider;

/// The router of `/stats/summary` over `provider`; the binary merges it with the others.
/// A provider error answers 500 with the error's text, as upstream.
pub fn router(provider: Arc<dyn StatsProvider>) -> Router {
    Router::new()
        .route("/stats/summary", get(summary))
        .route("/metrics/resource", get(resource_metrics))
        .route("/metrics/cadvisor", get(cadvisor_metrics))
        .with_state(provider)
}

fn text(families: &[prometheus::proto::MetricFamily]) -> Response {
    (
        [("content-type", node_core::metrics::TEXT_CONTENT_TYPE)],
        node_core::metrics::encode_families(families),
    )
        .into_response()
}

/// `GET /metrics/resource`: a summary that cannot be read is `scrape_error 1`, as upstream.
async fn resource_metrics(State(provider): State<Arc<dyn StatsProvider>>) -> Response {
    let summary = provider.summary().await;
    if let Err(e) = &summary {
        tracing::warn!(error = %e, "the summary for /metrics/resource");
    }
    text(&super::metrics::resource_metrics(
        summary.as_ref().map_err(drop),
    ))
}

/// `GET /metrics/cadvisor`: the container series dashboards read.
async fn cadvisor_metrics(State(provider): State<Arc<dyn StatsProvider>>) -> Response {
    match provider.summary().await {
        Ok(summary) => text(&super::metrics::cadvisor_metrics(&summary)),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to get node info: {e}"),
        )
            .into_response(),
    }
}

async fn summary(State(provider): State<Arc<dyn StatsProvider>>) -> Response {
    let summary = match provider.summary().await {
        Ok(summary) => summary,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to get node info: {e}"),
            )
                .into_response();
        }
    };
    match serde_json::to_vec(&summary) {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
