//! Rows for statement-level tests, written through Herald's own statements.

use std::sync::Arc;

use chrono::{DateTime, NaiveTime, Utc};
use herald_scheduler::planner::Planner;
use herald_shared::{
    clock::Clock,
    db::{self, campaigns::NewCampaign, messages::NewMessage, sender_numbers::NewSenderNumber},
    domain::{NumberKind, NumberState, PhoneNumber, new_wa_message_id},
    policy::zones::{END_OF_DAY, SendWindow, ZoneKey},
    queue::{Broker, Publisher, Topology},
};
use uuid::Uuid;

use crate::{TestDb, mobile};

pub struct Fixture {
    pub tenant_id: Uuid,
    pub template_id: Uuid,
}

impl Fixture {
    pub async fn new(db: &TestDb) -> Self {
        let client = db.pool.get().await.unwrap();
        let tenant_id = Uuid::now_v7();
        db::tenants::insert(&client, tenant_id, "fixture")
            .await
            .unwrap();
        let template = db::templates::insert(&client, tenant_id, "t", "hello", &[], None)
            .await
            .unwrap();
        Self {
            tenant_id,
            template_id: template.id,
        }
    }

    /// The `index`-th sending number of the fixture.
    pub async fn number(&self, db: &TestDb, index: u32, daily_cap: i32) -> Uuid {
        let client = db.pool.get().await.unwrap();
        let phone = PhoneNumber::parse(&mobile(800, index), None).unwrap();
        let id = db::sender_numbers::insert(
            &client,
            &NewSenderNumber {
                tenant_id: self.tenant_id,
                phone: &phone,
                kind: NumberKind::Sim,
                state: NumberState::Active,
                label: None,
                daily_cap,
                min_gap_ms: 0,
                time_zone: "UTC",
                warmup_plan: "none",
                jitter: None,
                tags: &[],
            },
        )
        .await
        .unwrap()
        .id;
        // Warmed up long ago, so tests may set their clock to any recent date.
        client
            .execute(
                "UPDATE sender_numbers SET warmup_started_on = '2000-01-01' WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        id
    }

    /// A running campaign over `numbers` with `recipients` queued messages,
    /// all in UTC, open all day.
    pub async fn campaign(&self, db: &TestDb, numbers: &[Uuid], recipients: u32) -> Uuid {
        self.campaign_with(db, &CampaignSpec::new(numbers, recipients))
            .await
    }

    /// A campaign as `spec` describes.
    pub async fn campaign_with(&self, db: &TestDb, spec: &CampaignSpec<'_>) -> Uuid {
        let (numbers, recipients) = (spec.numbers, spec.recipients);
        let mut client = db.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let campaign = db::campaigns::insert(
            &tx,
            &NewCampaign {
                tenant_id: self.tenant_id,
                name: "fixture",
                template_id: self.template_id,
                recipients: recipients as i32,
                rejected: 0,
                pool: None,
                start_at: spec.start_at,
                end_by: spec.end_by,
                window: spec.window,
                zones: &[spec.zone.to_string()],
                variants: spec.variants,
                max_per_variant: spec.max_per_variant,
                max_consecutive_failures: 1000,
                list_id: None,
                filter: None,
            },
        )
        .await
        .unwrap();
        db::campaigns::add_senders(&tx, campaign.id, numbers)
            .await
            .unwrap();
        let series = (campaign.id.as_u128() % 900) as u32 + 50;
        let phone = |i: u32| match spec.phones {
            Some(phones) => phones[i as usize].clone(),
            None => mobile(series, i),
        };
        let messages: Vec<NewMessage> = (0..recipients)
            .map(|i| NewMessage {
                recipient: PhoneNumber::parse(&phone(i), None).unwrap(),
                body: format!("message {i}"),
                wa_message_id: new_wa_message_id(),
                zone: ZoneKey::stored(spec.zone),
                variant: (i % spec.variants as u32) as i16,
                media: None,
                suppressed: false,
            })
            .collect();
        let templates = vec![self.template_id; spec.variants as usize];
        db::campaigns::add_variants(&tx, campaign.id, &templates)
            .await
            .unwrap();
        db::messages::insert_for_campaign(&tx, self.tenant_id, campaign.id, numbers, &messages)
            .await
            .unwrap();
        if spec.start {
            db::campaigns::start(&tx, self.tenant_id, campaign.id, spec.now)
                .await
                .unwrap()
                .expect("draft campaign starts");
        }
        tx.commit().await.unwrap();
        campaign.id
    }
}

/// State of one message.
pub async fn state_of(db: &TestDb, message_id: i64) -> String {
    let client = db.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT state::text FROM messages WHERE id = $1",
            &[&message_id],
        )
        .await
        .unwrap()
        .get(0)
}

/// 00:00–24:00.
pub fn all_day() -> SendWindow {
    SendWindow::new(NaiveTime::MIN, END_OF_DAY).expect("valid window")
}

/// What [`Fixture::campaign_with`] creates.
pub struct CampaignSpec<'a> {
    pub numbers: &'a [Uuid],
    pub recipients: u32,
    /// The recipients' phones (else a series of the campaign's own).
    pub phones: Option<&'a [String]>,
    /// Zone key of every recipient.
    pub zone: &'a str,
    pub window: SendWindow,
    pub variants: i16,
    pub max_per_variant: i32,
    pub start_at: Option<DateTime<Utc>>,
    pub end_by: Option<DateTime<Utc>>,
    /// Start it (as of `now`).
    pub start: bool,
    pub now: DateTime<Utc>,
}

impl<'a> CampaignSpec<'a> {
    pub fn new(numbers: &'a [Uuid], recipients: u32) -> Self {
        Self {
            numbers,
            recipients,
            phones: None,
            zone: "z:UTC",
            window: all_day(),
            variants: 1,
            max_per_variant: 0,
            start_at: None,
            end_by: None,
            start: true,
            now: Utc::now(),
        }
    }
}

/// Gives `number` a live lease with a connected session (as a worker would).
pub async fn live(db: &TestDb, number: Uuid) {
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO number_leases (number_id, owner, epoch, acquired_at, expires_at, connected)
             VALUES ($1, 'test', 1, now(), now() + interval '1 hour', true)
             ON CONFLICT (number_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, connected = true",
            &[&number],
        )
        .await
        .unwrap();
}

/// A planner on `db`, its own queue prefix, and `clock`.
pub async fn planner(
    db: &TestDb,
    prefix: &str,
    overrides: &[(&str, &str)],
    clock: Arc<dyn Clock>,
) -> Planner {
    let config = crate::inprocess::config(db, prefix, overrides);
    let broker = Broker::new(&config.rabbitmq, "test planner");
    let topology = Topology::new(&config.rabbitmq);
    let channel = broker.channel().await.unwrap();
    topology.declare_common(&channel).await.unwrap();
    let publisher = Arc::new(Publisher::new(broker, &config.rabbitmq));
    // The pool the scheduler binary would open: its size from the
    // configuration, as `plan_concurrency` assumes.
    let database = herald_shared::config::DatabaseConfig {
        pool_size: config.database.pool_size,
        ..db.config()
    };
    let pool = db::connect(&database, "test planner").unwrap();
    Planner::new(pool, publisher, topology, &config, clock)
}

/// Messages per state (states with none are absent).
pub async fn counts(db: &TestDb, campaign: Uuid) -> std::collections::BTreeMap<String, i64> {
    let client = db.pool.get().await.unwrap();
    client
        .query(
            "SELECT state::text, count(*) FROM messages WHERE campaign_id = $1 GROUP BY 1",
            &[&campaign],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// What a worker would do with every scheduled message: send it.
pub async fn send_scheduled(db: &TestDb) -> u64 {
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE messages SET state = 'sent', sending_at = now(), sent_at = now()
              WHERE state = 'scheduled'",
            &[],
        )
        .await
        .unwrap()
}

/// A draft campaign of `n` recipients (`mobile(series, 1..=n)`) on a new
/// number through the API; returns its id and its message ids.
pub async fn draft_campaign(api: &crate::ApiClient, series: u32, n: u32) -> (String, Vec<i64>) {
    let number = api.create_number(&crate::mobile(series, 0)).await;
    let template = api.create_template("t", "Hello {{name}}").await;
    let recipients: Vec<serde_json::Value> = (1..=n)
        .map(|i| serde_json::json!({"phone": crate::mobile(series, i), "variables": {"name": format!("R{i}")}}))
        .collect();
    let created = api
        .create_campaign(
            &serde_json::json!({"name": "c", "template_id": template, "numbers": [number],
                                             "recipients": recipients}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let messages = api
        .get(&format!("/v1/campaigns/{id}/messages?limit=1000"))
        .await
        .expect(200);
    let ids = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    (id, ids)
}
