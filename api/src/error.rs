//! Every error the API returns is `application/problem+json` (RFC 9457) with a
//! `detail` saying what to fix. Problem types are `urn:herald:problem:<slug>`;
//! `docs/API.md` and `GET /openapi.json` list them.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use herald_shared::db::DbError;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// One invalid field of a request (body or query), or one rejected row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) to the offending value in the request body, or
    /// the name of the offending query parameter.
    pub pointer: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            reason: reason.into(),
        }
    }
}

/// A problem (RFC 9457), as every error is reported.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:herald:problem:<slug>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:herald:problem:invalid-request")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// Each invalid field or rejected row, when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Value>>,
    /// For rejected recipients: how many, when only the first are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_total: Option<usize>,
}

/// The errors any authenticated read may answer.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum ReadErrors {
    /// No valid API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// No such resource for this tenant (another tenant's ids included).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// A query parameter is invalid (`errors` names it).
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// Too many requests for this API key; retry after `Retry-After` seconds.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// A bug; logged with its cause.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The database is unreachable; retry after `Retry-After` seconds.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The errors any authenticated write may answer.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum WriteErrors {
    /// The body is not JSON.
    #[response(status = 400, content_type = "application/problem+json")]
    MalformedJson(Problem),
    /// No valid API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// No such resource for this tenant (another tenant's ids included).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The change conflicts with the resource's state, or an
    /// Idempotency-Key is still in use by a request in progress.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body is larger than allowed.
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    /// The body is not of the expected content type.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// The request is well-formed but not acceptable: `errors` lists each
    /// field or row with its reason. Also: an Idempotency-Key reused with a
    /// different request.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// Too many requests for this API key; retry after `Retry-After` seconds.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// A bug; logged with its cause.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The database is unreachable; retry after `Retry-After` seconds.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is well-formed JSON but not an acceptable request.
    #[error("{detail}")]
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// Some recipients of a campaign were rejected; nothing was created.
    #[error("{detail}")]
    InvalidRecipients {
        detail: String,
        rejected_total: usize,
        rows: Vec<Value>,
    },
    #[error("too many requests for this API key; retry in {0} s")]
    TooManyRequests(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self::Invalid {
            detail: detail.into(),
            errors,
        }
    }

    pub fn field(pointer: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::Invalid {
            detail: format!("{pointer}: {reason}"),
            errors: vec![FieldError::new(pointer, reason)],
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("no {what} with this id"))
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } | Self::InvalidRecipients { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed-json",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::Invalid { .. } => "invalid-request",
            Self::InvalidRecipients { .. } => "invalid-recipients",
            Self::TooManyRequests(_) => "too-many-requests",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            Self::Unavailable("the database is unavailable; retry shortly".into())
        } else {
            Self::Internal(err.into())
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        DbError::from(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(err) = &self {
            tracing::error!(error = ?err, "internal error");
        }
        let mut body = json!({
            "type": format!("urn:herald:problem:{}", self.slug()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let retry_after = match &self {
            Self::TooManyRequests(seconds) => Some(seconds.max(&1).to_string()),
            Self::Unavailable(_) => Some("2".to_string()),
            _ => None,
        };
        match self {
            Self::Invalid { errors, .. } if !errors.is_empty() => {
                body["errors"] = json!(errors);
            }
            Self::InvalidRecipients {
                rejected_total,
                rows,
                ..
            } => {
                body["rejected_total"] = json!(rejected_total);
                body["errors"] = Value::Array(rows);
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after.and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
