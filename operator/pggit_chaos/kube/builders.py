"""Pure builders of the Kubernetes objects pggit-chaos creates: plain dicts, no I/O, no clock.

Called by the operator (runner Job, Events), the runner (verification Job, journal ConfigMap,
Events) and the Kubernetes faults (NetworkPolicy, partition labels, resize patches). Every
object built here passes ``kubernetes_validate --strict`` for :data:`KUBERNETES_VERSION`
(property-tested in ``tests/test_kube_builders.py``); times are passed in, never read.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pggit_chaos.config import Settings
from pggit_chaos.errors import ChaosError, InvalidExperiment
from pggit_chaos.kube import names
from pggit_chaos.spec.model import API_VERSION, GROUP, KIND, Experiment

__all__ = [
    "EXPERIMENT_ANNOTATION",
    "JOURNAL_LIMIT_BYTES",
    "KUBERNETES_VERSION",
    "RUN_ID_ANNOTATION",
    "config_map",
    "event",
    "experiment_label_value",
    "journal_config_map",
    "journal_config_maps",
    "network_policy",
    "owner_reference",
    "parse_quantity",
    "partition_label_patch",
    "qos_class",
    "read_journal_config_map",
    "read_journal_history",
    "resize_patch",
    "resized_resources",
    "restore_resize_patch",
    "runner_deadline_seconds",
    "runner_job",
    "unpartition_label_patch",
    "verification_deadline_seconds",
    "verification_job",
]

#: The Kubernetes version the builders' output is validated against (in-place resize: ≥ 1.33).
KUBERNETES_VERSION = "1.33.0"

#: Annotation holding the experiment's full name (the label value is cut to 63 characters).
EXPERIMENT_ANNOTATION = f"{GROUP}/experiment"
#: Annotation on the Jobs: the run id they work for.
RUN_ID_ANNOTATION = f"{GROUP}/run-id"
#: Standard labels on every object.
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
APP_NAME = "pggit-chaos"

#: uid/gid the Jobs run as (the distroless "nonroot" user).
NONROOT_ID = 65532
#: Scratch space of the Jobs (the root filesystem is read-only): HOME, reports, state.
SCRATCH_DIR = "/tmp"
SCRATCH_VOLUME = "tmp"
#: Where the verification Job writes checks.json.
CHECKS_JSON = f"{SCRATCH_DIR}/checks.json"
#: Finished Jobs are kept this long for ``kubectl logs`` (owner deletion removes them sooner).
JOB_TTL_SECONDS = 86_400

#: The engine's phases around the fault (mirrors ``engine.lifecycle``: BASELINE/SETTLE_SECONDS;
#: not imported, the engine pulls in psycopg).
BASELINE_SECONDS = 1.0
SETTLE_SECONDS = 1.0
#: Runner time outside the spec's timeouts: start-up, target resolution, pgGit checks,
#: starting the verification Job, writing the journal.
RUNNER_SETUP_SECONDS = 300
#: Verification Job time outside ``verification.timeout``: scheduling, image pull, start-up.
VERIFICATION_MARGIN_SECONDS = 120
#: Shortest deadline a Job gets.
MIN_DEADLINE_SECONDS = 60

RUNNER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
VERIFICATION_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}

#: Longest Event message the API server accepts.
EVENT_MESSAGE_LIMIT = 1024
#: Largest compressed journal put into a ConfigMap (the API server's limit is 1 MiB in all).
JOURNAL_LIMIT_BYTES = 1_000_000

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _bounded(base: str, suffix: str, limit: int) -> str:
    """``base<suffix>`` within ``limit`` chars; a long base is cut and keeps a hash of itself."""
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


def experiment_label_value(experiment_name: str) -> str:
    """The value of :data:`names.EXPERIMENT_LABEL` / :data:`names.PARTITION_LABEL`.

    The name itself when it fits a label value (≤ 63 chars); a longer name (names may have
    253) is cut and keeps a hash of itself. The full name is in :data:`EXPERIMENT_ANNOTATION`.
    """
    if len(experiment_name) <= 63 and _LABEL_VALUE.match(experiment_name):
        return experiment_name
    return _bounded(experiment_name, "", 63)


def _labels(experiment_name: str, role: str) -> dict[str, str]:
    return {
        names.EXPERIMENT_LABEL: experiment_label_value(experiment_name),
        names.ROLE_LABEL: role,
        names.MANAGED_BY_LABEL: names.MANAGED_BY,
        NAME_LABEL: APP_NAME,
        COMPONENT_LABEL: role,
    }


# ---------------------------------------------------------------------------- owners


def owner_reference(experiment_body: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to an experiment (or any object) from its body (needs metadata.uid)."""
    metadata = experiment_body.get("metadata") or {}
    uid = metadata.get("uid")
    if not uid:
        raise ValueError(f"owner {metadata.get('name')!r} has no metadata.uid")
    return {
        "apiVersion": str(experiment_body.get("apiVersion") or API_VERSION),
        "kind": str(experiment_body.get("kind") or KIND),
        "name": str(metadata["name"]),
        "uid": str(uid),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _experiment_owner(experiment: Experiment, uid: str) -> dict[str, Any]:
    return owner_reference(
        {
            "apiVersion": experiment.api_version,
            "kind": experiment.kind,
            "metadata": {"name": experiment.name, "uid": uid},
        }
    )


def _owner(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference from an object body (has ``metadata``) or an ownerReference."""
    if "metadata" in owner:
        return owner_reference(owner)
    reference: dict[str, Any] = {
        key: str(owner[key]) for key in ("apiVersion", "kind", "name", "uid")
    }
    reference["controller"] = bool(owner.get("controller", True))
    reference["blockOwnerDeletion"] = bool(owner.get("blockOwnerDeletion", True))
    return reference


# ------------------------------------------------------------------------------- Jobs


def runner_deadline_seconds(experiment: Experiment) -> int:
    """``activeDeadlineSeconds`` of the runner Job: every phase's time limit plus set-up.

    baseline + duration + the workload's last operation + recovery.timeout + settle + the
    verification Job's own deadline + :data:`RUNNER_SETUP_SECONDS`.
    """
    spec = experiment.spec
    seconds = (
        BASELINE_SECONDS
        + spec.duration.seconds
        + spec.workload.operation_timeout.seconds
        + spec.recovery.timeout.seconds
        + SETTLE_SECONDS
        + verification_deadline_seconds(experiment)
        + RUNNER_SETUP_SECONDS
    )
    return max(MIN_DEADLINE_SECONDS, math.ceil(seconds))


def verification_deadline_seconds(experiment: Experiment) -> int:
    """``activeDeadlineSeconds`` of the verification Job: verification.timeout + margin."""
    seconds = experiment.spec.verification.timeout.seconds + VERIFICATION_MARGIN_SECONDS
    return max(MIN_DEADLINE_SECONDS, math.ceil(seconds))


def _dsn_env(experiment: Experiment) -> dict[str, Any]:
    ref = experiment.spec.target.database_secret_ref
    if ref is None:
        raise InvalidExperiment(
            [
                (
                    "spec.target.databaseSecretRef",
                    "required in a cluster: the Secret (name, key) holding the database's "
                    "connection string, passed to the Jobs as secretKeyRef",
                )
            ],
            source=f"{experiment.namespace}/{experiment.name}",
        )
    return {
        "name": names.ENV_DSN,
        "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
    }


def _common_env(experiment: Experiment, run_id: str) -> list[dict[str, Any]]:
    return [
        _dsn_env(experiment),
        {"name": names.ENV_EXPERIMENT, "value": f"{experiment.namespace}/{experiment.name}"},
        {"name": names.ENV_RUN_ID, "value": run_id},
        {
            "name": names.ENV_POD_NAME,
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        },
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "PGGIT_CHAOS_STATE_DIR", "value": f"{SCRATCH_DIR}/pggit-chaos-state"},
        {"name": "PGGIT_CHAOS_REPORT_DIR", "value": f"{SCRATCH_DIR}/chaos-reports"},
    ]


def _settings_env(settings: Settings) -> list[dict[str, Any]]:
    """The operator's settings the runner needs (it starts the verification Job itself)."""
    values = {
        "STATUS_INTERVAL": repr(settings.status_interval),
        "EXPIRY_MARGIN": repr(settings.expiry_margin),
        "ALLOW_EXEC": "true" if settings.allow_exec else "false",
        "MAX_TARGET_PODS": str(settings.max_target_pods),
        "PUSHGATEWAY": settings.pushgateway,
        "HISTORY_MAX_BYTES": str(settings.history_max_bytes),
        "OPERATOR_NAMESPACE": settings.operator_namespace,
        "OPERATOR_POD_LABELS": settings.operator_pod_labels,
        "IMAGE": settings.image,
        "IMAGE_PULL_POLICY": settings.image_pull_policy,
        "RUNNER_SERVICE_ACCOUNT": settings.runner_service_account,
        "TERMINATION_MESSAGE_PATH": str(settings.termination_message_path),
        "DEBUG": "true" if settings.debug else "false",
    }
    return [{"name": f"PGGIT_CHAOS_{key}", "value": value} for key, value in values.items()]


_CONTAINER_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NONROOT_ID,
    "runAsGroup": NONROOT_ID,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NONROOT_ID,
    "runAsGroup": NONROOT_ID,
    "fsGroup": NONROOT_ID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _job(
    *,
    experiment: Experiment,
    uid: str,
    run_id: str,
    settings: Settings,
    name: str,
    role: str,
    command: list[str],
    env: list[dict[str, Any]],
    resources: Mapping[str, Mapping[str, str]],
    deadline: int,
) -> dict[str, Any]:
    labels = _labels(experiment.name, role)
    annotations = {EXPERIMENT_ANNOTATION: experiment.name, RUN_ID_ANNOTATION: run_id}
    container = {
        "name": names.CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "workingDir": SCRATCH_DIR,
        "env": env,
        "resources": {kind: dict(values) for kind, values in resources.items()},
        "securityContext": _deep_copy(_CONTAINER_SECURITY),
        "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR}],
        "terminationMessagePath": str(settings.termination_message_path),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": experiment.namespace,
            "labels": dict(labels),
            "annotations": dict(annotations),
            "ownerReferences": [_experiment_owner(experiment, uid)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.runner_service_account,
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": _deep_copy(_POD_SECURITY),
                    "containers": [container],
                    "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {}}],
                },
            },
        },
    }


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def runner_job(experiment: Experiment, uid: str, run_id: str, settings: Settings) -> dict[str, Any]:
    """The runner Job of one run: ``pggit-chaos run --in-cluster NS/NAME --run-id RUN_ID``.

    Raises :class:`InvalidExperiment` (``spec.target.databaseSecretRef``) without a Secret.
    """
    reference = f"{experiment.namespace}/{experiment.name}"
    return _job(
        experiment=experiment,
        uid=uid,
        run_id=run_id,
        settings=settings,
        name=names.runner_job_name(experiment.name, run_id),
        role=names.ROLE_RUNNER,
        command=["pggit-chaos", "run", "--in-cluster", reference, "--run-id", run_id],
        env=_common_env(experiment, run_id) + _settings_env(settings),
        resources=RUNNER_RESOURCES,
        deadline=runner_deadline_seconds(experiment),
    )


def verification_job(
    experiment: Experiment, uid: str, run_id: str, settings: Settings, seed: int | None = None
) -> dict[str, Any]:
    """The verification Job of one run: ``pggit-chaos checks`` on the spec's categories.

    Its results come back through its termination message and the checks ConfigMap
    (``--hand-back``). Raises ``ValueError`` when the spec lists no checks (nothing to start)
    and :class:`InvalidExperiment` without ``spec.target.databaseSecretRef``.
    """
    verification = experiment.spec.verification
    if not verification.checks:
        raise ValueError(f"{experiment.name}: spec.verification.checks is empty: no checks to run")
    hand_back = f"{experiment.namespace}/{names.checks_config_map_name(experiment.name, run_id)}"
    command = [
        "pggit-chaos",
        "checks",
        "--category",
        ",".join(verification.checks),
        "--profile",
        verification.hypothesis_profile,
        "--timeout",
        str(max(1, int(verification.timeout.seconds))),
        "--json",
        CHECKS_JSON,
        "--hand-back",
        hand_back,
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    return _job(
        experiment=experiment,
        uid=uid,
        run_id=run_id,
        settings=settings,
        name=names.verification_job_name(experiment.name, run_id),
        role=names.ROLE_VERIFICATION,
        command=command,
        env=_common_env(experiment, run_id),
        resources=VERIFICATION_RESOURCES,
        deadline=verification_deadline_seconds(experiment),
    )


# --------------------------------------------------------------- network partition


def network_policy(
    experiment: Experiment, uid: str, expires_at: str, direction: str
) -> dict[str, Any]:
    """A deny-all NetworkPolicy isolating the pods labelled by :func:`partition_label_patch`.

    ``direction`` is ``both`` (Ingress and Egress denied) or ``ingress``; ``expires_at`` is
    the RFC 3339 time after which a sweep may delete it.
    """
    if direction not in ("both", "ingress"):
        raise ValueError(f"direction must be 'both' or 'ingress', not {direction!r}")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": names.network_policy_name(experiment.name),
            "namespace": experiment.namespace,
            "labels": {
                names.EXPERIMENT_LABEL: experiment_label_value(experiment.name),
                names.ROLE_LABEL: names.ROLE_PARTITION,
                names.MANAGED_BY_LABEL: names.MANAGED_BY,
            },
            "annotations": {
                names.EXPIRES_AT_ANNOTATION: expires_at,
                EXPERIMENT_ANNOTATION: experiment.name,
            },
            "ownerReferences": [_experiment_owner(experiment, uid)],
        },
        "spec": {
            "podSelector": {
                "matchLabels": {names.PARTITION_LABEL: experiment_label_value(experiment.name)}
            },
            "policyTypes": ["Ingress", "Egress"] if direction == "both" else ["Ingress"],
        },
    }


def partition_label_patch(experiment_name: str) -> dict[str, Any]:
    """Merge patch labelling a pod as partitioned by the experiment (full name annotated)."""
    return {
        "metadata": {
            "labels": {names.PARTITION_LABEL: experiment_label_value(experiment_name)},
            "annotations": {names.PARTITION_LABEL: experiment_name},
        }
    }


def unpartition_label_patch() -> dict[str, Any]:
    """Merge patch removing what :func:`partition_label_patch` put on a pod."""
    return {
        "metadata": {
            "labels": {names.PARTITION_LABEL: None},
            "annotations": {names.PARTITION_LABEL: None},
        }
    }


# --------------------------------------------------------------------------- resize

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)


def parse_quantity(quantity: object) -> Decimal:
    """A Kubernetes resource quantity (``"250m"``, ``"1.5Gi"``, ``"1e3"``, ``2``) as a Decimal."""
    if isinstance(quantity, bool) or not isinstance(quantity, str | int | float):
        raise ValueError(f"not a quantity: {quantity!r}")
    text = str(quantity).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation:  # pragma: no cover - the pattern only admits numbers
        raise ValueError(f"not a quantity: {quantity!r}") from None
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return value.scaleb(int(suffix[1:]))
    return value * _DECIMAL[suffix]


_RESIZED = ("cpu", "memory")


def qos_class(spec: Mapping[str, Any],
              resources: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The pod's QoS class as the API server computes it (``qos.ComputePodQOS``).

    ``spec`` is the pod's spec; ``resources`` (container name -> resources) stand in for those
    containers' own, to see the class a resize would give. A request left out defaults to its
    limit (as the server defaults a pod); cpu and memory only; zero counts as unset.
    Guaranteed: every container (init containers too) limits cpu and memory, and the pod's
    summed requests equal its summed limits; BestEffort: no request or limit at all.
    """
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    for container in containers:
        own = (resources or {}).get(str(container.get("name")), container.get("resources"))
        own = own or {}
        own_limits = {k: v for k, v in (own.get("limits") or {}).items() if v is not None}
        own_requests = {**own_limits, **{k: v for k, v in (own.get("requests") or {}).items()
                                         if v is not None}}
        for total, listed in ((requests, own_requests), (limits, own_limits)):
            for name in _RESIZED:
                if name in listed and parse_quantity(listed[name]) > 0:
                    total[name] = total.get(name, Decimal(0)) + parse_quantity(listed[name])
        if not all(name in own_limits and parse_quantity(own_limits[name]) > 0
                   for name in _RESIZED):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


def resized_resources(original: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A container's ``resources`` after a :func:`resize_patch` (its container's part)."""
    part = ((patch.get("spec") or {}).get("containers") or [{}])[0].get("resources") or {}
    merged: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        values = {**(original.get(kind) or {}), **(part.get(kind) or {})}
        merged[kind] = {k: v for k, v in values.items() if v is not None}
    return merged


def resize_patch(
    container: str,
    cpu_limit: str | None,
    memory_limit: str | None,
    original: Mapping[str, Any],
) -> dict[str, Any]:
    """Strategic merge patch for ``pods/{name}/resize`` setting ``container``'s limits.

    ``original`` is the container's ``resources`` before the fault. A request above its new
    limit is lowered to the limit (the server rejects requests > limits), and a request that
    equalled its limit follows it (a Guaranteed pod stays Guaranteed: resize may not change
    the QoS class).
    """
    wanted = {"cpu": cpu_limit, "memory": memory_limit}
    if not any(wanted.values()):
        raise ValueError("resize_patch needs a cpu or a memory limit")
    old_requests = original.get("requests") or {}
    old_limits = original.get("limits") or {}
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    for resource, limit in wanted.items():
        if not limit:
            continue
        new = parse_quantity(limit)
        limits[resource] = limit
        request = old_requests.get(resource)
        if request is None:
            continue
        old_limit = old_limits.get(resource)
        follows = old_limit is not None and parse_quantity(old_limit) == parse_quantity(request)
        if parse_quantity(request) > new or follows:
            requests[resource] = limit
    resources: dict[str, Any] = {"limits": limits}
    if requests:
        resources["requests"] = requests
    return {"spec": {"containers": [{"name": container, "resources": resources}]}}


def restore_resize_patch(container: str, original_resources: Mapping[str, Any]) -> dict[str, Any]:
    """Strategic merge patch for ``pods/{name}/resize`` putting back the recorded resources.

    The cpu and memory requests and limits become exactly ``original_resources``'; a limit
    or request that did not exist before is removed (``null``). Idempotent.
    """
    resources: dict[str, Any] = {}
    for kind in ("limits", "requests"):
        recorded = original_resources.get(kind) or {}
        resources[kind] = {resource: recorded.get(resource) for resource in _RESIZED}
    return {"spec": {"containers": [{"name": container, "resources": resources}]}}


# ---------------------------------------------------------------------------- Events


def _micro_time(now: datetime) -> str:
    if now.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clip(text: str, limit: int) -> str:
    """``text`` within ``limit`` UTF-8 bytes (the API server counts bytes), marked with ...."""
    if len(text.encode()) <= limit:
        return text
    cut = text.encode()[: limit - 3].decode(errors="ignore")
    return cut + "..."


_SUFFIX = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def event(
    involved: Mapping[str, Any],
    reason: str,
    message: str,
    type_: str,
    now: datetime,
    *,
    name_suffix: str,
    component: str = "pggit-chaos-operator",
    instance: str | None = None,
    action: str | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (an object body), named ``<object>.<name_suffix>``.

    ``type_`` is ``Normal`` or ``Warning``; ``now`` (timezone-aware) gives every timestamp;
    ``name_suffix`` (lower-case letters, digits, -) makes the name unique, e.g. a counter or
    the time in hex. ``instance`` (default ``component``) names the reporting pod; ``action``
    defaults to ``reason``. The message is clipped to 1024 bytes.
    """
    if type_ not in ("Normal", "Warning"):
        raise ValueError(f"event type must be Normal or Warning, not {type_!r}")
    if not _SUFFIX.match(name_suffix):
        raise ValueError(f"event name suffix {name_suffix!r}: use up to 63 of a-z, 0-9 and -")
    metadata = involved.get("metadata") or {}
    object_name = str(metadata["name"])
    namespace = str(metadata.get("namespace") or "default")
    reference: dict[str, Any] = {
        "apiVersion": str(involved.get("apiVersion") or API_VERSION),
        "kind": str(involved.get("kind") or KIND),
        "name": object_name,
        "namespace": namespace,
    }
    for key in ("uid", "resourceVersion"):
        if metadata.get(key):
            reference[key] = str(metadata[key])
    stamp = _micro_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": _bounded(object_name, f".{name_suffix}", 253),
            "namespace": namespace,
            "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY},
        },
        "involvedObject": reference,
        "reason": _clip(reason, 128),
        "message": _clip(message, EVENT_MESSAGE_LIMIT),
        "type": type_,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": stamp,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": _clip(instance or component, 128),
        "action": _clip(action or reason, 128),
    }


# ------------------------------------------------------------------------ ConfigMaps


def config_map(
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    labels: Mapping[str, str],
    data: Mapping[str, str] | None = None,
    binary_data: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """A ConfigMap owned by ``owner`` (an object body, or an ownerReference).

    ``binary_data`` values are bytes and go in base64 under ``binaryData``.
    """
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [_owner(owner)],
        },
    }
    if data:
        body["data"] = dict(data)
    if binary_data:
        body["binaryData"] = {
            key: base64.b64encode(value).decode("ascii") for key, value in binary_data.items()
        }
    return body


def _journal_labels(experiment_name: str) -> dict[str, str]:
    return {
        names.EXPERIMENT_LABEL: experiment_label_value(experiment_name),
        names.ROLE_LABEL: names.ROLE_JOURNAL,
        names.MANAGED_BY_LABEL: names.MANAGED_BY,
    }


def journal_config_map(
    experiment_name: str, namespace: str, owner: Mapping[str, Any], journal_json: str,
    run_id: str | None = None,
) -> dict[str, Any]:
    """A run's journal ConfigMap: ``journal_json`` gzipped under :data:`JOURNAL_KEY`, named
    after the run (:func:`names.journal_config_map_name`).

    Deterministic (gzip mtime 0). Raises :class:`ChaosError` when the compressed journal
    exceeds :data:`JOURNAL_LIMIT_BYTES` (the API server would refuse it).
    """
    packed = gzip.compress(journal_json.encode(), compresslevel=9, mtime=0)
    if len(packed) > JOURNAL_LIMIT_BYTES:
        raise ChaosError(
            f"journal of {experiment_name}: {len(packed)} bytes compressed, more than a "
            f"ConfigMap holds ({JOURNAL_LIMIT_BYTES})"
        )
    body = config_map(
        names.journal_config_map_name(experiment_name, run_id),
        namespace,
        owner,
        _journal_labels(experiment_name),
        binary_data={names.JOURNAL_KEY: packed},
    )
    body["metadata"]["annotations"] = {EXPERIMENT_ANNOTATION: experiment_name}
    return body


def journal_config_maps(
    experiment_name: str, namespace: str, owner: Mapping[str, Any], journal_json: str,
    history_gz: bytes | None, *, run_id: str | None = None,
    history_max_bytes: int = 8 * JOURNAL_LIMIT_BYTES,
) -> list[dict[str, Any]]:
    """A run's journal and its gzipped workload history (``history.jsonl``), as ConfigMaps:
    the journal's own (:func:`journal_config_map`) last, and before it the parts of a history
    too large to share it.

    - The history fits beside the journal: under :data:`names.HISTORY_KEY` of the journal's
      ConfigMap, nothing else.
    - It is at most ``history_max_bytes``: cut into parts of at most
      :data:`JOURNAL_LIMIT_BYTES` (``<journal>-1``, ``-2``, ...; same owner and labels, so
      they go with the experiment), named in order under :data:`names.HISTORY_PARTS_KEY`.
    - It is larger: not kept; :data:`names.HISTORY_NOTE_KEY` says so and by how much.

    Deterministic. Raises :class:`ChaosError` only when the journal alone does not fit.
    """
    main = journal_config_map(experiment_name, namespace, owner, journal_json, run_id)
    if history_gz is None:
        return [main]
    main_name = str(main["metadata"]["name"])
    journal_size = len(base64.b64decode(main["binaryData"][names.JOURNAL_KEY]))
    if journal_size + len(history_gz) <= JOURNAL_LIMIT_BYTES:
        main["binaryData"][names.HISTORY_KEY] = base64.b64encode(history_gz).decode("ascii")
        return [main]
    if len(history_gz) > history_max_bytes:
        main["data"] = {names.HISTORY_NOTE_KEY: (
            f"the workload history was not kept: {len(history_gz)} bytes compressed, more "
            f"than historyMaxBytes ({history_max_bytes}) allows; the verdict was reached over "
            "all of it")}
        return [main]
    parts: list[dict[str, Any]] = []
    for number, start in enumerate(range(0, len(history_gz), JOURNAL_LIMIT_BYTES), 1):
        part = config_map(
            names.journal_part_name(main_name, number), namespace, owner,
            _journal_labels(experiment_name),
            binary_data={names.HISTORY_KEY: history_gz[start:start + JOURNAL_LIMIT_BYTES]},
        )
        part["metadata"]["annotations"] = {EXPERIMENT_ANNOTATION: experiment_name}
        parts.append(part)
    main["data"] = {names.HISTORY_PARTS_KEY: json.dumps(
        [part["metadata"]["name"] for part in parts])}
    return [*parts, main]


def read_journal_config_map(cm: Mapping[str, Any]) -> str:
    """The journal JSON text of a ConfigMap built by :func:`journal_config_map`."""
    try:
        encoded = cm["binaryData"][names.JOURNAL_KEY]
    except (KeyError, TypeError):
        name = (cm.get("metadata") or {}).get("name")
        raise ChaosError(f"ConfigMap {name}: no binaryData key {names.JOURNAL_KEY}") from None
    return gzip.decompress(base64.b64decode(encoded)).decode()


def read_journal_history(
    cm: Mapping[str, Any], part: Callable[[str], Mapping[str, Any] | None],
) -> tuple[str | None, str | None]:
    """``(history.jsonl text, note)`` of a journal ConfigMap from :func:`journal_config_maps`:
    the text from its own key or joined from its parts (``part(name)`` reads one; None when
    it is gone), else None and why (the note the runner left, or the part that is missing).
    ``(None, None)`` when the run kept no history there (a journal written before the
    history had its own key holds it in the journal's document)."""
    binary = cm.get("binaryData") or {}
    data = cm.get("data") or {}
    name = (cm.get("metadata") or {}).get("name")
    if names.HISTORY_KEY in binary:
        return gzip.decompress(base64.b64decode(binary[names.HISTORY_KEY])).decode(), None
    if names.HISTORY_NOTE_KEY in data:
        return None, str(data[names.HISTORY_NOTE_KEY])
    if names.HISTORY_PARTS_KEY not in data:
        return None, None
    try:
        part_names = [str(each) for each in json.loads(data[names.HISTORY_PARTS_KEY])]
    except (ValueError, TypeError):
        raise ChaosError(f"ConfigMap {name}: {names.HISTORY_PARTS_KEY} is not a JSON list "
                         "of names") from None
    chunks: list[bytes] = []
    for part_name in part_names:
        body = part(part_name)
        encoded = ((body or {}).get("binaryData") or {}).get(names.HISTORY_KEY)
        if encoded is None:
            return None, (f"the workload history is incomplete: its part {part_name} is "
                          "missing")
        chunks.append(base64.b64decode(encoded))
    return gzip.decompress(b"".join(chunks)).decode(), None
