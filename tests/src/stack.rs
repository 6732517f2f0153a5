//! The whole system as real processes: simulator, API, scheduler and workers,
//! against the real Postgres and RabbitMQ, isolated by database and queue
//! prefix.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use futures_util::StreamExt as _;
use herald_shared::config::RabbitConfig;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::{ApiClient, SimClient, TestDb, ports::free_addr, unique_suffix, wait_for};

/// Webhook back-offs of test stacks: seconds, not hours.
pub const TEST_RETRY_SCHEDULE: &str = "100ms, 200ms, 500ms, 1s, 2s, 2s";

/// Knobs for a stack; the defaults make a fast, deterministic network.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub workers: usize,
    /// Defaults for numbers created through the API.
    pub min_gap_ms: i32,
    pub daily_cap: i32,
    pub jitter_ms: u64,
    pub typing_ms_per_char: u64,
    pub typing_min_ms: u64,
    pub typing_max_ms: u64,
    /// Any other `HERALD__…` settings, for every process.
    pub env: Vec<(String, String)>,
    /// Where logs and simulator data go; a fresh temporary directory if `None`.
    pub dir: Option<PathBuf>,
    /// Database name to (re)create and keep; a random, dropped one if `None`.
    pub database: Option<String>,
    /// RabbitMQ prefix; random if `None`.
    pub prefix: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            min_gap_ms: 100,
            daily_cap: 100_000,
            jitter_ms: 20,
            typing_ms_per_char: 1,
            typing_min_ms: 5,
            typing_max_ms: 40,
            env: Vec::new(),
            dir: None,
            database: None,
            prefix: None,
        }
    }
}

struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// How it was started, to start it again.
    binary: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

pub struct Stack {
    pub db: TestDb,
    pub prefix: String,
    pub dir: PathBuf,
    pub api: ApiClient,
    pub sim: SimClient,
    pub tenant_id: Uuid,
    env: BTreeMap<String, String>,
    processes: Vec<Process>,
    workers_started: usize,
    cleaned: bool,
}

/// Where the binaries are: next to the running executable (the demo), or one
/// level up (test executables live in `target/<profile>/deps`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    for candidate in [dir.join(name), dir.parent().expect("target dir").join(name)] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "{name} not found near {}: build the binaries first (cargo build --workspace --bins)",
        exe.display()
    );
}

impl Stack {
    pub async fn start(options: StackOptions) -> Self {
        let suffix = unique_suffix();
        let db = match &options.database {
            Some(name) => TestDb::recreate_named(name).await,
            None => TestDb::create().await,
        };
        let prefix = options
            .prefix
            .clone()
            .unwrap_or_else(|| format!("herald_t_{suffix}"));
        let dir = options
            .dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("herald-test-{suffix}")));
        let _ = std::fs::remove_dir_all(dir.join("sim"));
        std::fs::create_dir_all(&dir).expect("stack dir");

        let api_addr = free_addr();
        let sim_admin = free_addr();
        let sim_devices = free_addr();
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("HERALD__DATABASE__URL", db.url.clone());
        set("HERALD__RABBITMQ__PREFIX", prefix.clone());
        set("HERALD__API__LISTEN", api_addr.to_string());
        set("HERALD__API__METRICS_LISTEN", free_addr().to_string());
        set("HERALD__API__OUTBOX_POLL_MS", "200".into());
        set("HERALD__SCHEDULER__METRICS_LISTEN", free_addr().to_string());
        set("HERALD__SCHEDULER__TICK_MS", "100".into());
        set("HERALD__WORKER__SIM_DEVICE_ADDR", sim_devices.to_string());
        set("HERALD__WORKER__LEASE_RENEW_MS", "1000".into());
        set("HERALD__SIM__ADMIN_LISTEN", sim_admin.to_string());
        set("HERALD__SIM__DEVICE_LISTEN", sim_devices.to_string());
        set("HERALD__SIM__METRICS_LISTEN", free_addr().to_string());
        set(
            "HERALD__SIM__DATA_DIR",
            dir.join("sim").display().to_string(),
        );
        set("HERALD__SIM__SERVER_ACK_DELAY_MS", "2".into());
        set("HERALD__SIM__DELIVERED_DELAY_MS", "50".into());
        set("HERALD__SIM__READ_DELAY_MS", "100".into());
        set(
            "HERALD__PACING__DEFAULT_MIN_GAP_MS",
            options.min_gap_ms.to_string(),
        );
        set(
            "HERALD__PACING__DEFAULT_DAILY_CAP",
            options.daily_cap.to_string(),
        );
        set("HERALD__PACING__DEFAULT_JITTER_KIND", "uniform".into());
        set(
            "HERALD__PACING__DEFAULT_JITTER_MAX_MS",
            options.jitter_ms.to_string(),
        );
        set("HERALD__PACING__RETRY_BASE_MS", "200".into());
        set("HERALD__PACING__RETRY_MAX_MS", "2000".into());
        // Simulated numbers need no warm-up: tests set their caps directly.
        set("HERALD__WARMUP__DEFAULT_PLAN", "none".into());
        set(
            "HERALD__PACING__TYPING_MS_PER_CHAR",
            options.typing_ms_per_char.to_string(),
        );
        set(
            "HERALD__PACING__TYPING_MIN_MS",
            options.typing_min_ms.to_string(),
        );
        set(
            "HERALD__PACING__TYPING_MAX_MS",
            options.typing_max_ms.to_string(),
        );
        // Each stack seals its session keys with a master key of its own.
        set(
            herald_worker::keystore::MASTER_KEY_ENV,
            herald_worker::keystore::MasterKey::generate(1).1,
        );
        // Webhook receivers in tests listen on loopback; retries come fast.
        set("HERALD__WEBHOOKS__ALLOW_LOOPBACK", "true".into());
        set(
            "HERALD__WEBHOOKS__RETRY_SCHEDULE",
            TEST_RETRY_SCHEDULE.into(),
        );
        set("HERALD__EVENTS__POLL_MS", "200".into());
        set(
            "HERALD__TELEMETRY__LOG_FILTER",
            "info,herald_worker=debug,lapin=warn".into(),
        );
        for (k, v) in &options.env {
            set(k, v.clone());
        }

        let mut stack = Self {
            db,
            prefix,
            dir,
            api: ApiClient::new(format!("http://{api_addr}"), None),
            sim: SimClient::new(format!("http://{sim_admin}")),
            tenant_id: Uuid::nil(),
            env,
            processes: Vec::new(),
            workers_started: 0,
            cleaned: false,
        };

        let migrated = stack.run_to_end("herald-api", &["migrate"]).await;
        assert!(migrated.status.success(), "migrate failed: {migrated:?}");
        let tenant = stack
            .run_to_end(
                "herald-api",
                &["tenants", "create", "--name", "test", "--json"],
            )
            .await;
        assert!(
            tenant.status.success(),
            "tenant creation failed: {tenant:?}"
        );
        let created: serde_json::Value =
            serde_json::from_slice(&tenant.stdout).expect("tenant JSON");
        stack.tenant_id = created["tenant_id"].as_str().unwrap().parse().unwrap();
        stack.api.key = Some(created["api_key"].as_str().unwrap().to_string());

        stack.spawn("sim", "herald-sim", &[], &[]);
        stack.spawn("api", "herald-api", &["serve"], &[]);
        stack.spawn("scheduler", "herald-scheduler", &[], &[]);
        for _ in 0..options.workers {
            stack.start_worker(&[]);
        }
        stack.wait_ready().await;
        stack
    }

    /// A number linked on the simulated network and added through the API;
    /// returns its id once a worker has it connected.
    pub async fn paired_number(&self, phone: &str) -> String {
        self.sim.create_paired_number(phone).await;
        let id = self.api.create_number(phone).await;
        wait_for("the number to connect", Duration::from_secs(60), || async {
            (self.api.get(&format!("/v1/numbers/{id}")).await.body["connected"] == true)
                .then_some(())
        })
        .await;
        id
    }

    /// Another worker process; returns its name (`worker-<n>`).
    pub fn start_worker(&mut self, extra_env: &[(&str, &str)]) -> String {
        self.workers_started += 1;
        let name = format!("worker-{}", self.workers_started);
        let metrics = free_addr().to_string();
        let mut env: Vec<(&str, &str)> = vec![("HERALD__WORKER__METRICS_LISTEN", &metrics)];
        env.extend_from_slice(extra_env);
        self.spawn(&name, "herald-worker", &[], &env);
        name
    }

    fn command(&self, binary_name: &str, args: &[&str]) -> Command {
        let mut command = Command::new(binary(binary_name));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null());
        command
    }

    async fn run_to_end(&self, binary_name: &str, args: &[&str]) -> std::process::Output {
        self.command(binary_name, args)
            .output()
            .await
            .expect("run binary")
    }

    fn spawn(&mut self, name: &str, binary_name: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = self.command(binary_name, args);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary_name}: {e}"));
        self.processes.retain(|p| p.name != name);
        self.processes.push(Process {
            name: name.to_string(),
            child,
            log,
            binary: binary_name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
    }

    /// Starts a process again, as it was started (after it was killed).
    pub fn restart(&mut self, name: &str) {
        let process = self
            .processes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let (binary, args, env) = (
            process.binary.clone(),
            process.args.clone(),
            process.env.clone(),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.spawn(name, &binary, &args, &env);
    }

    async fn wait_ready(&mut self) {
        let http = crate::http();
        let sim = format!("{}/healthz", self.sim.base);
        let api = format!("{}/readyz", self.api.base);
        for url in [sim, api] {
            wait_for(&format!("{url} to answer"), Duration::from_secs(60), || {
                let http = http.clone();
                let url = url.clone();
                async move {
                    let response = http.get(&url).send().await.ok()?;
                    response.status().is_success().then_some(())
                }
            })
            .await;
        }
        // A process that could not start (a port taken, a bad setting) would
        // otherwise show up as a test waiting for work that never happens.
        for process in &mut self.processes {
            if let Ok(Some(status)) = process.child.try_wait() {
                let log = std::fs::read_to_string(&process.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "{} exited at startup ({status}); the end of its log:\n{}",
                    process.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }

    pub fn env(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// Names of the processes still running.
    pub fn running(&mut self) -> Vec<String> {
        self.processes
            .iter_mut()
            .filter_map(|p| matches!(p.child.try_wait(), Ok(None)).then(|| p.name.clone()))
            .collect()
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.child.id())
    }

    /// Sends `signal` (e.g. "TERM", "KILL", "STOP", "CONT") to a process.
    pub fn signal(&self, name: &str, signal: &str) {
        let pid = self
            .pid(name)
            .unwrap_or_else(|| panic!("no running {name}"));
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {name}");
    }

    /// Waits for a process to exit; returns its exit status.
    pub async fn wait_exit(&mut self, name: &str, timeout: Duration) -> std::process::ExitStatus {
        let process = self
            .processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        tokio::time::timeout(timeout, process.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} did not exit within {timeout:?}"))
            .expect("wait")
    }

    /// `(process name, metrics address)` of every process started.
    pub fn metrics_targets(&self) -> Vec<(String, String)> {
        self.processes
            .iter()
            .filter_map(|p| {
                let key = match p.binary.as_str() {
                    "herald-api" => "HERALD__API__METRICS_LISTEN",
                    "herald-scheduler" => "HERALD__SCHEDULER__METRICS_LISTEN",
                    "herald-worker" => "HERALD__WORKER__METRICS_LISTEN",
                    "herald-sim" => "HERALD__SIM__METRICS_LISTEN",
                    _ => return None,
                };
                let own = p.env.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                let addr = own.or_else(|| self.env.get(key))?;
                Some((p.name.clone(), addr.clone()))
            })
            .collect()
    }

    pub fn log(&self, name: &str) -> String {
        self.processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops every process (SIGTERM, then SIGKILL after 15 s) and deletes the
    /// stack's queues and exchanges.
    pub async fn stop(mut self) {
        for process in &self.processes {
            if let Some(pid) = process.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for process in &mut self.processes {
            if tokio::time::timeout(Duration::from_secs(15), process.child.wait())
                .await
                .is_err()
            {
                let _ = process.child.kill().await;
            }
        }
        self.delete_broker_objects().await;
        self.cleaned = true;
    }

    async fn delete_broker_objects(&self) {
        let numbers: Vec<Uuid> = match self.db.pool.get().await {
            Ok(client) => client
                .query("SELECT id FROM sender_numbers", &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        delete_broker_objects(&self.prefix, &numbers).await;
    }
}

/// The test broker, under `prefix`.
pub fn rabbit_config(prefix: &str) -> RabbitConfig {
    RabbitConfig {
        url: herald_shared::config::Secret::new(
            std::env::var("HERALD_TEST_AMQP")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        ),
        prefix: prefix.to_string(),
        connect_timeout_ms: 5000,
        confirm_timeout_ms: 5000,
        delivery_limit: 5,
    }
}

/// How many messages wait in `queue`, ready (not delivered to a consumer):
/// a passive declare on `channel`, which the broker closes if the queue does
/// not exist.
pub async fn ready_in_queue(channel: &lapin::Channel, queue: &str) -> Result<u32, lapin::Error> {
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    Ok(declared.message_count())
}

/// The webhook back-offs of `schedule` (`None`: the configured default).
pub fn retry_delays(schedule: Option<&str>) -> Vec<Duration> {
    let env: Vec<(String, String)> = schedule
        .map(|s| {
            (
                "HERALD__WEBHOOKS__RETRY_SCHEDULE".to_string(),
                s.to_string(),
            )
        })
        .into_iter()
        .collect();
    herald_shared::Config::load_with_env(None, env)
        .expect("a valid schedule")
        .webhooks
        .retry_delays()
        .expect("a valid schedule")
}

/// Deletes a test run's queues and exchanges (quorum queues are not free: the
/// CI broker must not collect them run after run).
pub async fn delete_broker_objects(prefix: &str, numbers: &[Uuid]) {
    delete_broker_objects_with(prefix, numbers, Vec::new()).await;
}

/// As [`delete_broker_objects`], with the waiting queues of further webhook
/// back-offs.
pub async fn delete_broker_objects_with(
    prefix: &str,
    numbers: &[Uuid],
    extra_retry_delays: Vec<Duration>,
) {
    let config = rabbit_config(prefix);
    let topology = herald_shared::queue::Topology::new(&config);
    let broker = herald_shared::queue::Broker::new(&config, "herald-tests cleanup");
    let mut queues = vec![
        topology.scheduler_queue(),
        topology.dead_letter_queue(),
        topology.webhook_queue(),
    ];
    queues.extend(numbers.iter().map(|id| topology.send_queue(*id)));
    let mut delays = retry_delays(None);
    delays.extend(retry_delays(Some(TEST_RETRY_SCHEDULE)));
    delays.extend(extra_retry_delays);
    queues.extend(delays.iter().map(|d| topology.webhook_retry_queue(*d)));
    queues.sort();
    queues.dedup();
    // Each delete on a fresh channel: deleting a missing queue is fine, but
    // an error closes the channel. Several at once: deleting a quorum queue
    // takes RabbitMQ about a second, and a benchmark leaves a thousand.
    // Every step is bounded (the close by the broker itself): cleanup is
    // best effort (deploy/test.sh drops leftovers), and a test must never
    // hang in it (one CI run waited on a dead connection for good).
    futures_util::stream::iter(queues)
        .for_each_concurrent(16, |queue| {
            let broker = &broker;
            bounded(async move {
                if let Ok(channel) = broker.channel().await {
                    let _ = channel
                        .queue_delete(queue.into(), QueueDeleteOptions::default())
                        .await;
                }
            })
        })
        .await;
    for exchange in [topology.events_exchange(), topology.dead_letter_exchange()] {
        bounded(async {
            if let Ok(channel) = broker.channel().await {
                let _ = channel
                    .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                    .await;
            }
        })
        .await;
    }
    broker.close().await;
}

/// One cleanup step, given up after 30 s.
async fn bounded(step: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(Duration::from_secs(30), step)
        .await
        .is_err()
    {
        eprintln!("broker cleanup: a step took over 30 s; left for deploy/test.sh");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Children die with their handles (kill_on_drop). Say where the logs
        // are, for a failing test.
        eprintln!("stack logs kept in {}", self.dir.display());
        for process in &mut self.processes {
            let _ = process.child.start_kill();
        }
        let prefix = self.prefix.clone();
        let url = self.db.url.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let numbers = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    Ok((client, connection)) => {
                        tokio::spawn(connection);
                        client
                            .query("SELECT id FROM sender_numbers", &[])
                            .await
                            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                            .unwrap_or_default()
                    }
                    Err(_) => Vec::new(),
                };
                delete_broker_objects(&prefix, &numbers).await;
            });
        })
        .join();
    }
}
