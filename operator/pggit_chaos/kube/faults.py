"""The Kubernetes substrate's own faults: pod-kill, in-place resize, NetworkPolicy, pod-pause.

Built by :class:`pggit_chaos.kube.substrate.KubeSubstrate` for the runner Job; the operator
uses :func:`revert_intent` to undo a fault from the intent in an experiment's status alone
(runner killed, experiment deleted, intent expired). Every fault writes its undo data in plain
JSON before it acts; every revert is idempotent (404 = already undone). SQL-level faults are the
shared ones of :mod:`pggit_chaos.faults.sql`, built with the database DSN.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from pggit_chaos.errors import FaultError, InsufficientPrivileges
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.faults.sql import ConnectionKill
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import NETWORK_POLICIES, PODS, ApiError, KubeClient

if TYPE_CHECKING:
    from pggit_chaos.spec import Experiment

__all__ = [
    "NetworkPartition",
    "PodKill",
    "PodPause",
    "Resize",
    "exec_api",
    "exec_failure",
    "exec_signal",
    "postgres_container",
    "resize_refusal",
    "revert_intent",
]

#: Container names taken for the database server, in order of preference.
SERVER_CONTAINERS = ("postgres", "postgresql", "database", "db")


def postgres_container(pod: Mapping[str, Any]) -> str:
    """The name of the pod's PostgreSQL container (``postgres`` by name, else the first)."""
    containers = [str(c.get("name", "")) for c in pod.get("spec", {}).get("containers", [])]
    if not containers:
        raise FaultError(f"pod {pod.get('metadata', {}).get('name')} has no containers")
    for name in SERVER_CONTAINERS:
        if name in containers:
            return name
    return containers[0]


def _uid(pod: Mapping[str, Any] | None) -> str | None:
    return None if pod is None else str(pod.get("metadata", {}).get("uid", "")) or None


class PodKill:
    """Delete the chosen pods with ``gracePeriodSeconds``; their controller brings them back."""

    type = "pod-kill"
    recovery_from_injection = True

    def __init__(self, client: KubeClient, namespace: str, pods: Sequence[str],
                 grace_period_seconds: int = 0) -> None:
        self.client = client
        self.namespace = namespace
        self.pods = list(pods)
        self.grace = grace_period_seconds
        self._intent = FaultIntent(
            type=self.type, target=", ".join(f"pod {namespace}/{p}" for p in self.pods),
            undo={"kind": names.UNDO_POD_KILL, "namespace": namespace, "pods": self.pods},
            description=f"delete {len(self.pods)} pod(s) with grace {grace_period_seconds}s")
        self._uids_before: dict[str, str | None] = {}
        self._deleted: list[str] = []

    def check(self) -> None:
        return None

    def intent(self) -> FaultIntent:
        return self._intent

    def inject(self) -> None:
        for pod in self.pods:
            self._uids_before[pod] = _uid(self.client.find(PODS, self.namespace, pod))
            if self.client.delete(PODS, self.namespace, pod,
                                  grace_period_seconds=self.grace) is not None:
                self._deleted.append(pod)

    def revert(self) -> None:
        """Nothing to undo: the pods' controller recreates them."""

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        replaced = []
        for pod in self.pods:
            now = _uid(self.client.find(PODS, self.namespace, pod))
            if now is not None and now != self._uids_before.get(pod):
                replaced.append(pod)
        bit = bool(self._deleted) and len(replaced) == len(self.pods)
        summary = (f"pod-kill: {len(self._deleted)} pod(s) deleted, {len(replaced)} replaced by "
                   f"their controller; workload: {window.describe()}")
        return FaultEvidence(bit=bit, summary=summary, figures={
            "pods_deleted": len(self._deleted), "pods_replaced": len(replaced)})


#: The annotation of a static pod's mirror (the API server does not resize those).
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


def resize_refusal(pod: Mapping[str, Any], container: str, fault_type: str,
                   cpu_limit: str | None, memory_limit: str | None) -> str | None:
    """Why the API server would refuse this fault's in-place resize of ``pod`` or the resize
    that reverts it (Kubernetes' ``ValidatePodResize``), with what to do; None: it would not.

    The revert puts the recorded resources back, so it must never remove what the fault
    added: a limit the container did not have ("resource limits cannot be removed") — the
    throttle would stay for good. And neither resize may change the pod's QoS class.
    """
    meta = pod.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name", "")
    where = f"pod {namespace}/{name}" if namespace else f"pod {name}"
    spec = pod.get("spec") or {}
    pod_level = spec.get("resources") or {}
    if pod_level.get("requests") or pod_level.get("limits"):
        return (f"{where} sets pod-level resources (spec.resources), and Kubernetes does not "
                "resize such pods in place: target a pod whose containers carry the resources")
    if MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
        return f"{where} is a static pod, and Kubernetes does not resize static pods in place"
    if str((spec.get("os") or {}).get("name", "")).lower() == "windows":
        return f"{where} is a Windows pod, and Kubernetes does not resize Windows pods in place"
    found = next((c for c in spec.get("containers") or [] if c.get("name") == container), None)
    if found is None:
        return f"{where} has no container {container}"
    original = dict(found.get("resources") or {})
    limits = original.get("limits") or {}
    for resource, value in (("cpu", cpu_limit), ("memory", memory_limit)):
        if value and limits.get(resource) is None:
            return (f"container {container} of {where} has no {resource} limit: {fault_type} "
                    f"would add one, and Kubernetes refuses to remove a limit by resize "
                    f"(\"resource limits cannot be removed\"), so the fault could never be "
                    f"reverted; give container {container} a {resource} limit "
                    f"(resources.limits.{resource}) to run {fault_type} on it")
    patch = builders.resize_patch(container, cpu_limit, memory_limit, original)
    before = builders.qos_class(spec)
    after = builders.qos_class(spec, {container: builders.resized_resources(original, patch)})
    if before != after:
        wanted = ", ".join(f"{kind} limit {value}" for kind, value in
                           (("cpu", cpu_limit), ("memory", memory_limit)) if value)
        return (f"resizing container {container} of {where} to {wanted} would change the pod's "
                f"QoS class from {before} to {after}, which Kubernetes refuses (\"Pod QOS Class "
                "may not change as a result of resizing\"); give the container requests below "
                "its limits (Burstable) or equal to them for cpu and memory (Guaranteed)")
    return None


class Resize:
    """Lower the pods' CPU or memory limit in place (``pods/{name}/resize``, Kubernetes ≥ 1.33)."""

    recovery_from_injection = False

    def __init__(self, client: KubeClient, namespace: str, pods: Sequence[Mapping[str, Any]],
                 fault_type: str, cpu_limit: str | None = None,
                 memory_limit: str | None = None) -> None:
        self.type = fault_type
        self.client = client
        self.namespace = namespace
        self.cpu_limit = cpu_limit
        self.memory_limit = memory_limit
        self.originals: dict[str, dict[str, Any]] = {}
        self.containers: dict[str, str] = {}
        #: pod -> resource -> restartPolicy of the container's resizePolicy.
        self.policies: dict[str, dict[str, str]] = {}
        for pod in pods:
            name = str(pod["metadata"]["name"])
            container = postgres_container(pod)
            self.containers[name] = container
            spec = next(c for c in pod["spec"]["containers"] if c.get("name") == container)
            self.originals[name] = dict(spec.get("resources") or {})
            self.policies[name] = {str(p.get("resourceName")): str(p.get("restartPolicy"))
                                   for p in spec.get("resizePolicy") or []}
        wanted = ", ".join(f"{kind} limit {value}" for kind, value in
                           (("cpu", cpu_limit), ("memory", memory_limit)) if value)
        self._intent = FaultIntent(
            type=fault_type, target=", ".join(f"pod {namespace}/{p}" for p in self.originals),
            undo={"kind": names.UNDO_RESIZE, "namespace": namespace,
                  "containers": self.containers, "originals": self.originals},
            description=f"resize in place to {wanted}")
        self._applied: list[str] = []
        self._not_actuated: list[str] = []
        self._pods = {str(pod["metadata"]["name"]): pod for pod in pods}

    def refusals(self) -> list[str]:
        """Why the API server would refuse the resize or its revert, for each pod it would."""
        found = []
        for name, container in self.containers.items():
            reason = resize_refusal(self._pods[name], container, self.type, self.cpu_limit,
                                    self.memory_limit)
            if reason is not None:
                found.append(reason)
        return found

    def check(self) -> None:
        """One clear error before anything is injected when the cluster lacks in-place resize,
        or when the server would refuse the resize or the one that reverts it (a limit the
        container lacks could never be removed again: :func:`resize_refusal`)."""
        refused = self.refusals()
        if refused:
            raise FaultError(f"{self.type}: {refused[0]}; nothing was injected")
        for pod in self.originals:
            try:
                self.client.get(PODS, self.namespace, pod, subresource="resize")
            except ApiError as exc:
                if exc.status in (404, 405):
                    raise FaultError(
                        f"{self.type}: this cluster has no pods/resize subresource (in-place "
                        "resize needs Kubernetes >= 1.33); nothing was injected") from None
                if exc.status == 403:
                    raise InsufficientPrivileges(
                        f"{self.type}: the runner may not use pods/resize: {exc.api_message}"
                    ) from None
                raise
            break
        if self.memory_limit is not None:
            self._check_memory_decrease()

    def _check_memory_decrease(self) -> None:
        """Kubernetes 1.33 refuses to lower a memory limit in place unless the container's
        resizePolicy for memory is RestartContainer (1.34 allows it): say so before injecting."""
        try:
            version = self.client.request("GET", "/version") or {}
            minor = int("".join(ch for ch in str(version.get("minor", "0")) if ch.isdigit()))
        except (ApiError, ValueError):
            return
        if minor >= 34:
            return
        wanted = builders.parse_quantity(self.memory_limit)
        for pod, container in self.containers.items():
            limit = (self.originals[pod].get("limits") or {}).get("memory")
            if limit is not None and builders.parse_quantity(limit) <= wanted:
                continue
            policy = self.policies.get(pod, {}).get("memory", "NotRequired")
            if policy != "RestartContainer":
                raise FaultError(
                    f"memory-pressure: Kubernetes 1.{minor} refuses to lower (or add) the memory "
                    f"limit of {self.namespace}/{pod} container {container} in place unless its "
                    "resizePolicy for memory is RestartContainer (1.34 allows it); nothing was "
                    "injected")

    def intent(self) -> FaultIntent:
        return self._intent

    def inject(self) -> None:
        for pod, container in self.containers.items():
            body = builders.resize_patch(container, self.cpu_limit, self.memory_limit,
                                         self.originals[pod])
            self.client.patch(PODS, self.namespace, pod, body, subresource="resize",
                              patch_type="strategic")
            self._applied.append(pod)
        wanted = {kind: value for kind, value in (("cpu", self.cpu_limit),
                                                  ("memory", self.memory_limit)) if value}
        self._not_actuated = wait_resized(self.client, self.namespace, self.containers,
                                          {pod: wanted for pod in self.containers})

    def revert(self) -> None:
        _restore_resources(self.client, self.namespace, self.containers, self.originals)
        late = wait_resized(self.client, self.namespace, self.containers,
                            {pod: {kind: limit for kind, limit in
                                   (original.get("limits") or {}).items()
                                   if kind in ("cpu", "memory")}
                             for pod, original in self.originals.items()})
        if late:
            raise FaultError(f"{self.type}: the restoring resize was accepted but the kubelet "
                             f"has not applied it: {'; '.join(late)}")

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        applied = len(self._applied)
        bit = applied == len(self.containers) and applied > 0 and not self._not_actuated
        late = f" (not applied by the kubelet: {'; '.join(self._not_actuated)})" \
            if self._not_actuated else ""
        return FaultEvidence(
            bit=bit,
            summary=f"{self.type}: resized {applied} of {len(self.containers)} pod(s) in place"
                    f"{late}; workload: {window.describe()}",
            figures={"pods_resized": applied})


#: How long a resize may take to be applied by the kubelet (a RestartContainer policy
#: restarts the container: the server's start and readiness probe come first).
RESIZE_ACTUATION_TIMEOUT = 90.0


def _resize_state(pod: Mapping[str, Any], container: str,
                  wanted: Mapping[str, Any]) -> str | None:
    """Why the pod does not yet run ``container`` with the ``wanted`` limits, or None."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("PodResizePending", "PodResizeInProgress") \
                and condition.get("status") == "True":
            return f"{condition['type']}: {condition.get('message') or condition.get('reason')}"
    found = next((c for c in status.get("containerStatuses") or []
                  if c.get("name") == container), None)
    if found is None:
        return "no status for the container"
    limits = (found.get("resources") or {}).get("limits")
    if limits is not None:  # kubelets >= 1.33 report what they applied
        for kind, value in wanted.items():
            if kind not in limits or builders.parse_quantity(limits[kind]) \
                    != builders.parse_quantity(value):
                return f"{kind} limit {limits.get(kind)} applied, {value} wanted"
    if not found.get("ready"):
        return "the container is not ready (restarted by the resize?)"
    return None


def wait_resized(client: KubeClient, namespace: str, containers: Mapping[str, str],
                 wanted: Mapping[str, Mapping[str, Any]],
                 timeout: float = RESIZE_ACTUATION_TIMEOUT) -> list[str]:
    """Wait until each pod runs its container with the wanted limits (the kubelet applied the
    resize: no PodResizePending/InProgress, the applied limits in containerStatuses, the
    container ready again after a RestartContainer resize). Returns what was still missing."""
    deadline = time.monotonic() + timeout
    while True:
        missing = []
        for pod, container in containers.items():
            try:
                body = client.get(PODS, namespace, pod)
            except ApiError as exc:
                if exc.not_found:  # gone: nothing of the resize is left on it
                    continue
                raise
            why = _resize_state(body, container, wanted.get(pod) or {})
            if why is not None:
                missing.append(f"{namespace}/{pod}: {why}")
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.5)


def _restore_resources(client: KubeClient, namespace: str, containers: Mapping[str, str],
                       originals: Mapping[str, Any]) -> list[str]:
    restored = []
    for pod, container in containers.items():
        body = builders.restore_resize_patch(container, originals.get(pod) or {})
        try:
            client.patch(PODS, namespace, pod, body, subresource="resize", patch_type="strategic")
            restored.append(pod)
        except ApiError as exc:
            if not exc.not_found:  # a pod that is gone has nothing left to restore
                raise
    return restored


#: How long a network-partition waits for the CNI to refuse a new connection to the target.
ENFORCEMENT_TIMEOUT = 15.0


class NetworkPartition:
    """Label the chosen pods and isolate them with a deny-all NetworkPolicy.

    NetworkPolicy's effect on connections that already exist is implementation defined
    (Kubernetes' NetworkPolicy docs): Calico, kube-router and kube-network-policies keep letting
    established flows through, so a workload on a connection pool would never notice the
    partition. With the database DSN, the fault therefore opens one connection before the
    policy, waits until the CNI refuses a *new* connection to the target (the partition is
    enforced), and then ends the target's established client sessions over that connection
    (``pg_terminate_backend``, as connection-kill does; the same role may end its own sessions)
    so that every client has to reconnect through the partition. Where the CNI already cut the
    established flows too, that last step times out harmlessly. Without enforcement nothing is
    cut: the experiment stays honestly Inconclusive.
    """

    type = "network-partition"
    recovery_from_injection = False

    def __init__(self, client: KubeClient, experiment: Experiment, uid: str,
                 pods: Sequence[str], direction: str, expires_at: str,
                 dsn: str | None = None, enforcement_timeout: float = ENFORCEMENT_TIMEOUT) -> None:
        self.client = client
        self.experiment = experiment.name
        self._experiment = experiment
        self.uid = uid
        namespace = self.namespace = experiment.namespace
        self.pods = list(pods)
        self.direction = direction
        self.expires_at = expires_at
        self.dsn = dsn
        self.enforcement_timeout = enforcement_timeout
        self.policy = names.network_policy_name(experiment.name)
        self._intent = FaultIntent(
            type=self.type, target=", ".join(f"pod {namespace}/{p}" for p in self.pods),
            undo={"kind": names.UNDO_NETWORK_POLICY, "namespace": namespace,
                  "policy": self.policy, "pods": self.pods, "label": names.PARTITION_LABEL},
            description=f"NetworkPolicy {self.policy} denies {direction} traffic")
        self._created = False
        #: Seconds from the policy's creation until a new connection was refused (None: never).
        self.enforced_after: float | None = None
        #: Established client sessions ended once the partition held (None: not tried/cut).
        self.established_cut: int | None = None
        self.notes: list[str] = []

    def check(self) -> None:
        return None

    def intent(self) -> FaultIntent:
        return self._intent

    def _connect(self, application: str, timeout: int) -> psycopg.Connection[Any] | None:
        assert self.dsn is not None
        try:
            # tcp_user_timeout: a write the partition swallows fails in seconds, not minutes.
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=timeout,
                                   application_name=application, tcp_user_timeout=3000)
        except psycopg.Error:
            return None

    def inject(self) -> None:
        killer = ConnectionKill(self.dsn) if self.dsn else None
        before = self._connect(killer.application, 10) if killer else None
        try:
            for pod in self.pods:
                self.client.patch(PODS, self.namespace, pod,
                                  builders.partition_label_patch(self.experiment))
            body = builders.network_policy(self._experiment, self.uid, self.expires_at,
                                           self.direction)
            try:
                self.client.create(NETWORK_POLICIES, self.namespace, body)
            except ApiError as exc:
                if not exc.conflict:  # 409: left by an earlier run of this experiment
                    raise
            self._created = True
            if killer is not None:
                self._cut_established(killer, before)
        finally:
            if before is not None:
                before.close()

    def _cut_established(self, killer: ConnectionKill,
                         before: psycopg.Connection[Any] | None) -> None:
        start = time.monotonic()
        while time.monotonic() - start < self.enforcement_timeout:
            probe = self._connect(f"{killer.application}-probe", 2)
            if probe is None:
                self.enforced_after = round(time.monotonic() - start, 3)
                break
            probe.close()
            time.sleep(0.3)
        if self.enforced_after is None:
            self.notes.append(f"new connections were still accepted "
                              f"{self.enforcement_timeout:g}s after the policy: does the "
                              f"cluster's CNI enforce NetworkPolicy?")
            return
        if before is None:
            self.notes.append("no connection was open before the policy: established "
                              "sessions were left alone")
            return
        try:
            before.execute("SET statement_timeout = '5s'")
            self.established_cut = len(killer.kill_once(before))
        except psycopg.errors.InsufficientPrivilege as exc:
            self.notes.append(f"established sessions of other roles were left alone "
                              f"({str(exc).strip()}: connection-kill's privileges end them)")
        except psycopg.Error:
            # The CNI cut the established flows as well: nothing is left to end.
            self.notes.append("the CNI cut established connections itself")

    def revert(self) -> None:
        _remove_partition(self.client, self.namespace, self.policy, self.pods)

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        bit = self._created and (window.stalled() or window.indeterminate > 0
                                 or window.failed > 0)
        enforcement = ""
        if self.enforced_after is not None:
            enforcement = f"; new connections refused {self.enforced_after:g}s after it"
            if self.established_cut is not None:
                enforcement += f", {self.established_cut} established session(s) ended"
        notes = "".join(f"; {note}" for note in self.notes)
        figures: dict[str, Figure] = {"policy_created": int(self._created),
                                      "indeterminate": window.indeterminate}
        if self.enforced_after is not None:
            figures["enforced_after_s"] = self.enforced_after
        if self.established_cut is not None:
            figures["established_cut"] = self.established_cut
        return FaultEvidence(
            bit=bit,
            summary=f"network-partition: policy {self.policy} "
                    f"{'created' if self._created else 'not created'}{enforcement}{notes}; "
                    f"workload: {window.describe()}",
            figures=figures)


def _remove_partition(client: KubeClient, namespace: str, policy: str,
                      pods: Sequence[str]) -> None:
    client.delete(NETWORK_POLICIES, namespace, policy)
    for pod in pods:
        try:
            client.patch(PODS, namespace, pod, builders.unpartition_label_patch())
        except ApiError as exc:
            if not exc.not_found:
                raise


class PodPause:
    """SIGSTOP the server processes through ``pods/exec``, SIGCONT on revert."""

    type = "pod-pause"
    recovery_from_injection = False

    def __init__(self, client: KubeClient, namespace: str, pods: Sequence[Mapping[str, Any]],
                 allow_exec: bool) -> None:
        self.client = client
        self.namespace = namespace
        self.allow_exec = allow_exec
        self.containers = {str(p["metadata"]["name"]): postgres_container(p) for p in pods}
        self._intent = FaultIntent(
            type=self.type, target=", ".join(f"pod {namespace}/{p}" for p in self.containers),
            undo={"kind": names.UNDO_POD_PAUSE, "namespace": namespace,
                  "containers": self.containers},
            description="SIGSTOP the PostgreSQL processes through pods/exec")
        self._paused: list[str] = []
        self._api: Any = None
        #: pod -> server processes the revert found still stopped.
        self._held: dict[str, int] = {}

    def check(self) -> None:
        """Refused before injection unless exec is allowed, works, and finds the server's
        processes in each target container (the same script with signal 0: a dry run, which
        also readies the exec client so that the injection itself is quick)."""
        if not self.allow_exec:
            raise InsufficientPrivileges(
                "pod-pause needs pods/exec, which the operator's settings do not allow: "
                f"{names.EXEC_SWITCH}")
        self._api = exec_api(self.client)
        for pod, container in self.containers.items():
            try:
                exec_signal(self.client, self.namespace, pod, container, "0", self._api)
            except FaultError as exc:
                raise FaultError(f"{exc}; nothing was injected") from None

    def intent(self) -> FaultIntent:
        return self._intent

    def inject(self) -> None:
        for pod, container in self.containers.items():
            exec_signal(self.client, self.namespace, pod, container, "STOP", self._api)
            self._paused.append(pod)

    def revert(self) -> None:
        for pod, container in self.containers.items():
            report = exec_signal(self.client, self.namespace, pod, container, "CONT", self._api)
            found = re.search(r"\((\d+) were stopped\)", report)
            self._held[pod] = int(found.group(1)) if found else 0

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The revert found the server processes still stopped, and the workload stalled."""
        held = sum(self._held.values())
        figures: dict[str, Figure] = {
            "pods_paused": len(self._paused), "stopped_at_revert": held,
            "longest_ack_gap_seconds": round(window.longest_ack_gap_seconds, 3),
            "window_seconds": round(window.seconds, 3),
            "ok_per_s_before": round(window.baseline_ok_per_s, 1), "ok_during": window.ok}
        if not self._paused or any(not self._held.get(pod) for pod in self._paused):
            return FaultEvidence(False, "pod-pause did not bite: the revert found no stopped "
                                 "server process in some pod", figures)
        if not window.stalled():
            why = ("the workload acknowledged nothing before the pause, so no stall can be "
                   "shown" if window.baseline_ok_per_s <= 0 else
                   f"the workload kept going ({window.describe()})")
            return FaultEvidence(False, f"pod-pause did not bite: {why}", figures)
        return FaultEvidence(True, f"pod-pause: {held} server processes in "
                                   f"{len(self._paused)} pod(s) stopped until the revert; "
                                   f"workload: {window.describe()}", figures)


#: The script ``sh -c SCRIPT pod-pause SIG`` runs in the server's container: POSIX sh and /proc
#: only (the ``postgres`` image has no procps: no ps, pgrep or pkill; no fork per process). It
#: signals the postgres processes that share its cgroups (an exec'd process joins the
#: container's: the container's own processes, also where the PID namespace is the node's), in
#: passes until no new one appears (the postmaster forks until it is stopped itself). After
#: SIGSTOP it waits until each is really stopped: a container's PID 1 ignores SIGSTOP sent from
#: inside it (the kernel drops it silently), which is the postmaster unless the pod shares its
#: process namespace (the dry run with signal 0 says so before anything is injected). SIGCONT
#: reports how many were still stopped (the revert's evidence).
SIGNAL_SCRIPT = r"""
sig=$1
cg() { c=""; while IFS= read -r l; do c="$c$l;"; done < "$1"; }
cg /proc/$$/cgroup
me=$c
pids=" "
held=0
pass=0
while [ $pass -lt 3 ]; do
  pass=$((pass + 1))
  new=0
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    case "$pids" in *" $pid "*) continue ;; esac
    { read -r comm < "$p/comm"; } 2>/dev/null || continue
    case "$comm" in postgres|postmaster) ;; *) continue ;; esac
    { cg "$p/cgroup"; } 2>/dev/null || continue
    [ "$c" = "$me" ] || continue
    if [ "$sig" = CONT ] && { read -r line < "$p/stat"; } 2>/dev/null; then
      state=${line##*) }
      case "${state%% *}" in T|t) held=$((held + 1)) ;; esac
    fi
    if kill -"$sig" "$pid" 2>/dev/null; then pids="$pids$pid "; new=1; fi
  done
  [ "$sig" = STOP ] && [ $new = 1 ] || break
done
if [ "$pids" = " " ] && [ "$sig" != CONT ]; then
  echo "no postgres process found in this container" >&2
  exit 3
fi
case "$sig$pids" in 0*" 1 "*)
  echo "the postmaster is PID 1 of its container, which ignores SIGSTOP sent from inside it: \
run the pod with shareProcessNamespace: true" >&2
  exit 5 ;;
esac
if [ "$sig" = STOP ]; then
  tries=0
  while :; do
    running=""
    for pid in $pids; do
      { read -r line < "/proc/$pid/stat"; } 2>/dev/null || continue
      state=${line##*) }
      state=${state%% *}
      case "$state" in T|t|Z|X) ;; *) running="$running $pid" ;; esac
    done
    [ -z "$running" ] && break
    tries=$((tries + 1))
    if [ $tries -ge 50 ]; then
      hint=""
      case "$running " in *" 1 "*) hint="; PID 1 of a container ignores SIGSTOP sent from \
inside it: run the pod with shareProcessNamespace: true" ;; esac
      echo "process(es)$running did not stop$hint" >&2
      exit 4
    fi
    sleep 0.1
  done
fi
echo "SIG$sig sent to postgres process(es)$pids($held were stopped)"
"""
#: Seconds one exec may take (the script waits up to 5 s for the processes to stop).
EXEC_TIMEOUT = 60.0


def exec_api(client: KubeClient) -> Any:
    """The generated client's CoreV1Api for ``pods/exec`` on ``client``'s server."""
    from kubernetes import client as k8s

    return k8s.CoreV1Api(k8s.ApiClient(client.configuration))


def exec_failure(error: BaseException) -> str:
    """One line saying why ``pods/exec`` could not start: the HTTP status, its reason and the
    server's message (``403 Forbidden: pods "x" is forbidden: ... cannot get resource
    "pods/exec" ...``).

    The Python client turns a refused websocket handshake into ``ApiException(status=0,
    reason=<the whole handshake text>)``, whose text starts "(0)"; the handshake error it came
    from (websocket-client's ``WebSocketBadStatusException``) carries the status and body.
    """
    import json

    seen: BaseException | None = error
    while seen is not None:
        code = getattr(seen, "status_code", None) or getattr(seen, "status", None)
        if isinstance(code, int) and code > 0:
            phrase = str(getattr(seen, "status_message", None) or getattr(seen, "reason", None)
                         or "").strip()
            raw = getattr(seen, "resp_body", None) or getattr(seen, "body", None) or b""
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            message = (str(body.get("message") or "") if isinstance(body, dict)
                       else text.strip())
            head = f"{code} {phrase}".strip()
            return f"{head}: {message}" if message else head
        seen = seen.__cause__ or seen.__context__
    # No HTTP status (the server was not reached): the client's own reason, not "(0)".
    text = str(getattr(error, "reason", None) or error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def exec_sh(client: KubeClient, namespace: str, pod: str, container: str, script: str,
            argv: Sequence[str], where: str, *, api: Any = None,
            timeout: float = EXEC_TIMEOUT) -> str:
    """Run ``sh -c script argv...`` in the container through ``pods/exec``; its stdout.

    :class:`FaultError` (beginning with ``where``) when the exec fails, the command exits
    non-zero (with its stderr and exit code, from the status on channel 3) or does not end
    within ``timeout``. ``api``: an :func:`exec_api` to reuse.
    """
    import json

    from kubernetes.stream import stream

    api = api if api is not None else exec_api(client)
    try:
        response = stream(api.connect_get_namespaced_pod_exec, pod, namespace,
                          container=container, command=["sh", "-c", script, *argv],
                          stderr=True, stdin=False, stdout=True, tty=False,
                          _preload_content=False)
    except Exception as exc:
        raise FaultError(f"{where} failed: {exec_failure(exc)}") from exc
    try:
        response.run_forever(timeout=timeout)
        if response.is_open():
            raise FaultError(f"{where} did not end within {timeout:.0f} s")
        stdout = str(response.read_channel(1) or "").strip()
        stderr = str(response.read_channel(2) or "").strip()
        raw = response.read_channel(3) or ""
    finally:
        response.close()
    try:
        status = json.loads(raw) if raw else {}
    except ValueError:
        status = {"status": "Failure", "message": str(raw)}
    if status.get("status") == "Success":
        return stdout
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
    detail = stderr or str(status.get("message") or "no status from the exec")
    raise FaultError(f"{where} failed" + (f" (exit {code})" if code else "") + f": {detail}")


def exec_signal(client: KubeClient, namespace: str, pod: str, container: str,
                signal: str, api: Any = None) -> str:
    """Send SIG``signal`` to the container's postgres processes through ``pods/exec``
    (``0``: only find them).

    Returns the script's report; :class:`FaultError` when the exec fails, the command exits
    non-zero (with its stderr; also when no postgres process is found, except for ``CONT``)
    or does not end within :data:`EXEC_TIMEOUT`. ``api``: an :func:`exec_api` to reuse.
    """
    where = f"pod-pause: SIG{signal} through exec into {namespace}/{pod} ({container})"
    return exec_sh(client, namespace, pod, container, SIGNAL_SCRIPT, ["pod-pause", signal],
                   where, api=api)


def revert_intent(client: KubeClient, namespace: str, intent: Mapping[str, Any]) -> str:
    """Undo a Kubernetes fault from its intent alone; a one-line account of what was done.

    Idempotent: objects already gone count as reverted. SQL-level intents cannot be undone
    without the database's credentials (the operator has none): their own expiry (a lock's
    transaction ends with its connection, triggers are re-enabled by the runner) applies.
    """
    undo = dict(intent.get("undo") or {})
    kind = undo.get("kind")
    namespace = str(undo.get("namespace") or namespace)
    if kind == names.UNDO_POD_KILL:
        return "pod-kill: nothing to revert (the pods' controller recreates them)"
    if kind == names.UNDO_RESIZE:
        restored = _restore_resources(client, namespace, dict(undo.get("containers") or {}),
                                      dict(undo.get("originals") or {}))
        return f"restored the resources of {len(restored)} pod(s): {', '.join(restored)}"
    if kind == names.UNDO_NETWORK_POLICY:
        pods = [str(p) for p in undo.get("pods") or []]
        _remove_partition(client, namespace, str(undo["policy"]), pods)
        return f"deleted NetworkPolicy {undo['policy']} and unlabelled {len(pods)} pod(s)"
    if kind == names.UNDO_POD_PAUSE:
        resumed = []
        for pod, container in dict(undo.get("containers") or {}).items():
            try:
                exec_signal(client, namespace, pod, str(container), "CONT")
                resumed.append(pod)
            except FaultError:
                if client.find(PODS, namespace, pod) is not None:
                    raise
        return f"sent SIGCONT to {len(resumed)} pod(s)"
    if kind == "kube-disk-balloon":  # the disk-pressure module builds on this one: import late
        from pggit_chaos.kube.disk_pressure import free_balloons

        return free_balloons(client, namespace, undo)
    return (f"{intent.get('type', 'fault')}: nothing the operator can revert from here "
            f"(undo kind {kind!r}); a SQL-level fault ends with its runner's connection")


def wait_until(predicate: Any, timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
