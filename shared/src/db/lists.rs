//! `lists` and `list_members`: named sets of contacts campaigns are built from.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct List {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// Members now.
    pub size: i64,
    pub created_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT l.id, l.tenant_id, l.name, l.created_at,
                             (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS size
                        FROM lists l";

impl List {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            tenant_id: row.get("tenant_id"),
            name: row.get("name"),
            size: row.get("size"),
            created_at: row.get("created_at"),
        }
    }
}

pub async fn insert(
    client: &impl GenericClient,
    tenant_id: Uuid,
    name: &str,
) -> Result<List, DbError> {
    let stmt = client
        .prepare_cached("INSERT INTO lists (id, tenant_id, name) VALUES ($1, $2, $3) RETURNING id")
        .await?;
    let id: Uuid = client
        .query_one(&stmt, &[&Uuid::now_v7(), &tenant_id, &name])
        .await?
        .get(0);
    Ok(get(client, tenant_id, id).await?.expect("just inserted"))
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<List>, DbError> {
    let stmt = client
        .prepare_cached(&format!("{SELECT} WHERE l.tenant_id = $1 AND l.id = $2"))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(List::from_row))
}

pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<List>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "{SELECT} WHERE l.tenant_id = $1 AND ($2::uuid IS NULL OR l.id > $2)
              ORDER BY l.id LIMIT $3"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &after, &limit]).await?;
    Ok(rows.iter().map(List::from_row).collect())
}

pub async fn delete(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM lists WHERE tenant_id = $1 AND id = $2")
        .await?;
    Ok(client.execute(&stmt, &[&tenant_id, &id]).await? == 1)
}

/// Adds contacts to a list; returns how many were not members yet.
pub async fn add_members(
    client: &impl GenericClient,
    list_id: Uuid,
    contact_ids: &[Uuid],
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO list_members (list_id, contact_id) SELECT $1, unnest($2::uuid[])
             ON CONFLICT DO NOTHING",
        )
        .await?;
    Ok(client.execute(&stmt, &[&list_id, &contact_ids]).await?)
}

pub async fn remove_member(
    client: &impl GenericClient,
    list_id: Uuid,
    contact_id: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM list_members WHERE list_id = $1 AND contact_id = $2")
        .await?;
    Ok(client.execute(&stmt, &[&list_id, &contact_id]).await? == 1)
}
