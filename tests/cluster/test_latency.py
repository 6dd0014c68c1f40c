"""network-latency in a cluster: the proxy runs inside the runner pod, nothing else changes.

``kubectl apply`` of ``experiments/10-network-latency.yaml`` against the test API server with
the real operator: the runner Job (a real process on the test kubelet) starts the latency
proxy in its own pod, its workload connects through it to the target's database (a real
PostgreSQL with pgGit), the fault switches the delay on for the hold and off at the revert. No
exec, no NetworkPolicy, no change to the target pod.
"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.emulator import KubeEmulator
from cluster.kubelet import Kubelet
from cluster.test_experiments import (  # noqa: F401  (kubelet: the fixture)
    explain,
    journal_of,
    kubelet,
    manifest,
    wait_terminal,
)
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube.client import EXPERIMENTS, NETWORK_POLICIES, PODS, KubeClient

pytestmark = [pytest.mark.kube, pytest.mark.faults]


def test_latency_proxy_in_the_runner_pod_delays_the_workload_and_passes(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator,  # noqa: F811
        start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5)
    target_before = admin_client.get(PODS, "default", "pg-0")
    body = manifest("10")
    name = body["metadata"]["name"]
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, name, kubelet)
    status = final["status"]
    assert status["phase"] == "Passed" and status["verdict"] == "Pass", explain(final, kubelet)
    assert status["faultEvidence"]["bit"] is True, status["faultEvidence"]
    assert "chunks held" in status["faultEvidence"]["summary"]
    assert status["workload"]["ok"] > 0 and status["workload"]["lost"] == 0
    assert status.get("faultIntent") is None
    journal = journal_of(admin_client, status)
    # The intent names the proxy on the runner pod's own loopback; it dies with the runner.
    assert "through the proxy on 127.0.0.1:" in journal["fault_intent"]["target"]
    assert journal["fault_intent"]["undo"]["kind"] == "thread"
    phases = {p["phase"]: p for p in journal["workload"]["phases"]}
    assert phases["Injecting"]["ok"] > 0, journal["workload"]
    assert phases["Injecting"]["latency_p99_ms"] >= 50.0, journal["workload"]
    assert phases["Injecting"]["latency_p50_ms"] >= 40.0, journal["workload"]
    # The target was not touched: no policy, same pod (uid), same labels.
    assert admin_client.list(NETWORK_POLICIES, "default") == []
    target_after = admin_client.get(PODS, "default", "pg-0")
    assert target_after["metadata"]["uid"] == target_before["metadata"]["uid"]
    assert target_after["metadata"].get("labels") == target_before["metadata"].get("labels")
