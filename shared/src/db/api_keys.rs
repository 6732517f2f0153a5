//! `api_keys`: tenant credentials. Only a key's SHA-256 is stored; the key is
//! shown once when created.

use rand::RngExt;
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

/// The tenant a presented key belongs to, if the key exists and is not revoked.
pub async fn tenant_for(client: &impl GenericClient, key: &str) -> Result<Option<Uuid>, DbError> {
    let stmt = client
        .prepare_cached("SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .await?;
    Ok(client
        .query_opt(&stmt, &[&hash(key).as_slice()])
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
