"""Property tests of the pure Kubernetes builders (:mod:`pggit_chaos.kube.builders`).

For any valid experiment (every fault type, mode, duration, names up to 253 characters),
every built object passes ``kubernetes_validate`` in strict mode for the pinned Kubernetes
version, its names and labels fit the API server's limits, the Jobs' deadlines cover the
spec's timeouts, and no DSN is ever written into a Job. Patches are applied the way the API
server applies them (merge / strategic merge) and the result is validated and compared.
"""

from __future__ import annotations

import copy
import json
import os
import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pggit_chaos.config import Settings
from pggit_chaos.errors import ChaosError, InvalidExperiment
from pggit_chaos.kube import builders, names
from pggit_chaos.spec import Experiment, format_duration
from pggit_chaos.spec.model import SECTIONS, FaultType

pytestmark = pytest.mark.unit

VERSION = builders.KUBERNETES_VERSION
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

# ------------------------------------------------------------------------- strategies

ALNUM = string.ascii_lowercase + string.digits
LABEL_CHARS = ALNUM + "-"


@st.composite
def dns_labels(draw: st.DrawFn, max_size: int = 63) -> str:
    """A DNS-1123 label of 1..max_size characters."""
    size = draw(st.integers(1, max_size))
    if size == 1:
        return draw(st.sampled_from(ALNUM))
    ends = draw(st.text(ALNUM, min_size=2, max_size=2))
    middle = draw(st.text(LABEL_CHARS, min_size=size - 2, max_size=size - 2))
    return ends[0] + middle + ends[1]


@st.composite
def dns_subdomains(draw: st.DrawFn, max_size: int = 253) -> str:
    """A DNS-1123 subdomain (dotted labels) of up to ``max_size`` characters, long ones too."""
    size = draw(st.one_of(st.integers(1, 40), st.integers(1, max_size)))
    parts: list[str] = []
    length = -1
    while length + 1 < size:
        part = draw(dns_labels(min(63, size - length - 1)))
        parts.append(part)
        length += 1 + len(part)
    return ".".join(parts)


def durations(min_ms: int, max_ms: int) -> st.SearchStrategy[str]:
    """Duration text (``1m30s``, ``250ms``) between the bounds."""
    return st.integers(min_ms, max_ms).map(lambda ms: format_duration(ms * 1_000_000))


SECOND, MINUTE, HOUR = 1000, 60_000, 3_600_000


@st.composite
def fault_sections(draw: st.DrawFn, fault_type: FaultType) -> dict[str, Any]:
    """Settings of one fault type's section (every field optional)."""
    options: dict[str, st.SearchStrategy[Any]] = {
        FaultType.POD_KILL: st.fixed_dictionaries(
            {},
            optional={
                "gracePeriodSeconds": st.integers(0, 3600),
                "restartDelay": durations(0, 10 * MINUTE),
            },
        ),
        FaultType.CPU_THROTTLE: st.fixed_dictionaries(
            {}, optional={"cpuPercent": st.integers(1, 100)}
        ),
        FaultType.MEMORY_PRESSURE: st.fixed_dictionaries(
            {},
            optional={
                "limit": st.integers(16, 65536).map(lambda mi: f"{mi}Mi"),
                "headroom": st.integers(0, 4096).map(lambda mi: f"{mi}Mi"),
            },
        ),
        FaultType.POD_PAUSE: st.just({}),
        FaultType.NETWORK_PARTITION: st.fixed_dictionaries(
            {}, optional={"direction": st.sampled_from(["both", "ingress"])}
        ),
        FaultType.CONNECTION_KILL: st.fixed_dictionaries(
            {},
            optional={
                "interval": durations(10, 10 * MINUTE),
                "targetApplication": st.text(max_size=40),
            },
        ),
        FaultType.LOCK_CONTENTION: st.fixed_dictionaries(
            {},
            optional={
                "table": st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_$.]{0,30}\Z"),
                "mode": st.sampled_from(["ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE"]),
            },
        ),
        FaultType.TRIGGER_DISABLE: st.fixed_dictionaries(
            {},
            optional={
                "triggers": st.lists(
                    st.sampled_from(["pggit_ddl_trigger", "pggit_drop_trigger"]),
                    min_size=1,
                    unique=True,
                )
            },
        ),
        FaultType.INDEX_CORRUPTION: st.fixed_dictionaries(
            {"destructive": st.just(True)},
            optional={"index": st.from_regex(r"\A[a-z_][a-z0-9_]{0,30}\Z")},
        ),
        FaultType.NETWORK_LATENCY: st.fixed_dictionaries(
            {},
            optional={
                "delay": durations(1, MINUTE),
                "jitter": durations(0, MINUTE),
                "bandwidth": st.integers(1, 1024).map(lambda ki: f"{ki}Ki"),
            },
        ),
        FaultType.DISK_PRESSURE: st.fixed_dictionaries(
            {},
            optional={
                "volume": st.sampled_from(["wal", "data"]),
                "fill": st.one_of(st.just("enospc"),
                                  st.integers(1, 99).map(lambda pct: f"{pct}%")),
                "localSizeMi": st.integers(32, 4096),
                "maxBalloonMi": st.integers(1, 1048576),
            },
        ),
        FaultType.PRIMARY_FAILOVER: st.fixed_dictionaries(
            {},
            optional={
                "replication": st.sampled_from(["sync", "async"]),
                "standbyLag": durations(0, MINUTE),
                "oldPrimary": st.sampled_from(["rewind", "down"]),
                "primaryLabel": st.sampled_from(
                    ["cnpg.io/instanceRole=primary", "spilo-role=master"]),
            },
        ),
        FaultType.LOAD_SPIKE: st.fixed_dictionaries(
            {},
            optional={
                "clientsFactor": st.integers(1, 100),
                "rateFactor": st.floats(1, 100),
            },
        ),
        FaultType.CLOCK_SKEW: st.fixed_dictionaries(
            {}, optional={"offset": st.sampled_from(["-1h", "+30m", "-90s", "720h"])}
        ),
    }
    section: dict[str, Any] = draw(options[fault_type])
    return section


CATEGORIES = ["property", "concurrent", "transaction", "resource", "corruption"]


@st.composite
def experiments(
    draw: st.DrawFn,
    fault_types: st.SearchStrategy[FaultType] | None = None,
    secret: st.SearchStrategy[bool] | None = None,
    checks: st.SearchStrategy[list[str]] | None = None,
) -> Experiment:
    """A valid experiment, built with :meth:`Experiment.new` (so the model accepts it)."""
    fault_type = draw(fault_types or st.sampled_from(list(FaultType)))
    fault: dict[str, Any] = {"type": fault_type.value}
    if fault_type is FaultType.INDEX_CORRUPTION or draw(st.booleans()):  # its section is required
        fault[SECTIONS[fault_type][1]] = draw(fault_sections(fault_type))
    mode = draw(st.sampled_from(["one", "all", "fixed", "fixed-percent"]))
    target: dict[str, Any] = {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "pggit-postgres"}},
        "mode": mode,
        "value": draw(st.integers(1, 100 if mode == "fixed-percent" else 1000)),
        "database": draw(st.text(ALNUM + "_", min_size=1, max_size=63)),
    }
    if draw(secret if secret is not None else st.just(True)):
        target["databaseSecretRef"] = {
            "name": draw(dns_subdomains()),
            "key": draw(st.from_regex(r"\A[-._a-zA-Z0-9]{1,60}\Z")),
        }
    chosen = draw(
        checks if checks is not None else st.lists(st.sampled_from(CATEGORIES), unique=True)
    )
    spec: dict[str, Any] = {
        "target": target,
        "fault": fault,
        "duration": draw(durations(SECOND, HOUR)),
        "workload": {
            "clients": draw(st.integers(1, 64)),
            "rate": draw(st.floats(0, 100000)),
            "operationTimeout": draw(durations(10, 10 * MINUTE)),
        },
        "recovery": {"timeout": draw(durations(SECOND, HOUR))},
        "verification": {
            "checks": chosen,
            "hypothesisProfile": draw(st.sampled_from(["ci", "dev", "thorough"])),
            "timeout": draw(durations(SECOND, 6 * HOUR)),
            "invariants": True if not chosen else draw(st.booleans()),
        },
        "dryRun": draw(st.booleans()),
    }
    return Experiment.new(draw(dns_subdomains()), spec, namespace=draw(dns_labels()))


run_ids = st.text(ALNUM, min_size=1, max_size=40)
uids = st.uuids().map(str)


@st.composite
def operator_settings(draw: st.DrawFn) -> Settings:
    """Operator settings varied where the Jobs use them."""
    return Settings(
        state_dir=Path("/tmp/unused"),
        image=draw(
            st.sampled_from(
                ["ghcr.io/pggit-chaos/pggit-chaos:0.1.0", "registry:5000/x@sha256:" + "a" * 64]
            )
        ),
        image_pull_policy=draw(st.sampled_from(["Always", "IfNotPresent", "Never"])),
        runner_service_account=draw(dns_subdomains(max_size=253)),
        status_interval=draw(st.floats(0.1, 60.0)),
        expiry_margin=draw(st.floats(0.0, 86400.0)),
        allow_exec=draw(st.booleans()),
        max_target_pods=draw(st.integers(1, 1000)),
        pushgateway=draw(st.sampled_from(["", "pushgateway.monitoring:9091"])),
        operator_namespace=draw(dns_labels()),
        operator_pod_labels=draw(
            st.sampled_from(["app.kubernetes.io/name=pggit-chaos", "a=b,c=d"])
        ),
        termination_message_path=Path(draw(st.sampled_from(["/dev/termination-log", "/tmp/msg"]))),
    )


# -------------------------------------------------------------------------- helpers


def valid(obj: Mapping[str, Any]) -> None:
    """The object passes strict validation, and its names and labels fit the API server."""
    kubernetes_validate.validate(dict(obj), VERSION, strict=True)
    metadata = obj["metadata"]
    assert len(metadata["name"]) <= 253 and DNS_SUBDOMAIN.match(metadata["name"]), metadata
    if "namespace" in metadata:
        assert len(metadata["namespace"]) <= 63
    labelled = [metadata.get("labels") or {}]
    if obj["kind"] == "Job":
        assert len(metadata["name"]) <= 63, "the pod label job-name must fit"
        labelled.append(obj["spec"]["template"]["metadata"]["labels"])
    if obj["kind"] == "NetworkPolicy":
        labelled.append(obj["spec"]["podSelector"]["matchLabels"])
    for labels in labelled:
        for key, value in labels.items():
            prefix, _, name = key.rpartition("/")
            assert len(name) <= 63 and LABEL_NAME.match(name), key
            assert len(prefix) <= 253 and (not prefix or DNS_SUBDOMAIN.match(prefix)), key
            assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)


def container_of(job: Mapping[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def env_of(job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container_of(job)["env"]}


def timeouts(experiment: Experiment) -> float:
    spec = experiment.spec
    return (
        spec.duration.seconds
        + spec.recovery.timeout.seconds
        + spec.verification.timeout.seconds
        + spec.workload.operation_timeout.seconds
    )


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch (what a strategic merge does on maps): null deletes a key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            current = target.get(key)
            target[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def strategic_resize(pod: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a resize patch as the API server does: containers merged by name."""
    assert set(patch) == {"spec"} and set(patch["spec"]) == {"containers"}
    result = copy.deepcopy(pod)
    for change in patch["spec"]["containers"]:
        assert set(change) <= {"name", "resources"}, "resize only changes resources"
        container = next(c for c in result["spec"]["containers"] if c["name"] == change["name"])
        merge_patch(container, {"resources": change.get("resources", {})})
    return result


def without_empty(resources: Mapping[str, Any]) -> dict[str, Any]:
    """Resources as the API server stores them: empty maps are not kept."""
    return {key: dict(value) for key, value in resources.items() if value}


def pod(resources: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "db", "labels": dict(labels or {"app": "pg"})},
        "spec": {
            "containers": [
                {"name": "sidecar", "image": "busybox"},
                {
                    "name": "postgres",
                    "image": "postgres:17",
                    "resources": copy.deepcopy(dict(resources)),
                },
            ]
        },
    }


def experiment_body(experiment: Experiment, uid: str) -> dict[str, Any]:
    body = experiment.to_manifest()
    body["metadata"]["uid"] = uid
    body["metadata"]["resourceVersion"] = "42"
    return body


# ---------------------------------------------------------------------------- Jobs


@FAST
@given(experiment=experiments(), uid=uids, run_id=run_ids, config=operator_settings())
def test_runner_job_is_valid_hardened_and_outlives_the_spec(
    experiment: Experiment, uid: str, run_id: str, config: Settings
) -> None:
    job = builders.runner_job(experiment, uid, run_id, config)
    valid(job)
    meta, spec = job["metadata"], job["spec"]
    pod_spec = spec["template"]["spec"]
    container = container_of(job)

    assert meta["name"] == names.runner_job_name(experiment.name, run_id)
    assert meta["namespace"] == experiment.namespace
    assert meta["ownerReferences"] == [builders.owner_reference(experiment_body(experiment, uid))]
    assert meta["annotations"][builders.RUN_ID_ANNOTATION] == run_id
    assert meta["annotations"][builders.EXPERIMENT_ANNOTATION] == experiment.name
    for labels in (meta["labels"], spec["template"]["metadata"]["labels"]):
        assert labels[names.EXPERIMENT_LABEL] == builders.experiment_label_value(experiment.name)
        assert labels[names.ROLE_LABEL] == names.ROLE_RUNNER
        assert labels[names.MANAGED_BY_LABEL] == names.MANAGED_BY
        assert labels["app.kubernetes.io/component"] == "runner"
        assert labels["app.kubernetes.io/name"] == "pggit-chaos"

    assert container["command"] == [
        "pggit-chaos", "run", "--in-cluster",
        f"{experiment.namespace}/{experiment.name}", "--run-id", run_id,
    ]  # fmt: skip
    assert container["name"] == names.CONTAINER
    assert container["image"] == config.image
    assert container["imagePullPolicy"] == config.image_pull_policy
    assert pod_spec["serviceAccountName"] == config.runner_service_account
    assert pod_spec["automountServiceAccountToken"] is True
    assert pod_spec["restartPolicy"] == "Never"
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] >= 86400
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert_hardened(job)

    deadline = spec["activeDeadlineSeconds"]
    assert isinstance(deadline, int) and deadline >= 60
    assert deadline >= timeouts(experiment) + 2  # + baseline and settle
    verification = (
        builders.verification_job(experiment, uid, run_id, config)
        if experiment.spec.verification.checks
        else None
    )
    if verification is not None:  # the runner waits for its verification Job to finish
        assert (
            deadline
            > verification["spec"]["activeDeadlineSeconds"] + experiment.spec.duration.seconds
        )

    assert_no_dsn(job, experiment)
    env = env_of(job)
    assert env[names.ENV_EXPERIMENT]["value"] == f"{experiment.namespace}/{experiment.name}"
    assert env[names.ENV_RUN_ID]["value"] == run_id
    assert env[names.ENV_POD_NAME]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["HOME"]["value"] == "/tmp"


def assert_hardened(job: Mapping[str, Any]) -> None:
    pod_spec = job["spec"]["template"]["spec"]
    container = container_of(job)
    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (
        pod_security["runAsUser"] == pod_security["runAsGroup"] == pod_security["fsGroup"] == 65532
    )
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # the read-only root filesystem leaves a writable /tmp (HOME, reports, checks.json)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    for resource in ("cpu", "memory"):
        assert builders.parse_quantity(container["resources"]["requests"][resource]) <= (
            builders.parse_quantity(container["resources"]["limits"][resource])
        )


def assert_no_dsn(job: Mapping[str, Any], experiment: Experiment) -> None:
    """The DSN reaches the Job only as a secretKeyRef; no value looks like a connection string."""
    ref = experiment.spec.target.database_secret_ref
    assert ref is not None
    env = env_of(job)
    assert env[names.ENV_DSN] == {
        "name": names.ENV_DSN,
        "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
    }
    for item in container_of(job)["env"]:
        value = item.get("value", "")
        assert not re.search(r"postgres(ql)?://|password\s*=|host\s*=", value, re.I), item
        if "valueFrom" in item:
            assert set(item["valueFrom"]) <= {"secretKeyRef", "fieldRef"}
    assert "://" not in " ".join(container_of(job)["command"])


@FAST
@given(
    experiment=experiments(checks=st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True)),
    uid=uids,
    run_id=run_ids,
    config=operator_settings(),
    seed=st.none() | st.integers(0, 2**32 - 1),
)
def test_verification_job_is_valid_and_runs_the_spec_checks(
    experiment: Experiment, uid: str, run_id: str, config: Settings, seed: int | None
) -> None:
    job = builders.verification_job(experiment, uid, run_id, config, seed=seed)
    valid(job)
    verification = experiment.spec.verification
    container = container_of(job)
    assert job["metadata"]["name"] == names.verification_job_name(experiment.name, run_id)
    assert job["metadata"]["name"] != names.runner_job_name(experiment.name, run_id)
    assert job["metadata"]["labels"][names.ROLE_LABEL] == names.ROLE_VERIFICATION
    assert (
        job["spec"]["template"]["metadata"]["labels"][names.ROLE_LABEL] == names.ROLE_VERIFICATION
    )
    assert job["metadata"]["ownerReferences"][0]["uid"] == uid
    expected = [
        "pggit-chaos", "checks",
        "--category", ",".join(verification.checks),
        "--profile", verification.hypothesis_profile,
        "--timeout", str(max(1, int(verification.timeout.seconds))),
        "--json", "/tmp/checks.json",
        "--hand-back",
        f"{experiment.namespace}/{names.checks_config_map_name(experiment.name, run_id)}",
    ]  # fmt: skip
    if seed is not None:
        expected += ["--seed", str(seed)]
    assert container["command"] == expected
    assert container["terminationMessagePath"] == str(config.termination_message_path)
    assert job["spec"]["activeDeadlineSeconds"] >= verification.timeout.seconds
    assert job["spec"]["backoffLimit"] == 0
    assert_hardened(job)
    assert_no_dsn(job, experiment)


@FAST
@given(experiment=experiments(), config=operator_settings())
def test_runner_env_gives_the_runner_the_operator_settings(
    experiment: Experiment, config: Settings
) -> None:
    """The runner reads the same settings back from its Job's PGGIT_CHAOS_* env."""
    job = builders.runner_job(experiment, "uid", "abcdef012345", config)
    plain = {
        item["name"]: item["value"]
        for item in container_of(job)["env"]
        if "value" in item and item["name"].startswith("PGGIT_CHAOS_")
    }
    clean = {key: value for key, value in os.environ.items() if not key.startswith("PGGIT_CHAOS_")}
    with mock.patch.dict(os.environ, {**clean, **plain}, clear=True):
        seen = Settings()
    for field in (
        "status_interval", "expiry_margin", "allow_exec", "max_target_pods", "pushgateway",
        "operator_namespace", "operator_pod_labels", "image", "image_pull_policy",
        "runner_service_account", "termination_message_path",
    ):  # fmt: skip
        assert getattr(seen, field) == getattr(config, field), field
    assert str(seen.state_dir).startswith("/tmp/") and str(seen.report_dir).startswith("/tmp/")


def test_job_names_stay_distinct_for_long_names_sharing_a_prefix() -> None:
    stem = "a" * 200
    first, second = f"{stem}.x", f"{stem}.y"
    assert builders.experiment_label_value(first) != builders.experiment_label_value(second)
    assert names.runner_job_name(first, "abcdef01") != names.runner_job_name(second, "abcdef01")
    for name in (first, second):
        assert len(builders.experiment_label_value(name)) <= 63


def test_the_jobs_need_the_database_secret() -> None:
    experiment = Experiment.new(
        "no-secret",
        {"target": {"selector": {"matchLabels": {"a": "b"}}}, "fault": {"type": "pod-kill"}},
    )
    config = Settings(state_dir=Path("/tmp/unused"))
    for build in (builders.runner_job, builders.verification_job):
        with pytest.raises(InvalidExperiment) as caught:
            build(experiment, "uid", "abcdef01", config)
        assert caught.value.problems[0][0] == "spec.target.databaseSecretRef"
        assert "spec.target.databaseSecretRef" in str(caught.value)


def test_no_verification_job_without_checks() -> None:
    experiment = Experiment.new(
        "invariants-only",
        {
            "target": {
                "selector": {"matchLabels": {"a": "b"}},
                "databaseSecretRef": {"name": "db"},
            },
            "fault": {"type": "pod-kill"},
            "verification": {"checks": [], "invariants": True},
        },
    )
    with pytest.raises(ValueError, match="no checks"):
        builders.verification_job(experiment, "uid", "abcdef01", Settings(state_dir=Path("/tmp/u")))


def test_the_validator_rejects_a_broken_job() -> None:
    """The property above is not vacuous: strict validation catches typos and bad types."""
    experiment = Experiment.new(
        "pod-kill",
        {
            "target": {
                "selector": {"matchLabels": {"a": "b"}},
                "databaseSecretRef": {"name": "db"},
            },
            "fault": {"type": "pod-kill"},
        },
    )
    job = builders.runner_job(experiment, "uid", "abcdef012345", Settings(state_dir=Path("/tmp/u")))
    kubernetes_validate.validate(job, VERSION, strict=True)

    typo = copy.deepcopy(job)
    typo["spec"]["template"]["spec"]["restartPolicyy"] = typo["spec"]["template"]["spec"].pop(
        "restartPolicy"
    )
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicyy"):
        kubernetes_validate.validate(typo, VERSION, strict=True)

    nested = copy.deepcopy(job)
    container_of(nested)["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(nested, VERSION, strict=True)

    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["activeDeadlineSeconds"] = "600"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSION, strict=True)


def test_the_pinned_version_is_carried_and_has_in_place_resize() -> None:
    assert tuple(int(p) for p in VERSION.split(".")[:2]) >= (1, 33)
    assert kubernetes_validate.validate(pod({}), VERSION, strict=True) == VERSION.rsplit(".", 1)[0]


def test_deadline_covers_the_engine_phases() -> None:
    from pggit_chaos.engine import lifecycle

    assert builders.BASELINE_SECONDS >= lifecycle.BASELINE_SECONDS
    assert builders.SETTLE_SECONDS >= lifecycle.SETTLE_SECONDS


# --------------------------------------------------------------- network partition


@FAST
@given(
    experiment=experiments(secret=st.booleans()),
    uid=uids,
    direction=st.sampled_from(["both", "ingress"]),
    expires=st.datetimes(timezones=st.just(UTC)),
)
def test_network_policy_isolates_exactly_the_labelled_pods(
    experiment: Experiment, uid: str, direction: str, expires: datetime
) -> None:
    expires_at = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = builders.network_policy(experiment, uid, expires_at, direction)
    valid(policy)
    meta, spec = policy["metadata"], policy["spec"]
    assert meta["name"] == names.network_policy_name(experiment.name)
    assert meta["namespace"] == experiment.namespace
    assert meta["annotations"][names.EXPIRES_AT_ANNOTATION] == expires_at
    assert meta["labels"][names.ROLE_LABEL] == names.ROLE_PARTITION
    assert meta["labels"][names.MANAGED_BY_LABEL] == names.MANAGED_BY
    assert meta["ownerReferences"][0]["uid"] == uid
    assert spec["policyTypes"] == (["Ingress", "Egress"] if direction == "both" else ["Ingress"])
    assert "ingress" not in spec and "egress" not in spec  # no rules: deny all

    target = pod({}, labels={"app": "pg"})
    partitioned = merge_patch(
        copy.deepcopy(target), builders.partition_label_patch(experiment.name)
    )
    valid(partitioned)
    selector = spec["podSelector"]["matchLabels"]
    assert selector.items() <= partitioned["metadata"]["labels"].items()
    assert not selector.items() <= target["metadata"]["labels"].items()
    assert partitioned["metadata"]["annotations"][names.PARTITION_LABEL] == experiment.name

    healed = merge_patch(partitioned, builders.unpartition_label_patch())
    valid(healed)
    assert healed["metadata"]["labels"] == target["metadata"]["labels"]
    assert not healed["metadata"].get("annotations")


def test_network_policy_refuses_an_unknown_direction() -> None:
    experiment = Experiment.new(
        "p",
        {
            "target": {"selector": {"matchLabels": {"a": "b"}}},
            "fault": {"type": "network-partition"},
        },
    )
    with pytest.raises(ValueError, match="egress"):
        builders.network_policy(experiment, "uid", "2030-01-01T00:00:00Z", "egress")


# --------------------------------------------------------------------------- resize

CPU = st.one_of(
    st.integers(1, 64_000).map(lambda m: f"{m}m"),
    st.integers(1, 64).map(str),
    st.sampled_from(["0.5", "1.5", "250m", "1"]),
)
MEMORY = st.one_of(
    st.integers(16, 65536).map(lambda mi: f"{mi}Mi"),
    st.integers(1, 64).map(lambda gi: f"{gi}Gi"),
    st.integers(16_000_000, 64_000_000_000).map(str),
    st.integers(16, 64_000).map(lambda m: f"{m}M"),
)
QUANTITIES = {"cpu": CPU, "memory": MEMORY}


@st.composite
def container_resources(draw: st.DrawFn) -> dict[str, Any]:
    """A container's resources as the API server stores them (requests ≤ limits)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for resource, quantities in QUANTITIES.items():
        shape = draw(st.sampled_from(["none", "request", "limit=request", "request<limit"]))
        if shape == "none":
            continue
        first = draw(quantities)
        if shape == "request":
            requests[resource] = first
        elif shape == "limit=request":
            requests[resource] = limits[resource] = first
        else:
            second = draw(quantities)
            low, high = sorted((first, second), key=builders.parse_quantity)
            requests[resource], limits[resource] = low, high
    if draw(st.booleans()):
        limits["ephemeral-storage"] = requests["ephemeral-storage"] = "1Gi"
    return without_empty({"requests": requests, "limits": limits})


def qos(resources: Mapping[str, Any]) -> str:
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if not requests and not limits:
        return "BestEffort"
    if all(
        r in limits
        and builders.parse_quantity(requests.get(r, limits[r]))
        == builders.parse_quantity(limits[r])
        for r in ("cpu", "memory")
    ):
        return "Guaranteed"
    return "Burstable"


@FAST
@given(
    original=container_resources(),
    cpu=st.none() | CPU,
    memory=st.none() | MEMORY,
)
def test_resize_sets_the_limits_keeps_requests_below_and_restores_exactly(
    original: dict[str, Any], cpu: str | None, memory: str | None
) -> None:
    if cpu is None and memory is None:
        with pytest.raises(ValueError):
            builders.resize_patch("postgres", cpu, memory, original)
        return
    before = pod(original)
    patch = builders.resize_patch("postgres", cpu, memory, original)
    after = strategic_resize(before, patch)
    valid(after)
    resources = after["spec"]["containers"][1]["resources"]
    assert after["spec"]["containers"][0] == before["spec"]["containers"][0]
    for resource, limit in (("cpu", cpu), ("memory", memory)):
        if limit is not None:
            assert resources["limits"][resource] == limit
        else:
            assert resources.get("limits", {}).get(resource) == original.get("limits", {}).get(
                resource
            )
        request = resources.get("requests", {}).get(resource)
        now_limit = resources.get("limits", {}).get(resource)
        if request is not None and now_limit is not None:
            assert builders.parse_quantity(request) <= builders.parse_quantity(now_limit)
        if request is not None and original.get("requests", {}).get(resource) != request:
            assert request == limit  # only ever lowered to the new limit
    if qos(original) == "Guaranteed":
        assert qos(resources) == "Guaranteed"  # resize may not change the QoS class
    assert resources.get("limits", {}).get("ephemeral-storage") == original.get("limits", {}).get(
        "ephemeral-storage"
    )

    restore = builders.restore_resize_patch("postgres", original)
    restored = strategic_resize(after, restore)
    valid(restored)
    assert without_empty(restored["spec"]["containers"][1]["resources"]) == original
    again = strategic_resize(restored, restore)  # a second revert changes nothing
    assert without_empty(again["spec"]["containers"][1]["resources"]) == original


def test_resize_lowers_a_request_above_the_new_limit() -> None:
    original = {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    patch = builders.resize_patch("postgres", "100m", None, original)
    assert patch == {
        "spec": {
            "containers": [
                {
                    "name": "postgres",
                    "resources": {"limits": {"cpu": "100m"}, "requests": {"cpu": "100m"}},
                }
            ]
        }
    }
    assert builders.resize_patch("postgres", None, "4Gi", original)["spec"]["containers"][0][
        "resources"
    ] == {"limits": {"memory": "4Gi"}}
    restore = builders.restore_resize_patch("postgres", {"requests": {"cpu": "500m"}})
    assert restore["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": None, "memory": None},
        "requests": {"cpu": "500m", "memory": None},
    }


def _set(values: Mapping[str, Any] | None) -> set[str]:
    return {key for key, value in (values or {}).items() if value is not None}


def server_refuses(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """What ValidatePodResize refuses of one resize of ``db-0``'s postgres container (its
    sidecar has no resources: the pod is BestEffort or Burstable, never Guaranteed): a limit
    or a request (defaulted from its limit) removed, or the QoS class changed."""
    def effective_requests(resources: Mapping[str, Any]) -> set[str]:
        return _set(resources.get("limits")) | _set(resources.get("requests"))

    def pod_qos(resources: Mapping[str, Any]) -> str:
        return "BestEffort" if not effective_requests(resources) else "Burstable"

    return bool(_set(before.get("limits")) - _set(after.get("limits"))
                or effective_requests(before) - effective_requests(after)
                or pod_qos(before) != pod_qos(after))


@FAST
@given(original=container_resources(), cpu=st.none() | CPU, memory=st.none() | MEMORY)
def test_a_resize_fault_is_refused_exactly_when_the_server_would_refuse_it_or_its_revert(
    original: dict[str, Any], cpu: str | None, memory: str | None
) -> None:
    """The revert puts the recorded resources back: a limit the fault added would have to be
    removed, which a real 1.33/1.34 server refuses ("resource limits cannot be removed"), and
    the throttle would stay. So such a fault is refused before it is injected."""
    from pggit_chaos.kube import faults

    if cpu is None and memory is None:
        return
    before = pod(original)
    after = strategic_resize(before, builders.resize_patch("postgres", cpu, memory, original))
    restored = strategic_resize(after, builders.restore_resize_patch("postgres", original))
    resources = [c.get("resources") or {} for c in (
        before["spec"]["containers"][1], after["spec"]["containers"][1],
        restored["spec"]["containers"][1])]
    refused = server_refuses(resources[0], resources[1]) or server_refuses(resources[1],
                                                                           resources[2])
    reason = faults.resize_refusal(before, "postgres", "cpu-throttle", cpu, memory)
    assert (reason is not None) == refused, (original, cpu, memory, reason)
    missing = [resource for resource, value in (("cpu", cpu), ("memory", memory))
               if value is not None and resource not in original.get("limits", {})]
    if missing:  # the first one missing is named, with what to do
        assert reason is not None
        assert f"give container postgres a {missing[0]} limit" in reason


def test_a_throttle_that_would_make_the_pod_guaranteed_is_refused() -> None:
    from pggit_chaos.kube import faults

    alone = pod({"requests": {"cpu": "100m", "memory": "1Gi"},
                 "limits": {"cpu": "2", "memory": "1Gi"}})
    alone["spec"]["containers"] = alone["spec"]["containers"][1:]
    assert builders.qos_class(alone["spec"]) == "Burstable"
    reason = faults.resize_refusal(alone, "postgres", "cpu-throttle", "100m", None)
    assert reason is not None and "QoS class from Burstable to Guaranteed" in reason
    assert faults.resize_refusal(alone, "postgres", "cpu-throttle", "200m", None) is None
    # a Guaranteed pod stays Guaranteed: the requests follow the limits
    guaranteed = copy.deepcopy(alone)
    guaranteed["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "2"
    assert builders.qos_class(guaranteed["spec"]) == "Guaranteed"
    assert faults.resize_refusal(guaranteed, "postgres", "cpu-throttle", "100m", None) is None


def test_pods_the_server_does_not_resize_are_refused_with_the_reason() -> None:
    from pggit_chaos.kube import faults

    limited = {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    assert faults.resize_refusal(pod(limited), "postgres", "cpu-throttle", "50m", None) is None
    none = faults.resize_refusal(pod({"requests": {"cpu": "100m"}}), "postgres",
                                 "cpu-throttle", "50m", None)
    assert none == (
        "container postgres of pod db/db-0 has no cpu limit: cpu-throttle would add one, and "
        'Kubernetes refuses to remove a limit by resize ("resource limits cannot be removed"), '
        "so the fault could never be reverted; give container postgres a cpu limit "
        "(resources.limits.cpu) to run cpu-throttle on it")
    pod_level = pod(limited)
    pod_level["spec"]["resources"] = {"limits": {"cpu": "2"}}
    assert "pod-level resources" in str(
        faults.resize_refusal(pod_level, "postgres", "cpu-throttle", "50m", None))
    static = pod(limited)
    static["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    assert "static pod" in str(faults.resize_refusal(static, "postgres", "cpu-throttle", "50m",
                                                     None))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Decimal("0.25")), ("1", Decimal(1)), ("1.5", Decimal("1.5")), (2, Decimal(2)),
        ("1Ki", Decimal(1024)), ("128Mi", Decimal(128 * 2**20)), ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)), ("1E-3", Decimal("0.001")), ("100n", Decimal("1e-7")),
        ("1.5Gi", Decimal(3 * 2**29)), ("0.5k", Decimal(500)),
    ],
)  # fmt: skip
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert builders.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "m", "1x", "1Mb", "--1", True, None, "1.2.3"])
def test_parse_quantity_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        builders.parse_quantity(text)


# ---------------------------------------------------------------------------- Events

involved_objects = st.one_of(
    st.builds(
        lambda e, uid: experiment_body(e, uid),
        experiments(secret=st.booleans()),
        uids,
    ),
    st.builds(
        lambda name, ns: {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns, "uid": "u-1"},
        },
        dns_subdomains(63),
        dns_labels(),
    ),
)


@FAST
@given(
    involved=involved_objects,
    reason=st.sampled_from(["FaultInjected", "FaultReverted", "Recovered", "Verified", "Failed"]),
    message=st.text(max_size=3000),
    type_=st.sampled_from(["Normal", "Warning"]),
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    ),
    suffix=st.from_regex(r"\A[a-z0-9]{1,16}\Z"),
)  # fmt: skip
def test_event_is_valid_and_names_its_object(
    involved: dict[str, Any], reason: str, message: str, type_: str, now: datetime, suffix: str
) -> None:
    body = builders.event(involved, reason, message, type_, now, name_suffix=suffix)
    valid(body)
    meta = involved["metadata"]
    assert body["metadata"]["namespace"] == meta["namespace"]
    assert body["metadata"]["name"].endswith(f".{suffix}")
    reference = body["involvedObject"]
    assert reference["apiVersion"] == involved["apiVersion"]
    assert reference["kind"] == involved["kind"]
    assert reference["name"] == meta["name"]
    assert reference["namespace"] == meta["namespace"]
    assert reference["uid"] == meta["uid"]
    assert reference.get("resourceVersion") == meta.get("resourceVersion")
    assert body["type"] == type_ and body["reason"] == reason and body["action"] == reason
    assert len(body["message"].encode()) <= 1024
    if len(message.encode()) <= 1024:
        assert body["message"] == message
    else:
        assert body["message"].endswith("...") and message.startswith(body["message"][:-3])
    stamps = {body[key] for key in ("firstTimestamp", "lastTimestamp", "eventTime")}
    assert len(stamps) == 1
    (stamp,) = stamps
    assert MICRO_TIME.match(stamp)
    assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) == now
    assert body["count"] == 1
    assert body["source"] == {"component": "pggit-chaos-operator"}
    assert body["reportingComponent"] == "pggit-chaos-operator" and body["reportingInstance"]


def test_event_refuses_naive_times_and_bad_types() -> None:
    involved = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"}}
    with pytest.raises(ValueError, match="timezone"):
        builders.event(involved, "R", "m", "Normal", datetime(2030, 1, 1), name_suffix="a")
    with pytest.raises(ValueError, match="Normal or Warning"):
        builders.event(involved, "R", "m", "Error", datetime.now(UTC), name_suffix="a")
    with pytest.raises(ValueError, match="suffix"):
        builders.event(involved, "R", "m", "Normal", datetime.now(UTC), name_suffix="A_b")


# ------------------------------------------------------------------------ ConfigMaps


@FAST
@given(
    experiment=experiments(secret=st.booleans()),
    uid=uids,
    journal=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    ).map(lambda doc: json.dumps({"history": doc}, ensure_ascii=False)),
)
def test_journal_config_map_round_trips(experiment: Experiment, uid: str, journal: str) -> None:
    owner = experiment_body(experiment, uid)
    cm = builders.journal_config_map(experiment.name, experiment.namespace, owner, journal)
    valid(cm)
    assert cm["metadata"]["name"] == names.journal_config_map_name(experiment.name)
    assert cm["metadata"]["labels"][names.ROLE_LABEL] == names.ROLE_JOURNAL
    assert cm["metadata"]["labels"][names.EXPERIMENT_LABEL] == builders.experiment_label_value(
        experiment.name
    )
    assert cm["metadata"]["ownerReferences"] == [builders.owner_reference(owner)]
    assert set(cm["binaryData"]) == {names.JOURNAL_KEY}
    assert builders.read_journal_config_map(json.loads(json.dumps(cm))) == journal
    assert builders.journal_config_map(experiment.name, experiment.namespace, owner, journal) == cm


def test_journal_too_large_for_a_config_map_is_refused() -> None:
    noise = os.urandom(1_100_000).hex()
    owner = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "uid": "u"}}
    with pytest.raises(ChaosError, match="ConfigMap"):
        builders.journal_config_map("x", "default", owner, noise)
    with pytest.raises(ChaosError, match=re.escape(names.JOURNAL_KEY)):
        builders.read_journal_config_map({"metadata": {"name": "x"}, "data": {}})



#: What the API server accepts in one ConfigMap: data and binaryData together, decoded.
CONFIG_MAP_SIZE = 1024 * 1024


def _config_map_size(cm: Mapping[str, Any]) -> int:
    import base64

    binary = sum(len(base64.b64decode(v)) for v in (cm.get("binaryData") or {}).values())
    return binary + sum(len(k) + len(v.encode()) for k, v in (cm.get("data") or {}).items())


def _parts_reader(cms: list[dict[str, Any]]) -> Any:
    by_name = {cm["metadata"]["name"]: json.loads(json.dumps(cm)) for cm in cms}
    return by_name.get


@pytest.mark.parametrize(("size", "config_maps"),
                         [(5_000, 1), (870_000, 1), (880_000, 3), (2_300_000, 4)])
def test_a_history_of_any_size_up_to_the_limit_is_kept_beside_the_journal(
        size: int, config_maps: int) -> None:
    """A history sharing the journal's ConfigMap, one just too big to, and one over two
    parts: every ConfigMap fits what the API server accepts, owned like the journal, and the
    history reads back byte for byte (a run of a minute made 1.5 MB and ended Error before)."""
    import gzip

    owner = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "uid": "u"}}
    history = os.urandom(size).hex().encode()  # compresses to about 1.14 * size
    packed = gzip.compress(history)
    cms = builders.journal_config_maps("exp", "default", owner, '{"a": 1}', packed,
                                       run_id="abcdef0123", history_max_bytes=8_000_000)
    main = cms[-1]
    assert main["metadata"]["name"] == names.journal_config_map_name("exp", "abcdef0123")
    for cm in cms:
        valid(cm)
        assert _config_map_size(cm) <= CONFIG_MAP_SIZE
        assert cm["metadata"]["ownerReferences"] == [builders.owner_reference(owner)]
        assert cm["metadata"]["labels"][names.ROLE_LABEL] == names.ROLE_JOURNAL
    assert len(cms) == config_maps
    assert builders.read_journal_config_map(main) == '{"a": 1}'
    text, note = builders.read_journal_history(json.loads(json.dumps(main)), _parts_reader(cms))
    assert (text, note) == (history.decode(), None)


def test_a_history_beyond_history_max_bytes_is_not_kept_and_the_journal_says_so() -> None:
    import gzip

    owner = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "uid": "u"}}
    packed = gzip.compress(os.urandom(1_500_000))
    (main,) = builders.journal_config_maps("exp", "default", owner, "{}", packed,
                                           history_max_bytes=1_200_000)
    valid(main)
    text, note = builders.read_journal_history(main, _parts_reader([main]))
    assert text is None
    assert note is not None and "not kept" in note and "1200000" in note


def test_a_missing_part_of_a_history_is_named() -> None:
    import gzip

    owner = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "uid": "u"}}
    cms = builders.journal_config_maps("exp", "default", owner, "{}",
                                       gzip.compress(os.urandom(1_500_000)), run_id="r1")
    assert len(cms) == 3
    text, note = builders.read_journal_history(cms[-1], _parts_reader([cms[0], cms[-1]]))
    assert text is None and note is not None and cms[1]["metadata"]["name"] in note
    # a journal without any history key: nothing to say
    assert builders.read_journal_history(
        builders.journal_config_map("exp", "default", owner, "{}"), _parts_reader([])) == (
        None, None)

@FAST
@given(
    data=st.dictionaries(
        st.from_regex(r"\A[-._a-zA-Z0-9]{1,40}\Z"), st.text(max_size=100), max_size=3
    ),
    binary=st.dictionaries(
        st.from_regex(r"\A[-._a-zA-Z0-9]{1,40}\Z"), st.binary(max_size=100), max_size=3
    ),
)
def test_config_map_carries_data_and_binary_data(
    data: dict[str, str], binary: dict[str, bytes]
) -> None:
    import base64

    owner_ref = {
        "apiVersion": "chaos.pggit.io/v1alpha1",
        "kind": "PgGitChaosExperiment",
        "name": "e",
        "uid": "u",
    }
    labels = {names.ROLE_LABEL: names.ROLE_CHECKS, names.MANAGED_BY_LABEL: names.MANAGED_BY}
    cm = builders.config_map("e-checks-abc", "default", owner_ref, labels, data, binary)
    valid(cm)
    assert cm["metadata"]["ownerReferences"] == [
        {**owner_ref, "controller": True, "blockOwnerDeletion": True}
    ]
    assert cm.get("data", {}) == data
    assert {k: base64.b64decode(v) for k, v in cm.get("binaryData", {}).items()} == binary


def test_owner_reference_needs_a_uid() -> None:
    with pytest.raises(ValueError, match="uid"):
        builders.owner_reference({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}})


def test_longest_names_fit_everywhere() -> None:
    """A 253-character experiment name in a 63-character namespace: every object still fits."""
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    namespace = "n" * 63
    assert len(name) == 253
    experiment = Experiment.new(
        name,
        {
            "target": {
                "selector": {"matchLabels": {"a": "b"}},
                "databaseSecretRef": {"name": name},
            },
            "fault": {"type": "network-partition"},
        },
        namespace=namespace,
    )
    config = Settings(state_dir=Path("/tmp/unused"))
    run_id = "f" * 40
    owner = experiment_body(experiment, "uid")
    for obj in (
        builders.runner_job(experiment, "uid", run_id, config),
        builders.verification_job(experiment, "uid", run_id, config, seed=7),
        builders.network_policy(experiment, "uid", "2030-01-01T00:00:00Z", "both"),
        builders.journal_config_map(name, namespace, owner, "{}"),
        builders.event(owner, "Verified", "ok", "Normal", datetime.now(UTC), name_suffix="f" * 63),
    ):
        valid(obj)
