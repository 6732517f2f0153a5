//! Projections of when a campaign's messages would go out, from the numbers'
//! current state and the pacing policy (`shared::policy::projection`): the
//! plan of a campaign, and the plan of a dry run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_shared::{
    Config,
    db::{self, DbError, GenericClient, sender_numbers::SenderNumber},
    domain::NumberState,
    policy::{
        breaker::BreakerState,
        projection::{NumberCapacity, Projection, ProjectionInput, TenantBudget, project},
        zones::{SendWindow, ZoneKey, parse_zone},
    },
};
use uuid::Uuid;

/// Typing time for a typical text: it overlaps the gap, but a gap shorter
/// than typing stretches to it.
fn typing_estimate(config: &Config, chars: usize) -> Duration {
    let per_char = Duration::from_millis(config.pacing.typing_ms_per_char) * chars as u32;
    per_char.clamp(
        Duration::from_millis(config.pacing.typing_min_ms),
        Duration::from_millis(config.pacing.typing_max_ms.max(config.pacing.typing_min_ms)),
    )
}

/// What one number can do from now on, as the projection models it; `None`
/// for numbers that cannot send at all (disabled, not paired).
pub fn capacity(
    config: &Config,
    number: &SenderNumber,
    used_today: i64,
    typical_chars: usize,
    now: DateTime<Utc>,
) -> Option<NumberCapacity> {
    let available_from = match number.state {
        NumberState::Active => now,
        NumberState::Timelocked => number.timelocked_until.unwrap_or(now),
        NumberState::Banned => number.banned_until.unwrap_or(now),
        NumberState::Disabled | NumberState::NeedsPairing => return None,
    };
    let available_from = match (number.breaker, number.breaker_until) {
        (BreakerState::Open, Some(until)) => available_from.max(until),
        _ => available_from,
    };
    let jitter = number.jitter.unwrap_or(config.pacing.default_jitter());
    let mut cycle = Duration::from_millis(number.min_gap_ms.max(0) as u64) + jitter.mean();
    if number.breaker != BreakerState::Closed {
        cycle = cycle.mul_f64(config.breaker.slow_factor.max(1.0));
    }
    let cycle = cycle
        .max(typing_estimate(config, typical_chars))
        .max(Duration::from_millis(50));
    let plan = config
        .warmup
        .plans
        .get(&number.warmup_plan)
        .or_else(|| config.warmup.plans.get(&config.warmup.default_plan))
        .copied()
        .expect("the default plan exists");
    Some(NumberCapacity {
        number_id: number.id,
        home: parse_zone(&number.time_zone).unwrap_or(chrono_tz::Tz::UTC),
        per_hour: 3600.0 / cycle.as_secs_f64(),
        plan,
        warmup_started_on: number.warmup_started_on,
        daily_cap: i64::from(number.daily_cap),
        used_today,
        available_from,
    })
}

/// Projects `backlog` (messages per zone key) over `numbers` for a tenant.
#[allow(clippy::too_many_arguments)]
pub async fn projection(
    client: &impl GenericClient,
    config: &Config,
    tenant_id: Uuid,
    numbers: &[SenderNumber],
    backlog: Vec<(ZoneKey, i64)>,
    window: SendWindow,
    end_by: Option<DateTime<Utc>>,
    typical_chars: usize,
) -> Result<Projection, DbError> {
    let now = Utc::now();
    let mut capacities = Vec::new();
    for number in numbers {
        let home = parse_zone(&number.time_zone).unwrap_or(chrono_tz::Tz::UTC);
        let today = now.with_timezone(&home).date_naive();
        let used = i64::from(db::sender_usage::used_on(client, number.id, today).await?);
        if let Some(capacity) = capacity(config, number, used, typical_chars, now) {
            capacities.push(capacity);
        }
    }
    let tenant_day = db::sender_usage::peek_tenant_today(client, tenant_id, now).await?;
    let home = db::tenants::time_zone(client, tenant_id).await?;
    Ok(project(&ProjectionInput {
        now,
        window,
        end_by,
        numbers: capacities,
        tenant: TenantBudget {
            cap: tenant_day.cap.map(i64::from),
            home: parse_zone(&home).unwrap_or(chrono_tz::Tz::UTC),
            used_today: i64::from(tenant_day.used),
        },
        backlog,
        step: chrono::Duration::minutes(15),
        horizon: chrono::Duration::days(60),
    }))
}
