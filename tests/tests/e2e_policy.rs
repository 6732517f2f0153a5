//! The pacing policy end to end, every part a real process, the simulator's
//! log as the judge: caps and gaps hold, a capped campaign waits, pause acts
//! within seconds, a time-locked number hands new contacts over, a banned
//! number stops, a failing campaign pauses itself.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use herald_sim::protocol::LoggedMessage;
use herald_tests::{Stack, StackOptions, mobile, wait_for};
use serde_json::{Value, json};

fn recipients(series: u32, n: u32) -> Vec<Value> {
    (0..n)
        .map(|i| json!({ "phone": mobile(series, i), "variables": { "name": format!("R{i}") } }))
        .collect()
}

async fn number(stack: &Stack, phone: &str, extra: Value) -> String {
    stack.sim.create_paired_number(phone).await;
    let mut body = json!({ "phone": phone, "kind": "sim" });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let created = stack.api.post("/v1/numbers", &body).await.expect(201);
    created["id"].as_str().unwrap().to_string()
}

async fn campaign(stack: &Stack, numbers: &[&str], recipients: Vec<Value>, extra: Value) -> String {
    let template = stack.api.create_template("t", "Hi {{name}}!").await;
    let mut body = json!({
        "name": "policy", "template_id": template, "numbers": numbers, "recipients": recipients,
        "window": { "start": "00:00", "end": "24:00" },
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let id = stack.api.create_campaign(&body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    stack.api.start_campaign(&id).await;
    id
}

fn per_sender(log: &[LoggedMessage]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in log {
        *counts.entry(entry.from.clone()).or_default() += 1;
    }
    counts
}

fn assert_gaps(log: &[LoggedMessage], min_gap_ms: i64) {
    let mut by_sender: BTreeMap<&str, Vec<&LoggedMessage>> = BTreeMap::new();
    for entry in log {
        by_sender.entry(&entry.from).or_default().push(entry);
    }
    for (from, mut sends) in by_sender {
        sends.sort_by_key(|e| e.at);
        for pair in sends.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap >= chrono::Duration::milliseconds(min_gap_ms),
                "{from}: sends {gap} apart"
            );
        }
    }
}

async fn counts(stack: &Stack, campaign: &str) -> Value {
    stack.api.campaign(campaign).await["counts"].clone()
}

/// Waits until nothing of the campaign is scheduled or being sent.
async fn settled(stack: &Stack, campaign: &str) -> Value {
    wait_for(
        "the campaign to settle",
        Duration::from_secs(60),
        || async {
            let body = stack.api.campaign(campaign).await;
            let c = &body["counts"];
            (c["scheduled"] == 0 && c["sending"] == 0).then(|| body.clone())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_caps_and_gaps_hold_and_a_capped_campaign_waits() {
    let stack = Stack::start(StackOptions {
        workers: 2,
        min_gap_ms: 80,
        ..StackOptions::default()
    })
    .await;
    let a = number(&stack, &mobile(910, 1), json!({ "daily_cap": 8 })).await;
    let b = number(&stack, &mobile(910, 2), json!({ "daily_cap": 12 })).await;
    let id = campaign(&stack, &[&a, &b], recipients(31, 40), json!({})).await;

    wait_for("both caps to be used", Duration::from_secs(60), || async {
        (stack.sim.log().await.len() >= 20).then_some(())
    })
    .await;
    let body = settled(&stack, &id).await;
    assert_eq!(
        body["status"], "running",
        "a capped campaign waits for tomorrow"
    );
    assert_eq!(body["counts"]["queued"], 20);
    let log = stack.sim.log().await;
    assert_eq!(log.len(), 20);
    let sent: Vec<usize> = per_sender(&log).into_values().collect();
    assert_eq!(sent, [8, 12], "each number stopped at its cap");
    assert_gaps(&log, 80);

    // Raising a cap during the day lets the number go on.
    stack
        .api
        .send(
            stack
                .api
                .request(reqwest::Method::PATCH, &format!("/v1/numbers/{a}"))
                .json(&json!({ "daily_cap": 14 })),
        )
        .await
        .expect(200);
    wait_for(
        "six more from the first number",
        Duration::from_secs(60),
        || async { (stack.sim.log().await.len() >= 26).then_some(()) },
    )
    .await;
    settled(&stack, &id).await;
    let log = stack.sim.log().await;
    assert_eq!(per_sender(&log).into_values().collect::<Vec<_>>(), [14, 12]);
    assert_gaps(&log, 80);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_stops_sending_within_seconds_and_resuming_finishes() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: 300,
        ..StackOptions::default()
    })
    .await;
    let a = number(&stack, &mobile(911, 1), json!({})).await;
    let id = campaign(&stack, &[&a], recipients(32, 30), json!({})).await;
    wait_for("a few sends", Duration::from_secs(60), || async {
        (stack.sim.log().await.len() >= 3).then_some(())
    })
    .await;
    let paused_at = Instant::now();
    let paused = stack
        .api
        .post(&format!("/v1/campaigns/{id}/pause"), &json!({}))
        .await
        .expect(200);
    assert_eq!(paused["status"], "paused");
    let before = stack.sim.log().await.len();
    // At most the send already under way finishes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = stack.sim.log().await.len();
    assert!(
        after <= before + 1,
        "{} sends after pausing",
        after - before
    );
    let c = counts(&stack, &id).await;
    assert_eq!(c["scheduled"], 0);
    assert_eq!(c["sending"], 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack.sim.log().await.len(),
        after,
        "nothing more while paused"
    );
    assert!(paused_at.elapsed() >= Duration::from_secs(5));

    stack
        .api
        .post(&format!("/v1/campaigns/{id}/resume"), &json!({}))
        .await
        .expect(200);
    wait_for(
        "the campaign to complete",
        Duration::from_secs(90),
        || async { (stack.api.campaign(&id).await["status"] == "completed").then_some(()) },
    )
    .await;
    let log = stack.sim.log().await;
    assert_eq!(log.len(), 30);
    assert_eq!(
        log.iter()
            .map(|e| &e.to)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        30,
        "each recipient once"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_locked_number_hands_new_contacts_to_another() {
    let stack = Stack::start(StackOptions {
        workers: 2,
        min_gap_ms: 50,
        ..StackOptions::default()
    })
    .await;
    let locked_phone = mobile(912, 1);
    let a = number(&stack, &locked_phone, json!({})).await;
    let b = number(&stack, &mobile(912, 2), json!({})).await;
    let sim = herald_tests::http();
    let lock = sim
        .post(format!(
            "{}/admin/numbers/{}/timelock",
            stack.sim.base,
            &locked_phone[1..]
        ))
        .json(&json!({ "seconds": 3600 }))
        .send()
        .await
        .unwrap();
    assert!(lock.status().is_success());
    let id = campaign(&stack, &[&a, &b], recipients(33, 20), json!({})).await;
    wait_for(
        "the campaign to complete",
        Duration::from_secs(90),
        || async { (stack.api.campaign(&id).await["status"] == "completed").then_some(()) },
    )
    .await;
    let c = counts(&stack, &id).await;
    assert_eq!(c["failed"], 0, "{c}");
    let log = stack.sim.log().await;
    assert_eq!(log.len(), 20);
    assert!(
        log.iter().all(|e| e.from != locked_phone),
        "the locked number reached no one new"
    );
    let number = stack.api.get(&format!("/v1/numbers/{a}")).await.expect(200);
    assert_eq!(number["state"], "timelocked");
    let until: chrono::DateTime<chrono::Utc> = number["timelocked_until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        until > chrono::Utc::now() + chrono::Duration::minutes(50),
        "the network's end, not a guess"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_number_stops_and_the_others_carry_on() {
    let stack = Stack::start(StackOptions {
        workers: 2,
        min_gap_ms: 150,
        ..StackOptions::default()
    })
    .await;
    let banned_phone = mobile(913, 1);
    let a = number(&stack, &banned_phone, json!({})).await;
    let b = number(&stack, &mobile(913, 2), json!({})).await;
    let id = campaign(&stack, &[&a, &b], recipients(34, 30), json!({})).await;
    wait_for(
        "the first number to send a few",
        Duration::from_secs(60),
        || async {
            let log = stack.sim.log().await;
            (log.iter().filter(|e| e.from == banned_phone).count() >= 3).then_some(())
        },
    )
    .await;
    stack.sim.ban(&banned_phone, 3600).await;
    let banned_at = chrono::Utc::now();
    wait_for(
        "the campaign to complete",
        Duration::from_secs(90),
        || async { (stack.api.campaign(&id).await["status"] == "completed").then_some(()) },
    )
    .await;
    let log = stack.sim.log().await;
    assert_eq!(
        log.len(),
        30,
        "every recipient reached, by the other number"
    );
    assert!(
        log.iter()
            .all(|e| e.from != banned_phone || e.at <= banned_at),
        "nothing from the banned number after the ban"
    );
    let number = stack.api.get(&format!("/v1/numbers/{a}")).await.expect(200);
    assert_eq!(number["state"], "banned");
    assert!(number["banned_until"].is_string());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_that_keeps_failing_pauses_itself() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: 20,
        ..StackOptions::default()
    })
    .await;
    let a = number(&stack, &mobile(914, 1), json!({})).await;
    // Nobody on this list uses WhatsApp.
    let http = herald_tests::http();
    for i in 0..10 {
        let phone = mobile(35, i);
        http.put(format!(
            "{}/admin/recipients/{}",
            stack.sim.base,
            &phone[1..]
        ))
        .json(&json!({ "registered": false }))
        .send()
        .await
        .unwrap();
    }
    let id = campaign(
        &stack,
        &[&a],
        recipients(35, 10),
        json!({ "max_consecutive_failures": 3 }),
    )
    .await;
    let body = wait_for(
        "the campaign to pause itself",
        Duration::from_secs(60),
        || async {
            let body = stack.api.campaign(&id).await;
            (body["status"] == "paused").then_some(body)
        },
    )
    .await;
    assert!(
        body["status_reason"]
            .as_str()
            .unwrap()
            .contains("3 consecutive failures"),
        "{body}"
    );
    let body = settled(&stack, &id).await;
    assert_eq!(body["counts"]["failed"], 3);
    assert_eq!(
        body["counts"]["queued"], 7,
        "the rest wait for someone to look"
    );
    stack.stop().await;
}
