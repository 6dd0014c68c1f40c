"""What every fault is to the engine: an intent written before injection, inject, revert.

Substrates (local, kubernetes) build faults; the engine only sees :class:`Fault`. The intent
says what, where and how to undo, in plain data, so that `pggit-chaos cleanup` (or the operator
after a restart) can revert a fault whose runner died.
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

    def inject(self) -> None: ...

    def revert(self) -> None: ...
