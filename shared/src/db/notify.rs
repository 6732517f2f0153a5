//! Wake-ups from Postgres `NOTIFY`. One dedicated connection per process
//! `LISTEN`s on a channel and bumps a counter that readers watch; a reader
//! re-reads its table when the counter moves. Connections drop: the listener
//! reconnects with back-off and bumps the counter after every (re)connect,
//! since a notification may have been missed meanwhile. Readers poll as
//! well, so a dead listener only slows them down.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::DbError;
use crate::config::DatabaseConfig;

/// The channel the outbox relay notifies when the event log grows.
pub const EVENTS_CHANNEL: &str = "herald_events";

/// Starts listening on `channel` until `shutdown`; the receiver's value
/// changes after every notification.
pub fn listen(
    config: &DatabaseConfig,
    channel: &'static str,
    shutdown: CancellationToken,
) -> watch::Receiver<u64> {
    let (bump, receiver) = watch::channel(0u64);
    let config = config.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match listen_once(&config, channel, &bump, &shutdown).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(channel, error = %err, "postgres listener; reconnecting")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    receiver
}

async fn listen_once(
    config: &DatabaseConfig,
    channel: &str,
    bump: &watch::Sender<u64>,
    shutdown: &CancellationToken,
) -> Result<(), DbError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .expose()
        .parse()
        .map_err(|err| DbError::Config(format!("database.url: {err}")))?;
    pg.connect_timeout(config.create_timeout())
        .application_name("herald listener");
    let (client, mut connection) = pg.connect(NoTls).await?;
    // The connection must be driven for the LISTEN to complete, and its
    // notifications come out of the same stream.
    let (notified, mut notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notified.send(()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    });
    let listening = client.batch_execute(&format!("LISTEN {channel}")).await;
    if let Err(err) = listening {
        driver.abort();
        return Err(err.into());
    }
    bump.send_modify(|n| *n += 1);
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            note = notifications.recv() => match note {
                Some(()) => bump.send_modify(|n| *n += 1),
                None => break Err(DbError::Closed),
            },
        }
    };
    drop(client);
    match driver.await {
        Ok(Err(err)) if outcome.is_err() => Err(err.into()),
        _ => outcome,
    }
}
