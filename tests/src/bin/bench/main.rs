//! `herald-bench`: what Herald costs against what its parts can do at best on
//! the same machine, measured in the same run and printed side by side as
//! ratios. Run it through `./deploy/bench.sh` (release build); figures and
//! how to read them are in `docs/BENCHMARKS.md`.
//!
//! Benchmarks (all by default, or name some):
//! - `ingest`: a CSV of contacts through `POST /v1/lists/{id}/import` vs a raw
//!   `COPY` of the same file into a table with the same columns and a unique
//!   phone index; and the API's peak RSS.
//! - `latency`: p50/p99 of `POST /v1/messages` and `GET /v1/campaigns/{id}`
//!   under an open-loop load from this process, vs `GET /healthz` (the HTTP
//!   stack alone) under the same load.
//! - `numbers`: one worker process driving 1,000 simulated numbers, against
//!   the same process driving none: resident memory per number, CPU while
//!   nothing is due.
//! - `scheduler`: the scheduler's pass over 1,000 numbers at two queue sizes
//!   up to 1M queued messages (`tick`), and its rate of publishing send jobs
//!   against a bare lapin publisher with confirms (`dispatch`).
//! - `pipeline`: messages per second end to end with pacing off, against a
//!   bare consumer acking as many jobs off as many queues, and against the
//!   parts alone (Postgres making the messages' state changes while the
//!   broker carries their jobs).
//! - `safety`: one campaign on a simulated network with ban rules, sent by a
//!   naive sender and by Herald's policy: numbers banned or time-locked.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::SinkExt;
use herald_tests::{Stack, StackOptions};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::goals::Goal;

mod goals;
mod pipeline;
mod safety;
mod scheduler;

struct Options {
    which: Vec<String>,
    rows: u64,
    rate: u64,
    seconds: u64,
    numbers: u32,
    queued: u64,
    passes: usize,
    messages: u32,
    workers: usize,
    senders: Option<u32>,
    scale: u64,
}

fn options() -> Options {
    let mut options = Options {
        which: Vec::new(),
        rows: 1_000_000,
        rate: 500,
        seconds: 20,
        numbers: 1000,
        queued: 1_000_000,
        passes: 20,
        messages: 50_000,
        workers: 1,
        senders: None,
        scale: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--rows" => options.rows = number("--rows"),
            "--rate" => options.rate = number("--rate"),
            "--seconds" => options.seconds = number("--seconds"),
            "--numbers" => options.numbers = number("--numbers") as u32,
            "--queued" => options.queued = number("--queued"),
            "--passes" => options.passes = number("--passes") as usize,
            "--messages" => options.messages = number("--messages") as u32,
            "--workers" => options.workers = number("--workers") as usize,
            "--senders" => options.senders = Some(number("--senders") as u32),
            "--scale" => options.scale = number("--scale").max(1),
            "ingest" | "latency" | "numbers" | "scheduler" | "pipeline" | "safety" => {
                options.which.push(arg)
            }
            other => panic!(
                "unknown argument {other:?}; usage: herald-bench [ingest] [latency] [numbers] \
                 [scheduler] [pipeline] [safety] [--rows N] [--rate R] [--seconds S] \
                 [--numbers N] [--queued N] [--passes N] [--messages N] [--workers N] \
                 [--senders N] [--scale K]"
            ),
        }
    }
    if options.which.is_empty() {
        options.which = [
            "ingest",
            "latency",
            "numbers",
            "scheduler",
            "pipeline",
            "safety",
        ]
        .map(String::from)
        .to_vec();
    }
    options
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = std::env::temp_dir().join("herald-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!("herald-bench on {}", machine());
    let mut judged = Vec::new();
    for which in &options.which {
        let goals = match which.as_str() {
            "ingest" => ingest(&dir, options.rows).await,
            "latency" => latency(options.rate, options.seconds).await,
            "numbers" => numbers(options.numbers).await,
            "pipeline" => {
                let senders = options.senders.unwrap_or(20);
                pipeline::run(senders, options.messages, options.workers).await
            }
            "safety" => safety::run(options.senders.unwrap_or(10), options.scale).await,
            "scheduler" => scheduler::run(options.numbers, options.queued, options.passes).await,
            _ => unreachable!("checked in options()"),
        };
        judged.extend(goals);
    }
    goals::report(&judged);
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cpus} CPUs, {memory} GiB")
}

/// A memory figure of a process's `/proc/<pid>/status` (`VmHWM`: peak
/// resident, `VmRSS`: resident now), in MB.
fn memory_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn peak_rss_mb(pid: u32) -> f64 {
    memory_mb(pid, "VmHWM")
}

fn rss_mb(pid: u32) -> f64 {
    memory_mb(pid, "VmRSS")
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime are fields 14 and 15 of stat.
    let ticks = stat_ticks(pid);
    (ticks[0] + ticks[1]) / TICKS_PER_SECOND
}

/// `/proc` counts CPU time in these (`USER_HZ`, 100 on Linux whatever the
/// kernel's own tick).
const TICKS_PER_SECOND: f64 = 100.0;

/// Fields 14 to 17 of a process's `/proc/<pid>/stat`: utime, stime, and
/// the same for its children it has waited for (zeros if it is gone).
fn stat_ticks(pid: u32) -> [f64; 4] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state,
    // field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    std::array::from_fn(|i| {
        fields
            .get(11 + i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    })
}

/// CPU seconds used so far by the processes of each kind on the machine,
/// in [`CpuByKind::KINDS`] order.
#[derive(Clone, Copy)]
pub struct CpuByKind([f64; 5]);

impl CpuByKind {
    /// Kinds by command name (`/proc/<pid>/comm`, cut at 15 bytes).
    const KINDS: [(&'static str, &'static [&'static str]); 5] = [
        ("Postgres", &["postgres"]),
        ("RabbitMQ", &["beam.smp"]),
        (
            "Herald",
            &["herald-api", "herald-worker", "herald-schedule"],
        ),
        ("simulator", &["herald-sim"]),
        ("harness", &["herald-bench"]),
    ];

    /// Each process counts with its exited children it waited for, so that
    /// a Postgres backend that ended still counts, through the postmaster.
    pub fn now() -> Self {
        let mut seconds = [0.0; 5];
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return CpuByKind(seconds);
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let kind = Self::KINDS
                .iter()
                .position(|(_, names)| names.contains(&comm.trim_end()));
            if let Some(kind) = kind {
                seconds[kind] += stat_ticks(pid).iter().sum::<f64>() / TICKS_PER_SECOND;
            }
        }
        CpuByKind(seconds)
    }

    /// CPU milliseconds per item of each kind since `before`, e.g.
    /// "Postgres 1.21, RabbitMQ 0.20, …".
    pub fn per_item_since(&self, before: &CpuByKind, items: u32) -> String {
        Self::KINDS
            .iter()
            .zip(self.0.iter().zip(before.0))
            .map(|((name, _), (now, then))| {
                format!("{name} {:.2}", (now - then) * 1000.0 / f64::from(items))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The share of one core a process uses over `window`.
async fn cpu_share(pid: u32, window: Duration) -> f64 {
    let before = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    (cpu_seconds(pid) - before) / window.as_secs_f64()
}

/// Writes `rows` contacts (distinct valid Brazilian mobiles, three
/// attributes) as CSV; returns its size in bytes.
fn write_contacts(path: &Path, rows: u64) -> u64 {
    use std::io::Write;
    let file = std::fs::File::create(path).expect("CSV file");
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "phone,name,city,plan").unwrap();
    const CITIES: [&str; 4] = ["São Paulo", "Campinas", "Santos", "Sorocaba"];
    for i in 0..rows {
        writeln!(
            out,
            "+55119{:08},Cliente {i},{},{}",
            i,
            CITIES[(i % 4) as usize],
            if i % 3 == 0 { "gold" } else { "basic" }
        )
        .unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// `count` numbers linked on the simulator and added to Herald (phones of
/// `series`); their Herald ids.
async fn sim_numbers(stack: &Stack, series: u32, count: u32) -> Vec<String> {
    let mut ids = Vec::with_capacity(count as usize);
    for i in 0..count {
        let phone = herald_tests::mobile(series, i);
        stack.sim.create_paired_number(&phone).await;
        ids.push(stack.api.create_number(&phone).await);
    }
    ids
}

/// Waits until Herald reports `count` numbers connected.
async fn all_connected(stack: &Stack, count: u32, timeout: Duration) {
    herald_tests::wait_for("every number to connect", timeout, || async {
        let mut connected = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/numbers?limit=500".to_string();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = stack.api.get(&path).await.body;
            connected += page["data"]
                .as_array()?
                .iter()
                .filter(|n| n["connected"] == true)
                .count();
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        (connected == count as usize).then_some(())
    })
    .await;
}

/// Creates a (draft) campaign; its id.
async fn create_campaign(stack: &Stack, request: &Value) -> String {
    stack.api.create_campaign(request).await["id"]
        .as_str()
        .expect("campaign id")
        .to_string()
}

async fn stack(workers: usize, env: &[(&str, &str)]) -> Stack {
    Stack::start(StackOptions {
        workers,
        env: with_caller_env(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..StackOptions::default()
    })
    .await
}

/// A benchmark's settings for its stack, then every `HERALD__…` variable
/// `herald-bench` itself was started with, which win: an experiment changes a
/// setting of the stack without editing the harness
/// (`HERALD__API__KEY_CACHE_MS=0 herald-bench latency`).
fn with_caller_env(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    let caller: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("HERALD__"))
        .collect();
    for (name, value) in &caller {
        println!("(stack setting from the environment: {name}={value})");
    }
    env.extend(caller);
    env
}

async fn ingest(dir: &Path, rows: u64) -> Vec<Goal> {
    let csv: PathBuf = dir.join(format!("contacts-{rows}.csv"));
    let bytes = write_contacts(&csv, rows);
    let stack = stack(0, &[]).await;
    let api_pid = stack.pid("api").expect("api running");
    let rss_before = peak_rss_mb(api_pid);

    // Herald: the whole file streamed to the import endpoint.
    let list = stack
        .api
        .post("/v1/lists", &json!({ "name": "bench" }))
        .await
        .expect(201);
    let body = tokio::fs::read(&csv).await.expect("read CSV");
    let cpu_before = cpu_seconds(api_pid);
    let started = Instant::now();
    let report = stack
        .api
        .send(
            stack
                .api
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/lists/{}/import", list["id"].as_str().unwrap()),
                )
                .header("content-type", "text/csv")
                .timeout(Duration::from_secs(3600))
                .body(body),
        )
        .await;
    let herald = started.elapsed();
    assert_eq!(report.status, 201, "import: {}", report.body);
    assert_eq!(report.body["accepted"], rows, "{}", report.body);
    let rss_peak = peak_rss_mb(api_pid);
    let api_cpu = cpu_seconds(api_pid) - cpu_before;

    // The floor: COPY of the same file, same columns, a unique phone index.
    let (client, connection) = tokio_postgres::connect(&stack.db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE bench_copy (phone text NOT NULL, name text, city text, plan text);
             CREATE UNIQUE INDEX ON bench_copy (phone);",
        )
        .await
        .expect("table");
    let started = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>("COPY bench_copy FROM STDIN (FORMAT csv, HEADER true)")
        .await
        .expect("copy");
    futures_util::pin_mut!(sink);
    let mut file = tokio::fs::File::open(&csv).await.expect("open CSV");
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut chunk).await.expect("read CSV");
        if n == 0 {
            break;
        }
        sink.send(Bytes::copy_from_slice(&chunk[..n]))
            .await
            .expect("copy data");
    }
    let copied = sink.finish().await.expect("copy end");
    let floor = started.elapsed();
    assert_eq!(copied, rows);

    let ratio = herald.as_secs_f64() / floor.as_secs_f64();
    println!(
        "ingest    {rows} rows, {:.1} MB CSV\n  \
         herald import   {:>7.2} s  ({:.0} rows/s; the API process used {api_cpu:.1} s of CPU)\n  \
         raw COPY        {:>7.2} s  ({:.0} rows/s)\n  \
         ratio           {ratio:>7.2}x  (goal <= 1.5x)\n  \
         API peak RSS    {rss_peak:>7.1} MB (after start-up {rss_before:.1} MB; goal < 150 MB)",
        bytes as f64 / 1e6,
        herald.as_secs_f64(),
        rows as f64 / herald.as_secs_f64(),
        floor.as_secs_f64(),
        rows as f64 / floor.as_secs_f64(),
    );
    stack.stop().await;
    vec![
        Goal::new(
            "ingest: import / raw COPY",
            format!("{ratio:.2}x"),
            "<= 1.5x",
            ratio <= 1.5,
        ),
        Goal::new(
            "ingest: API peak RSS",
            format!("{rss_peak:.1} MB"),
            "< 150 MB",
            rss_peak < 150.0,
        ),
    ]
}

/// Latencies of one kind of request, in microseconds.
#[derive(Default, Clone)]
struct Samples {
    micros: Vec<u64>,
    errors: u64,
}

impl Samples {
    fn percentile(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        self.micros.sort_unstable();
        let rank = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
        self.micros[rank] as f64 / 1000.0
    }
}

/// Seconds of load offered before the measured run.
const WARM_UP_SECONDS: u64 = 2;

const LOAD_KINDS: [&str; 3] = [
    "GET /healthz",
    "POST /v1/messages",
    "GET /v1/campaigns/{id}",
];

struct LoadTarget {
    api: herald_tests::client::ApiClient,
    campaign: String,
    number: String,
}

/// `rate` requests a second for `seconds`, spread evenly over
/// [`LOAD_KINDS`], in an open loop: requests leave on a fixed schedule
/// whatever the answers' speed (a closed loop would slow down with the server
/// and hide queueing). Sends go to recipients numbered from `first`.
async fn load(target: &LoadTarget, rate: u64, seconds: u64, first: u64) -> (Vec<Samples>, f64) {
    let samples: Arc<Vec<tokio::sync::Mutex<Samples>>> = Arc::new(
        LOAD_KINDS
            .iter()
            .map(|_| tokio::sync::Mutex::new(Samples::default()))
            .collect(),
    );
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let kind = (i % 3) as usize;
        let (api, samples, campaign, number) = (
            target.api.clone(),
            samples.clone(),
            target.campaign.clone(),
            target.number.clone(),
        );
        tasks.spawn(async move {
            let sent = Instant::now();
            let ok = match kind {
                0 => api.get("/healthz").await.status == 200,
                1 => {
                    let to = herald_tests::mobile(992, ((first + i) % 100_000) as u32);
                    api.post(
                        "/v1/messages",
                        &json!({ "from": number, "to": to, "text": "Your code is 1234" }),
                    )
                    .await
                    .status
                        == 202
                }
                _ => api.get(&format!("/v1/campaigns/{campaign}")).await.status == 200,
            };
            let took = sent.elapsed().as_micros() as u64;
            let mut s = samples[kind].lock().await;
            if ok {
                s.micros.push(took);
            } else {
                s.errors += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let samples = Arc::try_unwrap(samples)
        .unwrap_or_else(|_| unreachable!("every request task has ended"))
        .into_iter()
        .map(tokio::sync::Mutex::into_inner)
        .collect();
    (samples, elapsed)
}

/// Prints a load's percentiles; returns each endpoint's p99 (ms), in the
/// order of `LOAD_KINDS`.
fn report_load(
    label: &str,
    (samples, elapsed): &(Vec<Samples>, f64),
    rate: u64,
    seconds: u64,
) -> Vec<f64> {
    let total = rate * seconds;
    let mut p99s = Vec::with_capacity(samples.len());
    println!(
        "{label:<9} {total} requests in {elapsed:.1} s ({:.0}/s offered at {rate}/s, open loop)",
        total as f64 / elapsed
    );
    for (kind, s) in LOAD_KINDS.iter().zip(samples.iter()) {
        let mut s = s.clone();
        let (p50, p99) = (s.percentile(50.0), s.percentile(99.0));
        p99s.push(p99);
        println!(
            "  {kind:<24} p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  ({} answered, {} errors){}",
            s.micros.len(),
            s.errors,
            if kind.starts_with("GET /healthz") {
                "  <- the HTTP stack alone"
            } else {
                "  (goal p99 < 10 ms)"
            }
        );
    }
    p99s
}

async fn latency(rate: u64, seconds: u64) -> Vec<Goal> {
    // The tenant's rate limit would answer 429 long before 500 requests/s:
    // lift it, the point is the cost of a request.
    let stack = stack(
        0,
        &[
            ("HERALD__API__RATE_LIMIT_PER_SECOND", "100000"),
            ("HERALD__API__RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    let phone = herald_tests::mobile(990, 1);
    stack.sim.create_paired_number(&phone).await;
    let number = stack.api.create_number(&phone).await;
    let template = stack.api.create_template("bench", "Hi {{name}}!").await;
    // A campaign of 10,000 recipients: its stats are a GROUP BY over them.
    let recipients: Vec<Value> = (0..10_000)
        .map(|i| json!({ "phone": herald_tests::mobile(991, i), "variables": { "name": format!("R{i}") } }))
        .collect();
    let campaign = create_campaign(
        &stack,
        &json!({
            "name": "bench", "template_id": template, "numbers": [number], "recipients": recipients,
        }),
    )
    .await;

    let target = LoadTarget {
        api: stack.api.clone(),
        campaign,
        number,
    };
    // The API opens its database connections as requests need them: the
    // first requests of a fresh process wait for new connections (and each
    // new backend's first statements). Reported on their own, then the
    // measured run on warm pools.
    let warm_up = WARM_UP_SECONDS.min(seconds);
    report_load(
        "warm-up",
        &load(&target, rate, warm_up, 0).await,
        rate,
        warm_up,
    );
    let p99s = report_load(
        "latency",
        &load(&target, rate, seconds, rate * warm_up).await,
        rate,
        seconds,
    );
    stack.stop().await;
    LOAD_KINDS
        .iter()
        .zip(p99s)
        .filter(|(kind, _)| !kind.starts_with("GET /healthz"))
        .map(|(kind, p99)| {
            Goal::new(
                format!("latency: {kind} p99 at {rate}/s"),
                format!("{p99:.2} ms"),
                "< 10 ms",
                p99 < 10.0,
            )
        })
        .collect()
}

async fn numbers(count: u32) -> Vec<Goal> {
    use futures_util::StreamExt as _;
    // Production lease timing and log level (the test stacks renew every
    // second and log the worker at debug); numbers connect 10 ms apart rather
    // than 500 ms, or a thousand would take eight minutes to come up.
    let stack = stack(
        1,
        &[
            ("HERALD__WORKER__LEASE_RENEW_MS", "3000"),
            ("HERALD__WORKER__CONNECT_STAGGER_MS", "10"),
            ("HERALD__WORKER__MAX_NUMBERS", "5000"),
            ("HERALD__TELEMETRY__LOG_FILTER", "info,lapin=warn"),
            ("HERALD__API__RATE_LIMIT_PER_SECOND", "100000"),
            ("HERALD__API__RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    let worker = stack.pid("worker-1").expect("worker running");
    let window = Duration::from_secs(30);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_idle, cpu_idle) = (rss_mb(worker), cpu_share(worker, window).await);

    let started = Instant::now();
    futures_util::stream::iter(0..count)
        .map(|i| {
            let stack = &stack;
            async move {
                let phone = herald_tests::mobile(993 + i / 100_000, i % 100_000);
                stack.sim.create_paired_number(&phone).await;
                stack.api.create_number(&phone).await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    all_connected(&stack, count, Duration::from_secs(600)).await;
    let up_after = started.elapsed();
    // Let start-up work (connections, key loads) finish, then nothing is due.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss_full, cpu_full) = (rss_mb(worker), cpu_share(worker, window).await);
    let per_number = (rss_full - rss_idle) / f64::from(count);
    println!(
        "numbers   one worker process, {count} simulated numbers (all connected after {:.0} s)\n  \
         RSS             {rss_idle:>7.1} MB with none, {rss_full:.1} MB with {count}: \
         {:.3} MB per number (goal < 5 MB)\n  \
         idle CPU        {:>7.1}% of a core with none, {:.1}% with {count} (goal < 5%), \
         over {} s each",
        up_after.as_secs_f64(),
        per_number,
        cpu_idle * 100.0,
        cpu_full * 100.0,
        window.as_secs()
    );
    stack.stop().await;
    vec![
        Goal::new(
            format!("numbers: RSS per number ({count})"),
            format!("{per_number:.3} MB"),
            "< 5 MB",
            per_number < 5.0,
        ),
        Goal::new(
            format!("numbers: idle CPU ({count})"),
            format!("{:.1}%", cpu_full * 100.0),
            "< 5% of a core",
            cpu_full < 0.05,
        ),
    ]
}
