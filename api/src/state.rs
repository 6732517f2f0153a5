//! What every handler shares.

use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use herald_shared::{
    Config,
    db::{self, DbError, Pool},
    queue::{Broker, Publisher, Topology},
    webhooks::AttemptQueue,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::{counts::CountsCache, error::ApiResult, keys::KeyCache};

#[derive(Clone)]
pub struct AppState {
    /// Connections that see no tenant's rows until a transaction sets one
    /// ([`AppState::tenant_client`] + `db::tenant_tx`).
    pub pool: Pool,
    /// Connections of Herald itself (every tenant): authentication, the
    /// outbox relay, housekeeping.
    pub service_pool: Pool,
    pub broker: Arc<Broker>,
    /// The whole configuration: API limits, and the pacing policy the API
    /// validates against and projects with.
    pub config: Arc<Config>,
    /// Poked after a handler commits an outbox row, so the relay publishes it
    /// at once rather than at its next poll.
    pub outbox_written: Arc<Notify>,
    /// Requests per API key (by key hash), smoothing bursts.
    pub limiter: Arc<DefaultKeyedRateLimiter<[u8; 32]>>,
    /// Moves when the event log grew (Postgres `NOTIFY`): wakes live streams.
    pub events_feed: watch::Receiver<u64>,
    /// Queues webhook attempts the API starts itself (replays).
    pub webhook_attempts: Arc<AttemptQueue>,
    /// Cancelled at shutdown: live streams end so the server can drain.
    pub shutdown: CancellationToken,
    /// Campaigns' message counts, recounted at most once per
    /// `api.counts_max_age_ms`.
    pub counts: Arc<CountsCache>,
    /// Tenants of API keys found valid, kept up to `api.key_cache_ms`.
    pub keys: Arc<KeyCache>,
}

/// What [`AppState::new`] needs besides the pools and the configuration.
pub struct Wiring {
    pub broker: Arc<Broker>,
    pub outbox_written: Arc<Notify>,
    pub events_feed: watch::Receiver<u64>,
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(pool: Pool, service_pool: Pool, config: &Config, wiring: Wiring) -> Self {
        let Wiring {
            broker,
            outbox_written,
            events_feed,
            shutdown,
        } = wiring;
        let per_second = std::num::NonZeroU32::new(config.api.rate_limit_per_second)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(config.api.rate_limit_burst).unwrap_or(per_second);
        Self {
            pool,
            service_pool,
            webhook_attempts: Arc::new(AttemptQueue::new(
                Arc::new(Publisher::new(broker.clone(), &config.rabbitmq)),
                Topology::new(&config.rabbitmq),
            )),
            broker,
            events_feed,
            shutdown,
            config: Arc::new(config.clone()),
            outbox_written,
            counts: Arc::new(CountsCache::new(config.api.counts_max_age())),
            keys: Arc::new(KeyCache::new(config.api.key_cache())),
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            )),
        }
    }

    /// A pooled connection for tenant work: handlers open `db::tenant_tx` on
    /// it, commit what they changed, and let an early return roll back.
    pub async fn tenant_client(&self) -> ApiResult<deadpool_postgres::Client> {
        Ok(self.pool.get().await.map_err(DbError::from)?)
    }
}

/// Opens the tenant-scoped pool and the service pool.
pub fn pools(config: &Config) -> Result<(Pool, Pool), DbError> {
    Ok((
        db::connect_as(&config.database, "herald-api", db::Scope::Tenant)?,
        db::connect(&config.database, "herald-api service")?,
    ))
}
