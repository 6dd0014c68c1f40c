-- Variant rollback_burns_id (applied after the sound install).
-- Breaks: commit rows are written through dblink in an autonomous transaction. When the
-- caller's transaction rolls back, the commit row stays (its Trinity ID burnt, the commit
-- "happened") while the branch head update is rolled back; the next commit takes the old head
-- as parent, so two commits share a parent and the branch history forks. (The foreign key
-- commits.branch_id is dropped: the loopback session would otherwise wait forever for the
-- branch row lock the caller holds.)

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

ALTER TABLE pggit.commits DROP CONSTRAINT IF EXISTS commits_branch_id_fkey;
DROP TRIGGER IF EXISTS commits_autonomous ON pggit.commits;
CREATE TRIGGER commits_autonomous BEFORE INSERT ON pggit.commits
    FOR EACH ROW EXECUTE FUNCTION pggit._autonomous_insert();
