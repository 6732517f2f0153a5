//! `inbound_messages`: what people write to a tenant's numbers.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct Inbound {
    pub id: i64,
    pub tenant_id: Uuid,
    pub number_id: Uuid,
    pub sender: String,
    pub wa_message_id: String,
    pub kind: String,
    pub body: Option<String>,
    pub media_type: Option<String>,
    pub received_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub reply_to_message_id: Option<i64>,
    pub campaign_id: Option<Uuid>,
    pub opt_out: bool,
}

const COLUMNS: &str = "id, tenant_id, number_id, sender, wa_message_id, kind, body, media_type, \
    received_at, recorded_at, reply_to_message_id, campaign_id, opt_out";

fn from_row(row: &tokio_postgres::Row) -> Inbound {
    Inbound {
        id: row.get(0),
        tenant_id: row.get(1),
        number_id: row.get(2),
        sender: row.get(3),
        wa_message_id: row.get(4),
        kind: row.get(5),
        body: row.get(6),
        media_type: row.get(7),
        received_at: row.get(8),
        recorded_at: row.get(9),
        reply_to_message_id: row.get(10),
        campaign_id: row.get(11),
        opt_out: row.get(12),
    }
}

pub struct NewInbound<'a> {
    pub tenant_id: Uuid,
    pub number_id: Uuid,
    pub sender: &'a str,
    pub wa_message_id: &'a str,
    pub kind: &'a str,
    pub body: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub received_at: DateTime<Utc>,
    pub opt_out: bool,
}

/// Records a received message, linked to the last campaign message sent to
/// its sender within `attribution_days` (from this number first). `None`
/// when it was recorded before (the network delivered it again).
pub async fn insert(
    client: &impl GenericClient,
    new: &NewInbound<'_>,
    attribution_days: i32,
) -> Result<Option<Inbound>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "WITH answered AS (
                 SELECT id, campaign_id FROM messages
                  WHERE tenant_id = $1 AND recipient = $3 AND campaign_id IS NOT NULL
                    AND sent_at > now() - $10::int * interval '1 day'
                  ORDER BY (sender_number_id = $2) DESC, sent_at DESC
                  LIMIT 1
             )
             INSERT INTO inbound_messages (tenant_id, number_id, sender, wa_message_id, kind, body,
                                           media_type, received_at, opt_out,
                                           reply_to_message_id, campaign_id)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9,
                    (SELECT id FROM answered), (SELECT campaign_id FROM answered)
             ON CONFLICT (number_id, wa_message_id) DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(
            &stmt,
            &[
                &new.tenant_id,
                &new.number_id,
                &new.sender,
                &new.wa_message_id,
                &new.kind,
                &new.body,
                &new.media_type,
                &new.received_at,
                &new.opt_out,
                &attribution_days,
            ],
        )
        .await?
        .as_ref()
        .map(from_row))
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: i64,
) -> Result<Option<Inbound>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM inbound_messages WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(from_row))
}

/// Which received messages to list (every field optional).
#[derive(Debug, Clone, Default)]
pub struct InboundFilter {
    pub number_id: Option<Uuid>,
    pub sender: Option<String>,
    pub campaign_id: Option<Uuid>,
}

/// Received messages, oldest first.
pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    filter: &InboundFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Inbound>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM inbound_messages
              WHERE tenant_id = $1
                AND ($2::uuid IS NULL OR number_id = $2)
                AND ($3::text IS NULL OR sender = $3)
                AND ($4::uuid IS NULL OR campaign_id = $4)
                AND ($5::bigint IS NULL OR id > $5)
              ORDER BY id LIMIT $6"
        ))
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &tenant_id,
                &filter.number_id,
                &filter.sender,
                &filter.campaign_id,
                &after,
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// A campaign's replies: messages received, people who replied, opt-outs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replies {
    pub replies: i64,
    pub repliers: i64,
    pub opt_outs: i64,
}

pub async fn replies(client: &impl GenericClient, campaign_id: Uuid) -> Result<Replies, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT count(*), count(DISTINCT sender), count(*) FILTER (WHERE opt_out)
               FROM inbound_messages WHERE campaign_id = $1",
        )
        .await?;
    let row = client.query_one(&stmt, &[&campaign_id]).await?;
    Ok(Replies {
        replies: row.get(0),
        repliers: row.get(1),
        opt_outs: row.get(2),
    })
}
