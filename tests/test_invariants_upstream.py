"""The invariant checker against an upstream-shaped pgGit: the same invariants, where it keeps them.

A real workload runs against the upstream-shaped pgGit of ``tests/pggit_upstream`` (history
linked to objects by ``object_id`` only, enums, ``content_hash`` left NULL, no
``detect_drift()``, objects copied into every new branch, trimmed messages). The sound shape
passes, with the hash comparison it gives nothing to check against *skipped* (said so, not a
hollow pass); the real upstream defect ``no_commit_chain`` fails the chain invariant with its
evidence; damage done behind the workload's back is found as on the embedded core; a shape
nobody foresaw makes an invariant an *error* (the run cannot Pass) instead of crashing the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pggit_chaos.engine.history import History
from pggit_chaos.engine.invariants import InvariantReport, check_invariants
from pggit_chaos.engine.workload import commit_message_prefix, run_branch, run_schema
from pggit_upstream import apply_defect
from test_invariants import _acked_commits, _trigger_disable_run, _workload

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent

#: The invariants of every report, whatever pgGit is installed.
INVARIANTS = {
    "commits-durable",
    "trinity-ids-unique",
    "no-unexpected-commits",
    "commit-chain-linear",
    "branch-heads-valid",
    "event-triggers-enabled",
    "ddl-tracked",
    "ddl-in-catalog",
    "schema-hashes",
}


def _created_tables(history: History) -> list[str]:
    return [
        p.invoke.value["table"]
        for p in history.pairs()
        if p.invoke.f == "create_table" and p.outcome == "ok"
    ]


def _failed(report: InvariantReport) -> set[str]:
    return {r.name for r in report.failures}


@pytest.fixture
def upstream_run(upstream_dsn: str) -> tuple[str, History, str]:
    """A fresh upstream-shaped database after a passing mixed workload: (dsn, history, run_id)."""
    history, run_id = _workload(upstream_dsn)
    report = check_invariants(upstream_dsn, history, run_id)
    assert report.passed, report.to_dict()
    return upstream_dsn, history, run_id


def test_sound_upstream_shape_passes_every_invariant(
    upstream_run: tuple[str, History, str],
) -> None:
    dsn, history, run_id = upstream_run
    report = check_invariants(dsn, history, run_id)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["shape"].startswith("upstream pgGit 0.1.3")
    assert {r["name"] for r in data["invariants"]} == INVARIANTS
    c = data["counts"]
    assert c["invoked"] == c["ok"] + c["failed"] + c["indeterminate"] == history.counts().invoked
    assert c["lost"] == c["duplicated"] == c["unexpected"] == 0
    assert report.unsure == [] and report.passed
    # What was evaluated was really evaluated: the DDL was found through object_id -> objects.
    evaluated = {r.name: r for r in report.invariants if r.outcome == "passed"}
    assert set(evaluated) == INVARIANTS - {"schema-hashes"}
    n_ddl = sum(1 for p in history.pairs() if p.invoke.f != "commit" and p.outcome == "ok")
    assert n_ddl > 0
    assert evaluated["ddl-tracked"].message == (
        f"all {n_ddl} acknowledged DDL operations are in pggit.history"
    )
    assert "pggit_ddl_trigger (ddl_command_end)" in evaluated["event-triggers-enabled"].message
    # The hash comparison has nothing to compare with: skipped, saying why, not a hollow pass.
    hashes = report.invariant("schema-hashes")
    assert hashes.outcome == "skipped" and hashes.passed
    assert hashes.message.startswith("not checked: recorded vs live hash")
    assert "content_hash is NULL" in hashes.message and "detect_drift" in hashes.message
    assert "tracking agrees with the catalog" in hashes.message
    assert data["skipped"] == [f"invariant schema-hashes {hashes.message}"]
    assert report.drift == []


def test_no_commit_chain_defect_fails_the_chain_with_evidence(upstream_dsn: str) -> None:
    apply_defect(upstream_dsn, "no_commit_chain")
    history, run_id = _workload(upstream_dsn)
    report = check_invariants(upstream_dsn, history, run_id)
    assert not report.passed
    assert _failed(report) == {"commit-chain-linear"}
    assert report.unsure == []
    chain = report.invariant("commit-chain-linear")
    assert chain.outcome == "failed"
    assert chain.message.startswith(
        f"pgGit keeps no commit chain: the {len(_acked_commits(history))} commits of "
        f"{run_branch(run_id)} carry no parent and its head never moves"
    )
    assert chain.examples[0].startswith("commits carry no parent: ")
    assert "with parent_commit_hash NULL" in chain.examples[0]
    assert chain.examples[1] == (
        f"head never moves: {run_branch(run_id)} has {len(_acked_commits(history))} commits "
        "but its head is NULL"
    )
    # Nothing was lost: the commits are all there, they just form no chain.
    assert report.counts.lost == report.counts.duplicated == report.counts.unexpected == 0


def test_deleted_acknowledged_commit_is_lost(upstream_run: tuple[str, History, str]) -> None:
    dsn, history, run_id = upstream_run
    acked = _acked_commits(history)
    message, trinity_id = acked[len(acked) // 2]  # a middle one: not the head
    with psycopg.connect(dsn, autocommit=True) as conn:
        deleted = conn.execute("DELETE FROM pggit.commits WHERE hash = %s", (trinity_id,))
        assert deleted.rowcount == 1
    report = check_invariants(dsn, history, run_id)
    assert not report.passed and report.counts.lost == 1
    lost = report.invariant("commits-durable")
    assert not lost.passed and message in lost.examples[0] and trinity_id in lost.examples[0]
    chain = report.invariant("commit-chain-linear")
    assert not chain.passed and f"parent commit {trinity_id} does not exist" in chain.examples
    assert report.counts.duplicated == report.counts.unexpected == 0


def test_deleted_history_row_is_lost_ddl(upstream_run: tuple[str, History, str]) -> None:
    """Upstream's history names no object: the row is found, and missed, through object_id."""
    dsn, history, run_id = upstream_run
    table = _created_tables(history)[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        deleted = conn.execute(
            "DELETE FROM pggit.history h USING pggit.objects o WHERE o.id = h.object_id"
            " AND o.schema_name = %s AND o.object_name = %s AND h.change_type = 'CREATE'",
            (run_schema(run_id), table),
        )
        assert deleted.rowcount == 1
    report = check_invariants(dsn, history, run_id)
    assert not report.passed and report.counts.lost == 1
    result = report.invariant("ddl-tracked")
    assert not result.passed and f"create_table {run_schema(run_id)}.{table} " in result.examples[0]


def test_objects_copied_into_a_new_branch_are_not_counted_twice(
    upstream_run: tuple[str, History, str],
) -> None:
    """create_branch copies every object row: the live database is still the rows on main."""
    dsn, history, run_id = upstream_run
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pggit.create_branch('feature-copy')")
        row = conn.execute(
            "SELECT count(*) FROM pggit.objects WHERE schema_name = %s"
            " AND branch_name = 'feature-copy'",
            (run_schema(run_id),),
        ).fetchone()
        assert row is not None and row[0] > 0
    report = check_invariants(dsn, history, run_id)
    assert report.passed, report.to_dict()
    assert report.drift == []


def test_untracked_drop_fails_though_hashes_are_not_recorded(
    upstream_run: tuple[str, History, str],
) -> None:
    """Tracking vs catalog needs no hash: a table dropped behind pgGit's back is found."""
    dsn, history, run_id = upstream_run
    schema = run_schema(run_id)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT object_name FROM pggit.objects WHERE schema_name = %s AND is_active"
            " AND object_type = 'TABLE' AND branch_name = 'main' ORDER BY object_name LIMIT 1",
            (schema,),
        ).fetchone()
        assert row is not None
        table = row[0]
        conn.execute("SET session_replication_role = replica")  # event triggers do not fire
        conn.execute(
            sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        )
    report = check_invariants(dsn, history, run_id)
    assert (table, "missing") in [(d.table, d.kind) for d in report.drift]
    hashes = report.invariant("schema-hashes")
    assert hashes.outcome == "failed" and table in hashes.examples[0]
    assert "ddl-in-catalog" in _failed(report) and report.counts.lost >= 1


def test_trimmed_messages_are_not_lost(upstream_dsn: str) -> None:
    """Upstream trims the spaces around a message: the commit is there, under the trimmed text."""
    run_id = "trimmed"
    branch = run_branch(run_id)
    prefix = commit_message_prefix(run_id)
    history = History()
    with psycopg.connect(upstream_dsn, autocommit=True) as conn:
        for n in range(3):
            value = {"branch": branch, "message": f"  {prefix}0:{n} "}
            history.record(0, "invoke", "commit", value)
            row = conn.execute(
                "SELECT pggit.commit_changes(%s, %s)", (branch, value["message"])
            ).fetchone()
            assert row is not None
            history.record(0, "ok", "commit", value, result=str(row[0]))  # type: ignore[arg-type]
        stored = conn.execute(
            "SELECT message FROM pggit.commits WHERE left(message, %s) = %s ORDER BY id",
            (len(prefix), prefix),
        ).fetchall()
        assert [m for (m,) in stored] == [f"{prefix}0:{n}" for n in range(3)]
    report = check_invariants(upstream_dsn, history, run_id)
    assert report.passed, report.to_dict()
    assert report.counts.lost == report.counts.unexpected == 0


def test_event_triggers_are_found_whatever_their_names(
    upstream_run: tuple[str, History, str],
) -> None:
    dsn, history, run_id = upstream_run
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger RENAME TO track_everything")
    report = check_invariants(dsn, history, run_id)
    result = report.invariant("event-triggers-enabled")
    assert result.passed and "track_everything (ddl_command_end)" in result.message
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER EVENT TRIGGER pggit_drop_trigger DISABLE")
    result = check_invariants(dsn, history, run_id).invariant("event-triggers-enabled")
    assert not result.passed and result.examples == ["event trigger pggit_drop_trigger is disabled"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP EVENT TRIGGER pggit_drop_trigger")
    result = check_invariants(dsn, history, run_id).invariant("event-triggers-enabled")
    assert result.examples == ["no event trigger on sql_drop calls a pggit function"]


def test_an_unforeseen_shape_is_an_error_not_a_crash(
    upstream_run: tuple[str, History, str],
) -> None:
    """A column the checker relies on is gone: those invariants cannot be evaluated. They
    violate nothing and are no pass either: the report says why the run cannot Pass."""
    dsn, history, run_id = upstream_run
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE pggit.branches RENAME COLUMN head_commit_hash TO tip")
    report = check_invariants(dsn, history, run_id)
    errors = {r.name: r for r in report.invariants if r.outcome == "error"}
    assert set(errors) == {"commit-chain-linear", "branch-heads-valid"}
    for result in errors.values():
        assert result.passed  # nothing was violated ...
        assert result.message.startswith("not checked: could not be evaluated")
        assert "UndefinedColumn" in result.message and "head_commit_hash" in result.message
    assert report.passed  # ... so nothing fails, but the run cannot Pass either:
    assert report.unsure == [
        f"invariant {name} {errors[name].message}"
        for name in ("commit-chain-linear", "branch-heads-valid")
    ]
    # Everything else was still evaluated.
    assert {r.name for r in report.invariants if r.outcome == "passed"} == INVARIANTS - {
        "commit-chain-linear",
        "branch-heads-valid",
        "schema-hashes",
    }


def test_connection_kill_run_against_upstream_ends_with_a_verdict(
    upstream_dsn: str, tmp_path: Path
) -> None:
    """The real command: a verdict (Pass, or Inconclusive with a reason), never an ERROR."""
    reports = tmp_path / "reports"
    env = {**os.environ, "PGGIT_CHAOS_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "120"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pggit_chaos.cli",
            "run",
            "--quiet",
            "--dsn",
            upstream_dsn,
            "--report-dir",
            str(reports),
            str(ROOT / "experiments" / "06-connection-kill.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode in (0, 3), output
    assert "internal error" not in output
    (journal_path,) = reports.glob("*/journal.json")
    journal = json.loads(journal_path.read_text())
    assert journal["verdict"] in ("Pass", "Inconclusive"), journal["reason"]
    if journal["verdict"] == "Inconclusive":
        assert journal["reason"]
    invariants = {inv["name"]: inv for inv in journal["invariants"]}
    assert set(invariants) == INVARIANTS
    assert all(inv["passed"] for inv in invariants.values())
    assert invariants["schema-hashes"]["message"].startswith("not checked: ")
    assert journal["workload"]["ok"] > 0 and journal["workload"]["lost"] == 0


def test_trigger_disable_window_on_upstream(upstream_dsn: str) -> None:
    """Untracked DDL inside a real disabled-trigger window: explained where the shape can show
    it (created/dropped tables against the catalog), an untracked ALTER said to be unverifiable
    without a recorded hash; outside a misplaced window the same DDL is lost."""
    history, run_id, window = _trigger_disable_run(upstream_dsn)
    report = check_invariants(
        upstream_dsn, history, run_id, fault_window=window, fault_type="trigger-disable"
    )
    assert report.passed, report.to_dict()
    assert report.unsure == [] and report.counts.lost == 0
    tracking = report.invariant("tracking-window")
    assert tracking.outcome == "passed" and "after the window tracked" in tracking.message
    _start, end = window
    misplaced = check_invariants(
        upstream_dsn,
        history,
        run_id,
        fault_window=(end + 0.1, end + 0.2),
        fault_type="trigger-disable",
    )
    assert not misplaced.passed and misplaced.counts.lost > 0
