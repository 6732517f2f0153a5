//! Reads the scheduler makes once per pass, over all live numbers at once (so
//! a pass costs a few statements plus work per number that has room, not a
//! statement per number).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, GenericClient, Transaction};
use crate::{
    domain::NumberState,
    policy::{breaker::BreakerState, jitter::Jitter},
};

/// Settings for the rest of a number's planning transaction (one round trip,
/// pipelined with whatever follows).
///
/// **Generic plans**: its statements are planned once per connection
/// (Postgres's generic plans) instead of at every execution for their
/// parameters. Postgres keeps re-planning a statement while a plan for the
/// parameters at hand looks cheaper than the generic one, and for the
/// planner's statements it always does (a generic plan cannot know how many
/// rows `LIMIT $n` or `= ANY($ids)` take): planning the pick took as long as
/// running it, 0.65 ms of every 1.35 ms (docs/BENCHMARKS.md, "Scheduler tick
/// and dispatch"). Their generic plans read the same indexes
/// (`tests/tests/statements.rs` checks the pages they read either way).
///
/// **Commit without waiting for the WAL flush** (`synchronous_commit = off`):
/// a crash of Postgres may lose the last fraction of a second of planning
/// commits, never part of one, and losing one is what a rollback does:
/// its messages are `queued` again, unassigned, with the budgets it counted.
/// Jobs already published for them find nothing to claim (a job claims only a
/// message `scheduled` on its number; DESIGN.md, "Scheduling"), and the
/// messages are planned again. Whatever later depends on a planning commit
/// durably (a worker's claim, a pause) commits synchronously, which flushes
/// the WAL up to and including it. A full pass no longer waits for a thousand
/// flushes (docs/BENCHMARKS.md, "Planning commits without the flush").
pub async fn for_planning(client: &impl GenericClient) -> Result<(), DbError> {
    client
        .batch_execute(
            "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL synchronous_commit = off",
        )
        .await?;
    Ok(())
}

/// A number a worker drives with its session connected, as the scheduler
/// plans it.
#[derive(Debug, Clone)]
pub struct LiveNumber {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub state: NumberState,
    pub daily_cap: i32,
    pub min_gap_ms: i32,
    pub jitter: Option<Jitter>,
    pub warmup_plan: String,
    pub tags: Vec<String>,
    pub breaker: BreakerState,
    /// Days since warm-up started, in the number's zone.
    pub day_index: i64,
    /// Given to the number today (its zone).
    pub used: i32,
    /// Jobs not finished yet (`scheduled`, `sending`).
    pub in_flight: i64,
    pub tenant_cap: Option<i32>,
    pub tenant_used: i32,
}

/// Usable numbers (active, or time-locked: they may still write to existing
/// contacts) with a live lease and a connected session, not stopped by their
/// breaker.
///
/// Runs in a transaction of its own (`tx`), with index scans only
/// ([`super::index_scans_only`]), so that each number's jobs in flight are
/// counted by an index scan of `messages_inflight_idx`, which marks the
/// entries of the messages it finds no longer in flight as dead. Left to
/// choose, Postgres counts them with a bitmap scan once the index holds many
/// more entries than jobs are in flight (every sent message leaves one until
/// vacuum), or a sequential scan of a small table: every pass would visit
/// the row of every message the numbers sent since the last vacuum.
pub async fn live_numbers(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<LiveNumber>, DbError> {
    super::index_scans_only(tx).await?;
    let stmt = tx
        .prepare_cached(
            "SELECT n.id, n.tenant_id, n.state, n.daily_cap, n.min_gap_ms, n.jitter, n.warmup_plan,
                    n.tags, n.breaker,
                    ($1::timestamptz AT TIME ZONE n.time_zone)::date - n.warmup_started_on,
                    coalesce(u.assigned, 0),
                    (SELECT count(*) FROM messages m
                      WHERE m.sender_number_id = n.id AND m.state IN ('scheduled', 'sending')),
                    t.daily_cap, coalesce(tu.assigned, 0)
               FROM sender_numbers n
               JOIN number_leases l
                 ON l.number_id = n.id AND l.expires_at > now() AND l.connected
               JOIN tenants t ON t.id = n.tenant_id
               LEFT JOIN sender_usage u
                 ON u.number_id = n.id AND u.day = ($1::timestamptz AT TIME ZONE n.time_zone)::date
               LEFT JOIN tenant_usage tu
                 ON tu.tenant_id = t.id AND tu.day = ($1::timestamptz AT TIME ZONE t.time_zone)::date
              WHERE n.state IN ('active', 'timelocked') AND n.breaker <> 'open'",
        )
        .await?;
    let rows = tx.query(&stmt, &[&now]).await?;
    Ok(rows
        .iter()
        .map(|row| LiveNumber {
            id: row.get(0),
            tenant_id: row.get(1),
            state: row.get(2),
            daily_cap: row.get(3),
            min_gap_ms: row.get(4),
            jitter: row
                .get::<_, Option<serde_json::Value>>(5)
                .and_then(|v| serde_json::from_value(v).ok()),
            warmup_plan: row.get(6),
            tags: row.get(7),
            breaker: row.get(8),
            day_index: i64::from(row.get::<_, i32>(9)),
            used: row.get(10),
            in_flight: row.get(11),
            tenant_cap: row.get(12),
            tenant_used: row.get(13),
        })
        .collect())
}

/// A number whose breaker may need judging.
#[derive(Debug, Clone)]
pub struct BreakerRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub breaker: BreakerState,
    pub until: Option<DateTime<Utc>>,
    pub changed_at: DateTime<Utc>,
}

/// Numbers being driven, and any whose breaker is not closed.
pub async fn breaker_candidates(client: &impl GenericClient) -> Result<Vec<BreakerRow>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT n.id, n.tenant_id, n.breaker, n.breaker_until, n.breaker_changed_at
               FROM sender_numbers n
              WHERE n.breaker <> 'closed'
                 OR EXISTS (SELECT 1 FROM number_leases l
                             WHERE l.number_id = n.id AND l.expires_at > now())",
        )
        .await?;
    let rows = client.query(&stmt, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| BreakerRow {
            id: row.get(0),
            tenant_id: row.get(1),
            breaker: row.get(2),
            until: row.get(3),
            changed_at: row.get(4),
        })
        .collect())
}
