//! Linking and unlinking numbers through the API, end to end on the
//! simulator: QR codes and phone codes shown as the network rotates them,
//! the link's credential kept sealed in Postgres so another worker can open
//! the number, unlinking that logs the device out and wipes the session, and
//! workers that refuse to start without the right master key.

use std::time::Duration;

use herald_tests::{Stack, StackOptions, mobile, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

async fn number(stack: &Stack, id: &str) -> Value {
    stack
        .api
        .get(&format!("/v1/numbers/{id}"))
        .await
        .expect(200)
}

async fn session_rows(stack: &Stack, id: &str) -> i64 {
    let client = stack.db.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM session_rows WHERE number_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

async fn unlink(stack: &Stack, id: &str) -> Value {
    stack
        .api
        .send(
            stack
                .api
                .request(Method::DELETE, &format!("/v1/numbers/{id}/session")),
        )
        .await
        .expect(202)
}

/// Starts a pairing and waits for the code the worker shows.
async fn pair(stack: &Stack, id: &str, method: &str) -> Value {
    let started = stack
        .api
        .post(
            &format!("/v1/numbers/{id}/pair"),
            &json!({ "method": method }),
        )
        .await
        .expect(202);
    assert_eq!(started["status"], "waiting");
    wait_for("a pairing code", Duration::from_secs(30), || async {
        let pairing = number(stack, id).await["pairing"].clone();
        (pairing["status"] == "showing_code").then_some(pairing)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_linked_by_qr_or_code_and_unlinked_through_the_api() {
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        ..StackOptions::default()
    })
    .await;
    let api = stack.api.clone();
    let phone = mobile(940, 1);
    // An account that has never been linked to Herald.
    stack.sim.create_number(&phone, false).await;
    let id = api.create_number(&phone).await;
    let first = unlink(&stack, &id).await;
    assert_eq!(first["state"], "needs_pairing");
    assert_eq!(number(&stack, &id).await["state"], "needs_pairing");

    // By QR code: the code (and its PNG) come from the network, live too.
    let mut live = api.events("after=0&types=number.pairing", None).await;
    let pairing = pair(&stack, &id, "qr").await;
    let code = pairing["code"].as_str().unwrap().to_string();
    assert!(code.starts_with("2@"), "{pairing}");
    assert!(
        pairing["qr_png"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    let (_, shown) = live.next(Duration::from_secs(10)).await.expect("an event");
    assert_eq!(shown["data"]["code"], code.as_str());
    assert_eq!(shown["data"]["method"], "qr");
    assert_eq!(stack.sim.number(&phone).await["qr"], code.as_str());
    stack.sim.scan(&code).await;
    let linked = wait_for("the link", Duration::from_secs(30), || async {
        let n = number(&stack, &id).await;
        (n["state"] == "active" && n["connected"] == true).then_some(n)
    })
    .await;
    assert_eq!(linked["pairing"]["status"], "paired");
    assert_eq!(linked["pairing"]["code"], Value::Null);
    assert!(
        session_rows(&stack, &id).await >= 1,
        "the credential is kept"
    );

    // Another worker opens the number with the stored credential (the
    // network refuses a device without it).
    stack.signal("worker-1", "KILL");
    stack.wait_exit("worker-1", Duration::from_secs(10)).await;
    stack.start_worker(&[]);
    let to = mobile(69, 1);
    api.post(
        "/v1/messages",
        &json!({"to": to, "from": id, "text": "linked"}),
    )
    .await
    .expect(202);
    wait_for(
        "a send from the new worker",
        Duration::from_secs(60),
        || async {
            stack
                .sim
                .log()
                .await
                .into_iter()
                .find(|m| m.to == to && m.from == phone)
        },
    )
    .await;

    // Unlinking: the worker logs the device out, then wipes the session.
    let unlinked = unlink(&stack, &id).await;
    assert_eq!(unlinked["logging_out"], true);
    wait_for("the logout", Duration::from_secs(30), || async {
        (stack.sim.number(&phone).await["paired"] == false).then_some(())
    })
    .await;
    wait_for("the wipe", Duration::from_secs(30), || async {
        (session_rows(&stack, &id).await == 0).then_some(())
    })
    .await;
    assert_eq!(number(&stack, &id).await["state"], "needs_pairing");

    // By phone code this time.
    let pairing = pair(&stack, &id, "code").await;
    let code = pairing["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8, "{pairing}");
    assert_eq!(pairing["qr_png"], Value::Null);
    stack.sim.scan(&code).await;
    wait_for("the link by code", Duration::from_secs(30), || async {
        let n = number(&stack, &id).await;
        (n["state"] == "active" && n["connected"] == true).then_some(())
    })
    .await;

    // A linked number is not paired again over it.
    let again = api
        .post(&format!("/v1/numbers/{id}/pair"), &json!({"method": "qr"}))
        .await;
    assert_eq!(again.status.as_u16(), 409, "{}", again.body);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_right_master_key_refuses_to_start() {
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        ..StackOptions::default()
    })
    .await;
    let missing = stack.start_worker(&[("HERALD_MASTER_KEY", "")]);
    let status = stack.wait_exit(&missing, Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(
        stack.log(&missing).contains("HERALD_MASTER_KEY is not set"),
        "{}",
        stack.log(&missing)
    );
    // The first worker has recorded its key's check value.
    wait_for(
        "the first worker's key check",
        Duration::from_secs(30),
        || async {
            let client = stack.db.pool.get().await.unwrap();
            let checks: i64 = client
                .query_one("SELECT count(*) FROM master_key_checks", &[])
                .await
                .unwrap()
                .get(0);
            (checks == 1).then_some(())
        },
    )
    .await;
    let (_, other) = herald_worker::keystore::MasterKey::generate(1);
    let wrong = stack.start_worker(&[("HERALD_MASTER_KEY", &other)]);
    let status = stack.wait_exit(&wrong, Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(
        stack
            .log(&wrong)
            .contains("is not the master key Herald's session keys were sealed with"),
        "{}",
        stack.log(&wrong)
    );
    stack.stop().await;
}
