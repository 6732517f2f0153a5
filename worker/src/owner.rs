//! The lease keeper: which numbers this worker drives.
//!
//! Every `lease_renew` it heartbeats, renews the leases it holds (a lease that
//! did not renew was taken over: its number is dropped at once), and evens out
//! the load: it takes free numbers up to its fair share (leasable numbers / live
//! workers, rounded up) and hands back one number per round while it holds more
//! than that, so a newly started worker gets its part within a few rounds.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use herald_shared::{db, metrics as m};
use rand::RngExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Context, lease::Lease, number};

struct Owned {
    lease: Arc<Lease>,
    /// Cancelled to let the number go.
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct Keeper {
    ctx: Arc<Context>,
    owned: HashMap<Uuid, Owned>,
}

impl Keeper {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            owned: HashMap::new(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.ctx.config.lease_renew());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => self.round().await,
            }
        }
        self.release_all().await;
    }

    /// How long the worker may act on a lease after a renewal was requested.
    fn usable_for(&self) -> std::time::Duration {
        self.ctx
            .config
            .lease_ttl()
            .saturating_sub(self.ctx.config.lease_margin())
    }

    async fn round(&mut self) {
        let started = Instant::now();
        self.reap_stopped().await;
        let client = match self.ctx.pool.get().await {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "lease keeper: database unavailable");
                return;
            }
        };
        if let Err(err) = db::workers::heartbeat(&client, &self.ctx.id).await {
            tracing::warn!(error = %err, "heartbeat failed");
        }
        self.renew(&client, started).await;
        let share = match self.fair_share(&client).await {
            Ok(share) => share,
            Err(err) => {
                tracing::warn!(error = %err, "could not size this worker's share");
                return;
            }
        };
        if self.owned.len() < share {
            self.acquire(&client, share - self.owned.len(), started)
                .await;
        } else if self.owned.len() > share {
            self.release_one().await;
        }
        metrics::gauge!(m::NUMBERS_OWNED).set(self.owned.len() as f64);
    }

    /// Numbers whose task ended by itself (logged out, poisoned lease).
    async fn reap_stopped(&mut self) {
        let done: Vec<Uuid> = self
            .owned
            .iter()
            .filter(|(_, o)| o.task.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for number_id in done {
            let owned = self.owned.remove(&number_id).expect("listed above");
            if owned.lease.is_poisoned() {
                // Let it expire: its next owner settles what we could not.
                metrics::counter!(m::LEASE_CHANGES, "change" => "lost").increment(1);
            } else {
                self.give_back(number_id, &owned.lease).await;
            }
        }
    }

    async fn renew(&mut self, client: &deadpool_postgres::Client, started: Instant) {
        let held: Vec<(Uuid, i64)> = self
            .owned
            .iter()
            .filter(|(_, o)| !o.lease.is_poisoned())
            .map(|(id, o)| (*id, o.lease.epoch))
            .collect();
        if held.is_empty() {
            return;
        }
        let renewed = match db::number_leases::renew(
            client,
            &self.ctx.id,
            &held,
            self.ctx.config.lease_ttl(),
        )
        .await
        {
            Ok(renewed) => renewed,
            Err(err) => {
                // The local deadlines run on; numbers stop sending if this
                // keeps failing.
                tracing::warn!(error = %err, "lease renewal failed");
                return;
            }
        };
        let usable_for = self.usable_for();
        let mut let_go = Vec::new();
        for (number_id, _) in held {
            match renewed.iter().find(|r| r.number_id == number_id) {
                Some(renewal) => {
                    self.owned[&number_id].lease.renewed(started, usable_for);
                    if !renewal.still_driven {
                        let_go.push(number_id);
                    }
                }
                None => {
                    if let Some(lost) = self.owned.remove(&number_id) {
                        tracing::warn!(%number_id, "lease lost to another worker: stopping the number");
                        lost.lease.poison();
                        lost.stop.cancel();
                        metrics::counter!(m::LEASE_CHANGES, "change" => "lost").increment(1);
                    }
                }
            }
        }
        // Disabled, unlinked, or a pairing that ended: stop driving them.
        for number_id in let_go {
            if let Some(owned) = self.owned.remove(&number_id) {
                tracing::info!(%number_id, "number no longer driven here: letting it go");
                owned.stop.cancel();
                let _ = owned.task.await;
                self.give_back(number_id, &owned.lease).await;
            }
        }
    }

    async fn fair_share(&self, client: &deadpool_postgres::Client) -> Result<usize, db::DbError> {
        let kinds = self.ctx.connectors.kinds();
        let leasable = db::number_leases::leasable_count(client, &kinds).await?;
        let workers = db::workers::live_count(client, self.ctx.config.worker_ttl())
            .await?
            .max(1);
        let share = (leasable + workers - 1) / workers;
        Ok((share.max(0) as usize).min(self.ctx.config.max_numbers))
    }

    async fn acquire(
        &mut self,
        client: &deadpool_postgres::Client,
        wanted: usize,
        started: Instant,
    ) {
        let kinds = self.ctx.connectors.kinds();
        let candidates = match db::number_leases::available(client, &kinds, wanted as i64).await {
            Ok(candidates) => candidates,
            Err(err) => {
                tracing::warn!(error = %err, "listing free numbers failed");
                return;
            }
        };
        for (position, number_id) in candidates.into_iter().enumerate() {
            let epoch = match db::number_leases::acquire(
                client,
                number_id,
                &self.ctx.id,
                self.ctx.config.lease_ttl(),
            )
            .await
            {
                Ok(Some(epoch)) => epoch,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(%number_id, error = %err, "taking lease failed");
                    continue;
                }
            };
            // The previous owner may have died between a claim and its outcome.
            match db::messages::abandon_stale_claims(client, number_id, epoch).await {
                Ok(0) => {}
                Ok(count) => {
                    tracing::warn!(%number_id, count, "previous owner left messages mid-send: marked unknown");
                    metrics::counter!(m::MESSAGES, "state" => "unknown").increment(count);
                }
                Err(err) => {
                    // Without this the number must not be driven (a stale
                    // `sending` row would block nothing, but stay unresolved):
                    // give the lease back and try again later.
                    tracing::warn!(%number_id, error = %err, "settling previous owner's claims failed");
                    let _ =
                        db::number_leases::release(client, number_id, &self.ctx.id, epoch).await;
                    continue;
                }
            }
            let lease = Arc::new(Lease::new(number_id, epoch, started, self.usable_for()));
            let stop = CancellationToken::new();
            // Staggered, with jitter: a round that takes many numbers never
            // connects them all at once.
            let stagger = self.ctx.config.connect_stagger();
            let jitter = rand::rng().random_range(0..=stagger.as_millis() as u64);
            let start_after = stagger * position as u32 + Duration::from_millis(jitter);
            let task = tokio::spawn(number::drive(
                self.ctx.clone(),
                number_id,
                lease.clone(),
                stop.clone(),
                start_after,
            ));
            tracing::info!(%number_id, epoch, "lease acquired");
            metrics::counter!(m::LEASE_CHANGES, "change" => "acquired").increment(1);
            self.owned.insert(number_id, Owned { lease, stop, task });
        }
    }

    /// Lets one number go gracefully (its in-flight send finishes first).
    async fn release_one(&mut self) {
        let Some(number_id) = self.owned.keys().next().copied() else {
            return;
        };
        let owned = self.owned.remove(&number_id).expect("key just read");
        owned.stop.cancel();
        let _ = owned.task.await;
        tracing::info!(%number_id, "handing number over to balance load");
        self.give_back(number_id, &owned.lease).await;
    }

    async fn give_back(&self, number_id: Uuid, lease: &Lease) {
        let released = match self.ctx.pool.get().await {
            Ok(client) => {
                db::number_leases::release(&client, number_id, &self.ctx.id, lease.epoch).await
            }
            Err(err) => Err(err.into()),
        };
        match released {
            Ok(_) => metrics::counter!(m::LEASE_CHANGES, "change" => "released").increment(1),
            Err(err) => {
                tracing::warn!(%number_id, error = %err, "could not release lease; it will expire")
            }
        }
    }

    /// At shutdown: stop every number (in-flight sends finish), then give the
    /// leases back so other workers take over without waiting for expiry.
    async fn release_all(&mut self) {
        for owned in self.owned.values() {
            owned.stop.cancel();
        }
        let owned: Vec<(Uuid, Owned)> = self.owned.drain().collect();
        for (number_id, owned) in owned {
            let _ = owned.task.await;
            if !owned.lease.is_poisoned() {
                self.give_back(number_id, &owned.lease).await;
            }
        }
        if let Ok(client) = self.ctx.pool.get().await {
            let _ = db::workers::remove(&client, &self.ctx.id).await;
        }
        metrics::gauge!(m::NUMBERS_OWNED).set(0.0);
    }
}
