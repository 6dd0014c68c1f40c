"""disk-pressure on the embedded server: a real filesystem really full, PostgreSQL's reaction.

The server's WAL (or data folder) lives on a tmpfs the fault's filesystem mounts (root only);
the balloon fills it to ENOSPC or to a percentage. What is asserted is read from the machine and
from PostgreSQL: ``statvfs`` of the mount, the server log's PANIC / "No space left on device",
the error a writer gets, ``/proc/self/mountinfo`` after removal, rows acknowledged before the
fault still there after crash recovery. A killed ``pggit-chaos run`` leaves the mount and the
balloon; ``pggit-chaos cleanup`` removes both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import leftovers
import test_run
from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import WorkloadWindow
from pggit_chaos.local.disk_pressure import (
    BALLOON_NAME,
    MOUNT_PREFIX,
    DiskPressure,
    FaultFilesystem,
    usage,
)
from pggit_chaos.local.server import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.faults,
    pytest.mark.skipif(os.geteuid() != 0, reason="disk-pressure mounts a tmpfs: needs root"),
]


def mounted(path: Path) -> bool:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return any(line.split()[4] == str(path) for line in lines)


def disk_mounts() -> list[str]:
    """Mount points of disk-pressure filesystems (any run's)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if f"/{MOUNT_PREFIX}" in line.split()[4]]


@pytest.fixture
def tmpdir_() -> Iterator[Path]:
    """A folder of our own in /tmp (pytest keeps its own base 0700, which the server user
    could not cross while another pytest session resets it)."""
    folder = Path(tempfile.mkdtemp(prefix="disk-pressure-test-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def server_on(volume: str, size_mi: int, parent: Path) -> tuple[EmbeddedPostgres, FaultFilesystem]:
    disk = FaultFilesystem(volume, size_mi, parent=str(parent))
    server = EmbeddedPostgres(settings=disk.server_settings(), before_initdb=disk.before_initdb,
                              base_dir=parent)
    return server, disk


@pytest.fixture
def wal_server(tmpdir_: Path) -> Iterator[tuple[EmbeddedPostgres, FaultFilesystem]]:
    server, disk = server_on("wal", 64, tmpdir_)
    try:
        server.start()
        yield server, disk
    finally:
        server.destroy()
        disk.remove()
    assert not mounted(disk.path) and not disk.path.exists()


class Writer:
    """Inserts rows in its own transactions; remembers which were acknowledged."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self.acked: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                with psycopg.connect(self.server.socket_dsn(), autocommit=True,
                                     connect_timeout=2) as conn:
                    while not self._stop.is_set():
                        n += 1
                        conn.execute("INSERT INTO t VALUES (%s, repeat('x', 2000))", (n,))
                        self.acked.append(n)
            except psycopg.Error as exc:
                self.errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_wal_to_enospc_panics_the_server_and_revert_brings_it_back(
    wal_server: tuple[EmbeddedPostgres, FaultFilesystem],
) -> None:
    server, disk = wal_server
    # The WAL really is on the 64 MiB tmpfs: pg_wal is a link to the mount.
    assert (server.data_dir / "pg_wal").resolve() == disk.folder
    total, _, available = usage(disk.path)
    assert total == 64 << 20 and available > 0
    with psycopg.connect(server.socket_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int PRIMARY KEY, pad text)")
    writer = Writer(server)
    writer.start()
    fault = DiskPressure(server, disk, "enospc", 1024)
    try:
        wait(lambda: len(writer.acked) > 20, "the writer runs")
        fault.inject()
        assert disk.balloon.exists()
        assert usage(disk.path)[2] == 0, "the filesystem is full to the last byte"
        held_until = time.monotonic() + 3
        wait(lambda: bool(writer.errors) and time.monotonic() > held_until,
             "writers see the full disk")
        acked_before_revert = list(writer.acked)
        fault.revert()
        assert not disk.balloon.exists() and usage(disk.path)[2] > 0
        wait(lambda: len(writer.acked) > len(acked_before_revert) + 20, "writes resume")
    finally:
        writer.stop()
        fault.revert()
    log = server.log_file.read_text()
    assert "PANIC:  could not write to file \"pg_wal/xlogtemp." in log
    assert "No space left on device" in log
    # Writers got PostgreSQL's error (or lost their connection to the PANIC).
    assert any("No space left on device" in e or "terminat" in e or "recovery mode" in e
               or "connection" in e for e in writer.errors), writer.errors[:5]
    evidence = fault.evidence(WorkloadWindow(seconds=3.0, indeterminate=1))
    assert evidence.bit, evidence
    assert "No space left on device" in evidence.summary
    assert int(evidence.figures["available_bytes_after_fill"]) < 4 << 20
    assert float(evidence.figures["panics"]) >= 1
    # Every acknowledged row survived the PANIC and crash recovery; nothing else appeared.
    with psycopg.connect(server.socket_dsn(), autocommit=True) as conn:
        stored = {row[0] for row in conn.execute("SELECT n FROM t")}
        (bad,) = conn.execute("SELECT count(*) FROM t WHERE length(pad) <> 2000").fetchone() \
            or (None,)
    assert set(writer.acked) <= stored
    assert bad == 0


def test_data_folder_filled_to_a_percentage(tmpdir_: Path) -> None:
    server, disk = server_on("data", 128, tmpdir_)
    try:
        server.start()
        assert server.data_dir.resolve() == disk.folder
        fault = DiskPressure(server, disk, "95%", 1024)
        fault.inject()
        total, used, _ = usage(disk.path)
        assert used / total >= 0.95
        assert disk.balloon.stat().st_size == fault.balloon_bytes > 0
        with psycopg.connect(server.socket_dsn(), autocommit=True) as conn:
            conn.execute("SELECT 1")  # still up: 5% left
        fault.revert()
        assert not disk.balloon.exists()
        evidence = fault.evidence(WorkloadWindow(seconds=1.0))
        assert evidence.bit and float(evidence.figures["used_percent_after_fill"]) >= 95
        # A fill the filesystem is already past writes nothing: it did not bite.
        low = DiskPressure(server, disk, "1%", 1024)
        low.inject()
        low.revert()
        assert low.balloon_bytes == 0
        assert not low.evidence(WorkloadWindow(seconds=1.0)).bit
    finally:
        server.destroy()
        disk.remove()
    assert not mounted(disk.path) and not disk.path.exists()
    assert not any(tmpdir_.iterdir())


def test_data_folder_to_enospc_fails_writers_with_disk_full(tmpdir_: Path) -> None:
    """With the data folder full, a writer that needs a new page gets PostgreSQL's error."""
    server, disk = server_on("data", 64, tmpdir_)
    try:
        server.start()
        with psycopg.connect(server.socket_dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (n int, pad text)")
        fault = DiskPressure(server, disk, "enospc", 1024)
        fault.inject()
        errors: list[str] = []
        try:
            with psycopg.connect(server.socket_dsn(), autocommit=True,
                                 connect_timeout=2) as conn:
                conn.execute("INSERT INTO t SELECT g, repeat('x', 2000) "
                             "FROM generate_series(1, 5000) g")
        except psycopg.Error as exc:
            errors.append(str(exc))
        fault.revert()
        assert errors, "a 10 MB insert into a full data folder succeeded"
        assert "could not extend file" in errors[0], errors
        assert "No space left on device" in errors[0], errors
        assert fault.switches == 0 and server.running  # an ERROR for the writer, no PANIC
        log = server.log_file.read_text()
        assert "ERROR:  could not extend file" in log and "PANIC" not in log
        with psycopg.connect(server.socket_dsn(), autocommit=True) as conn:
            (count,) = conn.execute("SELECT count(*) FROM t").fetchone() or (None,)
        assert count == 0, "the failed insert left rows behind"
        assert fault.evidence(WorkloadWindow(seconds=1.0)).bit
    finally:
        server.destroy()
        disk.remove()
    assert not mounted(disk.path)


def test_a_balloon_above_max_balloon_is_refused_before_injection(
    wal_server: tuple[EmbeddedPostgres, FaultFilesystem],
) -> None:
    server, disk = wal_server
    fault = DiskPressure(server, disk, "enospc", 1)
    with pytest.raises(FaultError, match=r"more than maxBalloonMi \(1\); nothing was injected"):
        fault.check()
    assert not disk.balloon.exists()


def test_cleanup_removes_the_mount_and_balloon_of_a_killed_run(tmpdir_: Path) -> None:
    runner = test_run.Runner(tmpdir_)
    experiment = test_run.write_experiment(
        runner.tmp / "disk.yaml", ROOT / "experiments" / "11-disk-pressure.yaml",
        **{"spec.duration": "60s"})
    proc = runner.popen("run", str(experiment))
    balloons: list[Path] = []

    def ballooned() -> bool:
        balloons[:] = list(runner.tmpdir.glob(f"{MOUNT_PREFIX}*/{BALLOON_NAME}"))
        assert proc.poll() is None, proc.communicate()
        return bool(balloons) and "disk-pressure" in runner.pending_intents()

    try:
        wait(ballooned, "the balloon is written", 120)
        time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait(30)
    mount = balloons[0].parent
    assert mounted(mount) and balloons[0].exists(), "SIGKILL: nothing reverted it"
    assert {"disk-pressure", "disk-filesystem", "embedded-postgres"} <= set(
        runner.pending_intents())
    result = runner.run("cleanup", "--state-dir", str(runner.state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout
    assert f"deleted balloon {balloons[0]}" in result.stdout
    assert f"unmounted {mount}" in result.stdout
    assert not mounted(mount) and not mount.exists()
    assert [m for m in disk_mounts() if m.startswith(str(runner.tmpdir))] == []
    assert leftovers.postgres_processes(str(runner.tmpdir)) == []
    assert list(runner.tmpdir.iterdir()) == [], "cluster or mount folders left"
    assert runner.pending_intents() == []


def test_experiment_11_passes_with_postgresqls_enospc_in_the_journal(tmpdir_: Path) -> None:
    """``pggit-chaos run experiments/11-disk-pressure.yaml``: Pass, and the journal's evidence
    carries PostgreSQL's own words for the full WAL disk; nothing is left mounted."""
    runner = test_run.Runner(tmpdir_)
    result = runner.run("run", str(ROOT / "experiments" / "11-disk-pressure.yaml"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    evidence = journal["fault_evidence"]
    assert evidence["bit"], evidence
    assert 'could not write to file "pg_wal/xlogtemp.' in evidence["summary"], evidence
    assert "No space left on device" in evidence["figures"]["first_enospc_message"]
    assert evidence["figures"]["available_bytes_after_fill"] < 4 << 20
    assert evidence["figures"]["panics"] >= 1
    assert journal["workload"]["ok"] > 0 and journal["workload"]["lost"] == 0
    assert all(inv["passed"] for inv in journal["invariants"])
    assert [m for m in disk_mounts() if m.startswith(str(runner.tmpdir))] == []
    assert list(runner.tmpdir.iterdir()) == [] and runner.pending_intents() == []


def wait(predicate: object, what: str, timeout: float = 60) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def test_a_failed_drop_is_never_tried_again() -> None:
    """A DROP that failed (a full disk: 'could not extend file' from pgGit's history insert)
    leaves the table, but the workload never drops it again: a later successful DROP would
    put a history row under the same key as the failed one, which the checker must count as
    'failed but recorded'."""
    import random

    from pggit_chaos.engine.workload import Workload, _Client, _Table

    client = _Client(id=1, rng=random.Random(1), tables=[_Table("t1_1"), _Table("t1_2")])
    after = Workload._after
    after(None, client, "drop_table", {"table": "t1_1"}, "fail")  # type: ignore[arg-type]
    assert [t.name for t in client.tables] == ["t1_2"]
    after(None, client, "alter_table", {"table": "t1_2", "column": "c1"},  # type: ignore[arg-type]
          "fail")
    assert [t.name for t in client.tables] == ["t1_2"]  # a failed ALTER keeps its table
