//! The event log and what reads it over HTTP: message state changes become
//! typed events (from the trigger, whatever code moved the message), the
//! relay logs them in commit order, and the live stream delivers them and
//! resumes exactly after the last id a client saw. Also the validation of
//! the webhook and settings APIs.

use std::time::Duration;

use herald_shared::{
    db::outbox,
    events::{Event, EventBody},
};
use herald_tests::{ApiServer, TestDb, fixtures::draft_campaign, mobile, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

async fn campaign(server: &ApiServer, series: u32, n: u32) -> (String, Vec<i64>) {
    draft_campaign(&server.api, series, n).await
}

/// Moves a message to `state` the way Herald's components do: one UPDATE of
/// its state and the state's time.
async fn set_state(server: &ApiServer, id: i64, state: &str, reason: Option<&str>) {
    let column = format!("{state}_at");
    let client = server.db.pool.get().await.unwrap();
    client
        .execute(
            &format!(
                "UPDATE messages SET state = $2::text::message_state, {column} = now(),
                        failure_reason = coalesce($3, failure_reason) WHERE id = $1"
            ),
            &[&id, &state, &reason],
        )
        .await
        .unwrap();
}

/// The tenant's logged events of a type prefix, oldest first, as
/// (seq, payload with the tenant put back).
async fn logged(server: &ApiServer, prefix: &str) -> Vec<(i64, Value)> {
    let client = server.db.pool.get().await.unwrap();
    client
        .query(
            "SELECT seq, payload || jsonb_build_object('tenant_id', tenant_id)
               FROM events WHERE tenant_id = $1 AND type LIKE $2 ORDER BY seq",
            &[&server.tenant_id, &format!("{prefix}%")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_state_changes_become_typed_events_in_commit_order() {
    let server = ApiServer::start(&[]).await;
    let (campaign_id, ids) = campaign(&server, 71, 6).await;
    set_state(&server, ids[0], "sent", None).await;
    set_state(&server, ids[1], "sent", None).await;
    set_state(&server, ids[1], "delivered", None).await;
    set_state(&server, ids[2], "read", None).await;
    set_state(&server, ids[3], "failed", Some("not on WhatsApp")).await;
    set_state(&server, ids[4], "unknown", Some("no server verdict")).await;
    // Not announced: visible through the API only.
    set_state(&server, ids[5], "suppressed", None).await;
    // A direct message's internal wake-up never reaches the tenant's log.
    let number = server.api.get("/v1/numbers").await.expect(200)["data"][0]["id"].clone();
    server
        .api
        .post(
            "/v1/messages",
            &json!({"to": mobile(71, 50), "from": number, "text": "direct"}),
        )
        .await
        .expect(202);

    wait_for("six message events", Duration::from_secs(10), || async {
        let events = logged(&server, "message.").await;
        (events.len() >= 6).then_some(())
    })
    .await;
    // The outbox drains completely: nothing is stuck waiting to be logged.
    wait_for("the outbox to drain", Duration::from_secs(10), || async {
        let client = server.db.pool.get().await.unwrap();
        let left: i64 = client
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;
    let events = logged(&server, "message.").await;
    assert_eq!(events.len(), 6, "{events:#?}");
    let mut seen = Vec::new();
    for (_, payload) in &events {
        let event: Event = serde_json::from_value(payload.clone())
            .unwrap_or_else(|err| panic!("{payload} is not an Event: {err}"));
        assert_eq!(event.tenant_id, server.tenant_id);
        let (kind, change) = match &event.body {
            EventBody::MessageSent(c) => ("sent", c),
            EventBody::MessageDelivered(c) => ("delivered", c),
            EventBody::MessageRead(c) => ("read", c),
            EventBody::MessageFailed(c) => ("failed", c),
            EventBody::MessageUnknown(c) => ("unknown", c),
            other => panic!("unexpected event {other:?}"),
        };
        assert_eq!(change.state.as_str(), kind);
        assert_eq!(change.campaign_id.unwrap().to_string(), campaign_id);
        assert!(change.at.is_some(), "{payload}");
        assert!(change.wa_message_id.starts_with("3EB0"));
        assert!(change.recipient.starts_with("+55119071"));
        if kind == "failed" {
            assert_eq!(change.failure_reason.as_deref(), Some("not on WhatsApp"));
        }
        seen.push((change.message_id, kind));
    }
    assert_eq!(
        seen,
        [
            (ids[0], "sent"),
            (ids[1], "sent"),
            (ids[1], "delivered"),
            (ids[2], "read"),
            (ids[3], "failed"),
            (ids[4], "unknown"),
        ],
        "the log keeps the order the changes were committed in"
    );
    assert!(logged(&server, "message.queued").await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_delivers_in_order_and_resumes_after_the_last_event_id() {
    let server = ApiServer::start(&[("HERALD__EVENTS__POLL_MS", "200")]).await;
    let (_, ids) = campaign(&server, 72, 8).await;
    let api = &server.api;
    let wait = Duration::from_secs(5);

    // A stream opened now sees what happens from now on.
    let mut stream = api.events("", None).await;
    for id in &ids[..5] {
        set_state(&server, *id, "sent", None).await;
    }
    let mut last = String::new();
    let mut previous = 0i64;
    for expected in &ids[..5] {
        let (id, event) = stream.next(wait).await.expect("an event");
        assert_eq!(event["type"], "message.sent");
        assert_eq!(event["data"]["message_id"], *expected);
        assert!(
            event.get("tenant_id").is_none(),
            "tenants see their events only"
        );
        let position: i64 = id.parse().unwrap();
        assert!(position > previous, "ids increase");
        previous = position;
        last = id;
    }
    drop(stream);

    // Missed while disconnected…
    for id in &ids[5..] {
        set_state(&server, *id, "sent", None).await;
    }
    for id in &ids[..2] {
        set_state(&server, *id, "delivered", None).await;
    }
    // …and exactly that after reconnecting with Last-Event-ID.
    let mut resumed = api.events("", Some(&last)).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let (_, event) = resumed.next(wait).await.expect("a missed event");
        got.push((
            event["type"].as_str().unwrap().to_string(),
            event["data"]["message_id"].as_i64().unwrap(),
        ));
    }
    let expected: Vec<(String, i64)> = ids[5..]
        .iter()
        .map(|id| ("message.sent".to_string(), *id))
        .chain(
            ids[..2]
                .iter()
                .map(|id| ("message.delivered".to_string(), *id)),
        )
        .collect();
    assert_eq!(got, expected);
    assert!(
        resumed.next(Duration::from_millis(700)).await.is_none(),
        "nothing twice"
    );

    // From the start of the log, one type only.
    let mut delivered = api.events("after=0&types=message.delivered", None).await;
    for id in &ids[..2] {
        let (_, event) = delivered.next(wait).await.expect("a delivered event");
        assert_eq!(event["type"], "message.delivered");
        assert_eq!(event["data"]["message_id"], *id);
    }
    assert!(delivered.next(Duration::from_millis(500)).await.is_none());

    // Another tenant's stream shows none of it.
    let intruder = server.another_tenant("intruder").await;
    let mut theirs = intruder.events("after=0", None).await;
    assert!(theirs.next(Duration::from_millis(700)).await.is_none());

    // Bad resume points and types are refused before streaming.
    let bad = api
        .send(api.request(Method::GET, "/v1/events?types=message.bogus"))
        .await;
    assert_eq!(bad.status.as_u16(), 422, "{}", bad.body);
    assert_eq!(bad.body["errors"][0]["pointer"], "types");
    let bad = api
        .send(
            api.request(Method::GET, "/v1/events")
                .header("last-event-id", "yesterday"),
        )
        .await;
    assert_eq!(bad.status.as_u16(), 422);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_settings_requests_are_validated() {
    let server = ApiServer::start(&[("HERALD__WEBHOOKS__MAX_ENDPOINTS", "2")]).await;
    let api = &server.api;
    let refused = |body: Value, pointer: &'static str| {
        let api = api.clone();
        async move {
            let reply = api.post("/v1/webhooks", &body).await;
            assert_eq!(reply.status.as_u16(), 422, "{body}: {}", reply.body);
            let named = reply.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["pointer"] == pointer);
            assert!(named, "{body}: {}", reply.body);
        }
    };
    refused(json!({"url": "http://10.0.0.8/hook"}), "/url").await;
    refused(json!({"url": "http://localhost:9000/hook"}), "/url").await;
    refused(json!({"url": "http://169.254.169.254/latest"}), "/url").await;
    refused(json!({"url": "ftp://example.com/x"}), "/url").await;
    refused(
        json!({"url": "https://hooks.example.com/a", "event_types": ["message.sent", "message.nope"]}),
        "/event_types/1",
    )
    .await;
    refused(
        json!({"url": "https://hooks.example.com/a", "secret": "hunter2"}),
        "/secret",
    )
    .await;
    assert_eq!(
        api.get("/v1/webhooks").await.expect(200)["data"],
        json!([]),
        "nothing was created"
    );

    let created = api
        .post(
            "/v1/webhooks",
            &json!({"url": "https://hooks.example.com/a", "event_types": ["message.read", "message.read"],
                    "description": "CRM"}),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["event_types"], json!(["message.read"]));
    let shown = api.get(&format!("/v1/webhooks/{id}")).await.expect(200);
    assert!(
        shown.get("secret").is_none(),
        "the secret is not in listings"
    );
    assert_eq!(
        api.get(&format!("/v1/webhooks/{id}/secret"))
            .await
            .expect(200)["secret"],
        secret.as_str()
    );
    api.post(
        "/v1/webhooks",
        &json!({"url": "https://hooks.example.com/b"}),
    )
    .await
    .expect(201);
    let third = api
        .post(
            "/v1/webhooks",
            &json!({"url": "https://hooks.example.com/c"}),
        )
        .await;
    assert_eq!(third.status.as_u16(), 409, "{}", third.body);

    let patch = |body: Value| {
        api.send(
            api.request(Method::PATCH, &format!("/v1/webhooks/{id}"))
                .json(&body),
        )
    };
    assert_eq!(
        patch(json!({"url": "http://192.168.0.10/x"}))
            .await
            .status
            .as_u16(),
        422
    );
    let changed = patch(json!({"event_types": [], "enabled": false, "description": null}))
        .await
        .expect(200);
    assert_eq!(changed["event_types"], json!([]));
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["description"], Value::Null);
    assert_eq!(changed["url"], "https://hooks.example.com/a");

    let rotate = format!("/v1/webhooks/{id}/rotate-secret");
    assert_eq!(
        api.post(&rotate, &json!({"overlap_hours": 500}))
            .await
            .status
            .as_u16(),
        422
    );
    let rotated = api.post(&rotate, &json!({})).await.expect(200);
    assert_ne!(rotated["secret"], secret.as_str());
    assert!(rotated["previous_secret_until"].is_string());
    let rotated = api
        .post(&rotate, &json!({"overlap_hours": 0}))
        .await
        .expect(200);
    assert_eq!(rotated["previous_secret_until"], Value::Null);
    assert_eq!(
        api.get(&format!("/v1/webhooks/{id}/deliveries"))
            .await
            .expect(200)["data"],
        json!([])
    );

    // Settings: the defaults, a tenant's own list, and back.
    let defaults = api.get("/v1/settings").await.expect(200);
    assert_eq!(defaults["opt_out_keywords_default"], true);
    assert!(
        defaults["opt_out_keywords"]
            .as_array()
            .unwrap()
            .contains(&json!("stop"))
    );
    assert_eq!(defaults["opt_out_reply"], Value::Null);
    let settings = |body: Value| api.send(api.request(Method::PATCH, "/v1/settings").json(&body));
    let bad = settings(json!({"opt_out_keywords": ["ok", "  !! "], "opt_out_reply": ""})).await;
    assert_eq!(bad.status.as_u16(), 422);
    let pointers: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/opt_out_keywords/1", "/opt_out_reply"]);
    let own = settings(json!({"opt_out_keywords": ["Pare de enviar"], "opt_out_reply": "Done."}))
        .await
        .expect(200);
    assert_eq!(own["opt_out_keywords"], json!(["Pare de enviar"]));
    assert_eq!(own["opt_out_keywords_default"], false);
    assert_eq!(
        api.get("/v1/settings").await.expect(200)["opt_out_reply"],
        "Done."
    );
    let back = settings(json!({"opt_out_keywords": null}))
        .await
        .expect(200);
    assert_eq!(back["opt_out_keywords_default"], true);
    assert_eq!(back["opt_out_reply"], "Done.", "untouched fields stay");
    server.stop().await;
}

/// The outbox lag (`herald_outbox_lag_seconds`) is the age of the oldest row
/// waiting, and 0 when none is.
#[tokio::test]
async fn the_outbox_lag_is_the_age_of_the_oldest_row_waiting() {
    let db = TestDb::create().await;
    let client = db.pool.get().await.unwrap();
    assert_eq!(outbox::lag_seconds(&client).await.unwrap(), 0.0);
    client
        .batch_execute(
            "INSERT INTO outbox (topic, payload, created_at) VALUES
                 ('campaign.started', '{}', now() - interval '30 seconds'),
                 ('campaign.started', '{}', now() - interval '5 seconds')",
        )
        .await
        .unwrap();
    let lag = outbox::lag_seconds(&client).await.unwrap();
    assert!((30.0..31.0).contains(&lag), "{lag}");
    client
        .batch_execute("DELETE FROM outbox WHERE created_at < now() - interval '10 seconds'")
        .await
        .unwrap();
    let lag = outbox::lag_seconds(&client).await.unwrap();
    assert!((5.0..6.0).contains(&lag), "{lag}");
}

/// An event's times are UTC with microseconds whatever the session's time
/// zone, and the function that formats them is inlined into the statement
/// calling it: declared more immutable than its body, it ran as a query of
/// its own, planned at every call, twice per event (migration 0012).
#[tokio::test]
async fn event_times_are_utc_and_formatted_inside_the_calling_statement() {
    let db = TestDb::create().await;
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute("SET TimeZone = 'America/Sao_Paulo'")
        .await
        .unwrap();
    let formatted: String = client
        .query_one(
            "SELECT herald_json_time('2026-01-02 03:04:05.000006+00')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(formatted, "2026-01-02T03:04:05.000006Z");
    let plan: String = client
        .query("EXPLAIN (VERBOSE) SELECT herald_json_time(now())", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    assert!(
        plan.contains("to_char(") && !plan.contains("herald_json_time"),
        "not inlined: {plan}"
    );
}
