//! RabbitMQ: the topology (names and declarations), a connection that is
//! re-established after the broker goes away, and a publisher that treats
//! anything short of a clean confirm as a failure.
//!
//! RabbitMQ only wakes Herald up; Postgres decides. A lost job is found again by
//! the scheduler's sweep and a duplicated one finds nothing to claim, so the
//! broker never needs to be more than "usually delivers".
//!
//! Topology (every name starts with the configured prefix `P`):
//!
//! | name | kind | what for |
//! |---|---|---|
//! | `P.events` | topic exchange | outbox events (`campaign.started`, …) |
//! | `P.scheduler` | quorum queue, bound to `campaign.#`, `number.#`, `message.queued` | wakes the scheduler |
//! | `P.send.<number id>` | quorum queue, single active consumer, delivery limit, dead-letter | one number's send jobs |
//! | `P.dead` | fanout exchange + quorum queue | jobs that hit their delivery limit |
//! | `P.webhooks` | quorum queue, delivery limit, dead-letter | webhook attempts due now |
//! | `P.webhooks.retry.<delay>` | quorum queue, message TTL = delay, dead-letters into `P.webhooks` | webhook attempts waiting out their back-off |

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{config::RabbitConfig, metrics as m};

/// How long closing a connection or a channel may wait for the broker's
/// close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long acknowledging a delivery may take. An ack written just as its
/// connection dies may never complete (seen once in the broker-restart
/// fault test: a worker's driver waited on it, or on its consumer, for good).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long declaring queues and exchanges may take outside a subscription
/// (which has its own bound).
const DECLARE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq: timed out after {0:?} ({1})")]
    Timeout(Duration, &'static str),
    /// The broker could not route a mandatory message (no such queue).
    #[error("rabbitmq returned the message unroutable: {0}")]
    Returned(String),
    #[error("rabbitmq refused the message (nack)")]
    Nacked,
    #[error("rabbitmq did not confirm the message (confirms not enabled)")]
    NotConfirmed,
    #[error("rabbitmq unavailable: {0}")]
    Unavailable(String),
}

/// Exchange and queue names, and their declarations.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
}

impl Topology {
    pub fn new(config: &RabbitConfig) -> Self {
        Self {
            prefix: config.prefix.clone(),
            delivery_limit: config.delivery_limit,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    pub fn scheduler_queue(&self) -> String {
        format!("{}.scheduler", self.prefix)
    }

    pub fn send_queue(&self, number_id: Uuid) -> String {
        format!("{}.send.{number_id}", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn webhook_queue(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// The queue where webhook jobs wait `delay` before they are due.
    pub fn webhook_retry_queue(&self, delay: Duration) -> String {
        format!("{}.webhooks.retry.{}ms", self.prefix, delay.as_millis())
    }

    /// Declares the webhook queue and one waiting queue per retry delay.
    /// Idempotent for a given schedule.
    pub async fn declare_webhook_queues(
        &self,
        channel: &Channel,
        delays: &[Duration],
    ) -> Result<(), QueueError> {
        let mut args = quorum_args();
        // A job that keeps crashing its consumer goes to `P.dead` instead of
        // looping (the delivery itself is retried from Postgres by the sweep).
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongUInt(self.delivery_limit),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead_letter_exchange())),
        );
        channel
            .queue_declare(
                self.webhook_queue().into(),
                QueueDeclareOptions::durable(),
                args,
            )
            .await?;
        let mut declared = Vec::new();
        for delay in delays.iter().filter(|d| !d.is_zero()) {
            if declared.contains(delay) {
                continue;
            }
            declared.push(*delay);
            let mut args = quorum_args();
            // Every job here waits the same time, so expiry is first in,
            // first out; expired jobs are dead-lettered, through the default
            // exchange, into the webhook queue: the TTL is the back-off.
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(delay.as_millis() as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from("")),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(LongString::from(self.webhook_queue())),
            );
            channel
                .queue_declare(
                    self.webhook_retry_queue(*delay).into(),
                    QueueDeclareOptions::durable(),
                    args,
                )
                .await?;
        }
        Ok(())
    }

    /// Declares the shared exchanges and queues. Idempotent.
    pub async fn declare_common(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable = ExchangeDeclareOptions {
            // Survives a broker restart.
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.events_exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead_letter_queue().into(),
                QueueDeclareOptions::durable(),
                quorum_args(),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.scheduler_queue().into(),
                QueueDeclareOptions::durable(),
                quorum_args(),
            )
            .await?;
        // Campaign and number changes, and direct messages, are what the
        // scheduler plans around.
        for topic in ["campaign.#", "number.#", "message.queued"] {
            channel
                .queue_bind(
                    self.scheduler_queue().into(),
                    self.events_exchange().into(),
                    topic.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares a number's send queue. Idempotent (same arguments every time).
    pub async fn declare_send_queue(
        &self,
        channel: &Channel,
        number_id: Uuid,
    ) -> Result<(), QueueError> {
        let mut args = quorum_args();
        // Only one consumer receives at a time, even if two workers subscribe: a
        // second guard behind the lease, never the guarantee.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        // A job redelivered this many times (a crash loop on it) is dead-lettered
        // instead of blocking the number's queue forever.
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongUInt(self.delivery_limit),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead_letter_exchange())),
        );
        let declare = channel.queue_declare(
            self.send_queue(number_id).into(),
            QueueDeclareOptions::durable(),
            args,
        );
        within(DECLARE_TIMEOUT, "declare a send queue", declare).await?;
        Ok(())
    }
}

/// Declares the shared exchanges and queues, retrying until the broker answers
/// or `shutdown`.
pub async fn declare_when_ready(
    broker: &Broker,
    topology: &Topology,
    shutdown: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let declared = async {
            let channel = broker.channel().await?;
            let declared = within(
                DECLARE_TIMEOUT,
                "declare",
                topology.declare_common(&channel),
            )
            .await;
            close_channel(&channel, "declared").await;
            declared
        }
        .await;
        match declared {
            Ok(()) => return,
            Err(err) => tracing::warn!(error = %err, "rabbitmq not ready; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Quorum queues: replicated, fsynced, and the only type on RabbitMQ 3.10 with
/// a delivery limit.
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

/// Properties of every message Herald publishes.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        // 2 = persistent: written to disk, survives a broker restart.
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}

/// A connection to the broker, opened on first use and opened again when the
/// previous one died. Components ask it for channels each time they (re)start.
pub struct Broker {
    config: RabbitConfig,
    name: String,
    connection: Mutex<Option<Live>>,
    blocked: Arc<AtomicBool>,
}

/// The open connection, and a token cancelled once it failed.
struct Live {
    connection: Arc<Connection>,
    lost: CancellationToken,
}

impl Broker {
    pub fn new(config: &RabbitConfig, connection_name: &str) -> Arc<Self> {
        Arc::new(Self {
            config: config.clone(),
            name: connection_name.to_string(),
            connection: Mutex::new(None),
            blocked: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether a connection is open right now (for readiness checks).
    pub async fn is_connected(&self) -> bool {
        self.connection
            .lock()
            .await
            .as_ref()
            .is_some_and(|live| live.connection.status().connected())
    }

    /// Whether the broker has blocked publishing (resource alarm).
    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// The live connection, connecting if there is none.
    pub async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        Ok(self.live().await?.0)
    }

    /// The live connection and the token cancelled when it fails.
    async fn live(&self) -> Result<(Arc<Connection>, CancellationToken), QueueError> {
        let mut slot = self.connection.lock().await;
        if let Some(live) = slot.as_ref() {
            if live.connection.status().connected() {
                return Ok((live.connection.clone(), live.lost.clone()));
            }
            live.lost.cancel();
        }
        let timeout = self.config.connect_timeout();
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(self.name.clone()));
        let conn = within(
            timeout,
            "connect",
            Connection::connect(self.config.url.expose(), properties),
        )
        .await?;
        let conn = Arc::new(conn);
        let lost = CancellationToken::new();
        self.watch_events(&conn, lost.clone());
        tracing::info!(name = %self.name, "connected to rabbitmq");
        if !self.blocked.load(Ordering::Relaxed) {
            metrics::gauge!(m::RABBITMQ_BLOCKED).set(0.0);
        }
        *slot = Some(Live {
            connection: conn.clone(),
            lost: lost.clone(),
        });
        Ok((conn, lost))
    }

    /// Forgets the current connection so the next call opens a new one.
    pub async fn reset(&self) {
        if let Some(live) = self.connection.lock().await.take() {
            live.lost.cancel();
            // Bounded: on a connection whose socket is already gone the
            // close-ok never comes.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, live.connection.close(200, "reset".into()))
                .await;
        }
    }

    pub async fn channel(&self) -> Result<Channel, QueueError> {
        Ok(self.watched_channel().await?.0)
    }

    /// A channel, and the token cancelled when its connection fails.
    async fn watched_channel(&self) -> Result<(Channel, CancellationToken), QueueError> {
        let (conn, lost) = self.live().await?;
        let timeout = self.config.connect_timeout();
        match within(timeout, "open a channel", conn.create_channel()).await {
            Ok(channel) => Ok((channel, lost)),
            Err(err) => {
                // A connection that cannot open channels is as good as dead.
                self.reset().await;
                Err(err)
            }
        }
    }

    /// Consumes `queue` on a channel of its own, with at most `prefetch`
    /// deliveries unacknowledged, after `declare` ran on that channel. Each
    /// step is bounded by the connect timeout.
    pub async fn subscribe<F, Fut>(
        &self,
        queue: &str,
        tag: &str,
        prefetch: u16,
        declare: F,
    ) -> Result<Subscription, QueueError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<(), QueueError>>,
    {
        let (channel, lost) = self.watched_channel().await?;
        let timeout = self.config.connect_timeout();
        let consumer = within(timeout, "subscribe", async {
            declare(channel.clone()).await?;
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queue.into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, QueueError>(consumer)
        })
        .await;
        let consumer = match consumer {
            Ok(consumer) => consumer,
            Err(err) => {
                close_channel(&channel, "not subscribed").await;
                return Err(err);
            }
        };
        Ok(Subscription {
            channel,
            consumer,
            lost,
        })
    }

    /// A channel in confirm mode, for publishing.
    pub async fn confirm_channel(&self) -> Result<Channel, QueueError> {
        let channel = self.channel().await?;
        let timeout = self.config.connect_timeout();
        within(
            timeout,
            "confirm mode",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(channel)
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&self) {
        self.reset().await;
    }

    fn watch_events(&self, conn: &Connection, lost: CancellationToken) {
        let mut events = Box::pin(conn.events_listener());
        let blocked = self.blocked.clone();
        let name = self.name.clone();
        let status = conn.status().clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    lapin::Event::ConnectionBlocked(reason) => {
                        tracing::warn!(%name, %reason, "ConnectionBlocked: rabbitmq stopped accepting publishes");
                        blocked.store(true, Ordering::Relaxed);
                        metrics::gauge!(m::RABBITMQ_BLOCKED).set(1.0);
                    }
                    lapin::Event::ConnectionUnblocked => {
                        tracing::info!(%name, "ConnectionUnblocked: rabbitmq accepts publishes again");
                        blocked.store(false, Ordering::Relaxed);
                        metrics::gauge!(m::RABBITMQ_BLOCKED).set(0.0);
                    }
                    lapin::Event::Error(err) => {
                        tracing::warn!(%name, error = %err, "rabbitmq connection error");
                        // A channel's error is reported here too; only the
                        // connection's own ends its subscriptions.
                        if !status.connected() {
                            lost.cancel();
                        }
                    }
                    _ => {}
                }
            }
            lost.cancel();
        });
    }
}

/// A consumer on a channel of its own ([`Broker::subscribe`]). It ends when
/// its connection fails even if the consumer's stream does not say so.
pub struct Subscription {
    channel: Channel,
    consumer: Consumer,
    lost: CancellationToken,
}

impl Subscription {
    /// The next delivery; `None` when the broker cancelled the consumer, an
    /// error when its channel or connection failed (subscribe again).
    pub async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        tokio::select! {
            next = self.consumer.next() => next.map(|delivery| delivery.map_err(QueueError::from)),
            _ = self.lost.cancelled() => Some(Err(QueueError::Unavailable("connection lost".into()))),
        }
    }

    /// The next delivery, or `None` once `stop` is cancelled or the broker
    /// cancelled the consumer; an error when its channel or connection
    /// failed (subscribe again).
    pub async fn next_until(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<Option<Delivery>, QueueError> {
        tokio::select! {
            _ = stop.cancelled() => Ok(None),
            next = self.next() => next.transpose(),
        }
    }

    /// Closes the channel (bounded); unacknowledged deliveries go back to
    /// the queue.
    pub async fn close(self) {
        close_channel(&self.channel, "bye").await;
    }
}

/// `step`, failing with [`QueueError::Timeout`] once `limit` has passed.
async fn within<T, E: Into<QueueError>>(
    limit: Duration,
    what: &'static str,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(limit, step).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(QueueError::Timeout(limit, what)),
    }
}

async fn close_channel(channel: &Channel, why: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, why.into())).await;
}

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// Back to the queue, for another delivery.
    Requeue,
    /// Dead-lettered (or dropped, where the queue has no dead-letter exchange).
    Reject,
}

/// Acks, requeues or rejects a delivery (`&delivery` will do, or its
/// acker alone, which outlives it), bounded by [`SETTLE_TIMEOUT`].
/// False when that did not reach the broker: its channel is closed or
/// failing, and the broker redelivers the job once the channel is gone.
pub async fn settle(acker: &Acker, how: Settle) -> bool {
    let settled = async {
        match how {
            Settle::Ack => acker.ack(BasicAckOptions::default()).await,
            Settle::Requeue => {
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
            Settle::Reject => acker.reject(BasicRejectOptions { requeue: false }).await,
        }
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, settled).await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            tracing::warn!(
                ?how,
                "delivery not settled: its channel is closed (it will be redelivered)"
            );
            false
        }
        Ok(Err(err)) => {
            tracing::warn!(?how, error = %err, "delivery not settled (it will be redelivered)");
            false
        }
        Err(_) => {
            tracing::warn!(?how, timeout = ?SETTLE_TIMEOUT, "delivery not settled in time (it will be redelivered)");
            false
        }
    }
}

/// One message to publish.
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub payload: &'a [u8],
}

/// Publishes with confirms on a channel of its own, reopened after errors.
/// `Ack` with a returned message, `Nack`, `NotRequested`, and a confirm that
/// does not come within the timeout are all failures.
pub struct Publisher {
    broker: Arc<Broker>,
    confirm_timeout: Duration,
    channel: Mutex<Option<Channel>>,
}

impl Publisher {
    pub fn new(broker: Arc<Broker>, config: &RabbitConfig) -> Self {
        Self {
            broker,
            confirm_timeout: config.confirm_timeout(),
            channel: Mutex::new(None),
        }
    }

    /// The publisher's channel, opened if needed. Lets callers declare on it.
    pub async fn channel(&self) -> Result<Channel, QueueError> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.broker.confirm_channel().await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    async fn forget_channel(&self) {
        *self.channel.lock().await = None;
    }

    pub async fn publish(&self, message: Outgoing<'_>) -> Result<(), QueueError> {
        self.publish_all(std::slice::from_ref(&message))
            .await
            .pop()
            .expect("one result per message")
    }

    /// Publishes every message, then waits for all their confirms (pipelined:
    /// one round trip for the batch, not one per message). One result per
    /// message, in order.
    pub async fn publish_all(&self, messages: &[Outgoing<'_>]) -> Vec<Result<(), QueueError>> {
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(err) => {
                let text = err.to_string();
                return messages
                    .iter()
                    .map(|_| Err(QueueError::Unavailable(text.clone())))
                    .collect();
            }
        };
        // Writing the messages counts against the same deadline as their
        // confirms: on a connection that dies mid-write a publish may never
        // complete either (see `SETTLE_TIMEOUT`).
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let publish = channel.basic_publish(
                message.exchange.into(),
                message.routing_key.into(),
                BasicPublishOptions {
                    // Return the message rather than drop it when no queue
                    // matches: a missing queue must be an error, not silence.
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                message.payload,
                json_properties(),
            );
            pending.push(tokio::time::timeout_at(deadline, publish).await);
        }
        let mut results = Vec::with_capacity(messages.len());
        let mut channel_broken = false;
        for sent in pending {
            let result = match sent {
                Err(_) => {
                    channel_broken = true;
                    Err(QueueError::Timeout(self.confirm_timeout, "publish"))
                }
                Ok(Err(err)) => {
                    channel_broken = true;
                    Err(QueueError::Amqp(err))
                }
                Ok(Ok(confirm)) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => {
                        channel_broken = true;
                        Err(QueueError::Timeout(
                            self.confirm_timeout,
                            "publisher confirm",
                        ))
                    }
                    Ok(Err(err)) => {
                        channel_broken = true;
                        Err(QueueError::Amqp(err))
                    }
                    Ok(Ok(confirmation)) => check_confirmation(confirmation),
                },
            };
            metrics::counter!(m::RABBITMQ_PUBLISHED, "outcome" => if result.is_ok() { "ok" } else { "error" })
                .increment(1);
            results.push(result);
        }
        if channel_broken {
            // Confirms still pending on this channel can no longer be trusted.
            self.forget_channel().await;
        }
        results
    }
}

fn check_confirmation(confirmation: Confirmation) -> Result<(), QueueError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(QueueError::Returned(format!(
            "{} {}",
            returned.reply_code, returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(QueueError::Nacked),
        Confirmation::NotRequested => Err(QueueError::NotConfirmed),
    }
}
