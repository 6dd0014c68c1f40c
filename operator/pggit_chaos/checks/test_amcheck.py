"""Corruption checks with ``amcheck``: pgGit's own indexes and tables are physically sound.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (category ``corruption``).
They verify what lives in schema ``pggit`` only — never the user's own relations — with
PostgreSQL's amcheck extension, used where it is installed (see
:mod:`pggit_chaos.checks.amcheck`; they skip, saying what to run, where it is not):

- ``bt_index_check(index, heapallindexed => true)`` on every btree index of pgGit: the keys
  of each page in order, sibling links sane, and every heap tuple present in the index. It
  takes an AccessShareLock (as a SELECT does): safe in a user's database.
- ``bt_index_parent_check(index, heapallindexed => true)`` additionally checks the parent /
  child relationships, but takes a ShareLock on the table (it blocks writers to pgGit's
  tables while it runs) and cannot run on a hot standby: marked ``destructive``, so it runs
  only with ``--destructive``.
- ``verify_heapam(table, check_toast => true)`` (PostgreSQL 14 and later) on every table of
  pgGit: tuple headers, visibility information and TOAST pointers.

A page that cannot even be read (a data checksum failure, a broken page header) makes amcheck
raise an error of class XX (data/index corrupted): that is a fail naming the relation, not a
check that could not run. So is a backend that crashes while amcheck reads one relation (bytes
it cannot even parse): the check names that relation, waits for the server to recover and
checks the rest on a new connection. Connections are read-only, as for the other corruption checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos.checks.amcheck import Amcheck, inspect_amcheck
from pggit_chaos.checks.support import TargetInfo, connect

pytestmark = pytest.mark.corruption

Conn = psycopg.Connection[Any]

#: SQLSTATE class of corruption reports (XX001 data_corrupted, XX002 index_corrupted).
CORRUPTION_CLASS = "XX"


def _relations(conn: Conn, kinds: str, access_method: str | None = None) -> list[str]:
    """``pggit.<name>`` of pgGit's relations of ``kinds`` (relkind letters), by name.

    Only valid, ready indexes (a failed CREATE INDEX CONCURRENTLY leaves an invalid one
    that amcheck refuses) and no other session's temporary relations.
    """
    query = (
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_am am ON am.oid = c.relam"
        " LEFT JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE n.nspname = 'pggit' AND c.relkind = ANY(%s) AND c.relpersistence <> 't'"
        " AND (%s::text IS NULL OR am.amname = %s)"
        " AND (i.indexrelid IS NULL OR (i.indisvalid AND i.indisready))"
        " ORDER BY c.relname"
    )
    return [str(r[0]) for r in conn.execute(query, (list(kinds), access_method, access_method))]


def _describe(error: psycopg.Error) -> str:
    """amcheck's message with its DETAIL, on one line."""
    parts = [error.diag.message_primary or str(error)]
    if error.diag.message_detail:
        parts.append(error.diag.message_detail)
    return " ".join(" ".join(parts).split())


def _corruption(error: psycopg.Error) -> bool:
    return (error.sqlstate or "").startswith(CORRUPTION_CLASS)


@pytest.fixture
def amcheck(readonly_conn: Conn) -> Amcheck:
    """The installed amcheck (the check skips with the reason when it cannot be used)."""
    return inspect_amcheck(readonly_conn)


def _require(amcheck: Amcheck, function: str) -> None:
    reason = amcheck.unusable(function)
    if reason is not None:
        pytest.skip(reason)


#: How long a check waits for the server to accept connections again after amcheck crashed it.
CRASH_RECOVERY_WAIT = 60.0


def _crashed(conn: Conn, error: psycopg.Error) -> bool:
    """The backend running our query died (the server closed the connection unexpectedly).

    An administrator's pg_terminate_backend (57P01) or a crash of ANOTHER backend (57P02)
    come with a SQLSTATE; our own backend dying mid-query comes without one.
    """
    return isinstance(error, psycopg.OperationalError) and not error.sqlstate and conn.closed


def _reconnect(dsn: str) -> Conn | None:
    """A new read-only connection once the server has recovered; None if it does not."""
    deadline = time.monotonic() + CRASH_RECOVERY_WAIT
    while True:
        try:
            conn = connect(dsn)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)
            continue
        conn.execute("SET default_transaction_read_only = on")
        return conn


def _crash_failure(relation: str, what: str, error: psycopg.Error) -> str:
    first = (str(error).strip().splitlines() or ["connection lost"])[0]
    return (f"{relation}: the server process crashed while {what} checked it ({first}):"
            " its pages hold bytes amcheck cannot even parse")


def _verify_each(conn: Conn, dsn: str, relations: list[str], what: str,
                 check: Callable[[Conn, str], list[str]]) -> list[str]:
    """``check(conn, relation)`` for each relation; corruption errors and crashes are failures.

    A crash of the backend while one relation is checked is evidence about that relation: it
    is a failure naming it, and the remaining relations are checked on a new connection once
    the server has recovered (those that cannot be are named as unchecked).
    """
    failures: list[str] = []
    opened: list[Conn] = []
    try:
        for position, relation in enumerate(relations):
            try:
                failures.extend(check(conn, relation))
            except psycopg.Error as exc:
                if _crashed(conn, exc):
                    failures.append(_crash_failure(relation, what, exc))
                    fresh = _reconnect(dsn)
                    if fresh is None:
                        rest = relations[position + 1:]
                        if rest:
                            failures.append(f"not checked (the server did not come back): "
                                            f"{', '.join(rest)}")
                        break
                    opened.append(fresh)
                    conn = fresh
                    continue
                if not _corruption(exc):
                    raise  # could not run (a timeout, a lock): an error, not a verdict
                failures.append(f"{relation}: {_describe(exc)}")
    finally:
        for extra in opened:
            extra.close()
    return failures


def _verify_btrees(conn: Conn, dsn: str, amcheck: Amcheck, function: str) -> list[str]:
    """Run ``function(index, heapallindexed => true)`` on each pgGit btree; the failures."""
    indexes = _relations(conn, "i", "btree")
    assert indexes, "schema pggit has no btree index: pgGit's tables lost their keys"
    query = sql.SQL("SELECT {}(%s::regclass, heapallindexed => true)").format(
        amcheck.call(function)
    )

    def one(connection: Conn, index: str) -> list[str]:
        connection.execute(query, (index,))
        return []

    return _verify_each(conn, dsn, indexes, function, one)


def test_pggit_btree_indexes_pass_amcheck(readonly_conn: Conn, dsn: str, amcheck: Amcheck) -> None:
    """Every btree index of pgGit passes ``bt_index_check(index, heapallindexed => true)``."""
    _require(amcheck, "bt_index_check")
    failures = _verify_btrees(readonly_conn, dsn, amcheck, "bt_index_check")
    assert not failures, (
        f"{len(failures)} pgGit index(es) fail amcheck bt_index_check: " + "; ".join(failures)
    )


@pytest.mark.destructive
def test_pggit_btree_parents_pass_amcheck(
    readonly_conn: Conn, dsn: str, amcheck: Amcheck
) -> None:
    """Every btree index of pgGit passes ``bt_index_parent_check`` (ShareLock: destructive).

    It blocks writes to the index's table while it runs, hence only with ``--destructive``.
    """
    _require(amcheck, "bt_index_parent_check")
    in_recovery = readonly_conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if in_recovery and in_recovery[0]:
        pytest.skip("bt_index_parent_check cannot run on a hot standby (it takes a ShareLock)")
    failures = _verify_btrees(readonly_conn, dsn, amcheck, "bt_index_parent_check")
    assert not failures, (
        f"{len(failures)} pgGit index(es) fail amcheck bt_index_parent_check: "
        + "; ".join(failures)
    )


def test_pggit_tables_pass_verify_heapam(
    readonly_conn: Conn, dsn: str, amcheck: Amcheck, target: TargetInfo
) -> None:
    """Every table of pgGit passes ``verify_heapam(table, check_toast => true)`` (PG 14+)."""
    if 0 < target.server_version < 140000:
        pytest.skip(f"verify_heapam needs PostgreSQL 14 or later (the server is "
                    f"{target.server_version // 10000})")
    _require(amcheck, "verify_heapam")
    query = sql.SQL(
        "SELECT blkno, offnum, attnum, msg FROM {}(%s::regclass, check_toast => true)"
    ).format(amcheck.call("verify_heapam"))

    def one(connection: Conn, table: str) -> list[str]:
        rows = connection.execute(query, (table,)).fetchall()
        if not rows:
            return []
        shown = "; ".join(
            f"block {b}, item {o}" + (f", attribute {a}" if a is not None else "") + f": {m}"
            for b, o, a, m in rows[:3]
        )
        more = f" (and {len(rows) - 3} more)" if len(rows) > 3 else ""
        return [f"{table}: {len(rows)} corrupt tuple(s): {shown}{more}"]

    failures = _verify_each(readonly_conn, dsn, _relations(readonly_conn, "rm"), "verify_heapam",
                            one)
    assert not failures, (
        f"{len(failures)} pgGit table(s) fail amcheck verify_heapam: " + "; ".join(failures)
    )
