"""``pod-kill`` on the embedded server: a crash, then a restart after a delay, like a kubelet.

Built by the local substrate around an :class:`~pggit_chaos.local.server.EmbeddedPostgres`.
Also home of :func:`kill_stray_cluster`, which ``cleanup`` uses to remove a throwaway cluster
whose runner died: it kills the postmaster of that data folder (only if its command line still
names that folder) with its backends, and any PostgreSQL program still working in the folder
(an initdb of a runner killed while the server was starting), and deletes the folder.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.local.server import CLUSTER_PREFIX, SOCKET_PREFIX, EmbeddedPostgres, child_pids
from pggit_chaos.local.state import StateFile

#: Server log messages that only crash recovery writes (PostgreSQL 10 and later).
CRASH_RECOVERY_MESSAGES = (
    "database system was interrupted",
    "was not properly shut down; automatic recovery in progress",
    "redo starts at",
    "redo done at",
)


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
        #: ``time.monotonic()`` when the kill was done.
        self.killed_at: float | None = None
        #: Backends of the killed postmaster, read just before the kill.
        self.killed_backends: list[int] = []
        self._log_offset = 0
        self._started_before: str | None = None

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
        # The baseline of the evidence: who runs now, since when, and where the log ends.
        self.killed_backends = child_pids(process.pid)
        self._started_before = _postmaster_start_time(self.server)
        with contextlib.suppress(OSError):
            self._log_offset = self.server.log_file.stat().st_size
        if self.grace_period_seconds > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace_period_seconds
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        self.server.kill()
        self.killed_at = time.monotonic()
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

    def _recovery_log_lines(self) -> list[str]:
        """Crash-recovery messages the server logged since the kill (message text only)."""
        try:
            with open(self.server.log_file, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            if any(message in line for message in CRASH_RECOVERY_MESSAGES):
                found.append(line.split("LOG:", 1)[-1].strip())
        return found

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The killed PIDs are gone, a new postmaster runs, and crash recovery ran.

        Read from /proc (the old PIDs), the server log written since the kill, and
        ``pg_postmaster_start_time()`` before and after.
        """
        if self.killed_pid is None:
            return FaultEvidence(False, "pod-kill did not bite: nothing was killed")
        victims = [self.killed_pid, *self.killed_backends]
        survivors = [pid for pid in victims if not _gone(pid)]
        new_pid = self.server.pid if self.server.running else None
        recovery = self._recovery_log_lines()
        started_after = _postmaster_start_time(self.server) if new_pid else None
        restarted = new_pid is not None and new_pid != self.killed_pid
        new_start = (started_after is not None and self._started_before is not None
                     and started_after != self._started_before)
        figures: dict[str, Figure] = {
            "killed_postmaster_pid": self.killed_pid,
            "killed_backends": len(self.killed_backends),
            "surviving_processes": len(survivors),
            "new_postmaster_pid": new_pid or 0,
            "crash_recovery_log_lines": len(recovery),
        }
        if self.killed_at is not None and self.restarted_at is not None:
            figures["down_seconds"] = round(self.restarted_at - self.killed_at, 3)
        if self._started_before and started_after:
            figures["postmaster_start_before"] = self._started_before
            figures["postmaster_start_after"] = started_after
        bit = not survivors and restarted and bool(recovery or new_start)
        down = (f" after {figures['down_seconds']:.2f} s down" if "down_seconds" in figures
                else "")
        proof = (f"crash recovery ran (log: {'; '.join(recovery[:2])})" if recovery
                 else "a new pg_postmaster_start_time()" if new_start
                 else "no crash recovery in the server log")
        if bit:
            summary = (f"postmaster {self.killed_pid} and {len(self.killed_backends)} "
                       f"backend(s) SIGKILLed; restarted as pid {new_pid}{down}; {proof}")
        else:
            why = (f"{len(survivors)} killed process(es) still alive" if survivors
                   else "the server was not restarted" if not restarted else proof)
            summary = f"pod-kill did not bite: {why}"
        return FaultEvidence(bit, summary, figures)


def _postmaster_start_time(server: EmbeddedPostgres) -> str | None:
    """``pg_postmaster_start_time()`` over the unix socket; None when it does not answer."""
    import psycopg

    try:
        with psycopg.connect(server.socket_dsn(), connect_timeout=2, autocommit=True,
                             application_name="pggit-chaos-probe-evidence") as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()
    except (psycopg.Error, AssertionError):
        return None
    return str(row[0]) if row else None


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


#: Programs that work in a cluster's folder: the server and its backends, and the tools the
#: embedded server runs (a runner killed mid-initdb leaves initdb and its postgres running).
PG_PROGRAMS = frozenset({"postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_ctl"})


def _under(path: str, folders: tuple[str, ...]) -> bool:
    return any(path == folder or path.startswith(folder + "/") for folder in folders)


def working_in(base: str | os.PathLike[str]) -> list[int]:
    """PIDs of live PostgreSQL programs (:data:`PG_PROGRAMS`) whose working folder is in
    ``base`` or whose command line names a path in it (a postmaster, its backends, an initdb
    or pg_basebackup still filling the folder)."""
    folders = tuple({str(Path(base)), os.path.realpath(base)})
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "exe")).name not in PG_PROGRAMS:
                continue
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        pid = int(entry.name)
        if _gone(pid):
            continue
        if _under(cwd, folders) or any(_under(arg, folders) for arg in _cmdline(pid)):
            found.append(pid)
    return found


def kill_stray_cluster(undo: dict[str, Any], timeout: float = 10.0) -> str:
    """Kill the cluster's postmaster and backends (if still running), any initdb or other
    PostgreSQL program still working in its folder, and delete the folder."""
    data_dir = str(undo["data_dir"])
    base = Path(str(undo["base"]))
    ours = base.name.startswith(CLUSTER_PREFIX)
    lines = []
    victims: list[int] = []
    # Rounds until nothing is found: an initdb stopped mid-fork may have a child the last scan
    # missed (each round stops everything it finds first, so nothing forks meanwhile).
    for _ in range(10):
        found: list[int] = []
        for postmaster in postmasters_of(data_dir):
            found += [postmaster, *child_pids(postmaster)]
        if ours:
            found += working_in(base)
        found = [pid for pid in dict.fromkeys(found) if pid not in victims]
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        victims += found
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
    if ours and base.exists():
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


@contextlib.contextmanager
def recorded_embedded_pggit(
    state: StateFile, description: str, *, dbname: str = "pggit",
) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """:func:`~pggit_chaos.local.server.embedded_pggit` whose folders are in ``state``
    before they exist (as the local substrate's server): whatever a SIGKILL leaves, from
    initdb on, ``pggit-chaos cleanup`` finds and removes. The record is cleared once the
    cluster is destroyed; a folder that could not be removed stays recorded."""
    from pggit_chaos.pggit import install

    server = EmbeddedPostgres()
    server.reserve()
    intent = FaultIntent(type="embedded-postgres", target=str(server.data_dir),
                         undo=cluster_undo(server), description=description)
    state.record(intent)
    try:
        server.start()
        dsn = server.create_database(dbname)
        install(dsn)
        yield server, dsn
    finally:
        server.destroy()  # raises when a folder stays: then so does the record
        state.clear(intent.id)
