//! End to end, with every part a real process: a campaign of 500 recipients
//! over 3 simulated numbers and 2 workers completes; the simulator's log shows
//! each recipient exactly once, "typing…" before every send, and the minimum
//! gap between consecutive sends of each number.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use herald_tests::{Stack, StackOptions, mobile, wait_for};
use serde_json::json;

const RECIPIENTS: u32 = 500;
const MIN_GAP_MS: i32 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_goes_out_once_per_recipient_respecting_the_gap() {
    let stack = Stack::start(StackOptions {
        workers: 2,
        min_gap_ms: MIN_GAP_MS,
        ..StackOptions::default()
    })
    .await;

    let mut numbers = Vec::new();
    for i in 0..3 {
        let phone = mobile(900, i);
        stack.sim.create_paired_number(&phone).await;
        numbers.push(stack.api.create_number(&phone).await);
    }
    let template = stack
        .api
        .create_template("welcome", "Hi {{name}}, welcome to {{shop}}!")
        .await;
    let recipients: Vec<_> = (0..RECIPIENTS)
        .map(|i| json!({ "phone": mobile(1, i), "variables": { "name": format!("P{i}"), "shop": "Acme" } }))
        .collect();
    let created = stack
        .api
        .create_campaign(&json!({
            "name": "e2e",
            "template_id": template,
            "numbers": numbers,
            "recipients": recipients,
            "window": { "start": "00:00", "end": "24:00" },
        }))
        .await;
    assert_eq!(created["report"]["accepted"], RECIPIENTS);
    let campaign = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "draft");
    stack.api.start_campaign(&campaign).await;

    let done = wait_for("the campaign to complete", Duration::from_secs(180), || {
        let api = stack.api.clone();
        let campaign = campaign.clone();
        async move {
            let body = api.campaign(&campaign).await;
            (body["status"] == "completed").then_some(body)
        }
    })
    .await;

    // Every row ended, and none in a failure state (the network delivers all).
    let counts = &done["counts"];
    let total: i64 = counts
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(total, i64::from(RECIPIENTS));
    for pending in ["queued", "scheduled", "sending"] {
        assert_eq!(counts[pending], 0, "{pending} left: {counts}");
    }
    for bad in ["failed", "unknown", "cancelled"] {
        assert_eq!(counts[bad], 0, "{bad}: {counts}");
    }
    // Receipts keep arriving after completion (delivered, then read).
    wait_for(
        "receipts for every message",
        Duration::from_secs(30),
        || {
            let api = stack.api.clone();
            let campaign = campaign.clone();
            async move {
                let counts = api.campaign(&campaign).await["counts"].clone();
                let received = counts["delivered"].as_i64()? + counts["read"].as_i64()?;
                (received == i64::from(RECIPIENTS)).then_some(())
            }
        },
    )
    .await;

    // The network's own record: each recipient exactly once.
    let log = stack.sim.log().await;
    assert_eq!(
        log.len(),
        RECIPIENTS as usize,
        "messages accepted by the network"
    );
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for entry in &log {
        *per_recipient.entry(entry.to.as_str()).or_default() += 1;
    }
    let expected: HashSet<String> = (0..RECIPIENTS).map(|i| mobile(1, i)).collect();
    assert_eq!(per_recipient.len(), expected.len());
    assert!(
        per_recipient.values().all(|&n| n == 1),
        "a recipient got a message twice"
    );
    assert!(per_recipient.keys().all(|to| expected.contains(*to)));

    // The ids the network saw are the ids Herald fixed before sending.
    let client = stack.db.pool.get().await.unwrap();
    let stored: HashMap<String, String> = client
        .query("SELECT wa_message_id, recipient FROM messages", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for entry in &log {
        assert_eq!(
            stored.get(&entry.id),
            Some(&entry.to),
            "message id {} unknown to Herald",
            entry.id
        );
    }

    // Per number: typing before every send, and never two sends closer than
    // the minimum gap.
    let mut by_sender: BTreeMap<&str, Vec<&herald_sim::protocol::LoggedMessage>> = BTreeMap::new();
    for entry in &log {
        by_sender
            .entry(entry.from.as_str())
            .or_default()
            .push(entry);
    }
    assert_eq!(by_sender.len(), 3, "all three numbers sent");
    for (from, mut sends) in by_sender {
        assert!(sends.len() > 50, "{from} sent only {}", sends.len());
        sends.sort_by_key(|e| e.at);
        assert!(
            sends.iter().all(|e| e.typing_ms.is_some()),
            "{from} sent without typing first"
        );
        for pair in sends.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap >= chrono::Duration::milliseconds(MIN_GAP_MS.into()),
                "{from}: two sends {gap} apart (minimum {MIN_GAP_MS} ms)"
            );
        }
    }

    // Two workers shared the three numbers.
    let owners: HashSet<String> = client
        .query("SELECT owner FROM number_leases", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(owners.len(), 2, "both workers drove numbers: {owners:?}");
    drop(client);
    stack.stop().await;
}
