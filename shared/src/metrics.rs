//! Metric names, in one place so dashboards, alerts and code agree. Names are
//! snake_case with their unit; labels never carry ids of people or phone
//! numbers. The catalogue with meanings is `docs/METRICS.md`.

/// Counter: message transitions, label `state` (the state entered).
pub const MESSAGES: &str = "herald_messages_total";
/// Histogram: one message's send, from its claim to its verdict recorded in
/// Postgres (seconds).
pub const SEND_DURATION: &str = "herald_send_duration_seconds";
/// Histogram: the session call alone, from writing the message to the
/// server's acknowledgement (seconds); successful sends only.
pub const SERVER_ACK_DURATION: &str = "herald_server_ack_duration_seconds";
/// Counter: publishes to RabbitMQ, label `outcome` (`ok`, `error`).
pub const RABBITMQ_PUBLISHED: &str = "herald_rabbitmq_publishes_total";
/// Gauge: 1 while the broker blocks this process's connection.
pub const RABBITMQ_BLOCKED: &str = "herald_rabbitmq_blocked";
/// Counter: outbox rows published.
pub const OUTBOX_PUBLISHED: &str = "herald_outbox_published_total";
/// Counter: events added to the event log (what the live stream and
/// webhooks read).
pub const EVENTS_LOGGED: &str = "herald_events_logged_total";
/// Gauge: age of the oldest unpublished outbox row (seconds).
pub const OUTBOX_LAG: &str = "herald_outbox_lag_seconds";
/// Histogram: one scheduler pass over every live number (seconds).
pub const SCHEDULER_TICK: &str = "herald_scheduler_tick_seconds";
/// Counter: send jobs published by the scheduler, label `reason` (`new`,
/// `republish`).
pub const JOBS_PUBLISHED: &str = "herald_send_jobs_published_total";
/// Counter: transactions of a worker's group commit, label `kind`
/// (`claims`, `outcomes`).
pub const GROUP_COMMITS: &str = "herald_group_commits_total";
/// Counter: rows those transactions wrote, label `kind`; divided by
/// [`GROUP_COMMITS`], the rows per transaction.
pub const GROUP_COMMIT_ROWS: &str = "herald_group_commit_rows_total";
/// Gauge: numbers this worker holds a lease on.
pub const NUMBERS_OWNED: &str = "herald_worker_numbers_owned";
/// Counter: leases gained and lost by this worker, label `change`
/// (`acquired`, `lost`, `released`).
pub const LEASE_CHANGES: &str = "herald_lease_changes_total";
/// Gauge: connected sessions of this worker.
pub const SESSIONS_CONNECTED: &str = "herald_sessions_connected";
/// Counter: HTTP requests, labels `method`, `route` (matched path), `status`.
pub const HTTP_REQUESTS: &str = "herald_http_requests_total";
/// Histogram: HTTP request duration (seconds), labels `method`, `route`.
pub const HTTP_DURATION: &str = "herald_http_request_duration_seconds";
/// Counter: campaigns completed.
pub const CAMPAIGNS_COMPLETED: &str = "herald_campaigns_completed_total";
/// Gauge: 1 while this scheduler process is the acting one.
pub const SCHEDULER_LEADER: &str = "herald_scheduler_leader";
/// Counter: messages received by the tenants' numbers, label `kind`.
pub const INBOUND: &str = "herald_inbound_messages_total";
/// Counter: recipients who opted out by keyword.
pub const OPT_OUTS: &str = "herald_opt_outs_total";
/// Counter: webhook attempts, label `outcome` (`delivered`, `retry`,
/// `failed`, `refused`).
pub const WEBHOOK_ATTEMPTS: &str = "herald_webhook_attempts_total";
/// Histogram: one webhook attempt (seconds).
pub const WEBHOOK_DURATION: &str = "herald_webhook_attempt_duration_seconds";
/// Counter: requests refused by the per-key rate limit (429).
pub const HTTP_RATE_LIMITED: &str = "herald_http_rate_limited_total";
/// Gauge: live-stream (SSE) connections open on this API process.
pub const EVENT_STREAMS: &str = "herald_event_streams";
/// Counter: jobs the broker dead-lettered (delivery limit), label `kind`
/// (`send`, `webhook`, `unreadable`).
pub const DEAD_LETTERED: &str = "herald_dead_lettered_jobs_total";

// Fleet gauges: read from Postgres and RabbitMQ by the acting scheduler and
// exported with its scrapes (`herald_scheduler::fleet`), so exactly one
// process reports them and none reports stale values.

/// Gauge: 1 for a number's current state, 0 for the others; labels
/// `number_id`, `state` (`active`, `timelocked`, `banned`, `needs_pairing`,
/// `disabled`).
pub const NUMBER_STATE: &str = "herald_number_state";
/// Gauge: 1 while a worker holds the number's lease with its session
/// connected; label `number_id`.
pub const NUMBER_CONNECTED: &str = "herald_number_connected";
/// Gauge: the number's warm-up day (0 on its first day); label `number_id`.
pub const NUMBER_WARMUP_DAY: &str = "herald_number_warmup_day";
/// Gauge: messages the number may still be given today (warm-up plan, its
/// cap and its tenant's cap); label `number_id`.
pub const NUMBER_BUDGET_REMAINING: &str = "herald_number_budget_remaining";
/// Gauge: a number's circuit breaker (0 closed, 1 slowed, 2 open); label
/// `number_id`.
pub const NUMBER_BREAKER: &str = "herald_number_breaker_state";
/// Gauge: messages ready in a RabbitMQ queue; label `queue` (`scheduler`,
/// `webhooks`, `webhooks.retry.<delay>`, `dead`, and `send`: every number's
/// send queue together).
pub const QUEUE_MESSAGES: &str = "herald_queue_messages";
/// Gauge: messages not finished yet; label `state` (`queued`, `retry_wait`,
/// `scheduled`, `sending`).
pub const MESSAGES_WAITING: &str = "herald_messages_waiting";
/// Gauge: webhook deliveries waiting for an attempt (pending).
pub const WEBHOOK_PENDING: &str = "herald_webhook_deliveries_pending";
/// Gauge: campaigns running.
pub const CAMPAIGNS_RUNNING: &str = "herald_campaigns_running";
/// Gauge: running campaigns with messages ready in an open send window that
/// sent nothing for `scheduler.stall_after_ms`.
pub const CAMPAIGNS_STALLED: &str = "herald_campaigns_stalled";
/// Gauge: when the fleet gauges were read (Unix seconds); they are read
/// every `scheduler.fleet_ms`.
pub const FLEET_UPDATED: &str = "herald_fleet_updated_timestamp_seconds";
