//! An opt-in smoke test against the real WhatsApp network: links a real
//! number by phone code and sends one message. Skipped unless
//! `HERALD_LIVE_WHATSAPP_PHONE` (the account to link, in E.164) and
//! `HERALD_LIVE_WHATSAPP_TO` (a phone that agreed to receive a test message)
//! are set; see the README. While it waits, it prints the code to type on the
//! phone (WhatsApp → Linked devices → Link a device → Link with phone number
//! instead).

use std::time::Duration;

use herald_tests::{Stack, StackOptions, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_number_links_by_code_and_sends_one_message() {
    let (Ok(phone), Ok(to)) = (
        std::env::var("HERALD_LIVE_WHATSAPP_PHONE"),
        std::env::var("HERALD_LIVE_WHATSAPP_TO"),
    ) else {
        eprintln!(
            "skipped: set HERALD_LIVE_WHATSAPP_PHONE and HERALD_LIVE_WHATSAPP_TO to run the live smoke test"
        );
        return;
    };
    let stack = Stack::start(StackOptions {
        workers: 1,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let number = api
        .post(
            "/v1/numbers",
            &json!({"phone": phone, "kind": "whatsapp", "warmup_plan": "cautious"}),
        )
        .await
        .expect(201);
    assert_eq!(number["state"], "needs_pairing");
    let id = number["id"].as_str().unwrap().to_string();
    api.post(
        &format!("/v1/numbers/{id}/pair"),
        &json!({"method": "code"}),
    )
    .await
    .expect(202);
    let code = wait_for("a pair code", Duration::from_secs(120), || async {
        let pairing = api.get(&format!("/v1/numbers/{id}")).await.body["pairing"].clone();
        pairing["code"].as_str().map(String::from)
    })
    .await;
    eprintln!("type this code on {phone}: {code}");
    wait_for("the link", Duration::from_secs(300), || async {
        let n = api.get(&format!("/v1/numbers/{id}")).await.body;
        (n["state"] == "active" && n["connected"] == true).then_some(())
    })
    .await;
    let sent = api
        .post(
            "/v1/messages",
            &json!({"to": to, "from": id, "text": "Herald live smoke test"}),
        )
        .await
        .expect(202);
    let message = wait_for("the server's verdict", Duration::from_secs(180), || async {
        let m = api.get(&format!("/v1/messages/{}", sent["id"])).await.body;
        matches!(
            m["state"].as_str(),
            Some("sent" | "delivered" | "read" | "failed")
        )
        .then_some(m)
    })
    .await;
    assert_ne!(message["state"], "failed", "{message}");
    // Leave the account as it was: unlink and wipe.
    api.send(api.request(
        reqwest::Method::DELETE,
        &format!("/v1/numbers/{id}/session"),
    ))
    .await
    .expect(202);
    stack.stop().await;
}
