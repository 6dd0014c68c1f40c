"""The whole in-cluster path on one machine: ``kubectl apply`` of each experiment to a verdict.

The real kopf operator (in a thread) watches the test API server; it creates the runner Job;
the test kubelet runs that Job's command — the real ``pggit-chaos run --in-cluster`` — as a
process, which runs the engine with the Kubernetes substrate against a pod backed by a real
PostgreSQL with pgGit, injects the fault through the API (pod deleted ⇒ server SIGKILLed and
restarted; resize ⇒ cgroup limit; NetworkPolicy ⇒ iptables), starts the verification Job
(the real ``pggit-chaos checks``) and writes the verdict into the experiment's status.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.emulator import KubeEmulator, iter_events, runner_namespace
from cluster.kubelet import Kubelet, connect
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import CONFIG_MAPS, EXPERIMENTS, NETWORK_POLICIES, PODS, KubeClient
from pggit_chaos.spec.expect import Result, expectation_of
from pggit_chaos.spec.loader import load_experiments
from waits import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.faults]

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
TARGET_LABELS = {"app.kubernetes.io/name": "pggit-postgres"}
TERMINAL = ("Passed", "Failed", "Inconclusive", "Aborted", "Error")
Body = dict[str, Any]
#: The database pod's resources: limits for cpu and memory, so that cpu-throttle and
#: memory-pressure (which lower a limit in place) can be reverted (a limit cannot be removed
#: by resize); the test kubelet's default target has requests only (the refused shape).
LIMITED = {"requests": {"cpu": "100m", "memory": "128Mi"},
           "limits": {"cpu": "2", "memory": "1Gi"}}


def manifest(number: str, **spec: Any) -> Body:
    """``experiments/NN-*.yaml`` as kubectl sends it, shortened for the test's clock."""
    path = next(EXPERIMENTS_DIR.glob(f"{number}-*.yaml"))
    body: Body = yaml.safe_load(path.read_text())
    body["spec"]["duration"] = "3s"
    body["spec"].setdefault("verification", {})
    body["spec"]["verification"].update({"checks": ["corruption"], "timeout": "120s"})
    body["spec"].setdefault("recovery", {})["timeout"] = "60s"
    for key, value in spec.items():
        body["spec"][key] = value
    return body


def judged_in_cluster(number: str, status: Body) -> Result:
    """How ``experiments/NN-*.yaml``'s own annotations judge a status in a cluster: the
    comparison ``scripts/kind-e2e`` makes, here on what the real runner and operator wrote."""
    (experiment,) = load_experiments(next(EXPERIMENTS_DIR.glob(f"{number}-*.yaml")))
    return expectation_of(experiment, in_cluster=True).judge(
        str(status.get("phase", "")), str(status.get("message", ""))).result


@pytest.fixture
def kubelet(admin_client: KubeClient, kubeconfigs: dict[str, Path],
            emulator: KubeEmulator) -> Iterator[Kubelet]:
    """Namespace ``default`` opted in, one database pod (pg-0, cpu and memory limited) with
    pgGit, Secret pggit-db; ``pods/exec`` into it served by the kubelet."""
    runner_namespace(admin_client, "default", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    with Kubelet(kubeconfigs, service_accounts={"pggit-chaos-runner": "runner"},
                 restart_delay=0.5, api_server=emulator) as running:
        running.add_targets("default", labels=TARGET_LABELS, resources=LIMITED)
        yield running
        assert not running.errors, running.errors


def wait_terminal(client: KubeClient, name: str, kubelet: Kubelet,
                  timeout: float = 240.0) -> Body:
    deadline = time.monotonic() + timeout
    body: Body = {}
    while time.monotonic() < deadline:
        body = client.get(EXPERIMENTS, "default", name)
        if (body.get("status") or {}).get("phase") in TERMINAL:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{name} did not end: status {body.get('status')}\n"
                         f"{kubelet.all_logs()[-6000:]}")


def explain(body: Body, kubelet: Kubelet) -> str:
    return f"status: {body.get('status')}\nlogs:\n{kubelet.all_logs()[-6000:]}"


def _without_empty(resources: Body | None) -> Body:
    """Resources as the API serialises them: an empty ``limits: {}`` is no limits."""
    return {key: value for key, value in (resources or {}).items() if value}


FAULTS = [
    ("01", "Passed"),
    ("02", "Passed"),
    ("05", "Passed"),
    ("06", "Passed"),
    ("07", "Passed"),
    ("08", "Passed"),
    ("14", "Passed"),  # load-spike: the extra clients run in the runner's process
]


@pytest.mark.parametrize(("number", "expected"), FAULTS, ids=[n for n, _ in FAULTS])
def test_experiment_runs_to_a_verdict_in_status(
        number: str, expected: str, kubelet: Kubelet, admin_client: KubeClient,
        emulator: KubeEmulator, start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5)
    body = manifest(number)
    name = body["metadata"]["name"]
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, name, kubelet)
    status = final["status"]
    assert status["phase"] in (expected, "Inconclusive"), explain(final, kubelet)
    if status["phase"] == "Inconclusive":  # a fault that did not bite says so, never Pass
        assert "did not" in status.get("message", "") or status.get("faultEvidence"), \
            explain(final, kubelet)
    assert status["workload"]["ok"] > 0, explain(final, kubelet)
    assert status["workload"]["lost"] == 0
    assert status.get("faultIntent") is None
    assert status["targets"] == ["pg-0"]
    assert status["checks"]["failed"] == 0, explain(final, kubelet)
    assert status["checks"]["passed"] > 0, explain(final, kubelet)
    # The journal ConfigMap is there for `pggit-chaos report`.
    assert admin_client.find(CONFIG_MAPS, "default", status["journalConfigMap"]) is not None
    # Nothing of the fault is left: no policy, no partition label, the original resources.
    assert admin_client.list(NETWORK_POLICIES, "default") == []
    pod = admin_client.get(PODS, "default", "pg-0")
    assert names.PARTITION_LABEL not in (pod["metadata"].get("labels") or {})
    assert _without_empty(pod["spec"]["containers"][0].get("resources")) == \
        _without_empty(kubelet.targets[0].resources)


def test_memory_pressure_on_1_33_is_refused_before_injection(
        kubelet: Kubelet, admin_client: KubeClient, start_operator: Any) -> None:  # noqa: F811
    """Kubernetes 1.33 cannot lower a memory limit in place (resizePolicy NotRequired): one
    clear error, and nothing was injected."""
    start_operator(status_interval=0.5)
    body = manifest("03")
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, body["metadata"]["name"], kubelet)
    status = final["status"]
    assert status["phase"] == "Error", explain(final, kubelet)
    assert "resizePolicy for memory is RestartContainer" in status["message"]
    assert status.get("injectedAt") is None
    pod = admin_client.get(PODS, "default", "pg-0")
    assert _without_empty(pod["spec"]["containers"][0].get("resources")) == \
        _without_empty(kubelet.targets[0].resources)


def test_clock_skew_is_refused_before_injection(
        kubelet: Kubelet, admin_client: KubeClient, start_operator: Any) -> None:  # noqa: F811
    """Moving the server's clock needs a privileged daemon on the node: one clear error, and
    nothing was injected."""
    start_operator(status_interval=0.5)
    body = manifest("13")
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, body["metadata"]["name"], kubelet)
    status = final["status"]
    assert status["phase"] == "Error", explain(final, kubelet)
    assert "clock-skew is refused in a cluster" in status["message"]
    assert "privileged daemon on the node" in status["message"]
    assert status.get("injectedAt") is None
    assert judged_in_cluster("13", status) is Result.met  # its expect-in-cluster annotation


@pytest.fixture
def kubelet_without_limits(admin_client: KubeClient, kubeconfigs: dict[str, Path],
                           emulator: KubeEmulator) -> Iterator[Kubelet]:
    """As :func:`kubelet`, but the database pod has requests only (no cpu or memory limit)."""
    runner_namespace(admin_client, "default", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    with Kubelet(kubeconfigs, service_accounts={"pggit-chaos-runner": "runner"},
                 restart_delay=0.5, api_server=emulator) as running:
        running.add_targets("default", labels=TARGET_LABELS)
        assert "limits" not in running.targets[0].resources
        yield running
        assert not running.errors, running.errors


@pytest.mark.parametrize(("number", "resource"), [("02", "cpu"), ("03", "memory")],
                         ids=["cpu-throttle", "memory-pressure"])
def test_a_resize_fault_on_a_container_without_that_limit_is_refused_before_injection(
        number: str, resource: str, kubelet_without_limits: Kubelet, admin_client: KubeClient,
        emulator: KubeEmulator, start_operator: Any) -> None:  # noqa: F811
    """The revert of a limit the fault added would be refused by a real server ("resource
    limits cannot be removed") and the pod would stay throttled: refused, nothing injected.
    Before the fix the runner resized the pod, and (on a real server) could never undo it."""
    kubelet = kubelet_without_limits
    start_operator(status_interval=0.5)
    dry = manifest(number, dryRun=True)
    dry["metadata"]["name"] += "-plan"
    admin_client.create(EXPERIMENTS, "default", dry)
    planned = wait_terminal(admin_client, dry["metadata"]["name"], kubelet)["status"]
    assert planned["phase"] == "Aborted", planned
    assert f"would be refused: container postgres of pod default/pg-0 has no {resource} " \
        "limit" in planned["message"], planned

    body = manifest(number)
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, body["metadata"]["name"], kubelet)
    status = final["status"]
    assert status["phase"] == "Error", explain(final, kubelet)
    assert status["message"] == (
        f"{body['spec']['fault']['type']}: container postgres of pod default/pg-0 has no "
        f"{resource} limit: {body['spec']['fault']['type']} would add one, and Kubernetes "
        'refuses to remove a limit by resize ("resource limits cannot be removed"), so the '
        f"fault could never be reverted; give container postgres a {resource} limit "
        f"(resources.limits.{resource}) to run {body['spec']['fault']['type']} on it; nothing "
        "was injected"), status
    assert status.get("injectedAt") is None and status.get("faultIntent") is None
    assert not [c for c in emulator.calls() if c.subresource == "resize" and c.verb == "patch"]
    pod = admin_client.get(PODS, "default", "pg-0")
    assert _without_empty(pod["spec"]["containers"][0].get("resources")) == \
        _without_empty(kubelet.targets[0].resources)


def test_broken_pggit_behind_the_pods_fails_naming_the_check(
        admin_client: KubeClient, kubeconfigs: dict[str, Path],
        start_operator: Any) -> None:  # noqa: F811
    runner_namespace(admin_client, "default", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    with Kubelet(kubeconfigs, service_accounts={"pggit-chaos-runner": "runner"}) as kubelet:
        kubelet.add_targets("default", labels=TARGET_LABELS, variant="tracking_off")
        start_operator(status_interval=0.5)
        body = manifest("06")
        body["spec"]["verification"]["checks"] = ["property"]
        admin_client.create(EXPERIMENTS, "default", copy.deepcopy(body))
        final = wait_terminal(admin_client, body["metadata"]["name"], kubelet)
    status = final["status"]
    assert status["phase"] == "Failed", explain(final, kubelet)
    assert status["verdict"] == "Fail"
    failing = {f["name"] for f in status["checks"]["failures"] if f["outcome"] == "failed"}
    assert failing & {"test_table_definition_tracked", "test_wide_table_tracked"}, status


# -- pod-pause through pods/exec ----------------------------------------------------------------
def stopped(kubelet: Kubelet, pod: str = "pg-0") -> bool:
    """Every process of the pod's server is stopped (SIGSTOP: state T)."""
    states = kubelet.process_states("default", pod)
    return bool(states) and set(states.values()) <= {"T", "t"}


def none_stopped(kubelet: Kubelet, pod: str = "pg-0") -> bool:
    states = kubelet.process_states("default", pod)
    return bool(states) and not set(states.values()) & {"T", "t"}


def wait_injected(client: KubeClient, name: str, kubelet: Kubelet) -> Body:
    """The experiment's status once the runner recorded the injection."""
    body: Body = {}

    def injected() -> bool:
        nonlocal body
        body = client.get(EXPERIMENTS, "default", name)
        status = body.get("status") or {}
        return bool(status.get("injectedAt")) or status.get("phase") in TERMINAL
    wait_until(injected, f"{name} injected its fault\n{kubelet.all_logs()[-4000:]}", 120)
    assert (body.get("status") or {}).get("phase") not in TERMINAL, explain(body, kubelet)
    return body


def journal_of(client: KubeClient, status: Body) -> Body:
    config_map = client.get(CONFIG_MAPS, "default", status["journalConfigMap"])
    journal: Body = json.loads(builders.read_journal_config_map(config_map))
    return journal


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_pod_pause_through_exec_stalls_the_workload_and_nothing_stays_stopped(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator,
        start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5, allow_exec=True)
    body = manifest("04")
    name = body["metadata"]["name"]
    admin_client.create(EXPERIMENTS, "default", body)
    wait_injected(admin_client, name, kubelet)
    paused_during_hold = stopped(kubelet)
    final = wait_terminal(admin_client, name, kubelet)
    status = final["status"]
    assert paused_during_hold, "the server's processes were not stopped during the hold"
    assert status["phase"] == "Passed" and status["verdict"] == "Pass", explain(final, kubelet)
    assert status["faultEvidence"]["bit"] is True, status["faultEvidence"]
    assert "nothing acknowledged" in status["faultEvidence"]["summary"], status["faultEvidence"]
    assert status["workload"]["ok"] > 0 and status["workload"]["lost"] == 0
    assert status.get("faultIntent") is None
    # From the journal: no operation was acknowledged while the server was stopped (from the
    # injection until the revert began, at most a second before revertedAt), and some were
    # before and after.
    journal = journal_of(admin_client, status)
    injected, reverted = _moment(journal["injected_at"]), _moment(journal["reverted_at"])
    assert (reverted - injected).total_seconds() >= 2.5, (injected, reverted)
    acknowledged = [_moment(op["wall"]) for op in journal["history"] if op["type"] == "ok"]
    during = [t for t in acknowledged if injected < t < reverted - timedelta(seconds=1)]
    assert during == [], f"{len(during)} operations acknowledged while paused"
    assert any(t < injected for t in acknowledged) and any(t > reverted for t in acknowledged)
    # Nothing stays stopped, and the database answers.
    assert none_stopped(kubelet), kubelet.process_states("default", "pg-0")
    with connect(kubelet.targets[0].dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert ("", "pods/exec", "create") in emulator.rbac_rules("runner")


def test_runner_killed_while_paused_leaves_it_paused_until_the_operator_reverts(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator,
        start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5, allow_exec=True)
    body = manifest("04", duration="60s")
    name = body["metadata"]["name"]
    admin_client.create(EXPERIMENTS, "default", body)
    status = wait_injected(admin_client, name, kubelet)["status"]
    assert stopped(kubelet), kubelet.process_states("default", "pg-0")
    pods = kubelet.job_pod_names("default", status["runnerJob"])
    kubelet.kill_pod_process("default", pods[-1])  # SIGKILL: no chance to send SIGCONT
    assert stopped(kubelet), "something resumed the server before the operator's revert"
    final = wait_terminal(admin_client, name, kubelet)
    status = final["status"]
    assert status["phase"] == "Error", explain(final, kubelet)
    assert status["message"] == ("runner pod failed (exit 137) mid-fault; fault reverted from "
                                 "its intent (sent SIGCONT to 1 pod(s))"), status["message"]
    assert status.get("faultIntent") is None and status.get("revertedAt")
    assert none_stopped(kubelet), kubelet.process_states("default", "pg-0")
    with connect(kubelet.targets[0].dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    reverted = [e for e in iter_events(emulator, "default")
                if e["involvedObject"]["name"] == name and e["reason"] == "FaultReverted"]
    assert len(reverted) == 1 and "reverted by the operator" in reverted[0]["message"], reverted
    assert ("", "pods/exec", "create") in emulator.rbac_rules("operator")


def test_a_verification_job_that_cannot_create_its_pod_says_so_in_status(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator,
        start_operator: Any) -> None:  # noqa: F811
    """The runner's ServiceAccount deleted while its runner runs (a stand-in for any
    FailedCreate: a quota, PodSecurity): the verification Job's pod is refused, and the runner
    says so in the message at once while Verifying; with the ServiceAccount back, the Job
    controller's retry runs the checks and the run ends with a verdict."""
    from pggit_chaos.kube.client import SERVICE_ACCOUNTS

    start_operator(status_interval=0.5)
    body = manifest("06")
    name = str(body["metadata"]["name"])
    admin_client.create(EXPERIMENTS, "default", body)
    wait_injected(admin_client, name, kubelet)
    admin_client.delete(SERVICE_ACCOUNTS, "default", "pggit-chaos-runner")
    job = names.verification_job_name(name, str(
        admin_client.get(EXPERIMENTS, "default", name)["status"]["runId"]))

    def said() -> bool:
        status = admin_client.get(EXPERIMENTS, "default", name).get("status") or {}
        return "FailedCreate" in str(status.get("message"))

    wait_until(said, f"the verification Job's FailedCreate in status\n"
                     f"{kubelet.all_logs()[-3000:]}", 120)
    status = admin_client.get(EXPERIMENTS, "default", name)["status"]
    assert status["phase"] == "Verifying", status
    assert status["message"] == (
        f'verification Job {job} cannot create its pod (FailedCreate): Error creating: pods '
        f'"{job}-" is forbidden: error looking up service account default/pggit-chaos-runner: '
        'serviceaccount "pggit-chaos-runner" not found; the Job controller retries until the '
        "verification timeout"), status
    runner_namespace(admin_client, "default", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    final = wait_terminal(admin_client, name, kubelet)
    assert final["status"]["phase"] in ("Passed", "Inconclusive"), explain(final, kubelet)
    assert final["status"]["checks"]["passed"] > 0, explain(final, kubelet)
