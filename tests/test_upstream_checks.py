"""The checks tell the truth about an upstream-shaped pgGit, and leave its tables as found.

The checks suite runs (a real pytest subprocess, profile ci, destructive checks included)
against the upstream-shaped pgGit of tests/pggit_upstream: the sound variant must pass with
zero fails and zero errors — its documented differences (trimmed messages, P0001 errors, a
create_branch that is not idempotent, ...) end as ``differs`` — and leave every pgGit row of
the user's database as it was. Each variant carrying one real upstream defect must be failed
by the check that names it, with its evidence, and still with zero errors.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos import sweep
from pggit_chaos.checks.names import SCRATCH_PREFIX
from pggit_chaos.checks.runner import ChecksResult, run_checks
from pggit_upstream import DEFECTS, apply_defect

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: Written by every DDL with nothing but a command tag: pgGit's timing metric, which names
#: no object and cannot be told apart from the user's (see docs/testing/CHECKS.md).
UNATTRIBUTABLE = {"monitoring_metrics"}
#: What the sound upstream shape documents differently from the embedded core.
DIFFERS = {
    "test_commit_message_stored_exactly",
    "test_overlong_commit_message_rejected",
    "test_colliding_custom_trinity_id_is_an_error",
    "test_concurrent_branch_creation_yields_one_branch",
    "test_increment_version_rejects_bad_input",
    "test_table_definition_tracked",
}


def _user_data(dsn: str) -> None:
    """A user's schema, rows, DDL history, commits and a branch, as in a staging database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, item text NOT NULL)")
        conn.execute("INSERT INTO shop.orders VALUES (1, 'tea'), (2, 'scones')")
        conn.execute("ALTER TABLE shop.orders ADD COLUMN qty int DEFAULT 1")
        conn.execute("SELECT pggit.commit_changes('main', 'user commit')")
        conn.execute("SELECT pggit.create_branch('feature/x')")
        conn.execute("SELECT pggit.commit_changes('feature/x', 'user branch commit')")


def _snapshot(dsn: str) -> dict[str, Any]:
    """Every row of every pggit table (but the unattributable ones), schemas, event triggers."""
    state: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in sweep.pggit_tables(conn):
            if table in UNATTRIBUTABLE:
                continue
            query = sql.SQL("SELECT x::text FROM {} AS x ORDER BY 1").format(
                sql.Identifier("pggit", table)
            )
            state[table] = [row[0] for row in conn.execute(query)]
        state["schemas"] = sorted(
            r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_'")
        )
        state["triggers"] = conn.execute(
            "SELECT evtname, evtenabled FROM pg_event_trigger ORDER BY 1"
        ).fetchall()
        state["orders"] = conn.execute("SELECT * FROM shop.orders ORDER BY id").fetchall()
    return state


def _named_scratch(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return sweep.audit(conn, SCRATCH_PREFIX).describe()


def _outcomes(result: ChecksResult) -> dict[str, str]:
    return {check.name: check.outcome for check in result.checks}


def test_sound_upstream_shape_passes_and_leaves_no_trace(upstream_dsn: str) -> None:
    _user_data(upstream_dsn)
    before = _snapshot(upstream_dsn)
    result = run_checks(upstream_dsn, profile="ci", include_destructive=True, quiet=True)
    outcomes = _outcomes(result)
    assert result.failed == 0 and result.errors == 0, [(f.name, f.message) for f in result.failures]
    assert result.verdict == "Pass" and result.exit_code == 0
    assert "upstream" in result.target, result.target
    differs = {name for name, outcome in outcomes.items() if outcome == "differs"}
    assert differs >= DIFFERS, f"expected differences not reported: {DIFFERS - differs}"
    for check in result.checks:
        if check.outcome == "differs":
            assert check.reason, f"{check.name} differs without saying how"
    skipped = {c.name: c.reason for c in result.checks if c.outcome == "skipped"}
    assert all("detect_drift" in why or "schema_hash" in why or "amcheck is not installed" in why
               or "records no FUNCTION objects" in why for why in skipped.values()), skipped
    assert result.passed >= 25
    assert _snapshot(upstream_dsn) == before, "the checks changed the user's pgGit rows"
    assert _named_scratch(upstream_dsn) == "nothing"
    # What cannot be undone is said: pgGit's timing metrics (they name no object) and the
    # sequences the checks advanced, with how far.
    assert any(r.startswith("pggit.monitoring_metrics: +") for r in result.residue), result.residue
    assert any(r.startswith("sequence pggit.objects_id_seq: ") and "(+" in r
               for r in result.residue), result.residue
    assert not [r for r in result.residue if r.startswith(("pggit.history:", "pggit.objects:"))]


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_upstream_defect_is_caught(upstream_dsn: str, defect: str) -> None:
    apply_defect(upstream_dsn, defect)
    expected = DEFECTS[defect].expected_check
    result = run_checks(upstream_dsn, profile="ci", include_destructive=True, quiet=True)
    assert result.verdict == "Fail" and result.exit_code == 1, f"{defect} passed every check"
    assert result.errors == 0, [(f.name, f.message) for f in result.failures]
    failures = {f.name: f for f in result.failures}
    assert expected in failures, f"{defect}: {expected} did not fail; failed: {sorted(failures)}"
    failure = failures[expected]
    assert failure.outcome == "failed" and failure.message and failure.seed == result.seed
    assert _named_scratch(upstream_dsn) == "nothing"
