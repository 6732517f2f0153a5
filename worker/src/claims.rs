//! Claims of every number the worker drives, written together
//! ([`crate::group`]).
//!
//! The claim is the one write a number's task waits for alone before each
//! call (it must be durable before the call may go out: that is what keeps a
//! message from going out twice after a crash), so with pacing off it was
//! the commit every number queued for (docs/BENCHMARKS.md, pipeline). Each
//! claim keeps its own answer and its meaning ([`messages::claim_many`]);
//! the task waits for the commit exactly as before.
//!
//! A writer of its own, beside the outcome writer: a batch of claims changes
//! `scheduled` messages and the numbers' `last_send_at`, a batch of outcomes
//! messages already claimed and their campaigns, so the two never lock the
//! same rows and need not wait for each other.

use herald_shared::db::{
    DbError, Pool,
    messages::{self, Claim, Claimed},
};

use crate::group::{Batch, Writer};

/// Claims, written together.
pub type ClaimWriter = Writer<Claims>;

/// How a batch is written: one statement.
pub struct Claims;

impl Batch for Claims {
    const KIND: &'static str = "claims";
    type Row = Claim;
    type Answer = Option<Claimed>;

    async fn write(&self, pool: &Pool, rows: &[Claim]) -> Result<Vec<Option<Claimed>>, DbError> {
        let client = pool.get().await?;
        messages::claim_many(&client, rows).await
    }
}
