//! `/v1/contacts`: the people a tenant writes to, and whether their phones use
//! WhatsApp.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError, contacts::Contact},
    domain::PhoneNumber,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, PathId, Tenant},
    state::AppState,
};

/// Largest attributes object, serialised.
const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContact {
    phone: String,
    name: Option<String>,
    /// Anything known about the contact: template variables and campaign
    /// filters.
    #[serde(default)]
    attributes: Map<String, Value>,
    /// ISO 3166 region for a phone written without `+country`.
    default_region: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContact {
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(nullable)]
    name: Option<Option<String>>,
    /// Replaces the attributes whole.
    attributes: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactBody {
    id: Uuid,
    phone: String,
    name: Option<String>,
    attributes: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Contact> for ContactBody {
    fn from(c: Contact) -> Self {
        Self {
            id: c.id,
            phone: c.phone.to_string(),
            name: c.name,
            attributes: c.attributes,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

fn check_fields(
    name: Option<&str>,
    attributes: Option<&Map<String, Value>>,
    errors: &mut Vec<FieldError>,
) {
    if name.is_some_and(|n| n.chars().count() > 200) {
        errors.push(FieldError::new("/name", "at most 200 characters"));
    }
    if let Some(attributes) = attributes {
        if serde_json::to_vec(attributes).map_or(0, |v| v.len()) > MAX_ATTRIBUTES_BYTES {
            errors.push(FieldError::new(
                "/attributes",
                format!("at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"),
            ));
        }
        if let Some(key) = attributes
            .keys()
            .find(|k| k.is_empty() || k.chars().count() > 100)
        {
            errors.push(FieldError::new(
                format!("/attributes/{key}"),
                "names have 1 to 100 characters",
            ));
        }
    }
}

#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = CreateContact,
    responses((status = 201, description = "The contact", body = ContactBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<CreateContact>,
) -> ApiResult<impl IntoResponse> {
    let mut errors = Vec::new();
    let phone = PhoneNumber::parse(&request.phone, request.default_region.as_deref())
        .map_err(|err| errors.push(FieldError::new("/phone", err.to_string())))
        .ok();
    let name = request
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    check_fields(name, Some(&request.attributes), &mut errors);
    let Some(phone) = phone.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid(
            "the contact cannot be added as given",
            errors,
        ));
    };
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    match db::contacts::insert(&tx, tenant_id, &phone, name, &request.attributes).await {
        Ok(contact) => {
            tx.commit().await.map_err(DbError::from)?;
            Ok((StatusCode::CREATED, Json(ContactBody::from(contact))))
        }
        Err(err) if err.is_unique_violation() => Err(ApiError::Conflict(format!(
            "a contact with the phone {phone} exists already"
        ))),
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// Only the members of this list.
    list_id: Option<Uuid>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", params(ContactQuery),
    responses((status = 200, description = "A page of contacts", body = Page<ContactBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<ContactQuery>,
) -> ApiResult<Json<Page<ContactBody>>> {
    let paging = Paging {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = paging.limit(&state)?;
    let after = paging.after_uuid()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    if let Some(list_id) = query.list_id {
        db::lists::get(&tx, tenant_id, list_id)
            .await?
            .ok_or_else(|| ApiError::not_found("list"))?;
    }
    let contacts = db::contacts::page(&tx, tenant_id, query.list_id, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        contacts,
        limit,
        |c| c.id.to_string(),
        ContactBody::from,
    )))
}

#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = Uuid, Path, description = "Contact id")),
    responses((status = 200, description = "The contact", body = ContactBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<ContactBody>> {
    let id = id.or_not_found("contact")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let contact = db::contacts::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(contact.into()))
}

#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts", request_body = UpdateContact,
    params(("id" = Uuid, Path, description = "Contact id")),
    responses((status = 200, description = "The contact", body = ContactBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<UpdateContact>,
) -> ApiResult<Json<ContactBody>> {
    let id = id.or_not_found("contact")?;
    let name = request
        .name
        .map(|n| n.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()));
    let mut errors = Vec::new();
    check_fields(
        name.clone().flatten().as_deref(),
        request.attributes.as_ref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the contact cannot be changed as given",
            errors,
        ));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let contact = db::contacts::update(
        &tx,
        tenant_id,
        id,
        name.as_ref().map(|n| n.as_deref()),
        request.attributes.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("contact"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(contact.into()))
}

/// Deletes a contact (and its list memberships). Messages already created
/// for it stay.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = Uuid, Path, description = "Contact id")),
    responses((status = 204, description = "Deleted"), WriteErrors),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<StatusCode> {
    let id = id.or_not_found("contact")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    if !db::contacts::delete(&tx, tenant_id, id).await? {
        return Err(ApiError::not_found("contact"));
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
