//! The pacing policy, pass by pass, on a set clock (real Postgres and
//! RabbitMQ): warm-up days in the number's zone, windows in the recipient's
//! zone across DST, tenant and variant caps, sticky senders, time-locked
//! numbers, retries, scheduled starts and ends, breakers, leadership.

use std::sync::Arc;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use herald_scheduler::leader::Leadership;
use herald_shared::{
    clock::{Clock, ManualClock},
    db::{self, messages::Requeue},
    policy::zones::SendWindow,
};
use herald_tests::{
    TestDb,
    fixtures::{CampaignSpec, Fixture, counts, live, planner, send_scheduled},
    stack::delete_broker_objects,
    unique_suffix,
};
use uuid::Uuid;

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn prefix() -> String {
    format!("herald_t_{}", unique_suffix())
}

async fn sql(db: &TestDb, statement: &str) {
    let client = db.pool.get().await.unwrap();
    client.batch_execute(statement).await.unwrap();
}

async fn count(db: &TestDb, query: &str) -> i64 {
    let client = db.pool.get().await.unwrap();
    client.query_one(query, &[]).await.unwrap().get(0)
}

const BIG_LOOKAHEAD: (&str, &str) = ("HERALD__SCHEDULER__LOOKAHEAD", "1000");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_grows_by_the_day_of_the_numbers_own_zone() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let campaign = fx.campaign(&db, &[number], 100).await;
    live(&db, number).await;
    sql(
        &db,
        "UPDATE sender_numbers SET warmup_plan = 'test', time_zone = 'America/Sao_Paulo',
                warmup_started_on = '2026-06-01'",
    )
    .await;
    // 20:30 in São Paulo on June 1st (23:30 UTC): day 0 of the plan.
    let clock = ManualClock::new(utc(2026, 6, 1, 23, 30));
    let prefix = prefix();
    let overrides = [
        BIG_LOOKAHEAD,
        ("HERALD__WARMUP__PLANS__TEST__FIRST_DAY", "3"),
        ("HERALD__WARMUP__PLANS__TEST__GROWTH", "2.0"),
        ("HERALD__WARMUP__PLANS__TEST__CEILING", "10"),
    ];
    let planner = planner(&db, &prefix, &overrides, Arc::new(clock.clone())).await;

    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        3,
        "day 0: first_day"
    );
    send_scheduled(&db).await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 0, "day 0 used up");
    // 02:30 UTC on June 2nd is still June 1st (23:30) in São Paulo.
    clock.set(utc(2026, 6, 2, 2, 30));
    assert_eq!(planner.pass().await.unwrap().scheduled, 0, "same local day");
    // 03:30 UTC is 00:30 on June 2nd in São Paulo: day 1, 6 allowed.
    clock.set(utc(2026, 6, 2, 3, 30));
    assert_eq!(planner.pass().await.unwrap().scheduled, 6, "day 1: doubled");
    send_scheduled(&db).await;
    clock.set(utc(2026, 6, 3, 12, 0));
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        10,
        "day 2: the ceiling (12 → 10)"
    );
    assert_eq!(counts(&db, campaign).await["sent"], 9);
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_follows_the_recipients_clock_across_dst() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let nine_to_eight = SendWindow::new(
        NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
        NaiveTime::from_hms_opt(20, 0, 0).unwrap(),
    )
    .unwrap();
    let campaign = fx
        .campaign_with(
            &db,
            &CampaignSpec {
                zone: "z:America/New_York",
                window: nine_to_eight,
                ..CampaignSpec::new(&[number], 50)
            },
        )
        .await;
    live(&db, number).await;
    // 13:30 UTC: 08:30 EST on March 7th (closed); 09:30 EDT on March 8th, the
    // day New York moves to summer time (open).
    let clock = ManualClock::new(utc(2026, 3, 7, 13, 30));
    let prefix = prefix();
    let planner = planner(&db, &prefix, &[BIG_LOOKAHEAD], Arc::new(clock.clone())).await;
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        0,
        "before 09:00 in New York"
    );
    clock.set(utc(2026, 3, 8, 13, 30));
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        50,
        "09:30 in New York"
    );
    // Closing time moves too: 00:30 UTC is 19:30 EST but 20:30 EDT.
    sql(
        &db,
        "UPDATE messages SET state = 'queued', sender_number_id = NULL",
    )
    .await;
    clock.set(utc(2026, 3, 10, 0, 30));
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        0,
        "20:30 EDT: closed"
    );
    clock.set(utc(2026, 3, 7, 0, 30));
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        50,
        "19:30 EST: open"
    );
    assert_eq!(counts(&db, campaign).await["scheduled"], 50);
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cap_is_shared_by_its_numbers() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let a = fx.number(&db, 1, 1000).await;
    let b = fx.number(&db, 2, 1000).await;
    let campaign = fx.campaign(&db, &[a, b], 40).await;
    live(&db, a).await;
    live(&db, b).await;
    sql(&db, "UPDATE tenants SET daily_cap = 7").await;
    let prefix = prefix();
    let planner = planner(
        &db,
        &prefix,
        &[BIG_LOOKAHEAD],
        Arc::new(ManualClock::new(Utc::now())),
    )
    .await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 7);
    send_scheduled(&db).await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 0);
    assert_eq!(counts(&db, campaign).await["queued"], 33);
    delete_broker_objects(&prefix, &[a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_variant_goes_to_more_than_its_limit_per_number_per_day() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let a = fx.number(&db, 1, 1000).await;
    let b = fx.number(&db, 2, 1000).await;
    let campaign = fx
        .campaign_with(
            &db,
            &CampaignSpec {
                variants: 3,
                max_per_variant: 4,
                ..CampaignSpec::new(&[a, b], 60)
            },
        )
        .await;
    live(&db, a).await;
    live(&db, b).await;
    let clock = ManualClock::new(utc(2026, 6, 1, 12, 0));
    let prefix = prefix();
    let planner = planner(&db, &prefix, &[BIG_LOOKAHEAD], Arc::new(clock.clone())).await;
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        24,
        "3 variants × 4 × 2 numbers"
    );
    send_scheduled(&db).await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 0);
    let per: Vec<i64> = {
        let client = db.pool.get().await.unwrap();
        client
            .query(
                "SELECT count(*) FROM messages WHERE state = 'sent'
                  GROUP BY sender_number_id, variant ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(per, [4, 4, 4, 4, 4, 4]);
    clock.set(utc(2026, 6, 2, 12, 0));
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        24,
        "a new day, new limits"
    );
    assert_eq!(counts(&db, campaign).await["queued"], 12);
    delete_broker_objects(&prefix, &[a, b]).await;
}

/// A number with a little room at a time spreads it over the variants
/// (the one with the most room left first), so none of them reaches its
/// limit while the others have plenty: taken in variant order, a number
/// that fell behind the others could not use the rest of its day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_spreads_its_day_over_the_variants() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let a = fx.number(&db, 1, 1000).await;
    fx.campaign_with(
        &db,
        &CampaignSpec {
            variants: 4,
            max_per_variant: 60,
            ..CampaignSpec::new(&[a], 40)
        },
    )
    .await;
    live(&db, a).await;
    let prefix = prefix();
    let planner = planner(
        &db,
        &prefix,
        &[("HERALD__SCHEDULER__LOOKAHEAD", "2")],
        Arc::new(ManualClock::new(utc(2026, 6, 1, 12, 0))),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(planner.pass().await.unwrap().scheduled, 2);
        send_scheduled(&db).await;
    }
    let per_variant: Vec<(i16, i64)> = {
        let client = db.pool.get().await.unwrap();
        client
            .query(
                "SELECT variant, count(*) FROM messages WHERE state = 'sent'
                  GROUP BY variant ORDER BY variant",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert_eq!(per_variant, [(0, 2), (1, 2), (2, 2), (3, 2)]);
    delete_broker_objects(&prefix, &[a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_keep_their_sender_while_it_can_take_them() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let a = fx.number(&db, 1, 1000).await;
    let b = fx.number(&db, 2, 1000).await;
    let old: Vec<String> = (0..10).map(|i| herald_tests::mobile(700, i)).collect();
    let mut everyone = old.clone();
    everyone.extend((10..20).map(|i| herald_tests::mobile(700, i)));
    // A first campaign through `b` only: its recipients now belong to `b`.
    let first = fx
        .campaign_with(
            &db,
            &CampaignSpec {
                phones: Some(&old),
                ..CampaignSpec::new(&[b], 10)
            },
        )
        .await;
    live(&db, b).await;
    let prefix = prefix();
    let planner = planner(
        &db,
        &prefix,
        &[BIG_LOOKAHEAD],
        Arc::new(ManualClock::new(Utc::now())),
    )
    .await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 10);
    send_scheduled(&db).await;
    sql(
        &db,
        &format!("UPDATE campaigns SET status = 'completed' WHERE id = '{first}'"),
    )
    .await;

    // A second campaign to the same people plus ten new ones, through both:
    // `b` can take its old recipients, so `a` leaves them alone.
    let second = fx
        .campaign_with(
            &db,
            &CampaignSpec {
                phones: Some(&everyone),
                ..CampaignSpec::new(&[a, b], 20)
            },
        )
        .await;
    live(&db, a).await;
    planner.pass().await.unwrap();
    let client = db.pool.get().await.unwrap();
    let senders_of_old: Vec<Uuid> = client
        .query(
            "SELECT DISTINCT sender_number_id FROM messages
              WHERE campaign_id = $1 AND recipient = ANY($2)",
            &[&second, &old],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(senders_of_old, [b], "old recipients stay with b");
    let new_by_a: i64 = client
        .query_one(
            "SELECT count(*) FROM messages
              WHERE campaign_id = $1 AND NOT recipient = ANY($2) AND sender_number_id = $3",
            &[&second, &old, &a],
        )
        .await
        .unwrap()
        .get(0);
    assert!(new_by_a > 0, "a takes new recipients");

    // If `b` cannot take anyone today, `a` may take its recipients too.
    sql(&db, &format!("UPDATE messages SET state = 'queued', sender_number_id = NULL WHERE campaign_id = '{second}'")).await;
    sql(
        &db,
        &format!("UPDATE sender_numbers SET daily_cap = 0 WHERE id = '{b}'"),
    )
    .await;
    planner.pass().await.unwrap();
    let from_a: i64 = client
        .query_one(
            "SELECT count(*) FROM messages WHERE campaign_id = $1 AND sender_number_id = $2",
            &[&second, &a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(from_a, 20);
    drop(client);
    delete_broker_objects(&prefix, &[a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_locked_number_only_writes_to_its_existing_contacts() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let campaign = fx.campaign(&db, &[number], 10).await;
    live(&db, number).await;
    sql(
        &db,
        &format!(
            "UPDATE messages SET preferred_number_id = '{number}'
              WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT 3);
             UPDATE sender_numbers SET state = 'timelocked', timelocked_until = now() + interval '1 day'"
        ),
    )
    .await;
    let clock = ManualClock::new(Utc::now());
    let prefix = prefix();
    let planner = planner(&db, &prefix, &[BIG_LOOKAHEAD], Arc::new(clock.clone())).await;
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        3,
        "only the existing contacts"
    );
    send_scheduled(&db).await;
    // When the time-lock ends, the number is restored (and says so).
    clock.advance(chrono::Duration::days(2));
    assert_eq!(planner.pass().await.unwrap().scheduled, 7);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sender_numbers WHERE state = 'active'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE topic = 'number.restored'"
        )
        .await,
        1
    );
    assert_eq!(counts(&db, campaign).await["scheduled"], 7);
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_for_their_back_off() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let campaign = fx.campaign(&db, &[number], 1).await;
    live(&db, number).await;
    let start = Utc::now();
    let clock = ManualClock::new(start);
    let prefix = prefix();
    let planner = planner(&db, &prefix, &[BIG_LOOKAHEAD], Arc::new(clock.clone())).await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 1);
    let client = db.pool.get().await.unwrap();
    let message: i64 = client
        .query_one("SELECT id FROM messages", &[])
        .await
        .unwrap()
        .get(0);
    sql(&db, "UPDATE number_leases SET owner = 'w', epoch = 7").await;
    db::messages::claim(&client, message, number, "w", 7)
        .await
        .unwrap()
        .unwrap();
    let retry_at = start + chrono::Duration::minutes(5);
    db::messages::requeue(
        &client,
        message,
        7,
        5,
        "not connected",
        Requeue::At(retry_at),
    )
    .await
    .unwrap();
    assert_eq!(planner.pass().await.unwrap().scheduled, 0, "backing off");
    clock.set(retry_at + chrono::Duration::seconds(1));
    assert_eq!(planner.pass().await.unwrap().scheduled, 1, "its time came");
    assert_eq!(counts(&db, campaign).await["scheduled"], 1);
    drop(client);
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_starts_and_ends_follow_the_clock() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let now = Utc::now();
    let campaign = fx
        .campaign_with(
            &db,
            &CampaignSpec {
                start_at: Some(now + chrono::Duration::hours(1)),
                end_by: Some(now + chrono::Duration::hours(3)),
                now,
                ..CampaignSpec::new(&[number], 10)
            },
        )
        .await;
    live(&db, number).await;
    let status = || async {
        count(
            &db,
            &format!(
                "SELECT count(*) FROM campaigns WHERE status = 'scheduled' AND id = '{campaign}'"
            ),
        )
        .await
    };
    assert_eq!(status().await, 1, "waits for its start");
    let clock = ManualClock::new(now);
    let prefix = prefix();
    let planner = planner(
        &db,
        &prefix,
        &[("HERALD__SCHEDULER__LOOKAHEAD", "4")],
        Arc::new(clock.clone()),
    )
    .await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 0);
    clock.advance(chrono::Duration::minutes(61));
    assert_eq!(planner.pass().await.unwrap().scheduled, 4, "started");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE topic = 'campaign.started'"
        )
        .await,
        1
    );
    send_scheduled(&db).await;
    clock.advance(chrono::Duration::hours(3));
    let report = planner.pass().await.unwrap();
    assert_eq!(report.scheduled, 0);
    assert_eq!(
        report.completed,
        [campaign],
        "nothing left once the end passed"
    );
    let c = counts(&db, campaign).await;
    assert_eq!((c["sent"], c["cancelled"]), (4, 6));
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rising_failure_ratio_slows_then_stops_a_number() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let campaign = fx.campaign(&db, &[number], 60).await;
    live(&db, number).await;
    let clock = ManualClock::new(Utc::now());
    let prefix = prefix();
    let planner = planner(&db, &prefix, &[], Arc::new(clock.clone())).await;
    let breaker = || async {
        let client = db.pool.get().await.unwrap();
        client
            .query_one("SELECT breaker::text FROM sender_numbers", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    // 30 recent sends, 4 failed (13%): slowed.
    sql(
        &db,
        &format!(
            "UPDATE messages SET sender_number_id = '{number}', sending_at = now(), sent_at = now(),
                    state = CASE WHEN id % 30 < 4 THEN 'failed'::message_state ELSE 'sent' END
              WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT 30)"
        ),
    )
    .await;
    sql(
        &db,
        "UPDATE sender_numbers SET breaker_changed_at = now() - interval '1 hour'",
    )
    .await;
    planner.judge_breakers(clock.now()).await.unwrap();
    assert_eq!(breaker().await, "slowed");
    // Slowed numbers take one job at a time.
    assert_eq!(planner.pass().await.unwrap().scheduled, 1);
    sql(
        &db,
        "UPDATE messages SET state = 'queued', sender_number_id = NULL WHERE state = 'scheduled'",
    )
    .await;
    // 12 of the newest 30 failed (40%): stopped for a while.
    sql(
        &db,
        &format!(
            "UPDATE messages SET sender_number_id = '{number}', sending_at = now(), sent_at = now(),
                    state = CASE WHEN id % 5 < 2 THEN 'failed'::message_state ELSE 'sent' END
              WHERE id IN (SELECT id FROM messages WHERE state = 'queued' ORDER BY id LIMIT 30)"
        ),
    )
    .await;
    sql(
        &db,
        "UPDATE sender_numbers SET breaker_changed_at = now() - interval '1 hour'",
    )
    .await;
    planner.judge_breakers(clock.now()).await.unwrap();
    assert_eq!(breaker().await, "open");
    assert_eq!(
        planner.pass().await.unwrap().numbers,
        0,
        "a stopped number is not planned"
    );
    // After its rest, probation at the slow pace.
    clock.advance(chrono::Duration::hours(2));
    planner.judge_breakers(clock.now()).await.unwrap();
    assert_eq!(breaker().await, "slowed");
    let events = count(
        &db,
        "SELECT count(*) FROM outbox WHERE topic = 'number.throttled'",
    )
    .await;
    assert_eq!(events, 3, "each move is announced");
    let _ = campaign;
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test]
async fn one_scheduler_leads_and_a_standby_takes_over() {
    let db = TestDb::create().await;
    let config = herald_tests::inprocess::config(
        &db,
        "unused",
        &[
            ("HERALD__SCHEDULER__LEADER_RENEW_MS", "0"),
            ("HERALD__SCHEDULER__LEADER_TTL_MS", "60000"),
        ],
    );
    let mut first = Leadership::new(db.pool.clone(), "first".into(), &config.scheduler);
    let mut second = Leadership::new(db.pool.clone(), "second".into(), &config.scheduler);
    assert!(first.check().await);
    assert!(!second.check().await, "the lease is held");
    assert!(first.check().await, "renewals keep it");
    first.resign().await;
    assert!(second.check().await, "a standby takes over once it is free");
    assert!(!first.check().await);
}
