"""The chart's RBAC (charts/pggit-chaos/api-calls.yaml) is what the real API server audited.

Runs after the other tests of this folder (file order), on the same node: the API server's audit
log then holds every call the chart's operator and runner made in them (and in
``scripts/real-node e2e`` before, when .ci/run kept that node for these tests). ``scripts/real-node
audited-rbac`` turns that log into RBAC rules, including the checks the server makes on a
request's behalf (update of an owner's finalizers for a blocking ownerReference; create of
pods/exec for a websocket exec on 1.35+).

- Every audited call must be in the committed file (else the chart would refuse it somewhere).
- After a whole run of this folder without failures on a node that also ran the e2e, every
  committed call must have been audited (else the chart grants a permission nobody needs).
- With PGGIT_CHAOS_RECORD_API_CALLS=1 the committed file is rewritten from the audit log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import api_calls
from pggit_chaos.kube.client import EXPERIMENTS, KubeClient
from realnode.conftest import NS, SCRIPT

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(3600)]

FOLDER = Path(__file__).resolve().parent
Calls = dict[str, set[tuple[str, str, str]]]


def audited() -> Calls:
    done = subprocess.run([sys.executable, str(SCRIPT), "audited-rbac"], capture_output=True,
                          text=True, check=True)
    return {identity: {(g, r, v) for g, r, v in calls}
            for identity, calls in json.loads(done.stdout).items()}


def test_every_audited_call_is_in_the_committed_file(cluster: KubeClient) -> None:
    calls = audited()
    assert calls["operator"] and calls["runner"], "the audit log holds no call of the chart's"
    if os.environ.get(api_calls.RECORD_ENV) == "1":
        api_calls.write(calls)
    committed = api_calls.load()
    for identity in api_calls.IDENTITIES:
        missing = sorted(calls[identity] - committed[identity])
        assert not missing, (
            f"the real API server audited calls of the {identity} that "
            f"{api_calls.API_CALLS_FILE.name} does not grant: {missing}; rerun these tests "
            f"with {api_calls.RECORD_ENV}=1 to regenerate it")


def test_every_committed_call_was_audited(cluster: KubeClient,
                                          request: pytest.FixtureRequest) -> None:
    session = request.session
    files = {Path(str(item.path)).resolve() for item in session.items}
    whole = all(p.resolve() in files for p in FOLDER.glob("test_*.py"))
    if not whole or session.testsfailed:
        pytest.skip("needs a whole run of tests/realnode without failures")
    e2e_ran = any(e["metadata"]["name"] == "network-partition"
                  for e in cluster.list(EXPERIMENTS, NS))
    if not e2e_ran:
        pytest.skip("needs the node `scripts/real-node e2e --keep` ran the experiments on")
    calls = audited()
    committed = api_calls.load()
    for identity in api_calls.IDENTITIES:
        unused = sorted(committed[identity] - calls[identity])
        assert not unused, (
            f"{api_calls.API_CALLS_FILE.name} grants the {identity} calls the real API server "
            f"never saw: {unused}; rerun with {api_calls.RECORD_ENV}=1 to regenerate it")
