"""The upstream-shaped pgGit (tests/pggit_upstream) is faithful to upstream's observed behaviour.

The sound variant is installed into an empty database (no embedded core) and each kept bullet
of the upstream fact sheet is asserted by calling the API: the tables and enums, the Trinity
ids, commit_changes' trimming and P0001 errors, create_branch's copy and 23505, the version
bumps and hashes of the event triggers. The tests named like the checks of the checks suite
(``test_commit_chain_follows_branch_head`` ...) run one helper each; the last section applies
every defect file and proves that it really reproduces its upstream defect: the bad behaviour
is asserted, and the helper of its ``expected_check`` fails against it.

Speed: most tests share one database and run inside a transaction that is rolled back
(``conn``); only those that need committed state or a pristine sequence (concurrent sessions,
the first branch id, the defect files) get a database of their own (``fresh``), cloned from
a template and dropped in the background.
"""

from __future__ import annotations

import re
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import errors

from pggit_chaos.local import EmbeddedPostgres
from pggit_upstream import DEFECTS, SOUND, apply_defect, install_upstream
from test_pggit_core import run_threads

pytestmark = pytest.mark.postgres

Conn = psycopg.Connection[Any]
TEMPLATE = "pggit_upstream_template"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


# -- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def upstream_template(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A template database holding the sound upstream-shaped install."""
    install_upstream(pg_server.create_database(TEMPLATE))
    yield TEMPLATE
    pg_server.drop_database(TEMPLATE)


@pytest.fixture(scope="module")
def dropper(pg_server: EmbeddedPostgres, upstream_template: str) -> Iterator[Callable[[str], None]]:
    """Drops the per-test databases in the background (each DROP DATABASE waits for a
    checkpoint): all are gone, errors raised, before the template itself is dropped."""
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1) as executor:

        def drop(name: str) -> None:
            pending.append(executor.submit(pg_server.drop_database, name))

        yield drop
    for future in pending:
        future.result()


@pytest.fixture
def fresh_dsn(
    pg_server: EmbeddedPostgres, upstream_template: str, dropper: Callable[[str], None]
) -> Iterator[str]:
    """DSN of a fresh database of its own with the sound upstream-shaped pgGit."""
    name = f"u_{uuid.uuid4().hex[:12]}"
    dsn = pg_server.create_database(name, template=upstream_template)
    yield dsn
    dropper(name)


@pytest.fixture(scope="module")
def module_dsn(pg_server: EmbeddedPostgres, upstream_template: str) -> Iterator[str]:
    """One sound database for the module, shared by the tests that roll back (``conn``)."""
    name = f"u_module_{uuid.uuid4().hex[:8]}"
    yield pg_server.create_database(name, template=upstream_template)
    pg_server.drop_database(name)


@pytest.fixture
def conn(module_dsn: str) -> Iterator[Conn]:
    """A connection inside a transaction that is rolled back after the test: DDL, event
    triggers and commits all vanish (only sequence values are not given back). Expected
    errors run in a savepoint (``with conn.transaction()``) so that the test can go on."""
    with (
        psycopg.connect(module_dsn, autocommit=True) as connection,
        connection.transaction(force_rollback=True),
    ):
        yield connection


@pytest.fixture
def fresh(fresh_dsn: str) -> Iterator[Conn]:
    """An autocommit connection to a fresh database of its own."""
    with psycopg.connect(fresh_dsn, autocommit=True) as connection:
        yield connection


def one(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def rows(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def columns(conn: Conn, table: str) -> list[str]:
    return [
        r[0]
        for r in rows(
            conn,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'pggit' AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
    ]


def obj(conn: Conn, otype: str, schema: str, name: str, branch: str = "main") -> dict[str, Any]:
    cur = conn.execute(
        "SELECT id, version,"
        " version_major || '.' || version_minor || '.' || version_patch AS semver, is_active,"
        " full_name, parent_id, content_hash FROM pggit.objects"
        " WHERE object_type = %s AND schema_name = %s AND object_name = %s AND branch_name = %s",
        (otype, schema, name, branch),
    )
    row = cur.fetchone()
    assert row is not None, f"{otype} {schema}.{name} not tracked on {branch}"
    assert cur.description is not None
    return dict(zip([d.name for d in cur.description], row, strict=True))


def history(conn: Conn, object_id: int) -> list[tuple[Any, ...]]:
    return rows(
        conn,
        "SELECT change_type::text, change_severity::text, old_version, new_version"
        " FROM pggit.history WHERE object_id = %s ORDER BY id",
        (object_id,),
    )


def commit(conn: Conn, branch: str | None, message: str = "m", custom: str | None = None) -> str:
    result: str = one(conn, "SELECT pggit.commit_changes(%s, %s, %s)", (branch, message, custom))
    return result


def check_commit_chain_follows_branch_head(conn: Conn) -> None:
    first = commit(conn, "main", "first")
    assert one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'main'") == first
    second = commit(conn, "main", "second")
    parent = one(conn, "SELECT parent_commit_hash FROM pggit.commits WHERE hash = %s", (second,))
    assert parent == first
    assert one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'main'") == second


def check_increment_version_rejects_bad_input(conn: Conn) -> None:
    for parts in ((-5, 2, 3), (1, -1, 0), (1, 2, -3)):
        with pytest.raises(errors.RaiseException), conn.transaction():
            conn.execute("SELECT * FROM pggit.increment_version(%s, %s, %s, 'minor')", parts)
    with pytest.raises(errors.RaiseException, match="Invalid increment type"), conn.transaction():
        conn.execute("SELECT * FROM pggit.increment_version(1, 2, 3, 'huge')")


def check_health_check_healthy(conn: Conn) -> None:
    cur = conn.execute("SELECT * FROM pggit.health_check()")
    assert cur.description is not None
    assert [d.name for d in cur.description] == ["check_name", "status", "message", "details"]
    result = {r[0]: r for r in cur.fetchall()}
    assert {"schema", "event_triggers", "branches"} <= set(result)
    for name, status, message, details in result.values():
        assert status == "healthy", (name, message)
        assert isinstance(message, str) and message
        assert isinstance(details, dict)


def check_first_branch_can_be_created(conn: Conn) -> None:
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    branch_id = one(conn, "SELECT pggit.create_branch('feature-1')")
    assert branch_id == one(conn, "SELECT id FROM pggit.branches WHERE name = 'feature-1'")
    assert one(conn, "SELECT parent_branch_id FROM pggit.branches WHERE name = 'feature-1'") == one(
        conn, "SELECT id FROM pggit.branches WHERE name = 'main'"
    )
    assert any("feature-1" in notice for notice in notices), notices


def check_dropped_objects_stop_being_active(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA s")
    conn.execute("CREATE TABLE s.t (id int PRIMARY KEY, note text, gone int)")
    conn.execute("ALTER TABLE s.t DROP COLUMN gone")
    assert obj(conn, "COLUMN", "s", "t.gone")["is_active"] is False
    assert obj(conn, "COLUMN", "s", "t.note")["is_active"] is True
    table = obj(conn, "TABLE", "s", "t")
    index = obj(conn, "INDEX", "s", "t_pkey")
    conn.execute("DROP TABLE s.t")
    for otype, name in (
        ("TABLE", "t"),
        ("INDEX", "t_pkey"),
        ("COLUMN", "t.id"),
        ("COLUMN", "t.note"),
    ):
        assert obj(conn, otype, "s", name)["is_active"] is False, (otype, name)
    assert history(conn, table["id"])[-1] == ("DROP", "MAJOR", table["version"], None)
    assert history(conn, index["id"])[-1] == ("DROP", "MAJOR", index["version"], None)


def check_new_branch_head_points_at_a_commit(conn: Conn) -> None:
    conn.execute("SELECT pggit.create_branch('empty-start')")
    assert (
        one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'empty-start'") is None
    )
    head = commit(conn, "main", "base")
    conn.execute("SELECT pggit.create_branch('from-head')")
    new_head = one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'from-head'")
    assert new_head == head
    assert one(conn, "SELECT count(*) FROM pggit.commits WHERE hash = %s", (new_head,)) == 1


def check_security_definer_functions_pin_search_path(conn: Conn) -> None:
    hijackable = rows(
        conn,
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'pggit'::regnamespace AND p.prosecdef"
        " AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%')"
        " AND has_function_privilege('public', p.oid, 'EXECUTE')",
    )
    assert hijackable == []


def check_no_pggit_object_writable_by_public(conn: Conn) -> None:
    tables = rows(
        conn,
        "SELECT c.relname, a.privilege_type FROM pg_class c,"
        " aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a"
        " WHERE c.relnamespace = 'pggit'::regnamespace AND c.relkind = 'r' AND a.grantee = 0"
        " AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')",
    )
    schemas = rows(
        conn,
        "SELECT n.nspname FROM pg_namespace n,"
        " aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
        " WHERE left(n.nspname, 5) = 'pggit' AND a.grantee = 0 AND a.privilege_type = 'CREATE'",
    )
    assert tables == [] and schemas == []


def _as_ordinary_role(conn: Conn, statement: str) -> None:
    """Run ``statement`` (``{s}`` = a schema it owns) as a fresh non-superuser role; all of it
    rolled back (also the role), whatever happens."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    with conn.transaction():
        conn.execute(f"CREATE ROLE {role} NOLOGIN")
        conn.execute(f"CREATE SCHEMA {role}_s AUTHORIZATION {role}")
        conn.execute(f"SET LOCAL ROLE {role}")
        conn.execute(statement.format(s=f"{role}_s"))
        conn.execute("RESET ROLE")
        assert obj(conn, "TABLE", f"{role}_s", "t")["is_active"] is True
        raise psycopg.Rollback


def check_ordinary_role_can_run_ddl(conn: Conn) -> None:
    _as_ordinary_role(conn, "CREATE TABLE {s}.t (id serial PRIMARY KEY)")


def check_renamed_objects_leave_no_active_old_name(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA rn")
    conn.execute("CREATE TABLE rn.a (id int PRIMARY KEY, x int)")
    conn.execute("ALTER TABLE rn.a RENAME COLUMN x TO y")
    conn.execute("ALTER TABLE rn.a RENAME TO b")
    active = rows(conn, "SELECT object_type::text, object_name FROM pggit.objects"
                        " WHERE schema_name = 'rn' AND is_active ORDER BY 1, 2")
    assert ("TABLE", "b") in active
    assert [r for r in active if r[1] in ("a", "a.id", "a.x", "b.x")] == []


def _locked_commit(conn: Conn) -> psycopg.Error:
    """The error of commit_changes while another session holds pggit.commits locked."""
    with psycopg.connect(conn.info.dsn) as holder:
        holder.execute("LOCK TABLE pggit.commits IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.Error) as info, conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '200ms'")
            commit(conn, "main", "meets the lock")
        holder.rollback()
    return info.value


def check_lock_timeout_reaches_client_unchanged(conn: Conn) -> None:
    assert _locked_commit(conn).sqlstate == "55P03"


def _drop_logs(conn: Conn) -> int:
    """Errors pgGit logs while a table with a TOAST table is created and dropped."""
    errors = "SELECT count(*) FROM pggit.system_events WHERE event_type ILIKE '%%error%%'"
    before = one(conn, errors)
    conn.execute("CREATE TABLE public.logged (id int PRIMARY KEY, body text)")
    conn.execute("DROP TABLE public.logged")
    after = one(conn, errors)
    return int(after) - int(before)


def check_ddl_tracking_logs_no_errors(conn: Conn) -> None:
    assert _drop_logs(conn) == 0


CHECKS: dict[str, Callable[[Conn], None]] = {
    "test_commit_chain_follows_branch_head": check_commit_chain_follows_branch_head,
    "test_increment_version_rejects_bad_input": check_increment_version_rejects_bad_input,
    "test_health_check_healthy": check_health_check_healthy,
    "test_first_branch_can_be_created": check_first_branch_can_be_created,
    "test_dropped_objects_stop_being_active": check_dropped_objects_stop_being_active,
    "test_new_branch_head_points_at_a_commit": check_new_branch_head_points_at_a_commit,
    "test_security_definer_functions_pin_search_path":
        check_security_definer_functions_pin_search_path,
    "test_no_pggit_object_writable_by_public": check_no_pggit_object_writable_by_public,
    "test_ordinary_role_can_run_ddl": check_ordinary_role_can_run_ddl,
    "test_renamed_objects_leave_no_active_old_name":
        check_renamed_objects_leave_no_active_old_name,
    "test_lock_timeout_reaches_client_unchanged": check_lock_timeout_reaches_client_unchanged,
    "test_ddl_tracking_logs_no_errors": check_ddl_tracking_logs_no_errors,
}


def test_commit_chain_follows_branch_head(conn: Conn) -> None:
    check_commit_chain_follows_branch_head(conn)


def test_increment_version_rejects_bad_input(conn: Conn) -> None:
    check_increment_version_rejects_bad_input(conn)


def test_health_check_healthy(conn: Conn) -> None:
    check_health_check_healthy(conn)


def test_first_branch_can_be_created(fresh: Conn) -> None:
    check_first_branch_can_be_created(fresh)
    assert one(fresh, "SELECT id FROM pggit.branches WHERE name = 'feature-1'") == 2


def test_dropped_objects_stop_being_active(conn: Conn) -> None:
    check_dropped_objects_stop_being_active(conn)


def test_new_branch_head_points_at_a_commit(conn: Conn) -> None:
    check_new_branch_head_points_at_a_commit(conn)


def test_security_definer_functions_pin_search_path(conn: Conn) -> None:
    check_security_definer_functions_pin_search_path(conn)


def test_no_pggit_object_writable_by_public(conn: Conn) -> None:
    check_no_pggit_object_writable_by_public(conn)


def test_ordinary_role_can_run_ddl(conn: Conn) -> None:
    check_ordinary_role_can_run_ddl(conn)


def test_renamed_objects_leave_no_active_old_name(conn: Conn) -> None:
    check_renamed_objects_leave_no_active_old_name(conn)


def test_lock_timeout_reaches_client_unchanged(conn: Conn) -> None:
    check_lock_timeout_reaches_client_unchanged(conn)


def test_ddl_tracking_logs_no_errors(conn: Conn) -> None:
    check_ddl_tracking_logs_no_errors(conn)


# -- install --------------------------------------------------------------------------------
def test_install_into_empty_database_through_psycopg(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE public.before_install (id int PRIMARY KEY)")
    install_upstream(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert one(c, "SELECT pggit.version()") == "0.1.3"
        assert rows(c, "SELECT id, name, status::text FROM pggit.branches") == [
            (1, "main", "ACTIVE")
        ]
        # Pre-existing user objects are not recorded (documented simplification).
        assert one(c, "SELECT count(*) FROM pggit.objects") == 0
        assert one(c, "SELECT to_regclass('pggit.install_info')") is None
        assert one(c, "SELECT count(*) FROM pg_proc WHERE proname = 'detect_drift'") == 0


def test_install_with_psql(pg_server: EmbeddedPostgres, empty_dsn: str) -> None:
    psql = pg_server.bindir / "psql"
    if not psql.exists():
        pytest.skip("psql not installed next to the server binaries")
    result = subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_dsn, "-f", str(SOUND)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM pggit.branches WHERE name = 'main'") == 1


# -- shape ----------------------------------------------------------------------------------
def enum_labels(conn: Conn, name: str) -> list[str]:
    return [
        r[0]
        for r in rows(
            conn,
            "SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = %s::regtype"
            " ORDER BY e.enumsortorder",
            (f"pggit.{name}",),
        )
    ]


def test_enums(conn: Conn) -> None:
    assert {
        "TABLE", "VIEW", "INDEX", "FUNCTION", "COLUMN", "SEQUENCE", "TYPE", "SCHEMA", "CONSTRAINT",
        "TRIGGER",
    } <= set(enum_labels(conn, "object_type"))  # fmt: skip
    assert enum_labels(conn, "change_type") == ["CREATE", "ALTER", "DROP", "RENAME", "COMMENT"]
    assert enum_labels(conn, "change_severity") == ["MAJOR", "MINOR", "PATCH"]
    assert enum_labels(conn, "branch_status") == ["ACTIVE", "MERGED", "DELETED"]


def test_table_columns(conn: Conn) -> None:
    assert columns(conn, "branches") == [
        "id", "name", "parent_branch_id", "head_commit_hash", "status", "created_at", "created_by",
        "merged_at", "merged_by", "branch_type", "total_objects", "modified_objects",
        "storage_efficiency", "description",
    ]  # fmt: skip
    assert columns(conn, "commits") == [
        "id", "hash", "branch_id", "parent_commit_hash", "message", "author", "authored_at",
        "committer", "committed_at", "tree_hash", "object_hashes", "metadata",
    ]  # fmt: skip
    assert columns(conn, "objects") == [
        "id", "object_type", "schema_name", "object_name", "full_name", "parent_id", "content_hash",
        "ddl_normalized", "branch_id", "branch_name", "version", "version_major", "version_minor",
        "version_patch", "metadata", "is_active", "created_at", "updated_at", "ddl_hash",
        "structure_hash", "constraints_hash", "indexes_hash",
    ]  # fmt: skip
    assert columns(conn, "history") == [
        "id", "object_id", "change_type", "change_severity", "commit_hash", "branch_id",
        "merge_base_hash", "old_version", "new_version", "old_metadata", "new_metadata",
        "change_description", "sql_executed", "created_at", "created_by", "old_hash", "new_hash",
    ]  # fmt: skip
    assert columns(conn, "system_events") == ["id", "event_type", "details", "created_at"]
    assert columns(conn, "monitoring_metrics") == [
        "id",
        "metric_type",
        "value",
        "tags",
        "recorded_at",
    ]
    assert one(conn, "SELECT to_regclass('pggit.trinity_id_seq')::text") == "pggit.trinity_id_seq"
    assert (
        one(
            conn,
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = 'pggit' AND table_name = 'monitoring_metrics'"
            " AND column_name = 'id'",
        )
        == "uuid"
    )


def test_keys_checks_and_foreign_keys(conn: Conn) -> None:
    constraints = {
        (table, kind, definition)
        for table, kind, definition in rows(
            conn,
            "SELECT conrelid::regclass::text, contype::text, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = 'pggit'::regnamespace",
        )
    }
    expected = {
        ("pggit.branches", "u", "UNIQUE (name)"),
        ("pggit.branches", "c", "CHECK (((name IS NOT NULL) AND (name <> ''::text)))"),
        ("pggit.branches", "c", "CHECK ((name ~ '^[a-zA-Z0-9._/#-]+$'::text))"),
        ("pggit.branches", "f", "FOREIGN KEY (parent_branch_id) REFERENCES pggit.branches(id)"),
        ("pggit.commits", "u", "UNIQUE (hash)"),
        (
            "pggit.commits",
            "f",
            "FOREIGN KEY (branch_id) REFERENCES pggit.branches(id) ON DELETE CASCADE",
        ),
        ("pggit.objects", "u", "UNIQUE (object_type, schema_name, object_name, branch_name)"),
        (
            "pggit.objects",
            "f",
            "FOREIGN KEY (parent_id) REFERENCES pggit.objects(id) ON DELETE CASCADE",
        ),
        (
            "pggit.history",
            "f",
            "FOREIGN KEY (object_id) REFERENCES pggit.objects(id) ON DELETE CASCADE",
        ),
        (
            "pggit.history",
            "f",
            "FOREIGN KEY (branch_id) REFERENCES pggit.branches(id) ON DELETE CASCADE",
        ),
    }
    assert expected <= constraints, expected - constraints
    assert "branches_name_key" in {
        r[0] for r in rows(conn, "SELECT indexname FROM pg_indexes WHERE schemaname = 'pggit'")
    }
    # commits.parent_commit_hash has no foreign key (upstream shape).
    assert not any("parent_commit_hash" in c[2] for c in constraints)


def test_function_signatures(conn: Conn) -> None:
    signatures = {
        (name, args, result)
        for name, args, result in rows(
            conn,
            "SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)"
            " FROM pg_proc p WHERE p.pronamespace = 'pggit'::regnamespace AND p.proname !~ '^_'",
        )
    }
    expected = {
        ("version", "", "text"),
        ("generate_trinity_id", "", "text"),
        (
            "commit_changes",
            "p_branch_name text, p_message text DEFAULT ''::text,"
            " p_custom_trinity_id text DEFAULT NULL::text",
            "text",
        ),
        (
            "create_branch",
            "p_branch_name text, p_parent_branch text DEFAULT 'main'::text,"
            " p_copy_data boolean DEFAULT false",
            "integer",
        ),
        ("calculate_schema_hash", "p_table_name text", "text"),
        (
            "compute_ddl_hash",
            "p_object_type pggit.object_type, p_schema_name text, p_object_name text",
            "text",
        ),
        (
            "get_version",
            "p_object_name text",
            "TABLE(object_name text, schema_name text, version integer, version_string text,"
            " created_at timestamp without time zone)",
        ),
        (
            "increment_version",
            "p_current_major integer, p_current_minor integer, p_current_patch integer,"
            " p_increment_type text",
            "TABLE(major integer, minor integer, patch integer, full_version text)",
        ),
        (
            "health_check",
            "",
            "TABLE(check_name text, status text, message text, details jsonb)",
        ),
        ("handle_ddl_command", "", "event_trigger"),
        ("handle_sql_drop", "", "event_trigger"),
    }
    assert expected <= signatures, expected - signatures
    assert [s for s in signatures if s[0] == "generate_trinity_id"] == [
        ("generate_trinity_id", "", "text")
    ]
    triggers = rows(
        conn,
        "SELECT evtname, evtevent, evtfoid::regproc::text FROM pg_event_trigger ORDER BY evtname",
    )
    assert triggers == [
        ("pggit_ddl_trigger", "ddl_command_end", "pggit.handle_ddl_command"),
        ("pggit_drop_trigger", "sql_drop", "pggit.handle_sql_drop"),
    ]


# -- Trinity ids and commits ----------------------------------------------------------------
def test_generate_trinity_id_takes_no_argument(conn: Conn) -> None:
    ids = [
        r[0] for r in rows(conn, "SELECT pggit.generate_trinity_id() FROM generate_series(1, 200)")
    ]
    assert len(set(ids)) == 200
    for trinity in ids:
        assert re.fullmatch(r"\d{20}-\d{6,}-[0-9a-f]{8}", trinity), trinity
    with pytest.raises(errors.UndefinedFunction), conn.transaction():
        conn.execute("SELECT pggit.generate_trinity_id('main')")


def test_commit_message_is_trimmed(conn: Conn) -> None:
    trinity = commit(conn, "main", "  fix: spaces around  ")
    assert one(conn, "SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)) == (
        "fix: spaces around"
    )
    # trim() removes spaces only, as upstream: a trailing newline stays.
    trinity = commit(conn, "main", " line\n")
    assert one(conn, "SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)) == "line\n"
    trinity = one(conn, "SELECT pggit.commit_changes('main', NULL)")
    assert one(conn, "SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)) == ""
    trinity = one(conn, "SELECT pggit.commit_changes('main')")
    assert one(conn, "SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)) == ""


@pytest.mark.parametrize(
    ("branch", "message", "custom"),
    [
        (None, "m", None),
        ("", "m", None),
        ("   ", "m", None),
        ("main", "x" * 10001, None),
        ("main", "m", "short-id"),
        ("main", "m", "123456789"),
        ("bad name!", "m", None),
    ],
    ids=["null-branch", "empty-branch", "blank-branch", "long-message", "short-id", "nine-chars",
         "bad-branch-name"],
)  # fmt: skip
def test_commit_changes_errors_are_p0001(
    conn: Conn, branch: str | None, message: str, custom: str | None
) -> None:
    with (
        pytest.raises(errors.RaiseException, match="Failed to create commit on branch") as info,
        conn.transaction(),
    ):
        commit(conn, branch, message, custom)
    assert info.value.sqlstate == "P0001"
    assert one(conn, "SELECT count(*) FROM pggit.commits") == 0


def test_custom_trinity_ids(conn: Conn) -> None:
    assert commit(conn, "main", "m", "exactly-10") == "exactly-10"
    # 10000 characters after trimming is allowed.
    assert commit(conn, "main", " " + "x" * 10000 + " ", "custom-0000002") == "custom-0000002"
    with pytest.raises(errors.RaiseException, match="already exists") as info, conn.transaction():
        commit(conn, "main", "again", "exactly-10")
    assert info.value.sqlstate == "P0001"
    assert one(conn, "SELECT count(*) FROM pggit.commits") == 2


def test_commit_creates_missing_branch_from_main(conn: Conn) -> None:
    trinity = commit(conn, "feature/new.1#x", "m")
    assert rows(
        conn,
        "SELECT b.name, p.name, b.head_commit_hash FROM pggit.branches b"
        " JOIN pggit.branches p ON p.id = b.parent_branch_id WHERE b.name = 'feature/new.1#x'",
    ) == [("feature/new.1#x", "main", trinity)]
    branch = one(
        conn,
        "SELECT b.name FROM pggit.commits c JOIN pggit.branches b ON b.id = c.branch_id"
        " WHERE c.hash = %s",
        (trinity,),
    )
    assert branch == "feature/new.1#x"


def test_generated_id_collision_is_retried(conn: Conn) -> None:
    # Every other generated id is one that is already used: commit_changes retries.
    conn.execute(
        "INSERT INTO pggit.commits (hash, branch_id, message) VALUES ('taken-000001', 1, 'x')"
    )
    conn.execute("SELECT setval('pggit.trinity_id_seq', 1, false)")
    conn.execute(
        "CREATE OR REPLACE FUNCTION pggit.generate_trinity_id() RETURNS text LANGUAGE sql AS $$"
        " SELECT CASE WHEN nextval('pggit.trinity_id_seq') % 2 = 1 THEN 'taken-000001'"
        " ELSE 'fresh-' || lpad(currval('pggit.trinity_id_seq')::text, 6, '0') END $$"
    )
    assert commit(conn, "main", "a") == "fresh-000002"
    assert commit(conn, "main", "b") == "fresh-000004"


def test_twenty_concurrent_sessions_commit_one_linear_chain(fresh_dsn: str, fresh: Conn) -> None:
    conn = fresh
    base = commit(conn, "main", "base")

    def work(index: int, barrier: threading.Barrier) -> str:
        with psycopg.connect(fresh_dsn, autocommit=True) as c:
            barrier.wait(30)
            return commit(c, "main", f"concurrent {index}")

    ids = run_threads(20, work)
    assert len(set(ids)) == 20
    parents = dict(
        rows(conn, "SELECT hash, parent_commit_hash FROM pggit.commits WHERE hash <> %s", (base,))
    )
    assert set(parents) == set(ids)
    # One linear chain: every commit has a distinct parent, walking back from the head visits
    # all 20 and ends at the base commit.
    assert len(set(parents.values())) == 20
    cursor = one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'main'")
    seen = []
    while cursor in parents:
        seen.append(cursor)
        cursor = parents[cursor]
    assert cursor == base
    assert sorted(seen) == sorted(ids)


# -- branches -------------------------------------------------------------------------------
def test_create_branch_twice_raises_unique_violation(conn: Conn) -> None:
    conn.execute("SELECT pggit.create_branch('dev')")
    with pytest.raises(errors.UniqueViolation) as info, conn.transaction():
        conn.execute("SELECT pggit.create_branch('dev')")
    assert info.value.diag.constraint_name == "branches_name_key"
    with pytest.raises(errors.RaiseException), conn.transaction():
        conn.execute("SELECT pggit.create_branch('other', 'no-such-parent')")


@pytest.mark.parametrize("name", ["", "with space", "semi;colon", "quote'"])
def test_branch_name_check(conn: Conn, name: str) -> None:
    with pytest.raises(errors.CheckViolation), conn.transaction():
        conn.execute("SELECT pggit.create_branch(%s)", (name,))


def test_branch_name_check_allows_git_like_names(conn: Conn) -> None:
    for name in ("feature/a.b-c_d", "release#12", "v1.2.3"):
        conn.execute("SELECT pggit.create_branch(%s)", (name,))
    assert one(conn, "SELECT count(*) FROM pggit.branches") == 4


def test_create_branch_copies_active_objects(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.kept (id int PRIMARY KEY, v text)")
    conn.execute("CREATE TABLE public.dropped (id int)")
    conn.execute("DROP TABLE public.dropped")
    conn.execute("SELECT pggit.create_branch('copy')")
    listing = (
        "SELECT object_type::text, schema_name, object_name, version, version_major,"
        " version_minor, version_patch FROM pggit.objects WHERE branch_name = %s {}"
        " ORDER BY 1, 2, 3"
    )
    main = rows(conn, listing.format("AND is_active"), ("main",))
    copy = rows(conn, listing.format(""), ("copy",))
    assert main == copy
    assert ("TABLE", "public", "kept", 2, 1, 1, 0) in copy
    assert not any(r[2] == "dropped" for r in copy)
    copy_id = one(conn, "SELECT id FROM pggit.branches WHERE name = 'copy'")
    assert one(
        conn,
        "SELECT bool_and(branch_id = %s) FROM pggit.objects WHERE branch_name = 'copy'",
        (copy_id,),
    )
    # Children point at the copy of their parent, in the new branch.
    assert rows(
        conn,
        "SELECT c.object_name, p.object_name, p.branch_name FROM pggit.objects c"
        " JOIN pggit.objects p ON p.id = c.parent_id WHERE c.branch_name = 'copy' ORDER BY 1",
    ) == [("kept.id", "kept", "copy"), ("kept.v", "kept", "copy"), ("kept_pkey", "kept", "copy")]


# -- versions and hashes --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("major", (2, 0, 0, "2.0.0")),
        ("MAJOR", (2, 0, 0, "2.0.0")),
        ("Minor", (1, 3, 0, "1.3.0")),
        ("minor", (1, 3, 0, "1.3.0")),
        ("PATCH", (1, 2, 4, "1.2.4")),
    ],
)
def test_increment_version_table_result(
    conn: Conn, kind: str, expected: tuple[int, int, int, str]
) -> None:
    cur = conn.execute("SELECT * FROM pggit.increment_version(1, 2, 3, %s)", (kind,))
    assert cur.description is not None
    assert [d.name for d in cur.description] == ["major", "minor", "patch", "full_version"]
    assert cur.fetchall() == [expected]


def test_calculate_schema_hash_is_public_only(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA other")
    conn.execute("CREATE TABLE public.pt (id int PRIMARY KEY, v varchar(10) NOT NULL DEFAULT 'x')")
    conn.execute("CREATE TABLE other.only_here (id int)")
    digest = one(conn, "SELECT pggit.calculate_schema_hash('pt')")
    assert HEX64.match(digest)
    assert digest == one(conn, "SELECT pggit.compute_ddl_hash('TABLE', 'public', 'pt')")
    for name in ("public.pt", "other.only_here", "only_here", "missing", "pt; drop"):
        assert one(conn, "SELECT pggit.calculate_schema_hash(%s)", (name,)) is None, name
    assert one(conn, "SELECT pggit.calculate_schema_hash(NULL)") is None


def test_compute_ddl_hash(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA a")
    conn.execute("CREATE SCHEMA b")
    definition = (
        "(id serial PRIMARY KEY, name varchar(40) NOT NULL DEFAULT 'x',"
        " amount numeric(10,2) CHECK (amount >= 0))"
    )
    conn.execute(f"CREATE TABLE a.first {definition}")
    conn.execute(f"CREATE TABLE b.second {definition}")

    def ddl_hash(schema: str, name: str) -> str | None:
        result: str | None = one(
            conn, "SELECT pggit.compute_ddl_hash('TABLE', %s, %s)", (schema, name)
        )
        return result

    first = ddl_hash("a", "first")
    assert first is not None and HEX64.match(first)
    assert ddl_hash("b", "second") == first  # same definition, other table name and schema
    assert ddl_hash("a", "first") == first  # deterministic
    assert ddl_hash("a", "missing") is None
    assert ddl_hash("missing", "first") is None
    conn.execute("ALTER TABLE b.second ADD COLUMN extra int")
    added = ddl_hash("b", "second")
    assert added != first
    conn.execute("ALTER TABLE b.second ALTER COLUMN extra TYPE bigint")
    retyped = ddl_hash("b", "second")
    assert retyped not in (first, added)
    conn.execute("ALTER TABLE b.second DROP COLUMN extra")
    assert ddl_hash("b", "second") == first
    conn.execute("ALTER TABLE b.second ALTER COLUMN name TYPE varchar(50)")
    assert ddl_hash("b", "second") != first
    conn.execute("ALTER TABLE a.first ALTER COLUMN name DROP NOT NULL")
    assert ddl_hash("a", "first") != first


def test_get_version(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA s")
    conn.execute("CREATE TABLE s.t (id int)")
    conn.execute("CREATE TABLE public.t (id int)")
    conn.execute("ALTER TABLE public.t ADD COLUMN v int")
    cur = conn.execute("SELECT * FROM pggit.get_version('s.t')")
    assert cur.description is not None
    assert [d.name for d in cur.description] == [
        "object_name", "schema_name", "version", "version_string", "created_at",
    ]  # fmt: skip
    assert [r[:4] for r in cur.fetchall()] == [("t", "s", 2, "1.1.0")]
    assert [r[:4] for r in rows(conn, "SELECT * FROM pggit.get_version('t')")] == [
        ("t", "public", 3, "2.0.0")
    ]
    assert rows(conn, "SELECT * FROM pggit.get_version('nothing')") == []


# -- event triggers -------------------------------------------------------------------------
def test_create_table_tracked_at_1_1_0(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA s")
    statement = "CREATE TABLE s.t (id int primary key, note text)"
    conn.execute(statement)
    table = obj(conn, "TABLE", "s", "t")
    assert (table["version"], table["semver"], table["full_name"]) == (2, "1.1.0", "s.t")
    assert table["content_hash"] is None
    for column in ("id", "note"):
        row = obj(conn, "COLUMN", "s", f"t.{column}")
        assert (row["version"], row["semver"], row["parent_id"]) == (1, "1.0.0", table["id"])
        assert row["full_name"] == f"s.t.{column}"
        assert history(conn, row["id"]) == []
    index = obj(conn, "INDEX", "s", "t_pkey")
    assert (index["version"], index["semver"], index["parent_id"]) == (2, "1.1.0", table["id"])
    assert history(conn, table["id"]) == [("CREATE", "MINOR", 1, 2)]
    assert history(conn, index["id"]) == [("CREATE", "MINOR", 1, 2)]
    assert rows(
        conn,
        "SELECT sql_executed, change_description, branch_id, created_by FROM pggit.history"
        " WHERE object_id = %s",
        (table["id"],),
    ) == [(statement, "CREATE TABLE table s.t", 1, "postgres")]
    assert one(conn, "SELECT count(*) FROM pggit.objects WHERE content_hash IS NOT NULL") == 0


def test_history_links_by_object_id_only(conn: Conn) -> None:
    cols = set(columns(conn, "history"))
    assert not cols & {"schema_name", "object_type", "object_name"}
    conn.execute("CREATE TABLE public.linked (id int)")
    assert rows(
        conn,
        "SELECT o.object_type::text, o.schema_name, o.object_name, h.change_type::text"
        " FROM pggit.history h JOIN pggit.objects o ON o.id = h.object_id",
    ) == [("TABLE", "public", "linked", "CREATE")]


def test_alter_table_is_major(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.t (id int)")
    table_id = obj(conn, "TABLE", "public", "t")["id"]
    conn.execute("ALTER TABLE public.t ADD COLUMN v int")
    table = obj(conn, "TABLE", "public", "t")
    assert (table["semver"], table["version"]) == ("2.0.0", 3)
    assert obj(conn, "COLUMN", "public", "t.v")["is_active"] is True
    conn.execute("ALTER TABLE public.t ALTER COLUMN v TYPE bigint")
    assert obj(conn, "TABLE", "public", "t")["semver"] == "3.0.0"
    conn.execute("COMMENT ON TABLE public.t IS 'no bump'")
    assert obj(conn, "TABLE", "public", "t")["semver"] == "3.0.0"
    conn.execute("ALTER TABLE public.t DROP COLUMN v")
    assert obj(conn, "TABLE", "public", "t")["semver"] == "4.0.0"
    assert history(conn, table_id) == [
        ("CREATE", "MINOR", 1, 2),
        ("ALTER", "MAJOR", 2, 3),
        ("ALTER", "MAJOR", 3, 4),
        ("ALTER", "MAJOR", 4, 5),
    ]


def test_untracked_objects(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.with_serial (id serial PRIMARY KEY)")
    conn.execute("CREATE TABLE pggit.internal (id int)")
    conn.execute("CREATE TEMP TABLE scratch (id int)")
    tracked = rows(
        conn,
        "SELECT object_type::text, object_name FROM pggit.objects"
        " WHERE object_type <> 'COLUMN' ORDER BY 1, 2",
    )
    assert tracked == [("INDEX", "with_serial_pkey"), ("TABLE", "with_serial")]


def test_recreated_table_is_tracked_again(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.again (id int, old int)")
    conn.execute("DROP TABLE public.again")
    conn.execute("CREATE TABLE public.again (id int)")
    table = obj(conn, "TABLE", "public", "again")
    assert (table["is_active"], table["semver"]) == (True, "1.1.0")
    assert obj(conn, "COLUMN", "public", "again.id")["is_active"] is True
    assert obj(conn, "COLUMN", "public", "again.old")["is_active"] is False
    assert [h[0] for h in history(conn, table["id"])] == ["CREATE", "DROP", "CREATE"]


def test_system_events_and_metrics(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA myschema")
    conn.execute("CREATE TABLE myschema.mytable (id int)")
    conn.execute("ALTER TABLE myschema.mytable ADD COLUMN v int")
    conn.execute("DROP TABLE myschema.mytable")
    events = [r[0] for r in rows(conn, "SELECT details FROM pggit.system_events ORDER BY id")]
    for operation in ("CREATE TABLE", "ALTER TABLE", "DROP TABLE"):
        assert {
            "operation": operation,
            "object_type": "table",
            "object_identity": "myschema.mytable",
        } in events, operation
    metrics = rows(
        conn, "SELECT metric_type, tags FROM pggit.monitoring_metrics ORDER BY recorded_at"
    )
    tags = [r[1] for r in metrics]
    for command in ("CREATE TABLE", "ALTER TABLE", "DROP TABLE"):
        assert {"command": command} in tags, command
    assert all(set(t) == {"command"} for t in tags)
    assert one(conn, "SELECT count(*) FROM pggit.monitoring_metrics WHERE id IS NULL") == 0


# -- the defect files -----------------------------------------------------------------------
def test_defect_catalogue() -> None:
    assert {name: d.expected_check for name, d in DEFECTS.items()} == {
        "no_commit_chain": "test_commit_chain_follows_branch_head",
        "negative_version": "test_increment_version_rejects_bad_input",
        "health_check_errors": "test_health_check_healthy",
        "first_branch_fails": "test_first_branch_can_be_created",
        "columns_stay_active": "test_dropped_objects_stop_being_active",
        "dangling_branch_head": "test_new_branch_head_points_at_a_commit",
        "definer_search_path": "test_security_definer_functions_pin_search_path",
        "public_writable": "test_no_pggit_object_writable_by_public",
        "ddl_needs_privileges": "test_ordinary_role_can_run_ddl",
        "rename_keeps_old": "test_renamed_objects_leave_no_active_old_name",
        "retryable_wrapped": "test_lock_timeout_reaches_client_unchanged",
        "tracking_error_logged": "test_ddl_tracking_logs_no_errors",
    }
    for name, defect in DEFECTS.items():
        assert defect.name == name and defect.path.exists()
        assert len(defect.breaks) > 20, name
        assert defect.expected_check in CHECKS
        assert defect.expected_check in globals()
    with pytest.raises(KeyError, match="unknown upstream pgGit defect"):
        apply_defect("dbname=unused", "no_such_defect")
    with pytest.raises(AttributeError):
        DEFECTS["negative_version"].name = "x"  # type: ignore[misc]


def _bad_no_commit_chain(conn: Conn) -> None:
    first = commit(conn, "main", "first")
    second = commit(conn, "main", "second")
    assert rows(conn, "SELECT hash, parent_commit_hash FROM pggit.commits ORDER BY id") == [
        (first, None),
        (second, None),
    ]
    assert one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'main'") is None


def _bad_negative_version(conn: Conn) -> None:
    assert rows(conn, "SELECT * FROM pggit.increment_version(-5, 2, 3, 'minor')") == [
        (-5, 3, 0, "-5.3.0")
    ]


def _bad_health_check_errors(conn: Conn) -> None:
    with (
        pytest.raises(errors.InvalidParameterValue, match="unrecognized format"),
        conn.transaction(),
    ):
        conn.execute("SELECT * FROM pggit.health_check()")


def _bad_first_branch_fails(conn: Conn) -> None:
    with pytest.raises(errors.UniqueViolation) as info, conn.transaction():
        conn.execute("SELECT pggit.create_branch('dev')")
    assert info.value.diag.constraint_name == "branches_pkey"
    assert one(conn, "SELECT pggit.create_branch('dev')") == 2


def _bad_columns_stay_active(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, gone int)")
    conn.execute("ALTER TABLE public.t DROP COLUMN gone")
    assert obj(conn, "COLUMN", "public", "t.gone")["is_active"] is True
    conn.execute("DROP TABLE public.t")
    assert obj(conn, "TABLE", "public", "t")["is_active"] is False
    assert obj(conn, "INDEX", "public", "t_pkey")["is_active"] is False
    assert obj(conn, "COLUMN", "public", "t.id")["is_active"] is True


def _bad_dangling_branch_head(conn: Conn) -> None:
    head = commit(conn, "main", "base")
    conn.execute("SELECT pggit.create_branch('dev')")
    new_head = one(conn, "SELECT head_commit_hash FROM pggit.branches WHERE name = 'dev'")
    assert HEX64.match(new_head) and new_head != head
    assert one(conn, "SELECT count(*) FROM pggit.commits WHERE hash = %s", (new_head,)) == 0


def _bad_definer_search_path(conn: Conn) -> None:
    assert rows(conn, "SELECT prosecdef, proconfig FROM pg_proc"
                      " WHERE oid = 'pggit.generate_trinity_id()'::regprocedure") == [(True, None)]
    assert one(conn, "SELECT has_function_privilege('public',"
                     " 'pggit.generate_trinity_id()', 'EXECUTE')") is True


def _bad_public_writable(conn: Conn) -> None:
    assert one(conn, "SELECT has_table_privilege('public', 'pggit.history', 'INSERT')") is True
    assert one(conn, "SELECT has_schema_privilege('public', 'pggit_branches', 'CREATE')") is True


def _bad_ddl_needs_privileges(conn: Conn) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
        _as_ordinary_role(conn, "CREATE TABLE {s}.t (id serial PRIMARY KEY)")


def _bad_rename_keeps_old(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.a (id int PRIMARY KEY)")
    conn.execute("ALTER TABLE public.a RENAME TO b")
    assert obj(conn, "TABLE", "public", "a")["is_active"] is True
    assert obj(conn, "TABLE", "public", "b")["is_active"] is True
    conn.execute("DROP TABLE public.b")
    assert obj(conn, "TABLE", "public", "a")["is_active"] is True


def _bad_retryable_wrapped(conn: Conn) -> None:
    error = _locked_commit(conn)
    assert error.sqlstate == "P0001" and "Failed to create commit" in str(error)
    assert "lock timeout" in str(error)


def _bad_tracking_error_logged(conn: Conn) -> None:
    assert _drop_logs(conn) >= 2  # the table, its TOAST table and index, its key...
    assert "pggit.version_drop" in one(
        conn, "SELECT details->>'error' FROM pggit.system_events"
              " WHERE event_type = 'tracking_error' ORDER BY id DESC LIMIT 1")


BAD_BEHAVIOUR: dict[str, Callable[[Conn], None]] = {
    "no_commit_chain": _bad_no_commit_chain,
    "negative_version": _bad_negative_version,
    "health_check_errors": _bad_health_check_errors,
    "first_branch_fails": _bad_first_branch_fails,
    "columns_stay_active": _bad_columns_stay_active,
    "dangling_branch_head": _bad_dangling_branch_head,
    "definer_search_path": _bad_definer_search_path,
    "public_writable": _bad_public_writable,
    "ddl_needs_privileges": _bad_ddl_needs_privileges,
    "rename_keeps_old": _bad_rename_keeps_old,
    "retryable_wrapped": _bad_retryable_wrapped,
    "tracking_error_logged": _bad_tracking_error_logged,
}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_defect_reproduces_upstream_behaviour(fresh_dsn: str, name: str) -> None:
    apply_defect(fresh_dsn, name)
    with psycopg.connect(fresh_dsn, autocommit=True) as c:
        BAD_BEHAVIOUR[name](c)


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_expected_check_fails_against_defect(fresh_dsn: str, name: str) -> None:
    apply_defect(fresh_dsn, name)
    with (
        psycopg.connect(fresh_dsn, autocommit=True) as c,
        pytest.raises((AssertionError, psycopg.Error, pytest.fail.Exception)),
    ):
        CHECKS[DEFECTS[name].expected_check](c)
