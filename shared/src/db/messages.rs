//! `messages`: one row per recipient per campaign, and the only authority on
//! whether a message may be sent. Every transition is a conditional UPDATE on
//! the current state, so a duplicated or late job finds nothing to do.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, GenericClient};
use crate::{
    domain::{MessageState, PhoneNumber},
    policy::{breaker::Sample, zones::ZoneKey},
};

/// A rendered message ready to be inserted.
pub struct NewMessage {
    pub recipient: PhoneNumber,
    pub body: String,
    pub wa_message_id: String,
    /// Whose clock the send window follows.
    pub zone: ZoneKey,
    /// Which of the campaign's variants the body was rendered from.
    pub variant: i16,
    /// An image or document sent with the text.
    pub media: Option<serde_json::Value>,
    /// The recipient is on the suppression list: the message is recorded
    /// `suppressed`, never sent.
    pub suppressed: bool,
}

/// Rows per INSERT statement when creating a campaign's messages.
const INSERT_CHUNK: usize = 5000;

/// Inserts a campaign's messages (state `queued`). A recipient whose last
/// sender (for this tenant) is among `senders` keeps it as preferred sender.
/// Returns the count.
pub async fn insert_for_campaign(
    client: &impl GenericClient,
    tenant_id: Uuid,
    campaign_id: Uuid,
    senders: &[Uuid],
    messages: &[NewMessage],
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO messages (tenant_id, campaign_id, recipient, body, wa_message_id,
                                   recipient_zone, variant, preferred_number_id, media, state,
                                   suppressed_at)
             SELECT $1, $2, t.r, t.b, t.w, t.z, t.v, rs.number_id, t.m,
                    CASE WHEN t.s THEN 'suppressed'::message_state ELSE 'queued'::message_state END,
                    CASE WHEN t.s THEN now() END
               FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int2[],
                           $9::jsonb[], $10::bool[])
                    AS t (r, b, w, z, v, m, s)
               LEFT JOIN recipient_senders rs
                      ON rs.tenant_id = $1 AND rs.recipient = t.r AND rs.number_id = ANY($8)",
        )
        .await?;
    let mut inserted = 0;
    for chunk in messages.chunks(INSERT_CHUNK) {
        let recipients: Vec<&str> = chunk.iter().map(|m| m.recipient.as_str()).collect();
        let bodies: Vec<&str> = chunk.iter().map(|m| m.body.as_str()).collect();
        let ids: Vec<&str> = chunk.iter().map(|m| m.wa_message_id.as_str()).collect();
        let zones: Vec<&str> = chunk.iter().map(|m| m.zone.as_str()).collect();
        let variants: Vec<i16> = chunk.iter().map(|m| m.variant).collect();
        let media: Vec<Option<&serde_json::Value>> =
            chunk.iter().map(|m| m.media.as_ref()).collect();
        let suppressed: Vec<bool> = chunk.iter().map(|m| m.suppressed).collect();
        inserted += client
            .execute(
                &stmt,
                &[
                    &tenant_id,
                    &campaign_id,
                    &recipients,
                    &bodies,
                    &ids,
                    &zones,
                    &variants,
                    &senders,
                    &media,
                    &suppressed,
                ],
            )
            .await?;
    }
    Ok(inserted)
}

/// Jobs not yet finished by their worker (`scheduled` or `sending`), the
/// look-ahead already spent, of each of these numbers that has any.
pub async fn in_flight(
    client: &impl GenericClient,
    number_ids: &[Uuid],
) -> Result<HashMap<Uuid, i64>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT sender_number_id, count(*) FROM messages
              WHERE sender_number_id = ANY($1) AND state IN ('scheduled', 'sending')
              GROUP BY sender_number_id",
        )
        .await?;
    let rows = client.query(&stmt, &[&number_ids]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// A message just given to a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub id: i64,
    pub variant: i16,
}

/// Which queued messages of a campaign a number may take now.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    pub campaign_id: Uuid,
    pub number_id: Uuid,
    /// Recipient zone keys whose send window is open now.
    pub open_zones: &'a [String],
    /// Variants still under their per-number daily limit.
    pub variants: &'a [i16],
    pub limit: i64,
}

/// The picked rows, updated through the primary key: joined to `picked`
/// instead, a generic plan (which cannot know `LIMIT`'s value) estimates a
/// tenth of the campaign picked and hashes the whole table against it.
const ASSIGN: &str = "UPDATE messages m
                         SET state = 'scheduled', sender_number_id = $2, scheduled_at = now()
                       WHERE m.id = ANY(ARRAY(SELECT id FROM picked))
                      RETURNING m.id, m.variant";

fn assigned(rows: Vec<tokio_postgres::Row>) -> Vec<Assigned> {
    let mut out: Vec<Assigned> = rows
        .iter()
        .map(|row| Assigned {
            id: row.get(0),
            variant: row.get(1),
        })
        .collect();
    out.sort_unstable_by_key(|a| a.id);
    out
}

/// Assigns a campaign's queued messages to this number, in one statement:
/// first recipients who prefer it (their sticky sender), oldest first; then,
/// while `limit` is not reached and `others` is given, anyone else's whose
/// preferred number cannot take them now (none, or one not in `others`: the
/// numbers that could take a recipient today), open zones in order, oldest
/// first. A time-locked number passes `None`: it only writes to people it
/// already wrote to. Rows a concurrent scheduler holds are skipped.
///
/// The second pick leaves out the rows preferring this number: the first
/// took every one it could (it stops short of `limit` only when none is
/// left), and it holds them, so a second look would find them again. The
/// second pick's order is one only `messages_ready_idx` delivers, so it reads
/// that index however the planner estimates the campaign's rows (migration
/// 0010); its `LIMIT` is what the first left, and nothing when that is 0.
pub async fn schedule_campaign(
    client: &impl GenericClient,
    pick: &Pick<'_>,
    others: Option<&[Uuid]>,
) -> Result<Vec<Assigned>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "WITH preferred AS (
                 SELECT id FROM messages
                  WHERE preferred_number_id = $2 AND campaign_id = $1
                    AND state = 'queued' AND not_before IS NULL
                    AND recipient_zone = ANY($3) AND variant = ANY($4)
                  ORDER BY id
                  LIMIT $5
                  FOR UPDATE SKIP LOCKED
             ), open AS (
                 SELECT id FROM messages
                  WHERE $7 AND campaign_id = $1 AND state = 'queued' AND not_before IS NULL
                    AND recipient_zone = ANY($3) AND variant = ANY($4)
                    AND (preferred_number_id IS NULL
                         OR NOT (preferred_number_id = $2 OR preferred_number_id = ANY($6)))
                  ORDER BY recipient_zone, id
                  LIMIT $5 - (SELECT count(*) FROM preferred)
                  FOR UPDATE SKIP LOCKED
             ), picked AS (
                 SELECT id FROM preferred UNION ALL SELECT id FROM open
             )
             {ASSIGN}"
        ))
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &pick.campaign_id,
                &pick.number_id,
                &pick.open_zones,
                &pick.variants,
                &pick.limit,
                &others.unwrap_or_default(),
                &others.is_some(),
            ],
        )
        .await?;
    Ok(assigned(rows))
}

/// Assigns direct (non-campaign) messages addressed from this number. They go
/// before campaign traffic and ignore send windows: someone asked for them.
pub async fn schedule_direct(
    client: &impl GenericClient,
    number_id: Uuid,
    limit: i64,
) -> Result<Vec<Assigned>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "WITH picked AS (
                 SELECT id FROM messages
                  WHERE preferred_number_id = $2 AND campaign_id IS NULL
                    AND state = 'queued' AND not_before IS NULL
                  ORDER BY id
                  LIMIT $1
                  FOR UPDATE SKIP LOCKED
             )
             {ASSIGN}"
        ))
        .await?;
    Ok(assigned(client.query(&stmt, &[&limit, &number_id]).await?))
}

/// Numbers with direct messages waiting: one index probe per such number
/// (a skip scan of `messages_direct_idx`), however many messages wait.
pub async fn numbers_with_direct(client: &impl GenericClient) -> Result<Vec<Uuid>, DbError> {
    let stmt = client
        .prepare_cached(
            "WITH RECURSIVE waiting (number_id) AS (
                 (SELECT preferred_number_id FROM messages
                   WHERE campaign_id IS NULL AND state = 'queued' AND not_before IS NULL
                     AND preferred_number_id IS NOT NULL
                   ORDER BY preferred_number_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT m.preferred_number_id FROM messages m
                          WHERE m.campaign_id IS NULL AND m.state = 'queued'
                            AND m.not_before IS NULL AND m.preferred_number_id > w.number_id
                          ORDER BY m.preferred_number_id LIMIT 1)
                   FROM waiting w WHERE w.number_id IS NOT NULL
             )
             SELECT number_id FROM waiting WHERE number_id IS NOT NULL",
        )
        .await?;
    let rows = client.query(&stmt, &[]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Remembers each number as the sender of its messages' recipients:
/// `(number, message)` pairs. A recipient given to two numbers at once keeps
/// the one with the later message.
pub async fn remember_senders(
    client: &impl GenericClient,
    assigned: &[(Uuid, i64)],
) -> Result<(), DbError> {
    if assigned.is_empty() {
        return Ok(());
    }
    let (numbers, messages): (Vec<Uuid>, Vec<i64>) = assigned.iter().copied().unzip();
    let stmt = client
        .prepare_cached(
            "INSERT INTO recipient_senders (tenant_id, recipient, number_id, last_assigned_at)
             SELECT DISTINCT ON (m.tenant_id, m.recipient) m.tenant_id, m.recipient, a.number_id, now()
               FROM unnest($1::uuid[], $2::int8[]) AS a (number_id, message_id)
               JOIN messages m ON m.id = a.message_id
              -- One order for every planner: two planning the same recipient
              -- at once wait for each other, never deadlock.
              ORDER BY m.tenant_id, m.recipient, a.message_id DESC
             ON CONFLICT (tenant_id, recipient) DO UPDATE
                SET number_id = EXCLUDED.number_id, last_assigned_at = EXCLUDED.last_assigned_at",
        )
        .await?;
    client.execute(&stmt, &[&numbers, &messages]).await?;
    Ok(())
}

/// What a message's assignment counted against the daily caps, given back
/// when it goes back to the queue without having left: after a CTE `back`
/// of the messages moved (`tenant_id`, `campaign_id`, `variant`,
/// `number_id`, `scheduled_at` as they were), the number's, the tenant's and
/// the variant's usage on the day of `scheduled_at` in each one's time zone,
/// never below zero (a tenant or variant without a limit counts nothing). A
/// message that never left must not spend a number's day: with a cap just
/// the size of a campaign, one handed back would otherwise wait for the
/// next day (docs/DESIGN.md, "Daily allowance").
macro_rules! give_back {
    () => {
        ", days AS (
             SELECT b.tenant_id, b.campaign_id, b.variant, b.number_id,
                    (b.scheduled_at AT TIME ZONE n.time_zone)::date AS number_day,
                    (b.scheduled_at AT TIME ZONE t.time_zone)::date AS tenant_day
               FROM back b
               JOIN sender_numbers n ON n.id = b.number_id
               JOIN tenants t ON t.id = b.tenant_id
         ), numbers AS (
             UPDATE sender_usage u SET assigned = greatest(u.assigned - g.n, 0)
               FROM (SELECT number_id, number_day, count(*)::int AS n
                       FROM days GROUP BY number_id, number_day) g
              WHERE u.number_id = g.number_id AND u.day = g.number_day
         ), capped_tenants AS (
             UPDATE tenant_usage u SET assigned = greatest(u.assigned - g.n, 0)
               FROM (SELECT tenant_id, tenant_day, count(*)::int AS n
                       FROM days GROUP BY tenant_id, tenant_day) g
              WHERE u.tenant_id = g.tenant_id AND u.day = g.tenant_day
         ), variants AS (
             UPDATE variant_usage u SET assigned = greatest(u.assigned - g.n, 0)
               FROM (SELECT number_id, number_day, campaign_id, variant, count(*)::int AS n
                       FROM days WHERE campaign_id IS NOT NULL
                      GROUP BY number_id, number_day, campaign_id, variant) g
              WHERE u.number_id = g.number_id AND u.day = g.number_day
                AND u.campaign_id = g.campaign_id AND u.variant = g.variant
         )"
    };
}

/// A paused campaign's scheduled messages go back to `queued`, their
/// budgets given back ([`unschedule`]); their jobs will find nothing to
/// claim. Returns how many went back.
pub async fn unschedule_campaign(
    client: &impl GenericClient,
    campaign_id: Uuid,
) -> Result<u64, DbError> {
    // A day's plan at most; `unschedule` re-checks each under its lock.
    let stmt = client
        .prepare_cached("SELECT id FROM messages WHERE campaign_id = $1 AND state = 'scheduled'")
        .await?;
    let ids: Vec<i64> = client
        .query(&stmt, &[&campaign_id])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    unschedule(client, &ids).await
}

/// Cancels a campaign's messages that have not been claimed for sending;
/// the scheduled ones give their budgets back first ([`unschedule_campaign`]):
/// they never left. Returns how many were cancelled.
pub async fn cancel_unsent(
    client: &impl GenericClient,
    campaign_id: Uuid,
    reason: &str,
) -> Result<u64, DbError> {
    // Only the scheduled ones hold a budget: they are few (a day's plan at
    // most), the queued ones may be millions and are cancelled as they are.
    // One scheduled by a planner in between (`end_overdue` holds no lock on
    // the campaign) is still cancelled, its budget kept as before.
    unschedule_campaign(client, campaign_id).await?;
    let stmt = client
        .prepare_cached(
            "UPDATE messages SET state = 'cancelled', cancelled_at = now(), failure_reason = $2
              WHERE campaign_id = $1 AND state IN ('queued', 'scheduled')",
        )
        .await?;
    Ok(client.execute(&stmt, &[&campaign_id, &reason]).await?)
}

/// Retries whose time came are ready to be scheduled again.
pub async fn release_due_retries(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE messages SET not_before = NULL
              WHERE state = 'queued' AND not_before <= $1",
        )
        .await?;
    Ok(client.execute(&stmt, &[&now]).await?)
}

/// Puts scheduled messages back in the queue (their job could not be
/// published, or their number cannot send them now), their budgets given
/// back ([`give_back!`]). Returns how many went back.
pub async fn unschedule(client: &impl GenericClient, ids: &[i64]) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(concat!(
            "WITH back AS (
                 UPDATE messages m
                    SET state = 'queued', sender_number_id = NULL, scheduled_at = NULL
                   FROM (SELECT id, sender_number_id, scheduled_at FROM messages
                          WHERE id = ANY($1) AND state = 'scheduled'
                          ORDER BY id FOR UPDATE) was
                  WHERE m.id = was.id
                 RETURNING m.tenant_id, m.campaign_id, m.variant,
                           was.sender_number_id AS number_id, was.scheduled_at
             )",
            give_back!(),
            " SELECT count(*) FROM back"
        ))
        .await?;
    let returned: i64 = client.query_one(&stmt, &[&ids]).await?.get(0);
    Ok(returned as u64)
}

/// Messages `scheduled` for longer than `age` (their job was lost); refreshes
/// their `scheduled_at` so they are picked once per period. Returns (message,
/// number) pairs to publish again.
pub async fn stale_scheduled(
    client: &impl GenericClient,
    age: Duration,
    limit: i64,
) -> Result<Vec<(i64, Uuid)>, DbError> {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let stmt = client
        .prepare_cached(
            "WITH stale AS (
                 SELECT id FROM messages
                  WHERE state = 'scheduled'
                    AND scheduled_at < now() - $1::bigint * interval '1 millisecond'
                  LIMIT $2
                  FOR UPDATE SKIP LOCKED
             )
             UPDATE messages m SET scheduled_at = now()
              WHERE m.id = ANY(ARRAY(SELECT id FROM stale))
             RETURNING m.id, m.sender_number_id",
        )
        .await?;
    let rows = client.query(&stmt, &[&age_ms, &limit]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// What a worker needs to know about a job before deciding to act on it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub recipient: PhoneNumber,
    pub body_chars: i32,
    /// The recipient was suppressed since the message was created.
    pub suppressed: bool,
}

/// The message behind a job, if it is still waiting to be sent by this number:
/// `scheduled`, or `sending` under this very lease epoch (a claim whose answer
/// was lost before the worker acted on it; see [`claim`]).
pub async fn pending_job(
    client: &impl GenericClient,
    message_id: i64,
    number_id: Uuid,
    epoch: i64,
) -> Result<Option<Pending>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT m.recipient, char_length(m.body),
                    NOT m.confirms_opt_out
                    AND EXISTS (SELECT 1 FROM suppressions s
                                 WHERE s.tenant_id = m.tenant_id AND s.phone = m.recipient)
               FROM messages m
              WHERE m.id = $1 AND m.sender_number_id = $2
                AND (m.state = 'scheduled' OR (m.state = 'sending' AND m.claim_epoch = $3))",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&message_id, &number_id, &epoch])
        .await?
        .map(|row| Pending {
            recipient: PhoneNumber::from_trusted(row.get(0)),
            body_chars: row.get(1),
            suppressed: row.get(2),
        }))
}

/// A message claimed for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub campaign_id: Option<Uuid>,
    pub recipient: PhoneNumber,
    pub body: String,
    pub wa_message_id: String,
    pub attempts: i32,
    pub media: Option<serde_json::Value>,
}

/// The claim: `scheduled → sending`, only if the message is still scheduled on
/// this number, its campaign is running, and `owner` still holds the number's
/// lease at `epoch` (fencing). Also stamps the number's `last_send_at` so a later
/// owner keeps the minimum gap. `None` means: do not send.
///
/// A message already `sending` under the same epoch is claimed again: within one
/// lease epoch a worker drives a number's sends one at a time and records every
/// call's outcome before the next, so such a row is a claim whose reply was lost
/// (database error) before the worker made the call.
pub async fn claim(
    client: &impl GenericClient,
    message_id: i64,
    number_id: Uuid,
    owner: &str,
    epoch: i64,
) -> Result<Option<Claimed>, DbError> {
    let claim = Claim {
        message_id,
        number_id,
        owner: owner.to_string(),
        epoch,
    };
    Ok(claim_many(client, std::slice::from_ref(&claim))
        .await?
        .pop()
        .flatten())
}

/// One claim of [`claim_many`]: who claims which message, under which lease.
#[derive(Debug, Clone)]
pub struct Claim {
    pub message_id: i64,
    pub number_id: Uuid,
    pub owner: String,
    pub epoch: i64,
}

/// [`claim`] for several messages (several numbers') in one statement: one
/// answer per claim, in their order, each exactly what [`claim`] would have
/// answered. A message listed twice is claimed for one of the two listings,
/// never both.
pub async fn claim_many(
    client: &impl GenericClient,
    claims: &[Claim],
) -> Result<Vec<Option<Claimed>>, DbError> {
    let mut message_ids = Vec::with_capacity(claims.len());
    let mut number_ids = Vec::with_capacity(claims.len());
    let mut owners = Vec::with_capacity(claims.len());
    let mut epochs = Vec::with_capacity(claims.len());
    for claim in claims {
        message_ids.push(claim.message_id);
        number_ids.push(claim.number_id);
        owners.push(claim.owner.as_str());
        epochs.push(claim.epoch);
    }
    let stmt = client
        .prepare_cached(
            "WITH claimed AS (
                 UPDATE messages m
                    SET state = 'sending', sending_at = now(), attempts = attempts + 1,
                        claim_epoch = v.epoch
                   FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[])
                        WITH ORDINALITY AS v(id, number_id, owner, epoch, i)
                  WHERE m.id = v.id AND m.sender_number_id = v.number_id
                    AND (m.state = 'scheduled' OR (m.state = 'sending' AND m.claim_epoch = v.epoch))
                    AND EXISTS (SELECT 1 FROM number_leases l
                                 WHERE l.number_id = v.number_id AND l.owner = v.owner
                                   AND l.epoch = v.epoch AND l.expires_at > now())
                    AND (m.campaign_id IS NULL
                         OR EXISTS (SELECT 1 FROM campaigns c
                                     WHERE c.id = m.campaign_id AND c.status = 'running'))
                    AND (m.confirms_opt_out
                         OR NOT EXISTS (SELECT 1 FROM suppressions s
                                         WHERE s.tenant_id = m.tenant_id AND s.phone = m.recipient))
                 RETURNING v.i, m.sender_number_id, m.campaign_id, m.recipient, m.body,
                           m.wa_message_id, m.attempts, m.media
             ), stamped AS (
                 -- Locked in id order, as planners lock numbers: two lockers
                 -- of several numbers wait for each other, never deadlock.
                 UPDATE sender_numbers SET last_send_at = now()
                  WHERE id IN (SELECT id FROM sender_numbers
                                WHERE id IN (SELECT sender_number_id FROM claimed)
                                ORDER BY id FOR NO KEY UPDATE)
             )
             SELECT i, campaign_id, recipient, body, wa_message_id, attempts, media FROM claimed",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&message_ids, &number_ids, &owners, &epochs])
        .await?;
    let mut answers = vec![None; claims.len()];
    for row in rows {
        // `WITH ORDINALITY` counts from 1.
        let i = usize::try_from(row.get::<_, i64>(0) - 1).expect("ordinality starts at 1");
        answers[i] = Some(Claimed {
            campaign_id: row.get(1),
            recipient: PhoneNumber::from_trusted(row.get(2)),
            body: row.get(3),
            wa_message_id: row.get(4),
            attempts: row.get(5),
            media: row.get(6),
        });
    }
    Ok(answers)
}

const RECORD_SENT: &str = "UPDATE messages m
        SET state = CASE WHEN m.state IN ('sending', 'unknown') THEN 'sent'::message_state
                         ELSE m.state END,
            sent_at = coalesce(m.sent_at, v.at)
       FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS v(id, epoch, at)
      WHERE m.id = v.id AND m.claim_epoch = v.epoch
        AND m.state IN ('sending', 'unknown', 'delivered', 'read')";

/// The server accepted these messages (the same index in each slice: id,
/// the epoch it was claimed under, when). Also settles a message a takeover
/// had marked `unknown`, and keeps a receipt that overtook this write.
/// Returns how many were recorded (a message claimed again under a newer
/// epoch is not).
pub async fn record_sent(
    client: &impl GenericClient,
    message_ids: &[i64],
    epochs: &[i64],
    ats: &[DateTime<Utc>],
) -> Result<u64, DbError> {
    debug_assert!(message_ids.len() == epochs.len() && ats.len() == epochs.len());
    let stmt = client.prepare_cached(RECORD_SENT).await?;
    Ok(client
        .execute(&stmt, &[&message_ids, &epochs, &ats])
        .await?)
}

/// The message is known not to have been delivered and will not be retried.
pub async fn record_failed(
    client: &impl GenericClient,
    message_id: i64,
    epoch: i64,
    reason: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE messages SET state = 'failed', failed_at = now(), failure_reason = $3
              WHERE id = $1 AND claim_epoch = $2 AND state IN ('sending', 'unknown')",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&message_id, &epoch, &reason])
        .await?
        == 1)
}

/// The call may or may not have reached WhatsApp: never resent automatically.
pub async fn record_unknown(
    client: &impl GenericClient,
    message_id: i64,
    epoch: i64,
    reason: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE messages SET state = 'unknown', unknown_at = now(), failure_reason = $3
              WHERE id = $1 AND claim_epoch = $2 AND state = 'sending'",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&message_id, &epoch, &reason])
        .await?
        == 1)
}

/// How a message that did not go out returns to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// At once, to be placed again (its sticky sender kept).
    Now,
    /// Not before this time (back-off), its sticky sender kept.
    At(DateTime<Utc>),
    /// At once, to any number: this one may not write to the recipient now.
    Elsewhere,
}

/// The start of a statement that settles a claimed message that did not
/// leave: `was`, the message `$1` claimed under epoch `$2` and still
/// `sending`, locked, with its sender and `scheduled_at` as they were; and
/// `campaign`, with `cancelled` the reason its campaign was cancelled (no
/// row for a direct message, `NULL` for a campaign not cancelled), read
/// under a share lock on the campaign's row. A cancel leaves `sending`
/// messages alone (`cancel_unsent`); back in the queue, such a message would
/// wait there for good, since no plan takes a cancelled campaign's messages.
/// So it is cancelled instead: a cancel committed first is seen here, and
/// one that comes later waits for this transaction, then finds the message
/// `queued` and cancels it.
macro_rules! claimed_back {
    () => {
        "WITH was AS (
             SELECT id, campaign_id, sender_number_id, scheduled_at FROM messages
              WHERE id = $1 AND claim_epoch = $2 AND state = 'sending'
              FOR UPDATE
         ), campaign AS (
             SELECT CASE WHEN c.status = 'cancelled'
                         THEN coalesce(c.status_reason, 'the campaign was cancelled') END
                    AS cancelled
               FROM campaigns c JOIN was ON c.id = was.campaign_id
                FOR SHARE OF c
         )"
    };
}

/// The message did not reach WhatsApp, or was refused for a passing reason:
/// back to `queued` for the scheduler to place again, `failed` once it has
/// used `max_attempts`, or `cancelled` if its campaign was cancelled
/// meanwhile ([`claimed_back!`]). Returns the state it is in now (`None` if
/// the row was not this worker's to settle).
pub async fn requeue(
    client: &impl GenericClient,
    message_id: i64,
    epoch: i64,
    max_attempts: i32,
    reason: &str,
    how: Requeue,
) -> Result<Option<MessageState>, DbError> {
    let (not_before, elsewhere) = match how {
        Requeue::Now => (None, false),
        Requeue::At(at) => (Some(at), false),
        Requeue::Elsewhere => (None, true),
    };
    // Back in the queue (or cancelled with its campaign), the message gives
    // its budget back (it did not leave); a message that failed for good
    // keeps it spent.
    let stmt = client
        .prepare_cached(concat!(
            claimed_back!(),
            ", moved AS (
                 UPDATE messages m
                    SET state = CASE WHEN m.attempts >= $3 THEN 'failed'::message_state
                                     WHEN c.cancelled IS NOT NULL THEN 'cancelled'::message_state
                                     ELSE 'queued'::message_state END,
                        failed_at = CASE WHEN m.attempts >= $3 THEN now() END,
                        cancelled_at = CASE WHEN m.attempts < $3 AND c.cancelled IS NOT NULL
                                            THEN now() END,
                        failure_reason = CASE WHEN m.attempts >= $3
                                              THEN format('gave up after %s attempts; last: %s', m.attempts, $4::text)
                                              ELSE coalesce(c.cancelled, $4) END,
                        sender_number_id = CASE WHEN m.attempts >= $3 THEN m.sender_number_id END,
                        preferred_number_id = CASE WHEN $6 THEN NULL ELSE m.preferred_number_id END,
                        not_before = CASE WHEN m.attempts >= $3 OR c.cancelled IS NOT NULL THEN NULL
                                          ELSE $5::timestamptz END,
                        scheduled_at = NULL, sending_at = NULL, claim_epoch = NULL
                   FROM was LEFT JOIN campaign c ON true
                  WHERE m.id = was.id
                 RETURNING m.state, m.tenant_id, m.campaign_id, m.variant,
                           was.sender_number_id AS number_id, was.scheduled_at
             ), back AS (SELECT * FROM moved WHERE state IN ('queued', 'cancelled'))",
            give_back!(),
            " SELECT state FROM moved"
        ))
        .await?;
    let row = client
        .query_opt(
            &stmt,
            &[
                &message_id,
                &epoch,
                &max_attempts,
                &reason,
                &not_before,
                &elsewhere,
            ],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// A claimed message this worker will not send after all (its lease ran out
/// before the call, or the number is not connected): back to `queued`
/// (`cancelled` if its campaign was cancelled meanwhile: [`claimed_back!`])
/// without spending an attempt, its budget given back ([`give_back!`]).
pub async fn release_claim(
    client: &impl GenericClient,
    message_id: i64,
    epoch: i64,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(concat!(
            claimed_back!(),
            ", back AS (
                 UPDATE messages m
                    SET state = CASE WHEN c.cancelled IS NULL THEN 'queued'::message_state
                                     ELSE 'cancelled'::message_state END,
                        cancelled_at = CASE WHEN c.cancelled IS NOT NULL THEN now() END,
                        failure_reason = coalesce(c.cancelled, m.failure_reason),
                        sender_number_id = NULL, scheduled_at = NULL,
                        sending_at = NULL, claim_epoch = NULL, attempts = greatest(m.attempts - 1, 0)
                   FROM was LEFT JOIN campaign c ON true
                  WHERE m.id = was.id
                 RETURNING m.tenant_id, m.campaign_id, m.variant,
                           was.sender_number_id AS number_id, was.scheduled_at
             )",
            give_back!(),
            " SELECT count(*) FROM back"
        ))
        .await?;
    let released: i64 = client
        .query_one(&stmt, &[&message_id, &epoch])
        .await?
        .get(0);
    Ok(released == 1)
}

/// A number's newest sends since `since` (at most `window`), for its breaker.
/// `matured_before`: sends older than this should have been delivered.
pub async fn recent_sends(
    client: &impl GenericClient,
    number_id: Uuid,
    since: DateTime<Utc>,
    window: i64,
    matured_before: DateTime<Utc>,
) -> Result<Sample, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE state IN ('sent', 'delivered', 'read', 'failed', 'unknown')),
                    count(*) FILTER (WHERE state IN ('failed', 'unknown')),
                    count(*) FILTER (WHERE state IN ('sent', 'delivered', 'read') AND sent_at < $4),
                    count(*) FILTER (WHERE state = 'sent' AND sent_at < $4)
               FROM (SELECT state, sent_at FROM messages
                      WHERE sender_number_id = $1 AND sending_at IS NOT NULL AND sending_at >= $2
                      ORDER BY sending_at DESC
                      LIMIT $3) recent",
        )
        .await?;
    let row = client
        .query_one(&stmt, &[&number_id, &since, &window, &matured_before])
        .await?;
    Ok(Sample {
        finished: row.get(0),
        failed: row.get(1),
        matured: row.get(2),
        undelivered: row.get(3),
    })
}

/// When a worker takes a number over: messages the previous owner had claimed
/// but not settled may or may not have left. They become `unknown`.
pub async fn abandon_stale_claims(
    client: &impl GenericClient,
    number_id: Uuid,
    epoch: i64,
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE messages
                SET state = 'unknown', unknown_at = now(),
                    failure_reason = 'worker stopped between claim and outcome'
              WHERE sender_number_id = $1 AND state = 'sending' AND claim_epoch < $2",
        )
        .await?;
    Ok(client.execute(&stmt, &[&number_id, &epoch]).await?)
}

/// What a receipt says about messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

impl ReceiptKind {
    /// The statement [`apply_receipts`] runs for this kind.
    fn statement(self) -> &'static str {
        match self {
            ReceiptKind::Delivered => {
                "UPDATE messages m
                    SET state = 'delivered', delivered_at = coalesce(m.delivered_at, r.at),
                        sent_at = coalesce(m.sent_at, r.at)
                   FROM (SELECT number_id, wa_id, min(at) AS at
                           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(number_id, wa_id, at)
                          GROUP BY number_id, wa_id) r
                  WHERE m.wa_message_id = r.wa_id AND m.sender_number_id = r.number_id
                    AND m.state IN ('sending', 'sent', 'unknown')"
            }
            ReceiptKind::Read => {
                "UPDATE messages m
                    SET state = 'read', read_at = coalesce(m.read_at, r.at),
                        delivered_at = coalesce(m.delivered_at, r.at), sent_at = coalesce(m.sent_at, r.at)
                   FROM (SELECT number_id, wa_id, min(at) AS at
                           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(number_id, wa_id, at)
                          GROUP BY number_id, wa_id) r
                  WHERE m.wa_message_id = r.wa_id AND m.sender_number_id = r.number_id
                    AND m.state IN ('sending', 'sent', 'delivered', 'unknown')"
            }
        }
    }
}

/// Prepares (once per connection) the statements of [`record_sent`] and
/// [`apply_receipts`], so that calls of them sent at once, without waiting
/// for each other's answers, reach Postgres in the order they were made: a
/// call whose statement is not prepared yet waits for the preparation
/// before it sends, and a later call could overtake it.
pub async fn prepare_outcomes(client: &impl GenericClient) -> Result<(), DbError> {
    client.prepare_cached(RECORD_SENT).await?;
    for kind in [ReceiptKind::Delivered, ReceiptKind::Read] {
        client.prepare_cached(kind.statement()).await?;
    }
    Ok(())
}

/// Applies receipts of one kind: message `i` is the one with WhatsApp id
/// `wa_message_ids[i]` sent from number `number_ids[i]`, and its receipt came
/// at `ats[i]`. One statement for a whole batch, of any numbers (a worker
/// writes the receipts of all its numbers together). States only move
/// forward; a receipt also settles `sending` and `unknown` messages (it
/// proves the message left). An id given twice counts once, at its earliest
/// time. Returns the rows changed.
pub async fn apply_receipts(
    client: &impl GenericClient,
    kind: ReceiptKind,
    number_ids: &[Uuid],
    wa_message_ids: &[&str],
    ats: &[DateTime<Utc>],
) -> Result<u64, DbError> {
    debug_assert!(number_ids.len() == wa_message_ids.len() && ats.len() == wa_message_ids.len());
    let stmt = client.prepare_cached(kind.statement()).await?;
    Ok(client
        .execute(&stmt, &[&number_ids, &wa_message_ids, &ats])
        .await?)
}

/// A campaign's messages still to send (`queued`, `scheduled`) per recipient
/// zone key, and their average length in characters.
pub async fn backlog_by_zone(
    client: &impl GenericClient,
    campaign_id: Uuid,
) -> Result<(Vec<(String, i64)>, usize), DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT recipient_zone, count(*), coalesce(avg(char_length(body)), 0)::float8
               FROM messages
              WHERE campaign_id = $1 AND state IN ('queued', 'scheduled')
              GROUP BY recipient_zone",
        )
        .await?;
    let rows = client.query(&stmt, &[&campaign_id]).await?;
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    let weighted: f64 = rows
        .iter()
        .map(|r| r.get::<_, f64>(2) * r.get::<_, i64>(1) as f64)
        .sum();
    let average = if total == 0 {
        0
    } else {
        (weighted / total as f64) as usize
    };
    Ok((rows.iter().map(|r| (r.get(0), r.get(1))).collect(), average))
}

/// The recipient was suppressed after the message was created: it will not
/// be sent.
pub async fn suppress(
    client: &impl GenericClient,
    message_id: i64,
    number_id: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE messages SET state = 'suppressed', suppressed_at = now(),
                    failure_reason = 'the recipient is suppressed'
              WHERE id = $1 AND sender_number_id = $2 AND state IN ('scheduled', 'sending')",
        )
        .await?;
    Ok(client.execute(&stmt, &[&message_id, &number_id]).await? == 1)
}

/// A direct (non-campaign) message to send from `number_id`.
pub struct NewDirect<'a> {
    pub tenant_id: Uuid,
    pub number_id: Uuid,
    pub message: &'a NewMessage,
    /// The confirmation of an opt-out: sent although the recipient is now
    /// suppressed.
    pub confirms_opt_out: bool,
}

pub async fn insert_direct(
    client: &impl GenericClient,
    new: &NewDirect<'_>,
) -> Result<i64, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO messages (tenant_id, recipient, body, wa_message_id, recipient_zone,
                                   preferred_number_id, media, confirms_opt_out)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .await?;
    let m = new.message;
    Ok(client
        .query_one(
            &stmt,
            &[
                &new.tenant_id,
                &m.recipient.as_str(),
                &m.body,
                &m.wa_message_id,
                &m.zone.as_str(),
                &new.number_id,
                &m.media,
                &new.confirms_opt_out,
            ],
        )
        .await?
        .get(0))
}

/// A message as the API shows it.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: i64,
    pub campaign_id: Option<Uuid>,
    pub recipient: String,
    pub body: String,
    pub state: MessageState,
    pub variant: i16,
    pub sender_number_id: Option<Uuid>,
    pub wa_message_id: String,
    pub attempts: i32,
    pub failure_reason: Option<String>,
    pub media: Option<serde_json::Value>,
    /// Time of each state the message went through (`None`: not reached).
    pub times: [Option<DateTime<Utc>>; 10],
}

const RECORD_COLUMNS: &str = "id, campaign_id, recipient, body, state, variant, sender_number_id, \
    wa_message_id, attempts, failure_reason, media, queued_at, scheduled_at, sending_at, \
    sent_at, delivered_at, read_at, failed_at, unknown_at, suppressed_at, cancelled_at";

fn record_from_row(row: &tokio_postgres::Row) -> MessageRecord {
    let queued: DateTime<Utc> = row.get(11);
    MessageRecord {
        id: row.get(0),
        campaign_id: row.get(1),
        recipient: row.get(2),
        body: row.get(3),
        state: row.get(4),
        variant: row.get(5),
        sender_number_id: row.get(6),
        wa_message_id: row.get(7),
        attempts: row.get(8),
        failure_reason: row.get(9),
        media: row.get(10),
        times: [
            Some(queued),
            row.get(12),
            row.get(13),
            row.get(14),
            row.get(15),
            row.get(16),
            row.get(17),
            row.get(18),
            row.get(19),
            row.get(20),
        ],
    }
}

pub async fn get(
    client: &impl GenericClient,
    tenant_id: Uuid,
    id: i64,
) -> Result<Option<MessageRecord>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM messages WHERE tenant_id = $1 AND id = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&tenant_id, &id])
        .await?
        .as_ref()
        .map(record_from_row))
}

/// Filters of a message history page.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub campaign_id: Option<Uuid>,
    pub recipient: Option<String>,
    pub state: Option<MessageState>,
}

/// A page of messages in id order (new messages land after the last page,
/// so a walk never skips or repeats one), after id `after`. One statement per
/// kind of filter, each served by its own index (a catch-all statement with
/// optional filters would get a generic plan that uses none).
pub async fn history(
    client: &impl GenericClient,
    tenant_id: Uuid,
    filter: &HistoryFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<MessageRecord>, DbError> {
    let after = after.unwrap_or(0);
    let (condition, key): (&str, Option<&(dyn tokio_postgres::types::ToSql + Sync)>) =
        match (&filter.campaign_id, &filter.recipient) {
            (Some(campaign_id), _) => ("campaign_id = $5", Some(campaign_id)),
            (None, Some(recipient)) => ("recipient = $5", Some(recipient)),
            (None, None) => ("true", None),
        };
    let recipient_too = filter.campaign_id.is_some() && filter.recipient.is_some();
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM messages
              WHERE tenant_id = $1 AND {condition}
                AND ($2::message_state IS NULL OR state = $2)
                AND id > $3
                {}
              ORDER BY id
              LIMIT $4",
            if recipient_too {
                "AND recipient = $6"
            } else {
                ""
            }
        ))
        .await?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&tenant_id, &filter.state, &after, &limit];
    if let Some(key) = key {
        params.push(key);
    }
    if recipient_too {
        params.push(filter.recipient.as_ref().expect("checked"));
    }
    let rows = client.query(&stmt, &params).await?;
    Ok(rows.iter().map(record_from_row).collect())
}

/// A recipient was suppressed: their messages not yet being sent are recorded
/// `suppressed`. Returns how many.
pub async fn suppress_recipient(
    client: &impl GenericClient,
    tenant_id: Uuid,
    recipient: &str,
    reason: &str,
) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE messages SET state = 'suppressed', suppressed_at = now(), failure_reason = $3
              WHERE tenant_id = $1 AND recipient = $2 AND state IN ('queued', 'scheduled')
                AND NOT confirms_opt_out",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&tenant_id, &recipient, &reason])
        .await?)
}

/// A message whose send job the broker gave up on: `failed`, unless it was
/// claimed (its number's next owner settles that one) or already ended.
pub async fn fail_dead_lettered(
    client: &impl GenericClient,
    message_id: i64,
    reason: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE messages SET state = 'failed', failed_at = now(), failure_reason = $2
              WHERE id = $1 AND state IN ('queued', 'scheduled')",
        )
        .await?;
    Ok(client.execute(&stmt, &[&message_id, &reason]).await? == 1)
}
