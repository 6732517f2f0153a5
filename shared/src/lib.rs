//! Herald's shared crate: what the API, scheduler and worker agree on.
//!
//! Layout:
//! - [`config`]: the one typed configuration tree (embedded defaults, file, env).
//! - [`domain`]: parsed values and status enums mirroring Postgres enums.
//! - [`db`]: the pool, migrations, and one module of statements per table.
//! - [`queue`]: RabbitMQ names, declarations, connection and confirmed publishing.
//! - [`task`]: the typed jobs that travel on RabbitMQ; [`events`]: what
//!   happened, announced through the outbox.
//! - [`outbox`]: the relay from the `outbox` table to the event log and
//!   RabbitMQ; [`optout`]: opt-out keywords.
//! - [`template`]: strict, plain-text handlebars rendering.
//! - [`webhooks`]: Standard Webhooks secrets and signatures, and where
//!   deliveries may go.
//! - [`policy`]: the pacing rules as pure functions (windows, warm-up, caps,
//!   jitter, breaker, refusals, projections); [`clock`]: injectable time.
//! - [`telemetry`], [`metrics`]: logs and Prometheus metrics.
//! - [`shutdown`]: signals to a cancellation token.

pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod optout;
pub mod outbox;
pub mod policy;
pub mod queue;
pub mod shutdown;
pub mod task;
pub mod telemetry;
pub mod template;
pub mod webhooks;

pub use config::Config;
