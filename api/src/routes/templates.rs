//! `/v1/templates`: message texts with handlebars variables (strict mode,
//! plain text), optionally with an image or document.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError, GenericClient, templates::Template},
    template::{MessageTemplate, TemplateError},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, PathId, Tenant},
    routes::media::{MediaRef, check_media},
    state::AppState,
};

/// Longest template source accepted, in characters.
const MAX_TEMPLATE_CHARS: usize = 16_384;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    name: String,
    /// Handlebars source, e.g. `Hi {{name}}, your code is {{code}}`.
    body: String,
    /// An image or document sent with every message of this template.
    media: Option<MediaRef>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    name: Option<String>,
    body: Option<String>,
    /// `null` removes the media.
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(nullable)]
    media: Option<Option<MediaRef>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateBody {
    id: Uuid,
    name: String,
    body: String,
    /// Top-level variables the template uses: each recipient must have them.
    variables: Vec<String>,
    media: Option<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Template> for TemplateBody {
    fn from(t: Template) -> Self {
        Self {
            id: t.id,
            name: t.name,
            body: t.body,
            variables: t.variables,
            media: t.media,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Checks a name and a source; returns the compiled template.
fn check_source(name: &str, body: &str, errors: &mut Vec<FieldError>) -> Option<MessageTemplate> {
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(FieldError::new("/name", "must have 1 to 200 characters"));
    }
    if body.trim().is_empty() {
        errors.push(FieldError::new("/body", "must not be empty"));
        return None;
    }
    if body.chars().count() > MAX_TEMPLATE_CHARS {
        errors.push(FieldError::new(
            "/body",
            format!("at most {MAX_TEMPLATE_CHARS} characters"),
        ));
        return None;
    }
    MessageTemplate::compile(body)
        .map_err(|err| errors.push(FieldError::new("/body", err.to_string())))
        .ok()
}

/// Creates a template.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, description = "The template", body = TemplateBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<CreateTemplate>,
) -> ApiResult<impl IntoResponse> {
    let mut errors = Vec::new();
    let name = request.name.trim();
    let compiled = check_source(name, &request.body, &mut errors);
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let media = match &request.media {
        Some(media) => check_media(&tx, tenant_id, media, "/media", &mut errors).await?,
        None => None,
    };
    let Some(compiled) = compiled.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid(
            "the template cannot be saved as given",
            errors,
        ));
    };
    let template = db::templates::insert(
        &tx,
        tenant_id,
        name,
        &request.body,
        compiled.variables(),
        media.as_ref(),
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(TemplateBody::from(template))))
}

/// The tenant's templates, a page at a time.
#[utoipa::path(get, path = "/v1/templates", tag = "templates", params(Paging),
    responses((status = 200, description = "A page of templates", body = Page<TemplateBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<TemplateBody>>> {
    let limit = paging.limit(&state)?;
    let after = paging.after_uuid()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let templates = db::templates::page(&tx, tenant_id, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        templates,
        limit,
        |t| t.id.to_string(),
        TemplateBody::from,
    )))
}

async fn load(client: &impl GenericClient, tenant_id: Uuid, id: Uuid) -> ApiResult<Template> {
    db::templates::get(client, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))
}

#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 200, description = "The template", body = TemplateBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<TemplateBody>> {
    let id = id.or_not_found("template")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let template = load(&tx, tenant_id, id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(template.into()))
}

/// Changes a template. Campaigns already created keep the texts they were
/// rendered with.
#[utoipa::path(patch, path = "/v1/templates/{id}", tag = "templates", request_body = UpdateTemplate,
    params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 200, description = "The template", body = TemplateBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<UpdateTemplate>,
) -> ApiResult<Json<TemplateBody>> {
    let id = id.or_not_found("template")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let current = load(&tx, tenant_id, id).await?;
    let name = request
        .name
        .as_deref()
        .map(str::trim)
        .unwrap_or(&current.name)
        .to_string();
    let body = request.body.unwrap_or(current.body);
    let mut errors = Vec::new();
    let compiled = check_source(&name, &body, &mut errors);
    let media = match &request.media {
        None => current.media,
        Some(None) => None,
        Some(Some(media)) => check_media(&tx, tenant_id, media, "/media", &mut errors).await?,
    };
    let Some(compiled) = compiled.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid(
            "the template cannot be changed as given",
            errors,
        ));
    };
    let updated = db::templates::update(
        &tx,
        tenant_id,
        id,
        &name,
        &body,
        compiled.variables(),
        media.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("template"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(updated.into()))
}

/// Deletes a template no campaign uses (`409` otherwise).
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 204, description = "Deleted"), WriteErrors),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<StatusCode> {
    let id = id.or_not_found("template")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    match db::templates::delete(&tx, tenant_id, id).await {
        Ok(true) => {
            tx.commit().await.map_err(DbError::from)?;
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(ApiError::not_found("template")),
        Err(err) if err.is_foreign_key_violation() => Err(ApiError::Conflict(
            "campaigns use this template; it cannot be deleted".into(),
        )),
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Render for this contact (its attributes, name and phone)…
    contact_id: Option<Uuid>,
    /// …or for these values.
    variables: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// The text as the recipient would read it.
    text: String,
    /// Its length in characters.
    chars: usize,
    media: Option<Value>,
}

/// Renders the template as a recipient would read it. A missing variable is
/// a 422 naming it; so is a text longer than the configured cap.
#[utoipa::path(post, path = "/v1/templates/{id}/preview", tag = "templates", request_body = PreviewRequest,
    params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 200, description = "The rendered text", body = Preview), WriteErrors),
    security(("api_key" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> ApiResult<Response> {
    let id = id.or_not_found("template")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let template = load(&tx, tenant_id, id).await?;
    let variables = match (request.contact_id, request.variables) {
        (Some(contact_id), None) => db::contacts::get(&tx, tenant_id, contact_id)
            .await?
            .ok_or_else(|| ApiError::field("/contact_id", "no contact with this id"))?
            .variables(),
        (None, Some(variables)) => variables,
        _ => {
            return Err(ApiError::field(
                "/variables",
                "give contact_id or variables (one of them)",
            ));
        }
    };
    tx.commit().await.map_err(DbError::from)?;
    let compiled = MessageTemplate::compile(&template.body).map_err(|err| {
        ApiError::Internal(anyhow::anyhow!("stored template no longer compiles: {err}"))
    })?;
    let text = compiled.render(&variables).map_err(|err| match err {
        TemplateError::MissingVariable(_) => ApiError::field("/variables", err.to_string()),
        other => ApiError::field("/variables", other.to_string()),
    })?;
    let chars = text.chars().count();
    let cap = state.config.api.max_body_chars;
    if chars > cap {
        return Err(ApiError::field(
            "/variables",
            format!("the rendered text has {chars} characters (at most {cap})"),
        ));
    }
    Ok(Json(Preview {
        text,
        chars,
        media: template.media,
    })
    .into_response())
}
