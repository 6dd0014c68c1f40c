-- Upstream defect dangling_branch_head (applied after sound.sql).
-- Breaks: create_branch sets the new branch's head_commit_hash to a sha256 hex of the branch
-- name and the clock, a hash that is in no pggit.commits row, instead of the parent branch's
-- head, as observed in upstream pgGit.

CREATE OR REPLACE FUNCTION pggit.create_branch(
    p_branch_name text, p_parent_branch text DEFAULT 'main', p_copy_data boolean DEFAULT false
) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pggit, pg_temp AS $$
DECLARE
    v_parent_id int;
    v_parent_head text;
    v_id int;
    v_count int;
BEGIN
    SELECT b.id, b.head_commit_hash INTO v_parent_id, v_parent_head
      FROM pggit.branches b WHERE b.name = p_parent_branch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Parent branch % does not exist', coalesce(p_parent_branch, 'NULL');
    END IF;

    INSERT INTO pggit.branches (name, parent_branch_id, head_commit_hash, branch_type)
    VALUES (p_branch_name, v_parent_id,
            encode(sha256(convert_to(p_branch_name || ':' || clock_timestamp()::text, 'UTF8')), 'hex'),
            CASE WHEN p_copy_data THEN 'copy' ELSE 'standard' END)
    RETURNING id INTO v_id;

    -- Copy every active object of the parent branch, then point each copied child (columns,
    -- indexes) at the copy of its parent.
    INSERT INTO pggit.objects (object_type, schema_name, object_name, full_name, content_hash,
                               ddl_normalized, branch_id, branch_name, version, version_major,
                               version_minor, version_patch, metadata, is_active, ddl_hash,
                               structure_hash, constraints_hash, indexes_hash)
    SELECT o.object_type, o.schema_name, o.object_name, o.full_name, o.content_hash,
           o.ddl_normalized, v_id, p_branch_name, o.version, o.version_major,
           o.version_minor, o.version_patch, o.metadata, true, o.ddl_hash,
           o.structure_hash, o.constraints_hash, o.indexes_hash
      FROM pggit.objects o
     WHERE o.branch_name = p_parent_branch AND o.is_active;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    UPDATE pggit.objects c
       SET parent_id = np.id
      FROM pggit.objects oc
      JOIN pggit.objects op ON op.id = oc.parent_id
      JOIN pggit.objects np ON np.branch_name = p_branch_name AND np.object_type = op.object_type
                           AND np.schema_name = op.schema_name AND np.object_name = op.object_name
     WHERE c.branch_name = p_branch_name AND oc.branch_name = p_parent_branch AND oc.is_active
       AND c.object_type = oc.object_type AND c.schema_name = oc.schema_name
       AND c.object_name = oc.object_name;

    UPDATE pggit.branches SET total_objects = v_count WHERE id = v_id;
    RAISE NOTICE 'Created branch % from % with % objects', p_branch_name, p_parent_branch, v_count;
    RETURN v_id;
END
$$;
