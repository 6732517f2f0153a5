//! Group commit: rows that many numbers' tasks hand over, written by one task
//! in one transaction.
//!
//! Each caller hands its rows over and waits for the commit, and for one
//! answer per row. One task writes: whatever arrived while the last
//! transaction committed goes into the next.
//! A message change per transaction is what Postgres spends most on when
//! campaigns send fast (docs/BENCHMARKS.md, pipeline), and one number alone
//! has at most a row or two waiting at a time: batching across the numbers
//! of a worker is what makes the batches large. What a caller waits for is
//! unchanged (its rows are committed when it goes on), it just shares the
//! commit.

use std::{future::Future, sync::Arc};

use herald_shared::{
    db::{DbError, Pool},
    metrics as m,
};
use tokio::sync::{mpsc, oneshot};

/// Rows written per transaction at most.
const MAX_ROWS: usize = 2048;

/// One kind of row and how a batch of them is written.
pub trait Batch: Send + Sync + 'static {
    /// The `kind` label of the writer's metrics.
    const KIND: &'static str;
    type Row: Send + 'static;
    /// What the write says of one row.
    type Answer: Send + 'static;

    /// Writes every row, in one transaction; one answer per row, in the
    /// rows' order.
    fn write(
        &self,
        pool: &Pool,
        rows: &[Self::Row],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, DbError>> + Send;
}

/// Why rows were not written (the caller retries).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Db(Arc<DbError>),
    #[error("the writer has stopped")]
    Stopped,
    #[error("the batch answered for the wrong number of rows")]
    Answers,
}

struct Request<R, A> {
    rows: Vec<R>,
    done: oneshot::Sender<Result<Vec<A>, WriteError>>,
}

/// Handle to a writer task.
pub struct Writer<B: Batch> {
    /// Unbounded, yet bounded in practice: each caller waits for its answer,
    /// so there is at most one request per driven number and kind.
    requests: mpsc::UnboundedSender<Request<B::Row, B::Answer>>,
}

impl<B: Batch> Writer<B> {
    /// Starts the writer task; it ends when the handle is dropped.
    pub fn spawn(pool: Pool, batch: B) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, batch, incoming));
        Self { requests }
    }

    /// Writes the rows; returns once they are committed, with their answers
    /// in the rows' order.
    pub async fn write(&self, rows: Vec<B::Row>) -> Result<Vec<B::Answer>, WriteError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request { rows, done })
            .map_err(|_| WriteError::Stopped)?;
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }

    /// Writes one row; returns once it is committed, with its answer.
    pub async fn write_one(&self, row: B::Row) -> Result<B::Answer, WriteError> {
        self.write(vec![row])
            .await?
            .pop()
            .ok_or(WriteError::Answers)
    }
}

async fn run<B: Batch>(
    pool: Pool,
    batch: B,
    mut incoming: mpsc::UnboundedReceiver<Request<B::Row, B::Answer>>,
) {
    while let Some(first) = incoming.recv().await {
        let mut waiting = vec![(first.rows.len(), first.done)];
        let mut rows = first.rows;
        while rows.len() < MAX_ROWS {
            match incoming.try_recv() {
                Ok(request) => {
                    waiting.push((request.rows.len(), request.done));
                    rows.extend(request.rows);
                }
                Err(_) => break,
            }
        }
        let written = batch.write(&pool, &rows).await;
        match written {
            Ok(answers) if answers.len() == rows.len() => {
                metrics::counter!(m::GROUP_COMMITS, "kind" => B::KIND).increment(1);
                metrics::counter!(m::GROUP_COMMIT_ROWS, "kind" => B::KIND)
                    .increment(rows.len() as u64);
                let mut answers = answers.into_iter();
                for (count, done) in waiting {
                    let _ = done.send(Ok(answers.by_ref().take(count).collect()));
                }
            }
            Ok(answers) => {
                // A bug in the batch: nobody may take a wrong row's answer.
                tracing::error!(
                    rows = rows.len(),
                    answers = answers.len(),
                    "a batch answered for the wrong number of rows"
                );
                for (_, done) in waiting {
                    let _ = done.send(Err(WriteError::Answers));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, rows = rows.len(), "could not write a batch");
                let err = WriteError::Db(Arc::new(err));
                for (_, done) in waiting {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }
}
