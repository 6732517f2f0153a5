//! Linking numbers: `POST /v1/numbers/{id}/pair` (a QR code to scan, or a
//! code to type on the phone), `GET /v1/numbers/{id}/events` (the codes as
//! they rotate, and the number's state changes, live), and
//! `DELETE /v1/numbers/{id}/session` (unlink and wipe the session keys).
//!
//! The API only records the request: the worker that takes the number shows
//! its codes (they come from the network) and records the outcome.

use std::io::Cursor;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse,
        sse::{Event as SseEvent, Sse},
    },
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Duration as Span, Utc};
use futures_util::Stream;
use herald_shared::{
    db::{
        self, DbError,
        pairings::{Pairing, PairingStatus},
    },
    domain::NumberState,
    events::{Event, EventBody, NumberChange},
    outbox,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, ReadErrors, WriteErrors},
    extract::{ApiJson, PathId, Tenant},
    routes::events::{StreamQuery, stream_for},
    state::AppState,
};

/// How long a pairing request stays open.
const PAIRING_WINDOW_MINUTES: i64 = 10;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PairMethod {
    /// Show QR codes to scan with the phone (Linked devices → Link a device).
    Qr,
    /// A code to type on the phone (Link with phone number instead).
    Code,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    method: PairMethod,
}

/// A pairing and, while one is shown, its code.
#[derive(Debug, Serialize, ToSchema)]
pub struct PairingBody {
    method: String,
    status: PairingStatus,
    /// The QR payload, or the code to type on the phone.
    code: Option<String>,
    /// The QR code as a PNG image (a data URL), for method `qr`.
    qr_png: Option<String>,
    code_expires_at: Option<DateTime<Utc>>,
    /// Why it failed.
    error: Option<String>,
    requested_at: DateTime<Utc>,
    /// The request ends (`expired`) unless paired by then.
    expires_at: DateTime<Utc>,
}

impl From<Pairing> for PairingBody {
    fn from(p: Pairing) -> Self {
        let showing = p.status == PairingStatus::ShowingCode;
        let code = p.code.filter(|_| showing);
        Self {
            qr_png: code
                .as_deref()
                .filter(|_| p.method == "qr")
                .and_then(qr_png),
            code,
            code_expires_at: p.code_expires_at.filter(|_| showing),
            method: p.method,
            status: p.status,
            error: p.error,
            requested_at: p.requested_at,
            expires_at: p.expires_at,
        }
    }
}

/// Renders a QR code as a PNG data URL (8 pixels per module, with the
/// standard 4-module quiet zone).
pub fn qr_png(payload: &str) -> Option<String> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let code = qrcode::QrCode::new(payload.as_bytes()).ok()?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (i % modules + QUIET, i / modules + QUIET);
        for dy in 0..SCALE {
            let row = (y * SCALE + dy) * side;
            pixels[row + x * SCALE..row + (x + 1) * SCALE].fill(0);
        }
    }
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(Cursor::new(&mut png), side as u32, side as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().ok()?;
        writer.write_image_data(&pixels).ok()?;
    }
    Some(format!("data:image/png;base64,{}", STANDARD.encode(png)))
}

/// Starts linking a number that needs pairing: a worker takes it, connects
/// unlinked and shows codes (QR codes rotate about every 20 s; a phone code
/// lasts a few minutes). Follow them at `GET /v1/numbers/{id}` or live at
/// `GET /v1/numbers/{id}/events`.
#[utoipa::path(post, path = "/v1/numbers/{id}/pair", tag = "numbers", request_body = PairRequest,
    params(("id" = Uuid, Path, description = "Number id")),
    responses((status = 202, description = "Pairing started", body = PairingBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn pair(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<PairRequest>,
) -> ApiResult<impl IntoResponse> {
    let id = id.or_not_found("number")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let number = db::sender_numbers::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    if number.state != NumberState::NeedsPairing {
        return Err(ApiError::Conflict(format!(
            "the number is {:?}, already linked: unlink it first (DELETE /v1/numbers/{id}/session)",
            number.state
        )));
    }
    let method = match request.method {
        PairMethod::Qr => "qr",
        PairMethod::Code => "code",
    };
    let pairing = db::pairings::request(
        &tx,
        tenant_id,
        id,
        method,
        Utc::now() + Span::minutes(PAIRING_WINDOW_MINUTES),
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::ACCEPTED, Json(PairingBody::from(pairing))))
}

/// The number's events as they happen (Server-Sent Events): pairing codes
/// (`number.pairing`, each refresh), `number.paired`,
/// `number.pairing_failed`, connection and state changes. Resumable like
/// `GET /v1/events`.
#[utoipa::path(get, path = "/v1/numbers/{id}/events", tag = "numbers",
    params(("id" = Uuid, Path, description = "Number id"), StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An endless stream of the number's events", content_type = "text/event-stream", body = String),
        ReadErrors),
    security(("api_key" = [])))]
pub async fn events(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    headers: HeaderMap,
    query: crate::extract::ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>> {
    let id = id.or_not_found("number")?;
    {
        let mut client = state.tenant_client().await?;
        let tx = db::tenant_tx(&mut client, tenant_id).await?;
        db::sender_numbers::get(&tx, tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("number"))?;
        tx.commit().await.map_err(DbError::from)?;
    }
    stream_for(state, tenant_id, Some(id), headers, query.0).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Unlinked {
    state: NumberState,
    /// A worker holds the number: it logs the device out of WhatsApp and
    /// then wipes the session (within a few seconds). `false`: nobody held
    /// it, the session was wiped now (the phone may still list the device
    /// until removed there).
    logging_out: bool,
}

/// Unlinks a number: it needs pairing again, the device is logged out of
/// WhatsApp, and its session keys are deleted.
#[utoipa::path(delete, path = "/v1/numbers/{id}/session", tag = "numbers",
    params(("id" = Uuid, Path, description = "Number id")),
    responses((status = 202, description = "Unlinking", body = Unlinked), WriteErrors),
    security(("api_key" = [])))]
pub async fn unlink(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<impl IntoResponse> {
    let id = id.or_not_found("number")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let number = db::sender_numbers::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    db::sender_numbers::request_unlink(&tx, id).await?;
    db::pairings::finish(&tx, id, PairingStatus::Failed, Some("unlinked")).await?;
    let held = db::number_leases::held(&tx, id).await?;
    if !held {
        db::session_rows::wipe(&tx, id).await?;
        db::sender_numbers::unlink_done(&tx, id).await?;
    }
    if number.state != NumberState::NeedsPairing {
        let body = EventBody::NumberNeedsPairing(NumberChange {
            number_id: id,
            state: NumberState::NeedsPairing,
            until: None,
            reason: Some("unlinked through the API".into()),
        });
        outbox::enqueue(&tx, &Event::new(tenant_id, body)).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    state.outbox_written.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(Unlinked {
            state: NumberState::NeedsPairing,
            logging_out: held,
        }),
    ))
}

/// The number's pairing, if one was asked for.
pub async fn current(
    client: &impl db::GenericClient,
    number_id: Uuid,
) -> Result<Option<PairingBody>, DbError> {
    Ok(db::pairings::get(client, number_id)
        .await?
        .map(PairingBody::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes_render_as_png_data_urls() {
        let url = qr_png("2@AbCdEf0123456789,keys,more").unwrap();
        let png = STANDARD
            .decode(url.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let (w, h) = (reader.info().width, reader.info().height);
        assert_eq!(w, h);
        assert_eq!(w % 8, 0, "whole modules");
    }
}
