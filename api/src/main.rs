//! `herald-api`: serves the HTTP API (the default), and the operator
//! subcommands: `migrate`, `tenants create|limits`, `keys create|list|revoke`,
//! `config`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use herald_shared::{Config, config, db, shutdown, telemetry};
use tokio::net::TcpListener;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "herald-api", about = "Herald HTTP API and operator commands")]
struct Args {
    /// Configuration file (TOML) overriding the embedded defaults.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve {
        /// Apply pending database migrations first.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Print the embedded default configuration, with its comments.
    Config,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Set a tenant's daily cap over all its numbers, and its time zone.
    Limits {
        #[arg(long)]
        tenant: Uuid,
        /// Messages per day across the tenant's numbers; omit for no cap.
        #[arg(long)]
        daily_cap: Option<i32>,
        /// IANA zone the tenant's day starts in.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
    },
    /// Create a tenant and print its first API key (shown only once).
    Create {
        #[arg(long)]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key for a tenant and print it (shown only once).
    Create {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long, default_value = "api")]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's API keys (their names and first characters, never the
    /// keys), revoked ones included.
    List {
        #[arg(long)]
        tenant: Uuid,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by its id (from `keys list`). Running API processes
    /// refuse it within `api.key_cache_ms`.
    Revoke {
        key: Uuid,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if matches!(args.command, Some(Command::Config)) {
        print!("{}", config::DEFAULTS);
        return Ok(());
    }
    let config = Config::load(args.config.as_deref())?;
    telemetry::init_tracing(&config.telemetry);
    let pool = || db::connect(&config.database, "herald-api");
    match args.command.unwrap_or(Command::Serve { migrate: false }) {
        Command::Config => unreachable!("handled above"),
        Command::Migrate => {
            let applied = db::migrate(&pool()?).await.context("migrating")?;
            println!("applied migrations: {applied:?}");
        }
        Command::Tenants {
            command: TenantCommand::Create { name, json },
        } => {
            let created = herald_api::admin::create_tenant(&pool()?, &name).await?;
            print_result(json, &created, |created| {
                println!("tenant   {}", created.tenant_id);
                println!("api key  {}", created.api_key);
                println!("(the key is shown only this once: store it now)");
            })?;
        }
        Command::Tenants {
            command:
                TenantCommand::Limits {
                    tenant,
                    daily_cap,
                    time_zone,
                },
        } => {
            herald_api::admin::set_limits(&pool()?, tenant, daily_cap, &time_zone).await?;
            match daily_cap {
                Some(cap) => {
                    println!("tenant {tenant}: at most {cap} messages a day ({time_zone})")
                }
                None => println!("tenant {tenant}: no daily cap ({time_zone})"),
            }
        }
        Command::Keys {
            command: KeyCommand::Create { tenant, name, json },
        } => {
            let created = herald_api::admin::create_key(&pool()?, tenant, &name).await?;
            print_result(json, &created, |created| {
                println!("key id   {}", created.key_id);
                println!("api key  {}", created.api_key);
                println!("(the key is shown only this once: store it now)");
            })?;
        }
        Command::Keys {
            command: KeyCommand::List { tenant, json },
        } => {
            let keys = herald_api::admin::list_keys(&pool()?, tenant).await?;
            print_result(json, &keys, |keys| {
                for key in keys {
                    println!("{}", describe_key(key));
                }
            })?;
        }
        Command::Keys {
            command: KeyCommand::Revoke { key, json },
        } => {
            let revoked = herald_api::admin::revoke_key(&pool()?, key).await?;
            print_result(json, &revoked, |revoked| {
                println!("{}", describe_key(revoked));
                println!(
                    "(running API processes refuse it within {} ms)",
                    config.api.key_cache_ms
                );
            })?;
        }
        Command::Serve { migrate } => {
            if migrate {
                db::migrate(&pool()?).await.context("migrating")?;
            }
            let shutdown = shutdown::on_signal();
            let metrics = telemetry::install_metrics();
            telemetry::serve_metrics(
                config.api.metrics_listen,
                metrics,
                telemetry::Appendix::default(),
                shutdown.clone(),
            )
            .await?;
            let listener = TcpListener::bind(config.api.listen)
                .await
                .with_context(|| format!("binding {}", config.api.listen))?;
            shutdown::bounded(
                "api",
                config.api.shutdown_grace(),
                shutdown.clone(),
                herald_api::run(&config, listener, shutdown),
            )
            .await?;
        }
    }
    Ok(())
}

/// One line per key: id, name, first characters, created, revoked.
/// An operator command's result: one line of JSON with `--json`, else in
/// words.
fn print_result<T: serde::Serialize>(
    json: bool,
    value: &T,
    in_words: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        in_words(value);
    }
    Ok(())
}

fn describe_key(key: &db::api_keys::KeyInfo) -> String {
    let state = match key.revoked_at {
        Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
        None => "active".to_string(),
    };
    format!(
        "{}  {:<16} {}…  created {}  {state}",
        key.id,
        key.name,
        key.prefix,
        key.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}
