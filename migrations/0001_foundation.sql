-- Herald's foundation schema: tenants and their keys, sender numbers and their
-- leases, templates, campaigns, messages, and the outbox.

CREATE TYPE number_kind AS ENUM ('sim', 'whatsapp');
CREATE TYPE number_state AS ENUM ('active', 'needs_pairing', 'timelocked', 'banned', 'disabled');
CREATE TYPE campaign_status AS ENUM ('draft', 'scheduled', 'running', 'paused', 'cancelled', 'completed');
CREATE TYPE message_state AS ENUM (
    'queued', 'scheduled', 'sending', 'sent', 'delivered', 'read',
    'failed', 'unknown', 'suppressed', 'cancelled'
);

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a key is stored; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    -- The key's first characters, so people can tell their keys apart.
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE sender_numbers (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone             text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    kind              number_kind NOT NULL,
    state             number_state NOT NULL,
    label             text,
    daily_cap         integer NOT NULL CHECK (daily_cap >= 0),
    min_gap_ms        integer NOT NULL CHECK (min_gap_ms >= 0),
    -- The number's own zone: its sending day starts at local midnight.
    time_zone         text NOT NULL DEFAULT 'UTC',
    warmup_started_on date NOT NULL DEFAULT current_date,
    banned_until      timestamptz,
    timelocked_until  timestamptz,
    -- The WhatsApp profile name, as the network last reported it.
    push_name         text,
    last_connected_at timestamptz,
    -- When the owning worker last claimed a message on this number, so that a
    -- worker taking the number over keeps the minimum gap.
    last_send_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, phone)
);

-- Live worker processes; the count decides each worker's fair share of numbers.
CREATE TABLE workers (
    id            text PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- One owner per number. Taking a lease over is allowed only after it expired and
-- bumps `epoch`; every claim of a message checks the epoch (fencing).
CREATE TABLE number_leases (
    number_id    uuid PRIMARY KEY REFERENCES sender_numbers (id) ON DELETE CASCADE,
    owner        text NOT NULL,
    epoch        bigint NOT NULL CHECK (epoch > 0),
    acquired_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    -- Whether the owner's session is connected right now. Meaningful only while
    -- the lease is live: a dead owner's row simply expires.
    connected    boolean NOT NULL DEFAULT false
);
CREATE INDEX number_leases_owner_idx ON number_leases (owner);

-- Sends assigned to a number per day of its time zone: the authoritative count
-- behind the daily cap, shared by every scheduler replica.
CREATE TABLE sender_usage (
    number_id  uuid NOT NULL REFERENCES sender_numbers (id) ON DELETE CASCADE,
    day        date NOT NULL,
    assigned   integer NOT NULL CHECK (assigned >= 0),
    PRIMARY KEY (number_id, day)
);

CREATE TABLE templates (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    body        text NOT NULL,
    -- Variable names the template uses, found when it was compiled.
    variables   text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX templates_tenant_idx ON templates (tenant_id, created_at);

CREATE TABLE campaigns (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL,
    template_id   uuid NOT NULL REFERENCES templates (id),
    status        campaign_status NOT NULL DEFAULT 'draft',
    -- Messages created, and rows left out at creation (only when the request
    -- asked to skip invalid rows; they are reported in its response).
    recipients    integer NOT NULL CHECK (recipients >= 0),
    rejected      integer NOT NULL DEFAULT 0 CHECK (rejected >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    completed_at  timestamptz
);
CREATE INDEX campaigns_tenant_idx ON campaigns (tenant_id, created_at);
CREATE INDEX campaigns_live_idx ON campaigns (status) WHERE status = 'running';

CREATE TABLE campaign_senders (
    campaign_id  uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    number_id    uuid NOT NULL REFERENCES sender_numbers (id),
    PRIMARY KEY (campaign_id, number_id)
);
CREATE INDEX campaign_senders_number_idx ON campaign_senders (number_id);

CREATE TABLE messages (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_id       uuid REFERENCES campaigns (id) ON DELETE CASCADE,
    recipient         text NOT NULL,
    -- Rendered once, at creation, from the campaign's template.
    body              text NOT NULL,
    state             message_state NOT NULL DEFAULT 'queued',
    sender_number_id  uuid REFERENCES sender_numbers (id),
    -- Chosen before the WhatsApp call and used as the message's WhatsApp id.
    wa_message_id     text NOT NULL UNIQUE,
    attempts          integer NOT NULL DEFAULT 0,
    -- Lease epoch of the worker that claimed the message for sending.
    claim_epoch       bigint,
    failure_reason    text,
    queued_at         timestamptz NOT NULL DEFAULT now(),
    scheduled_at      timestamptz,
    sending_at        timestamptz,
    sent_at           timestamptz,
    delivered_at      timestamptz,
    read_at           timestamptz,
    failed_at         timestamptz,
    unknown_at        timestamptz,
    suppressed_at     timestamptz,
    cancelled_at      timestamptz,
    -- At most one message per recipient per campaign, whatever the API did.
    UNIQUE (campaign_id, recipient)
);
-- What the scheduler picks from: small, because rows leave it once scheduled.
CREATE INDEX messages_queued_idx ON messages (campaign_id, id) WHERE state = 'queued';
-- Jobs in flight per number (the look-ahead) and per campaign (completion).
CREATE INDEX messages_inflight_idx ON messages (sender_number_id, campaign_id)
    WHERE state IN ('scheduled', 'sending');
CREATE INDEX messages_campaign_state_idx ON messages (campaign_id, state);

-- Events written in the same transaction as the change they announce; the relay
-- publishes them to RabbitMQ with confirms and deletes them afterwards.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
