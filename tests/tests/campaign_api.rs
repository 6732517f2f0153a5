//! The campaign API of the pacing policy: pause, resume and cancel (with the
//! events they announce), plans and dry runs, number settings, sender pools.

use std::time::Duration;

use futures_util::StreamExt as _;
use herald_tests::{ApiServer, mobile};
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use serde_json::{Value, json};

async fn count(server: &ApiServer, query: &str) -> i64 {
    let client = server.db.pool.get().await.unwrap();
    client.query_one(query, &[]).await.unwrap().get(0)
}

fn recipients(series: u32, n: u32) -> Vec<Value> {
    (0..n)
        .map(|i| json!({ "phone": mobile(series, i), "variables": { "name": format!("R{i}") } }))
        .collect()
}

/// Routing keys of the events that reached the scheduler's queue, in order.
async fn events(server: &ApiServer, expected: usize) -> Vec<String> {
    let config = herald_tests::inprocess::config(&server.db, &server.prefix, &[]);
    let broker = herald_shared::queue::Broker::new(&config.rabbitmq, "test");
    let channel = broker.channel().await.unwrap();
    let queue = herald_shared::queue::Topology::new(&config.rabbitmq).scheduler_queue();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "test".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let mut keys = Vec::new();
    while keys.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else { break };
        keys.push(delivery.routing_key.to_string());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    broker.close().await;
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_act_on_messages_and_are_announced() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let number = api.create_number(&mobile(20, 1)).await;
    let template = api.create_template("t", "Hi {{name}}").await;
    let campaign = api
        .create_campaign(&json!({
            "name": "c", "template_id": template, "numbers": [number], "recipients": recipients(21, 4),
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = |action: &str| format!("/v1/campaigns/{campaign}/{action}");
    api.start_campaign(&campaign).await;
    // As if the scheduler had given two messages to the number.
    {
        let client = server.db.pool.get().await.unwrap();
        client
            .execute(
                "UPDATE messages SET state = 'scheduled', sender_number_id = $1
                  WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT 2)",
                &[&number.parse::<uuid::Uuid>().unwrap()],
            )
            .await
            .unwrap();
    }
    let paused = api.post(&path("pause"), &json!({})).await.expect(200);
    assert_eq!(paused["status"], "paused");
    assert_eq!(
        paused["counts"]["queued"], 4,
        "scheduled messages went back to the queue"
    );
    assert!(paused["paused_at"].is_string());
    api.post(&path("pause"), &json!({})).await.expect(200);
    let resumed = api.post(&path("resume"), &json!({})).await.expect(200);
    assert_eq!(resumed["status"], "running");
    let cancelled = api.post(&path("cancel"), &json!({})).await.expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["counts"]["cancelled"], 4);
    let refused = api.post(&path("resume"), &json!({})).await;
    assert_eq!(refused.status.as_u16(), 409, "{}", refused.body);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    assert_eq!(
        api.post(&path("start"), &json!({})).await.status.as_u16(),
        409
    );
    assert_eq!(
        events(&server, 4).await,
        [
            "campaign.started",
            "campaign.paused",
            "campaign.resumed",
            "campaign.cancelled"
        ],
        "one event per change, none for repeats"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_can_wait_for_its_start_time() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let number = api.create_number(&mobile(22, 1)).await;
    let template = api.create_template("t", "Hi {{name}}").await;
    let start_at = chrono::Utc::now() + chrono::Duration::hours(2);
    let created = api
        .create_campaign(&json!({
            "name": "later", "template_id": template, "numbers": [number], "recipients": recipients(23, 2),
            "start_at": start_at, "end_by": start_at + chrono::Duration::hours(5),
            "window": {"start": "08:30", "end": "24:00"},
        }))
        .await;
    assert_eq!(created["window"], json!({"start": "08:30", "end": "24:00"}));
    let id = created["id"].as_str().unwrap();
    let started = api.start_campaign(id).await;
    assert_eq!(started["status"], "scheduled");
    assert!(started["started_at"].is_null());
    let bad = api
        .post(
            "/v1/campaigns",
            &json!({"name": "x", "template_id": template, "numbers": [number], "recipients": recipients(23, 1),
                    "end_by": "2020-01-01T00:00:00Z", "window": {"start": "20:00", "end": "09:00"}}),
        )
        .await;
    assert_eq!(bad.status.as_u16(), 422);
    let pointers: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/window", "/end_by"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_projects_each_number_day_by_day() {
    let server = ApiServer::start(&[
        ("HERALD__PACING__TYPING_MIN_MS", "100"),
        ("HERALD__PACING__TYPING_MAX_MS", "100"),
    ])
    .await;
    let api = &server.api;
    let mut numbers = Vec::new();
    for (i, cap) in [(1, 10), (2, 20)] {
        let body = api
            .post(
                "/v1/numbers",
                &json!({"phone": mobile(24, i), "kind": "sim", "daily_cap": cap, "min_gap_ms": 0,
                        "jitter": {"kind": "none"}, "warmup_plan": "none", "time_zone": "UTC"}),
            )
            .await
            .expect(201);
        numbers.push(body["id"].as_str().unwrap().to_string());
    }
    let template = api.create_template("t", "Hi {{name}}").await;
    let campaign = api
        .create_campaign(&json!({
            "name": "c", "template_id": template, "numbers": numbers, "recipients": recipients(25, 100),
            "window": {"start": "00:00", "end": "24:00"},
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let plan = api
        .get(&format!("/v1/campaigns/{campaign}/plan"))
        .await
        .expect(200);
    assert_eq!(plan["remaining"], 100);
    assert_eq!(plan["unplaced"], 0);
    assert!(plan["completes_at"].is_string());
    let per_number: Vec<(String, i64, i64)> = plan["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["number_id"].as_str().unwrap().to_string(),
                n["messages"].as_i64().unwrap(),
                n["days"][0]["messages"].as_i64().unwrap(),
            )
        })
        .collect();
    let total: i64 = per_number.iter().map(|n| n.1).sum();
    assert_eq!(total, 100);
    assert_eq!(per_number[0].2, 10, "the first number's cap a day");
    assert_eq!(per_number[1].2, 20, "the second's");
    assert_eq!(
        plan["days"].as_array().unwrap().len(),
        4,
        "30 a day: 4 days"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_and_plans_without_storing_anything() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let number = api.create_number(&mobile(26, 1)).await;
    let a = api.create_template("a", "Hi {{name}}").await;
    let b = api.create_template("b", "Hello {{name}}").await;
    let mut rows = recipients(27, 9);
    rows.push(json!({"phone": "nope"}));
    rows.push(json!({"phone": "+1 201 555 0123", "variables": {"name": "NY"}}));
    let dry = api
        .post(
            "/v1/campaigns",
            &json!({"name": "d", "variants": [a, b], "numbers": [number], "recipients": rows, "dry_run": true}),
        )
        .await
        .expect(200);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["report"]["accepted"], 10);
    assert_eq!(dry["report"]["rejected_total"], 1);
    assert_eq!(dry["report"]["per_variant"], json!([5, 5]));
    assert_eq!(dry["report"]["per_zone"], json!({"p:1201": 1, "p:551": 9}));
    assert_eq!(dry["plan"]["remaining"], 10);
    assert!(dry["plan"]["numbers"][0]["days"].is_array());
    assert_eq!(count(&server, "SELECT count(*) FROM campaigns").await, 0);
    assert_eq!(count(&server, "SELECT count(*) FROM messages").await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_settings_are_checked_and_changeable() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let bad = api
        .post(
            "/v1/numbers",
            &json!({"phone": mobile(28, 1), "kind": "sim", "time_zone": "Mars/Base", "warmup_plan": "turbo",
                    "jitter": {"kind": "exponential", "mean_ms": 0, "max_ms": 10}, "tags": ["OK", "fine"]}),
        )
        .await;
    assert_eq!(bad.status.as_u16(), 422);
    let pointers: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/time_zone", "/warmup_plan", "/jitter", "/tags/0"]
    );
    let created = api
        .post(
            "/v1/numbers",
            &json!({"phone": mobile(28, 1), "kind": "sim", "label": "shop", "tags": ["promo"], "warmup_plan": "cautious"}),
        )
        .await
        .expect(201);
    assert_eq!(created["time_zone"], "America/Sao_Paulo", "from the phone");
    assert_eq!(created["warmup_day"], 0);
    assert_eq!(created["jitter"]["kind"], "exponential", "the default");
    assert_eq!(created["breaker"], "closed");
    let id = created["id"].as_str().unwrap();
    let patched = api
        .send(api.request(reqwest::Method::PATCH, &format!("/v1/numbers/{id}")).json(
            &json!({"label": null, "daily_cap": 50, "tags": ["promo", "vip"], "jitter": {"kind": "uniform", "max_ms": 5000}, "state": "disabled"}),
        ))
        .await
        .expect(200);
    assert_eq!(patched["label"], Value::Null);
    assert_eq!(patched["daily_cap"], 50);
    assert_eq!(patched["tags"], json!(["promo", "vip"]));
    assert_eq!(
        patched["jitter"],
        json!({"kind": "uniform", "max_ms": 5000})
    );
    assert_eq!(patched["state"], "disabled");
    assert_eq!(patched["warmup_plan"], "cautious", "untouched");
    let not_allowed = api
        .send(
            api.request(reqwest::Method::PATCH, &format!("/v1/numbers/{id}"))
                .json(&json!({"state": "banned"})),
        )
        .await;
    assert_eq!(not_allowed.status.as_u16(), 422);
    let other = server.another_tenant("other").await;
    let hidden = other
        .send(
            other
                .request(reqwest::Method::PATCH, &format!("/v1/numbers/{id}"))
                .json(&json!({"daily_cap": 1})),
        )
        .await;
    assert_eq!(hidden.status.as_u16(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_campaign_sends_through_the_tagged_numbers() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let template = api.create_template("t", "Hi {{name}}").await;
    let request = |pool: &str| json!({"name": "p", "template_id": template, "pool": pool, "recipients": recipients(29, 3)});
    let empty = api.post("/v1/campaigns", &request("promo")).await;
    assert_eq!(empty.status.as_u16(), 422);
    assert!(
        empty.body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no number carries")
    );
    api.post(
        "/v1/numbers",
        &json!({"phone": mobile(30, 1), "kind": "sim", "tags": ["promo"]}),
    )
    .await
    .expect(201);
    let created = api.create_campaign(&request("promo")).await;
    assert_eq!(created["pool"], "promo");
    assert_eq!(created["numbers"], json!([]));
    let both = api
        .post(
            "/v1/campaigns",
            &json!({"name": "p", "template_id": template, "pool": "promo", "numbers": [created["id"]], "recipients": recipients(29, 1)}),
        )
        .await;
    assert_eq!(both.status.as_u16(), 422);
    server.stop().await;
}
