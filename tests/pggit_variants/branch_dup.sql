-- Variant branch_dup (applied after the sound install).
-- Breaks: branch names are not unique: the unique index on pggit.branches(name) is dropped and
-- create_branch checks then inserts (no ON CONFLICT), with a 50 ms pause between the check and
-- the insert that widens the race: sessions creating the same branch at once each insert a row.

DROP INDEX IF EXISTS pggit.branches_name_key;

CREATE OR REPLACE FUNCTION pggit.create_branch(name text, from_branch text DEFAULT 'main') RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_id int;
    v_from_id int;
    v_head text;
BEGIN
    PERFORM pggit._check_branch_name(create_branch.name, 'name');
    SELECT b.id INTO v_id FROM pggit.branches b WHERE b.name = create_branch.name LIMIT 1;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    SELECT b.id, b.head_commit_hash INTO v_from_id, v_head
      FROM pggit.branches b WHERE b.name = create_branch.from_branch LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pggit: parameter "from_branch": branch % does not exist',
            coalesce(quote_literal(create_branch.from_branch), 'NULL') USING ERRCODE = '22023';
    END IF;
    PERFORM pg_sleep(0.05);
    INSERT INTO pggit.branches AS b (name, parent_branch_id, head_commit_hash, status)
    VALUES (create_branch.name, v_from_id, v_head, 'active')
    RETURNING b.id INTO v_id;
    RETURN v_id;
END
$$;
