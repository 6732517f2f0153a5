//! Number safety: the same campaign on the same simulated network with ban
//! rules, sent by a naive sender and by Herald's policy, at the same volume
//! per number. The rules and where their shapes come from are in
//! `docs/BENCHMARKS.md` ("Number safety").
//!
//! Time is compressed: every duration of the real-world rules and of both
//! senders' pacing is divided by `scale` (60: an hour passes in a minute), so
//! what the network sees is the same shape, faster.

use std::time::{Duration, Instant};

use herald_tests::{Stack, StackOptions};
use serde_json::{Value, json};

use crate::goals::Goal;

/// Sends per number: the same for both senders (Herald's default daily cap).
const PER_NUMBER: u32 = 200;

/// The rules in real-world time (divided by the scale before use).
/// - volume: more than 40 messages in 10 minutes: temporary ban, 24 h;
/// - new contacts: more than 120 people never written to in an hour: reach-out
///   time-lock, 24 h;
/// - same text: one text to more than 100 people in 24 h: temporary ban, 24 h.
fn rules(scale: u64) -> Value {
    let ms = |minutes: u64| minutes * 60_000 / scale;
    json!({
        "volume": { "max": 40, "window_ms": ms(10), "penalty_ms": ms(24 * 60) },
        "new_contacts": { "max": 120, "window_ms": ms(60), "penalty_ms": ms(24 * 60) },
        "same_text": { "max": 100, "window_ms": ms(24 * 60), "penalty_ms": ms(24 * 60) },
    })
}

/// One sender's settings, in real-world milliseconds.
struct Sender {
    name: &'static str,
    min_gap_ms: u64,
    /// Exponential jitter (mean, cap); none when zero.
    jitter: (u64, u64),
    /// "typing…" before each send (per character, least, most).
    typing: (u64, u64, u64),
    /// Text variants (one: the same text to everyone) and the most
    /// recipients one variant goes to per number per day (0: no limit).
    variants: &'static [&'static str],
    max_per_variant: u32,
}

const NAIVE: Sender = Sender {
    name: "naive (5 s gap, one text)",
    min_gap_ms: 5_000,
    jitter: (0, 0),
    typing: (0, 0, 0),
    variants: &["Olá! Nesta semana temos 20% de desconto em toda a loja. Aproveite!"],
    max_per_variant: 0,
};

/// Herald's defaults (`shared/config/default.toml`), and a campaign written
/// the way the docs advise: a few variants, each capped per number.
const HERALD: Sender = Sender {
    name: "herald (default pacing, 4 variants)",
    min_gap_ms: 20_000,
    jitter: (15_000, 120_000),
    typing: (40, 1_000, 8_000),
    variants: &[
        "Olá! Nesta semana temos 20% de desconto em toda a loja. Aproveite!",
        "Oi! Só até domingo: 20% off em todos os produtos da loja.",
        "Olá, tudo bem? Esta semana a loja inteira está com 20% de desconto.",
        "Oi! Passando para avisar: 20% de desconto em tudo, só esta semana.",
    ],
    max_per_variant: 60,
};

pub async fn run(numbers: u32, scale: u64) -> Vec<Goal> {
    println!(
        "safety    {numbers} numbers x {PER_NUMBER} cold recipients each, the same campaign per \
         sender, time compressed {scale}x\n  \
         rules: volume > 40 msgs/10 min -> ban; > 120 new contacts/h -> reach-out time-lock; \
         one text to > 100 people/24 h -> ban"
    );
    let naive = send(&NAIVE, numbers, scale).await;
    println!("  {:<38} {naive}", NAIVE.name);
    let herald = send(&HERALD, numbers, scale).await;
    println!("  {:<38} {herald}", HERALD.name);
    // The issue sets no figure; the point of the policy is that at the same
    // daily volume every message goes out and no number trips a rule.
    let tripped = herald.banned + herald.locked;
    vec![Goal::new(
        "safety: Herald's numbers banned or locked",
        format!("{tripped}/{numbers}"),
        "none, all sent",
        tripped == 0 && herald.sent == u64::from(herald.total),
    )]
}

/// What one sender's run did to its numbers.
struct Outcome {
    banned: usize,
    locked: usize,
    sent: u64,
    total: u32,
    numbers: u32,
    hours: f64,
    rules_hit: Vec<String>,
    /// Messages in any other state at the end, as `state count` (why some
    /// were not sent, when some were not).
    unsent: Vec<String>,
    /// The first few of them: id, attempts, why they did not leave.
    unsent_examples: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Outcome {
            banned,
            locked,
            sent,
            total,
            numbers,
            hours,
            ..
        } = self;
        write!(
            f,
            "banned {banned}/{numbers}, time-locked {locked}/{numbers}; sent {sent}/{total}, the \
             last after {hours:.1} h (network time)"
        )?;
        if !self.rules_hit.is_empty() {
            write!(f, "; rules tripped: {}", self.rules_hit.join(", "))?;
        }
        if !self.unsent.is_empty() {
            write!(f, "; not sent: {}", self.unsent.join(", "))?;
        }
        if !self.unsent_examples.is_empty() {
            write!(f, " ({})", self.unsent_examples.join("; "))?;
        }
        Ok(())
    }
}

async fn send(sender: &Sender, numbers: u32, scale: u64) -> Outcome {
    let scaled = |ms: u64| (ms / scale).to_string();
    let jitter_kind = if sender.jitter.0 == 0 {
        "none"
    } else {
        "exponential"
    };
    let env: Vec<(String, String)> = [
        (
            "HERALD__PACING__DEFAULT_JITTER_KIND",
            jitter_kind.to_string(),
        ),
        (
            "HERALD__PACING__DEFAULT_JITTER_MEAN_MS",
            scaled(sender.jitter.0),
        ),
        (
            "HERALD__PACING__DEFAULT_JITTER_MAX_MS",
            scaled(sender.jitter.1),
        ),
        // A reach-out time-lock the network does not date lasts 24 h.
        ("HERALD__PACING__TIMELOCK_DEFAULT_MS", scaled(86_400_000)),
        // Retries of messages refused for a passing reason wait as long in
        // network time as they would for real (30 s doubling, at most an
        // hour); unscaled, the first retry (30 s) was 30 network minutes,
        // as long as the stall cut-off below.
        ("HERALD__PACING__RETRY_BASE_MS", scaled(30_000)),
        ("HERALD__PACING__RETRY_MAX_MS", scaled(3_600_000)),
        ("HERALD__SIM__DELIVERED_DELAY_MS", scaled(3_000)),
        ("HERALD__SIM__READ_DELAY_MS", scaled(60_000)),
        (
            "HERALD__TELEMETRY__LOG_FILTER",
            "info,lapin=warn".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: (sender.min_gap_ms / scale) as i32,
        daily_cap: PER_NUMBER as i32,
        jitter_ms: sender.jitter.1 / scale,
        typing_ms_per_char: sender.typing.0 / scale,
        typing_min_ms: sender.typing.1 / scale,
        typing_max_ms: sender.typing.2 / scale,
        env: super::with_caller_env(env),
        ..StackOptions::default()
    })
    .await;
    stack
        .sim
        .set_network(&json!({ "rules": rules(scale) }))
        .await;
    let senders = crate::sim_numbers(&stack, 970, numbers).await;
    let mut templates = Vec::new();
    for (i, text) in sender.variants.iter().enumerate() {
        templates.push(stack.api.create_template(&format!("v{i}"), text).await);
    }
    let total = numbers * PER_NUMBER;
    let recipients: Vec<Value> = (0..total)
        .map(|i| json!({ "phone": format!("+55219{i:08}") }))
        .collect();
    let campaign = crate::create_campaign(
        &stack,
        &json!({
            "name": "safety", "variants": templates, "numbers": senders,
            "recipients": recipients, "window": { "start": "00:00", "end": "24:00" },
            "max_per_variant": sender.max_per_variant,
        }),
    )
    .await;
    let started = Instant::now();
    stack.api.start_campaign(&campaign).await;
    // Until every message is settled, or nothing was sent for half an hour
    // (network time; no pacing gap comes near it): banned and time-locked
    // numbers send nothing more to these recipients today.
    let stalled_after = Duration::from_millis(30 * 60_000 / scale);
    const SENT: [&str; 3] = ["sent", "delivered", "read"];
    let (mut sent, mut last_progress) = (0, Instant::now());
    let unsent = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = stack.api.campaign(&campaign).await;
        let now_sent = SENT
            .iter()
            .map(|s| stats["counts"][s].as_u64().unwrap_or(0))
            .sum::<u64>();
        if now_sent != sent {
            (sent, last_progress) = (now_sent, Instant::now());
        }
        if stats["status"] == "completed" || last_progress.elapsed() > stalled_after {
            break stats["counts"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(state, n)| !SENT.contains(&state.as_str()) && n.as_u64() > Some(0))
                .map(|(state, n)| format!("{state} {n}"))
                .collect::<Vec<_>>();
        }
    };
    let unsent_examples = unsent_examples(&stack, &campaign, &unsent).await;
    let took = (last_progress - started).as_secs_f64() * scale as f64 / 3600.0;
    let network = stack.sim.numbers().await;
    let numbers_view = network.as_array().expect("numbers");
    let banned = numbers_view
        .iter()
        .filter(|n| n["bans"].as_u64() > Some(0))
        .count();
    let locked = numbers_view
        .iter()
        .filter(|n| n["timelocks"].as_u64() > Some(0))
        .count();
    let mut rules_hit: Vec<String> = numbers_view
        .iter()
        .filter_map(|n| n["last_rule"].as_str().map(String::from))
        .collect();
    rules_hit.sort();
    rules_hit.dedup();
    stack.stop().await;
    Outcome {
        banned,
        locked,
        sent,
        total,
        numbers,
        hours: took,
        rules_hit,
        unsent,
        unsent_examples,
    }
}

/// Up to three messages of each state in `unsent` (`state count`), as
/// `#id state, variant v, attempts n: failure reason`.
async fn unsent_examples(stack: &Stack, campaign: &str, unsent: &[String]) -> Vec<String> {
    let mut examples = Vec::new();
    for state in unsent.iter().filter_map(|s| s.split(' ').next()) {
        let page = stack
            .api
            .get(&format!(
                "/v1/campaigns/{campaign}/messages?state={state}&limit=3"
            ))
            .await
            .expect(200);
        for m in page["data"].as_array().into_iter().flatten() {
            examples.push(format!(
                "#{} {state}, variant {}, attempts {}: {}",
                m["id"],
                m["variant"],
                m["attempts"],
                m["failure_reason"]
                    .as_str()
                    .unwrap_or("no failure recorded")
            ));
        }
    }
    examples
}
