//! `/v1/suppressions`: phones the tenant must not write to. Suppressing a
//! phone also stops its messages not yet being sent; every send checks the
//! list again just before the call.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError, suppressions::Suppression},
    domain::PhoneNumber,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ApiResult, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, Tenant},
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSuppression {
    phone: String,
    reason: Option<String>,
    /// ISO 3166 region for a phone written without `+country`.
    default_region: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionBody {
    phone: String,
    reason: Option<String>,
    /// `api`, or `opt_out` (the recipient asked).
    source: String,
    created_at: DateTime<Utc>,
}

impl From<Suppression> for SuppressionBody {
    fn from(s: Suppression) -> Self {
        Self {
            phone: s.phone,
            reason: s.reason,
            source: s.source,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Suppressed {
    #[serde(flatten)]
    suppression: SuppressionBody,
    /// Messages to this phone that were waiting and will not be sent.
    stopped_messages: u64,
}

/// Suppresses a phone (adding it again keeps the first entry).
#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = CreateSuppression,
    responses((status = 201, description = "The suppression", body = Suppressed), WriteErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<CreateSuppression>,
) -> ApiResult<impl IntoResponse> {
    let phone = PhoneNumber::parse(&request.phone, request.default_region.as_deref())
        .map_err(|err| ApiError::field("/phone", err.to_string()))?;
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ApiError::field("/reason", "at most 500 characters"));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let suppression = db::suppressions::upsert(
        &tx,
        tenant_id,
        phone.as_str(),
        request.reason.as_deref(),
        "api",
    )
    .await?;
    let stopped = db::messages::suppress_recipient(
        &tx,
        tenant_id,
        phone.as_str(),
        "the recipient is suppressed",
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    if stopped > 0 {
        state.counts.forget_tenant(tenant_id);
    }
    Ok((
        StatusCode::CREATED,
        Json(Suppressed {
            suppression: suppression.into(),
            stopped_messages: stopped,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions", params(Paging),
    responses((status = 200, description = "A page of suppressions", body = Page<SuppressionBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<SuppressionBody>>> {
    let limit = paging.limit(&state)?;
    let after = paging.after()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let rows = db::suppressions::page(&tx, tenant_id, after.as_deref(), limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        rows,
        limit,
        |s| s.phone.clone(),
        SuppressionBody::from,
    )))
}

/// A phone in the path: E.164, the `+` optional.
fn phone_from_path(raw: &str) -> ApiResult<String> {
    let with_plus = if raw.starts_with('+') {
        raw.to_string()
    } else {
        format!("+{raw}")
    };
    PhoneNumber::parse(&with_plus, None)
        .map(|p| p.to_string())
        .map_err(|_| ApiError::not_found("suppression"))
}

#[utoipa::path(get, path = "/v1/suppressions/{phone}", tag = "suppressions",
    params(("phone" = String, Path, description = "E.164 phone (the + may be left out)")),
    responses((status = 200, description = "The suppression", body = SuppressionBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    Path(phone): Path<String>,
) -> ApiResult<Json<SuppressionBody>> {
    let phone = phone_from_path(&phone)?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let found = db::suppressions::get(&tx, tenant_id, &phone)
        .await?
        .ok_or_else(|| ApiError::NotFound("this phone is not suppressed".into()))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(found.into()))
}

/// Lifts a suppression. Messages already stopped stay `suppressed`.
#[utoipa::path(delete, path = "/v1/suppressions/{phone}", tag = "suppressions",
    params(("phone" = String, Path, description = "E.164 phone (the + may be left out)")),
    responses((status = 204, description = "Lifted"), WriteErrors),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    Path(phone): Path<String>,
) -> ApiResult<StatusCode> {
    let phone = phone_from_path(&phone)?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    if !db::suppressions::delete(&tx, tenant_id, &phone).await? {
        return Err(ApiError::NotFound("this phone is not suppressed".into()));
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
