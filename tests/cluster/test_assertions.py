"""The user's assertions in a cluster: the runner Job evaluates them, status and Events name them.

The real operator, runner (``pggit-chaos run --in-cluster``) and a pod backed by a real
PostgreSQL with pgGit, as in test_experiments.py; connection-kill, checks off (the assertions
and the invariant checker are what is verified).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.emulator import KubeEmulator, iter_events
from cluster.kubelet import Kubelet
from cluster.test_experiments import (  # noqa: F401  (kubelet is a fixture)
    explain,
    journal_of,
    kubelet,
    manifest,
    wait_terminal,
)
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube.client import EXPERIMENTS, KubeClient
from pggit_chaos.kube.report import fetch_report

pytestmark = [pytest.mark.kube, pytest.mark.faults]

#: Holds at the steady state (no workload yet), not after it: the runner's schema exists then.
NO_RUN_SCHEMA = {"name": "no-run-schema", "expect": "0",
                 "sql": r"SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'chaos\_run\_%'"}
HOLDS = {"name": "one-is-one", "sql": "SELECT 1", "expect": "1"}


def test_a_failing_assertion_fails_the_run_and_status_names_it(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator,  # noqa: F811
        start_operator: Any, tmp_path: Path) -> None:  # noqa: F811
    start_operator(status_interval=0.5)
    body = manifest("06")
    body["metadata"]["name"] = "assertion-fails"
    body["spec"]["verification"] = {"checks": [], "assertions": [HOLDS, NO_RUN_SCHEMA]}
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, "assertion-fails", kubelet)
    status = final["status"]
    assert status["phase"] == "Failed", explain(final, kubelet)
    assert status["verdict"] == "Fail"
    said = "assertion no-run-schema failed after recovery: got '1', expected '0'"
    assert said in status["message"], status
    assert [(a["name"], a["phase"], a["outcome"], a.get("got")) for a in status["assertions"]] \
        == [("one-is-one", "steady state", "passed", "1"),
            ("no-run-schema", "steady state", "passed", "0"),
            ("one-is-one", "after recovery", "passed", "1"),
            ("no-run-schema", "after recovery", "failed", "1")]
    assert status.get("faultIntent") is None and status.get("revertedAt")
    # An Event names it (the operator mirrors the status into Events).
    messages = {}

    def posted() -> bool:
        messages.update({e.get("reason"): e.get("message") or e.get("note") for e in
                         iter_events(emulator, "default")
                         if (e.get("involvedObject") or e.get("regarding") or {}).get("name")
                         == "assertion-fails"})
        return "AssertionFailed" in messages and "Failed" in messages
    from waits import wait_until

    wait_until(posted, "the AssertionFailed and Failed Events", 30)
    assert said in str(messages["AssertionFailed"])
    journal = journal_of(admin_client, status)
    assert [a["outcome"] for a in journal["assertions"]] == ["passed"] * 3 + ["failed"]
    # `pggit-chaos report` renders the run, report.html included, naming the assertion.
    files = fetch_report("default/assertion-fails", tmp_path / "report", admin_client)
    assert files.html is not None
    page = files.html.read_text()
    assert "no-run-schema" in page and "got &#39;1&#39;, expected &#39;0&#39;" in page
    assert "data:image/png;base64," in page
