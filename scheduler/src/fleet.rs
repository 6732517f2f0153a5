//! The fleet gauges: every number's state, connection, warm-up day,
//! remaining budget and breaker, RabbitMQ queue depths, messages not
//! finished, webhook deliveries pending, running and stalled campaigns.
//!
//! They describe the whole deployment, not one process, so exactly one
//! process reports them: the acting scheduler reads them every
//! `scheduler.fleet_ms` and adds them to its scrapes as they were read (a
//! [`telemetry::Appendix`]). A replica that stops leading reports none, so a
//! dashboard never sums two readings or keeps showing a former leader's.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use herald_shared::{
    clock::Clock,
    config::{SchedulerConfig, WarmupConfig},
    db::{self, DbError, Pool},
    domain::NumberState,
    metrics as m,
    policy::{
        allowance::{AllowanceInputs, daily_allowance},
        breaker::BreakerState,
    },
    queue::{Broker, QueueError, Topology},
    telemetry::{Appendix, Exposition},
};
use lapin::{
    Channel,
    options::QueueDeclareOptions,
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::FieldTable,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::planner::open_zones_by_campaign;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<lapin::Error> for FleetError {
    fn from(err: lapin::Error) -> Self {
        Self::Queue(err.into())
    }
}

pub struct Fleet {
    pub pool: Pool,
    pub broker: Arc<Broker>,
    pub topology: Topology,
    pub warmup: WarmupConfig,
    pub config: SchedulerConfig,
    /// Webhook back-off delays (one retry queue each).
    pub retry_delays: Vec<Duration>,
    pub clock: Arc<dyn Clock>,
    /// Set while this process leads.
    pub leading: Arc<AtomicBool>,
    pub appendix: Appendix,
}

/// One reading.
struct Reading {
    at: DateTime<Utc>,
    numbers: Vec<db::fleet::NumberStanding>,
    waiting: db::fleet::Waiting,
    queues: Vec<(String, u64)>,
    webhooks_pending: i64,
    running: usize,
    stalled: usize,
}

impl Fleet {
    /// Reads every `fleet_ms` while leading, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        // When this process first saw each campaign running: a campaign just
        // started or resumed has not stalled yet.
        let mut running_since: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        let mut last_read: Option<DateTime<Utc>> = None;
        let mut interval = tokio::time::interval(self.config.fleet());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            if !self.leading.load(Ordering::Relaxed) {
                running_since.clear();
                last_read = None;
                self.appendix.clear();
                continue;
            }
            match self.read(&mut running_since).await {
                Ok(reading) => {
                    last_read = Some(reading.at);
                    self.appendix.set(render(&reading, &self.warmup));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reading the fleet gauges failed");
                    // Old readings go after a few misses rather than stand
                    // for the present.
                    let stale = self.config.fleet() * 4;
                    if last_read.is_none_or(|at| {
                        (self.clock.now() - at).to_std().unwrap_or_default() > stale
                    }) {
                        self.appendix.clear();
                    }
                }
            }
        }
        self.appendix.clear();
    }

    async fn read(
        &self,
        running_since: &mut HashMap<Uuid, DateTime<Utc>>,
    ) -> Result<Reading, FleetError> {
        let now = self.clock.now();
        let client = self.pool.get().await.map_err(DbError::from)?;
        let numbers = db::fleet::numbers(&client, now).await?;
        let waiting = db::fleet::waiting(&client).await?;
        let webhooks_pending = db::webhooks::pending_count(&client).await?;
        let campaigns = db::campaigns::running(&client).await?;
        running_since.retain(|id, _| campaigns.iter().any(|c| c.id == *id));
        let open_zones = open_zones_by_campaign(&campaigns, now);
        let stall_after =
            chrono::Duration::from_std(self.config.stall_after()).unwrap_or(chrono::Duration::MAX);
        let mut stalled = 0;
        for campaign in &campaigns {
            let since = *running_since.entry(campaign.id).or_insert(now);
            let zones = open_zones.get(&campaign.id).cloned().unwrap_or_default();
            let activity = db::fleet::campaign_activity(&client, campaign.id, &zones).await?;
            let last_moved = activity.last_send.map_or(since, |at| at.max(since));
            if activity.ready && now - last_moved > stall_after {
                stalled += 1;
            }
        }
        drop(client);
        let queues = self.queue_depths(&numbers).await?;
        Ok(Reading {
            at: now,
            numbers,
            waiting,
            queues,
            webhooks_pending,
            running: campaigns.len(),
            stalled,
        })
    }

    /// Messages ready in Herald's queues; every number's send queue counts
    /// towards `send`. A queue not declared yet counts as empty.
    async fn queue_depths(
        &self,
        numbers: &[db::fleet::NumberStanding],
    ) -> Result<Vec<(String, u64)>, FleetError> {
        let mut probe = Probe {
            broker: &self.broker,
            channel: None,
        };
        let prefix = format!("{}.", self.topology.prefix());
        let mut named = vec![
            self.topology.scheduler_queue(),
            self.topology.webhook_queue(),
            self.topology.dead_letter_queue(),
        ];
        let mut delays: Vec<Duration> = self
            .retry_delays
            .iter()
            .copied()
            .filter(|d| !d.is_zero())
            .collect();
        delays.sort();
        delays.dedup();
        named.extend(
            delays
                .into_iter()
                .map(|d| self.topology.webhook_retry_queue(d)),
        );
        let mut depths = Vec::new();
        for queue in named {
            let depth = probe.depth(&queue).await?;
            let label = queue.strip_prefix(&prefix).unwrap_or(&queue).to_string();
            depths.push((label, depth));
        }
        let mut send = 0;
        for number in numbers {
            send += probe.depth(&self.topology.send_queue(number.id)).await?;
        }
        depths.push(("send".to_string(), send));
        if let Some(channel) = probe.channel {
            let _ = channel.close(200, "bye".into()).await;
        }
        Ok(depths)
    }
}

/// Passive declarations on one channel, opened again after a declaration of
/// a missing queue closed it.
struct Probe<'a> {
    broker: &'a Broker,
    channel: Option<Channel>,
}

impl Probe<'_> {
    async fn depth(&mut self, queue: &str) -> Result<u64, FleetError> {
        let channel = match self.channel.take() {
            Some(channel) if channel.status().connected() => channel,
            _ => self.broker.channel().await?,
        };
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(found) => {
                self.channel = Some(channel);
                Ok(u64::from(found.message_count()))
            }
            // 404: the broker closed the channel; the next call opens another.
            Err(err) if is_not_found(&err) => Ok(0),
            Err(err) => Err(err.into()),
        }
    }
}

fn is_not_found(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
    )
}

/// A per-number gauge's value.
type PerNumber = fn(&db::fleet::NumberStanding, &WarmupConfig) -> f64;

fn render(reading: &Reading, warmup: &WarmupConfig) -> String {
    let mut out = Exposition::default();
    let ids: Vec<String> = reading.numbers.iter().map(|n| n.id.to_string()).collect();
    out.gauge(
        m::NUMBER_STATE,
        "1 for the number's current state, 0 for the others.",
    );
    for (number, id) in reading.numbers.iter().zip(&ids) {
        for state in NumberState::ALL {
            let value = if number.state == state { 1.0 } else { 0.0 };
            out.sample(
                m::NUMBER_STATE,
                &[("number_id", id), ("state", state.as_str())],
                value,
            );
        }
    }
    let per_number: [(&str, &str, PerNumber); 4] = [
        (
            m::NUMBER_CONNECTED,
            "1 while a worker holds the number with its session connected.",
            |n, _| if n.connected { 1.0 } else { 0.0 },
        ),
        (
            m::NUMBER_WARMUP_DAY,
            "The number's warm-up day (0 on its first day).",
            |n, _| n.day_index as f64,
        ),
        (
            m::NUMBER_BUDGET_REMAINING,
            "Messages the number may still be given today.",
            |n, warmup| budget_remaining(n, warmup) as f64,
        ),
        (
            m::NUMBER_BREAKER,
            "The number's circuit breaker: 0 closed, 1 slowed, 2 open.",
            |n, _| match n.breaker {
                BreakerState::Closed => 0.0,
                BreakerState::Slowed => 1.0,
                BreakerState::Open => 2.0,
            },
        ),
    ];
    for (name, help, value) in per_number {
        out.gauge(name, help);
        for (number, id) in reading.numbers.iter().zip(&ids) {
            out.sample(name, &[("number_id", id)], value(number, warmup));
        }
    }
    out.gauge(m::QUEUE_MESSAGES, "Messages ready in a RabbitMQ queue.");
    for (queue, depth) in &reading.queues {
        out.sample(m::QUEUE_MESSAGES, &[("queue", queue)], *depth as f64);
    }
    out.gauge(m::MESSAGES_WAITING, "Messages not finished, by state.");
    let w = reading.waiting;
    for (state, count) in [
        ("queued", w.queued),
        ("retry_wait", w.retry_wait),
        ("scheduled", w.scheduled),
        ("sending", w.sending),
    ] {
        out.sample(m::MESSAGES_WAITING, &[("state", state)], count as f64);
    }
    out.gauge(
        m::WEBHOOK_PENDING,
        "Webhook deliveries waiting for an attempt.",
    )
    .sample(m::WEBHOOK_PENDING, &[], reading.webhooks_pending as f64);
    out.gauge(m::CAMPAIGNS_RUNNING, "Campaigns running.")
        .sample(m::CAMPAIGNS_RUNNING, &[], reading.running as f64);
    out.gauge(
        m::CAMPAIGNS_STALLED,
        "Running campaigns with messages ready in an open window that sent nothing lately.",
    )
    .sample(m::CAMPAIGNS_STALLED, &[], reading.stalled as f64);
    out.gauge(
        m::FLEET_UPDATED,
        "When the fleet gauges were read (Unix seconds).",
    )
    .sample(
        m::FLEET_UPDATED,
        &[],
        reading.at.timestamp_millis() as f64 / 1000.0,
    );
    out.finish()
}

/// What the planner would still give the number today.
fn budget_remaining(number: &db::fleet::NumberStanding, warmup: &WarmupConfig) -> i64 {
    daily_allowance(&AllowanceInputs {
        plan_volume: warmup.volume(&number.warmup_plan, number.day_index),
        number_cap: i64::from(number.daily_cap),
        number_used: i64::from(number.used),
        tenant_cap: number.tenant_cap.map(i64::from),
        tenant_used: i64::from(number.tenant_used),
    })
}
