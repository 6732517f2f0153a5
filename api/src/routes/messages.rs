//! `/v1/messages`: single transactional sends, and message history.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{
        self, DbError,
        messages::{HistoryFilter, MessageRecord, NewDirect, NewMessage},
    },
    domain::{MessageState, PhoneNumber, new_wa_message_id},
    events::{Event, EventBody, MessageRef},
    outbox,
    policy::zones::ZoneKey,
    template::MessageTemplate,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, PathId, Tenant, query_phone},
    routes::{
        media::{MediaRef, check_media},
        numbers::valid_tag,
    },
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The recipient (or give `reply_to`).
    to: Option<String>,
    /// Answer a received message: to its sender, from the number it was
    /// written to (instead of `to` and `from`/`pool`).
    reply_to: Option<i64>,
    /// The number to send from (or give `pool`).
    from: Option<Uuid>,
    /// A tag: one of the numbers carrying it sends (the recipient's usual one
    /// when it can).
    pool: Option<String>,
    /// A template to render (or give `text`).
    template_id: Option<Uuid>,
    #[serde(default)]
    variables: Map<String, Value>,
    /// The text as is.
    text: Option<String>,
    /// An image or document (default: the template's).
    media: Option<MediaRef>,
    /// ISO 3166 region for a phone written without `+country`.
    default_region: Option<String>,
}

/// When a message reached each state (absent: not reached).
#[derive(Debug, Serialize, ToSchema)]
pub struct Times {
    queued_at: Option<DateTime<Utc>>,
    scheduled_at: Option<DateTime<Utc>>,
    sending_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    unknown_at: Option<DateTime<Utc>>,
    suppressed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    id: i64,
    /// `null` for direct messages.
    campaign_id: Option<Uuid>,
    recipient: String,
    state: MessageState,
    body: String,
    variant: i16,
    sender_number_id: Option<Uuid>,
    /// The WhatsApp message id, fixed before sending.
    wa_message_id: String,
    attempts: i32,
    failure_reason: Option<String>,
    media: Option<Value>,
    times: Times,
}

impl From<MessageRecord> for MessageBody {
    fn from(m: MessageRecord) -> Self {
        let [
            queued_at,
            scheduled_at,
            sending_at,
            sent_at,
            delivered_at,
            read_at,
            failed_at,
            unknown_at,
            suppressed_at,
            cancelled_at,
        ] = m.times;
        Self {
            id: m.id,
            campaign_id: m.campaign_id,
            recipient: m.recipient,
            state: m.state,
            body: m.body,
            variant: m.variant,
            sender_number_id: m.sender_number_id,
            wa_message_id: m.wa_message_id,
            attempts: m.attempts,
            failure_reason: m.failure_reason,
            media: m.media,
            times: Times {
                queued_at,
                scheduled_at,
                sending_at,
                sent_at,
                delivered_at,
                read_at,
                failed_at,
                unknown_at,
                suppressed_at,
                cancelled_at,
            },
        }
    }
}

/// Sends one message now: it goes ahead of campaign traffic on its number and
/// ignores send windows (someone asked for it). Same states and receipts as
/// campaign messages. A suppressed recipient is refused (422). With
/// `reply_to`, it answers a received message in the same chat.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendMessage,
    responses((status = 202, description = "Accepted: queued for its number", body = MessageBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<SendMessage>,
) -> ApiResult<impl IntoResponse> {
    let mut errors = Vec::new();
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    // Who and from where: given, or the chat of a received message.
    let (to_raw, from, pool) = match request.reply_to {
        None => (request.to.clone(), request.from, request.pool.clone()),
        Some(_) if request.to.is_some() || request.from.is_some() || request.pool.is_some() => {
            errors.push(FieldError::new(
                "/reply_to",
                "reply_to takes the place of to, from and pool",
            ));
            (None, None, None)
        }
        Some(id) => match db::inbound::get(&tx, tenant_id, id).await? {
            Some(received) => (Some(received.sender), Some(received.number_id), None),
            None => {
                errors.push(FieldError::new(
                    "/reply_to",
                    "no received message with this id",
                ));
                (None, None, None)
            }
        },
    };
    let to = match &to_raw {
        Some(raw) => PhoneNumber::parse(raw, request.default_region.as_deref())
            .map_err(|err| errors.push(FieldError::new("/to", err.to_string())))
            .ok(),
        None if request.reply_to.is_none() => {
            errors.push(FieldError::new("/to", "give to (or reply_to)"));
            None
        }
        None => None,
    };
    match (&from, &pool) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new("/from", "give from or pool (one of them)"))
        }
        (None, None) if request.reply_to.is_none() => {
            errors.push(FieldError::new("/from", "give from or pool (one of them)"))
        }
        (None, Some(tag)) if !valid_tag(tag) => errors.push(FieldError::new("/pool", "not a tag")),
        _ => {}
    }
    let (body, template_media) = match (&request.template_id, &request.text) {
        (Some(id), None) => match db::templates::get(&tx, tenant_id, *id).await? {
            None => {
                errors.push(FieldError::new("/template_id", "no template with this id"));
                (None, None)
            }
            Some(template) => {
                let compiled = MessageTemplate::compile(&template.body).map_err(|err| {
                    ApiError::Internal(anyhow::anyhow!("stored template no longer compiles: {err}"))
                })?;
                match compiled.render(&request.variables) {
                    Ok(text) => (Some(text), template.media),
                    Err(err) => {
                        errors.push(FieldError::new("/variables", err.to_string()));
                        (None, None)
                    }
                }
            }
        },
        (None, Some(text)) => (Some(text.clone()), None),
        _ => {
            errors.push(FieldError::new(
                "/text",
                "give template_id or text (one of them)",
            ));
            (None, None)
        }
    };
    let cap = state.config.api.max_body_chars;
    if let Some(text) = &body {
        let chars = text.chars().count();
        if text.trim().is_empty() {
            errors.push(FieldError::new("/text", "the text is empty"));
        } else if chars > cap {
            errors.push(FieldError::new(
                "/text",
                format!("{chars} characters (at most {cap})"),
            ));
        }
    }
    let media = match &request.media {
        Some(media) => check_media(&tx, tenant_id, media, "/media", &mut errors).await?,
        None => template_media,
    };
    let candidates = async {
        Ok::<_, DbError>(match (&from, &pool) {
            (Some(from), None) => {
                let known = db::sender_numbers::get(&tx, tenant_id, *from).await?;
                (vec![*from], known.is_some())
            }
            (None, Some(tag)) => {
                let tagged = db::sender_numbers::tagged(&tx, tenant_id, tag).await?;
                (tagged.into_iter().map(|n| n.id).collect(), true)
            }
            _ => (Vec::new(), true),
        })
    };
    let suppressed = async {
        Ok(match &to {
            Some(to) => db::suppressions::get(&tx, tenant_id, to.as_str())
                .await?
                .is_some(),
            None => false,
        })
    };
    // Both reads in one round trip; the suppression only counts once the
    // request is otherwise valid.
    let ((candidates, from_known), suppressed) = tokio::try_join!(candidates, suppressed)?;
    if !from_known {
        errors.push(FieldError::new("/from", "no number with this id"));
    }
    let (Some(to), Some(body)) = (to, body) else {
        return Err(ApiError::invalid(
            "the message cannot be sent as given",
            errors,
        ));
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the message cannot be sent as given",
            errors,
        ));
    }
    if suppressed {
        return Err(ApiError::field(
            "/to",
            "the recipient is on the suppression list",
        ));
    }
    let number_id = match &from {
        Some(from) => *from,
        None => db::sender_numbers::pick_sender(&tx, tenant_id, &candidates, to.as_str())
            .await?
            .ok_or_else(|| ApiError::field("/pool", "no active number carries this tag"))?,
    };
    let message = NewMessage {
        zone: ZoneKey::for_phone(&to),
        recipient: to,
        body,
        wa_message_id: new_wa_message_id(),
        variant: 0,
        media,
        suppressed: false,
    };
    let id = db::messages::insert_direct(
        &tx,
        &NewDirect {
            tenant_id,
            number_id,
            message: &message,
            confirms_opt_out: false,
        },
    )
    .await?;
    let event = EventBody::MessageQueued(MessageRef {
        message_id: id,
        number_id: Some(number_id),
    });
    let event = Event::new(tenant_id, event);
    let (record, ()) = tokio::try_join!(
        db::messages::get(&tx, tenant_id, id),
        outbox::enqueue(&tx, &event),
    )?;
    let record = record.expect("inserted in this transaction");
    tx.commit().await.map_err(DbError::from)?;
    state.outbox_written.notify_one();
    Ok((StatusCode::ACCEPTED, Json(MessageBody::from(record))))
}

/// A message id from the path (a number); anything else answers 404.
pub struct MessageId(Option<i64>);

impl MessageId {
    pub fn or_not_found(self, what: &str) -> ApiResult<i64> {
        self.0.ok_or_else(|| ApiError::not_found(what))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MessageId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|err| ApiError::NotFound(err.body_text()))?;
        Ok(Self(raw.parse().ok()))
    }
}

#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    responses((status = 200, description = "The message", body = MessageBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: MessageId,
) -> ApiResult<Json<MessageBody>> {
    let id = id.or_not_found("message")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let message = db::messages::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(message.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages to this phone (E.164).
    recipient: Option<String>,
    state: Option<MessageState>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn history(
    state: &AppState,
    tenant_id: Uuid,
    campaign_id: Option<Uuid>,
    query: HistoryQuery,
) -> ApiResult<Page<MessageBody>> {
    let paging = Paging {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = paging.limit(state)?;
    let after = paging.after_i64()?;
    let recipient = query_phone("recipient", query.recipient)?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    if let Some(campaign_id) = campaign_id {
        db::campaigns::get(&tx, tenant_id, campaign_id)
            .await?
            .ok_or_else(|| ApiError::not_found("campaign"))?;
    }
    let filter = HistoryFilter {
        campaign_id,
        recipient,
        state: query.state,
    };
    let rows = db::messages::history(&tx, tenant_id, &filter, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Page::new(
        rows,
        limit,
        |m| m.id.to_string(),
        MessageBody::from,
    ))
}

/// Message history of the tenant (optionally of one recipient, in one
/// state), oldest first; pages stay stable while new messages arrive.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(HistoryQuery),
    responses((status = 200, description = "A page of messages", body = Page<MessageBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<MessageBody>>> {
    Ok(Json(history(&state, tenant_id, None, query).await?))
}

/// A campaign's messages (optionally one recipient's, in one state).
#[utoipa::path(get, path = "/v1/campaigns/{id}/messages", tag = "campaigns",
    params(("id" = Uuid, Path, description = "Campaign id"), HistoryQuery),
    responses((status = 200, description = "A page of messages", body = Page<MessageBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn of_campaign(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<MessageBody>>> {
    let id = id.or_not_found("campaign")?;
    Ok(Json(history(&state, tenant_id, Some(id), query).await?))
}
