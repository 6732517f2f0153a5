//! `herald-sim`: the simulated WhatsApp network.

use std::path::PathBuf;

use clap::Parser;
use herald_shared::{Config, shutdown, telemetry};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "herald-sim", about = "A simulated WhatsApp network for Herald")]
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
    telemetry::serve_metrics(
        config.sim.metrics_listen,
        metrics,
        telemetry::Appendix::default(),
        shutdown.clone(),
    )
    .await?;
    let admin = TcpListener::bind(config.sim.admin_listen).await?;
    let devices = TcpListener::bind(config.sim.device_listen).await?;
    herald_sim::run(&config.sim, admin, devices, shutdown).await
}
