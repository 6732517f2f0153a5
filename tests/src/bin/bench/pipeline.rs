//! Messages per second end to end with pacing off (`pipeline`), against a
//! bare consumer taking as many jobs off as many queues and acking them.
//!
//! Herald: a campaign started through the API, planned by the scheduler,
//! sent by one worker process through the simulator (server ack and
//! receipts at zero delay), every verdict and receipt recorded in Postgres.
//! Pacing off means: no gap, no jitter, no "typing…" pause, no process-wide
//! send limit, no warm-up or daily cap, an all-day window, and a look-ahead
//! large enough that the scheduler's tick never starves a number.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald_shared::queue::{Broker, Outgoing, Publisher, Topology};
use herald_tests::{
    StackOptions,
    stack::{delete_broker_objects, rabbit_config},
    unique_suffix,
};
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use serde_json::json;
use uuid::Uuid;

use crate::goals::Goal;

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
    let accepted = stack.sim.log().await.len();
    assert_eq!(sent, i64::from(messages), "every message sent");
    assert_eq!(
        accepted, messages as usize,
        "the simulator accepted each once"
    );
    let herald_rate = sent as f64 / span;
    stack.stop().await;

    let bare_rate = bare_consume(numbers, messages).await;
    println!(
        "pipeline  {messages} messages over {numbers} numbers, {workers} worker process(es), \
         pacing off, simulator at zero delay\n  \
         herald          {herald_rate:>7.0} msgs/s  (first to last send {span:.1} s; every \
         receipt recorded {:.1} s after the start)\n  \
         bare consume    {bare_rate:>7.0} msgs/s  (the same jobs off {numbers} queues, one \
         unacked each, acked one by one)\n  \
         ratio           {:>7.2}x  (goal >= 5,000 msgs/s)",
        settled_after.as_secs_f64(),
        herald_rate / bare_rate,
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
    let prefix = format!("herald_t_{}", unique_suffix());
    let config = rabbit_config(&prefix);
    let broker = Broker::new(&config, "bench bare consume");
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
    let payload = serde_json::to_vec(&json!({"type": "send", "message_id": 1})).unwrap();
    let queues: Vec<String> = ids.iter().map(|id| topology.send_queue(*id)).collect();
    let messages_n = messages as usize;
    for start in (0..messages_n).step_by(5000) {
        let outgoing: Vec<_> = (start..(start + 5000).min(messages_n))
            .map(|i| Outgoing {
                exchange: "",
                routing_key: &queues[i % queues.len()],
                payload: &payload,
            })
            .collect();
        for result in publisher.publish_all(&outgoing).await {
            result.expect("published");
        }
    }
    let per_queue = |q: usize| (messages as usize + queues.len() - 1 - q) / queues.len();
    let started = Instant::now();
    let mut consumers = tokio::task::JoinSet::new();
    for (q, queue) in queues.iter().enumerate() {
        let channel = broker.channel().await.expect("channel");
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
    let rate = f64::from(messages) / started.elapsed().as_secs_f64();
    delete_broker_objects(&prefix, &ids).await;
    rate
}
