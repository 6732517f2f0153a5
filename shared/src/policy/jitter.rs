//! The random part of the gap between two sends of a number.
//!
//! A fixed gap, or a gap with a little uniform noise, makes a send rhythm a
//! classifier can spot. People's gaps are heavy-tailed: mostly short, now and
//! then long. The default is therefore exponential (memoryless, like
//! independent human actions) with a cap so a number never stalls.

use std::time::Duration;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Jitter {
    /// No extra wait (tests, benchmarks).
    None,
    /// Uniform extra in `[0, max_ms]`.
    Uniform { max_ms: u64 },
    /// Exponential extra with mean `mean_ms`, never above `max_ms`.
    Exponential { mean_ms: u64, max_ms: u64 },
}

impl Jitter {
    pub fn validate(&self) -> Result<(), String> {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        match *self {
            Self::None => Ok(()),
            Self::Uniform { max_ms } if max_ms <= DAY_MS => Ok(()),
            Self::Exponential { mean_ms, max_ms }
                if mean_ms > 0 && mean_ms <= max_ms && max_ms <= DAY_MS =>
            {
                Ok(())
            }
            Self::Uniform { .. } => Err("max_ms must be at most one day".into()),
            Self::Exponential { .. } => Err("need 0 < mean_ms <= max_ms <= one day".into()),
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Self::None => Duration::ZERO,
            Self::Uniform { max_ms } => Duration::from_millis(rng.random_range(0..=max_ms)),
            Self::Exponential { mean_ms, max_ms } => {
                let u: f64 = rng.random_range(0.0..1.0);
                let ms = -(mean_ms as f64) * (1.0 - u).ln();
                Duration::from_millis((ms as u64).min(max_ms))
            }
        }
    }

    /// The average extra wait (for projections).
    pub fn mean(&self) -> Duration {
        match *self {
            Self::None => Duration::ZERO,
            Self::Uniform { max_ms } => Duration::from_millis(max_ms / 2),
            Self::Exponential { mean_ms, max_ms } => {
                // E[min(X, cap)] for X ~ Exp(mean) = mean * (1 - e^(-cap/mean)).
                let mean = mean_ms as f64;
                Duration::from_millis((mean * (1.0 - (-(max_ms as f64) / mean).exp())) as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn samples_stay_in_range_and_average_to_the_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        for jitter in [
            Jitter::Uniform { max_ms: 1000 },
            Jitter::Exponential {
                mean_ms: 500,
                max_ms: 3000,
            },
        ] {
            let samples: Vec<u64> = (0..20_000)
                .map(|_| jitter.sample(&mut rng).as_millis() as u64)
                .collect();
            let max = match jitter {
                Jitter::Uniform { max_ms } | Jitter::Exponential { max_ms, .. } => max_ms,
                Jitter::None => 0,
            };
            assert!(samples.iter().all(|&s| s <= max));
            let average = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
            let expected = jitter.mean().as_millis() as f64;
            assert!(
                (average - expected).abs() < expected * 0.05,
                "{jitter:?}: {average} vs {expected}"
            );
        }
        assert_eq!(Jitter::None.sample(&mut rng), Duration::ZERO);
    }

    #[test]
    fn exponential_is_heavy_tailed_compared_to_uniform() {
        let mut rng = StdRng::seed_from_u64(8);
        let exp = Jitter::Exponential {
            mean_ms: 1000,
            max_ms: 60_000,
        };
        let long = (0..10_000)
            .filter(|_| exp.sample(&mut rng) > Duration::from_millis(3000))
            .count();
        // P(X > 3 mean) = e^-3 ≈ 5%: long pauses happen, as with people.
        assert!((350..650).contains(&long), "{long}");
    }

    #[test]
    fn parses_from_configuration() {
        let j: Jitter =
            serde_json::from_str(r#"{"kind":"exponential","mean_ms":15000,"max_ms":120000}"#)
                .unwrap();
        assert_eq!(
            j,
            Jitter::Exponential {
                mean_ms: 15000,
                max_ms: 120000
            }
        );
        assert!(
            Jitter::Exponential {
                mean_ms: 0,
                max_ms: 1
            }
            .validate()
            .is_err()
        );
        assert!(serde_json::from_str::<Jitter>(r#"{"kind":"gaussian"}"#).is_err());
    }
}
