//! A campaign's messages per state, counted at most once per
//! `api.counts_max_age_ms` for each campaign.
//!
//! Counting is a `GROUP BY` over the campaign's messages: a few milliseconds
//! for ten thousand, hundreds for a million. Dashboards poll it, often several
//! at once, so recounting on every request made the cost of a poll grow with
//! both the campaign and the number of people watching it
//! (docs/BENCHMARKS.md, "API latency"). Counts are kept per campaign with the
//! campaign status they were counted under; a request reuses them while they
//! are younger than the maximum age and the status has not changed since.
//! When they are older, one request recounts while the others, meanwhile,
//! answer with the previous counts. Requests that change a campaign recount,
//! and a new suppression (which stops queued messages) forgets its tenant's
//! counts: a client reads its own writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_shared::domain::{CampaignStatus, MessageState};
use uuid::Uuid;

pub type Counts = Arc<Vec<(MessageState, i64)>>;

/// Campaigns kept before old entries are swept.
const SWEEP_ABOVE: usize = 4_096;

pub struct CountsCache {
    max_age: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    /// When each tenant's counts were last forgotten: a count begun before
    /// then is not kept.
    forgotten: HashMap<Uuid, Instant>,
}

struct Entry {
    tenant: Uuid,
    status: CampaignStatus,
    counts: Counts,
    /// When the count began (its snapshot is at least this recent).
    counted_at: Instant,
    /// A request began recounting these stale counts at this time.
    recount_started: Option<Instant>,
}

/// What a caller does about a campaign's counts.
pub enum Lookup {
    /// Use these.
    Use(Counts),
    /// Count, then [`CountsCache::store`] what was counted, with the instant
    /// taken before counting.
    Count(Instant),
}

impl CountsCache {
    /// A zero maximum age counts on every request.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Counts of `campaign`, now in `status`, that are still good, or the
    /// instruction to count them.
    pub fn lookup(&self, campaign: Uuid, status: CampaignStatus) -> Lookup {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("counts cache lock");
        let Some(entry) = inner
            .entries
            .get_mut(&campaign)
            .filter(|e| e.status == status)
        else {
            return Lookup::Count(now);
        };
        if now.duration_since(entry.counted_at) < self.max_age {
            return Lookup::Use(entry.counts.clone());
        }
        // Stale: one request recounts; the others answer with what is here
        // until it is done (or has taken longer than the maximum age, say
        // because it failed: then another one tries).
        match entry.recount_started {
            Some(started) if now.duration_since(started) < self.max_age => {
                Lookup::Use(entry.counts.clone())
            }
            _ => {
                entry.recount_started = Some(now);
                Lookup::Count(now)
            }
        }
    }

    /// Keeps what was counted from `counted_at` on, unless a newer count of
    /// the campaign is already kept.
    pub fn store(
        &self,
        (tenant, campaign): (Uuid, Uuid),
        status: CampaignStatus,
        counted_at: Instant,
        counts: Vec<(MessageState, i64)>,
    ) -> Counts {
        let counts = Arc::new(counts);
        if self.max_age.is_zero() {
            return counts;
        }
        let mut inner = self.inner.lock().expect("counts cache lock");
        let newer_kept = inner
            .entries
            .get(&campaign)
            .is_some_and(|kept| kept.counted_at > counted_at && kept.status == status);
        let forgotten_since = inner
            .forgotten
            .get(&tenant)
            .is_some_and(|forgotten| counted_at < *forgotten);
        if newer_kept || forgotten_since {
            return counts;
        }
        if inner.entries.len() >= SWEEP_ABOVE {
            let max_age = self.max_age;
            inner
                .entries
                .retain(|_, e| e.counted_at.elapsed() < max_age);
        }
        inner.entries.insert(
            campaign,
            Entry {
                tenant,
                status,
                counts: counts.clone(),
                counted_at,
                recount_started: None,
            },
        );
        counts
    }

    /// Counts of the tenant's campaigns are recounted at their next request.
    pub fn forget_tenant(&self, tenant: Uuid) {
        let mut inner = self.inner.lock().expect("counts cache lock");
        inner.entries.retain(|_, e| e.tenant != tenant);
        inner.forgotten.insert(tenant, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: Uuid = Uuid::from_u128(1);

    fn counted(n: i64) -> Vec<(MessageState, i64)> {
        vec![(MessageState::Queued, n)]
    }

    fn used(lookup: Lookup) -> Option<i64> {
        match lookup {
            Lookup::Use(counts) => Some(counts[0].1),
            Lookup::Count(_) => None,
        }
    }

    #[test]
    fn counts_are_reused_until_they_age_or_the_status_changes() {
        let cache = CountsCache::new(Duration::from_secs(3600));
        let id = Uuid::now_v7();
        let Lookup::Count(at) = cache.lookup(id, CampaignStatus::Running) else {
            panic!("nothing kept yet");
        };
        cache.store((TENANT, id), CampaignStatus::Running, at, counted(5));
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), Some(5));
        assert_eq!(
            used(cache.lookup(Uuid::now_v7(), CampaignStatus::Running)),
            None
        );
        // Paused since: its counts are recounted at once.
        assert_eq!(used(cache.lookup(id, CampaignStatus::Paused)), None);
    }

    /// A cache keeping counts for `max_age`, given a running campaign's
    /// counts (5 queued) just now.
    fn kept(max_age: Duration) -> (CountsCache, Uuid) {
        let cache = CountsCache::new(max_age);
        let id = Uuid::now_v7();
        cache.store(
            (TENANT, id),
            CampaignStatus::Running,
            Instant::now(),
            counted(5),
        );
        (cache, id)
    }

    /// Counts kept for 50 ms, given 60 ms ago.
    fn stale_counts() -> (CountsCache, Uuid) {
        let kept = kept(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        kept
    }

    #[test]
    fn one_request_recounts_stale_counts_while_the_others_reuse_them() {
        let (cache, id) = stale_counts();
        let Lookup::Count(at) = cache.lookup(id, CampaignStatus::Running) else {
            panic!("stale counts are recounted");
        };
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), Some(5));
        cache.store((TENANT, id), CampaignStatus::Running, at, counted(7));
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), Some(7));
        // An older count arriving late does not replace a newer one.
        cache.store(
            (TENANT, id),
            CampaignStatus::Running,
            at - Duration::from_millis(1),
            counted(6),
        );
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), Some(7));
    }

    #[test]
    fn a_recount_that_never_finished_is_taken_over() {
        let (cache, id) = stale_counts();
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), None);
    }

    #[test]
    fn forgetting_a_tenant_recounts_its_campaigns_only() {
        let cache = CountsCache::new(Duration::from_secs(3600));
        let (mine, theirs) = (Uuid::now_v7(), Uuid::now_v7());
        cache.store(
            (TENANT, mine),
            CampaignStatus::Running,
            Instant::now(),
            counted(5),
        );
        let other = Uuid::from_u128(2);
        cache.store(
            (other, theirs),
            CampaignStatus::Running,
            Instant::now(),
            counted(6),
        );
        let begun = Instant::now();
        cache.forget_tenant(TENANT);
        assert_eq!(used(cache.lookup(mine, CampaignStatus::Running)), None);
        assert_eq!(used(cache.lookup(theirs, CampaignStatus::Running)), Some(6));
        // A count begun before the tenant was forgotten is not kept.
        cache.store((TENANT, mine), CampaignStatus::Running, begun, counted(5));
        assert_eq!(used(cache.lookup(mine, CampaignStatus::Running)), None);
        cache.store(
            (TENANT, mine),
            CampaignStatus::Running,
            Instant::now(),
            counted(4),
        );
        assert_eq!(used(cache.lookup(mine, CampaignStatus::Running)), Some(4));
    }

    #[test]
    fn a_zero_maximum_age_counts_every_time() {
        let (cache, id) = kept(Duration::ZERO);
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), None);
        assert_eq!(used(cache.lookup(id, CampaignStatus::Running)), None);
    }
}
