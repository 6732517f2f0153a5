-- Direct messages waiting, by their number.
--
-- Each planner pass asks which numbers have direct messages waiting. A
-- DISTINCT over `messages_sticky_idx` read every waiting direct message (and
-- every sticky campaign message) on every pass: 2 ms a pass with 3,000 direct
-- messages queued for a number that was not connected, a fifth of a core in
-- the API latency benchmark (docs/BENCHMARKS.md). This index holds direct
-- messages only, so the planner can skip from one number to the next
-- (`db::messages::numbers_with_direct`) and pick a number's oldest ones.
CREATE INDEX messages_direct_idx ON messages (preferred_number_id, id)
    WHERE campaign_id IS NULL AND state = 'queued' AND not_before IS NULL
      AND preferred_number_id IS NOT NULL;
