"""The health probe of a database with pgGit: connect, run ``pggit.health_check()``, never raise.

Shared by the substrates (local and Kubernetes): both probe the database the workload uses
through its DSN, with a short timeout, from a thread (a frozen or partitioned server can leave a
connection waiting forever, and the engine must get an answer after ``timeout``).
"""

from __future__ import annotations

import math
import threading

import psycopg

from pggit_chaos.engine.substrate import Probe
from pggit_chaos.faults.sql import PROBE_APPLICATION
from pggit_chaos.pggit import health_sql

__all__ = ["probe_database"]


def probe_database(dsn: str, timeout: float) -> Probe:
    """Probe ``dsn`` within ``timeout`` seconds (plus half a second of slack)."""
    result: list[Probe] = []
    worker = threading.Thread(target=lambda: result.append(_probe(dsn, timeout)),
                              name="pggit-chaos-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not result:
        return Probe(reachable=False, healthy=False, detail=f"no answer within {timeout:g}s")
    return result[0]


def _probe(dsn: str, timeout: float) -> Probe:
    milliseconds = max(1, int(timeout * 1000))
    try:
        with psycopg.connect(
            dsn, connect_timeout=max(2, math.ceil(timeout)), autocommit=True,
            application_name=PROBE_APPLICATION, tcp_user_timeout=milliseconds,
            options=f"-c statement_timeout={milliseconds}",
        ) as conn:
            return _probe_pggit(conn)
    except psycopg.errors.QueryCanceled as exc:
        return Probe(reachable=True, healthy=False,
                     detail=f"health_check too slow: {_first_line(exc)}")
    except psycopg.Error as exc:
        if not isinstance(exc, psycopg.OperationalError):  # connected: a query failed
            return Probe(reachable=True, healthy=False, detail=f"probe fails: {_first_line(exc)}")
        return Probe(reachable=False, healthy=False, detail=_first_line(exc))


#: SQLSTATE classes a fault causes (connection, resources, locks, cancels, rollbacks, system):
#: a health_check() failing with one of these is unhealthy now, not broken.
_TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58")


def _first_line(exc: BaseException) -> str:
    """The primary message only: no ``LINE 1: <query>`` context, no ``^`` marker, no HINT."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()


def _probe_pggit(conn: psycopg.Connection) -> Probe:
    found = conn.execute(
        "SELECT to_regnamespace('pggit') IS NOT NULL,"
        " to_regprocedure('pggit.health_check()') IS NOT NULL"
    ).fetchone()
    if found is None or not found[0]:
        return Probe(reachable=True, healthy=False, detail="pgGit missing: no schema pggit")
    if not found[1]:
        return _fallback(conn, "pgGit has no health_check()")
    try:
        query = health_sql(conn)
    except ValueError as exc:  # a health_check() whose rows we cannot read
        return _fallback(conn, f"pggit.{exc}", broken=True)
    try:
        rows = conn.execute(query).fetchall()
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        if (exc.sqlstate or "")[:2] in _TRANSIENT_CLASSES:
            raise
        return _fallback(conn, f"pggit.health_check() fails: {_first_line(exc)}", broken=True)
    components = {str(component): str(status) for component, status, _ in rows}
    critical = [f"{component}: {details}" for component, status, details in rows
                if status == "critical"]
    warnings = [f"{component}: {details}" for component, status, details in rows
                if status == "warning"]
    detail = "; ".join(critical) or ("; ".join(warnings) if warnings else "healthy")
    return Probe(reachable=True, healthy=not critical and bool(rows), detail=detail,
                 components=components)


def _fallback(conn: psycopg.Connection, why: str, *, broken: bool = False) -> Probe:
    """pgGit judged by what every pgGit has: ``pggit.objects`` and ``pggit.history`` readable,
    and its event triggers (those calling a function of schema pggit) present and enabled."""
    components: dict[str, str] = {}
    problems: list[str] = []
    for table in ("objects", "history"):
        readable = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"pggit.{table}",)
        ).fetchone()
        if readable != (True,):
            components[table] = "critical"
            problems.append(f"pgGit has no table pggit.{table}")
            continue
        conn.execute(f"SELECT 1 FROM pggit.{table} LIMIT 1")  # noqa: S608 - fixed names
        components[table] = "healthy"
    triggers = conn.execute(
        "SELECT e.evtname, e.evtenabled <> 'D' FROM pg_catalog.pg_event_trigger e"
        " JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid"
        " WHERE p.pronamespace = to_regnamespace('pggit') ORDER BY 1"
    ).fetchall()
    disabled = [str(name) for name, enabled in triggers if not enabled]
    if not triggers:
        problems.append("pgGit has no event trigger: DDL is not tracked")
    elif disabled:
        problems.append(f"event triggers disabled: {', '.join(disabled)}")
    components["event_triggers"] = "critical" if not triggers or disabled else "healthy"
    basis = "steady state from pgGit's tables and event triggers"
    detail = f"{'; '.join(problems) or 'healthy'} ({why}: {basis})"
    return Probe(reachable=True, healthy=not problems, detail=detail, components=components,
                 finding=why if broken else "")
