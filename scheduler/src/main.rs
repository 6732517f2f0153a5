//! `herald-scheduler`: plans sends for every live number.

use std::path::PathBuf;

use clap::Parser;
use herald_shared::{Config, shutdown, telemetry};

#[derive(Parser)]
#[command(
    name = "herald-scheduler",
    about = "Herald scheduler: decides who is sent what, by which number, when"
)]
struct Args {
    /// Configuration file (TOML) overriding the embedded defaults.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(args.config.as_deref())?;
    telemetry::init_tracing(&config.telemetry);
    let shutdown = shutdown::on_signal();
    let metrics = telemetry::install_metrics();
    let fleet = telemetry::Appendix::default();
    telemetry::serve_metrics(
        config.scheduler.metrics_listen,
        metrics,
        fleet.clone(),
        shutdown.clone(),
    )
    .await?;
    shutdown::bounded(
        "scheduler",
        config.scheduler.shutdown_grace(),
        shutdown.clone(),
        herald_scheduler::run(&config, fleet, shutdown),
    )
    .await
}
