"""The Jepsen-style operation history of one experiment's workload.

The workload (``engine.workload``) appends one :class:`Op` when a client invokes an operation
and one when it completes (``ok``, ``fail`` or ``info`` = outcome unknown). The invariant
checker (``engine.invariants``) pairs them and compares them with the database; the engine
saves the history next to the journal (``to_jsonl``) and derives latency percentiles and the
ops/s timeline from it.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import monotonic
from typing import Literal

OpType = Literal["invoke", "ok", "fail", "info"]
OpF = Literal["commit", "create_table", "alter_table", "drop_table"]

OP_TYPES: tuple[str, ...] = ("invoke", "ok", "fail", "info")
OP_FUNCTIONS: tuple[str, ...] = ("commit", "create_table", "alter_table", "drop_table")
DDL_FUNCTIONS: frozenset[str] = frozenset({"create_table", "alter_table", "drop_table"})


@dataclass(slots=True)
class Op:
    """One history entry: an invocation or its completion."""

    index: int
    """Position in the history (assigned by :meth:`History.append`)."""
    process: int
    """The client that ran the operation."""
    type: OpType
    f: OpF
    value: dict[str, str]
    """commit: ``branch``, ``message``; DDL: ``schema``, ``table`` (+ ``column`` for alter)."""
    result: str | None = None
    """The Trinity ID an ``ok`` commit returned."""
    error: str | None = None
    time: float = 0.0
    """Monotonic seconds since the history's start."""
    wall: str = ""
    """Wall-clock time (ISO 8601, UTC)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
            "result": self.result,
            "error": self.error,
            "time": round(self.time, 6),
            "wall": self.wall,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Op:
        value = data.get("value") or {}
        if not isinstance(value, dict):
            raise ValueError(f"op value must be an object, got {value!r}")
        op_type = str(data["type"])
        f = str(data["f"])
        if op_type not in OP_TYPES:
            raise ValueError(f"unknown op type {op_type!r}")
        if f not in OP_FUNCTIONS:
            raise ValueError(f"unknown op function {f!r}")
        result = data.get("result")
        error = data.get("error")
        return cls(
            index=int(str(data["index"])),
            process=int(str(data["process"])),
            type=op_type,  # type: ignore[arg-type]
            f=f,  # type: ignore[arg-type]
            value={str(k): str(v) for k, v in value.items()},
            result=None if result is None else str(result),
            error=None if error is None else str(error),
            time=float(str(data.get("time", 0.0))),
            wall=str(data.get("wall", "")),
        )


@dataclass(slots=True)
class Pair:
    """An invocation and its completion (None while still in flight)."""

    invoke: Op
    completion: Op | None

    @property
    def outcome(self) -> str:
        """``ok`` | ``fail`` | ``info``; an op never completed counts as ``info``."""
        return self.completion.type if self.completion is not None else "info"

    @property
    def latency(self) -> float | None:
        if self.completion is None:
            return None
        return self.completion.time - self.invoke.time


@dataclass
class Counts:
    """Operations by outcome; ``invoked == ok + failed + indeterminate + in_flight``."""

    invoked: int = 0
    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    in_flight: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "invoked": self.invoked,
            "ok": self.ok,
            "failed": self.failed,
            "indeterminate": self.indeterminate,
            "in_flight": self.in_flight,
        }


@dataclass(slots=True)
class RateBucket:
    """Completions in one bucket of the timeline, as per-second rates."""

    start: float
    ok_per_s: float
    errors_per_s: float
    """``fail`` + ``info`` completions per second."""


class History:
    """Append-only, thread- and task-safe list of :class:`Op`."""

    def __init__(self, *, start: float | None = None, start_wall: datetime | None = None) -> None:
        self.start = monotonic() if start is None else start
        self.start_wall = start_wall or datetime.now(UTC)
        self._ops: list[Op] = []
        self._lock = threading.Lock()
        self._counts = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}

    # -- recording ----------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the history's start (the ``time`` of ops recorded now)."""
        return monotonic() - self.start

    def record(
        self,
        process: int,
        op_type: OpType,
        f: OpF,
        value: dict[str, str],
        *,
        result: str | None = None,
        error: str | None = None,
        at: float | None = None,
    ) -> Op:
        """Create and append an op stamped now (or at ``at``, seconds since start)."""
        t = monotonic() - self.start if at is None else at
        op = Op(-1, process, op_type, f, value, result, error, t, "")
        return self.append(op)

    def append(self, op: Op) -> Op:
        """Append ``op``, assigning its index (and wall time if it has none)."""
        if not op.wall:
            op.wall = (self.start_wall + timedelta(seconds=op.time)).isoformat()
        with self._lock:
            op.index = len(self._ops)
            self._ops.append(op)
            self._counts[op.type] += 1
        return op

    # -- reading ------------------------------------------------------------------------------
    @property
    def ops(self) -> list[Op]:
        """A snapshot of all ops in recording order."""
        with self._lock:
            return list(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def counts(self) -> Counts:
        """Outcome counts (cheap: maintained on append; safe to call from a progress line)."""
        with self._lock:
            c = dict(self._counts)
        done = c["ok"] + c["fail"] + c["info"]
        return Counts(
            invoked=c["invoke"],
            ok=c["ok"],
            failed=c["fail"],
            indeterminate=c["info"],
            in_flight=c["invoke"] - done,
        )

    def pairs(self) -> list[Pair]:
        """Each invocation with its completion (the process's next completion after it)."""
        pending: dict[int, Pair] = {}
        out: list[Pair] = []
        for op in self.ops:
            if op.type == "invoke":
                if op.process in pending:
                    raise ValueError(
                        f"process {op.process} invoked op {op.index} while op "
                        f"{pending[op.process].invoke.index} was still in flight"
                    )
                pair = Pair(op, None)
                pending[op.process] = pair
                out.append(pair)
            else:
                open_pair = pending.pop(op.process, None)
                if open_pair is None:
                    raise ValueError(
                        f"completion {op.index} of process {op.process} has no invocation"
                    )
                if open_pair.invoke.f != op.f:
                    raise ValueError(
                        f"completion {op.index} ({op.f}) does not match invocation "
                        f"{open_pair.invoke.index} ({open_pair.invoke.f})"
                    )
                open_pair.completion = op
        return out

    def latencies(self, f: Iterable[str] | None = None) -> list[float]:
        """Latencies (seconds) of ``ok`` operations, optionally only of functions ``f``."""
        wanted = set(f) if f is not None else None
        return [
            p.latency
            for p in self.pairs()
            if p.completion is not None
            and p.completion.type == "ok"
            and p.latency is not None
            and (wanted is None or p.invoke.f in wanted)
        ]

    def rate_series(self, bucket: float = 1.0, *, until: float | None = None) -> list[RateBucket]:
        """Completions per second in buckets of ``bucket`` seconds from the start (timeline)."""
        if bucket <= 0:
            raise ValueError("bucket must be positive")
        ops = self.ops
        end = until if until is not None else max((op.time for op in ops), default=0.0)
        n = int(end // bucket) + 1
        ok = [0] * n
        err = [0] * n
        for op in ops:
            if op.type == "invoke":
                continue
            i = int(op.time // bucket)
            if i < 0 or i >= n:
                continue
            if op.type == "ok":
                ok[i] += 1
            else:
                err[i] += 1
        return [RateBucket(i * bucket, ok[i] / bucket, err[i] / bucket) for i in range(n)]

    def span(self) -> float:
        """Seconds from the first invocation to the last op (0 for an empty history)."""
        ops = self.ops
        first = next((op.time for op in ops if op.type == "invoke"), None)
        return 0.0 if first is None else max(0.0, ops[-1].time - first)

    def throughput(self) -> float:
        """Mean ``ok`` completions per second between the first invocation and the last op."""
        span = self.span()
        return self.counts().ok / span if span > 0 else 0.0

    # -- persistence --------------------------------------------------------------------------
    def _lines(self) -> Iterator[str]:
        for op in self.ops:
            yield json.dumps(op.to_dict(), separators=(",", ":")) + "\n"

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one JSON object per op (the journal keeps the run's history next to it)."""
        target = Path(path)
        with open(target, "w", encoding="utf-8") as out:
            out.writelines(self._lines())
        return target

    def to_jsonl_gzip(self) -> bytes:
        """What :meth:`to_jsonl` writes, gzipped (mtime 0), built line by line so that a
        long history is never held twice as text."""
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
            for line in self._lines():
                out.write(line.encode())
        return buffer.getvalue()

    @classmethod
    def from_jsonl(cls, path: str | Path) -> History:
        """Read a history written by :meth:`to_jsonl` (indices and times kept)."""
        ops: list[Op] = []
        with open(path, encoding="utf-8") as src:
            for number, line in enumerate(src, 1):
                if not line.strip():
                    continue
                try:
                    ops.append(Op.from_dict(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{number}: bad history line: {exc}") from exc
        start_wall = datetime.now(UTC)
        if ops and ops[0].wall:
            start_wall = datetime.fromisoformat(ops[0].wall) - timedelta(seconds=ops[0].time)
        history = cls(start=0.0, start_wall=start_wall)
        for op in sorted(ops, key=lambda o: o.index):
            history.append(op)
        return history


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100, linear interpolation); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


__all__ = [
    "DDL_FUNCTIONS",
    "Counts",
    "History",
    "Op",
    "OpF",
    "OpType",
    "Pair",
    "RateBucket",
    "percentile",
]
