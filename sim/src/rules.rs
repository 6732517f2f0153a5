//! Ban rules: what the simulated network punishes a number for, judged on
//! what the number sent lately. Off unless configured (`PUT /admin/network`
//! with `rules`). The shapes follow what WhatsApp says it acts on and the
//! reasons its temporary bans carry (see `docs/BENCHMARKS.md`, "Number
//! safety"); WhatsApp publishes no thresholds, so every figure is the
//! operator's to choose.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// More than `max` events within `window_ms` trips the rule; the penalty
/// lasts `penalty_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub max: u32,
    pub window_ms: u64,
    pub penalty_ms: u64,
}

impl Rule {
    fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    fn penalty(&self) -> Duration {
        Duration::from_millis(self.penalty_ms)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Messages to people the number never wrote to: past `max`, a reach-out
    /// time-lock (new conversations refused with `463`).
    #[serde(default)]
    pub new_contacts: Option<Rule>,
    /// Messages of any kind: past `max`, a temporary ban (reason 101, "too
    /// many messages to people who don't have you in their contacts").
    #[serde(default)]
    pub volume: Option<Rule>,
    /// One text, word for word, to different people: past `max`, a
    /// temporary ban (reason 104, "the same message to too many people").
    #[serde(default)]
    pub same_text: Option<Rule>,
}

impl Rules {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rule) in [
            ("new_contacts", self.new_contacts),
            ("volume", self.volume),
            ("same_text", self.same_text),
        ] {
            if let Some(rule) = rule
                && (rule.window_ms == 0 || rule.penalty_ms == 0)
            {
                return Err(format!(
                    "rule {name}: window_ms and penalty_ms must be positive"
                ));
            }
        }
        Ok(())
    }
}

/// What a tripped rule does to the number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Penalty {
    Timelock {
        rule: &'static str,
        duration: Duration,
    },
    Ban {
        rule: &'static str,
        code: &'static str,
        duration: Duration,
    },
}

/// Distinct texts remembered per number before old ones are swept.
const MAX_TEXTS: usize = 10_000;

/// What one number sent lately, as far as the rules look back.
#[derive(Debug, Default)]
pub struct Recent {
    sends: VecDeque<Instant>,
    new_contacts: VecDeque<Instant>,
    texts: HashMap<String, VecDeque<Instant>>,
}

/// Adds `now`, forgets what fell out of the window, and says whether more
/// than `max` remain.
fn trips(times: &mut VecDeque<Instant>, rule: &Rule, now: Instant) -> bool {
    times.push_back(now);
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) > rule.window())
    {
        times.pop_front();
    }
    times.len() > rule.max as usize
}

impl Recent {
    /// Records one accepted message and returns the penalty it earns, if
    /// any (the harshest when several rules trip at once: a ban).
    pub fn record(
        &mut self,
        rules: &Rules,
        now: Instant,
        new_contact: bool,
        body_sha256: &str,
    ) -> Option<Penalty> {
        let mut penalty = None;
        if let Some(rule) = &rules.new_contacts
            && new_contact
            && trips(&mut self.new_contacts, rule, now)
        {
            penalty = Some(Penalty::Timelock {
                rule: "new_contacts",
                duration: rule.penalty(),
            });
        }
        if let Some(rule) = &rules.same_text {
            if self.texts.len() >= MAX_TEXTS {
                let window = rule.window();
                self.texts.retain(|_, times| {
                    times
                        .back()
                        .is_some_and(|t| now.duration_since(*t) <= window)
                });
            }
            let times = self.texts.entry(body_sha256.to_string()).or_default();
            if trips(times, rule, now) {
                penalty = Some(Penalty::Ban {
                    rule: "same_text",
                    code: "104",
                    duration: rule.penalty(),
                });
            }
        }
        if let Some(rule) = &rules.volume
            && trips(&mut self.sends, rule, now)
        {
            penalty = Some(Penalty::Ban {
                rule: "volume",
                code: "101",
                duration: rule.penalty(),
            });
        }
        penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(max: u32, window_ms: u64) -> Option<Rule> {
        Some(Rule {
            max,
            window_ms,
            penalty_ms: 60_000,
        })
    }

    #[test]
    fn volume_trips_past_its_maximum_within_the_window_only() {
        let rules = Rules {
            volume: rule(3, 1000),
            ..Rules::default()
        };
        let start = Instant::now();
        let mut recent = Recent::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Three in a second are allowed; the fourth within it is not.
        for ms in [0, 100, 200] {
            assert_eq!(recent.record(&rules, at(ms), true, "a"), None);
        }
        assert!(matches!(
            recent.record(&rules, at(300), true, "b"),
            Some(Penalty::Ban { code: "101", .. })
        ));
        // Spread out, any number is fine.
        let mut spread = Recent::default();
        for i in 0..20 {
            assert_eq!(spread.record(&rules, at(i * 400), true, "a"), None);
        }
    }

    #[test]
    fn same_text_counts_each_text_on_its_own() {
        let rules = Rules {
            same_text: rule(2, 10_000),
            ..Rules::default()
        };
        let now = Instant::now();
        let mut recent = Recent::default();
        for text in ["a", "b", "c", "a", "b", "c"] {
            assert_eq!(recent.record(&rules, now, true, text), None);
        }
        assert!(matches!(
            recent.record(&rules, now, true, "a"),
            Some(Penalty::Ban { code: "104", .. })
        ));
    }

    #[test]
    fn only_new_contacts_count_towards_the_reach_out_time_lock() {
        let rules = Rules {
            new_contacts: rule(1, 10_000),
            ..Rules::default()
        };
        let now = Instant::now();
        let mut recent = Recent::default();
        assert_eq!(recent.record(&rules, now, true, "a"), None);
        for _ in 0..5 {
            assert_eq!(recent.record(&rules, now, false, "a"), None);
        }
        assert!(matches!(
            recent.record(&rules, now, true, "a"),
            Some(Penalty::Timelock {
                rule: "new_contacts",
                ..
            })
        ));
    }

    #[test]
    fn a_rule_without_a_window_is_refused() {
        let rules = Rules {
            volume: Some(Rule {
                max: 1,
                window_ms: 0,
                penalty_ms: 1,
            }),
            ..Rules::default()
        };
        assert!(rules.validate().is_err());
    }
}
