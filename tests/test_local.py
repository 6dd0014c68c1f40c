"""The embedded PostgreSQL: starts as our child, crashes for real, leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from pggit_chaos.errors import MissingDependency
from pggit_chaos.local import EmbeddedPostgres, find_bindir

pytestmark = pytest.mark.postgres


def _postgres_pids_under(base: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(base) in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_cluster_is_utf8_and_removed_on_exit() -> None:
    with EmbeddedPostgres() as server:
        base = server.base
        assert base is not None and base.exists()
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
            assert conn.execute("SELECT 'grüße ✓'").fetchone() == ("grüße ✓",)
        assert _postgres_pids_under(base)
    assert not base.exists()
    assert _postgres_pids_under(base) == []


def test_kill_is_a_crash_and_restart_recovers_committed_data() -> None:
    with EmbeddedPostgres() as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept SELECT generate_series(1, 100)")
        victim = psycopg.connect(server.dsn())
        old_pid = server.pid
        server.kill()
        assert server.pid is None
        assert server.base is not None and _postgres_pids_under(server.base) == []
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        server.start()
        assert server.pid != old_pid
        log = server.log_file.read_text()
        assert "database system was interrupted" in log or "not properly shut down" in log
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (100,)


def test_server_settings_reach_the_server() -> None:
    with EmbeddedPostgres(
        settings={"synchronous_commit": "off", "wal_writer_delay": "5s"}
    ) as server, psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert conn.execute("SHOW wal_writer_delay").fetchone() == ("5s",)


def test_missing_binaries_name_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGGIT_CHAOS_PG_BINDIR", str(tmp_path))
    with pytest.raises(MissingDependency, match="apt-get install postgresql"):
        find_bindir()


def test_interrupted_process_leaves_no_server_behind(tmp_path: Path) -> None:
    """A process that starts a cluster and is interrupted (Ctrl-C) removes it on the way out."""
    script = textwrap.dedent(
        """
        import signal, sys, time
        from pggit_chaos.local import EmbeddedPostgres
        # Ctrl-C reaches a foreground program; a background job inherits SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        server = EmbeddedPostgres(base_dir=sys.argv[1])
        server.__enter__()
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    assert _postgres_pids_under(tmp_path)
    os.kill(proc.pid, 2)  # SIGINT, as Ctrl-C would
    proc.wait(60)
    assert _postgres_pids_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
