-- References checked once per statement on the import path.
--
-- A CSV import inserts up to a million contacts and list memberships in one
-- statement. A foreign key checks every inserted row with a query of its own:
-- on 200,000 rows the three keys below took 4.9 s of a 12 s merge
-- (docs/BENCHMARKS.md, "Ingest"). They are replaced by triggers that check a
-- statement's rows together, with the guarantees of the keys they replace:
--
-- * every inserted row names a parent that exists, or the statement fails
--   with SQLSTATE 23503 under the old constraint's name;
-- * the parents are locked `FOR KEY SHARE`, as a foreign key locks them
--   (unless this transaction wrote them: see `herald_check_parents`): a
--   concurrent delete of a parent waits for the inserting transaction (and its
--   cascade then sees the new rows), and an insert naming a parent whose
--   delete committed first fails;
-- * deleting a parent deletes its children (`ON DELETE CASCADE`);
-- * neither the parent key nor the child column changes (no statement of
--   Herald's does; a trigger refuses it, where a foreign key would re-check).
--
-- Like foreign keys, checks and cascades see every tenant's rows: they run
-- with `herald.scope` set to `service` and put it back after.
-- The other foreign keys stay: their tables are not written in bulk.

ALTER TABLE contacts DROP CONSTRAINT contacts_tenant_id_fkey;
ALTER TABLE list_members
    DROP CONSTRAINT list_members_list_id_fkey,
    DROP CONSTRAINT list_members_contact_id_fkey;

-- AFTER INSERT ... FOR EACH STATEMENT, transition table `new_rows`.
-- Arguments: the child column, the parent table (key `id`), the name of the
-- constraint it stands for.
--
-- A parent row this transaction wrote (`xmin` is its id) is not locked: no
-- one else sees it if it is new, and no one can delete it before this
-- transaction ends if it is an update (the update holds the row). An import's
-- merge writes every contact it joins to the list, so it locks none; locking
-- them anyway took a third of a million-row merge. A row written in a
-- subtransaction has another `xmin` and is locked, which is merely slower.
CREATE FUNCTION herald_check_parents() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    prior_scope constant text := current_setting('herald.scope', true);
    own constant xid := (pg_current_xact_id()::text::bigint % 4294967296)::text::xid;
    missing bigint;
    others bigint;
    locked bigint := 0;
BEGIN
    PERFORM set_config('herald.scope', 'service', true);
    EXECUTE format(
        'SELECT count(*) FILTER (WHERE p.id IS NULL),
                count(DISTINCT p.id) FILTER (WHERE p.xmin <> $1)
           FROM new_rows n LEFT JOIN %I p ON p.id = n.%I',
        TG_ARGV[1], TG_ARGV[0])
        INTO missing, others USING own;
    IF others > 0 THEN
        -- A parent deleted by a transaction that commits while this waits
        -- for its lock is skipped: fewer locked than seen.
        EXECUTE format(
            'SELECT count(*) FROM (SELECT 1 FROM %I p
                                    WHERE EXISTS (SELECT 1 FROM new_rows n WHERE n.%I = p.id)
                                      AND p.xmin <> $1
                                      FOR KEY SHARE OF p) l',
            TG_ARGV[1], TG_ARGV[0])
            INTO locked USING own;
    END IF;
    PERFORM set_config('herald.scope', coalesce(prior_scope, ''), true);
    IF missing > 0 OR locked < others THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"',
                TG_TABLE_NAME, TG_ARGV[2]
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = TG_ARGV[2],
                  TABLE = TG_TABLE_NAME,
                  DETAIL = format('%s rows name a %s not present in table "%s".',
                                  missing + others - locked, TG_ARGV[0], TG_ARGV[1]);
    END IF;
    RETURN NULL;
END
$$;

-- AFTER DELETE ... FOR EACH STATEMENT on the parent, transition table
-- `old_rows`. Arguments: the child table and its column naming the parent.
CREATE FUNCTION herald_cascade_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    prior_scope constant text := current_setting('herald.scope', true);
BEGIN
    PERFORM set_config('herald.scope', 'service', true);
    EXECUTE format('DELETE FROM %I WHERE %I IN (SELECT id FROM old_rows)', TG_ARGV[0], TG_ARGV[1]);
    PERFORM set_config('herald.scope', coalesce(prior_scope, ''), true);
    RETURN NULL;
END
$$;

-- BEFORE UPDATE OF <column> ... FOR EACH ROW WHEN (the column changes).
CREATE FUNCTION herald_refuse_key_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'column "%" of table "%" cannot change: it is a reference', TG_ARGV[0], TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, COLUMN = TG_ARGV[0];
END
$$;

CREATE TRIGGER contacts_tenant_id_fkey
    AFTER INSERT ON contacts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_check_parents('tenant_id', 'tenants', 'contacts_tenant_id_fkey');
CREATE TRIGGER list_members_list_id_fkey
    AFTER INSERT ON list_members REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_check_parents('list_id', 'lists', 'list_members_list_id_fkey');
CREATE TRIGGER list_members_contact_id_fkey
    AFTER INSERT ON list_members REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_check_parents('contact_id', 'contacts', 'list_members_contact_id_fkey');

CREATE TRIGGER tenants_contacts_cascade
    AFTER DELETE ON tenants REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_cascade_delete('contacts', 'tenant_id');
CREATE TRIGGER lists_members_cascade
    AFTER DELETE ON lists REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_cascade_delete('list_members', 'list_id');
CREATE TRIGGER contacts_members_cascade
    AFTER DELETE ON contacts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_cascade_delete('list_members', 'contact_id');

-- The parents' keys and the children's references never change.
DO $$
DECLARE
    spec text[];
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ARRAY['tenants', 'id'], ARRAY['lists', 'id'], ARRAY['contacts', 'id'],
        ARRAY['contacts', 'tenant_id'], ARRAY['list_members', 'list_id'],
        ARRAY['list_members', 'contact_id']
    ] LOOP
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE UPDATE OF %I ON %I FOR EACH ROW
                 WHEN (OLD.%I IS DISTINCT FROM NEW.%I)
                 EXECUTE FUNCTION herald_refuse_key_change(%L)',
            spec[1] || '_' || spec[2] || '_frozen', spec[2], spec[1], spec[2], spec[2], spec[2]);
    END LOOP;
END
$$;
