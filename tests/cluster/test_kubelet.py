"""The test kubelet gives the emulator's pods real life: servers, crashes, limits, rules, Jobs.

Every test runs against the real test API server (``cluster.emulator`` over HTTP) with
``pods_need_kubelet=True`` (graceful pod deletion is finished by the kubelet, as on a cluster
with nodes), real embedded PostgreSQL servers in network namespaces and cgroups, and Job
containers run as real local processes (the ``pggit-chaos`` console script, this Python).

Why it stays: the test kubelet runs the emulator-only tests' pods (each marked
"Emulator-only"); these tests keep it honest. Everything a real kubelet can do for the product is
exercised on the real node (tests/realnode).
"""

from __future__ import annotations

import base64
import contextlib
import os
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cluster.emulator import EmulatorServer, KubeEmulator, runner_namespace
from cluster.kubelet import (
    CHAIN_IN,
    Kubelet,
    TargetSet,
    connect,
    kubelet_fixture,
    label_selector_matches,
    policy_rules,
)
from pggit_chaos.kube import builders
from pggit_chaos.kube.client import JOBS, NETWORK_POLICIES, PODS, KubeClient
from waits import wait_until

REPO = Path(__file__).resolve().parents[2]
NS = "default"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, cgroups, iptables)")


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture
def emulator_server(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    """The API server, with pods whose deletion a kubelet finishes (as with real nodes);
    parametrized ``False``: pods go at once when deleted (the emulator's default)."""
    need_kubelet = bool(getattr(request, "param", True))
    with EmulatorServer(KubeEmulator(pods_need_kubelet=need_kubelet)) as server:
        yield server


@pytest.fixture
def kubelet(kubeconfigs: dict[str, Path], emulator_server: EmulatorServer,
            admin_client: KubeClient) -> Iterator[Kubelet]:
    runner_namespace(admin_client, NS)  # the Jobs' ServiceAccount, as the chart makes it
    yield from kubelet_fixture(kubeconfigs, restart_delay=0.3,
                               api_server=emulator_server.emulator)


@pytest.fixture
def targets(kubelet: Kubelet) -> TargetSet:
    return kubelet.add_targets(NS)


def _status(client: KubeClient, api: Any, name: str) -> dict[str, Any]:
    obj = client.get(api, NS, name)
    status: dict[str, Any] = obj.get("status") or {}
    return status


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def _secret_dsn(client: KubeClient) -> str:
    from cluster.kubelet import SECRETS

    secret = client.get(SECRETS, NS, "pggit-db")
    return base64.b64decode(secret["data"]["dsn"]).decode()


def _can_connect(dsn: str) -> bool:
    """Connects and answers; a connection that a policy cuts after the connect (the rules
    land between connect and query) fails after 1 s unacknowledged, instead of hanging."""
    try:
        with psycopg.connect(dsn, connect_timeout=1, autocommit=True,
                             tcp_user_timeout=1000) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def _job(name: str, command: list[str], *, env: list[dict[str, Any]] | None = None,
         deadline: int | None = None, grace: int | None = None,
         policy: str = "File") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": {"app": "test"}},
            "spec": {
                "restartPolicy": "Never", "serviceAccountName": "pggit-chaos-runner",
                "containers": [{"name": "main", "image": "pggit-chaos:test", "command": command,
                                "env": env or [], "terminationMessagePolicy": policy}],
            },
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if grace is not None:
        spec["template"]["spec"]["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def _only_pod(kubelet: Kubelet, job: str) -> str:
    wait_until(lambda: bool(kubelet.job_pod_names(NS, job)), f"job {job} has a pod", 30)
    names = kubelet.job_pod_names(NS, job)
    assert len(names) == 1, names
    return names[0]


def _terminated(client: KubeClient, kubelet: Kubelet, pod: str) -> dict[str, Any]:
    def done() -> bool:
        found = client.find(PODS, NS, pod)
        state = ((found or {}).get("status") or {}).get("containerStatuses") or [{}]
        return "terminated" in (state[0].get("state") or {})
    wait_until(done, f"pod {pod} terminated\n{kubelet.all_logs()}", 60)
    terminated: dict[str, Any] = _status(client, PODS, pod)["containerStatuses"][0]["state"][
        "terminated"]
    return terminated


# ------------------------------------------------------------------------------- pure parts
def test_label_selectors_match_like_the_api() -> None:
    labels = {"app": "db", "tier": "a"}
    assert label_selector_matches({}, labels)
    assert label_selector_matches({"matchLabels": {"app": "db"}}, labels)
    assert not label_selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert label_selector_matches({"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]},
        {"key": "gone", "operator": "DoesNotExist"}]}, labels)
    assert not label_selector_matches({"matchExpressions": [
        {"key": "tier", "operator": "NotIn", "values": ["a"]}]}, labels)
    assert not label_selector_matches({"matchExpressions": [
        {"key": "gone", "operator": "Exists"}]}, labels)


def test_policy_rules_enforce_only_what_the_policies_say() -> None:
    pod = {"metadata": {"namespace": NS, "name": "pg-0", "labels": {"app": "db"}},
           "spec": {"containers": [{"ports": [{"name": "postgres", "containerPort": 5432}]}]}}
    deny_in = {"metadata": {"namespace": NS, "name": "p"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}}
    ingress, egress = policy_rules([deny_in], pod)
    assert ingress[-1] == ["-j", "DROP"] and egress == []
    assert not any("--dport" in rule for rule in ingress)
    other_ns = {**deny_in, "metadata": {"namespace": "other", "name": "p"}}
    other_pods = {**deny_in, "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    assert policy_rules([other_ns, other_pods], pod) == ([], [])
    allow_port = {"metadata": {"namespace": NS, "name": "q"}, "spec": {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                     "ports": [{"port": "postgres"}]}]}}
    ingress, egress = policy_rules([allow_port], pod)
    assert ["-s", "10.0.0.0/8", "-p", "tcp", "--dport", "5432", "-j", "ACCEPT"] in ingress
    assert egress[-1] == ["-j", "DROP"]


# ---------------------------------------------------------------------------- target pods
@root_only
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.kube
def test_target_pod_runs_and_answers_through_the_secret(
        kubelet: Kubelet, targets: TargetSet, admin_client: KubeClient) -> None:
    pod = admin_client.get(PODS, NS, "pg-0")
    status = pod["status"]
    replica = kubelet.replica(NS, "pg-0")
    assert status["phase"] == "Running"
    assert _conditions(status)["Ready"]["status"] == "True"
    assert status["podIP"] == replica.ip and replica.ip.startswith("10.251.")
    container = status["containerStatuses"][0]
    assert container["ready"] and container["restartCount"] == 0
    assert container["resources"] == pod["spec"]["containers"][0]["resources"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "pggit-postgres"
    dsn = _secret_dsn(admin_client)
    assert f"host={replica.ip}" in dsn and "dbname=postgres" in dsn
    with connect(dsn) as conn:
        version = conn.execute(
            "SELECT version FROM pggit.install_info WHERE component = 'core'").fetchone()
        server_addr = conn.execute("SELECT host(inet_server_addr())").fetchone()
    assert version is not None
    assert server_addr == (replica.ip,)  # reached over the pod's own network namespace


@root_only
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.kube
@pytest.mark.parametrize(("emulator_server", "grace"), [(True, 0), (True, 30), (False, 30)],
                         indirect=["emulator_server"],
                         ids=["graceful-pods-grace0", "graceful-pods-grace30", "pods-go-at-once"])
def test_deleting_a_target_pod_crashes_and_brings_back_its_server(
        kubelet: Kubelet, targets: TargetSet, admin_client: KubeClient, grace: int) -> None:
    dsn = targets.dsn
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('committed before the crash')")
    server = kubelet.server(NS, "pg-0")
    old_pid = server.pid
    old_uid = admin_client.get(PODS, NS, "pg-0")["metadata"]["uid"]
    admin_client.delete(PODS, NS, "pg-0", grace_period_seconds=grace)
    pod = kubelet.wait_pod(NS, "pg-0", not_uid=old_uid, timeout=120)
    assert old_pid is not None and not Path(f"/proc/{old_pid}").exists()
    assert server.pid != old_pid
    container = pod["status"]["containerStatuses"][0]
    assert container["restartCount"] == 0 and container["ready"]
    with connect(dsn) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("committed before the crash",)]
    log = kubelet.logs(NS, "pg-0")
    assert "not properly shut down; automatic recovery in progress" in log, log[-2000:]


@root_only
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.kube
def test_exec_runs_inside_the_target_pod_and_pod_pause_stops_only_its_server(
        kubelet: Kubelet, admin_client: KubeClient) -> None:
    """``pods/exec`` runs in the pod's cgroups and network namespace; PodPause's script (sh and
    /proc only) stops that pod's postgres processes and no other server's, and resumes them."""
    from kubernetes import client as k8s
    from kubernetes.stream import stream

    from pggit_chaos.errors import FaultError
    from pggit_chaos.kube.faults import exec_signal

    target = kubelet.add_targets(NS, replicas=2)
    paused = kubelet.server(NS, "pg-0")
    api = k8s.CoreV1Api(k8s.ApiClient(admin_client.configuration))
    seen = stream(api.connect_get_namespaced_pod_exec, "pg-0", NS, container="postgres",
                  command=["sh", "-c", "cat /proc/self/cgroup; cat /proc/net/fib_trie"],
                  stderr=True, stdout=True, stdin=False, tty=False)
    assert Path(f"/proc/{paused.pid}/cgroup").read_text().strip() in seen
    assert target.replicas[0].ip in seen and target.replicas[1].ip not in seen

    report = exec_signal(admin_client, NS, "pg-0", "postgres", "STOP")
    try:
        assert str(paused.pid) in report, report
        assert set(kubelet.process_states(NS, "pg-0").values()) == {"T"}
        assert len(kubelet.process_states(NS, "pg-0")) > 3  # postmaster, its helpers
        assert "T" not in kubelet.process_states(NS, "pg-1").values()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(target.replicas[0].server.dsn("postgres"), connect_timeout=2)
    finally:
        exec_signal(admin_client, NS, "pg-0", "postgres", "CONT")
    assert "T" not in kubelet.process_states(NS, "pg-0").values()
    with connect(target.replicas[0].server.dsn("postgres")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # An exec the server refuses is a FaultError naming it.
    with pytest.raises(FaultError, match="container sidecar is not valid for pod pg-0"):
        exec_signal(admin_client, NS, "pg-0", "sidecar", "STOP")
    wait_until(lambda: not kubelet.exec_processes, "the exec processes are reaped", 10)


@root_only
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.kube
def test_resize_becomes_a_cgroup_limit_and_restoring_puts_it_back(
        kubelet: Kubelet, admin_client: KubeClient, emulator_server: EmulatorServer) -> None:
    # Limits to lower and to restore (a resize may never remove one); memory lowered in place
    # as 1.34 allows (1.33 only with resizePolicy RestartContainer).
    emulator_server.emulator.kubernetes_version = "1.34.0"
    targets = kubelet.add_targets(NS, resources={"requests": {"cpu": "100m", "memory": "128Mi"},
                                                 "limits": {"cpu": "4", "memory": "1Gi"}})
    cgroups = kubelet.cgroups(NS, "pg-0")
    original = admin_client.get(PODS, NS, "pg-0")["spec"]["containers"][0]["resources"]
    query = "SELECT count(*) FROM generate_series(1, 3000000)"

    def timed() -> float:
        with connect(targets.dsn) as conn:
            started = time.monotonic()
            conn.execute(query)
            return time.monotonic() - started

    baseline = min(timed() for _ in range(2))
    throttled_before = cgroups.cpu_stat().get("nr_throttled", 0)
    admin_client.patch(PODS, NS, "pg-0",
                       builders.resize_patch("postgres", "50m", "512Mi", original),
                       subresource="resize", patch_type="strategic")

    def actuated(limits: dict[str, str]) -> bool:
        status = _status(admin_client, PODS, "pg-0")
        resources = status["containerStatuses"][0].get("resources") or {}
        conditions = _conditions(status)
        return (resources.get("limits") or {}) == limits and not (
            {"PodResizePending", "PodResizeInProgress"} & set(conditions))

    wait_until(lambda: actuated({"cpu": "50m", "memory": "512Mi"}), "the resize is actuated", 30)
    limits = cgroups.limits()
    if cgroups.version == 1:
        assert limits["cpu.cfs_quota_us"] == "5000" and limits["cpu.cfs_period_us"] == "100000"
        assert limits["memory.limit_in_bytes"] == str(512 * 2**20)
    else:
        assert limits["cpu.max"] == "5000 100000" and limits["memory.max"] == str(512 * 2**20)
    slowed = timed()
    assert cgroups.cpu_stat()["nr_throttled"] > throttled_before
    assert slowed > 3 * baseline, (baseline, slowed)

    admin_client.patch(PODS, NS, "pg-0", builders.restore_resize_patch("postgres", original),
                       subresource="resize", patch_type="strategic")
    wait_until(lambda: actuated({"cpu": "4", "memory": "1Gi"}), "the restore is actuated", 30)
    limits = cgroups.limits()
    if cgroups.version == 1:
        assert limits["cpu.cfs_quota_us"] == "400000"
        assert limits["memory.limit_in_bytes"] == str(2**30)
    else:
        assert limits["cpu.max"] == "400000 100000" and limits["memory.max"] == str(2**30)
    restored = min(timed() for _ in range(2))
    assert restored < slowed / 3, (baseline, slowed, restored)


@root_only
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.kube
def test_network_policy_cuts_connections_and_deleting_it_restores_them(
        kubelet: Kubelet, targets: TargetSet, admin_client: KubeClient) -> None:
    dsn = targets.dsn
    label = "chaos.pggit.io/partitioned-by"
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "isolate"},
              "spec": {"podSelector": {"matchLabels": {label: "x"}},
                       "policyTypes": ["Ingress", "Egress"]}}
    admin_client.create(NETWORK_POLICIES, NS, policy)
    time.sleep(0.5)  # several kubelet ticks: the pod does not carry the label yet
    assert kubelet.chain_rules(NS, "pg-0") == []
    assert _can_connect(dsn)
    held = psycopg.connect(dsn, autocommit=True, connect_timeout=2, tcp_user_timeout=1000)
    admin_client.patch(PODS, NS, "pg-0", {"metadata": {"labels": {label: "x"}}})
    wait_until(lambda: bool(kubelet.chain_rules(NS, "pg-0")), "the policy's rules exist", 30)
    assert f"-A {CHAIN_IN} -j DROP" in kubelet.chain_rules(NS, "pg-0")
    assert not _can_connect(dsn)
    with pytest.raises(psycopg.OperationalError):  # an open connection is cut too
        held.execute("SELECT 1")
    held.close()
    admin_client.patch(PODS, NS, "pg-0", {"metadata": {"labels": {label: None}}})
    wait_until(lambda: not kubelet.chain_rules(NS, "pg-0"), "the label's removal frees it", 30)
    assert _can_connect(dsn)
    admin_client.patch(PODS, NS, "pg-0", {"metadata": {"labels": {label: "x"}}})
    wait_until(lambda: not _can_connect(dsn), "the pod is isolated again", 30)
    admin_client.delete(NETWORK_POLICIES, NS, "isolate")
    wait_until(lambda: not kubelet.chain_rules(NS, "pg-0"), "the deleted policy's rules go", 30)
    assert _can_connect(dsn)


# -------------------------------------------------------------------------------- Jobs
@root_only
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.kube
def test_job_pods_run_the_real_console_script_and_report_back(
        kubelet: Kubelet, targets: TargetSet, admin_client: KubeClient) -> None:
    admin_client.create(JOBS, NS, _job(
        "validate", ["pggit-chaos", "validate", str(REPO / "experiments/01-pod-kill.yaml")]))
    job = kubelet.wait_job(NS, "validate")
    status = job["status"]
    assert status["succeeded"] == 1 and status["active"] == 0 and status.get("failed", 0) == 0
    assert status["startTime"] and status["completionTime"]
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    pod = _only_pod(kubelet, "validate")
    assert "ok: 1 experiment" in kubelet.logs(NS, pod), kubelet.logs(NS, pod)
    pod_body = admin_client.get(PODS, NS, pod)
    assert pod_body["status"]["phase"] == "Succeeded"
    owner = pod_body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", "validate",
                                                            job["metadata"]["uid"])
    assert pod_body["metadata"]["labels"]["job-name"] == "validate"
    terminated = _terminated(admin_client, kubelet, pod)
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")

    script = textwrap.dedent("""
        import os, sys
        names = ["DSN", "POD", "NS", "UID", "SA", "GREETING"]
        seen = {n: os.environ.get(n) for n in names}
        seen["KUBECONFIG"] = os.environ["KUBECONFIG"]
        with open(os.environ["PGGIT_CHAOS_TERMINATION_MESSAGE_PATH"], "w") as f:
            f.write(repr(seen))
        sys.exit(3)
    """)
    fields = {"POD": "metadata.name", "NS": "metadata.namespace", "UID": "metadata.uid",
              "SA": "spec.serviceAccountName"}
    env: list[dict[str, Any]] = [
        {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "pggit-db", "key": "dsn"}}},
        *({"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}} for n, f in fields.items()),
        {"name": "GREETING", "value": "hello $(POD)"}]
    admin_client.create(JOBS, NS, _job("fails", ["python", "-c", script], env=env))
    job = kubelet.wait_job(NS, "fails")
    pod = _only_pod(kubelet, "fails")
    terminated = _terminated(admin_client, kubelet, pod)
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    seen = eval(terminated["message"])  # the dict the process wrote
    pod_body = admin_client.get(PODS, NS, pod)
    assert seen == {"DSN": targets.dsn, "POD": pod, "NS": NS,
                    "UID": pod_body["metadata"]["uid"], "SA": "pggit-chaos-runner",
                    "GREETING": f"hello {pod}", "KUBECONFIG": seen["KUBECONFIG"]}
    assert Path(seen["KUBECONFIG"]).name == "kubeconfig"  # the pod's copy of the runner's
    assert pod_body["status"]["phase"] == "Failed"
    conditions = _conditions(job["status"])
    assert conditions["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    assert conditions["Failed"]["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 1 and "completionTime" not in job["status"]

    admin_client.create(JOBS, NS, _job("logs", ["python", "-c", "print('last words'); exit(1)"],
                                       policy="FallbackToLogsOnError"))
    kubelet.wait_job(NS, "logs")
    terminated = _terminated(admin_client, kubelet, _only_pod(kubelet, "logs"))
    assert terminated["message"].strip() == "last words"

    admin_client.create(JOBS, NS, _job("no-such", ["no-such-command"]))
    kubelet.wait_job(NS, "no-such")
    terminated = _terminated(admin_client, kubelet, _only_pod(kubelet, "no-such"))
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")


@root_only
@pytest.mark.kube
def test_job_pods_get_their_own_empty_dir_volumes(kubelet: Kubelet,
                                                  admin_client: KubeClient) -> None:
    from cluster.kubelet import _hides_code

    if _hides_code(Path("/tmp")):
        pytest.skip("this checkout lives under /tmp: the kubelet keeps /tmp unmounted so the "
                    "Job pods can still import it")
    # A name no earlier run can have left in the machine's /tmp.
    scratch = Path("/tmp") / f"pggit-chaos-scratch-{uuid.uuid4().hex}.txt"
    script = textwrap.dedent("""
        import os, sys, time
        me, path = os.environ["POD"], os.environ["SCRATCH"]
        open(path, "w").write(me)
        time.sleep(1.0)
        sys.exit(0 if open(path).read() == me and os.getcwd() == "/tmp" else 1)
    """)
    env: list[dict[str, Any]] = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SCRATCH", "value": str(scratch)}]
    for name in ("one", "two"):
        body = _job(name, ["python", "-c", script], env=env)
        pod_spec = body["spec"]["template"]["spec"]
        pod_spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
        pod_spec["containers"][0].update(
            workingDir="/tmp", volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}])
        admin_client.create(JOBS, NS, body)
    for name in ("one", "two"):
        job = kubelet.wait_job(NS, name)
        assert job["status"].get("succeeded") == 1, kubelet.all_logs()
    assert not scratch.exists(), "a Job pod wrote into the machine's own /tmp"


@root_only
@pytest.mark.kube
def test_a_missing_secret_or_key_holds_the_pod_in_create_container_config_error(
        kubelet: Kubelet, admin_client: KubeClient) -> None:
    from cluster.kubelet import SECRETS

    env = [{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}}]
    admin_client.create(JOBS, NS, _job("needs-secret", ["python", "-c", "pass"], env=env))
    pod = _only_pod(kubelet, "needs-secret")

    def waiting() -> dict[str, Any]:
        statuses = _status(admin_client, PODS, pod).get("containerStatuses") or [{}]
        found: dict[str, Any] = (statuses[0].get("state") or {}).get("waiting") or {}
        return found

    wait_until(lambda: waiting().get("reason") == "CreateContainerConfigError", "config error")
    assert waiting()["message"] == 'secret "db" not found'
    assert _status(admin_client, PODS, pod)["phase"] == "Pending"
    admin_client.create(SECRETS, NS, {"metadata": {"name": "db"}, "data": {
        "other": base64.b64encode(b"x").decode()}})
    wait_until(lambda: waiting().get("message") == "couldn't find key dsn in Secret default/db",
               "the key is missing", 30)
    admin_client.patch(SECRETS, NS, "db", {"data": {"dsn": base64.b64encode(b"d").decode()}})
    job = kubelet.wait_job(NS, "needs-secret")
    assert _conditions(job["status"])["Complete"]["status"] == "True"


@root_only
@pytest.mark.kube
def test_active_deadline_terminates_with_the_grace_period_and_fails_the_job(
        kubelet: Kubelet, admin_client: KubeClient) -> None:
    script = ("import signal, time; signal.signal(signal.SIGTERM, lambda *a: print('TERM', "
              "flush=True)); print('started', flush=True); time.sleep(120)")
    started = time.monotonic()
    admin_client.create(JOBS, NS, _job("slow", ["python", "-c", script], deadline=1, grace=2))
    job = kubelet.wait_job(NS, "slow", timeout=60)
    elapsed = time.monotonic() - started
    conditions = _conditions(job["status"])
    assert conditions["Failed"]["reason"] == "DeadlineExceeded"
    assert conditions["Failed"]["message"] == "Job was active longer than specified deadline"
    assert conditions["FailureTarget"]["reason"] == "DeadlineExceeded"
    assert job["status"]["failed"] == 1 and job["status"]["active"] == 0
    pod = kubelet.job_pod_names(NS, "slow")[0]
    assert "TERM" in kubelet.logs(NS, pod)  # SIGTERM first ...
    assert elapsed >= 3.0, elapsed  # ... SIGKILL only after the 2 s grace
    wait_until(lambda: admin_client.find(PODS, NS, pod) is None, "the pod is deleted", 10)
    assert not kubelet.leftovers().get("processes")


@root_only
@pytest.mark.kube
def test_killed_job_process_fails_the_pod_and_the_job(
        kubelet: Kubelet, admin_client: KubeClient) -> None:
    admin_client.create(JOBS, NS, _job("runner", ["python", "-c", "import time; time.sleep(120)"]))
    pod = _only_pod(kubelet, "runner")
    wait_until(lambda: _status(admin_client, PODS, pod).get("phase") == "Running", "running", 30)
    assert _status(admin_client, JOBS, "runner")["active"] == 1
    kubelet.kill_pod_process(NS, pod)
    job = kubelet.wait_job(NS, "runner")
    terminated = _terminated(admin_client, kubelet, pod)
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")
    assert _status(admin_client, PODS, pod)["phase"] == "Failed"
    assert _conditions(job["status"])["Failed"]["reason"] == "BackoffLimitExceeded"


@root_only
@pytest.mark.kube
def test_deleting_a_job_terminates_its_process_and_removes_the_pod(
        kubelet: Kubelet, admin_client: KubeClient) -> None:
    script = "import time; print('up', flush=True); time.sleep(120)"
    admin_client.create(JOBS, NS, _job("doomed", ["python", "-c", script]))
    pod = _only_pod(kubelet, "doomed")
    wait_until(lambda: _status(admin_client, PODS, pod).get("phase") == "Running", "running", 30)
    pid = kubelet.job_pods[admin_client.get(PODS, NS, pod)["metadata"]["uid"]].process
    assert pid is not None
    admin_client.delete(JOBS, NS, "doomed", propagation="Background")
    wait_until(lambda: admin_client.find(PODS, NS, pod) is None, "the GC'd pod is removed", 30)
    assert pid.poll() == -15  # SIGTERM within the grace period ended it
    assert not kubelet.leftovers()


@root_only
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.kube
def test_nothing_is_left_behind_even_when_the_test_fails(kubeconfigs: dict[str, Path],
                                                         admin_client: KubeClient) -> None:
    runner_namespace(admin_client, NS)
    kubelet = Kubelet(kubeconfigs)
    with pytest.raises(RuntimeError, match="the test failed"), kubelet:
        target = kubelet.add_targets(NS, variant="trinity_collide")
        admin_client.create(NETWORK_POLICIES, NS, {
            "metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
        admin_client.create(JOBS, NS, _job("sleeper", ["python", "-c",
                                                       "import time; time.sleep(120)"]))
        wait_until(lambda: bool(kubelet.chain_rules(NS, "pg-0")), "rules", 30)
        wait_until(lambda: any(p.state == "running" for p in kubelet.job_pods.values()),
                   "the sleeper runs", 30)
        server = target.replicas[0].server
        assert server.running
        raise RuntimeError("the test failed")
    assert kubelet.made and kubelet.leftovers() == {}
    assert not server.running and server.base is not None and not server.base.exists()
    assert not kubelet.errors, kubelet.errors


@root_only
@pytest.mark.faults
def test_pod_pause_script_refuses_a_postmaster_that_is_pid_1(tmp_path: Path) -> None:
    """In the ``postgres`` image the postmaster is PID 1 of its container, and the kernel drops
    a SIGSTOP sent to PID 1 from inside its PID namespace: the dry run (signal 0) refuses before
    anything is injected, and a SIGSTOP that did not stop it is reported, not taken for a pause.
    Here a real PID namespace whose PID 1 is a process named ``postgres`` stands in."""
    import shutil
    import subprocess

    from pggit_chaos.kube.faults import SIGNAL_SCRIPT

    fake = tmp_path / "postgres"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", fake)
    init = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", str(fake), "60"])
    try:
        def inside(signal: str) -> subprocess.CompletedProcess[str]:
            child = _children(init.pid)[0]  # PID 1 of the namespace
            return subprocess.run(["nsenter", "-t", str(child), "-p", "-m", "sh", "-c",
                                   SIGNAL_SCRIPT, "pod-pause", signal],
                                  capture_output=True, text=True, timeout=30)
        wait_until(lambda: bool(_children(init.pid)), "the namespace's PID 1 runs", 10)
        dry = inside("0")
        assert dry.returncode == 5, dry
        assert "PID 1 of its container" in dry.stderr and "shareProcessNamespace" in dry.stderr
        stop = inside("STOP")
        assert stop.returncode == 4, stop
        assert "process(es) 1 did not stop" in stop.stderr
        assert "shareProcessNamespace: true" in stop.stderr
        assert inside("CONT").returncode == 0
    finally:
        for pid in _children(init.pid):  # the namespace's PID 1 first: its parent then ends
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        init.kill()
        init.wait(10)


def _children(parent: int) -> list[int]:
    from pggit_chaos.local.server import child_pids

    return child_pids(parent)
