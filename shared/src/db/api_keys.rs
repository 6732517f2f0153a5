//! `api_keys`: tenant credentials. Only a key's SHA-256 is stored; the key is
//! shown once when created.

use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{DbError, GenericClient};

/// Prefix of every Herald API key, so a leaked key is recognisable (secret
/// scanners) and a mistyped header is easy to tell apart.
pub const KEY_PREFIX: &str = "hk_";

/// A new random key: the prefix and 32 random bytes in hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The characters of a key kept in clear for people to tell keys apart.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 6).collect()
}

pub async fn insert(
    client: &impl GenericClient,
    tenant_id: Uuid,
    name: &str,
    key: &str,
) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let stmt = client
        .prepare_cached(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &id,
                &tenant_id,
                &name,
                &hash(key).as_slice(),
                &display_prefix(key),
            ],
        )
        .await?;
    Ok(id)
}

/// An API key as operators see it: never the key itself.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// The key's first characters (`hk_` and six more).
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The columns [`key_info`] reads, in its order.
const KEY_COLUMNS: &str = "id, tenant_id, name, key_prefix, created_at, revoked_at";

fn key_info(row: &tokio_postgres::Row) -> KeyInfo {
    KeyInfo {
        id: row.get(0),
        tenant_id: row.get(1),
        name: row.get(2),
        prefix: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
    }
}

/// A tenant's keys, revoked ones included, oldest first.
pub async fn list(client: &impl GenericClient, tenant_id: Uuid) -> Result<Vec<KeyInfo>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id]).await?;
    Ok(rows.iter().map(key_info).collect())
}

/// Revokes a key (a key revoked before keeps its first revocation time).
/// `None` if there is no such key.
pub async fn revoke(client: &impl GenericClient, id: Uuid) -> Result<Option<KeyInfo>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
             RETURNING {KEY_COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(key_info))
}

/// The tenant of the key with this [`hash`], if the key exists and is not
/// revoked.
pub async fn tenant_for(
    client: &impl GenericClient,
    key_hash: &[u8; 32],
) -> Result<Option<Uuid>, DbError> {
    let stmt = client
        .prepare_cached("SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .await?;
    Ok(client
        .query_opt(&stmt, &[&key_hash.as_slice()])
        .await?
        .map(|row| row.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hash_to_32_bytes() {
        let a = generate();
        let b = generate();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(display_prefix(&a).len(), KEY_PREFIX.len() + 6);
    }
}
