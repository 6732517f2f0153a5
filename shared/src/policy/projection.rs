//! When would a campaign's remaining messages go out? A step-by-step
//! simulation of the policy: each step, the recipients whose send window is
//! open can be given to numbers, each number up to its pace and its daily
//! allowance (warm-up plan, number cap, tenant cap, counted per day of the
//! number's and the tenant's zones). Stickiness and receipts are not modelled.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use uuid::Uuid;

use super::{
    allowance::{AllowanceInputs, daily_allowance},
    warmup::WarmupPlan,
    zones::{SendWindow, ZoneKey, deciding_zones, is_open},
};

/// What one number can do.
#[derive(Debug, Clone)]
pub struct NumberCapacity {
    pub number_id: Uuid,
    pub home: Tz,
    /// Sends per hour at the number's pace (gap, mean jitter, mean typing).
    pub per_hour: f64,
    pub plan: WarmupPlan,
    pub warmup_started_on: NaiveDate,
    pub daily_cap: i64,
    /// Given to the number today (its zone) before the projection starts.
    pub used_today: i64,
    /// Nothing before this (ban, time-lock, stopped breaker).
    pub available_from: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TenantBudget {
    pub cap: Option<i64>,
    pub home: Tz,
    pub used_today: i64,
}

#[derive(Debug, Clone)]
pub struct ProjectionInput {
    pub now: DateTime<Utc>,
    pub window: SendWindow,
    pub end_by: Option<DateTime<Utc>>,
    pub numbers: Vec<NumberCapacity>,
    pub tenant: TenantBudget,
    /// Messages left, by recipient zone key.
    pub backlog: Vec<(ZoneKey, i64)>,
    pub step: chrono::Duration,
    pub horizon: chrono::Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayCount {
    pub date: NaiveDate,
    pub messages: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NumberProjection {
    pub number_id: Uuid,
    /// Per day of the number's own zone.
    pub days: Vec<DayCount>,
    pub messages: i64,
    pub last_send_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Projection {
    pub remaining: i64,
    /// When the last message would go out; `None` if not within the horizon.
    pub completes_at: Option<DateTime<Utc>>,
    /// Messages not placed within the horizon.
    pub unplaced: i64,
    /// Messages that would still be waiting at `end_by` (then cancelled).
    pub cut_by_end_by: i64,
    pub numbers: Vec<NumberProjection>,
    /// Per UTC day.
    pub days: Vec<DayCount>,
}

pub fn project(input: &ProjectionInput) -> Projection {
    let remaining: i64 = input.backlog.iter().map(|(_, n)| *n).sum();
    let mut backlog: Vec<(ZoneKey, i64)> = input
        .backlog
        .iter()
        .filter(|(_, n)| *n > 0)
        .cloned()
        .collect();
    let step_hours = input.step.num_seconds() as f64 / 3600.0;
    let today = |zone: Tz, at: DateTime<Utc>| at.with_timezone(&zone).date_naive();

    // Running state per number: fractional credit, per-day usage.
    let mut credit = vec![0.0f64; input.numbers.len()];
    let mut used: Vec<BTreeMap<NaiveDate, i64>> = input
        .numbers
        .iter()
        .map(|n| BTreeMap::from([(today(n.home, input.now), n.used_today)]))
        .collect();
    let mut tenant_used: BTreeMap<NaiveDate, i64> =
        BTreeMap::from([(today(input.tenant.home, input.now), input.tenant.used_today)]);
    let mut placed: Vec<BTreeMap<NaiveDate, i64>> = vec![BTreeMap::new(); input.numbers.len()];
    let mut last_send: Vec<Option<DateTime<Utc>>> = vec![None; input.numbers.len()];
    let mut per_day: BTreeMap<NaiveDate, i64> = BTreeMap::new();
    let mut completes_at = None;
    let mut cut_by_end_by = 0;
    let limit = input.now + input.horizon;

    let mut t = input.now;
    while t < limit && backlog.iter().any(|(_, n)| *n > 0) {
        if input.end_by.is_some_and(|end| t >= end) {
            cut_by_end_by = backlog.iter().map(|(_, n)| *n).sum();
            break;
        }
        let open: Vec<usize> = backlog
            .iter()
            .enumerate()
            .filter(|(_, (key, n))| {
                *n > 0 && is_open(&deciding_zones(key, &input.window, t), &input.window, t)
            })
            .map(|(i, _)| i)
            .collect();
        if !open.is_empty() {
            let tenant_day = today(input.tenant.home, t);
            for (i, number) in input.numbers.iter().enumerate() {
                if t < number.available_from {
                    continue;
                }
                credit[i] =
                    (credit[i] + number.per_hour * step_hours).min(number.per_hour.max(1.0));
                let day = today(number.home, t);
                let allowance = daily_allowance(&AllowanceInputs {
                    plan_volume: number
                        .plan
                        .volume((day - number.warmup_started_on).num_days()),
                    number_cap: number.daily_cap,
                    number_used: *used[i].get(&day).unwrap_or(&0),
                    tenant_cap: input.tenant.cap,
                    tenant_used: *tenant_used.get(&tenant_day).unwrap_or(&0),
                });
                let mut can = (credit[i].floor() as i64).min(allowance);
                for &g in &open {
                    if can == 0 {
                        break;
                    }
                    let take = can.min(backlog[g].1);
                    backlog[g].1 -= take;
                    can -= take;
                    credit[i] -= take as f64;
                    *used[i].entry(day).or_default() += take;
                    *tenant_used.entry(tenant_day).or_default() += take;
                    *placed[i].entry(day).or_default() += take;
                    *per_day.entry(t.date_naive()).or_default() += take;
                    if take > 0 {
                        last_send[i] = Some(t + input.step);
                        completes_at = Some(t + input.step);
                    }
                }
            }
        }
        t += input.step;
    }
    let left: i64 = backlog.iter().map(|(_, n)| *n).sum();
    let unplaced = left - cut_by_end_by;
    Projection {
        remaining,
        completes_at: if left == 0 { completes_at } else { None },
        unplaced,
        cut_by_end_by,
        numbers: input
            .numbers
            .iter()
            .enumerate()
            .map(|(i, n)| NumberProjection {
                number_id: n.number_id,
                messages: placed[i].values().sum(),
                days: placed[i]
                    .iter()
                    .map(|(date, messages)| DayCount {
                        date: *date,
                        messages: *messages,
                    })
                    .collect(),
                last_send_at: last_send[i],
            })
            .collect(),
        days: per_day
            .into_iter()
            .map(|(date, messages)| DayCount { date, messages })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn number(id: u128, per_hour: f64, cap: i64) -> NumberCapacity {
        NumberCapacity {
            number_id: Uuid::from_u128(id),
            home: Tz::UTC,
            per_hour,
            plan: WarmupPlan {
                first_day: 1_000_000,
                growth: 1.0,
                ceiling: 1_000_000,
            },
            warmup_started_on: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            daily_cap: cap,
            used_today: 0,
            available_from: DateTime::<Utc>::MIN_UTC,
        }
    }

    fn input(numbers: Vec<NumberCapacity>, backlog: i64) -> ProjectionInput {
        ProjectionInput {
            now: Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap(),
            window: SendWindow::default(),
            end_by: None,
            numbers,
            tenant: TenantBudget {
                cap: None,
                home: Tz::UTC,
                used_today: 0,
            },
            backlog: vec![(ZoneKey::explicit(Tz::UTC), backlog)],
            step: chrono::Duration::minutes(15),
            horizon: chrono::Duration::days(30),
        }
    }

    #[test]
    fn caps_spread_a_campaign_over_days() {
        // 100 a day per number, 2 numbers, 450 messages: days 1-2 full, day 3 half.
        let p = project(&input(
            vec![number(1, 60.0, 100), number(2, 60.0, 100)],
            450,
        ));
        assert_eq!(p.remaining, 450);
        assert_eq!(p.unplaced, 0);
        let days: Vec<i64> = p.days.iter().map(|d| d.messages).collect();
        assert_eq!(days, [200, 200, 50]);
        assert_eq!(p.numbers[0].messages + p.numbers[1].messages, 450);
        let done = p.completes_at.unwrap();
        assert_eq!(
            done.date_naive(),
            NaiveDate::from_ymd_opt(2026, 6, 3).unwrap()
        );
    }

    #[test]
    fn pace_and_window_bound_a_day() {
        // 30 an hour for the 11 open hours = 330 a day at most.
        let p = project(&input(vec![number(1, 30.0, 10_000)], 1000));
        assert_eq!(p.days[0].messages, 330);
        assert!(p.completes_at.is_some());
    }

    #[test]
    fn end_by_cuts_what_cannot_be_sent_in_time() {
        let mut i = input(vec![number(1, 10.0, 10_000)], 500);
        i.end_by = Some(i.now + chrono::Duration::hours(5));
        let p = project(&i);
        assert_eq!(p.cut_by_end_by, 450);
        assert_eq!(p.completes_at, None);
    }

    #[test]
    fn the_tenant_cap_is_shared_by_its_numbers() {
        let mut i = input(vec![number(1, 60.0, 500), number(2, 60.0, 500)], 300);
        i.tenant.cap = Some(120);
        let p = project(&i);
        assert_eq!(
            p.days.iter().map(|d| d.messages).collect::<Vec<_>>(),
            [120, 120, 60]
        );
    }
}
