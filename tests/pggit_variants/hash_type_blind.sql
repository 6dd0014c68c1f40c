-- Variant hash_type_blind (applied after the sound install).
-- Breaks: the schema hash ignores column types: ALTER COLUMN ... TYPE leaves
-- calculate_schema_hash (and the recorded pggit.objects.schema_hash) unchanged.

CREATE OR REPLACE FUNCTION pggit._schema_hash(p_rel oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT md5(
        'columns: ' || coalesce((
            SELECT string_agg(
                       quote_ident(a.attname)
                       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                       || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
                       || CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text ELSE '' END
                       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
                       || CASE WHEN a.attcollation <> t.typcollation
                               THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                       ', ' ORDER BY a.attnum)
              FROM pg_attribute a
              JOIN pg_type t ON t.oid = a.atttypid
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped), '')
        || ' | constraints: ' || coalesce((
            SELECT string_agg(quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid), ', '
                              ORDER BY c.conname, pg_get_constraintdef(c.oid))
              FROM pg_constraint c
             WHERE c.conrelid = p_rel), '')
    )
$$;
