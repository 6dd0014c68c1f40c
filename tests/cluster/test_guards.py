"""Guards in a cluster: the runner Job stops the hold early, reverts, and status says Aborted.

The real operator and runner against a pod backed by a real PostgreSQL, as in
test_experiments.py; connection-kill, whose kills make workload errors, against a low
``maxErrorRate``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from cluster.emulator import KubeEmulator, iter_events
from cluster.kubelet import Kubelet
from cluster.test_experiments import (  # noqa: F401  (kubelet is a fixture)
    explain,
    kubelet,
    manifest,
    wait_terminal,
)
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube.client import EXPERIMENTS, KubeClient
from waits import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.faults]


def test_a_tripped_guard_aborts_the_run_and_status_names_it(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator,  # noqa: F811
        start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5)
    body = manifest("06", duration="30s",
                    guards={"maxErrorRate": 0.001, "errorRateWindow": "2s", "minSamples": 5})
    body["metadata"]["name"] = "guarded"
    body["spec"]["verification"] = {"checks": []}
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, "guarded", kubelet)
    status = final["status"]
    assert status["phase"] == "Aborted", explain(final, kubelet)
    assert status["message"].startswith("guard maxErrorRate tripped: error rate "), status
    assert "fault reverted after" in status["message"]
    assert status.get("faultIntent") is None and status.get("revertedAt")
    held = (_seconds(status["revertedAt"]) - _seconds(status["injectedAt"]))
    assert held < 25, status  # stopped early: the hold asked for 30 s

    def aborted_event() -> bool:
        return any(e.get("reason") == "Aborted" and "guard maxErrorRate" in str(e.get("message"))
                   for e in iter_events(emulator, "default"))
    wait_until(aborted_event, "an Aborted Event naming the guard", 30)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
