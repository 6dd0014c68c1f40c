"""The invariant checker really detects problems: every test breaks the database a real way.

A short real workload runs against a fresh pgGit database; the test then damages what pgGit
stored (as a broken pgGit or a real fault would) and asserts the checker names it. Tampering
that pgGit's own constraints forbid is done with ``session_replication_role = replica``
(FK triggers and event triggers off in that session) or by dropping the constraint first.
"""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
from psycopg import sql

from pggit_chaos.engine.history import History
from pggit_chaos.engine.invariants import InvariantReport, check_invariants, cleanup_run
from pggit_chaos.engine.workload import Workload, commit_message_prefix, run_branch, run_schema
from waits import acknowledged, run_until, until

pytestmark = pytest.mark.postgres


def _workload(dsn: str, run_id: str | None = None) -> tuple[History, str]:
    """A mixed workload, run until what the tests tamper with exists, however slow the machine:
    60 operations, commits enough to pick a middle one, a table created and still there."""
    history = History()
    load = Workload(dsn, clients=4, rate=0, op_timeout=5, history=history, run_id=run_id)

    def enough() -> bool:
        return (
            history.counts().ok >= 60
            and acknowledged(history, "commit") >= 5
            and acknowledged(history, "create_table") > acknowledged(history, "drop_table")
        )

    asyncio.run(run_until(load, enough, "60 operations, 5 commits and a live table"))
    return history, load.run_id


def _acked_commits(history: History) -> list[tuple[str, str]]:
    return [
        (p.invoke.value["message"], p.completion.result or "")
        for p in history.pairs()
        if p.invoke.f == "commit" and p.completion is not None and p.outcome == "ok"
    ]


def _failed(report: InvariantReport) -> set[str]:
    return {r.name for r in report.failures}


@pytest.fixture
def run(pggit_dsn: str) -> tuple[str, History, str]:
    """A fresh database after a passing 1 s mixed workload: (dsn, history, run_id)."""
    history, run_id = _workload(pggit_dsn)
    report = check_invariants(pggit_dsn, history, run_id)
    assert report.passed, report.to_dict()
    assert report.counts.ok > 50
    return pggit_dsn, history, run_id


def test_report_is_serialisable_and_counts_add_up(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    report = check_invariants(dsn, history, run_id)
    data = json.loads(json.dumps(report.to_dict()))
    c = data["counts"]
    assert c["invoked"] == c["ok"] + c["failed"] + c["indeterminate"] == history.counts().invoked
    assert data["passed"] is True and data["drift"] == []
    # The embedded core keeps everything the checker reads: every invariant evaluated.
    assert data["shape"].startswith("embedded pgGit 1.0.0")
    assert data["unsure"] == [] and data["skipped"] == []
    assert {r["outcome"] for r in data["invariants"]} == {"passed"}
    names = {r["name"] for r in data["invariants"]}
    assert names == {
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


def test_deleted_acknowledged_commit_is_lost(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    acked = _acked_commits(history)
    message, trinity_id = acked[len(acked) // 2]  # a middle one: not the head
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # a broken pgGit: no FK checks
        deleted = conn.execute("DELETE FROM pggit.commits WHERE hash = %s", (trinity_id,))
        assert deleted.rowcount == 1
    report = check_invariants(dsn, history, run_id)
    assert not report.passed
    assert report.counts.lost == 1
    lost = report.invariant("commits-durable")
    assert not lost.passed and message in lost.examples[0] and trinity_id in lost.examples[0]
    assert "commit-chain-linear" in _failed(report)  # its child's parent is gone
    assert report.counts.duplicated == report.counts.unexpected == 0


def test_commit_never_invoked_is_unexpected(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pggit.commit_changes(%s, 'intruder')", (run_branch(run_id),))
    report = check_invariants(dsn, history, run_id)
    assert not report.passed
    assert report.counts.unexpected == 1 and report.counts.lost == 0
    result = report.invariant("no-unexpected-commits")
    assert not result.passed and "'intruder'" in result.examples[0]
    assert report.invariant("commit-chain-linear").passed  # it is a proper commit of the chain


def test_duplicated_trinity_id_in_a_broken_pggit(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    message, trinity_id = _acked_commits(history)[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A sound pgGit cannot store a hash twice: remove the guarantee, as a broken one would.
        conn.execute("ALTER TABLE pggit.commits DROP CONSTRAINT commits_parent_commit_hash_fkey")
        conn.execute("ALTER TABLE pggit.branches DROP CONSTRAINT branches_head_commit_hash_fkey")
        conn.execute("DROP INDEX pggit.commits_hash_key")
        conn.execute(
            """
            INSERT INTO pggit.commits (hash, branch_id, parent_commit_hash, message, author,
                                       committed_at, tree_hash)
            SELECT hash, branch_id, parent_commit_hash, message, author, committed_at, tree_hash
              FROM pggit.commits WHERE hash = %s
            """,
            (trinity_id,),
        )
    report = check_invariants(dsn, history, run_id)
    assert not report.passed
    assert report.counts.duplicated == 1  # one extra row, though both hash and message repeat
    dup = report.invariant("trinity-ids-unique")
    assert not dup.passed
    assert any(trinity_id in e for e in dup.examples) and any(message in e for e in dup.examples)


def test_deleted_history_row_is_lost_ddl(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    created = [
        p.invoke.value["table"]
        for p in history.pairs()
        if p.invoke.f == "create_table" and p.outcome == "ok"
    ]
    table = created[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        deleted = conn.execute(
            "DELETE FROM pggit.history WHERE schema_name = %s AND object_name = %s "
            "AND change_type = 'CREATE'",
            (run_schema(run_id), table),
        )
        assert deleted.rowcount == 1
    report = check_invariants(dsn, history, run_id)
    assert not report.passed and report.counts.lost == 1
    result = report.invariant("ddl-tracked")
    assert not result.passed and f"create_table {run_schema(run_id)}.{table} " in result.examples[0]


def test_untracked_alter_is_reported_as_drift(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    schema = run_schema(run_id)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname LIMIT 1",
            (schema,),
        ).fetchone()
        assert row is not None
        table = row[0]
        conn.execute("SET session_replication_role = replica")  # event triggers do not fire
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} ADD COLUMN sneaky integer").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        )
    report = check_invariants(dsn, history, run_id)
    assert [(d.table, d.kind) for d in report.drift] == [(table, "hash-mismatch")]
    assert report.drift[0].recorded_hash != report.drift[0].live_hash
    hashes = report.invariant("schema-hashes")
    assert not hashes.passed and table in hashes.examples[0]
    assert "not reported by pggit.detect_drift" not in " ".join(hashes.examples)
    assert not report.passed
    assert report.counts.lost == 0  # the workload's own DDL is all still there


def test_without_detect_drift_hashes_are_still_compared(run: tuple[str, History, str]) -> None:
    """The hash comparison needs no detect_drift(): only pgGit's own report goes unchecked."""
    dsn, history, run_id = run
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP FUNCTION pggit.detect_drift()")
    hashes = check_invariants(dsn, history, run_id).invariant("schema-hashes")
    assert hashes.outcome == "passed"
    assert hashes.message == (
        "recorded schema hashes equal the live ones"
        " (not checked: pgGit's own drift report (pgGit has no detect_drift()))"
    )


def test_untracked_drop_is_missing_table(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    schema = run_schema(run_id)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT object_name FROM pggit.objects WHERE schema_name = %s AND is_active "
            "ORDER BY object_name LIMIT 1",
            (schema,),
        ).fetchone()
        assert row is not None
        table = row[0]
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        )
    report = check_invariants(dsn, history, run_id)
    assert (table, "missing") in [(d.table, d.kind) for d in report.drift]
    catalog = report.invariant("ddl-in-catalog")
    assert not catalog.passed and table in catalog.examples[0]
    assert report.counts.lost >= 1 and not report.passed


def test_disabled_event_trigger_fails(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER EVENT TRIGGER pggit_drop_trigger DISABLE")
    report = check_invariants(dsn, history, run_id)
    result = report.invariant("event-triggers-enabled")
    assert not result.passed and result.examples == ["event trigger pggit_drop_trigger is disabled"]
    assert not report.passed
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP EVENT TRIGGER pggit_ddl_trigger")
        conn.execute("ALTER EVENT TRIGGER pggit_drop_trigger ENABLE")
    result = check_invariants(dsn, history, run_id).invariant("event-triggers-enabled")
    assert result.examples == ["event trigger pggit_ddl_trigger is missing"]


def test_branch_head_at_missing_commit_fails(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE pggit.branches SET head_commit_hash = 'no-such-commit' WHERE name = 'main'"
        )
    report = check_invariants(dsn, history, run_id)
    result = report.invariant("branch-heads-valid")
    assert not result.passed and result.examples == [
        "branch main points at missing commit no-such-commit"
    ]
    assert not report.passed


def test_run_branch_head_moved_back_breaks_the_chain(run: tuple[str, History, str]) -> None:
    dsn, history, run_id = run
    acked = _acked_commits(history)
    _message, older = acked[len(acked) // 2]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE pggit.branches SET head_commit_hash = %s WHERE name = %s",
            (older, run_branch(run_id)),
        )
    report = check_invariants(dsn, history, run_id)
    chain = report.invariant("commit-chain-linear")
    assert not chain.passed and "not on the chain from the head" in chain.examples[0]


# -- outcomes the workload rarely produces: a history written by hand -------------------------


def test_failed_and_indeterminate_commits(pggit_dsn: str) -> None:
    run_id = "synthetic"
    branch = run_branch(run_id)
    prefix = commit_message_prefix(run_id)
    history = History()
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:

        def commit(message: str) -> str:
            row = conn.execute("SELECT pggit.commit_changes(%s, %s)", (branch, message)).fetchone()
            assert row is not None
            return str(row[0])

        for n, (outcome, stored) in enumerate(
            [("ok", True), ("info", True), ("info", False), ("fail", False)]
        ):
            value = {"branch": branch, "message": f"{prefix}0:{n}"}
            history.record(0, "invoke", "commit", value)
            result = commit(value["message"]) if stored else None
            history.record(
                0,
                outcome,
                "commit",
                value,  # type: ignore[arg-type]
                result=result if outcome == "ok" else None,
            )
    report = check_invariants(pggit_dsn, history, run_id)
    assert report.passed, report.to_dict()
    assert report.counts.indeterminate == 2 and report.counts.failed == 1
    assert [(i.key, i.present) for i in report.indeterminate] == [
        (f"{prefix}0:1", True),
        (f"{prefix}0:2", False),
    ]
    # A commit that failed (server said no) but is present anyway is a violation.
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("SELECT pggit.commit_changes(%s, %s)", (branch, f"{prefix}0:3"))
    report = check_invariants(pggit_dsn, history, run_id)
    assert not report.passed and report.counts.unexpected == 1
    assert "failed but is present" in report.invariant("no-unexpected-commits").examples[0]


# -- trigger-disable semantics with a real disabled-trigger window ------------------------------


def _trigger_disable_run(dsn: str) -> tuple[History, str, tuple[float, float]]:
    """A workload through a real disabled-trigger window, each stretch ended by events.

    Before the window: 5 tracked DDL. Inside: 5 untracked DDL. After: 5 tracked DDL, and until
    every table the window touched was touched again after it (or was dropped), so that no
    table's last word is a DDL in flight while the triggers were switched back on.
    """
    history = History()
    load = Workload(
        dsn, clients=4, rate=0, op_timeout=5, mix={"commit": 1, "ddl": 3}, history=history
    )
    window: list[float] = []
    ddl = ("create_table", "alter_table", "drop_table")

    def acknowledged_ddl(after: float) -> list[str]:
        """Tables of the DDL invoked after ``after`` and acknowledged."""
        ops = history.ops
        invoked = {
            (op.process, op.f, op.value["table"])
            for op in ops
            if op.type == "invoke" and op.f in ddl and op.time > after
        }
        return [
            op.value["table"]
            for op in ops
            if op.type == "ok" and (op.process, op.f, op.value.get("table")) in invoked
        ]

    def settled_after_window() -> bool:
        start, end = window
        after = acknowledged_ddl(end)
        dropped = {
            op.value["table"] for op in history.ops if op.type == "ok" and op.f == "drop_table"
        }
        touched = {
            op.value["table"]
            for op in history.ops
            if op.type == "invoke" and op.f in ddl and start <= op.time <= end
        }
        return len(after) >= 5 and touched - dropped <= set(after)

    async def run() -> None:
        async with load:
            await until(lambda: acknowledged(history, *ddl) >= 5, "5 tracked DDL before the window")
            admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            try:
                window.append(history.now())  # the window opens when the fault starts
                await admin.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
                await admin.execute("ALTER EVENT TRIGGER pggit_drop_trigger DISABLE")
                disabled = history.now()
                await until(
                    lambda: len(acknowledged_ddl(disabled)) >= 5, "5 DDL while tracking was off"
                )
            finally:
                await admin.execute("ALTER EVENT TRIGGER pggit_ddl_trigger ENABLE")
                await admin.execute("ALTER EVENT TRIGGER pggit_drop_trigger ENABLE")
                window.append(history.now())
                await admin.close()
            await until(settled_after_window, "the window's tables were touched again after it")

    asyncio.run(run())
    return history, load.run_id, (window[0], window[1])


def test_trigger_disable_window_passes_with_semantics(pggit_dsn: str) -> None:
    history, run_id, window = _trigger_disable_run(pggit_dsn)
    plain = check_invariants(pggit_dsn, history, run_id)
    # Without the fault's semantics the untracked DDL is lost: the window really mattered.
    assert not plain.passed and plain.counts.lost > 0
    report = check_invariants(
        pggit_dsn, history, run_id, fault_window=window, fault_type="trigger-disable"
    )
    assert report.passed, report.to_dict()
    assert report.counts.lost == 0
    tracking = report.invariant("tracking-window")
    assert tracking.passed and "after the window tracked" in tracking.message
    # Every drifted table had DDL inside (or across) the window.
    start, end = window
    in_window = {
        p.invoke.value["table"]
        for p in history.pairs()
        if p.invoke.f != "commit"
        and p.completion is not None
        and p.completion.time >= start
        and p.invoke.time <= end
    }
    assert {d.table for d in report.drift} <= in_window


def test_trigger_disable_misplaced_window_reports_lost(pggit_dsn: str) -> None:
    history, run_id, (_start, end) = _trigger_disable_run(pggit_dsn)
    # A window that does not cover the real one: DDL untracked outside it is lost.
    report = check_invariants(
        pggit_dsn,
        history,
        run_id,
        fault_window=(end + 0.1, end + 0.2),
        fault_type="trigger-disable",
    )
    assert not report.passed and report.counts.lost > 0
    assert "ddl-tracked" in _failed(report)


# -- cleanup --------------------------------------------------------------------------------------


def test_cleanup_run_removes_only_that_run(pggit_dsn: str) -> None:
    history_a, run_a = _workload(pggit_dsn, run_id="cleanup_a")
    history_b, run_b = _workload(pggit_dsn, run_id="cleanup_b")
    cleanup_run(pggit_dsn, run_a)
    cleanup_run(pggit_dsn, run_a)  # idempotent
    with psycopg.connect(pggit_dsn) as conn:

        def count(query: str, *params: object) -> int:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return int(row[0])

        for run_id, expected in ((run_a, 0), (run_b, 1)):
            schema, branch = run_schema(run_id), run_branch(run_id)
            prefix = commit_message_prefix(run_id)
            assert count("SELECT count(*) FROM pg_namespace WHERE nspname = %s", schema) == expected
            assert count("SELECT count(*) FROM pggit.branches WHERE name = %s", branch) == expected
            commits = count(
                "SELECT count(*) FROM pggit.commits WHERE left(message, %s) = %s",
                len(prefix),
                prefix,
            )
            rows = count("SELECT count(*) FROM pggit.history WHERE schema_name = %s", schema)
            objects = count("SELECT count(*) FROM pggit.objects WHERE schema_name = %s", schema)
            assert (commits > 0, rows > 0, objects > 0) == ((expected == 1,) * 3)
        assert count("SELECT count(*) FROM pggit.branches WHERE name = 'main'") == 1
    assert check_invariants(pggit_dsn, history_b, run_b).passed
    # After cleanup the run's evidence is gone: its acknowledged commits now count as lost.
    assert check_invariants(pggit_dsn, history_a, run_a).counts.lost > 0
