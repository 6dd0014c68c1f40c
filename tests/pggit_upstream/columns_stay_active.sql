-- Upstream defect columns_stay_active (applied after sound.sql).
-- Breaks: COLUMN rows are never retired: after DROP TABLE (and after ALTER TABLE ... DROP
-- COLUMN, or a column rename) the table's COLUMN rows in pggit.objects stay is_active = true,
-- while the TABLE and INDEX rows are marked inactive, as in upstream pgGit.

CREATE OR REPLACE FUNCTION pggit._retire_columns(p_schema text, p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    -- Nothing is retired.
    RETURN;
END
$$;
