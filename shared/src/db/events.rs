//! `events`: the event log tenants read (live stream, webhooks), in commit
//! order (see migration 0004 and [`super::outbox::log_batch`]).

use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// Position in the log: the live stream's event id.
    pub seq: i64,
    pub id: Uuid,
    pub kind: String,
    /// `{"id", "type", "timestamp", "data"}`.
    pub payload: serde_json::Value,
}

/// The tenant's events after `after`, oldest first; only `types` when not
/// empty, only about `number_id` when given.
pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    after: i64,
    types: &[String],
    number_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<LoggedEvent>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT seq, id, type, payload FROM events
              WHERE tenant_id = $1 AND seq > $2
                AND (cardinality($3::text[]) = 0 OR type = ANY($3))
                AND ($5::text IS NULL OR payload->'data'->>'number_id' = $5)
              ORDER BY seq LIMIT $4",
        )
        .await?;
    let number = number_id.map(|id| id.to_string());
    let rows = client
        .query(&stmt, &[&tenant_id, &after, &types, &limit, &number])
        .await?;
    Ok(rows
        .iter()
        .map(|row| LoggedEvent {
            seq: row.get(0),
            id: row.get(1),
            kind: row.get(2),
            payload: row.get(3),
        })
        .collect())
}

/// The newest position in the tenant's log (0 when it has none): where a
/// stream without a resume point starts.
pub async fn latest(client: &impl GenericClient, tenant_id: Uuid) -> Result<i64, DbError> {
    let stmt = client
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM events WHERE tenant_id = $1")
        .await?;
    Ok(client.query_one(&stmt, &[&tenant_id]).await?.get(0))
}

/// Deletes up to `limit` events older than `hours` (their webhook deliveries
/// and attempts go with them), never one the webhook fan-out has not
/// reached. Returns how many went.
pub async fn expire(client: &impl GenericClient, hours: i32, limit: i64) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events
                  WHERE created_at < now() - $1::int * interval '1 hour'
                    AND seq <= (SELECT position FROM event_cursors WHERE name = 'webhooks')
                  ORDER BY seq LIMIT $2)",
        )
        .await?;
    Ok(client.execute(&stmt, &[&hours, &limit]).await?)
}
