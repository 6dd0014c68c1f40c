"""The runner Job: one experiment, run inside the cluster with the Kubernetes substrate.

``pggit-chaos run --in-cluster NAMESPACE/NAME`` (the container command the operator's runner Job
gets) calls :func:`run_in_cluster`. It reads the experiment through the API, runs the same
engine as a local run, patches the experiment's status at every phase (progress at most every
``status_interval`` seconds; the fault intent before injection), starts the verification Job
and reads its results back, writes the compressed journal into a ConfigMap owned by the
experiment, and removes its workload from the target database. SIGTERM (the Job deleted, the
experiment deleted or aborted) cancels the run: the fault is reverted first, then the status
says why the run ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pggit_chaos.engine.journal import ChecksSummary, Journal, Phase
from pggit_chaos.engine.lifecycle import Progress, Run, execute_until_signalled
from pggit_chaos.errors import ChaosError, ConfigurationError, InvalidExperiment, message_of
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import (
    CONFIG_MAPS,
    EXPERIMENTS,
    JOBS,
    PODS,
    ApiError,
    KubeClient,
    failed_create,
)
from pggit_chaos.kube.handback import summary_from_dict
from pggit_chaos.kube.substrate import KubeSubstrate
from pggit_chaos.pggit import mask_dsn
from pggit_chaos.spec.model import fault_label
from pggit_chaos.spec.status import ExperimentStatus

if TYPE_CHECKING:
    from pggit_chaos.config import Settings
    from pggit_chaos.engine.history import History
    from pggit_chaos.spec import Experiment

__all__ = ["StatusWriter", "VerificationJobs", "run_in_cluster"]

#: Exit codes of the runner: a terminal phase was written to status / it could not be.
EXIT_DONE, EXIT_BROKEN = 0, 1
#: Seconds of workload before the injection in a cluster: the workload connects over the
#: network from its own pod and may take a second to its first acknowledgement, and a fault
#: whose evidence is a stall (pod-pause, network-partition) proves nothing against a baseline
#: that acknowledged nothing.
BASELINE_SECONDS = 2.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    """Merge patches of the experiment's ``status`` subresource, progress rate-limited."""

    def __init__(self, client: KubeClient, namespace: str, name: str, interval: float) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.interval = interval
        self._last_progress = 0.0
        self._lock = threading.Lock()
        #: Patches that failed (the run goes on; the final patch retries the whole status).
        self.failures: list[str] = []

    def patch(self, status: dict[str, Any]) -> None:
        """Patch now; raises when the API refuses (the intent must be stored before injection)."""
        with self._lock:
            self.client.patch(EXPERIMENTS, self.namespace, self.name, {"status": status},
                              subresource="status")

    def patch_quietly(self, status: dict[str, Any]) -> None:
        try:
            self.patch(status)
        except ChaosError as exc:
            self.failures.append(str(exc))

    def progress(self, status: dict[str, Any]) -> None:
        """Patch at most every ``interval`` seconds."""
        now = time.monotonic()
        if now - self._last_progress < self.interval:
            return
        self._last_progress = now
        self.patch_quietly(status)


def journal_status(journal: Journal) -> dict[str, Any]:
    """The status fields the runner owns, from the journal (the substrate owns faultIntent)."""
    raw = journal.to_status()
    raw.pop("faultIntent", None)
    typed = ExperimentStatus.model_validate(raw)
    status: dict[str, Any] = typed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    status["message"] = journal.reason or None
    label = fault_label((journal.spec or {}).get("spec"))
    if label:  # kubectl's Fault column (the operator writes it too, from the same spec)
        status["fault"] = label
    return status


class StatusObserver:
    """The engine's observer: every phase and (rate-limited) progress into status."""

    def __init__(self, writer: StatusWriter) -> None:
        self.writer = writer
        self.history: History | None = None

    def on_phase(self, journal: Journal) -> None:
        if journal.current_phase.terminal:
            # The terminal phase is written last, by the runner, once the journal ConfigMap
            # exists: whoever sees Passed/Failed can fetch the report at once.
            return
        self.writer.patch_quietly(journal_status(journal))

    def on_progress(self, progress: Progress) -> None:
        if self.history is None:
            return
        counts = self.history.counts()
        self.writer.progress({"workload": {
            "invoked": counts.invoked, "ok": counts.ok, "failed": counts.failed,
            "indeterminate": counts.indeterminate}})


class VerificationJobs:
    """The engine's ChecksRunner in a cluster: a verification Job, its results read back."""

    def __init__(self, client: KubeClient, body: dict[str, Any], run_id: str,
                 settings: Settings, writer: StatusWriter) -> None:
        self.client = client
        self.body = body
        self.run_id = run_id
        self.settings = settings
        self.writer = writer

    def __call__(self, dsn: str, experiment: Experiment) -> ChecksSummary:
        uid = str(self.body["metadata"]["uid"])
        job = builders.verification_job(experiment, uid, self.run_id, self.settings)
        name = str(job["metadata"]["name"])
        namespace = experiment.namespace
        try:
            self.client.create(JOBS, namespace, job)
        except ApiError as exc:
            if not exc.conflict:
                raise
        self.writer.patch_quietly({"verificationJob": name})
        profile = experiment.spec.verification.hypothesis_profile
        deadline = time.monotonic() + experiment.spec.verification.timeout.seconds + 120
        state = ""
        surfaced = ""  # the Job controller's FailedCreate, said in status at once
        next_look = time.monotonic()
        while time.monotonic() < deadline:
            current = self.client.find(JOBS, namespace, name)
            if current is None:
                return _could_not_run(f"verification Job {name} was deleted", profile)
            state = _job_state(current)
            if state:
                break
            if not (current.get("status") or {}).get("active") and time.monotonic() >= next_look:
                next_look = time.monotonic() + 5.0
                why = failed_create(self.client, current)
                if why is not None and why != surfaced:
                    surfaced = why
                    self.writer.patch_quietly({"message": (
                        f"verification Job {name} cannot create its pod (FailedCreate): {why}; "
                        "the Job controller retries until the verification timeout")[:1024]})
            time.sleep(1.0)
        else:
            self.client.delete(JOBS, namespace, name)
            why = f" (FailedCreate: {surfaced})" if surfaced else ""
            return _could_not_run(f"verification Job {name} did not finish in time{why}",
                                  profile)
        results = self._read_results(namespace, name, experiment)
        if results is not None:
            return summary_from_dict(results, profile)
        return _could_not_run(f"verification Job {name} ended {state} without results "
                              f"({self._pod_reason(namespace, name)})", profile)

    def _read_results(self, namespace: str, job: str,
                      experiment: Experiment) -> dict[str, Any] | None:
        config_map = self.client.find(
            CONFIG_MAPS, namespace, names.checks_config_map_name(experiment.name, self.run_id))
        if config_map is not None and names.CHECKS_KEY in (config_map.get("data") or {}):
            data: dict[str, Any] = json.loads(config_map["data"][names.CHECKS_KEY])
            return data
        for pod in self.client.list(PODS, namespace, label_selector=f"job-name={job}"):
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                message = ((container.get("state") or {}).get("terminated") or {}).get("message")
                if message:
                    try:
                        decoded: dict[str, Any] = json.loads(message)
                        return decoded
                    except ValueError:
                        continue
        return None

    def _pod_reason(self, namespace: str, job: str) -> str:
        for pod in self.client.list(PODS, namespace, label_selector=f"job-name={job}"):
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                state = container.get("state") or {}
                detail = state.get("terminated") or state.get("waiting") or {}
                if detail:
                    return " ".join(str(detail.get(k, "")) for k in ("reason", "exitCode",
                                                                     "message")).strip()
        return "no pod"


def _job_state(job: dict[str, Any]) -> str:
    """``Complete`` or ``Failed`` once the Job has finished, else ``""``."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return ""


def _could_not_run(reason: str, profile: str) -> ChecksSummary:
    from pggit_chaos.engine.journal import CheckFailureSummary

    return ChecksSummary(errors=1, profile=profile, failures=[
        CheckFailureSummary(name="verification-job", message=reason, outcome="error")])


def _aborted(client: KubeClient, namespace: str, name: str) -> bool:
    try:
        body = client.get(EXPERIMENTS, namespace, name)
    except ChaosError:
        return False
    annotations = body.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(names.ABORT_ANNOTATION, "")).lower() == "true"


def run_in_cluster(ref: str, run_id: str | None, settings: Settings,
                   client: KubeClient | None = None) -> int:
    """Run the experiment ``NAMESPACE/NAME`` to a terminal phase in its status."""
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ConfigurationError(f"--in-cluster takes NAMESPACE/NAME, not {ref!r}")
    client = client or KubeClient.from_environment()
    writer = StatusWriter(client, namespace, name, settings.status_interval)
    body = client.get(EXPERIMENTS, namespace, name)
    status = body.get("status") or {}
    if status.get("phase") in ("Passed", "Failed", "Inconclusive", "Aborted", "Error"):
        print(f"{ref} already ended in phase {status['phase']}: nothing to do")
        return EXIT_DONE
    run_id = run_id or os.environ.get(names.ENV_RUN_ID) or status.get("runId")
    try:
        from pggit_chaos.spec import load_experiment_object

        experiment = load_experiment_object(body, f"{ref}")
    except InvalidExperiment as exc:
        writer.patch_quietly({"phase": "Error", "message": message_of(exc)[:1024],
                              "finishedAt": _now()})
        print(f"pggit-chaos: error: {exc}", file=sys.stderr)
        return EXIT_DONE
    dsn = os.environ.get(names.ENV_DSN, "")
    if not dsn:
        writer.patch_quietly({"phase": "Error", "finishedAt": _now(), "message":
                              f"no database connection string: {names.ENV_DSN} is not set "
                              "(spec.target.databaseSecretRef)"})
        return EXIT_DONE
    uid = str(body["metadata"]["uid"])
    observer = StatusObserver(writer)
    substrate = KubeSubstrate(client, settings, dsn, uid, run_id or "", writer.patch)
    run = Run(experiment, substrate, None, observer, run_id=run_id, baseline=BASELINE_SECONDS)
    substrate.run_id = run.run_id
    run.checks_runner = VerificationJobs(client, body, run.run_id, settings, writer)
    observer.history = run.history
    print(f"runner {run.run_id}: {ref}, fault {experiment.spec.fault.type}, "
          f"database {mask_dsn(dsn)}", flush=True)
    from pggit_chaos.target_cleanup import lease, remove_run

    interrupted = False
    try:
        with lease(dsn, run.run_id):
            asyncio.run(execute_until_signalled(run))
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = True
    except ChaosError as exc:
        if not run.journal.current_phase.terminal:
            run.journal.finish(Phase.Error, message_of(exc), error=str(exc))
    except Exception as exc:  # a defect: the status still says so
        if not run.journal.current_phase.terminal:
            run.journal.finish(Phase.Error, message_of(exc),
                               error="".join(traceback.format_exception(exc)))
    finally:
        substrate.close()  # the latency proxy of network-latency, if any
    journal = run.journal
    if interrupted and _aborted(client, namespace, name):
        journal.finish(Phase.Aborted, "aborted by the annotation "
                       f"{names.ABORT_ANNOTATION}: fault reverted")
    elif interrupted:
        # The engine ended the run "interrupted"; the user is told by what (the runner's pod
        # or Job deleted: the experiment deleted, or someone else) and what became of the fault.
        done = "fault reverted" if journal.injected_at is not None else "nothing was injected"
        journal.finish(Phase.Error, f"runner interrupted (SIGTERM): {done}")
    final = journal_status(journal)
    final["runId"] = run.run_id
    if journal.reverted_at is not None:
        # The revert is confirmed (the engine cleared the intent then: this repeats it in case
        # that patch failed). After a failed revert the intent stays in status, so that the
        # operator reverts the fault from it; the conditions say FaultActive RevertFailed.
        final["faultIntent"] = None
        if journal.fault_steps:  # a scenario: every fault's revert confirmed
            final["faultIntents"] = None
    problems = _store_journal(client, body, journal, run.history,
                              settings.history_max_bytes)
    try:
        writer.patch(final)
    except ChaosError as exc:
        problems.append(f"final status: {exc}")
    try:
        remove_run(dsn, run.run_id)
    except Exception as exc:
        problems.append(f"removing the workload: {message_of(exc)}")
    _push_metrics(journal, settings, problems)
    for problem in problems:
        print(f"pggit-chaos: warning: {problem}", file=sys.stderr)
    print(f"{ref}: {journal.current_phase.value}: {journal.reason}", flush=True)
    return EXIT_DONE if "final status" not in " ".join(problems) else EXIT_BROKEN


def _store_journal(client: KubeClient, body: dict[str, Any], journal: Journal,
                   history: History, history_max_bytes: int = 8_000_000) -> list[str]:
    """The journal into the run's journal ConfigMap and its workload history beside it (in
    parts when large, :func:`builders.journal_config_maps`). Returns the problems: a journal
    that cannot be stored is a warning of the run, never its verdict."""
    namespace = str(body["metadata"]["namespace"])
    name = str(body["metadata"]["name"])
    cm_name = names.journal_config_map_name(name, journal.run_id)
    try:
        config_maps = builders.journal_config_maps(
            name, namespace, body, journal.to_json(indent=None),
            history.to_jsonl_gzip() if history.ops else None,
            run_id=journal.run_id, history_max_bytes=history_max_bytes)
        # The parts first: the journal's names them. Each run has its own names and its
        # runner Job never restarts (backoffLimit 0), so nothing is there to overwrite.
        for config_map in config_maps:
            client.create(CONFIG_MAPS, namespace, config_map)
        client.patch(EXPERIMENTS, namespace, name, {"status": {"journalConfigMap": cm_name}},
                     subresource="status")
    except ChaosError as exc:
        return [f"journal ConfigMap {cm_name}: {exc}"]
    return []


def _push_metrics(journal: Journal, settings: Settings, problems: list[str]) -> None:
    """With ``PGGIT_CHAOS_PUSHGATEWAY``: push this run's metrics, as batch jobs do."""
    if not settings.pushgateway:
        return
    from prometheus_client import CollectorRegistry, push_to_gateway

    from pggit_chaos.metrics import record_journal

    registry = CollectorRegistry()
    record_journal(journal, registry)
    try:
        push_to_gateway(settings.pushgateway, job="pggit-chaos-runner", registry=registry,
                        grouping_key={"experiment": f"{journal.namespace}/{journal.experiment}"})
    except OSError as exc:
        problems.append(f"pushgateway {settings.pushgateway}: {exc}")
