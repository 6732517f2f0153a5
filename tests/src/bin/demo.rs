//! `herald-demo`: the whole system on simulated numbers. Starts the simulator,
//! the API, the scheduler and two workers; registers two numbers; submits a
//! campaign of a few hundred recipients; shows its progress live until it
//! completes; then stops everything it started.
//!
//! Run it through `deploy/demo.sh`, which installs and starts PostgreSQL and
//! RabbitMQ first and builds the binaries.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use herald_tests::{Stack, StackOptions, mobile};
use serde_json::{Value, json};

const RECIPIENTS: u32 = 300;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::var("HERALD_DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::current_dir().expect("cwd").join(".demo"));
    println!("Herald demo: simulated WhatsApp network, real PostgreSQL and RabbitMQ.");
    println!("Starting herald-sim, herald-api, herald-scheduler and two herald-worker processes…");
    let stack = Stack::start(StackOptions {
        workers: 2,
        min_gap_ms: 150,
        jitter_ms: 150,
        typing_ms_per_char: 3,
        typing_min_ms: 50,
        typing_max_ms: 250,
        dir: Some(dir.clone()),
        database: Some("herald_demo".into()),
        prefix: Some("herald_demo".into()),
        env: vec![
            ("HERALD__SIM__DELIVERED_DELAY_MS".into(), "600".into()),
            ("HERALD__SIM__READ_DELAY_MS".into(), "1500".into()),
            ("HERALD__SIM__READ_PROBABILITY".into(), "0.7".into()),
            ("HERALD__SIM__DELIVERED_PROBABILITY".into(), "0.97".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    println!("  API       {}", stack.api.base);
    println!("  simulator {}", stack.sim.base);
    println!("  logs      {}", dir.display());
    println!(
        "  console   {}/console/ (sign in with the API key {})",
        stack.api.base,
        stack.api.key.as_deref().unwrap_or_default()
    );

    let result = tokio::select! {
        result = run_campaign(&stack) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if result.is_ok() && std::env::var_os("HERALD_DEMO_KEEP").is_some() {
        println!("\nStill running for a look at the console; Ctrl-C stops everything.");
        let _ = tokio::signal::ctrl_c().await;
    }
    println!("\nStopping everything the demo started…");
    let database = stack.db.url.clone();
    stack.stop().await;
    result?;
    println!("Done. The demo's database is kept for a look: psql {database}");
    Ok(())
}

async fn run_campaign(stack: &Stack) -> anyhow::Result<()> {
    let api = &stack.api;
    let mut numbers = Vec::new();
    for i in 1..=2 {
        let phone = mobile(999, i);
        stack.sim.create_paired_number(&phone).await;
        let id = api.create_number(&phone).await;
        println!("Registered sender {phone} ({id})");
        numbers.push(id);
    }
    let template = api
        .create_template(
            "spring sale",
            "Hi {{name}}! Our spring sale starts today: {{discount}}% off everything in {{city}}. Reply STOP to opt out.",
        )
        .await;
    let cities = ["São Paulo", "Rio", "Recife", "Curitiba"];
    let mut recipients: Vec<Value> = (0..RECIPIENTS)
        .map(|i| {
            json!({
                "phone": mobile(1, i),
                "variables": { "name": format!("Customer {i}"), "discount": 10 + i % 4 * 5, "city": cities[i as usize % 4] },
            })
        })
        .collect();
    // A few rows a real list always has, to show the creation report.
    recipients.push(
        json!({ "phone": "12345", "variables": { "name": "Typo", "discount": 10, "city": "Rio" } }),
    );
    recipients.push(json!({ "phone": mobile(1, 7), "variables": { "name": "Again", "discount": 10, "city": "Rio" } }));
    recipients
        .push(json!({ "phone": mobile(2, 1), "variables": { "name": "No city", "discount": 10 } }));
    let created = api
        .create_campaign(&json!({
            "name": "Spring sale",
            "template_id": template,
            "numbers": numbers,
            "recipients": recipients,
            "on_invalid": "skip",
            // Any hour, so the demo runs whenever it is started (the default
            // window is 09:00–20:00 in each recipient's local time).
            "window": { "start": "00:00", "end": "24:00" },
        }))
        .await;
    let campaign = created["id"].as_str().expect("id").to_string();
    println!(
        "Created campaign {campaign}: {} recipients accepted, {} rejected:",
        created["report"]["accepted"], created["report"]["rejected_total"]
    );
    for row in created["report"]["rejected"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  row {:>3}  {:<16} {}",
            row["row"],
            row["phone"].as_str().unwrap_or(""),
            row["reason"].as_str().unwrap_or("")
        );
    }
    api.start_campaign(&campaign).await;
    println!("Started. Each number sends with a jittered gap and shows \"typing…\" first.\n");

    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let total = f64::from(RECIPIENTS);
    let body = loop {
        let body = api.campaign(&campaign).await;
        let counts = &body["counts"];
        let n = |state: &str| counts[state].as_i64().unwrap_or(0);
        let out = n("sent") + n("delivered") + n("read");
        let finished = out + n("failed") + n("unknown") + n("cancelled") + n("suppressed");
        let elapsed = started.elapsed().as_secs_f64();
        let rate = out as f64 / elapsed.max(0.001);
        let width = 30;
        let filled = ((finished as f64 / total) * width as f64).round() as usize;
        let eta = if rate > 0.0 {
            (total - finished as f64) / rate
        } else {
            f64::NAN
        };
        let line = format!(
            "[{}{}] {:>3}/{} out | queued {:>3} in flight {:>2} | delivered {:>3} read {:>3} failed {} unknown {} | {:>4.1} msg/s | ETA {:>3.0}s",
            "#".repeat(filled.min(width)),
            ".".repeat(width - filled.min(width)),
            finished,
            RECIPIENTS,
            n("queued"),
            n("scheduled") + n("sending"),
            n("delivered"),
            n("read"),
            n("failed"),
            n("unknown"),
            rate,
            eta.max(0.0),
        );
        let done = body["status"] == "completed";
        if tty {
            print!("\r{line}");
            std::io::stdout().flush()?;
        } else if done || last_print.elapsed() >= Duration::from_secs(2) {
            println!("{line}");
            last_print = Instant::now();
        }
        if done {
            break body;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the campaign did not complete within 10 minutes; see the logs");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if tty {
        println!();
    }
    println!(
        "\nCampaign completed in {:.1}s (status {}).",
        started.elapsed().as_secs_f64(),
        body["status"]
    );

    // What the network itself saw.
    let log = stack.sim.log().await;
    let mut per_sender: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &log {
        *per_sender.entry(entry.from.clone()).or_default() += 1;
    }
    println!("The simulated network accepted {} messages:", log.len());
    for (from, count) in per_sender {
        println!("  from {from}: {count}");
    }
    println!("Final counts: {}", body["counts"]);
    Ok(())
}
