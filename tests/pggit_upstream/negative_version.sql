-- Upstream defect negative_version (applied after sound.sql).
-- Breaks: increment_version(major, minor, patch, kind) accepts negative parts and bumps them:
-- increment_version(-5, 2, 3, 'minor') returns -5.3.0 instead of raising, as in upstream pgGit.

CREATE OR REPLACE FUNCTION pggit.increment_version(
    p_current_major int, p_current_minor int, p_current_patch int, p_increment_type text
) RETURNS TABLE (major int, minor int, patch int, full_version text)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_current_major IS NULL OR p_current_minor IS NULL OR p_current_patch IS NULL THEN
        RAISE EXCEPTION 'Version parts must not be NULL';
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
