"""What a real kube-apiserver does with a custom resource on create/update — without a server.

No kube-apiserver runs here (see ENVIRONMENT.md), so the tests and the Kubernetes API emulator
call :func:`admit` to treat a ``PgGitChaosExperiment`` the way the server's custom-resource
handler does, in its order:

1. **structural defaulting**: nulls of non-nullable fields without a default are pruned, then
   every absent property with a ``default`` gets a deep copy of it — recursively, inside array
   items and ``additionalProperties`` too, and defaults are themselves defaulted (the Go
   ``structuraldefaulting`` algorithm: ``PruneNonNullableNullsWithoutDefaults`` + ``Default``);
2. **pruning** of fields the schema does not know (kept under
   ``x-kubernetes-preserve-unknown-fields``); ``apiVersion``/``kind``/``metadata`` at the root
   are the server's, and ``metadata`` keeps only ``ObjectMeta`` fields; with ``strict=True``
   an unknown field is an error instead (``kubectl apply``'s default ``--validate=strict``);
3. **OpenAPI v3 validation**: type (``integer``, ``number``, ``int-or-string``, nullable),
   enum, pattern (RE2 semantics: ``$`` is the end of the text), ``format: date-time``,
   minimum/maximum/exclusive*, min/maxLength (in characters), min/maxItems,
   min/maxProperties, required, and ``x-kubernetes-list-type`` set/map uniqueness; plus the
   server's own ``metadata.name``/``namespace`` checks;
4. **CEL** ``x-kubernetes-validations``, each rule compiled and evaluated with Google's
   ``cel-expr-python`` (cel-cpp, with the strings extension) at its node, ``self`` bound to the
   node's value, skipped where the node is absent. As on the server, the rules are not run
   when step 3 found a blocking error (a wrong type, an unsupported enum value, too long, too
   many): the server then adds the cause "some validation rules were not checked ...".
5. **ratcheting** on updates (``old=``; CRDValidationRatcheting, on by default since 1.30):
   errors on nodes whose value is unchanged from the stored object are dropped, and CEL rules
   are not run on unchanged nodes.

Causes read like the server's: ``("spec.fault.podKill", 'Invalid value: "object": podKill
belongs to fault type pod-kill')`` (a rule's ``fieldPath`` is appended to the node's path, as
the server does).

:func:`check_crd` checks what the server checks when the CRD itself is created: a structural
schema, valid defaults, rules that compile, ``fieldPath`` that exists, and the **static CEL
cost**: rules that iterate must do so over bounded values, and the estimated cost times the
rule's cardinality must stay within the server's limits.

What this approximates (and what it leaves out) — keep in mind when a test passes here:

* CEL runs on cel-cpp, not cel-go. Known gap: cel-cpp's ``duration()`` does not take Go's
  ``µs``/``μs`` spellings (``us`` works), which the server's cel-go accepts; the tests do not
  generate them. ``self`` is bound dynamically (``dyn``), so a rule that would fail the
  server's *type check* (e.g. comparing a string field to an int) only fails here when it runs;
  ``format: date-time`` strings are bound as strings (the server binds CEL timestamps); values
  of ``type: number`` are bound as doubles, as on the server. Transition rules (``oldSelf``)
  are skipped (admit() knows no old object). Of Kubernetes' CEL libraries beyond the strings
  extension only the quantity library is here (:func:`k8s_quantity`, ported from
  ``resource.ParseQuantity``; a quantity is carried as text, so only the library's functions
  apply to it); url, ip, regex ``find``, lists are not.
* Numbers: a float with a whole value (``1.0``) in an ``integer`` or int-or-string field is
  taken and stored as the integer: kubectl's YAML-to-JSON conversion writes it as ``1``, which
  is what the server then sees. (A JSON request carrying ``1.0`` passes the server's type
  check too, but a CEL rule reading that field then fails with "expected int, got float64".)
* The cost check does not run cel-go's estimator: it scans each rule's tokens for iterating
  operations (the macros ``all``/``exists``/``exists_one``/``map``/``filter``, ``size()``,
  ``in``, string functions, ``duration()``/``timestamp()``/... parsing a value) and requires
  their operand to be a ``self.a.b`` path whose schema node is bounded (``maxItems``,
  ``maxProperties``, ``maxLength`` or an ``enum``); an operand it cannot resolve (a macro
  variable, a call's result) counts as unbounded. Its estimate is an over-estimate: token
  count + for the iterating operations the *product* of their bounds times the token count;
  cardinality is the product of the enclosing ``maxItems``/``maxProperties`` (an unbounded
  one counts as 3 MiB, the server's request size). Limits: 10^7 per rule (cost x
  cardinality), 10^8 for all rules together — the server's ``StaticEstimatedCostLimit`` and
  ``StaticEstimatedCRDCostLimit``.
* Not done: status-subresource semantics (which part of the object a request may change),
  ``metadata.generateName``, ``managedFields``, label/annotation syntax, conversion,
  ``x-kubernetes-embedded-resource``, and the runtime cost limit.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_UP, Decimal, localcontext
from functools import lru_cache
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_strings

__all__ = [
    "Invalid",
    "Rule",
    "RuleOutcomes",
    "admit",
    "as_kubectl_sends",
    "check_crd",
    "k8s_quantity",
    "rules_of",
    "schema_of_crd",
    "stored_schema",
]

#: Fields of ``metav1.ObjectMeta``: the rest of ``metadata`` is pruned by the server.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)

#: The server's limits for the static cost of CRD validation rules.
STATIC_RULE_COST_LIMIT = 10_000_000
STATIC_CRD_COST_LIMIT = 100_000_000
#: Cardinality/size assumed for an unbounded list, map or string (the request size limit).
UNBOUNDED = 3 * 1024 * 1024
NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)

RuleOutcomes = dict[tuple[str, str], set[bool]]
"""(schema path of the rule's node, rule text) -> the results seen (``True``/``False``)."""


class Invalid(Exception):
    """The server's 422: the object is invalid; ``causes`` are (field path, message) pairs."""

    def __init__(self, causes: list[tuple[str, str]], name: str = "") -> None:
        self.causes = causes
        self.name = name
        listed = ", ".join(f"{path or '<nil>'}: {message}" for path, message in causes)
        super().__init__(f'PgGitChaosExperiment "{name}" is invalid: [{listed}]')

    @property
    def fields(self) -> list[str]:
        """The field paths of the causes, in order."""
        return [path for path, _ in self.causes]


@dataclass(frozen=True)
class Rule:
    """One ``x-kubernetes-validations`` rule and where in the schema it sits."""

    path: str  # schema path: "spec.fault", "spec.target.selector.matchExpressions[*]"
    rule: str
    message: str
    field_path: str = ""
    reason: str = ""


@dataclass
class _Cause:
    path: str
    message: str
    blocking: bool = False


@dataclass
class _Run:
    causes: list[_Cause] = field(default_factory=list)
    strict: bool = False
    outcomes: RuleOutcomes | None = None
    #: On an update: the node at a (value) path equals the old object's (ratcheting).
    unchanged: Callable[[str], bool] | None = None

    def add(self, path: str, message: str, *, blocking: bool = False) -> None:
        self.causes.append(_Cause(path, message, blocking))


# ------------------------------------------------------------------------------- the API


def schema_of_crd(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``version`` (default: the storage version)."""
    for entry in crd["spec"]["versions"]:
        if (version is None and entry.get("storage")) or entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"no version {version!r} in the CRD")


def _default_crd() -> dict[str, Any]:
    from pggit_chaos.spec import build_crd

    return build_crd()


def admit(
    obj: dict[str, Any],
    crd: dict[str, Any] | None = None,
    *,
    strict: bool = False,
    outcomes: RuleOutcomes | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The object as the server would store it (defaulted, pruned), or :class:`Invalid`.

    ``obj`` is not changed. ``strict=True`` makes unknown fields errors (server-side field
    validation ``Strict``) instead of pruning them. ``outcomes``, if given, collects every CEL
    rule's result (for coverage tests). ``old``: on an update, the stored object; validation
    then *ratchets* as the server does since 1.30 (CRDValidationRatcheting, GA in 1.33): an
    error, schema or CEL, on a node whose value equals the old object's (correlated through
    objects, map-lists and sets, not atomic lists) is not reported. A ``/status`` write thus
    passes for an object stored under an older schema whose spec today's schema rejects.
    """
    crd = crd if crd is not None else _default_crd()
    name = str(obj.get("metadata", {}).get("name", "")) if isinstance(obj, dict) else ""
    run = _Run(strict=strict, outcomes=outcomes)
    if not isinstance(obj, dict):
        raise Invalid([("", "Invalid value: the object must be a JSON object")], name)
    group = crd["spec"]["group"]
    versions = [entry["name"] for entry in crd["spec"]["versions"] if entry.get("served")]
    api_version = obj.get("apiVersion")
    if not isinstance(api_version, str) or "/" not in api_version:
        raise Invalid([("apiVersion", "Required value: must be group/version")], name)
    obj_group, _, obj_version = api_version.partition("/")
    if obj_group != group or obj_version not in versions:
        raise Invalid([("apiVersion", f'Invalid value: "{api_version}": not served')], name)
    if obj.get("kind") != crd["spec"]["names"]["kind"]:
        raise Invalid([("kind", f'Invalid value: "{obj.get("kind")}": must be '
                                f'{crd["spec"]["names"]["kind"]}')], name)
    schema = schema_of_crd(crd, obj_version)
    result = as_kubectl_sends(obj)
    body = {key: value for key, value in result.items() if key != "metadata"}
    _prune_nulls(body, schema)
    _default(body, schema)
    _prune(body, schema, "", run, root=True)
    if isinstance(old, dict):
        # Read from storage, the old object is defaulted (and pruned) as well.
        old_body = {key: value for key, value in as_kubectl_sends(old).items()
                    if key != "metadata"}
        _prune_nulls(old_body, schema)
        _default(old_body, schema)
        _prune(old_body, schema, "", _Run(), root=True)
        bare = _without_metadata(schema)
        run.unchanged = lambda path: _correlated_equal(path, body, old_body, bare)
    metadata = _metadata(result.get("metadata"), run, crd["spec"].get("scope") == "Namespaced")
    result = {**body, "metadata": metadata} if metadata is not None else body
    if "metadata" in schema.get("properties", {}) and metadata is not None:
        _validate(metadata, _metadata_schema(schema), "metadata", run)
    _validate({k: v for k, v in body.items()}, _without_metadata(schema), "", run)
    if run.unchanged is not None:
        ratcheted = run.unchanged
        run.causes = [cause for cause in run.causes
                      if cause.path.startswith("metadata") or not ratcheted(cause.path)]
    if any(cause.blocking for cause in run.causes):
        run.add("", f"Invalid value: \"null\": {NOT_CHECKED}")
    else:
        _cel(body, _without_metadata(schema), "", "", run)
    if run.causes:
        raise Invalid([(cause.path, cause.message) for cause in run.causes], name)
    return result


def as_kubectl_sends(value: Any) -> Any:
    """A deep copy of a document (read from YAML) as kubectl sends it: a float with a whole
    value becomes an integer (sigs.k8s.io/yaml decodes ``1.0`` as float64 1 and Go's JSON
    encoder writes it as ``1``)."""
    if isinstance(value, dict):
        return {key: as_kubectl_sends(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_kubectl_sends(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)  # (from 1e21 on Go writes an exponent: the server sees a float)
    return value


# ---------------------------------------------------------------------- 1. defaulting


def _child_schema(schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    properties = schema.get("properties", {})
    if key in properties:
        child: dict[str, Any] = properties[key]
        return child
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def _prune_nulls(value: Any, schema: dict[str, Any] | None) -> None:
    """Go's ``PruneNonNullableNullsWithoutDefaults``."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key in list(value):
            child = _child_schema(schema, key)
            if child is None:
                continue
            if value[key] is None and not child.get("nullable") and "default" not in child:
                del value[key]
            else:
                _prune_nulls(value[key], child)
    elif isinstance(value, list):
        items = schema.get("items")
        for item in value:
            _prune_nulls(item, items if isinstance(items, dict) else None)


def _default(value: Any, schema: dict[str, Any] | None) -> None:
    """Go's structural ``Default``: absent (or non-nullable null) properties get defaults."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key, child in schema.get("properties", {}).items():
            if "default" not in child:
                continue
            if key not in value or (value[key] is None and not child.get("nullable")):
                value[key] = copy.deepcopy(child["default"])
        for key in list(value):
            child = _child_schema(schema, key)
            if child is None:
                continue
            if value[key] is None and not child.get("nullable") and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            _default(value[key], child)
    elif isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return
        for index, item in enumerate(value):
            if item is None and not items.get("nullable") and "default" in items:
                value[index] = copy.deepcopy(items["default"])
            _default(value[index], items)


# ------------------------------------------------------------------------- 2. pruning


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _prune(value: Any, schema: dict[str, Any] | None, path: str, run: _Run, *,
           root: bool = False) -> None:
    """Go's ``structuralpruning.Prune``: unknown fields go (or are errors with strict)."""
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        # Known fields inside a free node are still pruned below them.
        if isinstance(value, dict):
            for key, item in value.items():
                child = _child_schema(schema, key)
                if child is not None:
                    _prune(item, child, _join(path, key), run)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                _prune(item, schema["items"], f"{path}[{index}]", run)
        return
    if isinstance(value, dict):
        for key in list(value):
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            child = _child_schema(schema, key) if schema is not None else None
            if child is None:
                if run.strict:
                    run.add(_join(path, key), f'Invalid value: unknown field "{_join(path, key)}"')
                del value[key]
            else:
                _prune(value[key], child, _join(path, key), run)
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        for index, item in enumerate(value):
            _prune(item, items if isinstance(items, dict) else None, f"{path}[{index}]", run)


def _metadata(metadata: Any, run: _Run, namespaced: bool) -> dict[str, Any] | None:
    """``metadata`` as ObjectMeta keeps it, with the server's name/namespace checks."""
    if metadata is None:
        run.add("metadata.name", "Required value: name or generateName is required")
        return None
    if not isinstance(metadata, dict):
        run.add("metadata", "Invalid value: must be an object", blocking=True)
        return None
    kept = {key: value for key, value in metadata.items() if key in OBJECT_META_FIELDS}
    for key in metadata:
        if key not in OBJECT_META_FIELDS and run.strict:
            run.add(f"metadata.{key}", f'Invalid value: unknown field "metadata.{key}"')
    name = kept.get("name")
    if name is None and not kept.get("generateName"):
        run.add("metadata.name", "Required value: name or generateName is required")
    elif name is not None and (
        not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name)
    ):
        run.add("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                                 "must consist of lower case alphanumeric characters, '-' "
                                 "or '.', and must start and end with an alphanumeric "
                                 "character")
    namespace = kept.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63
        or not DNS1123_LABEL.fullmatch(namespace)
    ):
        run.add("metadata.namespace", f'Invalid value: "{namespace}": a lowercase RFC 1123 label '
                                      "must consist of lower case alphanumeric characters or "
                                      "'-', and must start and end with an alphanumeric character")
    for key in ("labels", "annotations"):
        mapping = kept.get(key)
        if mapping is None:
            continue
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            run.add(f"metadata.{key}", "Invalid value: must be a map of strings", blocking=True)
    if namespaced is False and namespace:
        run.add("metadata.namespace", "Forbidden: not allowed on this type")
    return kept


def _without_metadata(schema: dict[str, Any]) -> dict[str, Any]:
    properties = {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}
    return {**schema, "properties": properties}


def _metadata_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # Only restrictions of name and generateName are allowed there (see check_crd).
    meta: dict[str, Any] = schema["properties"]["metadata"]
    return {"type": "object", "properties": meta.get("properties", {})}


# ---------------------------------------------------------------------- 3. the schema


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return f'"{_type_name(value)}"'
    return repr(value)


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        # The server decodes a JSON number that fits int64 as an integer, anything else as a
        # float64, which go-openapi still takes for an integer when it is whole and within
        # +-2^53 (swag.IsFloat64AJSONInteger).
        if isinstance(value, int) and not isinstance(value, bool):
            return -(2**63) <= value < 2**63 or abs(value) <= 2**53
        return isinstance(value, float) and value.is_integer() and abs(value) <= 2**53
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


@lru_cache(maxsize=256)
def _re2(pattern: str) -> re.Pattern[str]:
    """A Go RE2 pattern as a Python regex: ``$`` outside a class is the end of the text."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


def _date_time_ok(text: str) -> bool:
    match = RFC3339.fullmatch(text)
    if match is None:
        return False
    try:
        year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def _validate(value: Any, schema: dict[str, Any], path: str, run: _Run) -> None:
    """OpenAPI v3 validation of a structural schema, causes as the server words them."""
    shown = path or "<root>"
    if value is None:
        if schema.get("nullable") or (
            schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema
        ):
            return
        expected = schema.get("type", "string or integer")
        run.add(path, f'Invalid value: "null": {shown} in body must be of type {expected}: '
                      '"null"', blocking=True)
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _type_ok(value, "integer")):
            run.add(path, f'Invalid value: "{_type_name(value)}": {shown} in body must be of '
                          f'type integer,string: "{_type_name(value)}"', blocking=True)
            return
    elif "type" in schema and not _type_ok(value, schema["type"]):
        run.add(path, f'Invalid value: "{_type_name(value)}": {shown} in body must be of type '
                      f'{schema["type"]}: "{_type_name(value)}"', blocking=True)
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_quote(option) for option in schema["enum"])
        run.add(path, f"Unsupported value: {_quote(value)}: supported values: {supported}",
                blocking=True)
    if isinstance(value, str):
        length = len(value)
        if "maxLength" in schema and length > schema["maxLength"]:
            run.add(path, f"Too long: may not be more than {schema['maxLength']} bytes",
                    blocking=True)
        if "minLength" in schema and length < schema["minLength"]:
            run.add(path, f"Invalid value: {_quote(value)}: {shown} in body should be at least "
                          f"{schema['minLength']} chars long")
        if "pattern" in schema and not _re2(schema["pattern"]).search(value):
            run.add(path, f"Invalid value: {_quote(value)}: {shown} in body should match "
                          f"'{schema['pattern']}'")
        if schema.get("format") == "date-time" and not _date_time_ok(value):
            run.add(path, f"Invalid value: {_quote(value)}: {shown} in body must be of type "
                          "date-time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, path, run)
    if isinstance(value, list):
        _validate_list(value, schema, path, run)
    if isinstance(value, dict):
        _validate_object(value, schema, path, run)


def _validate_number(value: float, schema: dict[str, Any], path: str, run: _Run) -> None:
    shown = path or "<root>"
    if "maximum" in schema:
        limit = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= limit:
            run.add(path, f"Invalid value: {value!r}: {shown} in body should be less than "
                          f"{limit}")
        elif value > limit:
            run.add(path, f"Invalid value: {value!r}: {shown} in body should be less than or "
                          f"equal to {limit}")
    if "minimum" in schema:
        limit = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= limit:
            run.add(path, f"Invalid value: {value!r}: {shown} in body should be greater than "
                          f"{limit}")
        elif value < limit:
            run.add(path, f"Invalid value: {value!r}: {shown} in body should be greater than or "
                          f"equal to {limit}")


def _validate_list(value: list[Any], schema: dict[str, Any], path: str, run: _Run) -> None:
    shown = path or "<root>"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        run.add(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                blocking=True)
    if "minItems" in schema and len(value) < schema["minItems"]:
        run.add(path, f"Invalid value: {len(value)}: {shown} in body should have at least "
                      f"{schema['minItems']} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(item, items, f"{path}[{index}]", run)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                run.add(f"{path}[{index}]", f"Duplicate value: {_quote(item)}")
            else:
                seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: list[tuple[Any, ...]] = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(name) for name in keys)
            if key in seen_keys:
                shown_key = ", ".join(f'"{name}":{_quote(item.get(name))}' for name in keys)
                run.add(f"{path}[{index}]", f"Duplicate value: map[string]interface {{}}{{"
                                            f"{shown_key}}}")
            else:
                seen_keys.append(key)


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str, run: _Run) -> None:
    shown = path or "<root>"
    for name in schema.get("required", []):
        if name not in value:
            run.add(_join(path, name), "Required value")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        run.add(path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} "
                      "items", blocking=True)
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        run.add(path, f"Invalid value: {len(value)}: {shown} in body should have at least "
                      f"{schema['minProperties']} properties")
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            _validate(item, properties[key], _join(path, key), run)
        elif isinstance(additional, dict):
            _validate(item, additional, f"{path}[{key}]", run)


# -------------------------------------------------------------------------- 4. CEL


# Kubernetes' CEL quantity library (k8s.io/apiserver/pkg/cel/library/quantity.go, in every
# server since 1.28) on cel-cpp. A quantity is carried as the text of its exact value (cel-cpp
# cannot return an opaque type from Python), so only the library's own functions may be
# applied to it; the rules of the CRD do nothing else.

_QUANTITY_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                     "P": 15, "E": 18}
_QUANTITY_ERROR = "quantities must match the regular expression " \
    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
#: The largest quantity (int64 max): bigger binary-SI values are capped, as resource.Quantity.
_QUANTITY_MAX = Decimal(2**63 - 1)


def k8s_quantity(text: str) -> Decimal:
    """``resource.ParseQuantity``: the exact value, rounded up to 1e-9 (``ValueError``)."""
    if not text:
        raise ValueError(_QUANTITY_ERROR)
    if text == "0":
        return Decimal(0)
    match = re.fullmatch(r"([+-]?)([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*[-+]?[0-9]*)", text)
    if match is None:  # (Go takes "+", "." and "k" for 0: so does this)
        raise ValueError(_QUANTITY_ERROR)
    sign, whole, fraction, suffix = match.groups()
    if suffix in _QUANTITY_BINARY:
        base, exponent = 2, _QUANTITY_BINARY[suffix]
    elif suffix in _QUANTITY_DECIMAL:
        base, exponent = 10, _QUANTITY_DECIMAL[suffix]
    elif len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[-+]?[0-9]+", suffix[1:]):
        base, exponent = 10, int(suffix[1:])
    else:
        raise ValueError("unable to parse quantity's suffix")
    digits = f"{whole or '0'}.{fraction or '0'}"
    with localcontext(prec=400):  # inf.Dec is exact
        amount = Decimal(digits) * (Decimal(base) ** exponent)
        if int(amount.as_tuple().exponent) < -9:  # finer than 1e-9
            amount = amount.quantize(Decimal("1e-9"), rounding=ROUND_UP)
    if base == 2 and amount > _QUANTITY_MAX:
        amount = _QUANTITY_MAX
    return -amount if sign == "-" else amount


def _quantity(text: str) -> str:
    return str(k8s_quantity(text))


def _is_quantity(text: str) -> bool:
    try:
        k8s_quantity(text)
    except ValueError:
        return False
    return True


def _compare(first: str, second: str) -> int:
    a, b = Decimal(first), Decimal(second)
    return (a > b) - (a < b)


def _as_integer(value: str) -> int:
    amount = Decimal(value)
    if amount != amount.to_integral_value() or abs(amount) > 2**63 - 1:
        raise ValueError("cannot convert value to integer")
    return int(amount)


_QUANTITY_FUNCTIONS: list[tuple[str, str, Any, list[Any], bool, Callable[..., Any]]] = [
    # (name, overload id, return type, parameters, member, implementation)
    ("quantity", "string_to_quantity", cel.Type.STRING, [cel.Type.STRING], False, _quantity),
    ("isQuantity", "is_quantity_string", cel.Type.BOOL, [cel.Type.STRING], False,
     _is_quantity),
    ("compareTo", "quantity_compare_to", cel.Type.INT, [cel.Type.STRING, cel.Type.STRING],
     True, _compare),
    ("isGreaterThan", "quantity_is_greater_than", cel.Type.BOOL,
     [cel.Type.STRING, cel.Type.STRING], True, lambda a, b: _compare(a, b) > 0),
    ("isLessThan", "quantity_is_less_than", cel.Type.BOOL, [cel.Type.STRING, cel.Type.STRING],
     True, lambda a, b: _compare(a, b) < 0),
    ("sign", "quantity_sign", cel.Type.INT, [cel.Type.STRING], True,
     lambda a: _compare(a, "0")),
    ("asInteger", "quantity_get_int", cel.Type.INT, [cel.Type.STRING], True, _as_integer),
    ("isInteger", "quantity_is_integer", cel.Type.BOOL, [cel.Type.STRING], True,
     lambda a: Decimal(a) == Decimal(a).to_integral_value() and abs(Decimal(a)) < 2**63),
    ("asApproximateFloat", "quantity_get_float", cel.Type.DOUBLE, [cel.Type.STRING], True,
     lambda a: float(Decimal(a))),
]


@lru_cache(maxsize=1)
def _env() -> Any:
    return cel.NewEnv(
        variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN},
        extensions=[ext_strings.ExtStrings()],
        functions=[
            cel.FunctionDecl(name, [cel.Overload(overload, result, parameters,
                                                 is_member=member, impl=impl)])
            for name, overload, result, parameters, member, impl in _QUANTITY_FUNCTIONS
        ],
    )


@lru_cache(maxsize=512)
def _compiled(rule: str) -> Any:
    return _env().compile(rule)


def compile_error(rule: str) -> str | None:
    """Why ``rule`` does not compile, or ``None``."""
    try:
        _compiled(rule)
    except RuntimeError as error:
        return str(error).splitlines()[0]
    return None


def _to_cel(value: Any, schema: dict[str, Any] | None) -> Any:
    """A value as the server hands it to CEL: ``number`` values are doubles."""
    if schema is None:
        return value
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        return {key: _to_cel(item, _child_schema(schema, key)) for key, item in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [_to_cel(item, items if isinstance(items, dict) else None) for item in value]
    return value


def _evaluate(rule: str, value: Any) -> bool | str:
    """``True``/``False``, or the evaluation error as text."""
    try:
        result = _compiled(rule).eval(data={"self": value})
    except RuntimeError as error:
        return f"compilation failed: {error}"
    if result.type() == cel.Type.ERROR:
        return str(result.value())
    outcome = result.value()
    if not isinstance(outcome, bool):
        return f"rule returned {outcome!r}, not a bool"
    return outcome


def _cel(value: Any, schema: dict[str, Any], path: str, schema_path: str, run: _Run) -> None:
    """Evaluate every rule at this node, then below it (the server's order)."""
    if path and run.unchanged is not None and run.unchanged(path):
        return  # ratcheted: this node and everything below it are as stored
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        bound = _to_cel(value, schema)
        for entry in rules:
            rule = entry["rule"]
            if "oldSelf" in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rule):
                continue  # transition rules need the old object: not on create
            outcome = _evaluate(rule, bound)
            if run.outcomes is not None and isinstance(outcome, bool):
                run.outcomes.setdefault((schema_path, rule), set()).add(outcome)
            if outcome is True:
                continue
            where = path
            if entry.get("fieldPath"):
                where = path + entry["fieldPath"] if path else entry["fieldPath"].lstrip(".")
            kind = schema.get("type", "object")
            if isinstance(outcome, str):
                run.add(where, f'Invalid value: "{kind}": evaluation error: {outcome}')
                continue
            message = entry.get("message") or f"failed rule: {rule}"
            reason = entry.get("reason", "FieldValueInvalid")
            if reason == "FieldValueForbidden":
                run.add(where, f"Forbidden: {message}")
            elif reason == "FieldValueRequired":
                run.add(where, f"Required value: {message}")
            elif reason == "FieldValueDuplicate":
                run.add(where, f'Duplicate value: "{kind}"')
            else:
                run.add(where, f'Invalid value: "{kind}": {message}')
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                _cel(item, properties[key], _join(path, key), _join(schema_path, key), run)
            elif isinstance(additional, dict):
                _cel(item, additional, f"{path}[{key}]", f"{schema_path}[*]", run)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _cel(item, schema["items"], f"{path}[{index}]", f"{schema_path}[*]", run)


# ------------------------------------------------------------------- 5. ratcheting

_PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[([^\]]*)\]")


def _correlated_equal(path: str, new: Any, old: Any, schema: dict[str, Any] | None) -> bool:
    """True when the node at ``path`` (or a node above it) equals its old counterpart.

    Follows the server's correlation: object properties and map values by key, elements of
    ``listType: map`` lists by their keys, of ``listType: set`` lists by value; an element of
    an atomic list has no old counterpart (only the whole list can be unchanged).
    """
    for match in _PATH_TOKEN.finditer(path):
        if new == old:
            return True
        dotted, bracketed = match.group(1), match.group(2)
        if isinstance(new, dict) and isinstance(old, dict):
            key = dotted if dotted is not None else bracketed
            if key not in new or key not in old:
                return False
            new, old = new[key], old[key]
            schema = _child_schema(schema, key) if schema is not None else None
        elif isinstance(new, list) and isinstance(old, list) and bracketed is not None:
            items = schema.get("items") if schema is not None else None
            kind = schema.get("x-kubernetes-list-type", "atomic") if schema else "atomic"
            try:
                element = new[int(bracketed)]
            except (ValueError, IndexError):
                return False
            if kind == "set":
                return element in old
            if kind != "map":
                return False
            keys = schema.get("x-kubernetes-list-map-keys", []) if schema else []
            if not isinstance(element, dict):
                return False
            partners = [item for item in old if isinstance(item, dict)
                        and all(item.get(k) == element.get(k) for k in keys)]
            if len(partners) != 1:
                return False
            new, old = element, partners[0]
            schema = items if isinstance(items, dict) else None
        else:
            return False
    return bool(new == old)


# ------------------------------------------------------------------- the CRD itself


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``[*]`` for items and map values)."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        if isinstance(child, dict):
            yield from _walk(child, _join(path, name))
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}[*]")
    for index, option in enumerate(schema.get("anyOf", [])):
        if isinstance(option, dict):
            yield from _walk(option, f"{path}|anyOf[{index}]")


def rules_of(crd: dict[str, Any] | None = None) -> list[Rule]:
    """Every CEL rule of the CRD's storage version, with its schema path."""
    crd = crd if crd is not None else _default_crd()
    found: list[Rule] = []
    for path, node in _walk(schema_of_crd(crd)):
        for entry in node.get("x-kubernetes-validations", []):
            found.append(Rule(path, entry["rule"], entry.get("message", ""),
                              entry.get("fieldPath", ""), entry.get("reason", "")))
    return found


_STRUCTURAL_FORBIDDEN = {
    "$ref", "$schema", "id", "definitions", "additionalItems", "patternProperties",
    "dependencies", "const", "propertyNames", "$defs", "examples",
}
_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired",
            "FieldValueDuplicate"}


def check_crd(crd: dict[str, Any]) -> list[str]:
    """What the API server would refuse in this CRD (empty list: it would be accepted)."""
    problems: list[str] = []
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    group = spec.get("group", "")
    if crd.get("metadata", {}).get("name") != f"{names.get('plural')}.{group}":
        problems.append("metadata.name must be <plural>.<group>")
    for key in ("plural", "singular", "kind", "listKind"):
        if not names.get(key):
            problems.append(f"spec.names.{key}: Required value")
    for key in ("plural", "singular"):
        if names.get(key) and not DNS1123_LABEL.fullmatch(names[key]):
            problems.append(f"spec.names.{key}: must be a lowercase DNS-1123 label")
    storage = [v for v in spec.get("versions", []) if v.get("storage")]
    if len(storage) != 1:
        problems.append("spec.versions: exactly one version must be the storage version")
    total_cost = 0
    for version in spec.get("versions", []):
        where = f"spec.versions[{version.get('name')}]"
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            problems.append(f"{where}.schema.openAPIV3Schema: Required value")
            continue
        problems += _structural_problems(schema, where)
        problems += _default_problems(schema, where)
        rule_problems, cost = _rule_problems(schema, where)
        problems += rule_problems
        total_cost += cost
        for column in version.get("additionalPrinterColumns", []):
            if _resolve_json_path(schema, column.get("jsonPath", "")) is None:
                problems.append(f"{where}: printer column {column.get('name')}: jsonPath "
                                f"{column.get('jsonPath')} is not in the schema")
    if total_cost > STATIC_CRD_COST_LIMIT:
        problems.append(f"x-kubernetes-validations estimated rule cost total for entire "
                        f"OpenAPIv3 schema exceeds budget: {total_cost} > {STATIC_CRD_COST_LIMIT}")
    return problems


#: ``apiextensions/v1.JSONSchemaProps`` as the server decodes and encodes a CRD's schema:
#: field -> how it is kept. ``omitempty`` drops empty strings, lists and maps and, for the
#: non-pointer booleans, ``false``; the pointer fields (``*bool``, ``*float64``, ``*int64``,
#: ``*string``) keep whatever was given, zero included. Numbers are ``float64`` (``minimum``,
#: ``maximum``, ``multipleOf``): written back as JSON they lose a ``.0``.
_SCHEMA_FIELDS: dict[str, str] = {
    "id": "string", "$schema": "string", "$ref": "string", "description": "string",
    "type": "string", "format": "string", "title": "string", "default": "json",
    "maximum": "float", "exclusiveMaximum": "bool", "minimum": "float",
    "exclusiveMinimum": "bool", "maxLength": "int", "minLength": "int", "pattern": "string",
    "maxItems": "int", "minItems": "int", "uniqueItems": "bool", "multipleOf": "float",
    "enum": "list", "maxProperties": "int", "minProperties": "int", "required": "list",
    "items": "schema", "allOf": "schemas", "oneOf": "schemas", "anyOf": "schemas",
    "not": "schema", "properties": "schema-map", "additionalProperties": "schema-or-bool",
    "patternProperties": "schema-map", "dependencies": "json", "additionalItems": "json",
    "definitions": "schema-map", "externalDocs": "json", "example": "json",
    "nullable": "bool", "x-kubernetes-preserve-unknown-fields": "*bool",
    "x-kubernetes-embedded-resource": "bool", "x-kubernetes-int-or-string": "bool",
    "x-kubernetes-list-map-keys": "list", "x-kubernetes-list-type": "*string",
    "x-kubernetes-map-type": "*string", "x-kubernetes-validations": "rules",
}
_RULE_FIELDS = ("rule", "message", "messageExpression", "reason", "fieldPath",
                "optionalOldSelf")


def stored_schema(schema: Any) -> Any:
    """The schema node as the server stores it: what a CRD read back shows.

    Unknown keywords are dropped (with ``--validate=strict`` they are an error instead), empty
    ``omitempty`` fields and ``false`` non-pointer booleans vanish, numbers with an integral
    value come back as integers (kubectl's YAML-to-JSON already writes ``50.0`` as ``50``,
    defaults included; ``float64`` keywords do the same). A generated CRD must be a fixed
    point of this.
    """
    return _stored(as_kubectl_sends(schema))


def _stored(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    stored: dict[str, Any] = {}
    for key, value in schema.items():
        kind = _SCHEMA_FIELDS.get(key)
        if kind is None:
            continue
        if kind in ("string", "list", "schema-map", "schemas", "rules") and not value:
            continue
        if kind == "bool" and value is not True:
            continue
        if kind == "float" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if kind == "schema":
            value = _stored(value)
        elif kind == "schemas":
            value = [_stored(item) for item in value]
        elif kind == "schema-map":
            value = {name: _stored(item) for name, item in value.items()}
        elif kind == "schema-or-bool" and isinstance(value, dict):
            value = _stored(value)
        elif kind == "rules":
            value = [{name: rule[name] for name in _RULE_FIELDS
                      if name in rule and (rule[name] or name == "rule")} for rule in value]
        stored[key] = value
    return stored


def _resolve_json_path(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    parts = [part for part in json_path.split(".") if part]
    if parts and parts[0] == "metadata":
        return {"type": "object"}
    node: dict[str, Any] | None = schema
    for part in parts:
        if node is not None and node.get("x-kubernetes-preserve-unknown-fields"):
            return node
        node = _child_schema(node, part) if node is not None else None
    return node


def _structural_problems(schema: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    for path, node in _walk(schema):
        at = f"{where}: {path or '<root>'}"
        if "|anyOf[" in path:
            extra = set(node) - {"type"}
            if extra:
                problems.append(f"{at}: inside anyOf only type may be given (got {sorted(extra)})")
            continue
        forbidden = _STRUCTURAL_FORBIDDEN & set(node)
        if forbidden:
            problems.append(f"{at}: not allowed in a structural schema: {sorted(forbidden)}")
        if node.get("uniqueItems") is True:
            problems.append(f"{at}: uniqueItems cannot be true (use x-kubernetes-list-type: set)")
        int_or_string = node.get("x-kubernetes-int-or-string")
        if int_or_string:
            if "type" in node:
                problems.append(f"{at}: type must be empty with x-kubernetes-int-or-string")
            options = node.get("anyOf")
            if options is not None and options != [{"type": "integer"}, {"type": "string"}]:
                problems.append(f"{at}: anyOf of int-or-string must be integer, string")
        elif "anyOf" in node or "oneOf" in node or "allOf" in node or "not" in node:
            problems.append(f"{at}: logical junctors are only allowed for int-or-string here")
        if "type" not in node and not int_or_string and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            problems.append(f"{at}: type: Required value (structural schemas type every node)")
        if node.get("additionalProperties") is False:
            problems.append(f"{at}: additionalProperties: false is not structural")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{at}: properties and additionalProperties are mutually exclusive")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{at}: items: Required value for arrays")
        if path == "metadata":
            allowed = {"type", "properties", "description"}
            if set(node) - allowed or set(node.get("properties", {})) - {"name", "generateName"}:
                problems.append(f"{at}: only restrictions of metadata.name and generateName")
        list_type = node.get("x-kubernetes-list-type")
        if list_type is not None:
            if node.get("type") != "array":
                problems.append(f"{at}: x-kubernetes-list-type on a non-array")
            items = node.get("items", {})
            if list_type == "set" and items.get("type") in ("object", "array"):
                problems.append(f"{at}: list-type set needs scalar items")
            if list_type == "map":
                keys = node.get("x-kubernetes-list-map-keys") or []
                if not keys or items.get("type") != "object":
                    problems.append(f"{at}: list-type map needs object items and map keys")
                for key in keys:
                    key_schema = items.get("properties", {}).get(key)
                    if key_schema is None:
                        problems.append(f"{at}: list map key {key} is not a property")
                    elif key not in items.get("required", []) and "default" not in key_schema:
                        problems.append(f"{at}: list map key {key} must be required or "
                                        "defaulted")
            elif list_type not in ("set", "atomic"):
                problems.append(f"{at}: unknown x-kubernetes-list-type {list_type}")
        if path.startswith("metadata.") and "default" in node:
            problems.append(f"{at}: defaults are not allowed in metadata")
    root = schema
    if root.get("type") != "object":
        problems.append(f"{where}: the root must be of type object")
    return problems


def _default_problems(schema: dict[str, Any], where: str) -> list[str]:
    """Defaults must be valid and already pruned and defaulted, as the server demands."""
    problems: list[str] = []
    for path, node in _walk(schema):
        if "default" not in node or "|anyOf[" in path:
            continue
        value = node["default"]
        run = _Run(strict=True)
        pruned = copy.deepcopy(value)
        _prune(pruned, node, path, run)
        _validate(value, node, path, run)
        if not any(cause.blocking for cause in run.causes):
            _cel(value, node, path, path, run)
        for cause in run.causes:
            problems.append(f"{where}: default of {path}: {cause.path}: {cause.message}")
        if value is None and not node.get("nullable"):
            problems.append(f"{where}: default of {path} is null but the field is not nullable")
    return problems


# ------------------------------------------------------------------------ CEL cost


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>[rRbB]?(?:'''(?:.|\n)*?'''|\"\"\"(?:.|\n)*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))
      | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
    )""",
    re.VERBOSE,
)
#: Member calls that walk their receiver (a list, map or string).
_ITERATING_MEMBERS = {
    "all", "exists", "exists_one", "map", "filter",  # macros
    "size", "contains", "startsWith", "endsWith", "matches", "lowerAscii", "upperAscii",
    "replace", "split", "substring", "trim", "indexOf", "lastIndexOf", "join", "find",
    "findAll", "charAt", "isSorted", "sum", "min", "max", "reverse", "quote", "format",
}
_MACROS = {"all", "exists", "exists_one", "map", "filter"}
#: Global functions that walk (or parse) their first argument.
_ITERATING_GLOBALS = {"size", "matches", "duration", "timestamp", "int", "uint", "double",
                      "quantity", "isQuantity", "url", "isURL", "ip", "isIP", "cidr", "isCIDR",
                      "bytes", "string"}


def _tokens(rule: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    rule = rule.rstrip()
    while position < len(rule):
        match = _TOKEN.match(rule, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot tokenize {rule[position:]!r}")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _self_path_before(tokens: list[tuple[str, str]], end: int) -> list[str] | None:
    """The ``self.a.b`` chain ending at ``tokens[end]`` (inclusive), as ['a', 'b']."""
    names: list[str] = []
    index = end
    while index >= 0 and tokens[index][0] == "ident":
        names.append(tokens[index][1])
        if index >= 1 and tokens[index - 1] == ("op", "."):
            index -= 2
            continue
        break
    else:
        return None
    if not names or names[-1] != "self":
        return None
    if index >= 1 and tokens[index - 1] == ("op", "."):
        return None
    return list(reversed(names[:-1]))


def _self_path_after(tokens: list[tuple[str, str]], start: int) -> tuple[list[str], int] | None:
    """The ``self.a.b`` chain starting at ``tokens[start]``: (['a', 'b'], index after it)."""
    if start >= len(tokens) or tokens[start] != ("ident", "self"):
        return None
    names: list[str] = []
    index = start + 1
    while (index + 1 < len(tokens) and tokens[index] == ("op", ".")
           and tokens[index + 1][0] == "ident"):
        if index + 2 < len(tokens) and tokens[index + 2] == ("op", "("):
            break  # a member call, not a field
        names.append(tokens[index + 1][1])
        index += 2
    return names, index


def _bound(node: dict[str, Any] | None) -> int | None:
    """How big a value at this node can be (items, properties or characters), if bounded."""
    if node is None or node.get("x-kubernetes-preserve-unknown-fields"):
        return None
    kind = node.get("type")
    if kind == "array":
        bound = node.get("maxItems")
        return int(bound) if bound is not None else None
    if kind == "object":
        if "additionalProperties" in node:
            bound = node.get("maxProperties")
            return int(bound) if bound is not None else None
        return len(node.get("properties", {}))
    if kind == "string" or node.get("x-kubernetes-int-or-string"):
        if "maxLength" in node:
            return int(node["maxLength"])
        if "enum" in node:
            return max(len(str(option)) for option in node["enum"])
        return None
    return 1  # numbers, booleans: constant size


def _node_at(schema: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for name in names:
        node = _child_schema(node, name) if node is not None else None
    return node


def rule_cost(rule: str, schema: dict[str, Any]) -> tuple[int, list[str]]:
    """(estimated cost, problems) of ``rule`` at a node with ``schema`` (see module doc)."""
    try:
        tokens = _tokens(rule)
    except ValueError as error:
        return UNBOUNDED, [str(error)]
    problems: list[str] = []
    bounds: list[int] = []
    iterations: list[int] = []

    def operand(names: list[str] | None, what: str) -> None:
        if names is None:
            problems.append(f"{what} over a value that cannot be bounded statically")
            bounds.append(UNBOUNDED)
            return
        bound = _bound(_node_at(schema, names))
        shown = ".".join(["self", *names])
        if bound is None:
            problems.append(f"{what} over {shown}, which has no maxItems/maxProperties/"
                            "maxLength")
            bounds.append(UNBOUNDED)
        else:
            bounds.append(bound)

    # Macro variables that range over a map's keys: the server's size estimator gives a key
    # the size of its declared type, apiservercel.StringType, whose MaxElements is 0.
    map_keys: set[str] = set()
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        previous = tokens[index - 1] if index >= 1 else ("", "")
        if kind == "ident" and following == ("op", "(") and previous == ("op", "."):
            if text in _ITERATING_MEMBERS:
                receiver = _self_path_before(tokens, index - 2)
                if (receiver is None and index >= 2 and tokens[index - 2][1] in map_keys
                        and (index < 3 or tokens[index - 3] != ("op", "."))):
                    bounds.append(0)
                    continue
                before = len(bounds)
                operand(receiver, f"{text}()")
                if text in _MACROS:
                    iterations.append(bounds[before])
                    node = _node_at(schema, receiver) if receiver is not None else None
                    if (node is not None and node.get("type") == "object"
                            and "additionalProperties" in node and index + 2 < len(tokens)
                            and tokens[index + 2][0] == "ident"):
                        map_keys.add(tokens[index + 2][1])
        elif kind == "ident" and following == ("op", "(") and text in _ITERATING_GLOBALS:
            found = _self_path_after(tokens, index + 2)
            if found is not None and found[1] < len(tokens) and tokens[found[1]] in (
                ("op", ")"), ("op", ",")
            ):
                operand(found[0], f"{text}()")
            elif index + 2 < len(tokens) and tokens[index + 2][0] in ("string", "number"):
                pass  # a literal argument
            else:
                operand(None, f"{text}()")
        elif kind == "ident" and text == "in":
            nxt = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
            if nxt == ("op", "["):
                continue  # a list literal: bounded by its text
            found = _self_path_after(tokens, index + 1)
            operand(found[0] if found is not None else None, "in")
    cost = len(tokens) + sum(math.ceil(bound / 10) for bound in bounds)
    if iterations:
        cost += math.prod(iterations) * len(tokens)
    return cost, problems


def _cardinality(schema: dict[str, Any], path: str) -> int:
    """How many times a rule at ``path`` can run for one object."""
    cardinality = 1
    node: dict[str, Any] | None = schema
    for part in re.findall(r"\[\*\]|[^.\[]+", path):
        if node is None:
            break
        if part == "[*]":
            if node.get("type") == "array":
                bound = node.get("maxItems")
                node = node.get("items")
            else:
                bound = node.get("maxProperties")
                node = node.get("additionalProperties")
            cardinality *= int(bound) if bound is not None else UNBOUNDED
        else:
            node = _child_schema(node, part)
    return cardinality


def _rule_problems(schema: dict[str, Any], where: str) -> tuple[list[str], int]:
    problems: list[str] = []
    total = 0
    for path, node in _walk(schema):
        for entry in node.get("x-kubernetes-validations", []):
            rule = entry.get("rule", "")
            at = f"{where}: {path or '<root>'}: rule {rule!r}"
            error = compile_error(rule)
            if error is not None:
                problems.append(f"{at}: compilation failed: {error}")
                continue
            message = entry.get("message", "")
            if "\n" in message or (message and not message.strip()):
                problems.append(f"{at}: message must be one non-blank line")
            if entry.get("reason") and entry["reason"] not in _REASONS:
                problems.append(f"{at}: unknown reason {entry['reason']}")
            field_path = entry.get("fieldPath")
            if field_path is not None:
                names = [part for part in field_path.split(".") if part]
                if not field_path.startswith(".") or _node_at(node, names) is None:
                    problems.append(f"{at}: fieldPath {field_path} is not a field of the node")
            cost, cost_problems = rule_cost(rule, node)
            problems += [f"{at}: {problem}" for problem in cost_problems]
            cardinality = _cardinality(schema, path)
            if cost * cardinality > STATIC_RULE_COST_LIMIT:
                problems.append(f"{at}: estimated rule cost exceeds budget: {cost} x "
                                f"{cardinality} > {STATIC_RULE_COST_LIMIT}")
            total += cost * cardinality
    return problems, total


#: For tests that want to call the steps one by one.
STEPS: dict[str, Callable[..., Any]] = {
    "prune_nulls": _prune_nulls,
    "default": _default,
}
