//! `tenants`: the organisations using Herald. Everything else hangs off one.

use uuid::Uuid;

use super::{DbError, GenericClient};

pub async fn insert(client: &impl GenericClient, id: Uuid, name: &str) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .await?;
    client.execute(&stmt, &[&id, &name]).await?;
    Ok(())
}

pub async fn exists(client: &impl GenericClient, id: Uuid) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .await?;
    Ok(client.query_one(&stmt, &[&id]).await?.get(0))
}

/// Sets the tenant's daily cap (`None`: no cap) and the zone its day is
/// counted in.
pub async fn set_limits(
    client: &impl GenericClient,
    id: Uuid,
    daily_cap: Option<i32>,
    time_zone: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("UPDATE tenants SET daily_cap = $2, time_zone = $3 WHERE id = $1")
        .await?;
    Ok(client
        .execute(&stmt, &[&id, &daily_cap, &time_zone])
        .await?
        == 1)
}

/// The zone the tenant's day (for its cap) is counted in.
pub async fn time_zone(client: &impl GenericClient, id: Uuid) -> Result<String, DbError> {
    let stmt = client
        .prepare_cached("SELECT time_zone FROM tenants WHERE id = $1")
        .await?;
    Ok(client.query_one(&stmt, &[&id]).await?.get(0))
}

/// A tenant's opt-out settings: its own keywords (`None`: the configured
/// ones) and the confirmation sent to whoever opts out (`None`: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptOutSettings {
    pub keywords: Option<Vec<String>>,
    pub reply: Option<String>,
}

pub async fn opt_out_settings(
    client: &impl GenericClient,
    id: Uuid,
) -> Result<OptOutSettings, DbError> {
    let stmt = client
        .prepare_cached("SELECT opt_out_keywords, opt_out_reply FROM tenants WHERE id = $1")
        .await?;
    let row = client.query_one(&stmt, &[&id]).await?;
    Ok(OptOutSettings {
        keywords: row.get(0),
        reply: row.get(1),
    })
}

pub async fn set_opt_out_settings(
    client: &impl GenericClient,
    id: Uuid,
    settings: &OptOutSettings,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE tenants SET opt_out_keywords = $2, opt_out_reply = $3 WHERE id = $1",
        )
        .await?;
    client
        .execute(&stmt, &[&id, &settings.keywords, &settings.reply])
        .await?;
    Ok(())
}
