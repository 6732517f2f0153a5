//! A fresh, migrated database per test on the real Postgres server.

use herald_shared::{config::DatabaseConfig, config::Secret, db};

use crate::unique_suffix;

/// Server the tests use; `HERALD_TEST_PG` overrides (a URL of a database the
/// harness may connect to for CREATE/DROP DATABASE). The default is the
/// ordinary `herald` role `deploy/services.sh` creates: a superuser would
/// bypass row-level security and hide its failures.
pub fn server_url() -> String {
    std::env::var("HERALD_TEST_PG")
        .unwrap_or_else(|_| "postgres://herald:herald@127.0.0.1:5432/postgres".to_string())
}

/// URL of database `name` on the test server.
fn url_for(name: &str) -> String {
    let server = server_url();
    let base = server
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&server);
    format!("{base}/{name}")
}

pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: db::Pool,
    keep: bool,
}

impl TestDb {
    /// Creates `herald_t_<random>` and applies the migrations.
    pub async fn create() -> Self {
        Self::create_named(&format!("herald_t_{}", unique_suffix()), false).await
    }

    /// Creates (or re-creates) a database with a fixed name, kept after use
    /// (the demo uses this).
    pub async fn recreate_named(name: &str) -> Self {
        Self::create_named(name, true).await
    }

    async fn create_named(name: &str, keep: bool) -> Self {
        let (admin, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "cannot reach the test Postgres at {} ({err}); is it running? \
                     deploy/services.sh starts it",
                    server_url()
                )
            });
        tokio::spawn(connection);
        // Two round trips: several statements in one would run as one
        // transaction, where DROP DATABASE is not allowed.
        for statement in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .expect("create test database");
        }
        let url = url_for(name);
        let pool = db::connect(&Self::config_for(&url), "herald-tests").expect("pool");
        db::migrate(&pool).await.expect("migrations apply");
        Self {
            name: name.to_string(),
            url,
            pool,
            keep,
        }
    }

    pub fn config_for(url: &str) -> DatabaseConfig {
        DatabaseConfig {
            url: Secret::new(url),
            pool_size: 8,
            wait_timeout_ms: 5000,
            create_timeout_ms: 5000,
            recycle_timeout_ms: 5000,
            statement_timeout_ms: 30_000,
        }
    }

    pub fn config(&self) -> DatabaseConfig {
        Self::config_for(&self.url)
    }

    /// Waits until a backend of this database running a statement that
    /// matches `query_like` (a `LIKE` pattern) waits for a lock: for tests
    /// that make one transaction wait for another before letting it go.
    pub async fn until_waiting_for_a_lock(&self, what: &str, query_like: &str) {
        let client = self.pool.get().await.expect("connection");
        crate::wait_for(what, std::time::Duration::from_secs(30), || async {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'
                        AND query LIKE $1",
                    &[&query_like],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            (waiting > 0).then_some(())
        })
        .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            // A failed test's database stays for inspection; the next run of the
            // suite does not reuse its name.
            return;
        }
        self.pool.close();
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow: use a thread
        // with its own small runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok((admin, connection)) =
                    tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
