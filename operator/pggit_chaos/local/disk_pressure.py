"""``disk-pressure`` on the embedded server: its WAL or data folder on a small filesystem, filled.

Built by the local substrate. :class:`FaultFilesystem` is the resource: a tmpfs mounted with
``size=`` (root only) in a folder of its own, made before initdb; the embedded server's WAL
(``initdb --waldir``) or its whole data folder (``data`` is a symlink to a folder on it) lives
there, with 1 MiB WAL segments so that the end of the preallocated WAL comes within seconds.
:class:`DiskPressure` is the fault: a balloon file on that filesystem, written up to the given
percentage of it or to the last byte (``enospc``), and deleted on revert (always). With the
data folder full, a writer that needs a new page gets ``ERROR: could not extend file ...: No
space left on device``. With the WAL's filesystem full the fault also switches WAL segments
(``pg_switch_wal()``, as ``archive_timeout`` does) until the server needs a segment file it
cannot create: PostgreSQL's real reaction follows — ``PANIC: could not write to file
"pg_wal/xlogtemp.N": No space left on device``, the postmaster's crash restart, a startup
process that cannot finish its end-of-recovery checkpoint, a server that shuts down. The revert
deletes the balloon and starts the server again if it is down (as pod-kill's restart does):
crash recovery replays the WAL.
:func:`revert_balloon` and :func:`remove_filesystem` undo both from the state file's plain data
(``pggit-chaos cleanup``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from pggit_chaos.errors import FaultError, InsufficientPrivileges
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.local.server import EmbeddedPostgres

#: Folder names of the filesystems' mount points (``mkdtemp`` prefix): cleanup checks it.
MOUNT_PREFIX = "pggit-chaos-disk-"
#: The tmpfs' source name, as ``/proc/self/mountinfo`` shows it.
FS_NAME = "pggit-chaos-disk"
#: Name of the balloon file, in the filesystem's top folder (beside the server's folder).
BALLOON_NAME = ".pggit-chaos-balloon"
#: Server log messages of PostgreSQL's reaction to a full disk.
ENOSPC_MESSAGES = ("No space left on device", "could not extend file")
#: Log messages of the crash restart and of crash recovery.
RECOVERY_MESSAGES = ("terminating any other active server processes",
                     "automatic recovery in progress", "redo done at",
                     "shutting down due to startup process failure")
#: How many WAL segment switches the fault forces at most (1 MiB segments).
MAX_SWITCHES = 64
#: Seconds the revert watches a running postmaster settle (accepting, or exited).
SETTLE_SECONDS = 30.0


def _accepts(server: EmbeddedPostgres) -> bool:
    try:
        with psycopg.connect(server.socket_dsn(), autocommit=True, connect_timeout=2,
                             application_name="pggit-chaos-probe-disk") as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _mounted(path: Path) -> bool:
    """True while ``path`` is a mount point (read from ``/proc/self/mountinfo``)."""
    target = str(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return os.path.ismount(target)
    return any(line.split()[4] == target for line in lines if len(line.split()) > 4)


def _server_owner() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def usage(path: Path) -> tuple[int, int, int]:
    """(total, used, available) bytes of the filesystem holding ``path`` (``statvfs``)."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return total, total - st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize


class FaultFilesystem:
    """A tmpfs of ``size_mi`` MiB for the embedded server's WAL or data folder (root only)."""

    def __init__(self, volume: str, size_mi: int, parent: str | None = None) -> None:
        if volume not in ("wal", "data"):
            raise FaultError(f"disk-pressure: volume must be wal or data, not {volume!r}")
        self.volume = volume
        self.size_mi = int(size_mi)
        self.path = Path(tempfile.mkdtemp(prefix=MOUNT_PREFIX, dir=parent))

    @property
    def folder(self) -> Path:
        """The server's folder on the filesystem: its ``pg_wal`` or its data folder."""
        return self.path / ("pg_wal" if self.volume == "wal" else "data")

    @property
    def balloon(self) -> Path:
        return self.path / BALLOON_NAME

    def check(self) -> None:
        """Refused unless we are root (mount) and the ``postgres`` user exists."""
        if os.geteuid() != 0:
            self.remove()
            raise InsufficientPrivileges("disk-pressure mounts a filesystem for the server's "
                                         f"{self.volume} folder: run as root")

    def undo(self) -> dict[str, Any]:
        return {"kind": "disk-filesystem", "path": str(self.path)}

    def mount(self) -> None:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mi}m,mode=0755", FS_NAME,
             str(self.path)], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise FaultError(f"disk-pressure: mounting a {self.size_mi} MiB tmpfs on "
                             f"{self.path} failed: {result.stderr.strip()}")

    def before_initdb(self, base: Path) -> list[str]:
        """Mount, make the server's folder on it, and say where initdb puts it."""
        self.mount()
        self.folder.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(self.folder, *_server_owner())
        if self.volume == "wal":
            return ["--waldir", str(self.folder), "--wal-segsize=1"]
        (base / "data").symlink_to(self.folder)
        return ["--wal-segsize=1"]

    def server_settings(self) -> dict[str, object]:
        """WAL sizes that fit the filesystem (the user's ``local.postgresql`` wins): frequent
        checkpoints, so that the WAL stays far below the filesystem's size (a checks suite's
        CREATE DATABASE writes the whole template into the WAL) until the balloon comes."""
        eighth = max(4, self.size_mi // 8)
        return {"min_wal_size": "2MB", "max_wal_size": f"{eighth}MB"}

    def remove(self) -> str:
        return remove_filesystem(self.undo())


def remove_filesystem(undo: dict[str, Any]) -> str:
    """Unmount a disk-pressure filesystem (lazily if busy) and delete its mount point."""
    path = Path(str(undo["path"]))
    if not path.name.startswith(MOUNT_PREFIX):
        raise FaultError(f"{path} is not a pggit-chaos disk-pressure mount point: left alone")
    done = []
    if _mounted(path):
        result = subprocess.run(["umount", str(path)], capture_output=True, text=True,
                                timeout=30)
        if result.returncode != 0:
            result = subprocess.run(["umount", "-l", str(path)], capture_output=True,
                                    text=True, timeout=30)
        if _mounted(path):
            raise FaultError(f"could not unmount {path}: {result.stderr.strip()}")
        done.append(f"unmounted {path}")
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            raise FaultError(f"could not remove {path}")
        done.append(f"removed {path}")
    return "; ".join(done) or f"{path} was already gone"


def revert_balloon(undo: dict[str, Any]) -> str:
    """Delete a balloon file from its recorded path (nothing there: nothing to do)."""
    path = Path(str(undo["path"]))
    if path.name != BALLOON_NAME:
        raise FaultError(f"{path} is not a disk-pressure balloon: left alone")
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return f"balloon {path} was already gone"
    return f"deleted balloon {path} ({size} bytes)"


def write_balloon(path: Path, nbytes: int | None) -> int:
    """Write zeros to ``path``: ``nbytes`` of them, or (None) until ENOSPC. Returns the size."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as balloon:
        for size in (len(chunk), 4096, 1):
            piece = chunk[:size]
            while nbytes is None or written + size <= nbytes:
                try:
                    written += balloon.write(piece) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            if nbytes is not None and written >= nbytes:
                break
    return written


def _fill_percent(fill: str) -> int | None:
    """``95%`` -> 95; ``enospc`` -> None."""
    return None if fill == "enospc" else int(fill.rstrip("%"))


class DiskPressure:
    """A balloon on the server's filesystem; deleted on revert, then the server runs again."""

    type = "disk-pressure"
    recovery_from_injection = False

    def __init__(self, server: EmbeddedPostgres, filesystem: FaultFilesystem, fill: str,
                 max_balloon_mi: int, *, intent_id: str | None = None) -> None:
        self.server = server
        self.filesystem = filesystem
        self.fill = fill
        self.percent = _fill_percent(fill)
        self.max_balloon = int(max_balloon_mi) << 20
        self._id = intent_id or uuid.uuid4().hex[:12]
        self._intent: FaultIntent | None = None
        self._log_offset = 0
        #: Read at injection: the filesystem before and after the balloon.
        self.before: tuple[int, int, int] | None = None
        self.after: tuple[int, int, int] | None = None
        self.balloon_bytes = 0
        self.switches = 0
        self.switch_error = ""
        #: Whether the server was down when the balloon was deleted, and restarted by us.
        self.restarted = False
        self.deleted_balloon = False

    @property
    def _switching(self) -> bool:
        """WAL to ENOSPC: make the server need a new WAL segment file within the hold."""
        return self.percent is None and self.filesystem.volume == "wal"

    def _planned_bytes(self) -> int | None:
        total, used, available = usage(self.filesystem.path)
        if self.percent is None:
            return available
        return max(0, min(available, total * self.percent // 100 - used))

    def check(self) -> None:
        if self.server.base is None or not self.filesystem.path.is_dir():
            raise FaultError("disk-pressure: the embedded PostgreSQL and its filesystem are "
                             "not prepared")
        planned = self._planned_bytes()
        if planned is not None and planned > self.max_balloon:
            raise FaultError(f"disk-pressure: the balloon would be {planned >> 20} MiB, more "
                             f"than maxBalloonMi ({self.max_balloon >> 20}); nothing was "
                             "injected")

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self._intent = FaultIntent(
                type=self.type,
                target=f"{self.filesystem.volume} folder {self.filesystem.folder} "
                       f"({self.filesystem.size_mi} MiB tmpfs)",
                undo={"kind": "disk-balloon", "path": str(self.filesystem.balloon)},
                description=f"fill the {self.filesystem.volume} filesystem "
                            f"{'to the last byte' if self.percent is None else f'to {self.fill}'}"
                            " with a balloon file; delete it on revert",
                id=self._id)
        return self._intent

    def plan_lines(self) -> list[str]:
        total, used, _ = usage(self.filesystem.path)
        how = "to the last byte (ENOSPC)" if self.percent is None else f"to {self.fill}"
        lines = [f"{self.filesystem.volume} folder {self.filesystem.folder} on a "
                 f"{total >> 20} MiB tmpfs, {used >> 20} MiB used",
                 f"write balloon {self.filesystem.balloon} {how}"]
        if self._switching:
            lines.append("switch WAL segments until the server needs a new segment file")
        lines.append("revert: delete the balloon; start the server again if it went down")
        return lines

    def inject(self) -> None:
        self.check()
        with contextlib.suppress(OSError):
            self._log_offset = self.server.log_file.stat().st_size
        self.before = usage(self.filesystem.path)
        self.balloon_bytes = write_balloon(self.filesystem.balloon, self._planned_bytes()
                                           if self.percent is not None else None)
        self.after = usage(self.filesystem.path)
        if self._switching:
            self._switch_wal()

    def _switch_wal(self) -> None:
        """Move the server to fresh WAL segments until one cannot be created (or the cap)."""
        try:
            with psycopg.connect(self.server.socket_dsn(), autocommit=True, connect_timeout=5,
                                 application_name="pggit-chaos-disk-pressure") as conn:
                for _ in range(MAX_SWITCHES):
                    conn.execute("SELECT pg_logical_emit_message(false, 'pggit-chaos', "
                                 "'disk-pressure')")
                    conn.execute("SELECT pg_switch_wal()")
                    self.switches += 1
        except psycopg.Error as exc:
            self.switch_error = " ".join(str(exc).split())[:300]

    def revert(self) -> None:
        """Delete the balloon (always); start the server again if it is down."""
        self.deleted_balloon = True
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.balloon.unlink()
        if self.server.base is None:
            return
        # A postmaster in the middle of its crash restart may still give up (its startup
        # process could not write WAL just before the balloon went): watch until it accepts
        # connections again or has exited; then, like pod-kill's kubelet, start it again.
        deadline = time.monotonic() + SETTLE_SECONDS
        while self.server.running and time.monotonic() < deadline:
            if _accepts(self.server):
                return
            time.sleep(0.1)
        if self.server.running:
            return
        try:
            self.server.kill()
            self.server.start()
        except Exception as exc:
            raise FaultError(f"disk-pressure: PostgreSQL did not start again after the balloon "
                             f"was deleted: {exc}") from exc
        self.restarted = True

    def _log_lines(self) -> list[str]:
        try:
            with open(self.server.log_file, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The filesystem read back full (statvfs) and, to ENOSPC, PostgreSQL's own reaction
        in its log: writes failing with "No space left on device" / "could not extend file"."""
        if self.before is None or self.after is None:
            return FaultEvidence(False, "disk-pressure did not bite: no balloon was written")
        total, used, available = self.after
        percent = round(100 * used / total, 1) if total else 0.0
        lines = self._log_lines()

        def message(line: str) -> str:
            for level in ("PANIC:", "FATAL:", "ERROR:", "LOG:"):
                if level in line:
                    return level[:-1] + ": " + line.split(level, 1)[1].strip()
            return line.strip()

        enospc = [message(line) for line in lines if any(m in line for m in ENOSPC_MESSAGES)]
        panics = [line for line in lines if "PANIC:" in line]
        recovery = [message(line) for line in lines
                    if any(m in line for m in RECOVERY_MESSAGES)]
        figures: dict[str, Figure] = {
            "volume": self.filesystem.volume, "fill": self.fill,
            "filesystem_bytes": total, "used_bytes_before": self.before[1],
            "balloon_bytes": self.balloon_bytes, "available_bytes_after_fill": available,
            "used_percent_after_fill": percent, "wal_switches": self.switches,
            "enospc_log_lines": len(enospc), "panics": len(panics),
            "crash_recovery_log_lines": len(recovery), "restarted_by_revert": int(self.restarted),
            "failed_during": window.failed, "indeterminate_during": window.indeterminate,
        }
        if enospc:
            figures["first_enospc_message"] = enospc[0][:300]
        if self.percent is None:
            # The balloon was written until ENOSPC; PostgreSQL's own failure proves it bit
            # (the free space read just after may be more than 0 if the server deleted files).
            bit = self.balloon_bytes > 0 and bool(enospc)
            shown = "; ".join(dict.fromkeys(enospc[:3]))
            if bit:
                after = (" the postmaster's crash restart and recovery followed"
                         if recovery else "")
                down = "; the server had shut down: restarted after the balloon was deleted" \
                    if self.restarted else ""
                summary = (f"{self.filesystem.volume} filesystem full ({self.balloon_bytes} "
                           f"byte balloon, {available} bytes left of {total}); PostgreSQL: {shown}"
                           f"{';' if after else ''}{after}{down}; workload: "
                           f"{window.failed} failed, {window.indeterminate} indeterminate")
            else:
                why = ("no balloon was written" if not self.balloon_bytes
                       else "PostgreSQL logged no write failure (No space left on device)"
                       + (f"; switching WAL: {self.switch_error}" if self.switch_error else ""))
                summary = f"disk-pressure did not bite: {why}"
            return FaultEvidence(bit, summary, figures)
        assert self.percent is not None
        bit = percent >= self.percent and self.balloon_bytes > 0
        summary = (f"{self.filesystem.volume} filesystem {percent}% used after a "
                   f"{self.balloon_bytes} byte balloon (asked for {self.fill}); "
                   f"{len(enospc)} write failure(s) in the server log")
        if not bit:
            summary = (f"disk-pressure did not bite: the filesystem is {percent}% used after a "
                       f"{self.balloon_bytes} byte balloon (asked for {self.fill})")
        return FaultEvidence(bit, summary, figures)
