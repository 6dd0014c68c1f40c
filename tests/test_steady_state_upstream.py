"""A run against a pgGit without a usable health_check() ends with a verdict, not "invalid input".

Upstream pgGit cb54478 has no ``health_check()``, v0.2.1's always errors. The probe then judges
pgGit by what every pgGit has (its tables readable, its event triggers enabled): a missing
function is said in the steady state, a failing one is a finding that fails the run, named in
one line without the failing query's text. So is a workload setup that meets a pgGit defect
(upstream's first create_branch after an install fails once). Real PostgreSQL (the session's
embedded server), the upstream-shaped pgGit of tests/pggit_upstream, the real console script
for whole runs.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from pggit_chaos.probe import probe_database
from pggit_upstream import apply_defect
from test_run import ROOT, Runner, write_experiment

pytestmark = [pytest.mark.postgres]

EXPERIMENT = ROOT / "experiments" / "08-trigger-disable.yaml"


def _drop_health_check(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP FUNCTION pggit.health_check()")


def _short(tmp_path: Path) -> Path:
    return write_experiment(
        tmp_path / "short.yaml", EXPERIMENT,
        **{"spec.duration": "2s", "spec.verification.checks": []},
    )


def test_probe_without_health_check_uses_tables_and_triggers(upstream_dsn: str) -> None:
    _drop_health_check(upstream_dsn)
    probe = probe_database(upstream_dsn, 5.0)
    assert probe.reachable and probe.healthy, probe
    assert "pgGit has no health_check()" in probe.detail and not probe.finding
    assert probe.components == {"objects": "healthy", "history": "healthy",
                                "event_triggers": "healthy"}
    with psycopg.connect(upstream_dsn, autocommit=True) as conn:
        conn.execute("ALTER EVENT TRIGGER pggit_drop_trigger DISABLE")
        try:
            disabled = probe_database(upstream_dsn, 5.0)
        finally:
            conn.execute("ALTER EVENT TRIGGER pggit_drop_trigger ENABLE")
    assert disabled.reachable and not disabled.healthy
    assert "event triggers disabled: pggit_drop_trigger" in disabled.detail


def test_probe_of_a_failing_health_check_is_a_finding_without_sql(upstream_dsn: str) -> None:
    apply_defect(upstream_dsn, "health_check_errors")
    probe = probe_database(upstream_dsn, 5.0)
    assert probe.reachable and probe.healthy, probe
    assert probe.finding.startswith("pggit.health_check() fails: unrecognized format()"), probe
    for fragment in ("LINE 1", "^", "HINT", "CONTEXT", "SELECT"):
        assert fragment not in probe.detail, probe.detail


def test_run_without_health_check_ends_with_a_verdict(tmp_path: Path, upstream_dsn: str) -> None:
    _drop_health_check(upstream_dsn)
    runner = Runner(tmp_path)
    done = runner.run("run", "--quiet", "--dsn", upstream_dsn, str(_short(tmp_path)))
    assert done.returncode in (0, 1, 3), done.stdout[-2000:] + done.stderr
    (journal,) = runner.journals()
    assert journal["verdict"] in ("Pass", "Fail", "Inconclusive"), journal["reason"]
    steady = next(p for p in journal["phases"] if p["phase"] == "SteadyState")
    assert "pgGit has no health_check()" in steady["detail"], steady


def test_run_with_a_failing_health_check_fails_naming_it(tmp_path: Path, upstream_dsn: str) -> None:
    apply_defect(upstream_dsn, "health_check_errors")
    runner = Runner(tmp_path)
    done = runner.run("run", "--quiet", "--dsn", upstream_dsn, str(_short(tmp_path)))
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    (journal,) = runner.journals()
    assert journal["verdict"] == "Fail"
    assert "pggit.health_check() fails: unrecognized format() type specifier" in journal["reason"]
    assert "LINE 1" not in journal["reason"] and "invalid input" not in done.stderr


def test_run_whose_first_branch_fails_once_ends_with_a_fail(
    tmp_path: Path, upstream_dsn: str
) -> None:
    """Upstream's first create_branch after an install collides with 'main' (23505), a second
    call works: the run goes on and fails naming it, instead of 'workload setup failed'."""
    apply_defect(upstream_dsn, "first_branch_fails")
    runner = Runner(tmp_path)
    done = runner.run("run", "--quiet", "--dsn", upstream_dsn, str(_short(tmp_path)))
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    (journal,) = runner.journals()
    assert journal["verdict"] == "Fail" and journal["injected_at"], journal["reason"]
    assert "failed once and worked when called again: duplicate key value" in journal["reason"]
    assert "LINE 1" not in journal["reason"]
