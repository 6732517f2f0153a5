//! Tenant isolation: row-level security in Postgres itself, and every route
//! that names a resource answering 404 to another tenant.

use std::collections::BTreeSet;

use herald_shared::db::{self, Scope};
use herald_tests::{ApiServer, TestDb, mobile};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn row_level_security_shows_a_transaction_only_its_tenants_rows() {
    let db = TestDb::create().await;
    let a = herald_api::admin::create_tenant(&db.pool, "a")
        .await
        .unwrap()
        .tenant_id;
    let b = herald_api::admin::create_tenant(&db.pool, "b")
        .await
        .unwrap()
        .tenant_id;
    {
        let service = db.pool.get().await.unwrap();
        for (tenant, phone) in [(a, mobile(40, 1)), (b, mobile(40, 2))] {
            service
                .execute(
                    "INSERT INTO contacts (id, tenant_id, phone) VALUES (gen_random_uuid(), $1, $2)",
                    &[&tenant, &phone],
                )
                .await
                .unwrap();
        }
    }
    let tenant_pool = db::connect_as(&db.config(), "test", Scope::Tenant).unwrap();
    let mut client = tenant_pool.get().await.unwrap();
    let count = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>(0);
    let nobody = client
        .query("SELECT count(*) FROM contacts", &[])
        .await
        .unwrap();
    assert_eq!(count(nobody), 0, "no tenant set: no rows");
    {
        let tx = db::tenant_tx(&mut client, a).await.unwrap();
        let seen: Vec<uuid::Uuid> = tx
            .query("SELECT tenant_id FROM contacts", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(seen, [a], "only the transaction's tenant");
        // Nor can it write another tenant's rows.
        let forged = tx
            .execute(
                "INSERT INTO contacts (id, tenant_id, phone) VALUES (gen_random_uuid(), $1, $2)",
                &[&b, &mobile(40, 3)],
            )
            .await;
        assert!(forged.is_err(), "WITH CHECK refuses another tenant's row");
    }
    // The setting ended with the transaction: the pooled connection is blank.
    drop(client);
    let client = tenant_pool.get().await.unwrap();
    let after = client
        .query("SELECT count(*) FROM contacts", &[])
        .await
        .unwrap();
    assert_eq!(count(after), 0, "SET LOCAL never outlives its transaction");
    // Even the tables' owner is subject to it (FORCE), unless it acts as a
    // service.
    let owner: bool = client
        .query_one(
            "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'messages'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(owner);
}

/// A tenant's resource of every kind, and how to call each route naming one.
struct Owned {
    number: String,
    template: String,
    media: String,
    contact: String,
    list: String,
    import: String,
    campaign: String,
    message: String,
    check: String,
    suppressed_phone: String,
    webhook: String,
    delivery: i64,
    inbound: i64,
}

async fn owned_resources(server: &ApiServer) -> Owned {
    let api = &server.api;
    let number = api.create_number(&mobile(41, 1)).await;
    let template = api.create_template("t", "Hi {{name}}").await;
    let media = api
        .send(
            api.request(Method::POST, "/v1/media")
                .header("content-type", "image/png")
                .body(vec![0x89, b'P', b'N', b'G', 1, 2, 3]),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let contact = api
        .post(
            "/v1/contacts",
            &json!({"phone": mobile(41, 100), "name": "A"}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = api
        .post("/v1/lists", &json!({"name": "l"}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let import = api
        .send(
            api.request(Method::POST, &format!("/v1/lists/{list}/import"))
                .header("content-type", "text/csv")
                .body(format!("phone,name\n{},B\n", mobile(41, 101))),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let campaign = api
        .create_campaign(&json!({"name": "c", "template_id": template, "numbers": [number],
                                 "recipients": [{"phone": mobile(41, 102), "variables": {"name": "C"}}]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let message = api
        .post(
            "/v1/messages",
            &json!({"to": mobile(41, 103), "from": number, "text": "hello"}),
        )
        .await
        .expect(202)["id"]
        .to_string();
    let check = api
        .post(
            "/v1/contacts/check",
            &json!({"phones": [mobile(41, 104)], "number_id": number}),
        )
        .await
        .expect(202)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let suppressed_phone = mobile(41, 105);
    api.post("/v1/suppressions", &json!({"phone": suppressed_phone}))
        .await
        .expect(201);
    let webhook = api
        .post(
            "/v1/webhooks",
            &json!({"url": "https://hooks.example.com/herald"}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A delivery and a received message need the scheduler and a worker;
    // written directly, as they would have written them.
    let service = server.db.pool.get().await.unwrap();
    let seq: i64 = service
        .query_one(
            "INSERT INTO events (id, tenant_id, type, payload)
             VALUES (gen_random_uuid(), $1, 'campaign.started', '{}') RETURNING seq",
            &[&server.tenant_id],
        )
        .await
        .unwrap()
        .get(0);
    let delivery: i64 = service
        .query_one(
            "INSERT INTO webhook_deliveries (endpoint_id, tenant_id, event_seq, state)
             VALUES ($1, $2, $3, 'failed') RETURNING id",
            &[
                &uuid::Uuid::parse_str(&webhook).unwrap(),
                &server.tenant_id,
                &seq,
            ],
        )
        .await
        .unwrap()
        .get(0);
    let inbound: i64 = service
        .query_one(
            "INSERT INTO inbound_messages (tenant_id, number_id, sender, wa_message_id, kind, body, received_at)
             VALUES ($1, $2, $3, '3AISOLATION', 'text', 'hi', now()) RETURNING id",
            &[
                &server.tenant_id,
                &uuid::Uuid::parse_str(&number).unwrap(),
                &mobile(41, 106),
            ],
        )
        .await
        .unwrap()
        .get(0);
    Owned {
        number,
        template,
        media,
        contact,
        list,
        import,
        campaign,
        message,
        check,
        suppressed_phone,
        webhook,
        delivery,
        inbound,
    }
}

/// Every route with a path parameter: (method, documented path, concrete
/// path, a body that would be valid for the owner).
fn calls(o: &Owned) -> Vec<(Method, &'static str, String, Option<Value>)> {
    let n = &o.number;
    vec![
        (
            Method::GET,
            "/v1/numbers/{id}",
            format!("/v1/numbers/{n}"),
            None,
        ),
        (
            Method::PATCH,
            "/v1/numbers/{id}",
            format!("/v1/numbers/{n}"),
            Some(json!({"daily_cap": 5})),
        ),
        (
            Method::POST,
            "/v1/numbers/{id}/pair",
            format!("/v1/numbers/{n}/pair"),
            Some(json!({"method": "qr"})),
        ),
        (
            Method::GET,
            "/v1/numbers/{id}/events",
            format!("/v1/numbers/{n}/events"),
            None,
        ),
        (
            Method::DELETE,
            "/v1/numbers/{id}/session",
            format!("/v1/numbers/{n}/session"),
            None,
        ),
        (
            Method::GET,
            "/v1/templates/{id}",
            format!("/v1/templates/{}", o.template),
            None,
        ),
        (
            Method::PATCH,
            "/v1/templates/{id}",
            format!("/v1/templates/{}", o.template),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            "/v1/templates/{id}",
            format!("/v1/templates/{}", o.template),
            None,
        ),
        (
            Method::POST,
            "/v1/templates/{id}/preview",
            format!("/v1/templates/{}/preview", o.template),
            Some(json!({"variables": {"name": "x"}})),
        ),
        (
            Method::GET,
            "/v1/media/{id}",
            format!("/v1/media/{}", o.media),
            None,
        ),
        (
            Method::GET,
            "/v1/contacts/{id}",
            format!("/v1/contacts/{}", o.contact),
            None,
        ),
        (
            Method::PATCH,
            "/v1/contacts/{id}",
            format!("/v1/contacts/{}", o.contact),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            "/v1/contacts/{id}",
            format!("/v1/contacts/{}", o.contact),
            None,
        ),
        (
            Method::GET,
            "/v1/contacts/checks/{id}",
            format!("/v1/contacts/checks/{}", o.check),
            None,
        ),
        (
            Method::GET,
            "/v1/lists/{id}",
            format!("/v1/lists/{}", o.list),
            None,
        ),
        (
            Method::DELETE,
            "/v1/lists/{id}",
            format!("/v1/lists/{}", o.list),
            None,
        ),
        (
            Method::POST,
            "/v1/lists/{id}/members",
            format!("/v1/lists/{}/members", o.list),
            Some(json!({"contact_ids": [o.contact]})),
        ),
        (
            Method::DELETE,
            "/v1/lists/{id}/members/{contact_id}",
            format!("/v1/lists/{}/members/{}", o.list, o.contact),
            None,
        ),
        (
            Method::POST,
            "/v1/lists/{id}/import",
            format!("/v1/lists/{}/import", o.list),
            None,
        ),
        (
            Method::GET,
            "/v1/imports/{id}",
            format!("/v1/imports/{}", o.import),
            None,
        ),
        (
            Method::GET,
            "/v1/imports/{id}/rejections",
            format!("/v1/imports/{}/rejections", o.import),
            None,
        ),
        (
            Method::GET,
            "/v1/suppressions/{phone}",
            format!("/v1/suppressions/{}", o.suppressed_phone),
            None,
        ),
        (
            Method::DELETE,
            "/v1/suppressions/{phone}",
            format!("/v1/suppressions/{}", o.suppressed_phone),
            None,
        ),
        (
            Method::GET,
            "/v1/campaigns/{id}",
            format!("/v1/campaigns/{}", o.campaign),
            None,
        ),
        (
            Method::POST,
            "/v1/campaigns/{id}/start",
            format!("/v1/campaigns/{}/start", o.campaign),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/campaigns/{id}/pause",
            format!("/v1/campaigns/{}/pause", o.campaign),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/campaigns/{id}/resume",
            format!("/v1/campaigns/{}/resume", o.campaign),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/campaigns/{id}/cancel",
            format!("/v1/campaigns/{}/cancel", o.campaign),
            Some(json!({})),
        ),
        (
            Method::GET,
            "/v1/campaigns/{id}/plan",
            format!("/v1/campaigns/{}/plan", o.campaign),
            None,
        ),
        (
            Method::GET,
            "/v1/campaigns/{id}/messages",
            format!("/v1/campaigns/{}/messages", o.campaign),
            None,
        ),
        (
            Method::GET,
            "/v1/messages/{id}",
            format!("/v1/messages/{}", o.message),
            None,
        ),
        (
            Method::GET,
            "/v1/inbound/{id}",
            format!("/v1/inbound/{}", o.inbound),
            None,
        ),
        (
            Method::GET,
            "/v1/webhooks/{id}",
            format!("/v1/webhooks/{}", o.webhook),
            None,
        ),
        (
            Method::PATCH,
            "/v1/webhooks/{id}",
            format!("/v1/webhooks/{}", o.webhook),
            Some(json!({"enabled": false})),
        ),
        (
            Method::DELETE,
            "/v1/webhooks/{id}",
            format!("/v1/webhooks/{}", o.webhook),
            None,
        ),
        (
            Method::GET,
            "/v1/webhooks/{id}/secret",
            format!("/v1/webhooks/{}/secret", o.webhook),
            None,
        ),
        (
            Method::POST,
            "/v1/webhooks/{id}/rotate-secret",
            format!("/v1/webhooks/{}/rotate-secret", o.webhook),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/webhooks/{id}/replay",
            format!("/v1/webhooks/{}/replay", o.webhook),
            Some(json!({})),
        ),
        (
            Method::GET,
            "/v1/webhooks/{id}/deliveries",
            format!("/v1/webhooks/{}/deliveries", o.webhook),
            None,
        ),
        (
            Method::GET,
            "/v1/webhooks/{id}/deliveries/{delivery_id}",
            format!("/v1/webhooks/{}/deliveries/{}", o.webhook, o.delivery),
            None,
        ),
        (
            Method::POST,
            "/v1/webhooks/{id}/deliveries/{delivery_id}/replay",
            format!(
                "/v1/webhooks/{}/deliveries/{}/replay",
                o.webhook, o.delivery
            ),
            Some(json!({})),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_naming_a_resource_answers_404_to_another_tenant() {
    let server = ApiServer::start(&[]).await;
    let owned = owned_resources(&server).await;
    let intruder = server.another_tenant("intruder").await;
    let calls = calls(&owned);

    // The table covers every documented route with a path parameter.
    let doc = server.api.get("/openapi.json").await.expect(200);
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.contains('{'))
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(|method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let tested: BTreeSet<(String, String)> = calls
        .iter()
        .map(|(method, path, _, _)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        documented, tested,
        "every documented route with an id is tried"
    );

    for (method, route, path, body) in &calls {
        let mut request = intruder.request(method.clone(), path);
        if route.ends_with("/import") {
            request = request
                .header("content-type", "text/csv")
                .body(format!("phone\n{}\n", mobile(41, 200)));
        } else if let Some(body) = body {
            request = request.json(body);
        }
        let reply = intruder.send(request).await;
        assert_eq!(
            reply.status.as_u16(),
            404,
            "{method} {route} answered {}: {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.content_type, "application/problem+json");
    }
    // And the owner's resources are untouched.
    let api = &server.api;
    assert_eq!(
        api.get(&format!("/v1/numbers/{}", owned.number))
            .await
            .expect(200)["daily_cap"],
        200
    );
    assert_eq!(
        api.get(&format!("/v1/campaigns/{}", owned.campaign))
            .await
            .expect(200)["status"],
        "draft"
    );
    api.get(&format!("/v1/contacts/{}", owned.contact))
        .await
        .expect(200);
    api.get(&format!("/v1/suppressions/{}", owned.suppressed_phone))
        .await
        .expect(200);
    let webhook = api
        .get(&format!("/v1/webhooks/{}", owned.webhook))
        .await
        .expect(200);
    assert_eq!(webhook["enabled"], true);
    // Lists show the intruder nothing of the owner's.
    for list in ["/v1/inbound", "/v1/webhooks"] {
        assert_eq!(
            intruder.get(list).await.expect(200)["data"],
            json!([]),
            "{list}"
        );
        assert_eq!(
            api.get(list).await.expect(200)["data"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "{list}"
        );
    }
    server.stop().await;
}
