"""Multi-fault scenarios in a cluster: the runner Job runs a two-fault scenario to a verdict,
and the operator reverts every recorded intent of a runner that dies mid-scenario.

The real kopf operator, the real ``pggit-chaos run --in-cluster`` in the test kubelet, real
iptables rules and a real CFS quota on pg-0's cgroup (tests/cluster/test_experiments.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.emulator import EmulatorServer
from cluster.kubelet import Kubelet
from cluster.test_crash_paths import (  # noqa: F401  (emulator_server: the fixture)
    NS,
    PARTITION,
    THROTTLE,
    assert_reverted_and_clean,
    emulator_server,
    fault_in_effect,
    fault_left,
    reasons_by_operator,
)
from cluster.test_experiments import (  # noqa: F401  (kubelet: the fixture)
    explain,
    journal_of,
    kubelet,
    manifest,
    wait_terminal,
)
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube.client import EXPERIMENTS, KubeClient
from waits import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.faults]

Body = dict[str, Any]


def scenario(mode: str, partition: str, throttle: str, delay: str = "0s") -> Body:
    """A network-partition and a cpu-throttle in one experiment (``05``'s target and checks)."""
    body = manifest(PARTITION)
    spec = body["spec"]
    partition_fault = spec.pop("fault")
    throttle_fault = manifest(THROTTLE)["spec"]["fault"]
    spec["scenario"] = {"mode": mode, "steps": [
        {"fault": partition_fault, "duration": partition},
        {"fault": throttle_fault, "duration": throttle, "delay": delay}]}
    body["metadata"]["name"] = f"scenario-{mode}"
    return body


def test_a_serial_scenario_runs_to_a_verdict_with_both_windows(
        kubelet: Kubelet, admin_client: KubeClient, emulator_server: EmulatorServer,  # noqa: F811
        start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5)
    body = scenario("serial", "3s", "3s", delay="1s")
    admin_client.create(EXPERIMENTS, NS, body)
    final = wait_terminal(admin_client, body["metadata"]["name"], kubelet)
    status = final["status"]
    assert status["phase"] == "Passed", explain(final, kubelet)
    assert not status.get("faultIntent") and not status.get("faultIntents"), status
    journal = journal_of(admin_client, status)
    steps = journal["fault_steps"]
    assert [s["fault_type"] for s in steps] == ["network-partition", "cpu-throttle"]
    partition, throttle = steps
    assert partition["end_offset"] is not None and throttle["end_offset"] is not None
    assert throttle["start_offset"] - partition["end_offset"] >= 0.9  # after its revert + delay
    assert all(s["evidence"]["bit"] for s in steps), steps
    assert not fault_left(admin_client, kubelet)


def test_the_operator_reverts_every_intent_of_a_runner_killed_mid_scenario(
        kubelet: Kubelet, admin_client: KubeClient, emulator_server: EmulatorServer,  # noqa: F811
        start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5)
    body = scenario("parallel", "60s", "60s")
    name = str(body["metadata"]["name"])
    admin_client.create(EXPERIMENTS, NS, body)
    status: Body = {}

    def both_recorded() -> bool:
        nonlocal status
        status = admin_client.get(EXPERIMENTS, NS, name).get("status") or {}
        return len(status.get("faultIntents") or []) == 2

    wait_until(both_recorded, f"both intents in status\n{kubelet.all_logs()[-4000:]}", 120)
    assert status["faultIntent"] == status["faultIntents"][0]
    wait_until(lambda: fault_in_effect(admin_client, kubelet, PARTITION)
               and fault_in_effect(admin_client, kubelet, THROTTLE),
               "both faults reached the kernel", 30)
    (pod,) = kubelet.job_pod_names(NS, str(status["runnerJob"]))
    kubelet.kill_pod_process(NS, pod)
    final = wait_terminal(admin_client, name, kubelet)
    assert final["status"]["phase"] == "Error", explain(final, kubelet)
    assert_reverted_and_clean(admin_client, kubelet)
    status = admin_client.get(EXPERIMENTS, NS, name)["status"]
    assert not status.get("faultIntent") and not status.get("faultIntents"), status
    assert "fault reverted from its intent" in status["message"], status["message"]
    assert reasons_by_operator(admin_client, name) == ["FaultReverted"]
