//! Judging the circuit breakers of the numbers being driven, every
//! `breaker.interval_ms`: a rising share of failed or undelivered sends slows
//! a number, then stops it for a while (see `shared::policy::breaker`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError},
    events::{BreakerChange, Event, EventBody},
    outbox,
    policy::breaker::{BreakerState, Sample, judge},
};

use crate::planner::{PlanError, Planner};

fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Planner {
    pub(crate) async fn maybe_judge_breakers(&self, now: DateTime<Utc>) -> Result<(), PlanError> {
        {
            let mut last = self.last_breaker_pass.lock().await;
            let interval = Duration::from_millis(self.breaker.interval_ms);
            if last.is_some_and(|at| at.elapsed() < interval) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        self.judge_breakers(now).await
    }

    /// Judges every candidate number now.
    pub async fn judge_breakers(&self, now: DateTime<Utc>) -> Result<(), PlanError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let matured_before =
            now - chrono::Duration::milliseconds(self.breaker.undelivered_after_ms as i64);
        for row in db::planning::breaker_candidates(&client).await? {
            let (next, sample) = match row.breaker {
                BreakerState::Open if row.until.is_none_or(|until| until <= now) => {
                    // Its rest is over: probation at the slow pace.
                    (BreakerState::Slowed, Sample::default())
                }
                BreakerState::Open => (BreakerState::Open, Sample::default()),
                current => {
                    let sample = db::messages::recent_sends(
                        &client,
                        row.id,
                        row.changed_at,
                        self.breaker.window,
                        matured_before,
                    )
                    .await?;
                    (judge(&self.breaker, current, &sample), sample)
                }
            };
            if next == row.breaker {
                continue;
            }
            let until = (next == BreakerState::Open)
                .then(|| now + chrono::Duration::milliseconds(self.breaker.stop_for_ms as i64));
            let change = BreakerChange {
                number_id: row.id,
                breaker: next,
                until,
                failure_ratio: ratio(sample.failed, sample.finished),
                undelivered_ratio: ratio(sample.undelivered, sample.matured),
            };
            tracing::warn!(number_id = %row.id, from = row.breaker.as_str(), to = next.as_str(), ?sample, "circuit breaker moved");
            let tx = client.transaction().await.map_err(DbError::from)?;
            db::sender_numbers::set_breaker(&tx, row.id, next, until, now).await?;
            outbox::enqueue(
                &tx,
                &Event::new(row.tenant_id, EventBody::NumberThrottled(change)),
            )
            .await?;
            tx.commit().await.map_err(DbError::from)?;
        }
        Ok(())
    }
}
