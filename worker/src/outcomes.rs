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
    db::{self, DbError, Pool, messages::ReceiptKind},
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
        if !sent.message_ids.is_empty() {
            tokio::try_join!(
                db::messages::record_sent(&tx, &sent.message_ids, &sent.epochs, &sent.ats),
                db::campaigns::record_success(&tx, &sent.campaign_ids),
            )?;
        }
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
}
