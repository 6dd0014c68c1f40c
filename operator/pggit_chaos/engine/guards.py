"""Guards (``spec.guards``): blast-radius limits the lifecycle checks while the fault holds.

Called by :mod:`pggit_chaos.engine.lifecycle` every :data:`CHECK_INTERVAL` seconds of the hold.
``maxErrorRate`` reads the workload's history (failed and indeterminate operations among those
completed in the sliding window, once there are ``minSamples`` of them); ``maxLostWrites``
asks the database, whenever it answers, which of the workload's acknowledged pgGit commits are
missing from ``pggit.commits``. A tripped guard is a :class:`Trip`: its name, what was
measured, and the limit, in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from pggit_chaos.engine.history import History
    from pggit_chaos.spec.model import Guards

__all__ = ["CHECK_INTERVAL", "Trip", "acknowledged_commits", "error_rate", "lost_commits"]

#: Seconds between two looks at the guards while the fault holds.
CHECK_INTERVAL = 0.5
#: Seconds between two looks at the database for lost writes (each opens a connection).
LOST_WRITES_INTERVAL = 1.0


@dataclass(frozen=True)
class Trip:
    """A guard that was exceeded: ``maxErrorRate``, the value measured, and the detail."""

    guard: str
    measured: float
    limit: float
    detail: str

    @property
    def line(self) -> str:
        """``guard maxErrorRate tripped: error rate 0.83 (25 of 30 ...) > 0.5``."""
        return f"guard {self.guard} tripped: {self.detail}"


def error_rate(history: History, guards: Guards, since: float) -> Trip | None:
    """``maxErrorRate`` over the operations completed in the window (not before ``since``,
    the injection, on the history's clock); None while within the limit or too few samples."""
    if guards.max_error_rate is None:
        return None
    now = history.now()
    start = max(since, now - guards.error_rate_window.seconds)
    total = errors = 0
    for op in history.ops:
        if op.type == "invoke" or op.time < start:
            continue
        total += 1
        if op.type != "ok":
            errors += 1
    if total < guards.min_samples:
        return None
    rate = errors / total
    if rate <= guards.max_error_rate:
        return None
    return Trip("maxErrorRate", rate, guards.max_error_rate,
                f"error rate {rate:.2f} ({errors} of {total} operations failed or indeterminate "
                f"in the last {now - start:.1f} s) > {guards.max_error_rate:g}")


def acknowledged_commits(history: History) -> list[str]:
    """Trinity IDs of the commits the workload saw acknowledged so far."""
    return [pair.completion.result for pair in history.pairs()
            if pair.invoke.f == "commit" and pair.completion is not None
            and pair.completion.type == "ok" and pair.completion.result]


def lost_commits(dsn: str, hashes: Sequence[str], timeout: float = 2.0) -> list[str] | None:
    """Which of ``hashes`` are not in ``pggit.commits``; None when the database does not
    answer (down during the fault: nothing can be measured then)."""
    if not hashes:
        return []
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True,
                             application_name="pggit-chaos-guards") as conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)",
                         (f"{round(timeout * 1000)}ms",))
            rows = conn.execute(
                "SELECT h FROM unnest(%s::text[]) AS h"
                " WHERE NOT EXISTS (SELECT 1 FROM pggit.commits c WHERE c.hash = h)",
                (list(hashes),)).fetchall()
    except psycopg.Error:
        return None
    return [str(row[0]) for row in rows]


def lost_writes(dsn: str, history: History, guards: Guards) -> Trip | None:
    """``maxLostWrites``: acknowledged commits missing from the database, if it answers."""
    if guards.max_lost_writes is None:
        return None
    missing = lost_commits(dsn, acknowledged_commits(history))
    if missing is None or len(missing) <= guards.max_lost_writes:
        return None
    return Trip("maxLostWrites", len(missing), guards.max_lost_writes,
                f"{len(missing)} acknowledged commit(s) missing from pggit.commits "
                f"(e.g. {missing[0]}) > {guards.max_lost_writes}")
