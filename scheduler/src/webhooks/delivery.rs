//! Consumes webhook attempts from `P.webhooks`, at most
//! `webhooks.concurrency` at a time per process.

use std::{sync::Arc, time::Duration};

use herald_shared::{
    db::{
        self, DbError, Pool,
        webhooks::{AttemptOutcome, Claimed, Next},
    },
    metrics as m,
    queue::{self, Broker, QueueError, Settle, Topology},
    task::WebhookTask,
    webhooks::{AttemptQueue, decode_secret},
};
use lapin::message::Delivery;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{WebhookError, http::Sender};

/// Extra time an attempt holds its delivery beyond the request timeout.
const HOLD_MARGIN: Duration = Duration::from_secs(30);

pub struct Deliverer {
    pub pool: Pool,
    pub broker: Arc<Broker>,
    pub topology: Topology,
    pub attempts: Arc<AttemptQueue>,
    pub sender: Sender,
    /// Waits before the second, third, … attempts.
    pub delays: Vec<Duration>,
    pub timeout: Duration,
    pub concurrency: u16,
}

impl Deliverer {
    /// Consumes until `shutdown`, then lets attempts under way finish.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        let mut running = JoinSet::new();
        while !shutdown.is_cancelled() {
            match self.consume(&mut running, &shutdown).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(err) => tracing::warn!(error = %err, "webhook consumer; reconnecting"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(self.timeout + Duration::from_secs(1), drain)
            .await
            .is_err()
        {
            tracing::warn!("webhook attempts still running at shutdown; the sweep will retry them");
        }
    }

    async fn consume(
        self: &Arc<Self>,
        running: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Result<(), QueueError> {
        let (topology, delays) = (&self.topology, &self.delays);
        // At most `concurrency` unacknowledged jobs: the attempts in flight.
        let mut jobs = self
            .broker
            .subscribe(
                &topology.webhook_queue(),
                "herald-webhooks",
                self.concurrency,
                |channel| async move {
                    topology.declare_common(&channel).await?;
                    topology.declare_webhook_queues(&channel, delays).await
                },
            )
            .await?;
        let ended = loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                next = jobs.next() => next,
                Some(_) = running.join_next(), if !running.is_empty() => continue,
            };
            let delivery = match next {
                None => break Ok(()),
                Some(Err(err)) => break Err(err),
                Some(Ok(delivery)) => delivery,
            };
            let this = self.clone();
            running.spawn(async move { this.handle(delivery).await });
        };
        jobs.close().await;
        ended
    }

    async fn handle(&self, delivery: Delivery) {
        let task = match serde_json::from_slice::<WebhookTask>(&delivery.data) {
            Ok(task) => task,
            Err(err) => {
                tracing::error!(error = %err, "unreadable webhook job; dead-lettered");
                queue::settle(&delivery, Settle::Reject).await;
                return;
            }
        };
        let WebhookTask::Deliver {
            delivery_id,
            attempt,
        } = task;
        match self.attempt(delivery_id, attempt).await {
            Ok(()) => {
                queue::settle(&delivery, Settle::Ack).await;
            }
            Err(err) => {
                // Not acknowledged: the broker redelivers it (up to the
                // delivery limit), and the sweep covers the rest.
                tracing::warn!(delivery_id, attempt, error = %err, "webhook attempt could not be recorded");
                queue::settle(&delivery, Settle::Requeue).await;
            }
        }
    }

    /// Makes attempt `attempt` of the delivery's current run, if it is due.
    pub async fn attempt(&self, delivery_id: i64, attempt: i32) -> Result<(), WebhookError> {
        let hold = self.timeout + HOLD_MARGIN;
        let claimed = {
            let client = self.pool.get().await.map_err(DbError::from)?;
            db::webhooks::claim(&client, delivery_id, attempt, hold).await?
        };
        let Some(claimed) = claimed else {
            // Stale or duplicated job: another one did (or will do) this.
            return Ok(());
        };
        let outcome = self.call(&claimed).await;
        let next = self.next_step(&outcome, claimed.enabled, attempt);
        let label = match (&next, outcome.status) {
            (Next::Delivered, _) => "delivered",
            (_, None)
                if outcome
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("refused")) =>
            {
                "refused"
            }
            (Next::RetryAfter(_), _) => "retry",
            (Next::Failed, _) => "failed",
        };
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => label).increment(1);
        metrics::histogram!(m::WEBHOOK_DURATION).record(f64::from(outcome.duration_ms) / 1000.0);
        {
            let mut client = self.pool.get().await.map_err(DbError::from)?;
            let tx = client.transaction().await.map_err(DbError::from)?;
            db::webhooks::record_attempt(&tx, delivery_id, claimed.attempt, &outcome, next).await?;
            if outcome.status == Some(410)
                && db::webhooks::disable(&tx, claimed.endpoint_id, "the endpoint answered 410 Gone")
                    .await?
            {
                tracing::warn!(endpoint_id = %claimed.endpoint_id, "webhook endpoint answered 410: disabled");
            }
            tx.commit().await.map_err(DbError::from)?;
        }
        if let Next::RetryAfter(wait) = next {
            self.attempts
                .queue(&[(delivery_id, attempt + 1)], wait)
                .await;
        }
        Ok(())
    }

    async fn call(&self, claimed: &Claimed) -> AttemptOutcome {
        if !claimed.enabled {
            return AttemptOutcome {
                started_at: chrono::Utc::now(),
                duration_ms: 0,
                status: None,
                error: Some("not sent: the endpoint is disabled".into()),
                response: None,
            };
        }
        let keys: Result<Vec<Vec<u8>>, String> = std::iter::once(&claimed.secret)
            .chain(claimed.previous_secret.as_ref())
            .map(|secret| decode_secret(secret))
            .collect();
        let keys = match keys {
            Ok(keys) => keys,
            Err(err) => {
                return AttemptOutcome {
                    started_at: chrono::Utc::now(),
                    duration_ms: 0,
                    status: None,
                    error: Some(format!("not sent: unusable secret ({err})")),
                    response: None,
                };
            }
        };
        let body = serde_json::to_vec(&claimed.payload).expect("json values serialise");
        self.sender
            .send(&claimed.url, &claimed.event_id.to_string(), &keys, body)
            .await
    }

    /// What follows an attempt of the current run numbered `attempt`.
    fn next_step(&self, outcome: &AttemptOutcome, enabled: bool, attempt: i32) -> Next {
        match outcome.status {
            Some(status) if (200..300).contains(&status) => return Next::Delivered,
            Some(410) => return Next::Failed,
            _ => {}
        }
        if !enabled {
            return Next::Failed;
        }
        match self.delays.get(attempt.max(1) as usize - 1) {
            Some(wait) => Next::RetryAfter(*wait),
            None => Next::Failed,
        }
    }
}
