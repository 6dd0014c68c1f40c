"""Generate the ``PgGitChaosExperiment`` CustomResourceDefinition from the spec model.

A pure builder (:func:`build_crd`) plus :func:`write_crd`, used by the chart's
``crds/pggitchaosexperiments.yaml`` (regenerate: see :data:`REGENERATE`; a test fails when
the committed file is stale) and by the operator's tests. The openAPIV3Schema is pydantic's
JSON schema turned into a Kubernetes *structural* schema: ``$ref`` inlined, no titles, no
``additionalProperties: false`` (the API server prunes, and ``kubectl`` rejects unknown fields
with strict field validation), durations as patterned strings with CEL bounds, cross-field
rules as CEL ``x-kubernetes-validations``.

Optional fields (``X | None = None``) become plain optional properties, deliberately *not*
``nullable: true``: the API server prunes a null given for a non-nullable field, which is what
the model does (null = not given), and the ``has(self.podKill)`` CEL rules stay correct.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pggit_chaos.spec.model import GROUP, KIND, VERSION, Experiment

__all__ = ["PLURAL", "SHORT_NAMES", "SINGULAR", "build_crd", "crd_yaml", "schema_of", "write_crd"]

PLURAL = "pggitchaosexperiments"
SINGULAR = "pggitchaosexperiment"
SHORT_NAMES = ["pgce"]

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


def schema_of(model: type[Experiment] = Experiment) -> dict[str, Any]:
    """The model's JSON schema (by alias) as a structural ``openAPIV3Schema`` for the spec."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = raw.get("$defs", {})
    spec = _structural(raw["properties"]["spec"], definitions)
    spec.pop("default", None)
    return spec


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


def _structural(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
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
            result[key] = {name: _structural(child, definitions) for name, child in value.items()}
        elif key == "items":
            result[key] = _structural(value, definitions)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                result[key] = (
                    _structural(value, definitions)
                    if value
                    else {"x-kubernetes-preserve-unknown-fields": True}
                )
            elif value is True:
                result[key] = {"x-kubernetes-preserve-unknown-fields": True}
            # ``false``: structural schemas forbid it; unknown fields are pruned/rejected.
        elif key == "anyOf":
            result[key] = [_structural(option, definitions) for option in value]
        else:
            result[key] = copy.deepcopy(value)
    properties = result.get("properties", {})
    required = set(result.get("required", []))
    for name, child in properties.items():
        # An optional section whose fields all have defaults defaults to {}, so the API
        # server fills in the nested defaults just like the model does.
        if (
            name not in required
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


def build_crd() -> dict[str, Any]:
    """The complete ``apiextensions.k8s.io/v1`` CustomResourceDefinition, as plain data."""
    spec_schema = schema_of()
    root_description = (Experiment.__doc__ or "").strip().splitlines()[0]
    columns = [
        {"name": "Fault", "type": "string", "jsonPath": ".spec.fault.type"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict"},
        {
            "name": "Recovery",
            "type": "number",
            "jsonPath": ".status.recoverySeconds",
            "description": "Seconds from revert until healthy",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": {
                "app.kubernetes.io/name": "pggit-chaos",
                "app.kubernetes.io/component": "crd",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["chaos"],
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
                            "description": root_description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


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
