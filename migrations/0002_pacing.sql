-- The pacing policy: warm-up plans, tenant caps, send windows in the
-- recipient's time, sender pools and sticky senders, variants, retries with
-- back-off, circuit breakers, and one acting scheduler.

CREATE TYPE breaker_state AS ENUM ('closed', 'slowed', 'open');

ALTER TABLE tenants
    ADD COLUMN daily_cap integer CHECK (daily_cap >= 0),
    -- The tenant's day for its cap starts at midnight here.
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

CREATE TABLE tenant_usage (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day        date NOT NULL,
    assigned   integer NOT NULL CHECK (assigned >= 0),
    PRIMARY KEY (tenant_id, day)
);

ALTER TABLE sender_numbers
    ADD COLUMN warmup_plan text NOT NULL DEFAULT 'standard',
    -- NULL: the configured default distribution.
    ADD COLUMN jitter jsonb,
    -- Pool tags: a campaign may name a tag instead of numbers.
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN breaker breaker_state NOT NULL DEFAULT 'closed',
    -- While `open`: closed to sends until then.
    ADD COLUMN breaker_until timestamptz,
    -- The breaker judges only sends made since its last change.
    ADD COLUMN breaker_changed_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX sender_numbers_tags_idx ON sender_numbers USING gin (tags);
CREATE INDEX sender_numbers_until_idx ON sender_numbers (state)
    WHERE state IN ('timelocked', 'banned');

ALTER TABLE campaigns
    -- Send through the tenant's numbers tagged so (instead of named numbers).
    ADD COLUMN pool text,
    -- Scheduled start; not before this.
    ADD COLUMN start_at timestamptz,
    -- Whatever is not sent by then is cancelled.
    ADD COLUMN end_by timestamptz,
    -- Send window in each recipient's local time.
    ADD COLUMN window_start time NOT NULL DEFAULT '09:00',
    ADD COLUMN window_end time NOT NULL DEFAULT '20:00',
    -- Distinct recipient zone keys among the campaign's messages.
    ADD COLUMN zones text[] NOT NULL DEFAULT '{}',
    ADD COLUMN variants smallint NOT NULL DEFAULT 1 CHECK (variants >= 1),
    -- Recipients one variant may go to per number per day (0: no limit).
    ADD COLUMN max_per_variant integer NOT NULL DEFAULT 0 CHECK (max_per_variant >= 0),
    ADD COLUMN max_consecutive_failures integer NOT NULL DEFAULT 20
        CHECK (max_consecutive_failures >= 1),
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    -- Why the campaign is in its status when it is not the user's doing.
    ADD COLUMN status_reason text,
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN cancelled_at timestamptz,
    ADD CONSTRAINT campaigns_window_check CHECK (window_start < window_end),
    ADD CONSTRAINT campaigns_end_check CHECK (end_by IS NULL OR start_at IS NULL OR end_by > start_at);
CREATE INDEX campaigns_due_idx ON campaigns (start_at) WHERE status = 'scheduled';
CREATE INDEX campaigns_end_idx ON campaigns (end_by)
    WHERE end_by IS NOT NULL AND status IN ('running', 'paused', 'scheduled');

CREATE TABLE campaign_variants (
    campaign_id  uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    variant      smallint NOT NULL CHECK (variant >= 0),
    template_id  uuid NOT NULL REFERENCES templates (id),
    PRIMARY KEY (campaign_id, variant)
);

ALTER TABLE messages
    -- `p:<phone prefix>` or `z:<IANA zone>` (see shared::policy::zones).
    ADD COLUMN recipient_zone text NOT NULL DEFAULT 'z:UTC',
    ADD COLUMN variant smallint NOT NULL DEFAULT 0,
    -- The number this recipient's messages should come from (sticky sender, or
    -- the number a direct message was addressed from).
    ADD COLUMN preferred_number_id uuid REFERENCES sender_numbers (id),
    -- A retry waits until then.
    ADD COLUMN not_before timestamptz;

DROP INDEX messages_queued_idx;
-- What the scheduler picks from, by campaign and open time zone.
CREATE INDEX messages_ready_idx ON messages (campaign_id, recipient_zone, id)
    WHERE state = 'queued' AND not_before IS NULL;
-- Messages waiting for their sticky sender (or addressed from a number).
CREATE INDEX messages_sticky_idx ON messages (preferred_number_id, campaign_id, id)
    WHERE state = 'queued' AND not_before IS NULL AND preferred_number_id IS NOT NULL;
-- Retries waiting for their time.
CREATE INDEX messages_delayed_idx ON messages (not_before)
    WHERE state = 'queued' AND not_before IS NOT NULL;
-- A number's recent sends, for its circuit breaker.
CREATE INDEX messages_recent_sends_idx ON messages (sender_number_id, sending_at DESC)
    WHERE sending_at IS NOT NULL;

-- The number that last wrote to a recipient, per tenant: later campaigns keep
-- that sender when it is available.
CREATE TABLE recipient_senders (
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    recipient         text NOT NULL,
    number_id         uuid NOT NULL REFERENCES sender_numbers (id) ON DELETE CASCADE,
    last_assigned_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, recipient)
);

-- Recipients each variant of a campaign went to, per number per day.
CREATE TABLE variant_usage (
    number_id    uuid NOT NULL REFERENCES sender_numbers (id) ON DELETE CASCADE,
    day          date NOT NULL,
    campaign_id  uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    variant      smallint NOT NULL,
    assigned     integer NOT NULL CHECK (assigned >= 0),
    PRIMARY KEY (number_id, day, campaign_id, variant)
);

-- The one scheduler that acts; others stand by.
CREATE TABLE scheduler_leader (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    owner       text NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL
);
