-- Lost send jobs found without reading the table.
--
-- Every planner pass asks for messages `scheduled` longer than the
-- republish age (`db::messages::stale_scheduled`). No index had
-- `scheduled_at`, and right after a campaign is created its statistics show
-- no scheduled message, so Postgres planned a sequential scan of `messages`:
-- 12.9 ms a pass with a million messages queued, a fifth of the steady pass
-- (docs/BENCHMARKS.md, "Scheduler tick and dispatch"). This index holds only
-- scheduled messages (at most the look-ahead per number) in the order the
-- statement asks about them.
CREATE INDEX messages_scheduled_idx ON messages (scheduled_at)
    WHERE state = 'scheduled';
