//! `campaigns`, `campaign_senders` and `campaign_variants`: a template (or
//! several variants) sent to a set of recipients through named numbers or a
//! pool of tagged numbers, within a send window.

use chrono::{DateTime, NaiveTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, GenericClient, Transaction};
use crate::{
    domain::{CampaignStatus, MessageState},
    policy::zones::SendWindow,
};

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// The first variant's template.
    pub template_id: Option<Uuid>,
    pub status: CampaignStatus,
    /// Why the status is what it is, when Herald (not the user) set it.
    pub status_reason: Option<String>,
    /// Messages created for the campaign.
    pub recipients: i32,
    /// Rows left out at creation at the request's own asking.
    pub rejected: i32,
    pub pool: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_by: Option<DateTime<Utc>>,
    pub window: SendWindow,
    /// Distinct recipient zone keys among its messages.
    pub zones: Vec<String>,
    pub variants: i16,
    pub max_per_variant: i32,
    pub max_consecutive_failures: i32,
    /// Built from this list (filtered on contact attributes by `filter`).
    pub list_id: Option<Uuid>,
    pub filter: Option<serde_json::Value>,
    /// Recipients recorded `suppressed` at creation.
    pub suppressed: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant_id, name, template_id, status, status_reason, recipients, \
                       rejected, pool, start_at, end_by, window_start, window_end, zones, \
                       variants, max_per_variant, max_consecutive_failures, list_id, filter, \
                       suppressed, created_at, started_at, paused_at, cancelled_at, completed_at";

impl Campaign {
    fn from_row(row: &Row) -> Self {
        let start: NaiveTime = row.get("window_start");
        let end: NaiveTime = row.get("window_end");
        Self {
            id: row.get("id"),
            tenant_id: row.get("tenant_id"),
            name: row.get("name"),
            template_id: row.get("template_id"),
            status: row.get("status"),
            status_reason: row.get("status_reason"),
            recipients: row.get("recipients"),
            rejected: row.get("rejected"),
            pool: row.get("pool"),
            start_at: row.get("start_at"),
            end_by: row.get("end_by"),
            // The table's check keeps start before end.
            window: SendWindow::new(start, end).unwrap_or_default(),
            zones: row.get("zones"),
            variants: row.get("variants"),
            max_per_variant: row.get("max_per_variant"),
            max_consecutive_failures: row.get("max_consecutive_failures"),
            list_id: row.get("list_id"),
            filter: row.get("filter"),
            suppressed: row.get("suppressed"),
            created_at: row.get("created_at"),
            started_at: row.get("started_at"),
            paused_at: row.get("paused_at"),
            cancelled_at: row.get("cancelled_at"),
            completed_at: row.get("completed_at"),
        }
    }
}

pub struct NewCampaign<'a> {
    pub tenant_id: Uuid,
    pub name: &'a str,
    pub template_id: Uuid,
    pub recipients: i32,
    pub rejected: i32,
    pub pool: Option<&'a str>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_by: Option<DateTime<Utc>>,
    pub window: SendWindow,
    pub zones: &'a [String],
    pub variants: i16,
    pub max_per_variant: i32,
    pub max_consecutive_failures: i32,
    pub list_id: Option<Uuid>,
    pub filter: Option<&'a serde_json::Value>,
}

pub async fn insert(
    client: &impl GenericClient,
    new: &NewCampaign<'_>,
) -> Result<Campaign, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO campaigns (id, tenant_id, name, template_id, recipients, rejected, pool,
                                    start_at, end_by, window_start, window_end, zones, variants,
                                    max_per_variant, max_consecutive_failures, list_id, filter)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &Uuid::now_v7(),
                &new.tenant_id,
                &new.name,
                &new.template_id,
                &new.recipients,
                &new.rejected,
                &new.pool,
                &new.start_at,
                &new.end_by,
                &new.window.start,
                &new.window.end,
                &new.zones,
                &new.variants,
                &new.max_per_variant,
                &new.max_consecutive_failures,
                &new.list_id,
                &new.filter,
            ],
        )
        .await?;
    Ok(Campaign::from_row(&row))
}

/// Sets what creating the campaign counted (known only once its recipients
/// were walked).
pub async fn set_counts(
    client: &impl GenericClient,
    id: Uuid,
    recipients: i32,
    rejected: i32,
    suppressed: i32,
    zones: &[String],
) -> Result<Campaign, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE campaigns SET recipients = $2, rejected = $3, suppressed = $4, zones = $5
              WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(&stmt, &[&id, &recipients, &rejected, &suppressed, &zones])
        .await?;
    Ok(Campaign::from_row(&row))
}

/// A page of the tenant's campaigns, newest last, after `after`.
pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Campaign>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM campaigns
              WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
              ORDER BY id LIMIT $3"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &after, &limit]).await?;
    Ok(rows.iter().map(Campaign::from_row).collect())
}

pub async fn add_senders(
    client: &impl GenericClient,
    campaign_id: Uuid,
    number_ids: &[Uuid],
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO campaign_senders (campaign_id, number_id)
             SELECT $1, unnest($2::uuid[])",
        )
        .await?;
    client.execute(&stmt, &[&campaign_id, &number_ids]).await?;
    Ok(())
}

pub async fn add_variants(
    client: &impl GenericClient,
    campaign_id: Uuid,
    template_ids: &[Uuid],
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO campaign_variants (campaign_id, variant, template_id)
             SELECT $1, (v.ord - 1)::smallint, v.template_id
               FROM unnest($2::uuid[]) WITH ORDINALITY AS v (template_id, ord)",
        )
        .await?;
    client
        .execute(&stmt, &[&campaign_id, &template_ids])
        .await?;
    Ok(())
}

/// Template ids of the campaign's variants, in variant order.
pub async fn variant_templates(
    client: &impl GenericClient,
    campaign_id: Uuid,
) -> Result<Vec<Uuid>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT template_id FROM campaign_variants WHERE campaign_id = $1 ORDER BY variant",
        )
        .await?;
    let rows = client.query(&stmt, &[&campaign_id]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Named senders (empty for a pool campaign).
pub async fn senders(client: &impl GenericClient, campaign_id: Uuid) -> Result<Vec<Uuid>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT number_id FROM campaign_senders WHERE campaign_id = $1 ORDER BY number_id",
        )
        .await?;
    let rows = client.query(&stmt, &[&campaign_id]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The numbers sending a campaign now: its named numbers, or the tenant's
/// numbers carrying its pool tag.
pub async fn sending_numbers(
    client: &impl GenericClient,
    campaign: &Campaign,
) -> Result<Vec<Uuid>, DbError> {
    match &campaign.pool {
        None => senders(client, campaign.id).await,
        Some(tag) => Ok(
            super::sender_numbers::tagged(client, campaign.tenant_id, tag)
                .await?
                .into_iter()
                .map(|n| n.id)
                .collect(),
        ),
    }
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Campaign>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(Campaign::from_row))
}

/// Starts a draft: `running`, or `scheduled` while its `start_at` is ahead.
pub async fn start(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Campaign>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE campaigns
                SET status = CASE WHEN start_at > $3 THEN 'scheduled'::campaign_status
                                  ELSE 'running'::campaign_status END,
                    started_at = CASE WHEN start_at > $3 THEN NULL ELSE $3 END,
                    status_reason = NULL
              WHERE tenant_id = $1 AND id = $2 AND status = 'draft'
             RETURNING {COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id, &now])
        .await?
        .as_ref()
        .map(Campaign::from_row))
}

/// Pauses a running or scheduled campaign. Its jobs already in queues find
/// their messages back in `queued` and do nothing.
pub async fn pause(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    reason: Option<&str>,
) -> Result<Option<Campaign>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE campaigns SET status = 'paused', paused_at = now(), status_reason = $3
              WHERE tenant_id = $1 AND id = $2 AND status IN ('running', 'scheduled')
             RETURNING {COLUMNS}"
        ))
        .await?;
    let paused = client
        .query_opt(&stmt, &[&tenant_id, &id, &reason])
        .await?
        .as_ref()
        .map(Campaign::from_row);
    if paused.is_some() {
        super::messages::unschedule_campaign(client, id).await?;
    }
    Ok(paused)
}

/// Resumes a paused campaign (to `scheduled` if its start is still ahead).
pub async fn resume(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Campaign>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE campaigns
                SET status = CASE WHEN start_at > $3 THEN 'scheduled'::campaign_status
                                  ELSE 'running'::campaign_status END,
                    started_at = coalesce(started_at, CASE WHEN start_at > $3 THEN NULL ELSE $3 END),
                    paused_at = NULL, status_reason = NULL, consecutive_failures = 0
              WHERE tenant_id = $1 AND id = $2 AND status = 'paused'
             RETURNING {COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id, &now])
        .await?
        .as_ref()
        .map(Campaign::from_row))
}

/// Cancels a campaign that has not ended; its unsent messages are cancelled.
pub async fn cancel(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    reason: &str,
) -> Result<Option<Campaign>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE campaigns SET status = 'cancelled', cancelled_at = now(), status_reason = $3
              WHERE tenant_id = $1 AND id = $2
                AND status IN ('draft', 'scheduled', 'running', 'paused')
             RETURNING {COLUMNS}"
        ))
        .await?;
    let cancelled = client
        .query_opt(&stmt, &[&tenant_id, &id, &reason])
        .await?
        .as_ref()
        .map(Campaign::from_row);
    if cancelled.is_some() {
        super::messages::cancel_unsent(client, id, reason).await?;
    }
    Ok(cancelled)
}

/// Scheduled campaigns whose start time came: now running. Returns them as
/// (campaign, tenant).
pub async fn start_due(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, Uuid)>, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, $1)
              WHERE status = 'scheduled' AND start_at <= $1
             RETURNING id, tenant_id",
        )
        .await?;
    let rows = client.query(&stmt, &[&now]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Campaigns past their `end_by`: their unsent messages are cancelled (the
/// campaign then completes once nothing is in flight). Returns the campaigns.
pub async fn end_overdue(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT id FROM campaigns
              WHERE end_by <= $1 AND status IN ('running', 'paused', 'scheduled')
                AND EXISTS (SELECT 1 FROM messages m
                             WHERE m.campaign_id = campaigns.id
                               AND m.state IN ('queued', 'scheduled'))",
        )
        .await?;
    let ids: Vec<Uuid> = client
        .query(&stmt, &[&now])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for id in &ids {
        super::messages::cancel_unsent(client, *id, "the campaign's end_by passed").await?;
    }
    if !ids.is_empty() {
        let ended = client
            .prepare_cached(
                "UPDATE campaigns SET status = 'running', paused_at = NULL,
                        status_reason = 'end_by passed: unsent messages cancelled'
                  WHERE id = ANY($1) AND status IN ('paused', 'scheduled')",
            )
            .await?;
        client.execute(&ended, &[&ids]).await?;
    }
    Ok(ids)
}

/// A failed message of the campaign: counts consecutive failures and pauses
/// the campaign when they reach its limit. Returns `true` when this failure
/// paused it.
pub async fn record_failure(
    client: &impl GenericClient,
    campaign_id: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE campaigns
                SET consecutive_failures = consecutive_failures + 1,
                    status = CASE WHEN consecutive_failures + 1 >= max_consecutive_failures
                                  THEN 'paused'::campaign_status ELSE status END,
                    paused_at = CASE WHEN consecutive_failures + 1 >= max_consecutive_failures
                                     THEN now() ELSE paused_at END,
                    status_reason = CASE WHEN consecutive_failures + 1 >= max_consecutive_failures
                                         THEN format('paused after %s consecutive failures',
                                                     consecutive_failures + 1)
                                         ELSE status_reason END
              WHERE id = $1 AND status = 'running'
             RETURNING status",
        )
        .await?;
    let paused = client
        .query_opt(&stmt, &[&campaign_id])
        .await?
        .is_some_and(|row| row.get::<_, CampaignStatus>(0) == CampaignStatus::Paused);
    if paused {
        super::messages::unschedule_campaign(client, campaign_id).await?;
    }
    Ok(paused)
}

/// Whether the campaign still runs, holding a share lock on its row until
/// the transaction ends. A planner picks a campaign's messages only after
/// this: a pause or cancel that committed since the planner loaded its list
/// is seen here, and one that comes later waits for the planner's commit,
/// then unschedules what it picked.
pub async fn share_if_running(client: &impl GenericClient, id: Uuid) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("SELECT 1 FROM campaigns WHERE id = $1 AND status = 'running' FOR SHARE")
        .await?;
    Ok(client.query_opt(&stmt, &[&id]).await?.is_some())
}

/// A message of each campaign went out: their failure streaks are over.
/// Touches a row only when there was a streak; no statement for no campaign
/// (a batch of direct messages).
pub async fn record_success(
    client: &impl GenericClient,
    campaign_ids: &[Uuid],
) -> Result<(), DbError> {
    if campaign_ids.is_empty() {
        return Ok(());
    }
    let stmt = client
        .prepare_cached(
            "UPDATE campaigns SET consecutive_failures = 0
              WHERE id = ANY($1) AND consecutive_failures > 0",
        )
        .await?;
    client.execute(&stmt, &[&campaign_ids]).await?;
    Ok(())
}

/// Messages per state. States with no message are absent.
pub async fn state_counts(
    client: &impl GenericClient,
    campaign_id: Uuid,
) -> Result<Vec<(MessageState, i64)>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT state, count(*) FROM messages WHERE campaign_id = $1 GROUP BY state",
        )
        .await?;
    let rows = client.query(&stmt, &[&campaign_id]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// A running campaign as the scheduler needs it.
#[derive(Debug, Clone)]
pub struct PlanningCampaign {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub window: SendWindow,
    pub zones: Vec<String>,
    pub variants: i16,
    pub max_per_variant: i32,
    /// Named senders; empty for a pool campaign.
    pub senders: Vec<Uuid>,
    pub pool: Option<String>,
}

/// Running campaigns, oldest start first.
pub async fn running(client: &impl GenericClient) -> Result<Vec<PlanningCampaign>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT c.id, c.tenant_id, c.window_start, c.window_end, c.zones, c.variants,
                    c.max_per_variant, c.pool,
                    coalesce(array_agg(cs.number_id) FILTER (WHERE cs.number_id IS NOT NULL),
                             '{}')
               FROM campaigns c
               LEFT JOIN campaign_senders cs ON cs.campaign_id = c.id
              WHERE c.status = 'running'
              GROUP BY c.id
              ORDER BY c.started_at, c.id",
        )
        .await?;
    let rows = client.query(&stmt, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| PlanningCampaign {
            id: row.get(0),
            tenant_id: row.get(1),
            window: SendWindow::new(row.get(2), row.get(3)).unwrap_or_default(),
            zones: row.get(4),
            variants: row.get(5),
            max_per_variant: row.get(6),
            pool: row.get(7),
            senders: row.get(8),
        })
        .collect())
}

/// Marks running campaigns with no pending message left as completed; returns
/// them as (campaign, tenant).
///
/// A campaign is finished when the lowest state among its messages is past
/// `sending`: the pending states (`queued`, `scheduled`, `sending`) are the
/// first three of `message_state`. That lowest state is the first live entry
/// of the campaign in `messages_campaign_state_idx`, read by an index scan
/// (with index scans only, [`super::index_scans_only`]), so a check costs a
/// row or two however much of the campaign was sent. The scan meets, on the
/// way, the entries every sent message left for the states it passed through
/// (until vacuum) and marks them dead, so that the next pass skips them.
/// Asked as "is any message pending", Postgres cannot use the state in that
/// index (row-level security keeps `message_state`'s operators, which are
/// not leakproof, out of index conditions): it read the campaign's messages
/// in id order, or all its entries by a bitmap scan, and each check grew
/// with what the campaign had sent (docs/BENCHMARKS.md, "Campaign completion
/// checked without the sent messages").
pub async fn complete_finished(tx: &Transaction<'_>) -> Result<Vec<(Uuid, Uuid)>, DbError> {
    super::index_scans_only(tx).await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE campaigns c SET status = 'completed', completed_at = now()
              WHERE c.status = 'running'
                AND coalesce((SELECT m.state FROM messages m
                               WHERE m.campaign_id = c.id
                               ORDER BY m.state LIMIT 1) > 'sending', true)
             RETURNING c.id, c.tenant_id",
        )
        .await?;
    let rows = tx.query(&stmt, &[]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}
