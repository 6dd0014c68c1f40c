"""``primary-failover``'s Kubernetes form against the test API server, with real servers.

The pods are objects in the emulator; behind them is a real primary with a real streaming
standby (:class:`pggit_chaos.local.replica.ReplicaPair`) whose multi-host read-write DSN plays
the read-write Service. Promoting the standby and moving the role label is the user's
PostgreSQL operator's job in a real cluster: here the test plays CloudNativePG's part (kill the
deleted primary's server, ``pg_promote()`` the standby, label its pod primary, recreate the old
pod as a replica). The runner's substrate is the real one, talking HTTP as the runner identity:
it targets only the labelled pod, deletes it, and its evidence sees the new primary and a write;
before the promotion the same evidence says the fault did not (yet) bite. The test kubelet
(which runs one independent server per pod) does not model replication, so the whole operator
→ runner Job path is not run here.

Why on the emulator: a replicated PostgreSQL whose primary carries a PostgreSQL operator's role
label needs that operator (CloudNativePG), out of reach offline. The real node runs experiment 12
against its single demo PostgreSQL, which ends Aborted before injection (no primary label):
tests/realnode/test_real_cluster.py.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pggit_chaos.config import Settings
from pggit_chaos.errors import NoTargets
from pggit_chaos.faults.base import WorkloadWindow
from pggit_chaos.kube.client import PODS, KubeClient
from pggit_chaos.kube.failover import PrimaryPodDelete
from pggit_chaos.kube.substrate import KubeSubstrate
from pggit_chaos.local.replica import ReplicaPair, prepare_primary
from pggit_chaos.local.server import EmbeddedPostgres
from pggit_chaos.spec import Experiment
from pggit_chaos.spec.expect import Result, expectation_of
from pggit_chaos.spec.loader import load_experiments

pytestmark = [pytest.mark.kube, pytest.mark.postgres]

EXAMPLE = "experiments/12-primary-failover.yaml"
ROLE = "cnpg.io/instanceRole"
APP = {"app.kubernetes.io/name": "pggit-postgres"}


def example() -> Experiment:
    (experiment,) = load_experiments(Path(__file__).resolve().parents[2] / EXAMPLE)
    return experiment


def make_pod(client: KubeClient, name: str, role: str) -> dict[str, Any]:
    created = client.create(PODS, "default", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {**APP, ROLE: role}},
        "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}],
                 "nodeName": "test-node"}})
    client.patch(PODS, "default", name, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status")
    return created


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicaPair]:
    from pggit_chaos.pggit import install

    primary = EmbeddedPostgres()
    try:
        primary.init()
        prepare_primary(primary)
        primary.start()
        primary.create_database("pggit")
        install(primary.dsn("pggit"))
        replicas = ReplicaPair(primary, "sync")
        try:
            replicas.start()
            yield replicas
        finally:
            replicas.destroy()
    finally:
        primary.destroy()


def substrate(client: KubeClient, dsn: str) -> KubeSubstrate:
    return KubeSubstrate(client, Settings(), dsn, str(uuid.uuid4()), uuid.uuid4().hex[:8],
                         lambda patch: None)


def test_no_pod_with_the_primary_label_is_aborted_before_injection(
    admin_client: KubeClient, client_for: Callable[[str], KubeClient]
) -> None:
    make_pod(admin_client, "pg-1", "replica")
    runner = substrate(client_for("runner"), "host=127.0.0.1 port=1 dbname=pggit")
    label = re.escape("carries the primary label cnpg.io/instanceRole=primary")
    with pytest.raises(NoTargets, match=label) as caught:
        runner.prepare(example())
    assert admin_client.find(PODS, "default", "pg-1") is not None
    # The run ends Aborted with this reason: experiments/12's skip-when-in-cluster annotation
    # names it, so scripts/kind-e2e reports it as skipped.
    judged = expectation_of(example(), in_cluster=True).judge("Aborted", str(caught.value))
    assert judged.result is Result.skipped


def test_the_primary_pod_is_deleted_and_the_promoted_standby_takes_writes(
    admin_client: KubeClient, client_for: Callable[[str], KubeClient], pair: ReplicaPair
) -> None:
    import psycopg

    make_pod(admin_client, "pg-1", "primary")
    make_pod(admin_client, "pg-2", "replica")
    runner = substrate(client_for("runner"), pair.dsn("pggit"))
    experiment = example()
    runner.prepare(experiment)
    assert runner.target_names == ["pg-1"]  # the primary, never the replica
    fault = runner.build_fault(experiment)
    assert isinstance(fault, PrimaryPodDelete)
    assert fault.intent().undo["pods"] == ["pg-1"]
    fault.inject()
    gone = admin_client.find(PODS, "default", "pg-1")
    assert gone is None or gone["metadata"].get("deletionTimestamp")
    assert admin_client.find(PODS, "default", "pg-2") is not None  # the replica untouched

    # Not failed over yet: no pod carries the label, so the fault has not bitten.
    window = WorkloadWindow(seconds=1.0)
    assert not fault.evidence(window).bit

    # CloudNativePG's part: the deleted primary's server dies, the standby is promoted and
    # labelled primary, the old pod comes back as a replica.
    pair.primary.kill()
    with psycopg.connect(pair.standby.socket_dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_promote(true, 60)")
    admin_client.patch(PODS, "default", "pg-2", {"metadata": {"labels": {ROLE: "primary"}}})
    deadline = time.monotonic() + 10
    while admin_client.find(PODS, "default", "pg-1") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    make_pod(admin_client, "pg-1", "replica")

    evidence = fault.evidence(window)
    assert evidence.bit, evidence.summary
    assert evidence.figures["primary_before"] == "pg-1"
    assert evidence.figures["primary_after"] == "pg-2"
    assert "pg-2 now carries cnpg.io/instanceRole=primary" in evidence.summary
    # Recovery as the engine measures it: the DSN reaches a healthy pgGit that takes writes.
    probe = runner.probe(5.0)
    assert probe.reachable and probe.healthy, probe.detail
