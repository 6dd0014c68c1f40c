"""Generate the ``PgGitChaosExperiment`` CustomResourceDefinition from the spec model.

A pure builder (:func:`build_crd`) plus :func:`write_crd`, used by the chart's
``crds/pggitchaosexperiments.yaml`` (regenerate: see :data:`REGENERATE`; a test fails when
the committed file is stale) and by the operator's tests. The openAPIV3Schema is pydantic's
JSON schema turned into a Kubernetes *structural* schema: ``$ref`` inlined, no titles, no
``additionalProperties: false`` (the API server prunes, and ``kubectl`` rejects unknown fields
with strict field validation), durations as patterned strings with CEL bounds, cross-field
rules as CEL ``x-kubernetes-validations``, nothing the server would drop on the way in (an
empty ``properties``: the stored CRD equals the file). ``spec`` comes from
:class:`~pggit_chaos.spec.model.ExperimentSpec`, ``status`` from
:class:`~pggit_chaos.spec.status.ExperimentStatus`; the only free-form nodes are the maps that
are meant to be free (``status.faultIntent.undo``, ``status.faultIntents[].undo``).

Optional fields (``X | None = None``) become plain optional properties, deliberately *not*
``nullable: true``: the API server prunes a null given for a non-nullable field, which is what
the model does (null = not given), and the ``has(self.podKill)`` CEL rules stay correct.

**Defaults and the API server.** The server applies a property's ``default`` whenever the
property is absent, *before* the CEL rules run. So a ``default`` is only written where the
model says the same thing: a section whose model default is ``None`` (the fault sections:
absent means "not this fault type") gets none, or the server would put every section into
every fault and the ``!has(self.podKill) || self.type == 'pod-kill'`` rules would reject every
experiment. A section the model always fills (``workload``, ``recovery``, ...; all its fields
defaulted) gets ``default: {}`` so that the server fills in the same nested defaults as the
model. ``status`` gets no section defaults at all: an absent status section means "not known
yet", and the runner writes what it knows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from pggit_chaos.spec.model import GROUP, KIND, VERSION, Experiment, ExperimentSpec
from pggit_chaos.spec.status import ExperimentStatus

__all__ = [
    "CATEGORIES",
    "PLURAL",
    "SCHEDULE_PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "build_crd",
    "build_schedule_crd",
    "crd_yaml",
    "crds_yaml",
    "printer_columns",
    "schedule_crd_yaml",
    "schema_of",
    "status_path",
    "status_schema_of",
    "write_crd",
    "write_schedule_crd",
]

PLURAL = "pggitchaosexperiments"
SCHEDULE_PLURAL = "pggitchaosschedules"
SCHEDULE_SINGULAR = "pggitchaosschedule"
SCHEDULE_SHORT_NAMES = ["pgcs"]
SINGULAR = "pggitchaosexperiment"
SHORT_NAMES = ["pgce"]
CATEGORIES = ["chaos"]

# Keywords a structural schema does not take, or that mean nothing to the API server.
_DROPPED = {
    "title",
    "$defs",
    "definitions",
    "examples",
    "propertyNames",
    "uniqueItems",
    "readOnly",
    "writeOnly",
    "deprecated",
    "discriminator",
    "$schema",
    "$id",
    "const",
}


def schema_of(model: type[BaseModel] = ExperimentSpec) -> dict[str, Any]:
    """The spec model's JSON schema (by alias) as a structural ``openAPIV3Schema`` node.

    Sections the model always fills in get ``default: {}`` (see the module docstring); the
    :class:`~pggit_chaos.spec.model.Experiment` itself stands for its ``spec``.
    """
    if model is Experiment:
        model = ExperimentSpec
    return _schema(model, section_defaults=True)


def status_schema_of(model: type[BaseModel] = ExperimentStatus) -> dict[str, Any]:
    """The status model's JSON schema as a structural node; no section defaults."""
    return _schema(model, section_defaults=False)


def _schema(model: type[BaseModel], *, section_defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = raw.pop("$defs", {})
    schema = _structural(raw, definitions, section_defaults)
    schema.pop("default", None)
    whole: dict[str, Any] = _whole_numbers(schema)
    return whole


def _whole_numbers(value: Any) -> Any:
    """``50.0`` written as ``50``: kubectl and the server store it so (the CRD read back must
    equal the file, also in a default)."""
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and single-element ``allOf``; the referring node's keys win."""
    node = dict(node)
    if "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolve(target, definitions), **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node.pop("allOf")[0], definitions)
        node = {**inner, **node}
    return node


def _defaults_to_none(node: dict[str, Any], definitions: dict[str, Any]) -> bool:
    """Whether the model's default for this field is ``None`` (absent means "not given")."""
    resolved = _resolve(node, definitions)
    return "default" in resolved and resolved["default"] is None


def _structural(
    node: dict[str, Any], definitions: dict[str, Any], section_defaults: bool
) -> dict[str, Any]:
    node = _resolve(node, definitions)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = node.pop("anyOf")
        others = [option for option in options if option.get("type") != "null"]
        if len(others) != 1:
            raise ValueError(f"cannot express {options!r} in a structural schema")
        keys = {key: value for key, value in node.items() if key != "default"}
        node = {**_resolve(others[0], definitions), **keys}
        if keys.get("default") is not None:
            node["default"] = keys["default"]
    if "const" in node:
        node.setdefault("enum", [node["const"]])
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "default" and value is None:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            result["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            result[key] = True
            continue
        if key == "properties":
            if not value:
                continue  # the server drops an empty map: the stored CRD would differ
            result[key] = {
                name: _structural(child, definitions, section_defaults)
                for name, child in value.items()
            }
        elif key == "items":
            result[key] = _structural(value, definitions, section_defaults)
        elif key == "additionalProperties":
            if node.get("x-kubernetes-preserve-unknown-fields") and value in (True, {}):
                continue  # a free object: the node itself keeps unknown fields
            if isinstance(value, dict):
                result[key] = (
                    _structural(value, definitions, section_defaults)
                    if value
                    else {"x-kubernetes-preserve-unknown-fields": True}
                )
            elif value is True:
                result[key] = {"x-kubernetes-preserve-unknown-fields": True}
            # ``false``: structural schemas forbid it; unknown fields are pruned/rejected.
        elif key == "anyOf":
            result[key] = [_structural(option, definitions, section_defaults) for option in value]
        else:
            result[key] = copy.deepcopy(value)
    properties = result.get("properties", {})
    required = set(result.get("required", []))
    for name, child in properties.items():
        # An optional section whose fields all have defaults, and which the model always
        # fills in, defaults to {}: the API server then fills in the nested defaults just like
        # the model. Never a section the model leaves out when absent (the fault sections):
        # the server would put it into every object and change its meaning.
        if (
            section_defaults
            and name not in required
            and not _defaults_to_none(node["properties"][name], definitions)
            and child.get("type") == "object"
            and "properties" in child
            and not child.get("required")
            and not child.get("nullable")
            and "default" not in child
        ):
            child["default"] = {}
    if result.get("type") == "object" and "properties" in result:
        result.pop("additionalProperties", None)
    return result


def status_path(*names: str) -> str:
    """``.status.<alias>...`` of the status model's fields named (Python names), checked:
    a field the model does not have raises, so no printer column can point at nothing."""
    model: type[BaseModel] | None = ExperimentStatus
    parts = []
    for name in names:
        field = model.model_fields.get(name) if model is not None else None
        if model is None or field is None:
            raise KeyError(f"status has no field {'.'.join(names)}")
        parts.append(field.alias or name)
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        model = next((c for c in candidates
                      if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return ".status." + ".".join(parts)


def printer_columns() -> list[dict[str, Any]]:
    """``kubectl get pgce``: Fault, Targets, Phase, Verdict, Lost, Recovery, Age; and with
    ``-o wide`` (priority 1) the Message."""
    return [
        {"name": "Fault", "type": "string", "jsonPath": status_path("fault"),
         "description": "The fault type, or a scenario's types joined by +"},
        {"name": "Targets", "type": "string", "jsonPath": status_path("targets"),
         "description": "The pods the fault hits"},
        {"name": "Phase", "type": "string", "jsonPath": status_path("phase")},
        {"name": "Verdict", "type": "string", "jsonPath": status_path("verdict")},
        {"name": "Lost", "type": "integer", "jsonPath": status_path("workload", "lost"),
         "description": "Acknowledged writes lost"},
        {
            "name": "Recovery",
            "type": "number",
            "jsonPath": status_path("recovery_seconds"),
            "description": "Seconds from revert until healthy",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Message", "type": "string", "jsonPath": status_path("message"),
         "priority": 1, "description": "Why it ended as it did"},
    ]


def _crd_document(kind: str, plural: str, singular: str, short_names: Sequence[str],
                  columns: list[dict[str, Any]], description: str, spec: dict[str, Any],
                  status: dict[str, Any]) -> dict[str, Any]:
    """One of our CustomResourceDefinitions (group, version, scope, labels, the status
    subresource: the same for every kind), as plain data."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": {
                "app.kubernetes.io/name": "pggit-chaos",
                "app.kubernetes.io/component": "crd",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The complete ``apiextensions.k8s.io/v1`` CustomResourceDefinition, as plain data."""
    return _crd_document(KIND, PLURAL, SINGULAR, SHORT_NAMES, printer_columns(),
                         (Experiment.__doc__ or "").strip().splitlines()[0], schema_of(),
                         status_schema_of())


#: The command that regenerates the chart's CRD file from the model.
REGENERATE = (
    "python -c 'from pggit_chaos.spec import write_crd; "
    'write_crd("charts/pggit-chaos/crds/pggitchaosexperiments.yaml")\''
)
_HEADER = (
    "# GENERATED from pggit_chaos.spec (the pydantic model) - do not edit by hand.\n"
    f"# Regenerate: {REGENERATE}\n"
)


def crd_yaml() -> str:
    """The CRD as the YAML text :func:`write_crd` writes (stable key order, a header)."""
    body = yaml.safe_dump(build_crd(), sort_keys=False, allow_unicode=True, width=100)
    return _HEADER + body


def write_crd(path: str | Path) -> Path:
    """Write the CRD YAML to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(crd_yaml(), encoding="utf-8")
    return path


# ------------------------------------------------------------------------- the schedule's CRD


def build_schedule_crd() -> dict[str, Any]:
    """The ``PgGitChaosSchedule`` CRD as plain data: ``spec`` from
    :class:`~pggit_chaos.spec.schedule.ScheduleSpec` (its ``experimentTemplate.spec`` is the
    experiment's spec schema, with the same defaults and CEL rules), ``status`` from
    :class:`~pggit_chaos.spec.schedule.ScheduleStatus`."""
    from pggit_chaos.spec.schedule import SCHEDULE_KIND, Schedule, ScheduleSpec, ScheduleStatus

    root_description = (Schedule.__doc__ or "").strip().splitlines()[0]
    columns = [
        {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
        {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
        {"name": "Active", "type": "integer", "jsonPath": ".status.activeRuns",
         "description": "Runs not finished"},
        {"name": "Last Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime"},
        {"name": "Last Verdict", "type": "string", "jsonPath": ".status.lastVerdict"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd_document(SCHEDULE_KIND, SCHEDULE_PLURAL, SCHEDULE_SINGULAR,
                         SCHEDULE_SHORT_NAMES, columns, root_description,
                         _schema(ScheduleSpec, section_defaults=True),
                         _schema(ScheduleStatus, section_defaults=False))


#: The command that regenerates the chart's schedule CRD file from the model.
REGENERATE_SCHEDULE = (
    "python -c 'from pggit_chaos.spec.crd import write_schedule_crd; "
    'write_schedule_crd("charts/pggit-chaos/crds/pggitchaosschedules.yaml")\''
)


def schedule_crd_yaml() -> str:
    """The schedule's CRD as the YAML text :func:`write_schedule_crd` writes."""
    body = yaml.safe_dump(build_schedule_crd(), sort_keys=False, allow_unicode=True, width=100)
    header = _HEADER.replace(REGENERATE, REGENERATE_SCHEDULE)
    return header + body


def crds_yaml() -> str:
    """Both CRDs, one YAML document each (what ``pggit-chaos crd`` prints)."""
    return crd_yaml() + "---\n" + schedule_crd_yaml()


def write_schedule_crd(path: str | Path) -> Path:
    """Write the schedule's CRD YAML to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schedule_crd_yaml(), encoding="utf-8")
    return path
