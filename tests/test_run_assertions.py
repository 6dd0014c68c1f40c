"""`pggit-chaos run` with the user's own assertions (``spec.verification.assertions``).

Real runs of the connection-kill experiment (SQL-level: no root needed) on the embedded server
or a database given by ``--dsn``: an assertion that fails makes the verdict Fail naming it and
the moment, one that holds changes nothing, one that cannot be evaluated (a write, refused by
the read-only transaction) makes it Inconclusive.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from test_run import ROOT, Runner, write_experiment

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

EXAMPLE = ROOT / "experiments" / "06-connection-kill.yaml"
HOLDS = {"name": "commits-are-counted", "sql": "SELECT (count(*) >= 0)::text FROM pggit.commits",
         "expect": "true"}
#: Holds at the steady state (no workload yet), not after it: the run's schema exists then.
NO_RUN_SCHEMA = {"name": "no-run-schema", "expect": "0",
                 "sql": r"SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'chaos\_run\_%'"}


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    runner = Runner(tmp_path)
    yield runner
    runner.close()


def experiment(runner: Runner, name: str, assertions: list[dict[str, Any]]) -> Path:
    return write_experiment(runner.tmp / f"{name}.yaml", EXAMPLE, **{
        "metadata.name": name, "spec.duration": "2s", "spec.verification.checks": [],
        "spec.verification.assertions": assertions})


def report_folder(runner: Runner) -> Path:
    (folder,) = [p for p in runner.reports.iterdir() if (p / "journal.json").exists()]
    return folder


def test_a_failing_assertion_fails_the_run_naming_it(runner: Runner) -> None:
    path = experiment(runner, "assert-fails", [HOLDS, NO_RUN_SCHEMA])
    result = runner.run("run", str(path))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Fail"
    assert "assertion no-run-schema failed after recovery: got '1', expected '0'" \
        in journal["reason"]
    assert journal["injected_at"] and journal["reverted_at"]
    outcomes = [(a["name"], a["phase"], a["outcome"]) for a in journal["assertions"]]
    assert outcomes == [
        ("commits-are-counted", "steady state", "passed"),
        ("no-run-schema", "steady state", "passed"),
        ("commits-are-counted", "after recovery", "passed"),
        ("no-run-schema", "after recovery", "failed"),
    ]
    assert "no-run-schema" in result.stdout  # the verdict table
    folder = report_folder(runner)
    summary = (folder / "summary.md").read_text()
    assert "## Assertions" in summary
    assert "| no-run-schema | ✅ held | ❌ **fail** |" in summary
    cases = {case.get("name"): case for case in ET.parse(folder / "junit.xml").iter("testcase")
             if case.get("classname", "").endswith(".assertions")}
    assert set(cases) == {"commits-are-counted", "no-run-schema"}
    failure = cases["no-run-schema"].find("failure")
    assert failure is not None and "after recovery" in failure.get("message", "")
    assert cases["commits-are-counted"].find("failure") is None
    runner.assert_nothing_left()


def test_a_holding_assertion_passes(runner: Runner) -> None:
    result = runner.run("run", str(experiment(runner, "assert-holds", [HOLDS])))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    assert [a["outcome"] for a in journal["assertions"]] == ["passed", "passed"]
    # The run's report folder holds report.html; the report folder an index of its runs.
    folder = report_folder(runner)
    page = (folder / "report.html").read_text()
    assert "commits-are-counted" in page and "data:image/png;base64," in page
    index = (runner.reports / "index.html").read_text()
    assert f'href="{folder.name}/report.html"' in index
    runner.assert_nothing_left()


def test_a_write_cannot_evaluate_and_writes_nothing(runner: Runner, pggit_dsn: str) -> None:
    writes = {"name": "tries-to-write", "sql": "CREATE TABLE assertion_wrote (id int)",
              "expect": "0"}
    path = experiment(runner, "assert-writes", [writes, HOLDS])
    result = runner.run("run", "--dsn", pggit_dsn, str(path))
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Inconclusive"
    assert ("could not evaluate assertion tries-to-write at the steady state: cannot execute "
            "CREATE TABLE in a read-only transaction") in journal["reason"]
    assert journal["injected_at"] and journal["reverted_at"]  # the run went on
    assert {(a["name"], a["outcome"]) for a in journal["assertions"]} == {
        ("tries-to-write", "error"), ("commits-are-counted", "passed")}
    with psycopg.connect(pggit_dsn) as conn:
        assert conn.execute("SELECT to_regclass('assertion_wrote')").fetchone() == (None,)


def test_an_assertion_broken_before_the_fault_fails_with_nothing_injected(
    runner: Runner, pggit_dsn: str
) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int, customer_id int)")
        conn.execute("INSERT INTO orders VALUES (1, NULL)")
    orphans = {"name": "orders-have-customers", "expect": "0",
               "sql": "SELECT count(*) FROM orders WHERE customer_id IS NULL"}
    result = runner.run("run", "--dsn", pggit_dsn,
                        str(experiment(runner, "assert-broken", [orphans])))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Fail"
    assert journal["reason"] == ("assertion orders-have-customers failed at the steady state: "
                                 "got '1', expected '0' (nothing injected)")
    assert journal["injected_at"] is None
