-- Upstream defect rename_keeps_old (applied after sound.sql).
-- Breaks: ALTER TABLE ... RENAME records the table under its new name and leaves the old name
-- (and its COLUMN rows) active beside it, as in upstream pgGit (v0.2.1 and cb54478): the old
-- name then stays active for ever, also after the renamed table is dropped.

CREATE OR REPLACE FUNCTION pggit._retire_renamed(p_schema text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    -- Nothing is retired.
    RETURN;
END
$$;
