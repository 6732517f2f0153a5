//! `GET /v1/events`: the tenant's events as they happen (Server-Sent Events),
//! from the event log, resumable: each SSE `id` is the event's position in
//! the log, and a client that reconnects with `Last-Event-ID` (browsers'
//! `EventSource` does it by itself) or `?after=` gets exactly what it missed,
//! in order, as long as it is within `events.retention_hours`.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures_util::Stream;
use herald_shared::{
    db::{self, DbError, events::LoggedEvent},
    events::PUBLIC_TYPES,
    metrics as m,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, ReadErrors},
    extract::{ApiQuery, Tenant},
    state::AppState,
};

/// Events read per query.
const READ_BATCH: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated event types to receive (default: every type).
    types: Option<String>,
    /// Start after this event id (what `Last-Event-ID` would say; it wins
    /// over the header). `0`: every event still retained. Neither: from now.
    after: Option<i64>,
}

/// Counts open streams for the metrics while it lives.
struct Open;

impl Open {
    fn new() -> Self {
        metrics::gauge!(m::EVENT_STREAMS).increment(1.0);
        Self
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(m::EVENT_STREAMS).decrement(1.0);
    }
}

/// Where one stream stands.
struct Tail {
    state: AppState,
    tenant_id: Uuid,
    number_id: Option<Uuid>,
    types: Vec<String>,
    /// The last event sent.
    position: i64,
    ready: VecDeque<LoggedEvent>,
    _open: Open,
}

fn parse_types(raw: Option<&str>) -> ApiResult<Vec<String>> {
    let mut types = Vec::new();
    for kind in raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if !PUBLIC_TYPES.contains(&kind) {
            return Err(ApiError::field(
                "types",
                format!("unknown event type {kind:?}; see docs/EVENTS.md"),
            ));
        }
        if !types.iter().any(|t| t == kind) {
            types.push(kind.to_string());
        }
    }
    Ok(types)
}

/// The tenant's events as Server-Sent Events: `id` (resume point) and
/// `data` (the event JSON, as webhooks carry it). A comment
/// line every 15 s keeps idle connections open.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An endless stream of events", content_type = "text/event-stream", body = String),
        ReadErrors),
    security(("api_key" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    stream_for(state, tenant_id, None, headers, query).await
}

/// The tenant's stream (only about `number_id`, when given).
pub async fn stream_for(
    state: AppState,
    tenant_id: Uuid,
    number_id: Option<Uuid>,
    headers: HeaderMap,
    query: StreamQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let types = parse_types(query.types.as_deref())?;
    let resume = match query.after {
        Some(after) => Some(after),
        None => match headers.get("last-event-id") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| {
                        ApiError::field("Last-Event-ID", "not an event id this API sent")
                    })?,
            ),
        },
    };
    if resume.is_some_and(|p| p < 0) {
        return Err(ApiError::field("after", "an event id is 0 or more"));
    }
    let position = match resume {
        Some(position) => position,
        None => {
            let mut client = state.tenant_client().await?;
            let tx = db::tenant_tx(&mut client, tenant_id).await?;
            let latest = db::events::latest(&tx, tenant_id).await?;
            tx.commit().await.map_err(DbError::from)?;
            latest
        }
    };
    let tail = Tail {
        state,
        tenant_id,
        number_id,
        types,
        position,
        ready: VecDeque::new(),
        _open: Open::new(),
    };
    let events = futures_util::stream::unfold(tail, next_event);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The stream's next event: from what was read already, else from the log,
/// else after the log grows. Ends at shutdown.
async fn next_event(mut tail: Tail) -> Option<(Result<SseEvent, Infallible>, Tail)> {
    let mut feed = tail.state.events_feed.clone();
    loop {
        if let Some(event) = tail.ready.pop_front() {
            tail.position = event.seq;
            // No SSE `event:` name: every event reaches an EventSource's
            // `onmessage`, and the JSON says its type.
            let frame = SseEvent::default()
                .id(event.seq.to_string())
                .data(event.payload.to_string());
            return Some((Ok(frame), tail));
        }
        // Anything logged from here on moves the feed.
        feed.borrow_and_update();
        match read(&tail).await {
            Ok(events) if !events.is_empty() => {
                tail.ready.extend(events);
                continue;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "live stream could not read the event log"),
        }
        tokio::select! {
            _ = tail.state.shutdown.cancelled() => return None,
            _ = feed.changed() => {}
            _ = tokio::time::sleep(tail.state.config.events.poll()) => {}
        }
    }
}

async fn read(tail: &Tail) -> Result<Vec<LoggedEvent>, DbError> {
    let mut client = tail.state.pool.get().await?;
    let tx = db::tenant_tx(&mut client, tail.tenant_id).await?;
    let events = db::events::page(
        &tx,
        tail.tenant_id,
        tail.position,
        &tail.types,
        tail.number_id,
        READ_BATCH,
    )
    .await?;
    tx.commit().await?;
    Ok(events)
}
