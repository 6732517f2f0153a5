-- Event times formatted inside the statement that writes the event.
--
-- `herald_json_time` (0004) was declared IMMUTABLE, but `to_char` is only
-- STABLE, and Postgres inlines a SQL function only when its body is no
-- more volatile than the function claims. So every call ran as a query of
-- its own, planned anew each time: two per event, 270,000 plans in one
-- pipeline benchmark run of 50,000 messages, inside the verdicts' and
-- receipts' transactions (docs/BENCHMARKS.md, "Event times inlined"). As
-- STABLE, its body is inlined into the trigger's INSERT, planned once.
-- The text it returns is the same.
CREATE OR REPLACE FUNCTION herald_json_time(t timestamptz) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;
