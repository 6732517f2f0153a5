//! A worker's local knowledge of one lease: which epoch it holds, and until
//! when it may act on it, measured on the monotonic clock.
//!
//! The keeper extends the local deadline to `renewal start + ttl - margin` after
//! each successful renewal. Starting the count before the renewal statement was
//! sent, and keeping a margin, means the deadline always passes before the row's
//! `expires_at` can, whatever the database's clock or a stalled process
//! (SIGSTOP, GC-like pauses) do: a worker never sends on a number someone else
//! may already own.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

#[derive(Debug)]
pub struct Lease {
    pub number_id: Uuid,
    /// Fencing epoch: every claim is checked against it in Postgres.
    pub epoch: i64,
    valid_until: Mutex<Instant>,
    /// Set when the worker must stop acting under this epoch for good (an
    /// outcome it could not record). A poisoned lease is never renewed.
    poisoned: AtomicBool,
}

impl Lease {
    /// A lease just acquired by a statement sent at `requested_at`.
    pub fn new(number_id: Uuid, epoch: i64, requested_at: Instant, usable_for: Duration) -> Self {
        Self {
            number_id,
            epoch,
            valid_until: Mutex::new(requested_at + usable_for),
            poisoned: AtomicBool::new(false),
        }
    }

    pub fn is_valid(&self) -> bool {
        !self.is_poisoned() && Instant::now() < *self.valid_until.lock().expect("lease lock")
    }

    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Time left before the worker must stop acting on the number.
    pub fn remaining(&self) -> Duration {
        if self.is_poisoned() {
            return Duration::ZERO;
        }
        self.valid_until
            .lock()
            .expect("lease lock")
            .saturating_duration_since(Instant::now())
    }

    /// A renewal sent at `requested_at` succeeded.
    pub fn renewed(&self, requested_at: Instant, usable_for: Duration) {
        let mut until = self.valid_until.lock().expect("lease lock");
        *until = (*until).max(requested_at + usable_for);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_runs_from_the_request_and_only_moves_forward() {
        let start = Instant::now();
        let lease = Lease::new(Uuid::nil(), 1, start, Duration::from_secs(10));
        assert!(lease.is_valid());
        assert!(lease.remaining() <= Duration::from_secs(10));
        lease.renewed(start, Duration::from_secs(1));
        assert!(
            lease.remaining() > Duration::from_secs(5),
            "an older renewal never shortens it"
        );
        let expired = Lease::new(
            Uuid::nil(),
            1,
            start - Duration::from_secs(20),
            Duration::from_secs(10),
        );
        assert!(!expired.is_valid());
        assert_eq!(expired.remaining(), Duration::ZERO);
    }
}
