//! `herald-scheduler`: decides who is sent what, by which number, and when.
//!
//! Each pass (every `tick_ms`, and at once when a campaign or number event
//! arrives) plans every live number: its daily allowance (warm-up plan, its
//! cap, its tenant's cap, counted in its own time zone), its breaker, the
//! recipients' send windows and a small look-ahead bound what it takes; those
//! messages become `scheduled` in Postgres and their send jobs go to the
//! number's queue. The worker owning the number does the precise pacing.
//!
//! The scheduler also delivers webhooks ([`webhooks`]): every replica fans
//! the event log out to endpoints and makes delivery attempts, whether or
//! not it leads the planning.
//!
//! Layout: [`planner`] (a pass), [`housekeeping`] (what time changes),
//! [`breakers`] (circuit breakers), [`leader`] (one acting replica),
//! [`webhooks`] (fan-out and delivery), [`dead_letters`] (jobs the broker
//! gave up on), [`fleet`] (the gauges describing the whole deployment).

pub mod breakers;
pub mod dead_letters;
pub mod fleet;
pub mod housekeeping;
pub mod leader;
pub mod planner;
pub mod webhooks;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use herald_shared::{
    Config,
    clock::{Clock, SystemClock},
    db, metrics as m,
    queue::{self, Broker, Publisher, Settle, Topology},
    telemetry::Appendix,
};
use lapin::message::Delivery;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{leader::Leadership, planner::Planner};

/// Runs the scheduler on the system clock until `shutdown`; while it leads,
/// the fleet gauges go to `fleet` (see [`fleet`]).
pub async fn run(
    config: &Config,
    fleet: Appendix,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_clock(config, Arc::new(SystemClock), fleet, shutdown).await
}

/// Runs the scheduler on `clock` (tests set the time) until `shutdown`.
pub async fn run_with_clock(
    config: &Config,
    clock: Arc<dyn Clock>,
    fleet: Appendix,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database, "herald-scheduler")?;
    let broker = Broker::new(&config.rabbitmq, "herald-scheduler");
    let topology = Topology::new(&config.rabbitmq);
    let publisher = Arc::new(Publisher::new(broker.clone(), &config.rabbitmq));
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen_for_events(
        broker.clone(),
        topology.clone(),
        wake.clone(),
        shutdown.clone(),
    ));
    let mut background =
        spawn_background(config, &pool, &broker, &topology, &publisher, &shutdown)?;
    let is_leader = Arc::new(AtomicBool::new(false));
    background.push(tokio::spawn(
        fleet::Fleet {
            pool: pool.clone(),
            broker: broker.clone(),
            topology: topology.clone(),
            warmup: config.warmup.clone(),
            config: config.scheduler.clone(),
            retry_delays: config.webhooks.retry_delays().unwrap_or_default(),
            clock: clock.clone(),
            leading: is_leader.clone(),
            appendix: fleet,
        }
        .run(shutdown.clone()),
    ));
    let owner = format!("scheduler:{}", uuid::Uuid::new_v4().simple());
    let mut leadership = Leadership::new(pool.clone(), owner, &config.scheduler);
    let planner = Planner::new(pool, publisher, topology, config, clock);
    tracing::info!(
        tick_ms = config.scheduler.tick_ms,
        owner = leadership.owner(),
        "scheduler started"
    );
    loop {
        let leading = leadership.check().await;
        metrics::gauge!(m::SCHEDULER_LEADER).set(if leading { 1.0 } else { 0.0 });
        is_leader.store(leading, Ordering::Relaxed);
        if leading {
            match planner.pass().await {
                Ok(report) if report.scheduled > 0 || !report.completed.is_empty() => {
                    tracing::debug!(?report, "scheduling pass");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "scheduling pass failed"),
            }
        }
        let wait = if leading {
            config.scheduler.tick()
        } else {
            config.scheduler.leader_renew()
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified(), if leading => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    leadership.resign().await;
    let _ = listener.await;
    for task in background {
        let _ = task.await;
    }
    broker.close().await;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Starts the webhook fan-out, the delivery consumer and the dead-letter
/// consumer (every replica runs them).
fn spawn_background(
    config: &Config,
    pool: &db::Pool,
    broker: &Arc<Broker>,
    topology: &Topology,
    publisher: &Arc<Publisher>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let delays = config
        .webhooks
        .retry_delays()
        .map_err(|e| anyhow::anyhow!("webhooks.retry_schedule: {e}"))?;
    let attempts = Arc::new(herald_shared::webhooks::AttemptQueue::new(
        publisher.clone(),
        topology.clone(),
    ));
    let feed = db::notify::listen(
        &config.database,
        db::notify::EVENTS_CHANNEL,
        shutdown.clone(),
    );
    let fan_out = tokio::spawn(webhooks::fan_out(
        pool.clone(),
        attempts.clone(),
        config.events.clone(),
        config.webhooks.clone(),
        feed,
        shutdown.clone(),
    ));
    let deliverer = Arc::new(webhooks::delivery::Deliverer {
        pool: pool.clone(),
        broker: broker.clone(),
        topology: topology.clone(),
        attempts,
        sender: webhooks::http::Sender::new(&config.webhooks)?,
        delays,
        timeout: config.webhooks.timeout(),
        concurrency: config.webhooks.concurrency.max(1),
    });
    let delivery = tokio::spawn(deliverer.run(shutdown.clone()));
    let dead = tokio::spawn(dead_letters::run(
        pool.clone(),
        broker.clone(),
        topology.clone(),
        shutdown.clone(),
    ));
    Ok(vec![fan_out, delivery, dead])
}

/// Consumes campaign events to start a pass early. Postgres holds the truth;
/// an event is only a hint, so it is acked as soon as it is read.
async fn listen_for_events(
    broker: Arc<Broker>,
    topology: Topology,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let name = topology.scheduler_queue();
    consume(
        &broker,
        &topology,
        &name,
        "herald-scheduler",
        32,
        &shutdown,
        |delivery| {
            wake.notify_one();
            async move { queue::settle(&delivery, Settle::Ack).await }
        },
    )
    .await;
}

/// Consumes `queue` (declared with the common topology) until `shutdown`,
/// at most `prefetch` deliveries unacknowledged, handing each to `handle`,
/// which says false when the delivery's channel failed. Whenever the
/// subscription ends otherwise, subscribes again, backing off from 200 ms
/// to 5 s while it keeps failing.
pub(crate) async fn consume<F, Fut>(
    broker: &Broker,
    topology: &Topology,
    queue: &str,
    tag: &str,
    prefetch: u16,
    shutdown: &CancellationToken,
    mut handle: F,
) where
    F: FnMut(Delivery) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let consumed = async {
            let mut deliveries = broker
                .subscribe(queue, tag, prefetch, |channel| async move {
                    topology.declare_common(&channel).await
                })
                .await?;
            backoff = Duration::from_millis(200);
            let ended = loop {
                match deliveries.next_until(shutdown).await {
                    Ok(Some(delivery)) => {
                        if !handle(delivery).await {
                            break Ok(());
                        }
                    }
                    ended => break ended.map(drop),
                }
            };
            deliveries.close().await;
            ended
        }
        .await;
        if let Err(err) = consumed {
            tracing::warn!(error = %err, queue, "consumer ended; subscribing again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
