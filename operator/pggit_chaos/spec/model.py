"""The ``PgGitChaosExperiment`` resource as pydantic models: the one source of truth.

Loaded by :mod:`pggit_chaos.spec.loader` (YAML files, CR bodies), read by the engine, the
substrates and the operator, and turned into the CRD schema by :mod:`pggit_chaos.spec.crd`.
Defaults and limits sit on the fields; cross-field rules sit on the model that owns both
fields and carry a CEL twin (``x-kubernetes-validations``) so the API server enforces them too.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from pggit_chaos.spec.units import (
    Duration,
    DurationRange,
    Quantity,
    QuantityRange,
    parse_duration,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "MAX_SPIKE_CLIENTS",
    "VERSION",
    "Assertion",
    "ClockSkew",
    "ConnectionKill",
    "CpuThrottle",
    "DatabaseSecretRef",
    "DiskPressure",
    "Experiment",
    "ExperimentSpec",
    "Fault",
    "FaultLevel",
    "FaultType",
    "Guards",
    "IndexCorruption",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LoadSpike",
    "Local",
    "LockContention",
    "MemoryPressure",
    "Metadata",
    "NetworkLatency",
    "NetworkPartition",
    "PodKill",
    "PodPause",
    "PrimaryFailover",
    "Recovery",
    "Target",
    "TriggerDisable",
    "Verification",
    "Workload",
    "WorkloadMix",
]

GROUP = "chaos.pggit.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PgGitChaosExperiment"

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PG_PARAMETER_PATTERN = r"^[a-z_][a-z0-9_.]*$"
PG_PARAMETER = re.compile(PG_PARAMETER_PATTERN)
#: At most this many server parameters in ``local.postgresql`` (bounds the CEL rule's cost).
MAX_PARAMETERS = 64


def _whole(value: Any) -> Any:
    """A float with a whole value is that integer: kubectl's YAML-to-JSON conversion writes
    ``1.0`` as ``1``, so the API server sees (and stores) ``1``; the model does the same."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


#: Metadata of every integer field, after its bounds (``Annotated[StrictInt, Field(ge=1),
#: WHOLE]``; before them pydantic could not write the bounds into the JSON schema): ``1`` or
#: ``1.0``, never ``1.5``, ``True`` or ``"1"``.
WHOLE = BeforeValidator(_whole)


def _without_nulls(value: Any) -> Any:
    """A map's null values count as not given: the API server prunes them before anything."""
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if item is not None}
    return value


class _Model(BaseModel):
    """Base of every spec section: camelCase aliases, unknown fields are errors.

    A field given as null counts as not given (its default applies), as on the API server,
    which prunes the null of a non-nullable field and then applies the field's default.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        use_attribute_docstrings=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(value is None for value in data.values()):
            known = {name for name, info in cls.model_fields.items()} | {
                info.alias for info in cls.model_fields.values() if info.alias
            }
            # An unknown field stays, null or not: it is reported as unknown.
            return {
                key: value for key, value in data.items() if value is not None or key not in known
            }
        return data


def _problem(reason: str, at: str | None = None) -> PydanticCustomError:
    """A validation error; ``at`` names a child field (alias) the problem belongs to."""
    context: dict[str, Any] = {"reason": reason}
    if at is not None:
        context["at"] = at
    return PydanticCustomError("spec", "{reason}", context)


# ---------------------------------------------------------------------------- metadata


class Metadata(BaseModel):
    """Kubernetes object metadata; lenient, since the API server adds uid, generation, ..."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: Annotated[StrictStr, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
    namespace: Annotated[StrictStr, Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)] = (
        "default"
    )
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict)


# ------------------------------------------------------------------------------ target


#: Bounds of label selectors: the API server's CEL cost estimate needs bounded lists and maps.
MAX_MATCH_LABELS = 64
MAX_MATCH_EXPRESSIONS = 32
MAX_SELECTOR_VALUES = 64


class LabelSelectorRequirement(_Model):
    """One matchExpressions entry of a Kubernetes label selector."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(self.operator in ['In', 'NotIn']) || "
                    "(has(self.values) && size(self.values) > 0)",
                    "message": "operators In and NotIn need at least one value",
                    "fieldPath": ".values",
                },
                {
                    "rule": "!(self.operator in ['Exists', 'DoesNotExist']) || "
                    "!has(self.values) || size(self.values) == 0",
                    "message": "operators Exists and DoesNotExist take no values",
                    "fieldPath": ".values",
                },
            ]
        }
    )

    key: Annotated[StrictStr, Field(min_length=1, max_length=317)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[StrictStr], Field(max_length=MAX_SELECTOR_VALUES)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> Self:
        if self.operator in ("In", "NotIn") and not self.values:
            raise _problem(f"operator {self.operator} needs at least one value", at="values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise _problem(f"operator {self.operator} takes no values", at="values")
        return self


class LabelSelector(_Model):
    """Which pods are targets; must not be empty (an empty selector selects every pod)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
                    "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
                    "message": "the selector must not be empty: it would select every pod",
                }
            ]
        }
    )

    match_labels: Annotated[dict[StrictStr, StrictStr], Field(max_length=MAX_MATCH_LABELS)] = (
        Field(default_factory=dict)
    )
    match_expressions: Annotated[
        list[LabelSelectorRequirement], Field(max_length=MAX_MATCH_EXPRESSIONS)
    ] = Field(default_factory=list)

    @field_validator("match_labels", mode="before")
    @classmethod
    def _drop_nulls(cls, labels: Any) -> Any:
        return _without_nulls(labels)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.match_labels and not self.match_expressions:
            raise _problem("the selector must not be empty: it would select every pod")
        return self


class DatabaseSecretRef(_Model):
    """A Secret in the experiment's namespace holding the database connection string."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
    key: Annotated[StrictStr, Field(min_length=1, description="Key of the DSN in the Secret.")] = (
        "dsn"
    )


class Target(_Model):
    """The database pods a fault hits and the database the workload and checks use."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.mode) || self.mode != 'fixed-percent' || "
                    "!has(self.value) || self.value <= 100",
                    "message": "value is a percentage with mode fixed-percent: at most 100",
                    "fieldPath": ".value",
                }
            ]
        }
    )

    selector: LabelSelector
    mode: Literal["one", "all", "fixed", "fixed-percent"] = Field(
        default="one",
        description="How many selected pods to hit: one, all, a fixed number (value) "
        "or a percentage (value).",
    )
    value: Annotated[
        StrictInt,
        Field(ge=1, description="Pod count or percentage for modes fixed / fixed-percent."),
        WHOLE,
    ] = 1
    database_secret_ref: DatabaseSecretRef | None = Field(
        default=None, description="Secret with the connection string (credentials never inline)."
    )
    database: Annotated[StrictStr, Field(min_length=1, max_length=63)] = Field(
        default="postgres", description="Database name (embedded cluster, or in the Secret's DSN)."
    )

    @field_validator("value")
    @classmethod
    def _percentage(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("mode") == "fixed-percent" and value > 100:
            raise _problem("must be at most 100 with mode fixed-percent (it is a percentage)")
        return value


# ------------------------------------------------------------------------------- fault


class FaultType(StrEnum):
    """What the experiment breaks."""

    POD_KILL = "pod-kill"
    CPU_THROTTLE = "cpu-throttle"
    MEMORY_PRESSURE = "memory-pressure"
    POD_PAUSE = "pod-pause"
    NETWORK_PARTITION = "network-partition"
    CONNECTION_KILL = "connection-kill"
    LOCK_CONTENTION = "lock-contention"
    TRIGGER_DISABLE = "trigger-disable"
    INDEX_CORRUPTION = "index-corruption"
    DISK_PRESSURE = "disk-pressure"
    NETWORK_LATENCY = "network-latency"
    PRIMARY_FAILOVER = "primary-failover"
    LOAD_SPIKE = "load-spike"
    CLOCK_SKEW = "clock-skew"


#: Faults that destroy data and cannot be reverted: refused everywhere but on the embedded
#: throwaway server (``pggit-chaos run`` without ``--dsn``), never in a cluster.
DESTRUCTIVE_FAULTS = frozenset({FaultType.INDEX_CORRUPTION})


class FaultLevel(StrEnum):
    """Where a fault acts, which decides which substrate code injects it."""

    PROCESS = "process"  # the server process: killed or frozen
    RESOURCE = "resource"  # the server's cgroup: cpu quota, memory limit
    NETWORK = "network"  # the server's network: partitioned
    SQL = "sql"  # inside PostgreSQL: same code on every substrate
    STORAGE = "storage"  # the server's data files (overwritten while stopped) or their disk
    WORKLOAD = "workload"  # the recorded workload itself: same code on every substrate


_LEVELS: dict[FaultType, FaultLevel] = {
    FaultType.POD_KILL: FaultLevel.PROCESS,
    FaultType.POD_PAUSE: FaultLevel.PROCESS,
    FaultType.CPU_THROTTLE: FaultLevel.RESOURCE,
    FaultType.MEMORY_PRESSURE: FaultLevel.RESOURCE,
    FaultType.NETWORK_PARTITION: FaultLevel.NETWORK,
    FaultType.CONNECTION_KILL: FaultLevel.SQL,
    FaultType.LOCK_CONTENTION: FaultLevel.SQL,
    FaultType.TRIGGER_DISABLE: FaultLevel.SQL,
    FaultType.INDEX_CORRUPTION: FaultLevel.STORAGE,
    FaultType.DISK_PRESSURE: FaultLevel.STORAGE,
    FaultType.NETWORK_LATENCY: FaultLevel.NETWORK,
    FaultType.PRIMARY_FAILOVER: FaultLevel.PROCESS,
    FaultType.LOAD_SPIKE: FaultLevel.WORKLOAD,
    FaultType.CLOCK_SKEW: FaultLevel.PROCESS,
}


class PodKill(_Model):
    """Kill the server (SIGKILL with grace 0) and let it be restarted."""

    grace_period_seconds: Annotated[StrictInt, Field(ge=0, le=3600), WHOLE] = 0
    restart_delay: Annotated[Duration, DurationRange(max="10m")] = Field(
        default=Duration("1s"),
        description="How long the server stays down before it is restarted (the 'kubelet').",
    )


class CpuThrottle(_Model):
    """Cap the server's CPU to a share of one core."""

    cpu_percent: Annotated[StrictInt, Field(ge=1, le=100), WHOLE] = Field(
        default=10, description="CPU quota as a percentage of one core."
    )


class MemoryPressure(_Model):
    """Limit the server's memory."""

    limit: Annotated[Quantity, QuantityRange(min="16Mi")] = Field(
        default=Quantity("128Mi"), description="Memory limit, e.g. 128Mi; at least 16Mi."
    )
    headroom: Annotated[Quantity, QuantityRange(min="0")] | None = Field(
        default=None,
        description="If set, the limit is the server's memory usage at injection plus this "
        "(never more than limit), so that it bites a server of any size; 0 = no room to grow.",
    )


class PodPause(_Model):
    """Freeze the server's processes (cgroup freezer), then thaw them."""


class NetworkPartition(_Model):
    """Cut the server off the network."""

    direction: Literal["both", "ingress"] = Field(
        default="both", description="Drop traffic in both directions, or only incoming."
    )


class NetworkLatency(_Model):
    """Delay the traffic between the workload's clients and the server (and cap its bandwidth).

    The substrate puts a TCP proxy between them (in the runner's process; in a cluster, in the
    runner pod): it passes traffic through unchanged until the fault, then holds every reply of
    the server ``delay`` ± ``jitter`` (each round trip takes that much longer, as ``tc netem
    delay`` on the server's interface) and, with ``bandwidth``, carries at most that many bytes
    per second each way. Probes and checks connect directly.
    """

    delay: Annotated[Duration, DurationRange(min="1ms", max="1m")] = Field(
        default=Duration("100ms"),
        description="Added to every round trip between the workload and the server.",
    )
    jitter: Annotated[Duration, DurationRange(max="1m")] = Field(
        default=Duration("0s"),
        description="The added delay varies uniformly by up to this either way (never below "
        "0); the order of the bytes is kept.",
    )
    bandwidth: Annotated[Quantity, QuantityRange(min="1Ki")] | None = Field(
        default=None,
        description="Bytes per second each direction carries at most, e.g. 1Mi (all the "
        "workload's connections together, like one link); default: no cap.",
    )


class ConnectionKill(_Model):
    """Terminate client backends (pg_terminate_backend) repeatedly."""

    interval: Annotated[Duration, DurationRange(min="10ms", max="10m")] = Field(
        default=Duration("2s"), description="Time between two rounds of terminations."
    )
    target_application: StrictStr | None = Field(
        default=None,
        description="Only kill backends whose application_name is this (default: all clients).",
    )


class LockContention(_Model):
    """Hold a table lock for the experiment's duration."""

    table: Annotated[
        StrictStr, Field(min_length=1, max_length=127, pattern=r"^[A-Za-z_][A-Za-z0-9_$.]*$")
    ] = Field(default="pggit.objects", description="Table to lock, schema-qualified.")
    mode: Literal["ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE"] = Field(
        default="ACCESS EXCLUSIVE", description="Lock mode; held for spec.duration."
    )


class TriggerDisable(_Model):
    """Disable pgGit's event triggers (DDL then goes unrecorded: drift to detect)."""

    triggers: Annotated[
        list[Literal["pggit_ddl_trigger", "pggit_drop_trigger"]],
        Field(min_length=1, max_length=2, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(
        default=["pggit_ddl_trigger", "pggit_drop_trigger"],
        description="Event triggers to disable (pgGit's DDL and drop triggers).",
    )

    @field_validator("triggers")
    @classmethod
    def _unique(cls, triggers: list[str]) -> list[str]:
        if len(set(triggers)) != len(triggers):
            raise _problem("each trigger may be listed once")
        return triggers


INDEX_CORRUPTION_CONFIRM = (
    "index-corruption overwrites bytes of a pgGit index and cannot be undone: "
    "confirm with destructive: true"
)


class IndexCorruption(_Model):
    """Overwrite bytes of one pgGit btree index while the server is stopped (destructive).

    Only on the embedded throwaway server: the damage stays, there is nothing to revert. The
    checks suite's amcheck checks must then fail naming the index: that Fail is this
    experiment's expected outcome.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.destructive) && self.destructive == true",
                    "message": INDEX_CORRUPTION_CONFIRM,
                    "fieldPath": ".destructive",
                }
            ]
        }
    )

    destructive: StrictBool = Field(
        default=False,
        description="Must be true: the fault destroys index data, which no revert restores.",
    )
    index: (
        Annotated[StrictStr, Field(min_length=1, max_length=63, pattern=r"^[a-z_][a-z0-9_]*$")]
        | None
    ) = Field(
        default=None,
        description="Name of the btree index in schema pggit to corrupt, e.g. history_pkey "
        "(default: the pgGit index with the most entries).",
    )

    @model_validator(mode="after")
    def _confirmed(self) -> Self:
        if not self.destructive:
            raise _problem(INDEX_CORRUPTION_CONFIRM, at="destructive")
        return self


#: Label of the primary pod under the common PostgreSQL operators (``key=value``).
PRIMARY_ROLE_LABELS = {
    "cloudnative-pg": "cnpg.io/instanceRole=primary",
    "patroni": "spilo-role=master",
}
LABEL_KEY_VALUE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?=([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
)


class PrimaryFailover(_Model):
    """Kill the primary and promote its streaming standby; the clients follow the new primary.

    Locally the embedded target is a primary plus one streaming standby (replication slot,
    ``pg_basebackup``); ``replication`` sync sets ``synchronous_standby_names`` on the primary.
    ``standbyLag`` holds the primary's WAL sender in the cgroup freezer for that long before
    the kill, so the standby lags by what was committed meanwhile (acknowledged and lost with
    async replication; waiting, never acknowledged, with sync). In a cluster the pod carrying
    ``primaryLabel`` is deleted and the user's PostgreSQL operator promotes a standby.
    """

    replication: Literal["sync", "async"] = Field(
        default="sync",
        description="Local: synchronous (synchronous_standby_names) or asynchronous streaming.",
    )
    standby_lag: Annotated[Duration, DurationRange(max="1m")] = Field(
        default=Duration("0s"),
        description="Local: pause WAL shipping to the standby (freezer) this long before the "
        "kill, so the standby lags behind what was committed meanwhile.",
    )
    old_primary: Literal["rewind", "down"] = Field(
        default="rewind",
        description="Local: bring the old primary back as a standby of the new one (pg_rewind) "
        "or leave it down.",
    )
    primary_label: Annotated[StrictStr, Field(max_length=317, pattern=LABEL_KEY_VALUE)] = Field(
        default=PRIMARY_ROLE_LABELS["cloudnative-pg"],
        description="In a cluster: label (key=value) of the primary pod among the selected "
        "ones, e.g. cnpg.io/instanceRole=primary (CloudNativePG) or spilo-role=master "
        "(Patroni/Zalando).",
    )


DISK_FILL_PATTERN = r"^(enospc|[1-9][0-9]?%)$"


class DiskPressure(_Model):
    """Fill the filesystem of the server's WAL or data folder with a balloon file.

    The balloon is deleted on revert (always). Locally the folder lives on a size-limited
    filesystem (a tmpfs of ``localSizeMi``) the substrate creates for this fault; in a cluster
    the balloon goes into the pod's data volume through ``pods/exec``.
    """

    volume: Literal["wal", "data"] = Field(
        default="wal",
        description="Which folder's filesystem to fill: the WAL (pg_wal) or the whole data "
        "folder.",
    )
    fill: Annotated[StrictStr, Field(pattern=DISK_FILL_PATTERN)] = Field(
        default="enospc",
        description="How full: a percentage of the filesystem (1% to 99%, e.g. 95%) or "
        "enospc (to the last byte: writes fail with No space left on device).",
    )
    local_size_mi: Annotated[StrictInt, Field(ge=32, le=4096), WHOLE] = Field(
        default=128,
        description="Size in MiB of the filesystem the local run creates for the folder "
        "(ignored in a cluster).",
    )
    max_balloon_mi: Annotated[StrictInt, Field(ge=1, le=1048576), WHOLE] = Field(
        default=1024,
        description="Refuse before injection if the balloon would be larger than this many "
        "MiB (a guard against filling a volume that shares a node's disk).",
    )


class LoadSpike(_Model):
    """Multiply the recorded workload's clients and rate for the fault's duration.

    Like a k6 stage that ramps the virtual users up: during the window the workload runs
    ``workload.clients x clientsFactor`` clients sharing ``workload.rate x rateFactor``
    operations per second (a rate of 0 stays as fast as possible), then the extra clients
    finish their operation in flight, disconnect and the rate returns. Past the server's
    ``max_connections`` the extra connections are refused (SQLSTATE 53300, "sorry, too many
    clients already"); the evidence counts the refusals and compares the latency percentiles
    of the window with those before it. Every operation of the extra clients is recorded, so
    the verdict still rests on nothing acknowledged being lost.
    """

    clients_factor: Annotated[StrictInt, Field(ge=1, le=100)] = Field(
        default=10, description="The workload's clients are multiplied by this for the window "
        "(at most 1000 clients in all).",
    )
    rate_factor: Annotated[StrictFloat, Field(ge=1, le=100)] = Field(
        default=5.0, description="The workload's rate (operations per second over all clients) "
        "is multiplied by this for the window; a rate of 0 stays as fast as possible.",
    )


#: A signed Go-style duration: ``-1h``, ``+90s``, ``30m``.
SIGNED_DURATION_PATTERN = r"^[+-]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(h|ms|m|s))+$"


class ClockSkew(_Model):
    """Jump the database server's clock by an offset for the window, then back.

    Locally the embedded server runs with libfaketime preloaded (Debian's ``faketime``
    package), which reads the offset from a file at every clock call: the fault writes the
    offset there at injection and 0 at the revert, with no restart of the server (its
    monotonic clock is left alone). ``clock_timestamp()``, ``now()`` and everything pgGit
    stamps (Trinity IDs, ``committed_at``, ``created_at``) move by the offset. In a cluster
    it is refused before injection: it needs a privileged daemon on the node.
    """

    offset: Annotated[StrictStr, Field(pattern=SIGNED_DURATION_PATTERN, max_length=32)] = Field(
        default="-1h", description="How far the server's clock jumps: negative = backwards "
        "(e.g. -1h), positive = forwards (e.g. +30m); at most 30 days either way, not 0.",
    )

    @field_validator("offset")
    @classmethod
    def _bounded(cls, offset: str) -> str:
        seconds = abs(clock_offset_seconds(offset))
        if seconds < 1 or seconds > 30 * 86400:
            raise _problem("the offset must be at least 1s and at most 720h either way")
        return offset


def clock_offset_seconds(offset: str) -> float:
    """``"-1h"`` -> -3600.0."""
    text = offset.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * parse_duration(text.lstrip("+-")) / 1e9


#: Most clients a load spike may run (the runner's process holds one connection each).
MAX_SPIKE_CLIENTS = 1000


#: fault type -> (attribute name, alias, settings class) of its sub-section.
SECTIONS: dict[FaultType, tuple[str, str, type[_Model]]] = {
    FaultType.POD_KILL: ("pod_kill", "podKill", PodKill),
    FaultType.CPU_THROTTLE: ("cpu_throttle", "cpuThrottle", CpuThrottle),
    FaultType.MEMORY_PRESSURE: ("memory_pressure", "memoryPressure", MemoryPressure),
    FaultType.POD_PAUSE: ("pod_pause", "podPause", PodPause),
    FaultType.NETWORK_PARTITION: ("network_partition", "networkPartition", NetworkPartition),
    FaultType.CONNECTION_KILL: ("connection_kill", "connectionKill", ConnectionKill),
    FaultType.LOCK_CONTENTION: ("lock_contention", "lockContention", LockContention),
    FaultType.TRIGGER_DISABLE: ("trigger_disable", "triggerDisable", TriggerDisable),
    FaultType.INDEX_CORRUPTION: ("index_corruption", "indexCorruption", IndexCorruption),
    FaultType.DISK_PRESSURE: ("disk_pressure", "diskPressure", DiskPressure),
    FaultType.NETWORK_LATENCY: ("network_latency", "networkLatency", NetworkLatency),
    FaultType.PRIMARY_FAILOVER: ("primary_failover", "primaryFailover", PrimaryFailover),
    FaultType.LOAD_SPIKE: ("load_spike", "loadSpike", LoadSpike),
    FaultType.CLOCK_SKEW: ("clock_skew", "clockSkew", ClockSkew),
}


def _section_rules() -> list[JsonValue]:
    rules: list[JsonValue] = [
        {
            "rule": f"!has(self.{alias}) || self.type == '{fault_type.value}'",
            "message": f"{alias} belongs to fault type {fault_type.value}",
            "fieldPath": f".{alias}",
        }
        for fault_type, (_, alias, _) in SECTIONS.items()
    ]
    rules.append({
        "rule": "self.type != 'index-corruption' || has(self.indexCorruption)",
        "message": INDEX_CORRUPTION_CONFIRM.replace(
            "destructive: true", "indexCorruption: {destructive: true}"),
        "fieldPath": ".indexCorruption",
    })
    return rules


class Fault(_Model):
    """The fault to inject: its type and, optionally, the settings section of that type."""

    # After validation the section of ``type`` is always filled (defaults if not given), so
    # ``fault.settings`` and e.g. ``fault.pod_kill`` are never None for the chosen type.
    # Writing another type's section is an error, as in the CRD's CEL rules; null counts as
    # not given (the API server prunes nulls of non-nullable fields, so CEL never sees them).

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _section_rules()})

    type: FaultType
    pod_kill: PodKill | None = None
    cpu_throttle: CpuThrottle | None = None
    memory_pressure: MemoryPressure | None = None
    pod_pause: PodPause | None = None
    network_partition: NetworkPartition | None = None
    connection_kill: ConnectionKill | None = None
    lock_contention: LockContention | None = None
    trigger_disable: TriggerDisable | None = None
    index_corruption: IndexCorruption | None = None
    disk_pressure: DiskPressure | None = None
    network_latency: NetworkLatency | None = None
    primary_failover: PrimaryFailover | None = None
    load_spike: LoadSpike | None = None
    clock_skew: ClockSkew | None = None

    @field_validator(*(attribute for attribute, _, _ in SECTIONS.values()), mode="before")
    @classmethod
    def _section_matches_type(cls, section: Any, info: ValidationInfo) -> Any:
        fault_type = info.data.get("type")
        if section is None or fault_type is None:  # null = not given; a bad type: said there
            return section
        attribute, alias, _ = SECTIONS[fault_type]
        if info.field_name != attribute:
            mine = next(t for t, (a, _, _) in SECTIONS.items() if a == info.field_name)
            raise _problem(
                f"belongs to fault type {mine.value}, but the fault type is "
                f"{fault_type.value} (its settings go in {alias})"
            )
        return section

    @model_validator(mode="after")
    def _fill_section(self) -> Self:
        attribute, _, settings_class = SECTIONS[self.type]
        if getattr(self, attribute) is None and self.type in DESTRUCTIVE_FAULTS:
            # No default for a destructive fault: the spec itself must say so.
            raise _problem(INDEX_CORRUPTION_CONFIRM.replace(
                "destructive: true", "indexCorruption: {destructive: true}"), at="indexCorruption")
        if getattr(self, attribute) is None:
            setattr(self, attribute, settings_class())
        return self

    @property
    def settings(self) -> _Model:
        """The settings section of this fault's type (defaults if it was not written)."""
        attribute, _, settings_class = SECTIONS[self.type]
        section: _Model | None = getattr(self, attribute)
        return section if section is not None else settings_class()

    @property
    def level(self) -> FaultLevel:
        """Where the fault acts: ``process`` (pod-kill, pod-pause), ``resource`` (cpu-throttle,
        memory-pressure), ``network`` (network-partition, network-latency), ``sql``
        (connection-kill, lock-contention, trigger-disable — the same code on every substrate)
        ``storage`` (index-corruption: the server's files; disk-pressure: their filesystem)
        or ``workload`` (load-spike: the engine's own clients, the same on every substrate)."""
        return _LEVELS[self.type]

    @property
    def destructive(self) -> bool:
        """True for a fault that destroys data (index-corruption): nothing reverts it, so it
        runs only against the embedded throwaway server."""
        return self.type in DESTRUCTIVE_FAULTS


# ------------------------------------------------------------- workload, recovery, checks


class WorkloadMix(_Model):
    """Relative weights of the workload's operations."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.commit) ? self.commit : 3) + "
                    "(has(self.ddl) ? self.ddl : 1) > 0",
                    "message": "commit and ddl weights must not both be 0",
                }
            ]
        }
    )

    commit: Annotated[StrictInt, Field(ge=0, le=1000), WHOLE] = Field(
        default=3, description="Weight of pggit.commit_changes calls."
    )
    ddl: Annotated[StrictInt, Field(ge=0, le=1000), WHOLE] = Field(
        default=1, description="Weight of DDL statements (recorded by the event triggers)."
    )

    @model_validator(mode="after")
    def _something_to_do(self) -> Self:
        if self.commit == 0 and self.ddl == 0:
            raise _problem("commit and ddl weights must not both be 0")
        return self


class Workload(_Model):
    """The recorded workload that runs before, during and after the fault."""

    clients: Annotated[StrictInt, Field(ge=1, le=64), WHOLE] = Field(
        default=4, description="Concurrent client connections."
    )
    rate: Annotated[StrictFloat, Field(ge=0, le=100000)] = Field(
        default=50.0, description="Operations per second over all clients; 0 = as fast as possible."
    )
    operation_timeout: Annotated[Duration, DurationRange(min="10ms", max="10m")] = Field(
        default=Duration("5s"), description="An operation taking longer is indeterminate."
    )
    mix: WorkloadMix = Field(default_factory=WorkloadMix)


class Recovery(_Model):
    """How recovery after the revert is awaited and measured."""

    timeout: Annotated[Duration, DurationRange(min="1s", max="1h")] = Field(
        default=Duration("120s"), description="Not healthy again within this: the verdict is Fail."
    )
    probe_interval: Annotated[Duration, DurationRange(min="10ms", max="250ms")] = Field(
        default=Duration("250ms"), description="Time between health probes (at most 250ms)."
    )


CheckCategory = Literal[
    "property", "concurrent", "transaction", "resource", "corruption", "security"
]


#: At most this many user assertions per experiment (bounds the CRD's list).
MAX_ASSERTIONS = 32


class Assertion(_Model):
    """One of your own invariants: a read-only query whose one value must equal expect."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)] = (
        Field(description="Names the assertion in the verdict, status, Events and reports.")
    )
    sql: Annotated[
        StrictStr, Field(min_length=1, max_length=8192, json_schema_extra={"pattern": r"\S"})
    ] = Field(
        description="One query returning one row of one column; it runs in a READ ONLY "
        "transaction (a write is refused by the server) with a statement timeout."
    )
    expect: Annotated[StrictStr, Field(max_length=1024)] = Field(
        description="The value the query must return, as text (PostgreSQL's output: a "
        "boolean is t or f, a count e.g. '0'); quote it in YAML."
    )
    timeout: Annotated[Duration, DurationRange(min="10ms", max="5m")] = Field(
        default=Duration("10s"), description="Statement timeout of the query."
    )

    @field_validator("sql")
    @classmethod
    def _not_blank(cls, sql: str) -> str:
        if not sql.strip():
            raise _problem("must not be empty: one query returning one value")
        return sql


class Verification(_Model):
    """What is checked after recovery."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.checks) || size(self.checks) > 0 || "
                    "!has(self.invariants) || self.invariants || "
                    "(has(self.assertions) && size(self.assertions) > 0)",
                    "message": "nothing to verify: give checks or assertions, or keep "
                    "invariants true",
                    "fieldPath": ".checks",
                }
            ]
        }
    )

    checks: Annotated[
        list[CheckCategory],
        Field(max_length=6, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(
        default=["property", "corruption"],
        description="Categories of the checks suite to run.",
    )
    hypothesis_profile: Literal["ci", "dev", "thorough"] = Field(
        default="ci", description="Hypothesis profile of the checks suite."
    )
    timeout: Annotated[Duration, DurationRange(min="1s", max="6h")] = Field(
        default=Duration("300s"), description="Time limit of the verification."
    )
    invariants: StrictBool = Field(
        default=True, description="Check the workload history against the database."
    )
    assertions: Annotated[
        list[Assertion],
        Field(
            max_length=MAX_ASSERTIONS,
            json_schema_extra={
                "default": [],
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = Field(
        default_factory=list,
        description="Your own invariants (names unique): read-only queries checked at the "
        "steady state (before the fault) and after recovery; a mismatch fails the run, a "
        "query that cannot be evaluated makes it Inconclusive.",
    )

    @field_validator("assertions")
    @classmethod
    def _unique_names(cls, assertions: list[Assertion]) -> list[Assertion]:
        names = [assertion.name for assertion in assertions]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise _problem(f"assertion names must be unique: {', '.join(duplicates)}")
        return assertions

    @field_validator("checks")
    @classmethod
    def _unique(cls, checks: list[str]) -> list[str]:
        duplicates = sorted({check for check in checks if checks.count(check) > 1})
        if duplicates:
            raise _problem(f"listed more than once: {', '.join(duplicates)}")
        return checks

    @model_validator(mode="after")
    def _something_to_verify(self) -> Self:
        if not self.checks and not self.invariants and not self.assertions:
            raise _problem("nothing to verify: give checks or assertions, or keep invariants "
                           "true", at="checks")
        return self


class Guards(_Model):
    """Blast-radius limits checked while the fault holds: exceeded, the run stops (Aborted)."""

    max_lost_writes: Annotated[StrictInt, Field(ge=0), WHOLE] | None = Field(
        default=None,
        description="Most acknowledged writes (the workload's pgGit commits) that may be "
        "missing from the database, checked whenever it answers during the fault; 0 = none.",
    )
    max_error_rate: Annotated[StrictFloat, Field(ge=0, le=1)] | None = Field(
        default=None,
        description="Most workload errors (failed or indeterminate operations) as a fraction "
        "of the operations completed in the last errorRateWindow, e.g. 0.5.",
    )
    error_rate_window: Annotated[Duration, DurationRange(min="1s", max="10m")] = Field(
        default=Duration("5s"), description="The sliding window of maxErrorRate."
    )
    min_samples: Annotated[StrictInt, Field(ge=1, le=1000000), WHOLE] = Field(
        default=20,
        description="maxErrorRate is judged only over at least this many operations.",
    )


ParameterValue = StrictStr | int
PARAMETER_NAMES_REASON = "server parameter names are lower case letters, digits, _ and ."
PARAMETER_VALUES_REASON = (
    "values must be a string or an integer (quote anything else: 'on', '0.9')"
)


class Local(_Model):
    """Settings for the embedded (one machine) run; ignored in a cluster."""

    postgresql: Annotated[dict[StrictStr, Any], Field(max_length=MAX_PARAMETERS)] = Field(
        default_factory=dict,
        description="Server parameters of the embedded cluster, e.g. synchronous_commit: 'off'. "
        "Values are strings or integers (quote the rest: fsync: 'on', "
        "checkpoint_completion_target: '0.9').",
        json_schema_extra={
            "additionalProperties": {"x-kubernetes-int-or-string": True},
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(name, name.matches('{PG_PARAMETER_PATTERN}'))",
                    "message": PARAMETER_NAMES_REASON,
                }
            ],
        },
    )

    @field_validator("postgresql", mode="before")
    @classmethod
    def _drop_nulls(cls, parameters: Any) -> Any:
        return _without_nulls(parameters)

    @field_validator("postgresql")
    @classmethod
    def _parameters(cls, parameters: dict[str, Any]) -> dict[str, ParameterValue]:
        bad_names = [name for name in parameters if not PG_PARAMETER.fullmatch(name)]
        if bad_names:
            raise _problem(
                f"not a server parameter name: {', '.join(map(repr, bad_names))} "
                f"({PARAMETER_NAMES_REASON})"
            )
        values = {name: _whole(value) for name, value in parameters.items()}
        bad_values = [
            name
            for name, value in values.items()
            if isinstance(value, bool) or not isinstance(value, str | int)
        ]
        if bad_values:
            raise _problem(f"{PARAMETER_VALUES_REASON}: {', '.join(bad_values)}")
        return values


# ----------------------------------------------------------------------------- the resource


def fault_label(spec: Any) -> str:
    """The fault a raw (unvalidated) spec names: ``fault.type``, or a scenario's fault types
    joined by ``+`` (``network-partition+cpu-throttle``); empty when it names none."""
    if not isinstance(spec, dict):
        return ""
    fault = spec.get("fault")
    if isinstance(fault, dict) and isinstance(fault.get("type"), str):
        return str(fault["type"])
    scenario = spec.get("scenario")
    steps = scenario.get("steps") if isinstance(scenario, dict) else None
    types = [str(step["fault"]["type"]) for step in steps or []
             if isinstance(step, dict) and isinstance(step.get("fault"), dict)
             and isinstance(step["fault"].get("type"), str)]
    return "+".join(types)


#: Most faults one scenario may hold.
MAX_SCENARIO_STEPS = 8


class ScenarioMode(StrEnum):
    """How a scenario's steps follow each other."""

    SERIAL = "serial"
    PARALLEL = "parallel"


class ScenarioStep(_Model):
    """One fault of a scenario, held ``duration`` after waiting ``delay``."""

    fault: Fault
    duration: Annotated[Duration, DurationRange(min="1s", max="1h")] = Field(
        default=Duration("30s"), description="How long this fault is held before it is reverted."
    )
    delay: Annotated[Duration, DurationRange(max="1h")] = Field(
        default=Duration("0s"),
        description="Wait before injecting this fault: after the previous step's revert "
        "(serial), or after the scenario's start (parallel).",
    )


class Scenario(_Model):
    """Several faults in one run, one after another (serial) or overlapping (parallel).

    Each fault has its own intent (recorded before it is injected, cleared after its revert),
    revert and evidence; the verdict is the whole run's. On any error or interrupt every
    injected fault is reverted, the last injected first.
    """

    mode: ScenarioMode = Field(
        default=ScenarioMode.SERIAL,
        description="serial: each step after the previous one's revert; parallel: every step "
        "starts at its delay after the scenario's start.",
    )
    steps: list[ScenarioStep] = Field(
        min_length=2, max_length=MAX_SCENARIO_STEPS,
        description="The faults, in order (at least 2; a single fault goes in spec.fault)."
    )

    @field_validator("steps")
    @classmethod
    def _distinct_types(cls, steps: list[ScenarioStep]) -> list[ScenarioStep]:
        seen: set[str] = set()
        for step in steps:
            if step.fault.type in DESTRUCTIVE_FAULTS:
                raise _problem(f"{step.fault.type} destroys data and runs only as a single "
                               "fault (spec.fault)")
            if step.fault.type in seen:
                raise _problem(f"fault type {step.fault.type} appears twice: each fault type "
                               "at most once per scenario")
            seen.add(step.fault.type)
        return steps

    def hold_seconds(self) -> float:
        """Seconds from the first injection to the last revert, as planned."""
        if self.mode is ScenarioMode.PARALLEL:
            return max(s.delay.seconds + s.duration.seconds for s in self.steps)
        return sum(s.delay.seconds + s.duration.seconds for s in self.steps)


class ExperimentSpec(_Model):
    """What to break, what to run meanwhile, how to wait for recovery, what to check."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.fault) != has(self.scenario)",
         "message": "give either fault (one fault) or scenario (several), not both"},
    ]})

    target: Target
    single_fault: Fault | None = Field(
        default=None, alias="fault",
        description="The fault to inject (or several in spec.scenario; one of the two).")
    scenario: Scenario | None = Field(
        default=None,
        description="Several faults, serial or parallel, instead of spec.fault.")
    duration: Annotated[Duration, DurationRange(min="1s", max="1h")] = Field(
        default=Duration("30s"), description="How long the fault is held before it is "
        "reverted (spec.fault; a scenario's steps have their own)."
    )
    workload: Workload = Field(default_factory=Workload)
    recovery: Recovery = Field(default_factory=Recovery)
    verification: Verification = Field(default_factory=Verification)
    guards: Guards = Field(default_factory=Guards)
    local: Local = Field(default_factory=Local)
    dry_run: StrictBool = Field(
        default=False, description="Validate and resolve targets, inject nothing."
    )

    @model_validator(mode="after")
    def _fault_or_scenario(self) -> Self:
        if (self.single_fault is None) == (self.scenario is None):
            raise _problem("give either fault (one fault) or scenario (several), not both"
                           if self.scenario is not None else
                           "fault is required (or a scenario of several faults)",
                           at="fault")
        return self

    @property
    def fault(self) -> Fault:
        """The fault (a scenario's first fault: what one-fault displays and labels name)."""
        if self.single_fault is not None:
            return self.single_fault
        assert self.scenario is not None  # the validator requires one of the two
        return self.scenario.steps[0].fault

    @property
    def faults(self) -> list[Fault]:
        """Every fault of the run: the one fault, or the scenario's in order."""
        if self.scenario is not None:
            return [step.fault for step in self.scenario.steps]
        return [self.fault]

    def fault_of(self, fault_type: str) -> Fault | None:
        """The run's fault of ``fault_type``, if it has one."""
        return next((f for f in self.faults if f.type == fault_type), None)

    def hold_seconds(self) -> float:
        """Planned seconds from the first injection to the last revert."""
        return self.scenario.hold_seconds() if self.scenario else self.duration.seconds


class Experiment(_Model):
    """A chaos experiment against a PostgreSQL database running pgGit.

    The resource ``PgGitChaosExperiment`` (``chaos.pggit.io/v1alpha1``); ``status`` is
    ignored on load. Durations (``spec.duration``, ``spec.recovery.timeout``, ...) are
    :class:`Duration` values: floats of seconds that keep their text; ``.seconds`` gives a
    plain float.
    """

    api_version: Literal["chaos.pggit.io/v1alpha1"]
    kind: Literal["PgGitChaosExperiment"]
    metadata: Metadata
    spec: ExperimentSpec

    @model_validator(mode="before")
    @classmethod
    def _drop_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and "status" in data:
            data = {key: value for key, value in data.items() if key != "status"}
        return data

    @classmethod
    def new(
        cls, name: str, spec: ExperimentSpec | dict[str, Any], namespace: str = "default"
    ) -> Experiment:
        """Build an experiment in code (tests, the CLI) without writing apiVersion/kind."""
        return cls.model_validate(
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec.model_dump(by_alias=True)
                if isinstance(spec, ExperimentSpec)
                else spec,
            }
        )

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """``metadata.namespace``."""
        return self.metadata.namespace

    def to_manifest(self) -> dict[str, Any]:
        """The resource as plain data with camelCase keys, as ``kubectl apply`` accepts it.

        Every default is written out; API-server metadata (uid, ...) is kept; status is not.
        """
        manifest: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return manifest
