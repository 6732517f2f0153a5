//! `sender_usage`, `tenant_usage` and `variant_usage`: messages assigned per
//! day (of the number's, or the tenant's, time zone), the authoritative counts
//! behind daily caps, whichever scheduler replica assigned them.

use std::collections::HashMap;

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

/// Locks the numbers' rows (until the transaction ends) in id order and reads
/// their budgets. A number that no longer exists is missing from the map.
///
/// Two statements on purpose: under READ COMMITTED a statement that waited for
/// a row lock still reads other tables with the snapshot it started with, so
/// a usage count read in the locking statement would miss what the previous
/// lock holder just committed. The second statement takes a fresh snapshot.
/// They are sent together (one round trip): the server runs the second only
/// once the first holds the locks, so it still reads after them. Both are
/// prepared before either is sent, so that nothing of the connection's first
/// use can reorder them. Every planner locks its numbers in one statement in
/// id order, so two planning overlapping sets wait for each other, never
/// deadlock. `FOR NO KEY UPDATE`, not `FOR UPDATE`: it keeps out planners
/// and writers of the row alike, but not the foreign-key checks of rows
/// that refer to the number (a receipt writer's update of two numbers'
/// messages takes a key-share lock on each number, in no set order; against
/// `FOR UPDATE` that deadlocked with a planner holding several numbers).
pub async fn lock_today(
    client: &impl GenericClient,
    number_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, DayBudget>, DbError> {
    let (lock, usage) = tokio::try_join!(
        client.prepare_cached(
            "SELECT id, ($2::timestamptz AT TIME ZONE time_zone)::date, daily_cap, warmup_plan,
                    ($2::timestamptz AT TIME ZONE time_zone)::date - warmup_started_on
               FROM sender_numbers WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        ),
        client.prepare_cached(
            "SELECT u.number_id, u.assigned
               FROM sender_usage u JOIN sender_numbers n ON n.id = u.number_id
              WHERE u.number_id = ANY($1)
                AND u.day = ($2::timestamptz AT TIME ZONE n.time_zone)::date",
        ),
    )?;
    let params: [&(dyn ToSql + Sync); 2] = [&number_ids, &now];
    let (rows, used) =
        tokio::try_join!(client.query(&lock, &params), client.query(&usage, &params))?;
    let used: HashMap<Uuid, i32> = used.iter().map(|row| (row.get(0), row.get(1))).collect();
    Ok(rows
        .iter()
        .map(|row| {
            let id: Uuid = row.get(0);
            let budget = DayBudget {
                day: row.get(1),
                daily_cap: row.get(2),
                used: used.get(&id).copied().unwrap_or(0),
                warmup_plan: row.get(3),
                day_index: i64::from(row.get::<_, i32>(4)),
            };
            (id, budget)
        })
        .collect())
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

/// Adds messages assigned to numbers on a day: `(number, day, count)`.
pub async fn add(
    client: &impl GenericClient,
    counts: &[(Uuid, NaiveDate, i32)],
) -> Result<(), DbError> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut numbers = Vec::with_capacity(counts.len());
    let mut days = Vec::with_capacity(counts.len());
    let mut assigned = Vec::with_capacity(counts.len());
    for &(number_id, day, count) in counts {
        numbers.push(number_id);
        days.push(day);
        assigned.push(count);
    }
    let stmt = client
        .prepare_cached(
            "INSERT INTO sender_usage AS u (number_id, day, assigned)
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::int4[])
             ON CONFLICT (number_id, day) DO UPDATE SET assigned = u.assigned + EXCLUDED.assigned",
        )
        .await?;
    client.execute(&stmt, &[&numbers, &days, &assigned]).await?;
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

/// Locks the capped ones among these tenants (in id order, until the
/// transaction ends) and reads every one's budget for today. A tenant without
/// a cap is not locked: its numbers' planners need not wait for each other.
/// Two statements in one round trip: the lock, then every tenant's day, cap
/// and usage with a fresh snapshot (see [`lock_today`]).
pub async fn lock_tenants_today(
    client: &impl GenericClient,
    tenant_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, TenantDay>, DbError> {
    let (lock, read) = tokio::try_join!(
        client.prepare_cached(
            "SELECT 1 FROM tenants WHERE id = ANY($1) AND daily_cap IS NOT NULL
              ORDER BY id FOR NO KEY UPDATE",
        ),
        client.prepare_cached(
            "SELECT t.id, d.day, t.daily_cap, coalesce(u.assigned, 0)
               FROM tenants t
              CROSS JOIN LATERAL (SELECT ($2::timestamptz AT TIME ZONE t.time_zone)::date AS day) d
               LEFT JOIN tenant_usage u
                      ON t.daily_cap IS NOT NULL AND u.tenant_id = t.id AND u.day = d.day
              WHERE t.id = ANY($1)",
        ),
    )?;
    let params: [&(dyn ToSql + Sync); 2] = [&tenant_ids, &now];
    let (_, rows) = tokio::try_join!(
        client.query(&lock, &params[..1]),
        client.query(&read, &params),
    )?;
    Ok(rows
        .iter()
        .map(|row| {
            let day = TenantDay {
                day: row.get(1),
                cap: row.get(2),
                used: row.get(3),
            };
            (row.get(0), day)
        })
        .collect())
}

/// A tenant's budget for today, without a lock (for projections).
pub async fn peek_tenant_today(
    client: &impl GenericClient,
    tenant_id: Uuid,
    now: DateTime<Utc>,
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
