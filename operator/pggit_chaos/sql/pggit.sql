-- pgGit core embedded in pggit-chaos (contract: docs/pggit-core.md).
-- pggit-core-version: 1.0.0
--
-- Installed by `pggit-chaos install-pggit --dsn URL` (pggit_chaos.pggit.install) or
-- `psql -f pggit.sql`. Idempotent: running it again (also from several sessions at once) is
-- harmless, brings an older install of this core up to date and repairs what it owns
-- (functions replaced, missing columns/indexes/constraints added, event triggers re-created
-- and re-enabled). Works on PostgreSQL 13-18. Needs a superuser (event triggers).

BEGIN;

DO $install_guard$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'pggit: installing pgGit needs a superuser (it creates event triggers); role "%" is not one', current_user
            USING ERRCODE = '42501',
                  HINT = 'connect as a superuser (e.g. postgres) or ask an administrator to install pgGit';
    END IF;
END
$install_guard$;

-- Concurrent installs queue up here instead of racing on CREATE ... IF NOT EXISTS.
SELECT pg_catalog.pg_advisory_xact_lock(7081985512);

CREATE SCHEMA IF NOT EXISTS pggit;

-- ---------------------------------------------------------------------------------------
-- Tables. CREATE TABLE IF NOT EXISTS for a fresh install, then ADD COLUMN IF NOT EXISTS for
-- every column so that an older install of this core is brought up to date.
-- ---------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS pggit.install_info (
    component text PRIMARY KEY,
    version text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE pggit.install_info ADD COLUMN IF NOT EXISTS previous_version text;

CREATE TABLE IF NOT EXISTS pggit.branches (id serial PRIMARY KEY);
ALTER TABLE pggit.branches ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE pggit.branches ADD COLUMN IF NOT EXISTS parent_branch_id int;
ALTER TABLE pggit.branches ADD COLUMN IF NOT EXISTS head_commit_hash text;
ALTER TABLE pggit.branches ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'active';
ALTER TABLE pggit.branches ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE pggit.branches ALTER COLUMN name SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS branches_name_key ON pggit.branches (name);

CREATE SEQUENCE IF NOT EXISTS pggit.trinity_seq;

CREATE TABLE IF NOT EXISTS pggit.commits (id bigserial PRIMARY KEY);
ALTER TABLE pggit.commits ADD COLUMN IF NOT EXISTS hash text;
ALTER TABLE pggit.commits ADD COLUMN IF NOT EXISTS branch_id int;
ALTER TABLE pggit.commits ADD COLUMN IF NOT EXISTS parent_commit_hash text;
ALTER TABLE pggit.commits ADD COLUMN IF NOT EXISTS message text NOT NULL DEFAULT '';
ALTER TABLE pggit.commits ADD COLUMN IF NOT EXISTS author text NOT NULL DEFAULT current_user;
ALTER TABLE pggit.commits ADD COLUMN IF NOT EXISTS committed_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE pggit.commits ADD COLUMN IF NOT EXISTS tree_hash text;
ALTER TABLE pggit.commits ALTER COLUMN hash SET NOT NULL;
ALTER TABLE pggit.commits ALTER COLUMN branch_id SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS commits_hash_key ON pggit.commits (hash);
CREATE INDEX IF NOT EXISTS commits_branch_id_idx ON pggit.commits (branch_id, id);

CREATE TABLE IF NOT EXISTS pggit.objects (id serial PRIMARY KEY);
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS object_type text;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS schema_name text;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS object_name text;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS full_name text;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS version int NOT NULL DEFAULT 1;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS version_major int NOT NULL DEFAULT 1;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS version_minor int NOT NULL DEFAULT 0;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS version_patch int NOT NULL DEFAULT 0;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS schema_hash text;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS is_active boolean NOT NULL DEFAULT true;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
-- Additions of this core (not read by upstream-compatible tools): the catalog OID the row
-- follows (renames, drops) and the column name -> type map used for version bumps.
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS object_oid oid;
ALTER TABLE pggit.objects ADD COLUMN IF NOT EXISTS column_types jsonb;
ALTER TABLE pggit.objects ALTER COLUMN object_type SET NOT NULL;
ALTER TABLE pggit.objects ALTER COLUMN schema_name SET NOT NULL;
ALTER TABLE pggit.objects ALTER COLUMN object_name SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS objects_type_schema_name_key
    ON pggit.objects (object_type, schema_name, object_name);
CREATE INDEX IF NOT EXISTS objects_active_oid_idx ON pggit.objects (object_oid) WHERE is_active;

CREATE TABLE IF NOT EXISTS pggit.history (id bigserial PRIMARY KEY);
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS object_id int;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS change_type text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS change_severity text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS object_type text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS schema_name text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS object_name text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS command_tag text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS old_version int;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS new_version int;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS schema_hash_before text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS schema_hash_after text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS sql_executed text;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS transaction_id bigint;
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS created_by text NOT NULL DEFAULT current_user;
-- Addition of this core: 'major.minor.patch' after the change.
ALTER TABLE pggit.history ADD COLUMN IF NOT EXISTS version_after text;
CREATE INDEX IF NOT EXISTS history_object_id_idx ON pggit.history (object_id, id);
CREATE INDEX IF NOT EXISTS history_transaction_id_idx ON pggit.history (transaction_id);
CREATE INDEX IF NOT EXISTS history_schema_object_idx ON pggit.history (schema_name, object_name);

-- Backfill what an older install of this core could not have filled.
UPDATE pggit.objects o
   SET full_name = o.schema_name || '.' || o.object_name
 WHERE o.full_name IS NULL;
UPDATE pggit.objects o
   SET object_oid = pg_catalog.to_regclass(pg_catalog.quote_ident(o.schema_name) || '.' || pg_catalog.quote_ident(o.object_name))
 WHERE o.object_oid IS NULL AND o.is_active
   AND o.object_type IN ('TABLE', 'INDEX', 'VIEW', 'MATERIALIZED VIEW', 'SEQUENCE', 'FOREIGN TABLE');

-- Constraints that cannot be written "IF NOT EXISTS".
DO $constraints$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'pggit.commits'::regclass AND conname = 'commits_branch_id_fkey') THEN
        ALTER TABLE pggit.commits ADD CONSTRAINT commits_branch_id_fkey
            FOREIGN KEY (branch_id) REFERENCES pggit.branches (id);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'pggit.commits'::regclass AND conname = 'commits_parent_commit_hash_fkey') THEN
        ALTER TABLE pggit.commits ADD CONSTRAINT commits_parent_commit_hash_fkey
            FOREIGN KEY (parent_commit_hash) REFERENCES pggit.commits (hash);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'pggit.branches'::regclass AND conname = 'branches_head_commit_hash_fkey') THEN
        ALTER TABLE pggit.branches ADD CONSTRAINT branches_head_commit_hash_fkey
            FOREIGN KEY (head_commit_hash) REFERENCES pggit.commits (hash);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'pggit.history'::regclass AND conname = 'history_object_id_fkey') THEN
        ALTER TABLE pggit.history ADD CONSTRAINT history_object_id_fkey
            FOREIGN KEY (object_id) REFERENCES pggit.objects (id);
    END IF;
END
$constraints$;

INSERT INTO pggit.branches (name, status) VALUES ('main', 'active') ON CONFLICT (name) DO NOTHING;

-- ---------------------------------------------------------------------------------------
-- Helpers (internal, prefixed with an underscore).
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pggit._is_excluded_schema(p_schema text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_schema IS NULL
        OR p_schema IN ('pggit', 'pg_catalog', 'information_schema', 'pg_toast')
        OR p_schema ~ '^pg_(toast_)?temp'
$$;

CREATE OR REPLACE FUNCTION pggit._map_object_type(p_type text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_type
        WHEN 'table' THEN 'TABLE'
        WHEN 'table column' THEN 'TABLE'
        WHEN 'index' THEN 'INDEX'
        WHEN 'view' THEN 'VIEW'
        WHEN 'materialized view' THEN 'MATERIALIZED VIEW'
        WHEN 'function' THEN 'FUNCTION'
        WHEN 'procedure' THEN 'PROCEDURE'
        WHEN 'sequence' THEN 'SEQUENCE'
        WHEN 'type' THEN 'TYPE'
        WHEN 'foreign table' THEN 'FOREIGN TABLE'
    END
$$;

CREATE OR REPLACE FUNCTION pggit._check_branch_name(p_value text, p_param text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NULL OR p_value ~ '^[[:space:]]*$' THEN
        RAISE EXCEPTION 'pggit: parameter "%" (branch name) must not be empty or whitespace', p_param
            USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.char_length(p_value) > 255 THEN
        RAISE EXCEPTION 'pggit: parameter "%" (branch name) is % characters long; at most 255 are allowed',
            p_param, pg_catalog.char_length(p_value) USING ERRCODE = '22023';
    END IF;
    IF p_value ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'pggit: parameter "%" (branch name) must not contain whitespace or control characters: %',
            p_param, pg_catalog.quote_literal(p_value) USING ERRCODE = '22023';
    END IF;
END
$$;

-- Table hash by OID. Rendered with search_path = pg_catalog so that type names, default
-- expressions and constraint definitions come out schema-qualified whatever the caller's
-- search_path: the same table always gives the same hash.
-- NOT NULL is hashed by meaning, with its column: PostgreSQL 18 also records it as a named
-- constraint (contype 'n', named after the table, e.g. t_x_not_null), which would make two
-- tables of the same definition differ. Only what such a constraint adds to the column's
-- NOT NULL (NO INHERIT, NOT VALID) goes into the hash, so a table hashes alike on 13-18.
CREATE OR REPLACE FUNCTION pggit._schema_hash(p_rel oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT md5(
        'columns: ' || coalesce((
            SELECT string_agg(
                       quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                       || coalesce((SELECT string_agg(CASE WHEN n.connoinherit THEN ' NO INHERIT' ELSE '' END
                                                      || CASE WHEN n.convalidated THEN '' ELSE ' NOT VALID' END,
                                                      '' ORDER BY n.connoinherit, n.convalidated)
                                      FROM pg_constraint n
                                     WHERE n.conrelid = a.attrelid AND n.contype = 'n'
                                       AND n.conkey = ARRAY[a.attnum]), '')
                       || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
                       || CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text ELSE '' END
                       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
                       || CASE WHEN a.attcollation <> t.typcollation
                               THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                       ', ' ORDER BY a.attnum)
              FROM pg_attribute a
              JOIN pg_type t ON t.oid = a.atttypid
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped), '')
        || ' | constraints: ' || coalesce((
            SELECT string_agg(quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid), ', '
                              ORDER BY c.conname, pg_get_constraintdef(c.oid))
              FROM pg_constraint c
             WHERE c.conrelid = p_rel AND c.contype <> 'n'), '')
    )
$$;

-- Column name -> type (with modifiers) of a relation, for the version-bump rules.
CREATE OR REPLACE FUNCTION pggit._column_types(p_rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(a.attname, format_type(a.atttypid, a.atttypmod)), '{}'::jsonb)
      FROM pg_attribute a
     WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- Definition hash of a tracked object (tables: the schema hash).
CREATE OR REPLACE FUNCTION pggit._object_hash(p_type text, p_oid oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    RETURN CASE p_type
        WHEN 'TABLE' THEN pggit._schema_hash(p_oid)
        WHEN 'FOREIGN TABLE' THEN pggit._schema_hash(p_oid)
        WHEN 'INDEX' THEN md5(pg_get_indexdef(p_oid))
        WHEN 'VIEW' THEN md5(pg_get_viewdef(p_oid))
        WHEN 'MATERIALIZED VIEW' THEN md5(pg_get_viewdef(p_oid))
        WHEN 'FUNCTION' THEN md5(pg_get_functiondef(p_oid))
        WHEN 'PROCEDURE' THEN md5(pg_get_functiondef(p_oid))
        ELSE NULL
    END;
END
$$;

-- Hash of every active tracked object (the commits' tree_hash), kept up to date as
-- pggit.objects changes so that a commit does not read every tracked object: its cost does
-- not grow with their number. Each active object contributes the 128 bits of
-- md5(id:version:schema_hash); the tree is their XOR (order-free: the same set of objects
-- always gives the same tree, however it came about) and their count, hashed once more.
-- Statement triggers on pggit.objects append one row per changing statement to
-- pggit.tree_parts (insert-only: concurrent DDL never waits on each other here, at any
-- isolation level); the tree is the XOR over all rows, and a commit folds the rows into one
-- now and then (pggit._tree_compact), so a commit reads the rows written since the last one.
CREATE INDEX IF NOT EXISTS objects_active_id_idx ON pggit.objects (id) WHERE is_active;
CREATE TABLE IF NOT EXISTS pggit.tree_parts (
    id bigserial PRIMARY KEY,
    xor_hi bigint NOT NULL,
    xor_lo bigint NOT NULL,
    active bigint NOT NULL
);

CREATE OR REPLACE AGGREGATE pggit._xor(bigint) (sfunc = pg_catalog.int8xor, stype = bigint, initcond = '0');

-- One object's contribution: the two halves of md5(id:version:schema_hash).
CREATE OR REPLACE FUNCTION pggit._tree_entry(p_id int, p_version int, p_hash text, OUT hi bigint, OUT lo bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || substr(h, 1, 16))::bit(64)::bigint, ('x' || substr(h, 17, 16))::bit(64)::bigint
      FROM pg_catalog.md5(p_id::text || ':' || p_version::text || ':' || coalesce(p_hash, '')) AS h
$$;

CREATE OR REPLACE FUNCTION pggit._tree_text(p_hi bigint, p_lo bigint, p_active bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.md5('tree ' || coalesce(p_hi, 0) || ':' || coalesce(p_lo, 0) || ':' || coalesce(p_active, 0))
$$;

-- The tree hash from the maintained parts: O(parts written since the last compaction).
CREATE OR REPLACE FUNCTION pggit._tree_hash() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
    SELECT pggit._tree_text(pggit._xor(p.xor_hi), pggit._xor(p.xor_lo), sum(p.active)::bigint)
      FROM pggit.tree_parts p
$$;

-- The same tree hash computed from scratch over pggit.objects (O(active objects)): what
-- health_check compares the maintained one with.
CREATE OR REPLACE FUNCTION pggit._tree_hash_full() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
    SELECT pggit._tree_text(pggit._xor(e.hi), pggit._xor(e.lo), count(*))
      FROM pggit.objects o, pggit._tree_entry(o.id, o.version, o.schema_hash) e
     WHERE o.is_active
$$;

-- Statement trigger of pggit.objects: the XOR of what the statement took out and put in.
CREATE OR REPLACE FUNCTION pggit._tree_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pggit.tree_parts (xor_hi, xor_lo, active)
        SELECT pggit._xor(e.hi), pggit._xor(e.lo), count(*)
          FROM pggit_new_rows o, pggit._tree_entry(o.id, o.version, o.schema_hash) e
         WHERE o.is_active
        HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO pggit.tree_parts (xor_hi, xor_lo, active)
        SELECT pggit._xor(e.hi), pggit._xor(e.lo), -count(*)
          FROM pggit_old_rows o, pggit._tree_entry(o.id, o.version, o.schema_hash) e
         WHERE o.is_active
        HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pggit.tree_parts (xor_hi, xor_lo, active)
        SELECT pggit._xor(e.hi), pggit._xor(e.lo), sum(c.sign)::bigint
          FROM (SELECT n.id, n.version, n.schema_hash, 1 AS sign FROM pggit_new_rows n WHERE n.is_active
                UNION ALL
                SELECT o.id, o.version, o.schema_hash, -1 AS sign FROM pggit_old_rows o WHERE o.is_active) c,
               pggit._tree_entry(c.id, c.version, c.schema_hash) e
        HAVING pggit._xor(e.hi) <> 0 OR pggit._xor(e.lo) <> 0 OR sum(c.sign) <> 0;
    ELSIF TG_OP = 'TRUNCATE' THEN
        LOCK TABLE pggit.tree_parts IN EXCLUSIVE MODE;
        PERFORM set_config('pggit.tree_fold', 'on', true);
        DELETE FROM pggit.tree_parts;
        PERFORM set_config('pggit.tree_fold', 'off', true);
    END IF;
    RETURN NULL;
END
$$;

-- Fold the visible parts into one row. Called by commit_changes; skipped (the parts simply
-- stay) while another session folds or outside READ COMMITTED, where deleting rows another
-- session folded meanwhile would be a serialization failure for the caller.
CREATE OR REPLACE FUNCTION pggit._tree_compact() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed'
       OR (SELECT count(*) FROM (SELECT 1 FROM pggit.tree_parts LIMIT 2) two) < 2
       OR NOT pg_try_advisory_xact_lock(7081985513) THEN
        RETURN;
    END IF;
    PERFORM set_config('pggit.tree_fold', 'on', true);
    -- A new statement, a new snapshot: what an earlier folder committed is seen here.
    WITH folded AS (DELETE FROM pggit.tree_parts RETURNING xor_hi, xor_lo, active)
    INSERT INTO pggit.tree_parts (xor_hi, xor_lo, active)
    SELECT pggit._xor(f.xor_hi), pggit._xor(f.xor_lo), sum(f.active)::bigint
      FROM folded f
    HAVING count(*) > 0;
    PERFORM set_config('pggit.tree_fold', 'off', true);
END
$$;

-- pggit.tree_parts is derived from pggit.objects: only a fold (or the rebuild at install)
-- removes or changes its rows, with pggit.tree_fold = on for the transaction. Any other DELETE
-- or UPDATE of a part (a generic cleanup of "rows this transaction wrote in schema pggit")
-- leaves it in place, so that the tree hash stays equal to the one of the active objects.
CREATE OR REPLACE FUNCTION pggit._tree_parts_keep() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    IF current_setting('pggit.tree_fold', true) = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RETURN NULL;
END
$$;

DO $tree_triggers$
BEGIN
    DROP TRIGGER IF EXISTS pggit_tree_parts_keep ON pggit.tree_parts;
    CREATE TRIGGER pggit_tree_parts_keep BEFORE UPDATE OR DELETE ON pggit.tree_parts
        FOR EACH ROW EXECUTE FUNCTION pggit._tree_parts_keep();
    ALTER TABLE pggit.tree_parts ENABLE ALWAYS TRIGGER pggit_tree_parts_keep;
    DROP TRIGGER IF EXISTS pggit_tree_insert ON pggit.objects;
    DROP TRIGGER IF EXISTS pggit_tree_update ON pggit.objects;
    DROP TRIGGER IF EXISTS pggit_tree_delete ON pggit.objects;
    DROP TRIGGER IF EXISTS pggit_tree_truncate ON pggit.objects;
    CREATE TRIGGER pggit_tree_insert AFTER INSERT ON pggit.objects
        REFERENCING NEW TABLE AS pggit_new_rows FOR EACH STATEMENT EXECUTE FUNCTION pggit._tree_track();
    CREATE TRIGGER pggit_tree_update AFTER UPDATE ON pggit.objects
        REFERENCING OLD TABLE AS pggit_old_rows NEW TABLE AS pggit_new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pggit._tree_track();
    CREATE TRIGGER pggit_tree_delete AFTER DELETE ON pggit.objects
        REFERENCING OLD TABLE AS pggit_old_rows FOR EACH STATEMENT EXECUTE FUNCTION pggit._tree_track();
    CREATE TRIGGER pggit_tree_truncate AFTER TRUNCATE ON pggit.objects
        FOR EACH STATEMENT EXECUTE FUNCTION pggit._tree_track();
    -- Derived data of pggit.objects: kept also for writes under session_replication_role = replica.
    ALTER TABLE pggit.objects ENABLE ALWAYS TRIGGER pggit_tree_insert;
    ALTER TABLE pggit.objects ENABLE ALWAYS TRIGGER pggit_tree_update;
    ALTER TABLE pggit.objects ENABLE ALWAYS TRIGGER pggit_tree_delete;
    ALTER TABLE pggit.objects ENABLE ALWAYS TRIGGER pggit_tree_truncate;
END
$tree_triggers$;

-- The role that ran the DDL, as its own current_user saw it: the event trigger functions are
-- SECURITY DEFINER (so that a role without rights on pgGit's tables can still run DDL, and is
-- tracked), which makes current_user their owner. SET ROLE shows in the "role" setting;
-- without it the session user is the caller.
CREATE OR REPLACE FUNCTION pggit._caller() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user::text
                ELSE current_setting('role') END
$$;

-- Record one CREATE/ALTER of a catalog object into pggit.objects and pggit.history.
CREATE OR REPLACE FUNCTION pggit._track_object(
    p_type text, p_oid oid, p_schema text, p_name text, p_command_tag text, p_is_create boolean
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_row pggit.objects%ROWTYPE;
    v_other pggit.objects%ROWTYPE;
    v_hash text := pggit._object_hash(p_type, p_oid);
    v_cols jsonb;
    v_severity text := 'PATCH';
    v_change text;
    v_old_version int;
    v_major int; v_minor int; v_patch int;
    v_semver int[];
    v_id int;
BEGIN
    IF p_type IN ('TABLE', 'FOREIGN TABLE') THEN
        v_cols := pggit._column_types(p_oid);
    END IF;

    SELECT * INTO v_row FROM pggit.objects o
     WHERE o.object_oid = p_oid AND o.object_type = p_type AND o.is_active
     LIMIT 1;

    IF FOUND THEN
        -- An object we already follow: ALTER (also CREATE OR REPLACE).
        v_change := 'ALTER';
        IF v_row.column_types IS NOT NULL AND v_cols IS NOT NULL THEN
            IF EXISTS (SELECT 1 FROM jsonb_each_text(v_row.column_types) old_col
                        WHERE (v_cols ->> old_col.key) IS DISTINCT FROM old_col.value) THEN
                v_severity := 'MAJOR';
            ELSIF EXISTS (SELECT 1 FROM jsonb_object_keys(v_cols) new_col
                           WHERE NOT (v_row.column_types ? new_col)) THEN
                v_severity := 'MINOR';
            END IF;
        END IF;
        -- The bump goes through the public increment_version (one implementation of the rules).
        v_semver := string_to_array(pggit.increment_version(v_row.version_major, v_row.version_minor,
                                                            v_row.version_patch, lower(v_severity)), '.')::int[];
        v_major := v_semver[1]; v_minor := v_semver[2]; v_patch := v_semver[3];
        v_old_version := v_row.version;

        IF v_row.schema_name IS DISTINCT FROM p_schema OR v_row.object_name IS DISTINCT FROM p_name THEN
            -- Renamed or moved to another schema: the row follows the object, unless a row of
            -- that name already exists (an earlier, dropped object): that one takes over.
            SELECT * INTO v_other FROM pggit.objects o
             WHERE o.object_type = p_type AND o.schema_name = p_schema AND o.object_name = p_name
               FOR UPDATE;
            IF FOUND THEN
                UPDATE pggit.objects SET is_active = false, object_oid = NULL, updated_at = now()
                 WHERE id = v_row.id;
                UPDATE pggit.objects
                   SET object_oid = p_oid, is_active = true,
                       version = greatest(v_other.version, v_row.version) + 1,
                       version_major = v_major, version_minor = v_minor, version_patch = v_patch,
                       schema_hash = v_hash, column_types = v_cols, updated_at = now()
                 WHERE id = v_other.id
                RETURNING id, version INTO v_id, v_row.version;
            ELSE
                UPDATE pggit.objects
                   SET schema_name = p_schema, object_name = p_name, full_name = p_schema || '.' || p_name,
                       version = version + 1,
                       version_major = v_major, version_minor = v_minor, version_patch = v_patch,
                       schema_hash = v_hash, column_types = v_cols, updated_at = now()
                 WHERE id = v_row.id
                RETURNING id, version INTO v_id, v_row.version;
            END IF;
            IF p_type = 'TABLE' AND v_row.schema_name IS DISTINCT FROM p_schema THEN
                -- ALTER TABLE ... SET SCHEMA moves the table's indexes along.
                UPDATE pggit.objects o
                   SET schema_name = p_schema, full_name = p_schema || '.' || o.object_name, updated_at = now()
                 WHERE o.is_active AND o.object_type = 'INDEX'
                   AND o.object_oid IN (SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = p_oid);
            END IF;
        ELSE
            UPDATE pggit.objects
               SET version = version + 1,
                   version_major = v_major, version_minor = v_minor, version_patch = v_patch,
                   schema_hash = v_hash, column_types = v_cols, updated_at = now()
             WHERE id = v_row.id
            RETURNING id, version INTO v_id, v_row.version;
        END IF;

        INSERT INTO pggit.history (object_id, change_type, change_severity, object_type, schema_name,
                                   object_name, command_tag, old_version, new_version,
                                   schema_hash_before, schema_hash_after, sql_executed,
                                   transaction_id, created_by, version_after)
        VALUES (v_id, v_change, v_severity, p_type, p_schema, p_name, p_command_tag, v_old_version,
                v_row.version, v_row.schema_hash, v_hash, current_query(), txid_current(),
                pggit._caller(), v_major || '.' || v_minor || '.' || v_patch);
        RETURN;
    END IF;

    -- Not followed yet: a new object (or one created before pgGit was installed, or while
    -- tracking was off). A row of the same name (an earlier, dropped object) is reused.
    v_change := CASE WHEN p_is_create THEN 'CREATE' ELSE 'ALTER' END;
    v_severity := CASE WHEN p_is_create THEN 'MAJOR' ELSE 'PATCH' END;
    SELECT * INTO v_other FROM pggit.objects o
     WHERE o.object_type = p_type AND o.schema_name = p_schema AND o.object_name = p_name
       FOR UPDATE;
    v_old_version := v_other.version;  -- NULL when not found

    INSERT INTO pggit.objects AS o (object_type, schema_name, object_name, full_name, object_oid,
                                    version, version_major, version_minor, version_patch,
                                    schema_hash, column_types, is_active, created_at, updated_at)
    VALUES (p_type, p_schema, p_name, p_schema || '.' || p_name, p_oid, 1, 1, 0, 0,
            v_hash, v_cols, true, now(), now())
    ON CONFLICT (object_type, schema_name, object_name) DO UPDATE
       SET object_oid = EXCLUDED.object_oid, version = o.version + 1,
           version_major = 1, version_minor = 0, version_patch = 0,
           schema_hash = EXCLUDED.schema_hash, column_types = EXCLUDED.column_types,
           is_active = true, updated_at = now()
    RETURNING o.id, o.version INTO v_id, v_row.version;

    INSERT INTO pggit.history (object_id, change_type, change_severity, object_type, schema_name,
                               object_name, command_tag, old_version, new_version,
                               schema_hash_before, schema_hash_after, sql_executed,
                               transaction_id, created_by, version_after)
    VALUES (v_id, v_change, v_severity, p_type, p_schema, p_name, p_command_tag, v_old_version,
            v_row.version, v_other.schema_hash, v_hash, current_query(), txid_current(),
            pggit._caller(), '1.0.0');
END
$$;

-- ---------------------------------------------------------------------------------------
-- Event trigger functions.
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pggit.handle_ddl_command() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    r record;
    v_pending text := current_setting('pggit.pending_tables', true);
    v_seen oid[] := '{}';
    v_schema text;
    v_name text;
    v_rel oid;
BEGIN
    -- One catalog lookup by OID per reported object: the cost follows the objects touched.
    FOR r IN
        SELECT c.classid, c.objid, c.object_type, c.command_tag
          FROM pg_event_trigger_ddl_commands() c
         WHERE NOT c.in_extension
           AND pggit._map_object_type(c.object_type) IS NOT NULL
           AND NOT pggit._is_excluded_schema(c.schema_name)
    LOOP
        -- A command can report one object several times (CREATE TABLE with SERIAL: CREATE then
        -- ALTER SEQUENCE; CREATE TABLE with a foreign key: CREATE then ALTER TABLE): the first
        -- report decides CREATE or ALTER, the object is recorded once.
        CONTINUE WHEN r.objid = ANY (v_seen);
        v_seen := v_seen || r.objid;
        v_schema := NULL;
        v_name := NULL;
        IF r.classid = 'pg_class'::regclass THEN
            SELECT n.nspname, c.relname INTO v_schema, v_name
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = r.objid;
        ELSIF r.classid = 'pg_proc'::regclass THEN
            SELECT n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
              INTO v_schema, v_name
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = r.objid;
        ELSIF r.classid = 'pg_type'::regclass THEN
            SELECT n.nspname, t.typname INTO v_schema, v_name
              FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = r.objid;
        END IF;
        CONTINUE WHEN v_name IS NULL OR pggit._is_excluded_schema(v_schema);
        PERFORM pggit._track_object(pggit._map_object_type(r.object_type), r.objid, v_schema, v_name,
                                    r.command_tag,
                                    r.command_tag LIKE 'CREATE%' OR r.command_tag = 'SELECT INTO');
    END LOOP;

    -- Tables whose columns/constraints/defaults a DROP ... CASCADE removed, noted by
    -- handle_sql_drop (which fires just before this trigger, for the same command).
    IF v_pending IS NOT NULL AND v_pending <> '' THEN
        PERFORM set_config('pggit.pending_tables', '', true);
        FOREACH v_rel IN ARRAY string_to_array(v_pending, ',')::oid[] LOOP
            CONTINUE WHEN v_rel = ANY (v_seen);
            v_seen := v_seen || v_rel;
            SELECT n.nspname, c.relname INTO v_schema, v_name
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_rel;
            CONTINUE WHEN NOT FOUND OR pggit._is_excluded_schema(v_schema);
            PERFORM pggit._track_object('TABLE', v_rel, v_schema, v_name, TG_TAG, false);
        END LOOP;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pggit.handle_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    r record;
    v_row pggit.objects%ROWTYPE;
    v_pending oid[] := '{}';
    v_rel oid;
BEGIN
    FOR r IN
        SELECT d.classid, d.objid, d.objsubid, d.object_type, d.schema_name, d.address_names
          FROM pg_event_trigger_dropped_objects() d
         WHERE NOT pggit._is_excluded_schema(d.schema_name)
    LOOP
        IF r.object_type IN ('table column', 'table constraint', 'default value') THEN
            -- A part of a table that may survive: its table changed.
            IF TG_TAG <> 'ALTER TABLE' AND r.address_names IS NOT NULL AND cardinality(r.address_names) >= 2 THEN
                v_rel := to_regclass(quote_ident(r.address_names[1]) || '.' || quote_ident(r.address_names[2]));
                IF v_rel IS NOT NULL AND NOT v_rel = ANY (v_pending) THEN
                    v_pending := v_pending || v_rel;
                END IF;
            END IF;
            CONTINUE;
        END IF;
        CONTINUE WHEN pggit._map_object_type(r.object_type) IS NULL;
        UPDATE pggit.objects o
           SET is_active = false, version = o.version + 1, updated_at = now()
         WHERE o.object_oid = r.objid AND o.object_type = pggit._map_object_type(r.object_type)
           AND o.is_active
        RETURNING o.* INTO v_row;
        IF FOUND THEN
            INSERT INTO pggit.history (object_id, change_type, change_severity, object_type, schema_name,
                                       object_name, command_tag, old_version, new_version,
                                       schema_hash_before, schema_hash_after, sql_executed,
                                       transaction_id, created_by, version_after)
            VALUES (v_row.id, 'DROP', 'MAJOR', v_row.object_type, v_row.schema_name, v_row.object_name,
                    TG_TAG, v_row.version - 1, v_row.version, v_row.schema_hash, NULL,
                    current_query(), txid_current(), pggit._caller(),
                    v_row.version_major || '.' || v_row.version_minor || '.' || v_row.version_patch);
        END IF;
    END LOOP;
    IF cardinality(v_pending) > 0 THEN
        PERFORM set_config('pggit.pending_tables', array_to_string(v_pending, ','), true);
    END IF;
END
$$;

-- Only the event triggers call these (they run as the installing superuser): nobody else may.
REVOKE EXECUTE ON FUNCTION pggit.handle_ddl_command() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pggit.handle_sql_drop() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------
-- Public API.
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pggit.generate_trinity_id(branch text DEFAULT 'main') RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_seq text := to_hex(nextval('pggit.trinity_seq'));
BEGIN
    RETURN to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS"."US"Z"')
        || '-' || left(md5(coalesce(branch, '')), 8)
        || '-' || lpad(v_seq, greatest(12, length(v_seq)), '0');
END
$$;

CREATE OR REPLACE FUNCTION pggit.create_branch(name text, from_branch text DEFAULT 'main') RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_id int;
    v_from_id int;
    v_head text;
BEGIN
    PERFORM pggit._check_branch_name(create_branch.name, 'name');
    SELECT b.id INTO v_id FROM pggit.branches b WHERE b.name = create_branch.name;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    SELECT b.id, b.head_commit_hash INTO v_from_id, v_head
      FROM pggit.branches b WHERE b.name = create_branch.from_branch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pggit: parameter "from_branch": branch % does not exist',
            coalesce(quote_literal(create_branch.from_branch), 'NULL') USING ERRCODE = '22023';
    END IF;
    INSERT INTO pggit.branches AS b (name, parent_branch_id, head_commit_hash, status)
    VALUES (create_branch.name, v_from_id, v_head, 'active')
    ON CONFLICT (name) DO NOTHING
    RETURNING b.id INTO v_id;
    IF v_id IS NULL THEN
        -- Another session created it at the same time (ON CONFLICT waited for it).
        SELECT b.id INTO v_id FROM pggit.branches b WHERE b.name = create_branch.name;
        IF v_id IS NULL THEN
            RAISE EXCEPTION 'pggit: branch % was created concurrently and is not visible to this transaction; retry',
                quote_literal(create_branch.name) USING ERRCODE = '40001';
        END IF;
    END IF;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION pggit.commit_changes(
    branch text, message text DEFAULT '', custom_trinity_id text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_message text := coalesce(commit_changes.message, '');
    v_branch_id int;
    v_parent text;
    v_hash text;
    v_tree text;
BEGIN
    PERFORM pggit._check_branch_name(commit_changes.branch, 'branch');
    IF char_length(v_message) > 10000 THEN
        RAISE EXCEPTION 'pggit: parameter "message" is % characters long; at most 10000 are allowed',
            char_length(v_message) USING ERRCODE = '22023';
    END IF;
    IF custom_trinity_id IS NOT NULL AND custom_trinity_id ~ '^[[:space:]]*$' THEN
        RAISE EXCEPTION 'pggit: parameter "custom_trinity_id" must not be empty or whitespace (pass NULL for a generated ID)'
            USING ERRCODE = '22023';
    END IF;

    -- The branch row lock serialises commits to one branch (linear history) and only those.
    SELECT b.id, b.head_commit_hash INTO v_branch_id, v_parent
      FROM pggit.branches b WHERE b.name = commit_changes.branch FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pggit.create_branch(commit_changes.branch);
        SELECT b.id, b.head_commit_hash INTO v_branch_id, v_parent
          FROM pggit.branches b WHERE b.name = commit_changes.branch FOR UPDATE;
    END IF;

    PERFORM pggit._tree_compact();
    v_tree := pggit._tree_hash();
    IF custom_trinity_id IS NULL THEN
        v_hash := pggit.generate_trinity_id(commit_changes.branch);
        INSERT INTO pggit.commits (hash, branch_id, parent_commit_hash, message, author, committed_at, tree_hash)
        VALUES (v_hash, v_branch_id, v_parent, v_message, current_user, now(), v_tree);
    ELSE
        v_hash := custom_trinity_id;
        BEGIN
            INSERT INTO pggit.commits (hash, branch_id, parent_commit_hash, message, author, committed_at, tree_hash)
            VALUES (v_hash, v_branch_id, v_parent, v_message, current_user, now(), v_tree);
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'pggit: parameter "custom_trinity_id": commit ID % is already used', quote_literal(v_hash)
                USING ERRCODE = '23505';
        END;
    END IF;

    UPDATE pggit.branches SET head_commit_hash = v_hash WHERE id = v_branch_id;
    RETURN v_hash;
END
$$;

CREATE OR REPLACE FUNCTION pggit.calculate_schema_hash("table" text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_oid oid;
BEGIN
    BEGIN
        v_oid := pg_catalog.to_regclass("table");
    EXCEPTION WHEN OTHERS THEN
        v_oid := NULL;  -- a malformed name (PostgreSQL < 16 raises): same as missing
    END;
    IF v_oid IS NULL THEN
        RAISE EXCEPTION 'pggit: relation % does not exist', coalesce(pg_catalog.quote_literal("table"), 'NULL')
            USING ERRCODE = '42P01';
    END IF;
    RETURN pggit._schema_hash(v_oid);
END
$$;

-- Resolves bare names through the CALLER's search_path: no SET search_path here.
CREATE OR REPLACE FUNCTION pggit.get_version(object text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_oid oid;
    v_result text;
BEGIN
    IF object IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_oid := pg_catalog.to_regclass(object);
    EXCEPTION WHEN OTHERS THEN
        v_oid := NULL;
    END;
    IF v_oid IS NOT NULL THEN
        SELECT o.version_major || '.' || o.version_minor || '.' || o.version_patch INTO v_result
          FROM pggit.objects o
         WHERE o.object_oid = v_oid AND o.is_active
           AND o.object_type IN ('TABLE', 'INDEX', 'VIEW', 'MATERIALIZED VIEW', 'SEQUENCE', 'FOREIGN TABLE');
        IF v_result IS NOT NULL THEN
            RETURN v_result;
        END IF;
    END IF;
    BEGIN
        v_oid := CASE WHEN object LIKE '%(%' THEN pg_catalog.to_regprocedure(object)::oid
                      ELSE pg_catalog.to_regproc(object)::oid END;
    EXCEPTION WHEN OTHERS THEN
        v_oid := NULL;
    END;
    IF v_oid IS NOT NULL THEN
        SELECT o.version_major || '.' || o.version_minor || '.' || o.version_patch INTO v_result
          FROM pggit.objects o
         WHERE o.object_oid = v_oid AND o.is_active AND o.object_type IN ('FUNCTION', 'PROCEDURE');
        IF v_result IS NOT NULL THEN
            RETURN v_result;
        END IF;
    END IF;
    BEGIN
        v_oid := pg_catalog.to_regtype(object)::oid;
    EXCEPTION WHEN OTHERS THEN
        v_oid := NULL;
    END;
    IF v_oid IS NOT NULL THEN
        SELECT o.version_major || '.' || o.version_minor || '.' || o.version_patch INTO v_result
          FROM pggit.objects o
         WHERE o.object_oid = v_oid AND o.is_active AND o.object_type = 'TYPE';
        IF v_result IS NOT NULL THEN
            RETURN v_result;
        END IF;
    END IF;
    -- Fall back to the recorded name (e.g. an object whose OID an old install did not keep).
    SELECT o.version_major || '.' || o.version_minor || '.' || o.version_patch INTO v_result
      FROM pggit.objects o
     WHERE o.is_active AND o.full_name = object
     ORDER BY o.id LIMIT 1;
    RETURN v_result;
END
$$;

CREATE OR REPLACE FUNCTION pggit.increment_version(major int, minor int, patch int, kind text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF major IS NULL OR major < 0 THEN
        RAISE EXCEPTION 'pggit: parameter "major" must be a non-negative integer (got %)', coalesce(major::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF minor IS NULL OR minor < 0 THEN
        RAISE EXCEPTION 'pggit: parameter "minor" must be a non-negative integer (got %)', coalesce(minor::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF patch IS NULL OR patch < 0 THEN
        RAISE EXCEPTION 'pggit: parameter "patch" must be a non-negative integer (got %)', coalesce(patch::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    CASE lower(kind)
        WHEN 'major' THEN RETURN (major + 1) || '.0.0';
        WHEN 'minor' THEN RETURN major || '.' || (minor + 1) || '.0';
        WHEN 'patch' THEN RETURN major || '.' || minor || '.' || (patch + 1);
        ELSE
            RAISE EXCEPTION 'pggit: parameter "kind" must be one of major, minor, patch (got %)',
                coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
    END CASE;
END
$$;

CREATE OR REPLACE FUNCTION pggit.detect_drift()
RETURNS TABLE (schema_name text, object_name text, recorded_hash text, live_hash text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pggit, pg_temp AS $$
    SELECT d.schema_name, d.object_name, d.recorded_hash, d.live_hash
      FROM (SELECT o.id, o.schema_name, o.object_name, o.schema_hash AS recorded_hash,
                   CASE WHEN c.oid IS NULL THEN NULL ELSE pggit._schema_hash(c.oid) END AS live_hash
              FROM pggit.objects o
              LEFT JOIN pg_class c
                ON c.oid = coalesce(o.object_oid,
                                    to_regclass(quote_ident(o.schema_name) || '.' || quote_ident(o.object_name)))
               AND c.relname = o.object_name
             WHERE o.is_active AND o.object_type = 'TABLE') d
     WHERE d.recorded_hash IS DISTINCT FROM d.live_hash
     ORDER BY d.id
$$;

CREATE OR REPLACE FUNCTION pggit.health_check()
RETURNS TABLE (component text, status text, details text)
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    v_missing text;
    v_count bigint;
    v_names text;
BEGIN
    -- schema
    SELECT string_agg(t.name, ', ' ORDER BY t.name) INTO v_missing
      FROM unnest(ARRAY['branches', 'commits', 'objects', 'history', 'install_info']) AS t(name)
     WHERE to_regclass('pggit.' || t.name) IS NULL;
    component := 'schema';
    IF v_missing IS NULL THEN
        status := 'healthy'; details := 'tables branches, commits, objects, history, install_info present';
    ELSE
        status := 'critical'; details := 'missing tables: ' || v_missing;
    END IF;
    RETURN NEXT;

    -- event_triggers
    component := 'event_triggers';
    SELECT string_agg(w.name || ' ' || CASE WHEN e.oid IS NULL THEN 'missing'
                                            WHEN e.evtenabled = 'D' THEN 'disabled'
                                            WHEN e.evtevent <> w.event THEN 'on ' || e.evtevent::text || ' instead of ' || w.event
                                            ELSE 'calls ' || e.evtfoid::regproc::text || ' instead of ' || w.func END,
                      '; ' ORDER BY w.name) INTO v_missing
      FROM (VALUES ('pggit_ddl_trigger', 'ddl_command_end', 'pggit.handle_ddl_command'),
                   ('pggit_drop_trigger', 'sql_drop', 'pggit.handle_sql_drop')) AS w(name, event, func)
      LEFT JOIN pg_event_trigger e ON e.evtname = w.name
     WHERE e.oid IS NULL OR e.evtenabled = 'D' OR e.evtevent <> w.event
        OR e.evtfoid <> to_regprocedure(w.func || '()');
    IF v_missing IS NULL THEN
        status := 'healthy'; details := 'pggit_ddl_trigger and pggit_drop_trigger enabled';
    ELSE
        status := 'critical'; details := v_missing;
    END IF;
    RETURN NEXT;

    -- trinity_sequence
    component := 'trinity_sequence';
    IF to_regclass('pggit.trinity_seq') IS NULL THEN
        status := 'critical'; details := 'sequence pggit.trinity_seq missing: Trinity IDs are not unique';
    ELSIF to_regprocedure('pggit.generate_trinity_id(text)') IS NULL THEN
        status := 'critical'; details := 'function pggit.generate_trinity_id(text) missing';
    ELSE
        status := 'healthy'; details := 'pggit.trinity_seq present';
    END IF;
    RETURN NEXT;

    -- branches
    component := 'branches';
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pggit.branches b WHERE b.name = 'main') THEN
            status := 'critical'; details := 'branch main missing';
        ELSE
            SELECT count(*), string_agg(b.name, ', ' ORDER BY b.name) INTO v_count, v_names
              FROM pggit.branches b
             WHERE b.head_commit_hash IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM pggit.commits c WHERE c.hash = b.head_commit_hash);
            IF v_count > 0 THEN
                status := 'critical'; details := v_count || ' branch head(s) point at no commit: ' || left(v_names, 500);
            ELSE
                SELECT count(*) INTO v_count FROM pggit.branches;
                status := 'healthy'; details := v_count || ' branch(es), main present, every head points at a commit';
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        status := 'critical'; details := 'cannot read branches: ' || SQLERRM;
    END;
    RETURN NEXT;

    -- tracking (also: the tree hash commits record, kept up to date, against a recomputation)
    component := 'tracking';
    BEGIN
        SELECT count(*), string_agg(d.schema_name || '.' || d.object_name, ', ') INTO v_count, v_names
          FROM pggit.detect_drift() d;
        IF pggit._tree_hash() IS DISTINCT FROM pggit._tree_hash_full() THEN
            status := 'critical';
            details := 'pggit.tree_parts disagrees with pggit.objects: commits record a wrong tree_hash (installing pgGit again rebuilds it)';
        ELSIF v_count > 0 THEN
            status := 'warning'; details := v_count || ' table(s) drifted from the recorded schema: ' || left(v_names, 500);
        ELSE
            SELECT count(*) INTO v_count FROM pggit.objects o WHERE o.is_active;
            status := 'healthy'; details := v_count || ' active tracked object(s), no drift';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        status := 'critical'; details := 'cannot check drift: ' || SQLERRM;
    END;
    RETURN NEXT;

END
$$;

-- ---------------------------------------------------------------------------------------
-- Upgrades and repairs of derived data.
-- ---------------------------------------------------------------------------------------
-- On PostgreSQL 18 an earlier core hashed NOT NULL constraints with their generated names.
-- Re-record a table's hash where the recorded one is exactly what that formula gives for the
-- live table (so it was not drifted); a table that really drifted still shows as drift.
DO $rehash$
BEGIN
    IF current_setting('server_version_num')::int < 180000 THEN
        RETURN;
    END IF;
    CREATE OR REPLACE FUNCTION pg_temp.pggit_schema_hash_named_not_null(p_rel oid) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $legacy$
        SELECT md5(
            'columns: ' || coalesce((
                SELECT string_agg(
                           quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                           || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
                           || CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text ELSE '' END
                           || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
                           || CASE WHEN a.attcollation <> t.typcollation
                                   THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                           ', ' ORDER BY a.attnum)
                  FROM pg_attribute a
                  JOIN pg_type t ON t.oid = a.atttypid
                  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped), '')
            || ' | constraints: ' || coalesce((
                SELECT string_agg(quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid), ', '
                                  ORDER BY c.conname, pg_get_constraintdef(c.oid))
                  FROM pg_constraint c
                 WHERE c.conrelid = p_rel), '')
        )
    $legacy$;
    UPDATE pggit.objects o
       SET schema_hash = pggit._schema_hash(o.object_oid)
      FROM pg_catalog.pg_class c
     WHERE c.oid = o.object_oid AND o.is_active AND o.object_type IN ('TABLE', 'FOREIGN TABLE')
       AND o.schema_hash = pg_temp.pggit_schema_hash_named_not_null(o.object_oid)
       AND o.schema_hash <> pggit._schema_hash(o.object_oid);
    DROP FUNCTION pg_temp.pggit_schema_hash_named_not_null(oid);
END
$rehash$;

-- (Re)build the maintained tree hash from pggit.objects: a fresh install, an upgrade from a
-- core without it, or a repair. Nobody writes pggit.objects or folds parts meanwhile.
LOCK TABLE pggit.objects IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE pggit.tree_parts IN EXCLUSIVE MODE;
SELECT set_config('pggit.tree_fold', 'on', true);
DELETE FROM pggit.tree_parts;
SELECT set_config('pggit.tree_fold', 'off', true);
INSERT INTO pggit.tree_parts (xor_hi, xor_lo, active)
SELECT pggit._xor(e.hi), pggit._xor(e.lo), count(*)
  FROM pggit.objects o, pggit._tree_entry(o.id, o.version, o.schema_hash) e
 WHERE o.is_active;

-- ---------------------------------------------------------------------------------------
-- Event triggers: created when missing, re-pointed and re-enabled when present.
-- ---------------------------------------------------------------------------------------
DO $triggers$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'pggit_ddl_trigger'
                      AND evtevent = 'ddl_command_end'
                      AND evtfoid = 'pggit.handle_ddl_command()'::regprocedure) THEN
        DROP EVENT TRIGGER IF EXISTS pggit_ddl_trigger;
        CREATE EVENT TRIGGER pggit_ddl_trigger ON ddl_command_end
            EXECUTE FUNCTION pggit.handle_ddl_command();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'pggit_drop_trigger'
                      AND evtevent = 'sql_drop'
                      AND evtfoid = 'pggit.handle_sql_drop()'::regprocedure) THEN
        DROP EVENT TRIGGER IF EXISTS pggit_drop_trigger;
        CREATE EVENT TRIGGER pggit_drop_trigger ON sql_drop
            EXECUTE FUNCTION pggit.handle_sql_drop();
    END IF;
    ALTER EVENT TRIGGER pggit_ddl_trigger ENABLE;
    ALTER EVENT TRIGGER pggit_drop_trigger ENABLE;
END
$triggers$;

INSERT INTO pggit.install_info (component, version, installed_at)
VALUES ('core', '1.0.0', now())
ON CONFLICT (component) DO UPDATE
   SET previous_version = CASE WHEN pggit.install_info.version IS DISTINCT FROM EXCLUDED.version
                               THEN pggit.install_info.version ELSE pggit.install_info.previous_version END,
       installed_at = CASE WHEN pggit.install_info.version IS DISTINCT FROM EXCLUDED.version
                           THEN EXCLUDED.installed_at ELSE pggit.install_info.installed_at END,
       version = EXCLUDED.version;

COMMIT;
