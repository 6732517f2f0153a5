//! Herald's test harness, shared by the integration tests, the end-to-end
//! tests and the demo.
//!
//! - [`TestDb`]: a fresh Postgres database per test, migrated, dropped after.
//! - [`Stack`]: the real binaries (`herald-sim`, `herald-api`,
//!   `herald-scheduler`, `herald-worker` × n) as child processes on free ports,
//!   with a RabbitMQ prefix of their own, so tests share one broker and one
//!   Postgres server without seeing each other.
//! - [`ApiServer`]: the API inside the test process, for HTTP-level tests.
//! - [`ApiClient`], [`SimClient`]: thin HTTP clients for the two admin
//!   surfaces.
//! - [`receiver::Receiver`]: a webhook receiver that records what arrives,
//!   and the reference library's verdict on its signatures.
//! - [`prometheus::Prometheus`]: a real Prometheus scraping a stack, with
//!   Herald's alert rules loaded.
//! - [`services`]: stopping, restarting and starving the machine's
//!   PostgreSQL and RabbitMQ, for the fault-injection suite.
//! - [`wait_for`]: poll a condition with a deadline (tests never sleep to wait
//!   for work).
//!
//! The binaries must be built before the tests run (`cargo build --workspace
//! --bins`; `deploy/test.sh` does it): the harness looks for them next to the
//! running test executable.

pub mod browser;
pub mod client;
pub mod database;
pub mod fixtures;
pub mod inprocess;
pub mod ports;
pub mod prometheus;
pub mod python;
pub mod receiver;
pub mod services;
pub mod stack;

use std::{future::Future, time::Duration};

pub use client::{ApiClient, EventStream, SimClient};
pub use database::TestDb;
pub use inprocess::ApiServer;
pub use stack::{Stack, StackOptions};

/// An HTTP client. reqwest is built with rustls (the scheduler's webhook
/// deliveries need TLS) but chooses no crypto provider by itself: install
/// ring's, as the scheduler does.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A short random suffix for database names, queue prefixes and phones.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The `i`-th of a family of valid Brazilian mobile numbers (+55 11 9xxxx-xxxx)
/// whose middle digits are `series`: distinct, valid, and recognisable in logs.
pub fn mobile(series: u32, i: u32) -> String {
    format!("+55119{:03}{:05}", series % 1000, i % 100_000)
}
