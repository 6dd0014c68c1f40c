-- Upstream defect tracking_error_logged (applied after sound.sql).
-- Breaks: a second sql_drop event trigger calls pggit.version_drop(), which does not exist,
-- catches the error and only logs it as a 'tracking_error' row of pggit.system_events, as in
-- upstream pgGit v0.2.1 (enhanced_drop_trigger_func): every DROP of a table with a TOAST
-- table leaves errors in the log and its versioning is silently lost.

CREATE FUNCTION pggit.enhanced_drop_trigger_func() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        BEGIN
            EXECUTE 'SELECT pggit.version_drop($1, $2, $3, $4, $5, $6)'
                USING r.classid, r.objid, r.objsubid, r.object_type, r.schema_name, r.object_identity;
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO pggit.system_events (event_type, details)
            VALUES ('tracking_error', jsonb_build_object('error', SQLERRM, 'operation', 'DROP',
                    'object_type', r.object_type, 'object_identity', r.object_identity));
        END;
    END LOOP;
END
$$;

CREATE EVENT TRIGGER pggit_enhanced_drop_trigger ON sql_drop
    EXECUTE FUNCTION pggit.enhanced_drop_trigger_func();
