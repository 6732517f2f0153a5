//! Request extractors that fail with problem+json: JSON bodies, query
//! strings, the tenant behind an API key, resource ids in paths, and
//! pagination.

use std::time::Instant;

use axum::{
    Json,
    extract::{
        FromRequest, FromRequestParts, Path, Query, Request,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{StatusCode, header, request::Parts},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use herald_shared::db::{self, DbError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError},
    state::AppState,
};

/// A JSON body. Syntax errors answer 400, bodies that do not fit the request
/// type (unknown or missing fields, wrong types) 422, a missing JSON content
/// type 415, an oversized body 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge(
            "the request body is larger than this server accepts".into(),
        );
    }
    match rejection {
        JsonRejection::JsonDataError(err) => ApiError::invalid(err.body_text(), Vec::new()),
        JsonRejection::JsonSyntaxError(err) => ApiError::MalformedJson(err.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the body as JSON, with the header Content-Type: application/json".into(),
        ),
        other => ApiError::MalformedJson(other.body_text()),
    }
}

/// A query string; parameters that do not fit answer 422.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|err: QueryRejection| ApiError::invalid(err.body_text(), Vec::new()))
    }
}

/// The tenant whose API key authenticated the request
/// (`Authorization: Bearer <key>`).
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub Uuid);

/// The presented API key, if the header is well-formed.
pub fn bearer_key(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("send your API key as Authorization: Bearer <key>".into())
    })?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must read: Bearer <key>".into())
        })
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(tenant) = parts.extensions.get::<Tenant>() {
            return Ok(*tenant);
        }
        let key_hash = db::api_keys::hash(bearer_key(parts)?);
        let tenant = match state.keys.tenant(&key_hash) {
            Some(tenant) => tenant,
            None => {
                let checked_at = Instant::now();
                let client = state.service_pool.get().await.map_err(DbError::from)?;
                let tenant = db::api_keys::tenant_for(&client, &key_hash)
                    .await?
                    .ok_or_else(|| ApiError::Unauthorized("this API key is not valid".into()))?;
                state.keys.keep(key_hash, tenant, checked_at);
                tenant
            }
        };
        let tenant = Tenant(tenant);
        parts.extensions.insert(tenant);
        Ok(tenant)
    }
}

/// A resource id from the path. Anything that is not a UUID cannot name a
/// resource: handlers answer 404 for it, as for an id of another tenant.
pub struct PathId(Option<Uuid>);

impl PathId {
    pub fn or_not_found(self, what: &str) -> ApiResult<Uuid> {
        self.0.ok_or_else(|| ApiError::not_found(what))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|err| ApiError::NotFound(err.body_text()))?;
        Ok(Self(Uuid::parse_str(&raw).ok()))
    }
}

/// A phone number given in a query string (`?recipient=`), as E.164. An
/// unencoded `+` arrives as a space (form encoding): a leading space is read
/// as the `+` it was.
pub fn query_phone(name: &str, raw: Option<String>) -> ApiResult<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    let text = match raw.strip_prefix(' ') {
        Some(rest) => format!("+{}", rest.trim()),
        None => raw.trim().to_string(),
    };
    herald_shared::domain::PhoneNumber::parse(&text, None)
        .map(|phone| Some(phone.to_string()))
        .map_err(|err| ApiError::field(name, format!("{err} (E.164, e.g. %2B5511987654321)")))
}

/// A field that may be absent (leave as is), `null` (clear) or a value.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items per page (default 100, at most 1000).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Paging {
    /// The page size, checked against the configured bounds.
    pub fn limit(&self, state: &AppState) -> ApiResult<i64> {
        let max = state.config.api.page_max;
        match self.limit {
            None => Ok(state.config.api.page_default.min(max)),
            Some(limit) if (1..=max).contains(&limit) => Ok(limit),
            Some(_) => Err(ApiError::invalid(
                "limit out of range",
                vec![FieldError::new("limit", format!("between 1 and {max}"))],
            )),
        }
    }

    /// The key the previous page ended at.
    pub fn after(&self) -> ApiResult<Option<String>> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.strip_prefix("v1:").map(String::from))
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid cursor",
                    vec![FieldError::new("cursor", "not a cursor this API returned")],
                )
            })
    }

    pub fn after_uuid(&self) -> ApiResult<Option<Uuid>> {
        self.after()?
            .map(|key| Uuid::parse_str(&key))
            .transpose()
            .map_err(|_| ApiError::field("cursor", "not a cursor this API returned"))
    }

    pub fn after_i64(&self) -> ApiResult<Option<i64>> {
        self.after()?
            .map(|key| key.parse())
            .transpose()
            .map_err(|_| ApiError::field("cursor", "not a cursor this API returned"))
    }
}

/// One page of a list; `next_cursor` is absent on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched items (the extra one only
    /// tells that another page exists); `key` gives an item's sort key.
    pub fn new<R>(
        mut items: Vec<R>,
        limit: i64,
        key: impl Fn(&R) -> String,
        map: impl Fn(R) -> T,
    ) -> Self {
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next_cursor = more
            .then(|| {
                items
                    .last()
                    .map(|last| URL_SAFE_NO_PAD.encode(format!("v1:{}", key(last))))
            })
            .flatten();
        Self {
            data: items.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}
