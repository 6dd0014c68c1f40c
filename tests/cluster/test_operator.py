"""The kopf operator against the test API server: gates, runner Jobs, crash reverts, the
finalizer, abort, expiry, the sweep, Events and metrics from status.

Most tests run the real kopf operator in a thread (``run_operator`` with a stop flag) and play
the runner's part by hand: they patch the experiment's status as the runner would, create the
NetworkPolicy and labels of a network-partition, mark the runner Job Failed. The gates, the
sweep and the hypothesis test call :class:`~pggit_chaos.kube.handlers.Handlers` directly (the
work without kopf), which is what each kopf handler hands off to.

Why on the emulator: these tests stage what a real cluster
cannot produce on demand (a runner's part played by hand, an expired intent beside a live runner,
an injected refusal or garbage answer, the instant between creating a Job and recording it) or
need other chart settings than the real node's install; each says which in an "Emulator-only"
line. What a real cluster can stage (one experiment per target, a missing Secret, a dry run, the
runner killed, deleted or aborted mid-fault, the operator restarted, FailedCreate) runs on the
real node: tests/realnode/test_real_cluster.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from cluster.emulator import EmulatorServer, KubeEmulator, iter_events, namespace, runner_namespace
from pggit_chaos.config import Settings
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import EXPERIMENTS, JOBS, NETWORK_POLICIES, PODS, KubeClient
from pggit_chaos.kube.handlers import Handlers
from pggit_chaos.kube.operator import run_operator
from pggit_chaos.spec.expect import Result, expectation_of
from pggit_chaos.spec.loader import load_experiments
from pggit_chaos.spec.model import API_VERSION, KIND
from waits import wait_until

pytestmark = pytest.mark.kube

NS = "db"
#: Seconds a test waits for the operator to react (generous; it takes well under one).
REACT = 20.0
Body = dict[str, Any]


# -- the test cluster -------------------------------------------------------------------------
def _pod(client: KubeClient, ns: str, name: str, labels: dict[str, str], *,
         ready: bool = True) -> None:
    client.create(PODS, ns, {"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": name, "labels": labels},
                             "spec": {"containers": [{"name": "postgres",
                                                      "image": "postgres:16"}]}})
    client.patch(PODS, ns, name, {"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}},
        subresource="status")


@pytest.fixture
def cluster(admin_client: KubeClient) -> KubeClient:
    """Namespace ``db`` opted in, two Running+Ready database pods and one not Ready."""
    runner_namespace(admin_client, NS, {names.NAMESPACE_OPT_IN_LABEL: "true"})
    for index in range(2):
        _pod(admin_client, NS, f"pg-{index}", {"app": "pg"})
    _pod(admin_client, NS, "pg-starting", {"app": "pg"}, ready=False)
    return admin_client


@pytest.fixture
def operator_client(kubeconfigs: dict[str, Path]) -> KubeClient:
    return KubeClient.from_environment(kubeconfig=str(kubeconfigs["operator"]))


def _settings(**overrides: Any) -> Settings:
    # The tests here hold several experiments on one target at once (runners played by
    # hand): one at a time per target has tests of its own (test_one_experiment_per_target_*).
    overrides.setdefault("one_experiment_per_target", False)
    return Settings(**overrides)


def handlers_for(client: KubeClient, **overrides: Any) -> Handlers:
    return Handlers(client, _settings(**overrides), CollectorRegistry(), stop_timeout=2.0)


class Operator:
    """The real kopf operator in a thread, stopped by :meth:`stop`."""

    def __init__(self, kubeconfig: Path, settings: Settings,
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stop_flag, self.ready_flag = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(str(kubeconfig), settings),
                                       name="operator", daemon=True)
        self.thread.start()
        if not self.ready_flag.wait(REACT):
            self.stop()
            raise AssertionError(f"the operator did not start: {self.errors}")

    def _run(self, kubeconfig: str, settings: Settings) -> None:
        try:
            run_operator(settings, kubeconfig, metrics_port=0, scanning=False,
                         registry=self.registry, timer_interval=0.5, stop_timeout=3.0,
                         stop_flag=self.stop_flag, ready_flag=self.ready_flag)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
            self.ready_flag.set()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(REACT)
        assert not self.thread.is_alive(), "the operator did not stop"
        assert not self.errors, self.errors

    def value(self, name: str, labels: dict[str, str]) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def start_operator(kubeconfigs: dict[str, Path]) -> Iterator[Callable[..., Operator]]:
    running: list[Operator] = []

    def start(registry: CollectorRegistry | None = None, **overrides: Any) -> Operator:
        operator = Operator(kubeconfigs["operator"], _settings(**overrides), registry)
        running.append(operator)
        return operator

    yield start
    for operator in running:
        if operator.thread.is_alive():
            operator.stop()


# -- experiments ------------------------------------------------------------------------------
def experiment(name: str, ns: str = NS, fault: str = "network-partition",
               **spec: Any) -> Body:
    body: Body = {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": ns},
        "spec": {"target": {"selector": {"matchLabels": {"app": "pg"}},
                            "databaseSecretRef": {"name": "pggit-db"}},
                 "fault": {"type": fault}, "duration": "5s"},
    }
    target = spec.pop("target", None)
    if target:
        body["spec"]["target"].update(target)
    body["spec"].update(spec)
    return body


def create(client: KubeClient, body: Body) -> Body:
    return client.create(EXPERIMENTS, body["metadata"]["namespace"], body)


def get(client: KubeClient, name: str, ns: str = NS) -> Body:
    return client.get(EXPERIMENTS, ns, name)


def status_of(client: KubeClient, name: str, ns: str = NS) -> Body:
    found = client.find(EXPERIMENTS, ns, name)
    return dict((found or {}).get("status") or {})


def wait_status(client: KubeClient, name: str, predicate: Callable[[Body], bool], what: str,
                ns: str = NS) -> Body:
    wait_until(lambda: predicate(status_of(client, name, ns)), f"{name}: {what}", REACT)
    return status_of(client, name, ns)


def wait_phase(client: KubeClient, name: str, phase: str, ns: str = NS) -> Body:
    return wait_status(client, name, lambda s: s.get("phase") == phase, f"phase {phase}", ns)


def patch_status(client: KubeClient, name: str, status: Body, ns: str = NS) -> None:
    client.patch(EXPERIMENTS, ns, name, {"status": status}, subresource="status")


def events(emulator: KubeEmulator, name: str, ns: str = NS) -> list[Body]:
    return [e for e in iter_events(emulator, ns) if e["involvedObject"]["name"] == name]


def reasons(emulator: KubeEmulator, name: str, ns: str = NS) -> list[str]:
    return [str(e["reason"]) for e in events(emulator, name, ns)]


def runner_jobs(client: KubeClient, name: str, ns: str = NS) -> list[Body]:
    return [job for job in client.list(JOBS, ns)
            if job["metadata"].get("labels", {}).get(names.EXPERIMENT_LABEL) == name
            and job["metadata"]["labels"].get(names.ROLE_LABEL) == names.ROLE_RUNNER]


def partition(client: KubeClient, name: str, pods: list[str], *,
              expires_at: datetime | None = None, ns: str = NS) -> Body:
    """Do what the runner does before and for a network-partition: intent in status, then the
    label on the pods and the NetworkPolicy. Returns the intent."""
    body = get(client, name, ns)
    expires = _rfc3339(expires_at or datetime.now(UTC) + timedelta(minutes=10))
    intent = {"id": "a1b2c3d4e5f6", "type": "network-partition",
              "target": ", ".join(f"pod {ns}/{p}" for p in pods),
              "description": "deny both", "createdAt": _rfc3339(datetime.now(UTC)),
              "expiresAt": expires,
              "undo": {"kind": names.UNDO_NETWORK_POLICY, "namespace": ns,
                       "policy": names.network_policy_name(name), "pods": pods,
                       "label": names.PARTITION_LABEL}}
    patch_status(client, name, {"phase": "Injecting", "faultIntent": intent,
                                "startedAt": _rfc3339(datetime.now(UTC)), "targets": pods}, ns)
    for pod in pods:
        client.patch(PODS, ns, pod, builders.partition_label_patch(name))
    from pggit_chaos.spec import load_experiment_object

    policy = builders.network_policy(load_experiment_object(body), body["metadata"]["uid"],
                                     expires, "both")
    client.create(NETWORK_POLICIES, ns, policy)
    patch_status(client, name, {"injectedAt": _rfc3339(datetime.now(UTC))}, ns)
    return intent


def partition_left(client: KubeClient, ns: str = NS) -> list[str]:
    """Policies and partition labels still there."""
    left = [f"policy {p['metadata']['name']}" for p in client.list(NETWORK_POLICIES, ns)]
    left += [f"label on {p['metadata']['name']}" for p in client.list(PODS, ns)
             if names.PARTITION_LABEL in (p["metadata"].get("labels") or {})]
    return left


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def admitted(client: KubeClient, name: str, ns: str = NS) -> Body:
    return wait_status(client, name, lambda s: bool(s.get("runnerJob")), "a runner Job", ns)


# -- one experiment per target ---------------------------------------------------------------
# Emulator-only: orders three waiting experiments through the Handlers directly; which one a real
# operator's watch sees first cannot be staged. (The second waiting for the first runs on the real
# node.)
def test_one_experiment_per_target_the_oldest_waiting_goes_first(
        cluster: KubeClient, operator_client: KubeClient, emulator: KubeEmulator) -> None:
    handlers = handlers_for(operator_client, one_experiment_per_target=True)
    for name in ("a-holder", "b-older", "c-younger"):
        create(cluster, experiment(name))
    handlers.reconcile(NS, "a-holder")
    assert status_of(cluster, "a-holder").get("runnerJob")
    handlers.reconcile(NS, "c-younger")
    handlers.reconcile(NS, "b-older")
    assert "a-holder" in status_of(cluster, "b-older")["message"]
    patch_status(cluster, "a-holder", {"phase": "Error", "message": "gone"})
    handlers.reconcile(NS, "c-younger")  # b-older came first: c keeps waiting, now for b
    assert "b-older" in status_of(cluster, "c-younger")["message"]
    assert not runner_jobs(cluster, "c-younger")
    handlers.reconcile(NS, "b-older")
    assert status_of(cluster, "b-older").get("runnerJob")


# -- gates ------------------------------------------------------------------------------------
def _refusal(client: KubeClient, operator_client: KubeClient, emulator: KubeEmulator,
             body: Body, **overrides: Any) -> str:
    create(client, body)
    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    handlers_for(operator_client, **overrides).reconcile(ns, name)
    status = status_of(client, name, ns)
    assert status.get("phase") == "Aborted", status
    assert not runner_jobs(client, name, ns)
    assert "Refused" in reasons(emulator, name, ns)
    refused = next(e for e in events(emulator, name, ns) if e["reason"] == "Refused")
    assert refused["type"] == "Warning"
    return str(status["message"])


# Emulator-only: each gate is an operator setting; staging every one on the real node means one
# chart install per gate.
def test_each_gate_refuses_naming_itself_and_how_to_open_it(
        cluster: KubeClient, operator_client: KubeClient, emulator: KubeEmulator) -> None:
    c, o, e = cluster, operator_client, emulator
    message = _refusal(c, o, e, experiment("allow"), namespaces="staging")
    assert "allowlist" in message and "PGGIT_CHAOS_NAMESPACES" in message

    namespace(c, "quiet")
    _pod(c, "quiet", "pg-q", {"app": "pg"})
    message = _refusal(c, o, e, experiment("optin", ns="quiet"))
    assert "opt-in" in message
    assert f"kubectl label namespace quiet {names.NAMESPACE_OPT_IN_LABEL}=true" in message

    message = _refusal(c, o, e, experiment("system", ns="kube-system"),
                       require_namespace_opt_in=False)
    assert "kube-system" in message

    message = _refusal(c, o, e, experiment("pause", fault="pod-pause"))
    assert "needs pods/exec" in message and "PGGIT_CHAOS_ALLOW_EXEC" in message
    # A scenario's later fault is gated too (before, only its first fault was looked at).
    staged = experiment("staged-pause", fault="connection-kill")
    staged["spec"]["scenario"] = {"steps": [{"fault": staged["spec"].pop("fault")},
                                            {"fault": {"type": "pod-pause"}}]}
    message = _refusal(c, o, e, staged)
    assert "needs pods/exec" in message and "PGGIT_CHAOS_ALLOW_EXEC" in message

    wreck = experiment("wreck", fault="index-corruption")
    wreck["spec"]["fault"]["indexCorruption"] = {"destructive": True}
    message = _refusal(c, o, e, wreck)
    assert "destructive gate" in message and "never in a cluster" in message
    # What experiments/09's expect-in-cluster annotation holds a cluster to (kind-e2e).
    (example,) = load_experiments(next(
        (Path(__file__).resolve().parents[2] / "experiments").glob("09-*.yaml")))
    assert expectation_of(example, in_cluster=True).judge("Aborted", message).result \
        is Result.met

    message = _refusal(c, o, e, experiment("cap", target={"mode": "all"}), max_target_pods=1)
    assert "2 pods" in message and "PGGIT_CHAOS_MAX_TARGET_PODS" in message

    message = _refusal(c, o, e, experiment(
        "nobody", target={"selector": {"matchLabels": {"app": "mysql"}}}))
    assert "no Running and Ready pod" in message and "app=mysql" in message

    runner_namespace(c, "pggit-chaos", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    _pod(c, "pggit-chaos", "operator-0", {"app": "pg", "app.kubernetes.io/name": "pggit-chaos"})
    _pod(c, "pggit-chaos", "pg-x", {"app": "pg"})
    message = _refusal(c, o, e, experiment("self", ns="pggit-chaos"))
    assert "operator's own pods" in message and "operator-0" in message


# Emulator-only: the gates' operator settings, as above.
def test_gates_let_an_allowed_experiment_pass(cluster: KubeClient,
                                              operator_client: KubeClient) -> None:
    create(cluster, experiment("fine", target={"mode": "all"}))
    handlers_for(operator_client, namespaces=f"{NS},staging", max_target_pods=2).reconcile(
        NS, "fine")
    status = status_of(cluster, "fine")
    assert status["phase"] == "Pending" and status["runnerJob"], status
    assert status["runId"] and len(status["runId"]) == 12


# Emulator-only: needs the operator in watchAllNamespaces mode, a second chart install.
def test_watching_all_namespaces_refuses_a_namespace_without_the_runners_account(
        cluster: KubeClient, operator_client: KubeClient, emulator: KubeEmulator) -> None:
    """watchAllNamespaces with an opted-in namespace outside ``namespaces``: the chart made no
    runner ServiceAccount there. Refused at admission, naming it and the value to set (before,
    every gate passed, the Job's pod was refused and the experiment sat Pending)."""
    namespace(cluster, "apps", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    _pod(cluster, "apps", "pg-a", {"app": "pg"})
    message = _refusal(cluster, operator_client, emulator, experiment("lost", ns="apps"),
                       namespaces="")
    assert message == (
        "refused by the runner identity gate: the runner's ServiceAccount pggit-chaos-runner "
        "does not exist in namespace apps, so its Job could not start a pod: the chart creates "
        "it (with the runner's Role) only in the namespaces of its `namespaces` value, also "
        "with watchAllNamespaces: add apps there (helm upgrade --reuse-values --set "
        "'namespaces={...,apps}')"), message
    # once the chart covers the namespace, the same experiment is admitted
    runner_namespace(cluster, "apps", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    create(cluster, experiment("found", ns="apps"))
    handlers_for(operator_client, namespaces="").reconcile("apps", "found")
    status = status_of(cluster, "found", "apps")
    assert status["phase"] == "Pending" and status["runnerJob"], status


# -- admission through kopf ---------------------------------------------------------------------
# Emulator-only: seeds experiments past admission (as an older CRD let them in); a real server
# checks every create against today's CRD.
def test_invalid_spec_errors_and_the_next_experiment_still_runs(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[..., Operator]) -> None:
    start_operator()
    # Accepted by the API server (seeded past admission, as by an older CRD) but not the model.
    bad = experiment("bad")
    bad["spec"]["fault"]["type"] = "meteor-strike"
    emulator.seed("pggitchaosexperiments", bad)
    nosecret = experiment("nosecret")
    del nosecret["spec"]["target"]["databaseSecretRef"]
    emulator.seed("pggitchaosexperiments", nosecret)
    create(cluster, experiment("good"))

    # The model's message reaches the user as a Warning Event and in status: the server
    # ratchets the status write of an object whose unchanged spec fails today's schema.
    wait_until(lambda: "InvalidSpec" in reasons(emulator, "bad"), "an InvalidSpec Event", REACT)
    event = next(e for e in events(emulator, "bad") if e["reason"] == "InvalidSpec")
    assert event["type"] == "Warning"
    assert "invalid spec" in event["message"] and "spec.fault" in event["message"]
    status = wait_phase(cluster, "bad", "Error")
    assert "spec.fault" in status["message"]
    status = wait_phase(cluster, "nosecret", "Error")
    assert "databaseSecretRef" in status["message"]
    status = admitted(cluster, "good")
    assert status["phase"] == "Pending"
    assert not runner_jobs(cluster, "bad") and not runner_jobs(cluster, "nosecret")


# Emulator-only: stops the operator between creating the Job and writing status; that instant
# cannot be hit on demand in a real operator pod.
def test_a_job_created_before_a_crash_is_adopted_not_doubled(
        cluster: KubeClient, operator_client: KubeClient) -> None:
    """The operator died between creating the Job and writing status: the next one adopts it."""
    from pggit_chaos.spec import load_experiment_object

    body = create(cluster, experiment("adopt"))
    job = builders.runner_job(load_experiment_object(body), body["metadata"]["uid"],
                              "feedc0ffee12", _settings())
    cluster.create(JOBS, NS, job)
    handlers_for(operator_client).reconcile(NS, "adopt")
    status = status_of(cluster, "adopt")
    assert status["runId"] == "feedc0ffee12"
    assert status["runnerJob"] == job["metadata"]["name"]
    assert len(runner_jobs(cluster, "adopt")) == 1


# -- crash paths ----------------------------------------------------------------------------------
def _fail_job(client: KubeClient, job_name: str, exit_code: int | None) -> None:
    job = client.get(JOBS, NS, job_name)
    if exit_code is not None:
        labels = dict(job["spec"]["template"]["metadata"]["labels"])
        client.create(PODS, NS, {"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": f"{job_name}-r", "labels": labels},
                                 "spec": job["spec"]["template"]["spec"]})
        client.patch(PODS, NS, f"{job_name}-r", {"status": {
            "phase": "Failed", "containerStatuses": [{
                "name": names.CONTAINER, "ready": False, "restartCount": 0, "image": "x",
                "imageID": "", "state": {"terminated": {"exitCode": exit_code,
                                                        "reason": "Error"}}}]}},
            subresource="status")
    now = _rfc3339(datetime.now(UTC))
    client.patch(JOBS, NS, job_name, {"status": {"failed": 1, "conditions": [{
        "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "lastProbeTime": now, "lastTransitionTime": now}]}}, subresource="status")


# Emulator-only: a runner that exits 0 without a verdict cannot be produced on demand; the Job's
# status is written by hand.
def test_runner_ending_without_a_verdict_is_an_error(
        cluster: KubeClient, start_operator: Callable[..., Operator]) -> None:
    start_operator()
    create(cluster, experiment("silent"))
    status = admitted(cluster, "silent")
    now = _rfc3339(datetime.now(UTC))
    cluster.patch(JOBS, NS, status["runnerJob"], {"status": {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True", "lastProbeTime": now,
         "lastTransitionTime": now}]}}, subresource="status")
    status = wait_phase(cluster, "silent", "Error")
    assert "ended without a verdict" in status["message"]


# Emulator-only: an intent already expired beside a live runner; a real runner's intent expires
# only after its whole hold and grace.
def test_expired_intent_is_reverted_while_the_runner_lives(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[..., Operator]) -> None:
    start_operator()
    create(cluster, experiment("stale"))
    admitted(cluster, "stale")
    # As a runner does: intent (not yet expired) in status, then the fault; then time passes
    # the intent's expiresAt. (An intent written already expired could be reverted before the
    # policy exists, and the policy created afterwards would stay.)
    partition(cluster, "stale", ["pg-0"])
    patch_status(cluster, "stale", {"faultIntent": {
        "expiresAt": _rfc3339(datetime.now(UTC) - timedelta(seconds=5))}})
    status = wait_status(cluster, "stale", lambda s: not s.get("faultIntent"),
                         "the expired intent is cleared")
    assert partition_left(cluster) == []
    assert status["phase"] == "Injecting"  # its runner still runs: it decides the verdict
    wait_until(lambda: "FaultReverted" in reasons(emulator, "stale"), "FaultReverted", REACT)
    reverted = next(e for e in events(emulator, "stale") if e["reason"] == "FaultReverted")
    assert "expired" in reverted["message"]


# -- the sweep ------------------------------------------------------------------------------------
# Emulator-only: the sweep called directly on orphans made by hand (an experiment deleted orphaning
# its policy while no operator runs).
def test_sweep_removes_orphaned_and_expired_partitions(
        cluster: KubeClient, operator_client: KubeClient) -> None:
    create(cluster, experiment("live"))
    handlers = handlers_for(operator_client)
    handlers.reconcile(NS, "live")
    partition(cluster, "live", ["pg-0"])
    create(cluster, experiment("ghost"))
    partition(cluster, "ghost", ["pg-1"])
    # No operator here (no finalizer), and deleted orphaning its dependents: the policy stays.
    cluster.delete(EXPERIMENTS, NS, "ghost", propagation="Orphan")
    create(cluster, experiment("old"))
    handlers.reconcile(NS, "old")
    partition(cluster, "old", ["pg-starting"],
              expires_at=datetime.now(UTC) - timedelta(minutes=1))

    removed = handlers.sweep()
    assert any("partition" in line and "ghost" in line for line in removed), removed
    assert any("expired" in line for line in removed), removed
    left = partition_left(cluster)
    assert left == [f"policy {names.network_policy_name('live')}", "label on pg-0"], left
    assert handlers.sweep() == []


# -- metrics and Events across a restart ----------------------------------------------------------
# Emulator-only: three runners' states played at once by hand; the real node's operator-restart
# test covers one live run and its Events.
def test_metrics_and_events_are_right_after_a_restart(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[..., Operator]) -> None:
    first = start_operator()
    for name in ("m1", "m2", "m3"):
        create(cluster, experiment(name))
        admitted(cluster, name)
    partition(cluster, "m1", ["pg-0"])
    partition(cluster, "m2", ["pg-1"])
    patch_status(cluster, "m3", {"phase": "Passed", "verdict": "Pass",
                                 "startedAt": "2026-01-01T00:00:00Z",
                                 "finishedAt": "2026-01-01T00:00:40Z",
                                 "message": "every check passed"})
    labels = {"fault": "network-partition"}
    wait_until(lambda: first.value("pggit_chaos_active_faults", labels) == 2
               and first.value("pggit_chaos_experiments_total",
                               {**labels, "verdict": "Pass", "schedule": ""}) == 1,
               "two active faults and one Pass counted", REACT)
    wait_until(lambda: "Verified" in reasons(emulator, "m3"), "a Verified Event", REACT)
    first.stop()

    second = start_operator()
    # Rebuilt at start from the intents in status, not from memory.
    assert second.value("pggit_chaos_active_faults", labels) == 2
    patch_status(cluster, "m2", {"faultIntent": None, "revertedAt": _rfc3339(datetime.now(UTC)),
                                 "phase": "Recovering"})
    wait_until(lambda: second.value("pggit_chaos_active_faults", labels) == 1,
               "the gauge follows a revert", REACT)
    wait_until(lambda: "FaultReverted" in reasons(emulator, "m2"), "FaultReverted", REACT)
    # The finished run was counted by the first operator: the second does not count it again,
    # and no Event is posted twice.
    assert not second.value("pggit_chaos_experiments_total",
                            {**labels, "verdict": "Pass", "schedule": ""})
    for name in ("m1", "m2", "m3"):
        posted = reasons(emulator, name)
        assert len(posted) == len(set(posted)), (name, posted)


# -- robustness -----------------------------------------------------------------------------------
_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 500), st.text(max_size=12),
                    st.lists(st.text(max_size=5), max_size=3))
_spec_keys = st.sampled_from(["target", "fault", "duration", "workload", "recovery",
                              "verification", "dryRun", "local", "bogus"])


@st.composite
def experiment_bodies(draw: st.DrawFn) -> Body:
    """Experiments from valid to nonsense: fields dropped, replaced, or added."""
    body = experiment("x", fault=draw(st.sampled_from(
        ["network-partition", "pod-kill", "cpu-throttle", "pod-pause", "trigger-disable",
         "nonsense"])), dryRun=draw(st.booleans()))
    spec = body["spec"]
    for key in draw(st.lists(_spec_keys, max_size=3)):
        action = draw(st.sampled_from(["drop", "replace"]))
        if action == "drop":
            spec.pop(key, None)
        else:
            spec[key] = draw(_values)
    if draw(st.booleans()):
        spec["target"] = {"selector": draw(st.dictionaries(
            st.sampled_from(["matchLabels", "matchExpressions", "x"]), _values, max_size=2))}
    if draw(st.booleans()):
        body["status"] = {"phase": draw(st.sampled_from([None, "Pending", "Weird", "Passed"])),
                          "faultIntent": draw(st.one_of(st.none(), st.just({"type": "x"})))}
    return body


# Emulator-only: hundreds of generated specs through the Handlers: minutes on a real server.
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=experiment_bodies())
def test_random_experiments_never_break_the_operator(
        cluster: KubeClient, operator_client: KubeClient, emulator: KubeEmulator,
        body: Body) -> None:
    handlers = handlers_for(operator_client)
    body["metadata"]["name"] = f"h{emulator.resource_version}"
    name = body["metadata"]["name"]
    emulator.seed("pggitchaosexperiments", body)
    handlers.reconcile(NS, name)  # never raises
    status = status_of(cluster, name)
    phase = status.get("phase")
    if phase in ("Error", "Aborted"):
        assert status.get("message"), status
    elif not status.get("runnerJob"):
        # Stored past today's schema: its status cannot be written; the Event says why.
        assert "InvalidSpec" in reasons(emulator, name), (status, body)
    # ... and the next (valid) experiment still gets its runner.
    valid = f"v{emulator.resource_version}"
    create(cluster, experiment(valid))
    handlers.reconcile(NS, valid)
    assert status_of(cluster, valid).get("runnerJob")


# Emulator-only: an injected 422 on one status write.
def test_a_status_the_server_refuses_stops_the_runner_before_it_starts(
        cluster: KubeClient, operator_client: KubeClient, emulator: KubeEmulator) -> None:
    # A number of seconds for a duration: an older CRD stored it; the CRD (and, since the model
    # and the CRD agree, the model) wants a string. On a server without validation ratcheting
    # its status cannot be written.
    emulator.validation_ratcheting = False
    body = experiment("legacy")
    body["spec"]["duration"] = 5
    emulator.seed("pggitchaosexperiments", body)
    handlers = handlers_for(operator_client)
    handlers.reconcile(NS, "legacy")
    assert not runner_jobs(cluster, "legacy"), "a runner that could never report was left"
    assert not status_of(cluster, "legacy").get("runnerJob")
    event = next(e for e in events(emulator, "legacy") if e["reason"] == "InvalidSpec")
    assert "spec.duration" in event["message"] and event["type"] == "Warning"
    handlers.reconcile(NS, "legacy")  # the same version is not tried again
    assert reasons(emulator, "legacy").count("InvalidSpec") == 1
    assert not [call for call in emulator.calls("operator")
                if call.verb == "create" and call.resource == "jobs"][1:]
    # With ratcheting (1.30+ by default, GA in 1.33) the status can be written: the model's
    # refusal reaches it as phase Error, and still no runner is started.
    emulator.validation_ratcheting = True
    cluster.patch(EXPERIMENTS, NS, "legacy", {"metadata": {"labels": {"retry": "1"}}})
    handlers.reconcile(NS, "legacy")
    status = status_of(cluster, "legacy")
    assert status["phase"] == "Error" and "spec.duration" in status["message"], status
    assert not runner_jobs(cluster, "legacy")


# Emulator-only: an injected malformed answer from the API server.
def test_the_operator_answers_the_next_one_after_garbage(
        cluster: KubeClient, emulator: KubeEmulator,
        start_operator: Callable[..., Operator]) -> None:
    start_operator()
    for index, spec in enumerate([None, "text", {"target": 3}, {"fault": {"type": 1}}]):
        body = experiment(f"junk-{index}")
        body["spec"] = spec
        emulator.seed("pggitchaosexperiments", body)
    create(cluster, experiment("after"))
    admitted(cluster, "after")
    junk = [f"junk-{index}" for index in range(4)]
    wait_until(lambda: all("InvalidSpec" in reasons(emulator, name) for name in junk),
               "an InvalidSpec Event for each junk experiment", REACT)


# Emulator-only: the operator process's own metrics port, no cluster involved.
@pytest.mark.parametrize("watched", [(), (NS,)], ids=["cluster-wide", "namespaced"])
def test_run_operator_serves_metrics_on_its_port(kubeconfigs: dict[str, Path],
                                                 emulator_server: EmulatorServer,
                                                 admin_client: KubeClient,
                                                 watched: tuple[str, ...]) -> None:
    """As ``pggit-chaos operator`` runs it (settings from the environment as the chart sets
    them, kopf's resource scanning on): its list/watch of CRDs, and of namespaces when not
    cluster-wide, are recorded for the chart's RBAC."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop, ready = threading.Event(), threading.Event()
    for name in watched:
        namespace(admin_client, name, {names.NAMESPACE_OPT_IN_LABEL: "true"})
    settings = _settings(namespaces=",".join(watched))
    thread = threading.Thread(target=run_operator, args=(settings,), kwargs=dict(
        kubeconfig=str(kubeconfigs["operator"]), metrics_port=port,
        registry=CollectorRegistry(), stop_flag=stop, ready_flag=ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(REACT)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert "pggit_chaos_active_faults" in reply.read().decode()
        # kopf's own watches are up: experiments, and its scanning of CRDs (and namespaces
        # when it watches a list of them).
        scanning = {("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
                    ("chaos.pggit.io", "pggitchaosexperiments", "watch")}
        if watched:
            scanning |= {("", "namespaces", "list"), ("", "namespaces", "watch")}
        emulator = emulator_server.emulator
        wait_until(lambda: scanning <= emulator.rbac_rules("operator"),
                   f"kopf's watches {sorted(scanning)}", REACT)
    finally:
        stop.set()
        thread.join(REACT)
    assert not thread.is_alive()
