//! `herald-api`: the HTTP API tenants use (including the live event stream),
//! and the outbox relay that turns committed changes into the event log and
//! RabbitMQ messages.
//!
//! Layout:
//! - [`routes`]: the handlers, one module per resource, and shared middleware.
//! - [`extract`]: JSON bodies, API-key authentication and path ids, failing
//!   with problem+json.
//! - [`error`]: the one error type, rendered as problem+json.
//! - [`recipients`]: inline recipients to messages (normalise, dedupe, render).
//! - [`plan`]: projections of when messages would go out.
//! - [`admin`]: the operator subcommands (tenants, API keys).
//! - [`middleware`]: per-key rate limits and Idempotency-Key.
//! - [`openapi`]: the generated OpenAPI 3.1 document.

pub mod admin;
pub mod console;
pub mod counts;
pub mod error;
pub mod extract;
pub mod keys;
pub mod middleware;
pub mod openapi;
pub mod plan;
pub mod recipients;
pub mod routes;
pub mod state;

use std::sync::Arc;

use herald_shared::{
    Config, db, metrics as m,
    outbox::OutboxRelay,
    queue::{self, Broker, Publisher, Topology},
};
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use crate::state::{AppState, Wiring};

/// Serves the API on `listener` and runs the outbox relay, until `shutdown`.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (pool, service_pool) = state::pools(config)?;
    let broker = Broker::new(&config.rabbitmq, "herald-api");
    let topology = Topology::new(&config.rabbitmq);
    let outbox_written = Arc::new(Notify::new());
    let events_feed = db::notify::listen(
        &config.database,
        db::notify::EVENTS_CHANNEL,
        shutdown.clone(),
    );
    let state = AppState::new(
        pool,
        service_pool.clone(),
        config,
        Wiring {
            broker: broker.clone(),
            outbox_written: outbox_written.clone(),
            events_feed,
            shutdown: shutdown.clone(),
        },
    );
    // Reported from the start, not from the first stream.
    metrics::gauge!(m::EVENT_STREAMS).set(0.0);
    let housekeeping = tokio::spawn(housekeeping(state.clone(), shutdown.clone()));

    let relay_shutdown = shutdown.clone();
    let relay_broker = broker.clone();
    let rabbit = config.rabbitmq.clone();
    let poll = config.api.outbox_poll();
    let batch = config.api.outbox_batch;
    let relay = tokio::spawn(async move {
        // The relay publishes to the events exchange: make sure it exists.
        queue::declare_when_ready(&relay_broker, &topology, &relay_shutdown).await;
        let publisher = Arc::new(Publisher::new(relay_broker, &rabbit));
        OutboxRelay::new(
            service_pool,
            publisher,
            topology.events_exchange(),
            batch,
            poll,
            outbox_written,
        )
        .run(relay_shutdown)
        .await;
    });

    tracing::info!(addr = %listener.local_addr()?, "api listening");
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    shutdown.cancel();
    let _ = relay.await;
    let _ = housekeeping.await;
    broker.close().await;
    Ok(())
}

/// Every minute: forget expired Idempotency-Keys and idle rate-limit state.
async fn housekeeping(state: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        state.limiter.retain_recent();
        state.limiter.shrink_to_fit();
        if let Ok(client) = state.service_pool.get().await
            && let Err(err) =
                db::idempotency::expire(&client, state.config.api.idempotency_hours).await
        {
            tracing::warn!(error = %err, "expiring idempotency keys");
        }
    }
}
