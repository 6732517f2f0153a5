//! Audiences over HTTP: contacts, lists and CSV imports (reports and limits),
//! campaigns from filtered lists with the suppression list applied, templates
//! with previews and media, message history pages.

use std::collections::BTreeSet;

use herald_tests::{ApiServer, client::Reply, mobile};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

async fn count(server: &ApiServer, query: &str) -> i64 {
    let client = server.db.pool.get().await.unwrap();
    client.query_one(query, &[]).await.unwrap().get(0)
}

async fn import(server: &ApiServer, list: &str, csv: &str, query: &str) -> Reply {
    server
        .api
        .send(
            server
                .api
                .request(Method::POST, &format!("/v1/lists/{list}/import{query}"))
                .header("content-type", "text/csv")
                .body(csv.to_string()),
        )
        .await
}

async fn new_list(server: &ApiServer, name: &str) -> String {
    server
        .api
        .post("/v1/lists", &json!({"name": name}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_import_reports_every_row_and_merges_contacts() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    // An existing contact the file updates.
    api.post(
        "/v1/contacts",
        &json!({"phone": "+5511987650001", "name": "Old", "attributes": {"plan": "free", "vip": "yes"}}),
    )
    .await
    .expect(201);
    let list = new_list(&server, "customers").await;
    let csv = "\u{feff}Phone,name,city,plan\n\
               +55 11 98765-0001,Ana,Recife,pro\n\
               (11) 98765-0002,Bo,Rio,\n\
               not a phone,Cy,Rio,free\n\
               +5511987650003,Di,\"São Paulo, SP\",free\n\
               +5511987650002,Bo again,Recife,pro\n\
               +5511987650004,Ed\n\
               ,Fi,Rio,free\n";
    let report = import(&server, &list, csv, "?default_region=BR")
        .await
        .expect(201);
    assert_eq!(report["status"], "completed");
    assert_eq!(report["rows"], 7);
    assert_eq!(report["accepted"], 4, "{report}");
    assert_eq!(report["rejected"], 3);
    assert_eq!(report["duplicates"], 1, "the second +5511987650002");
    assert_eq!(report["merged"], 1, "the contact that existed");
    let rejections: Vec<(i64, String)> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_i64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(rejections[0], (4, "not a phone number".to_string()));
    assert_eq!(rejections[1], (7, "2 fields; the header has 4".to_string()));
    assert_eq!(rejections[2].0, 8);
    let contacts = api
        .get(&format!("/v1/contacts?list_id={list}"))
        .await
        .expect(200);
    let by_phone: std::collections::BTreeMap<String, Value> = contacts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["phone"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    assert_eq!(by_phone.len(), 3);
    let ana = &by_phone["+5511987650001"];
    assert_eq!(ana["name"], "Ana");
    assert_eq!(
        ana["attributes"],
        json!({"city": "Recife", "plan": "pro", "vip": "yes"}),
        "merged"
    );
    assert_eq!(
        by_phone["+5511987650002"]["name"], "Bo again",
        "the last row wins"
    );
    assert_eq!(
        by_phone["+5511987650003"]["attributes"]["city"],
        "São Paulo, SP"
    );
    let id = report["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v1/imports/{id}")).await.expect(200)["accepted"],
        4
    );
    let page = api
        .get(&format!("/v1/imports/{id}/rejections?limit=2"))
        .await
        .expect(200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let rest = api
        .get(&format!(
            "/v1/imports/{id}/rejections?limit=2&cursor={next}"
        ))
        .await
        .expect(200);
    assert_eq!(rest["data"][0]["line"], 8);
    assert!(rest["next_cursor"].is_null());
    assert_eq!(
        api.get(&format!("/v1/lists/{list}")).await.expect(200)["size"],
        3
    );
    server.stop().await;
}

/// The phones of `list`, sorted.
async fn phones_of(server: &ApiServer, list: &str) -> Vec<String> {
    let contacts = server
        .api
        .get(&format!("/v1/contacts?list_id={list}"))
        .await
        .expect(200);
    let mut phones: Vec<String> = contacts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phone"].as_str().unwrap().to_string())
        .collect();
    phones.sort();
    phones
}

/// Imports `csv` into `list` while `other` (a transaction that wrote some of
/// its contacts) is open; commits `other` once the import's merge waits for
/// it.
async fn import_racing(
    server: &ApiServer,
    list: &str,
    csv: &str,
    other: herald_shared::db::Transaction<'_>,
) -> Value {
    let commit_when_waited_for = async {
        server
            .db
            .until_waiting_for_a_lock("the import to wait for the other writer", "%import_rows%")
            .await;
        other.commit().await.unwrap();
    };
    let (reply, ()) = tokio::join!(import(server, list, csv, ""), commit_when_waited_for);
    reply.expect(201)
}

/// A contact of the file that another transaction deletes, or creates, while
/// the import merges is neither lost nor fails the import: the merge runs
/// again as upserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_racing_other_writers_of_its_contacts_loses_none() {
    let server = ApiServer::start(&[]).await;
    let doomed = server
        .api
        .post("/v1/contacts", &json!({"phone": "+5511987650011"}))
        .await
        .expect(201);
    let doomed = Uuid::parse_str(doomed["id"].as_str().unwrap()).unwrap();
    let mut client = server.db.pool.get().await.unwrap();

    // Deleted meanwhile: the update finds the row gone, the insert had seen it.
    let list = new_list(&server, "deleted meanwhile").await;
    let other = client.transaction().await.unwrap();
    other
        .execute("DELETE FROM contacts WHERE id = $1", &[&doomed])
        .await
        .unwrap();
    let report = import_racing(
        &server,
        &list,
        "phone,plan\n+5511987650011,pro\n+5511987650012,pro\n",
        other,
    )
    .await;
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(
        phones_of(&server, &list).await,
        ["+5511987650011", "+5511987650012"]
    );

    // Created meanwhile: the plain insert meets it; the upsert merges into it.
    let list = new_list(&server, "created meanwhile").await;
    let created = Uuid::now_v7();
    let other = client.transaction().await.unwrap();
    other
        .execute(
            "INSERT INTO contacts (id, tenant_id, phone, attributes)
             VALUES ($1, $2, '+5511987650013', '{\"vip\": \"yes\"}')",
            &[&created, &server.tenant_id],
        )
        .await
        .unwrap();
    let report = import_racing(
        &server,
        &list,
        "phone,plan\n+5511987650013,pro\n+5511987650014,pro\n",
        other,
    )
    .await;
    assert_eq!(report["merged"], 1, "{report}");
    assert_eq!(
        phones_of(&server, &list).await,
        ["+5511987650013", "+5511987650014"]
    );
    let merged = server
        .api
        .get(&format!("/v1/contacts/{created}"))
        .await
        .expect(200);
    assert_eq!(merged["attributes"], json!({"plan": "pro", "vip": "yes"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_limits_refuse_the_whole_file() {
    let server = ApiServer::start(&[
        ("HERALD__API__IMPORT_MAX_BYTES", "2000"),
        ("HERALD__API__IMPORT_MAX_ROWS", "20"),
        ("HERALD__API__IMPORT_MAX_COLUMNS", "3"),
        ("HERALD__API__IMPORT_MAX_FIELD_CHARS", "20"),
    ])
    .await;
    let list = new_list(&server, "l").await;
    let rows = |n: u32| -> String {
        let mut csv = String::from("phone,name\n");
        for i in 0..n {
            csv.push_str(&format!("{},N{i}\n", mobile(42, i)));
        }
        csv
    };
    let problem = |reply: &Reply, status: u16| {
        assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json");
    };
    let too_many = import(&server, &list, &rows(21), "").await;
    problem(&too_many, 413);
    assert!(
        too_many.body["detail"]
            .as_str()
            .unwrap()
            .contains("20 rows")
    );
    let big = format!(
        "phone,name\n{}",
        format!("{},{}\n", mobile(42, 1), "x".repeat(9)).repeat(100)
    );
    problem(&import(&server, &list, &big, "").await, 413);
    let wide = import(&server, &list, "phone,a,b,c\n+5511987650001,1,2,3\n", "").await;
    problem(&wide, 422);
    assert!(
        wide.body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("4 columns")
    );
    let long = import(
        &server,
        &list,
        &format!("phone,name\n{},{}\n", mobile(42, 1), "y".repeat(21)),
        "",
    )
    .await;
    problem(&long, 422);
    assert_eq!(long.body["errors"][0]["pointer"], "line 2");
    let no_phone = import(&server, &list, "name\nx\n", "").await;
    problem(&no_phone, 422);
    let not_csv = server
        .api
        .send(
            server
                .api
                .request(Method::POST, &format!("/v1/lists/{list}/import"))
                .json(&json!({})),
        )
        .await;
    problem(&not_csv, 415);
    // Nothing of any refused file got in.
    assert_eq!(count(&server, "SELECT count(*) FROM contacts").await, 0);
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM imports WHERE status = 'completed'"
        )
        .await,
        0
    );
    import(&server, &list, &rows(20), "").await.expect(201);
    assert_eq!(count(&server, "SELECT count(*) FROM contacts").await, 20);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_from_a_filtered_list_leaves_suppressed_contacts_out() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let list = new_list(&server, "all").await;
    let mut csv = String::from("phone,name,city\n");
    for i in 0..30u32 {
        let city = if i % 3 == 0 { "Recife" } else { "Rio" };
        csv.push_str(&format!("{},P{i},{city}\n", mobile(43, i)));
    }
    import(&server, &list, &csv, "").await.expect(201);
    api.post(
        "/v1/suppressions",
        &json!({"phone": mobile(43, 3), "reason": "asked"}),
    )
    .await
    .expect(201);
    let number = api.create_number(&mobile(44, 1)).await;
    let template = api
        .create_template("t", "Hi {{name}} from {{city}} ({{phone}})")
        .await;
    let request = json!({"name": "recife", "template_id": template, "numbers": [number],
                         "list_id": list, "filter": {"attributes": {"city": "Recife"}}});
    let mut dry = request.clone();
    dry["dry_run"] = json!(true);
    let planned = api.post("/v1/campaigns", &dry).await.expect(200);
    assert_eq!(planned["report"]["accepted"], 10);
    assert_eq!(planned["report"]["suppressed"], 1);
    let created = api.create_campaign(&request).await;
    assert_eq!(created["recipients"], 10);
    assert_eq!(created["suppressed"], 1);
    assert_eq!(created["counts"]["queued"], 9);
    assert_eq!(created["counts"]["suppressed"], 1);
    assert_eq!(created["list_id"], json!(list));
    let client = server.db.pool.get().await.unwrap();
    let body: String = client
        .query_one(
            "SELECT body FROM messages WHERE recipient = $1",
            &[&mobile(43, 6)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, format!("Hi P6 from Recife ({})", mobile(43, 6)));
    // A template variable some contacts lack: every such contact is named.
    let strict = api
        .create_template("s", "Hi {{name}}, your code is {{code}}")
        .await;
    let refused = api
        .post(
            "/v1/campaigns",
            &json!({"name": "x", "template_id": strict, "numbers": [number], "list_id": list}),
        )
        .await;
    assert_eq!(refused.status.as_u16(), 422);
    assert_eq!(refused.body["rejected_total"], 30);
    assert!(
        refused.body["errors"][0]["pointer"]
            .as_str()
            .unwrap()
            .starts_with("contact ")
    );
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_preview_strictly_and_carry_media() {
    let server = ApiServer::start(&[("HERALD__API__MAX_BODY_CHARS", "40")]).await;
    let api = &server.api;
    let png = api
        .send(
            api.request(Method::POST, "/v1/media?filename=offer.png")
                .header("content-type", "image/png")
                .body(vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3]),
        )
        .await
        .expect(201);
    assert_eq!(png["size"], 8);
    assert_eq!(png["content_type"], "image/png");
    let pdf = api
        .send(
            api.request(Method::POST, "/v1/media")
                .header("content-type", "application/pdf")
                .body(b"%PDF-1.4".to_vec()),
        )
        .await
        .expect(201);
    let bad_type = api
        .send(
            api.request(Method::POST, "/v1/media")
                .header("content-type", "video/mp4")
                .body(vec![1]),
        )
        .await;
    assert_eq!(bad_type.status.as_u16(), 415);
    let created = api
        .post(
            "/v1/templates",
            &json!({"name": "offer", "body": "Hi {{name}} & co: <b>{{deal}}</b>",
                    "media": {"kind": "image", "media_id": png["id"]}}),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["variables"], json!(["deal", "name"]));
    let preview = api
        .post(
            &format!("/v1/templates/{id}/preview"),
            &json!({"variables": {"name": "Ana", "deal": "2×1"}}),
        )
        .await
        .expect(200);
    assert_eq!(
        preview["text"], "Hi Ana & co: <b>2×1</b>",
        "plain text: nothing escaped"
    );
    assert_eq!(preview["media"]["kind"], "image");
    let missing = api
        .post(
            &format!("/v1/templates/{id}/preview"),
            &json!({"variables": {"name": "Ana"}}),
        )
        .await;
    assert_eq!(missing.status.as_u16(), 422);
    assert_eq!(
        missing.body["errors"][0]["reason"],
        "missing variable \"deal\""
    );
    let long = api
        .post(
            &format!("/v1/templates/{id}/preview"),
            &json!({"variables": {"name": "A", "deal": "d".repeat(40)}}),
        )
        .await;
    assert_eq!(long.status.as_u16(), 422);
    assert!(
        long.body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("at most 40")
    );
    let contact = api
        .post(
            "/v1/contacts",
            &json!({"phone": mobile(45, 1), "name": "Bo", "attributes": {"deal": "free"}}),
        )
        .await
        .expect(201);
    let for_contact = api
        .post(
            &format!("/v1/templates/{id}/preview"),
            &json!({"contact_id": contact["id"]}),
        )
        .await
        .expect(200);
    assert_eq!(for_contact["text"], "Hi Bo & co: <b>free</b>");
    // A document upload is not an image.
    let wrong_kind = api
        .post(
            "/v1/templates",
            &json!({"name": "x", "body": "x", "media": {"kind": "image", "media_id": pdf["id"]}}),
        )
        .await;
    assert_eq!(wrong_kind.status.as_u16(), 422);
    assert_eq!(wrong_kind.body["errors"][0]["pointer"], "/media/kind");
    let patched = api
        .send(
            api.request(Method::PATCH, &format!("/v1/templates/{id}"))
                .json(&json!({"media": null, "name": "plain"})),
        )
        .await
        .expect(200);
    assert!(patched["media"].is_null());
    assert_eq!(patched["name"], "plain");
    // A template a campaign uses cannot be deleted; an unused one can.
    let number = api.create_number(&mobile(45, 2)).await;
    api.create_campaign(&json!({"name": "c", "template_id": id, "numbers": [number],
                                "recipients": [{"phone": mobile(45, 3), "variables": {"name": "C", "deal": "d"}}]}))
        .await;
    let used = api
        .send(api.request(Method::DELETE, &format!("/v1/templates/{id}")))
        .await;
    assert_eq!(used.status.as_u16(), 409);
    let spare = api.create_template("spare", "x").await;
    assert_eq!(
        api.send(api.request(Method::DELETE, &format!("/v1/templates/{spare}")))
            .await
            .status
            .as_u16(),
        204
    );
    let listed = api.get("/v1/templates").await.expect(200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_are_stable_while_messages_arrive() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let number = api.create_number(&mobile(46, 1)).await;
    for i in 0..5 {
        api.post(
            "/v1/messages",
            &json!({"to": mobile(47, i), "from": number, "text": format!("m{i}")}),
        )
        .await
        .expect(202);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/messages?limit=2&cursor={c}"),
            None => "/v1/messages?limit=2".to_string(),
        };
        let page = api.get(&path).await.expect(200);
        pages += 1;
        for m in page["data"].as_array().unwrap() {
            seen.push(m["body"].as_str().unwrap().to_string());
        }
        // New messages arrive while the client walks the pages.
        if pages == 1 {
            api.post(
                "/v1/messages",
                &json!({"to": mobile(47, 9), "from": number, "text": "late"}),
            )
            .await
            .expect(202);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["m0", "m1", "m2", "m3", "m4", "late"],
        "no repeat, no gap"
    );
    let one = api
        .get(&format!(
            "/v1/messages?recipient={}",
            mobile(47, 2).replace('+', "%2B")
        ))
        .await
        .expect(200);
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["state"], "queued");
    let queued = api
        .get("/v1/messages?state=queued&limit=1000")
        .await
        .expect(200);
    assert_eq!(queued["data"].as_array().unwrap().len(), 6);
    assert_eq!(
        api.get("/v1/messages?state=sent").await.expect(200)["data"],
        json!([])
    );
    let bad = api.get("/v1/messages?limit=5000").await;
    assert_eq!(bad.status.as_u16(), 422);
    assert_eq!(
        api.get("/v1/messages?cursor=garbage").await.status.as_u16(),
        422
    );
    let first = api.get("/v1/messages?limit=1").await.expect(200)["data"][0]["id"].clone();
    let message = api.get(&format!("/v1/messages/{first}")).await.expect(200);
    assert_eq!(message["body"], "m0");
    assert!(message["times"]["queued_at"].is_string());
    // Refused sends: a suppressed recipient, a bad number, both text and template.
    api.post("/v1/suppressions", &json!({"phone": mobile(47, 50)}))
        .await
        .expect(201);
    let suppressed = api
        .post(
            "/v1/messages",
            &json!({"to": mobile(47, 50), "from": number, "text": "x"}),
        )
        .await;
    assert_eq!(suppressed.status.as_u16(), 422);
    assert!(
        suppressed.body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("suppression")
    );
    let pointers: BTreeSet<String> = api
        .post(
            "/v1/messages",
            &json!({"to": "nope", "from": number, "text": "x", "template_id": number}),
        )
        .await
        .body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        pointers,
        BTreeSet::from(["/to".to_string(), "/text".to_string()])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressing_a_phone_stops_its_waiting_messages() {
    let server = ApiServer::start(&[]).await;
    let api = &server.api;
    let number = api.create_number(&mobile(48, 1)).await;
    let template = api.create_template("t", "hi").await;
    let campaign = api
        .create_campaign(&json!({"name": "c", "template_id": template, "numbers": [number],
                                 "recipients": [{"phone": mobile(49, 1)}, {"phone": mobile(49, 2)}]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Counted (and kept for `api.counts_max_age_ms`) before the suppression:
    // the answer after it still counts it.
    assert_eq!(api.campaign(&campaign).await["counts"]["queued"], 2);
    let suppressed = api
        .post(
            "/v1/suppressions",
            &json!({"phone": mobile(49, 1), "reason": "complaint"}),
        )
        .await
        .expect(201);
    assert_eq!(suppressed["stopped_messages"], 1);
    assert_eq!(suppressed["source"], "api");
    let counts = api.campaign(&campaign).await["counts"].clone();
    assert_eq!(
        (counts["queued"].as_i64(), counts["suppressed"].as_i64()),
        (Some(1), Some(1))
    );
    let listed = api.get("/v1/suppressions").await.expect(200);
    assert_eq!(listed["data"][0]["reason"], "complaint");
    let lifted = api
        .send(api.request(
            Method::DELETE,
            &format!("/v1/suppressions/{}", &mobile(49, 1)[1..]),
        ))
        .await;
    assert_eq!(lifted.status.as_u16(), 204);
    assert_eq!(
        api.get("/v1/suppressions").await.expect(200)["data"],
        json!([])
    );
    server.stop().await;
}
