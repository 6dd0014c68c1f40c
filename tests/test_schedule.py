"""``PgGitChaosSchedule``: the model, its generated CRD, and the pure decision of what to run.

The decision (:func:`pggit_chaos.kube.schedules.decide`) takes *now* as an argument, so these
tests walk a schedule through hours and restarts without waiting; the operator's part on an API
server is in ``tests/cluster/test_schedules.py``.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_schema import Invalid, admit, check_crd
from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.kube.schedules import (
    MISSED_CONDITION,
    SCHEDULED_AT_ANNOTATION,
    Run,
    decide,
    run_manifest,
    run_name,
    run_of,
)
from pggit_chaos.spec.crd import build_schedule_crd, schedule_crd_yaml
from pggit_chaos.spec.loader import load_experiment_object
from pggit_chaos.spec.schedule import SCHEDULE_LABEL, Schedule, load_schedule_object

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "charts" / "pggit-chaos" / "crds" / "pggitchaosschedules.yaml"
EXAMPLES = sorted((ROOT / "examples" / "schedules").glob("*.yaml"))
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def body(**spec: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosSchedule",
        "metadata": {"name": "nightly", "namespace": "db"},
        "spec": {"schedule": "* * * * *", "experimentTemplate": {"spec": {
            "target": {"selector": {"matchLabels": {"app": "pg"}},
                       "databaseSecretRef": {"name": "pggit-db"}},
            "fault": {"type": "pod-kill"}, "duration": "5s"}}},
    }
    document["spec"].update(spec)
    return document


def schedule(**spec: Any) -> Schedule:
    return load_schedule_object(body(**spec))


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidExperiment) as caught:
        load_schedule_object(document, "s.yaml")
    return caught.value.problems


# ------------------------------------------------------------------------------- the model


def test_defaults_are_those_of_a_cronjob_with_forbid() -> None:
    spec = schedule().spec
    assert (spec.concurrency_policy, spec.suspend, spec.starting_deadline_seconds,
            spec.successful_runs_history_limit, spec.failed_runs_history_limit,
            spec.time_zone) == ("Forbid", False, None, 3, 1, None)


@pytest.mark.parametrize("cron", ["61 * * * *", "* * * *", "every minute", "@sometimes",
                                  "* * 32 * *"])
def test_a_bad_cron_expression_is_refused_naming_the_field(cron: str) -> None:
    [(path, reason)] = problems(body(schedule=cron))
    assert path == "spec.schedule"
    assert "cron" in reason or "pattern" in reason


@pytest.mark.parametrize("cron", ["*/5 * * * *", "@hourly", "@daily", "0 3 * * 1-5",
                                  "0 0 1 1 *", "30 2 * * sun"])
def test_good_cron_expressions_load(cron: str) -> None:
    assert schedule(schedule=cron).spec.schedule == cron


def test_an_unknown_time_zone_is_refused() -> None:
    [(path, reason)] = problems(body(timeZone="Mars/Olympus_Mons"))
    assert path == "spec.timeZone" and "unknown time zone" in reason


def test_the_template_spec_is_validated_by_the_experiment_model() -> None:
    document = body()
    document["spec"]["experimentTemplate"]["spec"]["fault"]["cpuThrottle"] = {}
    [(path, reason)] = problems(document)
    assert path == "spec.experimentTemplate.spec.fault.cpuThrottle"
    assert "cpu-throttle" in reason


def test_a_long_name_is_refused_so_that_run_names_fit_a_label() -> None:
    document = body()
    document["metadata"]["name"] = "x" * 53
    assert "52 characters" in problems(document)[0][1]


def test_pause_annotation_or_suspend_pauses() -> None:
    assert not schedule().paused
    assert schedule(suspend=True).paused
    document = body()
    document["metadata"]["annotations"] = {"chaos.pggit.io/pause": "true"}
    assert load_schedule_object(document).paused


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_schedules_load_and_pass_the_crd(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    load_schedule_object(document, str(path))
    admit(document, crd=build_schedule_crd(), strict=True)


# ----------------------------------------------------------------------------------- CRD


def test_committed_schedule_crd_is_current() -> None:
    assert CRD_FILE.read_text(encoding="utf-8") == schedule_crd_yaml(), (
        "the schedule CRD is stale; regenerate it: python -c 'from pggit_chaos.spec.crd import "
        'write_schedule_crd; write_schedule_crd("charts/pggit-chaos/crds/'
        'pggitchaosschedules.yaml")\'')


def test_the_schedule_crd_is_accepted_by_the_server() -> None:
    crd = build_schedule_crd()
    assert check_crd(crd) == []
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "PgGitChaosSchedule", ["pgcs"], ["chaos"])
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Schedule", "Suspend", "Active", "Last Schedule", "Last Verdict", "Age"]


def test_the_crd_defaults_and_refuses_like_the_model() -> None:
    crd = build_schedule_crd()
    stored = admit(body(), crd=crd)
    assert stored["spec"]["concurrencyPolicy"] == "Forbid"
    assert stored["spec"]["successfulRunsHistoryLimit"] == 3
    assert stored["spec"]["experimentTemplate"]["spec"]["workload"]["clients"] == 4
    bad = body()
    bad["spec"]["experimentTemplate"]["spec"]["fault"]["cpuThrottle"] = {}
    with pytest.raises(Invalid, match="cpuThrottle belongs to fault type cpu-throttle"):
        admit(bad, crd=crd)
    with pytest.raises(Invalid, match="concurrencyPolicy"):
        admit(body(concurrencyPolicy="Sometimes"), crd=crd)


# ------------------------------------------------------------------------------- the runs


def test_a_run_is_the_template_owned_by_the_schedule() -> None:
    document = body()
    document["spec"]["experimentTemplate"]["metadata"] = {"labels": {"team": "db"},
                                                          "annotations": {"a": "b"}}
    sched = load_schedule_object(document)
    run = run_manifest(sched, "uid-1", T0)
    assert run["metadata"]["name"] == f"nightly-{int(T0.timestamp()) // 60}" == run_name(
        "nightly", T0)
    assert run["metadata"]["labels"] == {"team": "db", SCHEDULE_LABEL: "nightly"}
    assert run["metadata"]["annotations"] == {"a": "b",
                                              SCHEDULED_AT_ANNOTATION: "2026-03-01T12:00:00Z"}
    [owner] = run["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosSchedule",
                     "name": "nightly", "uid": "uid-1", "controller": True,
                     "blockOwnerDeletion": True}
    experiment = load_experiment_object(run)
    assert experiment.spec.fault.type == "pod-kill" and experiment.namespace == "db"


def test_run_of_reads_scheduled_time_and_verdict() -> None:
    run = run_of({"metadata": {"name": "r", "uid": "u", "annotations": {
        SCHEDULED_AT_ANNOTATION: "2026-03-01T12:00:00Z"}},
        "status": {"phase": "Failed", "verdict": "Fail", "finishedAt": "2026-03-01T12:01:00Z"}})
    assert (run.scheduled, run.finished, run.verdict) == (T0, True, "Fail")
    assert not run_of({"metadata": {"name": "r"}, "status": {"phase": "Injecting"}}).finished


# --------------------------------------------------------------------------- the decision


def test_nothing_is_due_before_the_first_scheduled_time() -> None:
    decision = decide(schedule().spec, {}, T0, T0 + timedelta(seconds=30), [])
    assert decision.create is None
    assert decision.next_time == T0 + timedelta(minutes=1)


def test_a_due_time_creates_one_run_and_moves_last_schedule_time() -> None:
    decision = decide(schedule().spec, {}, T0, T0 + timedelta(minutes=1, seconds=2), [])
    assert decision.create == T0 + timedelta(minutes=1)
    assert decision.status["lastScheduleTime"] == "2026-03-01T12:01:00Z"
    # The same look again, with the status written: nothing more (idempotent).
    again = decide(schedule().spec, decision.status, T0, T0 + timedelta(minutes=1, seconds=3),
                   [Run("nightly-x", scheduled=decision.create)])
    assert again.create is None


def test_after_a_restart_only_the_latest_missed_start_is_made_up() -> None:
    status = {"lastScheduleTime": "2026-03-01T12:00:00Z"}
    decision = decide(schedule().spec, status, T0, T0 + timedelta(minutes=10, seconds=5), [])
    assert decision.create == T0 + timedelta(minutes=10)
    assert decision.status["lastScheduleTime"] == "2026-03-01T12:10:00Z"


def test_the_time_zone_is_honoured() -> None:
    spec = schedule(schedule="0 9 * * *", timeZone="Europe/Berlin").spec
    decision = decide(spec, {}, T0, datetime(2026, 3, 2, 8, 0, 30, tzinfo=UTC), [])
    assert decision.create == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 09:00 CET


def test_forbid_skips_a_start_while_a_run_is_active_and_never_makes_it_up() -> None:
    spec = schedule().spec
    active = Run("nightly-1", scheduled=T0)
    status = {"lastScheduleTime": "2026-03-01T12:00:00Z"}
    decision = decide(spec, status, T0, T0 + timedelta(minutes=1, seconds=1), [active])
    assert decision.create is None and decision.skipped == T0 + timedelta(minutes=1)
    assert "Forbid" in decision.message
    status = {**status, **decision.status}
    done = Run("nightly-1", scheduled=T0, finished=True, verdict="Pass")
    later = decide(spec, status, T0, T0 + timedelta(minutes=1, seconds=30), [done])
    assert later.create is None  # the skipped start is not run late
    assert decide(spec, status, T0, T0 + timedelta(minutes=2, seconds=1),
                  [done]).create == T0 + timedelta(minutes=2)


def test_allow_overlaps_and_replace_stops_the_active_run() -> None:
    active = [Run("nightly-1", scheduled=T0)]
    status = {"lastScheduleTime": "2026-03-01T12:00:00Z"}
    now = T0 + timedelta(minutes=1, seconds=1)
    allow = decide(schedule(concurrencyPolicy="Allow").spec, status, T0, now, active)
    assert allow.create is not None and allow.replace == []
    assert allow.status["activeRuns"] == 1
    replace = decide(schedule(concurrencyPolicy="Replace").spec, status, T0, now, active)
    assert replace.create is not None and replace.replace == ["nightly-1"]
    assert replace.status["activeRuns"] == 0


def test_suspended_creates_nothing_but_keeps_the_history_limits() -> None:
    runs = [Run(f"r{i}", scheduled=T0 + timedelta(minutes=i), finished=True, verdict="Pass")
            for i in range(5)]
    decision = decide(schedule(suspend=True).spec, {}, T0, T0 + timedelta(hours=1), runs,
                      paused=True)
    assert decision.create is None and decision.next_time is None
    assert decision.prune == ["r0", "r1"]


def test_history_limits_prune_the_oldest_per_outcome() -> None:
    runs = [Run(f"p{i}", scheduled=T0 + timedelta(minutes=i), finished=True, verdict="Pass")
            for i in range(4)]
    runs += [Run(f"f{i}", scheduled=T0 + timedelta(minutes=10 + i), finished=True,
                 verdict=verdict) for i, verdict in enumerate(["Fail", "Aborted", "Error"])]
    runs.append(Run("active", scheduled=T0 + timedelta(minutes=20)))
    spec = schedule(successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1).spec
    decision = decide(spec, {}, T0, T0 + timedelta(minutes=20, seconds=30), runs)
    assert decision.prune == ["p0", "p1", "f0", "f1"]
    zero = decide(schedule(successfulRunsHistoryLimit=0, failedRunsHistoryLimit=0).spec, {},
                  T0, T0, runs)
    assert len(zero.prune) == 7


def test_a_start_later_than_the_deadline_is_missed_with_a_condition() -> None:
    spec = schedule(startingDeadlineSeconds=20).spec
    status = {"lastScheduleTime": "2026-03-01T12:00:00Z"}
    decision = decide(spec, status, T0, T0 + timedelta(minutes=1, seconds=25), [])
    assert decision.create is None and decision.missed == T0 + timedelta(minutes=1)
    [condition] = decision.status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        MISSED_CONDITION, "True", "StartingDeadlineExceeded")
    status = {**status, **decision.status}
    # The next start, in time, is made and clears the condition.
    made = decide(spec, status, T0, T0 + timedelta(minutes=2, seconds=5), [])
    assert made.create == T0 + timedelta(minutes=2)
    assert made.status["conditions"][0]["status"] == "False"


def test_too_many_missed_starts_are_reported_and_the_latest_runs() -> None:
    status = {"lastScheduleTime": "2026-03-01T12:00:00Z"}
    decision = decide(schedule().spec, status, T0, T0 + timedelta(hours=5, seconds=1), [])
    assert decision.create == T0 + timedelta(hours=5)
    assert decision.status["conditions"][0]["reason"] == "TooManyMissedStarts"


def test_verdicts_are_counted_once_also_after_pruning() -> None:
    spec = schedule(successfulRunsHistoryLimit=1).spec
    runs = [Run(f"r{i}", scheduled=T0 + timedelta(minutes=i), finished=True, verdict="Pass",
                finished_at=T0 + timedelta(minutes=i, seconds=30)) for i in range(3)]
    runs.append(Run("bad", scheduled=T0 + timedelta(minutes=3), finished=True, verdict="Fail",
                    finished_at=T0 + timedelta(minutes=3, seconds=30)))
    status: dict[str, Any] = {"lastScheduleTime": "2026-03-01T12:03:00Z"}
    first = decide(spec, status, T0, T0 + timedelta(minutes=3, seconds=40), runs)
    assert first.status["verdicts"] == {"Pass": 3, "Fail": 1}
    assert first.status["lastVerdict"] == "Fail"
    assert first.status["lastSuccessfulTime"] == "2026-03-01T12:02:30Z"
    assert set(first.prune) == {"r0", "r1"}
    status = {**status, **first.status}
    kept = [run for run in runs if run.name not in first.prune]
    second = decide(spec, copy.deepcopy(status), T0, T0 + timedelta(minutes=3, seconds=50), kept)
    assert second.status["verdicts"] == {"Pass": 3, "Fail": 1}


def test_a_pruned_run_still_listed_while_its_finalizer_runs_is_not_counted_again() -> None:
    """A deleted run lingers (the operator's finalizer reverts its fault first): it must
    neither be counted a second time nor be pruned again (found on the emulator)."""
    spec = schedule(successfulRunsHistoryLimit=1).spec
    runs = [Run(f"r{i}", scheduled=T0 + timedelta(minutes=i), finished=True, verdict="Pass")
            for i in range(2)]
    first = decide(spec, {}, T0, T0 + timedelta(seconds=30), runs)
    assert first.prune == ["r0"] and first.status["verdicts"] == {"Pass": 2}
    lingering = [Run("r0", scheduled=T0, finished=True, verdict="Pass", deleting=True), runs[1]]
    status = dict(first.status)
    for _ in range(3):
        again = decide(spec, status, T0, T0 + timedelta(seconds=40), lingering)
        assert again.prune == []
        assert again.status["verdicts"] == {"Pass": 2}
        status = {**status, **again.status}


# ------------------------------------------------------------------------------- reruns


@pytest.mark.parametrize(("annotation", "status", "wanted"), [
    ("1", {"phase": "Passed"}, True),
    ("1", {"phase": "Passed", "rerun": "1"}, False),        # acted on already
    ("2", {"phase": "Failed", "rerun": "1"}, True),
    ("1", {"phase": "Injecting"}, False),                   # still running: waits
    ("1", {"phase": "Error", "faultIntent": {"id": "x"}}, False),  # revert first
    (None, {"phase": "Passed"}, False),
])
def test_rerun_is_wanted_for_a_new_value_on_a_finished_experiment(
        annotation: str | None, status: dict[str, Any], wanted: bool) -> None:
    from pggit_chaos.kube.handlers import rerun_wanted
    from pggit_chaos.kube.names import RERUN_ANNOTATION

    annotations = {RERUN_ANNOTATION: annotation} if annotation else {}
    assert rerun_wanted({"metadata": {"annotations": annotations}, "status": status}) is wanted


# -- which watch events are worth a reconcile (the operator's API load) --------------------------


def _handlers() -> Any:
    from kubernetes.client import Configuration

    from pggit_chaos.kube.client import KubeClient
    from pggit_chaos.kube.schedule_handlers import ScheduleHandlers

    configuration = Configuration()
    configuration.host = "https://127.0.0.1:9"  # never called: these methods make no request
    return ScheduleHandlers(KubeClient(configuration))


def test_a_schedules_own_status_patches_are_not_worth_a_reconcile() -> None:
    """With 20 one-minute schedules the operator made about 1,100 API requests a minute, most
    of them reconciles of a schedule woken by the watch echoing its own status patch."""
    from pggit_chaos.kube.schedule_handlers import _shape
    from pggit_chaos.spec.schedule import PAUSE_ANNOTATION

    handlers = _handlers()
    body = {"metadata": {"namespace": "ns", "name": "s", "uid": "u1", "generation": 1},
            "status": {}}
    assert handlers.event_needs_reconcile(body)  # new to this operator
    handlers._reconciled["ns", "s"] = _shape(body)  # what reconcile() records
    assert not handlers.event_needs_reconcile({**body, "status": {"activeRuns": 1}})
    assert handlers.event_needs_reconcile(
        {**body, "metadata": {**body["metadata"], "generation": 2}})  # spec changed
    assert handlers.event_needs_reconcile(
        {**body, "metadata": {**body["metadata"], "annotations": {PAUSE_ANNOTATION: "true"}}})
    assert handlers.event_needs_reconcile(
        {**body, "metadata": {**body["metadata"], "uid": "u2"}})  # deleted and made again
    handlers.forget(body)
    assert handlers.event_needs_reconcile(body)


def test_a_finished_runs_later_events_do_not_reconcile_its_schedule_again() -> None:
    handlers = _handlers()
    running = {"metadata": {"uid": "r1"}, "status": {"phase": "Injecting", "runId": "a"}}
    done = {"metadata": {"uid": "r1"}, "status": {"phase": "Passed", "runId": "a"}}
    assert not handlers.run_needs_reconcile(False, running)
    assert handlers.run_needs_reconcile(False, done)
    assert handlers.run_needs_reconcile(False, done)  # until a reconcile succeeded
    handlers.run_end_reconciled(done)
    assert not handlers.run_needs_reconcile(False, done)  # finalizer removed, kopf's marks...
    rerun = {"metadata": {"uid": "r1"}, "status": {"phase": "Failed", "runId": "b"}}
    assert handlers.run_needs_reconcile(False, rerun)  # run again: a new end
    assert handlers.run_needs_reconcile(True, done)  # gone
    assert handlers.run_needs_reconcile(False, done)  # its memory went with it
