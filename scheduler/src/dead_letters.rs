//! What the broker gave up on: jobs that reached their delivery limit (each
//! delivery crashed or stalled its consumer) land in `P.dead`. A message
//! whose send job died there is recorded `failed` (it was never claimed:
//! a claimed one is settled by the next owner of its number), so it no longer
//! waits for a job that will not come; a webhook attempt that died there is
//! recorded as such and its delivery failed. Either way the queue the job
//! came from keeps flowing.

use std::sync::Arc;

use herald_shared::{
    db::{self, DbError, Pool},
    metrics as m,
    queue::{self, Broker, Settle, Topology},
    task::{SendTask, WebhookTask},
};
use lapin::{message::Delivery, types::AMQPValue};
use tokio_util::sync::CancellationToken;

/// Consumes `P.dead` until `shutdown`.
pub async fn run(pool: Pool, broker: Arc<Broker>, topology: Topology, shutdown: CancellationToken) {
    let name = topology.dead_letter_queue();
    crate::consume(
        &broker,
        &topology,
        &name,
        "herald-dead-letters",
        16,
        &shutdown,
        |delivery| handle(&pool, delivery),
    )
    .await;
}

/// How many times the broker delivered the job before giving up (from its
/// `x-death` header), when it says.
fn deliveries(delivery: &Delivery) -> Option<i64> {
    let headers = delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Records one dead-lettered job; false when its channel failed meanwhile.
async fn handle(pool: &Pool, delivery: Delivery) -> bool {
    let times = deliveries(&delivery)
        .map(|n| format!(" after {n} deliveries"))
        .unwrap_or_default();
    let settled = async {
        let client = pool.get().await.map_err(DbError::from)?;
        if let Ok(SendTask::Send { message_id, .. }) = serde_json::from_slice(&delivery.data) {
            let reason = format!(
                "its send job was dead-lettered{times} (it crashed or stalled its worker each time)"
            );
            let failed = db::messages::fail_dead_lettered(&client, message_id, &reason).await?;
            tracing::warn!(message_id, failed, "send job dead-lettered");
            metrics::counter!(m::DEAD_LETTERED, "kind" => "send").increment(1);
        } else if let Ok(WebhookTask::Deliver { delivery_id, .. }) =
            serde_json::from_slice(&delivery.data)
        {
            let reason = format!("the attempt's job was dead-lettered{times}");
            db::webhooks::fail_dead_lettered(&client, delivery_id, &reason).await?;
            tracing::warn!(delivery_id, "webhook job dead-lettered");
            metrics::counter!(m::DEAD_LETTERED, "kind" => "webhook").increment(1);
        } else {
            tracing::error!(
                bytes = delivery.data.len(),
                "unreadable dead-lettered job dropped"
            );
            metrics::counter!(m::DEAD_LETTERED, "kind" => "unreadable").increment(1);
        }
        Ok::<_, DbError>(())
    }
    .await;
    match settled {
        Ok(()) => queue::settle(&delivery, Settle::Ack).await,
        Err(err) => {
            tracing::warn!(error = %err, "could not record a dead-lettered job; it stays queued");
            queue::settle(&delivery, Settle::Requeue).await
        }
    }
}
