//! `outbox`: events written in the same transaction as the change they
//! announce, then moved into the event log and, for the types the scheduler
//! wakes on, published to RabbitMQ (see [`crate::outbox`]).

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub topic: String,
    pub payload: serde_json::Value,
}

pub async fn insert(
    client: &impl GenericClient,
    topic: &str,
    payload: &serde_json::Value,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("INSERT INTO outbox (topic, payload) VALUES ($1, $2)")
        .await?;
    client.execute(&stmt, &[&topic, payload]).await?;
    Ok(())
}

/// Event types that stay inside Herald: relayed to RabbitMQ but never
/// written to the tenant-visible event log.
pub const INTERNAL_TOPICS: &[&str] = &["message.queued"];

/// Event types published to RabbitMQ (as `LIKE` patterns): the ones the
/// scheduler plans around. The rest only go to the event log.
pub const PUBLISHED_TOPICS: &[&str] = &["campaign.%", "number.%", "message.queued"];

/// Key of the advisory lock that serialises writers of `events`, so that
/// the log's `seq` order is its commit order (see migration 0004).
const EVENT_LOG_LOCK: i64 = 0x4845_5241_4c44_0001;

/// What one pass of [`log_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Logged {
    /// Outbox rows taken.
    pub rows: i64,
    /// Events added to the log.
    pub events: i64,
}

/// Moves the oldest outbox rows into the event log (under the log's lock,
/// so the caller must commit promptly), deletes those that need no publish
/// and marks the others `logged` (each found by its primary key: joined to
/// the batch, Postgres at times read the whole table to find them).
/// Notifies `herald_events` listeners (on commit) when the log grew.
pub async fn log_batch(client: &impl GenericClient, limit: i64) -> Result<Logged, DbError> {
    let lock = client
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    client.execute(&lock, &[&EVENT_LOG_LOCK]).await?;
    let stmt = client
        .prepare_cached(
            "WITH batch AS (
                 SELECT id, topic, payload FROM outbox WHERE NOT logged
                  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
             ), appended AS (
                 INSERT INTO events (id, tenant_id, type, payload)
                 SELECT (payload->>'id')::uuid, (payload->>'tenant_id')::uuid, topic,
                        payload - 'tenant_id'
                   FROM batch WHERE topic <> ALL($2) ORDER BY id
                 ON CONFLICT (id) DO NOTHING
                 RETURNING seq
             ), done AS (
                 DELETE FROM outbox
                  WHERE id = ANY(ARRAY(SELECT id FROM batch WHERE NOT (topic LIKE ANY($3))))
             ), to_publish AS (
                 UPDATE outbox SET logged = true
                  WHERE id = ANY(ARRAY(SELECT id FROM batch WHERE topic LIKE ANY($3)))
             )
             SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM appended)",
        )
        .await?;
    let row = client
        .query_one(&stmt, &[&limit, &INTERNAL_TOPICS, &PUBLISHED_TOPICS])
        .await?;
    let logged = Logged {
        rows: row.get(0),
        events: row.get(1),
    };
    if logged.events > 0 {
        let notify = client
            .prepare_cached("SELECT pg_notify('herald_events', '')")
            .await?;
        client.execute(&notify, &[]).await?;
    }
    Ok(logged)
}

/// The oldest logged rows waiting for their publish, locked for this
/// transaction; rows another relay holds are skipped, so replicas share the
/// work.
pub async fn lock_batch(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<OutboxRow>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT id, topic, payload FROM outbox WHERE logged
              ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let rows = client.query(&stmt, &[&limit]).await?;
    Ok(rows
        .iter()
        .map(|row| OutboxRow {
            id: row.get(0),
            topic: row.get(1),
            payload: row.get(2),
        })
        .collect())
}

pub async fn delete(client: &impl GenericClient, ids: &[i64]) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM outbox WHERE id = ANY($1)")
        .await?;
    client.execute(&stmt, &[&ids]).await?;
    Ok(())
}

/// Age in seconds of the oldest unpublished row (0 when empty): the outbox lag.
///
/// The row with the lowest id, read through the primary key: ids are handed
/// out as rows are written, so it is the oldest to within the length of one
/// writing transaction. (`min(created_at)` read the whole table, every
/// relay round; rows come and go all the time, so its pages outnumber its
/// rows many times over: 6,900 pages read per round in the pipeline
/// benchmark, docs/BENCHMARKS.md, "The outbox read through its keys".)
pub async fn lag_seconds(client: &impl GenericClient) -> Result<f64, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT coalesce(extract(epoch FROM now() -
                    (SELECT created_at FROM outbox ORDER BY id LIMIT 1))::float8, 0)",
        )
        .await?;
    Ok(client.query_one(&stmt, &[]).await?.get(0))
}
