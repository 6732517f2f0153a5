-- The scheduler's pick reads the ready index whatever the planner estimates.
--
-- `db::messages::schedule_open` takes `LIMIT k` of a campaign's queued
-- messages in its open zones. Without an order, every access path returns
-- those rows, and the planner chose by a cost that assumes matching rows are
-- spread evenly through what it reads: for a campaign that is most of the
-- table, a sequential scan (or one over `messages_pkey`, or over
-- `messages_campaign_state_idx`) looked as cheap as the partial index. Those
-- paths read, from the front, every message the campaign has already sent
-- before they find a queued one, so the pick slowed as the campaign drained
-- (150 ms a pick at 40% of a 100,000-message campaign; docs/BENCHMARKS.md,
-- "Scheduler tick and dispatch").
--
-- The pick now asks for `ORDER BY recipient_zone, id` (open zones in order,
-- oldest message first). With the zone as the index's first column, this
-- index delivers rows in that order even for `recipient_zone = ANY(...)`
-- (Postgres 15 claims an index's order only when an `= ANY` condition is on
-- its first column); every other path has to read and sort all of the
-- campaign's matching rows first, so no estimate makes one of them look
-- cheaper, for parameter-specific and generic plans alike.
--
-- Building the index blocks writes to `messages` while it runs (it holds
-- queued messages only).
DROP INDEX messages_ready_idx;
CREATE INDEX messages_ready_idx ON messages (recipient_zone, campaign_id, id)
    WHERE state = 'queued' AND not_before IS NULL;
