//! `session_rows`, `session_keys`, `master_key_checks`: a number's session
//! state at rest. Values arrive here sealed (the worker's key store encrypts
//! them); these statements only store, find and delete them by their clear
//! identifiers (see migration 0005).

use uuid::Uuid;

use super::{DbError, GenericClient};

/// A stored item: its sealed value and the clear numbers kept beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub key: String,
    pub sub: String,
    pub value: Vec<u8>,
    pub n1: Option<i64>,
    pub n2: Option<i64>,
    pub flag: bool,
}

fn stored(row: &tokio_postgres::Row) -> StoredRow {
    StoredRow {
        key: row.get(0),
        sub: row.get(1),
        value: row.get(2),
        n1: row.get(3),
        n2: row.get(4),
        flag: row.get(5),
    }
}

const COLUMNS: &str = "key, sub, value, n1, n2, flag";

/// Items of one kind to upsert.
#[derive(Debug, Clone, Default)]
pub struct NewRows {
    pub keys: Vec<String>,
    pub subs: Vec<String>,
    pub values: Vec<Vec<u8>>,
    pub n1: Vec<Option<i64>>,
    pub n2: Vec<Option<i64>>,
    pub flags: Vec<bool>,
}

impl NewRows {
    pub fn push(&mut self, row: StoredRow) {
        self.keys.push(row.key);
        self.subs.push(row.sub);
        self.values.push(row.value);
        self.n1.push(row.n1);
        self.n2.push(row.n2);
        self.flags.push(row.flag);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Inserts or replaces items of `kind`, in one statement.
pub async fn put(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    rows: &NewRows,
) -> Result<(), DbError> {
    upsert(
        client,
        number_id,
        kind,
        rows,
        "value = EXCLUDED.value, n1 = EXCLUDED.n1, n2 = EXCLUDED.n2, flag = EXCLUDED.flag",
    )
    .await
}

/// Inserts `rows`; on a conflict applies `update` (`r` is the stored row).
async fn upsert(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    rows: &NewRows,
    update: &str,
) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO session_rows AS r (number_id, kind, key, sub, value, n1, n2, flag)
             SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::bytea[], $6::int8[], $7::int8[], $8::bool[])
             ON CONFLICT (number_id, kind, key, sub) DO UPDATE SET {update}"
        ))
        .await?;
    client
        .execute(
            &stmt,
            &[
                &number_id,
                &kind,
                &rows.keys,
                &rows.subs,
                &rows.values,
                &rows.n1,
                &rows.n2,
                &rows.flags,
            ],
        )
        .await?;
    Ok(())
}

pub async fn get(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    key: &str,
    sub: &str,
) -> Result<Option<StoredRow>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM session_rows
              WHERE number_id = $1 AND kind = $2 AND key = $3 AND sub = $4"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&number_id, &kind, &key, &sub])
        .await?
        .as_ref()
        .map(stored))
}

/// Items of `kind` with any of `keys` (and the sub `sub`).
pub async fn get_keys(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    keys: &[String],
    sub: &str,
) -> Result<Vec<StoredRow>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM session_rows
              WHERE number_id = $1 AND kind = $2 AND key = ANY($3) AND sub = $4"
        ))
        .await?;
    let rows = client
        .query(&stmt, &[&number_id, &kind, &keys, &sub])
        .await?;
    Ok(rows.iter().map(stored).collect())
}

/// Every item of `kind` (of one `key`, when given).
pub async fn list(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    key: Option<&str>,
) -> Result<Vec<StoredRow>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM session_rows
              WHERE number_id = $1 AND kind = $2 AND ($3::text IS NULL OR key = $3)
              ORDER BY key, sub"
        ))
        .await?;
    let rows = client.query(&stmt, &[&number_id, &kind, &key]).await?;
    Ok(rows.iter().map(stored).collect())
}

/// Clear identifiers only (no values): the keys of `kind`.
pub async fn keys(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
) -> Result<Vec<String>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT DISTINCT key FROM session_rows WHERE number_id = $1 AND kind = $2 ORDER BY key",
        )
        .await?;
    let rows = client.query(&stmt, &[&number_id, &kind]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn exists(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    key: &str,
    sub: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM session_rows
                             WHERE number_id = $1 AND kind = $2 AND key = $3 AND sub = $4)",
        )
        .await?;
    Ok(client
        .query_one(&stmt, &[&number_id, &kind, &key, &sub])
        .await?
        .get(0))
}

/// Whether any item of the `kinds` has a key of `user` (`user@…` or
/// `user:device@…`).
pub async fn any_of_user(
    client: &impl GenericClient,
    number_id: Uuid,
    kinds: &[&str],
    user: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM session_rows
                             WHERE number_id = $1 AND kind = ANY($2)
                               AND left(key, char_length($3) + 1) IN ($3 || '@', $3 || ':'))",
        )
        .await?;
    Ok(client
        .query_one(&stmt, &[&number_id, &kinds, &user])
        .await?
        .get(0))
}

/// Deletes one item; returns it (for take-style reads).
pub async fn take(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    key: &str,
    sub: &str,
) -> Result<Option<StoredRow>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "DELETE FROM session_rows
              WHERE number_id = $1 AND kind = $2 AND key = $3 AND sub = $4
             RETURNING {COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&number_id, &kind, &key, &sub])
        .await?
        .as_ref()
        .map(stored))
}

/// Which items a delete reaches.
#[derive(Debug, Clone, Copy)]
pub enum Select<'a> {
    /// Every item of the kind.
    All,
    /// Items with this key (any sub).
    Key(&'a str),
    /// Items with this key and one of these subs.
    KeySubs(&'a str, &'a [String]),
    /// Items with one of these keys (sub `''`).
    Keys(&'a [String]),
    /// Items with one of these subs, under any key.
    Subs(&'a [String]),
    /// Items whose `n1` is one of these.
    N1s(&'a [i64]),
    /// Items whose `n1` is below this.
    N1Below(i64),
}

pub async fn delete(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    which: Select<'_>,
) -> Result<u64, DbError> {
    let base = "DELETE FROM session_rows WHERE number_id = $1 AND kind = $2";
    let deleted = match which {
        Select::All => {
            let stmt = client.prepare_cached(base).await?;
            client.execute(&stmt, &[&number_id, &kind]).await?
        }
        Select::Key(key) => {
            let stmt = client
                .prepare_cached(&format!("{base} AND key = $3"))
                .await?;
            client.execute(&stmt, &[&number_id, &kind, &key]).await?
        }
        Select::KeySubs(key, subs) => {
            let stmt = client
                .prepare_cached(&format!("{base} AND key = $3 AND sub = ANY($4)"))
                .await?;
            client
                .execute(&stmt, &[&number_id, &kind, &key, &subs])
                .await?
        }
        Select::Keys(keys) => {
            let stmt = client
                .prepare_cached(&format!("{base} AND key = ANY($3) AND sub = ''"))
                .await?;
            client.execute(&stmt, &[&number_id, &kind, &keys]).await?
        }
        Select::Subs(subs) => {
            let stmt = client
                .prepare_cached(&format!("{base} AND sub = ANY($3)"))
                .await?;
            client.execute(&stmt, &[&number_id, &kind, &subs]).await?
        }
        Select::N1s(values) => {
            let stmt = client
                .prepare_cached(&format!("{base} AND n1 = ANY($3)"))
                .await?;
            client.execute(&stmt, &[&number_id, &kind, &values]).await?
        }
        Select::N1Below(cutoff) => {
            let stmt = client
                .prepare_cached(&format!("{base} AND n1 < $3"))
                .await?;
            client.execute(&stmt, &[&number_id, &kind, &cutoff]).await?
        }
    };
    Ok(deleted)
}

/// The largest `n1` of a kind (the highest prekey id).
pub async fn max_n1(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
) -> Result<Option<i64>, DbError> {
    let stmt = client
        .prepare_cached("SELECT max(n1) FROM session_rows WHERE number_id = $1 AND kind = $2")
        .await?;
    Ok(client.query_one(&stmt, &[&number_id, &kind]).await?.get(0))
}

/// Sets the flag of the items whose `n1` is one of `values` (never adds
/// rows).
pub async fn set_flag(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    values: &[i64],
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE session_rows SET flag = true
              WHERE number_id = $1 AND kind = $2 AND n1 = ANY($3)",
        )
        .await?;
    client.execute(&stmt, &[&number_id, &kind, &values]).await?;
    Ok(())
}

pub async fn count(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
) -> Result<i64, DbError> {
    let stmt = client
        .prepare_cached("SELECT count(*) FROM session_rows WHERE number_id = $1 AND kind = $2")
        .await?;
    Ok(client.query_one(&stmt, &[&number_id, &kind]).await?.get(0))
}

/// Deletes the `n` items of a kind with the smallest `n1` (oldest first).
pub async fn delete_oldest(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    n: i64,
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM session_rows WHERE (number_id, kind, key, sub) IN (
                 SELECT number_id, kind, key, sub FROM session_rows
                  WHERE number_id = $1 AND kind = $2 ORDER BY n1, key, sub LIMIT $3)",
        )
        .await?;
    Ok(client.execute(&stmt, &[&number_id, &kind, &n]).await?)
}

/// Upserts items whose `n1` is an expiry (0: never) and `n2` a time: on
/// conflict the value is replaced, `n1` merged (0 wins, else the later) and
/// `n2` the later.
pub async fn put_merging_times(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    rows: &NewRows,
) -> Result<(), DbError> {
    upsert(
        client,
        number_id,
        kind,
        rows,
        "value = EXCLUDED.value,
         n1 = CASE WHEN r.n1 = 0 OR EXCLUDED.n1 = 0 THEN 0 ELSE greatest(r.n1, EXCLUDED.n1) END,
         n2 = greatest(r.n2, EXCLUDED.n2)",
    )
    .await
}

/// Deletes items whose `n1` is an expiry (0: never) at or before `cutoff`.
pub async fn delete_expired(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    cutoff: i64,
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM session_rows
              WHERE number_id = $1 AND kind = $2 AND n1 <> 0 AND n1 <= $3",
        )
        .await?;
    Ok(client.execute(&stmt, &[&number_id, &kind, &cutoff]).await?)
}

/// Tokens (flag: the token is not empty; `n1` its time, `n2` the sender
/// time): deletes those where neither is still live.
pub async fn delete_stale_tokens(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    token_cutoff: i64,
    sender_cutoff: i64,
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM session_rows
              WHERE number_id = $1 AND kind = $2
                AND NOT ((flag AND n1 >= $3) OR coalesce(n2 >= $4, false))",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&number_id, &kind, &token_cutoff, &sender_cutoff])
        .await?)
}

/// A token's sender time moves forward (the item is created, with an empty
/// token, if absent; `empty` is its sealed empty value).
pub async fn touch_sender_time(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    key: &str,
    empty: &[u8],
    at: i64,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO session_rows AS r (number_id, kind, key, sub, value, n1, n2, flag)
             VALUES ($1, $2, $3, '', $4, $5, $5, false)
             ON CONFLICT (number_id, kind, key, sub) DO UPDATE
                SET n2 = greatest(coalesce(r.n2, EXCLUDED.n2), EXCLUDED.n2)",
        )
        .await?;
    client
        .execute(&stmt, &[&number_id, &kind, &key, &empty, &at])
        .await?;
    Ok(())
}

/// A received token replaces the stored one unless that one is newer (its
/// sender time is kept).
pub async fn store_newer_token(
    client: &impl GenericClient,
    number_id: Uuid,
    kind: &str,
    key: &str,
    sealed: &[u8],
    at: i64,
    non_empty: bool,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO session_rows AS r (number_id, kind, key, sub, value, n1, n2, flag)
             VALUES ($1, $2, $3, '', $4, $5, NULL, $6)
             ON CONFLICT (number_id, kind, key, sub) DO UPDATE
                SET value = EXCLUDED.value, n1 = EXCLUDED.n1, flag = EXCLUDED.flag
              WHERE NOT r.flag OR EXCLUDED.n1 >= r.n1",
        )
        .await?;
    client
        .execute(&stmt, &[&number_id, &kind, &key, &sealed, &at, &non_empty])
        .await?;
    Ok(())
}

/// Deletes a number's whole session: its items and its data key.
pub async fn wipe(client: &impl GenericClient, number_id: Uuid) -> Result<u64, DbError> {
    let rows = client
        .prepare_cached("DELETE FROM session_rows WHERE number_id = $1")
        .await?;
    let deleted = client.execute(&rows, &[&number_id]).await?;
    let key = client
        .prepare_cached("DELETE FROM session_keys WHERE number_id = $1")
        .await?;
    client.execute(&key, &[&number_id]).await?;
    Ok(deleted)
}

/// A number's wrapped data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub tenant_id: Uuid,
    pub key_version: i32,
    pub master_version: i32,
    pub wrapped: Vec<u8>,
}

pub async fn data_key(
    client: &impl GenericClient,
    number_id: Uuid,
) -> Result<Option<WrappedKey>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT tenant_id, key_version, master_version, wrapped FROM session_keys
              WHERE number_id = $1",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&number_id])
        .await?
        .map(|row| WrappedKey {
            tenant_id: row.get(0),
            key_version: row.get(1),
            master_version: row.get(2),
            wrapped: row.get(3),
        }))
}

/// Stores a new data key unless the number has one (another process got
/// there first). Returns whether this one was stored.
pub async fn insert_data_key(
    client: &impl GenericClient,
    number_id: Uuid,
    key: &WrappedKey,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO session_keys (number_id, tenant_id, key_version, master_version, wrapped)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (number_id) DO NOTHING",
        )
        .await?;
    Ok(client
        .execute(
            &stmt,
            &[
                &number_id,
                &key.tenant_id,
                &key.key_version,
                &key.master_version,
                &key.wrapped,
            ],
        )
        .await?
        == 1)
}

/// Every data key, locked for re-wrapping.
pub async fn lock_all_keys(
    client: &impl GenericClient,
) -> Result<Vec<(Uuid, WrappedKey)>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT number_id, tenant_id, key_version, master_version, wrapped
               FROM session_keys ORDER BY number_id FOR UPDATE",
        )
        .await?;
    let rows = client.query(&stmt, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                WrappedKey {
                    tenant_id: row.get(1),
                    key_version: row.get(2),
                    master_version: row.get(3),
                    wrapped: row.get(4),
                },
            )
        })
        .collect())
}

pub async fn rewrap(
    client: &impl GenericClient,
    number_id: Uuid,
    master_version: i32,
    wrapped: &[u8],
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE session_keys SET master_version = $2, wrapped = $3, rewrapped_at = now()
              WHERE number_id = $1",
        )
        .await?;
    client
        .execute(&stmt, &[&number_id, &master_version, &wrapped])
        .await?;
    Ok(())
}

/// Master key versions that wrap at least one data key.
pub async fn master_versions_in_use(client: &impl GenericClient) -> Result<Vec<i32>, DbError> {
    let stmt = client
        .prepare_cached("SELECT DISTINCT master_version FROM session_keys ORDER BY 1")
        .await?;
    let rows = client.query(&stmt, &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The sealed check value of a master key version.
pub async fn master_check(
    client: &impl GenericClient,
    version: i32,
) -> Result<Option<Vec<u8>>, DbError> {
    let stmt = client
        .prepare_cached("SELECT sealed FROM master_key_checks WHERE version = $1")
        .await?;
    Ok(client
        .query_opt(&stmt, &[&version])
        .await?
        .map(|r| r.get(0)))
}

/// Records a master key version's check value unless it has one.
pub async fn insert_master_check(
    client: &impl GenericClient,
    version: i32,
    sealed: &[u8],
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO master_key_checks (version, sealed) VALUES ($1, $2)
             ON CONFLICT (version) DO NOTHING",
        )
        .await?;
    client.execute(&stmt, &[&version, &sealed]).await?;
    Ok(())
}
