-- Scratch tables for deploy/bench-updates.sh: 200,000 rows shaped like
-- `messages`. m_a carries today's 13 indexes (`state` in one and in the
-- partial predicates, so no state change is a HOT update); m_b as many
-- indexes, none mentioning `state` or the receipt columns (every receipt
-- update is HOT). See docs/BENCHMARKS.md, Pipeline.
DROP TABLE IF EXISTS m_a, m_b;
CREATE TABLE m_a (
  id bigint PRIMARY KEY, tenant_id uuid NOT NULL, campaign_id uuid, recipient text NOT NULL, body text NOT NULL,
  state text NOT NULL, sender_number_id uuid, wa_message_id text NOT NULL UNIQUE, preferred_number_id uuid,
  recipient_zone text, not_before timestamptz, sending_at timestamptz, sent_at timestamptz, delivered_at timestamptz,
  read_at timestamptz, queued boolean NOT NULL DEFAULT false, inflight boolean NOT NULL DEFAULT false,
  UNIQUE (campaign_id, recipient));
CREATE TABLE m_b (LIKE m_a INCLUDING ALL) WITH (fillfactor = 85);
-- A: today's indexes (state in one, and in the partial predicates)
CREATE INDEX ON m_a (campaign_id, id) WHERE state = 'queued' AND not_before IS NULL;
CREATE INDEX ON m_a (sender_number_id, campaign_id) WHERE state IN ('scheduled','sending');
CREATE INDEX ON m_a (campaign_id, state);
CREATE INDEX ON m_a (campaign_id, recipient_zone, id) WHERE state = 'queued' AND not_before IS NULL;
CREATE INDEX ON m_a (preferred_number_id, campaign_id, id) WHERE state = 'queued' AND not_before IS NULL AND preferred_number_id IS NOT NULL;
CREATE INDEX ON m_a (not_before) WHERE state = 'queued' AND not_before IS NOT NULL;
CREATE INDEX ON m_a (sender_number_id, sending_at DESC) WHERE sending_at IS NOT NULL;
CREATE INDEX ON m_a (tenant_id, recipient, id);
CREATE INDEX ON m_a (campaign_id, id);
CREATE INDEX ON m_a (tenant_id, id);
CREATE INDEX ON m_a (campaign_id, sending_at) WHERE sending_at IS NOT NULL;
-- B: as many indexes, none mentioning state or the receipt columns
CREATE INDEX ON m_b (campaign_id, id) WHERE queued AND not_before IS NULL;
CREATE INDEX ON m_b (sender_number_id, campaign_id) WHERE inflight;
CREATE INDEX ON m_b (campaign_id, queued);
CREATE INDEX ON m_b (campaign_id, recipient_zone, id) WHERE queued AND not_before IS NULL;
CREATE INDEX ON m_b (preferred_number_id, campaign_id, id) WHERE queued AND not_before IS NULL AND preferred_number_id IS NOT NULL;
CREATE INDEX ON m_b (not_before) WHERE queued AND not_before IS NOT NULL;
CREATE INDEX ON m_b (sender_number_id, sending_at DESC) WHERE sending_at IS NOT NULL;
CREATE INDEX ON m_b (tenant_id, recipient, id);
CREATE INDEX ON m_b (campaign_id, id);
CREATE INDEX ON m_b (tenant_id, id);
CREATE INDEX ON m_b (campaign_id, sending_at) WHERE sending_at IS NOT NULL;
INSERT INTO m_a (id, tenant_id, campaign_id, recipient, body, state, sender_number_id, wa_message_id, recipient_zone, sending_at, sent_at)
SELECT i, '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002', '+55119' || lpad(i::text, 8, '0'),
       'Oi R' || i || ', tudo bem?', 'sent', '00000000-0000-0000-0000-000000000003', 'W' || i, 'America/Sao_Paulo', now(), now()
  FROM generate_series(1, 200000) i;
INSERT INTO m_b SELECT * FROM m_a;
VACUUM ANALYZE m_a; VACUUM ANALYZE m_b;
