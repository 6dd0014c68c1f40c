"""The operator, its runner and verification Jobs and every revert path, on a real cluster.

What ``tests/cluster`` used to stage with its API emulator and test kubelet, here on the real
node of ``scripts/real-node``: the chart's operator Deployment (kopf in its own image), the
runner Jobs it creates, the real kubelet, containerd, kube-router enforcing NetworkPolicy, the
demo target the chart installs. Crashes are real too: a runner pod deleted through the API (the
kubelet sends SIGTERM), a runner process SIGKILLed on the host, the operator's pod deleted. Each
time the fault is reverted down to the kernel (the CFS quota of the target's cgroup, the stopped
state of its processes), in the API (no NetworkPolicy, no partition label, the StatefulSet's own
resources), and the experiment ends with the reason.

Every experiment file's own run to its outcome is ``scripts/real-node e2e`` (kind-e2e).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pggit_chaos.kube import builders, names
from pggit_chaos.kube.builders import parse_quantity
from pggit_chaos.kube.client import (
    CONFIG_MAPS,
    EVENTS,
    EXPERIMENTS,
    JOBS,
    NETWORK_POLICIES,
    PODS,
    SERVICE_ACCOUNTS,
    Api,
    KubeClient,
)
from pggit_chaos.spec.expect import Result, expectation_of
from pggit_chaos.spec.loader import load_experiments
from realnode.conftest import (
    DEMO_LABELS,
    DEMO_POD,
    EXPERIMENTS_DIR,
    KUBECONFIG,
    NS,
    ROOT,
    TERMINAL,
    cfs_quota,
    describe,
    kill_runner,
    manifest,
    operator_pods,
    operator_ready,
    pod_dsn,
    pod_pids,
    pod_ready,
    postgres_states,
    runner_pod,
    secret_value,
    start,
    wait_gone,
    wait_injected,
    wait_terminal,
)
from waits import wait_until

#: Generous: the first test also waits for the session's node (a cold `up` builds Kubernetes).
pytestmark = [pytest.mark.realnode, pytest.mark.timeout(3600)]

Body = dict[str, Any]
PARTITION, THROTTLE, PAUSE = "05", "02", "04"
FAULT = {PARTITION: "network-partition", THROTTLE: "cpu-throttle", PAUSE: "pod-pause"}
#: A fault held long enough for every crash to land while it is in effect.
HOLD = "120s"
CFS_PERIOD_US = 100_000


def template_resources(client: KubeClient) -> Body:
    """The demo container's resources as its StatefulSet declares them."""
    sts = client.request("GET", f"/apis/apps/v1/namespaces/{NS}/statefulsets/pggit-postgres")
    container = next(c for c in sts["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "postgres")
    return dict(container.get("resources") or {})


def own_quota(client: KubeClient) -> int:
    limit = (template_resources(client).get("limits") or {}).get("cpu")
    return -1 if limit is None else int(parse_quantity(limit) * CFS_PERIOD_US)


def fault_left(client: KubeClient) -> list[str]:
    """Everything of a partition, a throttle or a pause still there, in the API and the kernel."""
    left = [f"policy {p['metadata']['name']}" for p in client.list(
        NETWORK_POLICIES, NS, label_selector=f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY}")]
    pod = client.get(PODS, NS, DEMO_POD)
    if names.PARTITION_LABEL in (pod["metadata"].get("labels") or {}):
        left.append("label " + pod["metadata"]["labels"][names.PARTITION_LABEL])
    declared = template_resources(client)
    spec = next(c for c in pod["spec"]["containers"] if c["name"] == "postgres")
    if spec.get("resources") != declared:
        left.append(f"resources {spec.get('resources')}")
    if cfs_quota(client, DEMO_POD) != own_quota(client):
        left.append(f"cgroup cpu.cfs_quota_us {cfs_quota(client, DEMO_POD)}")
    stopped = [pid for pid, state in postgres_states(client).items() if state in ("T", "t")]
    if stopped:
        left.append(f"stopped processes {stopped}")
    return left


def in_effect(client: KubeClient, number: str) -> bool:
    """The fault has reached the node: a policy and a label, a lowered CFS quota, or every
    PostgreSQL process stopped."""
    if number == PARTITION:
        return len([item for item in fault_left(client)
                    if item.split()[0] in ("policy", "label")]) == 2
    if number == THROTTLE:
        return cfs_quota(client, DEMO_POD) != own_quota(client)
    states = postgres_states(client)
    return bool(states) and set(states.values()) <= {"T", "t"}


def demo_answers(client: KubeClient) -> bool:
    dsn = pod_dsn(client, DEMO_POD, secret_value(client, "pggit-db", "password"))
    try:
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def assert_reverted(client: KubeClient) -> None:
    wait_until(lambda: not fault_left(client), f"the fault is reverted: {fault_left(client)}",
               60)
    wait_until(lambda: pod_ready(client, NS, DEMO_POD) and demo_answers(client),
               "the demo target answers", 120)


def events_of(client: KubeClient, name: str) -> list[Body]:
    """The Events of this experiment (not of an earlier one of the same name), oldest first."""
    uid = client.get(EXPERIMENTS, NS, name)["metadata"]["uid"]
    return sorted((e for e in client.list(EVENTS, NS, field_selector=f"involvedObject.name={name}")
                   if e["involvedObject"].get("uid") in (None, uid)),
                  key=lambda e: str(e.get("firstTimestamp")
                                    or e["metadata"]["creationTimestamp"]))


def reasons(client: KubeClient, name: str) -> list[str]:
    return [str(e["reason"]) for e in events_of(client, name)]


def reverted_by_operator(client: KubeClient, name: str) -> list[str]:
    return [str(e["reason"]) for e in events_of(client, name)
            if "reverted by the operator" in str(e.get("message", ""))]


def runner_jobs(client: KubeClient, name: str) -> list[str]:
    return [j["metadata"]["name"] for j in client.list(
        JOBS, NS, label_selector=f"{names.EXPERIMENT_LABEL}={name}")]


def inject(client: KubeClient, number: str, name: str, duration: str = HOLD) -> Body:
    start(client, manifest(number, name, duration=duration))
    status = wait_injected(client, name)
    wait_until(lambda: in_effect(client, number), f"{name}'s fault reached the node", 60)
    return status


@pytest.fixture(autouse=True)
def clean_before_and_after(cluster: KubeClient) -> Iterator[None]:
    """Each test starts from a healthy target and leaves one."""
    assert_reverted(cluster)
    yield
    assert_reverted(cluster)


# -- the runner's pod deleted: the kubelet sends SIGTERM, the runner reverts ---------------------
@pytest.mark.parametrize("number", [PARTITION, THROTTLE], ids=["network-partition",
                                                               "cpu-throttle"])
def test_runner_pod_deleted_mid_fault_reverts_and_ends_with_the_reason(
        cluster: KubeClient, number: str) -> None:
    name = f"rn-pod-deleted-{number}"
    status = inject(cluster, number, name)
    cluster.delete(PODS, NS, runner_pod(cluster, status))
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Error", describe(cluster, name)
    assert final["message"] == "runner interrupted (SIGTERM): fault reverted", final
    assert final.get("faultIntent") is None and final.get("revertedAt")
    assert_reverted(cluster)
    assert reverted_by_operator(cluster, name) == []  # the runner reverted its own fault


# -- the runner SIGKILLed on the node: the operator reverts from the intent ----------------------
REVERTED_FROM_INTENT = {
    PARTITION: f"deleted NetworkPolicy {names.network_policy_name('rn-killed-05')} and "
               "unlabelled 1 pod(s)",
    THROTTLE: f"restored the resources of 1 pod(s): {DEMO_POD}",
    PAUSE: "sent SIGCONT to 1 pod(s)",
}


@pytest.mark.parametrize("number", [PARTITION, THROTTLE, PAUSE],
                         ids=["network-partition", "cpu-throttle", "pod-pause"])
def test_runner_killed_mid_fault_is_reverted_by_the_operator_from_the_intent(
        cluster: KubeClient, number: str) -> None:
    """The operator's own reverts: a NetworkPolicy delete and a label patch, a ``pods/resize``
    patch (a 403 on a real server before the chart granted it), a SIGCONT through
    ``pods/exec``. A paused server stays paused after the runner's death until then."""
    name = f"rn-killed-{number}"
    status = inject(cluster, number, name)
    kill_runner(cluster, runner_pod(cluster, status))
    if number == PAUSE:
        assert in_effect(cluster, PAUSE), "something resumed the server before the operator"
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Error", describe(cluster, name)
    assert final["message"] == ("runner pod failed (exit 137) mid-fault; fault reverted from "
                                f"its intent ({REVERTED_FROM_INTENT[number]})"), final
    assert final.get("faultIntent") is None and final.get("revertedAt")
    assert_reverted(cluster)
    assert reverted_by_operator(cluster, name) == ["FaultReverted"]


# -- the experiment deleted: the finalizer stops the runner, which reverts -----------------------
def test_experiment_deleted_mid_fault_stops_the_runner_which_reverts_then_it_is_gone(
        cluster: KubeClient) -> None:
    # cpu-throttle: nothing of it is owned by the experiment, so garbage collection cannot
    # stand in for the revert.
    name = "rn-deleted-mid-fault"
    inject(cluster, THROTTLE, name)
    assert names.FINALIZER in cluster.get(EXPERIMENTS, NS, name)["metadata"]["finalizers"]
    cluster.delete(EXPERIMENTS, NS, name)
    wait_gone(cluster, name)
    assert_reverted(cluster)
    wait_until(lambda: not runner_jobs(cluster, name), "the runner Job is gone", 120)


# -- the abort annotation ------------------------------------------------------------------------
def test_abort_annotation_mid_fault_ends_aborted_and_reverted(cluster: KubeClient) -> None:
    name = "rn-abort"
    inject(cluster, PARTITION, name)
    cluster.patch(EXPERIMENTS, NS, name,
                  {"metadata": {"annotations": {names.ABORT_ANNOTATION: "true"}}})
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Aborted", describe(cluster, name)
    assert "abort" in final["message"], final
    assert final.get("faultIntent") is None and final.get("revertedAt")
    assert_reverted(cluster)
    wait_until(lambda: not runner_jobs(cluster, name), "the runner Job is gone", 120)


# -- the operator's pod deleted while the runner carries on --------------------------------------
def test_operator_restarted_mid_fault_the_run_still_ends_with_a_verdict(
        cluster: KubeClient) -> None:
    name = "rn-operator-restart"
    status = inject(cluster, PARTITION, name, duration="30s")
    pod = runner_pod(cluster, status)
    wait_until(lambda: "FaultInjected" in reasons(cluster, name), "FaultInjected", 60)
    old = [p["metadata"]["name"] for p in operator_pods(cluster)]
    for operator in old:
        cluster.delete(PODS, "pggit-chaos-system", operator)
    wait_until(lambda: operator_ready(cluster) and not {
        p["metadata"]["name"] for p in operator_pods(cluster)} & set(old),
        "a new operator pod is Ready", 180)
    assert cluster.get(EXPERIMENTS, NS, name)["status"].get("faultIntent"), \
        "the hold ended during the restart: the restart was not mid-fault"
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] in ("Passed", "Inconclusive"), describe(cluster, name)
    assert_reverted(cluster)
    terminal = "Verified" if final["phase"] == "Passed" else "Inconclusive"
    wait_until(lambda: terminal in reasons(cluster, name), f"a {terminal} Event", 60)
    posted = reasons(cluster, name)
    assert {"RunnerCreated", "FaultInjected", "FaultReverted", "Recovered", terminal} <= set(
        posted), posted
    assert len(posted) == len(set(posted)), f"an Event was posted twice: {posted}"
    assert runner_pod(cluster, final) == pod  # one runner, never two


# -- one experiment per target -------------------------------------------------------------------
def test_one_experiment_per_target_the_second_waits_for_the_first(cluster: KubeClient) -> None:
    first = start(cluster, manifest("06", "rn-first", duration="15s"))
    wait_until(lambda: bool((cluster.get(EXPERIMENTS, NS, first).get("status") or {})
                            .get("runnerJob")), "the first has its runner", 120)
    second = start(cluster, manifest("06", "rn-second"))

    def waiting() -> bool:
        status = cluster.get(EXPERIMENTS, NS, second).get("status") or {}
        return "waiting" in str(status.get("message"))
    wait_until(waiting, f"the second waits\n{describe(cluster, second)}", 60)
    status = cluster.get(EXPERIMENTS, NS, second)["status"]
    assert status["phase"] == "Pending" and first in status["message"], status
    assert not runner_jobs(cluster, second)
    assert "Waiting" in reasons(cluster, second)
    assert wait_terminal(cluster, first)["status"]["phase"] == "Passed", describe(cluster, first)
    assert wait_terminal(cluster, second)["status"]["phase"] == "Passed", \
        describe(cluster, second)
    assert reasons(cluster, second).count("Waiting") == 1


# -- what the kubelet says about the runner's pod ------------------------------------------------
def test_missing_secret_turns_into_error_and_the_job_goes(cluster: KubeClient) -> None:
    """The real kubelet cannot resolve the runner's secretKeyRef: CreateContainerConfigError,
    which the operator turns into Error at once (not a wait until the deadline)."""
    name = "rn-no-secret"
    start(cluster, manifest("06", name, secret="rn-no-such-secret"))
    final = wait_terminal(cluster, name, timeout=180)["status"]
    assert final["phase"] == "Error", describe(cluster, name)
    assert 'secret "rn-no-such-secret" not found' in final["message"], final
    assert "CreateContainerConfigError" in final["message"], final
    wait_until(lambda: not runner_jobs(cluster, name), "the runner Job is deleted", 120)
    wait_until(lambda: "Error" in reasons(cluster, name), "an Error Event", 60)


# -- a second target of the test's own: no limits, a broken pgGit --------------------------------
SECRETS = Api("", "v1", "secrets")
QUOTAS = Api("", "v1", "resourcequotas")
SECOND, SECOND_LABELS, SECOND_SECRET = "rn-second-target", {"app.kubernetes.io/name":
                                                             "rn-second-target"}, "rn-second-db"


@pytest.fixture(scope="module")
def second_target(cluster: KubeClient) -> Iterator[str]:
    """A PostgreSQL pod with requests only (no cpu or memory limit), pgGit installed with the
    ``tracking_off`` defect, and its Secret; removed afterwards."""
    from pggit_chaos.pggit import install
    from pggit_variants import apply_variant

    image = next(c["image"] for c in cluster.get(PODS, NS, DEMO_POD)["spec"]["containers"]
                 if c["name"] == "postgres")
    password = "rn-second-password"
    remove_second_target(cluster)
    cluster.create(PODS, NS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": SECOND, "labels": SECOND_LABELS},
        "spec": {"containers": [{
            "name": "postgres", "image": image, "imagePullPolicy": "Never",
            "env": [{"name": "POSTGRES_PASSWORD", "value": password}],
            "ports": [{"containerPort": 5432}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "postgres"]},
                               "periodSeconds": 2}}]}})
    wait_until(lambda: pod_ready(cluster, NS, SECOND), "the second target is Ready", 180)
    ip = cluster.get(PODS, NS, SECOND)["status"]["podIP"]
    dsn = f"postgresql://postgres:{password}@{ip}:5432/postgres"
    cluster.create(SECRETS, NS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECOND_SECRET},
        "stringData": {"dsn": dsn, "password": password}})
    install(dsn)
    apply_variant(dsn, "tracking_off")
    yield SECOND
    remove_second_target(cluster)


def remove_second_target(client: KubeClient) -> None:
    client.delete(SECRETS, NS, SECOND_SECRET)
    client.delete(PODS, NS, SECOND, grace_period_seconds=0)
    wait_until(lambda: client.find(PODS, NS, SECOND) is None, "the second target is gone", 120)


@pytest.mark.parametrize(("number", "resource"), [(THROTTLE, "cpu"), ("03", "memory")],
                         ids=["cpu-throttle", "memory-pressure"])
def test_a_resize_fault_on_a_container_without_that_limit_is_refused_before_injection(
        cluster: KubeClient, second_target: str, number: str, resource: str) -> None:
    """The revert of a limit the fault added is refused by the server ("resource limits cannot
    be removed"), so the pod would stay throttled for ever: refused, nothing injected."""
    before = cluster.get(PODS, NS, second_target)["spec"]["containers"][0]["resources"]
    plan = start(cluster, manifest(number, f"rn-nolimit-plan-{number}", selector=SECOND_LABELS,
                                   secret=SECOND_SECRET, dryRun=True))
    planned = wait_terminal(cluster, plan)["status"]
    assert planned["phase"] == "Aborted", describe(cluster, plan)
    assert f"would be refused: container postgres of pod {NS}/{second_target} has no " \
        f"{resource} limit" in planned["message"], planned
    name = start(cluster, manifest(number, f"rn-nolimit-{number}", selector=SECOND_LABELS,
                                   secret=SECOND_SECRET))
    final = wait_terminal(cluster, name)["status"]
    fault = FAULT.get(number, "memory-pressure")
    assert final["phase"] == "Error", describe(cluster, name)
    assert final["message"].startswith(
        f"{fault}: container postgres of pod {NS}/{second_target} has no {resource} limit: "
        f"{fault} would add one, and Kubernetes refuses to remove a limit by resize"), final
    assert final.get("injectedAt") is None and final.get("faultIntent") is None
    assert cluster.get(PODS, NS, second_target)["spec"]["containers"][0]["resources"] == before


def test_broken_pggit_behind_the_pods_fails_naming_the_check(
        cluster: KubeClient, second_target: str) -> None:
    body = manifest("06", "rn-broken-pggit", selector=SECOND_LABELS, secret=SECOND_SECRET)
    body["spec"]["verification"]["checks"] = ["property"]
    name = start(cluster, body)
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Failed", describe(cluster, name)
    assert final["verdict"] == "Fail"
    failing = {f["name"] for f in final["checks"]["failures"] if f["outcome"] == "failed"}
    assert failing & {"test_table_definition_tracked", "test_wide_table_tracked"}, final


def test_the_checks_here_can_fail(cluster: KubeClient) -> None:
    """fault_left and in_effect see a throttle and a partition made by hand, in the API and in
    the kernel, and nothing once undone."""
    declared = template_resources(cluster)
    lower = f"{int(parse_quantity(declared['limits']['cpu']) * 500)}m"  # half the limit
    try:
        cluster.patch(PODS, NS, DEMO_POD, builders.partition_label_patch("by-hand"))
        cluster.create(NETWORK_POLICIES, NS, {
            "metadata": {"name": "rn-by-hand",
                         "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY}},
            "spec": {"podSelector": {"matchLabels": {names.PARTITION_LABEL: "by-hand"}},
                     "policyTypes": ["Ingress"]}})
        cluster.patch(PODS, NS, DEMO_POD, {"spec": {"containers": [
            {"name": "postgres", "resources": {"limits": {"cpu": lower}}}]}},
            subresource="resize", patch_type="strategic")
        wait_until(lambda: in_effect(cluster, PARTITION) and in_effect(cluster, THROTTLE),
                   f"both on the node: {fault_left(cluster)}", 60)
        left = fault_left(cluster)
        for kind in ("policy", "label", "resources", "cgroup"):
            assert any(item.startswith(kind) for item in left), (kind, left)
    finally:
        cluster.delete(NETWORK_POLICIES, NS, "rn-by-hand")  # None when it was not made
        cluster.patch(PODS, NS, DEMO_POD, builders.unpartition_label_patch())
        cluster.patch(PODS, NS, DEMO_POD, builders.restore_resize_patch("postgres", declared),
                      subresource="resize", patch_type="strategic")
    wait_until(lambda: fault_left(cluster) == [], f"all undone: {fault_left(cluster)}", 60)
    assert pod_pids(cluster, NS, DEMO_POD)


# -- each experiment file's run: the status says everything ---------------------------------------
def file_run(client: KubeClient, number: str) -> Body:
    """The terminal experiment of file ``number``: the one ``scripts/real-node e2e --keep`` left
    on this node when its spec is the file's, else a shortened run of the file started here."""
    path = next(EXPERIMENTS_DIR.glob(f"{number}-*.yaml"))
    document = yaml.safe_load(path.read_text())
    left = client.find(EXPERIMENTS, NS, document["metadata"]["name"])
    if left and within(document["spec"], left["spec"]) and (left.get("status") or {}).get(
            "phase") in TERMINAL:
        return left
    return wait_terminal(client, start(client, manifest(number, f"rn-file-{number}")))


def judged_in_cluster(number: str, status: Body) -> Result:
    """How ``experiments/NN-*.yaml``'s own annotations judge a status in a cluster: the
    comparison ``scripts/kind-e2e`` makes, here on what the real runner and operator wrote."""
    (experiment,) = load_experiments(next(EXPERIMENTS_DIR.glob(f"{number}-*.yaml")))
    return expectation_of(experiment, in_cluster=True).judge(
        str(status.get("phase", "")), str(status.get("message", ""))).result


def within(given: Any, stored: Any) -> bool:
    """``given`` (a file's spec) is what the server stored, apart from the defaults it added."""
    if isinstance(given, dict):
        return isinstance(stored, dict) and all(
            key in stored and within(value, stored[key]) for key, value in given.items())
    return bool(given == stored)


def journal_of(client: KubeClient, status: Body) -> Body:
    """The run's journal as the runner stored it, with its workload history (kept beside it,
    in parts when large) under ``history``."""
    config_map = client.get(CONFIG_MAPS, NS, status["journalConfigMap"])
    journal: Body = json.loads(builders.read_journal_config_map(config_map))
    text, note = builders.read_journal_history(
        config_map, lambda part: client.find(CONFIG_MAPS, NS, part))
    assert text is not None, note
    journal["history"] = [json.loads(line) for line in text.splitlines()]
    return journal


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


PASSING = ["01", "02", "04", "05", "06", "07", "08", "10", "11", "14"]


@pytest.mark.parametrize("number", PASSING)
def test_an_experiment_file_passes_and_its_status_says_everything(
        cluster: KubeClient, number: str) -> None:
    body = file_run(cluster, number)
    name, status = body["metadata"]["name"], body["status"]
    assert status["phase"] == "Passed" and status["verdict"] == "Pass", describe(cluster, name)
    assert judged_in_cluster(number, status) is Result.met
    assert status["faultEvidence"]["bit"] is True, status["faultEvidence"]
    assert status["workload"]["ok"] > 0 and status["workload"]["lost"] == 0, status["workload"]
    assert status.get("faultIntent") is None and status.get("revertedAt")
    assert status["targets"] == [DEMO_POD]
    assert status["checks"]["failed"] == 0 and status["checks"]["passed"] > 0, status["checks"]
    journal = journal_of(cluster, status)  # there for `pggit-chaos report`
    assert journal["fault_intent"]["type"] == body["spec"]["fault"]["type"]
    if number == PAUSE:  # nothing acknowledged while the server was stopped
        injected, reverted = _moment(journal["injected_at"]), _moment(journal["reverted_at"])
        acknowledged = [_moment(op["wall"]) for op in journal["history"] if op["type"] == "ok"]
        during = [t for t in acknowledged if injected < t < reverted - timedelta(seconds=1)]
        assert during == [], f"{len(during)} operations acknowledged while paused"
        assert any(t < injected for t in acknowledged) and any(t > reverted
                                                               for t in acknowledged)
    if number == "10":  # the proxy on the runner pod's loopback delayed the workload
        assert "through the proxy on 127.0.0.1:" in journal["fault_intent"]["target"]
        phases = {p["phase"]: p for p in journal["workload"]["phases"]}
        assert phases["Injecting"]["latency_p50_ms"] >= 40.0, journal["workload"]


def test_clock_skew_is_refused_before_injection(cluster: KubeClient) -> None:
    """Moving the server's clock needs a privileged daemon on the node: one clear error, and
    nothing was injected."""
    body = file_run(cluster, "13")
    status = body["status"]
    assert status["phase"] == "Error", describe(cluster, body["metadata"]["name"])
    assert "clock-skew is refused in a cluster" in status["message"]
    assert "privileged daemon on the node" in status["message"]
    assert status.get("injectedAt") is None
    assert judged_in_cluster("13", status) is Result.met  # its expect-in-cluster annotation


def test_dry_run_resolves_targets_and_creates_nothing(cluster: KubeClient) -> None:
    name = start(cluster, manifest("05", "rn-plan", dryRun=True, target={
        "mode": "all", "selector": {"matchLabels": DEMO_LABELS},
        "databaseSecretRef": {"name": "pggit-db"}}))
    status = wait_terminal(cluster, name, timeout=120)["status"]
    assert status["phase"] == "Aborted", describe(cluster, name)
    assert status["targets"] == [DEMO_POD]
    assert status["message"].startswith(f"dry run: would hit pods {DEMO_POD}"), status
    assert not runner_jobs(cluster, name)
    assert "DryRun" in reasons(cluster, name)



def test_a_history_larger_than_a_config_map_is_kept_in_parts_the_real_server_accepts(
        cluster: KubeClient, tmp_path: Path) -> None:
    """The runner's own journal writer with a history of 3 MB gzipped (what a few minutes
    at full rate make): the real API server takes every part (it refuses a ConfigMap over
    1 MiB), and ``pggit-chaos report`` joins them back line for line. Owned by a dry run's
    experiment, so that they go with it."""
    import uuid

    from pggit_chaos.engine.history import History
    from pggit_chaos.kube.client import CONFIG_MAPS
    from pggit_chaos.kube.report import fetch_report
    from pggit_chaos.kube.runner import _store_journal
    from test_report import make_journal

    name = start(cluster, manifest("06", "rn-big-history", dryRun=True))
    body = wait_terminal(cluster, name, timeout=120)
    run_id = str(uuid.uuid4())
    journal = make_journal("Pass").model_copy(update={
        "run_id": run_id, "experiment": name, "namespace": NS})
    history = History()
    for number in range(60_000):
        history.record(number % 4, "invoke", "commit",
                       {"branch": "main", "message": os.urandom(32).hex()}, at=number / 1000)
    assert _store_journal(cluster, body, journal, history) == []
    main_name = names.journal_config_map_name(name, run_id)
    main = cluster.get(CONFIG_MAPS, NS, main_name)
    parts = json.loads(main["data"][names.HISTORY_PARTS_KEY])
    assert len(parts) >= 3, parts
    assert all(cluster.get(CONFIG_MAPS, NS, part)["metadata"]["ownerReferences"][0]["uid"]
               == body["metadata"]["uid"] for part in parts)
    files = fetch_report(f"{NS}/{name}", tmp_path / "report", cluster)
    assert files.history is not None, files.history_note
    assert files.history.read_text() == gzip.decompress(history.to_jsonl_gzip()).decode()
    cluster.delete(EXPERIMENTS, NS, name)
    wait_until(lambda: not any(cluster.find(CONFIG_MAPS, NS, cm) for cm in [main_name, *parts]),
               "the parts go with their experiment", 120)


def _helm_upgrade(*values: str) -> None:
    done = subprocess.run(
        ["helm", "upgrade", "pggit-chaos", str(ROOT / "charts" / "pggit-chaos"), "-n",
         "pggit-chaos-system", "--kubeconfig", str(KUBECONFIG), "--reuse-values", *values,
         "--wait", "--wait-for-jobs", "--timeout", "300s"],
        capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_runner_pods_pull_with_the_charts_runner_image_pull_secrets(cluster: KubeClient) -> None:
    """``helm upgrade --set runner.imagePullSecrets[0].name=...`` (as docs/operator.md says
    for a private registry): the real ServiceAccount admission copies the runner account's
    pull secrets into the runner Job's pod, which before got none (only the operator's pod
    had the chart's imagePullSecrets)."""
    _helm_upgrade("--set", "runner.imagePullSecrets[0].name=rn-regcred")
    try:
        account = cluster.get(SERVICE_ACCOUNTS, NS, "pggit-chaos-runner")
        assert account.get("imagePullSecrets") == [{"name": "rn-regcred"}], account
        body = manifest("06", "rn-pull-secret")
        body["spec"]["verification"] = {"checks": []}
        name = start(cluster, body)
        status = wait_injected(cluster, name)
        pod = cluster.get(PODS, NS, runner_pod(cluster, status))
        assert pod["spec"].get("imagePullSecrets") == [{"name": "rn-regcred"}], pod["spec"]
        assert wait_terminal(cluster, name)["status"]["phase"] == "Passed", describe(cluster,
                                                                                      name)
    finally:
        # `--set ...=null` with --reuse-values kept the list in the rendered chart (helm
        # 3.x on the real node); an explicit empty list removes it.
        _helm_upgrade("--set-json", "runner.imagePullSecrets=[]")
    assert "imagePullSecrets" not in cluster.get(SERVICE_ACCOUNTS, NS, "pggit-chaos-runner")

# -- disk-pressure on the demo's own volume (a 1 GiB local PersistentVolume) ----------------------
def data_volume(client: KubeClient) -> Path:
    """The host folder of the demo's data volume (the local PersistentVolume's path)."""
    pod = client.get(PODS, NS, DEMO_POD)
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                 if v.get("persistentVolumeClaim"))
    pvc = client.request("GET", f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{claim}")
    pv = client.request("GET", f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    return Path(pv["spec"]["local"]["path"])


def balloons(client: KubeClient) -> list[Path]:
    return sorted(data_volume(client).rglob("*pggit-chaos-balloon*"))


def available(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_balloon_above_max_balloon_is_refused_before_injection(cluster: KubeClient) -> None:
    """The script's plan (df -P in the container) finds more to write than maxBalloonMi allows:
    nothing is written, the run ends in Error."""
    body = manifest("11", "rn-balloon-too-big")
    body["spec"]["fault"]["diskPressure"]["maxBalloonMi"] = 16
    before = available(data_volume(cluster))
    name = start(cluster, body)
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Error", describe(cluster, name)
    assert "more than maxBalloonMi (16)" in final["message"], final["message"]
    assert "nothing was injected" in final["message"], final["message"]
    assert not final.get("injectedAt") and final.get("faultIntent") is None
    # experiments/11's skip-when-in-cluster annotation names this refusal: kind-e2e skips it.
    assert judged_in_cluster("11", final) is Result.skipped
    assert balloons(cluster) == []
    assert abs(available(data_volume(cluster)) - before) < 64 << 20


def test_runner_killed_mid_disk_pressure_the_operator_deletes_the_balloon(
        cluster: KubeClient) -> None:
    """A fill of the data volume stays until someone deletes it: SIGKILL the runner and the
    operator's revert from the intent does it through pods/exec."""
    body = manifest("11", "rn-balloon-killed", duration=HOLD)
    body["spec"]["fault"]["diskPressure"].update({"volume": "data", "fill": "90%"})
    name = start(cluster, body)
    status = wait_injected(cluster, name)
    volume = data_volume(cluster)

    def filled() -> bool:
        st = os.statvfs(volume)
        return bool(balloons(cluster)) and 1 - st.f_bfree / st.f_blocks >= 0.90
    wait_until(filled, "the balloon fills the volume to 90%", 120)
    kill_runner(cluster, runner_pod(cluster, status))
    assert balloons(cluster), "something deleted the balloon before the operator"
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Error", describe(cluster, name)
    assert final["message"].startswith(
        "runner pod failed (exit 137) mid-fault; fault reverted from its intent (deleted the "
        f"disk-pressure balloon in 1 pod(s): {DEMO_POD} ("), final["message"]
    assert final.get("faultIntent") is None
    assert balloons(cluster) == []
    assert_reverted(cluster)


def test_primary_failover_without_a_primary_label_is_aborted_before_injection(
        cluster: KubeClient) -> None:
    """The demo's single PostgreSQL has no pod with a PostgreSQL operator's primary label (a
    replicated one is out of reach offline: tests/cluster/test_failover.py plays that part)."""
    body = file_run(cluster, "12")
    status = body["status"]
    assert status["phase"] == "Aborted", describe(cluster, body["metadata"]["name"])
    assert "carries the primary label cnpg.io/instanceRole=primary" in status["message"], status
    assert status.get("injectedAt") is None
    assert judged_in_cluster("12", status) is Result.skipped  # its skip-when-in-cluster


def restore_account(client: KubeClient, account: Body) -> None:
    """Put the runner's ServiceAccount back as the chart made it."""
    client.create(SERVICE_ACCOUNTS, NS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                         "metadata": {
                                             "name": account["metadata"]["name"],
                                             "labels": account["metadata"].get("labels") or {},
                                             "annotations": account["metadata"].get(
                                                 "annotations") or {}}})


def test_a_namespace_without_the_runners_account_is_refused_before_any_job(
        cluster: KubeClient) -> None:
    """The runner's ServiceAccount missing: the operator's identity gate refuses before it
    creates a Job, naming the chart value that creates the account."""
    account = cluster.get(SERVICE_ACCOUNTS, NS, "pggit-chaos-runner")
    cluster.delete(SERVICE_ACCOUNTS, NS, "pggit-chaos-runner")
    try:
        name = start(cluster, manifest("06", "rn-no-runner-account"))
        final = wait_terminal(cluster, name, timeout=120)["status"]
    finally:
        restore_account(cluster, account)
    assert final["phase"] == "Aborted", describe(cluster, name)
    assert final["message"].startswith(
        "refused by the runner identity gate: the runner's ServiceAccount pggit-chaos-runner "
        f"does not exist in namespace {NS}"), final
    assert "helm upgrade --reuse-values" in final["message"], final
    assert not runner_jobs(cluster, name)


def full_quota(client: KubeClient) -> None:
    """A ResourceQuota that admits no new pod in the namespace (the running ones stay), once
    the quota controller has counted it."""
    client.create(QUOTAS, NS, {"apiVersion": "v1", "kind": "ResourceQuota",
                               "metadata": {"name": "rn-quota"},
                               "spec": {"hard": {"pods": "0"}}})
    wait_until(lambda: bool((client.get(QUOTAS, NS, "rn-quota").get("status") or {})
                            .get("hard")), "the quota controller counted the pods", 60)


def test_a_runner_job_that_cannot_create_its_pod_says_so_in_status_at_once(
        cluster: KubeClient) -> None:
    """The real Job controller's FailedCreate (a full quota) shows in the experiment's message
    and one Warning Event on the operator's next look, not only when the Job's deadline ends
    the run; with the quota gone, the Job controller's retry runs the experiment."""
    full_quota(cluster)
    try:
        name = start(cluster, manifest("06", "rn-runner-quota"))

        def said() -> bool:
            status = cluster.get(EXPERIMENTS, NS, name).get("status") or {}
            return "FailedCreate" in str(status.get("message"))
        wait_until(said, f"the runner Job's FailedCreate in status\n{describe(cluster, name)}",
                   180)
        status = cluster.get(EXPERIMENTS, NS, name)["status"]
        job = str(status["runnerJob"])
        assert status["phase"] == "Pending", status
        assert status["message"].startswith(
            f"runner Job {job} cannot create its pod (FailedCreate): "), status
        assert "exceeded quota: rn-quota" in status["message"], status
        assert status["message"].endswith(
            "the Job controller retries until the Job's deadline"), status
        wait_until(lambda: "RunnerFailedCreate" in reasons(cluster, name),
                   "a RunnerFailedCreate Event", 60)
    finally:
        cluster.delete(QUOTAS, NS, "rn-quota")
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Passed", describe(cluster, name)
    assert reasons(cluster, name).count("RunnerFailedCreate") == 1


def test_a_verification_job_that_cannot_create_its_pod_says_so_in_status(
        cluster: KubeClient) -> None:
    """A ResourceQuota full while the runner runs (any FailedCreate: a quota, PodSecurity): the
    real Job controller cannot create the verification pod, the runner says so in the message
    while Verifying; with the quota gone, the Job controller's retry runs the checks and the
    run ends with a verdict. (Deleting the runner's ServiceAccount instead, as the emulator
    did, revokes the running runner's own token on a real server.)"""
    name = start(cluster, manifest("06", "rn-quota-full", duration="10s"))
    wait_injected(cluster, name)
    full_quota(cluster)
    try:
        def said() -> bool:
            status = cluster.get(EXPERIMENTS, NS, name).get("status") or {}
            return "FailedCreate" in str(status.get("message"))
        wait_until(said, f"the verification Job's FailedCreate in status\n"
                         f"{describe(cluster, name)}", 180)
        status = cluster.get(EXPERIMENTS, NS, name)["status"]
        job = names.verification_job_name(name, str(status["runId"]))
        assert status["phase"] == "Verifying", status
        assert status["message"].startswith(
            f"verification Job {job} cannot create its pod (FailedCreate): "), status
        assert "exceeded quota: rn-quota" in status["message"], status
    finally:
        cluster.delete(QUOTAS, NS, "rn-quota")
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] in ("Passed", "Inconclusive"), describe(cluster, name)
    assert final["checks"]["passed"] > 0, final["checks"]




# -- the user's assertions and guards, in the runner Job ------------------------------------------
#: Holds at the steady state (no workload yet), not after it: the runner's schema exists then.
HOLDS = {"name": "one-is-one", "sql": "SELECT 1", "expect": "1"}


def event_messages(client: KubeClient, name: str) -> dict[str, str]:
    return {str(e["reason"]): str(e.get("message")) for e in events_of(client, name)}


def test_a_failing_assertion_fails_the_run_and_status_names_it(
        cluster: KubeClient, tmp_path: Path) -> None:
    from pggit_chaos.kube.report import fetch_report

    # A table of the test's own, 0 at the steady state, set to 1 while the fault holds: the
    # assertion holds before the fault and fails after recovery, whatever else is in the database.
    dsn = pod_dsn(cluster, DEMO_POD, secret_value(cluster, "pggit-db", "password"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS rn_assertion_probe")
        conn.execute("CREATE TABLE rn_assertion_probe (v int NOT NULL)")
        conn.execute("INSERT INTO rn_assertion_probe VALUES (0)")
    probe = {"name": "probe-unchanged", "expect": "0", "sql": "SELECT v FROM rn_assertion_probe"}
    body = manifest("06", "rn-assertion-fails", duration="20s")
    body["spec"]["verification"] = {"checks": [], "assertions": [HOLDS, probe]}
    try:
        name = start(cluster, body)
        wait_injected(cluster, name)

        def changed() -> bool:
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("UPDATE rn_assertion_probe SET v = 1")
                return True
            except psycopg.Error:  # connection-kill may take this session too: again
                return False
        wait_until(changed, "the probe set to 1 while the fault holds", 30)
        status = wait_terminal(cluster, name)["status"]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS rn_assertion_probe")
    assert status["phase"] == "Failed", describe(cluster, name)
    assert status["verdict"] == "Fail"
    said = "assertion probe-unchanged failed after recovery: got '1', expected '0'"
    assert said in status["message"], status
    assert [(a["name"], a["phase"], a["outcome"], a.get("got")) for a in status["assertions"]] \
        == [("one-is-one", "steady state", "passed", "1"),
            ("probe-unchanged", "steady state", "passed", "0"),
            ("one-is-one", "after recovery", "passed", "1"),
            ("probe-unchanged", "after recovery", "failed", "1")]
    assert status.get("faultIntent") is None and status.get("revertedAt")
    wait_until(lambda: {"AssertionFailed", "Failed"} <= set(event_messages(cluster, name)),
               "the AssertionFailed and Failed Events", 60)
    assert said in event_messages(cluster, name)["AssertionFailed"]
    journal = journal_of(cluster, status)
    assert [a["outcome"] for a in journal["assertions"]] == ["passed"] * 3 + ["failed"]
    # `pggit-chaos report` renders the run, report.html included, naming the assertion.
    files = fetch_report(f"{NS}/{name}", tmp_path / "report", cluster)
    assert files.html is not None
    page = files.html.read_text()
    assert "probe-unchanged" in page and "got &#39;1&#39;, expected &#39;0&#39;" in page
    assert "data:image/png;base64," in page


def test_a_tripped_guard_aborts_the_run_reverts_and_status_names_it(
        cluster: KubeClient) -> None:
    """connection-kill's kills make workload errors; a low maxErrorRate stops the hold early."""
    body = manifest("06", "rn-guarded", duration="60s",
                    guards={"maxErrorRate": 0.001, "errorRateWindow": "2s", "minSamples": 5})
    body["spec"]["verification"] = {"checks": []}
    name = start(cluster, body)
    status = wait_terminal(cluster, name)["status"]
    assert status["phase"] == "Aborted", describe(cluster, name)
    assert status["message"].startswith("guard maxErrorRate tripped: error rate "), status
    assert "fault reverted after" in status["message"]
    assert status.get("faultIntent") is None and status.get("revertedAt")
    held = _moment(status["revertedAt"]) - _moment(status["injectedAt"])
    assert held < timedelta(seconds=50), status  # stopped early: the hold asked for 60 s
    wait_until(lambda: "guard maxErrorRate" in event_messages(cluster, name).get("Aborted", ""),
               "an Aborted Event naming the guard", 60)


# -- several faults in one run --------------------------------------------------------------------
def test_a_serial_scenario_passes_with_each_faults_window_in_the_journal(
        cluster: KubeClient, tmp_path: Path) -> None:
    """A network partition, then (after its revert and a 2 s pause) a cpu throttle: each its
    own intent, window, revert and evidence; the verdict over the whole run."""
    from pggit_chaos.kube.report import fetch_report

    # examples/scenarios/partition-then-throttle.yaml, its steps held 5 s each
    body = yaml.safe_load((ROOT / "examples" / "scenarios" /
                           "partition-then-throttle.yaml").read_text())
    body["metadata"]["name"] = "rn-scenario-serial"
    for step in body["spec"]["scenario"]["steps"]:
        step["duration"] = "5s"
    body["spec"]["verification"].update({"checks": ["corruption"], "timeout": "180s"})
    name = start(cluster, body)
    status = wait_terminal(cluster, name)["status"]
    assert status["phase"] == "Passed" and status["verdict"] == "Pass", describe(cluster, name)
    assert status.get("faultIntent") is None and status.get("faultIntents") is None, status
    assert status.get("injectedAt") and status.get("revertedAt")
    assert status["workload"]["ok"] > 0 and status["workload"]["lost"] == 0, status["workload"]
    assert fault_left(cluster) == []
    journal = journal_of(cluster, status)
    steps = journal["fault_steps"]
    assert [s["fault_type"] for s in steps] == ["network-partition", "cpu-throttle"], steps
    first, second = steps
    assert first["end_offset"] is not None and second["end_offset"] is not None
    assert second["start_offset"] - first["end_offset"] >= 1.9  # after the revert and delay
    assert all(s["evidence"]["bit"] for s in steps), [s["evidence"] for s in steps]
    assert [s["intent"]["type"] for s in steps] == ["network-partition", "cpu-throttle"]
    files = fetch_report(f"{NS}/{name}", tmp_path / "report", cluster)
    summary = files.summary.read_text()
    assert "## Faults of the scenario" in summary
    assert "| network-partition |" in summary and "| cpu-throttle |" in summary
    # kubectl's Fault column names both (it named none before: it read .spec.fault.type)
    assert status["fault"] == "network-partition+cpu-throttle", status
    table = subprocess.run(["kubectl", "--kubeconfig", str(KUBECONFIG), "get", "pgce", name,
                            "-n", NS], capture_output=True, text=True, check=True).stdout
    assert "network-partition+cpu-throttle" in table.splitlines()[1], table


def test_the_operator_reverts_both_faults_of_a_parallel_scenario_whose_runner_died(
        cluster: KubeClient) -> None:
    """A partition and a throttle at once; the runner SIGKILLed while both hold: the operator
    reverts each from ``status.faultIntents`` (the NetworkPolicy and label, the pod's CPU limit
    back to its own) and its one FaultReverted Event names both."""
    name = "rn-scenario-killed"
    body = manifest(PARTITION, name)
    partition = body["spec"].pop("fault")
    throttle = manifest(THROTTLE, "unused")["spec"]["fault"]
    body["spec"]["scenario"] = {"mode": "parallel", "steps": [
        {"fault": partition, "duration": HOLD}, {"fault": throttle, "duration": HOLD}]}
    start(cluster, body)

    def both_recorded() -> bool:
        status = cluster.get(EXPERIMENTS, NS, name).get("status") or {}
        return len(status.get("faultIntents") or []) == 2
    wait_until(both_recorded, f"both intents in status\n{describe(cluster, name)}", 180)
    wait_until(lambda: in_effect(cluster, PARTITION) and in_effect(cluster, THROTTLE),
               "both faults reached the node", 60)
    status = cluster.get(EXPERIMENTS, NS, name)["status"]
    kill_runner(cluster, runner_pod(cluster, status))
    final = wait_terminal(cluster, name)["status"]
    assert final["phase"] == "Error", describe(cluster, name)
    assert not final.get("faultIntent") and not final.get("faultIntents"), final
    assert_reverted(cluster)
    [event] = [e for e in events_of(cluster, name)
               if "reverted by the operator" in str(e.get("message", ""))]
    assert event["reason"] == "FaultReverted"
    named = str(event["message"]).split(" reverted by the operator", 1)[0]
    assert sorted(named.split(" and ")) == ["cpu-throttle", "network-partition"], event


# -- running again, and on a schedule -------------------------------------------------------------
def test_a_rerun_runs_a_finished_experiment_again_and_keeps_its_report(
        cluster: KubeClient, tmp_path: Path) -> None:
    from pggit_chaos.kube.report import fetch_report

    name = start(cluster, manifest("06", "rn-rerun"))
    first = wait_terminal(cluster, name)["status"]
    assert first["phase"] == "Passed", describe(cluster, name)
    cluster.patch(EXPERIMENTS, NS, name, {"metadata": {"annotations": {
        names.RERUN_ANNOTATION: "1"}}})

    def second_ended() -> bool:
        status = cluster.get(EXPERIMENTS, NS, name).get("status") or {}
        return status.get("runId") != first["runId"] and status.get("phase") in TERMINAL
    wait_until(second_ended, f"the second run ended\n{describe(cluster, name)}", 600)
    second = cluster.get(EXPERIMENTS, NS, name)["status"]
    assert second["phase"] == "Passed", describe(cluster, name)
    [past] = second["history"]
    assert (past["runId"], past["verdict"]) == (first["runId"], "Pass"), second["history"]
    assert past["journalConfigMap"] != second["journalConfigMap"]
    old = fetch_report(f"{NS}/{name}", tmp_path / "first", cluster, run=first["runId"][:8])
    new = fetch_report(f"{NS}/{name}", tmp_path / "second", cluster)
    assert first["runId"] in old.summary.read_text()
    assert second["runId"] in new.summary.read_text()



def test_a_run_dropped_from_status_history_takes_its_journal_with_it(
        cluster: KubeClient) -> None:
    """Ten past runs kept in ``status.history``: the next rerun drops the oldest, and the
    operator deletes that run's journal ConfigMap and its history's parts (a rerun experiment
    kept every journal, up to 8 MB each, until it was deleted). A history entry naming any
    other ConfigMap deletes nothing."""
    import uuid

    from pggit_chaos.kube.client import CONFIG_MAPS

    name = start(cluster, manifest("06", "rn-rerun-prune", verification={"checks": []}))
    body = wait_terminal(cluster, name)
    assert body["status"]["phase"] == "Passed", describe(cluster, name)
    owner = [{"apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosExperiment",
              "name": name, "uid": body["metadata"]["uid"]}]

    def config_map(cm_name: str) -> str:
        cluster.create(CONFIG_MAPS, NS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": cm_name, "ownerReferences": owner}, "data": {"kept": "for the test"}})
        return cm_name
    runs = [str(uuid.uuid4()) for _ in range(10)]
    journals = [config_map(names.journal_config_map_name(name, run)) for run in runs]
    parts = [config_map(names.journal_part_name(journals[-1], n)) for n in (1, 2)]
    decoy = config_map("rn-rerun-prune-decoy")
    history = [{"runId": run, "phase": "Passed", "verdict": "Pass", "journalConfigMap": cm}
               for run, cm in zip(runs, journals, strict=True)]
    history[-2]["journalConfigMap"] = decoy  # not the name its run's journal gets
    cluster.patch(EXPERIMENTS, NS, name, {"status": {"history": history}},
                  subresource="status")

    def rerun(value: str) -> Body:
        before = cluster.get(EXPERIMENTS, NS, name)["status"]["runId"]
        cluster.patch(EXPERIMENTS, NS, name, {"metadata": {"annotations": {
            names.RERUN_ANNOTATION: value}}})

        def ended() -> bool:
            status = cluster.get(EXPERIMENTS, NS, name).get("status") or {}
            return status.get("runId") != before and status.get("phase") in TERMINAL
        wait_until(ended, f"run {value} ended\n{describe(cluster, name)}", 300)
        status: Body = cluster.get(EXPERIMENTS, NS, name)["status"]
        return status
    status = rerun("1")
    assert len(status["history"]) == 10 and status["history"][-1]["runId"] == runs[-2]
    assert all(cluster.find(CONFIG_MAPS, NS, cm) is None for cm in [journals[-1], *parts])
    assert all(cluster.find(CONFIG_MAPS, NS, cm) is not None for cm in journals[:-2])
    status = rerun("2")
    assert runs[-2] not in [run["runId"] for run in status["history"]]
    assert cluster.find(CONFIG_MAPS, NS, decoy) is not None  # named wrongly: left alone
    cluster.delete(EXPERIMENTS, NS, name)
    wait_until(lambda: all(cluster.find(CONFIG_MAPS, NS, cm) is None
                           for cm in [*journals, decoy]), "the rest go with the experiment",
               120)

def operator_metrics(client: KubeClient) -> str:
    from urllib.request import urlopen

    [pod] = operator_pods(client)
    with urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def test_a_one_minute_schedule_creates_owned_runs_keeps_its_history_and_labels_metrics(
        cluster: KubeClient, tmp_path: Path) -> None:
    """The cron's minutes are real ones here (the emulator's tests drive a clock of their own
    through Forbid, Replace, pause and missed starts)."""
    from pggit_chaos.kube.client import SCHEDULES
    from pggit_chaos.kube.schedules import SCHEDULED_AT_ANNOTATION
    from pggit_chaos.spec.schedule import SCHEDULE_LABEL

    schedule = "rn-every-minute"
    if cluster.find(SCHEDULES, NS, schedule) is not None:
        cluster.delete(SCHEDULES, NS, schedule)
        wait_until(lambda: cluster.find(SCHEDULES, NS, schedule) is None, "old schedule gone",
                   120)
    template = manifest("06", "unused")["spec"]
    made = cluster.create(SCHEDULES, NS, {
        "apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosSchedule",
        "metadata": {"name": schedule},
        "spec": {"schedule": "* * * * *", "successfulRunsHistoryLimit": 1,
                 "experimentTemplate": {"metadata": {"labels": {"team": "db"}},
                                        "spec": template}}})

    def runs() -> list[Body]:
        return sorted(cluster.list(EXPERIMENTS, NS,
                                   label_selector=f"{SCHEDULE_LABEL}={schedule}"),
                      key=lambda b: str(b["metadata"]["name"]))

    def finished(count: int) -> bool:
        status = cluster.get(SCHEDULES, NS, schedule).get("status") or {}
        return sum((status.get("verdicts") or {}).values()) >= count
    try:
        wait_until(lambda: bool(runs()), "the schedule's first run", 90)
        run = runs()[0]
        assert run["metadata"]["labels"] == {"team": "db", SCHEDULE_LABEL: schedule}
        [owner] = run["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "PgGitChaosSchedule", made["metadata"]["uid"], True)
        scheduled = _moment(run["metadata"]["annotations"][SCHEDULED_AT_ANNOTATION])
        late = _moment(run["metadata"]["creationTimestamp"]) - scheduled
        print(f"schedule lateness on the real node: {late.total_seconds():.1f} s")
        assert scheduled.second == 0 and late < timedelta(seconds=30), late
        assert run["metadata"]["name"] == f"{schedule}-{int(scheduled.timestamp()) // 60}"
        first = str(run["metadata"]["name"])
        wait_until(lambda: finished(2), f"two runs finished\n{describe(cluster, first)}", 240)
        status = cluster.get(SCHEDULES, NS, schedule)["status"]
        assert status["lastVerdict"] == "Pass", status
        assert status["verdicts"].get("Pass", 0) >= 2, status
        # A limit of one Passed run: the older ones are deleted by the operator.
        wait_until(lambda: len([r for r in runs() if (r.get("status") or {}).get("phase")
                                == "Passed"]) <= 1, "the history limit kept", 60)
        metrics = operator_metrics(cluster)
        assert f'schedule="{schedule}"' in metrics, metrics[-2000:]
        # `pggit-chaos report NAME --schedule`: every kept run's report, and an index of them
        from pggit_chaos.kube.report import fetch_schedule_report

        made = fetch_schedule_report(f"{NS}/{schedule}", tmp_path / "schedule", cluster)
        page = made.index.read_text()
        assert made.runs, (made.unfinished, [r["metadata"]["name"] for r in runs()])
        for files in made.runs:
            assert f'href="{files.folder.name}/report.html"' in page, page
            assert files.html is not None and files.html.exists()
    finally:
        cluster.delete(SCHEDULES, NS, schedule)
    wait_until(lambda: not runs(), "the runs go with their schedule", 240)


def test_forbid_skips_the_next_minute_while_a_long_run_is_active_and_that_run_keeps_its_history(
        cluster: KubeClient, tmp_path: Path) -> None:
    """Under Forbid (the default) a run still active at the next scheduled minute makes that
    start a skipped one (lastSkippedTime, a RunSkipped Event), never a second run on the
    target. The run holds its fault 50 s at full workload rate: its history is more than one
    ConfigMap holds, which ended such a run Error before the history was kept in parts."""
    from pggit_chaos.kube.client import CONFIG_MAPS, SCHEDULES
    from pggit_chaos.kube.report import fetch_report
    from pggit_chaos.spec.schedule import SCHEDULE_LABEL

    schedule = "rn-forbid"
    if cluster.find(SCHEDULES, NS, schedule) is not None:
        cluster.delete(SCHEDULES, NS, schedule)
        wait_until(lambda: cluster.find(SCHEDULES, NS, schedule) is None, "old schedule gone",
                   120)
    template = manifest("06", "unused", duration="50s")["spec"]
    cluster.create(SCHEDULES, NS, {
        "apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosSchedule",
        "metadata": {"name": schedule},
        "spec": {"schedule": "* * * * *", "experimentTemplate": {"spec": template}}})

    def runs() -> list[Body]:
        return sorted(cluster.list(EXPERIMENTS, NS,
                                   label_selector=f"{SCHEDULE_LABEL}={schedule}"),
                      key=lambda b: str(b["metadata"]["name"]))
    try:
        wait_until(lambda: bool(runs()), "the schedule's first run", 90)
        first = str(runs()[0]["metadata"]["name"])
        first_minute = int(first.rsplit("-", 1)[1])

        def skipped() -> bool:
            status = cluster.get(SCHEDULES, NS, schedule).get("status") or {}
            return bool(status.get("lastSkippedTime"))
        wait_until(skipped, f"a start skipped under Forbid\n{describe(cluster, first)}", 150)
        status = cluster.get(SCHEDULES, NS, schedule)["status"]
        skipped_minute = int(_moment(status["lastSkippedTime"]).timestamp()) // 60
        assert skipped_minute > first_minute, status
        assert f"{schedule}-{skipped_minute}" not in {r["metadata"]["name"] for r in runs()}
        active = [r for r in runs()
                  if (r.get("status") or {}).get("phase") not in TERMINAL]
        assert len(active) <= 1, [(r["metadata"]["name"], r.get("status")) for r in runs()]
        events = cluster.list(EVENTS, NS, field_selector=f"involvedObject.name={schedule}")
        assert any(e.get("reason") == "RunSkipped" for e in events), events

        body = wait_terminal(cluster, first, 420)
        assert body["status"]["phase"] == "Passed", describe(cluster, first)
        journal = journal_of(cluster, body["status"])
        main = cluster.get(CONFIG_MAPS, NS, body["status"]["journalConfigMap"])
        parts = json.loads((main.get("data") or {}).get(names.HISTORY_PARTS_KEY, "[]"))
        print(f"a 50 s run's history: {journal['workload']['invoked']} operations, "
              f"{len(parts)} extra ConfigMaps")
        files = fetch_report(f"{NS}/{first}", tmp_path / "report", cluster)
        assert files.history is not None, files.history_note
        lines = files.history.read_text().splitlines()
        invokes = sum(1 for line in lines if json.loads(line)["type"] == "invoke")
        assert invokes == journal["workload"]["invoked"] > 0
    finally:
        cluster.delete(SCHEDULES, NS, schedule)
    wait_until(lambda: not runs(), "the runs go with their schedule", 300)
