//! The outbox relay. Events are written to `outbox` in the same transaction
//! as the change they announce; the relay then, in two steps:
//!
//! 1. moves them into the event log (`events`, what the live stream and the
//!    webhooks read), in commit order (see [`db::outbox::log_batch`]);
//! 2. publishes the types the scheduler wakes on to RabbitMQ with publisher
//!    confirms, and deletes each row only after its confirm.
//!
//! The two are separate so that a broker outage delays only the wake-ups,
//! never the event log. Replicas share the work (an advisory lock for the
//! log, `FOR UPDATE SKIP LOCKED` for publishing); a crash between confirm and
//! delete publishes a row twice, which consumers tolerate (Postgres decides).

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    db::{self, DbError, Pool},
    events::Event,
    metrics as m,
    queue::{Outgoing, Publisher, QueueError},
};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{failed} of {total} outbox rows not published; first error: {first}")]
    Publish {
        failed: usize,
        total: usize,
        first: QueueError,
    },
}

/// Writes an event into the outbox inside the caller's transaction.
pub async fn enqueue(client: &impl db::GenericClient, event: &Event) -> Result<(), DbError> {
    let payload = serde_json::to_value(event).expect("events serialise");
    db::outbox::insert(client, event.kind(), &payload).await
}

pub struct OutboxRelay {
    pool: Pool,
    publisher: Arc<Publisher>,
    exchange: String,
    batch: i64,
    poll: Duration,
    /// Poked by this process right after it commits an outbox row, so its own
    /// events go out at once instead of at the next poll.
    wake: Arc<Notify>,
}

impl OutboxRelay {
    pub fn new(
        pool: Pool,
        publisher: Arc<Publisher>,
        exchange: String,
        batch: i64,
        poll: Duration,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            publisher,
            exchange,
            batch,
            poll,
            wake,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let logged = match self.log_once().await {
                Ok(logged) => logged.rows,
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay: event log");
                    0
                }
            };
            let wait = match self.relay_once().await {
                Ok(_) if logged >= self.batch => Duration::ZERO,
                Ok(published) if published as i64 >= self.batch => Duration::ZERO,
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    self.poll
                }
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            if let Ok(client) = self.pool.get().await
                && let Ok(lag) = db::outbox::lag_seconds(&client).await
            {
                metrics::gauge!(m::OUTBOX_LAG).set(lag);
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Moves one batch of outbox rows into the event log.
    pub async fn log_once(&self) -> Result<db::outbox::Logged, RelayError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let logged = db::outbox::log_batch(&tx, self.batch).await?;
        tx.commit().await.map_err(DbError::from)?;
        metrics::counter!(m::EVENTS_LOGGED).increment(logged.events as u64);
        Ok(logged)
    }

    /// Publishes one batch of logged rows. Returns how many went out.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let rows = db::outbox::lock_batch(&tx, self.batch).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let payloads: Vec<Vec<u8>> = rows
            .iter()
            .map(|row| serde_json::to_vec(&row.payload).expect("json values serialise"))
            .collect();
        let outgoing: Vec<Outgoing<'_>> = rows
            .iter()
            .zip(&payloads)
            .map(|(row, payload)| Outgoing {
                exchange: &self.exchange,
                routing_key: &row.topic,
                payload,
            })
            .collect();
        let results = self.publisher.publish_all(&outgoing).await;
        let mut published = Vec::new();
        let mut first_error = None;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => published.push(row.id),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        db::outbox::delete(&tx, &published).await?;
        tx.commit().await.map_err(DbError::from)?;
        metrics::counter!(m::OUTBOX_PUBLISHED).increment(published.len() as u64);
        match first_error {
            None => Ok(published.len()),
            Some(first) => Err(RelayError::Publish {
                failed: rows.len() - published.len(),
                total: rows.len(),
                first,
            }),
        }
    }
}
