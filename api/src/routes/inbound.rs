//! `/v1/inbound`: messages people wrote to the tenant's numbers.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use herald_shared::db::{
    self, DbError,
    inbound::{Inbound, InboundFilter},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, ReadErrors},
    extract::{ApiQuery, Page, Paging, Tenant, query_phone},
    routes::messages::MessageId,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundBody {
    id: i64,
    /// The number written to.
    number_id: Uuid,
    /// The sender: E.164 when it is a phone number.
    from: String,
    wa_message_id: String,
    /// `text`, `image`, `video`, `audio`, `document`, `sticker`,
    /// `location`, `contact` or `other`.
    kind: String,
    /// The text, or a media message's caption.
    text: Option<String>,
    /// MIME type of an attachment.
    media_type: Option<String>,
    received_at: DateTime<Utc>,
    /// The campaign message this answers (the last one sent to the sender
    /// within `inbound.attribution_days`).
    reply_to_message_id: Option<i64>,
    campaign_id: Option<Uuid>,
    /// The text was an opt-out keyword: the sender is suppressed.
    opt_out: bool,
}

impl From<Inbound> for InboundBody {
    fn from(m: Inbound) -> Self {
        Self {
            id: m.id,
            number_id: m.number_id,
            from: m.sender,
            wa_message_id: m.wa_message_id,
            kind: m.kind,
            text: m.body,
            media_type: m.media_type,
            received_at: m.received_at,
            reply_to_message_id: m.reply_to_message_id,
            campaign_id: m.campaign_id,
            opt_out: m.opt_out,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboundQuery {
    /// Only messages to this number.
    number_id: Option<Uuid>,
    /// Only messages from this phone (E.164).
    from: Option<String>,
    /// Only replies to this campaign.
    campaign_id: Option<Uuid>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Received messages, oldest first; pages stay stable while new ones arrive.
#[utoipa::path(get, path = "/v1/inbound", tag = "inbound", params(InboundQuery),
    responses((status = 200, description = "A page of received messages", body = Page<InboundBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<InboundQuery>,
) -> ApiResult<Json<Page<InboundBody>>> {
    let paging = Paging {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = paging.limit(&state)?;
    let after = paging.after_i64()?;
    let sender = query_phone("from", query.from)?;
    let filter = InboundFilter {
        number_id: query.number_id,
        sender,
        campaign_id: query.campaign_id,
    };
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let rows = db::inbound::page(&tx, tenant_id, &filter, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        rows,
        limit,
        |m| m.id.to_string(),
        InboundBody::from,
    )))
}

#[utoipa::path(get, path = "/v1/inbound/{id}", tag = "inbound",
    params(("id" = i64, Path, description = "Received message id")),
    responses((status = 200, description = "The received message", body = InboundBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: MessageId,
) -> ApiResult<Json<InboundBody>> {
    let id = id.or_not_found("received message")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let found = db::inbound::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("received message"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(found.into()))
}
