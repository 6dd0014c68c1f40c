"""What a run leaves in a user's database, and how it goes: the run lease and the sweeps.

Called by the local runner (``pggit-chaos run --dsn``: a lease for the run's length, then the
workload's removal once the verdict is recorded unless ``--keep-evidence``) and by
``pggit-chaos cleanup --dsn`` (what killed or kept runs left). A workload names everything it
creates ``chaos_run_<run id>`` (its schema, its branch); the checks ``chaos_check_<run id>_...``.
Removal goes through :mod:`pggit_chaos.sweep`, so it works on any pgGit's shape.

A run is alive while its **lease** — one session named ``pggit-chaos-probe/run/<run id>`` — is
open: the sweeps never touch a live run's areas. (The ``pggit-chaos-probe`` prefix is what the
connection-kill fault spares.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from pggit_chaos import sweep
from pggit_chaos.errors import TargetUnavailable
from pggit_chaos.pggit import describe_target, psycopg_connect

#: Prefix of the workload's schema and branch (``engine.workload.RUN_PREFIX``).
RUN_PREFIX = "chaos_run_"
#: application_name of a run's lease; connection-kill spares ``pggit-chaos-probe*`` sessions.
LEASE_PREFIX = "pggit-chaos-probe/run/"


def _connect(dsn: str, application_name: str = "pggit-chaos-cleanup") -> psycopg.Connection[Any]:
    try:
        # The runner's first connection (its lease): a resolver with no answer yet is waited
        # for, as every first connection to the target is (pggit.psycopg_connect).
        return psycopg_connect(
            dsn, autocommit=True, connect_timeout=10, application_name=application_name
        )
    except psycopg.Error as exc:
        raise TargetUnavailable(
            f"cannot connect to {describe_target(dsn)}: {' '.join(str(exc).split())}"
        ) from None


@contextlib.contextmanager
def lease(dsn: str, run_id: str) -> Iterator[None]:
    """Hold the run's lease session for the block (the sweeps leave a live run alone)."""
    conn = _connect(dsn, LEASE_PREFIX + run_id)
    try:
        yield
    finally:
        conn.close()


def remove_run(dsn: str, run_id: str) -> sweep.Footprint:
    """Remove the workload of run ``run_id``: its schema, branch, commits and pgGit rows."""
    with _connect(dsn) as conn:
        return sweep.purge(conn, RUN_PREFIX + run_id)


def sweep_target(dsn: str, *, force: bool = False) -> list[str]:
    """Remove what dead runs left in ``dsn``; one line per run removed or skipped.

    Workload areas ``chaos_run_<id>`` whose run holds no lease (``force``: those too) and
    scratch areas of checks runs without a live session.
    """

    lines: list[str] = []
    with _connect(dsn) as conn:
        live = sweep.live_sessions(conn, LEASE_PREFIX)
        for name in sorted(sweep.prefixes_in(conn, RUN_PREFIX)):
            run_id = name[len(RUN_PREFIX) :]
            if run_id in live and not force:
                lines.append(f"skipped {name}: its run is still going (--force removes it)")
                continue
            gone = sweep.purge(conn, name)
            lines.append(f"removed {name}: {gone.describe()}")
        lines += [f"removed {line}" for line in sweep_dead_runs(conn)]
    return lines


def _run_of(token: str) -> str:
    """The run id in a scratch name ``chaos_check_<run>_<rand>...`` ('' for older names)."""
    from pggit_chaos.checks.names import SCRATCH_PREFIX

    rest = token[len(SCRATCH_PREFIX) :]
    run, sep, _ = rest.partition("_")
    return run if sep else ""


def sweep_dead_runs(conn: psycopg.Connection[Any]) -> list[str]:
    """Remove what checks runs that no longer have a session left behind; names what went.

    A run holds a session (``application_name`` ``pggit-chaos-checks/<run>``) from start to
    end, so a scratch name whose run has none is a killed run's leftover. Scratch names of
    older releases carry no run id: they are swept when no checks run is alive at all.
    """
    from pggit_chaos.checks.names import APPLICATION_NAME, SCRATCH_PREFIX, run_prefix

    live = sweep.live_sessions(conn, APPLICATION_NAME + "/")
    removed: list[str] = []
    prefixes: set[str] = set()
    for token in sweep.prefixes_in(conn, SCRATCH_PREFIX):
        run = _run_of(token)
        if run and run not in live:
            prefixes.add(run_prefix(run))
        elif not run and not live:
            prefixes.add(token)
    for prefix in sorted(prefixes):
        gone = sweep.purge(conn, prefix)
        if gone.total or gone.schemas or gone.roles:
            removed.append(f"{prefix}: {gone.describe()}")
    return removed
