//! `imports` and `import_rejections`: CSV imports into lists. Rows are
//! streamed with `COPY` into a temporary staging table (valid and rejected
//! alike, so memory stays flat whatever the file size), then merged into
//! `contacts` and the list in one statement.

use chrono::{DateTime, Utc};
use postgres_types::{FromSql, ToSql};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSql, FromSql)]
#[postgres(name = "import_status")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ImportStatus {
    #[postgres(name = "running")]
    Running,
    #[postgres(name = "completed")]
    Completed,
    #[postgres(name = "failed")]
    Failed,
}

#[derive(Debug, Clone)]
pub struct Import {
    pub id: Uuid,
    pub list_id: Uuid,
    pub status: ImportStatus,
    pub rows: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub duplicates: i64,
    pub merged: i64,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, list_id, status, rows, accepted, rejected, duplicates, merged, error, started_at, finished_at";

fn from_row(row: &tokio_postgres::Row) -> Import {
    Import {
        id: row.get(0),
        list_id: row.get(1),
        status: row.get(2),
        rows: row.get(3),
        accepted: row.get(4),
        rejected: row.get(5),
        duplicates: row.get(6),
        merged: row.get(7),
        error: row.get(8),
        started_at: row.get(9),
        finished_at: row.get(10),
    }
}

/// The temporary table rows are copied into (dropped at commit). A row with
/// a `reason` was rejected.
pub async fn create_staging(client: &impl GenericClient) -> Result<(), DbError> {
    client
        .batch_execute(
            "CREATE TEMP TABLE import_rows (
                 line bigint NOT NULL,
                 id uuid,
                 phone text,
                 name text,
                 attributes jsonb,
                 reason text
             ) ON COMMIT DROP",
        )
        .await?;
    Ok(())
}

/// The COPY statement for [`create_staging`]'s table, text format.
pub const COPY_STAGING: &str =
    "COPY import_rows (line, id, phone, name, attributes, reason) FROM STDIN";

/// Counts of a merge.
#[derive(Debug, Clone, Copy, Default)]
pub struct Merged {
    /// Valid rows.
    pub accepted: i64,
    pub rejected: i64,
    /// Valid rows whose phone appeared earlier in the file.
    pub duplicates: i64,
    /// Contacts that existed and were updated.
    pub merged: i64,
}

/// The latest valid row of each phone in the staging table (a macro, so
/// that `concat!` can put it into both merges).
macro_rules! latest {
    () => {
        "latest AS (
             SELECT DISTINCT ON (phone) id, phone, name, attributes
               FROM import_rows WHERE reason IS NULL
              ORDER BY phone, line DESC
         )"
    };
}

/// The merge: known phones updated, new ones inserted (in id order; a phone
/// another transaction created meanwhile is skipped), both joined to the
/// list. Returns how many contacts were updated, how many created, and how
/// many phones the file has.
const MERGE_SPLIT: &str = concat!(
    "WITH ",
    latest!(),
    ", updated AS (
         UPDATE contacts c
            SET name = coalesce(l.name, c.name),
                attributes = c.attributes || l.attributes,
                updated_at = now()
           FROM latest l
          WHERE c.tenant_id = $1 AND c.phone = l.phone
         RETURNING c.id
     ), created AS (
         INSERT INTO contacts (id, tenant_id, phone, name, attributes)
         SELECT id, $1, phone, name, attributes FROM latest l
          WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.tenant_id = $1 AND c.phone = l.phone)
          ORDER BY id
         ON CONFLICT (tenant_id, phone) DO NOTHING
         RETURNING id
     ), joined_new AS (
         INSERT INTO list_members (list_id, contact_id) SELECT $2, id FROM created
     ), joined_known AS (
         INSERT INTO list_members (list_id, contact_id) SELECT $2, id FROM updated
         ON CONFLICT DO NOTHING
     )
     SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM created),
            (SELECT count(*) FROM latest)"
);

/// The same merge as upserts, whatever other transactions do. Returns how
/// many contacts existed (including those the first merge created).
const MERGE_UPSERT: &str = concat!(
    "WITH ",
    latest!(),
    ", upserted AS (
         INSERT INTO contacts (id, tenant_id, phone, name, attributes)
         SELECT id, $1, phone, name, attributes FROM latest ORDER BY id
         ON CONFLICT (tenant_id, phone) DO UPDATE
            SET name = coalesce(EXCLUDED.name, contacts.name),
                attributes = contacts.attributes || EXCLUDED.attributes,
                updated_at = now()
         RETURNING id, (xmax <> 0) AS existed
     ), joined AS (
         INSERT INTO list_members (list_id, contact_id)
         SELECT $2, id FROM upserted
         ON CONFLICT DO NOTHING
     )
     SELECT count(*) FILTER (WHERE existed) FROM upserted"
);

/// Merges the staged rows into the tenant's contacts (last row of a phone
/// wins; attributes merge into existing ones) and the list, and records the
/// rejected rows.
pub async fn merge_staging(
    client: &impl GenericClient,
    tenant_id: Uuid,
    list_id: Uuid,
    import_id: Uuid,
) -> Result<Merged, DbError> {
    let counts = client
        .query_one(
            "SELECT count(*) FILTER (WHERE reason IS NULL),
                    count(*) FILTER (WHERE reason IS NOT NULL),
                    count(*) FILTER (WHERE reason IS NULL) - count(DISTINCT phone) FILTER (WHERE reason IS NULL)
               FROM import_rows",
            &[],
        )
        .await?;
    client
        .execute(
            "INSERT INTO import_rejections (import_id, line, reason)
             SELECT $1, line, reason FROM import_rows WHERE reason IS NOT NULL",
            &[&import_id],
        )
        .await?;
    // Phones the tenant does not have yet are inserted and known ones
    // updated, which is cheaper than an upsert of every row
    // (docs/BENCHMARKS.md, "Ingest"). Both read the contacts as they were
    // when the statement began: a contact another transaction created since
    // is left alone (`DO NOTHING`), one it deleted or re-numbered is neither
    // updated nor inserted, and the counts disagree. The merge then runs
    // again as an upsert of every row, which waits for such rows and merges
    // into them; for the rows already merged it changes nothing.
    let params: [&(dyn ToSql + Sync); 2] = [&tenant_id, &list_id];
    let row = client.query_one(MERGE_SPLIT, &params).await?;
    let (known, created, latest): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let known = if known + created == latest {
        known
    } else {
        tracing::info!(%import_id, "contacts of the import changed meanwhile; merging again as upserts");
        let existed: i64 = client.query_one(MERGE_UPSERT, &params).await?.get(0);
        existed - created
    };
    Ok(Merged {
        accepted: counts.get(0),
        rejected: counts.get(1),
        duplicates: counts.get(2),
        merged: known,
    })
}

pub async fn start(
    client: &impl GenericClient,
    tenant_id: Uuid,
    list_id: Uuid,
) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let stmt = client
        .prepare_cached("INSERT INTO imports (id, tenant_id, list_id) VALUES ($1, $2, $3)")
        .await?;
    client.execute(&stmt, &[&id, &tenant_id, &list_id]).await?;
    Ok(id)
}

pub async fn finish(
    client: &impl GenericClient,
    id: Uuid,
    rows: i64,
    merged: &Merged,
) -> Result<Import, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE imports SET status = 'completed', rows = $2, accepted = $3, rejected = $4,
                    duplicates = $5, merged = $6, finished_at = now()
              WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &id,
                &rows,
                &merged.accepted,
                &merged.rejected,
                &merged.duplicates,
                &merged.merged,
            ],
        )
        .await?;
    Ok(from_row(&row))
}

/// Records an import that was refused or broke (outside its rolled-back
/// transaction, so the report survives).
pub async fn record_failure(
    client: &impl GenericClient,
    tenant_id: Uuid,
    list_id: Uuid,
    rows: i64,
    error: &str,
) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let stmt = client
        .prepare_cached(
            "INSERT INTO imports (id, tenant_id, list_id, status, rows, error, finished_at)
             VALUES ($1, $2, $3, 'failed', $4, $5, now())",
        )
        .await?;
    client
        .execute(&stmt, &[&id, &tenant_id, &list_id, &rows, &error])
        .await?;
    Ok(id)
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Import>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM imports WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(from_row))
}

/// Rejected rows of an import, in line order, after line `after`.
pub async fn rejections(
    client: &impl GenericClient,
    import_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, String)>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT line, reason FROM import_rejections
              WHERE import_id = $1 AND ($2::bigint IS NULL OR line > $2)
              ORDER BY line LIMIT $3",
        )
        .await?;
    let rows = client.query(&stmt, &[&import_id, &after, &limit]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
