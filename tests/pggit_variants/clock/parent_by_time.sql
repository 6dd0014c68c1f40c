-- Clock variant parent_by_time (applied after the sound install; not in VARIANTS: it passes
-- every check while the server's clock runs forwards).
-- Breaks: commit_changes trusts the wall clock for commit order. It stamps committed_at with
-- clock_timestamp() under the branch row lock and takes as parent the branch's commit with the
-- latest committed_at instead of the branch head. While the clock only moves forwards that is
-- the head; after the clock jumps back, every new commit's parent is the last commit made
-- before the jump, so the branch forks and its head's chain misses the commits of the window.

CREATE OR REPLACE FUNCTION pggit.commit_changes(
    branch text, message text DEFAULT '', custom_trinity_id text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_branch_id int;
    v_parent text;
    v_hash text;
BEGIN
    SELECT b.id INTO v_branch_id
      FROM pggit.branches b WHERE b.name = commit_changes.branch FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pggit.create_branch(commit_changes.branch);
        SELECT b.id INTO v_branch_id
          FROM pggit.branches b WHERE b.name = commit_changes.branch FOR UPDATE;
    END IF;
    SELECT c.hash INTO v_parent FROM pggit.commits c
     WHERE c.branch_id = v_branch_id ORDER BY c.committed_at DESC LIMIT 1;
    IF v_parent IS NULL THEN
        SELECT b.head_commit_hash INTO v_parent FROM pggit.branches b WHERE b.id = v_branch_id;
    END IF;
    PERFORM pggit._tree_compact();
    v_hash := coalesce(custom_trinity_id, pggit.generate_trinity_id(commit_changes.branch));
    INSERT INTO pggit.commits (hash, branch_id, parent_commit_hash, message, author, committed_at, tree_hash)
    VALUES (v_hash, v_branch_id, v_parent, coalesce(commit_changes.message, ''), current_user,
            clock_timestamp(), pggit._tree_hash());
    UPDATE pggit.branches SET head_commit_hash = v_hash WHERE id = v_branch_id;
    RETURN v_hash;
END
$$;
