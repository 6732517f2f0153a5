//! `workers`: live worker processes, so each can compute its fair share of
//! numbers.

use std::time::Duration;

use super::{DbError, GenericClient};

pub async fn heartbeat(client: &impl GenericClient, id: &str) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO workers (id) VALUES ($1)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        )
        .await?;
    client.execute(&stmt, &[&id]).await?;
    Ok(())
}

/// Workers whose heartbeat is younger than `ttl`. Rows of workers silent for ten
/// times as long are deleted on the way (crashed processes never say goodbye).
pub async fn live_count(client: &impl GenericClient, ttl: Duration) -> Result<i64, DbError> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let stale = client
        .prepare_cached(
            "DELETE FROM workers WHERE heartbeat_at < now() - $1::bigint * interval '10 millisecond'",
        )
        .await?;
    client.execute(&stale, &[&ttl_ms]).await?;
    let stmt = client
        .prepare_cached(
            "SELECT count(*) FROM workers
              WHERE heartbeat_at >= now() - $1::bigint * interval '1 millisecond'",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&ttl_ms]).await?.get(0))
}

pub async fn remove(client: &impl GenericClient, id: &str) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM workers WHERE id = $1")
        .await?;
    client.execute(&stmt, &[&id]).await?;
    Ok(())
}
