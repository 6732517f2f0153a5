//! Receipts of every number the worker drives, written to Postgres together.
//!
//! Each number's event pump hands its receipts here and waits for the
//! commit before it acknowledges them to the network. One task writes them:
//! whatever arrived while the last transaction committed goes into the next,
//! as one statement per kind. With receipts pouring in (a campaign sending
//! fast), a message change per transaction is what Postgres spends most on
//! (docs/BENCHMARKS.md, pipeline); batching across numbers is what makes the
//! batches large, since one number alone sends at most a few messages a
//! second.
//!
//! Delivered receipts of a batch are applied before read ones, so a message
//! delivered and read within one batch is announced as both, in that order,
//! whatever order the network reported them in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError, Pool, messages::ReceiptKind},
    metrics as m,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Receipts written per transaction at most.
const BATCH: usize = 2048;

/// One message's receipt.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub kind: ReceiptKind,
    pub wa_message_id: String,
    pub at: DateTime<Utc>,
}

/// Why receipts were not written (the caller retries).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Db(Arc<DbError>),
    #[error("the receipt writer has stopped")]
    Stopped,
}

struct Request {
    number_id: Uuid,
    receipts: Vec<Receipt>,
    done: oneshot::Sender<Result<(), WriteError>>,
}

/// Handle to the writer task.
pub struct ReceiptWriter {
    /// Unbounded, yet bounded in practice: each pump waits for its answer,
    /// so there is at most one request per driven number.
    requests: mpsc::UnboundedSender<Request>,
}

impl ReceiptWriter {
    /// Starts the writer task; it ends when the handle is dropped.
    pub fn spawn(pool: Pool) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, incoming));
        Self { requests }
    }

    /// Writes a number's receipts; returns once they are committed.
    pub async fn write(&self, number_id: Uuid, receipts: Vec<Receipt>) -> Result<(), WriteError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request {
                number_id,
                receipts,
                done,
            })
            .map_err(|_| WriteError::Stopped)?;
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }
}

async fn run(pool: Pool, mut incoming: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = incoming.recv().await {
        let mut count = first.receipts.len();
        let mut batch = vec![first];
        while count < BATCH {
            match incoming.try_recv() {
                Ok(request) => {
                    count += request.receipts.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let result = write(&pool, &batch).await.map_err(|err| {
            tracing::warn!(error = %err, receipts = count, "could not record receipts");
            WriteError::Db(Arc::new(err))
        });
        for request in batch {
            let _ = request.done.send(result.clone());
        }
    }
}

/// The batch's receipts as one column per field, for one kind.
#[derive(Default)]
struct Columns<'a> {
    number_ids: Vec<Uuid>,
    wa_message_ids: Vec<&'a str>,
    ats: Vec<DateTime<Utc>>,
}

async fn write(pool: &Pool, batch: &[Request]) -> Result<(), DbError> {
    let mut delivered = Columns::default();
    let mut read = Columns::default();
    for request in batch {
        for receipt in &request.receipts {
            let columns = match receipt.kind {
                ReceiptKind::Delivered => &mut delivered,
                ReceiptKind::Read => &mut read,
            };
            columns.number_ids.push(request.number_id);
            columns.wa_message_ids.push(&receipt.wa_message_id);
            columns.ats.push(receipt.at);
        }
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut changed = [0; 2];
    for (i, (kind, columns)) in [
        (ReceiptKind::Delivered, &delivered),
        (ReceiptKind::Read, &read),
    ]
    .into_iter()
    .enumerate()
    {
        if !columns.wa_message_ids.is_empty() {
            changed[i] = db::messages::apply_receipts(
                &tx,
                kind,
                &columns.number_ids,
                &columns.wa_message_ids,
                &columns.ats,
            )
            .await?;
        }
    }
    tx.commit().await?;
    metrics::counter!(m::MESSAGES, "state" => "delivered").increment(changed[0]);
    metrics::counter!(m::MESSAGES, "state" => "read").increment(changed[1]);
    Ok(())
}
