//! Reads behind the fleet gauges (`herald_scheduler::fleet`): every number's
//! standing, messages not finished, and what tells a stalled campaign. Each
//! is a few index lookups, cheap enough to run every few seconds at any
//! table size.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, GenericClient};
use crate::{domain::NumberState, policy::breaker::BreakerState};

/// One number as the dashboards show it.
#[derive(Debug, Clone)]
pub struct NumberStanding {
    pub id: Uuid,
    pub state: NumberState,
    /// A worker holds its lease with the session connected.
    pub connected: bool,
    pub warmup_plan: String,
    /// Days since warm-up started, in the number's zone.
    pub day_index: i64,
    pub daily_cap: i32,
    /// Given to the number today (its zone).
    pub used: i32,
    pub tenant_cap: Option<i32>,
    pub tenant_used: i32,
    pub breaker: BreakerState,
}

/// Every number of every tenant.
pub async fn numbers(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<NumberStanding>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT n.id, n.state,
                    EXISTS (SELECT 1 FROM number_leases l
                             WHERE l.number_id = n.id AND l.expires_at > now() AND l.connected),
                    n.warmup_plan,
                    ($1::timestamptz AT TIME ZONE n.time_zone)::date - n.warmup_started_on,
                    n.daily_cap, coalesce(u.assigned, 0), t.daily_cap, coalesce(tu.assigned, 0),
                    n.breaker
               FROM sender_numbers n
               JOIN tenants t ON t.id = n.tenant_id
               LEFT JOIN sender_usage u
                 ON u.number_id = n.id AND u.day = ($1::timestamptz AT TIME ZONE n.time_zone)::date
               LEFT JOIN tenant_usage tu
                 ON tu.tenant_id = t.id AND tu.day = ($1::timestamptz AT TIME ZONE t.time_zone)::date
              ORDER BY n.id",
        )
        .await?;
    let rows = client.query(&stmt, &[&now]).await?;
    Ok(rows
        .iter()
        .map(|row| NumberStanding {
            id: row.get(0),
            state: row.get(1),
            connected: row.get(2),
            warmup_plan: row.get(3),
            day_index: i64::from(row.get::<_, i32>(4)),
            daily_cap: row.get(5),
            used: row.get(6),
            tenant_cap: row.get(7),
            tenant_used: row.get(8),
            breaker: row.get(9),
        })
        .collect())
}

/// Messages not finished, by where they wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Ready for the scheduler.
    pub queued: i64,
    /// Queued, waiting for a retry's time.
    pub retry_wait: i64,
    /// Given to a number, its job published.
    pub scheduled: i64,
    /// Claimed by a worker, the call under way.
    pub sending: i64,
}

/// Counts over the partial indexes of unfinished messages only, so their cost
/// follows the backlog, not the history.
pub async fn waiting(client: &impl GenericClient) -> Result<Waiting, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT (SELECT count(*) FROM messages WHERE state = 'queued' AND not_before IS NULL),
                    (SELECT count(*) FROM messages
                      WHERE state = 'queued' AND not_before IS NOT NULL),
                    (SELECT count(*) FROM messages WHERE state = 'scheduled'),
                    (SELECT count(*) FROM messages WHERE state = 'sending')",
        )
        .await?;
    let row = client.query_one(&stmt, &[]).await?;
    Ok(Waiting {
        queued: row.get(0),
        retry_wait: row.get(1),
        scheduled: row.get(2),
        sending: row.get(3),
    })
}

/// What tells whether a running campaign moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignActivity {
    /// The latest claim of any of its messages.
    pub last_send: Option<DateTime<Utc>>,
    /// It has messages ready for a recipient zone among those given.
    pub ready: bool,
}

/// `open_zones`: the campaign's recipient zones whose send window is open.
pub async fn campaign_activity(
    client: &impl GenericClient,
    campaign_id: Uuid,
    open_zones: &[String],
) -> Result<CampaignActivity, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT (SELECT max(sending_at) FROM messages
                      WHERE campaign_id = $1 AND sending_at IS NOT NULL),
                    EXISTS (SELECT 1 FROM messages
                             WHERE campaign_id = $1 AND state = 'queued' AND not_before IS NULL
                               AND recipient_zone = ANY($2))",
        )
        .await?;
    let row = client
        .query_one(&stmt, &[&campaign_id, &open_zones])
        .await?;
    Ok(CampaignActivity {
        last_send: row.get(0),
        ready: row.get(1),
    })
}
