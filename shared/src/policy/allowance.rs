//! How many more messages a number may be given today.

/// Everything the daily allowance depends on, for one number and one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowanceInputs {
    /// The warm-up plan's volume for the number's day index.
    pub plan_volume: i64,
    /// The number's own daily cap.
    pub number_cap: i64,
    /// Messages already given to the number today (its time zone).
    pub number_used: i64,
    /// The tenant's daily cap over all its numbers, if it has one.
    pub tenant_cap: Option<i64>,
    /// Messages already given to any of the tenant's numbers today.
    pub tenant_used: i64,
}

/// `min(plan for today, number cap, tenant cap)` minus what was already used
/// against each, never below zero.
pub fn daily_allowance(inputs: &AllowanceInputs) -> i64 {
    let number_left = inputs.plan_volume.min(inputs.number_cap) - inputs.number_used;
    let tenant_left = inputs
        .tenant_cap
        .map_or(i64::MAX, |cap| cap - inputs.tenant_used);
    number_left.min(tenant_left).max(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn inputs() -> impl Strategy<Value = AllowanceInputs> {
        (
            0i64..5000,
            0i64..5000,
            0i64..6000,
            proptest::option::of(0i64..20_000),
            0i64..25_000,
        )
            .prop_map(
                |(plan_volume, number_cap, number_used, tenant_cap, tenant_used)| AllowanceInputs {
                    plan_volume,
                    number_cap,
                    number_used,
                    tenant_cap,
                    tenant_used,
                },
            )
    }

    proptest! {
        #[test]
        fn never_negative_and_never_past_any_cap(i in inputs()) {
            let a = daily_allowance(&i);
            prop_assert!(a >= 0);
            prop_assert!(i.number_used + a <= i.plan_volume.max(i.number_used));
            prop_assert!(i.number_used + a <= i.number_cap.max(i.number_used));
            if let Some(cap) = i.tenant_cap {
                prop_assert!(i.tenant_used + a <= cap.max(i.tenant_used));
            }
        }

        #[test]
        fn is_exactly_the_tightest_remaining_room(i in inputs()) {
            let rooms = [
                i.plan_volume - i.number_used,
                i.number_cap - i.number_used,
                i.tenant_cap.map_or(i64::MAX, |c| c - i.tenant_used),
            ];
            prop_assert_eq!(daily_allowance(&i), rooms.into_iter().min().unwrap().max(0));
        }

        #[test]
        fn using_more_never_gives_more(i in inputs(), extra in 0i64..100) {
            let more_used = AllowanceInputs { number_used: i.number_used + extra, tenant_used: i.tenant_used + extra, ..i };
            prop_assert!(daily_allowance(&more_used) <= daily_allowance(&i));
        }

        #[test]
        fn raising_a_cap_never_gives_less(i in inputs(), extra in 0i64..100) {
            let higher = AllowanceInputs {
                plan_volume: i.plan_volume + extra,
                number_cap: i.number_cap + extra,
                tenant_cap: i.tenant_cap.map(|c| c + extra),
                ..i
            };
            prop_assert!(daily_allowance(&higher) >= daily_allowance(&i));
        }
    }

    #[test]
    fn examples() {
        let base = AllowanceInputs {
            plan_volume: 50,
            number_cap: 200,
            number_used: 10,
            tenant_cap: None,
            tenant_used: 0,
        };
        assert_eq!(daily_allowance(&base), 40, "the warm-up plan binds");
        assert_eq!(
            daily_allowance(&AllowanceInputs {
                tenant_cap: Some(100),
                tenant_used: 90,
                ..base
            }),
            10,
            "the tenant cap binds"
        );
        assert_eq!(
            daily_allowance(&AllowanceInputs {
                number_used: 60,
                ..base
            }),
            0,
            "over the plan: nothing, not negative"
        );
    }
}
