"""Multi-fault scenarios (``spec.scenario``): the model, and `pggit-chaos run` end to end.

Each run is the real console script on its own embedded PostgreSQL (tests/test_run.py's
Runner): real faults, each with its own intent, window, revert and evidence; nothing left.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pggit_chaos.spec import Experiment
from pggit_chaos.spec.model import fault_label
from test_run import IS_ROOT, ROOT, Runner


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    runner = Runner(tmp_path)
    yield runner
    runner.close()


TARGET = {"selector": {"matchLabels": {"app": "db"}}}


def _scenario(mode: str, *steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos.pggit.io/v1alpha1",
        "kind": "PgGitChaosExperiment",
        "metadata": {"name": f"scenario-{mode}", "namespace": "default"},
        "spec": {"target": TARGET, "scenario": {"mode": mode, "steps": list(steps)},
                 "workload": {"clients": 3, "rate": 0}, "recovery": {"timeout": "60s"},
                 "verification": {"checks": ["property"], "hypothesisProfile": "ci"},
                 **spec},
    }


def _write(runner: Runner, doc: dict[str, Any]) -> Path:
    path = runner.tmp / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


KILL = {"fault": {"type": "connection-kill", "connectionKill": {"interval": "1s"}},
        "duration": "4s"}
THROTTLE = {"fault": {"type": "cpu-throttle", "cpuThrottle": {"cpuPercent": 20}},
            "duration": "3s", "delay": "1s"}


# -- the model -------------------------------------------------------------------------------


def test_a_scenario_loads_and_round_trips_through_its_manifest() -> None:
    experiment = Experiment.model_validate(_scenario("parallel", KILL, THROTTLE))
    spec = experiment.spec
    assert spec.scenario is not None and spec.single_fault is None
    assert [str(f.type) for f in spec.faults] == ["connection-kill", "cpu-throttle"]
    assert spec.fault.type == "connection-kill"  # what one-fault displays name
    assert spec.hold_seconds() == 4.0  # parallel: the longest delay + duration
    again = Experiment.model_validate(experiment.to_manifest())
    assert again == experiment
    assert "fault" not in experiment.to_manifest()["spec"]
    serial = Experiment.model_validate(_scenario("serial", KILL, THROTTLE))
    assert serial.spec.hold_seconds() == 8.0  # 4 + (1 + 3)


@pytest.mark.parametrize(("change", "message"), [
    ({"fault": {"type": "pod-kill"}}, "either fault (one fault) or scenario"),
    ({"scenario": None}, "fault is required"),
])
def test_fault_and_scenario_are_one_or_the_other(change: dict[str, Any], message: str) -> None:
    doc = _scenario("serial", KILL, THROTTLE)
    doc["spec"].update(change)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Experiment.model_validate(doc)


@pytest.mark.parametrize(("steps", "message"), [
    ([KILL], "at least 2"),
    ([KILL, KILL], "appears twice"),
    ([KILL, {"fault": {"type": "index-corruption",
                       "indexCorruption": {"destructive": True}}}], "only as a single fault"),
])
def test_bad_scenarios_are_refused(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Experiment.model_validate(_scenario("serial", *steps))


def test_a_scenario_is_labelled_by_its_fault_types() -> None:
    """Metrics, Events and the journal name a scenario by its faults (they said "unknown"
    and "" before: they read spec.fault.type only)."""
    from pggit_chaos.engine.journal import Journal
    from pggit_chaos.kube.handlers import _fault_type

    doc = _scenario("parallel", KILL, THROTTLE)
    assert fault_label(doc["spec"]) == "connection-kill+cpu-throttle"
    assert _fault_type(doc) == "connection-kill+cpu-throttle"
    manifest = Experiment.model_validate(doc).to_manifest()
    assert Journal(experiment="x", spec=manifest).fault_type == "connection-kill+cpu-throttle"
    single = yaml.safe_load((ROOT / "experiments" / "06-connection-kill.yaml").read_text())
    assert fault_label(single["spec"]) == _fault_type(single) == "connection-kill"
    assert _fault_type({"spec": {}}) == "unknown"


def test_every_example_experiment_still_loads_as_one_fault() -> None:
    for path in sorted((ROOT / "experiments").glob("[0-9][0-9]-*.yaml")):
        experiment = Experiment.model_validate(yaml.safe_load(path.read_text()))
        assert experiment.spec.scenario is None
        assert experiment.spec.faults == [experiment.spec.fault]


# -- end to end ------------------------------------------------------------------------------


def _windows(journal: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {step["fault_type"]: (step["start_offset"], step["end_offset"])
            for step in journal["fault_steps"]}


def _assert_reported(runner: Runner, journal: dict[str, Any]) -> None:
    folder = next(p for p in runner.reports.iterdir() if p.is_dir())
    summary = (folder / "summary.md").read_text()
    assert "## Faults of the scenario" in summary
    for step in journal["fault_steps"]:
        assert f"| {step['fault_type']} |" in summary
    assert (folder / "timeline.png").stat().st_size > 0


@pytest.mark.skipif(not IS_ROOT, reason="cpu-throttle needs root (a cgroup)")
def test_a_parallel_scenario_passes_with_both_windows_overlapping(runner: Runner) -> None:
    result = runner.run("run", str(_write(runner, _scenario("parallel", KILL, THROTTLE))))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    assert journal["fault_type"] == "connection-kill+cpu-throttle"
    windows = _windows(journal)
    assert set(windows) == {"connection-kill", "cpu-throttle"}
    kill, throttle = windows["connection-kill"], windows["cpu-throttle"]
    assert throttle[0] < kill[1], "parallel windows overlap"
    # Held their durations (counted from the inject call; the window opens when it returns).
    assert kill[1] - kill[0] >= 3.5 and throttle[1] - throttle[0] >= 2.5
    assert throttle[0] - kill[0] >= 0.9  # its delay
    for step in journal["fault_steps"]:
        assert step["evidence"]["bit"], step["evidence"]
        assert step["intent"]["type"] == step["fault_type"]
    # The run's window spans both.
    assert journal["fault_window"]["start_offset"] <= kill[0]
    assert journal["fault_window"]["end_offset"] >= max(kill[1], throttle[1])
    _assert_reported(runner, journal)
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="cpu-throttle needs root (a cgroup)")
def test_a_serial_scenario_injects_each_fault_after_the_previous_revert(runner: Runner) -> None:
    doc = _scenario("serial", {**THROTTLE, "delay": "0s"}, {**KILL, "delay": "1s"})
    result = runner.run("run", str(_write(runner, doc)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    assert [s["fault_type"] for s in journal["fault_steps"]] == ["cpu-throttle",
                                                                 "connection-kill"]
    throttle, kill = (_windows(journal)[t] for t in ("cpu-throttle", "connection-kill"))
    assert kill[0] - throttle[1] >= 0.9, "the second fault waits its delay after the revert"
    _assert_reported(runner, journal)
    runner.assert_nothing_left()


EXAMPLE = ROOT / "examples" / "scenarios" / "partition-then-throttle.yaml"


@pytest.mark.skipif(not IS_ROOT, reason="network-partition and cpu-throttle need root")
def test_the_example_scenario_file_passes_on_one_machine(runner: Runner) -> None:
    """examples/scenarios/partition-then-throttle.yaml as a user runs it (its header says how)."""
    result = runner.run("run", str(EXAMPLE))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    assert [s["fault_type"] for s in journal["fault_steps"]] == ["network-partition",
                                                                 "cpu-throttle"]
    partition, throttle = (_windows(journal)[t] for t in ("network-partition", "cpu-throttle"))
    assert throttle[0] - partition[1] >= 1.9, "the throttle waits its delay after the revert"
    assert all(s["evidence"]["bit"] for s in journal["fault_steps"]), journal["fault_steps"]
    _assert_reported(runner, journal)
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="pod-pause needs root")
def test_an_interrupted_scenario_reverts_every_injected_fault(runner: Runner) -> None:
    pause = {"fault": {"type": "pod-pause"}, "duration": "60s", "delay": "1s"}
    doc = _scenario("parallel", {**KILL, "duration": "60s"}, pause)
    proc = runner.popen("run", str(_write(runner, doc)))
    deadline = time.monotonic() + 90
    while not {"connection-kill", "pod-pause"} <= set(runner.pending_intents()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "both faults were never injected"
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    (journal,) = runner.journals()
    assert journal["reason"] == "interrupted: fault reverted", (journal["fault_steps"], out[-2000:])
    steps = journal["fault_steps"]
    assert {s["fault_type"] for s in steps} == {"connection-kill", "pod-pause"}
    assert all(s["end_offset"] is not None for s in steps), steps
    # The last injected is reverted first.
    first, second = sorted(steps, key=lambda s: s["start_offset"])
    assert second["end_offset"] <= first["end_offset"]
    runner.assert_nothing_left()


def test_a_scenario_one_of_whose_faults_is_refused_injects_nothing(
    runner: Runner, pggit_dsn: str
) -> None:
    """With --dsn only SQL faults run: the cpu-throttle step is refused before the
    connection-kill step (which alone would be allowed) is injected."""
    path = _write(runner, _scenario("serial", KILL, THROTTLE))
    result = runner.run("run", str(path), "--dsn", pggit_dsn)
    # Refused as bad input before any run starts (exit 2, no journal): before, only the
    # first fault was looked at, and the run started and ended in Error at the second.
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cpu-throttle needs the embedded PostgreSQL" in result.stdout + result.stderr
    assert runner.journals() == []
    assert runner.pending_intents() == []


def test_a_dry_run_of_a_scenario_plans_every_step(runner: Runner) -> None:
    doc = _scenario("serial", KILL, THROTTLE, dryRun=True)
    result = runner.run("run", str(_write(runner, doc)))
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "scenario (serial) of 2 faults" in out
    assert "step 1 (connection-kill): inject connection-kill" in out
    assert "step 2 (cpu-throttle after 1s): inject cpu-throttle" in out
    assert not runner.reports.exists()
    runner.assert_nothing_left()


def test_ddl_unrecorded_inside_a_later_trigger_disable_step_is_excused_as_drift(
    runner: Runner,
) -> None:
    """The invariant checker gets the trigger-disable step's own window, not the scenario's
    first fault type: before, with connection-kill first, the drift DDL made inside the
    trigger-disable window was not excused and the run failed."""
    disable = {"fault": {"type": "trigger-disable"}, "duration": "4s", "delay": "1s"}
    doc = _scenario("serial", {**KILL, "duration": "2s"}, disable,
                    workload={"clients": 3, "rate": 40, "mix": {"commit": 1, "ddl": 3}})
    result = runner.run("run", str(_write(runner, doc)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    assert journal["drift"], "DDL was made while the triggers were disabled"
    runner.assert_nothing_left()


def test_the_timeline_draws_and_labels_each_faults_window() -> None:
    from datetime import UTC, datetime

    from pggit_chaos.engine.journal import FaultEvidenceSummary, Journal, Phase
    from pggit_chaos.engine.report import build_timeline_figure

    manifest = Experiment.model_validate(_scenario("parallel", KILL, THROTTLE)).to_manifest()
    journal = Journal(experiment="scenario-parallel", spec=manifest)
    journal.enter_phase(Phase.Injecting)
    kill = journal.mark_step_injected("connection-kill", "all clients", {}, since=0.0)
    throttle = journal.mark_step_injected("cpu-throttle", "server", {}, since=1.0)
    kill.end_offset, throttle.end_offset = 4.0, 3.5
    for step in (kill, throttle):
        step.evidence = FaultEvidenceSummary(bit=True, summary=f"{step.fault_type}: bit",
                                             read_at=datetime.now(UTC))
        step.ended_at = datetime.now(UTC)
    journal.fault_evidence = kill.evidence
    journal.mark_reverted()
    journal.finish(Phase.Passed, "nothing lost")
    figure = build_timeline_figure(journal)
    texts = [t.get_text() for t in figure.texts]
    texts += [t.get_text() for ax in figure.axes for t in ax.texts]
    assert "connection-kill (4.0 s)" in texts and "cpu-throttle (2.5 s)" in texts, texts
    assert "each fault bit: connection-kill, cpu-throttle" in texts, texts
