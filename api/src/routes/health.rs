//! Liveness and readiness.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use herald_shared::db;
use serde_json::json;

use crate::{error::ApiError, state::AppState};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Up", body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: Postgres answers and RabbitMQ is connected (the
/// outbox relay needs it). Each check has its own short timeout.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "Not ready: the detail says what is missing", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    const CHECK: Duration = Duration::from_secs(2);
    let postgres = match tokio::time::timeout(CHECK, db::ping(&state.service_pool)).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(err)) => err.to_string(),
        Err(_) => "timed out".to_string(),
    };
    let rabbitmq = match tokio::time::timeout(CHECK, state.broker.connection()).await {
        Ok(Ok(_)) if state.broker.is_blocked() => "blocked by a broker resource alarm".to_string(),
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(err)) => err.to_string(),
        Err(_) => "timed out".to_string(),
    };
    if postgres == "ok" && rabbitmq == "ok" {
        Ok((
            StatusCode::OK,
            Json(json!({ "status": "ready", "postgres": postgres, "rabbitmq": rabbitmq })),
        ))
    } else {
        Err(ApiError::Unavailable(format!(
            "not ready: postgres: {postgres}; rabbitmq: {rabbitmq}"
        )))
    }
}
