//! `media`: uploaded images and documents sent with messages.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct Media {
    pub id: Uuid,
    pub content_type: String,
    pub filename: Option<String>,
    pub size: i32,
    pub sha256: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

fn from_row(row: &tokio_postgres::Row) -> Media {
    Media {
        id: row.get(0),
        content_type: row.get(1),
        filename: row.get(2),
        size: row.get(3),
        sha256: row.get(4),
        created_at: row.get(5),
    }
}

pub async fn insert(
    client: &impl GenericClient,
    tenant_id: Uuid,
    content_type: &str,
    filename: Option<&str>,
    bytes: &[u8],
) -> Result<Media, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO media (id, tenant_id, content_type, filename, size, sha256, bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id, content_type, filename, size, sha256, created_at",
        )
        .await?;
    let digest = Sha256::digest(bytes).to_vec();
    let row = client
        .query_one(
            &stmt,
            &[
                &Uuid::now_v7(),
                &tenant_id,
                &content_type,
                &filename,
                &(bytes.len() as i32),
                &digest,
                &bytes,
            ],
        )
        .await?;
    Ok(from_row(&row))
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Media>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT id, content_type, filename, size, sha256, created_at FROM media
              WHERE tenant_id = $1 AND id = $2",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(from_row))
}

/// The bytes of a media object (for the worker that sends it).
pub async fn bytes(client: &impl GenericClient, id: Uuid) -> Result<Option<Vec<u8>>, DbError> {
    let stmt = client
        .prepare_cached("SELECT bytes FROM media WHERE id = $1")
        .await?;
    Ok(client.query_opt(&stmt, &[&id]).await?.map(|r| r.get(0)))
}

/// An upload as a session sends it.
#[derive(Debug, Clone)]
pub struct MediaContent {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub filename: Option<String>,
}

pub async fn content(
    client: &impl GenericClient,
    id: Uuid,
) -> Result<Option<MediaContent>, DbError> {
    let stmt = client
        .prepare_cached("SELECT bytes, content_type, filename FROM media WHERE id = $1")
        .await?;
    Ok(client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|row| MediaContent {
            bytes: row.get(0),
            content_type: row.get(1),
            filename: row.get(2),
        }))
}
