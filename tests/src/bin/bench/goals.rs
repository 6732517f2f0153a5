//! The goals of the benchmarks (docs/BENCHMARKS.md), judged against what a
//! run measured and printed together at its end, so a whole run reads at a
//! glance: each figure, its goal, met or missed.

/// One goal as a run measured it.
pub struct Goal {
    /// What was measured, e.g. "ingest: import ÷ raw COPY".
    pub figure: String,
    /// The measured figure, formatted with its unit.
    pub measured: String,
    /// The goal, as the issue states it.
    pub goal: &'static str,
    pub met: bool,
}

impl Goal {
    pub fn new(figure: impl Into<String>, measured: String, goal: &'static str, met: bool) -> Self {
        Goal {
            figure: figure.into(),
            measured,
            goal,
            met,
        }
    }
}

/// The closing table of a run; nothing when no benchmark judged a goal.
pub fn report(goals: &[Goal]) {
    if goals.is_empty() {
        return;
    }
    let met = goals.iter().filter(|g| g.met).count();
    println!("goals     {met} of {} met in this run", goals.len());
    let width = goals
        .iter()
        .map(|g| g.figure.chars().count())
        .max()
        .unwrap_or(0);
    for g in goals {
        println!(
            "  {:<width$}  {:>12}  {:<16}  {}",
            g.figure,
            g.measured,
            g.goal,
            if g.met { "met" } else { "MISSED" },
        );
    }
}
