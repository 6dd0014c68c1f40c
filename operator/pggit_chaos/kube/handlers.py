"""The operator's work, without kopf: admission and safety gates, the runner Job, Events and
metrics mirrored from status, crash reverts, the finalizer, abort, expiry and the sweep.

Called by :mod:`pggit_chaos.kube.operator` (the kopf registrations) through
``asyncio.to_thread``. Every method is synchronous, reads what it needs from the API server (the
experiment's status and annotations, labelled Jobs, pods and policies) and is idempotent: the
operator keeps no state in memory that a restart would lose (the per-experiment locks and the
active-faults level are rebuilt from the API).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from pggit_chaos.config import Settings
from pggit_chaos.errors import ChaosError, InvalidExperiment, one_line
from pggit_chaos.kube import builders, faults, names, substrate
from pggit_chaos.kube.client import (
    CONFIG_MAPS,
    EXPERIMENTS,
    JOBS,
    NAMESPACES,
    NETWORK_POLICIES,
    PODS,
    SERVICE_ACCOUNTS,
    ApiError,
    KubeClient,
    failed_create,
    post_event,
)
from pggit_chaos.metrics import ChaosMetrics, metrics_for, parse_time
from pggit_chaos.spec.loader import load_experiment_object
from pggit_chaos.spec.model import GROUP, Experiment, fault_label
from pggit_chaos.spec.schedule import SCHEDULE_LABEL
from pggit_chaos.spec.status import HISTORY_LIMIT, MESSAGE_LIMIT, ExperimentStatus, PastRunStatus

__all__ = [
    "COMPONENT",
    "MIRRORED_ANNOTATION",
    "PHASE_REASONS",
    "STOPPING_ANNOTATION",
    "STOP_TIMEOUT",
    "TERMINAL",
    "Handlers",
    "Mirrored",
    "Refusal",
    "Retry",
    "event_reasons",
    "needs_timer",
    "rerun_wanted",
]

#: Phases after which the runner writes nothing more.
TERMINAL = frozenset({"Passed", "Failed", "Inconclusive", "Aborted", "Error"})
#: Annotation on an experiment: what the operator already mirrored (Events, metrics), as JSON
#: ``{"run": <runId or uid>, "posted": [reasons...], "counted": bool}``.
MIRRORED_ANNOTATION = f"{GROUP}/mirrored"
#: Annotation on an experiment being aborted: when the operator began stopping its runner.
STOPPING_ANNOTATION = f"{GROUP}/stopping-since"
#: Seconds the finalizer and the abort wait for a stopped runner to revert its own fault
#: before the operator reverts it from the intent.
STOP_TIMEOUT = 45.0
#: The ``source.component`` of the operator's Events.
COMPONENT = "pggit-chaos-operator"
#: The Event (reason, type) of each terminal phase.
PHASE_REASONS = {"Passed": ("Verified", "Normal"), "Failed": ("Failed", "Warning"),
                 "Inconclusive": ("Inconclusive", "Warning"), "Aborted": ("Aborted", "Warning"),
                 "Error": ("Error", "Warning")}
#: Waiting reasons of a runner container that will never start by itself.
_STUCK_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError",
                            "InvalidImageName"})

Body = dict[str, Any]
_log = logging.getLogger("pggit_chaos.operator")
#: The status fields of one run: cleared when the experiment is run again.
_RUN_FIELDS = tuple(str(info.alias or field) for field, info in
                    ExperimentStatus.model_fields.items()
                    if field not in ("history", "rerun", "observed_generation", "targets",
                                     "conditions", "fault"))


class Retry(ChaosError):
    """Not done yet (a stopped runner is still reverting): call again after ``delay`` s."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class Refusal:
    """A safety gate said no: which gate, and how to open it."""

    gate: str
    message: str


@dataclass
class Mirrored:
    """What was mirrored for one run: posted Event reasons, whether the metrics counted it."""

    run: str
    posted: list[str] = field(default_factory=list)
    counted: bool = False

    @classmethod
    def load(cls, body: Mapping[str, Any], run: str) -> Mirrored:
        """From the experiment's annotation; a fresh record when it is for another run."""
        raw = _annotations(body).get(MIRRORED_ANNOTATION)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict) or data.get("run") != run:
            return cls(run)
        posted = [str(reason) for reason in data.get("posted") or [] if isinstance(reason, str)]
        return cls(run, posted, bool(data.get("counted")))

    def dump(self) -> str:
        return json.dumps({"run": self.run, "posted": self.posted, "counted": self.counted},
                          separators=(",", ":"))


# ------------------------------------------------------------------------------ small helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _annotations(body: Mapping[str, Any]) -> dict[str, str]:
    annotations = _meta(body).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def _labels(body: Mapping[str, Any]) -> dict[str, str]:
    labels = _meta(body).get("labels")
    return labels if isinstance(labels, dict) else {}


def _status(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status")
    return status if isinstance(status, dict) else {}


def _fault_type(body: Mapping[str, Any]) -> str:
    """The fault type (a scenario's types joined by ``+``), or ``unknown``."""
    return fault_label(body.get("spec")) or "unknown"


def _clip(text: str) -> str:
    text = one_line(text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _job_condition(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """("Failed" | "Complete", "reason: message") once the Job has finished, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        kind = condition.get("type")
        if kind in ("Failed", "Complete") and condition.get("status") == "True":
            detail = ": ".join(str(part) for part in (condition.get("reason"),
                                                      condition.get("message")) if part)
            return str(kind), detail
    return None


def _exit_code(pod: Mapping[str, Any]) -> int | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        for key in ("state", "lastState"):
            terminated = (container.get(key) or {}).get("terminated")
            if terminated and terminated.get("exitCode") is not None:
                return int(terminated["exitCode"])
    return None


def _waiting(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in _STUCK_REASONS:
            return str(waiting["reason"]), str(waiting.get("message") or "")
    return None


def _alive(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def rerun_wanted(body: Mapping[str, Any]) -> bool:
    """A finished experiment whose ``chaos.pggit.io/rerun`` annotation has a value not acted
    on yet, and no fault left to revert."""
    value = _annotations(body).get(names.RERUN_ANNOTATION)
    status = _status(body)
    return (bool(value) and value != status.get("rerun") and status.get("phase") in TERMINAL
            and not status.get("faultIntent"))


def needs_timer(body: Mapping[str, Any]) -> bool:
    """Whether the per-experiment timer should run: not finished, or an intent in status."""
    status = _status(body)
    return status.get("phase") not in TERMINAL or bool(status.get("faultIntent"))


def event_reasons(status: Mapping[str, Any], fault: str) -> list[tuple[str, str, str]]:
    """(reason, type, message) of every Event the status implies, in lifecycle order."""
    phase = status.get("phase")
    reasons: list[tuple[str, str, str]] = []
    targets = ", ".join(str(t) for t in status.get("targets") or []) or "its targets"
    if phase == "SteadyState" or status.get("injectedAt"):
        reasons.append(("SteadyState", "Normal", "steady state reached: the workload runs"))
    if status.get("injectedAt"):
        intent = status.get("faultIntent") or {}
        detail = f" ({intent['description']})" if isinstance(intent, dict) and intent.get(
            "description") else ""
        reasons.append(("FaultInjected", "Normal", f"{fault} injected into {targets}{detail}"))
    if status.get("revertedAt"):
        reasons.append(("FaultReverted", "Normal", f"{fault} reverted at {status['revertedAt']}"))
    if status.get("recoveredAt"):
        seconds = status.get("recoverySeconds")
        took = f" in {float(seconds):.1f} s" if isinstance(seconds, int | float) else ""
        reasons.append(("Recovered", "Normal", f"pgGit healthy again{took}"))
    if phase == "Verifying" or (phase in ("Passed", "Failed") and status.get("verificationJob")):
        job = status.get("verificationJob")
        reasons.append(("Verifying", "Normal",
                        f"verification Job {job} runs the checks" if job else "verifying"))
    if phase in TERMINAL:
        # The user's assertions, once every moment has been evaluated: one Event for those
        # that failed, one for those that could not be evaluated, each naming them.
        for outcome, reason, said in (("failed", "AssertionFailed", "failed"),
                                      ("error", "AssertionNotEvaluated", "could not evaluate")):
            found = [a for a in status.get("assertions") or []
                     if isinstance(a, dict) and a.get("outcome") == outcome]
            if found:
                reasons.append((reason, "Warning", "; ".join(
                    f"assertion {a.get('name')} {said} "
                    f"{'at the ' if a.get('phase') == 'steady state' else ''}{a.get('phase')}: "
                    f"{a.get('message')}"
                    for a in found)))
        reason, type_ = PHASE_REASONS[str(phase)]
        verdict = status.get("verdict")
        message = status.get("message") or (f"verdict {verdict}" if verdict else str(phase))
        reasons.append((reason, type_, str(message)))
    return reasons


# ------------------------------------------------------------------------------ the handlers


class Handlers:
    """The operator's work on one API server, with one identity and one metrics registry."""

    def __init__(self, client: KubeClient, settings: Settings,
                 registry: CollectorRegistry = REGISTRY, *, stop_timeout: float = STOP_TIMEOUT,
                 clock: Callable[[], datetime] = _now) -> None:
        self.client = client
        self.settings = settings
        self.metrics: ChaosMetrics = metrics_for(registry)
        self.stop_timeout = stop_timeout
        self.clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._active: dict[str, str] = {}  # experiment uid -> fault type with an intent
        self._active_guard = threading.Lock()
        #: (uid, resourceVersion) whose status the API server refused (422): not retried.
        self._unwritable: set[tuple[str, str]] = set()

    # -- entry points ------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str) -> None:
        """Bring one experiment forward: admit it, watch its runner, abort, expire, mirror."""
        with self._lock(namespace, name):
            body = self.client.find(EXPERIMENTS, namespace, name)
            if body is None:
                return
            self.observe(body)
            if _meta(body).get("deletionTimestamp"):
                return  # the finalizer's business
            if _version(body) in self._unwritable:
                return  # refused its status before; waits for a change
            status = _status(body)
            phase = status.get("phase")
            if phase in TERMINAL and rerun_wanted(body):
                self._mirror(body)  # the finished run is counted and announced first
                self._rerun(body)
                return  # the status written brings the next event: it is admitted then
            if phase not in TERMINAL:
                if _annotations(body).get(names.ABORT_ANNOTATION) == "true":
                    self._abort(body)
                elif not status.get("runnerJob"):
                    self._admit(body)
                else:
                    self._watch_runner(body)
                body = self._get(namespace, name)
            if body is not None:
                body = self._expire(body)
            if body is not None and _status(body).get("phase") in TERMINAL:
                body = self._revert_leftover(body)
            if body is not None:
                self.observe(body)
                self._mirror(body)

    def on_runner_object(self, obj: Mapping[str, Any]) -> None:
        """A runner Job or pod changed: reconcile the experiment it works for."""
        namespace = _meta(obj).get("namespace")
        experiment = (_annotations(obj).get(builders.EXPERIMENT_ANNOTATION)
                      or _labels(obj).get(names.EXPERIMENT_LABEL))
        if isinstance(namespace, str) and isinstance(experiment, str) and experiment:
            self.reconcile(namespace, experiment)

    def finalize(self, namespace: str, name: str, elapsed: float) -> str:
        """The experiment is being deleted: stop its runner, make sure no fault is left.

        Raises :class:`Retry` while a stopped runner may still revert its own fault
        (bounded by ``stop_timeout``); returns a one-line account once the finalizer may go.
        """
        with self._lock(namespace, name):
            body = self.client.find(EXPERIMENTS, namespace, name)
            if body is None:
                return "already gone"
            outcome = self._stop(body, elapsed)
            uid = str(_meta(body).get("uid") or "")
            self.forget(uid)
            return outcome

    def forget(self, uid: str) -> None:
        """The experiment is gone: it holds no active fault any more."""
        with self._active_guard:
            self._active.pop(uid, None)
            self._publish_active()

    def observe(self, body: Mapping[str, Any]) -> None:
        """Keep ``pggit_chaos_active_faults`` level with this experiment's ``faultIntent``."""
        uid = str(_meta(body).get("uid") or "")
        if not uid:
            return
        intent = _status(body).get("faultIntent")
        with self._active_guard:
            if isinstance(intent, dict) and intent:
                self._active[uid] = str(intent.get("type") or _fault_type(body))
            else:
                self._active.pop(uid, None)
            self._publish_active()

    def active_faults(self) -> dict[str, int]:
        """Experiments holding a fault, by fault type (the gauge's current level)."""
        with self._active_guard:
            counts: dict[str, int] = {}
            for fault in self._active.values():
                counts[fault] = counts.get(fault, 0) + 1
            return counts

    def rebuild_active_faults(self) -> dict[str, int]:
        """Recompute the active-faults level from every experiment's status (at startup)."""
        active: dict[str, str] = {}
        for namespace in self._namespaces():
            for body in self.client.list(EXPERIMENTS, namespace):
                intent = _status(body).get("faultIntent")
                uid = str(_meta(body).get("uid") or "")
                if uid and isinstance(intent, dict) and intent:
                    active[uid] = str(intent.get("type") or _fault_type(body))
        with self._active_guard:
            self._active = active
            return self._publish_active()

    def sweep(self) -> list[str]:
        """Remove fault objects whose experiment is gone or finished, and expired policies.

        NetworkPolicies labelled by pggit-chaos are deleted, partition labels removed from
        pods; an experiment still running with its intent in status keeps its objects unless
        the policy is past its ``expires-at``. Returns one line per thing removed.
        """
        removed: list[str] = []
        now = self.clock()
        for namespace in self._namespaces():
            holding = self._holding_fault(namespace)
            for policy in self.client.list(NETWORK_POLICIES, namespace,
                                           label_selector=names.selector(
                                               {names.MANAGED_BY_LABEL: names.MANAGED_BY})):
                labels = _labels(policy)
                if labels.get(names.MANAGED_BY_LABEL) != names.MANAGED_BY:
                    continue
                meta = _meta(policy)
                where = str(meta.get("namespace") or namespace or "")
                expires = parse_time(_annotations(policy).get(names.EXPIRES_AT_ANNOTATION))
                owner = labels.get(names.EXPERIMENT_LABEL, "")
                expired = expires is not None and expires < now
                if expired or (where, owner) not in holding:
                    self.client.delete(NETWORK_POLICIES, where, str(meta["name"]))
                    why = "expired" if expired else f"experiment {owner or '?'} gone or finished"
                    removed.append(f"NetworkPolicy {where}/{meta['name']} ({why})")
            for pod in self.client.list(PODS, namespace, label_selector=names.PARTITION_LABEL):
                label = _labels(pod).get(names.PARTITION_LABEL)
                if label is None:
                    continue
                owner = str(label)
                meta = _meta(pod)
                where = str(meta.get("namespace") or namespace or "")
                # A running experiment keeps its label while its policy exists; once the policy
                # is gone (expired, swept) the label isolates nothing any more.
                if (where, owner) in holding and self.client.find(
                        NETWORK_POLICIES, where,
                        names.network_policy_name(holding[where, owner])) is not None:
                    continue
                try:
                    self.client.patch(PODS, where, str(meta["name"]),
                                      builders.unpartition_label_patch())
                except ApiError as exc:
                    if not exc.not_found:
                        raise
                    continue
                removed.append(f"label {names.PARTITION_LABEL} of pod {where}/{meta['name']}")
        return removed

    # -- admission ---------------------------------------------------------------------------
    def _admit(self, body: Body) -> None:
        meta = _meta(body)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        past = {run.get("runId") for run in _status(body).get("history") or []
                if isinstance(run, dict)}
        # A rerun's earlier runner Jobs are being deleted: never adopted again.
        existing = [job for job in self._runner_jobs(body) if _job_run_id(job) not in past]
        if existing:
            self._adopt(body, existing[0])
            return
        try:
            experiment = load_experiment_object(body, f"{namespace}/{name}")
        except InvalidExperiment as exc:
            self._finish(body, "Error", f"invalid spec: {'; '.join(exc.lines())}",
                         reason="InvalidSpec")
            return
        refusal = self.gates(experiment)
        if isinstance(refusal, Refusal):
            self._finish(body, "Aborted", f"refused by the {refusal.gate} gate: {refusal.message}",
                         reason="Refused")
            return
        targets = refusal
        if experiment.spec.dry_run:
            self._patch_status(body, {"targets": targets})
            refused = substrate.resize_refusals(
                [pod for pod in substrate.resolve_target_pods(self.client, experiment,
                                                              self.settings)
                 if str(_meta(pod).get("name")) in targets], experiment)
            label = "+".join(str(f.type) for f in experiment.spec.faults)
            would = (f"; {label} would be refused: {refused[0]}" if refused else "")
            self._finish(body, "Aborted",
                         f"dry run: would hit pods {', '.join(targets)}{would}; nothing was "
                         "injected", reason="DryRun", type_="Normal")
            return
        holder = self._holder_of_target(body, experiment, targets)
        if holder is not None:
            self._wait_for(body, holder, targets)
            return
        run_id = uuid.uuid4().hex[:12]
        uid = str(meta.get("uid") or "")
        try:
            job = builders.runner_job(experiment, uid, run_id, self.settings)
        except InvalidExperiment as exc:
            self._finish(body, "Error", f"invalid spec: {'; '.join(exc.lines())}",
                         reason="InvalidSpec")
            return
        try:
            job = self.client.create(JOBS, namespace, job)
        except ApiError as exc:
            if not exc.conflict:
                raise
            job = self.client.get(JOBS, namespace, str(job["metadata"]["name"]))
        self._adopt(body, job, run_id)

    def _holder_of_target(self, body: Body, experiment: Experiment,
                          targets: list[str]) -> str | None:
        """The experiment that goes before this one on the same target, if any.

        Experiments on one target run one at a time (``one_experiment_per_target``): a fault
        another experiment holds would decide this one's verdict (trigger-disable, for one,
        switches off pgGit's tracking for the whole database). The same database Secret or a
        shared target pod is the same target. One that is running goes first; among those
        waiting, the oldest (creation time, then name). Dry runs never hold a target.
        """
        if not self.settings.one_experiment_per_target:
            return None
        meta = _meta(body)
        ref = experiment.spec.target.database_secret_ref
        mine = ref.name if ref is not None else None
        order = (str(meta.get("creationTimestamp") or ""), str(meta.get("name")))
        for other in self.client.list(EXPERIMENTS, str(meta["namespace"])):
            other_meta, other_status = _meta(other), _status(other)
            if other_meta.get("uid") == meta.get("uid") or other_meta.get("deletionTimestamp"):
                continue
            if other_status.get("phase") in TERMINAL:
                continue
            spec: dict[str, Any] = other["spec"] if isinstance(other.get("spec"), dict) else {}
            target: dict[str, Any] = (spec["target"] if isinstance(spec.get("target"), dict)
                                      else {})
            other_ref = target.get("databaseSecretRef")
            secret = other_ref.get("name") if isinstance(other_ref, dict) else None
            shares_pods = bool(set(other_status.get("targets") or []) & set(targets))
            if not (shares_pods or (mine is not None and secret == mine)):
                continue
            if other_status.get("runnerJob"):
                return str(other_meta.get("name"))
            if spec.get("dryRun") is True:
                continue
            if (str(other_meta.get("creationTimestamp") or ""),
                    str(other_meta.get("name"))) < order:
                return str(other_meta.get("name"))
        return None

    def _wait_for(self, body: Body, holder: str, targets: list[str]) -> None:
        """Pending, saying which experiment holds the target (the timer tries again)."""
        message = (f"waiting for experiment {holder} on the same target "
                   f"({', '.join(targets)}): experiments on one target run one at a time")
        status = _status(body)
        if status.get("message") != message or status.get("phase") != "Pending":
            self._patch_status(body, {"phase": "Pending", "message": message,
                                      "observedGeneration": _meta(body).get("generation")})
        uid = str(_meta(body).get("uid") or "")
        self._post(body, "Waiting", "Normal", message, key=f"{uid[:8]}-waiting-{holder}")

    def _adopt(self, body: Body, job: Mapping[str, Any], run_id: str | None = None) -> None:
        """Write the run's id and Job into status (Pending unless the runner already moved)."""
        job_name = str(_meta(job)["name"])
        run_id = run_id or _job_run_id(job) or job_name.rsplit("-", 1)[-1]
        patch: dict[str, Any] = {
            "runId": run_id, "runnerJob": job_name,
            "observedGeneration": _meta(body).get("generation"),
        }
        if _status(body).get("phase") in (None, "Pending"):
            patch["phase"] = "Pending"
            patch["message"] = f"runner Job {job_name} created"
        rerun = _annotations(body).get(names.RERUN_ANNOTATION)
        if rerun:
            # A rerun value the experiment was created (or rerun) with is this run's: only a
            # value set after this does run it again.
            patch["rerun"] = rerun
        try:
            self._patch_status(body, patch)
        except ApiError as exc:
            if exc.status != 422:
                raise
            # Stored under a schema the server now rejects, and no ratcheting (before 1.30,
            # or the gate off): the runner could not report either, so it does not run.
            self.client.delete(JOBS, str(_meta(body)["namespace"]), job_name)
            self._refused_status(body, exc)
            return
        self._post(body, "RunnerCreated", "Normal",
                   f"runner Job {job_name} created for run {run_id}", key=f"{run_id[:8]}-runner")

    def gates(self, experiment: Experiment) -> Refusal | list[str]:
        """The safety gates in order; the target pod names when every gate lets it pass."""
        settings, namespace = self.settings, experiment.namespace
        if namespace in substrate.PROTECTED_NAMESPACES:
            return Refusal("kube-system", f"experiments never target {namespace}: "
                                          "run it in the namespace of the database")
        allowlist = settings.namespace_allowlist()
        if allowlist and namespace not in allowlist:
            return Refusal("namespace allowlist",
                           f"namespace {namespace} is not in the operator's allowlist "
                           f"({', '.join(allowlist)}): add it to PGGIT_CHAOS_NAMESPACES "
                           "(the chart's namespaces value)")
        if settings.require_namespace_opt_in:
            ns = self.client.find(NAMESPACES, None, namespace)
            if ns is None or _labels(ns).get(names.NAMESPACE_OPT_IN_LABEL) != "true":
                return Refusal("namespace opt-in",
                               f"namespace {namespace} has not opted in: kubectl label namespace "
                               f"{namespace} {names.NAMESPACE_OPT_IN_LABEL}=true")
        for fault in experiment.spec.faults:  # a scenario: each of its faults
            if fault.destructive:
                return Refusal("destructive", f"{fault.type} destroys data that no revert "
                               "restores: it runs only on the embedded throwaway PostgreSQL "
                               "of `pggit-chaos run`, never in a cluster")
            if str(fault.type) == "pod-pause" and not settings.allow_exec:
                return Refusal("exec", f"pod-pause needs pods/exec: {names.EXEC_SWITCH}")
            if str(fault.type) == "disk-pressure" and not settings.allow_exec:
                return Refusal("exec", "disk-pressure writes its balloon through pods/exec: "
                                       f"{names.EXEC_SWITCH}")
        selector = experiment.spec.target.selector
        own = settings.operator_labels()
        if own and namespace == settings.operator_namespace:
            for pod in self.client.list(PODS, namespace,
                                        label_selector=substrate.label_selector_query(selector)):
                labels = _labels(pod)
                if (substrate.matches_selector(labels, selector)
                        and all(labels.get(key) == value for key, value in own.items())):
                    return Refusal("operator's own pods",
                                   f"the selector matches the operator's pod "
                                   f"{_meta(pod).get('name')}: choose a selector that does not")
        targets = substrate.resolve_targets(self.client, experiment, settings)
        if not targets:
            return Refusal("targets",
                           f"no Running and Ready pod in namespace {namespace} matches the "
                           f"selector {substrate.label_selector_query(selector)}")
        if len(targets) > settings.max_target_pods:
            return Refusal("target cap",
                           f"it would hit {len(targets)} pods, more than the cap of "
                           f"{settings.max_target_pods}: lower spec.target.mode/value or raise "
                           "PGGIT_CHAOS_MAX_TARGET_PODS (the chart's maxTargetPods)")
        account = settings.runner_service_account
        if self.client.find(SERVICE_ACCOUNTS, namespace, account) is None:
            # Refused rather than made here: creating ServiceAccounts and RoleBindings in any
            # namespace would need the operator to hold every permission of the runner's Role
            # everywhere (RBAC's escalation check); the chart grants per listed namespace.
            return Refusal("runner identity",
                           f"the runner's ServiceAccount {account} does not exist in namespace "
                           f"{namespace}, so its Job could not start a pod: the chart creates "
                           "it (with the runner's Role) only in the namespaces of its "
                           f"`namespaces` value, also with watchAllNamespaces: add {namespace} "
                           "there (helm upgrade --reuse-values --set "
                           f"'namespaces={{...,{namespace}}}')")
        return targets

    # -- the runner ----------------------------------------------------------------------------
    def _watch_runner(self, body: Body) -> None:
        meta, status = _meta(body), _status(body)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        job_name = str(status["runnerJob"])
        job = self.client.find(JOBS, namespace, job_name)
        pods = self._runner_pods(body, job_name)
        if job is None:
            fresh = self._get(namespace, name)
            if fresh is not None and _status(fresh).get("phase") not in TERMINAL:
                self._runner_died(fresh, f"runner Job {job_name} is gone")
            return
        finished = _job_condition(job)
        if finished is None:
            for pod in pods:
                stuck = _waiting(pod)
                if stuck is not None:
                    self.client.delete(JOBS, namespace, job_name)
                    reason, message = stuck
                    self._runner_died(body, f"runner pod {_meta(pod).get('name')} cannot start: "
                                            f"{reason}: {message}".rstrip(": "))
                    return
            if not pods:
                self._failed_create(body, job)
            return
        fresh = self._get(namespace, name)  # the runner may have written its verdict meanwhile
        if fresh is None or _status(fresh).get("phase") in TERMINAL:
            return
        kind, detail = finished
        if kind == "Complete":
            self._runner_died(fresh, f"runner Job {job_name} ended without a verdict")
            return
        codes = [code for code in (_exit_code(pod) for pod in pods) if code is not None]
        if codes:
            why = f"runner pod failed (exit {codes[-1]})"
        else:
            why = f"runner Job {job_name} failed" + (f" ({detail})" if detail else "")
        self._runner_died(fresh, why)

    def _failed_create(self, body: Body, job: Mapping[str, Any]) -> None:
        """Say at once in status why the runner Job has no pod: the Job controller's
        ``FailedCreate`` Events on it (a missing ServiceAccount, a quota, PodSecurity). A Job
        controller sets no condition for these; it retries until the Job's deadline, and so
        the experiment stays Pending, saying why."""
        meta = _meta(job)
        job_name = str(meta["name"])
        why = failed_create(self.client, dict(job))
        if why is None:
            return
        message = _clip(f"runner Job {job_name} cannot create its pod (FailedCreate): {why}; "
                        "the Job controller retries until the Job's deadline")
        if _status(body).get("message") == message:
            return
        self._patch_status(body, {"message": message})
        run = str(_status(body).get("runId") or _meta(body).get("uid") or "")
        self._post(body, "RunnerFailedCreate", "Warning", message,
                   key=f"{run[:8]}-failedcreate-{uuid.uuid5(uuid.NAMESPACE_OID, message).hex[:8]}")

    def _runner_died(self, body: Body, why: str) -> None:
        """The runner is gone without a verdict: revert its fault from the intent; Error."""
        intent = _status(body).get("faultIntent")
        if isinstance(intent, dict) and intent:
            done = self._revert(body, intent, why)
            message = f"{why} mid-fault; fault reverted from its intent ({done})"
        else:
            message = why
        self._finish(body, "Error", message)

    def _runner_jobs(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """This experiment's runner Jobs (labelled, owned by its uid), oldest first."""
        meta = _meta(body)
        namespace, uid = str(meta["namespace"]), meta.get("uid")
        name = builders.experiment_label_value(str(meta["name"]))
        jobs = []
        for job in self.client.list(JOBS, namespace, label_selector=names.selector(
                {names.EXPERIMENT_LABEL: name, names.ROLE_LABEL: names.ROLE_RUNNER})):
            labels = _labels(job)
            if (labels.get(names.EXPERIMENT_LABEL) != name
                    or labels.get(names.ROLE_LABEL) != names.ROLE_RUNNER):
                continue
            owners = [ref.get("uid") for ref in _meta(job).get("ownerReferences") or []]
            if uid and owners and uid not in owners:
                continue  # an earlier experiment of the same name
            jobs.append(job)
        return sorted(jobs, key=lambda j: str(_meta(j).get("creationTimestamp") or ""))

    def _runner_pods(self, body: Mapping[str, Any], job_name: str | None = None,
                     ) -> list[dict[str, Any]]:
        meta = _meta(body)
        namespace = str(meta["namespace"])
        name = builders.experiment_label_value(str(meta["name"]))
        pods = []
        for pod in self.client.list(PODS, namespace, label_selector=names.selector(
                {names.EXPERIMENT_LABEL: name, names.ROLE_LABEL: names.ROLE_RUNNER})):
            labels = _labels(pod)
            if (labels.get(names.EXPERIMENT_LABEL) != name
                    or labels.get(names.ROLE_LABEL) != names.ROLE_RUNNER):
                continue
            if job_name and labels.get("job-name", job_name) != job_name:
                continue
            pods.append(pod)
        return pods

    # -- rerun -----------------------------------------------------------------------------------
    def _rerun(self, body: Body) -> None:
        """Run a finished experiment again: its run goes into ``status.history`` (newest
        first, at most :data:`HISTORY_LIMIT`), its Jobs are deleted, the rest of the status is
        cleared and the phase is Pending, so that it is admitted as a new run (new run id,
        gates, runner Job). The abort and stopping annotations of the last run are removed."""
        meta, status = _meta(body), _status(body)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        value = _annotations(body)[names.RERUN_ANNOTATION]
        past = PastRunStatus.model_validate(status).model_dump(
            mode="json", by_alias=True, exclude_none=True)
        history = [past, *[run for run in status.get("history") or [] if isinstance(run, dict)]]
        jobs = {str(_meta(job)["name"]) for job in self._runner_jobs(body)}
        jobs |= {str(status[key]) for key in ("runnerJob", "verificationJob") if status.get(key)}
        for job in sorted(jobs):
            self.client.delete(JOBS, namespace, job, propagation="Background")
        stale = {key: None for key in (names.ABORT_ANNOTATION, STOPPING_ANNOTATION)
                 if key in _annotations(body)}
        if stale:
            self.client.patch(EXPERIMENTS, namespace, name,
                              {"metadata": {"annotations": stale}})
        for dropped in history[HISTORY_LIMIT:]:
            self._delete_journal(namespace, name, dropped)
        patch: dict[str, Any] = {field: None for field in _RUN_FIELDS}
        was = past.get("verdict") or past.get("phase") or "no verdict"
        patch.update({
            "targets": [], "conditions": [], "history": history[:HISTORY_LIMIT],
            "rerun": value, "phase": "Pending",
            "message": _clip(f"run again ({names.RERUN_ANNOTATION}={value}); the previous run "
                             f"({past.get('runId') or 'not started'}: {was}) is in "
                             "status.history"),
            "observedGeneration": meta.get("generation")})
        self._patch_status(body, patch)
        self._post(body, "Rerun", "Normal", str(patch["message"]),
                   key=f"rerun-{uuid.uuid5(uuid.NAMESPACE_OID, value).hex[:12]}")

    def _delete_journal(self, namespace: str, experiment: str, run: Mapping[str, Any]) -> None:
        """Delete the journal ConfigMap of a run no longer in ``status.history`` and the parts
        of its history (``<journal>-1``, ``-2``, ... up to the first one not there): a
        rerun experiment would otherwise keep every run's journal, up to 8 MB each, until it
        is deleted. Only the name the runner gives that run's journal (a status naming any
        other ConfigMap deletes nothing), and only the ``delete`` verb."""
        name = run.get("journalConfigMap")
        run_id = run.get("runId")
        if not (isinstance(name, str) and isinstance(run_id, str) and run_id
                and name == names.journal_config_map_name(experiment, run_id)):
            return
        self.client.delete(CONFIG_MAPS, namespace, name)
        number = 1
        while self.client.delete(CONFIG_MAPS, namespace, names.journal_part_name(name, number)):
            number += 1

    # -- stop: delete and abort ----------------------------------------------------------------
    def _stop(self, body: Body, elapsed: float) -> str:
        """Delete the runner (it gets SIGTERM and reverts), wait for it, revert what is left."""
        meta, status = _meta(body), _status(body)
        namespace = str(meta["namespace"])
        jobs = {str(_meta(job)["name"]) for job in self._runner_jobs(body)}
        for key in ("runnerJob", "verificationJob"):
            if status.get(key):
                jobs.add(str(status[key]))
        for job in sorted(jobs):
            self.client.delete(JOBS, namespace, job, propagation="Background")
        intent = status.get("faultIntent")
        if not (isinstance(intent, dict) and intent):
            return "no fault left"
        alive = [pod for pod in self._runner_pods(body) if _alive(pod)]
        if alive and elapsed < self.stop_timeout:
            raise Retry(f"waiting for runner pod {_meta(alive[0]).get('name')} to revert its "
                        f"fault ({elapsed:.0f} of {self.stop_timeout:.0f} s)")
        why = ("the runner did not revert it within " f"{self.stop_timeout:.0f} s" if alive
               else "the runner is gone")
        return self._revert(body, intent, why)

    def _abort(self, body: Body) -> None:
        meta = _meta(body)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        if not _status(body).get("runnerJob") and not self._runner_jobs(body):
            self._finish(body, "Aborted", "aborted by annotation before it started")
            return
        since = parse_time(_annotations(body).get(STOPPING_ANNOTATION))
        if since is None:
            since = self.clock()
            body = self.client.patch(EXPERIMENTS, namespace, name, {"metadata": {
                "annotations": {STOPPING_ANNOTATION: _rfc3339(since)}}})
        elapsed = (self.clock() - since).total_seconds()
        try:
            self._stop(body, elapsed)
        except Retry:
            return  # the timer and the runner pod's events bring us back
        if elapsed < self.stop_timeout and any(_alive(pod) for pod in self._runner_pods(body)):
            # Its fault is reverted; the stopped runner still writes its own terminal phase
            # (what it reverted, its workload's counts, the journal): ended here only when it
            # does not within stop_timeout.
            return
        fresh = self._get(namespace, name)
        if fresh is not None and _status(fresh).get("phase") not in TERMINAL:
            self._finish(fresh, "Aborted", "aborted by annotation")

    # -- expiry and leftovers -------------------------------------------------------------------
    def _expire(self, body: Body) -> Body | None:
        """An intent past its ``expiresAt``: revert it; Error if its runner is gone too."""
        status = _status(body)
        intent = status.get("faultIntent")
        if not (isinstance(intent, dict) and intent):
            return body
        expires = parse_time(intent.get("expiresAt"))
        if expires is None or expires >= self.clock():
            return body
        done = self._revert(body, intent, f"it expired at {intent.get('expiresAt')}")
        meta = _meta(body)
        fresh = self._get(str(meta["namespace"]), str(meta["name"]))
        if (fresh is not None and _status(fresh).get("phase") not in TERMINAL
                and self._runner_gone(fresh)):
            self._finish(fresh, "Error", f"fault expired at {intent.get('expiresAt')} and its "
                                         f"runner is gone; reverted from its intent ({done})")
        return self._get(str(meta["namespace"]), str(meta["name"]))

    def _revert_leftover(self, body: Body) -> Body | None:
        """A finished experiment still holding an intent whose runner is gone: revert it."""
        intent = _status(body).get("faultIntent")
        if not (isinstance(intent, dict) and intent) or not self._runner_gone(body):
            return body
        self._revert(body, intent, "the experiment finished with its fault still recorded")
        meta = _meta(body)
        return self._get(str(meta["namespace"]), str(meta["name"]))

    def _runner_gone(self, body: Mapping[str, Any]) -> bool:
        job_name = _status(body).get("runnerJob")
        if not job_name:
            return True
        job = self.client.find(JOBS, str(_meta(body)["namespace"]), str(job_name))
        return job is None or _job_condition(job) is not None

    def _revert(self, body: Body, intent: Mapping[str, Any], why: str) -> str:
        """Revert from the intent alone, clear it, post ``FaultReverted``; what was done."""
        meta = _meta(body)
        namespace = str(meta["namespace"])
        # A scenario's intents (faultIntents; faultIntent is the first of them): every one,
        # the last recorded first, as the runner would have reverted them.
        listed = _status(body).get("faultIntents")
        intents = [i for i in listed if isinstance(i, dict) and i] \
            if isinstance(listed, list) else []
        if not any(i.get("id") == intent.get("id") for i in intents):
            intents.insert(0, dict(intent))
        done = "; ".join(faults.revert_intent(self.client, namespace, each)
                         for each in reversed(intents))
        now = _rfc3339(self.clock())
        patch: dict[str, Any] = {"faultIntent": None}
        if listed:
            patch["faultIntents"] = None
        if not _status(body).get("revertedAt"):
            patch["revertedAt"] = now
        conditions = _status(body).get("conditions")
        if isinstance(conditions, list) and any(
                isinstance(c, dict) and c.get("type") == "FaultActive" for c in conditions):
            # The runner's last word may be FaultActive True (it died, or its revert failed).
            message = f"{' and '.join(str(i.get('type') or 'fault') for i in intents)} " \
                f"reverted by the operator: {done}"
            patch["conditions"] = [
                {**c, "status": "False", "reason": "RevertedByOperator",
                 "lastTransitionTime": now, "message": message[:1024]}
                if isinstance(c, dict) and c.get("type") == "FaultActive" else c
                for c in conditions]
        self._patch_status(body, patch)
        run = str(_status(body).get("runId") or meta.get("uid") or "")
        what = " and ".join(str(each.get("type") or "fault") for each in intents)
        self._post(body, "FaultReverted", "Normal",
                   f"{what} reverted by the operator because {why}: {done}",
                   key=f"{run[:8]}-reverted-{str(intent.get('id') or '')[:8]}")
        self._remember(body, ["FaultReverted"])
        self.observe({**body, "status": {**_status(body), "faultIntent": None}})
        return done

    # -- status, Events, metrics ----------------------------------------------------------------
    def _finish(self, body: Body, phase: str, message: str, *, reason: str | None = None,
                type_: str = "Warning") -> None:
        """End the experiment in ``phase`` with ``message``; an Event names the reason.

        The Event goes first: if the API server refuses the status write (422: an object
        stored under an older schema that the current one rejects), the user still sees why,
        and this version of the object is not tried again by this process.
        """
        if reason is not None:
            run = str(_status(body).get("runId") or _meta(body).get("uid") or "")
            self._post(body, reason, type_, message, key=f"{run[:8]}-{reason.lower()}")
        patch: dict[str, Any] = {"phase": phase, "message": _clip(message),
                                 "observedGeneration": _meta(body).get("generation")}
        if not _status(body).get("finishedAt"):
            patch["finishedAt"] = _rfc3339(self.clock())
        try:
            self._patch_status(body, patch)
        except ApiError as exc:
            if exc.status != 422:
                raise
            self._refused_status(body, exc, posted=reason is not None)
            return
        if reason is not None:
            # The refusal's own Event stands for the phase's.
            self._remember(body, [PHASE_REASONS[phase][0]])

    def _refused_status(self, body: Body, exc: ApiError, *, posted: bool = False) -> None:
        """The server answered 422 to a status write: say so once (an Event unless one was
        just posted, and the log) and leave this version of the object alone."""
        self._unwritable.add(_version(body))
        if not posted:
            run = str(_status(body).get("runId") or _meta(body).get("uid") or "")
            self._post(body, "InvalidSpec", "Warning",
                       f"the API server refuses this experiment's status ({exc.api_message}): "
                       "apply it again under the installed CRD", key=f"{run[:8]}-invalidspec")
        _log.warning("%s/%s: the API server refuses its status (%s); not retried until "
                     "the object changes", _meta(body).get("namespace"),
                     _meta(body).get("name"), exc.api_message)

    def _mirror(self, body: Body) -> None:
        """Post the Events the status implies and count a finished run, each once."""
        status = _status(body)
        meta = _meta(body)
        run = str(status.get("runId") or meta.get("uid") or "")
        record = Mirrored.load(body, run)
        changed = False
        for reason, type_, message in event_reasons(status, _fault_type(body)):
            if reason in record.posted:
                continue
            self._post(body, reason, type_, message, key=f"{run[:8]}-{reason.lower()}")
            record.posted.append(reason)
            changed = True
        if status.get("phase") in TERMINAL and not record.counted:
            self.metrics.record_status(run, _fault_type(body), status,
                                       schedule=_labels(body).get(SCHEDULE_LABEL, ""))
            record.counted = True
            changed = True
        if changed:
            self._write_mirrored(body, record)

    def _remember(self, body: Body, reasons: list[str]) -> None:
        meta = _meta(body)
        fresh = self._get(str(meta["namespace"]), str(meta["name"])) or body
        status = _status(fresh)
        run = str(status.get("runId") or meta.get("uid") or "")
        record = Mirrored.load(fresh, run)
        new = [reason for reason in reasons if reason not in record.posted]
        if new:
            record.posted.extend(new)
            self._write_mirrored(fresh, record)

    def _write_mirrored(self, body: Body, record: Mirrored) -> None:
        meta = _meta(body)
        try:
            self.client.patch(EXPERIMENTS, str(meta["namespace"]), str(meta["name"]),
                              {"metadata": {"annotations": {MIRRORED_ANNOTATION: record.dump()}}})
        except ApiError as exc:
            if not exc.not_found:
                raise

    def _post(self, body: Mapping[str, Any], reason: str, type_: str, message: str,
              key: str) -> None:
        """Create an Event with a name derived from ``key``: posting twice is a no-op (409)."""
        post_event(self.client, body, reason, type_, _clip(message), key, self.clock(), COMPONENT)

    def _patch_status(self, body: Mapping[str, Any], patch: dict[str, Any]) -> None:
        """Patch the status; with it ``fault`` (the printer column), when not yet right."""
        meta = _meta(body)
        label = fault_label(body.get("spec"))
        if label and _status(body).get("fault") != label and "fault" not in patch:
            patch = {**patch, "fault": label}
        self.client.patch(EXPERIMENTS, str(meta["namespace"]), str(meta["name"]),
                          {"status": patch}, subresource="status")

    def _publish_active(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fault in self._active.values():
            counts[fault] = counts.get(fault, 0) + 1
        self.metrics.set_active_faults(counts)
        return counts

    # -- plumbing ---------------------------------------------------------------------------
    def _get(self, namespace: str, name: str) -> Body | None:
        return self.client.find(EXPERIMENTS, namespace, name)

    def _namespaces(self) -> list[str | None]:
        allowlist = self.settings.namespace_allowlist()
        return list(allowlist) if allowlist else [None]

    def _holding_fault(self, namespace: str | None) -> dict[tuple[str, str], str]:
        """(namespace, experiment label value) -> name of every experiment that may hold a
        fault: not finished, or an intent in its status."""
        holding: dict[tuple[str, str], str] = {}
        for body in self.client.list(EXPERIMENTS, namespace):
            status, meta = _status(body), _meta(body)
            if status.get("phase") not in TERMINAL or status.get("faultIntent"):
                name = str(meta.get("name") or "")
                where = str(meta.get("namespace") or namespace or "")
                holding[where, builders.experiment_label_value(name)] = name
        return holding

    @contextmanager
    def _lock(self, namespace: str, name: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield


def _version(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(body)
    return str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")


def _job_run_id(job: Mapping[str, Any]) -> str | None:
    """The run id a runner Job carries (annotation, else its container's environment)."""
    annotated = _annotations(job).get(builders.RUN_ID_ANNOTATION)
    if annotated:
        return str(annotated)
    template = (job.get("spec") or {}).get("template") or {}
    for container in (template.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == names.ENV_RUN_ID and env.get("value"):
                return str(env["value"])
    return None
