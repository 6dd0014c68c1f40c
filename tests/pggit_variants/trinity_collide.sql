-- Variant trinity_collide (applied after the sound install).
-- Breaks: Trinity IDs are built from the clock at millisecond resolution plus the branch, with
-- no sequence. Two IDs generated in the same millisecond for one branch are equal, so tight
-- loops and concurrent clients collide: generate_trinity_id returns duplicates and
-- commit_changes fails with unique_violation (23505) on pggit.commits.hash.

CREATE OR REPLACE FUNCTION pggit.generate_trinity_id(branch text DEFAULT 'main') RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS"."MS"Z"')
        || '-' || left(md5(coalesce(branch, '')), 8)
$$;
