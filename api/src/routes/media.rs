//! `/v1/media`: images and documents sent with messages, uploaded here or
//! referenced by URL in templates and direct messages.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{StatusCode, header},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use herald_shared::db::{self, DbError, GenericClient};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiQuery, PathId, Tenant},
    state::AppState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Document,
}

/// An image or document to send with a text: an uploaded object
/// (`media_id`) or a URL WhatsApp's side will fetch (`url`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaRef {
    pub kind: MediaKind,
    pub url: Option<String>,
    pub media_id: Option<Uuid>,
    /// Shown for documents.
    pub filename: Option<String>,
}

/// Content types accepted for uploads of each kind.
fn accepts(kind: MediaKind, content_type: &str) -> bool {
    match kind {
        MediaKind::Image => matches!(content_type, "image/jpeg" | "image/png" | "image/webp"),
        MediaKind::Document => {
            content_type.starts_with("application/") || content_type.starts_with("text/")
        }
    }
}

/// Checks a media reference (the upload exists and fits the kind; the URL is
/// http(s)); returns the JSON stored with templates and messages.
pub async fn check_media(
    client: &impl GenericClient,
    tenant_id: Uuid,
    media: &MediaRef,
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> Result<Option<Value>, DbError> {
    match (&media.url, media.media_id) {
        (Some(url), None) => {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2048
                && !url.chars().any(char::is_whitespace);
            if !ok {
                errors.push(FieldError::new(
                    format!("{pointer}/url"),
                    "an http(s) URL without spaces, at most 2048 characters",
                ));
                return Ok(None);
            }
        }
        (None, Some(id)) => match db::media::get(client, tenant_id, id).await? {
            None => {
                errors.push(FieldError::new(
                    format!("{pointer}/media_id"),
                    "no media with this id",
                ));
                return Ok(None);
            }
            Some(found) if !accepts(media.kind, &found.content_type) => {
                errors.push(FieldError::new(
                    format!("{pointer}/kind"),
                    format!(
                        "the upload is {}, not an {:?}",
                        found.content_type, media.kind
                    ),
                ));
                return Ok(None);
            }
            Some(_) => {}
        },
        _ => {
            errors.push(FieldError::new(
                pointer.to_string(),
                "give url or media_id (one of them)",
            ));
            return Ok(None);
        }
    }
    if media
        .filename
        .as_ref()
        .is_some_and(|f| f.is_empty() || f.chars().count() > 255)
    {
        errors.push(FieldError::new(
            format!("{pointer}/filename"),
            "1 to 255 characters",
        ));
        return Ok(None);
    }
    Ok(Some(json!(media)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Name shown for documents.
    filename: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MediaBody {
    id: Uuid,
    content_type: String,
    filename: Option<String>,
    size: i32,
    /// SHA-256 of the bytes, hex.
    sha256: String,
    created_at: DateTime<Utc>,
}

impl From<db::media::Media> for MediaBody {
    fn from(m: db::media::Media) -> Self {
        Self {
            id: m.id,
            content_type: m.content_type,
            filename: m.filename,
            size: m.size,
            sha256: hex::encode(m.sha256),
            created_at: m.created_at,
        }
    }
}

/// Uploads an image (JPEG, PNG, WebP) or a document: the raw bytes as the
/// body, with their Content-Type.
#[utoipa::path(post, path = "/v1/media", tag = "media", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes, sent with its own Content-Type"),
    responses((status = 201, description = "The stored media", body = MediaBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !accepts(MediaKind::Image, &content_type) && !accepts(MediaKind::Document, &content_type) {
        return Err(ApiError::UnsupportedMediaType(
            "send an image (image/jpeg, image/png, image/webp) or a document (application/*, text/*) with its Content-Type".into(),
        ));
    }
    let bytes = Bytes::from_request(request, &state).await.map_err(|err| {
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "media may be at most {} bytes",
                state.config.api.media_max_bytes
            ))
        } else {
            ApiError::MalformedJson(err.body_text())
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::field("body", "the file is empty"));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let media = db::media::insert(
        &tx,
        tenant_id,
        &content_type,
        query.filename.as_deref(),
        &bytes,
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(MediaBody::from(media))))
}

#[utoipa::path(get, path = "/v1/media/{id}", tag = "media",
    params(("id" = Uuid, Path, description = "Media id")),
    responses((status = 200, description = "The media's description", body = MediaBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<MediaBody>> {
    let id = id.or_not_found("media")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let media = db::media::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("media"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(media.into()))
}
