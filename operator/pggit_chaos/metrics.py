"""Prometheus metrics of pggit-chaos, all in this one module; the names are a contract.

The kopf operator counts a run once from its experiment's terminal ``status``
(:meth:`ChaosMetrics.record_status`), keeps ``pggit_chaos_active_faults`` level with the intents
in status (:meth:`ChaosMetrics.set_active_faults`, so it is right after a restart) and calls
:func:`start_metrics_server` at startup; the CLI records finished journals with
:func:`record_journal` and :func:`fault_started` / :func:`fault_ended` around the fault.
Every function takes a ``registry`` so tests use their own
:class:`~prometheus_client.CollectorRegistry`.

Exposed names (DESIGN.md): ``pggit_chaos_experiments_total{fault,verdict,schedule}`` (schedule:
the ``PgGitChaosSchedule`` a run belongs to, empty for a standalone experiment),
``pggit_chaos_experiment_duration_seconds{fault}`` (histogram),
``pggit_chaos_recovery_seconds{fault}`` (histogram), ``pggit_chaos_checks_total{check,outcome}``,
``pggit_chaos_lost_acknowledged_writes_total{fault}``, ``pggit_chaos_active_faults{fault}``,
``pggit_chaos_workload_operations_total{outcome}`` (outcome ok | fail | info).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from pggit_chaos.engine.journal import Journal, Phase

__all__ = [
    "DURATION_BUCKETS",
    "NAMES",
    "RECOVERY_BUCKETS",
    "ChaosMetrics",
    "active_fault",
    "fault_ended",
    "fault_started",
    "metrics_for",
    "record_journal",
    "start_metrics_server",
    "status_verdict_label",
    "verdict_label",
]

#: Recovery seconds from 0.1 s (SQL-level faults) to 300 s (a slow crash recovery).
RECOVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
                    60.0, 90.0, 120.0, 180.0, 240.0, 300.0)
#: Whole-run seconds: from a short SQL-level fault to an hour-long soak.
DURATION_BUCKETS = (5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
                    900.0, 1800.0, 3600.0)
#: The exposed metric family names (counters include their ``_total``).
NAMES = (
    "pggit_chaos_experiments_total",
    "pggit_chaos_experiment_duration_seconds",
    "pggit_chaos_recovery_seconds",
    "pggit_chaos_checks_total",
    "pggit_chaos_lost_acknowledged_writes_total",
    "pggit_chaos_active_faults",
    "pggit_chaos_workload_operations_total",
)
#: How many recorded run ids are remembered to refuse counting a journal twice.
_REMEMBERED_RUNS = 4096


def _unknown(value: str) -> str:
    return value or "unknown"


def verdict_label(journal: Journal) -> str:
    """``Pass`` / ``Fail``, or the terminal phase (``Aborted``, ``Error``) when no verdict."""
    if journal.verdict is not None:
        return journal.verdict
    phase = journal.current_phase
    return phase.value if phase.terminal else Phase.Error.value


def status_verdict_label(status: Mapping[str, Any]) -> str:
    """:func:`verdict_label` of an experiment's ``status`` (camelCase, as the runner writes it)."""
    verdict = status.get("verdict")
    if isinstance(verdict, str) and verdict:
        return verdict
    phase = status.get("phase")
    terminal = ("Passed", "Failed", "Inconclusive", "Aborted", "Error")
    return phase if isinstance(phase, str) and phase in terminal else Phase.Error.value


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp of a status or annotation (naive = UTC); None if not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds_between(start: object, end: object) -> float | None:
    first, last = parse_time(start), parse_time(end)
    return None if first is None or last is None else (last - first).total_seconds()


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class ChaosMetrics:
    """The collectors, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # prometheus-client strips a trailing "_total" from a Counter's name and appends it
        # again when exposing, so the exposed names are exactly the NAMES above.
        self.experiments = Counter(
            "pggit_chaos_experiments_total",
            "Finished experiments by fault type, verdict and schedule (empty: not a schedule's "
            "run).", ["fault", "verdict", "schedule"], registry=registry)
        self.duration = Histogram(
            "pggit_chaos_experiment_duration_seconds",
            "Wall-clock seconds from the start of an experiment to its verdict.",
            ["fault"], buckets=DURATION_BUCKETS, registry=registry)
        self.recovery = Histogram(
            "pggit_chaos_recovery_seconds",
            "Seconds from revert (or injection, for pod-kill) until pgGit is healthy again.",
            ["fault"], buckets=RECOVERY_BUCKETS, registry=registry)
        self.checks = Counter(
            "pggit_chaos_checks_total", "Verification checks by name and outcome.",
            ["check", "outcome"], registry=registry)
        self.lost = Counter(
            "pggit_chaos_lost_acknowledged_writes_total",
            "Operations the workload saw acknowledged that were missing afterwards.",
            ["fault"], registry=registry)
        self.active = Gauge(
            "pggit_chaos_active_faults", "Faults injected and not yet reverted.",
            ["fault"], registry=registry)
        self.operations = Counter(
            "pggit_chaos_workload_operations_total",
            "Workload operations by outcome (ok, fail, info = indeterminate).",
            ["outcome"], registry=registry)
        self._recorded: deque[str] = deque(maxlen=_REMEMBERED_RUNS)
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()

    def record_journal(self, journal: Journal) -> bool:
        """Count a finished run; False (and nothing counted) if its run id was seen before."""
        with self._lock:
            if journal.run_id in self._recorded:
                return False
            self._recorded.append(journal.run_id)
        fault = _unknown(journal.fault_type)
        self.experiments.labels(fault=fault, verdict=verdict_label(journal), schedule="").inc()
        duration = journal.duration_seconds
        if duration is not None:
            self.duration.labels(fault=fault).observe(max(0.0, duration))
        if journal.recovery_seconds is not None:
            self.recovery.labels(fault=fault).observe(max(0.0, journal.recovery_seconds))

        checks = journal.checks
        if checks.results:
            for result in checks.results:
                self.checks.labels(check=result.name, outcome=result.outcome).inc()
            reported = {r.name for r in checks.results}
            for failure in checks.failures:
                if failure.name not in reported:
                    self.checks.labels(check=failure.name, outcome="failed").inc()
        else:
            # Only counts are known: named failures, the rest under check="suite".
            for failure in checks.failures:
                self.checks.labels(check=failure.name, outcome="failed").inc()
            unnamed_failed = max(0, checks.failed - len(checks.failures))
            for outcome, count in (("passed", checks.passed), ("failed", unnamed_failed),
                                   ("skipped", checks.skipped)):
                if count:
                    self.checks.labels(check="suite", outcome=outcome).inc(count)

        workload = journal.workload
        # Always touch the series so a sound run still exports lost=0 for its fault.
        self.lost.labels(fault=fault).inc(workload.lost)
        self.operations.labels(outcome="ok").inc(workload.ok)
        self.operations.labels(outcome="fail").inc(workload.failed)
        self.operations.labels(outcome="info").inc(workload.indeterminate)
        return True

    def record_status(self, run_id: str, fault: str, status: Mapping[str, Any],
                      schedule: str = "") -> bool:
        """Count a finished run from its experiment's ``status``; False if counted before.

        ``schedule``: the schedule the experiment is a run of ("" for a standalone one).

        The operator's view: verdict (or terminal phase), duration ``startedAt`` to
        ``finishedAt``, ``recoverySeconds``, the checks' counts and named failures (under
        ``check="suite"`` for the unnamed rest), the workload's counts.
        """
        with self._lock:
            if run_id in self._recorded:
                return False
            self._recorded.append(run_id)
        fault = _unknown(fault)
        self.experiments.labels(fault=fault, verdict=status_verdict_label(status),
                                schedule=schedule).inc()
        duration = _seconds_between(status.get("startedAt"), status.get("finishedAt"))
        if duration is not None:
            self.duration.labels(fault=fault).observe(max(0.0, duration))
        recovery = status.get("recoverySeconds")
        if isinstance(recovery, int | float) and not isinstance(recovery, bool):
            self.recovery.labels(fault=fault).observe(max(0.0, float(recovery)))
        checks = status.get("checks")
        if isinstance(checks, Mapping):
            named = {"failed": 0, "error": 0}
            for failure in checks.get("failures") or []:
                if not isinstance(failure, Mapping) or not failure.get("name"):
                    continue
                outcome = "error" if failure.get("outcome") == "error" else "failed"
                named[outcome] += 1
                self.checks.labels(check=str(failure["name"]), outcome=outcome).inc()
            for outcome, count in (
                    ("passed", _count(checks.get("passed"))),
                    ("failed", max(0, _count(checks.get("failed")) - named["failed"])),
                    ("skipped", _count(checks.get("skipped"))),
                    ("error", max(0, _count(checks.get("errors")) - named["error"]))):
                if count:
                    self.checks.labels(check="suite", outcome=outcome).inc(count)
        workload = status.get("workload")
        if isinstance(workload, Mapping):
            self.lost.labels(fault=fault).inc(_count(workload.get("lost")))
            self.operations.labels(outcome="ok").inc(_count(workload.get("ok")))
            self.operations.labels(outcome="fail").inc(_count(workload.get("failed")))
            self.operations.labels(outcome="info").inc(_count(workload.get("indeterminate")))
        return True

    def set_active_faults(self, counts: Mapping[str, int]) -> None:
        """Set ``pggit_chaos_active_faults`` to ``counts`` (a level recomputed from status);
        a fault type seen before and absent now goes to 0."""
        with self._lock:
            for fault in set(self._active) | set(counts):
                self._active[fault] = max(0, int(counts.get(fault, 0)))
                self.active.labels(fault=fault).set(self._active[fault])

    def fault_started(self, fault: str) -> None:
        """A fault of type ``fault`` is now active."""
        fault = _unknown(fault)
        with self._lock:
            self._active[fault] = self._active.get(fault, 0) + 1
            self.active.labels(fault=fault).set(self._active[fault])

    def fault_ended(self, fault: str) -> None:
        """A fault of type ``fault`` was reverted (an unmatched call never goes below zero)."""
        fault = _unknown(fault)
        with self._lock:
            self._active[fault] = max(0, self._active.get(fault, 0) - 1)
            self.active.labels(fault=fault).set(self._active[fault])


_by_registry: dict[int, ChaosMetrics] = {}
_registry_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry = REGISTRY) -> ChaosMetrics:
    """The collectors on ``registry``, created and registered on first use."""
    with _registry_lock:
        metrics = _by_registry.get(id(registry))
        if metrics is None or metrics.registry is not registry:
            metrics = ChaosMetrics(registry)
            _by_registry[id(registry)] = metrics
        return metrics


def record_journal(journal: Journal, registry: CollectorRegistry = REGISTRY) -> bool:
    """Update every metric from a finished journal; False if this run was recorded already."""
    return metrics_for(registry).record_journal(journal)


def fault_started(fault: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Raise ``pggit_chaos_active_faults{fault}`` (call right after injecting)."""
    metrics_for(registry).fault_started(fault)


def fault_ended(fault: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Lower ``pggit_chaos_active_faults{fault}`` (call after reverting)."""
    metrics_for(registry).fault_ended(fault)


@contextmanager
def active_fault(fault: str, registry: CollectorRegistry = REGISTRY) -> Iterator[None]:
    """``with active_fault("pod-kill"):`` — the gauge is up for the block, also on error."""
    fault_started(fault, registry)
    try:
        yield
    finally:
        fault_ended(fault, registry)


def start_metrics_server(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns (server, thread)."""
    metrics_for(registry)  # register the families so they are exposed before the first run
    return _start_http_server(port, addr=addr, registry=registry)
