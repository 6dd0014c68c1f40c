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
            rows = conn.execute(health_sql(conn)).fetchall()
    except ValueError as exc:  # a health_check() whose rows we cannot read
        return Probe(reachable=True, healthy=False, detail=str(exc))
    except psycopg.errors.UndefinedFunction as exc:
        return Probe(reachable=True, healthy=False, detail=f"pgGit missing: {exc}".strip())
    except psycopg.errors.InvalidSchemaName as exc:
        return Probe(reachable=True, healthy=False, detail=f"pgGit missing: {exc}".strip())
    except psycopg.errors.QueryCanceled as exc:
        return Probe(reachable=True, healthy=False, detail=f"health_check too slow: {exc}".strip())
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not isinstance(exc, psycopg.OperationalError):  # connected: health_check() failed
            return Probe(reachable=True, healthy=False, detail=f"health_check() fails: {first}")
        return Probe(reachable=False, healthy=False, detail=first)
    components = {str(component): str(status) for component, status, _ in rows}
    critical = [f"{component}: {details}" for component, status, details in rows
                if status == "critical"]
    warnings = [f"{component}: {details}" for component, status, details in rows
                if status == "warning"]
    detail = "; ".join(critical) or ("; ".join(warnings) if warnings else "healthy")
    return Probe(reachable=True, healthy=not critical and bool(rows), detail=detail,
                 components=components)
