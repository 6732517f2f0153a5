//! Warm-up plans: how many messages a new number may send on each day of its
//! life. A number that sends hundreds of messages on its first day is the
//! classic pattern WhatsApp's anti-spam systems ban; volume that grows day by
//! day from a small start is what a real business's traffic looks like.

use serde::Deserialize;

/// A ramp: `first_day` messages on day 0, multiplied by `growth` each day,
/// never above `ceiling`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupPlan {
    pub first_day: u32,
    pub growth: f64,
    pub ceiling: u32,
}

impl WarmupPlan {
    /// Checks the plan makes sense; the message names the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.first_day == 0 {
            return Err("first_day must be at least 1".into());
        }
        if !(1.0..=10.0).contains(&self.growth) {
            return Err("growth must be between 1.0 and 10.0".into());
        }
        if self.ceiling < self.first_day {
            return Err("ceiling must be at least first_day".into());
        }
        Ok(())
    }

    /// Messages allowed on day `day_index` (0 = the day warm-up started, in
    /// the number's time zone). Days before the start allow nothing.
    pub fn volume(&self, day_index: i64) -> i64 {
        if day_index < 0 {
            return 0;
        }
        let grown = f64::from(self.first_day) * self.growth.powi(day_index.min(1000) as i32);
        (grown.round() as i64).min(i64::from(self.ceiling))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STANDARD: WarmupPlan = WarmupPlan {
        first_day: 20,
        growth: 1.5,
        ceiling: 1000,
    };

    #[test]
    fn ramps_from_the_first_day_to_the_ceiling() {
        let days: Vec<i64> = (0..12).map(|d| STANDARD.volume(d)).collect();
        assert_eq!(
            days,
            [20, 30, 45, 68, 101, 152, 228, 342, 513, 769, 1000, 1000]
        );
        assert_eq!(STANDARD.volume(-1), 0);
        assert_eq!(STANDARD.volume(1_000_000), 1000);
    }

    #[test]
    fn nonsense_plans_are_refused() {
        assert!(
            WarmupPlan {
                first_day: 0,
                ..STANDARD
            }
            .validate()
            .is_err()
        );
        assert!(
            WarmupPlan {
                growth: 0.5,
                ..STANDARD
            }
            .validate()
            .is_err()
        );
        assert!(
            WarmupPlan {
                ceiling: 5,
                ..STANDARD
            }
            .validate()
            .is_err()
        );
        assert!(STANDARD.validate().is_ok());
    }

    proptest! {
        #[test]
        fn volume_never_shrinks_and_stays_within_bounds(
            first_day in 1u32..500, growth in 1.0f64..3.0, extra in 0u32..5000, day in 0i64..400
        ) {
            let plan = WarmupPlan { first_day, growth, ceiling: first_day + extra };
            let today = plan.volume(day);
            prop_assert!(today >= i64::from(first_day).min(i64::from(plan.ceiling)));
            prop_assert!(today <= i64::from(plan.ceiling));
            prop_assert!(plan.volume(day + 1) >= today);
        }
    }
}
