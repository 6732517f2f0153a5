//! Logs (tracing) and metrics (Prometheus), set up the same way by every binary.

use std::{
    fmt::Write,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global tracing subscriber. `RUST_LOG`, when set, replaces the
/// configured filter. Logs go to stderr.
pub fn init_tracing(config: &TelemetryConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests running several components in one process) keeps the
    // first subscriber.
    let _ = result;
}

/// Installs the global metrics recorder, once per process.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_string()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("metrics recorder installed once")
        })
        .clone()
}

/// Series a process computes rather than records, added to its scrapes as
/// they are: the acting scheduler's fleet gauges (see `metrics`). Empty
/// while there is nothing to add.
#[derive(Clone, Default)]
pub struct Appendix(Arc<RwLock<String>>);

impl Appendix {
    /// Replaces what scrapes get, exposition text (see [`Exposition`]).
    pub fn set(&self, text: String) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = text;
    }

    pub fn clear(&self) {
        self.set(String::new());
    }

    fn append_to(&self, out: &mut String) {
        out.push_str(&self.0.read().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Prometheus text exposition for gauges, one family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a gauge family.
    pub fn gauge(&mut self, name: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} gauge");
        self
    }

    /// One sample of the family just started. Label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let value = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{key}=\"{value}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `addr` until `shutdown`;
/// returns the bound address. Scrapes get the recorded metrics, then
/// `appendix`.
pub async fn serve_metrics(
    addr: SocketAddr,
    handle: PrometheusHandle,
    appendix: Appendix,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    let upkeep_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = upkeep_stop.cancelled() => break,
                _ = interval.tick() => upkeep.run_upkeep(),
            }
        }
    });
    // `/healthz` answers while the process runs: a liveness probe for the
    // processes that serve no API (scheduler, worker).
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                let appendix = appendix.clone();
                async move {
                    let mut text = handle.render();
                    appendix.append_to(&mut text);
                    text
                }
            }),
        );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_label_values() {
        let mut out = Exposition::default();
        out.gauge("herald_x", "An example.")
            .sample("herald_x", &[("a", "plain"), ("b", "q\"uo\\te\nnl")], 2.5)
            .sample("herald_x", &[], 0.0);
        assert_eq!(
            out.finish(),
            "# HELP herald_x An example.\n# TYPE herald_x gauge\n\
             herald_x{a=\"plain\",b=\"q\\\"uo\\\\te\\nnl\"} 2.5\nherald_x 0\n"
        );
    }
}
