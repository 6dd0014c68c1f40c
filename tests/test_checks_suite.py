"""The checks suite end to end: verdicts, exit codes, reports, category filter, and no trace left.

Runs :func:`pggit_chaos.checks.runner.run_checks` / :func:`main` (a real pytest subprocess)
against real databases of the session's embedded PostgreSQL (fixtures in tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos import sweep
from pggit_chaos.checks import runner
from pggit_chaos.checks.amcheck import NOT_INSTALLED, create_amcheck
from pggit_chaos.checks.names import CATEGORIES, SCRATCH_PREFIX, run_prefix
from pggit_chaos.checks.runner import run_checks
from pggit_chaos.errors import ConfigurationError, TargetUnavailable
from pggit_chaos.local import free_port

pytestmark = pytest.mark.postgres

PGGIT_TABLES = ("branches", "commits", "objects", "history", "install_info")


def _snapshot(dsn: str) -> dict[str, Any]:
    """Every row of every pggit table and of the user's schema, plus the list of schemas."""
    state: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in PGGIT_TABLES:
            query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier("pggit", table))
            state[table] = [tuple(map(str, row)) for row in conn.execute(query)]
        state["user_rows"] = conn.execute("SELECT * FROM shop.orders ORDER BY id").fetchall()
        state["schemas"] = sorted(
            r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_'")
        )
        state["user_tables"] = sorted(
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = 'shop'::regnamespace"
            )
        )
        state["triggers"] = conn.execute(
            "SELECT evtname, evtenabled FROM pg_event_trigger ORDER BY 1"
        ).fetchall()
    return state


def _user_data(dsn: str) -> None:
    """A user's own schema, data, DDL history and a commit on main, as in a real database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, item text NOT NULL)")
        conn.execute("INSERT INTO shop.orders VALUES (1, 'tea'), (2, 'scones')")
        conn.execute("ALTER TABLE shop.orders ADD COLUMN qty int DEFAULT 1")
        conn.execute("SELECT pggit.commit_changes('main', 'user commit')")
        conn.execute("SELECT pggit.commit_changes('feature/x', 'user branch commit')")


AMCHECK_CHECKS = {
    "test_pggit_btree_indexes_pass_amcheck",
    "test_pggit_btree_parents_pass_amcheck",
    "test_pggit_tables_pass_verify_heapam",
}


def test_sound_pggit_passes_every_check_and_leaves_no_trace(pggit_dsn: str, tmp_path: Path) -> None:
    _user_data(pggit_dsn)
    assert create_amcheck(pggit_dsn)  # a throwaway test database: ours to add amcheck to
    before = _snapshot(pggit_dsn)
    junit, report = tmp_path / "junit.xml", tmp_path / "result.json"
    result = run_checks(
        pggit_dsn, profile="ci", junit=junit, json_out=report, include_destructive=True, quiet=True
    )
    assert result.exit_code == 0, [(f.name, f.message) for f in result.failures]
    assert result.failed == 0 and result.failures == []
    assert result.skipped == 0, [(c.name, c.reason) for c in result.checks if c.reason]
    assert result.passed == len(result.checks) >= 30
    assert {c.name for c in result.checks if c.outcome == "passed"} >= AMCHECK_CHECKS
    assert result.hypothesis_examples > 50
    assert {c for check in result.checks for c in check.categories} >= set(CATEGORIES) | {
        "destructive"
    }
    assert _snapshot(pggit_dsn) == before, "the checks changed pggit tables or user objects"

    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None and int(suite.get("tests", "0")) == len(result.checks)
    assert int(suite.get("failures", "0")) == 0 and int(suite.get("errors", "0")) == 0
    document = json.loads(report.read_text())
    assert document["seed"] == result.seed and document["exit_code"] == 0
    assert len(document["checks"]) == len(result.checks)


def test_amcheck_checks_skip_with_the_reason_and_never_create_it(pggit_dsn: str) -> None:
    """In a database without amcheck the checks say what to run; they do not install it."""
    result = run_checks(pggit_dsn, categories=["corruption"], include_destructive=True,
                        quiet=True)
    outcomes = {c.name: (c.outcome, c.reason) for c in result.checks if c.name in AMCHECK_CHECKS}
    assert outcomes == {name: ("skipped", NOT_INSTALLED) for name in AMCHECK_CHECKS}
    assert NOT_INSTALLED == "amcheck is not installed: CREATE EXTENSION amcheck"
    assert result.exit_code == 0
    with psycopg.connect(pggit_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'").fetchone() == (0,)


def test_amcheck_parent_check_is_destructive_and_skipped_unless_asked(pggit_dsn: str) -> None:
    """bt_index_parent_check takes a ShareLock (blocks writers): only with --destructive."""
    assert create_amcheck(pggit_dsn)
    result = run_checks(pggit_dsn, categories=["corruption"], quiet=True)
    outcomes = {c.name: c for c in result.checks if c.name in AMCHECK_CHECKS}
    parent = outcomes.pop("test_pggit_btree_parents_pass_amcheck")
    assert parent.outcome == "skipped" and "--destructive" in parent.reason
    assert "destructive" in parent.categories
    assert {c.outcome for c in outcomes.values()} == {"passed"}


def test_destructive_checks_skipped_unless_asked(pggit_dsn: str) -> None:
    result = run_checks(pggit_dsn, categories=["property"], quiet=True, seed=7)
    destructive = [c for c in result.checks if "destructive" in c.categories]
    assert destructive and all(c.outcome == "skipped" for c in destructive)
    assert all("--destructive" in c.reason for c in destructive)
    assert result.exit_code == 0 and result.seed == 7


def test_category_filter_and_a_failing_check_exit_1(pggit_dsn: str, tmp_path: Path) -> None:
    result = run_checks(pggit_dsn, categories=["corruption"], quiet=True)
    assert result.exit_code == 0 and result.checks
    assert all(c.categories in (["corruption"], ["corruption", "destructive"])
               for c in result.checks)
    assert result.hypothesis_examples == 0

    with psycopg.connect(pggit_dsn, autocommit=True) as conn:  # tracking switched off
        conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
    failed = run_checks(pggit_dsn, categories=["corruption"], quiet=True, seed=42)
    assert failed.exit_code == 1
    names = [f.name for f in failed.failures]
    assert names == ["test_event_triggers_present_and_enabled"]
    assert failed.failures[0].seed == 42 and "disabled" in failed.failures[0].message

    json_path = tmp_path / "out.json"
    code = runner.main(
        ["--dsn", pggit_dsn, "--category", "corruption", "--json", str(json_path), "--seed", "5"]
    )
    assert code == 1
    assert json.loads(json_path.read_text())["failures"][0]["seed"] == 5


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--category", "property,nonsense"], "unknown check category 'nonsense'"),
        (["--profile", "fastest"], "unknown hypothesis profile 'fastest'"),
        (["--seed", "abc"], "invalid int value"),
    ],
)
def test_unusable_input_exit_2_one_line(
    pggit_dsn: str, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert runner.main(["--dsn", pggit_dsn, *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_unreachable_dsn_is_target_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres dbname=nowhere connect_timeout=2"
    with pytest.raises(TargetUnavailable) as raised:
        run_checks(dsn, quiet=True)
    assert len(str(raised.value).splitlines()) == 1 and "cannot connect" in str(raised.value)
    assert runner.main(["--dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot connect" in err


def test_database_without_pggit_exit_2(empty_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--dsn", empty_dsn]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no pgGit" in err, err


def test_bad_category_and_profile_raise_configuration_error(pggit_dsn: str) -> None:
    with pytest.raises(ConfigurationError):
        run_checks(pggit_dsn, categories=["property", "bogus"])
    with pytest.raises(ConfigurationError):
        run_checks(pggit_dsn, profile="nightly")


def _suite_children() -> list[int]:
    """PIDs of this process's children that run the checks suite (pytest subprocesses)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), ""
        )
        if ppid == str(os.getpid()) and b"pggit_chaos.checks" in cmdline:
            found.append(int(entry.name))
    return found


def test_killed_run_is_swept(pggit_dsn: str) -> None:
    """A suite killed mid-check leaves no scratch schema, branch or row naming a scratch area.

    Event-driven, not timed: a watcher waits until a check has created its scratch schema and
    written pgGit rows, then SIGKILLs the suite's process group — whatever the machine's speed.
    """
    seen: list[str] = []
    killed = threading.Event()

    def kill_mid_check() -> None:
        deadline = time.monotonic() + 120
        with psycopg.connect(pggit_dsn, autocommit=True) as watcher:
            while time.monotonic() < deadline and not killed.is_set():
                found = watcher.execute(
                    "SELECT b.name FROM pggit.branches b WHERE left(b.name, %s) = %s"
                    " AND EXISTS (SELECT 1 FROM pggit.commits c WHERE c.branch_id = b.id)",
                    (len(SCRATCH_PREFIX), SCRATCH_PREFIX),
                ).fetchall()
                pids = _suite_children()
                if found and pids:
                    seen.extend(r[0] for r in found)
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.02)

    watcher = threading.Thread(target=kill_mid_check)
    watcher.start()
    try:
        result = run_checks(pggit_dsn, categories=["concurrent"], timeout=300, quiet=True)
    finally:
        killed.set()
        watcher.join()
    assert seen, "the suite finished before a check had written anything"
    assert result.verdict == "Inconclusive" and result.exit_code == 3, result.failures
    assert any("exited with code -9" in f.message for f in result.failures), result.failures
    assert not [f for f in result.failures if f.name == "checks-cleanup"], result.failures
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        left = sweep.audit(conn, SCRATCH_PREFIX)
    assert left.total == 0 and left.schemas == [], left.describe()


def test_leftover_throwaway_role_is_swept(pggit_dsn: str) -> None:
    """A security check killed mid-way leaves its ordinary role owning a scratch table: the
    sweep drops the table, the role and the pgGit rows its DDL caused; audits name the role."""
    prefix = run_prefix("0badc0de")
    schema, role = f"{prefix}x", f"{prefix}x_role"
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE TABLE {} (id serial)").format(sql.Identifier(schema, "t")))
        conn.execute("RESET ROLE")
        assert sweep.audit(conn, prefix).roles == [role]
        gone = sweep.purge(conn, prefix)
        assert gone.roles == [role] and gone.schemas == [schema], gone.describe()
        assert f"role {role}" in gone.describe()
        assert sweep.audit(conn, prefix).describe() == "nothing"
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone() == (0,)


def test_main_without_dsn_uses_embedded_pggit(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--category", "corruption", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "seed 3" in out and "test_no_duplicate_trinity_ids" in out


#: A pgGit whose generate_trinity_id reads a column that does not exist: every commit fails
#: with UndefinedColumn (42703) — the checks cannot run, which says nothing about a promise.
BROKEN_SHAPE = """
CREATE OR REPLACE FUNCTION pggit.generate_trinity_id(branch text DEFAULT 'main') RETURNS text
LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT no_such_column FROM pggit.branches LIMIT 1); END $$;
"""


def test_a_check_that_cannot_run_is_an_error_not_a_fail(pggit_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(BROKEN_SHAPE)
    junit = tmp_path / "junit.xml"
    result = run_checks(pggit_dsn, categories=["transaction"], junit=junit, quiet=True)
    errors = [f for f in result.failures if f.outcome == "error"]
    assert errors and result.errors == len(errors), result.failures
    assert result.failed == 0, [(f.name, f.message) for f in result.failures]
    assert result.verdict == "Inconclusive" and result.exit_code == 3
    assert all("no_such_column" in f.message or "42703" in f.message for f in errors), errors
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    for failure in errors:
        assert cases[failure.name].find("error") is not None, failure.name
        assert cases[failure.name].find("failure") is None, failure.name
    assert runner.main(["--dsn", pggit_dsn, "--category", "transaction"]) == 3


def test_a_requested_category_whose_checks_all_skip_is_inconclusive(
    pggit_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A category asked for by name that nothing verified (every check skipped: what it needs is
    missing) is no Pass: exit 3, Inconclusive, naming the category and why its checks skipped.
    Before the fix this run said PASS and exited 0."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:  # the resource checks need both
        for (signature,) in conn.execute(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'pggit'::regnamespace"
            " AND proname IN ('commit_changes', 'calculate_schema_hash')"
        ).fetchall():
            renamed = "renamed_" + signature.split("(")[0].removeprefix("pggit.")
            conn.execute(f"ALTER FUNCTION {signature} RENAME TO {renamed}")
    result = run_checks(pggit_dsn, categories=["resource"], quiet=True)
    assert result.checks and {c.outcome for c in result.checks} == {"skipped"}
    assert result.verdict == "Inconclusive" and result.exit_code == 3
    [unrun] = result.failures
    assert unrun.name == "category resource" and unrun.outcome == "error"
    assert "resource checks were skipped" in unrun.message and "lacks" in unrun.message
    capsys.readouterr()
    assert runner.main(["--dsn", pggit_dsn, "--category", "resource"]) == 3
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "category resource" in out


def test_the_users_pytest_settings_do_not_reach_the_checks(
    pggit_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks' pytest runs in an environment the runner controls: a user's PYTEST_ADDOPTS
    and PYTEST_PLUGINS, and a pytest.ini in a folder above TMPDIR, change nothing: every check
    runs, the one broken promise fails. (They reached the child pytest: with PYTEST_PLUGINS
    naming a plugin the checks cannot import, pytest did not start and the checks ended
    Inconclusive; the ini's addopts were the checks' too.)"""
    import tempfile

    with psycopg.connect(pggit_dsn, autocommit=True) as conn:  # tracking switched off
        conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
    alone = run_checks(pggit_dsn, categories=["corruption"], quiet=True, seed=3)
    assert alone.exit_code == 1 and len(alone.checks) > 1
    user_basetemp = tmp_path / "user-basetemp"
    monkeypatch.setenv("PYTEST_ADDOPTS", f"-x -q --basetemp={user_basetemp}")
    monkeypatch.setenv("PYTEST_PLUGINS", "pggit_chaos_no_such_plugin")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --collect-only\n")
    below = tmp_path / "tmp"
    below.mkdir()
    monkeypatch.setenv("TMPDIR", str(below))
    monkeypatch.setattr(tempfile, "tempdir", str(below))
    result = run_checks(pggit_dsn, categories=["corruption"], quiet=True, seed=3)
    assert result.exit_code == 1 and result.verdict == alone.verdict, result.to_dict()
    assert [f.name for f in result.failures] == ["test_event_triggers_present_and_enabled"]
    assert [(c.name, c.outcome) for c in result.checks] == \
        [(c.name, c.outcome) for c in alone.checks]
    assert not user_basetemp.exists()
