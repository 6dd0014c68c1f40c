"""Names shared by the operator, the runner Job, the builders and the chart: the contract.

Labels, annotations, object names and environment variables in one place, so that what the
operator creates the runner can find (and a sweep can find both after a crash). Pure: no I/O.
"""

from __future__ import annotations

import hashlib

from pggit_chaos.spec.model import GROUP, VERSION

#: What a refusal of an exec fault (pod-pause, disk-pressure) tells the user to set: the chart's
#: switch and the operator's setting it becomes (``exec.enabled`` -> ``allow_exec``).
EXEC_SWITCH = "set exec.enabled=true in the chart (PGGIT_CHAOS_ALLOW_EXEC=true)"

#: The experiment resource, as (group, version, plural).
EXPERIMENTS = (GROUP, VERSION, "pggitchaosexperiments")
#: The schedule resource, as (group, version, plural).
SCHEDULES = (GROUP, VERSION, "pggitchaosschedules")

#: Label on every object pggit-chaos creates for an experiment (Jobs, ConfigMaps, policies)
#: and on partitioned pods: the experiment's name.
EXPERIMENT_LABEL = f"{GROUP}/experiment"
#: Label naming what an object is for: runner | verification | journal | checks | partition.
ROLE_LABEL = f"{GROUP}/role"
#: Label on every object pggit-chaos creates: marks it as ours for sweeps.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "pggit-chaos"
#: The target namespace opts in with this label set to "true".
NAMESPACE_OPT_IN_LABEL = f"{GROUP}/enabled"
#: Annotation that stops a running experiment (value "true"): it ends in phase Aborted.
ABORT_ANNOTATION = f"{GROUP}/abort"
#: Annotation that runs a finished experiment again: any value not acted on before
#: (``status.rerun`` holds the last one); the finished run is kept in ``status.history``.
RERUN_ANNOTATION = f"{GROUP}/rerun"
#: Annotation on fault objects (NetworkPolicies): RFC 3339 time after which they are stale.
EXPIRES_AT_ANNOTATION = f"{GROUP}/expires-at"
#: Label put on pods that a network-partition isolates; its value is the experiment's name.
PARTITION_LABEL = f"{GROUP}/partitioned-by"
#: The operator's finalizer on experiments.
FINALIZER = f"{GROUP}/revert-faults"
#: The ``undo.kind`` values of intents written by the Kubernetes substrate.
UNDO_POD_KILL = "kube-pod-kill"
UNDO_RESIZE = "kube-resize"
UNDO_NETWORK_POLICY = "kube-network-policy"
UNDO_POD_PAUSE = "kube-pod-pause"

#: Roles (values of :data:`ROLE_LABEL`).
ROLE_RUNNER = "runner"
ROLE_VERIFICATION = "verification"
ROLE_JOURNAL = "journal"
ROLE_CHECKS = "checks"
ROLE_PARTITION = "partition"

#: Environment of the runner and verification Jobs.
ENV_DSN = "PGGIT_CHAOS_DSN"
"""The database connection string, from ``spec.target.databaseSecretRef`` (secretKeyRef)."""
ENV_EXPERIMENT = "PGGIT_CHAOS_EXPERIMENT"
"""``NAMESPACE/NAME`` of the experiment the Job works for."""
ENV_RUN_ID = "PGGIT_CHAOS_RUN_ID"
ENV_POD_NAME = "PGGIT_CHAOS_POD_NAME"
"""The Job pod's own name (downward API), e.g. for the runner's logs."""

#: The container name in the runner and verification Jobs.
CONTAINER = "pggit-chaos"
#: Where the verification Job writes its results (read back from its termination message).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: ConfigMap key of the compressed journal (gzip + base64 in ``binaryData``).
JOURNAL_KEY = "journal.json.gz"
#: ConfigMap key of a run's gzipped workload history (history.jsonl), or of one part of it.
HISTORY_KEY = "history.jsonl.gz"
#: Journal ConfigMap key naming, as a JSON list in order, the ConfigMaps holding the parts
#: of a history too large to share the journal's.
HISTORY_PARTS_KEY = "history-parts"
#: Journal ConfigMap key saying why the run's history was not kept.
HISTORY_NOTE_KEY = "history-note"
#: ConfigMap key of the checks' results (checks.json).
CHECKS_KEY = "checks.json"


def _bounded(base: str, suffix: str, limit: int = 63) -> str:
    """``base-suffix`` within ``limit`` chars; a long base is cut and keeps a hash of itself."""
    name = f"{base}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-.')}-{digest}-{suffix}"


def runner_job_name(experiment: str, run_id: str) -> str:
    """The runner Job of one run of ``experiment``: ``<name>-run-<run_id[:8]>``."""
    return _bounded(experiment, f"run-{run_id[:8]}")


def verification_job_name(experiment: str, run_id: str) -> str:
    """The verification Job of one run: ``<name>-verify-<run_id[:8]>``."""
    return _bounded(experiment, f"verify-{run_id[:8]}")


def journal_config_map_name(experiment: str, run_id: str | None = None) -> str:
    """The ConfigMap holding a run's journal: ``<name>-journal-<run_id[:8]>`` (one per run, so
    a rerun keeps the earlier runs' journals), or ``<name>-journal`` without a run id."""
    return _bounded(experiment, f"journal-{run_id[:8]}" if run_id else "journal", 253)


def journal_part_name(journal_config_map: str, number: int) -> str:
    """The ConfigMap holding part ``number`` (from 1) of a run's history: ``<journal>-<n>``."""
    return _bounded(journal_config_map, str(number), 253)


def checks_config_map_name(experiment: str, run_id: str) -> str:
    """The ConfigMap a verification Job writes its checks.json into."""
    return _bounded(experiment, f"checks-{run_id[:8]}", 253)


def network_policy_name(experiment: str) -> str:
    """The NetworkPolicy isolating the pods a network-partition hits."""
    return _bounded(f"pggit-chaos-{experiment}", "partition", 253)


def selector(labels: dict[str, str]) -> str:
    """A ``labelSelector`` query value from equality labels (``a=b,c=d``)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
