//! The API run inside the test process (on a port of its own, against the
//! real Postgres and RabbitMQ): fast to start, for tests of the HTTP surface.

use herald_shared::Config;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    ApiClient, TestDb,
    stack::{delete_broker_objects_with, retry_delays},
    unique_suffix,
};

pub struct ApiServer {
    pub db: TestDb,
    /// Client authenticated as the first tenant.
    pub api: ApiClient,
    pub tenant_id: Uuid,
    pub prefix: String,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    /// The overrides the API started with, for components started later.
    overrides: Vec<(String, String)>,
    scheduler: Option<JoinHandle<()>>,
}

/// Configuration for an in-process component on `db`, with a private queue
/// prefix and any further `HERALD__…` overrides.
pub fn config(db: &TestDb, prefix: &str, overrides: &[(&str, &str)]) -> Config {
    let mut env = vec![
        ("HERALD__DATABASE__URL".to_string(), db.url.clone()),
        ("HERALD__RABBITMQ__PREFIX".to_string(), prefix.to_string()),
        ("HERALD__API__OUTBOX_POLL_MS".to_string(), "100".to_string()),
    ];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Config::load_with_env(None, env).expect("test configuration")
}

impl ApiServer {
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        let db = TestDb::create().await;
        let prefix = format!("herald_t_{}", unique_suffix());
        let config = config(&db, &prefix, overrides);
        // Errors the server logs show up with a failing test's output.
        herald_shared::telemetry::init_tracing(&config.telemetry);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            herald_api::run(&config, listener, stop)
                .await
                .expect("api runs");
        });
        let tenant = herald_api::admin::create_tenant(&db.pool, "first")
            .await
            .expect("tenant");
        Self {
            api: ApiClient::new(format!("http://{addr}"), Some(tenant.api_key)),
            tenant_id: tenant.tenant_id,
            db,
            prefix,
            shutdown,
            task,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            scheduler: None,
        }
    }

    /// Runs the scheduler (planning and webhook delivery) in this process
    /// too, on the same database and queue prefix, with the same overrides;
    /// it stops with the server.
    pub fn start_scheduler(&mut self) {
        let overrides: Vec<(&str, &str)> = self
            .overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let config = config(&self.db, &self.prefix, &overrides);
        let stop = self.shutdown.clone();
        self.scheduler = Some(tokio::spawn(async move {
            herald_scheduler::run(&config, Default::default(), stop)
                .await
                .expect("scheduler runs");
        }));
    }

    /// A client for a further tenant.
    pub async fn another_tenant(&self, name: &str) -> ApiClient {
        let tenant = herald_api::admin::create_tenant(&self.db.pool, name)
            .await
            .expect("tenant");
        self.api.with_key(Some(&tenant.api_key))
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        if let Some(scheduler) = self.scheduler {
            let _ = scheduler.await;
        }
        let schedule = self
            .overrides
            .iter()
            .find(|(k, _)| k == "HERALD__WEBHOOKS__RETRY_SCHEDULE")
            .map(|(_, v)| v.as_str());
        delete_broker_objects_with(&self.prefix, &[], retry_delays(schedule)).await;
    }
}
