//! Herald's configuration: one typed tree shared by every binary.
//!
//! Three layers, later ones winning: the commented defaults in
//! `shared/config/default.toml` (embedded in the binary), an optional file given
//! on the command line, and `HERALD__SECTION__KEY` environment variables.
//! Every field is required by the types, so a typo in a file or variable name is
//! an error at start-up rather than a silently ignored setting.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, time::Duration};

use config::{Environment, File, FileFormat};
use serde::Deserialize;

pub use crate::policy::breaker::BreakerConfig;
use crate::policy::{jitter::Jitter, warmup::WarmupPlan, zones::SendWindow};

/// The embedded defaults, with their comments; `herald-api config` prints them.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] config::ConfigError);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub rabbitmq: RabbitConfig,
    pub telemetry: TelemetryConfig,
    pub api: ApiConfig,
    pub scheduler: SchedulerConfig,
    pub worker: WorkerConfig,
    pub pacing: PacingConfig,
    pub contacts: ContactsConfig,
    pub events: EventsConfig,
    pub webhooks: WebhooksConfig,
    pub inbound: InboundConfig,
    pub warmup: WarmupConfig,
    pub breaker: BreakerConfig,
    pub sim: SimConfig,
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment passed in (tests use this so
    /// they never touch the process environment).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let overrides: config::Map<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("HERALD__"))
            .collect();
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let built = builder
            .add_source(
                Environment::with_prefix("HERALD")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()?;
        let config: Self = built.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: plans, windows, distributions.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: String| ConfigError(config::ConfigError::Message(what));
        for (name, plan) in &self.warmup.plans {
            plan.validate()
                .map_err(|e| invalid(format!("warmup.plans.{name}: {e}")))?;
        }
        if !self.warmup.plans.contains_key(&self.warmup.default_plan) {
            return Err(invalid(format!(
                "warmup.default_plan {:?} is not one of warmup.plans",
                self.warmup.default_plan
            )));
        }
        self.pacing
            .default_jitter()
            .validate()
            .map_err(|e| invalid(format!("pacing.default_jitter_*: {e}")))?;
        self.pacing
            .default_window()
            .map_err(|e| invalid(format!("pacing.default_window_*: {e}")))?;
        self.webhooks
            .retry_delays()
            .map_err(|e| invalid(format!("webhooks.retry_schedule: {e}")))?;
        if self
            .inbound
            .opt_out_keywords
            .iter()
            .any(|k| k.trim().is_empty())
        {
            return Err(invalid(
                "inbound.opt_out_keywords: a keyword is empty".into(),
            ));
        }
        Ok(())
    }
}

/// Parses "HH:MM"; "24:00" is the very end of the day.
pub fn parse_time_of_day(text: &str) -> Result<chrono::NaiveTime, String> {
    if text == "24:00" {
        return Ok(crate::policy::zones::END_OF_DAY);
    }
    chrono::NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day (HH:MM)"))
}

/// A value that must never reach a log line (URLs with passwords, keys).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub pool_size: usize,
    pub wait_timeout_ms: u64,
    pub create_timeout_ms: u64,
    pub recycle_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

impl DatabaseConfig {
    pub fn wait_timeout(&self) -> Duration {
        ms(self.wait_timeout_ms)
    }
    pub fn create_timeout(&self) -> Duration {
        ms(self.create_timeout_ms)
    }
    pub fn recycle_timeout(&self) -> Duration {
        ms(self.recycle_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitConfig {
    pub url: Secret,
    pub prefix: String,
    pub connect_timeout_ms: u64,
    pub confirm_timeout_ms: u64,
    pub delivery_limit: u32,
}

impl RabbitConfig {
    pub fn connect_timeout(&self) -> Duration {
        ms(self.connect_timeout_ms)
    }
    pub fn confirm_timeout(&self) -> Duration {
        ms(self.confirm_timeout_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub log_filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_inline_recipients: usize,
    pub max_body_chars: usize,
    pub default_region: String,
    pub outbox_poll_ms: u64,
    pub outbox_batch: i64,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub page_default: i64,
    pub page_max: i64,
    pub import_max_bytes: usize,
    pub import_max_rows: u64,
    pub import_max_columns: usize,
    pub import_max_field_chars: usize,
    pub media_max_bytes: usize,
    pub idempotency_hours: i32,
    pub shutdown_grace_ms: u64,
    /// How old a campaign's message counts may be when answered (0: counted
    /// on every request).
    pub counts_max_age_ms: u64,
    /// How long an API key found valid is trusted without asking Postgres
    /// again (0: on every request): the longest a revoked key still works.
    pub key_cache_ms: u64,
}

impl ApiConfig {
    pub fn counts_max_age(&self) -> Duration {
        ms(self.counts_max_age_ms)
    }
    pub fn key_cache(&self) -> Duration {
        ms(self.key_cache_ms)
    }
    pub fn outbox_poll(&self) -> Duration {
        ms(self.outbox_poll_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        ms(self.shutdown_grace_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    pub metrics_listen: SocketAddr,
    pub tick_ms: u64,
    pub lookahead: i64,
    pub plan_concurrency: usize,
    pub plan_batch_jobs: i64,
    pub republish_after_ms: u64,
    pub leader_ttl_ms: u64,
    pub leader_renew_ms: u64,
    pub fleet_ms: u64,
    pub stall_after_ms: u64,
    pub shutdown_grace_ms: u64,
}

impl SchedulerConfig {
    pub fn fleet(&self) -> Duration {
        ms(self.fleet_ms)
    }
    pub fn stall_after(&self) -> Duration {
        ms(self.stall_after_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        ms(self.shutdown_grace_ms)
    }
    pub fn tick(&self) -> Duration {
        ms(self.tick_ms)
    }
    pub fn republish_after(&self) -> Duration {
        ms(self.republish_after_ms)
    }
    pub fn leader_ttl(&self) -> Duration {
        ms(self.leader_ttl_ms)
    }
    pub fn leader_renew(&self) -> Duration {
        ms(self.leader_renew_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub metrics_listen: SocketAddr,
    pub max_numbers: usize,
    pub lease_ttl_ms: u64,
    pub lease_renew_ms: u64,
    pub lease_margin_ms: u64,
    pub worker_ttl_ms: u64,
    pub server_ack_timeout_ms: u64,
    pub send_timeout_ms: u64,
    pub ready_wait_ms: u64,
    pub max_attempts: i32,
    pub max_sends_per_second: u32,
    pub connect_stagger_ms: u64,
    pub shutdown_grace_ms: u64,
    pub sim_device_addr: String,
}

impl WorkerConfig {
    pub fn shutdown_grace(&self) -> Duration {
        ms(self.shutdown_grace_ms)
    }
    pub fn lease_ttl(&self) -> Duration {
        ms(self.lease_ttl_ms)
    }
    pub fn lease_renew(&self) -> Duration {
        ms(self.lease_renew_ms)
    }
    pub fn lease_margin(&self) -> Duration {
        ms(self.lease_margin_ms)
    }
    pub fn worker_ttl(&self) -> Duration {
        ms(self.worker_ttl_ms)
    }
    pub fn server_ack_timeout(&self) -> Duration {
        ms(self.server_ack_timeout_ms)
    }
    pub fn send_timeout(&self) -> Duration {
        ms(self.send_timeout_ms)
    }
    pub fn ready_wait(&self) -> Duration {
        ms(self.ready_wait_ms)
    }
    pub fn connect_stagger(&self) -> Duration {
        ms(self.connect_stagger_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingConfig {
    pub default_daily_cap: i32,
    pub default_min_gap_ms: i32,
    pub default_jitter_kind: JitterKind,
    pub default_jitter_mean_ms: u64,
    pub default_jitter_max_ms: u64,
    pub typing_ms_per_char: u64,
    pub typing_min_ms: u64,
    pub typing_max_ms: u64,
    pub typing_jitter: f64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub timelock_default_ms: u64,
    pub default_window_start: String,
    pub default_window_end: String,
    pub default_max_per_variant: i32,
    pub default_max_consecutive_failures: i32,
}

/// The shape of the default jitter (three flat keys rather than one table, so
/// that layered configuration can switch kinds without leftover keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterKind {
    None,
    Uniform,
    Exponential,
}

impl PacingConfig {
    pub fn default_jitter(&self) -> Jitter {
        match self.default_jitter_kind {
            JitterKind::None => Jitter::None,
            JitterKind::Uniform => Jitter::Uniform {
                max_ms: self.default_jitter_max_ms,
            },
            JitterKind::Exponential => Jitter::Exponential {
                mean_ms: self.default_jitter_mean_ms,
                max_ms: self.default_jitter_max_ms,
            },
        }
    }

    pub fn default_window(&self) -> Result<SendWindow, String> {
        SendWindow::new(
            parse_time_of_day(&self.default_window_start)?,
            parse_time_of_day(&self.default_window_end)?,
        )
    }
    pub fn retry_base(&self) -> Duration {
        ms(self.retry_base_ms)
    }
    pub fn retry_max(&self) -> Duration {
        ms(self.retry_max_ms)
    }
    pub fn timelock_default(&self) -> Duration {
        ms(self.timelock_default_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsConfig {
    pub check_batch: i64,
    pub check_interval_ms: u64,
    pub cache_days: i32,
    pub check_max_phones: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub retention_hours: i32,
    pub poll_ms: u64,
}

impl EventsConfig {
    pub fn poll(&self) -> Duration {
        ms(self.poll_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub retry_schedule: String,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub concurrency: u16,
    pub allow_loopback: bool,
    pub allow_private_networks: bool,
    pub sweep_after_ms: u64,
    pub max_endpoints: i64,
}

impl WebhooksConfig {
    /// The waits before the second, third, … attempts.
    pub fn retry_delays(&self) -> Result<Vec<Duration>, String> {
        self.retry_schedule
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_duration)
            .collect()
    }
    pub fn timeout(&self) -> Duration {
        ms(self.timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        ms(self.connect_timeout_ms)
    }
    pub fn sweep_after(&self) -> Duration {
        ms(self.sweep_after_ms)
    }
}

/// Parses `250ms`, `5s`, `30m`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h)"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number with a unit"))?;
    let millis = match unit.trim() {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    millis
        .map(ms)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    pub attribution_days: i32,
    pub opt_out_keywords: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    pub default_plan: String,
    pub plans: BTreeMap<String, WarmupPlan>,
}

impl WarmupConfig {
    /// Messages `plan` allows on warm-up day `day_index`; a plan not
    /// configured (renamed since the number was set up) counts as the
    /// default plan.
    pub fn volume(&self, plan: &str, day_index: i64) -> i64 {
        self.plans
            .get(plan)
            .or_else(|| self.plans.get(&self.default_plan))
            .expect("the default plan exists (checked at load)")
            .volume(day_index)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub admin_listen: SocketAddr,
    pub device_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub data_dir: String,
    pub server_ack_delay_ms: u64,
    pub delivered_probability: f64,
    pub delivered_delay_ms: u64,
    pub read_probability: f64,
    pub read_delay_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_parse() {
        let config = Config::load_with_env(None, env(&[])).expect("defaults are valid");
        assert_eq!(config.rabbitmq.prefix, "herald");
        assert_eq!(config.scheduler.lookahead, 2);
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let config = Config::load_with_env(
            None,
            env(&[
                ("HERALD__RABBITMQ__PREFIX", "test_x"),
                ("HERALD__WORKER__MAX_NUMBERS", "7"),
                ("HERALD__API__LISTEN", "127.0.0.1:0"),
                ("UNRELATED", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.rabbitmq.prefix, "test_x");
        assert_eq!(config.worker.max_numbers, 7);
        assert_eq!(config.api.listen.port(), 0);
    }

    #[test]
    fn a_misspelt_variable_is_an_error() {
        let err = Config::load_with_env(None, env(&[("HERALD__WORKER__MAX_NUMBRS", "7")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_numbrs"), "{err}");
    }

    #[test]
    fn policy_defaults_are_loaded_and_checked() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config.warmup.plans["standard"].first_day, 20);
        assert!(matches!(
            config.pacing.default_jitter(),
            Jitter::Exponential { .. }
        ));
        let uniform = Config::load_with_env(
            None,
            env(&[
                ("HERALD__PACING__DEFAULT_JITTER_KIND", "uniform"),
                ("HERALD__PACING__DEFAULT_JITTER_MAX_MS", "20"),
            ]),
        )
        .unwrap();
        assert_eq!(
            uniform.pacing.default_jitter(),
            Jitter::Uniform { max_ms: 20 }
        );
        let bad_jitter = Config::load_with_env(
            None,
            env(&[("HERALD__PACING__DEFAULT_JITTER_MEAN_MS", "0")]),
        );
        assert!(bad_jitter.is_err());
        let bad = Config::load_with_env(None, env(&[("HERALD__WARMUP__DEFAULT_PLAN", "turbo")]))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("turbo"), "{bad}");
        let bad_window = Config::load_with_env(
            None,
            env(&[("HERALD__PACING__DEFAULT_WINDOW_START", "21:00")]),
        );
        assert!(bad_window.is_err());
    }

    #[test]
    fn webhook_retry_schedule_parses_units() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        let delays = config.webhooks.retry_delays().unwrap();
        assert_eq!(delays.first(), Some(&Duration::from_secs(5)));
        assert_eq!(delays.last(), Some(&Duration::from_secs(36_000)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
        let bad = Config::load_with_env(
            None,
            env(&[("HERALD__WEBHOOKS__RETRY_SCHEDULE", "5s, soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("soon"), "{bad}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = Config::load_with_env(
            None,
            env(&[("HERALD__DATABASE__URL", "postgres://u:hunter2@h/db")]),
        )
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"));
        assert_eq!(config.database.url.expose(), "postgres://u:hunter2@h/db");
    }
}
