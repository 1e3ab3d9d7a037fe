//! `GET /stats/summary`, as upstream's kubelet server serves it.

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
        .with_state(provider)
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
