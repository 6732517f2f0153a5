//! How a worker spaces the sends of one number and how long it shows
//! "typing…": the human-looking rhythm that keeps numbers alive.
//!
//! Two sends from a number are at least its minimum gap apart, plus a random
//! extra so the rhythm is never metronome-regular. "typing…" takes the last part
//! of that wait, for a time that grows with the text, so a short note and a long
//! offer look different, and the gap holds whatever the typing time.

use std::time::Duration;

use herald_shared::{config::PacingConfig, policy::jitter::Jitter};
use rand::{Rng, RngExt};

/// Typing-time settings; the gap and its jitter come with each job.
#[derive(Debug, Clone)]
pub struct Pacing {
    typing_per_char: Duration,
    typing_min: Duration,
    typing_max: Duration,
    typing_jitter: f64,
}

/// The wait before one send: idle first, then typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub idle: Duration,
    pub typing: Duration,
}

impl Pacing {
    pub fn new(config: &PacingConfig) -> Self {
        Self {
            typing_per_char: Duration::from_millis(config.typing_ms_per_char),
            typing_min: Duration::from_millis(config.typing_min_ms),
            typing_max: Duration::from_millis(config.typing_max_ms.max(config.typing_min_ms)),
            typing_jitter: config.typing_jitter.clamp(0.0, 1.0),
        }
    }

    /// Gap before the next send: `min_gap` plus a draw from `jitter`.
    pub fn gap(&self, min_gap: Duration, jitter: &Jitter, rng: &mut impl Rng) -> Duration {
        min_gap + jitter.sample(rng)
    }

    /// "typing…" time for a text of `chars` characters: proportional, within
    /// `[typing_min, typing_max]`, scaled by a random factor around 1.
    pub fn typing(&self, chars: usize, rng: &mut impl Rng) -> Duration {
        let base = (self.typing_per_char * chars as u32).clamp(self.typing_min, self.typing_max);
        if self.typing_jitter == 0.0 || base.is_zero() {
            return base;
        }
        let factor = rng.random_range(1.0 - self.typing_jitter..=1.0 + self.typing_jitter);
        base.mul_f64(factor)
    }

    /// The wait before a send of `chars` characters, `since_last` after the
    /// number's previous send (`None`: no earlier send known).
    pub fn plan(
        &self,
        min_gap: Duration,
        jitter: &Jitter,
        since_last: Option<Duration>,
        chars: usize,
        rng: &mut impl Rng,
    ) -> Plan {
        let typing = self.typing(chars, rng);
        let remaining = match since_last {
            Some(elapsed) => self.gap(min_gap, jitter, rng).saturating_sub(elapsed),
            None => Duration::ZERO,
        };
        Plan {
            idle: remaining.saturating_sub(typing),
            typing,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn pacing(typing_jitter: f64) -> Pacing {
        let mut config = herald_shared::Config::load_with_env(None, Vec::new())
            .expect("defaults")
            .pacing;
        config.typing_ms_per_char = 50;
        config.typing_min_ms = 500;
        config.typing_max_ms = 4000;
        config.typing_jitter = typing_jitter;
        Pacing::new(&config)
    }

    #[test]
    fn gap_is_at_least_the_minimum_and_at_most_minimum_plus_jitter() {
        let p = pacing(0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let jitter = Jitter::Uniform { max_ms: 300 };
        let gaps: Vec<Duration> = (0..1000)
            .map(|_| p.gap(Duration::from_secs(1), &jitter, &mut rng))
            .collect();
        assert!(
            gaps.iter()
                .all(|g| *g >= Duration::from_millis(1000) && *g <= Duration::from_millis(1300))
        );
        // Jitter actually varies the gap.
        let distinct: std::collections::HashSet<_> = gaps.iter().collect();
        assert!(distinct.len() > 100);
    }

    #[test]
    fn typing_grows_with_length_within_bounds() {
        let p = pacing(0.0);
        let mut rng = StdRng::seed_from_u64(2);
        assert_eq!(p.typing(1, &mut rng), Duration::from_millis(500));
        assert_eq!(p.typing(40, &mut rng), Duration::from_millis(2000));
        assert_eq!(p.typing(1000, &mut rng), Duration::from_millis(4000));
    }

    #[test]
    fn typing_jitter_stays_within_its_factor() {
        let p = pacing(0.3);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            let t = p.typing(40, &mut rng);
            assert!(
                t >= Duration::from_millis(1400) && t <= Duration::from_millis(2600),
                "{t:?}"
            );
        }
    }

    #[test]
    fn typing_takes_the_end_of_the_gap_and_the_gap_still_holds() {
        let p = pacing(0.0);
        let mut rng = StdRng::seed_from_u64(4);
        let none = Jitter::None;
        // 1 s gap, 200 ms since the last send, 10 chars = 500 ms typing.
        let plan = p.plan(
            Duration::from_secs(1),
            &none,
            Some(Duration::from_millis(200)),
            10,
            &mut rng,
        );
        assert_eq!(
            plan,
            Plan {
                idle: Duration::from_millis(300),
                typing: Duration::from_millis(500)
            }
        );
        assert!(Duration::from_millis(200) + plan.idle + plan.typing >= Duration::from_secs(1));
        // Long enough ago: only typing.
        let plan = p.plan(
            Duration::from_secs(1),
            &none,
            Some(Duration::from_secs(5)),
            10,
            &mut rng,
        );
        assert_eq!(plan.idle, Duration::ZERO);
        // First send of the number.
        let plan = p.plan(Duration::from_secs(1), &none, None, 10, &mut rng);
        assert_eq!(plan.idle, Duration::ZERO);
    }
}
