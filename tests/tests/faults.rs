//! Fault injection: the real binaries, the real PostgreSQL and RabbitMQ, the
//! simulator, and things going wrong on purpose (killed and frozen workers,
//! crash points in the send protocol, broker and database restarts, a memory
//! alarm, a poison job, a network outage, SIGTERM to every process
//! mid-campaign). After each, the simulator's log
//! (every message the network accepted) is compared with Postgres:
//!
//! - **lost**: a message without a final state (still queued, scheduled or
//!   sending when the run is over);
//! - **duplicate**: a recipient who got the campaign's message more than once;
//! - **unknown**: counted apart (the call may or may not have reached the
//!   network: Herald never resends those);
//! - and the two must agree: nothing recorded `sent` that the network never
//!   saw, nothing the network accepted recorded as not sent.
//!
//! `HERALD_FAULTS=full` runs the full version (5,000 messages and 20 kills in
//! the first scenario, more repetitions elsewhere); by default a short,
//! bounded version runs (as in CI). Each scenario prints a `FIGURES` line;
//! `docs/RELIABILITY.md` has those of the last full run. These tests stop and
//! restart the machine's PostgreSQL and RabbitMQ: they take a lock so that
//! no two run at once, and need root.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use herald_tests::{Stack, StackOptions, mobile, services, wait_for};
use rand::RngExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// One scenario at a time: they disturb services every test shares.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn full() -> bool {
    std::env::var("HERALD_FAULTS").is_ok_and(|v| v == "full")
}

/// A stack that recovers fast: short leases, quick pacing.
async fn fault_stack(workers: usize, min_gap_ms: i32) -> Stack {
    Stack::start(StackOptions {
        workers,
        min_gap_ms,
        jitter_ms: 5,
        typing_ms_per_char: 0,
        typing_min_ms: 1,
        typing_max_ms: 5,
        env: vec![
            ("HERALD__WORKER__LEASE_TTL_MS".into(), "4000".into()),
            ("HERALD__WORKER__LEASE_RENEW_MS".into(), "1000".into()),
            ("HERALD__WORKER__LEASE_MARGIN_MS".into(), "1000".into()),
            ("HERALD__WORKER__WORKER_TTL_MS".into(), "5000".into()),
            ("HERALD__WORKER__CONNECT_STAGGER_MS".into(), "50".into()),
            ("HERALD__WORKER__READY_WAIT_MS".into(), "2000".into()),
            ("HERALD__SCHEDULER__LOOKAHEAD".into(), "4".into()),
            (
                "HERALD__SCHEDULER__REPUBLISH_AFTER_MS".into(),
                "10000".into(),
            ),
        ],
        ..StackOptions::default()
    })
    .await
}

/// `numbers` linked simulated numbers and a started campaign of `messages`
/// recipients spread over them; returns the campaign id.
async fn campaign(stack: &Stack, series: u32, numbers: u32, messages: u32) -> String {
    let mut ids = Vec::new();
    for i in 1..=numbers {
        ids.push(stack.paired_number(&mobile(950 + series, i)).await);
    }
    let template = stack.api.create_template("t", "Offer {{n}}").await;
    let recipients: Vec<Value> = (0..messages)
        .map(|i| json!({"phone": mobile(series * 10 + i / 100_000, i % 100_000), "variables": {"n": i}}))
        .collect();
    let created = stack
        .api
        .create_campaign(&json!({
            "name": "faults", "template_id": template, "numbers": ids, "recipients": recipients,
            "window": {"start": "00:00", "end": "24:00"}
        }))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    stack.api.start_campaign(&id).await;
    id
}

/// What a run came to, from Postgres and the simulator's log.
#[derive(Debug, Default)]
struct Outcome {
    messages: usize,
    by_state: BTreeMap<String, usize>,
    lost: usize,
    duplicates: usize,
    unknown: usize,
    /// Accepted by the network, recorded as never sent.
    logged_not_sent: usize,
    /// Recorded sent (or delivered, read), never seen by the network.
    sent_not_logged: usize,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "messages={} lost={} duplicates={} unknown={} logged_not_sent={} sent_not_logged={} states={:?}",
            self.messages,
            self.lost,
            self.duplicates,
            self.unknown,
            self.logged_not_sent,
            self.sent_not_logged,
            self.by_state
        )
    }
}

impl Outcome {
    fn assert_safe(&self) {
        assert_eq!(self.lost, 0, "{self}");
        assert_eq!(self.duplicates, 0, "{self}");
        assert_eq!(self.logged_not_sent, 0, "{self}");
        assert_eq!(self.sent_not_logged, 0, "{self}");
    }
}

/// Waits until no message of the campaign is still on its way (or the
/// deadline), then compares Postgres with the simulator's log.
async fn settle(stack: &Stack, campaign: &str, deadline: Duration) -> Outcome {
    let client = stack.db.pool.get().await.unwrap();
    let pending = || async {
        client
            .query_one(
                "SELECT count(*) FROM messages WHERE campaign_id = $1::text::uuid
                   AND state IN ('queued', 'scheduled', 'sending')",
                &[&campaign],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let started = Instant::now();
    while pending().await > 0 && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows = client
        .query(
            "SELECT wa_message_id, recipient, state::text FROM messages
              WHERE campaign_id = $1::text::uuid",
            &[&campaign],
        )
        .await
        .unwrap();
    let log = stack.sim.log().await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    let ids: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    for entry in log.iter().filter(|e| ids.contains(&e.id)) {
        *per_id.entry(entry.id.clone()).or_default() += 1;
        *per_recipient.entry(entry.to.clone()).or_default() += 1;
    }
    let mut outcome = Outcome {
        messages: rows.len(),
        duplicates: per_recipient.values().filter(|n| **n > 1).count(),
        ..Outcome::default()
    };
    for row in &rows {
        let (id, state): (String, String) = (row.get(0), row.get(2));
        *outcome.by_state.entry(state.clone()).or_default() += 1;
        let logged = per_id.contains_key(&id);
        match state.as_str() {
            "queued" | "scheduled" | "sending" => outcome.lost += 1,
            "unknown" => outcome.unknown += 1,
            "sent" | "delivered" | "read" if !logged => outcome.sent_not_logged += 1,
            "failed" | "cancelled" | "suppressed" if logged => outcome.logged_not_sent += 1,
            _ => {}
        }
    }
    outcome
}

fn figures(scenario: &str, extra: &str, outcome: &Outcome) {
    eprintln!("FIGURES scenario={scenario} {extra} {outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_workers_killed_repeatedly_lose_and_duplicate_nothing() {
    let _serial = SERIAL.lock().await;
    let (messages, kills) = if full() { (5000, 20) } else { (600, 4) };
    let mut stack = fault_stack(3, 5).await;
    let id = campaign(&stack, 1, 6, messages).await;
    let mut rng = rand::rng();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        let workers: Vec<String> = stack
            .running()
            .into_iter()
            .filter(|n| n.starts_with("worker-"))
            .collect();
        let victim = &workers[rng.random_range(0..workers.len())];
        stack.signal(victim, "KILL");
        stack.wait_exit(victim, Duration::from_secs(10)).await;
        stack.start_worker(&[]);
    }
    let outcome = settle(
        &stack,
        &id,
        Duration::from_secs(if full() { 900 } else { 240 }),
    )
    .await;
    figures("kill9", &format!("kills={kills}"), &outcome);
    outcome.assert_safe();
    assert!(
        outcome.unknown <= kills,
        "an unknown needs a kill between call and commit: {outcome}"
    );
    stack.stop().await;
}

/// One crash point: a worker that aborts the third time it reaches it, then
/// a healthy one that takes over.
async fn crash_at(point: &str) -> (Outcome, Vec<Value>) {
    let mut stack = fault_stack(0, 20).await;
    let crashing = stack.start_worker(&[("HERALD_FAILPOINTS", &format!("{point}@3"))]);
    let id = campaign(&stack, 2, 1, 20).await;
    let status = stack.wait_exit(&crashing, Duration::from_secs(60)).await;
    assert!(!status.success(), "the failpoint aborted the worker");
    stack.start_worker(&[]);
    let outcome = settle(&stack, &id, Duration::from_secs(120)).await;
    let touched = stack
        .api
        .get(&format!("/v1/campaigns/{id}/messages?limit=100"))
        .await
        .expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["times"]["unknown_at"].is_null())
        .cloned()
        .collect();
    stack.stop().await;
    (outcome, touched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_crash_points_in_the_send_protocol_are_settled_without_resending() {
    let _serial = SERIAL.lock().await;
    // Claimed, never called: unknown, and never resent.
    let (outcome, touched) = crash_at("after_claim").await;
    figures("after_claim", "", &outcome);
    outcome.assert_safe();
    assert_eq!(outcome.unknown, 1, "{outcome}");
    assert_eq!(touched.len(), 1);
    assert_eq!(touched[0]["state"], "unknown");

    // Called, not recorded: unknown at takeover, then the network's receipt
    // settles it (delivered); sent once.
    let (outcome, touched) = crash_at("after_call").await;
    figures("after_call", "", &outcome);
    outcome.assert_safe();
    assert_eq!(outcome.unknown, 0, "the receipt reconciled it: {outcome}");
    assert_eq!(touched.len(), 1, "one message went through unknown");
    assert!(
        matches!(touched[0]["state"].as_str(), Some("delivered" | "read")),
        "{}",
        touched[0]
    );

    // Recorded (the job was acked at the claim): nothing comes back, nothing
    // is left to settle.
    let (outcome, touched) = crash_at("after_commit").await;
    figures("after_commit", "", &outcome);
    outcome.assert_safe();
    assert_eq!(outcome.unknown, 0, "{outcome}");
    assert!(touched.is_empty());
}

/// Waits until the simulator accepts a message (sending resumed); returns
/// how long it took.
async fn resumed(stack: &Stack, since: usize) -> Duration {
    let started = Instant::now();
    wait_for("sending to resume", Duration::from_secs(30), || async {
        (stack.sim.log().await.len() > since).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_broker_restarts_lose_and_duplicate_nothing_and_sending_resumes() {
    let _serial = SERIAL.lock().await;
    let restarts = if full() { 4 } else { 2 };
    let stack = fault_stack(2, 30).await;
    // Enough messages that sending outlasts every restart: three numbers
    // send ~75 a second here, and each round takes 5 s or more. (400 ran
    // out before the second restart on a fast broker, and the test then
    // waited for sends that could not come.)
    let id = campaign(&stack, 3, 3, if full() { 3000 } else { 1200 }).await;
    let mut resume_times = Vec::new();
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_secs(2)).await;
        services::rabbitmq_stop();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = stack.sim.log().await.len();
        services::rabbitmq_start().await;
        resume_times.push(resumed(&stack, before).await);
    }
    let outcome = settle(&stack, &id, Duration::from_secs(300)).await;
    figures(
        "rabbitmq_restart",
        &format!("restarts={restarts} resumed_after={resume_times:?}"),
        &outcome,
    );
    outcome.assert_safe();
    assert_eq!(outcome.unknown, 0, "{outcome}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_postgres_restarts_answer_503_not_hang_and_duplicate_nothing() {
    let _serial = SERIAL.lock().await;
    let restarts = if full() { 4 } else { 2 };
    let stack = fault_stack(2, 30).await;
    let id = campaign(&stack, 4, 3, if full() { 1500 } else { 400 }).await;
    let mut slowest = Duration::ZERO;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut recoveries = Vec::new();
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Requests keep coming while the database restarts.
        let probe = {
            let api = stack.api.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..40 {
                    let started = Instant::now();
                    let request = api.request(Method::GET, &format!("/v1/campaigns/{id}"));
                    let status = request
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await
                        .map(|r| r.status())
                        .unwrap_or(StatusCode::REQUEST_TIMEOUT);
                    seen.push((status.as_u16(), started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                seen
            })
        };
        services::postgres_restart_immediate().await;
        let restarted = Instant::now();
        wait_for("the API to recover", Duration::from_secs(30), || async {
            (stack.api.get(&format!("/v1/campaigns/{id}")).await.status == 200).then_some(())
        })
        .await;
        recoveries.push(restarted.elapsed());
        for (status, took) in probe.await.unwrap() {
            *statuses.entry(status).or_default() += 1;
            slowest = slowest.max(took);
        }
    }
    let outcome = settle(&stack, &id, Duration::from_secs(300)).await;
    figures(
        "postgres_restart",
        &format!(
            "restarts={restarts} api_statuses={statuses:?} slowest_answer={slowest:?} recovered_after={recoveries:?}"
        ),
        &outcome,
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 200 or 503 during restarts: {statuses:?}"
    );
    assert!(
        slowest < Duration::from_secs(10),
        "answers never hang: {slowest:?}"
    );
    assert_eq!(outcome.duplicates, 0, "{outcome}");
    assert_eq!(outcome.lost, 0, "{outcome}");
    assert_eq!(outcome.logged_not_sent, 0, "{outcome}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_a_frozen_worker_that_lost_its_lease_sends_nothing_when_it_wakes() {
    let _serial = SERIAL.lock().await;
    let stack = fault_stack(2, 200).await;
    let id = campaign(&stack, 5, 1, 80).await;
    wait_for("first sends", Duration::from_secs(30), || async {
        (stack.sim.log().await.len() >= 3).then_some(())
    })
    .await;
    let lease = || async {
        let client = stack.db.pool.get().await.unwrap();
        let row = client
            .query_one("SELECT owner, epoch FROM number_leases", &[])
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, i64>(1))
    };
    let (owner, epoch) = lease().await;
    let pid: u32 = owner.split(':').nth(1).unwrap().parse().unwrap();
    let frozen = ["worker-1", "worker-2"]
        .into_iter()
        .find(|w| stack.pid(w) == Some(pid))
        .expect("the owner is one of the stack's workers")
        .to_string();
    stack.signal(&frozen, "STOP");
    wait_for(
        "another worker to take over",
        Duration::from_secs(30),
        || async { (lease().await.1 > epoch).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let woke_at = chrono::Utc::now();
    stack.signal(&frozen, "CONT");
    let outcome = settle(&stack, &id, Duration::from_secs(120)).await;
    let db = stack.db.pool.get().await.unwrap();
    let stale_sends: i64 = db
        .query_one(
            "SELECT count(*) FROM messages WHERE claim_epoch = $1 AND sending_at > $2",
            &[&epoch, &woke_at],
        )
        .await
        .unwrap()
        .get(0);
    figures(
        "sigstop",
        &format!("stale_epoch={epoch} sends_by_stale_worker_after_waking={stale_sends}"),
        &outcome,
    );
    outcome.assert_safe();
    assert_eq!(stale_sends, 0, "fencing keeps the stale worker out");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_a_broker_memory_alarm_hangs_nothing_and_everything_drains_after() {
    let _serial = SERIAL.lock().await;
    let stack = fault_stack(2, 30).await;
    let id = campaign(&stack, 6, 3, 300).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watermark = services::memory_watermark();
    services::memory_alarm(true, &watermark);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The API keeps answering (it writes Postgres; publishing waits).
    let started = Instant::now();
    let answer = stack.api.get(&format!("/v1/campaigns/{id}")).await;
    let during = started.elapsed();
    let direct = stack
        .api
        .post(
            "/v1/messages",
            &json!({"to": mobile(96, 1), "pool": "none-such", "text": "x"}),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    services::memory_alarm(false, &watermark);
    let outcome = settle(&stack, &id, Duration::from_secs(300)).await;
    let blocked_logged = ["api", "scheduler", "worker-1", "worker-2"]
        .iter()
        .any(|p| stack.log(p).contains("ConnectionBlocked"));
    figures(
        "memory_alarm",
        &format!("api_answer_during_alarm={during:?} blocked_logged={blocked_logged}"),
        &outcome,
    );
    assert_eq!(answer.status, 200);
    assert!(during < Duration::from_secs(5), "{during:?}");
    assert_eq!(direct.status.as_u16(), 422, "answered, not hung");
    assert!(blocked_logged, "ConnectionBlocked is logged");
    outcome.assert_safe();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_a_poison_job_is_dead_lettered_and_its_queue_keeps_flowing() {
    let _serial = SERIAL.lock().await;
    let mut stack = fault_stack(0, 50).await;
    // A healthy worker first, to learn the message ids; then the poison.
    let id = {
        let healthy = stack.start_worker(&[]);
        let id = campaign(&stack, 7, 1, 30).await;
        stack
            .api
            .post(&format!("/v1/campaigns/{id}/pause"), &json!({}))
            .await
            .expect(200);
        stack.signal(&healthy, "TERM");
        stack.wait_exit(&healthy, Duration::from_secs(30)).await;
        id
    };
    let waiting = stack
        .api
        .get(&format!(
            "/v1/campaigns/{id}/messages?state=queued&limit=100"
        ))
        .await
        .expect(200)["data"]
        .clone();
    let poison = waiting[2]["id"].as_i64().expect("a queued message");
    let spec = format!("poison={poison}");
    stack.start_worker(&[("HERALD_FAILPOINTS", &spec)]);
    stack
        .api
        .post(&format!("/v1/campaigns/{id}/resume"), &json!({}))
        .await
        .expect(200);
    // Each crash is followed by a fresh worker, as a supervisor would, until
    // nothing is left to send.
    let mut crashes = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    let client = stack.db.pool.get().await.unwrap();
    loop {
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM messages WHERE campaign_id = $1::text::uuid
                   AND state IN ('queued', 'scheduled', 'sending')",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        if !stack.running().iter().any(|n| n.starts_with("worker-")) {
            crashes += 1;
            stack.start_worker(&[("HERALD_FAILPOINTS", &spec)]);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let outcome = settle(&stack, &id, Duration::from_secs(10)).await;
    let failed = stack
        .api
        .get(&format!("/v1/messages/{poison}"))
        .await
        .expect(200);
    figures("poison", &format!("worker_crashes={crashes}"), &outcome);
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("dead-lettered"),
        "{failed}"
    );
    outcome.assert_safe();
    assert_eq!(outcome.by_state.get("failed"), Some(&1), "{outcome}");
    assert_eq!(
        outcome.by_state.get("delivered").copied().unwrap_or(0)
            + outcome.by_state.get("read").copied().unwrap_or(0)
            + outcome.by_state.get("sent").copied().unwrap_or(0),
        29,
        "the rest went out: {outcome}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_a_network_outage_delays_but_fails_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let outages = if full() { 3 } else { 1 };
    let mut stack = fault_stack(2, 30).await;
    let id = campaign(&stack, 8, 3, 300).await;
    for _ in 0..outages {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stack.signal("sim", "KILL");
        stack.wait_exit("sim", Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        stack.restart("sim");
    }
    let outcome = settle(&stack, &id, Duration::from_secs(300)).await;
    figures("sim_outage", &format!("outages={outages}"), &outcome);
    outcome.assert_safe();
    assert_eq!(outcome.by_state.get("failed"), None, "{outcome}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_fifty_concurrent_posts_with_one_key_create_one_campaign() {
    let _serial = SERIAL.lock().await;
    let stack = fault_stack(1, 30).await;
    let number = stack.api.create_number(&mobile(959, 1)).await;
    let template = stack.api.create_template("t", "Hi").await;
    let body = json!({"name": "once", "template_id": template, "numbers": [number],
                      "recipients": [{"phone": mobile(97, 1), "variables": {}}]});
    let replies = join_all((0..50).map(|_| {
        let api = stack.api.clone();
        let body = body.clone();
        async move {
            api.send(
                api.request(Method::POST, "/v1/campaigns")
                    .header("idempotency-key", "fault-suite-once")
                    .json(&body),
            )
            .await
        }
    }))
    .await;
    let ids: HashSet<String> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    let statuses: BTreeMap<u16, usize> = replies.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status.as_u16()).or_default() += 1;
        m
    });
    let client = stack.db.pool.get().await.unwrap();
    let created: i64 = client
        .query_one("SELECT count(*) FROM campaigns", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "FIGURES scenario=idempotency posts=50 statuses={statuses:?} campaigns_created={created}"
    );
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "every success names the same campaign");
    assert!(
        statuses.keys().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    stack.stop().await;
}

/// Numbers the worker process `pid` holds a live lease on.
async fn numbers_of(stack: &Stack, pid: u32) -> Vec<uuid::Uuid> {
    let client = stack.db.pool.get().await.unwrap();
    client
        .query(
            "SELECT number_id FROM number_leases WHERE owner LIKE $1 AND expires_at > now()",
            &[&format!("%:{pid}:%")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Messages of `numbers` claimed before `at` and recorded sent after it.
async fn finished_across(
    stack: &Stack,
    numbers: &[uuid::Uuid],
    at: chrono::DateTime<chrono::Utc>,
) -> i64 {
    let client = stack.db.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM messages
              WHERE sender_number_id = ANY($1) AND sending_at < $2 AND sent_at >= $2",
            &[&numbers, &at],
        )
        .await
        .unwrap()
        .get(0)
}

/// Worker processes (by pid) with a message of campaign `id` in `sending`
/// on a number they hold.
async fn sending_pids(stack: &Stack, id: &str) -> Vec<u32> {
    let client = stack.db.pool.get().await.unwrap();
    client
        .query(
            "SELECT DISTINCT split_part(l.owner, ':', 2)::int
               FROM messages m JOIN number_leases l ON l.number_id = m.sender_number_id
              WHERE m.campaign_id = $1::text::uuid AND m.state = 'sending'
                AND l.expires_at > now()",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect()
}

/// Live leases and worker rows of the worker process `pid`.
async fn held_by(stack: &Stack, pid: u32) -> (i64, i64) {
    let client = stack.db.pool.get().await.unwrap();
    let pattern = format!("%:{pid}:%");
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM number_leases
                      WHERE owner LIKE $1 AND expires_at > now()),
                    (SELECT count(*) FROM workers WHERE id LIKE $1)",
            &[&pattern],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_sigterm_finishes_sends_releases_leases_and_exits_in_time() {
    let _serial = SERIAL.lock().await;
    let (rounds, messages) = if full() { (10, 1500) } else { (3, 400) };
    let mut stack = fault_stack(2, 20).await;
    // Calls take a while, so a SIGTERM finds sends under way.
    stack
        .sim
        .set_network(&json!({ "server_ack_delay_ms": 250 }))
        .await;
    let id = campaign(&stack, 10, 4, messages).await;
    let mut exits = Vec::new();
    let mut finished = 0;
    for _ in 0..rounds {
        let before = stack.sim.log().await.len();
        wait_for("more sends", Duration::from_secs(60), || async {
            (stack.sim.log().await.len() >= before + 10).then_some(())
        })
        .await;
        // Aim at a worker with a call under way (a call takes 250 ms): the
        // first worker listed may hold no number at all.
        let workers: Vec<(String, u32)> = stack
            .running()
            .into_iter()
            .filter(|n| n.starts_with("worker-"))
            .map(|n| {
                let pid = stack.pid(&n).unwrap();
                (n, pid)
            })
            .collect();
        let (victim, pid) = wait_for("a send under way", Duration::from_secs(60), || async {
            let sending = sending_pids(&stack, &id).await;
            workers
                .iter()
                .find(|(_, pid)| sending.contains(pid))
                .cloned()
        })
        .await;
        let numbers = numbers_of(&stack, pid).await;
        let signalled = Instant::now();
        let signalled_at = chrono::Utc::now();
        stack.signal(&victim, "TERM");
        let status = stack.wait_exit(&victim, Duration::from_secs(60)).await;
        exits.push(signalled.elapsed());
        assert!(
            status.success(),
            "{victim} stopped within its grace: {status}"
        );
        assert_eq!(
            held_by(&stack, pid).await,
            (0, 0),
            "{victim} gave its leases back and left the worker list"
        );
        assert!(stack.log(&victim).contains("worker stopped"));
        // The session stays up for the send under way: its answer is heard,
        // not lost with a connection closed under it.
        assert!(
            !stack.log(&victim).contains("send outcome unknown"),
            "{victim} heard the outcome of every send it had under way"
        );
        finished += finished_across(&stack, &numbers, signalled_at).await;
        stack.start_worker(&[]);
    }
    // The scheduler and the API stop in time too (the API with a live
    // stream open), and come back.
    let stream = stack.api.events("", None).await;
    for name in ["scheduler", "api"] {
        let signalled = Instant::now();
        stack.signal(name, "TERM");
        let status = stack.wait_exit(name, Duration::from_secs(60)).await;
        exits.push(signalled.elapsed());
        assert!(
            status.success(),
            "{name} stopped within its grace: {status}"
        );
        stack.restart(name);
    }
    drop(stream);
    let outcome = settle(&stack, &id, Duration::from_secs(300)).await;
    let slowest = exits.iter().max().unwrap();
    figures(
        "sigterm",
        &format!(
            "rounds={rounds} sends_finished_after_sigterm={finished} exits_ms={:?} slowest_ms={}",
            exits.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
            slowest.as_millis()
        ),
        &outcome,
    );
    outcome.assert_safe();
    assert!(
        finished >= 1,
        "a SIGTERM found a send under way, and it was finished and recorded"
    );
    assert_eq!(
        outcome.unknown, 0,
        "a graceful stop finishes and records its sends: {outcome}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_a_send_that_outlasts_the_shutdown_grace_is_abandoned_and_settled() {
    let _serial = SERIAL.lock().await;
    let mut stack = fault_stack(0, 20).await;
    let slow = stack.start_worker(&[("HERALD__WORKER__SHUTDOWN_GRACE_MS", "300")]);
    // The server takes 5 s to acknowledge: longer than the grace.
    stack
        .sim
        .set_network(&json!({ "server_ack_delay_ms": 5000 }))
        .await;
    let id = campaign(&stack, 11, 1, 5).await;
    let client = stack.db.pool.get().await.unwrap();
    wait_for("a send under way", Duration::from_secs(60), || async {
        let sending: i64 = client
            .query_one(
                "SELECT count(*) FROM messages WHERE campaign_id = $1::text::uuid
                   AND state = 'sending'",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        (sending == 1).then_some(())
    })
    .await;
    let signalled = Instant::now();
    stack.signal(&slow, "TERM");
    let status = stack.wait_exit(&slow, Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    assert!(
        !status.success(),
        "past its grace the worker exits with an error"
    );
    assert!(
        stack
            .log(&slow)
            .contains("did not stop within its shutdown grace"),
        "and says why"
    );
    stack
        .sim
        .set_network(&json!({ "server_ack_delay_ms": 2 }))
        .await;
    stack.start_worker(&[]);
    let outcome = settle(&stack, &id, Duration::from_secs(120)).await;
    figures(
        "sigterm_past_grace",
        &format!("grace_ms=300 exit_ms={}", took.as_millis()),
        &outcome,
    );
    outcome.assert_safe();
    assert!(
        took < Duration::from_secs(5),
        "it did not wait for the 5 s acknowledgement: {took:?}"
    );
    stack.stop().await;
}
