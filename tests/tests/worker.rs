//! The worker's send protocol with an in-process fake of the WhatsApp session
//! (real Postgres, real RabbitMQ, real scheduler): each kind of verdict ends in
//! the state the rules demand.

use std::{sync::Arc, time::Duration};

use herald_shared::{config::Config, domain::NumberKind};
use herald_tests::{
    TestDb,
    fixtures::Fixture,
    inprocess::config,
    stack::{delete_broker_objects, ready_in_queue},
    unique_suffix, wait_for,
};
use herald_worker::session::{
    Connectors, SendError,
    fake::{Action, FakeNetwork},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A worker on `network` and a scheduler, in this process, until `shutdown`.
fn start(
    config: &Config,
    network: &FakeNetwork,
    shutdown: &CancellationToken,
) -> (JoinHandle<()>, JoinHandle<()>) {
    let connectors = Connectors::default().with(NumberKind::Sim, Arc::new(network.clone()));
    let worker = tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move {
            herald_worker::run(&config, connectors, shutdown)
                .await
                .unwrap()
        }
    });
    let scheduler = tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move {
            herald_scheduler::run(&config, Default::default(), shutdown)
                .await
                .unwrap()
        }
    });
    (worker, scheduler)
}

/// A test database with one number (cap 100) and a campaign of `recipients`
/// on it, and a configuration with `settings` on queues of its own:
/// (database, number, campaign, queue prefix, configuration).
async fn one_campaign(
    recipients: u32,
    settings: &[(&str, &str)],
) -> (TestDb, Uuid, Uuid, String, Config) {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100).await;
    let campaign = fx.campaign(&db, &[number], recipients).await;
    let prefix = format!("herald_t_{}", unique_suffix());
    let config = config(&db, &prefix, settings);
    (db, number, campaign, prefix, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_verdict_ends_in_its_state() {
    let (db, number, campaign, prefix, config) = one_campaign(
        4,
        &[
            ("HERALD__SCHEDULER__TICK_MS", "50"),
            ("HERALD__WORKER__LEASE_RENEW_MS", "200"),
            ("HERALD__PACING__DEFAULT_JITTER_KIND", "none"),
            ("HERALD__PACING__RETRY_BASE_MS", "10"),
            ("HERALD__PACING__TYPING_MIN_MS", "1"),
            ("HERALD__PACING__TYPING_MAX_MS", "1"),
        ],
    )
    .await;
    let network = FakeNetwork::new();
    network.script([
        Ok(()),
        Err(SendError::Rejected { code: "479".into() }),
        Err(SendError::Unknown("no server ack".into())),
        Err(SendError::NotSent("connection blip".into())),
    ]);
    let shutdown = CancellationToken::new();
    let (worker, scheduler) = start(&config, &network, &shutdown);

    let client = db.pool.get().await.unwrap();
    let rows = wait_for("every message to end", Duration::from_secs(30), || {
        let client = &client;
        async move {
            let rows = client
                .query(
                    "SELECT id, state::text, attempts, coalesce(failure_reason, '')
                       FROM messages WHERE campaign_id = $1 ORDER BY id",
                    &[&campaign],
                )
                .await
                .ok()?;
            let states: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
            states
                .iter()
                .all(|s| !matches!(s.as_str(), "queued" | "scheduled" | "sending"))
                .then_some(rows)
        }
    })
    .await;
    let outcome: Vec<(String, i32, String)> = rows
        .iter()
        .map(|r| (r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        outcome,
        [
            ("sent".to_string(), 1, String::new()),
            (
                "failed".to_string(),
                1,
                "refused by WhatsApp (code 479)".to_string()
            ),
            ("unknown".to_string(), 1, "no server ack".to_string()),
            // Provably not sent: requeued, then sent on the second attempt.
            (
                "sent".to_string(),
                2,
                "not sent: connection blip".to_string()
            ),
        ]
    );
    // Typing came before each of the five calls.
    let actions = network.actions();
    let sends: Vec<usize> = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Action::Sent { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        sends.len(),
        4,
        "the not-sent call leaves no message: {actions:?}"
    );
    for i in sends {
        assert!(
            actions[..i]
                .iter()
                .rev()
                .any(|a| matches!(a, Action::Typing { on: true, .. })),
            "send without typing before it"
        );
    }
    wait_for("the campaign to complete", Duration::from_secs(10), || {
        let client = &client;
        async move {
            let status: String = client
                .query_one(
                    "SELECT status::text FROM campaigns WHERE id = $1",
                    &[&campaign],
                )
                .await
                .ok()?
                .get(0);
            (status == "completed").then_some(())
        }
    })
    .await;

    shutdown.cancel();
    worker.await.unwrap();
    scheduler.await.unwrap();
    // A graceful stop hands the lease back at once.
    let live: i64 = client
        .query_one(
            "SELECT count(*) FROM number_leases WHERE expires_at > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "lease released on shutdown");
    drop(client);
    delete_broker_objects(&prefix, &[number]).await;
}

/// Once its message is claimed, a job has done its part: it is acked while
/// the call is still in flight, so the broker hands over the number's next
/// job meanwhile; that job waits, unclaimed, for the verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_acked_once_its_message_is_claimed() {
    let (db, number, campaign, prefix, config) = one_campaign(
        2,
        &[
            ("HERALD__SCHEDULER__TICK_MS", "50"),
            ("HERALD__SCHEDULER__LOOKAHEAD", "2"),
            ("HERALD__PACING__DEFAULT_JITTER_KIND", "none"),
            ("HERALD__PACING__TYPING_MIN_MS", "1"),
            ("HERALD__PACING__TYPING_MAX_MS", "1"),
        ],
    )
    .await;
    let network = FakeNetwork::new();
    network.hold();
    let shutdown = CancellationToken::new();
    let (worker, scheduler) = start(&config, &network, &shutdown);

    let client = db.pool.get().await.unwrap();
    let states = || {
        let client = &client;
        async move {
            let rows = client
                .query(
                    "SELECT state::text FROM messages WHERE campaign_id = $1 ORDER BY state",
                    &[&campaign],
                )
                .await
                .ok()?;
            Some(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>())
        }
    };
    wait_for(
        "one message claimed, the other's job published",
        Duration::from_secs(30),
        || async {
            let states = states().await?;
            (states == ["scheduled", "sending"]).then_some(())
        },
    )
    .await;
    let broker = herald_shared::queue::Broker::new(&config.rabbitmq, "test");
    let channel = broker.channel().await.unwrap();
    let queue = herald_shared::queue::Topology::new(&config.rabbitmq).send_queue(number);
    // Acked at the claim, the first job let the broker deliver the second;
    // acked only after the verdict, the first would still hold it back.
    wait_for(
        "both jobs out of the queue",
        Duration::from_secs(10),
        || async {
            let ready = ready_in_queue(&channel, &queue).await.ok()?;
            (ready == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        states().await.unwrap(),
        ["scheduled", "sending"],
        "the next job waits for the verdict before its claim"
    );
    assert!(network.sent().is_empty(), "the call is still in flight");

    network.release();
    wait_for("both messages sent", Duration::from_secs(30), || async {
        let states = states().await?;
        (states == ["sent", "sent"]).then_some(())
    })
    .await;
    broker.close().await;
    shutdown.cancel();
    worker.await.unwrap();
    scheduler.await.unwrap();
    drop(client);
    delete_broker_objects(&prefix, &[number]).await;
}

/// Typing shown for no time is not shown: with the typing time zero (pacing
/// off), a number sends its messages without a "typing…" call before or
/// after; with any typing time, each send has one of each (the first test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_typing_time_shows_no_typing() {
    let (db, number, campaign, prefix, config) = one_campaign(
        2,
        &[
            ("HERALD__SCHEDULER__TICK_MS", "50"),
            ("HERALD__PACING__DEFAULT_JITTER_KIND", "none"),
            ("HERALD__PACING__TYPING_MIN_MS", "0"),
            ("HERALD__PACING__TYPING_MAX_MS", "0"),
        ],
    )
    .await;
    let network = FakeNetwork::new();
    let shutdown = CancellationToken::new();
    let (worker, scheduler) = start(&config, &network, &shutdown);

    let client = db.pool.get().await.unwrap();
    wait_for("both messages sent", Duration::from_secs(30), || {
        let client = &client;
        async move {
            let sent: i64 = client
                .query_one(
                    "SELECT count(*) FROM messages WHERE campaign_id = $1 AND state = 'sent'",
                    &[&campaign],
                )
                .await
                .ok()?
                .get(0);
            (sent == 2).then_some(())
        }
    })
    .await;
    let actions = network.actions();
    assert_eq!(network.sent().len(), 2, "{actions:?}");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Typing { .. })),
        "typing shown for no time: {actions:?}"
    );
    shutdown.cancel();
    worker.await.unwrap();
    scheduler.await.unwrap();
    drop(client);
    delete_broker_objects(&prefix, &[number]).await;
}
