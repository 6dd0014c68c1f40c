"""The real node as a fixture: ``scripts/real-node up`` and ``install`` (the chart with its demo
target, exactly as the README's cluster section says), reused when a node is already up (as
.ci/run leaves it after ``scripts/real-node e2e --keep``), taken down at the end only when this
session brought it up.

Skipped unless PGGIT_CHAOS_REAL_NODE_TESTS=1 (root; the first ``up`` on a machine builds
Kubernetes from the Go module proxy: minutes). Everything here talks to the real API server as
its admin; the chart's own ServiceAccounts make the product's calls, which the API server audits
(``test_rbac_audit`` reads that log).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pggit_chaos.kube.client import EXPERIMENTS, PODS, KubeClient
from waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "real-node"
STATE = Path(os.environ.get("PGGIT_CHAOS_REAL_NODE_STATE", "/var/lib/pggit-chaos/real-node"))
KUBECONFIG = STATE / "admin.kubeconfig"
EXPERIMENTS_DIR = ROOT / "experiments"
NS = "default"
OPERATOR_NS = "pggit-chaos-system"
#: The chart's demo target: StatefulSet pggit-postgres, one pod.
DEMO_POD, DEMO_LABELS = "pggit-postgres-0", {"app.kubernetes.io/name": "pggit-postgres"}
TERMINAL = ("Passed", "Failed", "Inconclusive", "Aborted", "Error")
Body = dict[str, Any]

pytestmark = pytest.mark.realnode


def real_node(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=3600, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"scripts/real-node {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _node_up() -> bool:
    if real_node("status", check=False).returncode != 0 or not KUBECONFIG.exists():
        return False
    done = subprocess.run(["kubectl", "--kubeconfig", str(KUBECONFIG), "get", "--raw",
                           "/readyz"], capture_output=True, text=True, check=False)
    return done.returncode == 0


@pytest.fixture(scope="session")
def cluster() -> Iterator[KubeClient]:
    """An admin client of the real node, with the chart installed and its operator ready."""
    if os.environ.get("PGGIT_CHAOS_REAL_NODE_TESTS") != "1":
        pytest.skip("set PGGIT_CHAOS_REAL_NODE_TESTS=1 to run tests on a real node")
    if os.geteuid() != 0:
        pytest.skip("scripts/real-node runs as root")
    owned = not _node_up()
    if owned:
        real_node("up")
    client = KubeClient.from_environment(kubeconfig=str(KUBECONFIG))
    try:
        if not client.list(PODS, OPERATOR_NS, label_selector="app.kubernetes.io/component="
                           "operator") and not client.list(PODS, OPERATOR_NS):
            real_node("install")
        wait_until(lambda: operator_ready(client), "the operator is Ready", 300)
        wait_until(lambda: pod_ready(client, NS, DEMO_POD), "the demo target is Ready", 300)
        yield client
    finally:
        if owned and os.environ.get("PGGIT_CHAOS_REAL_NODE_KEEP") != "1":
            real_node("down", check=False)


# -- the API -----------------------------------------------------------------------------------
def pod_ready(client: KubeClient, namespace: str, name: str) -> bool:
    pod = client.find(PODS, namespace, name)
    if not pod or (pod["metadata"].get("deletionTimestamp")):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def operator_pods(client: KubeClient) -> list[Body]:
    return [p for p in client.list(PODS, OPERATOR_NS)
            if "operator" in p["metadata"]["name"] and not p["metadata"].get("deletionTimestamp")]


def operator_ready(client: KubeClient) -> bool:
    pods = operator_pods(client)
    return len(pods) == 1 and pod_ready(client, OPERATOR_NS, pods[0]["metadata"]["name"])


def manifest(number: str, name: str, *, selector: dict[str, str] | None = None,
             secret: str | None = None, **spec: Any) -> Body:
    """``experiments/NN-*.yaml`` under its own ``name``, shortened for the test's clock."""
    path = next(EXPERIMENTS_DIR.glob(f"{number}-*.yaml"))
    body: Body = yaml.safe_load(path.read_text())
    body["metadata"]["name"] = name
    body["spec"]["duration"] = "3s"
    body["spec"].setdefault("verification", {})
    body["spec"]["verification"].update({"checks": ["corruption"], "timeout": "180s"})
    body["spec"].setdefault("recovery", {})["timeout"] = "90s"
    if selector is not None:
        body["spec"]["target"]["selector"] = {"matchLabels": selector}
    if secret is not None:
        body["spec"]["target"]["databaseSecretRef"] = {"name": secret}
    body["spec"].update(spec)
    return body


def start(client: KubeClient, body: Body) -> str:
    """Create the experiment after deleting one of the same name left by an earlier run."""
    name = str(body["metadata"]["name"])
    if client.find(EXPERIMENTS, NS, name) is not None:
        client.delete(EXPERIMENTS, NS, name)
        wait_until(lambda: client.find(EXPERIMENTS, NS, name) is None,
                   f"the earlier {name} is gone", 180)
    client.create(EXPERIMENTS, NS, body)
    return name


def describe(client: KubeClient, name: str) -> str:
    """The experiment's status and the operator's last log lines, for a failure message."""
    body = client.find(EXPERIMENTS, NS, name) or {}
    logs = subprocess.run(["kubectl", "--kubeconfig", str(KUBECONFIG), "-n", OPERATOR_NS,
                           "logs", "deploy/pggit-chaos-operator", "--tail=60"],
                          capture_output=True, text=True, check=False)
    # Without the probes' and timers' lines, which say nothing about the run.
    logs_text = "\n".join(line for line in (logs.stdout or logs.stderr).splitlines()
                          if "aiohttp.access" not in line and "kopf.activities" not in line
                          and "' succeeded." not in line)
    return f"status: {json.dumps(body.get('status'), indent=1)}\noperator log:\n{logs_text}"


def wait_terminal(client: KubeClient, name: str, timeout: float = 600) -> Body:
    body: Body = {}

    def ended() -> bool:
        nonlocal body
        body = client.get(EXPERIMENTS, NS, name)
        return (body.get("status") or {}).get("phase") in TERMINAL
    wait_until(ended, f"{name} ended\n{describe(client, name)}", timeout)
    return body


def wait_injected(client: KubeClient, name: str) -> Body:
    body: Body = {}

    def injected() -> bool:
        nonlocal body
        body = client.get(EXPERIMENTS, NS, name)
        status = body.get("status") or {}
        return bool(status.get("injectedAt")) or status.get("phase") in TERMINAL
    wait_until(injected, f"{name} injected its fault\n{describe(client, name)}", 400)
    status = body.get("status") or {}
    assert status.get("phase") not in TERMINAL, describe(client, name)
    return status


def secret_value(client: KubeClient, name: str, key: str) -> str:
    secret = client.request("GET", f"/api/v1/namespaces/{NS}/secrets/{name}")
    return base64.b64decode(secret["data"][key]).decode()


def pod_dsn(client: KubeClient, pod: str, password: str) -> str:
    ip = client.get(PODS, NS, pod)["status"]["podIP"]
    return f"postgresql://postgres:{password}@{ip}:5432/postgres?connect_timeout=5"


# -- the node's kernel ---------------------------------------------------------------------------
def pod_pids(client: KubeClient, namespace: str, name: str) -> list[int]:
    """Processes of the pod's containers on this host, found by the pod's UID in their cgroup."""
    uid = str(client.get(PODS, namespace, name)["metadata"]["uid"])
    forms = (uid, uid.replace("-", "_"))
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        if any(form in cgroup for form in forms):
            pids.append(int(proc.name))
    return pids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def server_pids(client: KubeClient, pod: str) -> list[int]:
    """The pod's live PostgreSQL processes: executable postgres, not exited. An exited backend
    the postmaster has not reaped yet keeps its name but leaves its cgroups (its
    /proc/PID/cgroup says "/"), and it is no server process to stop or throttle."""
    return [pid for pid in pod_pids(client, NS, pod)
            if comm(pid) in ("postgres", "postmaster") and state_of(pid) not in ("Z", "X", "?")]


def postgres_states(client: KubeClient) -> dict[int, str]:
    """pid -> process state (R, S, T, ...) of the demo target's PostgreSQL processes: those
    whose executable is postgres, as pod-pause picks them (the readiness probe's
    ``pg_isready -U postgres``, waiting on a stopped server, has "postgres" in its command
    line and was counted as a server process that something had resumed)."""
    return {pid: state for pid in server_pids(client, DEMO_POD)
            if (state := state_of(pid)) not in ("Z", "X", "?")}


def kill_runner(client: KubeClient, pod: str) -> list[int]:
    """SIGKILL the runner's own processes (not the pod's pause): it gets no chance to revert."""
    pids = [pid for pid in pod_pids(client, NS, pod) if "pggit-chaos" in cmdline(pid)]
    assert pids, f"no runner process of pod {pod} on this host"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def cfs_quota(client: KubeClient, pod: str, container_pid: int | None = None) -> int:
    """The CFS quota (µs per period; -1 none) of the cgroup the pod's postgres runs in."""
    # The postmaster first (the lowest pid); a backend exiting meanwhile is passed over.
    for pid in [container_pid] if container_pid else sorted(server_pids(client, pod)):
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "cpu" not in controllers.split(",") or path == "/":
                continue
            mount = next(p for p in Path("/sys/fs/cgroup").iterdir()
                         if "cpu" in p.name.split(",") and (p / path.lstrip("/")).exists())
            return int((mount / path.lstrip("/") / "cpu.cfs_quota_us").read_text())
    raise AssertionError(f"no cpu cgroup for the PostgreSQL of pod {pod}")


def runner_pod(client: KubeClient, status: Body) -> str:
    pods = client.list(PODS, NS, label_selector=f"job-name={status['runnerJob']}")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return str(pods[0]["metadata"]["name"])


def wait_gone(client: KubeClient, name: str) -> None:
    wait_until(lambda: client.find(EXPERIMENTS, NS, name) is None, f"{name} is gone", 180)
