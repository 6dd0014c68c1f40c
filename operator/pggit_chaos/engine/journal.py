"""The one serialisable journal of an experiment run, and the CR ``status`` built from it.

The engine (run lifecycle) fills a :class:`Journal` as the run goes — phases, timestamps, the
fault intent and window — and the lead's glue converts workload history, invariant results and
check results into the plain summary models here. The report (:mod:`pggit_chaos.engine.report`),
the metrics (:mod:`pggit_chaos.metrics`), the CLI and the kopf operator only read it.

This module imports nothing else of the engine on purpose: every model takes plain values.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

__all__ = [
    "AFTER_RECOVERY",
    "STEADY_STATE",
    "AssertionSummary",
    "CheckFailureSummary",
    "CheckResultSummary",
    "ChecksSummary",
    "FaultEvidenceSummary",
    "FaultWindow",
    "InvariantSummary",
    "Journal",
    "Phase",
    "PhaseLatency",
    "PhaseRecord",
    "TimelineSeries",
    "Verdict",
    "WorkloadSummary",
    "bucket_series",
    "k8s_time",
    "percentiles",
    "phase_latencies",
]

Verdict = Literal["Pass", "Fail", "Inconclusive"]
#: The five outcomes of a check: a broken promise is ``failed``; a check that could not run is
#: ``error`` (never a fail); ``differs`` is a documented behaviour of another pgGit.
CheckOutcome = Literal["passed", "failed", "error", "skipped", "differs"]

#: Longest message a condition or a check failure carries into the CR status.
STATUS_MESSAGE_LIMIT = 1024
#: At most this many check failures are copied into the CR status (the journal keeps all).
STATUS_FAILURES_LIMIT = 20
#: At most this many assertion results in the CR status: 32 assertions at two moments each.
STATUS_ASSERTIONS_LIMIT = 64


def _utcnow() -> datetime:
    return datetime.now(UTC)


def k8s_time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` and whole seconds, as Kubernetes writes ``metav1.Time``."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Phase(StrEnum):
    """Lifecycle phase of a run; the values are the CR ``status.phase`` values."""

    Pending = "Pending"
    SteadyState = "SteadyState"
    Injecting = "Injecting"
    Recovering = "Recovering"
    Verifying = "Verifying"
    Passed = "Passed"
    Failed = "Failed"
    Inconclusive = "Inconclusive"
    """Ended without a verdict either way: a check could not run, or the fault did not bite."""
    Aborted = "Aborted"
    Error = "Error"

    @property
    def terminal(self) -> bool:
        """True for the phases a run ends in."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {Phase.Passed, Phase.Failed, Phase.Inconclusive, Phase.Aborted, Phase.Error}
)


class _Model(BaseModel):
    """Base of the journal models: unknown fields are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PhaseRecord(_Model):
    """One phase of the run: when it started and ended (wall clock and run offsets)."""

    phase: Phase
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    elapsed_seconds: float | None = None
    detail: str = ""
    start_offset: float = 0.0
    """Seconds since the run's origin (monotonic clock) when the phase began."""
    end_offset: float | None = None

    @property
    def open(self) -> bool:
        """True while the phase has not been closed."""
        return self.ended_at is None


class FaultWindow(_Model):
    """When the fault was active: run offsets (monotonic seconds) and wall-clock times."""

    fault_type: str = ""
    start_offset: float
    end_offset: float | None = None
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    outage_end_offset: float | None = None
    """For a fault that heals while held (pod-kill): when the database was first healthy again.
    The outage runs from ``start_offset`` to here; the rest of the window is only the hold."""

    @property
    def seconds(self) -> float | None:
        """How long the fault was active, if it has been reverted."""
        return None if self.end_offset is None else self.end_offset - self.start_offset

    @property
    def outage_seconds(self) -> float | None:
        """How long the database was down (pod-kill), if that was measured."""
        if self.outage_end_offset is None:
            return None
        return max(0.0, self.outage_end_offset - self.start_offset)


class FaultStep(FaultWindow):
    """One fault of a scenario: its window, target, intent, revert and evidence."""

    target: str = ""
    intent: dict[str, Any] | None = None
    revert_error: str | None = None
    evidence: FaultEvidenceSummary | None = None

    @property
    def reverted(self) -> bool:
        """True once its revert was confirmed."""
        return self.ended_at is not None


#: One figure of evidence: a count, an amount or a short text.
EvidenceFigure = int | float | str


class FaultEvidenceSummary(_Model):
    """What the system showed of the fault: whether it bit, in one line, and the readings."""

    bit: bool
    """True when the system showed the fault's effect; False makes the verdict Inconclusive."""
    summary: str
    figures: dict[str, EvidenceFigure] = Field(default_factory=dict)
    """Raw readings, e.g. ``{"nr_throttled": 87, "throttled_seconds": 8.7}``."""
    read_at: AwareDatetime | None = None


class PhaseLatency(_Model):
    """Latency percentiles of the acknowledged operations invoked during one phase."""

    phase: Phase
    ok: int = Field(default=0, ge=0)
    """Acknowledged operations invoked in the phase."""
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None


class WorkloadSummary(_Model):
    """Counts of the workload's operations, throughput and latency percentiles."""

    invoked: int = Field(default=0, ge=0)
    ok: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    indeterminate: int = Field(default=0, ge=0)
    lost: int = Field(default=0, ge=0)
    """Acknowledged (ok) but missing from the database afterwards."""
    duplicated: int = Field(default=0, ge=0)
    unexpected: int = Field(default=0, ge=0)
    """Present in the database but never invoked."""
    throughput_ops_s: float = Field(default=0.0, ge=0)
    """Acknowledged operations per second over the time the workload ran."""
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    phases: list[PhaseLatency] = Field(default_factory=list)
    """The same percentiles per phase of the run (by invocation time): Injecting is the
    fault's hold, so a latency fault shows there."""

    @classmethod
    def from_counts(
        cls,
        *,
        invoked: int,
        ok: int,
        failed: int,
        indeterminate: int,
        lost: int = 0,
        duplicated: int = 0,
        unexpected: int = 0,
        latencies_ms: Sequence[float] = (),
        elapsed_seconds: float = 0.0,
    ) -> WorkloadSummary:
        """Summary from raw counts, the latencies of acknowledged operations and run time."""
        p50 = p95 = p99 = None
        if latencies_ms:
            p50, p95, p99 = percentiles(latencies_ms)
        throughput = ok / elapsed_seconds if elapsed_seconds > 0 else 0.0
        return cls(
            invoked=invoked, ok=ok, failed=failed, indeterminate=indeterminate, lost=lost,
            duplicated=duplicated, unexpected=unexpected, throughput_ops_s=throughput,
            latency_p50_ms=p50, latency_p95_ms=p95, latency_p99_ms=p99,
        )


class InvariantSummary(_Model):
    """Outcome of one invariant of the checker (history vs database)."""

    name: str
    passed: bool
    message: str = ""
    examples: list[str] = Field(default_factory=list)
    outcome: Literal["passed", "failed", "skipped", "error"] | None = None
    """``skipped``: the installed pgGit keeps nothing to check it against; ``error``: it
    could not be evaluated (the verdict cannot be Pass). None in journals of older releases."""

    @property
    def state(self) -> str:
        """The outcome, also for journals that only say passed or not."""
        return self.outcome or ("passed" if self.passed else "failed")


#: The two moments a user assertion is evaluated at, as the reports name them.
STEADY_STATE = "steady state"
AFTER_RECOVERY = "after recovery"


class AssertionSummary(_Model):
    """One user assertion evaluated at one moment (``steady state`` or ``after recovery``)."""

    name: str
    phase: str
    outcome: Literal["passed", "failed", "error"]
    """``failed``: the value differs from ``expect``; ``error``: it could not be evaluated."""
    got: str | None = None
    """The query's value as text (None: NULL, or not evaluated)."""
    expect: str = ""
    message: str = ""

    @property
    def line(self) -> str:
        """``assertion NAME failed at the steady state: got '3', expected '0'``, or
        ``could not evaluate assertion NAME after recovery: <the server's error>``."""
        moment = "at the steady state" if self.phase == STEADY_STATE else self.phase
        if self.outcome == "passed":
            return f"assertion {self.name} held {moment}"
        if self.outcome == "failed":
            return f"assertion {self.name} failed {moment}: {self.message}"
        return f"could not evaluate assertion {self.name} {moment}: {self.message}"


class CheckFailureSummary(_Model):
    """One failing check, with what it takes to replay it."""

    name: str
    message: str = ""
    seed: int | None = None
    example: str | None = None
    """Hypothesis' falsifying example, as text."""
    outcome: Literal["failed", "error"] = "failed"
    """``failed``: a promise of pgGit broken; ``error``: the check could not run."""


class CheckResultSummary(_Model):
    """Outcome of one check of the suite (every check, not only failures)."""

    name: str
    outcome: CheckOutcome
    message: str = ""
    duration_seconds: float | None = None


class ChecksSummary(_Model):
    """The checks suite's outcome at the experiment's hypothesis profile."""

    passed: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    skipped: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    """Checks that could not run (unexpected SQL error, unforeseen shape): never a fail."""
    differs: int = Field(default=0, ge=0)
    """Checks that found a documented behaviour differing from the embedded core (no defect)."""
    target: str | None = None
    """The pgGit shape the checks found (e.g. ``embedded 1.0.0``, ``upstream 0.1.3``)."""
    seed: int | None = None
    """The run's hypothesis seed (``--seed`` replays the whole suite)."""
    profile: str | None = None
    hypothesis_examples: int | None = None
    """Examples hypothesis generated across the suite, if known."""
    failures: list[CheckFailureSummary] = Field(default_factory=list)
    results: list[CheckResultSummary] = Field(default_factory=list)
    """Per-check outcomes when the runner reports them (JUnit and metrics use them)."""
    residue: list[str] = Field(default_factory=list)
    """What the checks changed in the target and no sweep can undo: rows pgGit's own triggers
    wrote that name no scratch area, sequences advanced (name, before -> after)."""

    @property
    def ran(self) -> bool:
        """True if any check ran or was skipped."""
        return bool(
            self.passed or self.failed or self.skipped or self.errors or self.differs
            or self.results
        )


class TimelineSeries(_Model):
    """Operations per second over the run, in buckets, for the timeline plot."""

    bucket_seconds: float = Field(default=1.0, gt=0)
    t: list[float] = Field(default_factory=list)
    """Start of each bucket, seconds since the run's origin."""
    ok_per_s: list[float] = Field(default_factory=list)
    errors_per_s: list[float] = Field(default_factory=list)
    """Failed plus indeterminate operations per second."""

    @model_validator(mode="after")
    def _same_lengths(self) -> TimelineSeries:
        if not len(self.t) == len(self.ok_per_s) == len(self.errors_per_s):
            raise ValueError("t, ok_per_s and errors_per_s must have the same length")
        return self


def percentiles(latencies: Iterable[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 of ``latencies`` (linear interpolation between closest ranks).

    The same definition as numpy's default and ``statistics.quantiles(method="inclusive")``.
    Raises :class:`ValueError` on an empty input or a NaN value.
    """
    values = sorted(float(v) for v in latencies)
    if not values:
        raise ValueError("percentiles of an empty sequence")
    if any(math.isnan(v) for v in values):
        raise ValueError("percentiles of a sequence containing NaN")

    def at(q: float) -> float:
        h = (len(values) - 1) * q
        lo = math.floor(h)
        hi = min(lo + 1, len(values) - 1)
        value = values[lo] + (h - lo) * (values[hi] - values[lo])
        # Guard rounding so the result never leaves [values[lo], values[hi]].
        return min(max(value, values[lo]), values[hi])

    return at(0.50), at(0.95), at(0.99)


def phase_latencies(
    phases: Sequence[PhaseRecord], samples: Iterable[tuple[float, float]]
) -> list[PhaseLatency]:
    """Percentiles per non-terminal phase of ``(invoked_offset, latency_ms)`` samples.

    Offsets are seconds since the run's origin; a sample belongs to the phase whose
    ``[start_offset, end_offset)`` holds its invocation (an open phase runs to infinity).
    Phases without samples are listed with ``ok`` 0 and no percentiles.
    """
    spans = [(r.phase, r.start_offset, math.inf if r.end_offset is None else r.end_offset)
             for r in phases if not r.phase.terminal]
    buckets: list[list[float]] = [[] for _ in spans]
    for offset, latency in samples:
        for index, (_, start, end) in enumerate(spans):
            if start <= offset < end:
                buckets[index].append(latency)
                break
    out = []
    for (phase, _, _), values in zip(spans, buckets, strict=True):
        p50 = p95 = p99 = None
        if values:
            p50, p95, p99 = percentiles(values)
        out.append(PhaseLatency(phase=phase, ok=len(values), latency_p50_ms=p50,
                                latency_p95_ms=p95, latency_p99_ms=p99))
    return out


def bucket_series(
    samples: Iterable[tuple[float, str]],
    bucket_seconds: float = 1.0,
    end: float | None = None,
) -> TimelineSeries:
    """Per-second rates from ``(offset_seconds, outcome)`` samples; outcome ok | fail | info.

    Offsets are seconds since the run's origin (see :meth:`Journal.offset`); buckets start at
    0 and run to ``end`` (or the last sample). ``fail`` and ``info`` both count as errors.
    """
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    items = [(max(0.0, float(offset)), outcome) for offset, outcome in samples]
    if not items and not end:
        return TimelineSeries(bucket_seconds=bucket_seconds)
    last = max((offset for offset, _ in items), default=0.0)
    count = max(1, math.ceil(max(last, end or 0.0) / bucket_seconds))
    if items:
        count = max(count, int(last // bucket_seconds) + 1)
    ok = [0] * count
    errors = [0] * count
    for offset, outcome in items:
        index = min(int(offset // bucket_seconds), count - 1)
        if outcome == "ok":
            ok[index] += 1
        elif outcome in ("fail", "info"):
            errors[index] += 1
        else:
            raise ValueError(f"unknown outcome {outcome!r}: expected ok, fail or info")
    return TimelineSeries(
        bucket_seconds=bucket_seconds,
        t=[i * bucket_seconds for i in range(count)],
        ok_per_s=[n / bucket_seconds for n in ok],
        errors_per_s=[n / bucket_seconds for n in errors],
    )


def _clip(text: str, limit: int = STATUS_MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Journal(_Model):
    """Everything one run did and found; written as ``journal.json``, read by every reporter.

    Time has two bases: wall-clock ``datetime`` (UTC) for people and the CR status, and
    *offsets* — seconds on the monotonic clock since the journal's origin — for the plot.
    :meth:`offset` converts a ``time.monotonic()`` reading; :meth:`set_origin` aligns the
    origin with another component's clock (e.g. the workload history's start).
    """

    schema_version: int = 1
    experiment: str
    namespace: str = "default"
    spec: dict[str, Any] = Field(default_factory=dict)
    """The experiment manifest as a dict (apiVersion, kind, metadata, spec)."""
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    substrate: str = "local"
    fault_type: str = ""
    """Fault type (e.g. ``pod-kill``); taken from ``spec`` when not given."""

    phases: list[PhaseRecord] = Field(default_factory=list)
    started_at: AwareDatetime | None = None
    injected_at: AwareDatetime | None = None
    reverted_at: AwareDatetime | None = None
    recovered_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None

    fault_intent: dict[str, Any] | None = None
    revert_error: str | None = None
    """Why the revert failed (the fault may still be active; its intent stays recorded)."""
    fault_window: FaultWindow | None = None
    fault_evidence: FaultEvidenceSummary | None = None
    """Whether the fault took effect, read from the system after the revert."""
    fault_steps: list[FaultStep] = Field(default_factory=list)
    """A scenario's faults, each with its own window (``fault_window`` spans them all)."""
    workload: WorkloadSummary = Field(default_factory=WorkloadSummary)
    recovery_seconds: float | None = None
    recovery_from: Literal["revert", "injection"] = "revert"
    """What ``recovery_seconds`` counts from: the revert, or the injection (pod-kill, whose
    server comes back while the fault is held: the outage, up to the first healthy probe)."""
    recovery_timeout_seconds: float | None = None
    recovered_offset: float | None = None
    invariants: list[InvariantSummary] = Field(default_factory=list)
    drift: list[str] = Field(default_factory=list)
    assertions: list[AssertionSummary] = Field(default_factory=list)
    """The user's assertions, each at the steady state and (if reached) after recovery."""
    checks: ChecksSummary = Field(default_factory=ChecksSummary)
    verdict: Verdict | None = None
    reason: str = ""
    """Why the run failed or was aborted, in one line."""
    error: str | None = None
    series: TimelineSeries = Field(default_factory=TimelineSeries)
    dry_run_plan: list[str] = Field(default_factory=list)

    _origin: float = PrivateAttr(default_factory=time.monotonic)

    @model_validator(mode="after")
    def _fault_type_from_spec(self) -> Journal:
        if not self.fault_type:
            from pggit_chaos.spec.model import fault_label

            label = fault_label(self.spec.get("spec", {}))
            if label:  # a scenario's: its fault types joined by "+"
                # Bypass validate_assignment: this runs inside validation already.
                object.__setattr__(self, "fault_type", label)
        return self

    def __eq__(self, other: object) -> bool:
        """Equal content; the monotonic clock origin (process-local) is not compared."""
        if not isinstance(other, Journal):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    # -- clock -------------------------------------------------------------------------------

    @property
    def origin(self) -> float:
        """``time.monotonic()`` value that offsets are measured from."""
        return self._origin

    def set_origin(self, monotonic: float) -> None:
        """Measure offsets from ``monotonic`` (a ``time.monotonic()`` reading)."""
        self._origin = monotonic

    def offset(self, monotonic: float | None = None) -> float:
        """Seconds since the origin of ``monotonic`` (default: now)."""
        now = time.monotonic() if monotonic is None else monotonic
        return now - self._origin

    # -- phases ------------------------------------------------------------------------------

    @property
    def current_phase(self) -> Phase:
        """The phase the run is in (Pending before the first phase)."""
        return self.phases[-1].phase if self.phases else Phase.Pending

    def close_phase(self, detail: str | None = None) -> PhaseRecord | None:
        """Close the open phase record, if any; returns it."""
        if not self.phases or not self.phases[-1].open:
            return None
        record = self.phases[-1]
        now = _utcnow()
        end = self.offset()
        record.ended_at = now
        record.end_offset = end
        record.elapsed_seconds = max(0.0, end - record.start_offset)
        if detail is not None:
            record.detail = detail
        return record

    def enter_phase(self, phase: Phase, detail: str = "") -> PhaseRecord:
        """Close the previous phase and open ``phase``; a terminal phase is closed at once."""
        self.close_phase()
        now = _utcnow()
        if self.started_at is None:
            self.started_at = now
        record = PhaseRecord(phase=phase, started_at=now, detail=detail,
                             start_offset=self.offset())
        self.phases.append(record)
        if phase.terminal:
            record.ended_at = now
            record.end_offset = record.start_offset
            record.elapsed_seconds = 0.0
            if self.finished_at is None:
                self.finished_at = now
        return record

    @contextmanager
    def phase(self, phase: Phase, detail: str = "") -> Iterator[PhaseRecord]:
        """``with journal.phase(Phase.Injecting):`` — the record is closed on exit."""
        record = self.enter_phase(phase, detail)
        try:
            yield record
        finally:
            if self.phases and self.phases[-1] is record and record.open:
                self.close_phase()

    def phase_durations(self) -> list[tuple[Phase, float]]:
        """(phase, seconds) for every closed non-terminal phase record, in order."""
        return [
            (r.phase, r.elapsed_seconds or 0.0)
            for r in self.phases
            if not r.phase.terminal and r.elapsed_seconds is not None
        ]

    # -- fault and recovery marks ------------------------------------------------------------

    def mark_injected(self, intent: dict[str, Any] | None = None) -> None:
        """The fault is now active (call right after a successful inject)."""
        now = _utcnow()
        self.injected_at = now
        if intent is not None:
            self.fault_intent = intent
        self.fault_window = FaultWindow(fault_type=self.fault_type, start_offset=self.offset(),
                                        started_at=now)

    def mark_reverted(self) -> None:
        """The fault has been reverted (also after an error or interrupt)."""
        now = _utcnow()
        self.reverted_at = now
        if self.fault_window is not None and self.fault_window.end_offset is None:
            self.fault_window.end_offset = self.offset()
            self.fault_window.ended_at = now

    def mark_step_injected(self, fault_type: str, target: str, intent: dict[str, Any],
                           since: float | None = None) -> FaultStep:
        """A scenario's fault is now active (the run's window opens with the first one).

        ``since``: the offset its inject was called at (its window opens there: a fault takes
        effect before its call returns); default now.
        """
        now = _utcnow()
        if self.injected_at is None:
            self.mark_injected()
            if since is not None and self.fault_window is not None:
                self.fault_window.start_offset = since
        step = FaultStep(fault_type=fault_type, target=target, intent=intent,
                         start_offset=self.offset() if since is None else since,
                         started_at=now)
        self.fault_steps.append(step)
        return step

    def mark_step_reverted(self, step: FaultStep) -> None:
        """A scenario's fault has been reverted; the run's window closes with the last one."""
        step.end_offset = self.offset()
        step.ended_at = _utcnow()

    @property
    def active_steps(self) -> list[FaultStep]:
        """The scenario's faults injected and not (confirmed) reverted."""
        return [step for step in self.fault_steps if not step.reverted]

    def mark_revert_failed(self, error: str) -> None:
        """The revert raised: the fault may still be active (``reverted_at`` stays unset)."""
        self.revert_error = error

    def mark_recovered(self, seconds: float, at: float | None = None,
                       since: Literal["revert", "injection"] = "revert") -> None:
        """The database is healthy again, ``seconds`` after the revert (or the injection).

        ``at`` is the ``time.monotonic()`` reading when it was first seen healthy (default:
        now) — for pod-kill that is during the hold, well before this call; the outage then
        ends there (:attr:`FaultWindow.outage_end_offset`).
        """
        now = time.monotonic()
        at = now if at is None else at
        self.recovered_at = _utcnow() - timedelta(seconds=max(0.0, now - at))
        self.recovery_seconds = seconds
        self.recovery_from = since
        self.recovered_offset = self.offset(at)
        if since == "injection" and self.fault_window is not None:
            self.fault_window.outage_end_offset = self.recovered_offset

    @property
    def recovery_state(self) -> Literal["recovered", "timed-out", "not-reached"]:
        """Recovered, timed out (Recovering entered, never healthy), or never waited for."""
        if self.recovery_seconds is not None:
            return "recovered"
        if any(r.phase is Phase.Recovering for r in self.phases):
            return "timed-out"
        return "not-reached"

    def finish(self, phase: Phase, reason: str = "", error: str | None = None) -> None:
        """End the run in a terminal ``phase``; sets the verdict and the reason."""
        if not phase.terminal:
            raise ValueError(f"{phase} is not a terminal phase")
        verdict: Verdict | None = None
        if phase is Phase.Passed:
            verdict = "Pass"
        elif phase is Phase.Failed:
            verdict = "Fail"
        elif phase is Phase.Inconclusive:
            verdict = "Inconclusive"
        self.verdict = verdict
        self.reason = " ".join(reason.split())
        if error is not None:
            self.error = error
        if self.current_phase is not phase:
            self.enter_phase(phase, self.reason)
        self.finished_at = self.finished_at or _utcnow()

    @property
    def duration_seconds(self) -> float | None:
        """Wall-clock seconds from start to finish, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    # -- serialisation -----------------------------------------------------------------------

    def to_json(self, indent: int | None = 2) -> str:
        """The journal as JSON text (``journal.json``)."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Journal:
        """Load a journal written by :meth:`to_json`."""
        return cls.model_validate_json(text)

    # -- Kubernetes status -------------------------------------------------------------------

    def to_status(self) -> dict[str, Any]:
        """The CR ``status`` block (camelCase; times RFC 3339 UTC, as DESIGN.md sketches).

        Every key is present; unset values are ``None`` so that a merge patch clears them
        (``faultIntent`` is only set while the fault is not reverted).
        """
        active_intent = self.fault_intent if self.reverted_at is None else None
        checks = self.checks
        return {
            "phase": self.current_phase.value,
            "verdict": self.verdict,
            "startedAt": k8s_time(self.started_at),
            "injectedAt": k8s_time(self.injected_at),
            "revertedAt": k8s_time(self.reverted_at),
            "recoveredAt": k8s_time(self.recovered_at),
            "finishedAt": k8s_time(self.finished_at),
            "recoverySeconds": (None if self.recovery_seconds is None
                                else round(self.recovery_seconds, 3)),
            "faultIntent": active_intent,
            "faultEvidence": (None if self.fault_evidence is None else {
                "bit": self.fault_evidence.bit,
                "summary": _clip(self.fault_evidence.summary),
            }),
            "workload": {
                "invoked": self.workload.invoked,
                "ok": self.workload.ok,
                "failed": self.workload.failed,
                "indeterminate": self.workload.indeterminate,
                "lost": self.workload.lost,
                "duplicated": self.workload.duplicated,
                "unexpected": self.workload.unexpected,
            },
            "checks": {
                "passed": checks.passed,
                "failed": checks.failed,
                "skipped": checks.skipped,
                "errors": checks.errors,
                "differs": checks.differs,
                "seed": checks.seed,
                "target": checks.target,
                "failures": [
                    {"name": f.name, "message": _clip(f.message), "seed": f.seed,
                     "outcome": f.outcome}
                    for f in checks.failures[:STATUS_FAILURES_LIMIT]
                ],
            },
            "assertions": [
                {"name": a.name, "phase": a.phase, "outcome": a.outcome,
                 "got": None if a.got is None else _clip(a.got, 256),
                 "message": _clip(a.message)}
                for a in self.assertions[:STATUS_ASSERTIONS_LIMIT]
            ],
            "conditions": self.conditions(),
        }

    def conditions(self) -> list[dict[str, str]]:
        """Kubernetes-style conditions: FaultActive, Recovered, Completed, Passed."""
        fallback = self.finished_at or self.started_at or _utcnow()

        def condition(kind: str, status: str, reason: str, message: str,
                      when: datetime | None) -> dict[str, str]:
            return {
                "type": kind, "status": status, "reason": reason,
                "message": _clip(message), "lastTransitionTime": k8s_time(when or fallback) or "",
            }

        fault = self.fault_type or "fault"
        if self.reverted_at is not None:
            fault_active = condition("FaultActive", "False", "Reverted",
                                     f"{fault} reverted", self.reverted_at)
        elif self.revert_error is not None:
            fault_active = condition(
                "FaultActive", "True", "RevertFailed",
                f"{fault} may still be active: its revert failed ({self.revert_error}); its "
                "intent stays recorded for the operator or `pggit-chaos cleanup` to revert",
                self.finished_at or self.injected_at)
        elif self.injected_at is not None:
            fault_active = condition("FaultActive", "True", "Injected",
                                     f"{fault} is active", self.injected_at)
        else:
            fault_active = condition("FaultActive", "False", "NotInjected",
                                     f"{fault} has not been injected", self.started_at)

        state = self.recovery_state
        if state == "recovered":
            recovered = condition("Recovered", "True", "Healthy",
                                  f"healthy after {self.recovery_seconds:.2f}s",
                                  self.recovered_at)
        elif state == "timed-out" and self.current_phase.terminal:
            limit = (f" within {self.recovery_timeout_seconds:g}s"
                     if self.recovery_timeout_seconds is not None else "")
            recovered = condition("Recovered", "False", "RecoveryTimeout",
                                  f"not healthy{limit}", self.finished_at)
        else:
            recovered = condition("Recovered", "Unknown", "NotReached",
                                  "recovery has not been measured", self.started_at)

        phase = self.current_phase
        if phase.terminal:
            completed = condition("Completed", "True", phase.value,
                                  self.reason or f"run ended {phase.value}", self.finished_at)
        else:
            completed = condition("Completed", "False", "InProgress",
                                  f"run is in phase {phase.value}", self.started_at)

        if self.verdict == "Pass":
            passed = condition("Passed", "True", "Passed",
                               self.reason or "every invariant and check held", self.finished_at)
        elif self.verdict == "Fail":
            passed = condition("Passed", "False", "Failed", self.reason or "failed",
                               self.finished_at)
        elif self.verdict == "Inconclusive":
            passed = condition("Passed", "Unknown", "Inconclusive",
                               self.reason or "inconclusive", self.finished_at)
        else:
            why = phase.value if phase.terminal else "InProgress"
            passed = condition("Passed", "Unknown", why,
                               self.reason or self.error or "no verdict", self.finished_at)
        return [fault_active, recovered, completed, passed]
