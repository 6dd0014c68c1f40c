-- Upstream defect health_check_errors (applied after sound.sql).
-- Breaks: health_check() always raises SQLSTATE 22023 ("unrecognized format() type specifier")
-- because it formats the storage size with format('%.2f MB', ...), a printf specifier that
-- PostgreSQL's format() does not know, as in upstream pgGit. No row is ever returned.

CREATE OR REPLACE FUNCTION pggit.health_check()
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
    message := format('pgGit tables use %.2f MB', v_bytes / 1048576.0);
    details := jsonb_build_object('bytes', v_bytes);
    RETURN NEXT;
END
$$;
