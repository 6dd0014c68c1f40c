-- Variant tracking_off (applied after the sound install).
-- Breaks: the ddl_command_end trigger function returns without recording anything: CREATE and
-- ALTER leave no pggit.history / pggit.objects rows (the event trigger itself stays enabled,
-- so health_check's event_triggers component still looks healthy).

CREATE OR REPLACE FUNCTION pggit.handle_ddl_command() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
    RETURN;
END
$$;
