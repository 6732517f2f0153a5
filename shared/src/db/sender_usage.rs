//! `sender_usage`, `tenant_usage` and `variant_usage`: messages assigned per
//! day (of the number's, or the tenant's, time zone), the authoritative counts
//! behind daily caps, whichever scheduler replica assigned them.

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{DbError, GenericClient};

/// A number's budget for today, read under a row lock on the number so that two
/// schedulers planning the same number serialise.
#[derive(Debug, Clone)]
pub struct DayBudget {
    /// Today in the number's time zone.
    pub day: NaiveDate,
    pub daily_cap: i32,
    pub used: i32,
    pub warmup_plan: String,
    /// Days since warm-up started, in the number's time zone.
    pub day_index: i64,
}

/// Locks the number's row (until the transaction ends) and reads its budget.
/// `None` if the number no longer exists.
///
/// Two statements on purpose: under READ COMMITTED a statement that waited for
/// the row lock still reads other tables with the snapshot it started with, so
/// a usage count read in the locking statement would miss what the previous
/// lock holder just committed. The second statement takes a fresh snapshot.
/// They are sent together (one round trip): the server runs the second only
/// once the first holds the lock, so it still reads after the lock. Both are
/// prepared before either is sent, so that nothing of the connection's first
/// use can reorder them.
pub async fn lock_today(
    client: &impl GenericClient,
    number_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<DayBudget>, DbError> {
    let (lock, usage) = tokio::try_join!(
        client.prepare_cached(
            "SELECT ($2::timestamptz AT TIME ZONE time_zone)::date, daily_cap, warmup_plan,
                    ($2::timestamptz AT TIME ZONE time_zone)::date - warmup_started_on
               FROM sender_numbers WHERE id = $1 FOR UPDATE",
        ),
        client.prepare_cached(
            "SELECT u.assigned
               FROM sender_usage u JOIN sender_numbers n ON n.id = u.number_id
              WHERE u.number_id = $1 AND u.day = ($2::timestamptz AT TIME ZONE n.time_zone)::date",
        ),
    )?;
    let params: [&(dyn ToSql + Sync); 2] = [&number_id, &now];
    let (row, used) = tokio::try_join!(
        client.query_opt(&lock, &params),
        client.query_opt(&usage, &params),
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (day, daily_cap, warmup_plan): (NaiveDate, i32, String) =
        (row.get(0), row.get(1), row.get(2));
    let day_index = i64::from(row.get::<_, i32>(3));
    Ok(Some(DayBudget {
        day,
        daily_cap,
        used: used.map_or(0, |row| row.get(0)),
        warmup_plan,
        day_index,
    }))
}

/// Messages given to a number on `day` (no lock).
pub async fn used_on(
    client: &impl GenericClient,
    number_id: Uuid,
    day: NaiveDate,
) -> Result<i32, DbError> {
    let usage = client
        .prepare_cached("SELECT assigned FROM sender_usage WHERE number_id = $1 AND day = $2")
        .await?;
    Ok(client
        .query_opt(&usage, &[&number_id, &day])
        .await?
        .map_or(0, |row| row.get(0)))
}

pub async fn add(
    client: &impl GenericClient,
    number_id: Uuid,
    day: NaiveDate,
    count: i32,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO sender_usage AS u (number_id, day, assigned) VALUES ($1, $2, $3)
             ON CONFLICT (number_id, day) DO UPDATE SET assigned = u.assigned + EXCLUDED.assigned",
        )
        .await?;
    client.execute(&stmt, &[&number_id, &day, &count]).await?;
    Ok(())
}

/// Gives back budget for jobs that were never published.
pub async fn give_back(
    client: &impl GenericClient,
    number_id: Uuid,
    day: NaiveDate,
    count: i32,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_usage SET assigned = greatest(assigned - $3, 0)
              WHERE number_id = $1 AND day = $2",
        )
        .await?;
    client.execute(&stmt, &[&number_id, &day, &count]).await?;
    Ok(())
}

/// A tenant's budget for today (its time zone), read under a row lock on the
/// tenant; `cap` is `None` when the tenant has no cap (then nothing is locked).
#[derive(Debug, Clone)]
pub struct TenantDay {
    pub day: NaiveDate,
    pub cap: Option<i32>,
    pub used: i32,
}

pub async fn lock_tenant_today(
    client: &impl GenericClient,
    tenant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<TenantDay, DbError> {
    tenant_today(client, tenant_id, now, true).await
}

/// As [`lock_tenant_today`], without the lock (for projections).
pub async fn peek_tenant_today(
    client: &impl GenericClient,
    tenant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<TenantDay, DbError> {
    tenant_today(client, tenant_id, now, false).await
}

async fn tenant_today(
    client: &impl GenericClient,
    tenant_id: Uuid,
    now: DateTime<Utc>,
    lock: bool,
) -> Result<TenantDay, DbError> {
    let peek = client
        .prepare_cached(
            "SELECT ($2::timestamptz AT TIME ZONE time_zone)::date, daily_cap
               FROM tenants WHERE id = $1",
        )
        .await?;
    let row = client.query_one(&peek, &[&tenant_id, &now]).await?;
    let (day, cap): (NaiveDate, Option<i32>) = (row.get(0), row.get(1));
    if cap.is_none() {
        return Ok(TenantDay { day, cap, used: 0 });
    }
    if lock {
        // Serialise planners of the tenant's numbers; then read with a fresh
        // snapshot (see `lock_today`).
        let lock = client
            .prepare_cached("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
            .await?;
        client.query_one(&lock, &[&tenant_id]).await?;
    }
    let usage = client
        .prepare_cached("SELECT assigned FROM tenant_usage WHERE tenant_id = $1 AND day = $2")
        .await?;
    let used = client
        .query_opt(&usage, &[&tenant_id, &day])
        .await?
        .map_or(0, |row| row.get(0));
    Ok(TenantDay { day, cap, used })
}

pub async fn add_tenant(
    client: &impl GenericClient,
    tenant_id: Uuid,
    day: NaiveDate,
    count: i32,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO tenant_usage AS u (tenant_id, day, assigned) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, day) DO UPDATE SET assigned = u.assigned + EXCLUDED.assigned",
        )
        .await?;
    client.execute(&stmt, &[&tenant_id, &day, &count]).await?;
    Ok(())
}

pub async fn give_back_tenant(
    client: &impl GenericClient,
    tenant_id: Uuid,
    day: NaiveDate,
    count: i32,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE tenant_usage SET assigned = greatest(assigned - $3, 0)
              WHERE tenant_id = $1 AND day = $2",
        )
        .await?;
    client.execute(&stmt, &[&tenant_id, &day, &count]).await?;
    Ok(())
}

/// Recipients per variant of a campaign this number was given today.
pub async fn variant_counts(
    client: &impl GenericClient,
    number_id: Uuid,
    day: NaiveDate,
    campaign_id: Uuid,
) -> Result<Vec<(i16, i32)>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT variant, assigned FROM variant_usage
              WHERE number_id = $1 AND day = $2 AND campaign_id = $3",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&number_id, &day, &campaign_id])
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub async fn add_variants(
    client: &impl GenericClient,
    number_id: Uuid,
    day: NaiveDate,
    campaign_id: Uuid,
    counts: &[(i16, i32)],
) -> Result<(), DbError> {
    let (variants, assigned): (Vec<i16>, Vec<i32>) = counts.iter().copied().unzip();
    let stmt = client
        .prepare_cached(
            "INSERT INTO variant_usage AS u (number_id, day, campaign_id, variant, assigned)
             SELECT $1, $2, $3, v, n FROM unnest($4::int2[], $5::int4[]) AS t (v, n)
             ON CONFLICT (number_id, day, campaign_id, variant)
                DO UPDATE SET assigned = u.assigned + EXCLUDED.assigned",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[&number_id, &day, &campaign_id, &variants, &assigned],
        )
        .await?;
    Ok(())
}
