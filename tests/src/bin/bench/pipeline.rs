//! Messages per second end to end with pacing off (`pipeline`), against a
//! bare consumer taking as many jobs off as many queues and acking them,
//! and against the parts alone: Postgres making each message's state
//! changes (in Herald's `messages` table, then in a bare one) while the
//! broker carries the jobs, nothing of Herald running. CPU per message by
//! kind of process, for each.
//!
//! Herald: a campaign started through the API, planned by the scheduler,
//! sent by one worker process through the simulator (server ack and
//! receipts at zero delay), every verdict and receipt recorded in Postgres.
//! Pacing off means: no gap, no jitter, no "typing…" pause, no process-wide
//! send limit, no warm-up or daily cap, an all-day window, and a look-ahead
//! large enough that the scheduler's tick never starves a number.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use herald_shared::queue::{Broker, Outgoing, Publisher, Topology};
use herald_tests::{
    StackOptions, TestDb,
    fixtures::{CampaignSpec, Fixture},
    stack::{delete_broker_objects, rabbit_config},
    unique_suffix,
};
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use serde_json::json;
use uuid::Uuid;

use crate::{CpuByKind, goals::Goal};

pub async fn run(numbers: u32, messages: u32, workers: usize) -> Vec<Goal> {
    let stack = herald_tests::Stack::start(StackOptions {
        workers,
        min_gap_ms: 0,
        daily_cap: 100_000,
        jitter_ms: 0,
        typing_ms_per_char: 0,
        typing_min_ms: 0,
        typing_max_ms: 0,
        env: super::with_caller_env(
            [
                ("HERALD__PACING__DEFAULT_JITTER_KIND", "none"),
                ("HERALD__WORKER__MAX_SENDS_PER_SECOND", "1000000"),
                ("HERALD__SCHEDULER__LOOKAHEAD", "200"),
                ("HERALD__SIM__SERVER_ACK_DELAY_MS", "0"),
                ("HERALD__SIM__DELIVERED_DELAY_MS", "0"),
                ("HERALD__SIM__READ_DELAY_MS", "0"),
                ("HERALD__API__MAX_INLINE_RECIPIENTS", "1000000"),
                ("HERALD__API__MAX_BODY_BYTES", "268435456"),
                // Registering a few hundred numbers one request each.
                ("HERALD__API__RATE_LIMIT_PER_SECOND", "100000"),
                ("HERALD__API__RATE_LIMIT_BURST", "100000"),
                ("HERALD__TELEMETRY__LOG_FILTER", "info,lapin=warn"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        ..StackOptions::default()
    })
    .await;
    let senders = crate::sim_numbers(&stack, 980, numbers).await;
    let template = stack
        .api
        .create_template("bench", "Oi {{name}}, tudo bem?")
        .await;
    let recipients: Vec<_> = (0..messages)
        .map(|i| json!({ "phone": format!("+55119{i:08}"), "variables": { "name": format!("R{i}") } }))
        .collect();
    let campaign = crate::create_campaign(
        &stack,
        &json!({
            "name": "pipeline", "template_id": template, "numbers": senders,
            "recipients": recipients, "window": { "start": "00:00", "end": "24:00" },
        }),
    )
    .await;
    drop(recipients);
    crate::all_connected(&stack, numbers, Duration::from_secs(120)).await;

    let cpu_before = CpuByKind::now();
    let started = Instant::now();
    stack.api.start_campaign(&campaign).await;
    let client = stack.db.pool.get().await.expect("connection");
    let id: Uuid = campaign.parse().expect("uuid");
    // Sent, settled (a receipt or a final verdict recorded), and the seconds
    // from the first send to the last; past 30 minutes it fails, saying how
    // far the run got.
    let progress = async || {
        let row = client
            .query_one(
                "SELECT count(sent_at),
                        count(*) FILTER (WHERE state IN ('delivered', 'read', 'failed', 'unknown')),
                        extract(epoch FROM max(sent_at) - min(sent_at))::float8
                   FROM messages WHERE campaign_id = $1",
                &[&id],
            )
            .await
            .expect("progress");
        let (sent, settled): (i64, i64) = (row.get(0), row.get(1));
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "pipeline stuck at {sent} sent, {settled} settled"
        );
        (sent, settled, row.get::<_, Option<f64>>(2))
    };
    // While it sends, only the campaign's row is read (the scheduler
    // completes the campaign once nothing is pending): counting the whole
    // campaign every half second cost Postgres ~50 ms a time, on the CPU the
    // run is bound by (docs/BENCHMARKS.md, "The harness's own reads").
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status: String = client
            .query_one("SELECT status::text FROM campaigns WHERE id = $1", &[&id])
            .await
            .expect("campaign status")
            .get(0);
        if status == "completed" {
            break;
        }
        if started.elapsed() >= Duration::from_secs(1800) {
            progress().await; // fails, with the counts
        }
    }
    let (sent, span, settled_after) = loop {
        let (sent, settled, span) = progress().await;
        if settled == i64::from(messages) {
            break (sent, span.expect("messages sent"), started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let herald_cpu = CpuByKind::now().per_item_since(&cpu_before, messages);
    let accepted = stack.sim.log().await.len();
    assert_eq!(sent, i64::from(messages), "every message sent");
    assert_eq!(
        accepted, messages as usize,
        "the simulator accepted each once"
    );
    let herald_rate = sent as f64 / span;
    let read_share: f64 = client
        .query_one(
            "SELECT count(read_at)::float8 / count(*) FROM messages WHERE campaign_id = $1",
            &[&id],
        )
        .await
        .expect("read share")
        .get(0);
    drop(client);
    stack.stop().await;

    let bare_rate = bare_consume(numbers, messages).await;
    let [schema, bare] = parts_alone(numbers, messages, read_share).await;
    println!(
        "pipeline  {messages} messages over {numbers} numbers, {workers} worker process(es), \
         pacing off, simulator at zero delay\n  \
         herald          {herald_rate:>7.0} msgs/s  (first to last send {span:.1} s; every \
         receipt recorded {:.1} s after the start)\n  \
         bare consume    {bare_rate:>7.0} msgs/s  (the same jobs off {numbers} queues, one \
         unacked each, acked one by one)\n  \
         ratio           {:>7.2}x  (goal >= 5,000 msgs/s)\n  \
         parts alone     {:>7.0} msgs/s  (both at once, nothing of Herald running: Postgres \
         making each message's state changes in `messages`, a transaction per step for a \
         message of each number, {LANES} connections, done in {:.1} s; the broker taking the \
         jobs published with confirms and consumed + acked as above, done in {:.1} s)\n  \
         bare table      {:>7.0} msgs/s  (the same with a table of only the changed columns \
         and its primary key: Postgres done in {:.1} s, the broker in {:.1} s)\n  \
         herald / parts  {:>7.2}x  ({:.2}x of the parts with the bare table)\n  \
         CPU ms a message  herald run   {herald_cpu}\n  \
         {:>18}parts alone  {}\n  \
         {:>18}bare table   {}",
        settled_after.as_secs_f64(),
        herald_rate / bare_rate,
        schema.rate,
        schema.postgres.as_secs_f64(),
        schema.broker.as_secs_f64(),
        bare.rate,
        bare.postgres.as_secs_f64(),
        bare.broker.as_secs_f64(),
        herald_rate / schema.rate,
        herald_rate / bare.rate,
        "",
        schema.cpu,
        "",
        bare.cpu,
    );
    vec![Goal::new(
        format!("pipeline: {numbers} numbers, pacing off"),
        format!("{herald_rate:.0} msgs/s"),
        ">= 5,000 msgs/s",
        herald_rate >= 5000.0,
    )]
}

/// Jobs per second a bare consumer takes off `numbers` send queues (with
/// the worker's prefetch of one) and acks, the jobs published beforehand.
async fn bare_consume(numbers: u32, messages: u32) -> f64 {
    let queues = BareQueues::declare(numbers).await;
    queues.publish(messages).await;
    let started = Instant::now();
    queues.consume(messages).await;
    let rate = f64::from(messages) / started.elapsed().as_secs_f64();
    queues.delete().await;
    rate
}

/// Send queues as the worker's numbers have them, used by a plain broker
/// client: no Herald process involved.
struct BareQueues {
    prefix: String,
    broker: Arc<Broker>,
    publisher: Publisher,
    ids: Vec<Uuid>,
    queues: Vec<String>,
}

impl BareQueues {
    async fn declare(numbers: u32) -> Self {
        let prefix = format!("herald_t_{}", unique_suffix());
        let config = rabbit_config(&prefix);
        let broker = Broker::new(&config, "bench bare queues");
        let topology = Topology::new(&config);
        let publisher = Publisher::new(broker.clone(), &config);
        let ids: Vec<Uuid> = (0..numbers).map(|_| Uuid::now_v7()).collect();
        let channel = broker.channel().await.expect("channel");
        for id in &ids {
            topology
                .declare_send_queue(&channel, *id)
                .await
                .expect("queue");
        }
        let queues = ids.iter().map(|id| topology.send_queue(*id)).collect();
        BareQueues {
            prefix,
            broker,
            publisher,
            ids,
            queues,
        }
    }

    /// `messages` jobs spread evenly over the queues, published with
    /// confirms 5,000 at a time.
    async fn publish(&self, messages: u32) {
        let payload = serde_json::to_vec(&json!({"type": "send", "message_id": 1})).unwrap();
        let messages = messages as usize;
        for start in (0..messages).step_by(5000) {
            let outgoing: Vec<_> = (start..(start + 5000).min(messages))
                .map(|i| Outgoing {
                    exchange: "",
                    routing_key: &self.queues[i % self.queues.len()],
                    payload: &payload,
                })
                .collect();
            for result in self.publisher.publish_all(&outgoing).await {
                result.expect("published");
            }
        }
    }

    /// Takes the `messages` jobs [`Self::publish`] spreads over the queues
    /// off them, one unacked job per queue (the worker's prefetch), and
    /// acks each; returns when every one is acked.
    async fn consume(&self, messages: u32) {
        let count = self.queues.len();
        let per_queue = |q: usize| (messages as usize + count - 1 - q) / count;
        let mut consumers = tokio::task::JoinSet::new();
        for (q, queue) in self.queues.iter().enumerate() {
            let channel = self.broker.channel().await.expect("channel");
            channel
                .basic_qos(1, BasicQosOptions::default())
                .await
                .expect("qos");
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "bench".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let expected = per_queue(q);
            consumers.spawn(async move {
                for _ in 0..expected {
                    let delivery = consumer.next().await.expect("delivery").expect("ok");
                    delivery.ack(BasicAckOptions::default()).await.expect("ack");
                }
                drop(channel);
            });
        }
        while consumers.join_next().await.is_some() {}
    }

    async fn delete(self) {
        delete_broker_objects(&self.prefix, &self.ids).await;
        self.broker.close().await;
    }
}

/// Herald's parts doing the pipeline's work with nothing of Herald running,
/// both at once on a database and queues of their own (docs/BENCHMARKS.md,
/// "The parts alone").
struct Parts {
    /// Messages over the time until both parts were done.
    rate: f64,
    postgres: Duration,
    broker: Duration,
    /// CPU milliseconds a message, by kind of process.
    cpu: String,
}

/// Connections the Postgres part writes from: more than the two cores, so
/// that one's wait for its commit's flush overlaps another's statements.
const LANES: usize = 8;

/// Messages of a number picked by one statement: a quarter of the
/// pipeline's look-ahead, so that the lanes share the work in small units
/// and all stay busy until the end (a pick is one statement for this many
/// messages either way).
const PICKED: usize = 50;

/// The parts at work twice: Postgres changing the states in Herald's
/// `messages` table (its indexes and trigger as they are), then in a table
/// with nothing but the columns changed and a primary key; each time with
/// the broker part at once, on queues of its own.
async fn parts_alone(numbers: u32, messages: u32, read_share: f64) -> [Parts; 2] {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let mut senders = Vec::new();
    for i in 0..numbers {
        senders.push(fx.number(&db, i, 100_000).await);
    }
    let phones: Vec<String> = (0..messages).map(|i| format!("+55119{i:08}")).collect();
    let campaign = fx
        .campaign_with(
            &db,
            &CampaignSpec {
                phones: Some(&phones),
                start: false,
                ..CampaignSpec::new(&senders, messages)
            },
        )
        .await;
    let client = db.pool.get().await.expect("connection");
    client
        .execute(
            "CREATE TABLE bare_messages AS
                 SELECT id, state, sender_number_id, attempts, claim_epoch, scheduled_at,
                        sending_at, sent_at, delivered_at, read_at
                   FROM messages WHERE campaign_id = $1",
            &[&campaign],
        )
        .await
        .expect("bare table");
    // One at a time: VACUUM may not run in the transaction several
    // statements of one call would make.
    for statement in [
        "ALTER TABLE bare_messages ADD PRIMARY KEY (id)",
        "VACUUM ANALYZE messages",
        "VACUUM ANALYZE bare_messages",
    ] {
        client.batch_execute(statement).await.expect(statement);
    }
    let ids: Vec<i64> = client
        .query(
            "SELECT id FROM messages WHERE campaign_id = $1 ORDER BY id",
            &[&campaign],
        )
        .await
        .expect("message ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(client);

    let mut parts = Vec::new();
    for table in ["messages", "bare_messages"] {
        let queues = BareQueues::declare(numbers).await;
        let cpu_before = CpuByKind::now();
        let started = Instant::now();
        let postgres = async {
            row_changes(&db, table, &senders, &ids, read_share).await;
            started.elapsed()
        };
        let broker = async {
            tokio::join!(queues.publish(messages), queues.consume(messages));
            started.elapsed()
        };
        let (postgres, broker) = tokio::join!(postgres, broker);
        let cpu = CpuByKind::now().per_item_since(&cpu_before, messages);
        queues.delete().await;
        parts.push(Parts {
            rate: f64::from(messages) / postgres.max(broker).as_secs_f64(),
            postgres,
            broker,
            cpu,
        });
    }
    parts.try_into().ok().expect("two runs")
}

/// The state changes Herald records for each message, as plain updates of
/// `table` by id, batched as far as the send protocol allows: a pick takes
/// [`PICKED`] messages of one number; a claim, a verdict and each kind of
/// receipt is a transaction for the next message of every number (a number
/// claims its next message only after its last one's verdict). Message `i`
/// goes out through number `i % numbers`; the first `read_share` of each
/// hundred messages is read, as many as the simulator read in Herald's run.
/// On `messages` its trigger writes the outbox rows as in Herald; what
/// Herald adds (the relay's copy to `events`, the worker's read of each
/// message, `last_send_at`) is left out.
async fn row_changes(db: &TestDb, table: &str, numbers: &[Uuid], ids: &[i64], read_share: f64) {
    let pick = format!(
        "UPDATE {table} SET state = 'scheduled', sender_number_id = $2, scheduled_at = now() \
         WHERE id = ANY($1)"
    );
    let steps = [
        "state = 'sending', sending_at = now(), attempts = attempts + 1, claim_epoch = 1",
        "state = 'sent', sent_at = now()",
        "state = 'delivered', delivered_at = now()",
        "state = 'read', read_at = now()",
    ]
    .map(|set| format!("UPDATE {table} SET {set} WHERE id = ANY($1)"));
    let n = numbers.len();
    let read_below = (read_share * 100.0).round() as usize;
    // Work goes in units of PICKED messages a number; each lane takes the
    // next unit not taken yet.
    let unit_len = PICKED * n;
    let ids: Arc<[i64]> = ids.into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut lanes = tokio::task::JoinSet::new();
    for _ in 0..LANES {
        let (pool, ids, numbers) = (db.pool.clone(), ids.clone(), numbers.to_vec());
        let (next, pick, steps) = (next.clone(), pick.clone(), steps.clone());
        lanes.spawn(async move {
            let client = pool.get().await.expect("connection");
            let pick = client.prepare(&pick).await.expect("prepare");
            let mut prepared = Vec::new();
            for step in &steps {
                prepared.push(client.prepare(step).await.expect("prepare"));
            }
            let [claim, sent, delivered, read] = <[_; 4]>::try_from(prepared).expect("4 steps");
            loop {
                let first = next.fetch_add(1, Ordering::Relaxed) * unit_len;
                let Some(unit) = ids.get(first..(first + unit_len).min(ids.len())) else {
                    break;
                };
                if unit.is_empty() {
                    break;
                }
                for (k, number) in numbers.iter().enumerate() {
                    let picked: Vec<i64> = unit.iter().skip(k).step_by(n).copied().collect();
                    client
                        .execute(&pick, &[&picked, number])
                        .await
                        .expect("pick");
                }
                for (r, round) in unit.chunks(n).enumerate() {
                    for statement in [&claim, &sent, &delivered] {
                        client.execute(statement, &[&round]).await.expect("step");
                    }
                    let read_ids: Vec<i64> = (0..round.len())
                        .filter(|i| (first + r * n + i) % 100 < read_below)
                        .map(|i| round[i])
                        .collect();
                    if !read_ids.is_empty() {
                        client.execute(&read, &[&read_ids]).await.expect("read");
                    }
                }
            }
        });
    }
    while let Some(lane) = lanes.join_next().await {
        lane.expect("lane");
    }
}
