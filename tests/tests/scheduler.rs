//! The scheduler's limits, driven pass by pass: the daily cap holds even with
//! two schedulers planning the same number at once, and the look-ahead bounds
//! what waits in a number's queue (refilled once half of it is free), and a pause that lands during a pass
//! leaves nothing of its campaign scheduled.

use std::sync::Arc;

use herald_scheduler::planner::Planner;
use herald_shared::{
    clock::SystemClock,
    db,
    queue::{Broker, Publisher, Topology},
};
use herald_tests::{
    TestDb, fixtures::Fixture, inprocess::config, stack::delete_broker_objects, unique_suffix,
};
use uuid::Uuid;

async fn planner(db: &TestDb, prefix: &str, lookahead: &str) -> Planner {
    let config = config(db, prefix, &[("HERALD__SCHEDULER__LOOKAHEAD", lookahead)]);
    let broker = Broker::new(&config.rabbitmq, "test planner");
    let topology = Topology::new(&config.rabbitmq);
    let channel = broker.channel().await.unwrap();
    topology.declare_common(&channel).await.unwrap();
    let publisher = Arc::new(Publisher::new(broker, &config.rabbitmq));
    let pool = herald_shared::db::connect(&db.config(), "test planner").unwrap();
    Planner::new(pool, publisher, topology, &config, Arc::new(SystemClock))
}

async fn live(db: &TestDb, number: Uuid) {
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO number_leases (number_id, owner, epoch, acquired_at, expires_at, connected)
             VALUES ($1, 'test', 1, now(), now() + interval '1 hour', true)",
            &[&number],
        )
        .await
        .unwrap();
}

async fn count_in(db: &TestDb, states: &str) -> i64 {
    let client = db.pool.get().await.unwrap();
    client
        .query_one(
            &format!("SELECT count(*) FROM messages WHERE state::text IN ({states})"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_holds_across_concurrent_schedulers() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 7).await;
    fx.campaign(&db, &[number], 50).await;
    live(&db, number).await;
    let prefix = format!("herald_t_{}", unique_suffix());
    let (a, b) = (
        planner(&db, &prefix, "100").await,
        planner(&db, &prefix, "100").await,
    );

    let (first, second) = tokio::join!(a.pass(), b.pass());
    let scheduled = first.unwrap().scheduled + second.unwrap().scheduled;
    assert_eq!(scheduled, 7, "the cap, not twice the cap");
    // Even once those are sent, the day's budget is spent.
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE messages SET state = 'sent' WHERE state = 'scheduled'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(a.pass().await.unwrap().scheduled, 0);
    assert_eq!(count_in(&db, "'sent'").await, 7);
    assert_eq!(count_in(&db, "'queued'").await, 43);
    drop(client);
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_look_ahead_bounds_jobs_in_flight_per_number() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let n1 = fx.number(&db, 1, 1000).await;
    let n2 = fx.number(&db, 2, 1000).await;
    let idle = fx.number(&db, 3, 1000).await;
    fx.campaign(&db, &[n1, n2, idle], 100).await;
    live(&db, n1).await;
    live(&db, n2).await;
    let prefix = format!("herald_t_{}", unique_suffix());
    let planner = planner(&db, &prefix, "3").await;

    let report = planner.pass().await.unwrap();
    assert_eq!(
        report.numbers, 2,
        "a number without a connected worker is not planned"
    );
    assert_eq!(report.scheduled, 6);
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        0,
        "look-ahead full"
    );
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE messages SET state = 'sent'
              WHERE id IN (SELECT id FROM messages WHERE state = 'scheduled' AND sender_number_id = $1 LIMIT 2)",
            &[&n1],
        )
        .await
        .unwrap();
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        2,
        "refilled as jobs finish"
    );
    let per_number: Vec<(Uuid, i64)> = client
        .query(
            "SELECT sender_number_id, count(*) FROM messages
              WHERE state = 'scheduled' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(per_number.iter().all(|(_, n)| *n == 3), "{per_number:?}");
    drop(client);
    delete_broker_objects(&prefix, &[n1, n2, idle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_look_ahead_is_refilled_once_half_of_it_is_free() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    fx.campaign(&db, &[number], 100).await;
    live(&db, number).await;
    let prefix = format!("herald_t_{}", unique_suffix());
    let planner = planner(&db, &prefix, "10").await;
    assert_eq!(planner.pass().await.unwrap().scheduled, 10);
    let client = db.pool.get().await.unwrap();
    let send = async |n: i64| {
        client
            .execute(
                "UPDATE messages SET state = 'sent'
                  WHERE id IN (SELECT id FROM messages WHERE state = 'scheduled' ORDER BY id LIMIT $1)",
                &[&n],
            )
            .await
            .unwrap();
    };
    send(4).await;
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        0,
        "4 of 10 places free: not yet"
    );
    send(1).await;
    assert_eq!(
        planner.pass().await.unwrap().scheduled,
        5,
        "half free: refilled to the full look-ahead"
    );
    assert_eq!(count_in(&db, "'scheduled'").await, 10);
    drop(client);
    delete_broker_objects(&prefix, &[number]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_during_a_pass_leaves_nothing_of_the_campaign_scheduled() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let campaign = fx.campaign(&db, &[number], 20).await;
    live(&db, number).await;
    let prefix = format!("herald_t_{}", unique_suffix());
    let planner = planner(&db, &prefix, "5").await;

    // Hold the number's row, so the pass has loaded the running campaigns
    // and waits to plan the number when the pause lands.
    let mut holder = db.pool.get().await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM sender_numbers WHERE id = $1 FOR UPDATE",
        &[&number],
    )
    .await
    .unwrap();
    let pause_while_the_pass_waits = async {
        let client = db.pool.get().await.unwrap();
        db.until_waiting_for_a_lock("the pass to wait for the number", "%")
            .await;
        let paused = db::campaigns::pause(&client, fx.tenant_id, campaign, None)
            .await
            .unwrap();
        assert!(paused.is_some());
        hold.commit().await.unwrap();
    };
    let (report, ()) = tokio::join!(planner.pass(), pause_while_the_pass_waits);
    assert_eq!(
        report.unwrap().scheduled,
        0,
        "nothing planned for a paused campaign"
    );
    assert_eq!(count_in(&db, "'scheduled'").await, 0);
    assert_eq!(count_in(&db, "'queued'").await, 20);
    delete_broker_objects(&prefix, &[number]).await;
}
