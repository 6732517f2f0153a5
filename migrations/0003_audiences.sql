-- Audiences and the complete API: contacts and lists (with CSV imports),
-- suppressions, media, direct messages, contact checks, idempotency keys, and
-- row-level security on every tenant table.

CREATE TABLE contacts (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone       text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    name        text,
    -- Everything else known about the contact (CSV columns, API fields):
    -- template variables and campaign filters.
    attributes  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, phone)
);
CREATE INDEX contacts_attributes_idx ON contacts USING gin (attributes jsonb_path_ops);

CREATE TABLE lists (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lists_tenant_idx ON lists (tenant_id, created_at);

CREATE TABLE list_members (
    list_id     uuid NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id  uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, contact_id)
);
CREATE INDEX list_members_contact_idx ON list_members (contact_id);

CREATE TYPE import_status AS ENUM ('running', 'completed', 'failed');

-- One CSV import into a list, and its report.
CREATE TABLE imports (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    list_id      uuid NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    status       import_status NOT NULL DEFAULT 'running',
    -- Data rows read (header excluded).
    rows         bigint NOT NULL DEFAULT 0,
    accepted     bigint NOT NULL DEFAULT 0,
    rejected     bigint NOT NULL DEFAULT 0,
    -- Rows whose phone appeared earlier in the same file (merged, last wins).
    duplicates   bigint NOT NULL DEFAULT 0,
    -- Contacts that existed before and were updated.
    merged       bigint NOT NULL DEFAULT 0,
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX imports_list_idx ON imports (list_id, started_at);

CREATE TABLE import_rejections (
    import_id  uuid NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    -- Line number in the file (the header is line 1).
    line       bigint NOT NULL,
    reason     text NOT NULL,
    PRIMARY KEY (import_id, line)
);

-- People who must not be written to (opt-outs, complaints, requests).
CREATE TABLE suppressions (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone       text NOT NULL,
    reason      text,
    source      text NOT NULL DEFAULT 'api',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, phone)
);

-- Uploaded media for templates and messages.
CREATE TABLE media (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    content_type  text NOT NULL,
    filename      text,
    size          integer NOT NULL,
    sha256        bytea NOT NULL,
    bytes         bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE templates
    -- An image or document sent with the text: {"kind", "url" | "media_id",
    -- "filename"?}.
    ADD COLUMN media jsonb,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE messages
    ADD COLUMN media jsonb;
-- A recipient's history across campaigns and direct messages.
CREATE INDEX messages_recipient_idx ON messages (tenant_id, recipient, id);
-- A campaign's history, and a tenant's, in id order (cursor pagination).
CREATE INDEX messages_campaign_id_idx ON messages (campaign_id, id);
CREATE INDEX messages_tenant_id_idx ON messages (tenant_id, id);

ALTER TABLE campaigns
    ALTER COLUMN template_id DROP NOT NULL,
    -- Built from a list (optionally filtered on contact attributes).
    ADD COLUMN list_id uuid REFERENCES lists (id),
    ADD COLUMN filter jsonb,
    -- Recipients left out because they are suppressed.
    ADD COLUMN suppressed integer NOT NULL DEFAULT 0;

-- Whether phones use WhatsApp, as last checked (per tenant).
CREATE TABLE contact_status (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone        text NOT NULL,
    on_whatsapp  boolean NOT NULL,
    checked_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, phone)
);

-- A request to check phones, and each phone to look up through a number's
-- throttled lane.
CREATE TABLE contact_checks (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number_id   uuid NOT NULL REFERENCES sender_numbers (id) ON DELETE CASCADE,
    phones      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE contact_lookups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_id    uuid NOT NULL REFERENCES contact_checks (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number_id   uuid NOT NULL REFERENCES sender_numbers (id) ON DELETE CASCADE,
    phone       text NOT NULL,
    done_at     timestamptz
);
CREATE INDEX contact_lookups_pending_idx ON contact_lookups (number_id, id) WHERE done_at IS NULL;

-- The first response to a POST with an Idempotency-Key, replayed for 24 h.
CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key           text NOT NULL,
    -- Method, path and body of the first request: the same key with another
    -- request is refused.
    request_hash  bytea NOT NULL,
    status        integer,
    content_type  text,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_age_idx ON idempotency_keys (created_at);

-- Row-level security: a connection sees a tenant's rows only when the
-- transaction set `herald.tenant_id` to that tenant (SET LOCAL, never per
-- pooled session), or when the connection is one of Herald's own services
-- (`herald.scope = service`: scheduler, worker, relays), which serve every
-- tenant. FORCE applies it to the tables' owner too. A connection that set
-- neither sees nothing. (Superusers bypass RLS: run Herald as an ordinary
-- role.)
CREATE FUNCTION herald_visible(row_tenant uuid) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
        SELECT current_setting('herald.scope', true) = 'service'
            OR row_tenant = nullif(current_setting('herald.tenant_id', true), '')::uuid
    $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'sender_numbers', 'templates', 'campaigns', 'messages', 'contacts', 'lists', 'imports',
        'suppressions', 'media', 'contact_status', 'contact_checks', 'contact_lookups',
        'idempotency_keys', 'recipient_senders', 'tenant_usage'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_rows ON %I USING (herald_visible(tenant_id)) WITH CHECK (herald_visible(tenant_id))',
            t);
    END LOOP;
END
$$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON tenants USING (herald_visible(id)) WITH CHECK (herald_visible(id));

-- Rows without their own tenant column follow their parent's visibility.
DO $$
DECLARE
    spec text[];
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ARRAY['campaign_senders', 'campaigns', 'campaign_id'],
        ARRAY['campaign_variants', 'campaigns', 'campaign_id'],
        ARRAY['list_members', 'lists', 'list_id'],
        ARRAY['import_rejections', 'imports', 'import_id']
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', spec[1]);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', spec[1]);
        EXECUTE format(
            'CREATE POLICY parent_rows ON %I USING (current_setting(''herald.scope'', true) = ''service'' OR EXISTS (SELECT 1 FROM %I p WHERE p.id = %I)) WITH CHECK (current_setting(''herald.scope'', true) = ''service'' OR EXISTS (SELECT 1 FROM %I p WHERE p.id = %I))',
            spec[1], spec[2], spec[3], spec[2], spec[3]);
    END LOOP;
END
$$;
