"""The user's own invariants (``spec.verification.assertions``): read-only queries, one value each.

Called by the lifecycle (:mod:`pggit_chaos.engine.lifecycle`) at the steady state, before the
fault, and again after recovery; the same on every substrate (the runner Job runs it in a
cluster). Each query runs alone in a ``READ ONLY`` transaction with ``SET LOCAL``-style
``statement_timeout`` and is sent as one prepared statement, so it cannot end the transaction
and run a second statement outside it; a write is refused by the server. The single value is
compared, as PostgreSQL's own text output, with ``expect``. A query that errors, or returns
anything but one row of one column, is *could not evaluate* (never a failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

from pggit_chaos.engine.journal import AFTER_RECOVERY, STEADY_STATE, AssertionSummary

if TYPE_CHECKING:
    from pggit_chaos.spec.model import Assertion

__all__ = ["AFTER_RECOVERY", "STEADY_STATE", "evaluate", "evaluate_one"]

#: The ``application_name`` of the assertions' connection (visible in pg_stat_activity).
APPLICATION_NAME = "pggit-chaos-assertion"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def evaluate_one(conn: psycopg.Connection[tuple[object, ...]], assertion: Assertion,
                 phase: str) -> AssertionSummary:
    """Evaluate ``assertion`` on ``conn`` (not in a transaction) in a read-only transaction."""

    def unsure(message: str) -> AssertionSummary:
        return AssertionSummary(name=assertion.name, phase=phase, outcome="error",
                                expect=assertion.expect, message=message)

    timeout_ms = max(1, round(assertion.timeout.seconds * 1000))
    conn.read_only = True
    try:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)",
                           (f"{timeout_ms}ms",))
            # prepare=True: the extended protocol, which takes exactly one statement, and no
            # parameters, so a '%' in the query is the query's own.
            cursor.execute(assertion.sql.encode(), prepare=True)
            result = cursor.pgresult
            if cursor.description is None or result is None:
                return unsure("the query returned no rows (it is not a query)")
            rows, columns = result.ntuples, result.nfields
            if rows != 1 or columns != 1:
                return unsure(f"the query returned {rows} row(s) of {columns} column(s), "
                              "not one value")
            raw = result.get_value(0, 0)
    except psycopg.Error as exc:
        return unsure(_first_line(exc))
    finally:
        if not (conn.closed or conn.broken):
            conn.read_only = False
    got = None if raw is None else bytes(raw).decode("utf-8", errors="replace")
    if got == assertion.expect:
        return AssertionSummary(name=assertion.name, phase=phase, outcome="passed",
                                got=got, expect=assertion.expect)
    shown = "NULL" if got is None else repr(got)
    return AssertionSummary(
        name=assertion.name, phase=phase, outcome="failed", got=got, expect=assertion.expect,
        message=f"got {shown}, expected {assertion.expect!r}")


def evaluate(dsn: str, assertions: Sequence[Assertion], phase: str,
             connect_timeout: float = 10.0) -> list[AssertionSummary]:
    """Evaluate every assertion at ``phase``, over one connection to ``dsn`` while it lasts.

    A query that ends its own connection does not stop the next (it gets a new one); a
    connection that cannot be made makes that assertion *could not evaluate*.
    """
    results: list[AssertionSummary] = []
    conn: psycopg.Connection[tuple[object, ...]] | None = None
    try:
        for assertion in assertions:
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                try:
                    # autocommit: conn.transaction() then issues BEGIN READ ONLY itself.
                    conn = psycopg.connect(dsn, connect_timeout=max(2, round(connect_timeout)),
                                           application_name=APPLICATION_NAME, autocommit=True)
                except psycopg.Error as exc:
                    conn = None
                    results.append(AssertionSummary(
                        name=assertion.name, phase=phase, outcome="error",
                        expect=assertion.expect,
                        message=f"no connection ({_first_line(exc)})"))
                    continue
            results.append(evaluate_one(conn, assertion, phase))
    finally:
        if conn is not None:
            conn.close()
    return results
