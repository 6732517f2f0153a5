//! `/v1/webhooks`: endpoints that receive the tenant's events, signed per
//! Standard Webhooks; their deliveries, attempts and replays.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use chrono::{DateTime, Duration as Span, Utc};
use herald_shared::{
    db::{
        self, DbError,
        webhooks::{AttemptRecord, Delivery, Endpoint, EndpointChange, NewEndpoint},
    },
    domain::DeliveryState,
    events::PUBLIC_TYPES,
    webhooks::{TargetPolicy, decode_secret, new_secret},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, PathId, Tenant},
    state::AppState,
};

/// Longest overlap of an old and a new secret after a rotation.
const MAX_OVERLAP_HOURS: u32 = 168;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: http(s).
    url: String,
    description: Option<String>,
    /// Event types to send (default: every type).
    #[serde(default)]
    event_types: Vec<String>,
    /// Default true.
    enabled: Option<bool>,
    /// Your own `whsec_…` secret (default: a new random one).
    secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    url: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(nullable)]
    description: Option<Option<String>>,
    /// `[]`: every type.
    event_types: Option<Vec<String>>,
    /// Enabling an endpoint Herald disabled (it answered 410) clears the
    /// reason.
    enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    id: Uuid,
    url: String,
    description: Option<String>,
    /// Empty: every type.
    event_types: Vec<String>,
    enabled: bool,
    /// Why Herald disabled it.
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The signing secret: only in the answer to its creation (also at
    /// `GET /v1/webhooks/{id}/secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl From<Endpoint> for WebhookBody {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            created_at: e.created_at,
            updated_at: e.updated_at,
            secret: None,
        }
    }
}

fn policy(state: &AppState) -> TargetPolicy {
    TargetPolicy {
        allow_loopback: state.config.webhooks.allow_loopback,
        allow_private_networks: state.config.webhooks.allow_private_networks,
    }
}

fn check_event_types(types: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    let mut checked: Vec<String> = Vec::new();
    for (i, kind) in types.iter().enumerate() {
        if !PUBLIC_TYPES.contains(&kind.as_str()) {
            errors.push(FieldError::new(
                format!("/event_types/{i}"),
                format!("unknown event type {kind:?}; see docs/EVENTS.md"),
            ));
        } else if !checked.contains(kind) {
            checked.push(kind.clone());
        }
    }
    checked
}

fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) {
    if description.is_some_and(|d| d.chars().count() > 500) {
        errors.push(FieldError::new("/description", "at most 500 characters"));
    }
}

/// Registers an endpoint. The answer carries its signing secret.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, description = "The endpoint, with its secret", body = WebhookBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<CreateWebhook>,
) -> ApiResult<impl IntoResponse> {
    let mut errors = Vec::new();
    if let Err(reason) = policy(&state).check_url(&request.url) {
        errors.push(FieldError::new("/url", reason));
    }
    let event_types = check_event_types(&request.event_types, &mut errors);
    let description = request
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    check_description(description, &mut errors);
    let secret = match &request.secret {
        Some(secret) => {
            if let Err(reason) = decode_secret(secret) {
                errors.push(FieldError::new("/secret", reason));
            }
            secret.clone()
        }
        None => new_secret(),
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the endpoint cannot be registered as given",
            errors,
        ));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let max = state.config.webhooks.max_endpoints;
    if db::webhooks::count(&tx, tenant_id).await? >= max {
        return Err(ApiError::Conflict(format!(
            "a tenant may have at most {max} webhook endpoints; delete one first"
        )));
    }
    let endpoint = db::webhooks::insert(
        &tx,
        tenant_id,
        &NewEndpoint {
            url: &request.url,
            description,
            event_types: &event_types,
            enabled: request.enabled.unwrap_or(true),
            secret: &secret,
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    let mut body = WebhookBody::from(endpoint);
    body.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(Paging),
    responses((status = 200, description = "A page of endpoints", body = Page<WebhookBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<WebhookBody>>> {
    let limit = paging.limit(&state)?;
    let after = paging.after_uuid()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let endpoints = db::webhooks::page(&tx, tenant_id, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        endpoints,
        limit,
        |e| e.id.to_string(),
        WebhookBody::from,
    )))
}

async fn load(tx: &impl db::GenericClient, tenant_id: Uuid, id: PathId) -> ApiResult<Endpoint> {
    let id = id.or_not_found("webhook endpoint")?;
    db::webhooks::get(tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 200, description = "The endpoint", body = WebhookBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<WebhookBody>> {
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let endpoint = load(&tx, tenant_id, id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(endpoint.into()))
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 200, description = "The endpoint", body = WebhookBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookBody>> {
    let id = id.or_not_found("webhook endpoint")?;
    let mut errors = Vec::new();
    if let Some(url) = &request.url
        && let Err(reason) = policy(&state).check_url(url)
    {
        errors.push(FieldError::new("/url", reason));
    }
    let event_types = request
        .event_types
        .as_ref()
        .map(|types| check_event_types(types, &mut errors));
    let description = request
        .description
        .as_ref()
        .map(|d| d.as_deref().map(str::trim).filter(|d| !d.is_empty()));
    check_description(description.flatten(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the endpoint cannot be changed as given",
            errors,
        ));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let endpoint = db::webhooks::update(
        &tx,
        tenant_id,
        id,
        &EndpointChange {
            url: request.url.as_deref(),
            description,
            event_types: event_types.as_deref(),
            enabled: request.enabled,
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(endpoint.into()))
}

/// Deletes an endpoint with its deliveries and their log.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 204, description = "Deleted"), WriteErrors),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<StatusCode> {
    let id = id.or_not_found("webhook endpoint")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    if !db::webhooks::delete(&tx, tenant_id, id).await? {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretBody {
    /// Verify signatures with this (`whsec_…`).
    secret: String,
    /// Until then, deliveries also carry a signature made with the previous
    /// secret.
    previous_secret_until: Option<DateTime<Utc>>,
}

fn secret_body(endpoint: Endpoint) -> SecretBody {
    SecretBody {
        secret: endpoint.secret,
        previous_secret_until: endpoint
            .previous_secret_until
            .filter(|until| *until > Utc::now()),
    }
}

/// The endpoint's signing secret.
#[utoipa::path(get, path = "/v1/webhooks/{id}/secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 200, description = "The secret", body = SecretBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn secret(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<SecretBody>> {
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let endpoint = load(&tx, tenant_id, id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(secret_body(endpoint)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Your own new `whsec_…` secret (default: a new random one).
    secret: Option<String>,
    /// Hours the previous secret keeps signing too, so receivers can switch
    /// without losing a delivery (default 24, at most 168; 0: stop at once).
    overlap_hours: Option<u32>,
}

/// Replaces the signing secret. During the overlap every delivery carries
/// two signatures (`v1,<new> v1,<old>`).
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", request_body = RotateSecret,
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 200, description = "The new secret", body = SecretBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<RotateSecret>,
) -> ApiResult<Json<SecretBody>> {
    let id = id.or_not_found("webhook endpoint")?;
    let secret = match request.secret {
        Some(secret) => {
            decode_secret(&secret).map_err(|reason| ApiError::field("/secret", reason))?;
            secret
        }
        None => new_secret(),
    };
    let hours = request.overlap_hours.unwrap_or(24);
    if hours > MAX_OVERLAP_HOURS {
        return Err(ApiError::field(
            "/overlap_hours",
            format!("at most {MAX_OVERLAP_HOURS}"),
        ));
    }
    let until = (hours > 0).then(|| Utc::now() + Span::hours(i64::from(hours)));
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let endpoint = db::webhooks::rotate_secret(&tx, tenant_id, id, &secret, until)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(secret_body(endpoint)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptBody {
    /// 1 for the first attempt ever made, counting every replay.
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_ms: i32,
    /// The HTTP status, when an answer came.
    status: Option<i32>,
    /// Why there was no usable answer (refused target, connection, timeout).
    error: Option<String>,
    /// The first KiB of the answer's body.
    response: Option<String>,
}

impl From<AttemptRecord> for AttemptBody {
    fn from(a: AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            status: a.status,
            error: a.error,
            response: a.response,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    id: i64,
    endpoint_id: Uuid,
    /// The event's id: the `webhook-id` header of every attempt.
    event_id: Uuid,
    event_type: String,
    state: DeliveryState,
    attempts: i32,
    /// While pending: when the next attempt is due.
    next_attempt_at: Option<DateTime<Utc>>,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    /// Every attempt (only when one delivery is asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_log: Option<Vec<AttemptBody>>,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_id: d.event_id,
            event_type: d.event_type,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            failed_at: d.failed_at,
            attempt_log: None,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    state: Option<DeliveryState>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// An endpoint's deliveries, oldest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id"), DeliveryQuery),
    responses((status = 200, description = "A page of deliveries", body = Page<DeliveryBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<Page<DeliveryBody>>> {
    let paging = Paging {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = paging.limit(&state)?;
    let after = paging.after_i64()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let endpoint = load(&tx, tenant_id, id).await?;
    let rows = db::webhooks::deliveries(&tx, endpoint.id, query.state, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        rows,
        limit,
        |d| d.id.to_string(),
        DeliveryBody::from,
    )))
}

/// An endpoint id and a delivery id from the path; anything malformed names
/// nothing (404).
fn delivery_path(raw: (String, String)) -> ApiResult<(Uuid, i64)> {
    let not_found = || ApiError::NotFound("no such webhook delivery".into());
    let endpoint = Uuid::parse_str(&raw.0).map_err(|_| not_found())?;
    let delivery = raw.1.parse().map_err(|_| not_found())?;
    Ok((endpoint, delivery))
}

/// A delivery of one of the tenant's endpoints.
async fn load_delivery(
    tx: &impl db::GenericClient,
    tenant_id: Uuid,
    raw: (String, String),
) -> ApiResult<Delivery> {
    let (endpoint_id, delivery_id) = delivery_path(raw)?;
    let not_found = || ApiError::NotFound("no such webhook delivery".into());
    db::webhooks::get(tx, tenant_id, endpoint_id)
        .await?
        .ok_or_else(not_found)?;
    db::webhooks::get_delivery(tx, endpoint_id, delivery_id)
        .await?
        .ok_or_else(not_found)
}

/// One delivery, with every attempt.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries/{delivery_id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id"), ("delivery_id" = i64, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery and its attempts", body = DeliveryBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn delivery(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    Path(raw): Path<(String, String)>,
) -> ApiResult<Json<DeliveryBody>> {
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let found = load_delivery(&tx, tenant_id, raw).await?;
    let attempts = db::webhooks::attempts(&tx, found.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    let mut body = DeliveryBody::from(found);
    body.attempt_log = Some(attempts.into_iter().map(AttemptBody::from).collect());
    Ok(Json(body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// Deliveries that start a new run of attempts now.
    replayed: usize,
}

/// Delivers one event again, with a new run of attempts (same
/// `webhook-id`). Not while an attempt is pending.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id"), ("delivery_id" = i64, Path, description = "Delivery id")),
    responses((status = 202, description = "Queued", body = Replayed), WriteErrors),
    security(("api_key" = [])))]
pub async fn replay_one(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    Path(raw): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let found = load_delivery(&tx, tenant_id, raw).await?;
    if found.state == DeliveryState::Pending {
        return Err(ApiError::Conflict(
            "this delivery is pending: its next attempt is already queued".into(),
        ));
    }
    let replayed = db::webhooks::replay(&tx, found.endpoint_id, Some(found.id), None).await?;
    tx.commit().await.map_err(DbError::from)?;
    let jobs: Vec<(i64, i32)> = replayed.iter().map(|&id| (id, 1)).collect();
    state
        .webhook_attempts
        .queue(&jobs, std::time::Duration::ZERO)
        .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            replayed: replayed.len(),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayFailed {
    /// Only deliveries created since then (default: all retained).
    since: Option<DateTime<Utc>>,
}

/// Delivers again every failed delivery of the endpoint (after an outage of
/// the receiver, say).
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks", request_body = ReplayFailed,
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 202, description = "Queued", body = Replayed), WriteErrors),
    security(("api_key" = [])))]
pub async fn replay_failed(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<ReplayFailed>,
) -> ApiResult<impl IntoResponse> {
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let endpoint = load(&tx, tenant_id, id).await?;
    if !endpoint.enabled {
        return Err(ApiError::Conflict(
            "the endpoint is disabled; enable it first".into(),
        ));
    }
    let replayed = db::webhooks::replay(&tx, endpoint.id, None, request.since).await?;
    tx.commit().await.map_err(DbError::from)?;
    let jobs: Vec<(i64, i32)> = replayed.iter().map(|&id| (id, 1)).collect();
    state
        .webhook_attempts
        .queue(&jobs, std::time::Duration::ZERO)
        .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            replayed: replayed.len(),
        }),
    ))
}
