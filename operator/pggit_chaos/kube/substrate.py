"""The Kubernetes substrate: targets are pods, faults are API calls, intents live in status.

Used by the runner Job (:mod:`pggit_chaos.kube.runner`) through the engine's
:class:`~pggit_chaos.engine.substrate.Substrate` protocol; :func:`resolve_targets` is also
used by the operator's safety gates. The database is reached through the DSN the Job gets from
``spec.target.databaseSecretRef`` (``secretKeyRef`` env: nothing here reads a Secret).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pggit_chaos.engine.substrate import Probe
from pggit_chaos.errors import InvalidExperiment, NoTargets
from pggit_chaos.faults.base import Fault, FaultIntent
from pggit_chaos.faults.latency import LatencyRoute, NetworkLatency, open_route, shape_of
from pggit_chaos.faults.load import LoadSpike
from pggit_chaos.faults.sql import ConnectionKill, LockContention, TriggerDisable
from pggit_chaos.kube import faults
from pggit_chaos.kube.client import PODS, KubeClient
from pggit_chaos.kube.disk_pressure import DiskPressure
from pggit_chaos.kube.failover import PrimaryPodDelete, has_label
from pggit_chaos.pggit import mask_dsn
from pggit_chaos.probe import probe_database
from pggit_chaos.spec.model import MAX_SPIKE_CLIENTS

if TYPE_CHECKING:
    from pggit_chaos.config import Settings
    from pggit_chaos.spec import Experiment, LabelSelector

__all__ = [
    "KubeSubstrate",
    "label_selector_query",
    "matches_selector",
    "pod_ready",
    "resize_limits",
    "resize_refusals",
    "resolve_target_pods",
    "resolve_targets",
    "select_pods",
]

#: Why clock-skew is refused in a cluster (before anything is injected).
CLOCK_SKEW_REFUSAL = (
    "clock-skew is refused in a cluster: moving a database server's clock needs a privileged "
    "daemon on the node (libfaketime preloaded into the server, or a time namespace set up by "
    "something like Chaos Mesh's chaos-daemon), which this operator does not run; run it "
    "on one machine with pggit-chaos run")

#: Namespaces whose pods are never targets.
PROTECTED_NAMESPACES = ("kube-system",)
SQL_FAULTS = ("connection-kill", "lock-contention", "trigger-disable")

#: Called with a status merge patch (the runner patches the experiment's status subresource).
StatusPatch = Callable[[dict[str, Any]], None]


def label_selector_query(selector: LabelSelector) -> str:
    """The ``labelSelector`` query value of a spec selector (server-side filtering)."""
    parts = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for requirement in selector.match_expressions:
        values = ",".join(requirement.values)
        if requirement.operator == "In":
            parts.append(f"{requirement.key} in ({values})")
        elif requirement.operator == "NotIn":
            parts.append(f"{requirement.key} notin ({values})")
        elif requirement.operator == "Exists":
            parts.append(requirement.key)
        else:
            parts.append(f"!{requirement.key}")
    return ",".join(parts)


def matches_selector(labels: Mapping[str, str], selector: LabelSelector) -> bool:
    """Whether ``labels`` match the selector (checked again client-side, as kubectl does)."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and value not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Running, not being deleted, and condition Ready True."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def select_pods(client: KubeClient, experiment: Experiment,
                settings: Settings) -> list[dict[str, Any]]:
    """Every Running and Ready pod of the experiment's namespace matching its selector, except
    the operator's own pods and anything in ``kube-system``; sorted by name."""
    namespace = experiment.namespace
    if namespace in PROTECTED_NAMESPACES:
        return []
    selector = experiment.spec.target.selector
    pods = client.list(PODS, namespace, label_selector=label_selector_query(selector))
    own = settings.operator_labels()
    chosen = []
    for pod in pods:
        labels = dict(pod.get("metadata", {}).get("labels") or {})
        if not matches_selector(labels, selector) or not pod_ready(pod):
            continue
        if (own and namespace == settings.operator_namespace
                and all(labels.get(k) == v for k, v in own.items())):
            continue
        chosen.append(pod)
    return sorted(chosen, key=lambda p: str(p["metadata"]["name"]))


def pick(pods: Sequence[dict[str, Any]], mode: str, value: int,
         seed: str) -> list[dict[str, Any]]:
    """The pods a mode hits: one, all, ``fixed`` (value pods), ``fixed-percent`` (value %, at
    least one); a random but reproducible choice (seeded with the run id)."""
    if not pods:
        return []
    if mode == "all":
        count = len(pods)
    elif mode == "fixed":
        count = min(value, len(pods))
    elif mode == "fixed-percent":
        count = max(1, math.floor(len(pods) * value / 100))
    else:
        count = 1
    chosen = random.Random(seed).sample(list(pods), count)
    return sorted(chosen, key=lambda p: str(p["metadata"]["name"]))


def resolve_target_pods(client: KubeClient, experiment: Experiment, settings: Settings,
                        seed: str = "") -> list[dict[str, Any]]:
    """The pods the experiment would hit (empty: nothing matches)."""
    spec = experiment.spec.target
    return pick(select_pods(client, experiment, settings), spec.mode, spec.value,
                seed or experiment.name)


def resolve_targets(client: KubeClient, experiment: Experiment, settings: Settings,
                    seed: str = "") -> list[str]:
    """Names of the pods the experiment would hit (empty: nothing matches)."""
    return [str(p["metadata"]["name"])
            for p in resolve_target_pods(client, experiment, settings, seed)]


def resize_refusals(pods: Sequence[Mapping[str, Any]], experiment: Experiment) -> list[str]:
    """For cpu-throttle and memory-pressure: why the API server would refuse the resize of
    these pods or its revert (:func:`~pggit_chaos.kube.faults.resize_refusal`); else ``[]``."""
    from pggit_chaos.engine.lifecycle import step_experiments

    found = []
    for step in step_experiments(experiment):  # a scenario: each of its faults
        limits = resize_limits(step)
        if limits is None:
            continue
        for pod in pods:
            reason = faults.resize_refusal(pod, faults.postgres_container(pod),
                                           str(step.spec.fault.type), *limits)
            if reason is not None:
                found.append(reason)
    return found


def resize_limits(experiment: Experiment) -> tuple[str | None, str | None] | None:
    """(cpu limit, memory limit) an in-place resize fault sets; None for other faults."""
    fault = experiment.spec.fault
    settings: Any = fault.settings
    if str(fault.type) == "cpu-throttle":
        return f"{max(1, int(settings.cpu_percent * 10))}m", None
    if str(fault.type) == "memory-pressure":
        return None, str(settings.limit)
    return None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeSubstrate:
    """Pods of one namespace as targets; the experiment's status as intent storage."""

    name = "kubernetes"

    def __init__(self, client: KubeClient, settings: Settings, dsn: str, uid: str,
                 run_id: str, status_patch: StatusPatch) -> None:
        self.client = client
        self.settings = settings
        self._dsn = dsn
        self.uid = uid
        self.run_id = run_id
        self.status_patch = status_patch
        self.targets: list[dict[str, Any]] = []
        #: primary-failover: every selected pod (where the new primary appears).
        self.candidates: list[dict[str, Any]] = []
        self.namespace = ""
        self._fault_type = ""
        #: Every fault type of the run (a scenario's several).
        self._fault_types: set[str] = set()
        #: A scenario: its intents go in ``faultIntents`` too, each expiring from its record.
        self._scenario = False
        self._scenario_seconds = 0.0
        self._intents: list[dict[str, Any]] = []
        #: network-latency: the proxy in this (the runner's) pod the workload connects through.
        self.latency_route: LatencyRoute | None = None

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def workload_dsn(self) -> str:
        route = self.latency_route
        return route.workload_dsn if route is not None else self._dsn

    def prepare(self, experiment: Experiment) -> None:
        """Resolve the targets (Running and Ready pods); none ⇒ :class:`NoTargets`."""
        self.namespace = experiment.namespace
        self._fault_type = str(experiment.spec.fault.type)
        self._fault_types = {str(fault.type) for fault in experiment.spec.faults}
        self._scenario = experiment.spec.scenario is not None
        self._scenario_seconds = (experiment.spec.hold_seconds()
                                  + experiment.spec.recovery.timeout.seconds)
        spec = experiment.spec.target
        selected = select_pods(self.client, experiment, self.settings)
        failover = experiment.spec.fault_of("primary-failover")
        if failover is not None:  # only the pod with the primary role label
            label = str(getattr(failover.settings, "primary_label", ""))
            self.candidates = selected
            selected = [pod for pod in selected if has_label(pod, label)]
            if not selected:
                raise NoTargets(
                    f"primary-failover: no Running and Ready pod matching the selector "
                    f"{label_selector_query(spec.selector)} in namespace "
                    f"{experiment.namespace} carries the primary label {label} (a PostgreSQL "
                    "operator's primary, e.g. CloudNativePG or Patroni): nothing to inject")
        pods = pick(selected, spec.mode, spec.value, self.run_id)
        if not pods:
            raise NoTargets(
                f"no Running and Ready pod in namespace {experiment.namespace} matches the "
                f"selector {label_selector_query(spec.selector)}: nothing to inject")
        if len(pods) > self.settings.max_target_pods:
            raise InvalidExperiment([(
                "spec.target", f"{len(pods)} target pods exceed the cap of "
                f"{self.settings.max_target_pods} (PGGIT_CHAOS_MAX_TARGET_PODS)")])
        self.targets = pods
        self.status_patch({"targets": self.target_names})
        if "network-latency" in self._fault_types and self.latency_route is None:
            self.latency_route = open_route(self._dsn)

    @property
    def target_names(self) -> list[str]:
        return [str(p["metadata"]["name"]) for p in self.targets]

    def plan(self, experiment: Experiment) -> list[str]:
        spec = experiment.spec
        try:
            pods = resolve_target_pods(self.client, experiment, self.settings, self.run_id)
        except Exception as exc:
            return [f"targets could not be resolved: {exc}"]
        names_ = [str(p["metadata"]["name"]) for p in pods]
        lines = [f"target pods in {experiment.namespace}: {', '.join(names_) or 'none'}",
                 f"database: {mask_dsn(self._dsn)}"]
        refused = resize_refusals(pods, experiment)
        if spec.fault.type == "clock-skew":
            refused.append(CLOCK_SKEW_REFUSAL)
        if refused:
            return [*lines, *(f"refused: {reason}" for reason in refused),
                    f"{spec.fault.type} would not be injected"]
        lines.append(f"inject {spec.fault.type}, hold {spec.duration}, then revert")
        return lines

    def expires_at(self, experiment: Experiment) -> str:
        """When a fault of this experiment is stale: duration + recovery timeout + margin."""
        spec = experiment.spec
        seconds = (spec.duration.seconds + spec.recovery.timeout.seconds
                   + self.settings.expiry_margin)
        return _rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))

    def build_fault(self, experiment: Experiment) -> Fault:
        fault = experiment.spec.fault
        fault_type = str(fault.type)
        settings: Any = fault.settings
        built: Fault
        if fault_type == "clock-skew":
            raise InvalidExperiment([("spec.fault.type", CLOCK_SKEW_REFUSAL)])
        if fault_type == "load-spike":
            built = LoadSpike(settings.clients_factor, settings.rate_factor, MAX_SPIKE_CLIENTS)
        elif fault_type == "connection-kill":
            built = ConnectionKill(self.dsn, float(settings.interval), settings.target_application)
        elif fault_type == "lock-contention":
            built = LockContention(self.dsn, settings.table, settings.mode)
        elif fault_type == "trigger-disable":
            built = TriggerDisable(self.dsn, list(settings.triggers))
        elif fault_type == "pod-kill":
            built = faults.PodKill(self.client, self.namespace, self.target_names,
                                   settings.grace_period_seconds)
        elif fault_type in ("cpu-throttle", "memory-pressure"):
            cpu_limit, memory_limit = resize_limits(experiment) or (None, None)
            built = faults.Resize(self.client, self.namespace, self.targets, fault_type,
                                  cpu_limit=cpu_limit, memory_limit=memory_limit)
        elif fault_type == "network-partition":
            built = faults.NetworkPartition(self.client, experiment, self.uid, self.target_names,
                                            settings.direction, self.expires_at(experiment),
                                            dsn=self.dsn)
        elif fault_type == "network-latency":
            if self.latency_route is None:
                raise InvalidExperiment([("spec.fault.type", "network-latency: prepare() did "
                                          "not start the latency proxy")])
            built = NetworkLatency(self.latency_route, shape_of(settings))
        elif fault_type == "primary-failover":
            built = PrimaryPodDelete(self.client, self.namespace, self.targets, self.candidates,
                                     settings.primary_label, self.dsn)
        elif fault_type == "pod-pause":
            built = faults.PodPause(self.client, self.namespace, self.targets,
                                    self.settings.allow_exec)
        elif fault_type == "disk-pressure":
            built = DiskPressure(self.client, self.namespace, self.targets,
                                 self.settings.allow_exec, self.dsn, settings.volume,
                                 settings.fill, settings.max_balloon_mi)
        else:
            raise InvalidExperiment([("spec.fault.type", f"unknown fault type {fault_type}")])
        built.check()
        self._expires = self.expires_at(experiment)
        return built

    def record_intent(self, intent: FaultIntent) -> None:
        """Write the intent (with ``expiresAt``) into status before anything is injected.

        One fault: ``faultIntent``. A scenario's faults: each in ``faultIntents`` too (a
        merge patch replaces a list whole, so the list is kept here), ``faultIntent`` the
        first still active: every reader that asks "is a fault held?" stays right.
        """
        expires = getattr(self, "_expires", None)
        if self._scenario:  # from now: a serial scenario's later steps are recorded later
            expires = _rfc3339(datetime.now(UTC) + timedelta(
                seconds=self._scenario_seconds + self.settings.expiry_margin))
        self._intents.append({
            "id": intent.id, "type": intent.type, "target": intent.target,
            "description": intent.description, "undo": intent.undo,
            "createdAt": intent.created_at, "expiresAt": expires})
        self._patch_intents()

    def clear_intent(self, intent: FaultIntent) -> None:
        self._intents = [i for i in self._intents if i["id"] != intent.id]
        self._patch_intents()

    def _patch_intents(self) -> None:
        intents = self._intents
        patch: dict[str, Any] = {"faultIntent": intents[0] if intents else None}
        if self._scenario:
            patch["faultIntents"] = list(intents) or None
        self.status_patch(patch)

    def probe(self, timeout: float) -> Probe:
        """The database answers a healthy ``health_check()``; after a pod-kill, the target
        pods are back (recreated by their controller) and Ready too."""
        if "pod-kill" in self._fault_types and self.targets:
            for name in self.target_names:
                try:
                    pod = self.client.find(PODS, self.namespace, name)
                except Exception as exc:
                    return Probe(reachable=False, healthy=False, detail=f"pod {name}: {exc}")
                if pod is None or not pod_ready(pod):
                    state = "gone" if pod is None else "not Ready"
                    return Probe(reachable=False, healthy=False, detail=f"pod {name} {state}")
        return probe_database(self.dsn, timeout)

    def close(self) -> None:
        if self.latency_route is not None:
            self.latency_route.close()
            self.latency_route = None
