"""The embedded pgGit core (sql/pggit.sql) against a real PostgreSQL, per docs/pggit-core.md.

Each test gets a fresh database cloned from a template holding the sound core (``pggit_dsn``).
The last section proves that every broken variant in tests/pggit_variants really is broken.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_variants import VARIANTS, apply_variant

pytestmark = [pytest.mark.postgres, pytest.mark.versions]  # also run on 16 and 18


@pytest.fixture
def conn(pggit_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pggit_dsn, autocommit=True) as connection:
        yield connection


def one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def history(conn: psycopg.Connection[Any], name: str | None = None) -> list[tuple[Any, ...]]:
    query = (
        "SELECT change_type, change_severity, object_type, schema_name, object_name, command_tag,"
        " old_version, new_version FROM pggit.history"
    )
    if name is None:
        return conn.execute(query + " ORDER BY id").fetchall()
    return conn.execute(query + " WHERE object_name = %s ORDER BY id", (name,)).fetchall()


def obj(conn: psycopg.Connection[Any], otype: str, schema: str, name: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT version, version_major || '.' || version_minor || '.' || version_patch,"
        " schema_hash, is_active, full_name FROM pggit.objects"
        " WHERE object_type = %s AND schema_name = %s AND object_name = %s",
        (otype, schema, name),
    ).fetchone()
    assert row is not None, f"{otype} {schema}.{name} not tracked"
    return tuple(row)


def run_threads(count: int, target: Any) -> list[Any]:
    """Run ``target(index, barrier)`` in ``count`` threads; return results, re-raise errors."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            results[index] = target(index, barrier)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return results


# -- event triggers ------------------------------------------------------------------------
def test_create_alter_drop_table_recorded(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE t1 (id int)")
    conn.execute("ALTER TABLE t1 ADD COLUMN name text")
    conn.execute("DROP TABLE t1")
    rows = history(conn, "t1")
    assert [(r[0], r[2], r[5]) for r in rows] == [
        ("CREATE", "TABLE", "CREATE TABLE"),
        ("ALTER", "TABLE", "ALTER TABLE"),
        ("DROP", "TABLE", "DROP TABLE"),
    ]
    assert [(r[6], r[7]) for r in rows] == [(None, 1), (1, 2), (2, 3)]
    version, semver, _, active, full_name = obj(conn, "TABLE", "public", "t1")
    assert (version, semver, active, full_name) == (3, "1.1.0", False, "public.t1")
    sql_executed = conn.execute(
        "SELECT sql_executed FROM pggit.history WHERE object_name = 't1' ORDER BY id"
    ).fetchall()
    assert [s for (s,) in sql_executed] == [
        "CREATE TABLE t1 (id int)",
        "ALTER TABLE t1 ADD COLUMN name text",
        "DROP TABLE t1",
    ]


@pytest.mark.parametrize(
    ("create", "alter", "drop", "otype", "name"),
    [
        (
            "CREATE INDEX i1 ON base (a)",
            "ALTER INDEX i1 SET (fillfactor = 70)",
            "DROP INDEX i1",
            "INDEX",
            "i1",
        ),
        (
            "CREATE VIEW v1 AS SELECT a FROM base",
            "CREATE OR REPLACE VIEW v1 AS SELECT a, b FROM base",
            "DROP VIEW v1",
            "VIEW",
            "v1",
        ),
        (
            "CREATE MATERIALIZED VIEW m1 AS SELECT a FROM base",
            "ALTER MATERIALIZED VIEW m1 SET (fillfactor = 70)",
            "DROP MATERIALIZED VIEW m1",
            "MATERIALIZED VIEW",
            "m1",
        ),
        (
            "CREATE FUNCTION f1(x int) RETURNS int LANGUAGE sql AS 'SELECT x'",
            "CREATE OR REPLACE FUNCTION f1(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1'",
            "DROP FUNCTION f1(int)",
            "FUNCTION",
            "f1(x integer)",
        ),
        (
            "CREATE PROCEDURE p1() LANGUAGE sql AS 'SELECT 1'",
            "ALTER PROCEDURE p1() SECURITY DEFINER",
            "DROP PROCEDURE p1()",
            "PROCEDURE",
            "p1()",
        ),
        (
            "CREATE SEQUENCE s1",
            "ALTER SEQUENCE s1 INCREMENT BY 2",
            "DROP SEQUENCE s1",
            "SEQUENCE",
            "s1",
        ),
        (
            "CREATE TYPE ty1 AS ENUM ('a')",
            "ALTER TYPE ty1 ADD VALUE 'b'",
            "DROP TYPE ty1",
            "TYPE",
            "ty1",
        ),
    ],
)
def test_other_objects_recorded(
    conn: psycopg.Connection[Any], create: str, alter: str, drop: str, otype: str, name: str
) -> None:
    conn.execute("CREATE TABLE base (a int, b int)")
    conn.execute(create)  # type: ignore[arg-type]
    hash_created = obj(conn, otype, "public", name)[2]
    conn.execute(alter)  # type: ignore[arg-type]
    assert obj(conn, otype, "public", name)[:2] == (2, "1.0.1")
    conn.execute(drop)  # type: ignore[arg-type]
    rows = history(conn, name)
    assert [(r[0], r[2]) for r in rows] == [("CREATE", otype), ("ALTER", otype), ("DROP", otype)]
    assert obj(conn, otype, "public", name)[3] is False
    if otype in ("VIEW", "FUNCTION"):
        assert hash_created is not None
        after = conn.execute(
            "SELECT schema_hash_after FROM pggit.history"
            " WHERE object_name = %s AND change_type = 'ALTER'",
            (name,),
        ).fetchone()
        assert after is not None and after[0] != hash_created


def test_rolled_back_ddl_leaves_no_trace(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE kept (a int)")
    before_history = one(conn, "SELECT count(*) FROM pggit.history")
    before_objects = conn.execute("SELECT * FROM pggit.objects ORDER BY id").fetchall()
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        conn.execute("CREATE TABLE gone (a int)")
        conn.execute("ALTER TABLE kept ADD COLUMN b int")
        conn.execute("DROP TABLE kept")
        conn.execute("SELECT 1/0")
    assert one(conn, "SELECT count(*) FROM pggit.history") == before_history
    assert conn.execute("SELECT * FROM pggit.objects ORDER BY id").fetchall() == before_objects
    assert one(conn, "SELECT count(*) FROM pggit.objects WHERE object_name = 'gone'") == 0


def test_history_written_in_the_ddl_transaction(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        txid = one(conn, "SELECT txid_current()")
        conn.execute("CREATE TABLE same_tx (a int)")
        conn.execute("ALTER TABLE same_tx ADD COLUMN b int")
    assert conn.execute(
        "SELECT DISTINCT transaction_id FROM pggit.history WHERE object_name = 'same_tx'"
    ).fetchall() == [(txid,)]


@pytest.mark.parametrize(
    ("alter", "severity", "semver"),
    [
        ("ALTER TABLE v ADD COLUMN c text", "MINOR", "1.1.0"),
        ("ALTER TABLE v DROP COLUMN b", "MAJOR", "2.0.0"),
        ("ALTER TABLE v ALTER COLUMN b TYPE bigint", "MAJOR", "2.0.0"),
        ("ALTER TABLE v ALTER COLUMN b TYPE varchar(10)", "MAJOR", "2.0.0"),
        ("ALTER TABLE v RENAME COLUMN b TO bb", "MAJOR", "2.0.0"),
        ("ALTER TABLE v ALTER COLUMN b SET NOT NULL", "PATCH", "1.0.1"),
        ("ALTER TABLE v ADD CONSTRAINT v_b_check CHECK (b > 0)", "PATCH", "1.0.1"),
        ("ALTER TABLE v ALTER COLUMN b SET DEFAULT 7", "PATCH", "1.0.1"),
    ],
)
def test_version_bump_rules(
    conn: psycopg.Connection[Any], alter: str, severity: str, semver: str
) -> None:
    conn.execute("CREATE TABLE v (a int, b int)")
    assert obj(conn, "TABLE", "public", "v")[1] == "1.0.0"
    conn.execute(alter)  # type: ignore[arg-type]
    assert obj(conn, "TABLE", "public", "v")[1] == semver
    assert history(conn, "v")[-1][1] == severity


def test_version_sequence_resets_lower_parts(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE seqv (a int)")
    steps = [
        ("ALTER TABLE seqv ALTER COLUMN a SET DEFAULT 1", "1.0.1"),
        ("ALTER TABLE seqv ALTER COLUMN a SET DEFAULT 2", "1.0.2"),
        ("ALTER TABLE seqv ADD COLUMN b int", "1.1.0"),
        ("ALTER TABLE seqv ALTER COLUMN a SET DEFAULT 3", "1.1.1"),
        ("ALTER TABLE seqv DROP COLUMN b", "2.0.0"),
        ("ALTER TABLE seqv ADD COLUMN c int", "2.1.0"),
    ]
    for statement, expected in steps:
        conn.execute(statement)  # type: ignore[arg-type]
        assert obj(conn, "TABLE", "public", "seqv")[1] == expected, statement
    assert one(conn, "SELECT pggit.get_version('seqv')") == "2.1.0"
    assert obj(conn, "TABLE", "public", "seqv")[0] == 1 + len(steps)


def test_serial_table_is_one_command(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE ser (id serial PRIMARY KEY, v text)")
    rows = history(conn)
    assert sorted((r[0], r[2], r[4]) for r in rows) == [
        ("CREATE", "INDEX", "ser_pkey"),
        ("CREATE", "SEQUENCE", "ser_id_seq"),
        ("CREATE", "TABLE", "ser"),
    ]
    conn.execute("DROP TABLE ser")
    drops = sorted((r[2], r[4]) for r in history(conn) if r[0] == "DROP")
    assert drops == [("INDEX", "ser_pkey"), ("SEQUENCE", "ser_id_seq"), ("TABLE", "ser")]


def test_create_table_as_and_select_into(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE ctas AS SELECT 1 AS x, 'a'::text AS y")
    conn.execute("SELECT 1 AS z INTO sinto")
    assert [(r[0], r[5]) for r in history(conn, "ctas")] == [("CREATE", "CREATE TABLE AS")]
    assert [(r[0], r[5]) for r in history(conn, "sinto")] == [("CREATE", "SELECT INTO")]
    assert obj(conn, "TABLE", "public", "ctas")[2] == one(
        conn, "SELECT pggit.calculate_schema_hash('ctas')"
    )


def test_partitioned_tables(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE pt (a int, b int) PARTITION BY RANGE (a)")
    conn.execute("CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (0) TO (10)")
    conn.execute("CREATE INDEX pt_b ON pt (b)")
    conn.execute("ALTER TABLE pt ADD COLUMN c int")
    assert obj(conn, "TABLE", "public", "pt")[1] == "1.1.0"
    assert obj(conn, "TABLE", "public", "pt_1")[3] is True
    assert obj(conn, "INDEX", "public", "pt_b")[3] is True
    conn.execute("DROP TABLE pt")
    assert obj(conn, "TABLE", "public", "pt")[3] is False
    assert obj(conn, "TABLE", "public", "pt_1")[3] is False
    assert list(conn.execute("SELECT * FROM pggit.detect_drift()")) == []


def test_rename_follows_the_object(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE before_name (a int)")
    conn.execute("CREATE INDEX before_idx ON before_name (a)")
    conn.execute("ALTER TABLE before_name RENAME TO after_name")
    assert one(conn, "SELECT count(*) FROM pggit.objects WHERE object_name = 'before_name'") == 0
    version, semver, _, active, full_name = obj(conn, "TABLE", "public", "after_name")
    assert (version, semver, active, full_name) == (2, "1.0.1", True, "public.after_name")
    conn.execute("CREATE SCHEMA moved")
    conn.execute("ALTER TABLE after_name SET SCHEMA moved")
    assert obj(conn, "TABLE", "moved", "after_name")[3] is True
    assert obj(conn, "INDEX", "moved", "before_idx")[3] is True
    conn.execute("DROP TABLE moved.after_name")
    assert obj(conn, "INDEX", "moved", "before_idx")[3] is False
    # A new table under the old name starts a new life of the old row: 1.0.0 again.
    conn.execute("CREATE TABLE moved.after_name (z int)")
    version, semver, _, active, _ = obj(conn, "TABLE", "moved", "after_name")
    assert (semver, active) == ("1.0.0", True) and version == 5


def test_drop_schema_cascade(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE SCHEMA doomed")
    conn.execute("CREATE TABLE doomed.a (id serial PRIMARY KEY)")
    conn.execute("CREATE VIEW doomed.va AS SELECT * FROM doomed.a")
    conn.execute("CREATE FUNCTION doomed.fa() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    conn.execute("DROP SCHEMA doomed CASCADE")
    assert (
        one(conn, "SELECT count(*) FROM pggit.objects WHERE schema_name = 'doomed' AND is_active")
        == 0
    )
    drops = conn.execute(
        "SELECT object_type, object_name FROM pggit.history"
        " WHERE change_type = 'DROP' AND command_tag = 'DROP SCHEMA' ORDER BY 1, 2"
    ).fetchall()
    assert drops == [
        ("FUNCTION", "fa()"),
        ("INDEX", "a_pkey"),
        ("SEQUENCE", "a_id_seq"),
        ("TABLE", "a"),
        ("VIEW", "va"),
    ]


def test_cascaded_column_drop_is_an_alter(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('ok')")
    conn.execute("CREATE TABLE moody (id int, m mood)")
    conn.execute("DROP TYPE mood CASCADE")
    last = history(conn, "moody")[-1]
    assert (last[0], last[1], last[5]) == ("ALTER", "MAJOR", "DROP TYPE")
    assert list(conn.execute("SELECT * FROM pggit.detect_drift()")) == []


@pytest.mark.parametrize(
    ("schema", "table"),
    [
        ('we"ird sch', "Tâble with spaces"),
        ("ünïcødé", "表"),
        ("s" * 63, "t" * 63),
        ("public", 'x"; DROP TABLE pggit.history; --'),
    ],
)
def test_odd_names(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(ident))
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN note text").format(ident))
    version, semver, schema_hash, active, full_name = obj(conn, "TABLE", schema, table)
    assert (version, semver, active, full_name) == (2, "1.1.0", True, f"{schema}.{table}")
    qualified = ident.as_string(conn)
    assert schema_hash == one(conn, "SELECT pggit.calculate_schema_hash(%s)", (qualified,))
    assert one(conn, "SELECT pggit.get_version(%s)", (qualified,)) == "1.1.0"
    conn.execute(sql.SQL("DROP TABLE {}").format(ident))
    assert obj(conn, "TABLE", schema, table)[3] is False
    assert one(conn, "SELECT to_regclass('pggit.history') IS NOT NULL") is True


def test_wide_table(conn: psycopg.Connection[Any]) -> None:
    columns = ", ".join(f"c{i} int" for i in range(150))
    conn.execute(f"CREATE TABLE wide ({columns})")  # type: ignore[arg-type]
    conn.execute("ALTER TABLE wide DROP COLUMN c77")
    assert obj(conn, "TABLE", "public", "wide")[1] == "2.0.0"
    assert list(conn.execute("SELECT * FROM pggit.detect_drift()")) == []


def test_untracked_schemas(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE tmp_t (a int)")
        conn.execute("DROP TABLE tmp_t")
    conn.execute("CREATE TABLE pggit.internal_scratch (a int)")
    conn.execute("DROP TABLE pggit.internal_scratch")
    assert one(conn, "SELECT count(*) FROM pggit.history") == 0
    assert one(conn, "SELECT count(*) FROM pggit.objects") == 0


# -- schema hash ---------------------------------------------------------------------------
BASE_TABLE = (
    "CREATE TABLE {name} (id int PRIMARY KEY, name text NOT NULL DEFAULT 'x', n numeric(10,2))"
)


def test_schema_hash_deterministic(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE SCHEMA other")
    conn.execute(BASE_TABLE.format(name="h1"))  # type: ignore[arg-type]
    first = one(conn, "SELECT pggit.calculate_schema_hash('h1')")
    assert len(first) == 32
    assert one(conn, "SELECT pggit.calculate_schema_hash('public.h1')") == first
    assert one(conn, 'SELECT pggit.calculate_schema_hash(\'"public"."h1"\')') == first
    conn.execute("SET search_path = other, public")
    assert one(conn, "SELECT pggit.calculate_schema_hash('h1')") == first
    conn.execute("RESET search_path")
    with psycopg.connect(conn.info.dsn, autocommit=True) as second:
        assert one(second, "SELECT pggit.calculate_schema_hash('h1')") == first
    assert obj(conn, "TABLE", "public", "h1")[2] == first


def test_schema_hash_constraint_order_independent_column_order_dependent(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE c1 (a int, b int)")
    conn.execute("ALTER TABLE c1 ADD CONSTRAINT ca CHECK (a > 0)")
    conn.execute("ALTER TABLE c1 ADD CONSTRAINT cb CHECK (b > 0)")
    conn.execute("CREATE TABLE c2 (a int, b int)")
    conn.execute("ALTER TABLE c2 ADD CONSTRAINT cb CHECK (b > 0)")
    conn.execute("ALTER TABLE c2 ADD CONSTRAINT ca CHECK (a > 0)")
    conn.execute("CREATE TABLE c3 (b int, a int)")
    conn.execute("ALTER TABLE c3 ADD CONSTRAINT ca CHECK (a > 0)")
    conn.execute("ALTER TABLE c3 ADD CONSTRAINT cb CHECK (b > 0)")
    h1, h2, h3 = (
        one(conn, "SELECT pggit.calculate_schema_hash(%s)", (t,)) for t in ("c1", "c2", "c3")
    )
    assert h1 == h2
    assert h1 != h3


def _hash(conn: psycopg.Connection[Any], table: str) -> str:
    return str(one(conn, "SELECT pggit.calculate_schema_hash(%s)", (table,)))


def test_schema_hash_not_null_by_meaning(conn: psycopg.Connection[Any]) -> None:
    """NOT NULL counts with its column, not by a constraint name: PostgreSQL 18 records it as
    a constraint named after the table, which must not make equal definitions differ."""
    conn.execute("CREATE TABLE nn_a (x int NOT NULL, y text)")
    conn.execute("CREATE TABLE nn_b (x int NOT NULL, y text)")
    conn.execute("CREATE TABLE nn_c (x int CONSTRAINT chosen_name NOT NULL, y text)")
    reference = _hash(conn, "nn_a")
    assert _hash(conn, "nn_b") == reference, "two tables with the same definition differ"
    assert _hash(conn, "nn_c") == reference, "a NOT NULL's own name changes the hash"
    conn.execute("ALTER TABLE nn_a RENAME TO nn_renamed")  # its NOT NULL keeps the old name
    conn.execute("CREATE TABLE nn_a (x int NOT NULL, y text)")
    assert _hash(conn, "nn_renamed") == _hash(conn, "nn_a") == reference
    conn.execute("ALTER TABLE nn_b ALTER COLUMN x DROP NOT NULL")
    dropped = _hash(conn, "nn_b")
    assert dropped != reference
    conn.execute("ALTER TABLE nn_b ALTER COLUMN y SET NOT NULL")
    assert _hash(conn, "nn_b") not in {reference, dropped}  # the NOT NULL's column counts
    # A primary key's columns get NOT NULL constraints named after the table too (18).
    conn.execute("CREATE SCHEMA nn_s1")
    conn.execute("CREATE SCHEMA nn_s2")
    conn.execute("CREATE TABLE nn_s1.pk_a (id int CONSTRAINT same_pk PRIMARY KEY, x int NOT NULL)")
    conn.execute("CREATE TABLE nn_s2.pk_b (id int CONSTRAINT same_pk PRIMARY KEY, x int NOT NULL)")
    assert _hash(conn, "nn_s1.pk_a") == _hash(conn, "nn_s2.pk_b")
    assert list(conn.execute("SELECT * FROM pggit.detect_drift()")) == []
    if conn.info.server_version >= 180000:  # NOT NULL constraints with options: 18 and later
        conn.execute("CREATE TABLE nn_ni (x int, y text)")
        conn.execute("ALTER TABLE nn_ni ADD CONSTRAINT nn_ni_x NOT NULL x NO INHERIT")
        conn.execute("CREATE TABLE nn_nv (x int, y text)")
        conn.execute("ALTER TABLE nn_nv ADD CONSTRAINT nn_nv_x NOT NULL x NOT VALID")
        assert len({reference, _hash(conn, "nn_ni"), _hash(conn, "nn_nv")}) == 3
        conn.execute("ALTER TABLE nn_nv VALIDATE CONSTRAINT nn_nv_x")
        assert _hash(conn, "nn_nv") == reference


#: The schema hash an earlier core recorded for simple tables (no defaults, identity, collations):
#: on PostgreSQL 18 it hashed the NOT NULL constraints by their generated names as well.
NAMED_NOT_NULL_HASH = """
SELECT md5('columns: ' || coalesce((
    SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                      || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                      ', ' ORDER BY a.attnum)
      FROM pg_attribute a WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0
       AND NOT a.attisdropped), '')
    || ' | constraints: ' || coalesce((
    SELECT string_agg(quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid), ', '
                      ORDER BY c.conname, pg_get_constraintdef(c.oid))
      FROM pg_constraint c WHERE c.conrelid = %(rel)s::regclass), ''))
"""


def test_install_rerecords_hashes_of_named_not_null_constraints(
    conn: psycopg.Connection[Any], pggit_dsn: str
) -> None:
    """On PostgreSQL 18, hashes an earlier core recorded with the NOT NULL constraints' names
    are re-recorded by the install; a table that really drifted stays drifted."""
    from pggit_chaos.pggit import install

    if conn.info.server_version < 180000:
        pytest.skip("NOT NULL constraints have names from PostgreSQL 18 on")
    conn.execute("CREATE TABLE old_rec (x int NOT NULL, y text)")
    conn.execute("CREATE TABLE old_drift (x int NOT NULL, y text)")
    legacy = one(conn, NAMED_NOT_NULL_HASH, {"rel": "old_rec"})  # type: ignore[arg-type]
    assert legacy != _hash(conn, "old_rec")
    conn.execute(
        "UPDATE pggit.objects SET schema_hash = %s WHERE object_name = 'old_rec'", (legacy,)
    )
    conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
    drifted = one(conn, NAMED_NOT_NULL_HASH, {"rel": "old_drift"})  # type: ignore[arg-type]
    conn.execute("ALTER TABLE old_drift ADD COLUMN sneaky int")  # after the recorded state
    conn.execute(
        "UPDATE pggit.objects SET schema_hash = %s WHERE object_name = 'old_drift'", (drifted,)
    )
    drift = {row[1] for row in conn.execute("SELECT * FROM pggit.detect_drift()")}
    assert drift == {"old_rec", "old_drift"}
    install(pggit_dsn)
    assert obj(conn, "TABLE", "public", "old_rec")[2] == _hash(conn, "old_rec")
    assert [row[1] for row in conn.execute("SELECT * FROM pggit.detect_drift()")] == ["old_drift"]
    assert tree_hashes(conn)[0] == tree_hashes(conn)[1]


@pytest.mark.parametrize(
    "change",
    [
        "ALTER TABLE h ADD COLUMN extra int",
        "ALTER TABLE h DROP COLUMN n",
        "ALTER TABLE h ALTER COLUMN n TYPE numeric(12,2)",
        "ALTER TABLE h ALTER COLUMN n TYPE float8",
        "ALTER TABLE h ALTER COLUMN name DROP NOT NULL",
        "ALTER TABLE h ALTER COLUMN n SET NOT NULL",
        "ALTER TABLE h ALTER COLUMN name SET DEFAULT 'y'",
        "ALTER TABLE h ALTER COLUMN name DROP DEFAULT",
        "ALTER TABLE h ADD CONSTRAINT h_n_check CHECK (n > 0)",
        "ALTER TABLE h ADD CONSTRAINT h_name_key UNIQUE (name)",
        "ALTER TABLE h DROP CONSTRAINT h_pkey",
        "ALTER TABLE h RENAME COLUMN name TO label",
    ],
)
def test_schema_hash_sensitive(conn: psycopg.Connection[Any], change: str) -> None:
    conn.execute(BASE_TABLE.format(name="h"))  # type: ignore[arg-type]
    before = one(conn, "SELECT pggit.calculate_schema_hash('h')")
    conn.execute(change)  # type: ignore[arg-type]
    after = one(conn, "SELECT pggit.calculate_schema_hash('h')")
    assert after != before
    assert obj(conn, "TABLE", "public", "h")[2] == after
    last = conn.execute(
        "SELECT schema_hash_before, schema_hash_after FROM pggit.history"
        " WHERE object_name = 'h' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert last == (before, after)


@pytest.mark.parametrize(
    "change",
    [
        "CREATE TABLE unrelated (z int)",
        "INSERT INTO h (id, name, n) SELECT g, 'r' || g, g FROM generate_series(1, 500) g",
        "ANALYZE h",
        "VACUUM h",
        "CREATE INDEX h_name_idx ON h (name)",
        "COMMENT ON TABLE h IS 'a comment'",
    ],
)
def test_schema_hash_stable(conn: psycopg.Connection[Any], change: str) -> None:
    conn.execute(BASE_TABLE.format(name="h"))  # type: ignore[arg-type]
    before = one(conn, "SELECT pggit.calculate_schema_hash('h')")
    conn.execute(change)  # type: ignore[arg-type]
    assert one(conn, "SELECT pggit.calculate_schema_hash('h')") == before
    assert list(conn.execute("SELECT * FROM pggit.detect_drift()")) == []


@pytest.mark.parametrize("name", ["missing_table", "nope.t", "a.b.c.d", ""])
def test_schema_hash_missing_table(conn: psycopg.Connection[Any], name: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute("SELECT pggit.calculate_schema_hash(%s)", (name,))


# -- commits and branches ------------------------------------------------------------------
def test_commit_ids_unique_in_a_tight_loop(conn: psycopg.Connection[Any]) -> None:
    ids = [one(conn, "SELECT pggit.commit_changes('main', %s)", (f"m{i}",)) for i in range(1000)]
    assert len(set(ids)) == 1000
    assert one(conn, "SELECT count(DISTINCT hash) FROM pggit.commits") == 1000
    for trinity in ids[:3]:
        stamp, branch_hex, seq = trinity.split("-")
        assert stamp.endswith("Z") and len(stamp) == len("20250101T000000.000000Z")
        assert len(branch_hex) == 8 and len(seq) == 12


def test_commit_ids_unique_under_concurrency(pggit_dsn: str) -> None:
    per_thread = 50

    def work(index: int, barrier: threading.Barrier) -> list[str]:
        with psycopg.connect(pggit_dsn, autocommit=True) as connection:
            barrier.wait(30)
            branch = "main" if index % 2 else f"b{index % 4}"
            return [
                one(connection, "SELECT pggit.commit_changes(%s, %s)", (branch, f"t{index}-{n}"))
                for n in range(per_thread)
            ]

    results = run_threads(20, work)
    ids = [i for chunk in results for i in chunk]
    assert len(ids) == len(set(ids)) == 20 * per_thread
    with psycopg.connect(pggit_dsn) as check:
        assert one(check, "SELECT count(*) FROM pggit.commits") == 20 * per_thread
        assert_linear_chains(check)


def assert_linear_chains(conn: psycopg.Connection[Any]) -> None:
    """Per branch: commits in id order each have the previous one as parent; head = last."""
    branches = conn.execute("SELECT id, name, head_commit_hash FROM pggit.branches").fetchall()
    for branch_id, name, head in branches:
        chain = conn.execute(
            "SELECT hash, parent_commit_hash FROM pggit.commits WHERE branch_id = %s ORDER BY id",
            (branch_id,),
        ).fetchall()
        if not chain:
            continue
        for (previous, _), (_, parent) in itertools.pairwise(chain):
            assert parent == previous, f"branch {name}: fork in the history"
        assert head == chain[-1][0], f"branch {name}: head is not the last commit"
    parents = conn.execute(
        "SELECT parent_commit_hash, count(*) FROM pggit.commits c"
        " WHERE parent_commit_hash IS NOT NULL"
        " GROUP BY branch_id, parent_commit_hash HAVING count(*) > 1"
    ).fetchall()
    assert parents == []


def test_new_branch_starts_at_its_parent_head(conn: psycopg.Connection[Any]) -> None:
    main_head = one(conn, "SELECT pggit.commit_changes('main', 'on main')")
    feature_id = one(conn, "SELECT pggit.create_branch('feature')")
    first = one(conn, "SELECT pggit.commit_changes('feature', 'on feature')")
    row = conn.execute(
        "SELECT branch_id, parent_commit_hash FROM pggit.commits WHERE hash = %s", (first,)
    ).fetchone()
    assert row == (feature_id, main_head)
    assert one(conn, "SELECT parent_branch_id FROM pggit.branches WHERE name = 'feature'") == one(
        conn, "SELECT id FROM pggit.branches WHERE name = 'main'"
    )
    # commit_changes creates a missing branch
    auto = one(conn, "SELECT pggit.commit_changes('auto-created', '')")
    assert (
        one(
            conn,
            "SELECT b.name FROM pggit.branches b JOIN pggit.commits c ON c.branch_id = b.id"
            " WHERE c.hash = %s",
            (auto,),
        )
        == "auto-created"
    )


def test_commit_stores_message_exactly(conn: psycopg.Connection[Any]) -> None:
    messages = [
        "",
        "  padded  ",
        "x" * 10_000,
        "multi\nline\ttab",
        "ünïcødé ✓ 表",
        "'; DROP TABLE x; --",
    ]
    for message in messages:
        trinity = one(conn, "SELECT pggit.commit_changes('main', %s)", (message,))
        assert one(conn, "SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)) == message
    trinity = one(conn, "SELECT pggit.commit_changes('main')")
    assert one(conn, "SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)) == ""


def test_tree_hash_follows_tracked_objects(conn: psycopg.Connection[Any]) -> None:
    def tree(trinity: str) -> str:
        return str(one(conn, "SELECT tree_hash FROM pggit.commits WHERE hash = %s", (trinity,)))

    first = one(conn, "SELECT pggit.commit_changes('main', 'a')")
    second = one(conn, "SELECT pggit.commit_changes('main', 'b')")
    assert tree(first) == tree(second)
    conn.execute("CREATE TABLE tree_t (a int)")
    third = one(conn, "SELECT pggit.commit_changes('main', 'c')")
    assert tree(third) != tree(second)
    conn.execute("ALTER TABLE tree_t ADD COLUMN b int")
    fourth = one(conn, "SELECT pggit.commit_changes('main', 'd')")
    assert tree(fourth) != tree(third)
    conn.execute("DROP TABLE tree_t")
    fifth = one(conn, "SELECT pggit.commit_changes('main', 'e')")
    assert tree(fifth) == tree(first)


def tree_hashes(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """(maintained tree hash, the same computed from scratch over pggit.objects)."""
    row = conn.execute("SELECT pggit._tree_hash(), pggit._tree_hash_full()").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_tree_hash_maintained_through_every_write(conn: psycopg.Connection[Any]) -> None:
    """The tree hash a commit records is kept up to date by every kind of write to
    pggit.objects, and always equals the one computed from all active objects."""
    imported = (
        "INSERT INTO pggit.objects (object_type, schema_name, object_name, schema_hash)"
        " VALUES ('TABLE', 'imported', 'a', 'h1'), ('TABLE', 'imported', 'b', NULL)"
    )
    # (statement, the tree it leads to: "new", "same", or the statement whose tree it restores)
    steps = [
        ("CREATE TABLE tm (a int)", "new"),
        ("CREATE INDEX tm_a ON tm (a)", "new"),
        ("ALTER TABLE tm ADD COLUMN b int", "new"),
        ("ALTER TABLE tm RENAME TO tm2", "new"),
        ("CREATE VIEW tv AS SELECT 1 AS x", "new"),
        ("CREATE FUNCTION tf() RETURNS int LANGUAGE sql AS 'SELECT 1'", "new"),
        ("DROP TABLE tm2", "new"),
        ("UPDATE pggit.objects SET updated_at = now()", "same"),
        ("UPDATE pggit.objects SET schema_hash = 'edited' WHERE object_name = 'tv'", "new"),
        (imported, "new"),
        ("UPDATE pggit.objects SET is_active = false WHERE object_name = 'a'", "new"),
        ("DELETE FROM pggit.objects WHERE schema_name = 'imported'", imported),
        ("DROP FUNCTION tf()", "new"),
    ]
    live = tree_hashes(conn)[0]
    before: dict[str, str] = {}
    seen = {live}
    for step, expect in steps:
        before[step] = live
        conn.execute(step)  # type: ignore[arg-type]
        live, full = tree_hashes(conn)
        assert live == full, step
        if expect == "new":
            assert live not in seen, step
        elif expect == "same":
            assert live == before[step], step
        else:
            assert live == before[expect], f"{step}: not the tree from before {expect}"
        seen.add(live)
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TABLE rolled_back (a int)")
        assert tree_hashes(conn)[0] == tree_hashes(conn)[1] != live
    assert tree_hashes(conn) == (live, live)
    conn.execute("SET session_replication_role = replica")  # ordinary triggers do not fire
    conn.execute("UPDATE pggit.objects SET version = version + 1 WHERE object_name = 'tv'")
    conn.execute("RESET session_replication_role")
    live, full = tree_hashes(conn)
    assert live == full and live not in seen
    trinity = one(conn, "SELECT pggit.commit_changes('main', 'after writes')")
    assert one(conn, "SELECT tree_hash FROM pggit.commits WHERE hash = %s", (trinity,)) == full


def test_tree_parts_survive_a_sweep_of_the_rows_a_transaction_wrote(
    conn: psycopg.Connection[Any],
) -> None:
    """The checks' cleanup deletes every pggit row its transaction wrote (sweep.purge): the
    tree's parts are derived data, so only a fold may remove them and the tree stays right."""
    from pggit_chaos import sweep

    conn.execute("CREATE SCHEMA chaos_check_tree")
    conn.execute("CREATE TABLE chaos_check_tree.t (id serial PRIMARY KEY, a int)")
    conn.execute("SELECT pggit.commit_changes('chaos_check_tree', 'scratch')")
    sweep.purge(conn, "chaos_check_tree")
    assert (
        one(conn, "SELECT count(*) FROM pggit.objects WHERE schema_name = 'chaos_check_tree'") == 0
    )
    live, full = tree_hashes(conn)
    assert live == full
    deleted = conn.execute("DELETE FROM pggit.tree_parts")
    assert deleted.rowcount == 0 and tree_hashes(conn) == (live, full)
    conn.execute("UPDATE pggit.tree_parts SET active = active + 1")
    assert tree_hashes(conn) == (live, full)


def test_tree_hash_depends_on_the_objects_not_their_history(
    conn: psycopg.Connection[Any], pggit_dsn: str
) -> None:
    """Same active objects, same tree hash: however many parts the state was kept in."""
    fresh = one(conn, "SELECT pggit.commit_changes('main', 'empty')")
    for index in range(5):
        conn.execute(f"CREATE TABLE churn_{index} (a int)")  # type: ignore[arg-type]
    assert one(conn, "SELECT count(*) FROM pggit.tree_parts") > 1
    for index in range(5):
        conn.execute(f"DROP TABLE churn_{index}")  # type: ignore[arg-type]
    assert one(conn, "SELECT count(*) FROM pggit.tree_parts") > 1
    again = one(conn, "SELECT pggit.commit_changes('main', 'empty again')")
    trees = conn.execute(
        "SELECT tree_hash FROM pggit.commits WHERE hash IN (%s, %s)", (fresh, again)
    ).fetchall()
    assert len(trees) == 2 and trees[0] == trees[1]


def test_commit_folds_the_tree_parts(conn: psycopg.Connection[Any]) -> None:
    for index in range(4):
        conn.execute(f"CREATE TABLE fold_{index} (a int)")  # type: ignore[arg-type]
    parts = one(conn, "SELECT count(*) FROM pggit.tree_parts")
    assert parts >= 5
    # Outside READ COMMITTED a commit reads the parts and leaves them (no serialization error).
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    trinity = one(conn, "SELECT pggit.commit_changes('main', 'repeatable read')")
    conn.execute("COMMIT")
    assert one(conn, "SELECT count(*) FROM pggit.tree_parts") == parts
    assert (
        one(conn, "SELECT tree_hash FROM pggit.commits WHERE hash = %s", (trinity,))
        == (tree_hashes(conn)[1])
    )
    trinity = one(conn, "SELECT pggit.commit_changes('main', 'read committed')")
    assert one(conn, "SELECT count(*) FROM pggit.tree_parts") == 1
    assert (
        one(conn, "SELECT tree_hash FROM pggit.commits WHERE hash = %s", (trinity,))
        == (tree_hashes(conn)[1])
    )


def test_commit_reads_no_tracked_object(conn: psycopg.Connection[Any]) -> None:
    """A commit's cost does not follow the number of tracked objects: it reads none of them."""
    for index in range(3):
        conn.execute(f"CREATE TABLE reads_{index} (a int)")  # type: ignore[arg-type]
    conn.execute(
        "INSERT INTO pggit.objects (object_type, schema_name, object_name, schema_hash)"
        " SELECT 'TABLE', 'imported', 't' || g, md5(g::text) FROM generate_series(1, 2000) g"
    )
    reads = (
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0), seq_tup_read + idx_tup_fetch"
        " FROM pg_stat_xact_user_tables WHERE relid = 'pggit.objects'::regclass"
    )
    with conn.transaction():  # the counters of this backend, read before and after a commit
        before = conn.execute(reads).fetchone()
        one(conn, "SELECT pggit.commit_changes('main', 'counted')")
        after = conn.execute(reads).fetchone()
        conn.execute("SELECT count(*) FROM pggit.objects")  # what a read of them looks like
        control = conn.execute(reads).fetchone()
    assert before is not None and after == before
    assert control is not None and control[0] > before[0] and control[1] >= before[1] + 2003
    assert tree_hashes(conn)[0] == tree_hashes(conn)[1]


def test_tree_hash_under_concurrent_ddl_and_commits(pggit_dsn: str) -> None:
    """Clients creating, altering and dropping tables while committing on their own branches:
    no deadlock, no error, and the maintained tree hash ends equal to a full recomputation."""

    def client(index: int, barrier: threading.Barrier) -> int:
        done = 0
        with psycopg.connect(pggit_dsn, autocommit=True) as own:
            barrier.wait(30)
            for step in range(15):
                table = sql.Identifier(f"conc_{index}_{step}")
                own.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, a int)").format(table))
                own.execute(sql.SQL("ALTER TABLE {} ADD COLUMN b int").format(table))
                with own.transaction():
                    own.execute(sql.SQL("CREATE INDEX ON {} (a)").format(table))
                    own.execute(
                        "SELECT pggit.commit_changes(%s, 'in a transaction')", (f"c{index}",)
                    )
                if step % 2:
                    own.execute(sql.SQL("DROP TABLE {}").format(table))
                own.execute("SELECT pggit.commit_changes(%s, %s)", (f"c{index}", f"s{step}"))
                done += 1
        return done

    assert run_threads(4, client) == [15] * 4
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        live, full = tree_hashes(conn)
        assert live == full
        assert health_rows(conn)["tracking"][0] == "healthy"


def test_custom_id(conn: psycopg.Connection[Any]) -> None:
    assert one(conn, "SELECT pggit.commit_changes('main', 'm', 'release-1')") == "release-1"
    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        conn.execute("SELECT pggit.commit_changes('main', 'again', 'release-1')")
    assert "custom_trinity_id" in str(info.value) and "release-1" in str(info.value)
    assert "already used" in str(info.value)
    assert one(conn, "SELECT count(*) FROM pggit.commits") == 1
    assert (
        one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'main'") == "release-1"
    )


@pytest.mark.parametrize(
    ("call", "params", "parameter"),
    [
        ("SELECT pggit.commit_changes(%s, 'm')", ("",), "branch"),
        ("SELECT pggit.commit_changes(%s, 'm')", ("   \t\n",), "branch"),
        ("SELECT pggit.commit_changes(%s, 'm')", (None,), "branch"),
        ("SELECT pggit.commit_changes(%s, 'm')", ("has space",), "branch"),
        ("SELECT pggit.commit_changes(%s, 'm')", ("bell\x07",), "branch"),
        ("SELECT pggit.commit_changes(%s, 'm')", ("b" * 256,), "branch"),
        ("SELECT pggit.commit_changes('main', %s)", ("x" * 10_001,), "message"),
        ("SELECT pggit.commit_changes('main', 'm', %s)", ("",), "custom_trinity_id"),
        ("SELECT pggit.commit_changes('main', 'm', %s)", ("  ",), "custom_trinity_id"),
        ("SELECT pggit.create_branch(%s)", (" ",), "name"),
        ("SELECT pggit.create_branch('fine', %s)", ("no-such-branch",), "from_branch"),
        ("SELECT pggit.increment_version(%s, 0, 0, 'major')", (-1,), "major"),
        ("SELECT pggit.increment_version(1, %s, 0, 'major')", (-1,), "minor"),
        ("SELECT pggit.increment_version(1, 0, %s, 'patch')", (-5,), "patch"),
        ("SELECT pggit.increment_version(1, 0, 0, %s)", ("huge",), "kind"),
        ("SELECT pggit.increment_version(1, 0, 0, %s)", (None,), "kind"),
    ],
)
def test_validation_errors(
    conn: psycopg.Connection[Any], call: str, params: tuple[Any, ...], parameter: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute(call, params)  # type: ignore[arg-type]
    assert info.value.sqlstate == "22023"
    assert f'"{parameter}"' in str(info.value)
    assert one(conn, "SELECT count(*) FROM pggit.commits") == 0
    assert one(conn, "SELECT count(*) FROM pggit.branches") == 1


def test_message_limit_is_inclusive(conn: psycopg.Connection[Any]) -> None:
    trinity = one(conn, "SELECT pggit.commit_changes('main', %s)", ("é" * 10_000,))
    assert (
        one(conn, "SELECT char_length(message) FROM pggit.commits WHERE hash = %s", (trinity,))
        == 10_000
    )


def test_create_branch_idempotent_under_concurrency(pggit_dsn: str) -> None:
    def work(index: int, barrier: threading.Barrier) -> list[int]:
        with psycopg.connect(pggit_dsn, autocommit=True) as connection:
            barrier.wait(30)
            return [
                one(connection, "SELECT pggit.create_branch(%s)", (f"race-{n}",)) for n in range(20)
            ]

    results = run_threads(10, work)
    assert all(r == results[0] for r in results)
    with psycopg.connect(pggit_dsn) as check:
        assert one(check, "SELECT count(*) FROM pggit.branches WHERE name LIKE 'race-%%'") == 20
        assert one(check, "SELECT count(DISTINCT name) FROM pggit.branches") == one(
            check, "SELECT count(*) FROM pggit.branches"
        )


def test_create_branch_returns_existing(conn: psycopg.Connection[Any]) -> None:
    first = one(conn, "SELECT pggit.create_branch('dev')")
    assert one(conn, "SELECT pggit.create_branch('dev', 'no-such-branch')") == first
    assert one(conn, "SELECT pggit.create_branch('main')") == one(
        conn, "SELECT id FROM pggit.branches WHERE name = 'main'"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1, 2, 3, "major"), "2.0.0"),
        ((1, 2, 3, "minor"), "1.3.0"),
        ((1, 2, 3, "patch"), "1.2.4"),
        ((0, 0, 0, "patch"), "0.0.1"),
        ((9, 9, 9, "MINOR"), "9.10.0"),
    ],
)
def test_increment_version(
    conn: psycopg.Connection[Any], args: tuple[Any, ...], expected: str
) -> None:
    assert one(conn, "SELECT pggit.increment_version(%s, %s, %s, %s)", args) == expected


def test_get_version(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE SCHEMA gv")
    conn.execute("CREATE TABLE gv.t (a int)")
    conn.execute("ALTER TABLE gv.t ADD COLUMN b int")
    conn.execute("CREATE FUNCTION gv.f(x int) RETURNS int LANGUAGE sql AS 'SELECT x'")
    assert one(conn, "SELECT pggit.get_version('gv.t')") == "1.1.0"
    assert one(conn, "SELECT pggit.get_version('t')") is None
    conn.execute("SET search_path = gv")
    assert one(conn, "SELECT pggit.get_version('t')") == "1.1.0"
    conn.execute("RESET search_path")
    assert one(conn, "SELECT pggit.get_version('gv.f(int)')") == "1.0.0"
    assert one(conn, "SELECT pggit.get_version('gv.nope')") is None
    assert one(conn, "SELECT pggit.get_version('a.b.c.d')") is None
    conn.execute("DROP TABLE gv.t")
    assert one(conn, "SELECT pggit.get_version('gv.t')") is None


# -- health and drift ----------------------------------------------------------------------
def health_rows(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, str]]:
    rows = conn.execute("SELECT component, status, details FROM pggit.health_check()").fetchall()
    assert len(rows) == len({r[0] for r in rows})
    return {component: (status, details) for component, status, details in rows}


def test_health_sound(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE healthy_t (a int)")
    conn.execute("SELECT pggit.commit_changes('main', 'x')")
    rows = health_rows(conn)
    assert set(rows) == {"schema", "event_triggers", "trinity_sequence", "branches", "tracking"}
    assert {status for status, _ in rows.values()} == {"healthy"}


def test_health_critical_when_the_tree_state_is_wrong(
    conn: psycopg.Connection[Any], pggit_dsn: str
) -> None:
    """A tree hash state out of step with pggit.objects is critical; installing again repairs."""
    from pggit_chaos.pggit import install

    conn.execute("CREATE TABLE tree_health (a int)")
    conn.execute("INSERT INTO pggit.tree_parts (xor_hi, xor_lo, active) VALUES (1, 0, 0)")
    status, details = health_rows(conn)["tracking"]
    assert status == "critical" and "pggit.tree_parts" in details
    install(pggit_dsn)
    assert health_rows(conn)["tracking"] == ("healthy", "1 active tracked object(s), no drift")
    assert one(conn, "SELECT count(*) FROM pggit.tree_parts") == 1


@pytest.mark.parametrize("trigger", ["pggit_ddl_trigger", "pggit_drop_trigger"])
def test_health_critical_with_disabled_trigger(conn: psycopg.Connection[Any], trigger: str) -> None:
    conn.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(trigger)))
    status, details = health_rows(conn)["event_triggers"]
    assert status == "critical" and trigger in details and "disabled" in details


def test_health_critical_without_sequence_or_main(conn: psycopg.Connection[Any]) -> None:
    conn.execute("ALTER SEQUENCE pggit.trinity_seq RENAME TO trinity_seq_gone")
    conn.execute("DELETE FROM pggit.branches WHERE name = 'main'")
    rows = health_rows(conn)
    assert rows["trinity_sequence"][0] == "critical"
    assert rows["branches"] == ("critical", "branch main missing")


def test_drift_is_a_warning(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE drifty (a int)")
    recorded = obj(conn, "TABLE", "public", "drifty")[2]
    conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
    conn.execute("ALTER TABLE drifty ADD COLUMN sneaky int")
    conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger ENABLE")
    live = one(conn, "SELECT pggit.calculate_schema_hash('drifty')")
    assert conn.execute("SELECT * FROM pggit.detect_drift()").fetchall() == [
        ("public", "drifty", recorded, live)
    ]
    status, details = health_rows(conn)["tracking"]
    assert status == "warning" and "public.drifty" in details
    # the next tracked DDL records the live state again
    conn.execute("ALTER TABLE drifty ADD COLUMN visible int")
    assert health_rows(conn)["tracking"][0] == "healthy"


# -- broken variants: each one really is broken ---------------------------------------------
def test_variant_registry() -> None:
    required = {
        "trinity_collide",
        "message_trimmed",
        "hash_type_blind",
        "tracking_off",
        "history_on_rollback",
        "version_wrong",
        "branch_dup",
        "rollback_burns_id",
    }
    assert required <= set(VARIANTS)
    for name, path in VARIANTS.items():
        text = path.read_text()
        assert text.startswith("-- "), f"{name}: header comment missing"
        assert "Breaks:" in text.split("\n\n", 1)[0], f"{name}: header must say what it breaks"


def test_variant_trinity_collide(pggit_dsn: str) -> None:
    """Millisecond IDs collide: shown by counting, not by hoping the machine is fast.

    1,000 IDs made in one statement that takes under a second fall into fewer than 1,000
    milliseconds, so two are equal; likewise 1,000 commits in one statement hit a duplicate
    hash (a busy machine may make a statement slower, so it is tried until one collides).
    """
    apply_variant(pggit_dsn, "trinity_collide")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        duplicates = one(
            conn,
            "SELECT count(*) - count(DISTINCT id) FROM (SELECT pggit.generate_trinity_id('main')"
            " FROM generate_series(1, 1000)) AS t(id)",
        )
        assert duplicates > 0
        collided = False
        for attempt in range(100):
            try:
                conn.execute(
                    "SELECT count(pggit.commit_changes('main', %s || n))"
                    " FROM generate_series(1, 1000) AS n",
                    (f"{attempt}:",),
                )
            except psycopg.errors.UniqueViolation:
                collided = True
                break
        assert collided, "1,000 commits in one statement never collided, 100 times"


def test_variant_message_trimmed(pggit_dsn: str) -> None:
    apply_variant(pggit_dsn, "message_trimmed")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for message in ("  padded  ", "y" * 300):
            trinity = one(conn, "SELECT pggit.commit_changes('main', %s)", (message,))
            stored = one(conn, "SELECT message FROM pggit.commits WHERE hash = %s", (trinity,))
            assert stored != message


def test_variant_hash_type_blind(pggit_dsn: str) -> None:
    apply_variant(pggit_dsn, "hash_type_blind")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE blind (a int)")
        before = one(conn, "SELECT pggit.calculate_schema_hash('blind')")
        conn.execute("ALTER TABLE blind ALTER COLUMN a TYPE bigint")
        assert one(conn, "SELECT pggit.calculate_schema_hash('blind')") == before


def test_variant_tracking_off(pggit_dsn: str) -> None:
    apply_variant(pggit_dsn, "tracking_off")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE untracked (a int)")
        conn.execute("ALTER TABLE untracked ADD COLUMN b int")
        assert one(conn, "SELECT count(*) FROM pggit.history") == 0
        assert one(conn, "SELECT count(*) FROM pggit.objects") == 0


def needs_dblink(dsn: str) -> None:
    """Skip unless the server has dblink (contrib; the PostgreSQL 16/18 wheels lack it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not one(conn, "SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'"):
            pytest.skip("the variant writes through dblink, which this server lacks (contrib)")


def test_variant_history_on_rollback(pggit_dsn: str) -> None:
    needs_dblink(pggit_dsn)
    apply_variant(pggit_dsn, "history_on_rollback")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("CREATE TABLE ghost (a int)")
            conn.execute("SELECT 1/0")
        assert one(conn, "SELECT to_regclass('ghost') IS NULL") is True
        assert one(conn, "SELECT count(*) FROM pggit.history WHERE object_name = 'ghost'") == 1


def test_variant_version_wrong(pggit_dsn: str) -> None:
    apply_variant(pggit_dsn, "version_wrong")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert one(conn, "SELECT pggit.increment_version(1, 2, 3, 'minor')") != "1.3.0"
        conn.execute("CREATE TABLE vw (a int)")
        conn.execute("ALTER TABLE vw ALTER COLUMN a SET DEFAULT 1")
        conn.execute("ALTER TABLE vw ADD COLUMN b int")
        assert obj(conn, "TABLE", "public", "vw")[1] != "1.1.0"


def test_variant_branch_dup(pggit_dsn: str) -> None:
    apply_variant(pggit_dsn, "branch_dup")

    def work(index: int, barrier: threading.Barrier) -> int:
        with psycopg.connect(pggit_dsn, autocommit=True) as connection:
            barrier.wait(30)
            return int(one(connection, "SELECT pggit.create_branch('twin')"))

    results = run_threads(6, work)
    assert len(set(results)) > 1
    with psycopg.connect(pggit_dsn) as conn:
        assert one(conn, "SELECT count(*) FROM pggit.branches WHERE name = 'twin'") > 1


def test_variant_rollback_burns_id(pggit_dsn: str) -> None:
    needs_dblink(pggit_dsn)
    apply_variant(pggit_dsn, "rollback_burns_id")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        first = one(conn, "SELECT pggit.commit_changes('main', 'kept')")
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("SELECT pggit.commit_changes('main', 'rolled back')")
            conn.execute("SELECT 1/0")
        assert one(conn, "SELECT count(*) FROM pggit.commits WHERE message = 'rolled back'") == 1
        second = one(conn, "SELECT pggit.commit_changes('main', 'after')")
        # two commits now claim the same parent: the branch history forked
        assert (
            one(conn, "SELECT count(*) FROM pggit.commits WHERE parent_commit_hash = %s", (first,))
            == 2
        )
        assert (
            one(conn, "SELECT parent_commit_hash FROM pggit.commits WHERE hash = %s", (second,))
            == first
        )
