//! `idempotency_keys`: the first response to a POST carrying an
//! `Idempotency-Key`, replayed for later requests with the same key.

use uuid::Uuid;

use super::{DbError, GenericClient};

/// What an earlier request with the same key left.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub request_hash: Vec<u8>,
    /// `None` while the first request is still being handled.
    pub response: Option<(u16, Option<String>, Vec<u8>)>,
}

/// Claims the key for this request. `true`: this request is the first and
/// must be handled; `false`: the key was used before (see [`recorded`]).
pub async fn claim(
    client: &impl GenericClient,
    tenant_id: Uuid,
    key: &str,
    request_hash: &[u8],
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&tenant_id, &key, &request_hash])
        .await?
        == 1)
}

pub async fn recorded(
    client: &impl GenericClient,
    tenant_id: Uuid,
    key: &str,
) -> Result<Option<Recorded>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT request_hash, status, content_type, body FROM idempotency_keys
              WHERE tenant_id = $1 AND key = $2",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &key])
        .await?
        .map(|row| {
            let status: Option<i32> = row.get(1);
            Recorded {
                request_hash: row.get(0),
                response: status.map(|s| {
                    (
                        s as u16,
                        row.get(2),
                        row.get::<_, Option<Vec<u8>>>(3).unwrap_or_default(),
                    )
                }),
            }
        }))
}

pub async fn complete(
    client: &impl GenericClient,
    tenant_id: Uuid,
    key: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5, completed_at = now()
              WHERE tenant_id = $1 AND key = $2",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[&tenant_id, &key, &i32::from(status), &content_type, &body],
        )
        .await?;
    Ok(())
}

/// Forgets a key whose request failed on the server's side, so a retry runs.
pub async fn release(
    client: &impl GenericClient,
    tenant_id: Uuid,
    key: &str,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
        .await?;
    client.execute(&stmt, &[&tenant_id, &key]).await?;
    Ok(())
}

/// Deletes keys older than `hours`.
pub async fn expire(client: &impl GenericClient, hours: i32) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1::int * interval '1 hour'",
        )
        .await?;
    Ok(client.execute(&stmt, &[&hours]).await?)
}
