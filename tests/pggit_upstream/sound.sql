-- Upstream-shaped pgGit, sound variant (installed into an EMPTY database, without the embedded core).
-- Breaks: nothing. Written from the behavioural facts of upstream pgGit's public API (tables,
-- enums, functions, event triggers) — not from its source. Upstream's real defects are FIXED here:
-- commit_changes chains commits and moves the branch head, increment_version rejects negative
-- parts, health_check() works, the 'main' row advances the branches id sequence, DROP TABLE /
-- DROP COLUMN retire the COLUMN rows, create_branch starts the new branch at the parent's head,
-- the event trigger functions are SECURITY DEFINER (DDL by ordinary roles works), PUBLIC may
-- write none of pgGit's tables or schemas, and no SECURITY DEFINER function lacks a pinned
-- search_path, ALTER TABLE ... RENAME retires the old name, and commit_changes lets retryable
-- errors (40001, 40P01, 55P03, 57014) reach the client unchanged.
-- Kept upstream-like on purpose (documented differences from the embedded core, not defects):
-- commit messages are trimmed, every other commit_changes error is SQLSTATE P0001, custom ids need 10+
-- characters and a used one is P0001, create_branch is not idempotent (23505 on a second call),
-- branch names must match a regex CHECK, the objects key includes branch_name,
-- generate_trinity_id() takes no argument, there is no detect_drift() nor install_info table,
-- a CREATE lands at 1.1.0 and ADD COLUMN is a MAJOR change. Objects that exist before the
-- install are not recorded. One transaction's worth of plain SQL: runs with psql -f and as one
-- string through psycopg; needs a superuser (event triggers) and PostgreSQL 13+ (sha256,
-- gen_random_uuid).

CREATE SCHEMA pggit;

-- ---------------------------------------------------------------------------------------
-- Types.
-- ---------------------------------------------------------------------------------------
CREATE TYPE pggit.object_type AS ENUM (
    'TABLE', 'VIEW', 'INDEX', 'FUNCTION', 'COLUMN', 'SEQUENCE', 'TYPE', 'SCHEMA', 'CONSTRAINT', 'TRIGGER'
);
CREATE TYPE pggit.change_type AS ENUM ('CREATE', 'ALTER', 'DROP', 'RENAME', 'COMMENT');
CREATE TYPE pggit.change_severity AS ENUM ('MAJOR', 'MINOR', 'PATCH');
CREATE TYPE pggit.branch_status AS ENUM ('ACTIVE', 'MERGED', 'DELETED');

-- ---------------------------------------------------------------------------------------
-- Tables.
-- ---------------------------------------------------------------------------------------
CREATE TABLE pggit.branches (
    id serial PRIMARY KEY,
    name text UNIQUE,
    parent_branch_id int REFERENCES pggit.branches (id),
    head_commit_hash text,
    status pggit.branch_status DEFAULT 'ACTIVE',
    created_at timestamp DEFAULT now(),
    created_by text DEFAULT current_user,
    merged_at timestamp,
    merged_by text,
    branch_type text DEFAULT 'standard',
    total_objects int DEFAULT 0,
    modified_objects int DEFAULT 0,
    storage_efficiency numeric DEFAULT 100.00,
    description text,
    CONSTRAINT branches_name_not_empty CHECK (name IS NOT NULL AND name <> ''),
    CONSTRAINT branches_name_format CHECK (name ~ '^[a-zA-Z0-9._/#-]+$')
);

CREATE TABLE pggit.commits (
    id serial PRIMARY KEY,
    hash text UNIQUE DEFAULT md5(random()::text),
    branch_id int REFERENCES pggit.branches (id) ON DELETE CASCADE,
    parent_commit_hash text,
    message text,
    author text DEFAULT current_user,
    authored_at timestamp DEFAULT now(),
    committer text DEFAULT current_user,
    committed_at timestamp DEFAULT now(),
    tree_hash text,
    object_hashes jsonb DEFAULT '{}',
    metadata jsonb DEFAULT '{}'
);

CREATE TABLE pggit.objects (
    id serial PRIMARY KEY,
    object_type pggit.object_type,
    schema_name text,
    object_name text,
    full_name text,
    parent_id int REFERENCES pggit.objects (id) ON DELETE CASCADE,
    content_hash text,
    ddl_normalized text,
    branch_id int DEFAULT 1,
    branch_name text DEFAULT 'main',
    version int DEFAULT 1,
    version_major int DEFAULT 1,
    version_minor int DEFAULT 0,
    version_patch int DEFAULT 0,
    metadata jsonb DEFAULT '{}',
    is_active boolean DEFAULT true,
    created_at timestamp DEFAULT now(),
    updated_at timestamp DEFAULT now(),
    ddl_hash text,
    structure_hash text,
    constraints_hash text,
    indexes_hash text,
    UNIQUE (object_type, schema_name, object_name, branch_name)
);

CREATE TABLE pggit.history (
    id serial PRIMARY KEY,
    object_id int REFERENCES pggit.objects (id) ON DELETE CASCADE,
    change_type pggit.change_type,
    change_severity pggit.change_severity,
    commit_hash text,
    branch_id int REFERENCES pggit.branches (id) ON DELETE CASCADE,
    merge_base_hash text,
    old_version int,
    new_version int,
    old_metadata jsonb,
    new_metadata jsonb,
    change_description text,
    sql_executed text,
    created_at timestamp DEFAULT now(),
    created_by text DEFAULT current_user,
    old_hash text,
    new_hash text
);

CREATE TABLE pggit.system_events (
    id serial PRIMARY KEY,
    event_type text,
    details jsonb,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE pggit.monitoring_metrics (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    metric_type text,
    value numeric,
    tags jsonb,
    recorded_at timestamp DEFAULT now()
);

CREATE SEQUENCE pggit.trinity_id_seq;

-- Upstream inserts 'main' with an explicit id = 1; the sound variant then advances the serial
-- sequence so that the first create_branch() gets id 2.
INSERT INTO pggit.branches (id, name, status) VALUES (1, 'main', 'ACTIVE');
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('pggit.branches', 'id'), 1, true);

-- ---------------------------------------------------------------------------------------
-- Helpers (internal, prefixed with an underscore).
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION pggit._is_excluded_schema(p_schema text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_schema IN ('pggit', 'pg_catalog', 'information_schema', 'pg_toast')
        OR p_schema ~ '^pg_(toast_)?temp'
$$;

-- Deterministic text of a table's definition: columns in order (name, type with typmod,
-- NOT NULL, default, identity/generated) and constraints (definition only, sorted). No table
-- or constraint name enters it, and a default drawing from the column's own sequence is
-- written without the sequence's name, so two tables of the same definition render alike.
CREATE FUNCTION pggit._table_definition(p_rel oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'columns: ' || coalesce((
               SELECT string_agg(
                          quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                          || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                          || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
                          || CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text ELSE '' END
                          || CASE
                                 WHEN d.adbin IS NULL THEN ''
                                 WHEN s.refobjid IS NOT NULL
                                      AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'
                                     THEN ' DEFAULT nextval(<owned sequence>)'
                                 ELSE ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid)
                             END,
                          ', ' ORDER BY a.attnum)
                 FROM pg_attribute a
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 LEFT JOIN pg_depend s ON s.classid = 'pg_class'::regclass AND s.refobjid = a.attrelid
                                      AND s.refobjsubid = a.attnum AND s.deptype IN ('a', 'i')
                                      AND s.refclassid = 'pg_class'::regclass
                                      AND EXISTS (SELECT 1 FROM pg_class q
                                                   WHERE q.oid = s.objid AND q.relkind = 'S')
                WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped), '')
        || ' | constraints: ' || coalesce((
               SELECT string_agg(def, ', ' ORDER BY def)
                 FROM (SELECT c.contype::text || ' ' || pg_get_constraintdef(c.oid) AS def
                         FROM pg_constraint c WHERE c.conrelid = p_rel) defs), '')
$$;

-- Mark inactive the COLUMN rows (branch main) of schema.table whose column no longer exists:
-- all of them once the table is gone.
CREATE FUNCTION pggit._retire_columns(p_schema text, p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_rel oid := to_regclass(quote_ident(p_schema) || '.' || quote_ident(p_table));
BEGIN
    UPDATE pggit.objects o
       SET is_active = false, updated_at = now()
     WHERE o.object_type = 'COLUMN' AND o.branch_name = 'main' AND o.is_active
       AND o.schema_name = p_schema
       AND left(o.object_name, length(p_table) + 1) = p_table || '.'
       AND (v_rel IS NULL OR NOT EXISTS (
                SELECT 1 FROM pg_attribute a
                 WHERE a.attrelid = v_rel AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attname = substr(o.object_name, length(p_table) + 2)));
END
$$;

-- ALTER TABLE ... RENAME: the table is known under a name that no longer exists. Retire the
-- active TABLE rows of the schema whose relation is gone, with their columns (only when the
-- statement renames: a table dropped while the event triggers were off stays drift).
CREATE FUNCTION pggit._retire_renamed(p_schema text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_old text;
BEGIN
    IF current_query() !~* '\mrename\M' THEN
        RETURN;
    END IF;
    FOR v_old IN
        UPDATE pggit.objects o SET is_active = false, updated_at = now()
         WHERE o.object_type = 'TABLE' AND o.branch_name = 'main' AND o.is_active
           AND o.schema_name = p_schema
           AND to_regclass(quote_ident(o.schema_name) || '.' || quote_ident(o.object_name)) IS NULL
        RETURNING o.object_name
    LOOP
        PERFORM pggit._retire_columns(p_schema, v_old);
    END LOOP;
END
$$;

-- Record the columns of a table as COLUMN rows (branch main, 1.0.0, no history), reactivate the
-- rows of columns that came back, and retire the rows of columns that are gone.
CREATE FUNCTION pggit._sync_columns(p_rel oid, p_table_id int, p_schema text, p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    INSERT INTO pggit.objects AS o (object_type, schema_name, object_name, full_name, parent_id,
                                    metadata, version, version_major, version_minor, version_patch)
    SELECT 'COLUMN', p_schema, p_table || '.' || a.attname, p_schema || '.' || p_table || '.' || a.attname,
           p_table_id,
           jsonb_build_object('data_type', format_type(a.atttypid, a.atttypmod),
                              'nullable', NOT a.attnotnull, 'position', a.attnum),
           1, 1, 0, 0
      FROM pg_attribute a
     WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
    ON CONFLICT (object_type, schema_name, object_name, branch_name) DO UPDATE
       SET is_active = true, parent_id = EXCLUDED.parent_id, metadata = EXCLUDED.metadata,
           updated_at = now()
     WHERE NOT o.is_active OR o.metadata IS DISTINCT FROM EXCLUDED.metadata
        OR o.parent_id IS DISTINCT FROM EXCLUDED.parent_id;
    PERFORM pggit._retire_columns(p_schema, p_table);
END
$$;

-- Start following one relation (row inserted, or an inactive row of the same name reactivated
-- at 1.0.0) and return its row id.
CREATE FUNCTION pggit._start_tracking(p_type pggit.object_type, p_schema text, p_name text, p_parent int)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_id int;
BEGIN
    INSERT INTO pggit.objects AS o (object_type, schema_name, object_name, full_name, parent_id,
                                    version, version_major, version_minor, version_patch)
    VALUES (p_type, p_schema, p_name, p_schema || '.' || p_name, p_parent, 1, 1, 0, 0)
    ON CONFLICT (object_type, schema_name, object_name, branch_name) DO UPDATE
       SET is_active = true, parent_id = EXCLUDED.parent_id,
           version_major = 1, version_minor = 0, version_patch = 0, updated_at = now()
    RETURNING o.id INTO v_id;
    RETURN v_id;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Public API.
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION pggit.version() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '0.1.3'::text $$;

CREATE FUNCTION pggit.generate_trinity_id() RETURNS text
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_char(clock_timestamp(), 'YYYYMMDDHH24MISSUS')
        || '-' || lpad(nextval('pggit.trinity_id_seq')::text, 6, '0')
        || '-' || substr(md5(random()::text || clock_timestamp()::text), 1, 8)
$$;

-- Semantic version bump: TABLE(major, minor, patch, full_version); kind case-insensitive.
CREATE FUNCTION pggit.increment_version(
    p_current_major int, p_current_minor int, p_current_patch int, p_increment_type text
) RETURNS TABLE (major int, minor int, patch int, full_version text)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_current_major IS NULL OR p_current_minor IS NULL OR p_current_patch IS NULL THEN
        RAISE EXCEPTION 'Version parts must not be NULL';
    END IF;
    IF p_current_major < 0 OR p_current_minor < 0 OR p_current_patch < 0 THEN
        RAISE EXCEPTION 'Version parts must not be negative: %.%.%',
            p_current_major, p_current_minor, p_current_patch;
    END IF;
    CASE upper(p_increment_type)
        WHEN 'MAJOR' THEN
            major := p_current_major + 1; minor := 0; patch := 0;
        WHEN 'MINOR' THEN
            major := p_current_major; minor := p_current_minor + 1; patch := 0;
        WHEN 'PATCH' THEN
            major := p_current_major; minor := p_current_minor; patch := p_current_patch + 1;
        ELSE
            RAISE EXCEPTION 'Invalid increment type: %', coalesce(p_increment_type, 'NULL');
    END CASE;
    full_version := major || '.' || minor || '.' || patch;
    RETURN NEXT;
END
$$;

-- Bump a tracked object (version + 1, semver by severity) and write its history row.
CREATE FUNCTION pggit.increment_version(
    p_object_id int,
    p_change_type pggit.change_type,
    p_change_severity pggit.change_severity,
    p_description text DEFAULT NULL,
    p_new_metadata jsonb DEFAULT NULL,
    p_sql_executed text DEFAULT NULL
) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_obj pggit.objects%ROWTYPE;
    v_major int;
    v_minor int;
    v_patch int;
BEGIN
    SELECT * INTO v_obj FROM pggit.objects o WHERE o.id = p_object_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Object % not found', p_object_id;
    END IF;
    SELECT v.major, v.minor, v.patch INTO v_major, v_minor, v_patch
      FROM pggit.increment_version(v_obj.version_major, v_obj.version_minor, v_obj.version_patch,
                                   p_change_severity::text) v;
    UPDATE pggit.objects o
       SET version = o.version + 1, version_major = v_major, version_minor = v_minor,
           version_patch = v_patch, metadata = coalesce(p_new_metadata, o.metadata), updated_at = now()
     WHERE o.id = p_object_id;
    INSERT INTO pggit.history (object_id, change_type, change_severity, branch_id, old_version,
                               new_version, old_metadata, new_metadata, change_description,
                               sql_executed, created_by)
    VALUES (p_object_id, p_change_type, p_change_severity, v_obj.branch_id, v_obj.version,
            v_obj.version + 1, v_obj.metadata, p_new_metadata, p_description,
            coalesce(p_sql_executed, current_query()), pggit._caller());
    RETURN v_obj.version + 1;
END
$$;

CREATE FUNCTION pggit.commit_changes(
    p_branch_name text, p_message text DEFAULT '', p_custom_trinity_id text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_message text := coalesce(trim(p_message), '');
    v_branch_id int;
    v_head text;
    v_id text;
    v_attempt int := 0;
BEGIN
    IF p_branch_name IS NULL OR trim(p_branch_name) = '' THEN
        RAISE EXCEPTION 'branch name must not be NULL or empty';
    END IF;
    IF length(v_message) > 10000 THEN
        RAISE EXCEPTION 'commit message too long (% characters, at most 10000)', length(v_message);
    END IF;
    IF p_custom_trinity_id IS NOT NULL AND length(p_custom_trinity_id) < 10 THEN
        RAISE EXCEPTION 'custom Trinity ID % is too short (at least 10 characters)', p_custom_trinity_id;
    END IF;

    -- The branch row lock serialises commits on one branch: each reads the head the previous
    -- one left (READ COMMITTED re-reads a locked row), so they form one chain.
    SELECT b.id, b.head_commit_hash INTO v_branch_id, v_head
      FROM pggit.branches b WHERE b.name = p_branch_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO pggit.branches (name, parent_branch_id)
        VALUES (p_branch_name, (SELECT b.id FROM pggit.branches b WHERE b.name = 'main'))
        ON CONFLICT (name) DO NOTHING;
        SELECT b.id, b.head_commit_hash INTO v_branch_id, v_head
          FROM pggit.branches b WHERE b.name = p_branch_name FOR UPDATE;
    END IF;

    LOOP
        v_id := coalesce(p_custom_trinity_id, pggit.generate_trinity_id());
        BEGIN
            INSERT INTO pggit.commits (hash, branch_id, parent_commit_hash, message)
            VALUES (v_id, v_branch_id, v_head, v_message);
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF p_custom_trinity_id IS NOT NULL THEN
                RAISE EXCEPTION 'Trinity ID % already exists', p_custom_trinity_id;
            END IF;
            v_attempt := v_attempt + 1;
            IF v_attempt >= 10 THEN
                RAISE;
            END IF;
        END;
    END LOOP;

    UPDATE pggit.branches SET head_commit_hash = v_id WHERE id = v_branch_id;
    RETURN v_id;
EXCEPTION
    -- What a client retries on (and a cancel) reaches it unchanged.
    WHEN serialization_failure OR deadlock_detected OR lock_not_available OR query_canceled THEN
        RAISE;
    WHEN OTHERS THEN
        RAISE EXCEPTION 'Failed to create commit on branch %: %', p_branch_name, SQLERRM;
END
$$;

CREATE FUNCTION pggit.create_branch(
    p_branch_name text, p_parent_branch text DEFAULT 'main', p_copy_data boolean DEFAULT false
) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_parent_id int;
    v_parent_head text;
    v_id int;
    v_count int;
BEGIN
    SELECT b.id, b.head_commit_hash INTO v_parent_id, v_parent_head
      FROM pggit.branches b WHERE b.name = p_parent_branch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Parent branch % does not exist', coalesce(p_parent_branch, 'NULL');
    END IF;

    INSERT INTO pggit.branches (name, parent_branch_id, head_commit_hash, branch_type)
    VALUES (p_branch_name, v_parent_id, v_parent_head,
            CASE WHEN p_copy_data THEN 'copy' ELSE 'standard' END)
    RETURNING id INTO v_id;

    -- Copy every active object of the parent branch, then point each copied child (columns,
    -- indexes) at the copy of its parent.
    INSERT INTO pggit.objects (object_type, schema_name, object_name, full_name, content_hash,
                               ddl_normalized, branch_id, branch_name, version, version_major,
                               version_minor, version_patch, metadata, is_active, ddl_hash,
                               structure_hash, constraints_hash, indexes_hash)
    SELECT o.object_type, o.schema_name, o.object_name, o.full_name, o.content_hash,
           o.ddl_normalized, v_id, p_branch_name, o.version, o.version_major,
           o.version_minor, o.version_patch, o.metadata, true, o.ddl_hash,
           o.structure_hash, o.constraints_hash, o.indexes_hash
      FROM pggit.objects o
     WHERE o.branch_name = p_parent_branch AND o.is_active;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    UPDATE pggit.objects c
       SET parent_id = np.id
      FROM pggit.objects oc
      JOIN pggit.objects op ON op.id = oc.parent_id
      JOIN pggit.objects np ON np.branch_name = p_branch_name AND np.object_type = op.object_type
                           AND np.schema_name = op.schema_name AND np.object_name = op.object_name
     WHERE c.branch_name = p_branch_name AND oc.branch_name = p_parent_branch AND oc.is_active
       AND c.object_type = oc.object_type AND c.schema_name = oc.schema_name
       AND c.object_name = oc.object_name;

    UPDATE pggit.branches SET total_objects = v_count WHERE id = v_id;
    RAISE NOTICE 'Created branch % from % with % objects', p_branch_name, p_parent_branch, v_count;
    RETURN v_id;
END
$$;

-- sha256 hex of an object's definition (any schema); NULL when it does not exist or for a
-- type without a definition here.
CREATE FUNCTION pggit.compute_ddl_hash(
    p_object_type pggit.object_type, p_schema_name text, p_object_name text
) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_oid oid;
    v_kind "char";
    v_text text;
BEGIN
    SELECT c.oid, c.relkind INTO v_oid, v_kind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = p_schema_name AND c.relname = p_object_name;
    IF p_object_type = 'TABLE' AND v_kind IN ('r', 'p', 'f') THEN
        v_text := pggit._table_definition(v_oid);
    ELSIF p_object_type = 'INDEX' AND v_kind IN ('i', 'I') THEN
        v_text := pg_get_indexdef(v_oid);
    ELSIF p_object_type = 'VIEW' AND v_kind IN ('v', 'm') THEN
        v_text := pg_get_viewdef(v_oid);
    ELSIF p_object_type = 'FUNCTION' THEN
        SELECT string_agg(pg_get_functiondef(p.oid), E'\n' ORDER BY p.oid::regprocedure::text)
          INTO v_text
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = p_schema_name AND p.proname = p_object_name AND p.prokind IN ('f', 'p');
    END IF;
    IF v_text IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN encode(sha256(convert_to(v_text, 'UTF8')), 'hex');
END
$$;

-- Hash of a table given by bare name, looked up in schema public only ('s.t' or a table of any
-- other schema: NULL; errors: NULL).
CREATE FUNCTION pggit.calculate_schema_hash(p_table_name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    IF p_table_name IS NULL OR strpos(p_table_name, '.') > 0 THEN
        RETURN NULL;
    END IF;
    RETURN pggit.compute_ddl_hash('TABLE', 'public', p_table_name);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- Version of a tracked object: 'schema.name', or a bare name looked up in public.
CREATE FUNCTION pggit.get_version(p_object_name text)
RETURNS TABLE (object_name text, schema_name text, version int, version_string text, created_at timestamp)
LANGUAGE sql STABLE SET search_path = pg_catalog, pggit, pg_temp AS $$
    SELECT o.object_name, o.schema_name, o.version,
           o.version_major || '.' || o.version_minor || '.' || o.version_patch, o.created_at
      FROM pggit.objects o
     WHERE o.branch_name = 'main' AND o.is_active AND o.object_type <> 'COLUMN'
       AND o.schema_name = CASE WHEN strpos(p_object_name, '.') > 0
                                THEN split_part(p_object_name, '.', 1) ELSE 'public' END
       AND o.object_name = CASE WHEN strpos(p_object_name, '.') > 0
                                THEN substr(p_object_name, strpos(p_object_name, '.') + 1)
                                ELSE p_object_name END
     ORDER BY (o.object_type = 'TABLE') DESC, o.id
     LIMIT 1
$$;

CREATE FUNCTION pggit.health_check()
RETURNS TABLE (check_name text, status text, message text, details jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pggit, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_missing text[];
    v_triggers int;
    v_branches int;
    v_main boolean;
    v_bytes bigint;
BEGIN
    SELECT coalesce(array_agg(u.t ORDER BY u.t), '{}') INTO v_missing
      FROM unnest(ARRAY['branches', 'commits', 'objects', 'history']) AS u(t)
     WHERE to_regclass('pggit.' || u.t) IS NULL;
    check_name := 'schema';
    status := CASE WHEN cardinality(v_missing) = 0 THEN 'healthy' ELSE 'error' END;
    message := CASE WHEN cardinality(v_missing) = 0 THEN 'pgGit schema and tables present'
                    ELSE 'missing tables: ' || array_to_string(v_missing, ', ') END;
    details := jsonb_build_object('version', pggit.version(), 'missing_tables', to_jsonb(v_missing));
    RETURN NEXT;

    SELECT count(*) INTO v_triggers FROM pg_event_trigger e
     WHERE e.evtname IN ('pggit_ddl_trigger', 'pggit_drop_trigger') AND e.evtenabled <> 'D';
    check_name := 'event_triggers';
    status := CASE WHEN v_triggers = 2 THEN 'healthy' ELSE 'warning' END;
    message := v_triggers || ' of 2 event triggers enabled';
    details := jsonb_build_object('enabled', v_triggers);
    RETURN NEXT;

    SELECT count(*), bool_or(b.name = 'main') INTO v_branches, v_main FROM pggit.branches b;
    check_name := 'branches';
    status := CASE WHEN coalesce(v_main, false) THEN 'healthy' ELSE 'error' END;
    message := v_branches || ' branches' || CASE WHEN coalesce(v_main, false) THEN '' ELSE ', main missing' END;
    details := jsonb_build_object('count', v_branches);
    RETURN NEXT;

    SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) INTO v_bytes
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pggit' AND c.relkind = 'r';
    check_name := 'storage';
    status := 'healthy';
    message := format('pgGit tables use %s MB', to_char(v_bytes / 1048576.0, 'FM999999990.00'));
    details := jsonb_build_object('bytes', v_bytes);
    RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Event triggers.
-- ---------------------------------------------------------------------------------------
-- SECURITY DEFINER (run as the installing superuser): a role without rights on pgGit's tables
-- can still run DDL, and it is recorded under its own name (pggit._caller()).
CREATE FUNCTION pggit._caller() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user::text
                ELSE current_setting('role') END
$$;

CREATE FUNCTION pggit.handle_ddl_command() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    r record;
    v_seen oid[] := '{}';
    v_events int := 0;
    v_type pggit.object_type;
    v_schema text;
    v_name text;
    v_parent int;
    v_id int;
    v_active boolean;
    v_description text;
    i record;
BEGIN
    FOR r IN
        SELECT c.classid, c.objid, c.object_type, c.schema_name, c.object_identity, c.command_tag
          FROM pg_event_trigger_ddl_commands() c
         WHERE NOT c.in_extension
           AND NOT coalesce(pggit._is_excluded_schema(coalesce(c.schema_name, c.object_identity)), false)
         ORDER BY CASE c.object_type WHEN 'table' THEN 0 ELSE 1 END
    LOOP
        -- One command can report an object twice (CREATE TABLE with a foreign key: CREATE
        -- then ALTER TABLE): the first report decides.
        CONTINUE WHEN r.objid = ANY (v_seen);
        v_seen := v_seen || r.objid;

        INSERT INTO pggit.system_events (event_type, details)
        VALUES ('ddl_command', jsonb_build_object('operation', r.command_tag, 'object_type', r.object_type,
                                                  'object_identity', r.object_identity));
        v_events := v_events + 1;

        v_type := CASE r.object_type
            WHEN 'table' THEN 'TABLE'
            WHEN 'index' THEN 'INDEX'
            WHEN 'view' THEN 'VIEW'
            WHEN 'materialized view' THEN 'VIEW'
        END;
        CONTINUE WHEN v_type IS NULL OR r.classid <> 'pg_class'::regclass;
        -- COMMENT, GRANT, SECURITY LABEL: no version change.
        CONTINUE WHEN r.command_tag NOT LIKE 'CREATE%' AND r.command_tag NOT LIKE 'ALTER%';

        SELECT n.nspname, c.relname INTO v_schema, v_name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = r.objid;
        CONTINUE WHEN NOT FOUND;

        v_parent := NULL;
        IF v_type = 'INDEX' THEN
            SELECT o.id INTO v_parent
              FROM pg_index x
              JOIN pg_class t ON t.oid = x.indrelid
              JOIN pg_namespace n ON n.oid = t.relnamespace
              JOIN pggit.objects o ON o.object_type = 'TABLE' AND o.schema_name = n.nspname
                                  AND o.object_name = t.relname AND o.branch_name = 'main'
             WHERE x.indexrelid = r.objid;
        END IF;

        SELECT o.id, o.is_active INTO v_id, v_active
          FROM pggit.objects o
         WHERE o.object_type = v_type AND o.schema_name = v_schema AND o.object_name = v_name
           AND o.branch_name = 'main'
           FOR UPDATE;
        v_description := format('%s %s %s', r.command_tag, r.object_type, r.object_identity);

        IF v_type = 'TABLE' AND r.command_tag = 'ALTER TABLE' AND NOT coalesce(v_active, false) THEN
            PERFORM pggit._retire_renamed(v_schema);
        END IF;
        IF r.command_tag LIKE 'CREATE%' AND NOT coalesce(v_active, false) THEN
            v_id := pggit._start_tracking(v_type, v_schema, v_name, v_parent);
            PERFORM pggit.increment_version(v_id, 'CREATE', 'MINOR', v_description, NULL, current_query());
        ELSE
            IF NOT coalesce(v_active, false) THEN
                v_id := pggit._start_tracking(v_type, v_schema, v_name, v_parent);
            END IF;
            PERFORM pggit.increment_version(v_id, 'ALTER', 'MAJOR', v_description, NULL, current_query());
        END IF;

        IF v_type = 'TABLE' THEN
            PERFORM pggit._sync_columns(r.objid, v_id, v_schema, v_name);
            IF r.command_tag LIKE 'ALTER%' THEN
                -- Indexes made by ALTER TABLE ... ADD PRIMARY KEY / UNIQUE are not reported
                -- on their own.
                FOR i IN
                    SELECT n.nspname, c.relname
                      FROM pg_index x
                      JOIN pg_class c ON c.oid = x.indexrelid
                      JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE x.indrelid = r.objid
                       AND NOT EXISTS (SELECT 1 FROM pggit.objects o
                                        WHERE o.object_type = 'INDEX' AND o.schema_name = n.nspname
                                          AND o.object_name = c.relname AND o.branch_name = 'main'
                                          AND o.is_active)
                LOOP
                    v_parent := pggit._start_tracking('INDEX', i.nspname, i.relname, v_id);
                    PERFORM pggit.increment_version(
                        v_parent, 'CREATE', 'MINOR',
                        format('%s index %s', r.command_tag, quote_ident(i.nspname) || '.' || quote_ident(i.relname)),
                        NULL, current_query());
                END LOOP;
            END IF;
        END IF;
    END LOOP;

    IF v_events > 0 THEN
        INSERT INTO pggit.monitoring_metrics (metric_type, value, tags)
        VALUES ('ddl_command', 1, jsonb_build_object('command', TG_TAG));
    END IF;
END
$$;

CREATE FUNCTION pggit.handle_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    r record;
    v_type pggit.object_type;
    v_row pggit.objects%ROWTYPE;
    v_events int := 0;
BEGIN
    FOR r IN
        SELECT d.object_type, d.schema_name, d.object_name, d.object_identity, d.original,
               d.address_names
          FROM pg_event_trigger_dropped_objects() d
         WHERE NOT coalesce(pggit._is_excluded_schema(coalesce(d.schema_name, d.object_identity)), false)
    LOOP
        IF r.original THEN
            INSERT INTO pggit.system_events (event_type, details)
            VALUES ('ddl_command', jsonb_build_object('operation', TG_TAG, 'object_type', r.object_type,
                                                      'object_identity', r.object_identity));
            v_events := v_events + 1;
        END IF;

        IF r.object_type = 'table column' AND cardinality(r.address_names) >= 3 THEN
            PERFORM pggit._retire_columns(r.address_names[1], r.address_names[2]);
            CONTINUE;
        END IF;

        v_type := CASE r.object_type
            WHEN 'table' THEN 'TABLE'
            WHEN 'index' THEN 'INDEX'
            WHEN 'view' THEN 'VIEW'
            WHEN 'materialized view' THEN 'VIEW'
        END;
        CONTINUE WHEN v_type IS NULL OR r.object_name IS NULL;

        UPDATE pggit.objects o
           SET is_active = false, updated_at = now()
         WHERE o.object_type = v_type AND o.schema_name = r.schema_name AND o.object_name = r.object_name
           AND o.branch_name = 'main' AND o.is_active
        RETURNING o.* INTO v_row;
        IF FOUND THEN
            INSERT INTO pggit.history (object_id, change_type, change_severity, branch_id, old_version,
                                       new_version, old_metadata, change_description, sql_executed,
                                       created_by)
            VALUES (v_row.id, 'DROP', 'MAJOR', v_row.branch_id, v_row.version, NULL, v_row.metadata,
                    format('%s %s %s', TG_TAG, r.object_type, r.object_identity), current_query(),
                    pggit._caller());
        END IF;
        IF v_type = 'TABLE' THEN
            PERFORM pggit._retire_columns(r.schema_name, r.object_name);
        END IF;
    END LOOP;

    -- ALTER TABLE ... DROP COLUMN gets its metric from handle_ddl_command (one per command).
    IF v_events > 0 AND TG_TAG NOT LIKE 'ALTER%' THEN
        INSERT INTO pggit.monitoring_metrics (metric_type, value, tags)
        VALUES ('ddl_command', 1, jsonb_build_object('command', TG_TAG));
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION pggit.handle_ddl_command() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pggit.handle_sql_drop() FROM PUBLIC;

CREATE EVENT TRIGGER pggit_ddl_trigger ON ddl_command_end
    EXECUTE FUNCTION pggit.handle_ddl_command();
CREATE EVENT TRIGGER pggit_drop_trigger ON sql_drop
    EXECUTE FUNCTION pggit.handle_sql_drop();
