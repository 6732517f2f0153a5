//! What became of the messages of every number the worker drives — "sent"
//! verdicts and receipts — written to Postgres together ([`crate::group`]).
//!
//! Sent is what nearly every call ends in; the rarer verdicts (failed,
//! unknown, requeued) are written by the number's own task. A number's task
//! waits for the commit before it acks the job or sends its next message,
//! and an event pump before it acknowledges its receipts to the network,
//! exactly as when each wrote its own.
//!
//! Both kinds go through one writer, so one transaction at a time changes
//! these rows: a message's verdict and its receipt written by two
//! concurrent batches would lock the rows they share in whatever order each
//! statement meets them, and deadlock (Postgres breaks that after
//! `deadlock_timeout`, a second in which every number waits; measured in
//! docs/BENCHMARKS.md, pipeline). Within a batch, verdicts are applied
//! first, then delivered receipts, then read ones: a message sent and
//! delivered and read within one batch is announced as all three, in that
//! order, whatever order the network reported them in.

use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError, GenericClient, Pool, messages::ReceiptKind},
    metrics as m,
};
use uuid::Uuid;

use crate::group::{Batch, Writer};

/// The server accepted a message claimed under `epoch`.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: i64,
    pub epoch: i64,
    pub at: DateTime<Utc>,
    pub campaign_id: Option<Uuid>,
}

/// One message's receipt, as the message's number's session reported it.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub number_id: Uuid,
    pub kind: ReceiptKind,
    pub wa_message_id: String,
    pub at: DateTime<Utc>,
}

/// One row for the writer.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent(Sent),
    Receipt(Receipt),
}

/// Verdicts and receipts, written together.
pub type OutcomeWriter = Writer<Outcomes>;

/// How a batch is written: sent messages and the failure streaks of their
/// campaigns ended, then receipts, one statement per kind, in one
/// transaction.
pub struct Outcomes;

impl Batch for Outcomes {
    const KIND: &'static str = "outcomes";
    type Row = Outcome;
    type Answer = ();

    async fn write(&self, pool: &Pool, rows: &[Outcome]) -> Result<Vec<()>, DbError> {
        let mut sent = SentColumns::default();
        let mut delivered = ReceiptColumns::default();
        let mut read = ReceiptColumns::default();
        for row in rows {
            match row {
                Outcome::Sent(row) => sent.push(row),
                Outcome::Receipt(receipt) => match receipt.kind {
                    ReceiptKind::Delivered => delivered.push(receipt),
                    ReceiptKind::Read => read.push(receipt),
                },
            }
        }
        sent.campaign_ids.sort_unstable();
        sent.campaign_ids.dedup();
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        // The settings and statements below go to Postgres in one flight,
        // in this order, without waiting for the answers in between
        // (tokio-postgres sends a call's request when it is first polled,
        // and `try_join!` polls in order): two round trips fewer a batch,
        // and no planning at each call, on the path every number's next
        // send waits on (docs/BENCHMARKS.md, "Event times inlined, outcomes
        // in one flight"). The message statements are prepared first, or
        // one still being prepared could be overtaken by the next; the
        // campaigns' statement touches other rows, and its place in the
        // order does not matter.
        db::messages::prepare_outcomes(&tx).await?;
        let (_, _, _, delivered, read) = tokio::try_join!(
            db::generic_plans(&tx),
            sent.record(&tx),
            db::campaigns::record_success(&tx, &sent.campaign_ids),
            delivered.apply(&tx, ReceiptKind::Delivered),
            read.apply(&tx, ReceiptKind::Read),
        )?;
        tx.commit().await?;
        metrics::counter!(m::MESSAGES, "state" => "delivered").increment(delivered);
        metrics::counter!(m::MESSAGES, "state" => "read").increment(read);
        Ok(vec![(); rows.len()])
    }
}

/// A batch's sent verdicts, one column per field.
#[derive(Default)]
struct SentColumns {
    message_ids: Vec<i64>,
    epochs: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    campaign_ids: Vec<Uuid>,
}

impl SentColumns {
    fn push(&mut self, sent: &Sent) {
        self.message_ids.push(sent.message_id);
        self.epochs.push(sent.epoch);
        self.ats.push(sent.at);
        self.campaign_ids.extend(sent.campaign_id);
    }

    /// Records the verdicts; the number of messages recorded.
    async fn record(&self, client: &impl GenericClient) -> Result<u64, DbError> {
        if self.message_ids.is_empty() {
            return Ok(0);
        }
        db::messages::record_sent(client, &self.message_ids, &self.epochs, &self.ats).await
    }
}

/// A batch's receipts of one kind, one column per field.
#[derive(Default)]
struct ReceiptColumns<'a> {
    number_ids: Vec<Uuid>,
    wa_message_ids: Vec<&'a str>,
    ats: Vec<DateTime<Utc>>,
}

impl<'a> ReceiptColumns<'a> {
    fn push(&mut self, receipt: &'a Receipt) {
        self.number_ids.push(receipt.number_id);
        self.wa_message_ids.push(&receipt.wa_message_id);
        self.ats.push(receipt.at);
    }

    /// Applies the receipts (all of `kind`); the number of messages changed.
    async fn apply(&self, client: &impl GenericClient, kind: ReceiptKind) -> Result<u64, DbError> {
        if self.wa_message_ids.is_empty() {
            return Ok(0);
        }
        db::messages::apply_receipts(
            client,
            kind,
            &self.number_ids,
            &self.wa_message_ids,
            &self.ats,
        )
        .await
    }
}
