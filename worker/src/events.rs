//! What a number's session reports, written to Postgres: receipts move
//! messages to `delivered` / `read`, connection changes tell the scheduler
//! whether the number can send (and tenants, as `number.connected` /
//! `number.disconnected`), a logout marks the number as needing pairing,
//! and received messages are stored (see [`crate::inbound`]). Events are
//! written in batches and acknowledged to the network only after the commit:
//! a batch's receipts with every other number's (see [`crate::outcomes`]),
//! the rest in one transaction of its own.

use std::{sync::Arc, time::Duration};

use herald_shared::{
    db::pairings::PairingStatus,
    db::{self, DbError, sender_numbers::SenderNumber},
    domain::NumberState,
    events::{Event, EventBody, NumberChange, NumberConnection, PairingCode, PairingFailed},
    metrics as m, outbox,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Context, group,
    inbound::{self, Received},
    lease::Lease,
    outcomes::{Outcome, Receipt},
    session::{ConnectionState, Envelope, Events, Session, SessionEvent},
};

/// Events written per transaction at most.
const BATCH: usize = 256;

/// Runs until `until` or until the session ends. Cancels `stop` (the number's
/// driver) when the number got logged out: it cannot be driven until paired
/// again. `until` comes after the driver's last send: a session whose events
/// nobody reads drops its connection, and with it the answer to a send still
/// under way.
pub async fn pump(
    ctx: Arc<Context>,
    number: SenderNumber,
    lease: Arc<Lease>,
    session: Arc<dyn Session>,
    mut events: Events,
    stop: CancellationToken,
    until: CancellationToken,
) {
    let mut connected = false;
    loop {
        let first = tokio::select! {
            _ = until.cancelled() => break,
            event = events.recv() => event,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(100);
        let mut wrong_account = false;
        let written = loop {
            match write_batch(&ctx, &number, &lease, &batch, connected).await {
                Ok(written) => {
                    wrong_account = written.wrong_account;
                    break true;
                }
                Err(err) => {
                    tracing::warn!(number_id = %number.id, error = %err, "could not record session events; retrying");
                }
            }
            tokio::select! {
                _ = until.cancelled() => break false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        if !written {
            break;
        }
        if let Some(seq) = batch.iter().filter_map(|e| e.seq).max() {
            session.handled(seq).await;
        }
        if wrong_account {
            // Linked to another account than the number's: unlink at once.
            let _ = session.logout().await;
        }
        for envelope in &batch {
            let SessionEvent::StateChanged(state) = &envelope.event else {
                continue;
            };
            let now_connected = matches!(state, ConnectionState::Connected { .. });
            if now_connected != connected {
                connected = now_connected;
                metrics::gauge!(m::SESSIONS_CONNECTED).increment(if connected {
                    1.0
                } else {
                    -1.0
                });
                tracing::info!(number_id = %number.id, connected, "session connection changed");
            }
            if now_connected {
                let _ = session.set_presence(true).await;
            }
            if let ConnectionState::LoggedOut { reason } = state {
                tracing::warn!(number_id = %number.id, %reason, "number logged out: it needs pairing again");
                stop.cancel();
            }
        }
    }
    if connected {
        metrics::gauge!(m::SESSIONS_CONNECTED).decrement(1.0);
    }
    // Whatever the reason we stop, the scheduler must stop planning sends for
    // this number until someone drives it again.
    if let Err(err) = record_stopped(&ctx, &number, &lease, connected).await {
        tracing::warn!(number_id = %number.id, error = %err, "could not record the session's end");
    }
}

async fn record_stopped(
    ctx: &Context,
    number: &SenderNumber,
    lease: &Lease,
    was_connected: bool,
) -> Result<(), DbError> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    db::number_leases::set_connected(&tx, number.id, &ctx.id, lease.epoch, false).await?;
    // Once the lease is gone, the next owner speaks for the number.
    if was_connected && lease.is_valid() {
        let body = EventBody::NumberDisconnected(NumberConnection {
            number_id: number.id,
            push_name: None,
        });
        outbox::enqueue(&tx, &Event::new(number.tenant_id, body)).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Why a batch was not written (the pump retries it whole).
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("receipts: {0}")]
    Receipts(#[from] group::WriteError),
}

/// What writing a batch found that needs acting on after the commit.
#[derive(Debug, Default)]
struct Written {
    /// The device got linked to another account than the number's.
    wrong_account: bool,
}

async fn write_batch(
    ctx: &Context,
    number: &SenderNumber,
    lease: &Lease,
    batch: &[Envelope],
    connected: bool,
) -> Result<Written, WriteError> {
    // Receipts first, written with every other number's (crate::outcomes);
    // applying them again after a failure below changes nothing.
    let receipts: Vec<Outcome> = batch
        .iter()
        .filter_map(|envelope| match &envelope.event {
            SessionEvent::Receipt {
                wa_message_ids,
                kind,
                at,
            } => Some(wa_message_ids.iter().map(|id| {
                Outcome::Receipt(Receipt {
                    number_id: number.id,
                    kind: *kind,
                    wa_message_id: id.clone(),
                    at: *at,
                })
            })),
            _ => None,
        })
        .flatten()
        .collect();
    ctx.outcomes.write(receipts).await?;
    if batch
        .iter()
        .all(|envelope| matches!(envelope.event, SessionEvent::Receipt { .. }))
    {
        return Ok(Written::default());
    }
    Ok(write_others(ctx, number, lease, batch, connected).await?)
}

/// Everything in the batch but its receipts, in one transaction.
async fn write_others(
    ctx: &Context,
    number: &SenderNumber,
    lease: &Lease,
    batch: &[Envelope],
    mut connected: bool,
) -> Result<Written, DbError> {
    let mut written = Written::default();
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    for envelope in batch {
        match &envelope.event {
            SessionEvent::Receipt { .. } => {}
            SessionEvent::StateChanged(state) => {
                let now_connected = matches!(state, ConnectionState::Connected { .. });
                db::number_leases::set_connected(
                    &tx,
                    number.id,
                    &ctx.id,
                    lease.epoch,
                    now_connected,
                )
                .await?;
                if now_connected != connected && lease.is_valid() {
                    let change = NumberConnection {
                        number_id: number.id,
                        push_name: match state {
                            ConnectionState::Connected { push_name } => Some(push_name.clone()),
                            _ => None,
                        },
                    };
                    let body = if now_connected {
                        EventBody::NumberConnected(change)
                    } else {
                        EventBody::NumberDisconnected(change)
                    };
                    outbox::enqueue(&tx, &Event::new(number.tenant_id, body)).await?;
                }
                connected = now_connected;
                match state {
                    ConnectionState::Connected { push_name } => {
                        db::sender_numbers::record_connected(&tx, number.id, push_name).await?;
                    }
                    ConnectionState::LoggedOut { reason } if lease.is_valid() => {
                        db::sender_numbers::set_state(&tx, number.id, NumberState::NeedsPairing)
                            .await?;
                        let body = EventBody::NumberNeedsPairing(NumberChange {
                            number_id: number.id,
                            state: NumberState::NeedsPairing,
                            until: None,
                            reason: Some(reason.clone()),
                        });
                        outbox::enqueue(&tx, &Event::new(number.tenant_id, body)).await?;
                    }
                    _ => {}
                }
            }
            SessionEvent::TemporaryBan { code, until } if lease.is_valid() => {
                if let Some((was, tenant)) =
                    db::sender_numbers::set_banned(&tx, number.id, *until).await?
                    && was != NumberState::Banned
                {
                    tracing::warn!(number_id = %number.id, %code, %until, "number temporarily banned");
                    let body = EventBody::NumberBanned(NumberChange {
                        number_id: number.id,
                        state: NumberState::Banned,
                        until: Some(*until),
                        reason: Some(format!("temporary ban (code {code})")),
                    });
                    outbox::enqueue(&tx, &Event::new(tenant, body)).await?;
                }
            }
            SessionEvent::Inbound {
                wa_message_id,
                from,
                kind,
                text,
                media_type,
                at,
            } => {
                let received = Received {
                    wa_message_id,
                    from,
                    kind,
                    text: text.as_deref(),
                    media_type: media_type.as_deref(),
                    at: *at,
                };
                inbound::record(&tx, &ctx.inbound, number, &received).await?;
            }
            SessionEvent::PairingQr { code, timeout } if lease.is_valid() => {
                show_code(&tx, number, "qr", code, *timeout).await?;
            }
            SessionEvent::PairCode { code, timeout } if lease.is_valid() => {
                show_code(&tx, number, "code", code, *timeout).await?;
            }
            SessionEvent::Paired { phone, .. } if lease.is_valid() => {
                if phone.trim_start_matches('+') == number.phone.digits() {
                    db::sender_numbers::mark_linked(&tx, number.id).await?;
                    db::pairings::finish(&tx, number.id, PairingStatus::Paired, None).await?;
                    tracing::info!(number_id = %number.id, "number paired");
                    let body = EventBody::NumberPaired(NumberConnection {
                        number_id: number.id,
                        push_name: None,
                    });
                    outbox::enqueue(&tx, &Event::new(number.tenant_id, body)).await?;
                } else {
                    let reason = format!(
                        "the code was used by another account (…{}), not this number's",
                        &phone[phone.len().saturating_sub(4)..]
                    );
                    pairing_failed(&tx, number, &reason).await?;
                    written.wrong_account = true;
                }
            }
            SessionEvent::PairingFailed { reason } if lease.is_valid() => {
                pairing_failed(&tx, number, reason).await?;
            }
            // Reported while the lease is not valid: the next owner's to say.
            SessionEvent::PairingQr { .. }
            | SessionEvent::PairCode { .. }
            | SessionEvent::Paired { .. }
            | SessionEvent::PairingFailed { .. }
            | SessionEvent::TemporaryBan { .. } => {}
        }
    }
    tx.commit().await?;
    Ok(written)
}

/// A pairing code to show: recorded on the pairing and announced.
async fn show_code(
    tx: &impl db::GenericClient,
    number: &SenderNumber,
    method: &str,
    code: &str,
    valid_for: Duration,
) -> Result<(), DbError> {
    let expires_at = chrono::Utc::now()
        + chrono::Duration::from_std(valid_for).unwrap_or_else(|_| chrono::Duration::seconds(60));
    if db::pairings::show_code(tx, number.id, method, code, expires_at).await? {
        let body = EventBody::NumberPairing(PairingCode {
            number_id: number.id,
            method: method.to_string(),
            code: code.to_string(),
            expires_at,
        });
        outbox::enqueue(tx, &Event::new(number.tenant_id, body)).await?;
    }
    Ok(())
}

async fn pairing_failed(
    tx: &impl db::GenericClient,
    number: &SenderNumber,
    reason: &str,
) -> Result<(), DbError> {
    if db::pairings::finish(tx, number.id, PairingStatus::Failed, Some(reason)).await? {
        tracing::warn!(number_id = %number.id, %reason, "pairing failed");
        let body = EventBody::NumberPairingFailed(PairingFailed {
            number_id: number.id,
            reason: reason.to_string(),
        });
        outbox::enqueue(tx, &Event::new(number.tenant_id, body)).await?;
    }
    Ok(())
}
