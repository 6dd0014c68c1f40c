-- Variant message_trimmed (applied after the sound install).
-- Breaks: commit_changes stores the message trimmed of surrounding whitespace and truncated at
-- 255 characters instead of exactly as given (the 10,000-character limit is still enforced).

CREATE OR REPLACE FUNCTION pggit.commit_changes(
    branch text, message text DEFAULT '', custom_trinity_id text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_message text := left(btrim(coalesce(commit_changes.message, '')), 255);
    v_branch_id int;
    v_parent text;
    v_hash text;
BEGIN
    PERFORM pggit._check_branch_name(commit_changes.branch, 'branch');
    IF char_length(commit_changes.message) > 10000 THEN
        RAISE EXCEPTION 'pggit: parameter "message" is % characters long; at most 10000 are allowed',
            char_length(commit_changes.message) USING ERRCODE = '22023';
    END IF;
    IF custom_trinity_id IS NOT NULL AND custom_trinity_id ~ '^[[:space:]]*$' THEN
        RAISE EXCEPTION 'pggit: parameter "custom_trinity_id" must not be empty or whitespace (pass NULL for a generated ID)'
            USING ERRCODE = '22023';
    END IF;

    -- The branch row lock serialises commits to one branch (linear history) and only those.
    SELECT b.id, b.head_commit_hash INTO v_branch_id, v_parent
      FROM pggit.branches b WHERE b.name = commit_changes.branch FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pggit.create_branch(commit_changes.branch);
        SELECT b.id, b.head_commit_hash INTO v_branch_id, v_parent
          FROM pggit.branches b WHERE b.name = commit_changes.branch FOR UPDATE;
    END IF;

    IF custom_trinity_id IS NULL THEN
        v_hash := pggit.generate_trinity_id(commit_changes.branch);
        INSERT INTO pggit.commits (hash, branch_id, parent_commit_hash, message, author, committed_at, tree_hash)
        VALUES (v_hash, v_branch_id, v_parent, v_message, current_user, now(), pggit._tree_hash());
    ELSE
        v_hash := custom_trinity_id;
        BEGIN
            INSERT INTO pggit.commits (hash, branch_id, parent_commit_hash, message, author, committed_at, tree_hash)
            VALUES (v_hash, v_branch_id, v_parent, v_message, current_user, now(), pggit._tree_hash());
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'pggit: parameter "custom_trinity_id": commit ID % is already used', quote_literal(v_hash)
                USING ERRCODE = '23505';
        END;
    END IF;

    UPDATE pggit.branches SET head_commit_hash = v_hash WHERE id = v_branch_id;
    RETURN v_hash;
END
$$;
