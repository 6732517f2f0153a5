//! `herald-worker`: drives WhatsApp numbers (real or simulated).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use herald_shared::{Config, db, domain::NumberKind, shutdown, telemetry};
use herald_worker::{
    keystore::{self, MasterKey},
    session::{Connectors, sim::SimConnector, whatsapp::WhatsappConnector},
};

#[derive(Parser)]
#[command(
    name = "herald-worker",
    about = "Herald worker: owns numbers and sends their messages"
)]
struct Args {
    /// Configuration file (TOML) overriding the embedded defaults.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Drive numbers (the default). Needs HERALD_MASTER_KEY.
    Run,
    /// The master key that seals every number's session keys.
    #[command(subcommand)]
    MasterKey(MasterKeyCommand),
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Print a new random master key, as HERALD_MASTER_KEY=<version>:<base64>.
    Generate {
        #[arg(long, default_value_t = 1)]
        version: i32,
    },
    /// Check HERALD_MASTER_KEY against the database.
    Check,
    /// Re-wrap every number's data key from HERALD_MASTER_KEY to
    /// HERALD_NEW_MASTER_KEY (a higher version); then restart the workers
    /// with the new key.
    Rotate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(args.config.as_deref())?;
    telemetry::init_tracing(&config.telemetry);
    match args.command.unwrap_or(Command::Run) {
        Command::Run => run(config).await,
        Command::MasterKey(MasterKeyCommand::Generate { version }) => {
            let (_, text) = MasterKey::generate(version);
            println!("{}={text}", keystore::MASTER_KEY_ENV);
            Ok(())
        }
        Command::MasterKey(MasterKeyCommand::Check) => {
            let master = MasterKey::from_env()?;
            let pool = db::connect(&config.database, "herald-worker master-key")?;
            let client = pool.get().await?;
            keystore::check_master_key(&client, &master).await?;
            println!(
                "master key version {} opens Herald's session keys",
                master.version()
            );
            Ok(())
        }
        Command::MasterKey(MasterKeyCommand::Rotate) => {
            let old = MasterKey::from_env()?;
            let new = MasterKey::from_env_var("HERALD_NEW_MASTER_KEY")
                .context("HERALD_NEW_MASTER_KEY")?;
            anyhow::ensure!(
                new.version() > old.version(),
                "the new master key's version ({}) must be higher than the current one's ({})",
                new.version(),
                old.version()
            );
            let pool = db::connect(&config.database, "herald-worker master-key")?;
            let mut client = pool.get().await?;
            let count = keystore::rotate_master_key(&mut client, &old, &new).await?;
            println!(
                "re-wrapped {count} session keys from master key version {} to {}; \
                 restart the workers with HERALD_MASTER_KEY set to the new key",
                old.version(),
                new.version()
            );
            Ok(())
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Before anything else: a worker that cannot open session keys must not
    // start taking numbers.
    let master = Arc::new(MasterKey::from_env()?);
    let pool = db::connect(&config.database, "herald-worker sessions")?;
    {
        let client = pool
            .get()
            .await
            .context("connecting to Postgres to check the master key")?;
        keystore::check_master_key(&client, &master).await?;
    }
    let shutdown = shutdown::on_signal();
    let metrics = telemetry::install_metrics();
    telemetry::serve_metrics(
        config.worker.metrics_listen,
        metrics,
        telemetry::Appendix::default(),
        shutdown.clone(),
    )
    .await?;
    let connectors = Connectors::default()
        .with(
            NumberKind::Sim,
            Arc::new(SimConnector::new(
                config.worker.sim_device_addr.clone(),
                config.worker.server_ack_timeout(),
                pool.clone(),
                master.clone(),
            )),
        )
        .with(
            NumberKind::Whatsapp,
            Arc::new(WhatsappConnector::new(
                pool,
                master,
                config.worker.server_ack_timeout(),
                config.worker.send_timeout(),
            )),
        );
    shutdown::bounded(
        "worker",
        config.worker.shutdown_grace(),
        shutdown.clone(),
        herald_worker::run(&config, connectors, shutdown),
    )
    .await
}
