"""`pggit-chaos run` with guards (``spec.guards``): stop early, revert, Aborted naming the guard.

Real runs on the embedded server: connection-kill (its kills make workload errors) against a
low ``maxErrorRate``; pod-kill under asynchronous commit (the kill loses acknowledged commits)
against ``maxLostWrites: 0``; and guards that are never exceeded, which change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pggit_chaos.engine.history import History, OpType
from test_run import EXPERIMENTS, IS_ROOT, ROOT, Runner, write_experiment

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

CONNECTION_KILL = ROOT / "experiments" / "06-connection-kill.yaml"
#: The hold the guarded runs ask for: a guard that trips ends it far earlier.
HOLD = "20s"


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    runner = Runner(tmp_path)
    yield runner
    runner.close()


def test_an_error_rate_guard_aborts_early_and_reverts(runner: Runner) -> None:
    path = write_experiment(runner.tmp / "guarded.yaml", CONNECTION_KILL, **{
        "metadata.name": "guarded-kill", "spec.duration": HOLD,
        "spec.verification.checks": [],
        "spec.guards": {"maxErrorRate": 0.001, "errorRateWindow": "2s", "minSamples": 5}})
    result = runner.run("run", str(path))
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["phases"][-1]["phase"] == "Aborted"
    assert journal["verdict"] is None
    reason = journal["reason"]
    assert reason.startswith("guard maxErrorRate tripped: error rate "), reason
    assert "> 0.001: fault reverted after " in reason
    # Stopped early, reverted on the normal path, the database healthy again.
    assert journal["reverted_at"] and journal["revert_error"] is None
    window = journal["fault_window"]
    assert window["end_offset"] - window["start_offset"] < 15
    assert journal["recovery_seconds"] is not None
    assert journal["invariants"] == []  # no verification of an aborted run
    assert "guard maxErrorRate tripped" in result.stderr
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="the local faults need root")
def test_a_lost_writes_guard_aborts_a_pod_kill_that_loses_commits(runner: Runner) -> None:
    lossy = write_experiment(runner.tmp / "lossy.yaml", EXPERIMENTS[0], **{
        "metadata.name": "guarded-lossy-pod-kill", "spec.duration": HOLD,
        "spec.workload.rate": 0, "spec.workload.mix": {"commit": 1, "ddl": 0},
        "spec.verification.checks": [],
        "spec.local.postgresql": {"synchronous_commit": "off", "wal_writer_delay": "10s"},
        "spec.guards": {"maxLostWrites": 0}})
    result = runner.run("run", str(lossy))
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["phases"][-1]["phase"] == "Aborted"
    assert journal["reason"].startswith("guard maxLostWrites tripped: "), journal["reason"]
    assert "acknowledged commit(s) missing from pggit.commits" in journal["reason"]
    assert journal["reverted_at"]
    window = journal["fault_window"]
    assert window["end_offset"] - window["start_offset"] < 15
    runner.assert_nothing_left()


def test_guards_that_are_not_exceeded_change_nothing(runner: Runner) -> None:
    path = write_experiment(runner.tmp / "calm.yaml", CONNECTION_KILL, **{
        "metadata.name": "calm-kill", "spec.duration": "3s", "spec.verification.checks": [],
        "spec.guards": {"maxErrorRate": 1, "minSamples": 1, "maxLostWrites": 0}})
    result = runner.run("run", str(path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    window = journal["fault_window"]
    assert window["end_offset"] - window["start_offset"] >= 3
    assert all(inv["passed"] for inv in journal["invariants"])
    runner.assert_nothing_left()


@pytest.mark.unit
@pytest.mark.parametrize(("guards", "field"), [
    ({"maxErrorRate": 1.5}, "spec.guards.maxErrorRate"),
    ({"maxErrorRate": -0.1}, "spec.guards.maxErrorRate"),
    ({"maxLostWrites": -1}, "spec.guards.maxLostWrites"),
    ({"maxLostWrites": 0.5}, "spec.guards.maxLostWrites"),
    ({"minSamples": 0}, "spec.guards.minSamples"),
    ({"errorRateWindow": "100ms"}, "spec.guards.errorRateWindow"),
    ({"maxErrorsRate": 0.5}, "spec.guards.maxErrorsRate"),
])
def test_bad_guards_are_refused_naming_the_field(guards: dict[str, object], field: str) -> None:
    import yaml

    from pggit_chaos.errors import InvalidExperiment
    from pggit_chaos.spec import load_experiment_object

    document = yaml.safe_load(CONNECTION_KILL.read_text())
    document["spec"]["guards"] = guards
    with pytest.raises(InvalidExperiment) as error:
        load_experiment_object(document)
    assert field in str(error.value)


def _history(outcomes: list[tuple[float, OpType]], now_ago: float = 0.0) -> History:
    """A History whose clock reads the last outcome's time (plus ``now_ago``)."""
    end = max((t for t, _ in outcomes), default=0.0) + now_ago
    history = History(start=time.monotonic() - end)
    for n, (t, kind) in enumerate(outcomes):
        history.record(n, "invoke", "commit", {"message": f"m{n}"}, at=max(0.0, t - 0.01))
        history.record(n, kind, "commit", {"message": f"m{n}"}, at=t)
    return history


@pytest.mark.unit
def test_the_error_rate_counts_the_window_after_the_injection_with_enough_samples() -> None:
    from pggit_chaos.engine.guards import error_rate
    from pggit_chaos.spec.model import Guards

    guards = Guards.model_validate({"maxErrorRate": 0.5, "errorRateWindow": "2s",
                                    "minSamples": 4})
    # 3 of 4 failed in the last 2 s: 0.75 > 0.5.
    errors: list[tuple[float, OpType]] = [(10.0, "ok"), (10.5, "fail"), (11.0, "info"),
                                          (11.5, "fail")]
    trip = error_rate(_history(errors), guards, since=0.0)
    assert trip is not None and trip.guard == "maxErrorRate" and trip.measured == 0.75
    assert trip.line.startswith("guard maxErrorRate tripped: error rate 0.75 (3 of 4 ")
    # Too few samples: not judged.
    assert error_rate(_history(errors[1:]), guards, since=0.0) is None
    # Errors older than the window, or before the injection, do not count.
    old: list[tuple[float, OpType]] = [(1.0, "fail"), (1.1, "fail"), (1.2, "fail"),
                                       *[(10.0 + i / 10, "ok") for i in range(4)]]
    assert error_rate(_history(old), guards, since=0.0) is None
    assert error_rate(_history(errors), guards, since=11.2) is None
    # At the limit is within it.
    half: list[tuple[float, OpType]] = [(10.0, "ok"), (10.5, "fail"), (11.0, "ok"), (11.5, "fail")]
    assert error_rate(_history(half), guards, since=0.0) is None
