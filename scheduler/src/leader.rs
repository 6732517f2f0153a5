//! Leadership among scheduler replicas: one acts, the others stand by and take
//! over within `leader_ttl_ms` of the leader's last renewal.
//!
//! Correctness does not depend on it (planning a number happens under a row
//! lock, so two leaders could not exceed a cap); it keeps the work from being
//! done twice and the logs readable.

use std::time::{Duration, Instant};

use herald_shared::{
    config::SchedulerConfig,
    db::{self, Pool},
};

pub struct Leadership {
    pool: Pool,
    owner: String,
    ttl: Duration,
    renew: Duration,
    /// Until when this process may act, on the monotonic clock.
    valid_until: Option<Instant>,
    last_attempt: Option<Instant>,
    leading: bool,
}

impl Leadership {
    pub fn new(pool: Pool, owner: String, config: &SchedulerConfig) -> Self {
        Self {
            pool,
            owner,
            ttl: config.leader_ttl(),
            renew: config.leader_renew(),
            valid_until: None,
            last_attempt: None,
            leading: false,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether this process leads now, renewing (or trying to take) the lease
    /// when due.
    pub async fn check(&mut self) -> bool {
        let due = self
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.renew);
        if due {
            let requested = Instant::now();
            self.last_attempt = Some(requested);
            let claimed = match self.pool.get().await {
                Ok(client) => db::scheduler_leader::claim(&client, &self.owner, self.ttl).await,
                Err(err) => Err(err.into()),
            };
            match claimed {
                Ok(Some(epoch)) => {
                    // A margin of one renewal period under the TTL.
                    self.valid_until = Some(requested + self.ttl.saturating_sub(self.renew));
                    if !self.leading {
                        tracing::info!(owner = %self.owner, epoch, "this scheduler now leads");
                    }
                    self.leading = true;
                }
                Ok(None) => {
                    if self.leading {
                        tracing::warn!(owner = %self.owner, "leadership lost");
                    }
                    self.leading = false;
                    self.valid_until = None;
                }
                Err(err) => tracing::warn!(error = %err, "leadership renewal failed"),
            }
        }
        self.leading && self.valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// Steps down so a standby takes over at once.
    pub async fn resign(&self) {
        if let Ok(client) = self.pool.get().await {
            let _ = db::scheduler_leader::resign(&client, &self.owner).await;
        }
    }
}
