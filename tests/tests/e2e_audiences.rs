//! Audiences end to end on the simulator: contact checks go through a
//! number's throttled lane and are cached; media reaches the network; a
//! suppression made mid-campaign is honoured at send time; a direct message
//! goes ahead of campaign traffic on its number.

use std::time::{Duration, Instant};

use herald_tests::{Stack, StackOptions, mobile, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

async fn paired_number(stack: &Stack, phone: &str) -> String {
    stack.sim.create_paired_number(phone).await;
    stack.api.create_number(phone).await
}

async fn wait_connected(stack: &Stack, number: &str) {
    wait_for("the number to connect", Duration::from_secs(30), || async {
        (stack.api.get(&format!("/v1/numbers/{number}")).await.body["connected"] == true)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_checks_go_through_a_throttled_lane_and_are_cached() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        env: vec![
            ("HERALD__CONTACTS__CHECK_BATCH".into(), "2".into()),
            ("HERALD__CONTACTS__CHECK_INTERVAL_MS".into(), "300".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    let number = paired_number(&stack, &mobile(920, 1)).await;
    wait_connected(&stack, &number).await;
    let phones: Vec<String> = (0..6).map(|i| mobile(62, i)).collect();
    // Two of them do not use WhatsApp.
    for phone in &phones[..2] {
        herald_tests::http()
            .put(format!(
                "{}/admin/recipients/{}",
                stack.sim.base,
                &phone[1..]
            ))
            .json(&json!({ "registered": false }))
            .send()
            .await
            .unwrap();
    }
    let started = Instant::now();
    let check = stack
        .api
        .post("/v1/contacts/check", &json!({ "phones": phones }))
        .await
        .expect(202);
    assert_eq!(check["complete"], false);
    let id = check["id"].as_str().unwrap().to_string();
    let done = wait_for("the check to complete", Duration::from_secs(30), || async {
        let body = stack
            .api
            .get(&format!("/v1/contacts/checks/{id}"))
            .await
            .body;
        (body["complete"] == true).then_some(body)
    })
    .await;
    // Six phones two at a time every 300 ms: no faster than three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<&str> = done["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "not_on_whatsapp",
            "not_on_whatsapp",
            "on_whatsapp",
            "on_whatsapp",
            "on_whatsapp",
            "on_whatsapp"
        ]
    );
    // Asked again: answered from the cache, at once.
    let again = stack
        .api
        .post(
            "/v1/contacts/check",
            &json!({ "phones": [phones[0], phones[5]] }),
        )
        .await
        .expect(200);
    assert_eq!(again["complete"], true);
    assert!(again["id"].is_null());
    assert_eq!(again["results"][1]["status"], "on_whatsapp");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_reaches_the_network_and_suppressions_hold_at_send_time() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: 250,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let number = paired_number(&stack, &mobile(921, 1)).await;
    let upload = api
        .send(
            api.request(Method::POST, "/v1/media?filename=menu.pdf")
                .header("content-type", "application/pdf")
                .body(b"%PDF-1.4 menu".to_vec()),
        )
        .await
        .expect(201);
    let template = api
        .post(
            "/v1/templates",
            &json!({"name": "menu", "body": "Hi {{name}}, our menu",
                    "media": {"kind": "document", "media_id": upload["id"], "filename": "menu.pdf"}}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let recipients: Vec<Value> = (0..12)
        .map(|i| json!({"phone": mobile(63, i), "variables": {"name": format!("R{i}")}}))
        .collect();
    let campaign = api
        .create_campaign(&json!({"name": "menu", "template_id": template, "numbers": [number],
                                 "recipients": recipients, "window": {"start": "00:00", "end": "24:00"}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.start_campaign(&campaign).await;
    wait_for("a first send", Duration::from_secs(30), || async {
        (!stack.sim.log().await.is_empty()).then_some(())
    })
    .await;
    // The last recipient opts out mid-campaign.
    let late = mobile(63, 11);
    api.post("/v1/suppressions", &json!({"phone": late}))
        .await
        .expect(201);
    wait_for(
        "the campaign to complete",
        Duration::from_secs(60),
        || async { (stack.api.campaign(&campaign).await["status"] == "completed").then_some(()) },
    )
    .await;
    let log = stack.sim.log().await;
    assert_eq!(log.len(), 11);
    assert!(
        log.iter().all(|e| e.to != late),
        "the suppressed recipient got nothing"
    );
    let expected = format!("document:media:{}", upload["id"].as_str().unwrap());
    assert!(
        log.iter()
            .all(|e| e.media.as_deref() == Some(expected.as_str())),
        "{:?}",
        log[0].media
    );
    let counts = stack.api.campaign(&campaign).await["counts"].clone();
    assert_eq!(counts["suppressed"], 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_goes_ahead_of_campaign_traffic() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: 300,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let number = paired_number(&stack, &mobile(922, 1)).await;
    let template = api.create_template("t", "Hi {{name}}").await;
    let recipients: Vec<Value> = (0..40)
        .map(|i| json!({"phone": mobile(64, i), "variables": {"name": format!("R{i}")}}))
        .collect();
    let campaign = api
        .create_campaign(&json!({"name": "bulk", "template_id": template, "numbers": [number],
                                 "recipients": recipients, "window": {"start": "00:00", "end": "24:00"}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.start_campaign(&campaign).await;
    wait_for("campaign sends", Duration::from_secs(30), || async {
        (stack.sim.log().await.len() >= 2).then_some(())
    })
    .await;
    let otp = mobile(65, 1);
    let queued_at = stack.sim.log().await.len();
    let sent = api
        .post(
            "/v1/messages",
            &json!({"to": otp, "from": number, "text": "Your code is 4242"}),
        )
        .await
        .expect(202);
    assert_eq!(sent["state"], "queued");
    let position = wait_for(
        "the direct message to go out",
        Duration::from_secs(30),
        || async {
            let log = stack.sim.log().await;
            log.iter().position(|e| e.to == otp)
        },
    )
    .await;
    // Behind at most the campaign jobs already handed to the number (the
    // look-ahead) and the one being sent.
    assert!(
        position <= queued_at + 3,
        "sent {} campaign messages first",
        position - queued_at
    );
    let id = sent["id"].as_i64().unwrap();
    wait_for("its receipt", Duration::from_secs(30), || async {
        let state = stack.api.get(&format!("/v1/messages/{id}")).await.body["state"].clone();
        (state == "delivered" || state == "read").then_some(())
    })
    .await;
    stack.stop().await;
}
