//! `sender_numbers`: the WhatsApp numbers (real or simulated) a tenant sends
//! from, with their limits.

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, GenericClient};
use crate::{
    domain::{NumberKind, NumberState, PhoneNumber},
    policy::{breaker::BreakerState, jitter::Jitter},
};

#[derive(Debug, Clone)]
pub struct SenderNumber {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub phone: PhoneNumber,
    pub kind: NumberKind,
    pub state: NumberState,
    pub label: Option<String>,
    /// Sends allowed per day of the number's time zone.
    pub daily_cap: i32,
    /// Least time between two sends.
    pub min_gap_ms: i32,
    pub time_zone: String,
    pub warmup_plan: String,
    /// Day 0 of the warm-up plan, in the number's time zone.
    pub warmup_started_on: NaiveDate,
    /// `None`: the configured default.
    pub jitter: Option<Jitter>,
    pub tags: Vec<String>,
    pub breaker: BreakerState,
    pub breaker_until: Option<DateTime<Utc>>,
    pub banned_until: Option<DateTime<Utc>>,
    pub timelocked_until: Option<DateTime<Utc>>,
    pub last_send_at: Option<DateTime<Utc>>,
    pub push_name: Option<String>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, phone, kind, state, label, daily_cap, min_gap_ms, \
                       time_zone, warmup_plan, warmup_started_on, jitter, tags, breaker, \
                       breaker_until, banned_until, timelocked_until, last_send_at, push_name, \
                       last_connected_at, created_at";

impl SenderNumber {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            tenant_id: row.get("tenant_id"),
            phone: PhoneNumber::from_trusted(row.get("phone")),
            kind: row.get("kind"),
            state: row.get("state"),
            label: row.get("label"),
            daily_cap: row.get("daily_cap"),
            min_gap_ms: row.get("min_gap_ms"),
            time_zone: row.get("time_zone"),
            warmup_plan: row.get("warmup_plan"),
            warmup_started_on: row.get("warmup_started_on"),
            jitter: row
                .get::<_, Option<serde_json::Value>>("jitter")
                .and_then(|v| serde_json::from_value(v).ok()),
            tags: row.get("tags"),
            breaker: row.get("breaker"),
            breaker_until: row.get("breaker_until"),
            banned_until: row.get("banned_until"),
            timelocked_until: row.get("timelocked_until"),
            last_send_at: row.get("last_send_at"),
            push_name: row.get("push_name"),
            last_connected_at: row.get("last_connected_at"),
            created_at: row.get("created_at"),
        }
    }
}

pub struct NewSenderNumber<'a> {
    pub tenant_id: Uuid,
    pub phone: &'a PhoneNumber,
    pub kind: NumberKind,
    pub state: NumberState,
    pub label: Option<&'a str>,
    pub daily_cap: i32,
    pub min_gap_ms: i32,
    pub time_zone: &'a str,
    pub warmup_plan: &'a str,
    pub jitter: Option<Jitter>,
    pub tags: &'a [String],
}

/// Inserts a number; a phone the tenant already has is a unique violation.
pub async fn insert(
    client: &impl GenericClient,
    new: &NewSenderNumber<'_>,
) -> Result<SenderNumber, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO sender_numbers (id, tenant_id, phone, kind, state, label, daily_cap,
                                         min_gap_ms, time_zone, warmup_plan, jitter, tags,
                                         warmup_started_on)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                     (now() AT TIME ZONE $9)::date)
             RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &Uuid::now_v7(),
                &new.tenant_id,
                &new.phone.as_str(),
                &new.kind,
                &new.state,
                &new.label,
                &new.daily_cap,
                &new.min_gap_ms,
                &new.time_zone,
                &new.warmup_plan,
                &new.jitter
                    .map(|j| serde_json::to_value(j).expect("jitter serialises")),
                &new.tags,
            ],
        )
        .await?;
    Ok(SenderNumber::from_row(&row))
}

/// Changes to a number's settings; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct NumberChanges {
    pub label: Option<Option<String>>,
    pub daily_cap: Option<i32>,
    pub min_gap_ms: Option<i32>,
    pub time_zone: Option<String>,
    pub warmup_plan: Option<String>,
    pub jitter: Option<Option<Jitter>>,
    pub tags: Option<Vec<String>>,
    pub state: Option<NumberState>,
}

pub async fn update(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
    changes: &NumberChanges,
) -> Result<Option<SenderNumber>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE sender_numbers SET
                 label = CASE WHEN $3 THEN $4 ELSE label END,
                 daily_cap = coalesce($5, daily_cap),
                 min_gap_ms = coalesce($6, min_gap_ms),
                 time_zone = coalesce($7, time_zone),
                 warmup_plan = coalesce($8, warmup_plan),
                 jitter = CASE WHEN $9 THEN $10 ELSE jitter END,
                 tags = coalesce($11, tags),
                 state = coalesce($12, state)
              WHERE tenant_id = $1 AND id = $2
             RETURNING {COLUMNS}"
        ))
        .await?;
    let jitter = changes
        .jitter
        .map(|j| j.map(|j| serde_json::to_value(j).expect("jitter serialises")));
    let row = client
        .query_opt(
            &stmt,
            &[
                &tenant_id,
                &id,
                &changes.label.is_some(),
                &changes.label.clone().flatten(),
                &changes.daily_cap,
                &changes.min_gap_ms,
                &changes.time_zone,
                &changes.warmup_plan,
                &jitter.is_some(),
                &jitter.flatten(),
                &changes.tags,
                &changes.state,
            ],
        )
        .await?;
    Ok(row.as_ref().map(SenderNumber::from_row))
}

/// The tenant's numbers carrying `tag` (a campaign's sender pool).
pub async fn tagged(
    client: &impl GenericClient,
    tenant_id: Uuid,
    tag: &str,
) -> Result<Vec<SenderNumber>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sender_numbers
              WHERE tenant_id = $1 AND tags @> ARRAY[$2::text] ORDER BY created_at, id"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &tag]).await?;
    Ok(rows.iter().map(SenderNumber::from_row).collect())
}

/// The network refused new contacts from the number until `until`. Returns
/// the state the number was in (`None`: not changed, e.g. disabled or banned)
/// and its tenant.
pub async fn set_timelocked(
    client: &impl GenericClient,
    id: Uuid,
    until: DateTime<Utc>,
) -> Result<Option<(NumberState, Uuid)>, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_numbers n SET state = 'timelocked', timelocked_until = $2
               FROM (SELECT id, state AS was FROM sender_numbers WHERE id = $1 FOR UPDATE) old
              WHERE n.id = old.id AND n.state IN ('active', 'timelocked')
             RETURNING old.was, n.tenant_id",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&id, &until])
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

/// The network banned the number until `until`. Returns the state it was in
/// (`None`: not changed) and its tenant.
pub async fn set_banned(
    client: &impl GenericClient,
    id: Uuid,
    until: DateTime<Utc>,
) -> Result<Option<(NumberState, Uuid)>, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_numbers n SET state = 'banned', banned_until = $2
               FROM (SELECT id, state AS was FROM sender_numbers WHERE id = $1 FOR UPDATE) old
              WHERE n.id = old.id AND n.state IN ('active', 'timelocked', 'banned')
             RETURNING old.was, n.tenant_id",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&id, &until])
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

/// Time-locks and bans that ended by `now`: the numbers are active again.
/// Returns (number, tenant, the state it left).
pub async fn lift_expired(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, Uuid, NumberState)>, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_numbers n SET state = 'active'
               FROM (SELECT id, state AS was FROM sender_numbers
                      WHERE (state = 'timelocked' AND timelocked_until <= $1)
                         OR (state = 'banned' AND banned_until <= $1)
                      -- In id order, as every locker of several numbers,
                      -- and leaving foreign-key checks through (see
                      -- `sender_usage::lock_today`).
                      ORDER BY id FOR NO KEY UPDATE) old
              WHERE n.id = old.id
             RETURNING n.id, n.tenant_id, old.was",
        )
        .await?;
    let rows = client.query(&stmt, &[&now]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Moves a number's breaker.
pub async fn set_breaker(
    client: &impl GenericClient,
    id: Uuid,
    state: BreakerState,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_numbers
                SET breaker = $2, breaker_until = $3, breaker_changed_at = $4
              WHERE id = $1",
        )
        .await?;
    client.execute(&stmt, &[&id, &state, &until, &now]).await?;
    Ok(())
}

pub async fn list(
    client: &impl GenericClient,
    tenant_id: Uuid,
) -> Result<Vec<SenderNumber>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sender_numbers WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id]).await?;
    Ok(rows.iter().map(SenderNumber::from_row).collect())
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<SenderNumber>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sender_numbers WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    let row = client.query_opt(&stmt, &[&tenant_id, &id]).await?;
    Ok(row.as_ref().map(SenderNumber::from_row))
}

/// The tenant's numbers among `ids`; ids that are not the tenant's are absent.
pub async fn get_many(
    client: &impl GenericClient,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<SenderNumber>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sender_numbers WHERE tenant_id = $1 AND id = ANY($2)"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &ids]).await?;
    Ok(rows.iter().map(SenderNumber::from_row).collect())
}

/// A number by id alone, for the processes that serve every tenant (worker).
pub async fn find(client: &impl GenericClient, id: Uuid) -> Result<Option<SenderNumber>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sender_numbers WHERE id = $1"
        ))
        .await?;
    let row = client.query_opt(&stmt, &[&id]).await?;
    Ok(row.as_ref().map(SenderNumber::from_row))
}

pub async fn set_state(
    client: &impl GenericClient,
    id: Uuid,
    state: NumberState,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("UPDATE sender_numbers SET state = $2 WHERE id = $1")
        .await?;
    client.execute(&stmt, &[&id, &state]).await?;
    Ok(())
}

/// A pairing linked the number: it may send again. Only from
/// `needs_pairing`; returns whether it changed.
pub async fn mark_linked(client: &impl GenericClient, id: Uuid) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_numbers SET state = 'active', unlink_requested_at = NULL
              WHERE id = $1 AND state = 'needs_pairing'",
        )
        .await?;
    Ok(client.execute(&stmt, &[&id]).await? == 1)
}

/// Asks for the number to be unlinked: it needs pairing from now on, and the
/// worker driving it logs its device out (see [`unlink_requested`]).
pub async fn request_unlink(client: &impl GenericClient, id: Uuid) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_numbers SET state = 'needs_pairing', unlink_requested_at = now()
              WHERE id = $1",
        )
        .await?;
    Ok(client.execute(&stmt, &[&id]).await? == 1)
}

/// Whether an unlink was asked for and not yet carried out.
pub async fn unlink_requested(client: &impl GenericClient, id: Uuid) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("SELECT unlink_requested_at IS NOT NULL FROM sender_numbers WHERE id = $1")
        .await?;
    Ok(client
        .query_opt(&stmt, &[&id])
        .await?
        .is_some_and(|row| row.get(0)))
}

/// The unlink was carried out (device logged out, session wiped).
pub async fn unlink_done(client: &impl GenericClient, id: Uuid) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("UPDATE sender_numbers SET unlink_requested_at = NULL WHERE id = $1")
        .await?;
    client.execute(&stmt, &[&id]).await?;
    Ok(())
}

/// The number's session connected, under this profile name.
pub async fn record_connected(
    client: &impl GenericClient,
    id: Uuid,
    push_name: &str,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE sender_numbers SET push_name = $2, last_connected_at = now() WHERE id = $1",
        )
        .await?;
    client.execute(&stmt, &[&id, &push_name]).await?;
    Ok(())
}

/// A page of the tenant's numbers in id order, after `after`.
pub async fn page(
    client: &impl GenericClient,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SenderNumber>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sender_numbers
              WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
              ORDER BY id LIMIT $3"
        ))
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &after, &limit]).await?;
    Ok(rows.iter().map(SenderNumber::from_row).collect())
}

/// Of `candidates` (the tenant's), the number best placed to send to
/// `recipient` now: the recipient's usual sender first, then a connected
/// one, then the least used today. Only active numbers.
pub async fn pick_sender(
    client: &impl GenericClient,
    tenant_id: Uuid,
    candidates: &[Uuid],
    recipient: &str,
) -> Result<Option<Uuid>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT n.id FROM sender_numbers n
               LEFT JOIN number_leases l
                      ON l.number_id = n.id AND l.expires_at > now() AND l.connected
               LEFT JOIN sender_usage u
                      ON u.number_id = n.id AND u.day = (now() AT TIME ZONE n.time_zone)::date
               LEFT JOIN recipient_senders rs
                      ON rs.tenant_id = n.tenant_id AND rs.recipient = $3 AND rs.number_id = n.id
              WHERE n.tenant_id = $1 AND n.id = ANY($2) AND n.state = 'active'
              ORDER BY (rs.number_id IS NOT NULL) DESC, (l.number_id IS NOT NULL) DESC,
                       coalesce(u.assigned, 0), n.id
              LIMIT 1",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &candidates, &recipient])
        .await?
        .map(|row| row.get(0)))
}
