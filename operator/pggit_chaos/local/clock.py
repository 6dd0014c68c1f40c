"""``clock-skew`` on one machine: the embedded server's clock moved by libfaketime.

For a ``clock-skew`` experiment the local substrate starts the embedded server with Debian's
libfaketime preloaded (:func:`faketime_environment`): the library reads the clock offset from a
file (``FAKETIME_TIMESTAMP_FILE``) at every clock call (``FAKETIME_NO_CACHE``), and leaves the
monotonic clock alone. :class:`ClockSkew` writes the offset into that file at injection and
``+0`` at the revert: no restart. The file belongs to the throwaway cluster, which
``pggit-chaos cleanup`` removes after a crashed run, so a runner that dies leaves no skewed
server behind.

Evidence: the server's ``clock_timestamp()`` read against this machine's clock before the
injection, during the window and after the revert.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from pggit_chaos.errors import FaultError, MissingDependency
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow

if TYPE_CHECKING:
    from pggit_chaos.local.server import EmbeddedPostgres

__all__ = ["LIBFAKETIME", "ClockSkew", "faketime_environment", "find_libfaketime",
           "server_skew", "start_with_faketime"]

#: Where Debian's ``faketime`` package puts the library (multiarch folders are searched too).
LIBFAKETIME = "libfaketime.so.1"
_SEARCH = ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime",
           "/usr/lib/faketime", "/usr/local/lib/faketime")
#: The offset file's content when the clock is not skewed.
NO_OFFSET = "+0\n"
#: The skew read from the server may differ from the offset by this much (query round trip).
TOLERANCE_SECONDS = 5.0


def find_libfaketime() -> Path:
    """The libfaketime shared object; a one-line error naming the package when missing."""
    for folder in _SEARCH:
        candidate = Path(folder) / LIBFAKETIME
        if candidate.is_file():
            return candidate
    raise MissingDependency("clock-skew needs libfaketime: apt-get install faketime")


def faketime_environment(offset_file: Path) -> dict[str, str]:
    """The server's environment: the library preloaded, its offset read from ``offset_file``."""
    return {
        "LD_PRELOAD": str(find_libfaketime()),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def start_with_faketime(server: EmbeddedPostgres) -> Path:
    """Give an initialised (not yet started) server libfaketime and its offset file (+0)."""
    assert server.base is not None, "initialise the server first"
    offset_file = server.base / "faketime-offset"
    environment = faketime_environment(offset_file)
    offset_file.write_text(NO_OFFSET)
    offset_file.chmod(0o644)
    server.environment.update(environment)
    return offset_file


def server_skew(dsn: str) -> float:
    """Seconds the server's ``clock_timestamp()`` is ahead of this machine's clock (negative:
    behind), measured at the middle of the query's round trip."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5,
                         application_name="pggit-chaos-probe-clock") as conn:
        before = time.time()
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        after = time.time()
    assert row is not None
    return float(row[0]) - (before + after) / 2


class ClockSkew:
    """The embedded server's clock jumps by ``offset`` seconds for the window."""

    type = "clock-skew"
    recovery_from_injection = False

    def __init__(self, dsn: str, offset_file: Path, offset: float, text: str) -> None:
        self.dsn = dsn
        self.offset_file = offset_file
        self.offset = offset
        self.text = text
        self._intent: FaultIntent | None = None
        self.before: float | None = None
        self.during: float | None = None
        self.after: float | None = None

    def check(self) -> None:
        if not self.offset_file.is_file():
            raise FaultError("clock-skew: the embedded server was not started with libfaketime "
                             "(prepare() ran for another fault type)")

    def plan_lines(self) -> list[str]:
        return [f"write {self.text} into {self.offset_file} (libfaketime in the server reads "
                "it at every clock call: no restart), then +0 at the revert"]

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self._intent = FaultIntent(
                type=self.type, target=f"embedded server clock ({self.offset_file})",
                undo={"kind": "thread", "what": "clock offset of the embedded server (a file "
                      "of its throwaway cluster, removed with it)"},
                description=f"server clock jumps {self.text}")
        return self._intent

    def _write(self, content: str) -> None:
        tmp = self.offset_file.with_suffix(".tmp")
        tmp.write_text(content)
        tmp.chmod(0o644)
        tmp.replace(self.offset_file)  # atomic: the server never reads half a line

    def inject(self) -> None:
        self.check()
        self.before = server_skew(self.dsn)
        seconds = round(self.offset)
        self._write(f"{seconds:+d}\n")
        self.during = server_skew(self.dsn)

    def revert(self) -> None:
        if self.offset_file.is_file():
            self._write(NO_OFFSET)
        try:
            self.after = server_skew(self.dsn)
        except psycopg.Error:
            self.after = None  # the evidence says it could not be read

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        if self.during is None or self.before is None:
            return FaultEvidence(False, "clock-skew did not bite: the offset was never written")
        moved = self.during - self.before
        figures: dict[str, Figure] = {
            "offset_seconds": self.offset,
            "skew_before_seconds": round(self.before, 3),
            "skew_during_seconds": round(self.during, 3),
        }
        if self.after is not None:
            figures["skew_after_seconds"] = round(self.after, 3)
        after = "unreadable" if self.after is None else f"{self.after:+.1f} s"
        text = (f"server clock_timestamp() {self.before:+.1f} s from this machine's before, "
                f"{self.during:+.1f} s during the window (offset {self.text}), {after} after "
                f"the revert (libfaketime, no restart); {window.describe()}")
        if abs(moved - self.offset) <= TOLERANCE_SECONDS:
            return FaultEvidence(True, text, figures)
        return FaultEvidence(False, f"clock-skew did not bite: {text}", figures)
