//! The correctness rules, at the level of the statements that enforce them,
//! on a real Postgres: fencing, takeover, forward-only receipts (and the
//! worker's writers of claims, verdicts and receipts), concurrent scheduling.

use std::time::Duration;

use chrono::Utc;
use herald_shared::db::{
    campaigns,
    messages::{self, Claim, Pick, ReceiptKind, Requeue},
    number_leases, planning, sender_usage,
};
use herald_tests::{
    TestDb,
    fixtures::{self, CampaignSpec, Fixture, state_of},
};
use herald_worker::{
    claims::{ClaimWriter, Claims},
    outcomes::{Outcome, OutcomeWriter, Outcomes, Receipt, Sent},
};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(30);

fn pick(campaign: Uuid, number: Uuid, limit: i64) -> Pick<'static> {
    static ZONES: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["z:UTC".to_string()]);
    Pick {
        campaign_id: campaign,
        number_id: number,
        open_zones: &ZONES,
        variants: &[0],
        limit,
    }
}

async fn scheduled_message(db: &TestDb, number: Uuid, campaign: Uuid) -> i64 {
    let client = db.pool.get().await.unwrap();
    messages::schedule_campaign(&client, &pick(campaign, number, 1), Some(&[]))
        .await
        .unwrap()[0]
        .id
}

/// Two numbers and a campaign of four recipients on them.
async fn two_numbers(db: &TestDb) -> (Fixture, Uuid, Uuid, Uuid) {
    let fx = Fixture::new(db).await;
    let n1 = fx.number(db, 1, 100).await;
    let n2 = fx.number(db, 2, 100).await;
    let campaign = fx.campaign(db, &[n1, n2], 4).await;
    (fx, n1, n2, campaign)
}

/// The number's lease for "w1"; its epoch.
async fn lease(client: &impl herald_shared::db::GenericClient, number: Uuid) -> i64 {
    number_leases::acquire(client, number, "w1", TTL)
        .await
        .unwrap()
        .unwrap()
}

/// A message scheduled on the number and claimed by "w1" under `epoch`.
async fn claimed_message(
    db: &TestDb,
    number: Uuid,
    campaign: Uuid,
    epoch: i64,
) -> (i64, messages::Claimed) {
    let id = scheduled_message(db, number, campaign).await;
    let client = db.pool.get().await.unwrap();
    let claimed = messages::claim(&client, id, number, "w1", epoch)
        .await
        .unwrap()
        .unwrap();
    (id, claimed)
}

#[tokio::test]
async fn only_the_current_lease_holder_can_claim() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100).await;
    let campaign = fx.campaign(&db, &[number], 3).await;
    let client = db.pool.get().await.unwrap();

    let epoch = number_leases::acquire(&client, number, "w1", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(epoch, 1);
    assert_eq!(
        number_leases::acquire(&client, number, "w2", TTL)
            .await
            .unwrap(),
        None,
        "a live lease cannot be taken"
    );
    let message = scheduled_message(&db, number, campaign).await;
    assert!(
        messages::claim(&client, message, number, "w2", epoch)
            .await
            .unwrap()
            .is_none(),
        "wrong owner"
    );
    assert!(
        messages::claim(&client, message, number, "w1", epoch + 1)
            .await
            .unwrap()
            .is_none(),
        "wrong epoch"
    );
    let other_number = fx.number(&db, 2, 100).await;
    assert!(
        messages::claim(&client, message, other_number, "w1", epoch)
            .await
            .unwrap()
            .is_none(),
        "wrong number"
    );
    let claimed = messages::claim(&client, message, number, "w1", epoch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.attempts, 1);
    assert_eq!(state_of(&db, message).await, "sending");

    // The lease expires and another worker takes over: the old epoch is dead.
    client
        .execute(
            "UPDATE number_leases SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let next = number_leases::acquire(&client, number, "w2", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, epoch + 1, "takeover bumps the epoch");
    assert!(
        number_leases::renew(&client, "w1", &[(number, epoch)], TTL)
            .await
            .unwrap()
            .is_empty()
    );
    let second = scheduled_message(&db, number, campaign).await;
    assert!(
        messages::claim(&client, second, number, "w1", epoch)
            .await
            .unwrap()
            .is_none(),
        "the stale owner can no longer claim"
    );
    assert!(
        messages::claim(&client, second, number, "w2", next)
            .await
            .unwrap()
            .is_some()
    );

    // The new owner settles what the old one left mid-send.
    assert_eq!(
        messages::abandon_stale_claims(&client, number, next)
            .await
            .unwrap(),
        1
    );
    assert_eq!(state_of(&db, message).await, "unknown");
    assert_eq!(
        state_of(&db, second).await,
        "sending",
        "its own claim is untouched"
    );
    // The old owner's late verdict still lands: it knows the message left.
    assert_eq!(
        messages::record_sent(&client, &[message], &[epoch], &[Utc::now()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(state_of(&db, message).await, "sent");
}

#[tokio::test]
async fn a_claim_needs_a_running_campaign_and_a_scheduled_message() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100).await;
    let campaign = fx.campaign(&db, &[number], 2).await;
    let client = db.pool.get().await.unwrap();
    let epoch = number_leases::acquire(&client, number, "w1", TTL)
        .await
        .unwrap()
        .unwrap();
    let message = scheduled_message(&db, number, campaign).await;

    client
        .execute("UPDATE campaigns SET status = 'paused'", &[])
        .await
        .unwrap();
    assert!(
        messages::claim(&client, message, number, "w1", epoch)
            .await
            .unwrap()
            .is_none()
    );
    client
        .execute("UPDATE campaigns SET status = 'running'", &[])
        .await
        .unwrap();
    assert!(
        messages::claim(&client, message, number, "w1", epoch)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        messages::record_sent(&client, &[message], &[epoch], &[Utc::now()])
            .await
            .unwrap(),
        1
    );
    assert!(
        messages::claim(&client, message, number, "w1", epoch)
            .await
            .unwrap()
            .is_none(),
        "a sent message is never claimed again"
    );
    assert!(
        messages::pending_job(&client, message, number, epoch)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn outcomes_that_did_not_leave_go_back_to_the_queue_until_the_attempts_run_out() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100).await;
    let campaign = fx.campaign(&db, &[number], 1).await;
    let client = db.pool.get().await.unwrap();
    let epoch = number_leases::acquire(&client, number, "w1", TTL)
        .await
        .unwrap()
        .unwrap();
    for attempt in 1..=3 {
        let message = scheduled_message(&db, number, campaign).await;
        messages::claim(&client, message, number, "w1", epoch)
            .await
            .unwrap()
            .unwrap();
        let state = messages::requeue(&client, message, epoch, 3, "not connected", Requeue::Now)
            .await
            .unwrap()
            .unwrap();
        let expected = if attempt < 3 { "queued" } else { "failed" };
        assert_eq!(state.as_str(), expected, "attempt {attempt}");
        assert_eq!(state_of(&db, message).await, expected);
    }
}

#[tokio::test]
async fn receipts_only_move_messages_forward_and_only_for_their_number() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100).await;
    let other = fx.number(&db, 2, 100).await;
    let campaign = fx.campaign(&db, &[number], 3).await;
    let client = db.pool.get().await.unwrap();
    let epoch = number_leases::acquire(&client, number, "w1", TTL)
        .await
        .unwrap()
        .unwrap();
    let a = scheduled_message(&db, number, campaign).await;
    let b = scheduled_message(&db, number, campaign).await;
    let wa_id = |id: i64| {
        let client = &client;
        async move {
            client
                .query_one("SELECT wa_message_id FROM messages WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    let c = scheduled_message(&db, number, campaign).await;
    let (wa_a, wa_b, wa_c) = (wa_id(a).await, wa_id(b).await, wa_id(c).await);
    for id in [a, b, c] {
        messages::claim(&client, id, number, "w1", epoch)
            .await
            .unwrap()
            .unwrap();
    }
    messages::record_sent(&client, &[a], &[epoch], &[Utc::now()])
        .await
        .unwrap();
    messages::record_unknown(&client, b, epoch, "timeout")
        .await
        .unwrap();
    messages::record_sent(&client, &[c], &[epoch], &[Utc::now()])
        .await
        .unwrap();

    let now = Utc::now();
    assert_eq!(
        messages::apply_receipts(&client, ReceiptKind::Read, &[other], &[&wa_a], &[now])
            .await
            .unwrap(),
        0,
        "another number's receipt"
    );
    assert_eq!(
        messages::apply_receipts(&client, ReceiptKind::Read, &[number], &[&wa_a], &[now])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        messages::apply_receipts(&client, ReceiptKind::Delivered, &[number], &[&wa_a], &[now])
            .await
            .unwrap(),
        0,
        "read never goes back to delivered"
    );
    assert_eq!(state_of(&db, a).await, "read");
    // A receipt resolves an unknown outcome: the message did leave.
    assert_eq!(
        messages::apply_receipts(&client, ReceiptKind::Delivered, &[number], &[&wa_b], &[now])
            .await
            .unwrap(),
        1
    );
    assert_eq!(state_of(&db, b).await, "delivered");
    let row = client
        .query_one(
            "SELECT sent_at IS NOT NULL, delivered_at IS NOT NULL FROM messages WHERE id = $1",
            &[&b],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0) && row.get::<_, bool>(1),
        "timestamps filled in"
    );

    // One statement for a batch: an id given twice counts once, at its
    // earliest time; an id of no message of the number changes nothing.
    let earlier = now - chrono::Duration::seconds(30);
    assert_eq!(
        messages::apply_receipts(
            &client,
            ReceiptKind::Delivered,
            &[number, number, number],
            &[&wa_c, "3EB0NOSUCHMESSAGE", &wa_c],
            &[now, now, earlier],
        )
        .await
        .unwrap(),
        1
    );
    let delivered_at: chrono::DateTime<Utc> = client
        .query_one("SELECT delivered_at FROM messages WHERE id = $1", &[&c])
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered_at.timestamp_micros(), earlier.timestamp_micros());
    assert_eq!(state_of(&db, c).await, "delivered");
}

/// The worker's receipt writer: numbers' receipts committed together, each
/// applied to its own number's messages, delivered before read.
#[tokio::test]
async fn the_receipt_writer_applies_every_numbers_receipts_delivered_first() {
    let db = TestDb::create().await;
    let (_, n1, n2, campaign) = two_numbers(&db).await;
    let client = db.pool.get().await.unwrap();
    // Two sent messages per number.
    let mut sent = Vec::new();
    for number in [n1, n2] {
        let epoch = lease(&client, number).await;
        for _ in 0..2 {
            let (id, claimed) = claimed_message(&db, number, campaign, epoch).await;
            messages::record_sent(&client, &[id], &[epoch], &[Utc::now()])
                .await
                .unwrap();
            sent.push((id, claimed.wa_message_id));
        }
    }
    let receipt = |number_id, kind, i: usize| {
        Outcome::Receipt(Receipt {
            number_id,
            kind,
            wa_message_id: sent[i].1.clone(),
            at: Utc::now(),
        })
    };
    let writer = OutcomeWriter::spawn(db.pool.clone(), Outcomes);
    let (first, second) = tokio::join!(
        // The network reported the read before the delivery.
        writer.write(vec![
            receipt(n1, ReceiptKind::Read, 0),
            receipt(n1, ReceiptKind::Delivered, 0),
            receipt(n1, ReceiptKind::Delivered, 1),
        ]),
        writer.write(vec![
            receipt(n2, ReceiptKind::Delivered, 2),
            receipt(n2, ReceiptKind::Read, 3),
            // Not n2's message: changes nothing.
            receipt(n2, ReceiptKind::Read, 1),
        ]),
    );
    first.unwrap();
    second.unwrap();
    let mut states = Vec::new();
    for (id, _) in &sent {
        states.push(state_of(&db, *id).await);
    }
    assert_eq!(states, ["read", "delivered", "delivered", "read"]);
    // Announced in order: the first message delivered, then read.
    let topics: Vec<String> = client
        .query(
            "SELECT topic FROM outbox WHERE payload->'data'->>'wa_message_id' = $1 ORDER BY id",
            &[&sent[0].1],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        topics,
        ["message.sent", "message.delivered", "message.read"]
    );
}

/// The worker's claim writer: the claims of several numbers in one
/// statement, each answered with its own message or with nothing, as the
/// claim alone would have answered it; only the numbers that claimed
/// something are stamped.
/// A claim stamps its numbers in id order, as planners lock them: waiting
/// for one number, it holds none after it, so a planner locking a batch of
/// numbers in id order never deadlocks with a worker's claims (it did, in
/// `herald-bench pipeline`, when the stamp locked in the table's order).
#[tokio::test]
async fn a_claim_waiting_for_a_number_holds_none_after_it() {
    let db = TestDb::create().await;
    let (_fx, n1, n2, campaign) = two_numbers(&db).await;
    let (low, high) = (n1.min(n2), n1.max(n2));
    let client = db.pool.get().await.unwrap();
    // The higher number first in the table's physical order, and in the
    // claims' order: a new version of the lower one's row goes after it.
    client
        .execute(
            "UPDATE sender_numbers SET label = label WHERE id = $1",
            &[&low],
        )
        .await
        .unwrap();
    let mut claims = Vec::new();
    for number in [high, low] {
        let epoch = lease(&client, number).await;
        claims.push(Claim {
            message_id: scheduled_message(&db, number, campaign).await,
            number_id: number,
            owner: "w1".into(),
            epoch,
        });
    }
    // A planner holds the lower number.
    let mut holder = db.pool.get().await.unwrap();
    let planner = holder.transaction().await.unwrap();
    planner
        .execute(
            "SELECT 1 FROM sender_numbers WHERE id = $1 FOR UPDATE",
            &[&low],
        )
        .await
        .unwrap();
    let claiming = tokio::spawn({
        let pool = db.pool.clone();
        async move {
            let client = pool.get().await.unwrap();
            messages::claim_many(&client, &claims).await.unwrap()
        }
    });
    while client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The claim waits for the lower number without holding the higher.
    let higher = client
        .query(
            "SELECT 1 FROM sender_numbers WHERE id = $1 FOR UPDATE NOWAIT",
            &[&high],
        )
        .await;
    assert!(higher.is_ok(), "{higher:?}");
    planner.commit().await.unwrap();
    let answers = claiming.await.unwrap();
    assert!(answers.iter().all(Option::is_some), "{answers:?}");
}

/// The planner's locks on its numbers and its capped tenant leave the
/// foreign-key checks of rows referring to them through: a transaction that
/// updated messages of several numbers holds a key-share lock on each (in no
/// set order), and a planner waiting for one of them while holding others
/// deadlocked with it.
#[tokio::test]
async fn planning_locks_let_references_to_the_number_through() {
    let db = TestDb::create().await;
    let (_fx, number, _, _) = two_numbers(&db).await;
    let client = db.pool.get().await.unwrap();
    client
        .execute("UPDATE tenants SET daily_cap = 10", &[])
        .await
        .unwrap();
    let tenant: Uuid = client
        .query_one(
            "SELECT tenant_id FROM sender_numbers WHERE id = $1",
            &[&number],
        )
        .await
        .unwrap()
        .get(0);
    let mut referrer = db.pool.get().await.unwrap();
    let referrer = referrer.transaction().await.unwrap();
    referrer
        .batch_execute(&format!(
            "SELECT 1 FROM sender_numbers WHERE id = '{number}' FOR KEY SHARE;
             SELECT 1 FROM tenants WHERE id = '{tenant}' FOR KEY SHARE"
        ))
        .await
        .unwrap();
    let mut planner = db.pool.get().await.unwrap();
    let planner = planner.transaction().await.unwrap();
    planner
        .batch_execute("SET LOCAL lock_timeout = '2s'")
        .await
        .unwrap();
    let budgets = sender_usage::lock_today(&planner, &[number], Utc::now())
        .await
        .unwrap();
    assert!(budgets.contains_key(&number));
    let tenants = sender_usage::lock_tenants_today(&planner, &[tenant], Utc::now())
        .await
        .unwrap();
    assert_eq!(tenants[&tenant].cap, Some(10));
    planner.commit().await.unwrap();
    referrer.commit().await.unwrap();
}

#[tokio::test]
async fn the_claim_writer_answers_every_claim_with_its_own_message() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let numbers = [
        fx.number(&db, 1, 100).await,
        fx.number(&db, 2, 100).await,
        fx.number(&db, 3, 100).await,
    ];
    let campaign = fx.campaign(&db, &numbers, 18).await;
    let client = db.pool.get().await.unwrap();
    let mut claims = Vec::new();
    for number in numbers {
        let epoch = lease(&client, number).await;
        for _ in 0..6 {
            claims.push(Claim {
                message_id: scheduled_message(&db, number, campaign).await,
                number_id: number,
                owner: "w1".into(),
                epoch,
            });
        }
    }
    // The third number's claims under a dead epoch: none of them may claim.
    for claim in claims.iter_mut().filter(|c| c.number_id == numbers[2]) {
        claim.epoch += 1;
    }
    // A message listed twice is claimed once.
    claims.push(claims[0].clone());
    // Another number's message: not claimed.
    claims.push(Claim {
        number_id: numbers[1],
        ..claims[1].clone()
    });

    let writer = ClaimWriter::spawn(db.pool.clone(), Claims);
    let answers = futures_util::future::join_all(
        claims.iter().map(|claim| writer.write(vec![claim.clone()])),
    )
    .await;
    let mut claimed = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.len(), 1);
        claimed.push(answer.into_iter().next().unwrap().map(|c| c.wa_message_id));
    }
    let wa_ids: Vec<Option<String>> = {
        let mut ids = Vec::new();
        for claim in &claims {
            let row = client
                .query_one(
                    "SELECT wa_message_id FROM messages WHERE id = $1",
                    &[&claim.message_id],
                )
                .await
                .unwrap();
            ids.push(Some(row.get(0)));
        }
        ids
    };
    // The first two numbers' twelve claims, each with its own message (the
    // first one's listed twice: see below).
    assert_eq!(claimed[1..12], wa_ids[1..12]);
    assert!(claimed[12..18].iter().all(Option::is_none), "dead epoch");
    let twice = [&claimed[0], &claimed[18]];
    assert_eq!(
        twice.iter().filter(|c| **c == &wa_ids[0]).count(),
        1,
        "a message listed twice is claimed for one listing: {twice:?}"
    );
    assert!(twice.iter().any(|c| c.is_none()), "{twice:?}");
    assert_eq!(claimed[19], None, "not the number's message");
    let mut states = Vec::new();
    for claim in &claims[..18] {
        states.push(state_of(&db, claim.message_id).await);
    }
    assert!(states[..12].iter().all(|s| s == "sending"), "{states:?}");
    assert!(states[12..].iter().all(|s| s == "scheduled"), "{states:?}");
    let attempts: i32 = client
        .query_one(
            "SELECT attempts FROM messages WHERE id = $1",
            &[&claims[0].message_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1, "claimed once");
    let stamped: Vec<bool> = client
        .query(
            "SELECT last_send_at IS NOT NULL FROM sender_numbers
              WHERE id = ANY($1) ORDER BY array_position($1, id)",
            &[&numbers.as_slice()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stamped, [true, true, false]);
}

/// The worker's sent-verdict writer: numbers' verdicts committed together,
/// each only under the epoch its message was claimed with, and the failure
/// streak of the campaigns ended.
#[tokio::test]
async fn the_sent_writer_records_every_numbers_verdicts_under_their_epochs() {
    let db = TestDb::create().await;
    let (fx, n1, n2, campaign) = two_numbers(&db).await;
    let client = db.pool.get().await.unwrap();
    client
        .execute("UPDATE campaigns SET consecutive_failures = 3", &[])
        .await
        .unwrap();
    let mut claimed = Vec::new();
    for number in [n1, n2] {
        let epoch = lease(&client, number).await;
        let (id, _) = claimed_message(&db, number, campaign, epoch).await;
        claimed.push((id, epoch));
    }
    let sent = |(message_id, epoch): (i64, i64)| Sent {
        message_id,
        epoch,
        at: Utc::now(),
        campaign_id: Some(campaign),
    };
    let writer = OutcomeWriter::spawn(db.pool.clone(), Outcomes);
    let (first, second, stale) = tokio::join!(
        writer.write(vec![Outcome::Sent(sent(claimed[0]))]),
        writer.write(vec![Outcome::Sent(sent(claimed[1]))]),
        // Claimed under another epoch than this one: not recorded.
        writer.write(vec![Outcome::Sent(Sent {
            epoch: claimed[0].1 + 7,
            ..sent(claimed[0])
        })]),
    );
    first.unwrap();
    second.unwrap();
    stale.unwrap();
    assert_eq!(state_of(&db, claimed[0].0).await, "sent");
    assert_eq!(state_of(&db, claimed[1].0).await, "sent");
    let streak: i32 = client
        .query_one(
            "SELECT consecutive_failures FROM campaigns WHERE id = $1",
            &[&campaign],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(streak, 0);
    // Each announced once.
    let announced: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE topic = 'message.sent'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(announced, 2);
    // A verdict whose epoch does not match leaves a claimed message alone.
    let n3 = fx.number(&db, 3, 100).await;
    let epoch = lease(&client, n3).await;
    let (id, _) = claimed_message(&db, n3, campaign, epoch).await;
    writer
        .write(vec![Outcome::Sent(sent((id, epoch + 1)))])
        .await
        .unwrap();
    assert_eq!(state_of(&db, id).await, "sending");
}

/// Verdicts and receipts of the same messages handed over at once, each in
/// random order: both writes commit, and every message ends read. Written
/// by one writer, two batches never lock the same rows in opposite orders;
/// with a writer per kind (`other.write(receipts)` on a second writer) this
/// test failed on "deadlock detected" in 6 of 9 runs.
#[tokio::test]
async fn verdicts_and_receipts_handed_over_at_once_all_commit() {
    use rand::seq::SliceRandom;

    const MESSAGES: usize = 600;
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    // Many more queued than claimed, so both statements find their rows
    // by index, in the order of their input, as in production.
    let campaign = fx.campaign(&db, &[number], 50_000).await;
    let client = db.pool.get().await.unwrap();
    client.execute("ANALYZE messages", &[]).await.unwrap();
    let epoch = lease(&client, number).await;
    let mut writes = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..MESSAGES {
        let (id, claimed) = claimed_message(&db, number, campaign, epoch).await;
        ids.push(id);
        writes.push(Outcome::Sent(Sent {
            message_id: id,
            epoch,
            at: Utc::now(),
            campaign_id: Some(campaign),
        }));
        for kind in [ReceiptKind::Delivered, ReceiptKind::Read] {
            writes.push(Outcome::Receipt(Receipt {
                number_id: number,
                kind,
                wa_message_id: claimed.wa_message_id.clone(),
                at: Utc::now(),
            }));
        }
    }
    writes.shuffle(&mut rand::rng());
    let (sent, receipts): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .partition(|row| matches!(row, Outcome::Sent(_)));
    // Connections open already, so the two writes overlap in time.
    let (c1, c2) = tokio::join!(db.pool.get(), db.pool.get());
    drop((c1.unwrap(), c2.unwrap()));
    let writer = OutcomeWriter::spawn(db.pool.clone(), Outcomes);
    let (sent, receipts) = tokio::join!(writer.write(sent), writer.write(receipts));
    sent.expect("the verdicts commit");
    receipts.expect("the receipts commit");
    let unread: i64 = client
        .query_one(
            "SELECT count(*) FROM messages
              WHERE id = ANY($1) AND (state <> 'read' OR sent_at IS NULL)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unread, 0);
    // Both handed over before the writer ran, so one batch: each message
    // announced sent, delivered and read, in that order, although the
    // batch's statements go out without waiting for each other.
    let announced: Vec<Vec<String>> = client
        .query(
            "SELECT array_agg(topic ORDER BY id) FROM outbox
              WHERE (payload->'data'->>'message_id')::bigint = ANY($1)
              GROUP BY payload->'data'->>'message_id'",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(announced.len(), MESSAGES);
    for topics in announced {
        assert_eq!(
            topics,
            ["message.sent", "message.delivered", "message.read"]
        );
    }
}

#[tokio::test]
async fn concurrent_schedulers_never_pick_the_same_message() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let n1 = fx.number(&db, 1, 1000).await;
    let n2 = fx.number(&db, 2, 1000).await;
    let campaign = fx.campaign(&db, &[n1, n2], 200).await;
    let mut c1 = db.pool.get().await.unwrap();
    let mut c2 = db.pool.get().await.unwrap();
    let t1 = c1.transaction().await.unwrap();
    let t2 = c2.transaction().await.unwrap();
    // Both transactions open at once: the second skips the rows the first holds.
    let first = messages::schedule_campaign(&t1, &pick(campaign, n1, 120), Some(&[]))
        .await
        .unwrap();
    let second = messages::schedule_campaign(&t2, &pick(campaign, n2, 120), Some(&[]))
        .await
        .unwrap();
    t1.commit().await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(first.len(), 120);
    assert_eq!(second.len(), 80);
    assert!(first.iter().all(|a| !second.contains(a)));
}

/// One statement picks a campaign's messages for a number: those preferring
/// it first (each once), then others' whose preferred number cannot take
/// them, open zones in order; a time-locked number (`None`) only its own.
#[tokio::test]
async fn the_pick_takes_its_own_recipients_first_then_others_it_may() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 1000).await;
    let busy = fx.number(&db, 2, 1000).await;
    let idle = fx.number(&db, 3, 1000).await;
    let campaign = fx.campaign(&db, &[number, busy, idle], 12).await;
    let client = db.pool.get().await.unwrap();
    let ids: Vec<i64> = client
        .query("SELECT id FROM messages ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    // The first three prefer `number`, the next three `idle` (which cannot
    // take recipients today), the three after that `busy` (which can); the
    // last three prefer no one.
    client
        .execute(
            "UPDATE messages SET preferred_number_id = CASE
                 WHEN id < $1 THEN $4::uuid WHEN id < $2 THEN $5::uuid
                 WHEN id < $3 THEN $6::uuid END",
            &[&ids[3], &ids[6], &ids[9], &number, &idle, &busy],
        )
        .await
        .unwrap();
    drop(client);
    let available = [number, busy];
    // Each pick in a transaction rolled back: the next starts afresh.
    let db = &db;
    let picked = |limit, others| async move {
        let mut client = db.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let got = messages::schedule_campaign(&tx, &pick(campaign, number, limit), others)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        got.iter().map(|a| a.id).collect::<Vec<i64>>()
    };
    assert_eq!(picked(2, Some(&available[..])).await, ids[0..2]);
    assert_eq!(picked(5, None).await, ids[0..3]);
    assert_eq!(picked(5, Some(&available[..])).await, ids[0..5]);
    // Its own are taken once even when it is not among `others`.
    let only_busy = [busy];
    assert_eq!(picked(5, Some(&only_busy[..])).await, ids[0..5]);
    // Everything it may take: its own, `idle`'s and the unclaimed, never
    // `busy`'s.
    let mut expected = ids[0..6].to_vec();
    expected.extend(&ids[9..12]);
    assert_eq!(picked(100, Some(&available[..])).await, expected);
}

/// Two numbers planned in one transaction may each take a message to the
/// same person (two campaigns): the sticky senders are one statement, and the
/// number with the later message keeps the recipient, whatever the order
/// they are given in.
#[tokio::test]
async fn a_recipient_two_numbers_take_at_once_sticks_to_the_later_message() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let a = fx.number(&db, 1, 100).await;
    let b = fx.number(&db, 2, 100).await;
    let phones = ["+5511987650001".to_string(), "+5511987650002".to_string()];
    let spec = |number| CampaignSpec {
        phones: Some(&phones),
        ..CampaignSpec::new(std::slice::from_ref(number), 2)
    };
    let first = fx.campaign_with(&db, &spec(&a)).await;
    let second = fx.campaign_with(&db, &spec(&b)).await;
    let client = db.pool.get().await.unwrap();
    let from_a = messages::schedule_campaign(&client, &pick(first, a, 1), Some(&[]))
        .await
        .unwrap()[0]
        .id;
    let from_b = messages::schedule_campaign(&client, &pick(second, b, 1), Some(&[]))
        .await
        .unwrap()[0]
        .id;
    assert!(from_a < from_b);
    let sticky = || async {
        client
            .query(
                "SELECT recipient, number_id FROM recipient_senders ORDER BY recipient",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect::<Vec<(String, Uuid)>>()
    };
    for given in [[(b, from_b), (a, from_a)], [(a, from_a), (b, from_b)]] {
        messages::remember_senders(&client, &given).await.unwrap();
        assert_eq!(sticky().await, [(phones[0].clone(), b)]);
    }
}

/// A campaign that is most of the table, its oldest 20,000 messages sent,
/// three in four of the rest in a zone whose window is closed (and whose key
/// sorts first), statistics taken before any message was scheduled: the shape in
/// which Postgres planned the pick as a scan from the table's front, past
/// every sent message (migration 0010), and the search for lost jobs as a
/// scan of the whole table (0011). With either kind of plan a prepared
/// statement gets (for its parameters, and generic, which the planner's
/// transactions use: `db::planning::for_planning`), each of the planner's
/// statements on `messages` reads a handful of pages, not the campaign; and
/// the pick takes the oldest queued messages of the open zone.
#[tokio::test]
async fn the_planners_statements_read_few_pages_however_the_campaign_is_estimated() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100_000).await;
    let campaign = fx.campaign(&db, &[number], 50_000).await;
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "UPDATE messages SET state = 'sent' WHERE id IN
                 (SELECT id FROM messages WHERE campaign_id = '{campaign}' ORDER BY id LIMIT 20000);
             UPDATE messages SET recipient_zone = 'z:America/Sao_Paulo'
              WHERE campaign_id = '{campaign}' AND state = 'queued' AND id % 4 <> 0"
        ))
        .await
        .unwrap();
    client
        .batch_execute("VACUUM ANALYZE messages")
        .await
        .unwrap();
    let oldest_open: Vec<i64> = client
        .query(
            "SELECT id FROM messages
              WHERE campaign_id = $1 AND state = 'queued' AND recipient_zone = 'z:UTC'
              ORDER BY id LIMIT 3",
            &[&campaign],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let picked = messages::schedule_campaign(&client, &pick(campaign, number, 3), Some(&[]))
        .await
        .unwrap();
    assert_eq!(picked.iter().map(|a| a.id).collect::<Vec<_>>(), oldest_open);
    let stale = messages::stale_scheduled(&client, Duration::from_secs(60), 1000)
        .await
        .unwrap();
    assert!(stale.is_empty());
    // The planner's other statements that read `messages`, prepared too.
    assert_eq!(
        messages::in_flight(&client, &[number]).await.unwrap(),
        [(number, 3)].into()
    );
    let senders: Vec<(Uuid, i64)> = oldest_open.iter().map(|&id| (number, id)).collect();
    messages::remember_senders(&client, &senders).await.unwrap();

    // The statements as prepared on this connection, run each way in a
    // transaction rolled back: the pages the whole statement touched.
    for (statement, arguments) in [
        (
            "%ORDER BY recipient_zone, id%",
            format!("'{campaign}', '{number}', '{{z:UTC}}', '{{0}}', 2, '{{}}', true"),
        ),
        ("%WITH stale AS%", "0, 1000".to_string()),
        (
            "%WHERE sender_number_id = ANY($1) AND state IN ('scheduled', 'sending')%",
            format!("'{{{number}}}'"),
        ),
        (
            "%INSERT INTO recipient_senders%",
            format!(
                "'{{{number}, {number}}}', '{{{}, {}}}'",
                oldest_open[0], oldest_open[1]
            ),
        ),
    ] {
        let name: String = client
            .query_one(
                "SELECT name FROM pg_prepared_statements WHERE statement LIKE $1",
                &[&statement],
            )
            .await
            .unwrap()
            .get(0);
        for mode in ["force_custom_plan", "force_generic_plan"] {
            client
                .batch_execute(&format!("BEGIN; SET LOCAL plan_cache_mode = {mode}"))
                .await
                .unwrap();
            let explained: serde_json::Value = client
                .query_one(
                    &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({arguments})"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            client.batch_execute("ROLLBACK").await.unwrap();
            let plan = &explained[0]["Plan"];
            let pages = ["Shared Hit Blocks", "Shared Read Blocks"]
                .iter()
                .map(|key| plan[key].as_i64().unwrap())
                .sum::<i64>();
            assert!(pages < 250, "{statement}, {mode}: {pages} pages\n{plan:#}");
        }
    }
}

/// A campaign of 3,000 messages on `number`, of which the first 2,000 were
/// scheduled, then sent but for the last `in_flight`, each leaving index
/// entries behind for the states it passed through. Vacuum is off for
/// `messages`: it would remove those entries at a moment of its choosing.
async fn sent_history(db: &TestDb, fx: &Fixture, number: Uuid, in_flight: usize) -> Uuid {
    let campaign = fx.campaign(db, &[number], 3_000).await;
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute("ALTER TABLE messages SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    let scheduled = messages::schedule_campaign(&client, &pick(campaign, number, 2_000), Some(&[]))
        .await
        .unwrap();
    assert_eq!(scheduled.len(), 2_000);
    client.batch_execute("ANALYZE messages").await.unwrap();
    let kept: Vec<i64> = scheduled
        .iter()
        .rev()
        .take(in_flight)
        .map(|a| a.id)
        .collect();
    client
        .execute(
            "UPDATE messages SET state = 'sent', sending_at = now(), sent_at = now()
              WHERE state = 'scheduled' AND id <> ALL($1)",
            &[&kept],
        )
        .await
        .unwrap();
    campaign
}

/// Heap pages a bitmap scan of `index` visits to count the messages that
/// meet `condition`: one per page holding a row the index still has an
/// entry for, meeting it or not.
async fn rows_visited_by_bitmap(
    client: &impl herald_shared::db::GenericClient,
    condition: &str,
    index: &str,
) -> i64 {
    client
        .batch_execute(
            "BEGIN; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off;
             SET LOCAL enable_seqscan = off",
        )
        .await
        .unwrap();
    let explained: serde_json::Value = client
        .query_one(
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT count(*) FROM messages
                  WHERE {condition}"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client.batch_execute("ROLLBACK").await.unwrap();
    // Beside the row-level security's init plans.
    let heap = explained[0]["Plan"]["Plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["Node Type"] == "Bitmap Heap Scan")
        .unwrap_or_else(|| panic!("no bitmap scan: {explained:#}"));
    assert_eq!(heap["Plans"][0]["Index Name"], index, "{explained:#}");
    heap["Exact Heap Blocks"].as_i64().unwrap() + heap["Lossy Heap Blocks"].as_i64().unwrap()
}

/// Runs `measure` (a read under test, returning the table pages it, or a
/// probe after it, visited) until it reports at most `pages`, for up to
/// 5 s; returns the last figure. An index scan marks an entry dead only once
/// Postgres knows no transaction may still see its row, which other tests'
/// transactions on the same server can put off for a moment; a scan that
/// marks nothing never gets there.
async fn pages_once_marked(pages: i64, mut measure: impl AsyncFnMut() -> i64) -> i64 {
    let mut visited = i64::MAX;
    for _ in 0..50 {
        visited = measure().await;
        if visited <= pages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    visited
}

/// A pass counts each number's jobs in flight with an index scan, which
/// marks the index entries of messages sent since as dead, so that no later
/// count visits their rows again. Left to choose, Postgres counts them with
/// a scan that marks nothing (here, with bitmap scans off alone, a
/// sequential scan of the small table; at a million messages, a bitmap scan,
/// the index holding many more entries than jobs in flight): every pass
/// would visit every row the numbers sent since the last vacuum
/// (docs/BENCHMARKS.md, "Jobs in flight counted without the sent ones").
#[tokio::test]
async fn counting_jobs_in_flight_marks_the_sent_ones_dead_in_the_index() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100_000).await;
    fixtures::live(&db, number).await;
    sent_history(&db, &fx, number, 2).await;
    let client = db.pool.get().await.unwrap();
    let in_flight = format!("sender_number_id = '{number}' AND state IN ('scheduled', 'sending')");
    let index = "messages_inflight_idx";
    let before = rows_visited_by_bitmap(&client, &in_flight, index).await;
    assert!(
        before > 20,
        "the sent rows' entries are in the index: {before} pages"
    );

    let pool = db.pool.clone();
    let after = pages_once_marked(2, async || {
        let mut pass = pool.get().await.unwrap();
        let tx = pass.transaction().await.unwrap();
        let live = planning::live_numbers(&tx, Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].in_flight, 2);
        rows_visited_by_bitmap(&client, &in_flight, index).await
    })
    .await;
    assert!(
        after <= 2,
        "{after} pages visited for 2 jobs in flight (before the passes: {before})"
    );
}

/// Table pages of `messages` one completion check reads, with the campaigns
/// it completed. The pages are the connection's own count, read before and
/// after the check inside its transaction: the count goes to the server's
/// statistics (and starts again) only between transactions.
async fn completion_check(pool: &herald_shared::db::Pool) -> (Vec<(Uuid, Uuid)>, i64) {
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let read = "SELECT pg_stat_get_xact_blocks_fetched('messages'::regclass)";
    let before: i64 = tx.query_one(read, &[]).await.unwrap().get(0);
    let done = campaigns::complete_finished(&tx).await.unwrap();
    let after: i64 = tx.query_one(read, &[]).await.unwrap().get(0);
    tx.commit().await.unwrap();
    (done, after - before)
}

/// Repeats the completion check until it reads at most 2 pages of
/// `messages` ([`pages_once_marked`]), and fails if it never does; `moment`
/// says how far the campaign is.
async fn completion_check_reads_at_most_2_pages(pool: &herald_shared::db::Pool, moment: &str) {
    let pages = pages_once_marked(2, async || {
        let (done, pages) = completion_check(pool).await;
        assert!(done.is_empty(), "messages are still pending");
        pages
    })
    .await;
    assert!(pages <= 2, "{pages} pages a check with {moment}");
}

/// The pass's completion check reads the lowest state among a campaign's
/// messages from `messages_campaign_state_idx`, by an index scan: it stops
/// at the first live entry and marks the entries the sent messages left on
/// the way as dead, so that later checks skip them. Asked whether any
/// message is pending, with the plan left to Postgres, every check here
/// read the same 41 pages; in the pipeline benchmark Postgres read the
/// campaign's messages in id order even with index scans only, more at
/// every pass (docs/BENCHMARKS.md, "Campaign completion checked without the
/// sent messages"). Two moments of the campaign, each estimated as it is: a
/// third still queued, then all but the last ten sent.
#[tokio::test]
async fn checking_for_finished_campaigns_marks_the_sent_messages_dead_in_the_index() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 100_000).await;
    let campaign = sent_history(&db, &fx, number, 0).await;
    let client = db.pool.get().await.unwrap();
    // The check reads "past `sending`" as "not pending".
    let up_to_sending: Vec<String> = client
        .query_one(
            "SELECT array_agg(s::text ORDER BY s) FROM unnest(enum_range(NULL::message_state)) s
              WHERE s <= 'sending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(up_to_sending, ["queued", "scheduled", "sending"]);
    client.batch_execute("ANALYZE messages").await.unwrap();

    let first = completion_check(&db.pool).await.1;
    assert!(
        first > 20,
        "the first check meets the sent messages' entries: {first} pages"
    );
    completion_check_reads_at_most_2_pages(
        &db.pool,
        &format!("2,000 of 3,000 messages sent (the first: {first})"),
    )
    .await;

    client
        .batch_execute(
            "UPDATE messages SET state = 'sent'
              WHERE state = 'queued' AND id < (SELECT max(id) - 9 FROM messages);
             ANALYZE messages",
        )
        .await
        .unwrap();
    completion_check_reads_at_most_2_pages(&db.pool, "all but 10 of 3,000 messages sent").await;

    client
        .execute(
            "UPDATE messages SET state = 'sent' WHERE state = 'queued'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        completion_check(&db.pool).await.0,
        [(campaign, fx.tenant_id)],
        "nothing pending: completed"
    );
}

/// Every number in UTC+14, where the date differs from UTC's for half the
/// day.
async fn far_east(client: &impl herald_shared::db::GenericClient) {
    client
        .execute(
            "UPDATE sender_numbers SET time_zone = 'Pacific/Kiritimati'",
            &[],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_daily_budget_is_counted_per_day_of_the_numbers_zone() {
    let db = TestDb::create().await;
    let fx = Fixture::new(&db).await;
    let number = fx.number(&db, 1, 5).await;
    let client = db.pool.get().await.unwrap();
    far_east(&client).await;
    let budget = sender_usage::lock_today(&client, &[number], Utc::now())
        .await
        .unwrap()
        .remove(&number)
        .unwrap();
    let local_today: chrono::NaiveDate = client
        .query_one(
            "SELECT (now() AT TIME ZONE 'Pacific/Kiritimati')::date",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(budget.day, local_today);
    assert_eq!((budget.daily_cap, budget.used), (5, 0));
    sender_usage::add(&client, &[(number, budget.day, 3)])
        .await
        .unwrap();
    sender_usage::add(&client, &[(number, budget.day, 1)])
        .await
        .unwrap();
    let budget = sender_usage::lock_today(&client, &[number], Utc::now())
        .await
        .unwrap()
        .remove(&number)
        .unwrap();
    assert_eq!(budget.used, 4);
}

/// The day's usage of a number, its tenant and a variant, as the planner
/// counted it.
async fn usage(client: &impl herald_shared::db::GenericClient, number: Uuid) -> (i32, i32, i32) {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(sum(assigned), 0)::int FROM sender_usage WHERE number_id = $1),
                    (SELECT coalesce(sum(assigned), 0)::int FROM tenant_usage),
                    (SELECT coalesce(sum(assigned), 0)::int FROM variant_usage WHERE number_id = $1)",
            &[&number],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Counts `n` assignments of the campaign's variant 0 on the number, as
/// the planner counts them: on the number's and the tenant's day.
async fn count_assigned(
    client: &impl herald_shared::db::GenericClient,
    fx: &Fixture,
    number: Uuid,
    campaign: Uuid,
    n: i32,
) {
    let day = sender_usage::lock_today(client, &[number], Utc::now())
        .await
        .unwrap()[&number]
        .day;
    let tenant_day = sender_usage::lock_tenants_today(client, &[fx.tenant_id], Utc::now())
        .await
        .unwrap()[&fx.tenant_id]
        .day;
    sender_usage::add(client, &[(number, day, n)])
        .await
        .unwrap();
    sender_usage::add_tenant(client, fx.tenant_id, tenant_day, n)
        .await
        .unwrap();
    sender_usage::add_variants(client, number, day, campaign, &[(0, n)])
        .await
        .unwrap();
}

/// A number (cap 5) east of every tenant's day, a campaign of three on it,
/// two of them scheduled: (fixture, number, campaign, first, second).
async fn two_scheduled_far_east(db: &TestDb) -> (Fixture, Uuid, Uuid, i64, i64) {
    let fx = Fixture::new(db).await;
    let number = fx.number(db, 1, 5).await;
    let campaign = fx.campaign(db, &[number], 3).await;
    far_east(&db.pool.get().await.unwrap()).await;
    let first = scheduled_message(db, number, campaign).await;
    let second = scheduled_message(db, number, campaign).await;
    (fx, number, campaign, first, second)
}

/// A message handed back to the queue (its number cannot send it now, its
/// job was not published, or it was claimed and did not leave) gives back
/// what its assignment counted against the number's, the tenant's and the
/// variant's caps that day, once.
#[tokio::test]
async fn a_message_handed_back_gives_its_budget_back() {
    let db = TestDb::create().await;
    let (fx, number, campaign, id, other) = two_scheduled_far_east(&db).await;
    let client = db.pool.get().await.unwrap();
    count_assigned(&client, &fx, number, campaign, 2).await;
    assert_eq!(usage(&client, number).await, (2, 2, 2));

    assert_eq!(messages::unschedule(&client, &[id]).await.unwrap(), 1);
    assert_eq!(state_of(&db, id).await, "queued");
    assert_eq!(state_of(&db, other).await, "scheduled");
    assert_eq!(usage(&client, number).await, (1, 1, 1), "given back once");
    assert_eq!(
        messages::unschedule(&client, &[id]).await.unwrap(),
        0,
        "already queued"
    );
    assert_eq!(usage(&client, number).await, (1, 1, 1), "and not again");

    // Claimed, then "not sent": back to the queue, its budget with it.
    let epoch = lease(&client, number).await;
    messages::claim(&client, other, number, "w1", epoch)
        .await
        .unwrap()
        .unwrap();
    let state = messages::requeue(&client, other, epoch, 3, "not sent", Requeue::Now)
        .await
        .unwrap();
    assert_eq!(state.unwrap().as_str(), "queued");
    assert_eq!(
        usage(&client, number).await,
        (0, 0, 0),
        "a requeue gives back"
    );
}

/// A pause puts the campaign's scheduled messages back in the queue and a
/// cancel cancels them: either way they never left, and their number's,
/// tenant's and variant's day get them back, once.
#[tokio::test]
async fn a_paused_or_cancelled_campaign_gives_its_budget_back() {
    let db = TestDb::create().await;
    let (fx, number, campaign, first, second) = two_scheduled_far_east(&db).await;
    let client = db.pool.get().await.unwrap();
    // Three counted: one more left the number earlier today.
    count_assigned(&client, &fx, number, campaign, 3).await;

    campaigns::pause(&client, fx.tenant_id, campaign, Some("by ops"))
        .await
        .unwrap()
        .expect("paused");
    assert_eq!(state_of(&db, first).await, "queued");
    assert_eq!(state_of(&db, second).await, "queued");
    assert_eq!(
        usage(&client, number).await,
        (1, 1, 1),
        "a pause gives back"
    );

    campaigns::resume(&client, fx.tenant_id, campaign, Utc::now())
        .await
        .unwrap()
        .expect("resumed");
    let again = scheduled_message(&db, number, campaign).await;
    count_assigned(&client, &fx, number, campaign, 1).await;
    assert_eq!(usage(&client, number).await, (2, 2, 2));
    campaigns::cancel(&client, fx.tenant_id, campaign, "by ops")
        .await
        .unwrap()
        .expect("cancelled");
    for id in [first, second, again] {
        assert_eq!(state_of(&db, id).await, "cancelled");
    }
    assert_eq!(
        usage(&client, number).await,
        (1, 1, 1),
        "a cancel gives back the scheduled one"
    );
}

/// The state and failure reason of a message.
async fn state_and_reason(db: &TestDb, id: i64) -> (String, Option<String>) {
    let row = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT state::text, failure_reason FROM messages WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A cancel leaves a message being sent alone; if that message then does
/// not leave (refused for a passing reason, or its claim released), it ends
/// `cancelled` with the campaign's reason, its budget given back, instead of
/// waiting in a queue no plan reads again.
#[tokio::test]
async fn a_message_back_from_a_cancelled_campaign_is_cancelled() {
    let db = TestDb::create().await;
    let (fx, number, campaign, first, second) = two_scheduled_far_east(&db).await;
    let client = db.pool.get().await.unwrap();
    count_assigned(&client, &fx, number, campaign, 2).await;
    let epoch = lease(&client, number).await;
    for id in [first, second] {
        messages::claim(&client, id, number, "w1", epoch)
            .await
            .unwrap()
            .unwrap();
    }
    campaigns::cancel(&client, fx.tenant_id, campaign, "by ops")
        .await
        .unwrap()
        .expect("cancelled");
    assert_eq!(state_of(&db, first).await, "sending");

    let state = messages::requeue(&client, first, epoch, 3, "not sent", Requeue::Now)
        .await
        .unwrap();
    assert_eq!(state.unwrap().as_str(), "cancelled");
    assert!(
        messages::release_claim(&client, second, epoch)
            .await
            .unwrap()
    );
    for id in [first, second] {
        assert_eq!(
            state_and_reason(&db, id).await,
            ("cancelled".into(), Some("by ops".into()))
        );
    }
    assert_eq!(usage(&client, number).await, (0, 0, 0), "both give back");
}

/// A campaign of three, one message claimed by "w1":
/// (fixture, campaign, message, epoch).
async fn one_claimed(db: &TestDb) -> (Fixture, Uuid, i64, i64) {
    let (fx, number, campaign, id, _) = two_scheduled_far_east(db).await;
    let client = db.pool.get().await.unwrap();
    let epoch = lease(&client, number).await;
    messages::claim(&client, id, number, "w1", epoch)
        .await
        .unwrap()
        .unwrap();
    (fx, campaign, id, epoch)
}

const A_WHILE: Duration = Duration::from_millis(300);

/// A cancel that comes while a hand-back is not yet committed waits for it,
/// then cancels the message it put back.
#[tokio::test]
async fn a_cancel_waits_for_a_hand_back_in_progress() {
    let db = TestDb::create().await;
    let (fx, campaign, id, epoch) = one_claimed(&db).await;
    let mut worker = db.pool.get().await.unwrap();
    let tx = worker.transaction().await.unwrap();
    assert!(messages::release_claim(&tx, id, epoch).await.unwrap());
    let cancel = tokio::spawn({
        let pool = db.pool.clone();
        let tenant = fx.tenant_id;
        async move {
            let client = pool.get().await.unwrap();
            campaigns::cancel(&client, tenant, campaign, "by ops")
                .await
                .unwrap()
                .expect("cancelled");
        }
    });
    tokio::time::sleep(A_WHILE).await;
    assert!(!cancel.is_finished(), "the cancel waits for the hand-back");
    tx.commit().await.unwrap();
    cancel.await.unwrap();
    assert_eq!(state_of(&db, id).await, "cancelled");
}

/// A hand-back that comes while a cancel is not yet committed waits for it,
/// then sees the campaign cancelled.
#[tokio::test]
async fn a_hand_back_waits_for_a_cancel_in_progress() {
    let db = TestDb::create().await;
    let (fx, campaign, id, epoch) = one_claimed(&db).await;
    let mut ops = db.pool.get().await.unwrap();
    let tx = ops.transaction().await.unwrap();
    campaigns::cancel(&tx, fx.tenant_id, campaign, "by ops")
        .await
        .unwrap()
        .expect("cancelled");
    let requeue = tokio::spawn({
        let pool = db.pool.clone();
        async move {
            let client = pool.get().await.unwrap();
            messages::requeue(&client, id, epoch, 3, "not sent", Requeue::Now)
                .await
                .unwrap()
                .unwrap()
        }
    });
    tokio::time::sleep(A_WHILE).await;
    assert!(!requeue.is_finished(), "the hand-back waits for the cancel");
    tx.commit().await.unwrap();
    assert_eq!(requeue.await.unwrap().as_str(), "cancelled");
    assert_eq!(state_of(&db, id).await, "cancelled");
}
