//! What a client generator and a security review rely on: the OpenAPI 3.1
//! document (validated by a validator Herald did not write), Idempotency-Key
//! semantics under concurrency, and per-key rate limits.

use std::collections::BTreeSet;

use herald_tests::{ApiServer, mobile, python};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_3_1_and_documents_every_error() {
    let server = ApiServer::start(&[]).await;
    let reply = server.api.with_key(None).get("/openapi.json").await;
    assert_eq!(reply.status.as_u16(), 200);
    let doc = reply.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let text = serde_json::to_vec(&doc).unwrap();
    let verdict = python::run(
        "openapi_spec_validator",
        "import json, sys\n\
         from openapi_spec_validator import validate\n\
         from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator\n\
         validate(json.load(sys.stdin), cls=OpenAPIV31SpecValidator)\n\
         print('valid')",
        &text,
    );
    assert_eq!(verdict.trim(), "valid");

    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            if !path.starts_with("/v1/") {
                continue;
            }
            for status in ["401", "429", "500", "503"] {
                let problem = &responses[status]["content"]["application/problem+json"];
                assert!(
                    problem.is_object(),
                    "{method} {path} documents no {status} problem"
                );
            }
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            assert_eq!(op["security"], json!([{"api_key": []}]), "{method} {path}");
            if method == "post" || method == "patch" {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} documents no {status}"
                    );
                }
            }
        }
    }
    assert!(operations >= 45, "{operations} operations documented");
    // The schemas the bodies refer to are in the document.
    let schemas: BTreeSet<&String> = doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    for name in [
        "Problem",
        "CampaignBody",
        "NumberBody",
        "MessageBody",
        "ImportReport",
        "Jitter",
        "MessageState",
    ] {
        assert!(schemas.contains(&name.to_string()), "schema {name} missing");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_response() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let post = |key: &str, body: Value| {
        api.request(Method::POST, "/v1/templates")
            .header("idempotency-key", key)
            .json(&body)
    };
    let first = api
        .send(post("k-1", json!({"name": "t", "body": "hi"})))
        .await;
    assert_eq!(first.status.as_u16(), 201);
    assert_eq!(first.headers["idempotent-replayed"], "false");
    let again = api
        .send(post("k-1", json!({"name": "t", "body": "hi"})))
        .await;
    assert_eq!(again.status.as_u16(), 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body, "the very same response");
    let other = api
        .send(post("k-1", json!({"name": "t", "body": "bye"})))
        .await;
    assert_eq!(other.status.as_u16(), 422, "{}", other.body);
    assert_eq!(other.body["errors"][0]["pointer"], "Idempotency-Key");
    // Errors are replayed too (the request was handled).
    let bad = api
        .send(post("k-2", json!({"name": "", "body": "hi"})))
        .await;
    assert_eq!(bad.status.as_u16(), 422);
    assert_eq!(
        api.send(post("k-2", json!({"name": "", "body": "hi"})))
            .await
            .headers["idempotent-replayed"],
        "true"
    );
    // Keys belong to their tenant.
    let other_tenant = server.another_tenant("other").await;
    let theirs = other_tenant
        .send(
            other_tenant
                .request(Method::POST, "/v1/templates")
                .header("idempotency-key", "k-1")
                .json(&json!({"name": "t", "body": "hi"})),
        )
        .await;
    assert_eq!(theirs.headers["idempotent-replayed"], "false");
    let bad_key = api
        .send(post(
            "spaces are not allowed",
            json!({"name": "t", "body": "hi"}),
        ))
        .await;
    assert_eq!(bad_key.status.as_u16(), 422);
    let client = server.db.pool.get().await.unwrap();
    let templates: i64 = client
        .query_one(
            "SELECT count(*) FROM templates WHERE tenant_id = $1",
            &[&server.tenant_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(templates, 1);
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_posts_with_one_key_create_one_campaign() {
    let server = ApiServer::start(&[("HERALD__API__RATE_LIMIT_BURST", "200")]).await;
    let api = server.api.clone();
    let number = api.create_number(&mobile(60, 1)).await;
    let template = api.create_template("t", "Hi {{name}}").await;
    let recipients: Vec<Value> = (0..500)
        .map(|i| json!({"phone": mobile(61, i), "variables": {"name": format!("R{i}")}}))
        .collect();
    let body = json!({"name": "once", "template_id": template, "numbers": [number], "recipients": recipients});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let api = api.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            api.send(
                api.request(Method::POST, "/v1/campaigns")
                    .header("idempotency-key", "launch-2026-11")
                    .json(&body),
            )
            .await
        }));
    }
    let mut ids = BTreeSet::new();
    let mut replayed = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status.as_u16(), 201, "{}", reply.body);
        replayed += usize::from(reply.headers["idempotent-replayed"] == "true");
        ids.insert(reply.body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "every response names the same campaign");
    assert_eq!(replayed, 49);
    let client = server.db.pool.get().await.unwrap();
    let (campaigns, messages): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM campaigns), (SELECT count(*) FROM messages)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((campaigns, messages), (1, 500));
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_rate_limited_with_retry_after() {
    let server = ApiServer::start(&[
        ("HERALD__API__RATE_LIMIT_PER_SECOND", "1"),
        ("HERALD__API__RATE_LIMIT_BURST", "3"),
    ])
    .await;
    let api = &server.api;
    for _ in 0..3 {
        api.get("/v1/numbers").await.expect(200);
    }
    let limited = api.get("/v1/numbers").await;
    assert_eq!(limited.status.as_u16(), 429);
    assert_eq!(limited.content_type, "application/problem+json");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another key has its own budget; health checks have none.
    server
        .another_tenant("other")
        .await
        .get("/v1/numbers")
        .await
        .expect(200);
    api.with_key(None).get("/healthz").await.expect(200);
    server.stop().await;
}
