//! The circuit breaker of a number: when too many of its recent sends fail or
//! are never delivered, WhatsApp is likely throttling or about to ban it.
//! First it is **slowed** (longer gaps, one job at a time); if things get
//! worse it is **stopped** for a while, then given a probation at the slow
//! pace, judged only on what it sends from then on.

use postgres_types::{FromSql, ToSql};
use serde::{Deserialize, Serialize};

/// Mirrors the Postgres enum `breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSql, FromSql)]
#[postgres(name = "breaker_state")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BreakerState {
    #[postgres(name = "closed")]
    Closed,
    #[postgres(name = "slowed")]
    Slowed,
    #[postgres(name = "open")]
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Slowed => "slowed",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Recent sends looked at (the newest ones, since the last change).
    pub window: i64,
    /// Fewer finished sends than this: no judgement.
    pub min_sample: i64,
    pub slow_failure_ratio: f64,
    pub stop_failure_ratio: f64,
    pub slow_undelivered_ratio: f64,
    pub stop_undelivered_ratio: f64,
    /// A sent message not delivered after this long counts as undelivered.
    pub undelivered_after_ms: u64,
    /// Gap multiplier while slowed.
    pub slow_factor: f64,
    /// How long a stopped number stays stopped.
    pub stop_for_ms: u64,
    /// How often the breakers are evaluated.
    pub interval_ms: u64,
}

/// A number's recent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Sends with an outcome (sent or later, failed, unknown).
    pub finished: i64,
    /// Refused or lost (`failed`, `unknown`).
    pub failed: i64,
    /// Sent long enough ago to have been delivered.
    pub matured: i64,
    /// Of those, never delivered.
    pub undelivered: i64,
}

/// The state a breaker should be in, given its current state and sample.
/// An open breaker is not judged here: it reopens (slowed) when its time is up.
pub fn judge(config: &BreakerConfig, current: BreakerState, sample: &Sample) -> BreakerState {
    if current == BreakerState::Open || sample.finished < config.min_sample {
        return current;
    }
    let failure = sample.failed as f64 / sample.finished as f64;
    let undelivered = if sample.matured >= config.min_sample {
        sample.undelivered as f64 / sample.matured as f64
    } else {
        0.0
    };
    if failure >= config.stop_failure_ratio || undelivered >= config.stop_undelivered_ratio {
        return BreakerState::Open;
    }
    if failure >= config.slow_failure_ratio || undelivered >= config.slow_undelivered_ratio {
        return BreakerState::Slowed;
    }
    // Out of probation only once well clear of the slow thresholds.
    let clear = failure < config.slow_failure_ratio / 2.0
        && undelivered < config.slow_undelivered_ratio / 2.0;
    if current == BreakerState::Slowed && !clear {
        BreakerState::Slowed
    } else {
        BreakerState::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 50,
            min_sample: 20,
            slow_failure_ratio: 0.1,
            stop_failure_ratio: 0.25,
            slow_undelivered_ratio: 0.3,
            stop_undelivered_ratio: 0.5,
            undelivered_after_ms: 900_000,
            slow_factor: 3.0,
            stop_for_ms: 3_600_000,
            interval_ms: 30_000,
        }
    }

    fn sample(finished: i64, failed: i64, matured: i64, undelivered: i64) -> Sample {
        Sample {
            finished,
            failed,
            matured,
            undelivered,
        }
    }

    #[test]
    fn rising_failures_slow_then_stop_a_number() {
        let c = config();
        use BreakerState::*;
        assert_eq!(judge(&c, Closed, &sample(50, 2, 0, 0)), Closed);
        assert_eq!(judge(&c, Closed, &sample(50, 6, 0, 0)), Slowed);
        assert_eq!(judge(&c, Slowed, &sample(50, 13, 0, 0)), Open);
        assert_eq!(
            judge(&c, Closed, &sample(50, 0, 40, 14)),
            Slowed,
            "undelivered"
        );
        assert_eq!(
            judge(&c, Closed, &sample(50, 0, 40, 20)),
            Open,
            "undelivered"
        );
    }

    #[test]
    fn small_samples_and_open_breakers_are_left_alone() {
        let c = config();
        assert_eq!(
            judge(&c, BreakerState::Closed, &sample(10, 10, 0, 0)),
            BreakerState::Closed
        );
        assert_eq!(
            judge(&c, BreakerState::Open, &sample(50, 0, 0, 0)),
            BreakerState::Open
        );
        // Too few matured sends to judge delivery.
        assert_eq!(
            judge(&c, BreakerState::Closed, &sample(50, 0, 5, 5)),
            BreakerState::Closed
        );
    }

    #[test]
    fn probation_ends_only_well_clear_of_the_threshold() {
        let c = config();
        assert_eq!(
            judge(&c, BreakerState::Slowed, &sample(50, 4, 0, 0)),
            BreakerState::Slowed
        );
        assert_eq!(
            judge(&c, BreakerState::Slowed, &sample(50, 1, 0, 0)),
            BreakerState::Closed
        );
    }
}
