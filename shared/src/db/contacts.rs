//! `contacts`: the people a tenant writes to, with what it knows about them.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, GenericClient};
use crate::domain::PhoneNumber;

#[derive(Debug, Clone)]
pub struct Contact {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub phone: PhoneNumber,
    pub name: Option<String>,
    pub attributes: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, phone, name, attributes, created_at, updated_at";

impl Contact {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            tenant_id: row.get("tenant_id"),
            phone: PhoneNumber::from_trusted(row.get("phone")),
            name: row.get("name"),
            attributes: match row.get::<_, Value>("attributes") {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }

    /// The values templates can use: the attributes, plus `name` and `phone`
    /// unless the attributes have their own.
    pub fn variables(&self) -> Map<String, Value> {
        let mut vars = self.attributes.clone();
        if let Some(name) = &self.name {
            vars.entry("name")
                .or_insert_with(|| Value::String(name.clone()));
        }
        vars.entry("phone")
            .or_insert_with(|| Value::String(self.phone.to_string()));
        vars
    }
}

pub async fn insert(
    client: &impl GenericClient,
    tenant_id: Uuid,
    phone: &PhoneNumber,
    name: Option<&str>,
    attributes: &Map<String, Value>,
) -> Result<Contact, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO contacts (id, tenant_id, phone, name, attributes)
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &Uuid::now_v7(),
                &tenant_id,
                &phone.as_str(),
                &name,
                &Value::Object(attributes.clone()),
            ],
        )
        .await?;
    Ok(Contact::from_row(&row))
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Contact>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM contacts WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(Contact::from_row))
}

/// A page of contacts in id order, after `after`; optionally only a list's.
pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    list_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Contact>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM contacts c
              WHERE c.tenant_id = $1
                AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM list_members m
                                                  WHERE m.list_id = $2 AND m.contact_id = c.id))
                AND ($3::uuid IS NULL OR c.id > $3)
              ORDER BY c.id
              LIMIT $4"
        ))
        .await?;
    let rows = client
        .query(&stmt, &[&tenant_id, &list_id, &after, &limit])
        .await?;
    Ok(rows.iter().map(Contact::from_row).collect())
}

/// Replaces the fields given (`attributes` replaced whole).
pub async fn update(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    name: Option<Option<&str>>,
    attributes: Option<&Map<String, Value>>,
) -> Result<Option<Contact>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE contacts
                SET name = CASE WHEN $3 THEN $4 ELSE name END,
                    attributes = coalesce($5, attributes),
                    updated_at = now()
              WHERE tenant_id = $1 AND id = $2
             RETURNING {COLUMNS}"
        ))
        .await?;
    let attributes = attributes.map(|a| Value::Object(a.clone()));
    Ok(client
        .query_opt(
            &stmt,
            &[
                &tenant_id,
                &id,
                &name.is_some(),
                &name.flatten(),
                &attributes,
            ],
        )
        .await?
        .as_ref()
        .map(Contact::from_row))
}

pub async fn delete(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM contacts WHERE tenant_id = $1 AND id = $2")
        .await?;
    Ok(client.execute(&stmt, &[&tenant_id, &id]).await? == 1)
}

/// The statement that walks a list's contacts (optionally those whose
/// attributes contain `filter`), in id order, for a portal.
pub const LIST_WALK: &str =
    "SELECT c.id, c.tenant_id, c.phone, c.name, c.attributes, c.created_at, c.updated_at
                               FROM contacts c
                               JOIN list_members m ON m.contact_id = c.id AND m.list_id = $1
                              WHERE ($2::jsonb IS NULL OR c.attributes @> $2)
                              ORDER BY c.id";

pub fn from_walk(row: &Row) -> Contact {
    Contact::from_row(row)
}

/// Which of `ids` are the tenant's contacts.
pub async fn existing(
    client: &impl GenericClient,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, DbError> {
    let stmt = client
        .prepare_cached("SELECT id FROM contacts WHERE tenant_id = $1 AND id = ANY($2)")
        .await?;
    Ok(client
        .query(&stmt, &[&tenant_id, &ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
