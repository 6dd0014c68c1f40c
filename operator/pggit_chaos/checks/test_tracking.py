"""Tracking completeness and error semantics: what a careful reviewer tries with psql.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (categories ``property`` and
``transaction``). Renames leave nothing active under the old name; functions are recorded by
name, not by a number; a lock timeout inside a pgGit function reaches the client as SQLSTATE
55P03 (a client retries on it), not wrapped into a generic error; a branch that does not exist
is a clear error naming it; 63-byte identifiers (PostgreSQL's limit) are tracked exactly.
Capability-aware: a check skips, with the reason, where the installed pgGit lacks what it uses.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos.checks.api import PgGitApi
from pggit_chaos.checks.support import Scratch, TargetInfo, connect

Conn = psycopg.Connection[Any]

#: PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes).
MAX_IDENTIFIER = 63


def _main_only(target: TargetInfo) -> str:
    """Objects recorded for the live database: upstream pgGit also keeps copies per branch."""
    return " AND branch_name = 'main'" if target.has("objects.branch_name") else ""


def _active(conn: Conn, target: TargetInfo, schema: str) -> list[tuple[str, str]]:
    """(type, name) of the active objects pgGit records in ``schema``."""
    return [
        (str(kind), str(name))
        for kind, name in conn.execute(
            "SELECT object_type::text, object_name FROM pggit.objects"  # noqa: S608
            " WHERE is_active AND schema_name = %s" + _main_only(target) + " ORDER BY id",
            (schema,),
        )
    ]


@pytest.mark.property
@pytest.mark.requires("objects.is_active", "objects.schema_name", "objects.object_name")
def test_renamed_objects_leave_no_active_old_name(
    conn: Conn, scratch: Scratch, target: TargetInfo
) -> None:
    """After ALTER TABLE ... RENAME (and RENAME COLUMN) only the new names are active.

    An old name left active describes a table that no longer exists: DROP of the renamed
    table then retires the new name only, and the old one stays active for ever.
    """
    old, new = scratch.unique("before_rename"), scratch.unique("after_rename")
    conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, old_col int)").format(scratch.table(old))
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME COLUMN old_col TO new_col").format(scratch.table(old))
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(scratch.table(old), sql.Identifier(new))
    )
    active = _active(conn, target, scratch.schema)
    stale = [
        (kind, name)
        for kind, name in active
        if name == old or name.startswith(old + ".") or name.endswith(".old_col")
    ]
    assert ("TABLE", new) in active, (
        f"after ALTER TABLE {scratch.dotted(old)} RENAME TO {new}, no active TABLE row names"
        f" {scratch.dotted(new)} (active: {active[:6]})"
    )
    assert not stale, (
        f"after ALTER TABLE {scratch.dotted(old)} RENAME TO {new} (and RENAME COLUMN old_col TO"
        f" new_col) these rows stay active under the old names: {stale[:6]}"
    )


@pytest.mark.property
@pytest.mark.requires("objects.is_active", "objects.schema_name", "objects.object_name")
def test_functions_recorded_by_name(conn: Conn, scratch: Scratch, target: TargetInfo) -> None:
    """A FUNCTION row that pgGit records for CREATE FUNCTION names the function.

    Recording its OID instead (a number) says nothing once the function is dropped and made
    again, nor in a dump restored elsewhere; two overloads must stay two rows.
    """
    name = scratch.unique("tracked_fn")
    for args in ("integer", "text"):
        conn.execute(
            sql.SQL("CREATE FUNCTION {}(p {}) RETURNS int LANGUAGE sql AS 'SELECT 1'").format(
                scratch.table(name), sql.SQL(args)
            )
        )
    rows = [n for kind, n in _active(conn, target, scratch.schema) if kind == "FUNCTION"]
    if not rows:
        pytest.skip("installed pgGit records no FUNCTION objects")
    named = [n for n in rows if n == name or n.startswith(name + "(")]
    assert len(named) == 2, (
        f"CREATE FUNCTION {scratch.dotted(name)}(integer) and (text) are recorded as"
        f" {rows[:4]}: not by name and arguments"
        + (" (those are OIDs)" if all(n.isdigit() for n in rows) else "")
    )


@pytest.mark.property
@pytest.mark.requires("objects.is_active", "objects.schema_name", "objects.object_name")
def test_longest_identifiers_tracked_exactly(
    conn: Conn, scratch: Scratch, target: TargetInfo
) -> None:
    """A table and column named with 63 bytes (PostgreSQL's limit) are tracked by exact name."""
    table = scratch.unique("t" * MAX_IDENTIFIER)
    table = table + "x" * (MAX_IDENTIFIER - len(table.encode()))
    column = "c" * MAX_IDENTIFIER
    conn.execute(
        sql.SQL("CREATE TABLE {} ({} int)").format(scratch.table(table), sql.Identifier(column))
    )
    active = _active(conn, target, scratch.schema)
    assert ("TABLE", table) in active, (
        f"a table named with {MAX_IDENTIFIER} bytes is not tracked by its name: {active[:4]}"
    )
    columns = [n for kind, n in active if kind == "COLUMN"]
    if columns:
        assert f"{table}.{column}" in columns, f"its 63-byte column is recorded as {columns[:3]}"


@pytest.mark.transaction
@pytest.mark.destructive
@pytest.mark.requires("commit_changes", "commits")
def test_lock_timeout_reaches_client_unchanged(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, target: TargetInfo
) -> None:
    """A lock timeout inside commit_changes reaches the client as SQLSTATE 55P03.

    Clients and poolers retry on 55P03, 40001 and 40P01: a pgGit function that catches them
    and raises something else (P0001) turns a retryable hiccup into a hard failure. The check
    holds pggit.commits locked for under a second (it disturbs other sessions: destructive).
    """
    branch = pggit.branch_name(scratch.branch("locked"))
    pggit.commit(conn, branch, "before the lock")
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with connect(target.dsn, autocommit=False) as holder:
            holder.execute("LOCK TABLE pggit.commits IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(10)
            holder.rollback()

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert locked.wait(10), "could not lock pggit.commits for the check"
        conn.execute("SET lock_timeout = '300ms'")
        try:
            pggit.commit(conn, branch, "meets the lock")
        except psycopg.Error as exc:
            if exc.sqlstate != "55P03" and "lock timeout" not in str(exc):
                raise  # commit_changes broke for another reason: the check could not run
            assert exc.sqlstate == "55P03", (
                f"a lock timeout inside commit_changes reaches the client as SQLSTATE"
                f" {exc.sqlstate}, not 55P03 ({' '.join(str(exc).split())[:160]}):"
                " clients cannot tell it is retryable"
            )
        else:
            pytest.fail("commit_changes succeeded while pggit.commits was locked")
    finally:
        release.set()
        worker.join(15)
        conn.execute("RESET lock_timeout")


@pytest.mark.transaction
@pytest.mark.requires("commit_changes", "branches")
def test_commit_to_missing_branch_is_a_clear_error(
    conn: Conn, scratch: Scratch, pggit: PgGitApi
) -> None:
    """commit_changes on a branch that does not exist names the branch in its error, or
    creates it (the embedded core's documented behaviour); never a bare NOT NULL violation."""
    branch = pggit.branch_name(scratch.branch("missing"))
    try:
        pggit.commit(conn, branch, "to a branch nobody made")
    except psycopg.Error as exc:
        message = " ".join(str(exc).split())
        if branch in message:
            return
        # A bare integrity error is pgGit tripping over the missing row; anything else means
        # the call broke for another reason (the check could not run: an error, not a fail).
        if exc.sqlstate not in ("23502", "23503"):
            raise
        pytest.fail(
            f"commit to the missing branch {branch!r} fails with a bare constraint violation"
            f" (SQLSTATE {exc.sqlstate}) that does not name it: {message[:160]}"
        )
    row = conn.execute("SELECT 1 FROM pggit.branches WHERE name = %s", (branch,)).fetchone()
    assert row is not None, f"commit to {branch!r} succeeded but no such branch exists"


@pytest.mark.property
@pytest.mark.requires("objects.is_active", "objects.schema_name", "objects.object_name")
def test_ddl_tracking_logs_no_errors(
    conn: Conn, scratch: Scratch, target: TargetInfo
) -> None:
    """Ordinary DDL (a table with a TOASTed column, an index, ALTER, DROP) is recorded, and
    recording it makes pgGit log no error about itself (``pggit.system_events``, where a pgGit
    keeps one).

    A tracking function that catches its own failure and logs it (``tracking_error``) loses
    the record silently: the DDL succeeds and nobody is told.
    """
    log = target.has("system_events.event_type")
    count_errors = "SELECT count(*) FROM pggit.system_events WHERE event_type ILIKE '%error%'"
    before = conn.execute(count_errors).fetchone() if log else (0,)
    name = scratch.unique("logged")
    table = scratch.table(name)
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text)").format(table))
    conn.execute(sql.SQL("CREATE INDEX ON {} (body)").format(table))
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(table))
    assert ("TABLE", name) in _active(conn, target, scratch.schema), (
        f"CREATE TABLE {scratch.dotted(name)} is not recorded"
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(table))
    assert ("TABLE", name) not in _active(conn, target, scratch.schema), (
        f"DROP TABLE {scratch.dotted(name)} is not recorded: the table stays active"
    )
    if not log:
        return
    after = conn.execute(count_errors).fetchone()
    assert before is not None and after is not None
    new = int(after[0]) - int(before[0])
    if new > 0:
        rows = conn.execute(
            "SELECT event_type || ': ' || row_to_json(e)::text FROM pggit.system_events e"
            " WHERE event_type ILIKE '%%error%%' ORDER BY e.created_at DESC LIMIT %s",
            (min(new, 3),),
        ).fetchall()
        pytest.fail(
            f"recording CREATE/ALTER/DROP of {scratch.dotted(name)} made pgGit log {new}"
            f" error(s) about its own tracking in pggit.system_events: "
            + "; ".join(str(r[0])[:240] for r in rows)
        )
