-- Closing the loop: the event log (the live stream and webhooks read it),
-- message events from state changes, webhook endpoints, deliveries and their
-- attempts, inbound messages and opt-outs.

-- Event timestamps in one form whatever the session's TimeZone.
CREATE FUNCTION herald_json_time(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- Every event a tenant can see, in commit order. Only the outbox relay
-- writes here, holding a transaction-level advisory lock from its first
-- insert to its commit, so `seq` order is commit order: a reader that has
-- seen seq N never later finds a smaller seq appear. Readers (the live
-- stream, webhook fan-out) therefore keep a plain `seq` position. `seq` may
-- have gaps (a relay transaction that rolled back).
CREATE TABLE events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type        text NOT NULL,
    -- The event as delivered: {"id", "type", "timestamp", "data"}.
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_idx ON events (tenant_id, seq);
CREATE INDEX events_age_idx ON events (created_at);

-- Outbox rows are written to the event log first, then (for the few types
-- the scheduler wakes on) published to RabbitMQ; `logged` marks the rows that
-- are in the log and wait only for their publish.
ALTER TABLE outbox ADD COLUMN logged boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_unlogged_idx ON outbox (id) WHERE NOT logged;

-- Positions of readers of the event log that must survive restarts.
CREATE TABLE event_cursors (
    name      text PRIMARY KEY,
    position  bigint NOT NULL
);
INSERT INTO event_cursors (name, position) VALUES ('webhooks', 0);

-- A message's fate, announced from the state change itself, so no code path
-- that moves a message can forget to. Fires only for the states tenants are
-- told about; `queued`, `scheduled`, `sending`, `suppressed` and `cancelled`
-- are visible through the API instead (a cancelled million-row campaign
-- must not become a million events).
CREATE FUNCTION announce_message_state() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO outbox (topic, payload)
    VALUES (
        'message.' || NEW.state,
        jsonb_build_object(
            'id', gen_random_uuid(),
            'tenant_id', NEW.tenant_id,
            'timestamp', herald_json_time(now()),
            'type', 'message.' || NEW.state,
            'data', jsonb_build_object(
                'message_id', NEW.id,
                'campaign_id', NEW.campaign_id,
                'number_id', NEW.sender_number_id,
                'recipient', NEW.recipient,
                'wa_message_id', NEW.wa_message_id,
                'state', NEW.state,
                'attempts', NEW.attempts,
                'failure_reason', NEW.failure_reason,
                'at', herald_json_time(CASE NEW.state
                    WHEN 'sent' THEN NEW.sent_at
                    WHEN 'delivered' THEN NEW.delivered_at
                    WHEN 'read' THEN NEW.read_at
                    WHEN 'failed' THEN NEW.failed_at
                    WHEN 'unknown' THEN NEW.unknown_at
                END))));
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_announce
    AFTER UPDATE OF state ON messages
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('sent', 'delivered', 'read', 'failed', 'unknown'))
    EXECUTE FUNCTION announce_message_state();

-- Where a tenant's events are POSTed.
CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url              text NOT NULL,
    description      text,
    -- Event types sent here; empty: every type.
    event_types      text[] NOT NULL DEFAULT '{}',
    enabled          boolean NOT NULL DEFAULT true,
    -- Why Herald disabled it (a 410 answer), when it did.
    disabled_reason  text,
    -- `whsec_` + base64 key. During a rotation the previous one still signs
    -- (a second signature) until `previous_secret_until`.
    secret                 text NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id, id);

CREATE TYPE delivery_state AS ENUM ('pending', 'delivered', 'failed');

-- One event for one endpoint.
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_seq        bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    state            delivery_state NOT NULL DEFAULT 'pending',
    -- Every attempt ever made (the attempts log numbers them).
    attempts         integer NOT NULL DEFAULT 0,
    -- Attempts of the current run: the position in the retry schedule. A
    -- replay starts a new run. A job carries the attempt it is for, and
    -- only the job for `run_attempts + 1` may make it (duplicates find
    -- nothing to do).
    run_attempts     integer NOT NULL DEFAULT 0,
    -- When the next attempt is due; while an attempt is under way, when it
    -- will certainly have ended (the sweep republishes jobs lost past this).
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    failed_at        timestamptz,
    UNIQUE (endpoint_id, event_seq)
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_seq);

-- Every HTTP attempt of a delivery.
CREATE TABLE webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  integer NOT NULL,
    -- The HTTP status, when an answer came.
    status       integer,
    -- Why there was no usable answer: refused target, connection, timeout.
    error        text,
    -- The start of the answer's body (1 KiB), for debugging receivers.
    response     text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- What recipients write to the tenant's numbers.
CREATE TABLE inbound_messages (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number_id      uuid NOT NULL REFERENCES sender_numbers (id) ON DELETE CASCADE,
    -- E.164 when the sender is a phone number; else the network's address.
    sender         text NOT NULL,
    wa_message_id  text NOT NULL,
    -- text, image, video, audio, document, sticker, location, contact, other.
    kind           text NOT NULL,
    -- The text, or a media message's caption.
    body           text,
    -- MIME type of an attachment.
    media_type     text,
    -- When the network says it was sent.
    received_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- The last campaign message this recipient was sent (within the
    -- attribution window): what it answers.
    reply_to_message_id  bigint,
    campaign_id    uuid REFERENCES campaigns (id) ON DELETE SET NULL,
    -- The text was an opt-out keyword.
    opt_out        boolean NOT NULL DEFAULT false,
    -- A session delivers an event again after a crash: the id decides.
    UNIQUE (number_id, wa_message_id)
);
CREATE INDEX inbound_messages_tenant_idx ON inbound_messages (tenant_id, id);
CREATE INDEX inbound_messages_sender_idx ON inbound_messages (tenant_id, sender, id);
CREATE INDEX inbound_messages_campaign_idx ON inbound_messages (campaign_id, id)
    WHERE campaign_id IS NOT NULL;

-- Opt-out settings per tenant (NULL: the configured defaults).
ALTER TABLE tenants
    ADD COLUMN opt_out_keywords text[],
    ADD COLUMN opt_out_reply text;

-- The confirmation sent to someone who just opted out is the one message a
-- suppressed recipient may still get.
ALTER TABLE messages ADD COLUMN confirms_opt_out boolean NOT NULL DEFAULT false;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'webhook_endpoints', 'webhook_deliveries', 'inbound_messages']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_rows ON %I USING (herald_visible(tenant_id)) WITH CHECK (herald_visible(tenant_id))',
            t);
    END LOOP;
END
$$;

ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY parent_rows ON webhook_attempts
    USING (current_setting('herald.scope', true) = 'service'
           OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = delivery_id))
    WITH CHECK (current_setting('herald.scope', true) = 'service'
                OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = delivery_id));
