-- Upstream defect retryable_wrapped (applied after sound.sql).
-- Breaks: commit_changes catches every error and raises it again as SQLSTATE P0001
-- ("Failed to create commit on branch ..."), as upstream pgGit's commit functions do: a lock
-- timeout (55P03), serialization failure (40001) or deadlock (40P01) no longer reaches the
-- client as such, so drivers and poolers do not retry it.

ALTER FUNCTION pggit.commit_changes(text, text, text) RENAME TO _commit_changes_unwrapped;

CREATE FUNCTION pggit.commit_changes(
    p_branch_name text, p_message text DEFAULT '', p_custom_trinity_id text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
BEGIN
    RETURN pggit._commit_changes_unwrapped(p_branch_name, p_message, p_custom_trinity_id);
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'Failed to create commit on branch %: %', p_branch_name, SQLERRM;
END
$$;
