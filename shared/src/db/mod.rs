//! Postgres access: the connection pool, the embedded migrations, and one module
//! per table holding its hand-written statements.
//!
//! Every statement function takes `&impl GenericClient`, so callers compose them
//! inside a transaction or run them on a plain pooled connection alike, and uses
//! `prepare_cached` so each statement is parsed once per connection.

pub mod api_keys;
pub mod campaigns;
pub mod contact_checks;
pub mod contacts;
pub mod events;
pub mod fleet;
pub mod idempotency;
pub mod imports;
pub mod inbound;
pub mod lists;
pub mod media;
pub mod messages;
pub mod notify;
pub mod number_leases;
pub mod outbox;
pub mod pairings;
pub mod planning;
pub mod scheduler_leader;
pub mod sender_numbers;
pub mod sender_usage;
pub mod session_rows;
pub mod suppressions;
pub mod templates;
pub mod tenants;
pub mod webhooks;
pub mod workers;

pub use deadpool_postgres::{GenericClient, Pool, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, error::SqlState};

use crate::config::DatabaseConfig;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time (database down, pool exhausted).
    #[error("database unavailable: {0}")]
    Unavailable(#[from] deadpool_postgres::PoolError),
    #[error("database: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// A dedicated connection (not from the pool) ended.
    #[error("database connection closed")]
    Closed,
}

/// tokio-postgres prints server errors as just "db error"; say what it was.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

impl DbError {
    /// Whether the failure is the database being unreachable rather than the
    /// statement being wrong: callers answer 503 and retry later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Query(err) => {
                err.is_closed()
                    || err.code() == Some(&SqlState::ADMIN_SHUTDOWN)
                    || err.code() == Some(&SqlState::CANNOT_CONNECT_NOW)
                    || err.code() == Some(&SqlState::QUERY_CANCELED)
                    || std::error::Error::source(err)
                        .is_some_and(|source| source.is::<std::io::Error>())
            }
            Self::Closed => true,
            Self::Config(_) => false,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Query(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION))
    }

    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, Self::Query(err) if err.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION))
    }
}

/// Who a pool's connections act for, as row-level security sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Herald's own services (scheduler, worker, relays, migrations, admin
    /// commands): every tenant's rows.
    Service,
    /// The API's request handling: no tenant's rows until a transaction sets
    /// one (see [`tenant_tx`]).
    Tenant,
}

/// Builds a pool of service connections (see [`Scope`]).
pub fn connect(config: &DatabaseConfig, application_name: &str) -> Result<Pool, DbError> {
    connect_as(config, application_name, Scope::Service)
}

/// Builds the pool. Connections are opened lazily; every external wait has a
/// timeout (checkout, connect, recycle, and `statement_timeout` on the server).
pub fn connect_as(
    config: &DatabaseConfig,
    application_name: &str,
    scope: Scope,
) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .expose()
        .parse()
        .map_err(|err| DbError::Config(format!("database.url: {err}")))?;
    let scope = match scope {
        Scope::Service => " -c herald.scope=service",
        Scope::Tenant => "",
    };
    pg.application_name(application_name)
        .options(format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}{scope}",
            config.statement_timeout_ms,
            config.statement_timeout_ms * 3
        ))
        .connect_timeout(config.create_timeout());
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // A connection whose server went away is closed (its connection
            // task saw the socket end) and is not handed out again. No round
            // trip per checkout: a `Verified` check cost every API request two
            // of its ten (docs/BENCHMARKS.md, "API latency").
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.wait_timeout()))
        .create_timeout(Some(config.create_timeout()))
        .recycle_timeout(Some(config.recycle_timeout()))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| DbError::Config(err.to_string()))
}

/// Schema migrations, in order. Plain SQL files in `migrations/`, embedded.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../../../migrations/0001_foundation.sql"),
    ),
    (
        2,
        "pacing",
        include_str!("../../../migrations/0002_pacing.sql"),
    ),
    (
        3,
        "audiences",
        include_str!("../../../migrations/0003_audiences.sql"),
    ),
    (
        4,
        "events",
        include_str!("../../../migrations/0004_events.sql"),
    ),
    (
        5,
        "sessions",
        include_str!("../../../migrations/0005_sessions.sql"),
    ),
    (
        6,
        "operations",
        include_str!("../../../migrations/0006_operations.sql"),
    ),
    (
        7,
        "policies_once",
        include_str!("../../../migrations/0007_policies_once.sql"),
    ),
    (
        8,
        "direct_waiting",
        include_str!("../../../migrations/0008_direct_waiting.sql"),
    ),
    (
        9,
        "bulk_references",
        include_str!("../../../migrations/0009_bulk_references.sql"),
    ),
    (
        10,
        "ready_by_zone",
        include_str!("../../../migrations/0010_ready_by_zone.sql"),
    ),
    (
        11,
        "scheduled_by_age",
        include_str!("../../../migrations/0011_scheduled_by_age.sql"),
    ),
    (
        12,
        "event_time_inline",
        include_str!("../../../migrations/0012_event_time_inline.sql"),
    ),
];

/// Applies the migrations not applied yet, each in its own transaction, under an
/// advisory lock so that several processes starting at once migrate once.
/// Returns the versions it applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, DbError> {
    let mut client = pool.get().await?;
    // Arbitrary constant shared by every Herald process: "herald" in ASCII.
    const LOCK_KEY: i64 = 0x6865_7261_6c64;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply_pending(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await?;
    result
}

async fn apply_pending(client: &mut deadpool_postgres::Client) -> Result<Vec<i32>, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS herald_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM herald_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO herald_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        done.push(*version);
    }
    Ok(done)
}

/// Begins a transaction that sees (and may write) only `tenant_id`'s rows:
/// the tenant is set with `SET LOCAL`, so it ends with the transaction and
/// never stays on a pooled connection.
pub async fn tenant_tx(
    client: &mut deadpool_postgres::Client,
    tenant_id: uuid::Uuid,
) -> Result<Transaction<'_>, DbError> {
    let tx = client.transaction().await?;
    let set = tx
        .prepare_cached("SELECT set_config('herald.tenant_id', $1, true)")
        .await?;
    tx.execute(&set, &[&tenant_id.to_string()]).await?;
    Ok(tx)
}

/// Turns bitmap and sequential scans off for the rest of `tx`, leaving
/// Postgres index scans: the one kind of scan that marks the index entries
/// of rows it finds dead (updated or deleted since, for every transaction),
/// so that no later scan visits those rows again. A bitmap or sequential scan
/// marks nothing: a read through an index that keeps an entry for every row
/// a message left behind until vacuum (each state change writes a new row)
/// would visit them all again at every run, and grow with the sending
/// history (docs/BENCHMARKS.md, "Jobs in flight counted without the sent
/// ones").
pub async fn index_scans_only(tx: &Transaction<'_>) -> Result<(), DbError> {
    tx.batch_execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
        .await?;
    Ok(())
}

/// Makes Postgres run the prepared statements of the rest of the
/// transaction with their generic plans instead of planning them again for
/// each call's parameters. It plans a statement anew while it guesses that
/// a plan for the parameters at hand beats the generic one, and for
/// statements that take their rows as arrays (`unnest($1)`) it keeps
/// guessing so: the worker's read receipts were planned at 88–94% of their
/// calls, 0.26–0.27 ms each (docs/BENCHMARKS.md, "Event times inlined,
/// outcomes in one flight"). Their generic plans read the same indexes.
pub async fn generic_plans(client: &impl GenericClient) -> Result<(), DbError> {
    client
        .batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await?;
    Ok(())
}

/// Whether the database answers, within the pool's timeouts.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client.query_one("SELECT 1", &[]).await?;
    Ok(())
}
