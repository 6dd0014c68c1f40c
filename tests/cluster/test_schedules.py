"""``PgGitChaosSchedule`` with the real kopf operator on the test API server: runs created when
due, owned by the schedule, history limits, Forbid/Replace, pause, a missed start, a restart,
deletion cascading to the runs.

Why the emulator and not only the real node: these tests move the operator's clock (an
injected clock, minutes ahead in one step) so that a one-minute cron is walked through several
starts in seconds; the operator's clock cannot be moved on a real node without waiting real
minutes. :func:`test_a_run_is_created_on_time_by_the_wall_clock` is the one that waits for a
real minute boundary and measures the lateness. The runs' runners are played by hand (their
status written as a runner would), as in ``test_operator.py``.

Why on the emulator: these drive an injected clock through many cron minutes (Forbid, Replace,
pause, a missed start, a restart) in seconds; on a real server each minute is a minute. The real
node runs a one-minute schedule for real (its runs, owners, history limit, metrics):
tests/realnode/test_real_cluster.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cluster.emulator import KubeEmulator, iter_events, runner_namespace
from pggit_chaos.config import Settings
from pggit_chaos.kube import names
from pggit_chaos.kube.client import EXPERIMENTS, PODS, SCHEDULES, KubeClient
from pggit_chaos.kube.handlers import Handlers
from pggit_chaos.kube.operator import operate
from pggit_chaos.kube.schedules import SCHEDULED_AT_ANNOTATION
from pggit_chaos.metrics import parse_time
from pggit_chaos.spec.schedule import PAUSE_ANNOTATION, SCHEDULE_LABEL
from waits import wait_until

pytestmark = pytest.mark.kube

NS = "db"
REACT = 20.0
Body = dict[str, Any]


class Clock:
    """The operator's clock: the wall clock plus an offset a test moves forward."""

    def __init__(self, at: datetime | None = None) -> None:
        self.offset = timedelta(0) if at is None else at - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def set(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)


class Operator:
    """The real kopf operator (all registrations) in a thread, with an injected clock."""

    def __init__(self, kubeconfig: Path, clock: Clock) -> None:
        self.stop_flag, self.ready_flag = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        client = KubeClient.from_environment(kubeconfig=str(kubeconfig))
        self.registry = CollectorRegistry()
        self.handlers = Handlers(client, Settings(one_experiment_per_target=False),
                                 self.registry, stop_timeout=2.0, clock=clock)
        self.thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self.thread.start()
        if not self.ready_flag.wait(REACT):
            self.stop()
            raise AssertionError(f"the operator did not start: {self.errors}")

    def _run(self) -> None:
        try:
            asyncio.run(operate(self.handlers, scanning=False, timer_interval=0.5,
                                stop_flag=self.stop_flag, ready_flag=self.ready_flag))
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
            self.ready_flag.set()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(REACT)
        assert not self.thread.is_alive(), "the operator did not stop"
        assert not self.errors, self.errors


@pytest.fixture
def cluster(admin_client: KubeClient) -> KubeClient:
    """Namespace ``db`` opted in, with the runner's ServiceAccount and one database pod."""
    runner_namespace(admin_client, NS, {names.NAMESPACE_OPT_IN_LABEL: "true"})
    admin_client.create(PODS, NS, {"apiVersion": "v1", "kind": "Pod",
                                   "metadata": {"name": "pg-0", "labels": {"app": "pg"}},
                                   "spec": {"containers": [{"name": "postgres",
                                                            "image": "postgres:16"}]}})
    admin_client.patch(PODS, NS, "pg-0", {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status")
    return admin_client


@pytest.fixture
def start_operator(kubeconfigs: dict[str, Path]) -> Iterator[Callable[[Clock], Operator]]:
    running: list[Operator] = []

    def start(clock: Clock) -> Operator:
        operator = Operator(kubeconfigs["operator"], clock)
        running.append(operator)
        return operator

    yield start
    for operator in running:
        if operator.thread.is_alive():
            operator.stop()


def schedule_body(name: str = "every-minute", **spec: Any) -> Body:
    body: Body = {
        "apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosSchedule",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"schedule": "* * * * *", "experimentTemplate": {
            "metadata": {"labels": {"team": "db"}},
            "spec": {"target": {"selector": {"matchLabels": {"app": "pg"}},
                                "databaseSecretRef": {"name": "pggit-db"}},
                     "fault": {"type": "connection-kill"}, "duration": "5s"}}},
    }
    body["spec"].update(spec)
    return body


def next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def runs(client: KubeClient, schedule: str = "every-minute") -> list[Body]:
    found = [body for body in client.list(EXPERIMENTS, NS)
             if body["metadata"].get("labels", {}).get(SCHEDULE_LABEL) == schedule]
    return sorted(found, key=lambda b: b["metadata"]["name"])


def run_names(client: KubeClient, schedule: str = "every-minute") -> list[str]:
    return [body["metadata"]["name"] for body in runs(client, schedule)]


def status(client: KubeClient, name: str = "every-minute") -> Body:
    return dict(client.get(SCHEDULES, NS, name).get("status") or {})


def finish(client: KubeClient, run: str, verdict: str) -> None:
    """Write a run's end as its runner would (once the operator has started its runner)."""
    wait_until(lambda: bool((client.get(EXPERIMENTS, NS, run).get("status") or {}).get(
        "runnerJob")), f"{run}'s runner Job", REACT)
    phase = {"Pass": "Passed", "Fail": "Failed"}[verdict]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.patch(EXPERIMENTS, NS, run, {"status": {
        "phase": phase, "verdict": verdict, "startedAt": now, "finishedAt": now}},
        subresource="status")


def name_for(moment: datetime, schedule: str = "every-minute") -> str:
    return f"{schedule}-{int(moment.timestamp()) // 60}"


def reasons(emulator: KubeEmulator, name: str = "every-minute") -> list[str]:
    return [str(e["reason"]) for e in iter_events(emulator, NS)
            if e["involvedObject"]["name"] == name]


def test_a_one_minute_schedule_creates_owned_runs_and_keeps_the_history_limits(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[[Clock], Operator]) -> None:
    clock = Clock()
    operator = start_operator(clock)
    made = cluster.create(SCHEDULES, NS, schedule_body(
        successfulRunsHistoryLimit=1, failedRunsHistoryLimit=1))
    first = next_minute(clock())
    clock.set(first + timedelta(seconds=1))
    wait_until(lambda: run_names(cluster) == [name_for(first)], "the first run", REACT)
    [run] = runs(cluster)
    assert run["metadata"]["labels"] == {"team": "db", SCHEDULE_LABEL: "every-minute"}
    assert parse_time(run["metadata"]["annotations"][SCHEDULED_AT_ANNOTATION]) == first
    [owner] = run["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "PgGitChaosSchedule", made["metadata"]["uid"], True)
    assert run["spec"]["fault"]["type"] == "connection-kill"
    wait_until(lambda: status(cluster).get("activeRuns") == 1, "one active run", REACT)
    assert parse_time(status(cluster)["lastScheduleTime"]) == first

    finish(cluster, name_for(first), "Pass")
    wait_until(lambda: status(cluster).get("lastVerdict") == "Pass", "the verdict", REACT)
    second = first + timedelta(minutes=1)
    clock.set(second + timedelta(seconds=1))
    wait_until(lambda: name_for(second) in run_names(cluster), "the second run", REACT)
    finish(cluster, name_for(second), "Pass")
    # Two Passed runs, a limit of one: the older goes; both stay counted.
    wait_until(lambda: run_names(cluster) == [name_for(second)], "the first run pruned", REACT)
    wait_until(lambda: status(cluster).get("verdicts") == {"Pass": 2}, "two passes", REACT)
    third = second + timedelta(minutes=1)
    clock.set(third + timedelta(seconds=1))
    wait_until(lambda: name_for(third) in run_names(cluster), "the third run", REACT)
    finish(cluster, name_for(third), "Fail")
    wait_until(lambda: status(cluster).get("verdicts") == {"Pass": 2, "Fail": 1}, "a fail",
               REACT)
    assert run_names(cluster) == [name_for(second), name_for(third)]
    final = status(cluster)
    assert final["lastVerdict"] == "Fail" and final["activeRuns"] == 0
    assert final["lastSuccessfulTime"]
    assert reasons(emulator).count("RunCreated") == 3
    # The verdicts per schedule in the metrics (the dashboard's "per schedule" panel).
    labels = {"fault": "connection-kill", "schedule": "every-minute"}
    wait_until(lambda: operator.registry.get_sample_value(
        "pggit_chaos_experiments_total", {**labels, "verdict": "Fail"}) == 1, "Fail counted",
        REACT)
    assert operator.registry.get_sample_value(
        "pggit_chaos_experiments_total", {**labels, "verdict": "Pass"}) == 2


def test_forbid_refuses_overlap_and_replace_stops_the_active_run(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[[Clock], Operator]) -> None:
    clock = Clock()
    start_operator(clock)
    cluster.create(SCHEDULES, NS, schedule_body())
    first = next_minute(clock())
    clock.set(first + timedelta(seconds=1))
    wait_until(lambda: run_names(cluster) == [name_for(first)], "the first run", REACT)
    second = first + timedelta(minutes=1)
    clock.set(second + timedelta(seconds=1))
    wait_until(lambda: parse_time(status(cluster).get("lastSkippedTime")) == second,
               "the second start skipped", REACT)
    assert run_names(cluster) == [name_for(first)]
    [skipped] = [e for e in iter_events(emulator, NS) if e["reason"] == "RunSkipped"]
    assert "concurrencyPolicy Forbid" in skipped["message"]

    cluster.patch(SCHEDULES, NS, "every-minute", {"spec": {"concurrencyPolicy": "Replace"}})
    third = second + timedelta(minutes=1)
    clock.set(third + timedelta(seconds=1))
    wait_until(lambda: run_names(cluster) == [name_for(third)], "the first run replaced",
               REACT)
    assert "RunReplaced" in reasons(emulator)


def test_pause_annotation_and_suspend_stop_creating_runs(
        cluster: KubeClient, start_operator: Callable[[Clock], Operator]) -> None:
    clock = Clock()
    start_operator(clock)
    body = schedule_body()
    body["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    cluster.create(SCHEDULES, NS, body)
    first = next_minute(clock())
    clock.set(first + timedelta(seconds=1))
    wait_until(lambda: "suspended" in str(status(cluster).get("message")), "paused", REACT)
    time.sleep(2)  # several timer ticks: still nothing
    assert run_names(cluster) == []
    cluster.patch(SCHEDULES, NS, "every-minute", {"metadata": {"annotations": {
        PAUSE_ANNOTATION: None}}, "spec": {"suspend": True}})
    time.sleep(2)
    assert run_names(cluster) == []
    cluster.patch(SCHEDULES, NS, "every-minute", {"spec": {"suspend": False}})
    # Resumed: the latest start since creation (the one due while paused) is made.
    wait_until(lambda: run_names(cluster) == [name_for(first)], "a run after resuming", REACT)


def test_a_start_later_than_the_deadline_is_missed_with_a_condition(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[[Clock], Operator]) -> None:
    body = cluster.create(SCHEDULES, NS, schedule_body(startingDeadlineSeconds=10))
    created = parse_time(body["metadata"]["creationTimestamp"])
    assert created is not None
    due = next_minute(created)
    # The operator comes up 30 s after the start was due: too late by the deadline.
    clock = Clock(due + timedelta(seconds=30))
    start_operator(clock)
    wait_until(lambda: any(c.get("type") == "MissedStart" and c.get("status") == "True"
                           for c in status(cluster).get("conditions") or []),
               "the MissedStart condition", REACT)
    condition = next(c for c in status(cluster)["conditions"] if c["type"] == "MissedStart")
    assert condition["reason"] == "StartingDeadlineExceeded"
    assert parse_time(status(cluster)["lastMissedTime"]) == due
    assert run_names(cluster) == []
    assert "MissedStart" in reasons(emulator)
    # The next start, in time, is made and clears the condition.
    clock.set(due + timedelta(minutes=1, seconds=1))
    wait_until(lambda: run_names(cluster) == [name_for(due + timedelta(minutes=1))],
               "the next run", REACT)
    wait_until(lambda: any(c.get("type") == "MissedStart" and c.get("status") == "False"
                           for c in status(cluster).get("conditions") or []),
               "the condition cleared", REACT)


def test_after_an_operator_restart_the_latest_missed_start_is_made_once(
        cluster: KubeClient, start_operator: Callable[[Clock], Operator]) -> None:
    clock = Clock()
    operator = start_operator(clock)
    cluster.create(SCHEDULES, NS, schedule_body(concurrencyPolicy="Allow"))
    first = next_minute(clock())
    clock.set(first + timedelta(seconds=1))
    wait_until(lambda: run_names(cluster) == [name_for(first)], "the first run", REACT)
    operator.stop()
    # Down for five minutes: from status.lastScheduleTime the new operator makes up only the
    # latest start, as the CronJob controller does, and nothing twice.
    later = first + timedelta(minutes=5)
    clock.set(later + timedelta(seconds=2))
    start_operator(clock)
    wait_until(lambda: run_names(cluster) == [name_for(first), name_for(later)],
               "the latest start made up", REACT)
    time.sleep(2)
    assert run_names(cluster) == [name_for(first), name_for(later)]


def test_deleting_the_schedule_deletes_its_runs(
        cluster: KubeClient, start_operator: Callable[[Clock], Operator]) -> None:
    clock = Clock()
    start_operator(clock)
    cluster.create(SCHEDULES, NS, schedule_body())
    first = next_minute(clock())
    clock.set(first + timedelta(seconds=1))
    wait_until(lambda: run_names(cluster) == [name_for(first)], "the first run", REACT)
    cluster.delete(SCHEDULES, NS, "every-minute")
    # Garbage collection deletes the run; the operator's finalizer on it lets it go.
    wait_until(lambda: run_names(cluster) == [], "the run deleted with its schedule", REACT)


def test_a_run_is_created_on_time_by_the_wall_clock(
        cluster: KubeClient, start_operator: Callable[[Clock], Operator]) -> None:
    """The one test on the real clock: it waits for the next minute boundary (up to 60 s)
    and measures the lateness, scheduled time to the run's appearance."""
    start_operator(Clock())
    cluster.create(SCHEDULES, NS, schedule_body())
    due = next_minute(datetime.now(UTC))
    wait_until(lambda: bool(run_names(cluster)), "the first run on the wall clock", 90.0)
    seen = datetime.now(UTC)
    assert run_names(cluster) == [name_for(due)]
    lateness = (seen - due).total_seconds()
    print(f"schedule lateness: {lateness:.2f} s (scheduled {due:%H:%M:%S}, run seen "
          f"{seen:%H:%M:%S.%f})")
    assert lateness < 10.0


def test_a_cron_expression_the_model_refuses_is_reported_and_runs_nothing(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[[Clock], Operator]) -> None:
    """The CRD's pattern only checks five fields; minute 61 reaches the operator, which says
    why in status and an Event and creates nothing."""
    clock = Clock()
    start_operator(clock)
    cluster.create(SCHEDULES, NS, schedule_body(schedule="61 * * * *"))
    wait_until(lambda: "not a cron expression" in str(status(cluster).get("message")),
               "the reason in status", REACT)
    assert "InvalidSpec" in reasons(emulator)
    clock.set(next_minute(clock()) + timedelta(minutes=1))
    time.sleep(2)
    assert run_names(cluster) == []
