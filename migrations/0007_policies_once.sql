-- Row-level security, read once per statement.
--
-- The policies of 0003–0005 call `herald_visible(tenant_id)`. Postgres
-- inlines it, but then runs both `current_setting` calls, and the cast of the
-- tenant setting to uuid, for every row a statement reads or writes: counting
-- a 10,000-message campaign took four times as long as the same count without
-- the policy (docs/BENCHMARKS.md, "API latency"). Written as scalar
-- sub-selects, the settings become init plans: read once per statement, then
-- compared per row. Same rows visible, same rows writable.
DO $$
DECLARE
    p record;
    scope constant text := '(SELECT current_setting(''herald.scope'', true)) = ''service''';
    visible text;
    spec text[];
BEGIN
    FOR p IN SELECT tablename FROM pg_policies
              WHERE schemaname = current_schema() AND policyname = 'tenant_rows'
    LOOP
        visible := format(
            '%s OR %I = (SELECT nullif(current_setting(''herald.tenant_id'', true), '''')::uuid)',
            scope,
            CASE p.tablename WHEN 'tenants' THEN 'id' ELSE 'tenant_id' END);
        EXECUTE format('ALTER POLICY tenant_rows ON %I USING (%s) WITH CHECK (%s)',
                       p.tablename, visible, visible);
    END LOOP;
    -- Rows without their own tenant column: visible when their parent is.
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ARRAY['campaign_senders', 'campaigns', 'campaign_id'],
        ARRAY['campaign_variants', 'campaigns', 'campaign_id'],
        ARRAY['list_members', 'lists', 'list_id'],
        ARRAY['import_rejections', 'imports', 'import_id'],
        ARRAY['webhook_attempts', 'webhook_deliveries', 'delivery_id'],
        ARRAY['session_rows', 'sender_numbers', 'number_id']
    ] LOOP
        visible := format('%s OR EXISTS (SELECT 1 FROM %I p WHERE p.id = %I)',
                          scope, spec[2], spec[3]);
        EXECUTE format('ALTER POLICY parent_rows ON %I USING (%s) WITH CHECK (%s)',
                       spec[1], visible, visible);
    END LOOP;
    -- Every parent policy rewritten (an unwrapped call deparses as
    -- "(current_setting(", a wrapped one as "SELECT current_setting(").
    IF EXISTS (SELECT 1 FROM pg_policies
                WHERE schemaname = current_schema()
                  AND (qual LIKE '%(current_setting(''herald.scope%'
                       OR with_check LIKE '%(current_setting(''herald.scope%'))
    THEN
        RAISE EXCEPTION 'a policy still reads herald.scope per row';
    END IF;
END
$$;

-- Fails if a policy still calls it (a tenant policy left as it was).
DROP FUNCTION herald_visible(uuid);
