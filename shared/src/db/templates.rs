//! `templates`: message texts with handlebars variables.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct Template {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub body: String,
    /// Variable names the body uses.
    pub variables: Vec<String>,
    /// An image or document sent with the text.
    pub media: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Template {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            tenant_id: row.get("tenant_id"),
            name: row.get("name"),
            body: row.get("body"),
            variables: row.get("variables"),
            media: row.get("media"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }
}

const COLUMNS: &str = "id, tenant_id, name, body, variables, media, created_at, updated_at";

pub async fn insert(
    client: &impl GenericClient,
    tenant_id: Uuid,
    name: &str,
    body: &str,
    variables: &[String],
    media: Option<&serde_json::Value>,
) -> Result<Template, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO templates (id, tenant_id, name, body, variables, media)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &Uuid::now_v7(),
                &tenant_id,
                &name,
                &body,
                &variables,
                &media,
            ],
        )
        .await?;
    Ok(Template::from_row(&row))
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Template>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM templates WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(Template::from_row))
}

pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Template>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM templates
              WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
              ORDER BY id LIMIT $3"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &after, &limit]).await?;
    Ok(rows.iter().map(Template::from_row).collect())
}

/// Replaces a template's fields (the caller merges what did not change).
pub async fn update(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    name: &str,
    body: &str,
    variables: &[String],
    media: Option<&serde_json::Value>,
) -> Result<Option<Template>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE templates SET name = $3, body = $4, variables = $5, media = $6, updated_at = now()
              WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id, &name, &body, &variables, &media])
        .await?
        .as_ref()
        .map(Template::from_row))
}

/// Deletes a template no campaign uses; a used one is a foreign-key
/// violation.
pub async fn delete(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM templates WHERE tenant_id = $1 AND id = $2")
        .await?;
    Ok(client.execute(&stmt, &[&tenant_id, &id]).await? == 1)
}
