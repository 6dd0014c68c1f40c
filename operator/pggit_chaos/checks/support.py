"""Shared machinery of the checks suite: target connection, capabilities, scratch areas, cleanup.

Used by the suite's conftest and check modules (inside the pytest subprocess) and by the runner
(which removes scratch areas a killed run left behind). Nothing here touches a user's objects:
scratch areas are a schema named ``chaos_check_<random>`` plus branches whose names start with
the same token, and cleanup removes exactly those and the pgGit rows they caused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from hypothesis import HealthCheck, Phase, settings
from psycopg import sql

from pggit_chaos import sweep
from pggit_chaos.checks.names import (
    ENV_PROFILE,
    LOCK_TIMEOUT_MS,
    PROFILES,
    SCRATCH_PREFIX,
    STATEMENT_TIMEOUT_MS,
    application_name,
    run_prefix,
)
from pggit_chaos.checks.strategies import fit_identifier
from pggit_chaos.pggit import Capabilities, capabilities, psycopg_connect
from pggit_chaos.sweep import Footprint, purge

T = TypeVar("T")

_SUPPRESSED = [
    HealthCheck.function_scoped_fixture,  # scratch areas are per check; examples use unique names
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
]
#: max_examples of each profile (ci: the whole suite in ~15 s on 2 cores).
PROFILE_EXAMPLES = {"ci": 20, "dev": 50, "thorough": 300}
#: How much heavier dev/thorough make the loops of the non-hypothesis checks.
PROFILE_SCALE = {"ci": 1, "dev": 3, "thorough": 10}
#: Shrinking budget per failing check (seconds, shrink steps): every step re-runs SQL, so the
#: ci profile shrinks briefly (the example is still shrunk, just less far); thorough as hypothesis.
PROFILE_SHRINK = {"ci": (4, 60), "dev": (30, 300), "thorough": (300, 500)}


def _limit_shrinking(profile: str) -> None:
    """Cap hypothesis' shrinking time/steps for ``profile`` (engine constants; best effort)."""
    seconds, steps = PROFILE_SHRINK[profile]
    with contextlib.suppress(ImportError):
        from hypothesis.internal.conjecture import engine

        if hasattr(engine, "MAX_SHRINKING_SECONDS"):
            engine.MAX_SHRINKING_SECONDS = seconds
        if hasattr(engine, "MAX_SHRINKS"):
            engine.MAX_SHRINKS = steps


def load_profile() -> str:
    """Register the ci/dev/thorough profiles and load the one ``HYPOTHESIS_PROFILE`` names."""
    for name, examples in PROFILE_EXAMPLES.items():
        phases = [p for p in Phase if not (name == "ci" and p is Phase.explain)]
        settings.register_profile(
            name,
            max_examples=examples,
            phases=phases,
            deadline=None,
            database=None,
            print_blob=True,
            derandomize=False,
            suppress_health_check=_SUPPRESSED,
        )
    profile = os.environ.get(ENV_PROFILE, "ci")
    if profile not in PROFILES:
        raise ValueError(f"{ENV_PROFILE}={profile!r}: choose one of {', '.join(PROFILES)}")
    settings.load_profile(profile)
    _limit_shrinking(profile)
    return profile


def scale() -> int:
    """The loop multiplier of the current profile (1 at ci)."""
    return PROFILE_SCALE.get(os.environ.get(ENV_PROFILE, "ci"), 1)


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection with statement and lock timeouts as hang guards."""
    conn = psycopg_connect(  # a resolver with no answer yet is waited for
        dsn, autocommit=True, connect_timeout=10, application_name=application_name()
    )
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
        (str(STATEMENT_TIMEOUT_MS), str(LOCK_TIMEOUT_MS)),
    )
    conn.autocommit = autocommit
    return conn


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (for pgGit functions taking a table name as text)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TargetInfo:
    """The database under check: what its pgGit offers, and our privileges there."""

    dsn: str
    caps: Capabilities
    #: Event trigger name -> pg_event_trigger.evtenabled ('O', 'D', 'R', 'A').
    trigger_modes: dict[str, str] = field(default_factory=dict)
    superuser: bool = False
    server_version: int = 0

    @property
    def installed(self) -> bool:
        return self.caps.installed

    def has(self, name: str) -> bool:
        return self.caps.missing(name) is None

    def missing(self, names: Sequence[str]) -> list[str]:
        """One reason per missing function/table/column/event trigger."""
        return [reason for name in names if (reason := self.caps.missing(name)) is not None]


def inspect_target(conn: psycopg.Connection[Any], dsn: str) -> TargetInfo:
    """Read the catalog once: the pgGit capabilities, event trigger modes, superuser or not."""
    caps = capabilities(conn)
    modes = {
        str(name): str(flag)
        for name, flag in conn.execute("SELECT evtname, evtenabled FROM pg_event_trigger")
    }
    row = conn.execute(
        "SELECT rolsuper, current_setting('server_version_num')::int FROM pg_roles"
        " WHERE rolname = current_user"
    ).fetchone()
    superuser, version = (bool(row[0]), int(row[1])) if row else (False, 0)
    return TargetInfo(dsn, caps, modes, superuser, version)


class Scratch:
    """One check's scratch area: a schema and a branch-name prefix, both named by ``token``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._counter = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Scratch({self.token!r})"

    @classmethod
    def new(cls) -> Scratch:
        return cls(f"{run_prefix()}{secrets.token_hex(3)}")

    @property
    def schema(self) -> str:
        return self.token

    @property
    def branch_prefix(self) -> str:
        return self.token + "_"

    def branch(self, label: str = "b") -> str:
        """A branch name carrying this scratch area's prefix (so cleanup finds it)."""
        return f"{self.branch_prefix}{label}"[:255]

    def unique(self, name: str) -> str:
        """``name`` made unique in this scratch area, still within 63 bytes."""
        with self._lock:
            self._counter += 1
            return fit_identifier(name, f"_{self._counter}")

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def qualified(self, name: str) -> str:
        """``"schema"."name"`` as text, for pgGit functions that take a table name."""
        return f"{quote_ident(self.schema)}.{quote_ident(name)}"

    def dotted(self, name: str) -> str:
        """``schema.name`` unquoted, the form of ``pggit.objects.full_name``."""
        return f"{self.schema}.{name}"


def cleanup_scratch(conn: psycopg.Connection[Any], token: str) -> Footprint:
    """Drop the scratch schema and delete every pgGit row it caused, in one transaction.

    What pgGit recorded about the scratch area, in whatever tables (see :mod:`pggit_chaos.sweep`):
    rows naming the token, and rows hanging off them (history of its objects, commits on its
    branches, objects copied into them).
    """
    if not token.startswith(SCRATCH_PREFIX) or len(token) <= len(SCRATCH_PREFIX):
        raise ValueError(f"refusing to clean up {token!r}: not a scratch token")
    return purge(conn, token)


@dataclass
class WorkerResult:
    """What one concurrent worker returned or raised."""

    index: int
    value: Any = None
    error: BaseException | None = None


def run_workers(
    count: int, work: Callable[[int, threading.Barrier], T], timeout: float = 60.0
) -> list[WorkerResult]:
    """Run ``work(i, barrier)`` in ``count`` threads at once; collect values and errors."""
    barrier = threading.Barrier(count, timeout=timeout)
    results = [WorkerResult(i) for i in range(count)]

    def one(i: int) -> None:
        try:
            results[i].value = work(i, barrier)
        except BaseException as exc:
            results[i].error = exc
            barrier.abort()

    with ThreadPoolExecutor(max_workers=count) as pool:
        for future in [pool.submit(one, i) for i in range(count)]:
            future.result(timeout=timeout)
    return results


def footprint(conn: psycopg.Connection[Any], scratch: Scratch) -> dict[str, int]:
    """Rows, per pggit table, that a scratch area has caused (to prove a rollback left none)."""
    return sweep.footprint(conn, scratch.token).nonzero()
