-- Real WhatsApp numbers: their session state in Postgres (encrypted), so any
-- worker holding a number's lease can open it; pairing requests; unlinking.

-- A data key per number, wrapped (XChaCha20-Poly1305) by the master key from
-- the environment. Rotating the master key re-wraps these rows only.
CREATE TABLE session_keys (
    number_id       uuid PRIMARY KEY REFERENCES sender_numbers (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Generation of the data key: part of every value's associated data.
    key_version     integer NOT NULL,
    -- Version of the master key that wraps it.
    master_version  integer NOT NULL,
    -- nonce (24 bytes) || ciphertext of the 32-byte data key.
    wrapped         bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    rewrapped_at    timestamptz
);

-- One sealed known value per master key version: a wrong master key is
-- detected at start, before it is used on anything.
CREATE TABLE master_key_checks (
    version     integer PRIMARY KEY,
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A number's session state, one row per stored item. `kind`, `key` and `sub`
-- are identifiers (addresses, ids) kept in clear for lookups; `value` is the
-- sealed item, its associated data binding it to the tenant, the number, the
-- data key version and its own kind/key/sub, so a row's value copied to
-- another row (or number) does not open. `n1`, `n2`, `flag`: the few numbers
-- some lookups need (prekey id and uploaded flag, expiry times).
CREATE TABLE session_rows (
    number_id  uuid NOT NULL REFERENCES sender_numbers (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    key        text NOT NULL,
    sub        text NOT NULL DEFAULT '',
    value      bytea NOT NULL,
    n1         bigint,
    n2         bigint,
    flag       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (number_id, kind, key, sub)
);

CREATE TYPE pairing_status AS ENUM ('waiting', 'showing_code', 'paired', 'failed', 'expired');

-- A request to link a number: by QR code, or by a code typed on the phone.
CREATE TABLE number_pairings (
    number_id     uuid PRIMARY KEY REFERENCES sender_numbers (id) ON DELETE CASCADE,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    method        text NOT NULL CHECK (method IN ('qr', 'code')),
    status        pairing_status NOT NULL DEFAULT 'waiting',
    -- The QR payload or the 8-character pair code now valid.
    code          text,
    code_expires_at  timestamptz,
    error         text,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    -- The request is abandoned (status `expired`) past this.
    expires_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Set by `DELETE /v1/numbers/{id}/session`: the worker driving the number
-- logs the device out, then wipes its session.
ALTER TABLE sender_numbers ADD COLUMN unlink_requested_at timestamptz;

ALTER TABLE session_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE session_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON session_keys
    USING (herald_visible(tenant_id)) WITH CHECK (herald_visible(tenant_id));
ALTER TABLE number_pairings ENABLE ROW LEVEL SECURITY;
ALTER TABLE number_pairings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON number_pairings
    USING (herald_visible(tenant_id)) WITH CHECK (herald_visible(tenant_id));
ALTER TABLE session_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE session_rows FORCE ROW LEVEL SECURITY;
CREATE POLICY parent_rows ON session_rows
    USING (current_setting('herald.scope', true) = 'service'
           OR EXISTS (SELECT 1 FROM sender_numbers n WHERE n.id = number_id))
    WITH CHECK (current_setting('herald.scope', true) = 'service'
                OR EXISTS (SELECT 1 FROM sender_numbers n WHERE n.id = number_id));
