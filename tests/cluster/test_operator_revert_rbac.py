"""Every revert the operator may make from an intent is allowed by the chart's own RBAC.

When a runner dies mid-fault, the operator undoes the fault from the intent in status
(``faults.revert_intent``) with *its* ServiceAccount, not the runner's. On a real node the
chart granted ``patch pods/resize`` only to the runner: the operator's revert of a cpu-throttle
got 403 every 2 s, the pod stayed throttled. Here the test API server enforces the grants the
rendered chart gives the operator's ServiceAccount (its Roles/ClusterRoles and bindings, with
``exec.enabled`` since two of the faults need exec, and with ``watchAllNamespaces``), and
each kind of undo the operator knows is run through ``revert_intent`` as the operator.

Why the test API server: the grants of the chart are applied to one identity directly (the
rendered rules, as RBAC evaluates them), with no cluster to install into.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cluster.emulator import EmulatorServer, KubeEmulator, namespace
from pggit_chaos.kube import disk_pressure, faults, names
from pggit_chaos.kube.client import NETWORK_POLICIES, PODS, ApiError, KubeClient
from test_chart import RELEASE_NS, granted, render

pytestmark = [pytest.mark.kube, pytest.mark.chart]

NS = "default"
OPERATOR_SA = "pggit-chaos-operator"
CHARTS = {"namespaced": {"exec": {"enabled": True}},
          "all-namespaces": {"exec": {"enabled": True}, "watchAllNamespaces": True}}
ORIGINAL = {"requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"}}
#: Every kind of undo :func:`faults.revert_intent` acts on (the others are SQL-level or
#: in-process: nothing for the operator to do), with the intent's undo for pod pg-0.
UNDOS: dict[str, dict[str, Any]] = {
    names.UNDO_POD_KILL: {"pods": ["pg-0"]},
    names.UNDO_RESIZE: {"containers": {"pg-0": "postgres"}, "originals": {"pg-0": ORIGINAL}},
    names.UNDO_NETWORK_POLICY: {"policy": "partition", "pods": ["pg-0"],
                                "label": names.PARTITION_LABEL},
    names.UNDO_POD_PAUSE: {"containers": {"pg-0": "postgres"}},
    disk_pressure.UNDO_DISK_BALLOON: {"volume": "data", "containers": {"pg-0": "postgres"}},
}


def test_every_undo_kind_of_the_code_is_covered() -> None:
    kinds = {value for name, value in vars(names).items() if name.startswith("UNDO_")}
    kinds |= {value for name, value in vars(disk_pressure).items() if name.startswith("UNDO_")}
    assert kinds == set(UNDOS)


def chart_grants(values: dict[str, Any], folder: Path) -> set[tuple[str, str, str]]:
    """What the rendered chart lets the operator's ServiceAccount do in namespace NS."""
    scopes = granted(render(values, folder), OPERATOR_SA, RELEASE_NS)
    return {(g, r, v) for g, r, v in scopes.get(None, set()) | scopes.get(NS, set())}


def _exec_backend(namespace_: str, pod: str, container: str, command: list[str],
                  stdin: bool) -> subprocess.Popen[bytes]:
    """The kubelet's part of an exec, answered with what the scripts report (what is under
    test is whether the API server lets the operator in, not the scripts)."""
    return subprocess.Popen(["sh", "-c", "echo freed=0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _stage(admin: KubeClient) -> None:
    namespace(admin, NS)
    admin.create(PODS, NS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pg-0", "labels": {names.PARTITION_LABEL: "x"}},
        "spec": {"nodeName": "test-node", "containers": [
            {"name": "postgres", "image": "postgres:16",
             "resources": {"requests": ORIGINAL["requests"],
                           "limits": {"cpu": "50m", "memory": "256Mi"}}}]}})
    admin.patch(PODS, NS, "pg-0", {"status": {"phase": "Running"}}, subresource="status")
    admin.create(NETWORK_POLICIES, NS, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "partition"},
        "spec": {"podSelector": {"matchLabels": {names.PARTITION_LABEL: "x"}},
                 "policyTypes": ["Ingress"]}})


@pytest.mark.parametrize("chart", list(CHARTS))
@pytest.mark.parametrize("kind", list(UNDOS))
def test_the_operator_may_revert_each_intent_under_the_charts_rbac(
        kind: str, chart: str, emulator_server: EmulatorServer, emulator: KubeEmulator,
        admin_client: KubeClient, client_for: Any, tmp_path: Path) -> None:
    emulator.attach_node("test-node", _exec_backend)
    _stage(admin_client)
    emulator.grants["operator"] = chart_grants(CHARTS[chart], tmp_path)
    intent = {"type": kind, "undo": {"kind": kind, "namespace": NS, **UNDOS[kind]}}
    done = faults.revert_intent(client_for("operator"), NS, intent)  # no 403
    assert "nothing the operator can revert" not in done, done
    pod = admin_client.get(PODS, NS, "pg-0")
    if kind == names.UNDO_RESIZE:
        assert pod["spec"]["containers"][0]["resources"] == ORIGINAL
    if kind == names.UNDO_NETWORK_POLICY:
        assert admin_client.find(NETWORK_POLICIES, NS, "partition") is None
        assert names.PARTITION_LABEL not in pod["metadata"].get("labels", {})


def test_the_grants_are_enforced(emulator_server: EmulatorServer, emulator: KubeEmulator,
                                 admin_client: KubeClient, client_for: Any) -> None:
    """Without ``patch pods/resize`` the revert of a throttle is refused as on a real server
    (what the chart granted before)."""
    _stage(admin_client)
    emulator.grants["operator"] = {("", "pods", "get")}
    intent = {"type": "cpu-throttle",
              "undo": {"kind": names.UNDO_RESIZE, "namespace": NS, **UNDOS[names.UNDO_RESIZE]}}
    with pytest.raises(ApiError) as caught:
        faults.revert_intent(client_for("operator"), NS, intent)
    assert caught.value.status == 403, caught.value
    assert 'cannot patch resource "pods/resize"' in str(caught.value), caught.value
