//! The simulator's admin HTTP API: create and pair numbers, shape the
//! network's behaviour, make "phones" write in, and read the message log.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | liveness |
//! | `GET /admin/numbers`, `POST /admin/numbers` | list / create (`{"phone", "paired"?, "push_name"?}`) |
//! | `GET /admin/numbers/{phone}` | one number (with its current QR code while pairing) |
//! | `POST /admin/scan` | a phone scans a QR code (`{"code"}`) |
//! | `POST /admin/numbers/{phone}/unlink` | the phone removes the linked device |
//! | `POST /admin/numbers/{phone}/disconnect` | drop the connection (a network blip) |
//! | `POST /admin/numbers/{phone}/timelock` | `{"seconds"}`: refuse messages to new contacts (`463`) |
//! | `POST /admin/numbers/{phone}/ban` | `{"seconds", "code"?}`: temporary ban |
//! | `GET /admin/network`, `PUT /admin/network` | delays, receipt probabilities and ban rules (`rules`, see [`crate::rules`]) |
//! | `PUT /admin/recipients/{phone}` | `{"registered": false}` makes a number not on WhatsApp |
//! | `POST /admin/inbound` | a phone writes to a number (`{"from", "to", "body", "media_type"?}`) |
//! | `GET /admin/log` | every accepted message, one JSON object per line |

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::json;

use crate::network::{BehaviourPatch, Network, NetworkError};

pub fn router(network: Arc<Network>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/numbers", get(list_numbers).post(create_number))
        .route("/admin/numbers/{phone}", get(get_number))
        .route("/admin/numbers/{phone}/unlink", post(unlink))
        .route("/admin/numbers/{phone}/disconnect", post(disconnect))
        .route("/admin/numbers/{phone}/timelock", post(timelock))
        .route("/admin/numbers/{phone}/ban", post(ban))
        .route("/admin/scan", post(scan))
        .route("/admin/network", get(get_network).put(put_network))
        .route("/admin/recipients/{phone}", put(put_recipient))
        .route("/admin/inbound", post(inbound))
        .route("/admin/log", get(read_log))
        .with_state(network)
}

struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<NetworkError> for AdminError {
    fn from(err: NetworkError) -> Self {
        let status = match err {
            NetworkError::UnknownNumber | NetworkError::UnknownCode => StatusCode::NOT_FOUND,
            NetworkError::Exists => StatusCode::CONFLICT,
            NetworkError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self(status, err.to_string())
    }
}

/// Path segments may omit the `+` (it is awkward in URLs).
fn e164(phone: &str) -> String {
    if phone.starts_with('+') {
        phone.to_string()
    } else {
        format!("+{phone}")
    }
}

async fn list_numbers(State(network): State<Arc<Network>>) -> impl IntoResponse {
    Json(network.numbers())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateNumber {
    phone: String,
    #[serde(default)]
    paired: bool,
    push_name: Option<String>,
}

async fn create_number(
    State(network): State<Arc<Network>>,
    Json(body): Json<CreateNumber>,
) -> Result<impl IntoResponse, AdminError> {
    let view = network.create_number(&e164(&body.phone), body.paired, body.push_name)?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn get_number(
    State(network): State<Arc<Network>>,
    Path(phone): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    network
        .number(&e164(&phone))
        .map(Json)
        .ok_or_else(|| NetworkError::UnknownNumber.into())
}

async fn unlink(
    State(network): State<Arc<Network>>,
    Path(phone): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    network.unlink(&e164(&phone), "device removed from the phone")?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disconnect(
    State(network): State<Arc<Network>>,
    Path(phone): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    network.disconnect(&e164(&phone))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Restriction {
    seconds: u64,
    code: Option<String>,
}

async fn timelock(
    State(network): State<Arc<Network>>,
    Path(phone): Path<String>,
    Json(body): Json<Restriction>,
) -> Result<impl IntoResponse, AdminError> {
    let duration = std::time::Duration::from_secs(body.seconds);
    Ok(Json(network.timelock(&e164(&phone), duration)?))
}

async fn ban(
    State(network): State<Arc<Network>>,
    Path(phone): Path<String>,
    Json(body): Json<Restriction>,
) -> Result<impl IntoResponse, AdminError> {
    let duration = std::time::Duration::from_secs(body.seconds);
    let code = body.code.as_deref().unwrap_or("503");
    Ok(Json(network.ban(&e164(&phone), duration, code)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scan {
    code: String,
}

async fn scan(
    State(network): State<Arc<Network>>,
    Json(body): Json<Scan>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(network.scan(&body.code)?))
}

async fn get_network(State(network): State<Arc<Network>>) -> impl IntoResponse {
    Json(network.behaviour())
}

async fn put_network(
    State(network): State<Arc<Network>>,
    Json(patch): Json<BehaviourPatch>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(network.update_behaviour(patch)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipient {
    registered: bool,
}

async fn put_recipient(
    State(network): State<Arc<Network>>,
    Path(phone): Path<String>,
    Json(body): Json<Recipient>,
) -> impl IntoResponse {
    network.set_registered(&e164(&phone), body.registered);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inbound {
    from: String,
    to: String,
    #[serde(default)]
    body: String,
    /// An attachment's MIME type; `body` is then its caption.
    media_type: Option<String>,
}

async fn inbound(
    State(network): State<Arc<Network>>,
    Json(body): Json<Inbound>,
) -> Result<impl IntoResponse, AdminError> {
    let id = network.inbound(
        &e164(&body.from),
        &e164(&body.to),
        &body.body,
        body.media_type.as_deref(),
    )?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn read_log(State(network): State<Arc<Network>>) -> Result<Response, AdminError> {
    let bytes = tokio::fs::read(network.log().path())
        .await
        .map_err(|err| AdminError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], bytes).into_response())
}
