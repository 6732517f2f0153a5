//! The scheduler's pass at 1,000 numbers over a large queue (`tick`), and how
//! fast it publishes send jobs against a bare lapin publisher (`dispatch`).
//!
//! The planner runs in this process on its own database (real Postgres,
//! Herald's migrations) and broker prefix, exactly as the scheduler binary
//! runs it. Between two measured passes every scheduled message is marked
//! sent (what the workers would do), so that every number has room again
//! and each pass plans the whole fleet: the worst pass, not an idle one.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use herald_shared::{
    clock::{Clock, SystemClock},
    queue::{Broker, json_properties},
    task::{JobPacing, SendTask},
};
use herald_tests::{
    TestDb,
    fixtures::{self, CampaignSpec, Fixture},
    stack::{delete_broker_objects, rabbit_config},
    unique_suffix,
};
use lapin::{Confirmation, options::BasicPublishOptions};
use uuid::Uuid;

use crate::goals::Goal;

/// The passes measured at one queue size, in seconds.
struct AtSize {
    queued: i64,
    /// Full passes (every number with room), sorted.
    full: Vec<f64>,
    /// The bare publisher's time for each full pass's jobs, sorted.
    bare: Vec<f64>,
    /// Each full pass's jobs per second beside the bare publisher's.
    dispatch: Vec<(f64, f64)>,
    /// Steady passes (one number in 70 with room), sorted.
    steady: Vec<f64>,
}

/// Queue sizes the tick is measured at: the same fleet, a tenth of the queue
/// and then the whole of it (never less than the passes take).
fn queue_sizes(queued: u64, numbers: u32, passes: usize) -> [u64; 2] {
    let least = 2 * u64::from(numbers) * (passes as u64 + 1);
    [(queued / 10).max(least), queued.max(least)]
}

pub async fn run(numbers: u32, queued: u64, passes: usize) -> Vec<Goal> {
    let db = TestDb::create().await;
    let prefix = format!("herald_t_{}", unique_suffix());
    let fixture = Fixture::new(&db).await;
    let started = Instant::now();
    let mut ids = Vec::with_capacity(numbers as usize);
    for i in 0..numbers {
        let id = fixture.number(&db, i, 1_000_000).await;
        fixtures::live(&db, id).await;
        ids.push(id);
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let planner = fixtures::planner(&db, &prefix, &[], clock).await;
    let planning = herald_tests::inprocess::config(&db, &prefix, &[]).scheduler;
    let bare_channels = bare_channels();

    // Every number's queue declared (a pass does it) before the baseline
    // publishes into them.
    let declare = fixture.campaign(&db, &ids, 6 * numbers).await;
    for _ in 0..3 {
        planner.pass().await.expect("declaring pass");
        fixtures::send_scheduled(&db).await;
    }
    execute(
        &db,
        "UPDATE campaigns SET status = 'paused' WHERE id = $1",
        &declare,
    )
    .await;
    fixtures::send_scheduled(&db).await;

    let mut rows = Vec::new();
    let mut previous: Option<Uuid> = None;
    for (round, size) in queue_sizes(queued, numbers, passes).into_iter().enumerate() {
        // The earlier campaign is paused, its messages still queued: the
        // table and its indexes only grow.
        if let Some(campaign) = previous {
            execute(
                &db,
                "UPDATE campaigns SET status = 'paused' WHERE id = $1",
                &campaign,
            )
            .await;
        }
        let seeding = Instant::now();
        // Recipients no number has written to, at each size (area codes 11
        // and 21): recipients of an earlier campaign would prefer the
        // number that wrote to them, a cheaper pick than a cold one.
        let area = 11 + 10 * round;
        let phones: Vec<String> = (0..size).map(|i| format!("+55{area}9{i:08}")).collect();
        let mut spec = CampaignSpec::new(&ids, size as u32);
        spec.phones = Some(&phones);
        let campaign = fixture.campaign_with(&db, &spec).await;
        drop(phones);
        analyze(&db).await;
        let queued_now = count(&db, "SELECT count(*) FROM messages WHERE state = 'queued'").await;
        println!(
            "  (seeded {size} queued messages in {:.0} s; {queued_now} queued in all)",
            seeding.elapsed().as_secs_f64()
        );
        // The first pass declares the numbers' queues: not measured.
        planner.pass().await.expect("first pass");
        // Each full pass's time as it comes, to show how it moves as the
        // campaign drains.
        print!("  (full passes in order, ms:");
        let mut ticks = Vec::with_capacity(passes);
        // Dispatch: each pass's jobs per second, and right after it a bare
        // publisher's with as many jobs to the same queues (the broker's
        // speed moves between runs and within one; pairs share its mood).
        let mut dispatch = Vec::with_capacity(passes);
        let mut bare_times = Vec::with_capacity(passes);
        for _ in 0..passes {
            fixtures::send_scheduled(&db).await;
            let pass_started = Instant::now();
            let report = planner.pass().await.expect("pass");
            let tick = pass_started.elapsed().as_secs_f64();
            ticks.push(tick);
            print!(" {:.0}", tick * 1000.0);
            assert_eq!(report.planned, numbers as usize, "every number had room");
            let bare = bare_publish(&prefix, &ids, report.scheduled, bare_channels).await;
            dispatch.push((report.scheduled as f64 / tick, bare));
            bare_times.push(report.scheduled as f64 / bare);
        }
        println!(")");
        ticks.sort_by(f64::total_cmp);
        bare_times.sort_by(f64::total_cmp);
        // Steady sending at the default pacing (a send every ~35 s per
        // number, a pass every 500 ms): about one number in seventy has
        // room in a pass.
        let mut steady = Vec::with_capacity(passes);
        for _ in 0..passes {
            send_some(&db, numbers.div_ceil(70)).await;
            let pass_started = Instant::now();
            planner.pass().await.expect("pass");
            steady.push(pass_started.elapsed().as_secs_f64());
        }
        steady.sort_by(f64::total_cmp);
        rows.push(AtSize {
            queued: queued_now,
            full: ticks,
            bare: bare_times,
            dispatch,
            steady,
        });
        previous = Some(campaign);
    }
    println!(
        "tick      {numbers} live numbers, look-ahead 2, every number with room \
         (set up in {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let ms = |ticks: &[f64], at: usize| ticks[at] * 1000.0;
    let p50 = |ticks: &[f64]| ms(ticks, (ticks.len() - 1) / 2);
    let mut goals = Vec::new();
    for at in &rows {
        for (kind, passes) in [("every number", &at.full), ("one in 70", &at.steady)] {
            goals.push(Goal::new(
                format!("tick: {kind} with room, {} queued, p50", at.queued),
                format!("{:.1} ms", p50(passes)),
                "< 200 ms",
                p50(passes) < 200.0,
            ));
        }
        let last = at.full.len() - 1;
        println!(
            "  {:>8} queued   every number with room: p50 {:>6.1} ms  max {:>6.1} ms \
             (a bare publisher, the same jobs: p50 {:>6.1} ms); \
             one in 70: p50 {:>5.1} ms  max {:>5.1} ms  ({} passes each; goal < 200 ms, flat)",
            at.queued,
            ms(&at.full, last / 2),
            ms(&at.full, last),
            p50(&at.bare),
            ms(&at.steady, last / 2),
            ms(&at.steady, last),
            at.full.len()
        );
    }

    // Flat: the p50 at the larger queue against the smaller, the worse of
    // the two kinds of pass.
    let (small, large) = (&rows[0], &rows[rows.len() - 1]);
    let growth = (p50(&large.full) / p50(&small.full)).max(p50(&large.steady) / p50(&small.steady));
    goals.push(Goal::new(
        format!("tick: p50 at {} / {} queued", large.queued, small.queued),
        format!("{growth:.2}x"),
        "<= 1.5x (flat)",
        growth <= 1.5,
    ));

    // Dispatch, at the larger queue: every full pass beside the bare
    // publisher run right after it; medians of each, and of the pairs'
    // ratios.
    let dispatch = &large.dispatch;
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[(values.len() - 1) / 2]
    };
    let ratios: Vec<f64> = dispatch
        .iter()
        .map(|(herald, bare)| herald / bare)
        .collect();
    let (lowest, highest) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let ratio = median(ratios);
    println!(
        "dispatch  send jobs published with confirms, per second (median of {} pairs)\n  \
         scheduler pass  {:>9.0}/s  (plans, commits and publishes for {numbers} numbers, {} transactions at a time, up to {} jobs each)\n  \
         bare lapin      {:>9.0}/s  (as many jobs right after each pass, {} channel(s) at once, confirms a thousand at a time)\n  \
         ratio           {ratio:>9.2}x  (pairs {lowest:.2}x to {highest:.2}x; goal >= 0.7x)",
        dispatch.len(),
        median(dispatch.iter().map(|(herald, _)| *herald).collect()),
        planning.plan_concurrency,
        planning.plan_batch_jobs,
        median(dispatch.iter().map(|(_, bare)| *bare).collect()),
        bare_channels,
    );
    goals.push(Goal::new(
        "dispatch: scheduler / bare publisher",
        format!("{ratio:.2}x"),
        ">= 0.7x",
        ratio >= 0.7,
    ));
    // Deleting a thousand quorum queues one AMQP call at a time takes
    // RabbitMQ minutes; deploy/bench.sh removes them in one call instead.
    if std::env::var_os("HERALD_BENCH_KEEP_QUEUES").is_none() {
        delete_broker_objects(&prefix, &ids).await;
    }
    goals
}

/// Channels the bare publisher spreads its jobs over: 1, or
/// `HERALD_BENCH_BARE_CHANNELS` (what the broker takes when fed in
/// parallel; docs/BENCHMARKS.md, "Jobs published on several channels").
fn bare_channels() -> usize {
    std::env::var("HERALD_BENCH_BARE_CHANNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Jobs per second of a bare lapin publisher with confirms: `jobs` send
/// jobs spread evenly over the numbers' queues, and over `channels`
/// channels publishing at once.
async fn bare_publish(prefix: &str, numbers: &[Uuid], jobs: usize, channels: usize) -> f64 {
    // Herald's broker handle only opens the connection and plain lapin
    // channels in confirm mode; everything after is lapin.
    let broker = Broker::new(&rabbit_config(prefix), "bench bare publisher");
    let mut lanes = Vec::with_capacity(channels);
    for _ in 0..channels {
        lanes.push(broker.confirm_channel().await.expect("confirm channel"));
    }
    let payloads: Vec<(String, Vec<u8>)> = (0..jobs)
        .map(|i| {
            let number_id = numbers[i % numbers.len()];
            let task = SendTask::Send {
                message_id: i as i64,
                number_id,
                pacing: Some(JobPacing {
                    min_gap_ms: 20_000,
                    jitter: herald_shared::policy::jitter::Jitter::None,
                }),
            };
            (
                format!("{prefix}.send.{number_id}"),
                serde_json::to_vec(&task).expect("task"),
            )
        })
        .collect();
    let started = Instant::now();
    let share = payloads.len().div_ceil(channels).max(1);
    let lanes_done = lanes
        .iter()
        .zip(payloads.chunks(share))
        .map(|(channel, part)| async move {
            // Confirms awaited a window at a time, as a careful publisher would.
            for window in part.chunks(1000) {
                let mut confirms = Vec::with_capacity(window.len());
                for (queue, payload) in window {
                    confirms.push(
                        channel
                            .basic_publish(
                                "".into(),
                                queue.as_str().into(),
                                BasicPublishOptions::default(),
                                payload,
                                json_properties(),
                            )
                            .await
                            .expect("publish"),
                    );
                }
                for confirm in confirms {
                    let confirmation = tokio::time::timeout(Duration::from_secs(30), confirm)
                        .await
                        .expect("a confirm within 30 s")
                        .expect("confirm");
                    assert!(
                        matches!(confirmation, Confirmation::Ack(None)),
                        "broker refused a job: {confirmation:?}"
                    );
                }
            }
        });
    futures_util::future::join_all(lanes_done).await;
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    broker.close().await;
    rate
}

/// What workers would do for `count` numbers picked at random: send their
/// scheduled messages.
async fn send_some(db: &TestDb, count: u32) {
    let client = db.pool.get().await.expect("connection");
    client
        .execute(
            "UPDATE messages SET state = 'sent', sending_at = now(), sent_at = now()
              WHERE state = 'scheduled' AND sender_number_id IN
                    (SELECT id FROM sender_numbers ORDER BY random() LIMIT $1)",
            &[&i64::from(count)],
        )
        .await
        .expect("send some");
}

async fn execute(db: &TestDb, sql: &str, id: &Uuid) {
    let client = db.pool.get().await.expect("connection");
    client.execute(sql, &[id]).await.expect("statement");
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let client = db.pool.get().await.expect("connection");
    client.query_one(sql, &[]).await.expect("count").get(0)
}

/// Fresh planner statistics after a bulk insert, as autovacuum would give
/// them a little later.
async fn analyze(db: &TestDb) {
    let client = db.pool.get().await.expect("connection");
    client.batch_execute("ANALYZE").await.expect("analyze");
}
