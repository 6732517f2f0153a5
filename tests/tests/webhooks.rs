//! Webhook delivery on the real Postgres and RabbitMQ: the API and the
//! scheduler (fan-out, attempts, back-off queues) in this process, and a
//! receiver on a local port. Signatures are checked with the Standard
//! Webhooks reference library for Python, not with Herald's own code.

use std::{collections::BTreeMap, time::Duration};

use herald_tests::{
    ApiServer,
    fixtures::draft_campaign,
    receiver::{Receiver, verify_with_reference_library},
    wait_for,
};
use serde_json::{Value, json};

const OVERRIDES: &[(&str, &str)] = &[
    ("HERALD__WEBHOOKS__ALLOW_LOOPBACK", "true"),
    (
        "HERALD__WEBHOOKS__RETRY_SCHEDULE",
        "200ms, 300ms, 500ms, 1s, 1s, 1s, 1s, 1s",
    ),
    ("HERALD__EVENTS__POLL_MS", "100"),
    ("HERALD__SCHEDULER__TICK_MS", "100"),
];

async fn server() -> ApiServer {
    let mut server = ApiServer::start(OVERRIDES).await;
    server.start_scheduler();
    server
}

async fn campaign(server: &ApiServer, series: u32, n: u32) -> (String, Vec<i64>) {
    draft_campaign(&server.api, series, n).await
}

/// Marks messages sent, as a worker would: each becomes a `message.sent`.
async fn mark_sent(server: &ApiServer, ids: &[i64]) {
    let client = server.db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE messages SET state = 'sent', sent_at = now() WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap();
}

async fn endpoint(server: &ApiServer, url: &str, types: &[&str]) -> (String, String) {
    let created = server
        .api
        .post("/v1/webhooks", &json!({"url": url, "event_types": types}))
        .await
        .expect(201);
    (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

async fn deliveries(server: &ApiServer, endpoint: &str, state: &str) -> Vec<Value> {
    server
        .api
        .get(&format!(
            "/v1/webhooks/{endpoint}/deliveries?state={state}&limit=1000"
        ))
        .await
        .expect(200)["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Event ids of the tenant's logged events of these types.
async fn event_ids(server: &ApiServer, types: &[&str]) -> Vec<String> {
    let client = server.db.pool.get().await.unwrap();
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    client
        .query(
            "SELECT id::text FROM events WHERE tenant_id = $1 AND type = ANY($2) ORDER BY seq",
            &[&server.tenant_id, &types],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_after_a_receiver_outage_signed_and_duplicated_only_under_its_id() {
    let server = server().await;
    // A port nobody listens on yet: the receiver is down.
    let port = herald_tests::ports::free_addr();
    let url = format!("http://{port}/hooks/herald");
    let types = ["message.sent", "campaign.started"];
    let (hook, secret) = endpoint(&server, &url, &types).await;
    let (campaign_id, ids) = campaign(&server, 73, 20).await;
    server.api.start_campaign(&campaign_id).await;
    // Not subscribed: never delivered. Paused before the messages are marked
    // sent: a running campaign with nothing left to send is completed by the
    // scheduler's next pass, and could no longer be paused.
    server
        .api
        .post(&format!("/v1/campaigns/{campaign_id}/pause"), &json!({}))
        .await
        .expect(200);
    mark_sent(&server, &ids).await;

    // Attempts fail while it is down…
    wait_for(
        "attempts to fail while the receiver is down",
        Duration::from_secs(20),
        || async {
            let pending = deliveries(&server, &hook, "pending").await;
            (pending.len() == 21 && pending.iter().all(|d| d["attempts"].as_i64() >= Some(2)))
                .then_some(())
        },
    )
    .await;
    // …then it comes up, and flaky: the first try of every third event is
    // answered 503 after being "processed", so it arrives twice.
    let receiver = Receiver::on(port).await;
    receiver.answer_with(|arrival, seen| {
        let flaky = arrival.webhook_id().bytes().map(u32::from).sum::<u32>() % 3 == 0;
        if flaky && seen == 0 { 503 } else { 204 }
    });
    wait_for(
        "every delivery to succeed",
        Duration::from_secs(30),
        || async { (deliveries(&server, &hook, "delivered").await.len() == 21).then_some(()) },
    )
    .await;

    let expected = event_ids(&server, &types).await;
    assert_eq!(expected.len(), 21, "20 messages sent and the start");
    let arrivals = receiver.arrivals();
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for arrival in &arrivals {
        let id = arrival.webhook_id().to_string();
        let body = arrival.json();
        assert_eq!(body["id"], id.as_str(), "webhook-id is the event id");
        assert!(types.contains(&body["type"].as_str().unwrap()));
        // A duplicate is the same message: same id, same bytes.
        let first = bodies.entry(id).or_insert_with(|| arrival.body.clone());
        assert_eq!(*first, arrival.body);
    }
    let mut arrived: Vec<String> = bodies.keys().cloned().collect();
    let mut wanted = expected.clone();
    arrived.sort();
    wanted.sort();
    assert_eq!(arrived, wanted, "every event, and nothing else");
    assert!(
        arrivals.len() > expected.len(),
        "some events arrived twice (the 503s)"
    );
    // An implementation Herald did not write accepts every signature…
    let verdicts = verify_with_reference_library(&secret, &arrivals);
    assert!(verdicts.iter().all(|ok| *ok), "{verdicts:?}");
    // …and refuses them under another secret (the check can fail).
    let wrong =
        verify_with_reference_library("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &arrivals[..1]);
    assert_eq!(wrong, [false]);

    // The attempts log tells the story of one delivery.
    let one = &deliveries(&server, &hook, "delivered").await[0];
    let detail = server
        .api
        .get(&format!("/v1/webhooks/{hook}/deliveries/{}", one["id"]))
        .await
        .expect(200);
    let log = detail["attempt_log"].as_array().unwrap();
    assert!(log.len() >= 3, "{detail}");
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{detail}"
    );
    assert!(log.last().unwrap()["status"].as_i64().unwrap() / 100 == 2);
    receiver.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_alongside_the_old_one_until_the_overlap_ends() {
    let server = server().await;
    let receiver = Receiver::start().await;
    let (hook, old) = endpoint(&server, &receiver.url("/h"), &["message.sent"]).await;
    let (_, ids) = campaign(&server, 74, 3).await;
    mark_sent(&server, &ids[..1]).await;
    wait_for("the first event", Duration::from_secs(20), || async {
        (receiver.accepted().len() == 1).then_some(())
    })
    .await;
    let rotated = server
        .api
        .post(
            &format!("/v1/webhooks/{hook}/rotate-secret"),
            &json!({"overlap_hours": 1}),
        )
        .await
        .expect(200);
    let new = rotated["secret"].as_str().unwrap().to_string();
    mark_sent(&server, &ids[1..2]).await;
    wait_for("the second event", Duration::from_secs(20), || async {
        (receiver.accepted().len() == 2).then_some(())
    })
    .await;
    let during = receiver.accepted()[1].clone();
    assert_eq!(
        during.headers["webhook-signature"].split(' ').count(),
        2,
        "two signatures during the overlap"
    );
    assert_eq!(
        verify_with_reference_library(&old, std::slice::from_ref(&during)),
        [true]
    );
    assert_eq!(verify_with_reference_library(&new, &[during]), [true]);

    // Ending the overlap leaves only the new secret.
    server
        .api
        .post(
            &format!("/v1/webhooks/{hook}/rotate-secret"),
            &json!({"secret": new, "overlap_hours": 0}),
        )
        .await
        .expect(200);
    mark_sent(&server, &ids[2..]).await;
    wait_for("the third event", Duration::from_secs(20), || async {
        (receiver.accepted().len() == 3).then_some(())
    })
    .await;
    let after = receiver.accepted()[2].clone();
    assert_eq!(after.headers["webhook-signature"].split(' ').count(), 1);
    assert_eq!(
        verify_with_reference_library(&old, std::slice::from_ref(&after)),
        [false]
    );
    assert_eq!(verify_with_reference_library(&new, &[after]), [true]);
    receiver.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_can_be_replayed_and_a_gone_endpoint_is_disabled() {
    let server = server().await;
    let receiver = Receiver::start().await;
    receiver.answer_with(|_, _| 500);
    let (hook, _) = endpoint(&server, &receiver.url("/h"), &["message.sent"]).await;
    let (_, ids) = campaign(&server, 75, 4).await;
    mark_sent(&server, &ids[..2]).await;
    // Every attempt of the schedule (1 + 8), then failed.
    let failed = wait_for(
        "the deliveries to fail",
        Duration::from_secs(30),
        || async {
            let failed = deliveries(&server, &hook, "failed").await;
            (failed.len() == 2).then_some(failed)
        },
    )
    .await;
    for delivery in &failed {
        assert_eq!(delivery["attempts"], 9, "{delivery}");
        assert_eq!(delivery["last_status"], 500);
    }
    let first_ids: Vec<String> = receiver
        .arrivals()
        .iter()
        .map(|a| a.webhook_id().to_string())
        .collect();

    // The receiver is fixed: replay what failed.
    receiver.answer_with(|_, _| 200);
    let replayed = server
        .api
        .post(&format!("/v1/webhooks/{hook}/replay"), &json!({}))
        .await
        .expect(202);
    assert_eq!(replayed["replayed"], 2);
    wait_for(
        "the replays to succeed",
        Duration::from_secs(20),
        || async { (deliveries(&server, &hook, "delivered").await.len() == 2).then_some(()) },
    )
    .await;
    for arrival in receiver.accepted() {
        assert!(
            first_ids.contains(&arrival.webhook_id().to_string()),
            "a replay keeps its webhook-id"
        );
    }
    // One delivery replayed on its own, though it succeeded already.
    let one = deliveries(&server, &hook, "delivered").await[0]["id"].clone();
    server
        .api
        .post(
            &format!("/v1/webhooks/{hook}/deliveries/{one}/replay"),
            &json!({}),
        )
        .await
        .expect(202);
    wait_for("the single replay", Duration::from_secs(20), || async {
        (receiver.accepted().len() == 3).then_some(())
    })
    .await;

    // 410 Gone: the endpoint is disabled, and gets nothing more.
    receiver.answer_with(|_, _| 410);
    mark_sent(&server, &ids[2..3]).await;
    let disabled = wait_for(
        "the endpoint to be disabled",
        Duration::from_secs(20),
        || async {
            let hook = server.api.get(&format!("/v1/webhooks/{hook}")).await.body;
            (hook["enabled"] == false).then_some(hook)
        },
    )
    .await;
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    let gone_attempts = receiver.arrivals().len();
    mark_sent(&server, &ids[3..]).await;
    // The event is logged, and the fan-out has passed it without a delivery.
    wait_for(
        "the last event to be fanned out",
        Duration::from_secs(20),
        || async {
            let client = server.db.pool.get().await.unwrap();
            let passed: bool = client
                .query_one(
                    "SELECT (SELECT position FROM event_cursors WHERE name = 'webhooks')
                        >= (SELECT max(seq) FROM events)",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            passed.then_some(())
        },
    )
    .await;
    assert_eq!(receiver.arrivals().len(), gone_attempts);
    let all = deliveries(&server, &hook, "failed").await;
    assert_eq!(all.len(), 1, "only the 410 delivery failed: {all:?}");
    // Enabling it again clears the reason.
    let enabled = server
        .api
        .send(
            server
                .api
                .request(reqwest::Method::PATCH, &format!("/v1/webhooks/{hook}"))
                .json(&json!({"enabled": true})),
        )
        .await
        .expect(200);
    assert_eq!(enabled["disabled_reason"], Value::Null);
    receiver.stop().await;
    server.stop().await;
}
