//! Operator subcommands of `herald-api`: create tenants and their API keys.
//! Keys are printed once and stored only as a SHA-256.

use herald_shared::db::{self, DbError, Pool, api_keys::KeyInfo};
use serde::Serialize;
use uuid::Uuid;

/// Why an operator command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself: an unknown tenant or key, a bad value.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<deadpool_postgres::PoolError> for AdminError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Db(err.into())
    }
}

impl From<tokio_postgres::Error> for AdminError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Db(err.into())
    }
}

#[derive(Debug, Serialize)]
pub struct NewTenant {
    pub tenant_id: Uuid,
    pub api_key: String,
}

/// Creates a tenant and a first API key for it.
pub async fn create_tenant(pool: &Pool, name: &str) -> Result<NewTenant, AdminError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AdminError::Refused("a tenant needs a name".into()));
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

#[derive(Debug, Serialize)]
pub struct NewKey {
    pub key_id: Uuid,
    pub tenant_id: Uuid,
    pub api_key: String,
}

/// Creates another API key for an existing tenant.
pub async fn create_key(pool: &Pool, tenant_id: Uuid, name: &str) -> Result<NewKey, AdminError> {
    let client = pool.get().await?;
    ensure_tenant(&client, tenant_id).await?;
    let api_key = db::api_keys::generate();
    let key_id = db::api_keys::insert(&client, tenant_id, name, &api_key).await?;
    Ok(NewKey {
        key_id,
        tenant_id,
        api_key,
    })
}

/// A tenant's API keys (never the keys themselves), revoked ones included.
pub async fn list_keys(pool: &Pool, tenant_id: Uuid) -> Result<Vec<KeyInfo>, AdminError> {
    let client = pool.get().await?;
    ensure_tenant(&client, tenant_id).await?;
    Ok(db::api_keys::list(&client, tenant_id).await?)
}

/// Revokes an API key. Running API processes refuse it within
/// `api.key_cache_ms` (they keep keys they checked that long). Revoking a
/// revoked key changes nothing.
pub async fn revoke_key(pool: &Pool, key_id: Uuid) -> Result<KeyInfo, AdminError> {
    let client = pool.get().await?;
    db::api_keys::revoke(&client, key_id)
        .await?
        .ok_or_else(|| AdminError::Refused(format!("no API key {key_id}")))
}

async fn ensure_tenant(client: &impl db::GenericClient, tenant_id: Uuid) -> Result<(), AdminError> {
    if db::tenants::exists(client, tenant_id).await? {
        Ok(())
    } else {
        Err(AdminError::Refused(format!("no tenant {tenant_id}")))
    }
}

/// Sets a tenant's daily cap over all its numbers (`None`: no cap) and the
/// zone its day is counted in.
pub async fn set_limits(
    pool: &Pool,
    tenant_id: Uuid,
    daily_cap: Option<i32>,
    time_zone: &str,
) -> Result<(), AdminError> {
    herald_shared::policy::zones::parse_zone(time_zone).map_err(AdminError::Refused)?;
    if daily_cap.is_some_and(|cap| cap < 0) {
        return Err(AdminError::Refused(
            "the daily cap cannot be negative".into(),
        ));
    }
    let client = pool.get().await?;
    if !db::tenants::set_limits(&client, tenant_id, daily_cap, time_zone).await? {
        return Err(AdminError::Refused(format!("no tenant {tenant_id}")));
    }
    Ok(())
}
