//! Middleware of the `/v1` routes: per-key rate limits, and Idempotency-Key
//! on POST.

use std::time::Duration;

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequestParts, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::clock::{Clock, DefaultClock};
use herald_shared::{
    db::{self, DbError},
    metrics as m,
};
use sha2::{Digest, Sha256};

use crate::{
    error::{ApiError, FieldError},
    extract::{Tenant, bearer_key},
    state::AppState,
};

/// How long a request with a key already in use waits for the first one to
/// finish before answering 409.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(10);

/// Requests per API key per second, with a burst allowance (`api.rate_limit_*`).
/// Keys are told apart by their hash, so unknown keys are limited too (no free
/// brute force). Answers 429 with `Retry-After`.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if let Ok(key) = bearer_key(&parts) {
        let hash = db::api_keys::hash(key);
        if let Err(not_until) = state.limiter.check_key(&hash) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            metrics::counter!(m::HTTP_RATE_LIMITED).increment(1);
            return ApiError::TooManyRequests(seconds.max(1)).into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

fn invalid_key() -> Response {
    ApiError::invalid(
        "invalid Idempotency-Key",
        vec![FieldError::new(
            "Idempotency-Key",
            "1 to 255 visible ASCII characters",
        )],
    )
    .into_response()
}

/// `Idempotency-Key` on POST: the first response (other than a server error)
/// is stored for `api.idempotency_hours` and replayed for the same key
/// (header `Idempotent-Replayed: true`); the same key with a different
/// request answers 422; a duplicate arriving while the first is still being
/// handled waits for it (up to 10 s, then 409). The request fingerprint is
/// its method, path, query and body; for a CSV import (streamed, never held
/// in memory) it is the method, path, query, content type and length.
pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw) = request.headers().get("idempotency-key") else {
        return next.run(request).await;
    };
    let key = match raw.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            key.to_string()
        }
        _ => return invalid_key(),
    };
    let (mut parts, body) = request.into_parts();
    let tenant = match Tenant::from_request_parts(&mut parts, &state).await {
        Ok(Tenant(tenant)) => tenant,
        Err(err) => return err.into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b"\n");
    hasher.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    hasher.update(b"\n");
    let streaming = parts.uri.path().ends_with("/import");
    let body = if streaming {
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
            hasher.update(parts.headers.get(&name).map_or(&b""[..], |v| v.as_bytes()));
            hasher.update(b"\n");
        }
        body
    } else {
        let limit = if parts.uri.path() == "/v1/media" {
            state.config.api.media_max_bytes
        } else {
            state.config.api.max_body_bytes
        };
        match to_bytes(body, limit).await {
            Ok(bytes) => {
                hasher.update(&bytes);
                Body::from(bytes)
            }
            Err(_) => {
                return ApiError::PayloadTooLarge(
                    "the request body is larger than this server accepts".into(),
                )
                .into_response();
            }
        }
    };
    let fingerprint = hasher.finalize().to_vec();

    let claimed = match state.service_pool.get().await {
        Ok(client) => db::idempotency::claim(&client, tenant, &key, &fingerprint).await,
        Err(err) => Err(DbError::from(err)),
    };
    match claimed {
        Err(err) => ApiError::from(err).into_response(),
        Ok(true) => {
            let response = next.run(Request::from_parts(parts, body)).await;
            record(&state, tenant, &key, response).await
        }
        Ok(false) => replay(&state, tenant, &key, &fingerprint).await,
    }
}

/// Stores the first response (or forgets the key after a server error, so a
/// retry runs again) and returns it.
async fn record(state: &AppState, tenant: uuid::Uuid, key: &str, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return ApiError::Internal(anyhow::anyhow!("reading a response: {err}"))
                .into_response();
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let stored = match state.service_pool.get().await {
        Ok(client) if parts.status.is_server_error() => {
            db::idempotency::release(&client, tenant, key).await
        }
        Ok(client) => {
            db::idempotency::complete(
                &client,
                tenant,
                key,
                parts.status.as_u16(),
                content_type.as_deref(),
                &bytes,
            )
            .await
        }
        Err(err) => Err(err.into()),
    };
    if let Err(err) = stored {
        tracing::warn!(error = %err, "could not record an idempotent response");
    }
    parts
        .headers
        .insert("idempotent-replayed", HeaderValue::from_static("false"));
    Response::from_parts(parts, Body::from(bytes))
}

/// Answers a request whose key was used before.
async fn replay(state: &AppState, tenant: uuid::Uuid, key: &str, fingerprint: &[u8]) -> Response {
    let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
    loop {
        let recorded = match state.service_pool.get().await {
            Ok(client) => db::idempotency::recorded(&client, tenant, key).await,
            Err(err) => Err(err.into()),
        };
        match recorded {
            Err(err) => return ApiError::from(err).into_response(),
            // Released after a server error between our claim and now: the
            // client should retry.
            Ok(None) => {
                return ApiError::Conflict(
                    "the first request with this Idempotency-Key failed; retry".into(),
                )
                .into_response();
            }
            Ok(Some(recorded)) if recorded.request_hash != fingerprint => {
                return ApiError::invalid(
                    "this Idempotency-Key was used with a different request",
                    vec![FieldError::new(
                        "Idempotency-Key",
                        "already used for another request",
                    )],
                )
                .into_response();
            }
            Ok(Some(recorded)) => {
                if let Some((status, content_type, body)) = recorded.response {
                    let mut response = Response::new(Body::from(body));
                    *response.status_mut() = axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::OK);
                    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                        response.headers_mut().insert(header::CONTENT_TYPE, value);
                    }
                    response
                        .headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    return response;
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress".into(),
            )
            .into_response();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
