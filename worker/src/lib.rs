//! `herald-worker`: owns WhatsApp numbers and sends their messages.
//!
//! Each number is driven by exactly one worker at a time, the holder of its
//! lease. For every owned number the worker keeps a session open, consumes the
//! number's send queue one job at a time, paces and sends, records outcomes,
//! and writes receipts back to Postgres. Capacity grows by starting more
//! workers: numbers spread over them through the leases.
//!
//! Layout:
//! - [`owner`]: the lease keeper (which numbers this worker drives).
//! - [`lease`]: local validity of a lease on the monotonic clock.
//! - [`number`]: one number's send loop and the send protocol.
//! - [`events`]: receipts and connection changes into Postgres.
//! - [`group`]: group commit, rows of many numbers in one transaction.
//! - [`claims`]: claims of all numbers, written together.
//! - [`outcomes`]: "sent" verdicts and receipts of all numbers, written together.
//! - [`inbound`]: received messages and opt-outs.
//! - [`keystore`]: session state at rest (master key, data keys, sealing).
//! - [`lookups`]: the throttled contact-lookup lane of each number.
//! - [`pacing`]: gaps, jitter and typing time.
//! - [`session`]: the trait over WhatsApp and its implementations.
//! - [`failpoint`]: crash points for fault-injection tests.

pub mod claims;
pub mod events;
pub mod failpoint;
pub mod group;
pub mod inbound;
pub mod keystore;
pub mod lease;
pub mod lookups;
pub mod number;
pub mod outcomes;
pub mod owner;
pub mod pacing;
pub mod session;

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use herald_shared::{
    Config,
    config::WorkerConfig,
    db::{self, Pool},
    policy::jitter::Jitter,
    queue::{self, Broker, Topology},
};
use tokio_util::sync::CancellationToken;

use crate::{
    claims::{ClaimWriter, Claims},
    outcomes::{OutcomeWriter, Outcomes},
    pacing::Pacing,
    session::Connectors,
};

/// What every part of a worker process shares.
pub struct Context {
    /// This process's identity in leases and heartbeats.
    pub id: String,
    pub pool: Pool,
    pub broker: Arc<Broker>,
    pub topology: Topology,
    pub config: WorkerConfig,
    pub pacing: Pacing,
    /// Pacing for jobs that carry none (republished ones).
    pub default_jitter: Jitter,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub timelock_default: Duration,
    /// Sends per second of the whole process.
    pub sends: DefaultDirectRateLimiter,
    pub contacts: herald_shared::config::ContactsConfig,
    /// Reply attribution and the default opt-out keywords.
    pub inbound: herald_shared::config::InboundConfig,
    pub connectors: Connectors,
    pub outcomes: OutcomeWriter,
    pub claims: ClaimWriter,
}

/// A worker identity unique across hosts and restarts: host, process id and a
/// random suffix (a restarted process must never pass for its predecessor).
pub fn new_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &suffix[..8])
}

/// Runs a worker until `shutdown`, then lets its numbers go gracefully.
pub async fn run(
    config: &Config,
    connectors: Connectors,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    failpoint::init_from_env();
    let id = new_worker_id();
    let pool = db::connect(&config.database, "herald-worker")?;
    let broker = Broker::new(&config.rabbitmq, &format!("herald-worker {id}"));
    let topology = Topology::new(&config.rabbitmq);
    queue::declare_when_ready(&broker, &topology, &shutdown).await;
    tracing::info!(worker = %id, kinds = ?connectors.kinds(), "worker started");
    let outcomes = OutcomeWriter::spawn(pool.clone(), Outcomes);
    let claims = ClaimWriter::spawn(pool.clone(), Claims);
    let ctx = Arc::new(Context {
        id,
        pool,
        broker: broker.clone(),
        topology,
        config: config.worker.clone(),
        pacing: Pacing::new(&config.pacing),
        default_jitter: config.pacing.default_jitter(),
        retry_base: config.pacing.retry_base(),
        retry_max: config.pacing.retry_max(),
        timelock_default: config.pacing.timelock_default(),
        sends: RateLimiter::direct(Quota::per_second(
            NonZeroU32::new(config.worker.max_sends_per_second).unwrap_or(NonZeroU32::MIN),
        )),
        contacts: config.contacts.clone(),
        inbound: config.inbound.clone(),
        connectors,
        outcomes,
        claims,
    });
    owner::Keeper::new(ctx).run(shutdown).await;
    broker.close().await;
    tracing::info!("worker stopped");
    Ok(())
}
