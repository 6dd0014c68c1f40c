"""``pod-kill`` on the embedded server: a crash, then a restart after a delay, like a kubelet.

Built by the local substrate around an :class:`~pggit_chaos.local.server.EmbeddedPostgres`.
Also home of :func:`kill_stray_cluster`, which ``cleanup`` uses to remove a throwaway cluster
whose runner died: it kills the postmaster of that data folder (only if its command line still
names that folder) with its backends, and deletes the folder.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultIntent
from pggit_chaos.local.server import EmbeddedPostgres, child_pids

#: Folder names of throwaway clusters (``EmbeddedPostgres`` uses this mkdtemp prefix).
CLUSTER_PREFIX = "pggit-chaos-pg-"
#: Its socket folder when the cluster folder's path is too long for a unix socket.
SOCKET_PREFIX = "pggit-chaos-sock-"


class PodKill:
    """Kill the postmaster and every backend at once; a 'kubelet' thread restarts it."""

    type = "pod-kill"
    recovery_from_injection = True

    def __init__(self, server: EmbeddedPostgres, grace_period_seconds: float = 0,
                 restart_delay: float = 1.0, *, intent_id: str | None = None) -> None:
        if grace_period_seconds < 0 or restart_delay < 0:
            raise FaultError("pod-kill: gracePeriodSeconds and restartDelay must be >= 0")
        self.server = server
        self.grace_period_seconds = float(grace_period_seconds)
        self.restart_delay = float(restart_delay)
        self._id = intent_id or uuid.uuid4().hex[:12]
        self._intent: FaultIntent | None = None
        self._restart_now = threading.Event()
        self._kubelet: threading.Thread | None = None
        self._restart_error: BaseException | None = None
        #: PID of the postmaster that was killed, and of the one started afterwards.
        self.killed_pid: int | None = None
        self.restarted_pid: int | None = None
        #: ``time.monotonic()`` when the restarted server accepted connections again.
        self.restarted_at: float | None = None

    def check(self) -> None:
        """Nothing beyond owning the server: it is our child."""
        if self.server.base is None:
            raise FaultError("pod-kill: the embedded PostgreSQL has not been started")

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self.check()
            grace = f" after SIGTERM and {self.grace_period_seconds:g}s grace" \
                if self.grace_period_seconds else ""
            self._intent = FaultIntent(
                type=self.type,
                target=f"postmaster pid {self.server.pid} ({self.server.data_dir})",
                undo=cluster_undo(self.server),
                description=(
                    f"SIGKILL the postmaster and its backends{grace}, "
                    f"restart after {self.restart_delay:g}s"
                ),
                id=self._id,
            )
        return self._intent

    def plan_lines(self) -> list[str]:
        lines = []
        if self.grace_period_seconds:
            lines.append(f"SIGTERM postmaster {self.server.pid}, wait up to "
                         f"{self.grace_period_seconds:g}s")
        lines.append(f"SIGSTOP then SIGKILL postmaster {self.server.pid} and all its children")
        lines.append(f"restart it after {self.restart_delay:g}s (crash recovery, WAL replay)")
        return lines

    def inject(self) -> None:
        self.check()
        process = self.server.process
        if process is None or process.poll() is not None:
            raise FaultError("pod-kill: the PostgreSQL server is not running")
        self.killed_pid = process.pid
        if self.grace_period_seconds > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace_period_seconds
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        self.server.kill()
        self._restart_now.clear()
        self._kubelet = threading.Thread(target=self._restart_later, name="pggit-chaos-kubelet",
                                         daemon=True)
        self._kubelet.start()

    def _restart_later(self) -> None:
        self._restart_now.wait(self.restart_delay)
        try:
            self.server.start()
            self.restarted_pid = self.server.pid
            self.restarted_at = time.monotonic()
        except BaseException as exc:  # reported by revert()
            self._restart_error = exc

    def revert(self) -> None:
        """Make sure the server runs again (restart now if the kubelet has not yet)."""
        if self._kubelet is not None:
            self._restart_now.set()
            self._kubelet.join()
            self._kubelet = None
        if self.server.base is None or self.server.running:
            return
        try:
            self.server.start()
        except Exception as exc:
            first = f" (the delayed restart failed first: {self._restart_error})" \
                if self._restart_error else ""
            raise FaultError(f"pod-kill: PostgreSQL did not start again: {exc}{first}") from exc
        self.restarted_pid = self.server.pid
        self.restarted_at = time.monotonic()


def cluster_undo(server: EmbeddedPostgres) -> dict[str, Any]:
    """Undo data of a throwaway cluster: enough to find and remove it without the object."""
    return {
        "kind": "embedded-postgres",
        "base": str(server.base),
        "data_dir": str(server.data_dir),
        "socket_dir": str(server.socket_dir),
        "port": server.port,
        "host": server.host,
        "netns": server.netns,
        "pid": server.pid,
        "command": server.command(),
    }


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def postmasters_of(data_dir: str) -> list[int]:
    """PIDs of live postmasters whose command line runs exactly ``-D data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if not args or Path(args[0]).name != "postgres":
            continue
        if any(a == "-D" and b == data_dir for a, b in itertools.pairwise(args)):
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def kill_stray_cluster(undo: dict[str, Any], timeout: float = 10.0) -> str:
    """Kill the cluster's postmaster and backends (if still running) and delete its folder."""
    data_dir = str(undo["data_dir"])
    base = Path(str(undo["base"]))
    lines = []
    victims: list[int] = []
    for postmaster in postmasters_of(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGSTOP)
        victims += [postmaster, *child_pids(postmaster)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    pending = list(victims)
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if not _gone(pid)]
        if pending:
            time.sleep(0.02)
    if pending:
        raise FaultError(f"postgres processes {pending} of {data_dir} did not die")
    lines.append(f"killed {len(victims)} postgres process(es) of {data_dir}" if victims
                 else f"no postgres process of {data_dir} was running")
    if base.name.startswith(CLUSTER_PREFIX) and base.exists():
        shutil.rmtree(base, ignore_errors=True)
        if base.exists():
            raise FaultError(f"could not remove {base}")
        lines.append(f"removed {base}")
    elif base.exists():
        lines.append(f"left {base} alone: not a pggit-chaos cluster folder")
    socket_dir = Path(str(undo.get("socket_dir") or base))
    if socket_dir.name.startswith(SOCKET_PREFIX) and socket_dir.exists():
        shutil.rmtree(socket_dir, ignore_errors=True)
        lines.append(f"removed {socket_dir}")
    return "; ".join(lines)
