//! `webhook_endpoints`, `webhook_deliveries`, `webhook_attempts`: where a
//! tenant's events go, and how each delivery went.
//!
//! A delivery is one event for one endpoint. Jobs on RabbitMQ carry the
//! attempt they are for; [`claim`] lets only the job for the delivery's next
//! attempt go ahead, so a duplicated or stale job does nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, GenericClient};
use crate::domain::DeliveryState;

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, enabled, \
    disabled_reason, secret, previous_secret, previous_secret_until, created_at, updated_at";

fn endpoint(row: &tokio_postgres::Row) -> Endpoint {
    Endpoint {
        id: row.get(0),
        tenant_id: row.get(1),
        url: row.get(2),
        description: row.get(3),
        event_types: row.get(4),
        enabled: row.get(5),
        disabled_reason: row.get(6),
        secret: row.get(7),
        previous_secret: row.get(8),
        previous_secret_until: row.get(9),
        created_at: row.get(10),
        updated_at: row.get(11),
    }
}

pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub description: Option<&'a str>,
    pub event_types: &'a [String],
    pub enabled: bool,
    pub secret: &'a str,
}

pub async fn insert(
    client: &impl GenericClient,
    tenant_id: Uuid,
    new: &NewEndpoint<'_>,
) -> Result<Endpoint, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, enabled, secret)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT_COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &Uuid::now_v7(),
                &tenant_id,
                &new.url,
                &new.description,
                &new.event_types,
                &new.enabled,
                &new.secret,
            ],
        )
        .await?;
    Ok(endpoint(&row))
}

pub async fn count(client: &impl GenericClient, tenant_id: Uuid) -> Result<i64, DbError> {
    let stmt = client
        .prepare_cached("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1")
        .await?;
    Ok(client.query_one(&stmt, &[&tenant_id]).await?.get(0))
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Endpoint>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(endpoint))
}

pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Endpoint>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
              WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
              ORDER BY id LIMIT $3"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &after, &limit]).await?;
    Ok(rows.iter().map(endpoint).collect())
}

/// Fields to change (`None`: keep).
#[derive(Default)]
pub struct EndpointChange<'a> {
    pub url: Option<&'a str>,
    pub description: Option<Option<&'a str>>,
    pub event_types: Option<&'a [String]>,
    pub enabled: Option<bool>,
}

/// Changes an endpoint. Enabling it clears the reason Herald disabled it.
pub async fn update(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    change: &EndpointChange<'_>,
) -> Result<Option<Endpoint>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE webhook_endpoints
                SET url = coalesce($3, url),
                    description = CASE WHEN $4 THEN $5 ELSE description END,
                    event_types = coalesce($6, event_types),
                    enabled = coalesce($7, enabled),
                    disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END,
                    updated_at = now()
              WHERE tenant_id = $1 AND id = $2
             RETURNING {ENDPOINT_COLUMNS}"
        ))
        .await?;
    let (set_description, description) = match change.description {
        Some(d) => (true, d),
        None => (false, None),
    };
    Ok(client
        .query_opt(
            &stmt,
            &[
                &tenant_id,
                &id,
                &change.url,
                &set_description,
                &description,
                &change.event_types,
                &change.enabled,
            ],
        )
        .await?
        .as_ref()
        .map(endpoint))
}

pub async fn delete(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .await?;
    Ok(client.execute(&stmt, &[&tenant_id, &id]).await? == 1)
}

/// Replaces the secret. With `overlap_until`, the old one keeps signing
/// (a second signature) until then; without, it stops at once.
pub async fn rotate_secret(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    secret: &str,
    overlap_until: Option<DateTime<Utc>>,
) -> Result<Option<Endpoint>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE webhook_endpoints
                SET previous_secret = CASE WHEN $4::timestamptz IS NULL THEN NULL ELSE secret END,
                    previous_secret_until = $4, secret = $3, updated_at = now()
              WHERE tenant_id = $1 AND id = $2
             RETURNING {ENDPOINT_COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id, &secret, &overlap_until])
        .await?
        .as_ref()
        .map(endpoint))
}

/// Herald stops sending to an endpoint (it answered 410 Gone).
pub async fn disable(client: &impl GenericClient, id: Uuid, reason: &str) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
              WHERE id = $1 AND enabled",
        )
        .await?;
    Ok(client.execute(&stmt, &[&id, &reason]).await? == 1)
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, v.id, v.type, d.state, d.attempts, \
    CASE WHEN d.state = 'pending' THEN d.next_attempt_at END, d.last_status, d.last_error, \
    d.created_at, d.delivered_at, d.failed_at";

fn delivery(row: &tokio_postgres::Row) -> Delivery {
    Delivery {
        id: row.get(0),
        endpoint_id: row.get(1),
        event_id: row.get(2),
        event_type: row.get(3),
        state: row.get(4),
        attempts: row.get(5),
        next_attempt_at: row.get(6),
        last_status: row.get(7),
        last_error: row.get(8),
        created_at: row.get(9),
        delivered_at: row.get(10),
        failed_at: row.get(11),
    }
}

/// An endpoint's deliveries, oldest first, optionally in one state.
pub async fn deliveries(
    client: &impl GenericClient,
    endpoint_id: Uuid,
    state: Option<DeliveryState>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events v ON v.seq = d.event_seq
              WHERE d.endpoint_id = $1 AND ($2::delivery_state IS NULL OR d.state = $2)
                AND ($3::bigint IS NULL OR d.id > $3)
              ORDER BY d.id LIMIT $4"
        ))
        .await?;
    let rows = client
        .query(&stmt, &[&endpoint_id, &state, &after, &limit])
        .await?;
    Ok(rows.iter().map(delivery).collect())
}

pub async fn get_delivery(
    client: &impl GenericClient,
    endpoint_id: Uuid,
    id: i64,
) -> Result<Option<Delivery>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events v ON v.seq = d.event_seq
              WHERE d.endpoint_id = $1 AND d.id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&endpoint_id, &id])
        .await?
        .as_ref()
        .map(delivery))
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub response: Option<String>,
}

pub async fn attempts(
    client: &impl GenericClient,
    delivery_id: i64,
) -> Result<Vec<AttemptRecord>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT attempt, started_at, duration_ms, status, error, response
               FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
        )
        .await?;
    let rows = client.query(&stmt, &[&delivery_id]).await?;
    Ok(rows
        .iter()
        .map(|row| AttemptRecord {
            attempt: row.get(0),
            started_at: row.get(1),
            duration_ms: row.get(2),
            status: row.get(3),
            error: row.get(4),
            response: row.get(5),
        })
        .collect())
}

/// Starts a new run of attempts for finished deliveries of an endpoint:
/// one (`delivery_id`), or every failed one since `since`. Returns the
/// deliveries to queue (each for attempt 1 of its new run).
pub async fn replay(
    client: &impl GenericClient,
    endpoint_id: Uuid,
    delivery_id: Option<i64>,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<i64>, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE webhook_deliveries
                SET state = 'pending', run_attempts = 0, next_attempt_at = now(),
                    failed_at = NULL
              WHERE endpoint_id = $1 AND state <> 'pending'
                AND CASE WHEN $2::bigint IS NOT NULL THEN id = $2
                         ELSE state = 'failed' AND ($3::timestamptz IS NULL OR created_at >= $3)
                    END
             RETURNING id",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&endpoint_id, &delivery_id, &since])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// What one pass of the fan-out did.
#[derive(Debug, Clone, Default)]
pub struct FannedOut {
    /// Events read from the log.
    pub events: i64,
    /// Deliveries created, to queue for their first attempt.
    pub deliveries: Vec<i64>,
}

/// Turns the next events of the log into deliveries for the endpoints that
/// want them, and moves the fan-out's position past them. `None` when
/// another process holds the position (it is fanning out now).
pub async fn fan_out(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Option<FannedOut>, DbError> {
    let lock = client
        .prepare_cached(
            "SELECT position FROM event_cursors WHERE name = 'webhooks' FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let Some(row) = client.query_opt(&lock, &[]).await? else {
        return Ok(None);
    };
    let position: i64 = row.get(0);
    let stmt = client
        .prepare_cached(
            "WITH batch AS (
                 SELECT seq, tenant_id, type FROM events WHERE seq > $1 ORDER BY seq LIMIT $2
             ), made AS (
                 INSERT INTO webhook_deliveries (endpoint_id, tenant_id, event_seq)
                 SELECT e.id, b.tenant_id, b.seq
                   FROM batch b
                   JOIN webhook_endpoints e
                     ON e.tenant_id = b.tenant_id AND e.enabled
                    AND (cardinality(e.event_types) = 0 OR b.type = ANY(e.event_types))
                  ORDER BY b.seq, e.id
                 ON CONFLICT (endpoint_id, event_seq) DO NOTHING
                 RETURNING id
             ), moved AS (
                 UPDATE event_cursors SET position = (SELECT max(seq) FROM batch)
                  WHERE name = 'webhooks' AND EXISTS (SELECT 1 FROM batch)
             )
             SELECT (SELECT count(*) FROM batch),
                    coalesce((SELECT array_agg(id ORDER BY id) FROM made), '{}')",
        )
        .await?;
    let row = client.query_one(&stmt, &[&position, &limit]).await?;
    Ok(Some(FannedOut {
        events: row.get(0),
        deliveries: row.get(1),
    }))
}

/// What an attempt needs, once it may go ahead.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// This attempt's number among all of the delivery's attempts.
    pub attempt: i32,
    pub endpoint_id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub enabled: bool,
    pub secret: String,
    /// The secret before a rotation, while it still signs.
    pub previous_secret: Option<String>,
    pub event_id: Uuid,
    pub payload: serde_json::Value,
}

/// Takes attempt `run_attempt` of the delivery's current run, if that is
/// its next one and it is still pending. While it runs, the delivery is
/// not due again for `hold` (the sweep leaves it alone).
pub async fn claim(
    client: &impl GenericClient,
    delivery_id: i64,
    run_attempt: i32,
    hold: Duration,
) -> Result<Option<Claimed>, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE webhook_deliveries d
                SET attempts = d.attempts + 1, run_attempts = d.run_attempts + 1,
                    next_attempt_at = now() + $3::bigint * interval '1 millisecond'
               FROM webhook_endpoints e, events v
              WHERE d.id = $1 AND d.state = 'pending' AND d.run_attempts = $2 - 1
                AND e.id = d.endpoint_id AND v.seq = d.event_seq
             RETURNING d.attempts, e.id, e.tenant_id, e.url, e.enabled, e.secret,
                       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END,
                       v.id, v.payload",
        )
        .await?;
    let hold_ms = hold.as_millis() as i64;
    Ok(client
        .query_opt(&stmt, &[&delivery_id, &run_attempt, &hold_ms])
        .await?
        .map(|row| Claimed {
            attempt: row.get(0),
            endpoint_id: row.get(1),
            tenant_id: row.get(2),
            url: row.get(3),
            enabled: row.get(4),
            secret: row.get(5),
            previous_secret: row.get(6),
            event_id: row.get(7),
            payload: row.get(8),
        }))
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAfter(Duration),
    Failed,
}

/// Logs an attempt and settles the delivery accordingly.
pub async fn record_attempt(
    client: &impl GenericClient,
    delivery_id: i64,
    attempt: i32,
    outcome: &AttemptOutcome,
    next: Next,
) -> Result<(), DbError> {
    let log = client
        .prepare_cached(
            "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status, error, response)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    client
        .execute(
            &log,
            &[
                &delivery_id,
                &attempt,
                &outcome.started_at,
                &outcome.duration_ms,
                &outcome.status,
                &outcome.error,
                &outcome.response,
            ],
        )
        .await?;
    let (state, retry_ms) = match next {
        Next::Delivered => (DeliveryState::Delivered, 0i64),
        Next::RetryAfter(wait) => (DeliveryState::Pending, wait.as_millis() as i64),
        Next::Failed => (DeliveryState::Failed, 0),
    };
    let settle = client
        .prepare_cached(
            "UPDATE webhook_deliveries
                SET state = $2::delivery_state, last_status = $3, last_error = $4,
                    next_attempt_at = now() + $5::bigint * interval '1 millisecond',
                    delivered_at = CASE WHEN $2::delivery_state = 'delivered' THEN now() END,
                    failed_at = CASE WHEN $2::delivery_state = 'failed' THEN now() END
              WHERE id = $1",
        )
        .await?;
    client
        .execute(
            &settle,
            &[
                &delivery_id,
                &state,
                &outcome.status,
                &outcome.error,
                &retry_ms,
            ],
        )
        .await?;
    Ok(())
}

/// Pending deliveries more than `grace` past due (their job was lost), up to
/// `limit`: pushed `grace` further and returned with the attempt to queue.
pub async fn overdue(
    client: &impl GenericClient,
    grace: Duration,
    limit: i64,
) -> Result<Vec<(i64, i32)>, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_at = now() + $1::bigint * interval '1 millisecond'
              WHERE id IN (SELECT id FROM webhook_deliveries
                            WHERE state = 'pending'
                              AND next_attempt_at < now() - $1::bigint * interval '1 millisecond'
                            ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, run_attempts + 1",
        )
        .await?;
    let grace_ms = grace.as_millis() as i64;
    let rows = client.query(&stmt, &[&grace_ms, &limit]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Deliveries waiting for an attempt.
pub async fn pending_count(client: &impl GenericClient) -> Result<i64, DbError> {
    let stmt = client
        .prepare_cached("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'")
        .await?;
    Ok(client.query_one(&stmt, &[]).await?.get(0))
}

/// A delivery whose attempt job the broker gave up on: failed (replayable).
pub async fn fail_dead_lettered(
    client: &impl GenericClient,
    delivery_id: i64,
    reason: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = 'failed', failed_at = now(), last_error = $2
              WHERE id = $1 AND state = 'pending'",
        )
        .await?;
    Ok(client.execute(&stmt, &[&delivery_id, &reason]).await? == 1)
}
