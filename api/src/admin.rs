//! Operator subcommands of `herald-api`: create tenants and their API keys.
//! Keys are printed once and stored only as a SHA-256.

use herald_shared::db::{self, DbError, Pool};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize)]
pub struct NewTenant {
    pub tenant_id: Uuid,
    pub api_key: String,
}

/// Creates a tenant and a first API key for it.
pub async fn create_tenant(pool: &Pool, name: &str) -> Result<NewTenant, DbError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(DbError::Config("a tenant needs a name".into()));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let tenant_id = Uuid::now_v7();
    db::tenants::insert(&tx, tenant_id, name).await?;
    let api_key = db::api_keys::generate();
    db::api_keys::insert(&tx, tenant_id, "initial", &api_key).await?;
    tx.commit().await?;
    Ok(NewTenant { tenant_id, api_key })
}

/// Creates another API key for an existing tenant.
pub async fn create_key(pool: &Pool, tenant_id: Uuid, name: &str) -> Result<String, DbError> {
    let client = pool.get().await?;
    if !db::tenants::exists(&client, tenant_id).await? {
        return Err(DbError::Config(format!("no tenant {tenant_id}")));
    }
    let api_key = db::api_keys::generate();
    db::api_keys::insert(&client, tenant_id, name, &api_key).await?;
    Ok(api_key)
}

/// Sets a tenant's daily cap over all its numbers (`None`: no cap) and the
/// zone its day is counted in.
pub async fn set_limits(
    pool: &Pool,
    tenant_id: Uuid,
    daily_cap: Option<i32>,
    time_zone: &str,
) -> Result<(), DbError> {
    herald_shared::policy::zones::parse_zone(time_zone).map_err(DbError::Config)?;
    if daily_cap.is_some_and(|cap| cap < 0) {
        return Err(DbError::Config("the daily cap cannot be negative".into()));
    }
    let client = pool.get().await?;
    if !db::tenants::set_limits(&client, tenant_id, daily_cap, time_zone).await? {
        return Err(DbError::Config(format!("no tenant {tenant_id}")));
    }
    Ok(())
}
