//! `/v1/contacts/check`: whether phones use WhatsApp. Fresh answers come
//! from a cache; the rest go through the throttled lookup lane of one of the
//! tenant's numbers (a worker works through it a few phones at a time, never
//! in bursts: bulk lookups get numbers banned), and the answer is polled.

use std::collections::HashMap;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError, contact_checks::Known},
    domain::PhoneNumber,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, PathId, Tenant},
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    phones: Vec<String>,
    /// The number whose lane looks them up (default: a connected number of
    /// the tenant).
    number_id: Option<Uuid>,
    default_region: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    OnWhatsapp,
    NotOnWhatsapp,
    /// Not looked up yet: poll the check.
    Pending,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckedPhone {
    phone: String,
    status: CheckStatus,
    checked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckBody {
    /// Poll `GET /v1/contacts/checks/{id}` while `complete` is false.
    id: Option<Uuid>,
    complete: bool,
    results: Vec<CheckedPhone>,
}

fn checked(phone: String, known: Option<&Known>) -> CheckedPhone {
    match known {
        Some(known) => CheckedPhone {
            phone,
            status: if known.on_whatsapp {
                CheckStatus::OnWhatsapp
            } else {
                CheckStatus::NotOnWhatsapp
            },
            checked_at: Some(known.checked_at),
        },
        None => CheckedPhone {
            phone,
            status: CheckStatus::Pending,
            checked_at: None,
        },
    }
}

/// Checks phones: `200` when every answer was fresh in the cache, else `202`
/// with a check to poll.
#[utoipa::path(post, path = "/v1/contacts/check", tag = "contacts", request_body = CheckRequest,
    responses(
        (status = 200, description = "Every answer known", body = CheckBody),
        (status = 202, description = "Some phones are being looked up: poll the check", body = CheckBody),
        WriteErrors),
    security(("api_key" = [])))]
pub async fn check(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<CheckRequest>,
) -> ApiResult<impl IntoResponse> {
    let max = state.config.contacts.check_max_phones;
    if request.phones.is_empty() || request.phones.len() > max {
        return Err(ApiError::field("/phones", format!("1 to {max} phones")));
    }
    let mut errors = Vec::new();
    let mut phones: Vec<String> = Vec::with_capacity(request.phones.len());
    for (i, raw) in request.phones.iter().enumerate() {
        match PhoneNumber::parse(raw, request.default_region.as_deref()) {
            Ok(phone) if !phones.contains(&phone.to_string()) => phones.push(phone.to_string()),
            Ok(_) => {}
            Err(err) => errors.push(FieldError::new(format!("/phones/{i}"), err.to_string())),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "some phones are not valid; nothing was checked",
            errors,
        ));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let cached =
        db::contact_checks::cached(&tx, tenant_id, &phones, state.config.contacts.cache_days)
            .await?;
    let known: HashMap<&str, &Known> = cached.iter().map(|k| (k.phone.as_str(), k)).collect();
    let pending: Vec<String> = phones
        .iter()
        .filter(|p| !known.contains_key(p.as_str()))
        .cloned()
        .collect();
    let id = if pending.is_empty() {
        None
    } else {
        let number_id = match request.number_id {
            Some(id) => {
                db::sender_numbers::get(&tx, tenant_id, id)
                    .await?
                    .ok_or_else(|| ApiError::field("/number_id", "no number with this id"))?;
                id
            }
            None => {
                let all: Vec<Uuid> = db::sender_numbers::list(&tx, tenant_id)
                    .await?
                    .iter()
                    .map(|n| n.id)
                    .collect();
                db::sender_numbers::pick_sender(&tx, tenant_id, &all, "")
                    .await?
                    .ok_or_else(|| {
                        ApiError::Conflict("no active number to look phones up with".into())
                    })?
            }
        };
        Some(db::contact_checks::create(&tx, tenant_id, number_id, &phones, &pending).await?)
    };
    tx.commit().await.map_err(DbError::from)?;
    let results = phones
        .into_iter()
        .map(|phone| {
            let k = known.get(phone.as_str()).copied();
            checked(phone, k)
        })
        .collect();
    let status = if id.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(CheckBody {
            complete: id.is_none(),
            id,
            results,
        }),
    ))
}

/// A check's answers so far.
#[utoipa::path(get, path = "/v1/contacts/checks/{id}", tag = "contacts",
    params(("id" = Uuid, Path, description = "Check id")),
    responses((status = 200, description = "The check", body = CheckBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<CheckBody>> {
    let id = id.or_not_found("check")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let rows = db::contact_checks::results(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("check"))?;
    tx.commit().await.map_err(DbError::from)?;
    let results: Vec<CheckedPhone> = rows
        .into_iter()
        .map(|(phone, known)| checked(phone, known.as_ref()))
        .collect();
    Ok(Json(CheckBody {
        id: Some(id),
        complete: results.iter().all(|r| r.status != CheckStatus::Pending),
        results,
    }))
}
