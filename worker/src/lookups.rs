//! A number's contact-lookup lane: "which of these phones use WhatsApp?",
//! answered a few phones at a time at a steady pace (`contacts.check_batch`
//! every `contacts.check_interval_ms`), never in a burst: bulk lookups are
//! one of the surest ways to get a number banned.

use std::{sync::Arc, time::Duration};

use herald_shared::{
    db::{self, DbError, contact_checks::Lookup},
    domain::PhoneNumber,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Context, lease::Lease, session::Session};

pub async fn lane(
    ctx: Arc<Context>,
    number_id: Uuid,
    lease: Arc<Lease>,
    session: Arc<dyn Session>,
    stop: CancellationToken,
) {
    let pace = Duration::from_millis(ctx.contacts.check_interval_ms);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pace) => {}
        }
        if !lease.is_valid() {
            continue;
        }
        match look_up_batch(&ctx, number_id, session.as_ref()).await {
            Ok(0) => {}
            Ok(done) => tracing::debug!(%number_id, done, "contact lookups answered"),
            Err(err) => tracing::warn!(%number_id, error = %err, "contact lookups"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("session: {0}")]
    Session(#[from] crate::session::SessionError),
}

/// Answers one batch; returns how many lookups it settled.
async fn look_up_batch(
    ctx: &Context,
    number_id: Uuid,
    session: &dyn Session,
) -> Result<usize, LookupError> {
    let mut client = ctx.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let batch: Vec<Lookup> =
        db::contact_checks::claim_pending(&tx, number_id, ctx.contacts.check_batch).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    let phones: Vec<PhoneNumber> = batch
        .iter()
        .map(|l| PhoneNumber::from_trusted(l.phone.clone()))
        .collect();
    // The lookups stay locked (and pending) until this answer is recorded;
    // if the session fails, the transaction rolls back and they wait.
    let answers = session.is_on_whatsapp(&phones).await?;
    let recorded: Vec<(&Lookup, bool)> = batch
        .iter()
        .zip(&phones)
        .map(|(lookup, phone)| (lookup, answers.get(phone).copied().unwrap_or(false)))
        .collect();
    db::contact_checks::record(&tx, &recorded).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(batch.len())
}
