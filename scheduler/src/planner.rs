//! One scheduling pass.
//!
//! 1. Housekeeping ([`crate::housekeeping`]): lift ended time-locks and bans,
//!    release retries whose back-off is over, start scheduled campaigns, end
//!    campaigns past `end_by`.
//! 2. Read every live number at once: budget, warm-up day, jobs in flight.
//! 3. For each number with room (look-ahead not full, allowance left;
//!    numbers batched up to `plan_batch_jobs` jobs to a transaction,
//!    `plan_concurrency` transactions at once), under a row lock on the
//!    number (and on its tenant when the tenant has a cap): direct messages
//!    first, then its running campaigns oldest first, each checked still
//!    running under a share lock on its row (a pause landing mid-pass leaves
//!    nothing of it scheduled): recipients who prefer this number, then
//!    anyone else's whose preferred number cannot take them now, only in
//!    time zones whose send window is open, only variants under their daily
//!    limit. A time-locked number only writes to recipients it already wrote
//!    to.
//! 4. Publish the jobs (with each number's pacing) after the batch's commit,
//!    while the next batches are planned.
//! 5. Republish lost jobs, complete finished campaigns, and now and then
//!    judge the circuit breakers ([`crate::breakers`]).
//!
//! The cost of a pass follows the live numbers, not the queued messages:
//! every pick is `LIMIT k` through a partial index.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Range,
    sync::Arc,
    time::Instant,
};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use herald_shared::{
    Config,
    clock::Clock,
    config::{PacingConfig, SchedulerConfig, WarmupConfig},
    db::{
        self, DbError, Pool,
        campaigns::PlanningCampaign,
        messages::{Assigned, Pick},
        planning::LiveNumber,
        sender_usage::DayBudget,
    },
    domain::NumberState,
    events::{Event, EventBody},
    metrics as m, outbox,
    policy::{
        allowance::{AllowanceInputs, daily_allowance},
        breaker::{BreakerConfig, BreakerState},
        jitter::Jitter,
        zones::{ZoneKey, deciding_zones, is_open},
    },
    queue::{Outgoing, Publisher, QueueError, Topology},
    task::{JobPacing, SendTask},
};
use tokio::sync::{Mutex, Semaphore};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Live numbers seen.
    pub numbers: usize,
    /// Numbers that had room and were planned.
    pub planned: usize,
    pub scheduled: usize,
    pub republished: usize,
    pub unpublished: usize,
    pub completed: Vec<Uuid>,
}

pub struct Planner {
    pub(crate) pool: Pool,
    publisher: Arc<Publisher>,
    topology: Topology,
    pub(crate) config: SchedulerConfig,
    pub(crate) pacing: PacingConfig,
    warmup: WarmupConfig,
    pub(crate) breaker: BreakerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    /// Send queues already declared by this process.
    declared: Mutex<HashSet<Uuid>>,
    /// When the breakers were last judged.
    pub(crate) last_breaker_pass: Mutex<Option<Instant>>,
}

/// A number with room this pass, and what it could take from.
struct Candidate<'a> {
    number: &'a LiveNumber,
    campaigns: Vec<&'a PlanningCampaign>,
    direct: bool,
}

/// Numbers cut, in order, into batches of at most `jobs` jobs of room
/// between them (a number with more is a batch of its own), given each
/// number's room: a transaction per batch. Batching saves round trips where
/// numbers take a job or two each (a campaign's start); a number with much
/// room is planned alone, so that the planning places work side by side and
/// its jobs go out at its own commit.
fn batches(rooms: &[i64], jobs: i64) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut room) = (0, 0);
    for (i, &number_room) in rooms.iter().enumerate() {
        if i > start && room + number_room > jobs {
            batches.push(start..i);
            (start, room) = (i, 0);
        }
        room += number_room;
    }
    if start < rooms.len() {
        batches.push(start..rooms.len());
    }
    batches
}

/// What a pass knows before planning any number.
struct PassView<'a> {
    /// Each running campaign's recipient zone keys open now.
    open_zones: &'a HashMap<Uuid, Vec<String>>,
    /// Numbers that could take a recipient today.
    available: &'a [Uuid],
    now: DateTime<Utc>,
}

/// What one number took in its batch's transaction.
#[derive(Default)]
struct Picked {
    assigned: Vec<Assigned>,
    /// The ones from campaigns (their recipients stick to the number).
    from_campaigns: Vec<i64>,
}

fn sorted_unique(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Planner {
    pub fn new(
        pool: Pool,
        publisher: Arc<Publisher>,
        topology: Topology,
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            pool,
            publisher,
            topology,
            config: config.scheduler.clone(),
            pacing: config.pacing.clone(),
            warmup: config.warmup.clone(),
            breaker: config.breaker.clone(),
            clock,
            declared: Mutex::new(HashSet::new()),
            last_breaker_pass: Mutex::new(None),
        }
    }

    pub async fn pass(&self) -> Result<PassReport, PlanError> {
        let started = Instant::now();
        let now = self.clock.now();
        self.housekeeping(now).await?;
        let mut report = PassReport::default();

        let (numbers, campaigns, direct) = {
            let mut client = self.pool.get().await.map_err(DbError::from)?;
            let tx = client.transaction().await.map_err(DbError::from)?;
            let numbers = db::planning::live_numbers(&tx, now).await?;
            tx.commit().await.map_err(DbError::from)?;
            (
                numbers,
                db::campaigns::running(&client).await?,
                db::messages::numbers_with_direct(&client)
                    .await?
                    .into_iter()
                    .collect::<HashSet<Uuid>>(),
            )
        };
        report.numbers = numbers.len();
        // Numbers that could take a recipient today: others leave their
        // sticky recipients alone.
        let available: Vec<Uuid> = numbers
            .iter()
            .filter(|n| self.allowance(n) > 0)
            .map(|n| n.id)
            .collect();
        let open_zones = open_zones_by_campaign(&campaigns, now);
        // Numbers are planned in batches of up to `plan_batch_jobs` jobs, a
        // transaction each, a few at a time (`plan_concurrency`): the row
        // locks that keep replicas apart keep these apart too, and the waits
        // for commits overlap. A batch's jobs are published after its commit
        // without holding its planning place, so the broker's confirms
        // overlap the planning of the next numbers instead of delaying it.
        let candidates = self.candidates(&numbers, &campaigns, &direct);
        let view = PassView {
            open_zones: &open_zones,
            available: &available,
            now,
        };
        let planning = Semaphore::new(self.config.plan_concurrency.max(1));
        // Each number's room as the pass's first read saw it (its
        // transaction reads it again under the lock).
        let rooms: Vec<i64> = candidates.iter().map(|c| self.room(c.number)).collect();
        let batches: Vec<&[Candidate<'_>]> = batches(&rooms, self.config.plan_batch_jobs)
            .into_iter()
            .map(|range| &candidates[range])
            .collect();
        let plans: Vec<_> = batches
            .iter()
            .map(|batch| self.plan_batch(batch, &view, &planning))
            .collect();
        let planned: Vec<Result<(usize, usize), PlanError>> = futures_util::stream::iter(plans)
            .buffer_unordered(batches.len().max(1))
            .collect()
            .await;
        report.planned = candidates.len();
        for result in planned {
            let (published, failed) = result?;
            report.scheduled += published;
            report.unpublished += failed;
        }
        report.republished = self.republish_stale().await?;
        report.completed = self.complete_finished().await?;
        self.maybe_judge_breakers(now).await?;
        metrics::histogram!(m::SCHEDULER_TICK).record(started.elapsed().as_secs_f64());
        Ok(report)
    }

    fn lookahead(&self, number: &LiveNumber) -> i64 {
        match number.breaker {
            BreakerState::Closed => self.config.lookahead,
            // One job at a time while on probation.
            BreakerState::Slowed | BreakerState::Open => 1,
        }
    }

    /// Jobs the number could take now: look-ahead left, within its allowance.
    fn room(&self, number: &LiveNumber) -> i64 {
        self.free_lookahead(number, number.in_flight)
            .min(self.allowance(number))
    }

    /// Places free in the number's look-ahead with `in_flight` jobs taken,
    /// counted only once at least half of it (rounded up) is free: a large
    /// look-ahead is refilled in large picks, not a few jobs a pass (the
    /// pipeline benchmark's 200 were refilled ~6 at a time, a pick statement
    /// each). With a look-ahead of 1 or 2, as by default, any free place
    /// counts, as before (docs/DESIGN.md, "Scheduling").
    fn free_lookahead(&self, number: &LiveNumber, in_flight: i64) -> i64 {
        let lookahead = self.lookahead(number);
        let free = lookahead - in_flight;
        if free * 2 >= lookahead { free } else { 0 }
    }

    fn plan_volume(&self, plan: &str, day_index: i64) -> i64 {
        self.warmup.volume(plan, day_index)
    }

    fn allowance(&self, number: &LiveNumber) -> i64 {
        daily_allowance(&AllowanceInputs {
            plan_volume: self.plan_volume(&number.warmup_plan, number.day_index),
            number_cap: i64::from(number.daily_cap),
            number_used: i64::from(number.used),
            tenant_cap: number.tenant_cap.map(i64::from),
            tenant_used: i64::from(number.tenant_used),
        })
    }

    fn candidates<'a>(
        &self,
        numbers: &'a [LiveNumber],
        campaigns: &'a [PlanningCampaign],
        direct: &HashSet<Uuid>,
    ) -> Vec<Candidate<'a>> {
        numbers
            .iter()
            .filter(|n| self.room(n) > 0)
            .filter_map(|number| {
                let serves: Vec<&PlanningCampaign> = campaigns
                    .iter()
                    .filter(|c| c.tenant_id == number.tenant_id)
                    .filter(|c| match &c.pool {
                        Some(tag) => number.tags.contains(tag),
                        None => c.senders.contains(&number.id),
                    })
                    .collect();
                let has_direct = direct.contains(&number.id);
                (has_direct || !serves.is_empty()).then_some(Candidate {
                    number,
                    campaigns: serves,
                    direct: has_direct,
                })
            })
            .collect()
    }

    /// Schedules what a batch of numbers may take now, in one transaction
    /// under their row locks, and publishes their jobs after its commit.
    /// Returns the jobs published and the jobs that could not be (put back in
    /// the queue).
    ///
    /// Round trips, not statements, are what a planning transaction waits
    /// for (docs/BENCHMARKS.md, "Numbers planned in batches"): each step
    /// below is one, for every number of the batch at once.
    async fn plan_batch(
        &self,
        batch: &[Candidate<'_>],
        view: &PassView<'_>,
        planning: &Semaphore,
    ) -> Result<(usize, usize), PlanError> {
        let permit = planning
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        // The row locks (in id order) make replicas plan a number one at a
        // time, and the counts read after them are fresh. The settings and
        // the locks are sent together.
        let ids: Vec<Uuid> = batch.iter().map(|c| c.number.id).collect();
        let ((), mut budgets) = tokio::try_join!(
            db::planning::for_planning(&tx),
            db::sender_usage::lock_today(&tx, &ids, view.now),
        )?;
        // A number deleted since the pass began is left out.
        let locked: Vec<(&Candidate<'_>, DayBudget)> = batch
            .iter()
            .filter_map(|c| Some((c, budgets.remove(&c.number.id)?)))
            .collect();
        let locked_ids: Vec<Uuid> = locked.iter().map(|(c, _)| c.number.id).collect();
        let tenant_ids: Vec<Uuid> = sorted_unique(locked.iter().map(|(c, _)| c.number.tenant_id));
        let campaign_ids: Vec<Uuid> = sorted_unique(
            locked
                .iter()
                .flat_map(|(c, _)| &c.campaigns)
                .filter(|c| view.open_zones.get(&c.id).is_some_and(|z| !z.is_empty()))
                .map(|c| c.id),
        );
        // Read after the numbers' locks, sent together: the tenants' budgets
        // (capped ones locked), the jobs in flight, and whether each campaign
        // with an open zone still runs. Paused or cancelled since the pass
        // began: its messages are left alone. Running: a share lock on its
        // row until the commit, so a pause that comes later waits for it and
        // then unschedules what these numbers pick.
        let share_if_running = |id: Uuid| {
            let tx = &tx;
            async move { Ok::<_, DbError>((id, db::campaigns::share_if_running(tx, id).await?)) }
        };
        let (tenants, in_flight, running) = tokio::try_join!(
            db::sender_usage::lock_tenants_today(&tx, &tenant_ids, view.now),
            db::messages::in_flight(&tx, &locked_ids),
            futures_util::future::try_join_all(campaign_ids.iter().copied().map(share_if_running)),
        )?;
        let running: HashSet<Uuid> = running
            .into_iter()
            .filter_map(|(id, running)| running.then_some(id))
            .collect();
        // Each number's room, in order: a capped tenant's numbers share what
        // is left of its budget (counted as if each took all its room).
        let mut reserved: HashMap<Uuid, i64> = HashMap::new();
        let mut rooms: Vec<(&Candidate<'_>, &DayBudget, i64)> = Vec::new();
        for (candidate, budget) in &locked {
            let number = candidate.number;
            let Some(tenant) = tenants.get(&number.tenant_id) else {
                continue;
            };
            let reserved = reserved.entry(number.tenant_id).or_default();
            let allowance = daily_allowance(&AllowanceInputs {
                plan_volume: self.plan_volume(&budget.warmup_plan, budget.day_index),
                number_cap: i64::from(budget.daily_cap),
                number_used: i64::from(budget.used),
                tenant_cap: tenant.cap.map(i64::from),
                tenant_used: i64::from(tenant.used) + *reserved,
            });
            let in_flight = in_flight.get(&number.id).copied().unwrap_or(0);
            let room = self.free_lookahead(number, in_flight).min(allowance).max(0);
            *reserved += room;
            if room > 0 {
                rooms.push((candidate, budget, room));
            }
        }
        // Every number's picks, pipelined: the server runs them one after
        // the other, each seeing what the ones before it took.
        let picked: Vec<Picked> =
            futures_util::future::try_join_all(rooms.iter().map(|&(candidate, budget, room)| {
                self.pick(&tx, candidate, budget, room, &running, view)
            }))
            .await?;
        let planned: Vec<(&Candidate<'_>, &DayBudget, Picked)> = rooms
            .iter()
            .zip(picked)
            .filter(|(_, picked)| !picked.assigned.is_empty())
            .map(|(&(candidate, budget, _), picked)| (candidate, budget, picked))
            .collect();
        if planned.is_empty() {
            return Ok((0, 0));
        }
        // The closing writes, sent together: each number's usage, each capped
        // tenant's, and the sticky senders (one statement, one order for
        // every planner).
        let usage: Vec<(Uuid, NaiveDate, i32)> = planned
            .iter()
            .map(|(c, budget, picked)| (c.number.id, budget.day, picked.assigned.len() as i32))
            .collect();
        let mut tenant_usage: BTreeMap<Uuid, i32> = BTreeMap::new();
        for (candidate, _, picked) in &planned {
            let tenant_id = candidate.number.tenant_id;
            if tenants[&tenant_id].cap.is_some() {
                *tenant_usage.entry(tenant_id).or_default() += picked.assigned.len() as i32;
            }
        }
        let senders: Vec<(Uuid, i64)> = planned
            .iter()
            .flat_map(|(c, _, picked)| picked.from_campaigns.iter().map(|&id| (c.number.id, id)))
            .collect();
        tokio::try_join!(
            db::sender_usage::add(&tx, &usage),
            futures_util::future::try_join_all(tenant_usage.iter().map(|(&id, &count)| {
                db::sender_usage::add_tenant(&tx, id, tenants[&id].day, count)
            })),
            db::messages::remember_senders(&tx, &senders),
        )?;
        tx.commit().await.map_err(DbError::from)?;
        drop(client);
        drop(permit);

        let published = futures_util::future::try_join_all(
            planned
                .iter()
                .map(|(c, _, picked)| self.publish_planned(c.number, &picked.assigned)),
        )
        .await?;
        Ok(published
            .into_iter()
            .fold((0, 0), |(sent, failed), (s, f)| (sent + s, failed + f)))
    }

    /// What one number may take now, within `room`: its direct messages
    /// first, then its running campaigns oldest first.
    async fn pick(
        &self,
        tx: &impl db::GenericClient,
        candidate: &Candidate<'_>,
        budget: &DayBudget,
        mut room: i64,
        running: &HashSet<Uuid>,
        view: &PassView<'_>,
    ) -> Result<Picked, DbError> {
        let number = candidate.number;
        let mut picked = Picked::default();
        if candidate.direct {
            let direct = db::messages::schedule_direct(tx, number.id, room).await?;
            room -= direct.len() as i64;
            picked.assigned.extend(direct);
        }
        for &campaign in &candidate.campaigns {
            if room == 0 {
                break;
            }
            if !running.contains(&campaign.id) {
                continue;
            }
            let Some(zones) = view.open_zones.get(&campaign.id) else {
                continue;
            };
            let mut got = Vec::new();
            let rooms = self
                .variant_rooms(tx, campaign, number.id, budget.day)
                .await?;
            for (variants, variant_room) in rooms {
                let limit = variant_room.min(room - got.len() as i64);
                if limit <= 0 {
                    continue;
                }
                let pick = Pick {
                    campaign_id: campaign.id,
                    number_id: number.id,
                    open_zones: zones,
                    variants: &variants,
                    limit,
                };
                // A time-locked number may only write to people it already
                // wrote to.
                let others = (number.state != NumberState::Timelocked).then_some(view.available);
                got.extend(db::messages::schedule_campaign(tx, &pick, others).await?);
            }
            if got.is_empty() {
                continue;
            }
            room -= got.len() as i64;
            if campaign.max_per_variant > 0 {
                let mut per_variant: HashMap<i16, i32> = HashMap::new();
                for a in &got {
                    *per_variant.entry(a.variant).or_default() += 1;
                }
                let counts: Vec<(i16, i32)> = per_variant.into_iter().collect();
                db::sender_usage::add_variants(tx, number.id, budget.day, campaign.id, &counts)
                    .await?;
            }
            picked.from_campaigns.extend(got.iter().map(|a| a.id));
            picked.assigned.extend(got);
        }
        Ok(picked)
    }

    /// Publishes a number's jobs after its planning commit; what cannot be
    /// published goes back to the queue (and the budgets), to be planned
    /// again. Returns the jobs published and those put back.
    async fn publish_planned(
        &self,
        number: &LiveNumber,
        assigned: &[Assigned],
    ) -> Result<(usize, usize), PlanError> {
        let ids: Vec<i64> = assigned.iter().map(|a| a.id).collect();
        let failed = self
            .publish_jobs(number.id, &ids, Some(self.job_pacing(number)))
            .await;
        if !failed.is_empty() {
            // Back to the queue, and their budgets given back.
            let client = self.pool.get().await.map_err(DbError::from)?;
            db::messages::unschedule(&client, &failed).await?;
        }
        metrics::counter!(m::JOBS_PUBLISHED, "reason" => "new")
            .increment((ids.len() - failed.len()) as u64);
        Ok((ids.len() - failed.len(), failed.len()))
    }

    /// How many more recipients each variant may go to from this number
    /// today: one group of every variant when there is no limit, else one
    /// group per variant with its remaining room, the most room first. A
    /// number thus spreads its day over the variants as it goes; taken in
    /// variant order instead, a number that fell behind the others found
    /// the early variants gone and the last one's limit too small for the
    /// rest of its day, and a campaign sized to its numbers' caps left
    /// messages for the next day (docs/DESIGN.md, "Variants").
    async fn variant_rooms(
        &self,
        client: &impl db::GenericClient,
        campaign: &PlanningCampaign,
        number_id: Uuid,
        day: chrono::NaiveDate,
    ) -> Result<Vec<(Vec<i16>, i64)>, DbError> {
        if campaign.max_per_variant == 0 {
            return Ok(vec![((0..campaign.variants).collect(), i64::MAX)]);
        }
        let used: HashMap<i16, i32> =
            db::sender_usage::variant_counts(client, number_id, day, campaign.id)
                .await?
                .into_iter()
                .collect();
        let mut rooms: Vec<(Vec<i16>, i64)> = (0..campaign.variants)
            .map(|v| {
                let left = campaign.max_per_variant - used.get(&v).copied().unwrap_or(0);
                (vec![v], i64::from(left.max(0)))
            })
            .filter(|(_, left)| *left > 0)
            .collect();
        // Stable: among equal rooms, variant order.
        rooms.sort_by_key(|(_, left)| std::cmp::Reverse(*left));
        Ok(rooms)
    }

    /// The pacing the worker applies to this number's next jobs.
    fn job_pacing(&self, number: &LiveNumber) -> JobPacing {
        let jitter = number.jitter.unwrap_or(self.pacing.default_jitter());
        let gap = number.min_gap_ms.max(0) as u64;
        if number.breaker == BreakerState::Closed {
            return JobPacing {
                min_gap_ms: gap,
                jitter,
            };
        }
        let factor = self.breaker.slow_factor.max(1.0);
        let scale = |ms: u64| (ms as f64 * factor) as u64;
        JobPacing {
            min_gap_ms: scale(gap),
            jitter: match jitter {
                Jitter::None => Jitter::None,
                Jitter::Uniform { max_ms } => Jitter::Uniform {
                    max_ms: scale(max_ms),
                },
                Jitter::Exponential { mean_ms, max_ms } => Jitter::Exponential {
                    mean_ms: scale(mean_ms),
                    max_ms: scale(max_ms),
                },
            },
        }
    }

    /// Publishes one send job per message; returns the ids whose job could not
    /// be published.
    async fn publish_jobs(
        &self,
        number_id: Uuid,
        message_ids: &[i64],
        pacing: Option<JobPacing>,
    ) -> Vec<i64> {
        if let Err(err) = self.ensure_queue(number_id).await {
            tracing::warn!(%number_id, error = %err, "cannot declare send queue");
            return message_ids.to_vec();
        }
        let queue = self.topology.send_queue(number_id);
        let payloads: Vec<Vec<u8>> = message_ids
            .iter()
            .map(|&message_id| {
                serde_json::to_vec(&SendTask::Send {
                    message_id,
                    number_id,
                    pacing,
                })
                .expect("tasks serialise")
            })
            .collect();
        let outgoing: Vec<Outgoing<'_>> = payloads
            .iter()
            .map(|payload| Outgoing {
                exchange: "",
                routing_key: &queue,
                payload,
            })
            .collect();
        let results = self.publisher.publish_all(&outgoing).await;
        let mut failed = Vec::new();
        for (id, result) in message_ids.iter().zip(results) {
            if let Err(err) = result {
                tracing::warn!(%number_id, message_id = id, error = %err, "send job not published");
                failed.push(*id);
            }
        }
        failed
    }

    async fn ensure_queue(&self, number_id: Uuid) -> Result<(), QueueError> {
        let mut declared = self.declared.lock().await;
        if declared.contains(&number_id) {
            return Ok(());
        }
        let channel = self.publisher.channel().await?;
        self.topology
            .declare_send_queue(&channel, number_id)
            .await?;
        declared.insert(number_id);
        Ok(())
    }

    /// Jobs for messages still `scheduled` long after publication were lost
    /// (crash between commit and publish, a purged queue): publish them again.
    /// They carry no pacing: the worker uses the number's defaults.
    async fn republish_stale(&self) -> Result<usize, PlanError> {
        let stale = {
            let client = self.pool.get().await.map_err(DbError::from)?;
            db::messages::stale_scheduled(&client, self.config.republish_after(), 1000).await?
        };
        let mut by_number: BTreeMap<Uuid, Vec<i64>> = Default::default();
        for (message_id, number_id) in stale {
            by_number.entry(number_id).or_default().push(message_id);
        }
        let mut republished = 0;
        for (number_id, ids) in by_number {
            let failed = self.publish_jobs(number_id, &ids, None).await;
            republished += ids.len() - failed.len();
        }
        if republished > 0 {
            tracing::warn!(republished, "republished lost send jobs");
            metrics::counter!(m::JOBS_PUBLISHED, "reason" => "republish")
                .increment(republished as u64);
        }
        Ok(republished)
    }

    /// Marks campaigns with no pending message completed, announcing each
    /// through the outbox in the same transaction (the API's relay publishes
    /// it).
    async fn complete_finished(&self) -> Result<Vec<Uuid>, PlanError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let done = db::campaigns::complete_finished(&tx).await?;
        for (campaign_id, tenant_id) in &done {
            let body = EventBody::CampaignCompleted(EventBody::campaign(*campaign_id, None));
            outbox::enqueue(&tx, &Event::new(*tenant_id, body)).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        for (campaign_id, _) in &done {
            tracing::info!(%campaign_id, "campaign completed");
            metrics::counter!(m::CAMPAIGNS_COMPLETED).increment(1);
        }
        Ok(done.into_iter().map(|(id, _)| id).collect())
    }
}

/// For each running campaign, its recipient zone keys whose send window is
/// open at `now`.
pub(crate) fn open_zones_by_campaign(
    campaigns: &[PlanningCampaign],
    now: DateTime<Utc>,
) -> HashMap<Uuid, Vec<String>> {
    campaigns
        .iter()
        .map(|c| {
            let open = c
                .zones
                .iter()
                .filter(|key| {
                    let key = ZoneKey::stored(key.as_str());
                    is_open(&deciding_zones(&key, &c.window, now), &c.window, now)
                })
                .cloned()
                .collect();
            (c.id, open)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::batches;

    #[test]
    fn numbers_with_a_job_or_two_share_a_batch_and_a_busy_one_is_alone() {
        assert_eq!(batches(&[2; 40], 32), [0..16, 16..32, 32..40]);
        assert_eq!(batches(&[200, 200, 1], 32), [0..1, 1..2, 2..3]);
        assert_eq!(
            batches(&[1, 200, 2, 2, 40, 1], 32),
            [0..1, 1..2, 2..4, 4..5, 5..6]
        );
        assert_eq!(batches(&[30, 2, 1], 32), [0..2, 2..3]);
        assert!(batches(&[], 32).is_empty());
    }
}
