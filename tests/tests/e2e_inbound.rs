//! Replies and opt-outs end to end, on the real binaries and the simulated
//! network: what recipients write is stored, linked to the campaign message
//! it answers and announced by signed webhooks; a keyword opt-out stops
//! further sends at once (and is confirmed); and an agent can answer in the
//! same chat through the send API.

use std::time::Duration;

use herald_tests::{
    Stack, StackOptions, mobile,
    receiver::{Receiver, verify_with_reference_library},
    wait_for,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn subscribe(stack: &Stack, receiver: &Receiver, types: &[&str]) -> String {
    stack
        .api
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url("/herald"), "event_types": types}),
        )
        .await
        .expect(201)["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The webhook events of `kind` the receiver accepted, one per event id.
fn received(receiver: &Receiver, kind: &str) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    receiver
        .accepted()
        .into_iter()
        .filter(|a| seen.insert(a.webhook_id().to_string()))
        .map(|a| a.json())
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_linked_and_announced_and_an_opt_out_stops_further_sends() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: 1500,
        jitter_ms: 0,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let confirmation = "You will not get messages from us again.";
    api.send(
        api.request(reqwest::Method::PATCH, "/v1/settings")
            .json(&json!({"opt_out_reply": confirmation})),
    )
    .await
    .expect(200);
    let receiver = Receiver::start().await;
    let secret = subscribe(
        &stack,
        &receiver,
        &["message.received", "contact.opted_out"],
    )
    .await;
    let number_phone = mobile(930, 1);
    let number = stack.paired_number(&number_phone).await;
    let template = api.create_template("t", "Hello {{name}}").await;
    let people: Vec<String> = (1..=5).map(|i| mobile(66, i)).collect();
    let recipients: Vec<Value> = people
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"phone": p, "variables": {"name": format!("R{i}")}}))
        .collect();
    let campaign = api
        .create_campaign(&json!({"name": "promo", "template_id": template, "numbers": [number],
                                 "recipients": recipients, "window": {"start": "00:00", "end": "24:00"}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.start_campaign(&campaign).await;
    // One send every 1.5 s: the first two people have their message, the
    // last is still waiting for theirs.
    let first_two = wait_for("two sends", Duration::from_secs(30), || async {
        let log = stack.sim.log().await;
        let to: Vec<String> = log.iter().map(|m| m.to.clone()).collect();
        (to.len() >= 2).then_some(to)
    })
    .await;
    let (replier, quitter) = (&first_two[0], &first_two[1]);
    // Recorded as sent (the network logs a message before Herald hears the
    // server's ack): only then is there a message for their replies to answer.
    for person in &first_two {
        wait_for(
            "the send to be recorded",
            Duration::from_secs(10),
            || async {
                let messages = api
                    .get(&format!(
                        "/v1/campaigns/{campaign}/messages?recipient={}",
                        person.replace('+', "%2B")
                    ))
                    .await
                    .expect(200);
                messages["data"][0]["times"]["sent_at"]
                    .is_string()
                    .then_some(())
            },
        )
        .await;
    }
    let late = people
        .iter()
        .rev()
        .find(|p| !first_two.contains(p))
        .unwrap()
        .clone();
    stack
        .sim
        .inbound(replier, &number_phone, "Thanks! When do you open?", None)
        .await;
    stack
        .sim
        .inbound(replier, &number_phone, "this one", Some("image/jpeg"))
        .await;
    stack
        .sim
        .inbound(quitter, &number_phone, "PARAR", None)
        .await;
    let written = std::time::Instant::now();
    stack
        .sim
        .inbound(&late, &number_phone, "  Stop. ", None)
        .await;

    // The opt-out is on the suppression list straight away.
    let suppression = wait_for("the opt-out", Duration::from_secs(10), || async {
        let reply = api.get(&format!("/v1/suppressions/{late}")).await;
        (reply.status == 200).then_some(reply.body)
    })
    .await;
    // A figure for the record, not a pass mark (timings belong in benchmarks).
    eprintln!(
        "opt-out visible through the API {} ms after the phone wrote",
        written.elapsed().as_millis()
    );
    assert_eq!(suppression["source"], "opt_out");
    assert_eq!(suppression["reason"], "replied \"stop\"");
    wait_for(
        "the campaign to complete",
        Duration::from_secs(60),
        || async { (api.campaign(&campaign).await["status"] == "completed").then_some(()) },
    )
    .await;

    // The late recipient never got the campaign's text; they got the
    // confirmation, from the number they wrote to (after the campaign's
    // last send: it keeps the number's pace).
    let log = wait_for("the confirmations", Duration::from_secs(30), || async {
        let log = stack.sim.log().await;
        let confirmed = log
            .iter()
            .filter(|m| m.body_sha256 == sha256(confirmation))
            .count();
        (confirmed == 2).then_some(log)
    })
    .await;
    let to_late: Vec<_> = log.iter().filter(|m| m.to == late).collect();
    assert_eq!(to_late.len(), 1, "{to_late:?}");
    assert_eq!(to_late[0].body_sha256, sha256(confirmation));
    assert_eq!(to_late[0].from, number_phone);
    let late_messages = api
        .get(&format!(
            "/v1/campaigns/{campaign}/messages?recipient={late}"
        ))
        .await
        .expect(200);
    assert_eq!(late_messages["data"][0]["state"], "suppressed");

    // Replies are stored and linked to the message they answer.
    let replier_message = api
        .get(&format!(
            "/v1/campaigns/{campaign}/messages?recipient={replier}"
        ))
        .await
        .expect(200)["data"][0]["id"]
        .clone();
    let inbound = api
        .get(&format!("/v1/inbound?from={replier}"))
        .await
        .expect(200)["data"]
        .clone();
    let inbound = inbound.as_array().unwrap();
    assert_eq!(inbound.len(), 2);
    assert_eq!(inbound[0]["kind"], "text");
    assert_eq!(inbound[0]["text"], "Thanks! When do you open?");
    assert_eq!(inbound[1]["kind"], "image");
    assert_eq!(inbound[1]["media_type"], "image/jpeg");
    assert_eq!(inbound[1]["text"], "this one");
    for message in inbound {
        assert_eq!(message["reply_to_message_id"], replier_message);
        assert_eq!(message["campaign_id"], campaign.as_str());
        assert_eq!(message["number_id"], number.as_str());
        assert_eq!(message["opt_out"], false);
    }
    let counted = api.campaign(&campaign).await;
    assert_eq!(counted["replies"], 3, "two from the replier, the PARAR");
    assert_eq!(counted["repliers"], 2);
    assert_eq!(counted["opt_outs"], 1, "the late one had not been sent it");
    assert_eq!(counted["counts"]["suppressed"], 1);

    // Everything was announced, signed.
    let announced = wait_for("the webhooks", Duration::from_secs(20), || async {
        let received = received(&receiver, "message.received");
        let opted = received_opt_outs(&receiver);
        (received.len() == 4 && opted.len() == 2).then_some(opted)
    })
    .await;
    let for_late = announced
        .iter()
        .find(|e| e["data"]["phone"] == late.as_str())
        .unwrap();
    assert_eq!(for_late["data"]["stopped_messages"], 1);
    assert_eq!(for_late["data"]["keyword"], "stop");
    assert!(for_late["data"]["confirmation_message_id"].is_i64());
    let for_quitter = announced
        .iter()
        .find(|e| e["data"]["phone"] == quitter.as_str())
        .unwrap();
    assert_eq!(for_quitter["data"]["stopped_messages"], 0);
    let verdicts = verify_with_reference_library(&secret, &receiver.arrivals());
    assert!(verdicts.iter().all(|ok| *ok), "{verdicts:?}");
    receiver.stop().await;
    stack.stop().await;
}

fn received_opt_outs(receiver: &Receiver) -> Vec<Value> {
    received(receiver, "contact.opted_out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_in_the_same_chat_through_the_send_api() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let secret = subscribe(&stack, &receiver, &["message.received"]).await;
    let number_phone = mobile(931, 1);
    let number = stack.paired_number(&number_phone).await;
    let customer = mobile(67, 1);
    stack
        .sim
        .inbound(&customer, &number_phone, "Do you deliver on Sundays?", None)
        .await;

    // The agent: gets message.received, checks it is Herald's, answers.
    let arrival = wait_for("message.received", Duration::from_secs(20), || async {
        receiver.accepted().into_iter().next()
    })
    .await;
    assert_eq!(
        verify_with_reference_library(&secret, std::slice::from_ref(&arrival)),
        [true]
    );
    let event = arrival.json();
    assert_eq!(event["type"], "message.received");
    assert_eq!(event["data"]["from"], customer.as_str());
    assert_eq!(event["data"]["number_id"], number.as_str());
    assert_eq!(event["data"]["text"], "Do you deliver on Sundays?");
    let answer = "Yes, from 9 to 13.";
    let sent = api
        .post(
            "/v1/messages",
            &json!({"reply_to": event["data"]["inbound_id"], "text": answer}),
        )
        .await
        .expect(202);
    assert_eq!(sent["recipient"], customer.as_str());
    // Naming the chat twice is a mistake, reported as such.
    let twice = api
        .post(
            "/v1/messages",
            &json!({"reply_to": event["data"]["inbound_id"], "to": customer, "text": answer}),
        )
        .await;
    assert_eq!(twice.status.as_u16(), 422);
    assert_eq!(twice.body["errors"][0]["pointer"], "/reply_to");

    let delivered = wait_for("the answer to arrive", Duration::from_secs(30), || async {
        let log = stack.sim.log().await;
        log.into_iter().find(|m| m.to == customer)
    })
    .await;
    assert_eq!(delivered.from, number_phone, "the same chat");
    assert_eq!(delivered.body_sha256, sha256(answer));
    let message = wait_for(
        "the answer to be delivered",
        Duration::from_secs(20),
        || async {
            let message = api.get(&format!("/v1/messages/{}", sent["id"])).await.body;
            matches!(message["state"].as_str(), Some("delivered" | "read")).then_some(message)
        },
    )
    .await;
    assert_eq!(message["sender_number_id"], number.as_str());
    receiver.stop().await;
    stack.stop().await;
}
