"""The local state file: every fault intent and leak-prone resource, written before it exists.

The local substrate records fault intents (before injection) and resources that must not leak
(the throwaway cluster: type ``embedded-postgres``; the network namespace: type ``netns``; the
server's own memory cgroup: type ``server-cgroup``; disk-pressure's filesystem: type
``disk-filesystem``), and
clears them once reverted. ``pggit-chaos cleanup`` (:func:`pggit_chaos.local.cleanup.cleanup`)
reverts what a crashed runner left. JSON, written atomically (tmp + ``os.replace``) under an
``fcntl`` lock, so concurrent runs sharing the file do not clobber each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pggit_chaos.config import STATE_DIR_ENV, default_state_dir
from pggit_chaos.errors import ConfigurationError
from pggit_chaos.faults.base import FaultIntent

__all__ = [
    "RESOURCE_TYPES",
    "STATE_DIR_ENV",
    "STATE_FILE_NAME",
    "Entry",
    "StateFile",
    "default_state_dir",
]

STATE_FILE_NAME = "state.json"
#: Intent types that are resources (cleaned up after the faults), not faults.
RESOURCE_TYPES = ("embedded-postgres", "netns", "server-cgroup", "disk-filesystem")


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (distinguishes a reused PID); None if dead/zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return fields[19]


@dataclass
class Entry:
    """One recorded intent and the runner (pid + start time) that wrote it."""

    intent: FaultIntent
    owner_pid: int
    owner_start: str | None

    @property
    def owner_alive(self) -> bool:
        """True while the runner that recorded it still runs."""
        return self.owner_start is not None and _start_time(self.owner_pid) == self.owner_start

    def to_dict(self) -> dict[str, Any]:
        return {"intent": self.intent.to_dict(), "owner_pid": self.owner_pid,
                "owner_start": self.owner_start}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        return cls(intent=FaultIntent.from_dict(data["intent"]),
                   owner_pid=int(data.get("owner_pid", 0)),
                   owner_start=data.get("owner_start"))


class StateFile:
    """The JSON file of pending intents; every method takes the lock for its whole access."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_state_dir() / STATE_FILE_NAME
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def in_dir(cls, folder: str | os.PathLike[str]) -> StateFile:
        """The state file ``state.json`` in ``folder``."""
        return cls(Path(folder) / STATE_FILE_NAME)

    def __repr__(self) -> str:
        return f"StateFile({str(self.path)!r})"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = open(self._lock_path, "a")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use the state folder {self.path.parent}: {exc} "
                f"(set {STATE_DIR_ENV} to a writable folder)"
            ) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _read(self) -> list[Entry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        if not text.strip():
            return []
        try:
            data = json.loads(text)
            return [Entry.from_dict(item) for item in data.get("intents", [])]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"state file {self.path} is corrupt: {exc}") from exc

    def _write(self, entries: list[Entry]) -> None:
        payload = json.dumps({"version": 1, "intents": [e.to_dict() for e in entries]}, indent=2)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def record(self, intent: FaultIntent) -> None:
        """Add (or replace, same id) an intent, owned by this process."""
        with self._locked():
            entries = [e for e in self._read() if e.intent.id != intent.id]
            entries.append(Entry(intent, os.getpid(), _start_time(os.getpid())))
            self._write(entries)

    def clear(self, intent_id: str) -> None:
        """Forget one intent (no error if it is not there)."""
        with self._locked():
            entries = self._read()
            kept = [e for e in entries if e.intent.id != intent_id]
            if len(kept) != len(entries):
                self._write(kept)

    def entries(self) -> list[Entry]:
        """Every recorded intent with its owner, oldest first."""
        with self._locked():
            return self._read()

    def pending(self) -> list[FaultIntent]:
        """Every recorded intent, oldest first."""
        return [entry.intent for entry in self.entries()]
