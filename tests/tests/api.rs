//! The HTTP surface: bad input gets a clear problem+json answer and changes
//! nothing; tenants only ever see their own resources.

use herald_tests::{ApiServer, client::Reply, mobile, stack::binary};
use reqwest::Method;
use serde_json::{Value, json};

fn assert_problem(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "body: {}", reply.body);
    assert_eq!(
        reply.content_type, "application/problem+json",
        "{}",
        reply.body
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "problem without detail: {}", reply.body);
    assert_eq!(reply.body["status"], status);
    assert!(
        reply.body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:herald:problem:")),
        "{}",
        reply.body
    );
}

async fn count(server: &ApiServer, table: &str) -> i64 {
    let client = server.db.pool.get().await.unwrap();
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn bad_requests_get_problem_details() {
    let server = ApiServer::start(&[("HERALD__API__MAX_BODY_BYTES", "4096")]).await;
    let api = &server.api;

    // Authentication.
    let anonymous = api.with_key(None);
    let reply = anonymous.get("/v1/numbers").await;
    assert_problem(&reply, 401);
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    assert_problem(
        &api.with_key(Some("hk_not_a_real_key"))
            .get("/v1/numbers")
            .await,
        401,
    );
    let basic = api
        .send(
            api.with_key(None)
                .request(Method::GET, "/v1/numbers")
                .header("authorization", "Basic dXNlcjpwYXNz"),
        )
        .await;
    assert_problem(&basic, 401);

    // Bodies.
    let malformed = api
        .send(
            api.request(Method::POST, "/v1/numbers")
                .header("content-type", "application/json")
                .body("{\"phone\": "),
        )
        .await;
    assert_problem(&malformed, 400);
    let not_json = api
        .send(api.request(Method::POST, "/v1/numbers").body("phone=1"))
        .await;
    assert_problem(&not_json, 415);
    let unknown_field = api
        .post(
            "/v1/numbers",
            &json!({"phone": mobile(7, 1), "kind": "sim", "colour": "red"}),
        )
        .await;
    assert_problem(&unknown_field, 422);
    assert!(
        unknown_field.body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`")
    );
    let missing_field = api
        .post("/v1/numbers", &json!({"phone": mobile(7, 1)}))
        .await;
    assert_problem(&missing_field, 422);
    assert!(
        missing_field.body["detail"]
            .as_str()
            .unwrap()
            .contains("kind")
    );
    let bad_kind = api
        .post(
            "/v1/numbers",
            &json!({"phone": mobile(7, 1), "kind": "fax"}),
        )
        .await;
    assert_problem(&bad_kind, 422);
    let too_big = api
        .post(
            "/v1/templates",
            &json!({"name": "big", "body": "x".repeat(10_000)}),
        )
        .await;
    assert_problem(&too_big, 413);

    // Field validation names the field.
    let bad_phone = api
        .post(
            "/v1/numbers",
            &json!({"phone": "12345", "kind": "sim", "daily_cap": -1}),
        )
        .await;
    assert_problem(&bad_phone, 422);
    let pointers: Vec<&str> = bad_phone.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/phone", "/daily_cap"]);
    let bad_template = api
        .post("/v1/templates", &json!({"name": "t", "body": "Hi {{name"}))
        .await;
    assert_problem(&bad_template, 422);
    assert_eq!(bad_template.body["errors"][0]["pointer"], "/body");

    // Conflicts, routes, methods, ids.
    api.create_number(&mobile(7, 2)).await;
    let duplicate = api
        .post(
            "/v1/numbers",
            &json!({"phone": mobile(7, 2), "kind": "sim"}),
        )
        .await;
    assert_problem(&duplicate, 409);
    assert_problem(&api.get("/v1/nothing-here").await, 404);
    assert_problem(
        &api.send(api.request(Method::DELETE, "/v1/numbers")).await,
        405,
    );
    assert_problem(&api.get("/v1/campaigns/not-a-uuid").await, 404);
    assert_problem(
        &api.get("/v1/campaigns/00000000-0000-0000-0000-000000000000")
            .await,
        404,
    );

    assert_eq!(
        count(&server, "sender_numbers").await,
        1,
        "only the valid number exists"
    );
    assert_eq!(count(&server, "templates").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn numbers_are_normalised_with_defaults_and_listed() {
    let server = ApiServer::start(&[
        ("HERALD__PACING__DEFAULT_DAILY_CAP", "150"),
        ("HERALD__PACING__DEFAULT_MIN_GAP_MS", "30000"),
    ])
    .await;
    let created = server
        .api
        .post(
            "/v1/numbers",
            &json!({"phone": "+55 (11) 90000-0001", "kind": "sim", "label": " shop "}),
        )
        .await
        .expect(201);
    assert_eq!(created["phone"], "+5511900000001");
    assert_eq!(created["state"], "active");
    assert_eq!(created["daily_cap"], 150);
    assert_eq!(created["min_gap_ms"], 30000);
    assert_eq!(created["label"], "shop");
    assert_eq!(created["connected"], false);
    let real = server
        .api
        .post(
            "/v1/numbers",
            &json!({"phone": "+5511900000002", "kind": "whatsapp", "daily_cap": 20}),
        )
        .await
        .expect(201);
    assert_eq!(
        real["state"], "needs_pairing",
        "a real number must be paired first"
    );
    let list = server.api.get("/v1/numbers").await.expect(200);
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let one = server
        .api
        .get(&format!("/v1/numbers/{}", created["id"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(one, created);
    server.stop().await;
}

/// A campaign request with one good recipient and one of each kind of bad row.
fn campaign_request(template: &str, numbers: &[&str], on_invalid: &str) -> Value {
    json!({
        "name": "mixed",
        "template_id": template,
        "numbers": numbers,
        "default_region": "BR",
        "on_invalid": on_invalid,
        "recipients": [
            {"phone": "(11) 98765-4321", "variables": {"name": "Ana"}},
            {"phone": "not a number", "variables": {"name": "Bo"}},
            {"phone": "+55 11 98765 4321", "variables": {"name": "Ana twice"}},
            {"phone": "+55 11 91234-5678", "variables": {}},
            {"phone": "+55 11 91111-2222", "variables": {"name": "Cy"}},
        ],
    })
}

#[tokio::test]
async fn invalid_recipients_are_reported_per_row_and_nothing_is_created() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let number = api.create_number(&mobile(8, 1)).await;
    let template = api.create_template("greet", "Hello {{name}}!").await;

    let rejected = api
        .post(
            "/v1/campaigns",
            &campaign_request(&template, &[&number], "reject"),
        )
        .await;
    assert_problem(&rejected, 422);
    assert_eq!(
        rejected.body["type"],
        "urn:herald:problem:invalid-recipients"
    );
    assert_eq!(rejected.body["rejected_total"], 3);
    let rows: Vec<(u64, &str, &str)> = rejected.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["pointer"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, "/recipients/1/phone", "not a phone number"),
            (
                2,
                "/recipients/2/phone",
                "duplicate of row 0 (+5511987654321 after normalisation)"
            ),
            (3, "/recipients/3/variables", "missing variable \"name\""),
        ]
    );
    assert_eq!(count(&server, "campaigns").await, 0, "nothing created");
    assert_eq!(count(&server, "messages").await, 0, "nothing created");

    let created = api
        .post(
            "/v1/campaigns",
            &campaign_request(&template, &[&number], "skip"),
        )
        .await
        .expect(201);
    assert_eq!(created["status"], "draft");
    assert_eq!(created["recipients"], 2);
    assert_eq!(created["rejected"], 3);
    assert_eq!(created["report"]["accepted"], 2);
    assert_eq!(created["report"]["rejected_total"], 3);
    assert_eq!(created["counts"]["queued"], 2);
    let client = server.db.pool.get().await.unwrap();
    let bodies: Vec<String> = client
        .query("SELECT body FROM messages ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bodies, ["Hello Ana!", "Hello Cy!"]);

    // Top-level fields are checked too, all at once.
    let nothing = api
        .post(
            "/v1/campaigns",
            &json!({"name": "", "template_id": "00000000-0000-0000-0000-000000000000",
                    "numbers": [number, number], "recipients": [], "default_region": "XX"}),
        )
        .await;
    assert_problem(&nothing, 422);
    let pointers: Vec<&str> = nothing.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        [
            "/name",
            "/recipients",
            "/numbers/1",
            "/default_region",
            "/template_id"
        ]
    );
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn another_tenants_resources_do_not_exist() {
    let server = ApiServer::start(&[]).await;
    let owner = &server.api;
    let number = owner.create_number(&mobile(9, 1)).await;
    let template = owner.create_template("t", "Hi {{name}}").await;
    let campaign = owner
        .create_campaign(&json!({
            "name": "mine", "template_id": template, "numbers": [number],
            "recipients": [{"phone": mobile(9, 100), "variables": {"name": "A"}}],
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let intruder = server.another_tenant("other").await;
    assert_problem(&intruder.get(&format!("/v1/numbers/{number}")).await, 404);
    assert_problem(
        &intruder.get(&format!("/v1/templates/{template}")).await,
        404,
    );
    assert_problem(
        &intruder.get(&format!("/v1/campaigns/{campaign}")).await,
        404,
    );
    assert_problem(
        &intruder
            .post(&format!("/v1/campaigns/{campaign}/start"), &json!({}))
            .await,
        404,
    );
    assert_eq!(
        intruder.get("/v1/numbers").await.expect(200)["data"],
        json!([])
    );
    let borrowed = intruder
        .post(
            "/v1/campaigns",
            &json!({"name": "theirs", "template_id": template, "numbers": [number],
                    "recipients": [{"phone": mobile(9, 101), "variables": {"name": "B"}}]}),
        )
        .await;
    assert_problem(&borrowed, 422);
    let pointers: Vec<&str> = borrowed.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/template_id", "/numbers/0"]);
    // The intruder's attempts changed nothing.
    assert_eq!(owner.campaign(&campaign).await["status"], "draft");
    assert_eq!(count(&server, "campaigns").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn starting_is_idempotent_and_announced_once() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let number = api.create_number(&mobile(10, 1)).await;
    let template = api.create_template("t", "Hi").await;
    let campaign = api
        .create_campaign(&json!({
            "name": "c", "template_id": template, "numbers": [number],
            "recipients": [{"phone": mobile(10, 100)}],
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let started = api.start_campaign(&campaign).await;
    assert_eq!(started["status"], "running");
    assert!(started["started_at"].is_string());
    let again = api.start_campaign(&campaign).await;
    assert_eq!(again["started_at"], started["started_at"]);

    let client = server.db.pool.get().await.unwrap();
    // One `campaign.started` event reached RabbitMQ: the relay emptied the
    // outbox, and the event sits in the scheduler's queue (no scheduler runs).
    herald_tests::wait_for(
        "the outbox to drain",
        std::time::Duration::from_secs(10),
        || {
            let client = &client;
            async move {
                let left: i64 = client
                    .query_one("SELECT count(*) FROM outbox", &[])
                    .await
                    .ok()?
                    .get(0);
                (left == 0).then_some(())
            }
        },
    )
    .await;
    let config = herald_tests::stack::rabbit_config(&server.prefix);
    let broker = herald_shared::queue::Broker::new(&config, "test");
    let channel = broker.channel().await.unwrap();
    let queue = herald_shared::queue::Topology::new(&config).scheduler_queue();
    assert_eq!(
        herald_tests::stack::ready_in_queue(&channel, &queue)
            .await
            .unwrap(),
        1,
        "exactly one campaign.started event"
    );
    broker.close().await;

    client
        .execute("UPDATE campaigns SET status = 'completed'", &[])
        .await
        .unwrap();
    let refused = api
        .post(&format!("/v1/campaigns/{campaign}/start"), &json!({}))
        .await;
    assert_problem(&refused, 409);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("completed")
    );
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn readiness_checks_postgres_and_rabbitmq() {
    let server = ApiServer::start(&[]).await;
    let ready = server.api.with_key(None).get("/readyz").await.expect(200);
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["rabbitmq"], "ok");
    assert_eq!(
        server.api.with_key(None).get("/healthz").await.expect(200)["status"],
        "ok"
    );
    server.stop().await;
}

/// `herald-api keys <args>` against the server's database: whether it
/// succeeded, its output and its errors.
async fn keys_command(server: &ApiServer, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(binary("herald-api"))
        .arg("keys")
        .args(args)
        .env("HERALD__DATABASE__URL", &server.db.url)
        .output()
        .await
        .expect("run herald-api");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_revoked_key_is_refused_once_the_key_cache_age_has_passed() {
    const KEY_CACHE_MS: u64 = 400;
    let server = ApiServer::start(&[("HERALD__API__KEY_CACHE_MS", "400")]).await;
    let tenant = server.tenant_id.to_string();
    let (ok, out, err) = keys_command(
        &server,
        &["create", "--tenant", &tenant, "--name", "billing", "--json"],
    )
    .await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    let key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();
    let billing = server.api.with_key(Some(&key));
    // Used, so the API keeps it.
    billing.get("/v1/numbers").await.expect(200);

    let (ok, out, err) = keys_command(&server, &["list", "--tenant", &tenant, "--json"]).await;
    assert!(ok, "{err}");
    assert!(!out.contains(&key), "a listing never shows a key: {out}");
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["initial", "billing"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked_at"].is_null())
    );
    assert_eq!(listed[1]["prefix"], key[..9]);

    let (ok, out, err) = keys_command(&server, &["revoke", &key_id, "--json"]).await;
    assert!(ok, "{err}");
    let revoked: Value = serde_json::from_str(out.trim()).unwrap();
    let revoked_at = revoked["revoked_at"]
        .as_str()
        .expect("revocation time")
        .to_string();
    // The API kept the key from a lookup that began before the revocation:
    // once that is older than the cache age, the key is looked up and refused.
    tokio::time::sleep(std::time::Duration::from_millis(KEY_CACHE_MS + 200)).await;
    let refused = billing.get("/v1/numbers").await;
    assert_problem(&refused, 401);
    assert_problem(&billing.get("/v1/templates").await, 401);
    // The tenant's other key still works.
    server.api.get("/v1/numbers").await.expect(200);

    // Revoking again changes nothing; unknown ids and tenants are errors.
    let (ok, out, _) = keys_command(&server, &["revoke", &key_id, "--json"]).await;
    assert!(ok);
    let again: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(again["revoked_at"], revoked_at.as_str());
    let unknown = uuid::Uuid::now_v7().to_string();
    let (ok, _, err) = keys_command(&server, &["revoke", &unknown]).await;
    assert!(!ok);
    assert!(err.contains(&format!("no API key {unknown}")), "{err}");
    let (ok, _, err) = keys_command(&server, &["list", "--tenant", &unknown]).await;
    assert!(!ok);
    assert!(err.contains(&format!("no tenant {unknown}")), "{err}");
    // In text: one line per key, the revoked one saying so.
    let (ok, out, _) = keys_command(&server, &["list", "--tenant", &tenant]).await;
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("initial") && lines[0].ends_with("active"),
        "{out}"
    );
    assert!(
        lines[1].contains(&key_id) && lines[1].contains("revoked"),
        "{out}"
    );
    server.stop().await;
}
