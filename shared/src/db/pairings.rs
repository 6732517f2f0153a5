//! `number_pairings`: requests to link a number, and where they stand.

use chrono::{DateTime, Utc};
use postgres_types::{FromSql, ToSql};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, GenericClient};

/// Mirrors the Postgres enum `pairing_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSql, FromSql)]
#[postgres(name = "pairing_status")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PairingStatus {
    /// Waiting for a worker to show a code.
    #[postgres(name = "waiting")]
    Waiting,
    /// A code is shown: scan it, or type it on the phone.
    #[postgres(name = "showing_code")]
    ShowingCode,
    #[postgres(name = "paired")]
    Paired,
    #[postgres(name = "failed")]
    Failed,
    /// Nobody scanned in time.
    #[postgres(name = "expired")]
    Expired,
}

#[derive(Debug, Clone)]
pub struct Pairing {
    pub number_id: Uuid,
    pub tenant_id: Uuid,
    /// `qr` or `code`.
    pub method: String,
    pub status: PairingStatus,
    pub code: Option<String>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// A request past its deadline reads as `expired`, whoever looks.
const COLUMNS: &str = "number_id, tenant_id, method,
    CASE WHEN status IN ('waiting', 'showing_code') AND expires_at <= now()
         THEN 'expired'::pairing_status ELSE status END,
    code, code_expires_at, error, requested_at, expires_at, updated_at";

fn from_row(row: &tokio_postgres::Row) -> Pairing {
    Pairing {
        number_id: row.get(0),
        tenant_id: row.get(1),
        method: row.get(2),
        status: row.get(3),
        code: row.get(4),
        code_expires_at: row.get(5),
        error: row.get(6),
        requested_at: row.get(7),
        expires_at: row.get(8),
        updated_at: row.get(9),
    }
}

/// Starts (or restarts) a pairing of the number.
pub async fn request(
    client: &impl GenericClient,
    tenant_id: Uuid,
    number_id: Uuid,
    method: &str,
    expires_at: DateTime<Utc>,
) -> Result<Pairing, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO number_pairings (number_id, tenant_id, method, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (number_id) DO UPDATE
                SET method = EXCLUDED.method, status = 'waiting', code = NULL,
                    code_expires_at = NULL, error = NULL, requested_at = now(),
                    expires_at = EXCLUDED.expires_at, updated_at = now()
             RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(&stmt, &[&number_id, &tenant_id, &method, &expires_at])
        .await?;
    Ok(from_row(&row))
}

pub async fn get(client: &impl GenericClient, number_id: Uuid) -> Result<Option<Pairing>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM number_pairings WHERE number_id = $1"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&number_id])
        .await?
        .as_ref()
        .map(from_row))
}

/// A code to show now (`method`: what kind it is). Only for a pairing still
/// under way with that method; returns whether it was recorded.
pub async fn show_code(
    client: &impl GenericClient,
    number_id: Uuid,
    method: &str,
    code: &str,
    code_expires_at: DateTime<Utc>,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE number_pairings
                SET status = 'showing_code', code = $3, code_expires_at = $4, updated_at = now()
              WHERE number_id = $1 AND method = $2
                AND status IN ('waiting', 'showing_code') AND expires_at > now()",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&number_id, &method, &code, &code_expires_at])
        .await?
        == 1)
}

/// The pairing ended: `paired` or `failed` (with why).
pub async fn finish(
    client: &impl GenericClient,
    number_id: Uuid,
    status: PairingStatus,
    error: Option<&str>,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE number_pairings
                SET status = $2, error = $3, code = NULL, code_expires_at = NULL, updated_at = now()
              WHERE number_id = $1 AND status IN ('waiting', 'showing_code')",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&number_id, &status, &error])
        .await?
        == 1)
}
