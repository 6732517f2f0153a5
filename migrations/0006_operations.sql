-- Operations: what the fleet gauges read.

-- A campaign's latest send, for telling a stalled campaign (`sending_at` is
-- already indexed per number, so claims were not HOT updates before either).
CREATE INDEX messages_campaign_sends_idx ON messages (campaign_id, sending_at)
    WHERE sending_at IS NOT NULL;
