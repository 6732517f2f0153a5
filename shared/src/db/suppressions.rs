//! `suppressions`: phones a tenant must not write to.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct Suppression {
    pub phone: String,
    pub reason: Option<String>,
    /// `api`, or `opt_out` (the recipient asked).
    pub source: String,
    pub created_at: DateTime<Utc>,
}

fn from_row(row: &tokio_postgres::Row) -> Suppression {
    Suppression {
        phone: row.get(0),
        reason: row.get(1),
        source: row.get(2),
        created_at: row.get(3),
    }
}

/// Adds (or keeps) a suppression; returns it.
pub async fn upsert(
    client: &impl GenericClient,
    tenant_id: Uuid,
    phone: &str,
    reason: Option<&str>,
    source: &str,
) -> Result<Suppression, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO suppressions (tenant_id, phone, reason, source) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, phone) DO UPDATE SET reason = coalesce(EXCLUDED.reason, suppressions.reason)
             RETURNING phone, reason, source, created_at",
        )
        .await?;
    let row = client
        .query_one(&stmt, &[&tenant_id, &phone, &reason, &source])
        .await?;
    Ok(from_row(&row))
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    phone: &str,
) -> Result<Option<Suppression>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT phone, reason, source, created_at FROM suppressions
              WHERE tenant_id = $1 AND phone = $2",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &phone])
        .await?
        .as_ref()
        .map(from_row))
}

pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Suppression>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT phone, reason, source, created_at FROM suppressions
              WHERE tenant_id = $1 AND ($2::text IS NULL OR phone > $2)
              ORDER BY phone LIMIT $3",
        )
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &after, &limit]).await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn delete(
    client: &impl GenericClient,
    tenant_id: Uuid,
    phone: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM suppressions WHERE tenant_id = $1 AND phone = $2")
        .await?;
    Ok(client.execute(&stmt, &[&tenant_id, &phone]).await? == 1)
}

/// Which of `phones` are suppressed.
pub async fn among(
    client: &impl GenericClient,
    tenant_id: Uuid,
    phones: &[&str],
) -> Result<std::collections::HashSet<String>, DbError> {
    let stmt = client
        .prepare_cached("SELECT phone FROM suppressions WHERE tenant_id = $1 AND phone = ANY($2)")
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &phones]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
