"""The console script's small commands: install-pggit, crd, cleanup, settings errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from pggit_chaos.pggit import health
from pggit_chaos.spec import build_crd

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pggit_chaos.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_install_pggit_twice_is_harmless_and_healthy(empty_dsn: str) -> None:
    first = cli("install-pggit", "--dsn", empty_dsn)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int)")
    second = cli("install-pggit", "--dsn", empty_dsn)
    assert second.returncode == 0, second.stderr
    assert "installed" in second.stdout
    assert {row.status for row in health(empty_dsn)} == {"healthy"}
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pggit.history WHERE object_name = 'kept'"
        ).fetchone()
    assert rows == (1,), "reinstalling must keep the recorded history"


def test_install_pggit_unreachable_is_one_line_exit_2() -> None:
    result = cli("install-pggit", "--dsn", "postgresql://nobody:secret@127.0.0.1:1/none")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1" in lines[0]
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_crd_command_prints_the_generated_crd() -> None:
    result = cli("crd")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == build_crd()


def test_cleanup_with_nothing_recorded(tmp_path: Path) -> None:
    result = cli("cleanup", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nothing to clean up" in result.stdout


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = cli(
        "run",
        "--dry-run",
        str(ROOT / "experiments" / "01-pod-kill.yaml"),
        env={"PGGIT_CHAOS_METRICS_PORT": "many", "PGGIT_CHAOS_STATE_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "PGGIT_CHAOS_METRICS_PORT" in result.stderr and "Traceback" not in result.stderr
