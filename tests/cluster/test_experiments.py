"""The in-cluster path on one machine, kept for what the real node cannot stage.

Every experiment file runs to its verdict on the real node (``scripts/real-node e2e`` and
tests/realnode/test_real_cluster.py, which also holds pod-pause, the refusals before injection,
a broken pgGit behind the pods and the verification Job's FailedCreate). What stays here needs
the emulator's Kubernetes 1.33 answers; the fixtures and helpers here serve the crash-path and
disk-pressure tests of this folder.

The real kopf operator (in a thread) watches the test API server; it creates the runner Job;
the test kubelet runs that Job's command — the real ``pggit-chaos run --in-cluster`` — as a
process, which runs the engine with the Kubernetes substrate against a pod backed by a real
PostgreSQL with pgGit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.emulator import KubeEmulator, runner_namespace
from cluster.kubelet import Kubelet
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import CONFIG_MAPS, EXPERIMENTS, PODS, KubeClient
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


# Emulator-only: the emulator answers as Kubernetes 1.33 (memory resizePolicy RestartContainer);
# the real node is 1.34.
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


