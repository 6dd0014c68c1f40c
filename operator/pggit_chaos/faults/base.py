"""What every fault is to the engine: an intent written before injection, inject, revert, and
the evidence that it took effect.

Substrates (local, kubernetes) build faults; the engine only sees :class:`Fault`. The intent
says what, where and how to undo, in plain data, so that `pggit-chaos cleanup` (or the operator
after a restart) can revert a fault whose runner died. :class:`FaultEvidence` is what the
system showed of the fault (counters, PIDs, log lines, waiters): a fault that did not bite
makes a run Inconclusive, never a Pass.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FaultIntent:
    """A fault about to be injected: written to the state file / CR status first."""

    type: str
    """The fault type, e.g. ``pod-kill``."""
    target: str
    """Human-readable target, e.g. ``postmaster pid 1234`` or ``pod staging/pg-0``."""
    undo: dict[str, Any]
    """Machine-readable instructions to revert it (``kind`` plus the fields that kind needs)."""
    description: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "target": self.target,
            "undo": self.undo,
            "description": self.description,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultIntent:
        return cls(
            type=str(data["type"]),
            target=str(data.get("target", "")),
            undo=dict(data["undo"]),
            description=str(data.get("description", "")),
            id=str(data["id"]),
            created_at=str(data.get("created_at", "")),
        )


@dataclass(frozen=True)
class WorkloadWindow:
    """What the engine's workload saw while the fault was held (from its recorded history).

    The window runs from just before ``inject()`` to just after ``revert()`` returned.
    """

    seconds: float
    """Length of the window."""
    ok: int = 0
    """Operations acknowledged inside the window."""
    failed: int = 0
    indeterminate: int = 0
    """Operations whose outcome is unknown (client timeout, connection lost) in the window."""
    baseline_ok_per_s: float = 0.0
    """Acknowledged operations per second in the baseline before the injection."""
    longest_ack_gap_seconds: float = 0.0
    """The longest stretch of the window in which no operation was acknowledged."""
    p50_ms: float | None = None
    """Median latency (ms) of the operations invoked in the window and acknowledged."""
    p95_ms: float | None = None
    """95th percentile latency (ms) of the operations invoked in the window and acknowledged."""
    baseline_p50_ms: float | None = None
    """Median latency (ms) of the acknowledged operations invoked in the baseline."""
    baseline_p95_ms: float | None = None
    """95th percentile latency (ms) of the acknowledged operations invoked in the baseline."""
    refused_connections: int = 0
    """Connections the server refused for want of slots (SQLSTATE 53300) in the window."""
    peak_connections: int = 0
    """Most workload connections open at once during the run."""

    @property
    def ok_per_s(self) -> float:
        """Acknowledged operations per second inside the window."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def stalled(self, share: float = 0.8) -> bool:
        """True when a workload that was running acknowledged nothing for ``share`` of it."""
        return (self.baseline_ok_per_s > 0 and self.seconds > 0
                and self.longest_ack_gap_seconds >= share * self.seconds)

    def describe(self) -> str:
        """``"nothing acknowledged for 4.9 s of 5.0 s (50 ops/s before), 4 timed out"``."""
        text = (f"nothing acknowledged for {self.longest_ack_gap_seconds:.1f} s of "
                f"{self.seconds:.1f} s" if self.stalled()
                else f"{self.ok_per_s:.0f} ops/s acknowledged")
        text += f" ({self.baseline_ok_per_s:.0f} ops/s before)"
        if self.indeterminate:
            text += f", {self.indeterminate} timed out or lost their connection"
        if self.failed:
            text += f", {self.failed} failed"
        return text


#: A figure of evidence: a count, an amount or a short text (never a bool: use 0/1).
Figure = float | int | str


@dataclass(frozen=True)
class FaultEvidence:
    """Whether the fault took effect, read from the system (not assumed from having run it)."""

    bit: bool
    """True when the system shows the fault's effect."""
    summary: str
    """One line a person reads, with the figures that prove it (or show that it did not)."""
    figures: dict[str, Figure] = field(default_factory=dict)
    """The raw readings, e.g. ``{"nr_throttled": 87, "throttled_seconds": 8.7}``."""

    @classmethod
    def unreadable(cls, fault_type: str, why: object) -> FaultEvidence:
        """Evidence that could not be read: not proof that the fault bit."""
        reason = " ".join(str(why).split()) or type(why).__name__
        return cls(bit=False, summary=f"{fault_type}: its effect could not be read: {reason}")


class WorkloadControl(Protocol):
    """What a workload-side fault (load-spike) may do to the engine's running workload."""

    clients: int
    rate: float

    def spike(self, clients: int, rate: float) -> None:
        """Run ``clients`` clients in all at ``rate`` operations per second (0 = unpaced)
        until :meth:`calm`; callable from any thread, returns without waiting for them."""
        ...

    def calm(self) -> int:
        """Retire the spike's extra clients (each ends its operation in flight) and restore
        the rate; returns how many were retired. Safe to call twice or without a spike."""
        ...


@runtime_checkable
class DrivesWorkload(Protocol):
    """A fault that acts through the workload: the engine attaches it before injection."""

    def attach_workload(self, workload: WorkloadControl) -> None: ...


@runtime_checkable
class Fault(Protocol):
    """One injectable fault. ``revert`` is idempotent and safe after a half-done ``inject``."""

    type: str
    #: True when recovery is measured from injection (pod-kill), not from revert.
    recovery_from_injection: bool

    def check(self) -> None:
        """Raise InsufficientPrivileges (one clear line) if injecting would need more rights."""
        ...

    def intent(self) -> FaultIntent: ...

    def inject(self) -> None:
        """Inject the fault; reads the baseline its evidence compares with first."""
        ...

    def revert(self) -> None:
        """Undo the fault. Reads what would vanish with it (a cgroup's counters, a rule's
        packet count, waiters on a held lock) just before undoing it."""
        ...

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """Whether the fault took effect, from what the system showed between ``inject()``
        and ``revert()``. Called once, after the revert and the wait for recovery; ``window``
        is what the workload saw meanwhile. Never raises for a fault that did not bite."""
        ...
