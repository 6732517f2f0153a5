//! Group commit: rows that many numbers' tasks hand over, written by one task
//! in one transaction.
//!
//! Each caller hands its rows over and waits for the commit. One task writes:
//! whatever arrived while the last transaction committed goes into the next.
//! A message change per transaction is what Postgres spends most on when
//! campaigns send fast (docs/BENCHMARKS.md, pipeline), and one number alone
//! has at most a row or two waiting at a time: batching across the numbers
//! of a worker is what makes the batches large. What a caller waits for is
//! unchanged (its rows are committed when it goes on), it just shares the
//! commit.

use std::{future::Future, sync::Arc};

use herald_shared::db::{DbError, Pool};
use tokio::sync::{mpsc, oneshot};

/// Rows written per transaction at most.
const MAX_ROWS: usize = 2048;

/// One kind of row and how a batch of them is written.
pub trait Batch: Send + Sync + 'static {
    type Row: Send + 'static;

    /// Writes every row, in one transaction.
    fn write(
        &self,
        pool: &Pool,
        rows: &[Self::Row],
    ) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// Why rows were not written (the caller retries).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Db(Arc<DbError>),
    #[error("the writer has stopped")]
    Stopped,
}

struct Request<R> {
    rows: Vec<R>,
    done: oneshot::Sender<Result<(), WriteError>>,
}

/// Handle to a writer task.
pub struct Writer<B: Batch> {
    /// Unbounded, yet bounded in practice: each caller waits for its answer,
    /// so there is at most one request per driven number and kind.
    requests: mpsc::UnboundedSender<Request<B::Row>>,
}

impl<B: Batch> Writer<B> {
    /// Starts the writer task; it ends when the handle is dropped.
    pub fn spawn(pool: Pool, batch: B) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, batch, incoming));
        Self { requests }
    }

    /// Writes the rows; returns once they are committed.
    pub async fn write(&self, rows: Vec<B::Row>) -> Result<(), WriteError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request { rows, done })
            .map_err(|_| WriteError::Stopped)?;
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }
}

async fn run<B: Batch>(
    pool: Pool,
    batch: B,
    mut incoming: mpsc::UnboundedReceiver<Request<B::Row>>,
) {
    while let Some(first) = incoming.recv().await {
        let mut rows = first.rows;
        let mut waiting = vec![first.done];
        while rows.len() < MAX_ROWS {
            match incoming.try_recv() {
                Ok(request) => {
                    rows.extend(request.rows);
                    waiting.push(request.done);
                }
                Err(_) => break,
            }
        }
        let result = batch.write(&pool, &rows).await.map_err(|err| {
            tracing::warn!(error = %err, rows = rows.len(), "could not write a batch");
            WriteError::Db(Arc::new(err))
        });
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}
