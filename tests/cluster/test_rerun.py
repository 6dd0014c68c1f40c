"""Running a finished experiment again (``chaos.pggit.io/rerun``) with the real kopf operator:
the finished run is kept in ``status.history`` with its journal, a new run is admitted, and
``pggit-chaos report --run`` renders either run.

The runner's part is played by hand with the runner's own identity and its own function that
stores the journal (as in ``test_operator.py``): what is under test is the operator's rerun
and the report of a past run, which need two finished runs in a row; a real runner on the real
node takes about 25 s a run and adds nothing to what is checked here.

Why on the emulator as well: the real node re-runs a real experiment
(tests/realnode/test_real_cluster.py); here the runner's part is played with fixed journals so
that the reports of both runs can be compared exactly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.test_operator import (  # the operator harness and the test cluster
    NS,
    REACT,
    Operator,
    cluster,
    create,
    events,
    experiment,
    start_operator,
    status_of,
    wait_status,
)
from pggit_chaos.engine.history import History
from pggit_chaos.kube import names
from pggit_chaos.kube.client import CONFIG_MAPS, EXPERIMENTS, JOBS, KubeClient
from pggit_chaos.kube.report import fetch_report
from pggit_chaos.kube.runner import _store_journal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_report import make_journal

pytestmark = pytest.mark.kube
__all__ = ["cluster", "start_operator"]  # fixtures used by the tests below
Body = dict[str, Any]


def finish(runner: KubeClient, name: str, verdict: str) -> str:
    """Play the runner's end of a run: its journal ConfigMap (the runner's own function),
    then the terminal status. Returns the run id."""
    body = runner.get(EXPERIMENTS, NS, name)
    run_id = str(body["status"]["runId"])
    journal = make_journal(verdict).model_copy(update={
        "run_id": run_id, "experiment": name, "namespace": NS})
    assert _store_journal(runner, body, journal, History()) == []
    runner.patch(EXPERIMENTS, NS, name, {"status": {
        "phase": "Passed" if verdict == "Pass" else "Failed", "verdict": verdict,
        "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:30Z",
        "message": f"verdict {verdict}"}}, subresource="status")
    return run_id


def test_a_rerun_keeps_the_finished_run_and_its_report(
        cluster: KubeClient, client_for: Callable[[str], KubeClient],
        start_operator: Callable[..., Operator], emulator: Any, tmp_path: Path) -> None:
    operator = start_operator()
    runner = client_for("runner")
    create(cluster, experiment("again", fault="connection-kill"))
    first = wait_status(cluster, "again", lambda s: bool(s.get("runnerJob")), "a runner Job")
    first_run = finish(runner, "again", "Pass")
    assert first_run == first["runId"]
    labels = {"fault": "connection-kill", "schedule": ""}
    wait_status(cluster, "again", lambda s: operator.value(
        "pggit_chaos_experiments_total", {**labels, "verdict": "Pass"}) == 1, "Pass counted")

    cluster.patch(EXPERIMENTS, NS, "again", {"metadata": {"annotations": {
        names.RERUN_ANNOTATION: "1"}}})
    second = wait_status(cluster, "again", lambda s: bool(s.get("runnerJob")) and s.get(
        "runId") != first_run, "a second run")
    [past] = second["history"]
    assert past["runId"] == first_run and past["verdict"] == "Pass"
    assert past["phase"] == "Passed" and past["journalConfigMap"]
    assert second["rerun"] == "1" and second["phase"] == "Pending"
    assert "verdict" not in second and "finishedAt" not in second
    assert cluster.find(JOBS, NS, str(first["runnerJob"])) is None
    assert "Rerun" in [e["reason"] for e in events(emulator, "again")]

    second_run = finish(runner, "again", "Fail")
    wait_status(cluster, "again", lambda s: operator.value(
        "pggit_chaos_experiments_total", {**labels, "verdict": "Fail"}) == 1, "Fail counted")
    # Each run's journal in its own ConfigMap; the report renders the one asked for.
    current = status_of(cluster, "again")
    assert current["journalConfigMap"] != past["journalConfigMap"]
    assert cluster.find(CONFIG_MAPS, NS, past["journalConfigMap"]) is not None
    old = fetch_report(f"{NS}/again", tmp_path / "old", cluster, run=first_run[:8])
    new = fetch_report(f"{NS}/again", tmp_path / "new", cluster)
    assert first_run in old.summary.read_text() and "Pass" in old.summary.read_text()
    assert second_run in new.summary.read_text() and "Fail" in new.summary.read_text()
    with pytest.raises(Exception, match="no run with id 'nope'"):
        fetch_report(f"{NS}/again", tmp_path / "x", cluster, run="nope")

    # The same value again does nothing; a new value runs it a third time.
    cluster.patch(EXPERIMENTS, NS, "again", {"metadata": {"labels": {"touched": "yes"}}})
    wait_status(cluster, "again", lambda s: s.get("runId") == second_run, "unchanged", NS)
    assert len(status_of(cluster, "again")["history"]) == 1
    cluster.patch(EXPERIMENTS, NS, "again", {"metadata": {"annotations": {
        names.RERUN_ANNOTATION: "2"}}})
    third = wait_status(cluster, "again", lambda s: len(s.get("history") or []) == 2
                        and bool(s.get("runnerJob")), "a third run")
    assert [run["runId"] for run in third["history"]] == [second_run, first_run]
    assert REACT > 0


def test_a_rerun_asked_for_while_it_runs_waits_for_the_end(
        cluster: KubeClient, client_for: Callable[[str], KubeClient],
        start_operator: Callable[..., Operator]) -> None:
    start_operator()
    runner = client_for("runner")
    body = experiment("busy", fault="connection-kill")
    # A value the experiment is created with belongs to its first run: no second run.
    body["metadata"]["annotations"] = {names.RERUN_ANNOTATION: "v0"}
    create(cluster, body)
    first = wait_status(cluster, "busy", lambda s: bool(s.get("runnerJob")), "a runner Job")
    assert first["rerun"] == "v0"
    cluster.patch(EXPERIMENTS, NS, "busy", {"metadata": {"annotations": {
        names.RERUN_ANNOTATION: "v1"}}})
    time.sleep(1.5)  # several operator ticks: it is running, nothing happens
    assert not status_of(cluster, "busy").get("history")
    finish(runner, "busy", "Pass")
    # Finished now: the value set while it ran is acted on, once.
    again = wait_status(cluster, "busy", lambda s: len(s.get("history") or []) == 1
                        and bool(s.get("runnerJob")), "the rerun after it finished")
    assert again["rerun"] == "v1" and again["runId"] != first["runId"]
