-- Upstream defect no_commit_chain (applied after sound.sql).
-- Breaks: commit_changes never sets commits.parent_commit_hash and never moves
-- branches.head_commit_hash: every commit is a root and a branch's head stays where it was
-- (NULL for main), as in upstream pgGit.

CREATE OR REPLACE FUNCTION pggit.commit_changes(
    p_branch_name text, p_message text DEFAULT '', p_custom_trinity_id text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_message text := coalesce(trim(p_message), '');
    v_branch_id int;
    v_head text;
    v_id text;
    v_attempt int := 0;
BEGIN
    IF p_branch_name IS NULL OR trim(p_branch_name) = '' THEN
        RAISE EXCEPTION 'branch name must not be NULL or empty';
    END IF;
    IF length(v_message) > 10000 THEN
        RAISE EXCEPTION 'commit message too long (% characters, at most 10000)', length(v_message);
    END IF;
    IF p_custom_trinity_id IS NOT NULL AND length(p_custom_trinity_id) < 10 THEN
        RAISE EXCEPTION 'custom Trinity ID % is too short (at least 10 characters)', p_custom_trinity_id;
    END IF;

    SELECT b.id, b.head_commit_hash INTO v_branch_id, v_head
      FROM pggit.branches b WHERE b.name = p_branch_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO pggit.branches (name, parent_branch_id)
        VALUES (p_branch_name, (SELECT b.id FROM pggit.branches b WHERE b.name = 'main'))
        ON CONFLICT (name) DO NOTHING;
        SELECT b.id, b.head_commit_hash INTO v_branch_id, v_head
          FROM pggit.branches b WHERE b.name = p_branch_name FOR UPDATE;
    END IF;

    LOOP
        v_id := coalesce(p_custom_trinity_id, pggit.generate_trinity_id());
        BEGIN
            INSERT INTO pggit.commits (hash, branch_id, message)
            VALUES (v_id, v_branch_id, v_message);
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF p_custom_trinity_id IS NOT NULL THEN
                RAISE EXCEPTION 'Trinity ID % already exists', p_custom_trinity_id;
            END IF;
            v_attempt := v_attempt + 1;
            IF v_attempt >= 10 THEN
                RAISE;
            END IF;
        END;
    END LOOP;

    RETURN v_id;
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'Failed to create commit on branch %: %', p_branch_name, SQLERRM;
END
$$;
