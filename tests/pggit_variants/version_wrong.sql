-- Variant version_wrong (applied after the sound install).
-- Breaks: semantic version bumps do not reset the lower parts: a minor bump keeps the patch
-- (1.2.3 -> 1.3.3) and a major bump keeps the minor (1.2.3 -> 2.2.0). The event triggers bump
-- through increment_version, so tracked objects get wrong versions too.

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
        WHEN 'major' THEN RETURN (major + 1) || '.' || minor || '.0';
        WHEN 'minor' THEN RETURN major || '.' || (minor + 1) || '.' || patch;
        WHEN 'patch' THEN RETURN major || '.' || minor || '.' || (patch + 1);
        ELSE
            RAISE EXCEPTION 'pggit: parameter "kind" must be one of major, minor, patch (got %)',
                coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
    END CASE;
END
$$;
