//! Driving one owned number: open its session, consume its send queue one job
//! at a time, and run each job through the send protocol:
//!
//! 1. look the message up (nothing to do if it is no longer waiting);
//! 2. wait for the connection, then for the pacing gap, then show "typing…";
//! 3. **claim** it in Postgres (`scheduled → sending`, fenced by the lease epoch);
//! 4. ack the job (the claim is the record now) and, meanwhile, call WhatsApp
//!    with the message id fixed at creation;
//! 5. record the verdict (`sent`, `failed`, `unknown`, or back to `queued` when
//!    it provably did not leave), and only then take the next job.
//!
//! Steps 1–2 can be abandoned at any moment (shutdown, lease lost): nothing was
//! claimed, the job goes back to the queue. Steps 3–5 always run to the end, so
//! a claimed message always gets its outcome recorded by this process, unless
//! the process dies, in which case the next owner finds it `sending` under an
//! older epoch and records it `unknown` when it takes the number over (whether
//! or not the job comes back: a job that does finds nothing to claim).

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use herald_shared::{
    db::{
        self, DbError,
        messages::{self, Requeue},
        sender_numbers::SenderNumber,
    },
    domain::{MessageState, NumberState, PhoneNumber},
    events::{Event, EventBody, NumberChange},
    metrics as m, outbox,
    policy::verdict::{Refusal, classify, retry_delay},
    queue::{self, QueueError, Settle, Subscription},
    task::{JobPacing, SendTask},
};
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    Context, events, failpoint,
    lease::Lease,
    lookups,
    outcomes::{Outcome, Sent},
    session::{
        Attachment, ConnectionState, OutgoingText, SendError, Session, SessionError, wait_connected,
    },
};

/// Runs everything for one owned number until `stop` is cancelled or the
/// number cannot be driven any more (logged out, lease poisoned).
pub async fn drive(
    ctx: Arc<Context>,
    number_id: Uuid,
    lease: Arc<Lease>,
    stop: CancellationToken,
    start_after: Duration,
) {
    // Many numbers taken at once (a worker starting, another one dying)
    // connect one after another, never all together.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(start_after) => {}
    }
    let number = match load_number(&ctx, number_id, &stop).await {
        Some(number) => number,
        None => return,
    };
    let Some(connector) = ctx.connectors.get(number.kind) else {
        tracing::error!(%number_id, kind = ?number.kind, "no connector for this kind of number");
        return;
    };
    let (session, events) = match connector.open(&number).await {
        Ok(opened) => opened,
        Err(err) => {
            tracing::warn!(%number_id, error = %err, "could not open session");
            return;
        }
    };
    tracing::info!(%number_id, number = %number.phone.masked(), epoch = lease.epoch, "driving number");
    let pump_until = CancellationToken::new();
    let pump = tokio::spawn(events::pump(
        ctx.clone(),
        number.clone(),
        lease.clone(),
        session.clone(),
        events,
        stop.clone(),
        pump_until.clone(),
    ));
    let lookups = tokio::spawn(lookups::lane(
        ctx.clone(),
        number.id,
        lease.clone(),
        session.clone(),
        stop.clone(),
    ));
    let last_send = number.last_send_at.and_then(|at| {
        let elapsed = (Utc::now() - at).to_std().unwrap_or_default();
        Instant::now().checked_sub(elapsed)
    });
    let mut driver = NumberDriver {
        ctx: ctx.clone(),
        number,
        lease,
        session: session.clone(),
        stop: stop.clone(),
        last_send,
    };
    if driver.number.state == NumberState::NeedsPairing {
        tokio::spawn(pair_by_code(
            ctx.clone(),
            driver.number.clone(),
            session.clone(),
            stop.clone(),
        ));
    }
    driver.consume().await;
    stop.cancel();
    // Only now: a send under way at `stop` needed the session's events read.
    pump_until.cancel();
    let unlink = unlink_requested(&ctx, number_id).await;
    if unlink {
        // Asked through the API: tell WhatsApp this device is gone.
        if let Err(err) = session.logout().await {
            tracing::warn!(%number_id, error = %err, "logout failed; wiping the session anyway");
        }
    }
    session.shutdown().await;
    let _ = pump.await;
    let _ = lookups.await;
    if unlink {
        finish_unlink(&ctx, number_id).await;
    }
    tracing::info!(%number_id, "stopped driving number");
}

/// For a pairing by code: once the session is up and unpaired, ask for the
/// code to type on the phone (it comes back as an event).
async fn pair_by_code(
    ctx: Arc<Context>,
    number: SenderNumber,
    session: Arc<dyn Session>,
    stop: CancellationToken,
) {
    let pairing = match ctx.pool.get().await {
        Ok(client) => db::pairings::get(&client, number.id).await.ok().flatten(),
        Err(_) => None,
    };
    if pairing.is_none_or(|p| p.method != "code") {
        return;
    }
    let mut state = session.state();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while *state.borrow_and_update() != ConnectionState::Pairing {
            if state.changed().await.is_err() {
                return false;
            }
        }
        true
    });
    let ready = tokio::select! {
        _ = stop.cancelled() => return,
        ready = ready => ready.unwrap_or(false),
    };
    let asked = if ready {
        session.request_pair_code(&number.phone).await
    } else {
        Err(SessionError::Failed(
            "the session did not reach pairing in time".into(),
        ))
    };
    if let Err(err) = asked
        && let Ok(client) = ctx.pool.get().await
    {
        let reason = format!("could not get a pair code: {err}");
        let _ = db::pairings::finish(
            &client,
            number.id,
            db::pairings::PairingStatus::Failed,
            Some(&reason),
        )
        .await;
    }
}

async fn unlink_requested(ctx: &Context, number_id: Uuid) -> bool {
    match ctx.pool.get().await {
        Ok(client) => db::sender_numbers::unlink_requested(&client, number_id)
            .await
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// After the logout: the session's keys go (its client may have written
/// some back while stopping), and the request is done.
async fn finish_unlink(ctx: &Context, number_id: Uuid) {
    let wiped = async {
        let mut client = ctx.pool.get().await?;
        let tx = client.transaction().await?;
        db::session_rows::wipe(&tx, number_id).await?;
        db::sender_numbers::unlink_done(&tx, number_id).await?;
        tx.commit().await?;
        Ok::<_, DbError>(())
    }
    .await;
    match wiped {
        Ok(()) => tracing::info!(%number_id, "number unlinked: session logged out and wiped"),
        Err(err) => {
            tracing::warn!(%number_id, error = %err, "unlinking: could not wipe the session")
        }
    }
}

async fn load_number(
    ctx: &Context,
    number_id: Uuid,
    stop: &CancellationToken,
) -> Option<SenderNumber> {
    loop {
        let loaded = async {
            let client = ctx.pool.get().await?;
            db::sender_numbers::find(&client, number_id).await
        }
        .await;
        match loaded {
            Ok(number) => return number,
            Err(err) => tracing::warn!(%number_id, error = %err, "loading number"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What to do with a job once the send protocol is done with it. A failed
/// ack is only logged: the redelivered job finds nothing left to claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// Finished (sent, recorded, or nothing to do): ack.
    Ack,
    /// The number is being let go: requeue the job if nothing was claimed
    /// (once claimed it was acked, see [`Job`]).
    GiveBack,
}

/// A job in hand. Once its message is claimed, the job has done its part
/// (Postgres holds the claim, and a crash from there on is settled by the
/// next owner of the number, not by the job), so it is acked at once, while
/// the call and the verdict go on: the broker's next delivery then overlaps
/// them instead of following them (docs/DESIGN.md, "The send protocol").
struct Job<'a> {
    delivery: &'a Delivery,
    /// The ack sent at the claim, running on its own so that a slow broker
    /// never holds up recording the verdict.
    acked: Option<tokio::task::JoinHandle<bool>>,
}

impl<'a> Job<'a> {
    fn new(delivery: &'a Delivery) -> Self {
        Self {
            delivery,
            acked: None,
        }
    }

    /// Acks the job now, without waiting for the ack to be written.
    fn ack_claimed(&mut self) {
        let acker = self.delivery.acker.clone();
        self.acked = Some(tokio::spawn(async move {
            queue::settle(&acker, Settle::Ack).await
        }));
    }

    /// Settles the job as `disposition` says, unless it was acked at its
    /// claim. False if the broker did not hear of it.
    async fn settle(self, disposition: Disposition) -> bool {
        match self.acked {
            Some(acked) => acked.await.unwrap_or(false),
            None => {
                let how = match disposition {
                    Disposition::Ack => Settle::Ack,
                    Disposition::GiveBack => Settle::Requeue,
                };
                queue::settle(self.delivery, how).await
            }
        }
    }
}

struct NumberDriver {
    ctx: Arc<Context>,
    number: SenderNumber,
    lease: Arc<Lease>,
    session: Arc<dyn Session>,
    stop: CancellationToken,
    /// When the previous send of this number finished (its server verdict).
    last_send: Option<Instant>,
}

impl NumberDriver {
    async fn consume(&mut self) {
        let mut backoff = Duration::from_millis(500);
        while !self.stop.is_cancelled() && self.lease.is_valid() {
            match self.subscribe().await {
                Ok(mut jobs) => {
                    backoff = Duration::from_millis(500);
                    self.serve(&mut jobs).await;
                    jobs.close().await;
                }
                Err(err) => {
                    tracing::warn!(number_id = %self.number.id, error = %err, "cannot consume send queue");
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn subscribe(&self) -> Result<Subscription, QueueError> {
        let topology = &self.ctx.topology;
        let number_id = self.number.id;
        // One unacked job at a time: the pacing wait happens while holding it,
        // and no other job of the number is in this worker's hands meanwhile
        // (the next one arrives once this one's message is claimed, and waits
        // for its verdict to be recorded).
        self.ctx
            .broker
            .subscribe(
                &topology.send_queue(number_id),
                &format!("{}/{}", self.ctx.id, number_id),
                1,
                |channel| async move { topology.declare_send_queue(&channel, number_id).await },
            )
            .await
    }

    async fn serve(&mut self, jobs: &mut Subscription) {
        loop {
            let delivery = match jobs.next_until(&self.stop).await {
                Ok(Some(delivery)) => delivery,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(number_id = %self.number.id, error = %err, "send queue consumer failed");
                    return;
                }
            };
            let (message_id, pacing) = match serde_json::from_slice::<SendTask>(&delivery.data) {
                Ok(SendTask::Send {
                    message_id,
                    number_id,
                    pacing,
                }) if number_id == self.number.id => (message_id, pacing),
                other => {
                    tracing::error!(number_id = %self.number.id, job = ?other, "unusable job: dead-lettering it");
                    if !queue::settle(&delivery, Settle::Reject).await {
                        return;
                    }
                    continue;
                }
            };
            let mut job = Job::new(&delivery);
            let disposition = self.send(&mut job, message_id, pacing).await;
            // A job the broker did not hear about is redelivered once this
            // channel is gone: subscribe again rather than wait on it.
            if !job.settle(disposition).await || disposition == Disposition::GiveBack {
                return;
            }
        }
    }

    /// The send protocol for one message (see the module docs).
    async fn send(
        &mut self,
        job: &mut Job<'_>,
        message_id: i64,
        pacing: Option<JobPacing>,
    ) -> Disposition {
        let number_id = self.number.id;
        let epoch = self.lease.epoch;

        // 1. Is there anything to do?
        let pending = match self.pending(message_id).await {
            None => return Disposition::GiveBack,
            Some(None) => return Disposition::Ack,
            Some(Some(pending)) => pending,
        };
        failpoint::job(message_id);
        if pending.suppressed {
            // Suppressed since it was created (an opt-out, an operator).
            let recorded = self
                .record("record suppressed", |client| async move {
                    messages::suppress(&client, message_id, number_id).await
                })
                .await;
            metrics::counter!(m::MESSAGES, "state" => "suppressed").increment(1);
            return match recorded {
                Some(_) => Disposition::Ack,
                None => Disposition::GiveBack,
            };
        }

        // 2. Connection, gap, typing.
        let connected = tokio::select! {
            _ = self.stop.cancelled() => return Disposition::GiveBack,
            connected = wait_connected(self.session.as_ref(), self.ctx.config.ready_wait()) => connected,
        };
        if let Err(state) = connected {
            tracing::info!(%number_id, ?state, "number not connected: handing its job back to the scheduler");
            let returned = self
                .record("return the job", |client| async move {
                    messages::unschedule(&client, &[message_id]).await?;
                    messages::release_claim(&client, message_id, epoch).await
                })
                .await;
            return match returned {
                Some(_) => Disposition::Ack,
                None => Disposition::GiveBack,
            };
        }
        let (min_gap, jitter) = match pacing {
            Some(p) => (Duration::from_millis(p.min_gap_ms), p.jitter),
            None => (
                Duration::from_millis(self.number.min_gap_ms.max(0) as u64),
                self.number.jitter.unwrap_or(self.ctx.default_jitter),
            ),
        };
        let plan = {
            let mut rng = rand::rng();
            self.ctx.pacing.plan(
                min_gap,
                &jitter,
                self.last_send.map(|at| at.elapsed()),
                pending.body_chars.max(0) as usize,
                &mut rng,
            )
        };
        if !self.pause(plan.idle).await {
            return Disposition::GiveBack;
        }
        // The wait may have been long: a campaign paused or cancelled meanwhile
        // must not even show "typing…".
        if plan.idle > Duration::from_secs(1) {
            match self.pending(message_id).await {
                None => return Disposition::GiveBack,
                Some(None) => return Disposition::Ack,
                Some(Some(_)) => {}
            }
        }
        // No "typing…" for no time (pacing off): two calls for nothing.
        let typing = !plan.typing.is_zero();
        if typing {
            let _ = self.session.typing(&pending.recipient, true).await;
        }
        if !self.pause(plan.typing).await {
            self.stop_typing(&pending.recipient, typing).await;
            return Disposition::GiveBack;
        }
        // Process-wide smoothing: many numbers due at once go out spread.
        tokio::select! {
            _ = self.stop.cancelled() => {
                self.stop_typing(&pending.recipient, typing).await;
                return Disposition::GiveBack;
            }
            _ = self.ctx.sends.until_ready() => {}
        }
        if !self.lease.is_valid() {
            return Disposition::GiveBack;
        }

        // 3. Claim, together with other numbers' (crate::claims). Retrying is
        // safe: a claim whose reply was lost is claimed again (same epoch), and
        // nothing has been sent yet.
        let claim = messages::Claim {
            message_id,
            number_id,
            owner: self.ctx.id.clone(),
            epoch,
        };
        let claimed = self
            .until_stopped(|| self.ctx.claims.write_one(claim.clone()))
            .await;
        let claimed = match claimed {
            None => return Disposition::GiveBack,
            Some(None) => {
                self.stop_typing(&pending.recipient, typing).await;
                return Disposition::Ack;
            }
            Some(Some(claimed)) => claimed,
        };
        let claimed_at = Instant::now();
        failpoint::hit("after_claim");
        metrics::counter!(m::MESSAGES, "state" => "sending").increment(1);
        if !self.lease.is_valid() {
            // The lease may be someone else's by the time we would call: do not.
            self.record("requeue after lease loss", |client| async move {
                messages::release_claim(&client, message_id, epoch).await
            })
            .await;
            return Disposition::Ack;
        }

        // 4. The call, the job acked meanwhile (see `Job`).
        job.ack_claimed();
        let call_started = Instant::now();
        let outgoing = OutgoingText {
            wa_message_id: claimed.wa_message_id.clone(),
            to: claimed.recipient.clone(),
            body: claimed.body.clone(),
            media: Attachment::from_stored(claimed.media.as_ref()),
        };
        let limit = self.ctx.config.send_timeout() + self.ctx.config.server_ack_timeout();
        let verdict = match tokio::time::timeout(limit, self.session.send_text(&outgoing)).await {
            Ok(verdict) => verdict,
            Err(_) => Err(SendError::Unknown(format!("no answer within {limit:?}"))),
        };
        failpoint::hit("after_call");
        if verdict.is_ok() {
            metrics::histogram!(m::SERVER_ACK_DURATION)
                .record(call_started.elapsed().as_secs_f64());
        }

        // 5. Record the verdict; this must succeed before anything else happens
        // on the number (see `record`).
        let state = self.record_verdict(message_id, &claimed, verdict).await;
        self.stop_typing(&outgoing.to, typing).await;
        let Some(state) = state else {
            // Leave the job unacked: the number is being given up (poisoned
            // lease) and its next owner settles the message as `unknown`.
            return Disposition::GiveBack;
        };
        // Back in the queue (or cancelled with its campaign on the way), the
        // message did not count as a send for the gap.
        if !matches!(state, MessageState::Queued | MessageState::Cancelled) {
            self.last_send = Some(Instant::now());
        }
        metrics::histogram!(m::SEND_DURATION).record(claimed_at.elapsed().as_secs_f64());
        metrics::counter!(m::MESSAGES, "state" => state.as_str()).increment(1);
        failpoint::hit("after_commit");
        Disposition::Ack
    }

    /// Ends "typing…" to `to`, if it was shown.
    async fn stop_typing(&self, to: &PhoneNumber, shown: bool) {
        if shown {
            let _ = self.session.typing(to, false).await;
        }
    }

    /// The message behind a job, if it still waits for this number; `None`
    /// when stopped first.
    async fn pending(&self, message_id: i64) -> Option<Option<messages::Pending>> {
        let (pool, number_id, epoch) = (self.ctx.pool.clone(), self.number.id, self.lease.epoch);
        self.until_stopped(|| {
            let pool = pool.clone();
            async move {
                let client = pool.get().await?;
                messages::pending_job(&client, message_id, number_id, epoch).await
            }
        })
        .await
    }

    /// Writes what the call's verdict means for the message (and its
    /// campaign, and the number). Returns the message's new state, `None` if
    /// it could not be recorded.
    async fn record_verdict(
        &self,
        message_id: i64,
        claimed: &messages::Claimed,
        verdict: Result<(), SendError>,
    ) -> Option<MessageState> {
        let number_id = self.number.id;
        let epoch = self.lease.epoch;
        let campaign = claimed.campaign_id;
        let backoff = |attempt: i32| {
            let delay = retry_delay(attempt, self.ctx.retry_base, self.ctx.retry_max);
            Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
        };
        match verdict {
            Ok(()) => {
                // Written with other numbers' (crate::outcomes).
                let sent = Sent {
                    message_id,
                    epoch,
                    at: Utc::now(),
                    campaign_id: campaign,
                };
                let mut backoff = Duration::from_millis(100);
                loop {
                    match self
                        .ctx
                        .outcomes
                        .write_one(Outcome::Sent(sent.clone()))
                        .await
                    {
                        Ok(()) => return Some(MessageState::Sent),
                        Err(err) => self.could_not_record("record sent", &err),
                    }
                    if !self.retry_recording("record sent", &mut backoff).await {
                        return None;
                    }
                }
            }
            Err(SendError::NotSent(reason)) => {
                tracing::info!(%number_id, message_id, %reason, attempt = claimed.attempts, "not sent");
                let how = Requeue::At(backoff(claimed.attempts));
                self.requeue(message_id, format!("not sent: {reason}"), how)
                    .await
            }
            Err(SendError::Unknown(reason)) => {
                tracing::warn!(%number_id, message_id, %reason, "send outcome unknown");
                self.record("record unknown", |client| {
                    let reason = reason.clone();
                    async move {
                        messages::record_unknown(&client, message_id, epoch, &reason).await?;
                        Ok(MessageState::Unknown)
                    }
                })
                .await
            }
            Err(SendError::Rejected { code }) => match classify(&code) {
                Refusal::ReachoutTimelock => {
                    self.timelocked().await;
                    let reason = "the number is time-locked for new contacts (463)".to_string();
                    self.requeue(message_id, reason, Requeue::Elsewhere).await
                }
                Refusal::Transient => {
                    let reason = format!("refused for now by WhatsApp (code {code})");
                    self.requeue(message_id, reason, Requeue::At(backoff(claimed.attempts)))
                        .await
                }
                Refusal::NotOnWhatsApp => {
                    self.fail(
                        message_id,
                        campaign,
                        "the recipient is not on WhatsApp".into(),
                    )
                    .await
                }
                Refusal::Permanent => {
                    self.fail(
                        message_id,
                        campaign,
                        format!("refused by WhatsApp (code {code})"),
                    )
                    .await
                }
            },
        }
    }

    async fn requeue(&self, message_id: i64, reason: String, how: Requeue) -> Option<MessageState> {
        let (epoch, max_attempts) = (self.lease.epoch, self.ctx.config.max_attempts);
        self.record("requeue", |client| {
            let reason = reason.clone();
            async move {
                let state =
                    messages::requeue(&client, message_id, epoch, max_attempts, &reason, how)
                        .await?;
                Ok(state.unwrap_or(MessageState::Queued))
            }
        })
        .await
    }

    /// A final refusal: the message fails, and its campaign counts the
    /// failure (pausing itself after too many in a row).
    async fn fail(
        &self,
        message_id: i64,
        campaign: Option<Uuid>,
        reason: String,
    ) -> Option<MessageState> {
        let epoch = self.lease.epoch;
        self.record("record failed", |mut client| {
            let reason = reason.clone();
            async move {
                let tx = client.transaction().await?;
                messages::record_failed(&tx, message_id, epoch, &reason).await?;
                if let Some(campaign_id) = campaign
                    && db::campaigns::record_failure(&tx, campaign_id).await?
                {
                    let reason = "too many consecutive failures".to_string();
                    let tenant = self.number.tenant_id;
                    let body =
                        EventBody::CampaignPaused(EventBody::campaign(campaign_id, Some(reason)));
                    outbox::enqueue(&tx, &Event::new(tenant, body)).await?;
                    tracing::warn!(%campaign_id, "campaign paused after consecutive failures");
                }
                tx.commit().await?;
                Ok(MessageState::Failed)
            }
        })
        .await
    }

    /// The network refused a new contact: the number is time-locked. Asks
    /// the network until when (a default if it does not say).
    async fn timelocked(&self) {
        let until = match self.session.reachout_timelock().await {
            Ok(Some(until)) => until,
            _ => {
                Utc::now()
                    + chrono::Duration::from_std(self.ctx.timelock_default).unwrap_or_default()
            }
        };
        let number_id = self.number.id;
        self.record("record time-lock", |mut client| async move {
            let tx = client.transaction().await?;
            if let Some((was, tenant)) =
                db::sender_numbers::set_timelocked(&tx, number_id, until).await?
                && was == NumberState::Active
            {
                let body = EventBody::NumberTimelocked(NumberChange {
                    number_id,
                    state: NumberState::Timelocked,
                    until: Some(until),
                    reason: Some("WhatsApp refused a new contact (463)".into()),
                });
                outbox::enqueue(&tx, &Event::new(tenant, body)).await?;
                tracing::warn!(%number_id, %until, "number time-locked for new contacts");
            }
            tx.commit().await?;
            Ok(())
        })
        .await;
    }

    /// Sleeps `duration` unless stopped first; `false` when stopped.
    async fn pause(&self, duration: Duration) -> bool {
        if duration.is_zero() {
            return !self.stop.is_cancelled();
        }
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(duration) => true,
        }
    }

    /// Runs a read or claim until it succeeds; `None` if stopped or the lease
    /// ran out first (nothing has been sent at this point, so giving up is safe).
    async fn until_stopped<T, E, F, Fut>(&self, mut attempt: F) -> Option<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt().await {
                Ok(value) => return Some(value),
                Err(err) => {
                    tracing::warn!(number_id = %self.number.id, error = %err, "database error before sending; retrying");
                }
            }
            if !self.lease.is_valid() {
                return None;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Records an outcome, retrying through database outages for as long as
    /// the lease lasts; shutdown does not interrupt it. If the lease runs out
    /// first, the lease is poisoned: this worker stops driving the number and
    /// lets the lease expire, so no later claim under this epoch can mistake
    /// the unrecorded call for one that never happened. `None` when it could
    /// not be recorded.
    async fn record<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Option<T>
    where
        F: FnMut(deadpool_postgres::Client) -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = match self.ctx.pool.get().await {
                Ok(client) => attempt(client).await,
                Err(err) => Err(err.into()),
            };
            match result {
                Ok(value) => return Some(value),
                Err(err) => self.could_not_record(what, &err),
            }
            if !self.retry_recording(what, &mut backoff).await {
                return None;
            }
        }
    }

    fn could_not_record(&self, what: &'static str, err: &dyn std::fmt::Display) {
        tracing::warn!(number_id = %self.number.id, error = %err, what, "could not record outcome; retrying");
    }

    /// After a failed attempt to record an outcome: waits before the next
    /// one, or gives the number up when the lease ran out (see `record`).
    async fn retry_recording(&self, what: &'static str, backoff: &mut Duration) -> bool {
        if !self.lease.is_valid() {
            tracing::error!(number_id = %self.number.id, what, "lease ran out before the outcome could be recorded; giving the number up");
            self.lease.poison();
            self.stop.cancel();
            return false;
        }
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        true
    }
}
