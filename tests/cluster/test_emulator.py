"""The test API server behaves like a kube-apiserver where pggit-chaos relies on it.

Everything goes through real HTTP and ``pggit_chaos.kube.client.KubeClient`` (and kopf, in the
last test), as the operator, the runner and the kubelet will.

Why it stays: the emulator still serves the tests the real node cannot stage (each marked
"Emulator-only"); these tests keep it faithful to a kube-apiserver where those rely on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from cluster.emulator import (
    EmulatorServer,
    KubeEmulator,
    apply_manifest,
    namespace,
    parse_label_selector,
    write_kubeconfig,
)
from pggit_chaos.kube.client import (
    CONFIG_MAPS,
    EVENTS,
    EXPERIMENTS,
    JOBS,
    NAMESPACES,
    NETWORK_POLICIES,
    PODS,
    Api,
    ApiError,
    KubeClient,
)

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
EVENTS_V1 = Api("events.k8s.io", "v1", "events")
LEASES = Api("coordination.k8s.io", "v1", "leases")
SECRETS = Api("", "v1", "secrets")


def pod(name: str, labels: dict[str, str] | None = None, *, cpu: str | None = "500m",
        memory: str = "256Mi", owner: dict[str, Any] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if cpu is not None:
        resources = {"requests": {"cpu": "100m", "memory": "128Mi"},
                     "limits": {"cpu": cpu, "memory": memory}}
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"containers": [{"name": "postgres", "image": "postgres:16",
                                 "resources": resources},
                                {"name": "sidecar", "image": "busybox"}]}}
    if owner is not None:
        body["metadata"]["ownerReferences"] = [owner]
    return body


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def experiment(name: str = "pod-kill", ns: str = "chaos") -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((ROOT / "experiments" / "01-pod-kill.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": ns}
    return body


def job(name: str, restart: str = "Never") -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": restart, "containers": [
                {"name": "runner", "image": "pggit-chaos", "command": ["true"]}]}}}}


@pytest.fixture
def ns(admin_client: KubeClient) -> str:
    namespace(admin_client, "chaos", {"chaos.pggit.io/enabled": "true"})
    return "chaos"


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def status_of(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def watch(server: EmulatorServer, path: str, identity: str = "admin", count: int | None = None,
          **params: str) -> list[dict[str, Any]]:
    """The events of one watch request: all until the server ends it after ``timeoutSeconds``,
    or the first ``count``."""
    query = {"watch": "true", "timeoutSeconds": "1" if count is None else "5", **params}
    request = urllib.request.Request(
        f"{server.url}{path}?{urlencode(query)}",
        headers={"Authorization": f"Bearer {server.emulator.token_for(identity)}"})
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=10) as response:
        while count is None or len(events) < count:
            line = response.readline()
            if not line:
                break
            if line.strip():
                events.append(json.loads(line))
    return events


# -- metadata, resourceVersion, concurrency -------------------------------------------------
def test_create_assigns_server_metadata(admin_client: KubeClient, ns: str) -> None:
    created = admin_client.create(PODS, ns, pod("db-0"))
    meta = created["metadata"]
    assert meta["namespace"] == ns and meta["name"] == "db-0"
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert created["status"]["phase"] == "Pending"
    generated = admin_client.create(CONFIG_MAPS, ns, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "journal-"}})
    assert generated["metadata"]["name"].startswith("journal-")
    assert len(generated["metadata"]["name"]) == len("journal-") + 5
    assert "generation" not in generated["metadata"]  # ConfigMaps have none
    assert rv(generated) > rv(created)
    again = status_of(lambda: admin_client.create(PODS, ns, pod("db-0")))
    assert (again.status, again.reason) == (409, "AlreadyExists")
    bad = status_of(lambda: admin_client.create(PODS, ns, pod("Not_A_Name")))
    assert bad.status == 422


def test_a_config_map_over_one_mebibyte_is_refused_as_on_the_real_node(
        admin_client: KubeClient, ns: str) -> None:
    """Emulator-only: checks the emulator itself. The limit and the message are what the real
    node's 1.34 API server answered: 1,048,576 bytes of values accepted (keys not counted),
    one more refused, by create and by patch."""
    import base64
    import os

    def body(name: str, size: int) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                "binaryData": {"a": base64.b64encode(os.urandom(size)).decode()}}
    admin_client.create(CONFIG_MAPS, ns, body("at-limit", 1024 * 1024))
    over = status_of(lambda: admin_client.create(CONFIG_MAPS, ns, body("over", 1024 * 1024 + 1)))
    assert over.status == 422
    assert 'ConfigMap "over" is invalid: []: Too long: may not be more than 1048576 bytes' in str(
        over)
    grown = status_of(lambda: admin_client.patch(CONFIG_MAPS, ns, "at-limit",
                                                 {"data": {"b": "x"}}))
    assert grown.status == 422


def test_resource_version_is_one_global_counter(admin_client: KubeClient, ns: str,
                                                emulator_server: EmulatorServer) -> None:
    first = admin_client.create(CONFIG_MAPS, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": "a"}})
    second = admin_client.create(PODS, ns, pod("db-0"))
    patched = admin_client.patch(CONFIG_MAPS, ns, "a", {"data": {"k": "v"}})
    assert rv(first) < rv(second) < rv(patched)
    listed = admin_client.request("GET", CONFIG_MAPS.path(ns))
    assert listed["kind"] == "ConfigMapList"
    assert int(listed["metadata"]["resourceVersion"]) == rv(patched)
    assert emulator_server.emulator.resource_version == rv(patched)
    # a write that changes nothing is no write: same resourceVersion (as a real server)
    same = admin_client.patch(CONFIG_MAPS, ns, "a", {"data": {"k": "v"}})
    assert rv(same) == rv(patched)


def test_stale_resource_version_is_a_conflict(admin_client: KubeClient, ns: str) -> None:
    created = admin_client.create(CONFIG_MAPS, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                    "metadata": {"name": "a"}})
    stale = created["metadata"]["resourceVersion"]
    admin_client.patch(CONFIG_MAPS, ns, "a", {"data": {"k": "1"}})
    conflict = status_of(lambda: admin_client.patch(
        CONFIG_MAPS, ns, "a", {"metadata": {"resourceVersion": stale}, "data": {"k": "2"}}))
    assert conflict.status == 409 and conflict.conflict
    assert "the object has been modified" in conflict.api_message
    current = admin_client.get(CONFIG_MAPS, ns, "a")
    assert current["data"] == {"k": "1"}
    # PUT: with the current resourceVersion it replaces, with a stale one it conflicts
    current["data"] = {"k": "3"}
    replaced = admin_client.request("PUT", CONFIG_MAPS.path(ns, "a"), current)
    assert replaced["data"] == {"k": "3"} and rv(replaced) > rv(current)
    put_conflict = status_of(lambda: admin_client.request("PUT", CONFIG_MAPS.path(ns, "a"),
                                                          current))
    assert put_conflict.status == 409
    # a JSON patch that tests a stale resourceVersion fails with 422 (kopf relies on it)
    failed = status_of(lambda: admin_client.patch(CONFIG_MAPS, ns, "a", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "add", "path": "/data/x", "value": "y"}], patch_type="json"))
    assert failed.status == 422
    assert "x" not in admin_client.get(CONFIG_MAPS, ns, "a")["data"]


# -- status subresource and generation --------------------------------------------------------
def test_status_subresource_and_generation(admin_client: KubeClient, ns: str) -> None:
    body = experiment(ns=ns)
    body["status"] = {"phase": "Passed"}
    created = admin_client.create(EXPERIMENTS, ns, body)
    assert "status" not in created  # create drops a custom resource's status
    assert created["metadata"]["generation"] == 1
    # /status changes status only: spec changes in the same write are ignored, no generation
    status = admin_client.patch(EXPERIMENTS, ns, "pod-kill", {
        "spec": {"duration": "99s"}, "status": {"phase": "Pending", "message": "admitted"}},
        subresource="status")
    assert status["status"] == {"phase": "Pending", "message": "admitted"}
    assert status["spec"]["duration"] == "10s"
    assert status["metadata"]["generation"] == 1 and rv(status) > rv(created)
    # the main resource ignores status; a spec change bumps the generation
    main = admin_client.patch(EXPERIMENTS, ns, "pod-kill", {
        "spec": {"duration": "20s"}, "status": {"phase": "Error"}})
    assert main["status"]["phase"] == "Pending"
    assert main["spec"]["duration"] == "20s" and main["metadata"]["generation"] == 2
    # metadata-only changes bump no generation
    labelled = admin_client.patch(EXPERIMENTS, ns, "pod-kill",
                                  {"metadata": {"labels": {"team": "db"}}})
    assert labelled["metadata"]["generation"] == 2 and rv(labelled) > rv(main)
    # a JSON patch on /status (as kopf writes it) works too
    json_status = admin_client.patch(EXPERIMENTS, ns, "pod-kill", [
        {"op": "test", "path": "/metadata/resourceVersion",
         "value": labelled["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/status/phase", "value": "SteadyState"}],
        subresource="status", patch_type="json")
    assert json_status["status"]["phase"] == "SteadyState"


def test_strategic_merge_patch_is_refused_for_custom_resources(admin_client: KubeClient,
                                                               ns: str) -> None:
    admin_client.create(EXPERIMENTS, ns, experiment(ns=ns))
    refused = status_of(lambda: admin_client.patch(
        EXPERIMENTS, ns, "pod-kill", {"metadata": {"labels": {"a": "b"}}},
        patch_type="strategic"))
    assert refused.status == 415


# -- patches ------------------------------------------------------------------------------------
def test_merge_patch_null_removes(admin_client: KubeClient, ns: str) -> None:
    admin_client.create(PODS, ns, pod("db-0", {"app": "pg", "chaos.pggit.io/partitioned-by": "x"}))
    patched = admin_client.patch(PODS, ns, "db-0", {
        "metadata": {"labels": {"chaos.pggit.io/partitioned-by": None, "tier": "db"},
                     "annotations": {"a": "1"}}})
    assert patched["metadata"]["labels"] == {"app": "pg", "tier": "db"}
    assert patched["metadata"]["annotations"] == {"a": "1"}
    # a list in a merge patch replaces the whole list
    cleared = admin_client.patch(PODS, ns, "db-0", {"metadata": {"annotations": None}})
    assert "annotations" not in cleared["metadata"]


def test_json_patch_operations(admin_client: KubeClient, ns: str) -> None:
    admin_client.create(CONFIG_MAPS, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "a", "labels": {"x": "1"}},
                                          "data": {"a": "1", "b": "2"}})
    patched = admin_client.patch(CONFIG_MAPS, ns, "a", [
        {"op": "add", "path": "/metadata/finalizers", "value": ["one"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "two"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "copy", "from": "/data/a", "path": "/data/c"},
        {"op": "move", "from": "/metadata/labels/x", "path": "/metadata/labels/y"},
        {"op": "test", "path": "/data/c", "value": "10"}], patch_type="json")
    assert patched["metadata"]["finalizers"] == ["one", "two"]
    assert patched["data"] == {"a": "10", "c": "10"}
    assert patched["metadata"]["labels"] == {"y": "1"}
    failed = status_of(lambda: admin_client.patch(CONFIG_MAPS, ns, "a", [
        {"op": "test", "path": "/data/a", "value": "nope"},
        {"op": "remove", "path": "/data/a"}], patch_type="json"))
    assert failed.status == 422
    missing = status_of(lambda: admin_client.patch(
        CONFIG_MAPS, ns, "a", [{"op": "remove", "path": "/data/zzz"}], patch_type="json"))
    assert missing.status == 422
    assert admin_client.get(CONFIG_MAPS, ns, "a")["data"] == {"a": "10", "c": "10"}


def test_strategic_merge_patch_merges_by_key(admin_client: KubeClient, ns: str) -> None:
    admin_client.create(PODS, ns, pod("db-0"))
    patched = admin_client.patch(PODS, ns, "db-0", {
        "metadata": {"finalizers": ["a"], "labels": {"x": "y"}},
        "spec": {"containers": [{"name": "sidecar", "image": "busybox:2"}]}},
        patch_type="strategic")
    containers = {c["name"]: c for c in patched["spec"]["containers"]}
    assert set(containers) == {"postgres", "sidecar"}  # merged by name, not replaced
    assert containers["sidecar"]["image"] == "busybox:2"
    assert containers["postgres"]["resources"]["limits"]["cpu"] == "500m"
    more = admin_client.patch(PODS, ns, "db-0", {"metadata": {"finalizers": ["b", "a"]}},
                              patch_type="strategic")
    assert more["metadata"]["finalizers"] == ["a", "b"]  # a set: merged, not replaced
    fewer = admin_client.patch(PODS, ns, "db-0", {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, patch_type="strategic")
    assert fewer["metadata"]["finalizers"] == ["b"]


# -- deletion -----------------------------------------------------------------------------------
def test_second_delete_is_not_found(admin_client: KubeClient, ns: str) -> None:
    admin_client.create(CONFIG_MAPS, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "a"}})
    deleted = admin_client.delete(CONFIG_MAPS, ns, "a")
    assert deleted is not None and deleted["metadata"]["name"] == "a"
    assert admin_client.find(CONFIG_MAPS, ns, "a") is None
    again = status_of(lambda: admin_client.request("DELETE", CONFIG_MAPS.path(ns, "a")))
    assert again.status == 404 and again.not_found
    assert admin_client.delete(CONFIG_MAPS, ns, "a") is None  # the client's 404 → None


def test_finalizers_hold_deletion(admin_client: KubeClient, ns: str) -> None:
    body = experiment(ns=ns)
    body["metadata"]["finalizers"] = ["chaos.pggit.io/revert-faults"]
    admin_client.create(EXPERIMENTS, ns, body)
    held = admin_client.delete(EXPERIMENTS, ns, "pod-kill")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    still = admin_client.get(EXPERIMENTS, ns, "pod-kill")
    assert still["metadata"]["deletionTimestamp"]
    # deleting again while it is held answers the object, not 404
    assert admin_client.delete(EXPERIMENTS, ns, "pod-kill") is not None
    refused = status_of(lambda: admin_client.patch(EXPERIMENTS, ns, "pod-kill", {
        "metadata": {"finalizers": ["chaos.pggit.io/revert-faults", "new"]}}))
    assert refused.status == 422 and "no new finalizers" in refused.api_message
    admin_client.patch(EXPERIMENTS, ns, "pod-kill", {"metadata": {"finalizers": None}})
    assert admin_client.find(EXPERIMENTS, ns, "pod-kill") is None


def test_delete_preconditions(admin_client: KubeClient, ns: str) -> None:
    created = admin_client.create(CONFIG_MAPS, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                    "metadata": {"name": "a"}})
    wrong = status_of(lambda: admin_client.request("DELETE", CONFIG_MAPS.path(ns, "a"), {
        "preconditions": {"uid": "another"}}))
    assert wrong.status == 409
    admin_client.request("DELETE", CONFIG_MAPS.path(ns, "a"),
                         {"preconditions": {"uid": created["metadata"]["uid"]}})
    assert admin_client.find(CONFIG_MAPS, ns, "a") is None


def test_garbage_collection_follows_owner_references(admin_client: KubeClient,
                                                     ns: str) -> None:
    experiment_obj = admin_client.create(EXPERIMENTS, ns, experiment(ns=ns))
    runner = job("pod-kill-run")
    runner["metadata"]["ownerReferences"] = [owner_ref(experiment_obj)]
    runner_job = admin_client.create(JOBS, ns, runner)
    admin_client.create(PODS, ns, pod("pod-kill-run-x", owner=owner_ref(runner_job)))
    admin_client.create(CONFIG_MAPS, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "journal", "ownerReferences": [owner_ref(experiment_obj)]}})
    # experiment → Job → its pod, and the journal ConfigMap: all gone (background)
    admin_client.delete(EXPERIMENTS, ns, "pod-kill")
    assert admin_client.find(JOBS, ns, "pod-kill-run") is None
    assert admin_client.find(PODS, ns, "pod-kill-run-x") is None
    assert admin_client.find(CONFIG_MAPS, ns, "journal") is None


def test_orphan_propagation_keeps_dependents(admin_client: KubeClient, ns: str) -> None:
    runner_job = admin_client.create(JOBS, ns, job("runner"))
    admin_client.create(PODS, ns, pod("runner-x", owner=owner_ref(runner_job)))
    admin_client.delete(JOBS, ns, "runner", propagation="Orphan")
    left = admin_client.get(PODS, ns, "runner-x")
    assert "ownerReferences" not in left["metadata"]  # orphaned, as the real GC does
    # batch/v1 Jobs orphan their pods when no policy is given (a real-server gotcha)
    second = admin_client.create(JOBS, ns, job("runner-2"))
    admin_client.create(PODS, ns, pod("runner-2-x", owner=owner_ref(second)))
    admin_client.delete(JOBS, ns, "runner-2", propagation=None)
    assert admin_client.find(PODS, ns, "runner-2-x") is not None
    # foreground: dependents first, then the owner
    third = admin_client.create(JOBS, ns, job("runner-3"))
    admin_client.create(PODS, ns, pod("runner-3-x", owner=owner_ref(third)))
    admin_client.delete(JOBS, ns, "runner-3", propagation="Foreground")
    assert admin_client.find(PODS, ns, "runner-3-x") is None
    assert admin_client.find(JOBS, ns, "runner-3") is None


def test_graceful_pod_deletion_waits_for_the_kubelet(ns: str, admin_client: KubeClient,
                                                     emulator_server: EmulatorServer,
                                                     client_for: Callable[[str], KubeClient],
                                                     ) -> None:
    emulator_server.emulator.pods_need_kubelet = True
    kubelet = client_for("kubelet")
    created = admin_client.create(PODS, ns, pod("db-0"))
    assert created["spec"]["nodeName"] == "test-node"  # bound, as by a scheduler
    kubelet.patch(PODS, ns, "db-0", {"status": {"phase": "Running"}}, subresource="status")
    marked = admin_client.delete(PODS, ns, "db-0", grace_period_seconds=5)
    assert marked is not None
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 5
    assert marked["metadata"]["deletionTimestamp"]
    assert admin_client.find(PODS, ns, "db-0") is not None  # the kubelet has not confirmed
    kubelet.delete(PODS, ns, "db-0", grace_period_seconds=0)  # the kubelet's confirmation
    assert admin_client.find(PODS, ns, "db-0") is None
    # a finished pod, and any pod deleted with grace 0, goes at once
    admin_client.create(PODS, ns, pod("done"))
    kubelet.patch(PODS, ns, "done", {"status": {"phase": "Succeeded"}}, subresource="status")
    admin_client.delete(PODS, ns, "done")
    assert admin_client.find(PODS, ns, "done") is None
    admin_client.create(PODS, ns, pod("now"))
    admin_client.delete(PODS, ns, "now", grace_period_seconds=0)
    assert admin_client.find(PODS, ns, "now") is None


def test_foreground_deletion_waits_for_the_kubelet(ns: str, admin_client: KubeClient,
                                                    emulator_server: EmulatorServer,
                                                    client_for: Callable[[str], KubeClient],
                                                    ) -> None:
    emulator_server.emulator.pods_need_kubelet = True
    kubelet = client_for("kubelet")
    runner = admin_client.create(JOBS, ns, job("runner"))
    admin_client.create(PODS, ns, pod("runner-x", owner=owner_ref(runner)))
    admin_client.delete(JOBS, ns, "runner", propagation="Foreground")
    held = admin_client.get(JOBS, ns, "runner")
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["foregroundDeletion"]
    terminating = admin_client.get(PODS, ns, "runner-x")
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    kubelet.delete(PODS, ns, "runner-x", grace_period_seconds=0)
    assert admin_client.find(PODS, ns, "runner-x") is None
    assert admin_client.find(JOBS, ns, "runner") is None
    # background: the Job goes at once, its pod waits for the kubelet
    second = admin_client.create(JOBS, ns, job("runner-2"))
    admin_client.create(PODS, ns, pod("runner-2-x", owner=owner_ref(second)))
    admin_client.delete(JOBS, ns, "runner-2")
    assert admin_client.find(JOBS, ns, "runner-2") is None
    assert admin_client.get(PODS, ns, "runner-2-x")["metadata"]["deletionTimestamp"]


def test_pods_go_at_once_without_a_kubelet(admin_client: KubeClient, ns: str) -> None:
    admin_client.create(PODS, ns, pod("db-0"))
    admin_client.delete(PODS, ns, "db-0", grace_period_seconds=30)
    assert admin_client.find(PODS, ns, "db-0") is None


def test_namespaces_are_required_and_terminate(admin_client: KubeClient) -> None:
    missing = status_of(lambda: admin_client.create(PODS, "nowhere", pod("db-0")))
    assert missing.status == 404
    namespace(admin_client, "doomed")
    admin_client.create(PODS, "doomed", pod("db-0"))
    admin_client.delete(NAMESPACES, None, "doomed")
    assert admin_client.find(PODS, "doomed", "db-0") is None
    assert admin_client.find(NAMESPACES, None, "doomed") is None


# -- selectors ----------------------------------------------------------------------------------
def test_label_and_field_selectors(admin_client: KubeClient, ns: str,
                                   client_for: Callable[[str], KubeClient]) -> None:
    kubelet = client_for("kubelet")
    admin_client.create(PODS, ns, pod("a", {"app": "pg", "role": "primary"}))
    admin_client.create(PODS, ns, pod("b", {"app": "pg", "role": "replica"}))
    admin_client.create(PODS, ns, pod("c", {"app": "web"}))
    kubelet.patch(PODS, ns, "a", {"status": {"phase": "Running"}}, subresource="status")

    def names(label: str | None = None, field: str | None = None) -> list[str]:
        return [p["metadata"]["name"] for p in admin_client.list(
            PODS, ns, label_selector=label, field_selector=field)]

    assert names("app=pg") == ["a", "b"]
    assert names("app==pg,role!=primary") == ["b"]
    assert names("role in (primary, replica)") == ["a", "b"]
    assert names("app,role notin (primary)") == ["b", "c"]  # notin matches a missing key
    assert names("!role") == ["c"]
    assert names("role") == ["a", "b"]
    assert names(field="metadata.name=b") == ["b"]
    assert names(field="status.phase=Running") == ["a"]
    assert names("app=pg", "status.phase!=Running") == ["b"]
    assert names(field=f"metadata.namespace={ns}") == ["a", "b", "c"]
    assert names(field="spec.nodeName=") == ["a", "b", "c"]
    unsupported = status_of(lambda: names(field="spec.containers=x"))
    assert unsupported.status == 400
    assert [r.op for r in parse_label_selector("a in (b,c),d")] == ["in", "exists"]


def test_deletecollection_by_label(admin_client: KubeClient, ns: str) -> None:
    for name, role in (("p1", "partition"), ("p2", "partition"), ("keep", "other")):
        admin_client.create(NETWORK_POLICIES, ns, {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": {"chaos.pggit.io/role": role}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    admin_client.request("DELETE", NETWORK_POLICIES.path(ns),
                         query={"labelSelector": "chaos.pggit.io/role=partition"})
    assert [p["metadata"]["name"] for p in admin_client.list(NETWORK_POLICIES, ns)] == ["keep"]


# -- watch --------------------------------------------------------------------------------------
def test_watch_from_a_resource_version_replays_only_later_events(
        admin_client: KubeClient, ns: str, emulator_server: EmulatorServer) -> None:
    admin_client.create(PODS, ns, pod("early", {"app": "pg"}))
    listed = admin_client.request("GET", PODS.path(ns))
    since = listed["metadata"]["resourceVersion"]
    admin_client.create(PODS, ns, pod("late", {"app": "pg"}))
    admin_client.patch(PODS, ns, "early", {"metadata": {"labels": {"app": "gone"}}})
    events = watch(emulator_server, PODS.path(ns), resourceVersion=since)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "late"), ("MODIFIED", "early")]
    assert all(rv(e["object"]) > int(since) for e in events)
    # with a selector, leaving it is a DELETED event for that watch
    selected = watch(emulator_server, PODS.path(ns), resourceVersion=since,
                     labelSelector="app=pg", count=2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in selected] == [
        ("ADDED", "late"), ("DELETED", "early")]
    # without a resourceVersion: the current objects as ADDED
    current = watch(emulator_server, PODS.path(ns), count=2)
    assert sorted(e["object"]["metadata"]["name"] for e in current) == ["early", "late"]


def test_watch_streams_live_events(admin_client: KubeClient, ns: str,
                                   emulator_server: EmulatorServer) -> None:
    since = admin_client.request("GET", PODS.path(ns))["metadata"]["resourceVersion"]
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: seen.extend(watch(
        emulator_server, PODS.path(ns), resourceVersion=since, count=2)))
    reader.start()
    time.sleep(0.3)
    admin_client.create(PODS, ns, pod("db-0"))
    admin_client.delete(PODS, ns, "db-0")
    reader.join(10)
    assert [e["type"] for e in seen] == ["ADDED", "DELETED"]


def test_watch_from_a_forgotten_version_is_gone(ns: str, admin_client: KubeClient,
                                                emulator_server: EmulatorServer) -> None:
    emulator_server.emulator.history_size = 2
    for index in range(5):
        admin_client.create(PODS, ns, pod(f"p{index}"))
    events = watch(emulator_server, PODS.path(ns), resourceVersion="2", count=1)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


# -- pods: resize and updates -------------------------------------------------------------------
def test_resize_changes_only_resources(admin_client: KubeClient, ns: str) -> None:
    admin_client.create(PODS, ns, pod("db-0"))
    resized = admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "resources": {"limits": {"cpu": "200m"}}}]}},
        subresource="resize", patch_type="strategic")
    containers = {c["name"]: c for c in resized["spec"]["containers"]}
    assert containers["postgres"]["resources"]["limits"] == {"cpu": "200m", "memory": "256Mi"}
    assert resized["metadata"]["generation"] == 2
    other = status_of(lambda: admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "image": "postgres:17"}]}}, subresource="resize",
        patch_type="strategic"))
    assert other.status == 422
    labels = status_of(lambda: admin_client.patch(PODS, ns, "db-0", {
        "metadata": {"labels": {"x": "y"}}, "spec": {"restartPolicy": "Never"}},
        subresource="resize"))
    assert labels.status == 422
    # through the main pod resource a resource change is forbidden, as on a real server
    main = status_of(lambda: admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "resources": {"limits": {"cpu": "100m"}}}]}},
        patch_type="strategic"))
    assert main.status == 422
    assert "Forbidden: pod updates may not change fields other than" in main.api_message
    # the image is one of the few mutable fields
    image = admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "sidecar", "image": "busybox:2"}]}}, patch_type="strategic")
    assert {c["name"]: c["image"] for c in image["spec"]["containers"]}["sidecar"] == "busybox:2"


def test_resize_keeps_the_qos_class_and_memory_rules_of_1_33(admin_client: KubeClient,
                                                              ns: str) -> None:
    admin_client.create(PODS, ns, pod("besteffort", cpu=None))
    qos = status_of(lambda: admin_client.patch(PODS, ns, "besteffort", {"spec": {"containers": [
        {"name": "postgres", "resources": {"limits": {"cpu": "200m"}}}]}},
        subresource="resize", patch_type="strategic"))
    assert qos.status == 422
    assert "Pod QOS Class may not change as a result of resizing" in qos.api_message
    admin_client.create(PODS, ns, pod("db-0"))
    memory = status_of(lambda: admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "resources": {"limits": {"memory": "200Mi"}}}]}},
        subresource="resize", patch_type="strategic"))
    assert memory.status == 422 and "memory limits cannot be decreased" in memory.api_message


def test_resize_may_not_remove_a_limit_or_request_as_a_real_server_answers(
        admin_client: KubeClient, ns: str) -> None:
    """A real 1.33/1.34 API server refused the revert of a throttle that had added a limit:
    ``spec.containers[0].resources.limits: Forbidden: resource limits cannot be removed``."""
    from pggit_chaos.kube import builders

    body = pod("db-0", cpu=None)
    body["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m",
                                                               "memory": "128Mi"}}
    admin_client.create(PODS, ns, body)
    original = body["spec"]["containers"][0]["resources"]
    admin_client.patch(PODS, ns, "db-0", builders.resize_patch("postgres", "50m", None, original),
                       subresource="resize", patch_type="strategic")  # adding a limit: allowed
    removed = status_of(lambda: admin_client.patch(
        PODS, ns, "db-0", builders.restore_resize_patch("postgres", original),
        subresource="resize", patch_type="strategic"))
    assert removed.status == 422
    assert removed.api_message == ('Pod "db-0" is invalid: spec.containers[0].resources.limits: '
                                   "Forbidden: resource limits cannot be removed")
    request = status_of(lambda: admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "resources": {"requests": {"memory": None}}}]}},
        subresource="resize", patch_type="strategic"))
    assert request.status == 422
    assert "spec.containers[0].resources.requests: Forbidden: resource requests cannot be " \
        "removed" in request.api_message
    # a limit that was there may change, in both directions
    admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "resources": {"limits": {"cpu": "300m"}}}]}},
        subresource="resize", patch_type="strategic")


def test_resize_unsupported_server_answers_404(ns: str, admin_client: KubeClient,
                                               emulator_server: EmulatorServer) -> None:
    emulator_server.emulator.resize_supported = False
    admin_client.create(PODS, ns, pod("db-0"))
    missing = status_of(lambda: admin_client.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "resources": {"limits": {"cpu": "200m"}}}]}},
        subresource="resize", patch_type="strategic"))
    assert missing.status == 404
    discovery = admin_client.request("GET", "/api/v1")
    assert "pods/resize" not in {r["name"] for r in discovery["resources"]}
    assert "pods/status" in {r["name"] for r in discovery["resources"]}


def _exec_pod(client: KubeClient, ns: str, name: str = "db-0",
              node: str = "test-node") -> None:
    body = pod(name)
    body["spec"]["nodeName"] = node
    client.create(PODS, ns, body)
    client.patch(PODS, ns, name, {"status": {"phase": "Running"}}, subresource="status")


def _local_backend(started: list[tuple[str, str, str, list[str]]]) -> Any:
    """An exec backend that runs the command here (the protocol is what is under test)."""
    import subprocess

    def run(namespace: str, pod_name: str, container: str, command: list[str],
            stdin: bool) -> subprocess.Popen[bytes]:
        if pod_name == "gone":
            raise LookupError("no such container here")
        started.append((namespace, pod_name, container, command))
        return subprocess.Popen(command, stdin=subprocess.PIPE if stdin else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return run


def _exec(client: KubeClient, ns: str, command: list[str], *, name: str = "db-0",
          container: str | None = "postgres", stdin: bool = False, **kwargs: Any) -> Any:
    from kubernetes import client as k8s
    from kubernetes.stream import stream

    api = k8s.CoreV1Api(k8s.ApiClient(client.configuration))
    options: dict[str, Any] = {"container": container} if container else {}
    return stream(api.connect_get_namespaced_pod_exec, name, ns, command=command,
                  stderr=True, stdout=True, stdin=stdin, tty=False, _preload_content=False,
                  **options, **kwargs)


def test_exec_speaks_the_remote_command_protocol(admin_client: KubeClient, ns: str,
                                                 emulator_server: EmulatorServer,
                                                 tmp_path: Path) -> None:
    emulator = emulator_server.emulator
    started: list[tuple[str, str, str, list[str]]] = []
    emulator.attach_node("test-node", _local_backend(started))
    _exec_pod(admin_client, ns)
    execer = client_as(emulator_server, "test-exec", tmp_path)

    ok = _exec(execer, ns, ["sh", "-c", "echo out; echo err >&2"])
    ok.run_forever(timeout=30)
    assert ok.subprotocol == "v5.channel.k8s.io"
    assert (ok.read_channel(1), ok.read_channel(2)) == ("out\n", "err\n")
    assert json.loads(ok.read_channel(3)) == {"metadata": {}, "status": "Success"}
    assert started == [(ns, "db-0", "postgres", ["sh", "-c", "echo out; echo err >&2"])]

    failed = _exec(execer, ns, ["sh", "-c", "exit 7"])
    failed.run_forever(timeout=30)
    assert failed.returncode == 7  # read from the NonZeroExitCode Status's ExitCode cause

    # stdin, closed with v5's close signal (channel 255) so that the command ends
    echo = _exec(execer, ns, ["cat"], stdin=True)
    echo.write_stdin("through stdin")
    echo.close_channel(0)
    echo.run_forever(timeout=30)
    assert echo.read_channel(1) == "through stdin" and echo.returncode == 0

    # a v4-only client, frame by frame: an empty "ready" message on each open channel, the
    # output, the Status on channel 3, then the close
    import websocket

    url = (emulator_server.url.replace("http://", "ws://") + PODS.path(ns, "db-0", "exec")
           + "?" + urlencode([("command", "sh"), ("command", "-c"),
                              ("command", "echo hi; exit 3"), ("container", "postgres"),
                              ("stdout", "true"), ("stderr", "true")]))
    raw = websocket.create_connection(url, timeout=30, subprotocols=["v4.channel.k8s.io"],
                                      header=[f"Authorization: Bearer "
                                              f"{emulator.token_for('test-exec')}"])
    frames = []
    while True:
        opcode, data = raw.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        frames.append(data)
    raw.close()
    assert raw.subprotocol == "v4.channel.k8s.io"
    assert frames[:4] == [b"\x01", b"\x02", b"\x03", b"\x01hi\n"]
    assert frames[4][:1] == b"\x03" and len(frames) == 5
    assert json.loads(frames[4][1:]) == {
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: error executing command "
                   "[sh -c echo hi; exit 3], exit code 3",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}

    # RBAC sees get on pods/exec (a GET upgrade, as kubectl and this client do), and create
    # (what 1.35+ checks as well for a websocket upgrade)
    assert emulator.rbac_rules("test-exec") == {("", "pods/exec", "get"),
                                                ("", "pods/exec", "create")}


@pytest.mark.parametrize("granted", ["create", "get"])
def test_a_forbidden_exec_says_403_and_the_reason(admin_client: KubeClient, ns: str,
                                                  emulator_server: EmulatorServer,
                                                  tmp_path: Path, granted: str) -> None:
    """An identity granted only one of get/create on pods/exec is refused, as a real server
    does, and the runner's exec error says the status and the server's reason (it said
    ``failed: (0)`` before: the client hides the handshake's 403 behind status 0)."""
    from pggit_chaos.errors import FaultError
    from pggit_chaos.kube.faults import exec_sh

    emulator = emulator_server.emulator
    emulator.attach_node("test-node", _local_backend([]))
    _exec_pod(admin_client, ns)
    emulator.grants["test-exec"] = {("", "pods", "get"), ("", "pods/exec", granted)}
    execer = client_as(emulator_server, "test-exec", tmp_path)
    missing = "create" if granted == "get" else "get"
    with pytest.raises(FaultError) as caught:
        exec_sh(execer, ns, "db-0", "postgres", "true", [], "plan through exec into db-0")
    assert str(caught.value) == (
        f'plan through exec into db-0 failed: 403 Forbidden: pods "db-0" is forbidden: User '
        f'"test-exec" cannot {missing} resource "pods/exec" in API group "" in the namespace '
        f'"{ns}"')
    emulator.grants["test-exec"].add(("", "pods/exec", missing))
    assert exec_sh(execer, ns, "db-0", "postgres", "echo ran", [], "exec") == "ran"
    # other calls outside the grants are refused the same way
    refused = status_of(lambda: execer.list(PODS, ns))
    assert refused.status == 403 and refused.api_message == (
        f'pods is forbidden: User "test-exec" cannot list resource "pods" in API group "" in '
        f'the namespace "{ns}"')


def test_an_exec_that_reaches_no_server_says_why_not_0(ns: str, tmp_path: Path) -> None:
    """No HTTP status at all: the client's reason, not its "(0)"."""
    from pggit_chaos.errors import FaultError
    from pggit_chaos.kube.faults import exec_sh

    kubeconfig = write_kubeconfig(tmp_path / "nowhere.yaml", "http://127.0.0.1:9", "t")
    client = KubeClient.from_environment(kubeconfig=str(kubeconfig))
    with pytest.raises(FaultError) as caught:
        exec_sh(client, ns, "db-0", "postgres", "true", [], "SIG0 through exec")
    message = str(caught.value)
    assert message.startswith("SIG0 through exec failed: ") and "(0)" not in message
    assert "refused" in message.lower(), message


def test_exec_refusals_are_those_of_the_api_server(admin_client: KubeClient, ns: str,
                                                   emulator_server: EmulatorServer) -> None:
    from kubernetes.client.exceptions import ApiException

    emulator = emulator_server.emulator
    _exec_pod(admin_client, ns)
    no_kubelet = status_of(lambda: admin_client.request(
        "POST", PODS.path(ns, "db-0", "exec"), query={"command": "true", "stdout": "true",
                                                      "container": "postgres"}))
    assert no_kubelet.status == 500 and "error dialing backend" in str(no_kubelet)
    emulator.attach_node("test-node", _local_backend([]))
    plain = status_of(lambda: admin_client.request(
        "POST", PODS.path(ns, "db-0", "exec"), query={"command": "true", "stdout": "true",
                                                      "container": "postgres"}))
    assert plain.status == 400 and "Upgrade request required" in str(plain)
    refusals: list[tuple[dict[str, Any], str]] = [
            ({"container": None}, "a container name must be specified for pod db-0, choose "
                                  "one of: [postgres sidecar]"),
            ({"container": "nope"}, "container nope is not valid for pod db-0"),
            ({"name": "missing"}, "Handshake status 404 Not Found")]
    for kwargs, wanted in refusals:
        with pytest.raises(ApiException) as caught:
            _exec(admin_client, ns, ["true"], **kwargs)
        assert wanted in str(caught.value), caught.value
    # a command that cannot start: upgraded, then a Failure on the status channel
    broken = _exec(admin_client, ns, ["/nonexistent/command"])
    broken.run_forever(timeout=30)
    status = json.loads(broken.read_channel(3))
    assert status["status"] == "Failure" and status["reason"] == "InternalError"
    assert "/nonexistent/command" in status["message"]


def test_job_validation_and_defaults(admin_client: KubeClient, ns: str) -> None:
    invalid = status_of(lambda: admin_client.create(JOBS, ns, job("bad", restart="Always")))
    assert invalid.status == 422 and "restartPolicy" in invalid.api_message
    created = admin_client.create(JOBS, ns, job("runner"))
    uid = created["metadata"]["uid"]
    assert created["spec"]["backoffLimit"] == 6
    assert created["spec"]["selector"]["matchLabels"] == {
        "batch.kubernetes.io/controller-uid": uid}
    assert created["spec"]["template"]["metadata"]["labels"]["job-name"] == "runner"
    done = admin_client.patch(JOBS, ns, "runner", {"status": {"succeeded": 1}},
                              subresource="status")
    assert done["status"] == {"succeeded": 1} and done["metadata"]["generation"] == 1


# -- the other resources, discovery, version ------------------------------------------------
def test_served_resources(admin_client: KubeClient, ns: str) -> None:
    admin_client.create(EVENTS, ns, {
        "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "pod-kill."},
        "involvedObject": {"kind": "PgGitChaosExperiment", "name": "pod-kill", "namespace": ns},
        "reason": "FaultInjected", "message": "killed db-0", "type": "Normal"})
    admin_client.create(EVENTS_V1, ns, {
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "regarding": {"kind": "PgGitChaosExperiment", "name": "pod-kill"},
        "reason": "Recovered", "note": "healthy", "type": "Normal", "action": "Recover",
        "eventTime": "2025-01-01T00:00:00.000000Z"})
    assert [e["reason"] for e in admin_client.list(
        EVENTS, ns, field_selector="involvedObject.name=pod-kill")] == ["FaultInjected"]
    assert [e["reason"] for e in admin_client.list(EVENTS_V1, ns)] == ["Recovered"]
    admin_client.create(LEASES, ns, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": "lock"}, "spec": {}})
    admin_client.create(SECRETS, ns, {"apiVersion": "v1", "kind": "Secret",
                                      "metadata": {"name": "pggit-db"},
                                      "stringData": {"dsn": "postgresql://x"}})
    assert admin_client.get(LEASES, ns, "lock")["kind"] == "Lease"
    wrong_kind = status_of(lambda: admin_client.create(CONFIG_MAPS, ns, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}))
    assert wrong_kind.status == 400
    version = admin_client.request("GET", "/version")
    assert version["gitVersion"].startswith("v1.33.") and version["minor"] == "33"
    group = admin_client.request("GET", "/apis/chaos.pggit.io/v1alpha1")
    by_name = {r["name"]: r for r in group["resources"]}
    assert by_name["pggitchaosexperiments"]["namespaced"] is True
    assert "pggitchaosexperiments/status" in by_name
    assert "patch" in by_name["pggitchaosexperiments"]["verbs"]
    core = {r["name"] for r in admin_client.request("GET", "/api/v1")["resources"]}
    assert {"namespaces", "pods", "pods/resize", "secrets", "configmaps", "events"} <= core
    groups = {g["name"] for g in admin_client.request("GET", "/apis")["groups"]}
    assert {"batch", "networking.k8s.io", "coordination.k8s.io", "events.k8s.io",
            "chaos.pggit.io"} <= groups


def test_apply_manifest_creates_then_updates(admin_client: KubeClient, ns: str) -> None:
    first = apply_manifest(admin_client, experiment(ns=ns))
    changed = experiment(ns=ns)
    changed["spec"]["duration"] = "30s"
    second = apply_manifest(admin_client, changed)
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert second["spec"]["duration"] == "30s" and second["metadata"]["generation"] == 2
    # server-side apply (PATCH application/apply-patch+yaml) creates a missing object
    applied = admin_client.request(
        "PATCH", CONFIG_MAPS.path(ns, "settings"), {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
            "data": {"a": "1"}}, query={"fieldManager": "test"},
        content_type="application/apply-patch+yaml")
    assert applied["data"] == {"a": "1"} and applied["metadata"]["uid"]
    relabelled = namespace(admin_client, ns, {"chaos.pggit.io/enabled": "false"})
    assert relabelled["metadata"]["labels"]["chaos.pggit.io/enabled"] == "false"


def test_experiment_admission_through_kube_schema(admin_client: KubeClient, ns: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  emulator_server: EmulatorServer) -> None:
    class Invalid(Exception):
        def __init__(self, causes: list[tuple[str, str]]) -> None:
            super().__init__("invalid")
            self.causes = causes

    def admit(obj: dict[str, Any]) -> dict[str, Any]:
        if obj["spec"]["fault"]["type"] == "nonsense":
            raise Invalid([("spec.fault.type", 'Unsupported value: "nonsense"')])
        obj["spec"].pop("unknownField", None)  # pruning
        obj["spec"].setdefault("dryRun", False)  # defaulting
        return obj

    fake = types.ModuleType("kube_schema")
    fake.admit = admit  # type: ignore[attr-defined]
    fake.Invalid = Invalid  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kube_schema", fake)
    body = experiment(ns=ns)
    body["spec"]["unknownField"] = 1
    del body["spec"]["dryRun"]
    created = admin_client.create(EXPERIMENTS, ns, body)
    assert "unknownField" not in created["spec"] and created["spec"]["dryRun"] is False
    invalid = status_of(lambda: admin_client.patch(
        EXPERIMENTS, ns, "pod-kill", {"spec": {"fault": {"type": "nonsense"}}}))
    assert invalid.status == 422 and invalid.reason == "Invalid"
    assert 'PgGitChaosExperiment.chaos.pggit.io "pod-kill" is invalid: spec.fault.type' in (
        invalid.api_message)
    raw = urllib.request.Request(
        f"{emulator_server.url}{EXPERIMENTS.path(ns, 'pod-kill')}", method="PATCH",
        data=json.dumps({"spec": {"fault": {"type": "nonsense"}}}).encode(),
        headers={"Content-Type": "application/merge-patch+json",
                 "Authorization": f"Bearer {emulator_server.emulator.token_for('admin')}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(raw, timeout=10)
    details = json.loads(caught.value.read())["details"]
    assert details["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.fault.type",
                                  "message": 'Unsupported value: "nonsense"'}]


# -- recording ------------------------------------------------------------------------------
def client_as(server: EmulatorServer, identity: str, folder: Path) -> KubeClient:
    """A client for a test-only identity: what the tests themselves do stays out of the
    operator's and the runner's recorded calls (the chart's RBAC)."""
    return KubeClient.from_environment(kubeconfig=str(write_kubeconfig(
        folder / f"{identity}.yaml", server.url, server.emulator.token_for(identity))))


def test_requests_are_recorded_per_identity(ns: str, emulator_server: EmulatorServer,
                                            tmp_path: Path) -> None:
    emulator = emulator_server.emulator
    emulator.clear_calls()
    runner = client_as(emulator_server, "test-runner", tmp_path)
    operator = client_as(emulator_server, "test-operator", tmp_path)
    operator.create(EXPERIMENTS, ns, experiment(ns=ns))
    runner.patch(EXPERIMENTS, ns, "pod-kill", {"status": {"phase": "Pending"}},
                 subresource="status")
    runner.list(PODS, ns, label_selector="app=pg")
    runner.create(PODS, ns, pod("db-0"))
    runner.patch(PODS, ns, "db-0", {"spec": {"containers": [
        {"name": "postgres", "resources": {"limits": {"cpu": "200m"}}}]}},
        subresource="resize", patch_type="strategic")
    runner.delete(PODS, ns, "db-0", grace_period_seconds=0)
    assert emulator.rbac_rules("test-runner") == {
        ("chaos.pggit.io", "pggitchaosexperiments/status", "patch"),
        ("", "pods", "list"), ("", "pods", "create"), ("", "pods/resize", "patch"),
        ("", "pods", "delete")}
    assert emulator.rbac_rules("test-operator") == {
        ("chaos.pggit.io", "pggitchaosexperiments", "create")}
    first = emulator.calls("test-operator")[0]
    assert (first.verb, first.namespace, first.name) == ("create", ns, None)
    assert emulator.calls("test-runner")[-1].name == "db-0"
    assert not emulator.rbac_rules("operator") and not emulator.rbac_rules("runner")
    # an unknown token is refused
    bad = KubeClient.from_environment(kubeconfig=str(write_kubeconfig(
        tmp_path / "bad.yaml", emulator_server.url, "not-a-token")))
    assert status_of(lambda: bad.list(PODS, ns)).status == 401


def test_owner_references_that_block_deletion_need_update_on_the_owners_finalizers(
        ns: str, emulator_server: EmulatorServer, admin_client: KubeClient,
        tmp_path: Path) -> None:
    """As the OwnerReferencesPermissionEnforcement admission plugin checks: only a new
    ``blockOwnerDeletion: true`` reference counts, as ``update`` on ``<owner>/finalizers``."""
    emulator = emulator_server.emulator
    owner = admin_client.create(EXPERIMENTS, ns, experiment(ns=ns))
    writer = client_as(emulator_server, "test-writer", tmp_path)
    plain = {**owner_ref(owner), "blockOwnerDeletion": False}
    body = {**job("plain"), "metadata": {"name": "plain", "ownerReferences": [plain]}}
    writer.create(JOBS, ns, body)
    assert ("chaos.pggit.io", "pggitchaosexperiments/finalizers", "update") not in (
        emulator.rbac_rules("test-writer"))
    body = {**job("blocking"), "metadata": {"name": "blocking",
                                            "ownerReferences": [owner_ref(owner)]}}
    writer.create(JOBS, ns, body)
    check = [call for call in emulator.calls("test-writer") if call.subresource == "finalizers"]
    assert [(c.verb, c.api_group, c.resource, c.namespace, c.name) for c in check] == [
        ("update", "chaos.pggit.io", "pggitchaosexperiments", ns, "pod-kill")]
    # a later write that keeps the same reference is not checked again; setting it is
    writer.patch(JOBS, ns, "blocking", {"metadata": {"labels": {"a": "b"}}})
    writer.patch(JOBS, ns, "plain", {"metadata": {"ownerReferences": [owner_ref(owner)]}})
    check = [call for call in emulator.calls("test-writer") if call.subresource == "finalizers"]
    assert [c.name for c in check] == ["pod-kill", "pod-kill"]


def test_server_runs_in_its_own_thread_for_other_processes(
        emulator_server: EmulatorServer, tmp_path: Path) -> None:
    import subprocess

    kubeconfig = write_kubeconfig(tmp_path / "process.yaml", emulator_server.url,
                                  emulator_server.emulator.token_for("test-process"))
    script = ("from pggit_chaos.kube.client import KubeClient, NAMESPACES; import sys; "
              "c = KubeClient.from_environment(kubeconfig=sys.argv[1]); "
              "print(len(c.list(NAMESPACES)))")
    out = subprocess.run([sys.executable, "-c", script, str(kubeconfig)],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "4"
    assert emulator_server.emulator.rbac_rules("test-process") == {("", "namespaces", "list")}


def test_server_restarts_quickly() -> None:
    started = time.monotonic()
    for _ in range(3):
        with EmulatorServer(KubeEmulator()) as server:
            assert server.url.startswith("http://127.0.0.1:")
    assert time.monotonic() - started < 3


# -- the real kopf operator -------------------------------------------------------------------
@pytest.fixture(params=[True, False], ids=["scanning-disabled", "scanning-enabled"])
def kopf_operator(emulator_server: EmulatorServer, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch,
                  request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """kopf running in a thread against the emulator as "test-kopf": create/delete handlers
    of the test's own (not the operator's: its calls are no part of the operator's RBAC).

    With scanning enabled too: the emulator serves namespaces and CRDs, which kopf's
    resource scanning watches.
    """
    scanning_disabled: bool = request.param
    import kopf

    from pggit_chaos.kube import names

    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(
        tmp_path / "kopf.yaml", emulator_server.url,
        emulator_server.emulator.token_for("test-kopf"))))
    registry = kopf.OperatorRegistry()
    seen: dict[str, Any] = {"created": [], "deleted": []}
    group, version, plural = names.EXPERIMENTS

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.scanning.disabled = scanning_disabled
        settings.posting.level = logging.WARNING
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.finalizer = names.FINALIZER
        settings.watching.reconnect_backoff = 0.1

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(group, version, plural, registry=registry)
    def created(name: str, patch: kopf.Patch, **_: Any) -> None:
        seen["created"].append(name)
        patch.status["phase"] = "Pending"
        patch.status["message"] = "admitted by kopf"

    @kopf.on.delete(group, version, plural, registry=registry)
    def deleted(name: str, **_: Any) -> None:
        seen["deleted"].append(name)

    stop, ready = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(kopf.operator(registry=registry, clusterwide=True, standalone=True,
                                  stop_flag=stop, ready_flag=ready))

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    assert ready.wait(20), "kopf did not start"
    try:
        yield seen
    finally:
        stop.set()
        thread.join(20)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_kopf_operator_create_status_delete_finalizer(
        admin_client: KubeClient, ns: str, kopf_operator: dict[str, Any],
        emulator_server: EmulatorServer) -> None:
    from pggit_chaos.kube import names

    admin_client.create(EXPERIMENTS, ns, experiment(ns=ns))
    handled = wait_for(lambda: (admin_client.get(EXPERIMENTS, ns, "pod-kill").get("status")
                                or {}).get("message") == "admitted by kopf")
    assert handled and kopf_operator["created"] == ["pod-kill"]
    current = admin_client.get(EXPERIMENTS, ns, "pod-kill")
    assert current["status"]["phase"] == "Pending"
    assert current["metadata"]["finalizers"] == [names.FINALIZER]
    admin_client.delete(EXPERIMENTS, ns, "pod-kill")
    wait_for(lambda: admin_client.find(EXPERIMENTS, ns, "pod-kill") is None)
    assert kopf_operator["deleted"] == ["pod-kill"]
    rules = emulator_server.emulator.rbac_rules("test-kopf")
    assert ("chaos.pggit.io", "pggitchaosexperiments", "watch") in rules
    assert ("chaos.pggit.io", "pggitchaosexperiments", "patch") in rules
    assert ("chaos.pggit.io", "pggitchaosexperiments/status", "patch") in rules
