//! API keys checked against Postgres at most once per `api.key_cache_ms` for
//! each key and API process.
//!
//! Every request under `/v1` names its key, and finding the key's tenant was
//! a checkout of the service pool and a round trip on every request, one of
//! the eight a single send makes (docs/BENCHMARKS.md, "API latency"). A key
//! found valid is kept with the instant its lookup began; a request within
//! the maximum age of that instant uses the kept tenant. So a key revoked
//! (`herald-api keys revoke`) is refused by every API process at most
//! `api.key_cache_ms` after the revocation commits. Only valid keys are kept:
//! a key that does not exist, or is revoked, is looked up on every request
//! (and rate limited like any other, `crate::middleware::rate_limit`), so a
//! new key works at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Most keys kept: past it the expired ones are swept out, and while it is
/// still full of fresh ones, further keys are looked up every time.
const MAX_KEPT: usize = 4_096;

pub struct KeyCache {
    max_age: Duration,
    /// By the key's SHA-256: the tenant and when its lookup began.
    kept: Mutex<HashMap<[u8; 32], (Uuid, Instant)>>,
}

impl KeyCache {
    /// A zero maximum age looks every key up on every request.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant of the key with this hash, if it was found valid by a
    /// lookup that began less than the maximum age ago.
    pub fn tenant(&self, key_hash: &[u8; 32]) -> Option<Uuid> {
        let kept = self.kept.lock().expect("key cache lock");
        kept.get(key_hash)
            .filter(|(_, checked_at)| checked_at.elapsed() < self.max_age)
            .map(|(tenant, _)| *tenant)
    }

    /// Keeps a key that a lookup begun at `checked_at` found valid.
    pub fn keep(&self, key_hash: [u8; 32], tenant: Uuid, checked_at: Instant) {
        if self.max_age.is_zero() {
            return;
        }
        let mut kept = self.kept.lock().expect("key cache lock");
        if kept.len() >= MAX_KEPT && !kept.contains_key(&key_hash) {
            let max_age = self.max_age;
            kept.retain(|_, (_, at)| at.elapsed() < max_age);
            if kept.len() >= MAX_KEPT {
                return;
            }
        }
        let newer_kept = kept.get(&key_hash).is_some_and(|(_, at)| *at > checked_at);
        if !newer_kept {
            kept.insert(key_hash, (tenant, checked_at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys kept, expired ones included until the next sweep.
    fn kept(cache: &KeyCache) -> usize {
        cache.kept.lock().unwrap().len()
    }

    fn hash(n: u32) -> [u8; 32] {
        let mut hash = [0; 32];
        hash[..4].copy_from_slice(&n.to_be_bytes());
        hash
    }

    #[test]
    fn a_kept_key_answers_until_its_lookup_is_older_than_the_maximum_age() {
        let cache = KeyCache::new(Duration::from_millis(200));
        let tenant = Uuid::now_v7();
        assert_eq!(cache.tenant(&hash(1)), None, "never looked up");
        cache.keep(hash(1), tenant, Instant::now());
        assert_eq!(cache.tenant(&hash(1)), Some(tenant));
        assert_eq!(cache.tenant(&hash(2)), None, "another key");
        // A lookup that began long ago is already too old to answer with.
        let stale = Instant::now() - Duration::from_millis(300);
        cache.keep(hash(3), tenant, stale);
        assert_eq!(cache.tenant(&hash(3)), None);
    }

    #[test]
    fn an_older_lookup_does_not_replace_a_newer_one() {
        let cache = KeyCache::new(Duration::from_millis(200));
        let tenant = Uuid::now_v7();
        let now = Instant::now();
        cache.keep(hash(1), tenant, now);
        cache.keep(hash(1), tenant, now - Duration::from_millis(300));
        assert_eq!(cache.tenant(&hash(1)), Some(tenant));
    }

    #[test]
    fn a_zero_maximum_age_keeps_nothing() {
        let cache = KeyCache::new(Duration::ZERO);
        cache.keep(hash(1), Uuid::now_v7(), Instant::now());
        assert_eq!(kept(&cache), 0);
        assert_eq!(cache.tenant(&hash(1)), None);
    }

    #[test]
    fn expired_keys_are_swept_once_many_are_kept() {
        let cache = KeyCache::new(Duration::from_millis(200));
        let old = Instant::now() - Duration::from_secs(1);
        for n in 0..MAX_KEPT as u32 {
            cache.keep(hash(n), Uuid::now_v7(), old);
        }
        assert_eq!(kept(&cache), MAX_KEPT);
        let tenant = Uuid::now_v7();
        cache.keep(hash(u32::MAX), tenant, Instant::now());
        assert_eq!(kept(&cache), 1, "only the fresh key is left");
        assert_eq!(cache.tenant(&hash(u32::MAX)), Some(tenant));
    }

    #[test]
    fn a_cache_full_of_fresh_keys_keeps_no_more() {
        let cache = KeyCache::new(Duration::from_secs(60));
        for n in 0..MAX_KEPT as u32 {
            cache.keep(hash(n), Uuid::now_v7(), Instant::now());
        }
        cache.keep(hash(u32::MAX), Uuid::now_v7(), Instant::now());
        assert_eq!(kept(&cache), MAX_KEPT);
        assert_eq!(cache.tenant(&hash(u32::MAX)), None, "looked up every time");
        // A key already kept is still refreshed.
        let tenant = Uuid::now_v7();
        cache.keep(hash(0), tenant, Instant::now());
        assert_eq!(cache.tenant(&hash(0)), Some(tenant));
    }
}
