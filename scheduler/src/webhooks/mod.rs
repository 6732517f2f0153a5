//! Webhooks: every event in the log goes, signed, to each of its tenant's
//! endpoints that wants it, until the endpoint says 2xx or the retry
//! schedule runs out.
//!
//! - [`fan_out`]: tails the event log (woken by `NOTIFY`, polling as a
//!   fallback) and creates one delivery per event and endpoint, then queues
//!   each delivery's first attempt. One process fans out at a time (it
//!   holds the log position's row lock); a crash between commit and publish
//!   is caught by the sweep.
//! - [`delivery`]: consumes attempts from `P.webhooks`, makes the HTTP
//!   request, logs it, and queues the next attempt in the waiting queue of
//!   its back-off (TTL + dead-letter back into `P.webhooks`).
//! - The sweep (with the fan-out): deliveries whose job was lost are queued
//!   again; events past retention are deleted.
//!
//! Postgres decides, RabbitMQ only wakes: a job names a delivery and an
//! attempt, and only the job for the delivery's next attempt does anything.

pub mod delivery;
pub mod http;

use std::{sync::Arc, time::Duration};

use herald_shared::{
    config::{EventsConfig, WebhooksConfig},
    db::{self, DbError, Pool},
    queue::QueueError,
    webhooks::AttemptQueue,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Events read per fan-out transaction.
const FAN_OUT_BATCH: i64 = 500;
/// How often lost jobs are looked for and old events deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Events deleted per statement at most (retention), and statements per sweep.
const EXPIRE_BATCH: i64 = 10_000;
const EXPIRE_ROUNDS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Tails the event log into deliveries until `shutdown`; sweeps now and then.
pub async fn fan_out(
    pool: Pool,
    attempts: Arc<AttemptQueue>,
    events: EventsConfig,
    webhooks: WebhooksConfig,
    mut feed: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        let more = match fan_out_once(&pool, &attempts).await {
            Ok(events) => events >= FAN_OUT_BATCH,
            Err(err) => {
                tracing::warn!(error = %err, "webhook fan-out");
                false
            }
        };
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = tokio::time::Instant::now();
            if let Err(err) = sweep(&pool, &attempts, &events, &webhooks).await {
                tracing::warn!(error = %err, "webhook sweep");
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = feed.changed() => {}
            _ = tokio::time::sleep(events.poll()) => {}
        }
    }
}

/// One batch of the log into deliveries. Returns how many events it read.
pub async fn fan_out_once(pool: &Pool, attempts: &AttemptQueue) -> Result<i64, WebhookError> {
    let mut client = pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let Some(fanned) = db::webhooks::fan_out(&tx, FAN_OUT_BATCH).await? else {
        return Ok(0);
    };
    tx.commit().await.map_err(DbError::from)?;
    let jobs: Vec<(i64, i32)> = fanned.deliveries.iter().map(|&id| (id, 1)).collect();
    attempts.queue(&jobs, Duration::ZERO).await;
    Ok(fanned.events)
}

/// Queues again the deliveries whose job was lost, and deletes events past
/// retention.
async fn sweep(
    pool: &Pool,
    attempts: &AttemptQueue,
    events: &EventsConfig,
    webhooks: &WebhooksConfig,
) -> Result<(), WebhookError> {
    let client = pool.get().await.map_err(DbError::from)?;
    let lost = db::webhooks::overdue(&client, webhooks.sweep_after(), 1000).await?;
    if !lost.is_empty() {
        tracing::info!(deliveries = lost.len(), "webhook attempts queued again");
        attempts.queue(&lost, Duration::ZERO).await;
    }
    for _ in 0..EXPIRE_ROUNDS {
        let gone = db::events::expire(&client, events.retention_hours, EXPIRE_BATCH).await?;
        if gone < EXPIRE_BATCH as u64 {
            break;
        }
    }
    Ok(())
}
