"""The CRD as a real API server applies it: defaulting, pruning, schema, CEL (kube_schema).

The experiments in ``experiments/`` must be admitted after the server's structural defaulting
(the bug this guards against: ``default: {}`` on every fault section made the server put every
section into every fault, and the CEL rules then rejected every experiment); broken documents
must be rejected by both the model and the server, naming the same field; the model and the
server must agree on random documents; every CEL rule must be seen true and false; the status
the runner writes must be admitted unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube_schema import (
    Invalid,
    RuleOutcomes,
    admit,
    check_crd,
    k8s_quantity,
    rules_of,
    schema_of_crd,
    stored_schema,
)
from pggit_chaos.engine.journal import CheckFailureSummary, Journal, Phase
from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.faults.base import FaultIntent
from pggit_chaos.spec import Experiment, build_crd
from pggit_chaos.spec.loader import load_experiment_object
from pggit_chaos.spec.model import DESTRUCTIVE_FAULTS, SECTIONS, FaultType
from pggit_chaos.spec.status import ExperimentStatus
from pggit_chaos.spec.units import (
    QUANTITY_MAX_LENGTH,
    QUANTITY_PATTERN,
    QUANTITY_REASON,
    parse_quantity,
    quantity_value,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "experiments").glob("*.yaml"))
SCENARIO_EXAMPLES = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
CRD = build_crd()
SECTION_OF = {fault_type.value: alias for fault_type, (_, alias, _) in SECTIONS.items()}


def minimal(fault_type: str = "pod-kill") -> dict[str, Any]:
    return {
        "apiVersion": "chaos.pggit.io/v1alpha1",
        "kind": "PgGitChaosExperiment",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {
            "target": {"selector": {"matchLabels": {"app.kubernetes.io/name": "pggit-postgres"}}},
            "fault": {"type": fault_type},
        },
    }


def put(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the dotted ``path`` set (parents created)."""
    document = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return document


def model_problems(document: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The model's (field, reason) problems, or None when it accepts the document."""
    try:
        load_experiment_object(copy.deepcopy(document), "test.yaml")
    except InvalidExperiment as error:
        return list(error.problems)
    return None


def server_causes(document: dict[str, Any], *, strict: bool = False,
                  crd: dict[str, Any] | None = None) -> list[tuple[str, str]] | None:
    try:
        admit(document, crd if crd is not None else CRD, strict=strict)
    except Invalid as error:
        return error.causes
    return None


def normalized(path: str) -> str:
    """Map keys written alike: the server's ``labels[a.b]``, the model's ``labels['a.b']``."""
    return re.sub(r"\['?([^\]']*[^\]'0-9][^\]']*)'?\]", r".\1", path)


def names_field(causes: list[tuple[str, str]], field: str) -> bool:
    """A cause is at ``field`` or below it (the server names the list item, ``checks[1]``)."""
    field = normalized(field)
    return any(
        normalized(path) == field or normalized(path).startswith((field + "[", field + "."))
        for path, _ in causes
    )


QUANTITY_FIELDS = ("fault.memoryPressure.limit", "fault.memoryPressure.headroom",
                   "fault.networkLatency.bandwidth")


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Scalars by path (``a.b[0].c``); an empty object says nothing; quantities in bytes."""
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(leaves(item, f"{path}.{key}" if path else key))
        return found
    if isinstance(value, list) and value:
        found = {}
        for index, item in enumerate(value):
            found.update(leaves(item, f"{path}[{index}]"))
        return found
    if path in QUANTITY_FIELDS:
        return {path: parse_quantity(value)}
    return {path: value}


# ------------------------------------------------------------------ (a) the examples


@pytest.mark.parametrize("path", EXAMPLES + SCENARIO_EXAMPLES, ids=lambda p: p.name)
def test_example_is_admitted_and_agrees_with_the_model(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    stored = admit(document)
    experiment = load_experiment_object(document, str(path))
    manifest = experiment.to_manifest()
    # Where both say something about a field, they say the same: the server's defaults are
    # the model's defaults.
    model_leaves = leaves(manifest["spec"])
    for field, value in leaves(stored["spec"]).items():
        assert field in model_leaves, field
        assert model_leaves[field] == value, field
    # Only the section of each fault's type, never another one.
    faults = ([step["fault"] for step in stored["spec"]["scenario"]["steps"]]
              if "scenario" in stored["spec"] else [stored["spec"]["fault"]])
    for fault in faults:
        assert set(fault) <= {"type", SECTION_OF[fault["type"]]}
    # The model's complete manifest is a fixed point of the server's defaulting and pruning.
    assert admit(manifest)["spec"] == manifest["spec"]


def test_the_server_fills_in_the_models_defaults_for_a_minimal_experiment() -> None:
    stored = admit(minimal("trigger-disable"))
    spec = stored["spec"]
    model = Experiment.model_validate(minimal("trigger-disable")).to_manifest()["spec"]
    assert spec["fault"] == {"type": "trigger-disable"}  # no section is defaulted in
    for name in ("duration", "workload", "recovery", "verification", "dryRun"):
        assert spec[name] == model[name], name
    assert spec["target"]["mode"] == "one" and spec["target"]["value"] == 1


# -------------------------------------------------------- (b) the bug, as a regression


def old_generation() -> dict[str, Any]:
    """The CRD as generated before the fix: ``default: {}`` on every fault section (of the
    fault types of that generation: the destructive ones came later, with no default)."""
    crd = copy.deepcopy(CRD)
    fault = schema_of_crd(crd)["properties"]["spec"]["properties"]["fault"]
    for alias in OLD_SECTIONS:
        fault["properties"][alias]["default"] = {}
    return crd


#: Sections of the fault types that the old generation defaulted.
OLD_SECTIONS = [alias for fault_type, alias in SECTION_OF.items()
                if FaultType(fault_type) not in DESTRUCTIVE_FAULTS]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_old_generation_is_rejected_as_on_the_real_server(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    causes = server_causes(document, crd=old_generation())
    assert causes is not None
    own = SECTION_OF[document["spec"]["fault"]["type"]]
    others = {f"spec.fault.{alias}" for alias in OLD_SECTIONS if alias != own}
    assert {field for field, _ in causes} == others
    assert all("belongs to fault type" in message for _, message in causes)
    # ... while the CRD itself looks fine to the server: only admission shows the bug.
    assert check_crd(old_generation()) == []


# ----------------------------------------------- (c) broken documents, rejected by both


BROKEN: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    ("disk fill beyond 99%",
     lambda d: put(d, "spec.fault", {"type": "disk-pressure", "diskPressure": {"fill": "100%"}}),
     "spec.fault.diskPressure.fill"),
    ("failover standby lag over 1m",
     lambda d: put(d, "spec.fault", {"type": "primary-failover",
                                     "primaryFailover": {"standbyLag": "61s"}}),
     "spec.fault.primaryFailover.standbyLag"),
    ("failover primary label without a value separator",
     lambda d: put(d, "spec.fault", {"type": "primary-failover",
                                     "primaryFailover": {"primaryLabel": "spilo-role"}}),
     "spec.fault.primaryFailover.primaryLabel"),
    ("destructive fault not confirmed",
     lambda d: put(d, "spec.fault", {"type": "index-corruption"}),
     "spec.fault.indexCorruption"),
    ("destructive fault confirmed false",
     lambda d: put(d, "spec.fault", {"type": "index-corruption",
                                     "indexCorruption": {"destructive": False}}),
     "spec.fault.indexCorruption.destructive"),
    ("destructive fault with an empty section",
     lambda d: put(d, "spec.fault", {"type": "index-corruption", "indexCorruption": {}}),
     "spec.fault.indexCorruption.destructive"),
    ("index name not a plain pgGit index",
     lambda d: put(d, "spec.fault", {"type": "index-corruption", "indexCorruption": {
         "destructive": True, "index": "pggit.history_pkey"}}),
     "spec.fault.indexCorruption.index"),
    ("section of another type",
     lambda d: put(d, "spec.fault", {"type": "pod-kill", "cpuThrottle": {}}),
     "spec.fault.cpuThrottle"),
    ("empty selector", lambda d: put(d, "spec.target.selector", {"matchLabels": {}}),
     "spec.target.selector"),
    ("fixed-percent over 100",
     lambda d: put(put(d, "spec.target.mode", "fixed-percent"), "spec.target.value", 101),
     "spec.target.value"),
    ("duplicate triggers",
     lambda d: put(d, "spec.fault", {"type": "trigger-disable", "triggerDisable": {
         "triggers": ["pggit_ddl_trigger", "pggit_ddl_trigger"]}}),
     "spec.fault.triggerDisable.triggers"),
    ("no triggers",
     lambda d: put(d, "spec.fault", {"type": "trigger-disable",
                                     "triggerDisable": {"triggers": []}}),
     "spec.fault.triggerDisable.triggers"),
    ("nothing to verify",
     lambda d: put(d, "spec.verification", {"checks": [], "invariants": False}),
     "spec.verification.checks"),
    ("duplicate checks", lambda d: put(d, "spec.verification.checks", ["property", "property"]),
     "spec.verification.checks"),
    ("both mix weights 0", lambda d: put(d, "spec.workload.mix", {"commit": 0, "ddl": 0}),
     "spec.workload.mix"),
    ("bad duration text", lambda d: put(d, "spec.duration", "soon"), "spec.duration"),
    ("duration over its maximum", lambda d: put(d, "spec.duration", "2h"), "spec.duration"),
    ("duration under its minimum", lambda d: put(d, "spec.duration", "500ms"), "spec.duration"),
    ("probe interval over 250ms", lambda d: put(d, "spec.recovery.probeInterval", "1s"),
     "spec.recovery.probeInterval"),
    ("interval under 10ms",
     lambda d: put(d, "spec.fault", {"type": "connection-kill",
                                     "connectionKill": {"interval": "5ms"}}),
     "spec.fault.connectionKill.interval"),
    ("latency delay under 1ms",
     lambda d: put(d, "spec.fault", {"type": "network-latency",
                                     "networkLatency": {"delay": "500us"}}),
     "spec.fault.networkLatency.delay"),
    ("latency jitter over 1m",
     lambda d: put(d, "spec.fault", {"type": "network-latency",
                                     "networkLatency": {"jitter": "2m"}}),
     "spec.fault.networkLatency.jitter"),
    ("latency bandwidth that is no quantity",
     lambda d: put(d, "spec.fault", {"type": "network-latency",
                                     "networkLatency": {"bandwidth": "fast"}}),
     "spec.fault.networkLatency.bandwidth"),
    ("load spike factor over 100",
     lambda d: put(d, "spec.fault", {"type": "load-spike", "loadSpike": {"clientsFactor": 101}}),
     "spec.fault.loadSpike.clientsFactor"),
    ("load spike rate factor under 1",
     lambda d: put(d, "spec.fault", {"type": "load-spike", "loadSpike": {"rateFactor": 0.5}}),
     "spec.fault.loadSpike.rateFactor"),
    ("clock offset that is no duration",
     lambda d: put(d, "spec.fault", {"type": "clock-skew", "clockSkew": {"offset": "1 hour"}}),
     "spec.fault.clockSkew.offset"),
    ("unknown fault type", lambda d: put(d, "spec.fault.type", "disk-fill"), "spec.fault.type"),
    ("negative clients", lambda d: put(d, "spec.workload.clients", -1), "spec.workload.clients"),
    ("too many clients", lambda d: put(d, "spec.workload.clients", 65), "spec.workload.clients"),
    ("clients as text", lambda d: put(d, "spec.workload.clients", "4"), "spec.workload.clients"),
    ("rate too high", lambda d: put(d, "spec.workload.rate", 100001), "spec.workload.rate"),
    ("cpu percent 0",
     lambda d: put(d, "spec.fault", {"type": "cpu-throttle", "cpuThrottle": {"cpuPercent": 0}}),
     "spec.fault.cpuThrottle.cpuPercent"),
    ("grace period too long",
     lambda d: put(d, "spec.fault.podKill", {"gracePeriodSeconds": 3601}),
     "spec.fault.podKill.gracePeriodSeconds"),
    ("lock table that is no name",
     lambda d: put(d, "spec.fault", {"type": "lock-contention",
                                     "lockContention": {"table": "1; drop"}}),
     "spec.fault.lockContention.table"),
    ("lock table with a trailing newline ($ is the end of the text in RE2)",
     lambda d: put(d, "spec.fault", {"type": "lock-contention",
                                     "lockContention": {"table": "pggit.objects\n"}}),
     "spec.fault.lockContention.table"),
    ("unknown lock mode",
     lambda d: put(d, "spec.fault", {"type": "lock-contention",
                                     "lockContention": {"mode": "ROW SHARE"}}),
     "spec.fault.lockContention.mode"),
    ("In without values",
     lambda d: put(d, "spec.target.selector", {"matchExpressions": [
         {"key": "app", "operator": "In"}]}),
     "spec.target.selector.matchExpressions[0].values"),
    ("Exists with values",
     lambda d: put(d, "spec.target.selector", {"matchExpressions": [
         {"key": "app", "operator": "Exists", "values": ["a"]}]}),
     "spec.target.selector.matchExpressions[0].values"),
    ("unknown selector operator",
     lambda d: put(d, "spec.target.selector", {"matchExpressions": [
         {"key": "app", "operator": "Near"}]}),
     "spec.target.selector.matchExpressions[0].operator"),
    ("secret without a name", lambda d: put(d, "spec.target.databaseSecretRef", {"key": "dsn"}),
     "spec.target.databaseSecretRef.name"),
    ("unknown hypothesis profile",
     lambda d: put(d, "spec.verification.hypothesisProfile", "slow"),
     "spec.verification.hypothesisProfile"),
    ("dry run as text", lambda d: put(d, "spec.dryRun", "false"), "spec.dryRun"),
    ("no target", lambda d: {**d, "spec": {"fault": d["spec"]["fault"]}}, "spec.target"),
    ("no fault type", lambda d: put(d, "spec.fault", {"podKill": {}}), "spec.fault.type"),
    ("no spec", lambda d: {k: v for k, v in d.items() if k != "spec"}, "spec"),
    ("memory limit that is no quantity",
     lambda d: put(d, "spec.fault", {"type": "memory-pressure",
                                     "memoryPressure": {"limit": "lots"}}),
     "spec.fault.memoryPressure.limit"),
    ("negative memory headroom",
     lambda d: put(d, "spec.fault", {"type": "memory-pressure",
                                     "memoryPressure": {"headroom": -1}}),
     "spec.fault.memoryPressure.headroom"),
    ("bad name", lambda d: put(d, "metadata.name", "Not_A_Name"), "metadata.name"),
    ("wrong apiVersion", lambda d: {**d, "apiVersion": "chaos.pggit.io/v9"}, "apiVersion"),
    ("wrong kind", lambda d: {**d, "kind": "Experiment"}, "kind"),
]


@pytest.mark.parametrize(("what", "breaks", "field"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_document_is_rejected_by_both_at_the_same_field(
    what: str, breaks: Callable[[dict[str, Any]], dict[str, Any]], field: str
) -> None:
    document = breaks(minimal())
    found = model_problems(document)
    causes = server_causes(document)
    assert found is not None, f"the model accepts: {what}"
    assert causes is not None, f"the server accepts: {what}"
    assert field in [path for path, _ in found], found
    assert names_field(causes, field), causes
    assert all(message for _, message in causes)


def test_cel_causes_read_like_the_servers() -> None:
    causes = server_causes(put(minimal(), "spec.fault", {"type": "pod-kill", "cpuThrottle": {}}))
    assert causes == [
        ("spec.fault.cpuThrottle", 'Invalid value: "object": cpuThrottle belongs to fault type '
                                   "cpu-throttle")
    ]
    causes = server_causes(put(minimal(), "spec.duration", "2h"))
    assert causes == [("spec.duration", 'Invalid value: "string": must be at most 1h')]


def test_rules_are_not_run_after_a_blocking_schema_error() -> None:
    # An unsupported enum value blocks the CEL rules, as on the server.
    document = put(minimal(), "spec.fault", {"type": "disk-fill", "podKill": {}})
    causes = server_causes(document)
    assert causes is not None
    assert causes[0][0] == "spec.fault.type" and causes[0][1].startswith("Unsupported value")
    assert "some validation rules were not checked" in causes[-1][1]
    assert not names_field(causes, "spec.fault.podKill")


def test_unknown_fields_are_pruned_or_with_strict_rejected() -> None:
    document = put(put(minimal(), "spec.workload.client", 4), "metadata.color", "red")
    stored = admit(document)
    assert "client" not in stored["spec"]["workload"] and "color" not in stored["metadata"]
    causes = server_causes(document, strict=True)
    assert causes is not None
    assert {"spec.workload.client", "metadata.color"} <= {path for path, _ in causes}
    assert model_problems(document) is not None  # the model always rejects them


def test_nulls_count_as_not_given_on_both_sides() -> None:
    document = put(put(minimal(), "spec.duration", None), "spec.fault.cpuThrottle", None)
    stored = admit(document)
    assert stored["spec"]["duration"] == "30s"  # a null with a default gets the default
    assert "cpuThrottle" not in stored["spec"]["fault"]  # a null without one is pruned
    experiment = load_experiment_object(document)
    assert experiment.spec.duration.seconds == 30
    assert experiment.spec.fault.cpu_throttle is None


#: Edge values where the model and the server once disagreed (a real API server judged 1,243
#: generated documents; 46 disagreed): quantity minimums, integral floats, integers and padded
#: text as durations, padded quantities, free keys under local.postgresql, nulls in maps.
#: (path, value, accepted): both must give the same verdict, and it must be ``accepted``.
EDGES: list[tuple[str, Any, bool]] = [
    *[("spec.fault.memoryPressure.limit", value, ok) for value, ok in [
        ("1Mi", False), (0, False), ("0", False), ("16M", False), (16777215, False),
        ("16777215", False), ("16777215.5", False), ("16Mi", True), (16777216, True),
        ("16384Ki", True), ("0.015625Gi", True), ("16777216.0", True), (16777216.0, True),
        (16777215.0, False), (1.5, False), (" 16Mi", False), ("16Mi ", False), ("1e9", False),
        ("16m", False), (True, False), (-16777216, False)]],
    *[("spec.fault.memoryPressure.headroom", value, ok) for value, ok in [
        (0, True), ("0", True), ("0.5", True), (-1, False), (0.0, True), (" 0", False)]],
    *[("spec.fault.networkLatency.bandwidth", value, ok) for value, ok in [
        (0, False), ("0", False), (1023, False), ("1023", False), ("1k", False),
        ("1.023k", False), ("1023.9", False), ("1Ki", True), (1024, True), ("1024", True),
        ("1.024k", True), ("1M", True), (1024.0, True), ("1Ki ", False)]],
    *[(f"spec.workload.{name}", value, ok) for name, value, ok in [
        ("clients", 1.0, True), ("clients", 64.0, True), ("clients", 65.0, False),
        ("clients", 1.5, False), ("clients", True, False), ("clients", "4", False),
        ("rate", 50, True), ("rate", 0.5, True), ("rate", "50", False),
        ("mix", {"commit": 1.0, "ddl": 0.0}, True), ("mix", {"commit": 0.0, "ddl": 0}, False)]],
    ("spec.target.value", 2.0, True),
    ("spec.target.value", 0.5, False),
    *[(f"spec.{name}", value, ok) for name, value, ok in [
        ("duration", 5, False), ("duration", 5.0, False), ("duration", 30, False),
        ("duration", " 1s", False), ("duration", "1s ", False), ("duration", "\t30s", False),
        ("duration", "30s\n", False), ("duration", "30s", True), ("duration", "1m30s", True),
        ("recovery.timeout", 60, False), ("recovery.probeInterval", " 100ms", False),
        ("workload.operationTimeout", 1, False)]],
    *[("spec.local.postgresql", value, ok) for value, ok in [
        ({"shared_buffers": "128MB", "max_connections": 50}, True),
        ({"max_connections": 50.0}, True),
        ({"auto_explain.log_min_duration": 0}, True),
        ({"Bad-Name": "x"}, False), ({"work mem": "4MB"}, False), ({"": "x"}, False),
        ({"work_mem": {"value": "4MB"}}, False), ({"work_mem": ["4MB"]}, False),
        ({"fsync": True}, False), ({"checkpoint_completion_target": 0.9}, False),
        ({"synchronous_commit": None}, True), ({"a": "x", "b": None}, True)]],
    ("spec.target.selector.matchLabels", {"app": "pg", "other": None}, True),
    ("spec.target.selector.matchLabels", {"app": 1}, False),
    # Unknown keys at every level (kubectl's default --validate=strict rejects them).
    ("spec.bogus", 1, False),
    ("spec.fault.podPause", {"bogus": 1}, False),
    ("spec.fault.podPause", {}, True),
    ("spec.workload.mix.bogus", 1, False),
    ("spec.target.selector.bogus", "x", False),
    ("spec.target.databaseSecretRef", {"name": "db", "bogus": 1}, False),
    ("spec.local.bogus", {}, False),
    ("spec.recovery.bogus", None, False),  # unknown, null or not
]


def edge_document(path: str, value: Any) -> dict[str, Any]:
    fault_of = {"memoryPressure": "memory-pressure", "networkLatency": "network-latency",
                "podPause": "pod-pause"}
    parts = path.split(".")
    fault_type = fault_of.get(parts[2], "pod-kill") if parts[1] == "fault" else "pod-kill"
    return put(minimal(fault_type), path, value)


@pytest.mark.parametrize(("path", "value", "accepted"), EDGES,
                         ids=[f"{path}={value!r}" for path, value, _ in EDGES])
def test_edge_values_are_judged_alike(path: str, value: Any, accepted: bool) -> None:
    document = edge_document(path, value)
    found = model_problems(document)
    causes = server_causes(document, strict=True)
    assert (found is None, causes is None) == (accepted, accepted), (found, causes)


# -------------------------------------------------------- (d) properties, with hypothesis


DURATIONS = {
    "spec.duration": ["1s", "30s", "1m30s", "1h", "2.5s"],
    "operationTimeout": ["10ms", "5s", "10m", "250ms"],
    "recovery.timeout": ["1s", "120s", "1h"],
    "probeInterval": ["10ms", "100ms", "250ms"],
    "verification.timeout": ["1s", "300s", "6h"],
    "restartDelay": ["0", "0s", "1s", "10m", "500us"],
    "interval": ["10ms", "2s", "10m"],
}
CHECKS = ["property", "concurrent", "transaction", "resource", "corruption"]


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value or the marker ``...`` for "leave the field out"."""
    return st.one_of(st.just(...), strategy)


def section(fault_type: str) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "pod-kill": st.fixed_dictionaries({}, optional={
            "gracePeriodSeconds": st.integers(0, 3600),
            "restartDelay": st.sampled_from(DURATIONS["restartDelay"])}),
        "cpu-throttle": st.fixed_dictionaries({}, optional={"cpuPercent": st.integers(1, 100)}),
        "memory-pressure": st.fixed_dictionaries({}, optional={
            "limit": st.sampled_from(["16Mi", "128Mi", "1Gi", 16777216, "64M"]),
            "headroom": st.sampled_from([0, "0", "32Mi", 1048576])}),
        "pod-pause": st.just({}),
        "clock-skew": st.fixed_dictionaries({}, optional={
            "offset": st.sampled_from(["-1h", "+30m", "1s", "-720h", "+1h30m", "-90.5s"])}),
        "load-spike": st.fixed_dictionaries({}, optional={
            "clientsFactor": st.integers(1, 100),
            "rateFactor": st.one_of(st.integers(1, 100), st.floats(1, 100))}),
        "network-partition": st.fixed_dictionaries({}, optional={
            "direction": st.sampled_from(["both", "ingress"])}),
        "network-latency": st.fixed_dictionaries({}, optional={
            "delay": st.sampled_from(["1ms", "50ms", "1.5s", "1m"]),
            "jitter": st.sampled_from(["0", "0s", "10ms", "1m"]),
            "bandwidth": st.sampled_from(["1Ki", "1Mi", 1048576, "10M"])}),
        "connection-kill": st.fixed_dictionaries({}, optional={
            "interval": st.sampled_from(DURATIONS["interval"]),
            "targetApplication": st.text(max_size=20)}),
        "lock-contention": st.fixed_dictionaries({}, optional={
            "table": st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_$.]{0,20}\Z"),
            "mode": st.sampled_from(["ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE"])}),
        "trigger-disable": st.fixed_dictionaries({}, optional={
            "triggers": st.sampled_from([["pggit_ddl_trigger"], ["pggit_drop_trigger"],
                                         ["pggit_ddl_trigger", "pggit_drop_trigger"]])}),
        "disk-pressure": st.fixed_dictionaries({}, optional={
            "volume": st.sampled_from(["wal", "data"]),
            "fill": st.sampled_from(["enospc", "1%", "50%", "95%", "99%"]),
            "localSizeMi": st.integers(32, 4096),
            "maxBalloonMi": st.integers(1, 1048576)}),
        "primary-failover": st.fixed_dictionaries({}, optional={
            "replication": st.sampled_from(["sync", "async"]),
            "standbyLag": st.sampled_from(["0s", "500ms", "2s", "1m"]),
            "oldPrimary": st.sampled_from(["rewind", "down"]),
            "primaryLabel": st.sampled_from(["cnpg.io/instanceRole=primary",
                                             "spilo-role=master", "role="])}),
        # Destructive: the section and its confirmation are required.
        "index-corruption": st.fixed_dictionaries({"destructive": st.just(True)}, optional={
            "index": st.from_regex(r"\A[a-z_][a-z0-9_]{0,62}\Z")}),
    }
    return fields[fault_type]


label_names = st.from_regex(r"\A[a-z][a-z0-9./-]{0,15}\Z")
requirement = st.one_of(
    st.fixed_dictionaries({"key": label_names, "operator": st.sampled_from(["In", "NotIn"]),
                           "values": st.lists(st.text(max_size=8), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"key": label_names,
                           "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)
selector = st.one_of(
    st.fixed_dictionaries({"matchLabels": st.dictionaries(label_names, st.text(max_size=8),
                                                          min_size=1, max_size=3)}),
    st.fixed_dictionaries({"matchExpressions": st.lists(requirement, min_size=1, max_size=3)}),
)


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A sparse, valid experiment document, as a user would write it."""
    fault_type = draw(st.sampled_from([member.value for member in FaultType]))
    fault: dict[str, Any] = {"type": fault_type}
    if fault_type in DESTRUCTIVE_FAULTS or draw(st.booleans()):
        fault[SECTION_OF[fault_type]] = draw(section(fault_type))
    mode = draw(st.sampled_from(["one", "all", "fixed", "fixed-percent", ...]))
    target: dict[str, Any] = {"selector": draw(selector)}
    if mode is not ...:
        target["mode"] = mode
        target["value"] = draw(st.integers(1, 100 if mode == "fixed-percent" else 1000))
    if draw(st.booleans()):
        target["databaseSecretRef"] = {"name": "pggit-db"}
    spec: dict[str, Any] = {"target": target, "fault": fault}
    duration = draw(optional(st.sampled_from(DURATIONS["spec.duration"])))
    if duration is not ...:
        spec["duration"] = duration
    workload: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "clients": st.integers(1, 64),
        "rate": st.one_of(st.integers(0, 100000), st.floats(0, 100000)),
        "operationTimeout": st.sampled_from(DURATIONS["operationTimeout"]),
        "mix": st.tuples(st.integers(0, 1000), st.integers(0, 1000))
        .filter(lambda weights: sum(weights) > 0)
        .map(lambda weights: {"commit": weights[0], "ddl": weights[1]}),
    }))
    written_empty: bool = draw(st.booleans())
    if workload or written_empty:
        spec["workload"] = workload
    recovery: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "timeout": st.sampled_from(DURATIONS["recovery.timeout"]),
        "probeInterval": st.sampled_from(DURATIONS["probeInterval"]),
    }))
    if recovery:
        spec["recovery"] = recovery
    checks = draw(optional(st.lists(st.sampled_from(CHECKS), unique=True, max_size=5)))
    verification: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "hypothesisProfile": st.sampled_from(["ci", "dev", "thorough"]),
        "timeout": st.sampled_from(DURATIONS["verification.timeout"]),
    }))
    if checks is not ...:
        verification["checks"] = checks
    if checks:
        verification["invariants"] = draw(st.booleans())
    if verification:
        spec["verification"] = verification
    if draw(st.booleans()):
        spec["dryRun"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["local"] = {"postgresql": {"synchronous_commit": "off", "max_connections": 50}}
    return {
        "apiVersion": "chaos.pggit.io/v1alpha1",
        "kind": "PgGitChaosExperiment",
        "metadata": {"name": draw(st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z")),
                     "namespace": "default"},
        "spec": spec,
    }


@settings(max_examples=150, deadline=None)
@given(valid_documents())
def test_valid_experiments_are_always_admitted(document: dict[str, Any]) -> None:
    experiment = load_experiment_object(copy.deepcopy(document))
    stored = admit(document, strict=True)
    manifest = experiment.to_manifest()
    assert admit(manifest, strict=True)["spec"] == manifest["spec"]
    model_leaves = leaves(manifest["spec"])
    for field, value in leaves(stored["spec"]).items():
        assert model_leaves.get(field, value) == value, field


def paths_of(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*path, index))
    return found


REPLACEMENTS = st.one_of(
    st.sampled_from([None, True, False, 0, 1, -1, 2, 64, 65, 100, 101, 3600, 3601, 100001,
                     1.5, -0.5, "", "x", "30s", "0", "2h", "5ms", "250ms", "1s", "soon",
                     "pod-kill", "cpu-throttle", "trigger-disable", "In", "Exists", "both",
                     "fixed-percent", "property", "pggit_ddl_trigger", "16Mi", "SHARE",
                     "pggit.objects", "a" * 400, [], ["property"], ["property", "property"],
                     [None], {}, {"commit": 0}, {"x": 1}]),
    # Edge values: quantities around the minimums, integral floats, numbers as durations,
    # padded text, values that are no server parameter.
    st.sampled_from([0.0, 1.0, 2.0, 64.0, 5.0, 0.9, 1023, 1024, 16777215, 16777216,
                     16777216.0, "1023", "1k", "1Ki", "16M", "1Mi", "16777215.5", " 1s",
                     "1s ", " 16Mi", "16Mi ", "\t30s", "off", {"value": "4MB"}, ["4MB"],
                     {"Bad-Name": "x"}, {"work_mem": "4MB"}, {"fsync": True}]),
    st.text(alphabet="abc-._0123456789sm", max_size=6),
)
FIELD_NAMES = st.sampled_from([*SECTION_OF.values(), "type", "commit", "ddl", "checks",
                               "invariants", "values", "matchLabels", "bogus", "Not-A-Field",
                               "work_mem", "limit", "bandwidth", "duration"])


def mutate(document: dict[str, Any], data: st.DataObject) -> tuple[dict[str, Any], str]:
    document = copy.deepcopy(document)
    paths = [path for path in paths_of(document["spec"])]
    target = data.draw(st.sampled_from([(), *paths]), label="at")
    parent: Any = document["spec"]
    for part in target[:-1]:
        parent = parent[part]
    node = parent[target[-1]] if target else parent
    action = data.draw(st.sampled_from(["replace", "delete", "add"]), label="action")
    if action == "add" and isinstance(node, dict):
        node[data.draw(FIELD_NAMES, label="name")] = data.draw(REPLACEMENTS, label="value")
    elif action == "delete" and target:
        del parent[target[-1]]
    elif target:
        parent[target[-1]] = data.draw(REPLACEMENTS, label="value")
    else:
        return document, "nothing"
    shown = ".".join(str(part) for part in ("spec", *target))
    return document, shown


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_documents(), st.data())
def test_model_and_server_agree_on_mutated_documents(
    document: dict[str, Any], data: st.DataObject
) -> None:
    mutated, where = mutate(document, data)
    # No exceptions: one set of documents is accepted by both (with kubectl's default strict
    # field validation: unknown fields are errors on both sides).
    found = model_problems(mutated)
    causes = server_causes(mutated, strict=True)
    assert (found is None) == (causes is None), (where, found, causes)
    if found is not None and causes is not None:
        # ... and they name a field in common (the server may name the list item).
        assert any(names_field(causes, field) for field, _ in found) or any(
            names_field(found, path) for path, _ in causes
        ), (where, found, causes)


EDGE_VALUES = st.sampled_from(sorted({repr(value): value for _, value, _ in EDGES}.values(),
                                      key=repr))
#: Fields that documents leave out and the edge values are written into.
EDGE_FIELDS = {
    "memory-pressure": ["limit", "headroom"],
    "network-latency": ["bandwidth", "delay", "jitter"],
    "pod-kill": ["restartDelay", "gracePeriodSeconds"],
    "pod-pause": ["bogus"],
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_documents(), st.data())
def test_model_and_server_agree_on_edge_values(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """Every edge value (numbers as floats, quantities at the minimums, padded text, unknown
    keys) at any field of a valid document, or in the fault's own section."""
    document = copy.deepcopy(document)
    value = data.draw(EDGE_VALUES, label="value")
    fault = document["spec"]["fault"]
    names = EDGE_FIELDS.get(fault["type"], [])
    leaves_at = [path for path in paths_of(document["spec"])
                 if not isinstance(_at(document["spec"], path), dict | list)]
    choice = data.draw(st.sampled_from([*(("section", name) for name in names),
                                        *(("leaf", path) for path in leaves_at)]), label="at")
    if choice[0] == "section":
        fault.setdefault(SECTION_OF[fault["type"]], {})[choice[1]] = value
        where = f"spec.fault.{SECTION_OF[fault['type']]}.{choice[1]}"
    else:
        path = choice[1]
        _at(document["spec"], path[:-1])[path[-1]] = value
        where = ".".join(str(part) for part in ("spec", *path))
    found = model_problems(document)
    causes = server_causes(document, strict=True)
    assert (found is None) == (causes is None), (where, value, found, causes)


def _at(node: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@settings(max_examples=300, deadline=None)
@given(st.from_regex(QUANTITY_PATTERN.replace("$", r"\Z"), fullmatch=True)
       .filter(lambda text: len(text) <= QUANTITY_MAX_LENGTH))
def test_the_model_values_a_quantity_as_kubernetes_does(text: str) -> None:
    # The minimums compare the model's value with what the server's CEL quantity() makes of
    # the same text (kube_schema.k8s_quantity: resource.ParseQuantity, ported). Longer texts
    # never reach CEL: the CRD's maxLength refuses them first (next test). Before this filter
    # hypothesis now and then drew a 65-character text and the test failed.
    assert quantity_value(text) == k8s_quantity(text)


def test_a_quantity_longer_than_the_crds_max_length_is_refused_as_the_crd_does() -> None:
    text = "0" * (QUANTITY_MAX_LENGTH - 1) + ".0"
    assert len(text) == QUANTITY_MAX_LENGTH + 1
    with pytest.raises(ValueError, match=QUANTITY_REASON):
        quantity_value(text)
    assert quantity_value(text[:-1]) == 0


@pytest.mark.parametrize(("text", "value"), [
    ("16Mi", 2**24), ("0.5Ki", 512), ("1.", 1), (".5", "0.5"), ("1k", 1000), ("0", 0),
    ("16777215.9999999999", 2**24),  # rounded up to 1e-9, as resource.Quantity does
    ("1e3", 1000), ("1m", "0.001"), ("+1", 1), ("-1Ki", -1024),
])
def test_the_server_quantity_port(text: str, value: Any) -> None:
    from decimal import Decimal

    assert k8s_quantity(text) == Decimal(value)


# ------------------------------------------------------ (e) every CEL rule, both ways


def rule_documents() -> list[dict[str, Any]]:
    """Documents that make every CEL rule of the CRD true somewhere and false somewhere."""
    documents = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in EXAMPLES]
    documents += [breaks(minimal()) for _, breaks, _ in BROKEN]
    for fault_type, alias in SECTION_OF.items():
        other_type = next(t for t in SECTION_OF if t != fault_type)
        documents.append(put(minimal(other_type), f"spec.fault.{alias}", {}))
    documents.append(put(minimal(), "spec.target.selector", {"matchExpressions": [
        {"key": "a", "operator": "In", "values": ["b"]}, {"key": "c", "operator": "Exists"}]}))
    documents.append(put(put(minimal(), "spec.target.mode", "fixed-percent"),
                         "spec.target.value", 100))
    # Each quantity minimum, met and missed; server parameter names, good and bad.
    for section, name, low, high in [("memoryPressure", "limit", "16M", "16Mi"),
                                     ("networkLatency", "bandwidth", "1k", "1Ki")]:
        for value in (low, high):
            documents.append(edge_document(f"spec.fault.{section}.{name}", value))
    for parameters in ({"work_mem": "4MB"}, {"Work-Mem": "4MB"}):
        documents.append(put(minimal(), "spec.local.postgresql", parameters))
    # Each duration just outside each of its bounds.
    for rule in rules_of(CRD):
        if "duration(self)" not in rule.rule:
            continue
        bound = rule.rule.split("duration('")[1].split("')")[0]
        outside = f"{bound}1ms" if "<=" in rule.rule else "9ms" if bound == "10ms" else "999ms"
        fault_type = minimal()["spec"]["fault"]["type"]
        parts = rule.path.split(".")
        if parts[1] == "fault":
            fault_type = next(t for t, a in SECTION_OF.items() if a == parts[2])
        if rule.path.startswith("spec.scenario.steps[*].") and rule.path.count(".") == 3:
            # A step's own duration or delay.
            documents.append(in_scenario(minimal(), **{rule.path.split(".")[-1]: outside}))
            continue
        if rule.path.startswith("spec.scenario."):  # a step's fault settings: moved below
            fault_type = next(t for t, a in SECTION_OF.items() if a == parts[4])
            documents.append(put(minimal(fault_type), "spec." + rule.path.split(
                "steps[*].")[1], outside))
            continue
        if rule.path == "spec.verification.assertions[*].timeout":  # a list item's field
            documents.append(put(minimal(fault_type), "spec.verification.assertions", [
                {"name": "a", "sql": "SELECT 1", "expect": "1", "timeout": outside}]))
            continue
        documents.append(put(minimal(fault_type), rule.path, outside))
    # Every one-fault document again as the first step of a scenario (the steps' faults
    # carry the same rules), and one with both fault and scenario (refused by the spec's rule).
    documents += [in_scenario(document) for document in documents
                  if isinstance(document.get("spec", {}).get("fault"), dict)]
    both = in_scenario(minimal())
    both["spec"]["fault"] = {"type": "pod-kill"}
    documents.append(both)
    return documents


def in_scenario(document: dict[str, Any], **step: Any) -> dict[str, Any]:
    """``document`` with its fault moved into the first step of a two-step scenario."""
    document = copy.deepcopy(document)
    fault = document["spec"].pop("fault")
    other = "connection-kill" if fault.get("type") != "connection-kill" else "cpu-throttle"
    document["spec"]["scenario"] = {"mode": "serial", "steps": [
        {"fault": fault, **step}, {"fault": {"type": other}}]}
    return document


def test_every_cel_rule_is_evaluated_true_and_false() -> None:
    outcomes: RuleOutcomes = {}
    for document in rule_documents():
        with contextlib.suppress(Invalid):
            admit(document, outcomes=outcomes)
    rules = rules_of(CRD)
    assert len(rules) >= 27
    missing = [
        (rule.path, rule.rule, sorted(outcomes.get((rule.path, rule.rule), set())))
        for rule in rules
        if outcomes.get((rule.path, rule.rule)) != {True, False}
    ]
    assert missing == []


# --------------------------------------------------------------- (f) the CRD itself


def test_the_crd_is_accepted_by_the_server() -> None:
    assert check_crd(CRD) == []


def test_the_stored_crd_equals_the_file() -> None:
    # The server decoded podPause's ``properties: {}`` into an empty map and dropped it: the
    # CRD read back never equalled the file, so every upgrade showed a difference.
    schema = schema_of_crd(CRD)
    assert stored_schema(schema) == schema
    assert typed(stored_schema(schema)) == typed(schema)  # 1 and 1.0 differ in the file
    committed = yaml.safe_load((ROOT / "charts/pggit-chaos/crds/pggitchaosexperiments.yaml")
                               .read_text(encoding="utf-8"))
    assert stored_schema(schema_of_crd(committed)) == schema_of_crd(committed)


def test_stored_schema_drops_what_the_server_drops() -> None:
    assert stored_schema({"type": "object", "properties": {}}) == {"type": "object"}
    assert stored_schema({"type": "integer", "minimum": 0.0, "nullable": False,
                          "x-kubernetes-preserve-unknown-fields": False, "required": [],
                          "x-kubernetes-validations": [{"rule": "true", "message": ""}],
                          "propertyNames": {"type": "string"}}) == {
        "type": "integer", "minimum": 0, "x-kubernetes-preserve-unknown-fields": False,
        "x-kubernetes-validations": [{"rule": "true"}]}


def typed(value: Any) -> Any:
    """``value`` with every scalar paired with its type, so that 1 and 1.0 compare unequal."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def test_check_crd_finds_what_the_server_refuses() -> None:
    crd = copy.deepcopy(CRD)
    spec = schema_of_crd(crd)["properties"]["spec"]
    spec["properties"]["workload"]["additionalProperties"] = False
    del spec["properties"]["dryRun"]["type"]
    selector = spec["properties"]["target"]["properties"]["selector"]
    del selector["properties"]["matchLabels"]["maxProperties"]
    checks = spec["properties"]["verification"]["properties"]["checks"]
    checks["maxItems"] = 10**6
    checks["items"]["maxLength"] = 10**6
    spec["properties"]["verification"]["x-kubernetes-validations"].append(
        {"rule": "self.checks.all(a, self.checks.all(b, a.size() < 5))"})
    spec["properties"]["fault"]["x-kubernetes-validations"].append(
        {"rule": "self.type ==", "message": "broken"})
    spec["properties"]["target"]["x-kubernetes-validations"][0]["fieldPath"] = ".nowhere"
    spec["properties"]["duration"]["default"] = "soon"
    problems = "\n".join(check_crd(crd))
    assert "additionalProperties: false" in problems
    assert "spec.dryRun: type: Required value" in problems
    assert "size() over self.matchLabels, which has no maxItems/maxProperties" in problems
    assert "estimated rule cost exceeds budget" in problems
    assert "a.size()" in problems  # a macro variable: cannot be bounded statically
    assert "compilation failed" in problems
    assert "fieldPath .nowhere" in problems
    assert "default of spec.duration" in problems


# ------------------------------------------------------------------- (h) the status


def finished_journal() -> Journal:
    document = yaml.safe_load(EXAMPLES[0].read_text(encoding="utf-8"))
    journal = Journal(experiment="pod-kill", spec=document)
    journal.enter_phase(Phase.SteadyState)
    journal.enter_phase(Phase.Injecting)
    intent = FaultIntent(type="pod-kill", target="pod default/pg-0",
                         undo={"kind": "pod-kill", "pods": ["pg-0"], "extra": {"a": [1, None]}},
                         description="delete pod pg-0")
    journal.mark_injected(intent.to_dict())
    return journal


def status_document(status: dict[str, Any]) -> dict[str, Any]:
    document = yaml.safe_load(EXAMPLES[0].read_text(encoding="utf-8"))
    return {**document, "status": status}


def test_status_of_a_running_experiment_is_admitted_unchanged() -> None:
    journal = finished_journal()
    status = ExperimentStatus.from_journal(journal).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert status["faultIntent"]["undo"]["extra"] == {"a": [1, None]}  # free map: kept as is
    stored = admit(status_document(status), strict=True)
    assert stored["status"] == status


def test_status_of_a_finished_experiment_is_admitted_unchanged() -> None:
    journal = finished_journal()
    journal.mark_reverted()
    journal.enter_phase(Phase.Recovering)
    journal.mark_recovered(4.25)
    journal.enter_phase(Phase.Verifying)
    journal.checks.failed = 1
    journal.checks.failures.append(CheckFailureSummary(
        name="test_commit_ids_unique", message="two commits share a Trinity ID", seed=42
    ))
    journal.finish(Phase.Failed, reason="a check failed")
    status = ExperimentStatus.from_journal(journal).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert status["phase"] == "Failed" and status["verdict"] == "Fail"
    stored = admit(status_document(status), strict=True)
    assert stored["status"] == status


def test_status_that_breaks_the_schema_is_rejected() -> None:
    status = {"phase": "Exploding", "recoverySeconds": "fast", "startedAt": "yesterday",
              "conditions": [{"type": "Passed", "status": "True"},
                             {"type": "Passed", "status": "False"}]}
    causes = server_causes(status_document(status))
    assert causes is not None
    fields = {path for path, _ in causes}
    assert {"status.phase", "status.recoverySeconds", "status.startedAt",
            "status.conditions[1]"} <= fields


# -- ratcheting (updates) --------------------------------------------------------------------
def update_causes(new: dict[str, Any], old: dict[str, Any]) -> list[tuple[str, str]] | None:
    try:
        admit(new, CRD, old=old)
    except Invalid as error:
        return error.causes
    return None


def stored_under_an_older_crd(**spec: Any) -> dict[str, Any]:
    """An object the server stored before today's schema (no admission): spec fields set."""
    document = minimal("pod-kill")
    for path, value in spec.items():
        document = put(document, f"spec.{path}", value)
    return document


def test_a_status_write_passes_for_an_unchanged_spec_that_today_fails() -> None:
    old = stored_under_an_older_crd(duration=5)  # a number: the schema wants a string
    assert names_field(server_causes(old) or [], "spec.duration")
    new = {**copy.deepcopy(old), "status": {"phase": "Error", "message": "invalid spec"}}
    assert update_causes(new, old) is None
    # The status itself is still validated.
    new["status"]["phase"] = "Exploding"
    causes = update_causes(new, old) or []
    assert names_field(causes, "status.phase") and not names_field(causes, "spec.duration")


def test_a_changed_field_is_validated_and_an_unchanged_one_is_not() -> None:
    old = stored_under_an_older_crd(duration=5)
    changed = put(old, "spec.duration", 6)
    assert names_field(update_causes(changed, old) or [], "spec.duration")
    other = put(old, "spec.fault.type", "meteor-strike")
    causes = update_causes(other, old) or []
    assert names_field(causes, "spec.fault.type") and not names_field(causes, "spec.duration")


def test_cel_rules_on_unchanged_nodes_are_ratcheted() -> None:
    old = put(minimal("pod-kill"), "spec.fault.cpuThrottle", {})  # a section of another fault
    assert names_field(server_causes(old) or [], "spec.fault.cpuThrottle")
    assert update_causes({**old, "status": {"phase": "Pending"}}, old) is None
    # Touch the node the rule sits on: the rule runs again.
    touched = put(old, "spec.fault.podKill", {"gracePeriodSeconds": 0})
    assert names_field(update_causes(touched, old) or [], "spec.fault.cpuThrottle")


def test_atomic_list_items_ratchet_only_with_the_whole_list() -> None:
    broken = {"key": "app", "operator": "In"}  # In without values
    old = put(minimal(), "spec.target.selector.matchExpressions", [broken])
    assert names_field(server_causes(old) or [], "spec.target.selector.matchExpressions[0]")
    assert update_causes({**old, "status": {"phase": "Pending"}}, old) is None
    grown = put(old, "spec.target.selector.matchExpressions",
                [broken, {"key": "tier", "operator": "Exists"}])
    assert names_field(update_causes(grown, old) or [],
                       "spec.target.selector.matchExpressions[0]")
