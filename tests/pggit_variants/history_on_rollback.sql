-- Variant history_on_rollback (applied after the sound install).
-- Breaks: pggit.history rows are written through dblink in an autonomous transaction, so they
-- survive the rollback of the DDL that produced them: a rolled-back CREATE TABLE leaves a
-- CREATE row in pggit.history for a table that never existed. (The foreign key from history
-- to objects is dropped, as the loopback session cannot see the DDL transaction's objects row.)

CREATE EXTENSION IF NOT EXISTS dblink SCHEMA pggit;

-- Loopback connection string: this database, over the server's unix socket.
CREATE OR REPLACE FUNCTION pggit._loopback_conninfo() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('dbname=%s port=%s host=%s user=%s application_name=pggit_autonomous',
                  '''' || replace(replace(current_database(), '\', '\\'), '''', '\''') || '''',
                  current_setting('port'),
                  '''' || btrim(split_part(current_setting('unix_socket_directories'), ',', 1)) || '''',
                  '''' || replace(replace(current_user::text, '\', '\\'), '''', '\''') || '''')
$$;

-- BEFORE INSERT trigger: re-send the row through dblink (its own, immediately committed
-- transaction) and skip the local insert. The loopback session inserts normally.
CREATE OR REPLACE FUNCTION pggit._autonomous_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') = 'pggit_autonomous' THEN
        RETURN NEW;
    END IF;
    PERFORM pggit.dblink_exec(
        pggit._loopback_conninfo(),
        format('INSERT INTO %I.%I SELECT * FROM json_populate_record(NULL::%I.%I, %L)',
               TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME, row_to_json(NEW)::text));
    RETURN NULL;
END
$$;

ALTER TABLE pggit.history DROP CONSTRAINT IF EXISTS history_object_id_fkey;
DROP TRIGGER IF EXISTS history_autonomous ON pggit.history;
CREATE TRIGGER history_autonomous BEFORE INSERT ON pggit.history
    FOR EACH ROW EXECUTE FUNCTION pggit._autonomous_insert();
