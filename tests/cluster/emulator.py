"""The tests' Kubernetes API server: kmock's emulator, made faithful where pggit-chaos relies on it.

``KubeEmulator`` subclasses :class:`kmock.KubernetesEmulator` and keeps kmock's discovery
(``/api``, ``/apis``, ``/apis/GROUP``) but serves every resource request itself, with what a
real kube-apiserver does and kmock does not:

* metadata: ``uid``, ``creationTimestamp``, ``namespace``, ``generateName``, ``generation``
  (bumped on changes outside ``metadata``/``status``), ``resourceVersion`` from one global
  counter bumped on every write (a no-op write changes nothing, as on a real server);
* optimistic concurrency: a PUT/patch carrying a stale ``metadata.resourceVersion`` ⇒ 409;
* PUT; merge patch (RFC 7386), JSON patch (RFC 6902, a failed ``test`` ⇒ 422), strategic merge
  patch for built-in kinds (lists merged by their Kubernetes merge keys: containers by
  ``name``, ``metadata.finalizers`` as a set, ...; 415 for custom resources, as a real server);
* the ``status`` subresource: main-resource writes ignore ``status``, ``/status`` writes ignore
  everything else; ``create`` drops a custom resource's ``status``;
* deletion: 404 once gone, ``deletionTimestamp`` + finalizers, DeleteOptions (preconditions,
  ``propagationPolicy``, ``gracePeriodSeconds``), graceful pod deletion finished by a kubelet
  (see :class:`KubeEmulator` for the contract), garbage collection along
  ``ownerReferences`` (background, foreground, orphan), namespace termination;
* label and field selectors for list, watch and deletecollection; watch from a
  ``resourceVersion`` replays only later events (410 once that version left the history);
* the ServiceAccount admission of pods: a pod naming a ServiceAccount that does not exist is
  refused (403 ``error looking up service account``; ``default`` always exists);
* ``pods/{name}/resize`` (1.33 in-place resize: only container resources may change, the QoS
  class may not, a limit or request may not be removed: 422 with the server's messages), the
  pod-update restrictions of the main pod resource, ``pods/binding``,
  ``pods/eviction``;
* ``pods/{name}/exec`` as a websocket upgrade speaking the remote-command protocol
  (``v5.channel.k8s.io``/``v4.channel.k8s.io``: channels 0 stdin, 1 stdout, 2 stderr, 3 the
  final Status, NonZeroExitCode with the exit code), recorded as the verbs RBAC checks: the
  upgraded GET as ``get`` and ``create`` (1.35+ checks both), a POST as ``create``; the
  command run by the kubelet attached for the pod's node
  (:meth:`KubeEmulator.attach_node`; the test kubelet runs it inside the target pod);
* admission of experiments through ``kube_schema.admit`` (defaulting, pruning, schema, CEL;
  updates ratcheted against the stored object, as 1.33 does) when that module exists: 422
  Invalid with ``details.causes`` like the server;
* every request recorded with the identity of its bearer token and its RBAC verb, plus the
  authorization check of the OwnerReferencesPermissionEnforcement admission plugin: a write
  that sets ``blockOwnerDeletion: true`` on a new owner reference is also recorded as
  ``update`` on the owner's ``finalizers`` subresource.

Not emulated (a real server differs): RBAC is enforced only for the identities given
``grants`` (flat (apiGroup, resource, verb) triples: no resourceNames, no aggregation), no
admission for built-in kinds beyond a few checks (names, Job restartPolicy, pod updates),
no controllers (nothing creates a Job's pods or a StatefulSet's pods: the test kubelet does),
``events`` and ``events.k8s.io`` Events are separate stores, server-side apply is a merge patch
(no field managers), ``pods/log`` answers 400, exec has no TTY (``tty`` is ignored, no
resize channel 4) and no SPDY (only websocket upgrades), watch bookmarks are only sent for
``sendInitialEvents``, CEL transition rules (``oldSelf``) are not given the old object, and
kmock's own ``objects`` array stays empty (use :meth:`KubeEmulator.get_object`/``list_objects``).

``EmulatorServer`` serves it over real HTTP on 127.0.0.1 from a background thread with its own
event loop, for in-process clients (kopf, KubeClient) and for other processes alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import functools
import importlib
import inspect
import json
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering

__all__ = [
    "DEFAULT_RESOURCES",
    "EXEC_PROTOCOLS",
    "IDENTITIES",
    "ApiFailure",
    "Call",
    "EmulatorServer",
    "ExecBackend",
    "KubeEmulator",
    "ResourceType",
    "apply_manifest",
    "namespace",
    "runner_namespace",
    "write_kubeconfig",
]

JSON = dict[str, Any]
RVERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
#: The identities the fixtures hand out tokens for.
IDENTITIES = ("operator", "runner", "kubelet", "admin")
ANONYMOUS = "system:anonymous"
GC_IDENTITY = "system:serviceaccount:kube-system:generic-garbage-collector"
FOREGROUND = "foregroundDeletion"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
#: What one ConfigMap's values may hold in all (the real server's limit, keys not counted).
CONFIG_MAP_LIMIT = 1024 * 1024
#: Largest request body the real API server reads (its default --max-request-bytes).
MAX_REQUEST_BYTES = 3 * 1024 * 1024
_TERMINAL_PHASES = ("Succeeded", "Failed")
#: The remote-command subprotocols served on ``pods/exec``, preferred first.
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
#: ``backend(namespace, pod, container, command, stdin)`` -> the started process.
ExecBackend = Callable[[str, str, str, list[str], bool], Any]


def _blocking_owners(obj: JSON | None) -> set[tuple[str, str, str]]:
    """(apiVersion, kind, name) of the owner references with ``blockOwnerDeletion``."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return {(str(ref.get("apiVersion")), str(ref.get("kind")), str(ref.get("name")))
            for ref in refs if isinstance(ref, dict) and ref.get("blockOwnerDeletion") is True}


# -- resources ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResourceType:
    """One served resource: group ('' for core), version, plural, kind and its behaviour."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: metadata.generation is kept (bumped on changes outside metadata and status).
    generation: bool = False
    #: a custom resource: no strategic merge patch (415), status dropped on create.
    custom: bool = False
    #: field selectors the server supports beyond metadata.name / metadata.namespace.
    fields: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def describe(self, name: str) -> str:
        """``pods "x"`` / ``jobs.batch "x"``: how the server names an object in messages."""
        return f'{self.plural}{"." + self.group if self.group else ""} "{name}"'


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
               "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
               "status.nominatedNodeName")
_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                 "involvedObject.uid", "involvedObject.apiVersion",
                 "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                 "reportingComponent", "source", "type")

DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False,
                 subresources=frozenset({"status", "finalize"}), short_names=("ns",),
                 fields=("status.phase",)),
    ResourceType("", "v1", "nodes", "Node", namespaced=False,
                 subresources=frozenset({"status"}), short_names=("no",)),
    ResourceType("", "v1", "pods", "Pod",
                 subresources=frozenset({"status", "resize", "exec", "log", "binding",
                                         "eviction", "ephemeralcontainers"}),
                 short_names=("po",), categories=("all",), generation=True, fields=_POD_FIELDS),
    ResourceType("", "v1", "secrets", "Secret", fields=("type",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType("", "v1", "services", "Service", subresources=frozenset({"status"}),
                 short_names=("svc",), categories=("all",)),
    ResourceType("", "v1", "events", "Event", short_names=("ev",), fields=_EVENT_FIELDS),
    ResourceType("events.k8s.io", "v1", "events", "Event", short_names=("ev",)),
    ResourceType("batch", "v1", "jobs", "Job", subresources=frozenset({"status"}),
                 categories=("all",), generation=True, fields=("status.successful",)),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet",
                 subresources=frozenset({"status", "scale"}), short_names=("sts",),
                 categories=("all",), generation=True),
    ResourceType("apps", "v1", "deployments", "Deployment",
                 subresources=frozenset({"status", "scale"}), short_names=("deploy",),
                 categories=("all",), generation=True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy",
                 short_names=("netpol",), generation=True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "CustomResourceDefinition", namespaced=False,
                 subresources=frozenset({"status"}), short_names=("crd", "crds"),
                 generation=True),
    ResourceType("chaos.pggit.io", "v1alpha1", "pggitchaosexperiments", "PgGitChaosExperiment",
                 subresources=frozenset({"status"}), short_names=("pgce",),
                 categories=("pggit-chaos",), generation=True, custom=True),
    ResourceType("chaos.pggit.io", "v1alpha1", "pggitchaosschedules", "PgGitChaosSchedule",
                 subresources=frozenset({"status"}), short_names=("pgcs",),
                 categories=("chaos",), generation=True, custom=True),
)

#: Verbs per subresource, for discovery.
_SUB_VERBS = {"status": ("get", "patch", "update"), "resize": ("get", "patch", "update"),
              "scale": ("get", "patch", "update"), "exec": ("create", "get"), "log": ("get",),
              "binding": ("create",), "eviction": ("create",), "finalize": ("update",),
              "ephemeralcontainers": ("get", "patch", "update")}


@dataclass(frozen=True)
class Call:
    """One request as RBAC sees it."""

    identity: str
    verb: str
    api_group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def rbac_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


class ApiFailure(Exception):
    """An error answer of the API server: rendered as a ``Status``."""

    REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415:
               "UnsupportedMediaType", 422: "Invalid", 500: "InternalError"}

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> JSON:
        body: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def _not_found(rtype: ResourceType, name: str) -> ApiFailure:
    return ApiFailure(404, f"{rtype.describe(name)} not found", "NotFound",
                      {"name": name, "group": rtype.group, "kind": rtype.plural})


def _conflict(rtype: ResourceType, name: str) -> ApiFailure:
    return ApiFailure(
        409, f"Operation cannot be fulfilled on {rtype.describe(name)}: the object has been "
        "modified; please apply your changes to the latest version and try again", "Conflict",
        {"name": name, "group": rtype.group, "kind": rtype.plural})


def _invalid(rtype: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiFailure:
    listed = [f"{path}: {message}" if path else message for path, message in causes]
    text = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    qualified = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    return ApiFailure(
        422, f'{qualified} "{name}" is invalid: {text}', "Invalid",
        {"name": name, "group": rtype.group, "kind": rtype.kind,
         "causes": [{"reason": "FieldValueInvalid", "message": message, "field": path}
                    for path, message in causes]})


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _timestamp(moment: datetime.datetime | None = None) -> str:
    return (moment or _now()).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- selectors ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # = != in notin exists !
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present  # "!"


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*"
                        r"[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """``a=b,c!=d,e in (f,g),h notin (i),j,!k``; ValueError on syntax errors."""
    requirements: list[Requirement] = []
    for part in _split_requirements(text or ""):
        match = re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^)]*)\)", part)
        if match:
            values = tuple(v.strip() for v in match.group(3).split(",") if v.strip())
            requirement = Requirement(match.group(1), match.group(2), values)
        elif part.startswith("!"):
            requirement = Requirement(part[1:].strip(), "!")
        elif "!=" in part:
            key, value = part.split("!=", 1)
            requirement = Requirement(key.strip(), "!=", (value.strip(),))
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            requirement = Requirement(key.strip(), "=", (value.strip(),))
        else:
            requirement = Requirement(part, "exists")
        if not _LABEL_KEY.match(requirement.key) or not all(
                _LABEL_VALUE.match(v) for v in requirement.values):
            raise ValueError(f"invalid label selector requirement {part!r}")
        requirements.append(requirement)
    return requirements


def parse_field_selector(text: str | None, rtype: ResourceType) -> list[tuple[str, str, str]]:
    """``metadata.name=x,status.phase!=Running`` as (field, op, value); ValueError if unknown."""
    result: list[tuple[str, str, str]] = []
    for part in _split_requirements(text or ""):
        if "!=" in part:
            key, value = part.split("!=", 1)
            op = "!="
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            op = "="
        else:
            raise ValueError(f"invalid field selector: {part!r}")
        key = key.strip()
        if key not in ("metadata.name", "metadata.namespace", *rtype.fields):
            raise ValueError(f'field label not supported: {key}')
        result.append((key, op, value.strip()))
    return result


def _field_value(obj: JSON, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, dict):  # events' source
        return str(node.get("component", ""))
    return str(node)


@dataclass(frozen=True)
class Selector:
    labels: tuple[Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    def matches(self, obj: JSON) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        if not all(req.matches(labels) for req in self.labels):
            return False
        for path, op, value in self.fields:
            actual = _field_value(obj, path)
            if (actual == value) != (op == "="):
                return False
        return True


# -- patches ------------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class PatchError(Exception):
    """A patch that cannot be applied (the server answers 422)."""


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, insert: bool = False) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not insert):
        raise PatchError(f"array index {index} out of bounds")
    return index


def _resolve(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"missing key {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token)]
        else:
            raise PatchError(f"cannot descend into {token!r}")
    return node


def _json_add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], insert=True), copy.deepcopy(value))
    else:
        raise PatchError("add: parent is not a container")
    return doc


def _json_remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("remove: cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchError(f"remove: unable to remove nonexistent key {tokens[-1]!r}")
        return parent.pop(tokens[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, tokens[-1]))
    raise PatchError("remove: parent is not a container")


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 on a copy of ``doc``; PatchError when an operation fails (or a test)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind == "test":
            try:
                actual = _resolve(doc, tokens)
            except PatchError:
                actual = None
            if actual != op.get("value"):
                raise PatchError(f"testing value {op['path']} failed")
        elif kind == "add":
            doc = _json_add(doc, tokens, op.get("value"))
        elif kind == "remove":
            _json_remove(doc, tokens)
        elif kind == "replace":
            if tokens:
                _resolve(doc, tokens)  # must exist
                _json_remove(doc, tokens)
            doc = _json_add(doc, tokens, op.get("value"))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            if kind == "move":
                value = _json_remove(doc, source)
            else:
                value = copy.deepcopy(_resolve(doc, source))
            doc = _json_add(doc, tokens, value)
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


#: Strategic-merge keys of lists, by the list's path in a pod spec / container.
_POD_SPEC_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
                  "volumes": "name", "imagePullSecrets": "name", "hostAliases": "ip"}
_CONTAINER_KEYS = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath",
                   "volumeDevices": "devicePath"}
_METADATA_KEYS: dict[str, str | None] = {"finalizers": None, "ownerReferences": "uid"}
_POD_SPEC_PATHS = {("spec",): "Pod", ("spec", "template", "spec"): "template"}


def _merge_key(path: tuple[str, ...], kind: str) -> tuple[bool, str | None]:
    """(merges?, key) for the list at ``path`` (list indices left out); None key: a set."""
    if path[-2:-1] == ("metadata",) and path[-1] in _METADATA_KEYS:
        return True, _METADATA_KEYS[path[-1]]
    spec_roots = [("spec",)] if kind == "Pod" else [("spec", "template", "spec")]
    for root in spec_roots:
        rest = path[len(root):]
        if path[:len(root)] != root:
            continue
        if len(rest) == 1 and rest[0] in _POD_SPEC_KEYS:
            return True, _POD_SPEC_KEYS[rest[0]]
        if len(rest) == 2 and rest[0] in ("containers", "initContainers",
                                          "ephemeralContainers") and rest[1] in _CONTAINER_KEYS:
            return True, _CONTAINER_KEYS[rest[1]]
    return False, None


def strategic_merge_patch(target: Any, patch: Any, kind: str,
                          path: tuple[str, ...] = ()) -> Any:
    """Kubernetes' strategic merge patch for the lists pggit-chaos and its tests touch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
            continue
        child = (*path, key)
        if isinstance(value, list):
            merges, merge_key = _merge_key(child, kind)
            current = result.get(key)
            if merges and isinstance(current, list):
                result[key] = _merge_list(current, value, merge_key, kind, child)
            else:
                result[key] = [item for item in copy.deepcopy(value)
                               if not (isinstance(item, dict) and item.get("$patch"))]
        else:
            merged = strategic_merge_patch(result.get(key), value, kind, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str | None, kind: str,
                path: tuple[str, ...]) -> list[Any]:
    result = copy.deepcopy(current)
    if key is None:  # a set of primitives (finalizers)
        result.extend(item for item in patch if item not in result)
        return result
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"list item of {'.'.join(path)} lacks its merge key {key!r}")
        at = next((i for i, old in enumerate(result) if old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                result.pop(at)
        elif at is None:
            result.append({k: v for k, v in copy.deepcopy(item).items() if k != "$patch"})
        else:
            result[at] = strategic_merge_patch(result[at], item, kind, path)
    return result


# -- pods ---------------------------------------------------------------------------------------
def _qos_class(spec: JSON) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    requests_any = limits_any = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = {**limits, **(resources.get("requests") or {})}
        requests_any = requests_any or any(requests.get(r) for r in ("cpu", "memory"))
        limits_any = limits_any or any(limits.get(r) for r in ("cpu", "memory"))
        for name in ("cpu", "memory"):
            if not limits.get(name) or str(requests.get(name)) != str(limits.get(name)):
                guaranteed = False
    if not requests_any and not limits_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _set_values(values: Any) -> dict[str, Any]:
    """A ResourceList without the keys a strategic merge patch set to null."""
    return {k: v for k, v in (values or {}).items() if v is not None}


def _effective_requests(resources: JSON) -> dict[str, Any]:
    """A container's requests as the server stores them: a missing one defaults to its limit."""
    return {**_set_values(resources.get("limits")), **_set_values(resources.get("requests"))}


_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3,
                 "M": 10**6, "G": 10**9, "T": 10**12}


def _quantity_bytes(value: Any) -> float:
    text = str(value)
    for unit, factor in _MEMORY_UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


_POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)")


def _mask_containers(spec: JSON, old: JSON, fields: tuple[str, ...]) -> None:
    for kind in ("containers", "initContainers"):
        new_list, old_list = spec.get(kind) or [], old.get(kind) or []
        for new_c, old_c in zip(new_list, old_list, strict=False):
            if new_c.get("name") != old_c.get("name"):
                continue
            for name in fields:
                if name in old_c:
                    new_c[name] = copy.deepcopy(old_c[name])
                else:
                    new_c.pop(name, None)


@functools.cache
def _experiment_crd() -> JSON:
    """The committed CRD, built once (admission checks experiments against it)."""
    from pggit_chaos.spec import build_crd

    crd: JSON = build_crd()
    return crd


@functools.cache
def _schedule_crd() -> JSON:
    """The schedules' CRD, built once (admission checks schedules against it)."""
    from pggit_chaos.spec.crd import build_schedule_crd

    crd: JSON = build_schedule_crd()
    return crd


# -- the emulator -------------------------------------------------------------------------------
@dataclass
class _Watcher:
    key: tuple[str, str, str]
    namespace: str | None
    name: str | None
    selector: Selector
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[JSON | None]


@dataclass
class _Entry:
    """One write in the history: for watches from a resourceVersion."""

    rv: int
    key: tuple[str, str, str]
    type: str
    obj: JSON
    old: JSON | None


@dataclass
class _Parsed:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """A kube-apiserver for tests, faithful where the operator, the runner and the kubelet rely.

    **Pod deletion, the contract with the test kubelet.** With ``pods_need_kubelet=False``
    (the default) the emulator deletes pods at once, as if a kubelet had confirmed at once.
    With ``pods_need_kubelet=True`` the emulator behaves like an API server with nodes: a
    created pod without ``spec.nodeName`` is bound to :attr:`node_name` (the emulator acts as
    the scheduler), and deleting a pod that is not in a terminal phase with a grace period > 0
    (``gracePeriodSeconds`` of the DeleteOptions, else ``spec.terminationGracePeriodSeconds``,
    default 30) only sets ``metadata.deletionTimestamp`` (now + grace) and
    ``metadata.deletionGracePeriodSeconds`` (the grace) — a MODIFIED watch event. The kubelet
    sees that, stops the pod's processes (SIGTERM, SIGKILL after the grace), and finishes the
    deletion with ``DELETE .../pods/NAME`` and ``{"gracePeriodSeconds": 0}``; only then is the
    pod removed (a DELETED event; finalizers still hold it). A pod in phase Succeeded/Failed,
    or deleted with ``gracePeriodSeconds: 0``, goes at once. Garbage collection deletes
    dependents' pods the same way (default grace).

    Objects are dicts; all state is behind one lock, usable from any thread.
    """

    pods_need_kubelet: bool = False
    resize_supported: bool = True
    node_name: str = "test-node"
    kubernetes_version: str = "1.33.1"
    #: Kubernetes 1.33 forbids lowering a memory limit in place unless the container's resize
    #: policy for memory is RestartContainer; 1.34 allows it.
    memory_limit_decrease_allowed: bool | None = None
    #: Updates of experiments ratchet their validation against the stored object (the
    #: CRDValidationRatcheting gate: on by default since 1.30, GA in 1.33). Off: as older
    #: servers, a ``/status`` write fails when the stored spec breaks today's schema.
    validation_ratcheting: bool = True
    #: Events kept for watches from an older resourceVersion.
    history_size: int = 50000
    tokens: dict[str, str] = attrs.field(factory=dict)
    #: identity -> the (apiGroup, resource[/subresource], verb) RBAC grants it; a request
    #: outside them is answered 403 Forbidden with the real server's message. Identities not
    #: listed are not restricted (the default: requests are only recorded).
    grants: dict[str, set[tuple[str, str, str]]] = attrs.field(factory=dict)
    #: node name -> what runs an exec command in a pod on that node (the kubelet's exec
    #: endpoint): see :meth:`attach_node`.
    exec_backends: dict[str, ExecBackend] = attrs.field(factory=dict)
    allow_anonymous: bool = True
    #: Answers a real server gives only when something outside the test fails (etcd timing
    #: out, a webhook down), which no test can stage on demand for one request: each is
    #: called with every recorded request; the first ApiFailure returned is the answer.
    interceptors: list[Callable[[Call], ApiFailure | None]] = attrs.field(factory=list)

    _types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _store: dict[tuple[tuple[str, str, str], str | None, str], JSON] = attrs.field(
        factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _history: deque[_Entry] = attrs.field(factory=deque, init=False)
    _watchers: list[_Watcher] = attrs.field(factory=list, init=False)
    _calls: list[Call] = attrs.field(factory=list, init=False)
    _state: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _admit: Callable[..., JSON] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for rtype in DEFAULT_RESOURCES:
            self.register(rtype)
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.seed(self._types[("", "v1", "namespaces")], {"metadata": {"name": name}})

    # -- configuration ----------------------------------------------------------------------
    def register(self, rtype: ResourceType) -> None:
        """Serve one more resource (also in discovery)."""
        self._types[rtype.key] = rtype
        self.resources[f"{rtype.group}/{rtype.version}/{rtype.plural}"] = kmock.ResourceInfo(
            kind=rtype.kind, namespaced=rtype.namespaced, verbs=set(RVERBS),
            shortnames=set(rtype.short_names), categories=set(rtype.categories),
            subresources=set(rtype.subresources))

    def token_for(self, identity: str) -> str:
        """A bearer token that authenticates as ``identity`` (made on first use)."""
        with self._state:
            for token, who in self.tokens.items():
                if who == identity:
                    return token
            token = f"{identity}-{secrets.token_hex(8)}"
            self.tokens[token] = identity
            return token

    def resource_type(self, ref: str) -> ResourceType:
        """``pods``, ``v1/pods``, ``batch/v1/jobs``, ``jobs.batch``, ``pgce``: its type."""
        for rtype in self._types.values():
            names = {rtype.plural, rtype.kind.lower(), *rtype.short_names,
                     f"{rtype.api_version}/{rtype.plural}",
                     f"{rtype.group}/{rtype.version}/{rtype.plural}"}
            if rtype.group:
                names.add(f"{rtype.plural}.{rtype.group}")
            if ref in names and (rtype.group != "events.k8s.io" or "/" in ref or "." in ref):
                return rtype
        raise KeyError(ref)

    # -- direct access for tests (thread-safe; copies) --------------------------------------
    def get_object(self, ref: str, namespace: str | None, name: str) -> JSON | None:
        rtype = self.resource_type(ref)
        with self._state:
            obj = self._store.get((rtype.key, namespace if rtype.namespaced else None, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, ref: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[JSON]:
        rtype = self.resource_type(ref)
        selector = Selector(tuple(parse_label_selector(label_selector)))
        with self._state:
            return [copy.deepcopy(obj) for (key, ns, _), obj in sorted(self._store.items())
                    if key == rtype.key and namespace in (None, ns) and selector.matches(obj)]

    def seed(self, rtype: ResourceType | str, body: JSON, namespace: str | None = None) -> JSON:
        """Create an object directly (no admission, no recording)."""
        if isinstance(rtype, str):
            rtype = self.resource_type(rtype)
        with self._state:
            return copy.deepcopy(self._create(rtype, namespace or body.get("metadata", {}).get(
                "namespace"), copy.deepcopy(body), admit=False))

    @property
    def resource_version(self) -> int:
        return self._rv

    def calls(self, identity: str | None = None) -> list[Call]:
        """The recorded resource requests, in order; only ``identity``'s if given."""
        with self._state:
            return [c for c in self._calls if identity is None or c.identity == identity]

    def rbac_rules(self, identity: str) -> set[tuple[str, str, str]]:
        """(apiGroup, resource or resource/subresource, verb) that ``identity`` used."""
        return {(c.api_group, c.rbac_resource, c.verb) for c in self.calls(identity)}

    def attach_node(self, node: str, backend: ExecBackend) -> None:
        """Serve ``pods/exec`` for pods on ``node`` through ``backend`` (a kubelet's part).

        ``backend(namespace, pod, container, command, stdin)`` starts ``command`` in the pod's
        container and returns the process, with ``stdout``/``stderr`` pipes (and ``stdin``
        when asked); ``LookupError`` when the container does not run there, ``OSError`` when
        the command cannot start.
        """
        with self._state:
            self.exec_backends[node] = backend

    def detach_node(self, node: str) -> None:
        with self._state:
            self.exec_backends.pop(node, None)

    def clear_calls(self) -> None:
        with self._state:
            self._calls.clear()

    # -- HTTP -------------------------------------------------------------------------------
    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        major, minor, *_ = self.kubernetes_version.split(".")
        return {"major": major, "minor": minor, "gitVersion": f"v{self.kubernetes_version}",
                "gitCommit": "0" * 40, "gitTreeState": "clean",
                "buildDate": "2025-05-15T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
                "platform": "linux/amd64"}

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        path = request._raw_request.path if request._raw_request is not None else ""
        parts = path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        types = [t for t in self._types.values() if (t.group, t.version) == (group, version)]
        if not types:
            raise kmock.KubernetesResourceNotFoundError()
        resources: list[JSON] = []
        for rtype in types:
            resources.append({"name": rtype.plural, "singularName": rtype.kind.lower(),
                              "namespaced": rtype.namespaced, "kind": rtype.kind,
                              "verbs": list(RVERBS), "shortNames": list(rtype.short_names),
                              "categories": list(rtype.categories)})
            for sub in sorted(rtype.subresources):
                if sub == "resize" and not self.resize_supported:
                    continue
                resources.append({"name": f"{rtype.plural}/{sub}", "singularName": "",
                                  "namespaced": rtype.namespaced,
                                  "kind": {"eviction": "Eviction", "binding": "Binding",
                                           "exec": "PodExecOptions", "log": "Pod",
                                           "scale": "Scale"}.get(sub, rtype.kind),
                                  "verbs": list(_SUB_VERBS.get(sub, ("get",)))})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources}

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Resource requests are served here; discovery and /version by kmock."""
        parsed = self._parse(raw_request.path)
        if parsed is None:
            response: aiohttp.web.StreamResponse = await super().__call__(raw_request)
            return response
        body = await raw_request.read()
        request = rendering.Request(
            id=len(self._requests), raw_request=raw_request, url=raw_request.url,
            method=raw_request.method, params=dict(raw_request.query),
            headers=dict(raw_request.headers), body=body, text=body.decode(errors="replace"))
        self._requests.append(request)
        return await self._serve_resource(request, parsed)

    async def _serve_resource(self, request: rendering.Request,
                              parsed: _Parsed | ApiFailure) -> aiohttp.web.StreamResponse:
        try:
            if isinstance(parsed, ApiFailure):
                raise parsed
            identity = self._identify(request)
            exec_call = parsed.subresource == "exec" and parsed.name is not None
            verb = self._verb(request, parsed)
            # pods/exec: the request's own verb is what RBAC authorizes: ``get`` for a websocket
            # upgrade (a GET: kubectl >= 1.30, the Python client), ``create`` for SPDY (a
            # POST). A websocket upgrade is also authorized as ``create`` (1.35+:
            # AuthorizePodWebsocketUpgradeCreatePermission), so it needs both.
            checks = [verb, "create"] if exec_call and verb == "get" else [verb]
            calls = [Call(identity, checked_verb, parsed.rtype.group, parsed.rtype.plural,
                          parsed.subresource, parsed.namespace, parsed.name)
                     for checked_verb in checks]
            with self._state:
                self._calls.extend(calls)
                for checked_verb in checks:
                    self._authorize(identity, checked_verb, parsed)
                interceptors = list(self.interceptors)
            for intercept in interceptors:
                failure = intercept(calls[-1])
                if failure is not None:
                    raise failure
            if exec_call:
                return await self._serve_exec(request, parsed)
            if verb == "watch":
                return await self._watch(request, parsed)
            body = self._decode(request)
            with self._state:
                checked = verb in ("create", "update", "patch") and parsed.subresource is None
                before = _blocking_owners(self._store.get(
                    (parsed.rtype.key, parsed.namespace, parsed.name or ""))) if checked else set()
                code, answer = self._dispatch(verb, request, parsed, body)
                if checked:
                    self._record_owner_checks(identity, before, answer)
            return aiohttp.web.json_response(answer, status=code)
        except ApiFailure as failure:
            return aiohttp.web.json_response(failure.status(), status=failure.code)

    # -- pods/exec ---------------------------------------------------------------------------
    async def _serve_exec(self, request: rendering.Request,
                          parsed: _Parsed) -> aiohttp.web.StreamResponse:
        """``pods/NAME/exec`` as the API server proxies it to the node's kubelet: a websocket
        upgrade speaking the remote-command protocol (``v5``/``v4.channel.k8s.io``): binary
        messages whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 the final
        ``Status``; v5 adds 255, the client's close of a channel), then the connection closes.
        """
        raw = request._raw_request
        assert raw is not None and parsed.name is not None
        params = raw.query
        commands = params.getall("command", [])
        flags = {key: str(params.get(key, "")).lower() in ("1", "t", "true")
                 for key in ("stdin", "stdout", "stderr", "tty")}
        with self._state:
            pod = copy.deepcopy(self._get(parsed.rtype, parsed.namespace, parsed.name))
            if not commands:
                raise ApiFailure(400, "you must specify at least 1 command")
            if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
                raise ApiFailure(400, "you must specify at least 1 of stdin, stdout, stderr")
            containers = [str(c.get("name")) for c in (pod.get("spec") or {}).get(
                "containers") or []]
            container = str(params.get("container") or "")
            if not container:
                if len(containers) != 1:
                    raise ApiFailure(400, f"a container name must be specified for pod "
                                     f"{parsed.name}, choose one of: [{' '.join(containers)}]")
                container = containers[0]
            elif container not in containers:
                raise ApiFailure(400, f"container {container} is not valid for pod {parsed.name}")
            node = str((pod.get("spec") or {}).get("nodeName") or "")
            if not node:
                raise ApiFailure(400, f"pod {parsed.name} does not have a host assigned")
            phase = (pod.get("status") or {}).get("phase")
            if phase in _TERMINAL_PHASES:
                raise ApiFailure(400, "cannot exec into a container in a completed pod; "
                                 f"current phase is {phase}")
            backend = self.exec_backends.get(node)
        if backend is None:
            raise ApiFailure(500, f"error dialing backend: no kubelet serves exec on node {node}")
        if raw.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiFailure(400, "Upgrade request required")
        socket = aiohttp.web.WebSocketResponse(protocols=EXEC_PROTOCOLS, autoping=True)
        ready = socket.can_prepare(raw)
        if not ready.ok or ready.protocol is None:
            raise ApiFailure(400, "unable to upgrade connection: the client offers none of the "
                             f"protocols {', '.join(EXEC_PROTOCOLS)}")
        try:
            process = await asyncio.to_thread(backend, str(parsed.namespace), parsed.name,
                                              container, list(commands), flags["stdin"])
        except LookupError as exc:
            raise ApiFailure(400, f"unable to upgrade connection: container not found "
                             f"(\"{container}\"): {exc}") from None
        except OSError as exc:
            process, failure = None, exc
        await socket.prepare(raw)
        for channel, wanted in ((0, flags["stdin"]), (1, flags["stdout"]),
                                (2, flags["stderr"]), (3, True)):
            if wanted:  # an empty first message on each open channel: "ready"
                await socket.send_bytes(bytes([channel]))
        if process is None:
            message = (f"OCI runtime exec failed: exec failed: unable to start container "
                       f"process: exec: \"{commands[0]}\": {failure}: unknown")
            status: JSON = {"metadata": {}, "status": "Failure", "message": message,
                            "reason": "InternalError", "code": 500,
                            "details": {"causes": [{"message": message}]}}
        else:
            status = await self._pump_exec(socket, process, flags, commands)
        with contextlib.suppress(ConnectionError):  # the client went away
            await socket.send_bytes(bytes([3]) + json.dumps(status).encode())
            await socket.close()
        return socket

    @staticmethod
    async def _pump_exec(socket: aiohttp.web.WebSocketResponse, process: Any,
                         flags: dict[str, bool], commands: list[str]) -> JSON:
        """Relay the process's output (and the client's stdin) until it exits; its Status."""

        async def relay(channel: int, pipe: Any, wanted: bool) -> None:
            if pipe is None:
                return
            while True:
                data = await asyncio.to_thread(pipe.read1, 65536)
                if not data:
                    break
                if wanted and not socket.closed:
                    with contextlib.suppress(ConnectionError):  # the client went away
                        await socket.send_bytes(bytes([channel]) + data)
            pipe.close()

        async def receive() -> None:
            async for message in socket:
                # Binary frames; clients also send text frames (read as their UTF-8 bytes).
                if message.type == aiohttp.WSMsgType.BINARY:
                    data: bytes = message.data
                elif message.type == aiohttp.WSMsgType.TEXT:
                    data = str(message.data).encode()
                else:
                    continue
                if not data:
                    continue
                stdin = process.stdin
                if data[0] == 0 and stdin is not None and not stdin.closed:
                    with contextlib.suppress(OSError, ValueError):
                        await asyncio.to_thread(stdin.write, data[1:])
                        await asyncio.to_thread(stdin.flush)
                elif (data[0] == 255 and data[1:2] == b"\x00" and stdin is not None
                      and socket.ws_protocol == "v5.channel.k8s.io"):
                    with contextlib.suppress(OSError):
                        stdin.close()
            if process.stdin is not None:  # the client went away: stdin ends
                with contextlib.suppress(OSError):
                    process.stdin.close()

        listener = asyncio.ensure_future(receive())
        try:
            await asyncio.gather(relay(1, process.stdout, flags["stdout"]),
                                 relay(2, process.stderr, flags["stderr"]))
            code = await asyncio.to_thread(process.wait)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if code == 0:
            return {"metadata": {}, "status": "Success"}
        code = 128 - code if code < 0 else code
        return {"metadata": {}, "status": "Failure",
                "message": f"command terminated with non-zero exit code: error executing "
                           f"command [{' '.join(commands)}], exit code {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}

    def _parse(self, path: str) -> _Parsed | ApiFailure | None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if (rest[0] == "namespaces" and len(rest) >= 3
                and not (len(rest) == 3 and rest[2] in ("status", "finalize"))):
            namespace, rest = rest[1], rest[2:]
        rtype = self._types.get((group, version, rest[0]))
        if rtype is None:
            return ApiFailure(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        if subresource is not None and subresource not in rtype.subresources:
            return ApiFailure(404, "the server could not find the requested resource")
        if subresource == "resize" and not self.resize_supported:
            return ApiFailure(404, "the server could not find the requested resource")
        if not rtype.namespaced:
            namespace = None
        return _Parsed(rtype, namespace, name, subresource)

    def _record_owner_checks(self, identity: str, before: set[tuple[str, str, str]],
                             answer: JSON) -> None:
        """OwnerReferencesPermissionEnforcement: setting ``blockOwnerDeletion`` on a new owner
        reference needs ``update`` on the owner's ``finalizers`` subresource; recorded as that
        authorization check (a real server answers 403 without it)."""
        for api_version, kind, name in sorted(_blocking_owners(answer) - before):
            group, _, version = api_version.rpartition("/")
            owner = next((t for t in self._types.values()
                          if (t.group, t.version, t.kind) == (group, version, kind)), None)
            if owner is not None:
                namespace = (answer.get("metadata") or {}).get("namespace")
                self._calls.append(Call(identity, "update", owner.group, owner.plural,
                                        "finalizers", namespace if owner.namespaced else None,
                                        name))

    def _authorize(self, identity: str, verb: str, parsed: _Parsed) -> None:
        """403 as RBAC answers it when ``identity`` has :attr:`grants` and none covers the
        call (identities without an entry there are allowed everything)."""
        granted = self.grants.get(identity)
        if granted is None:
            return
        resource = (f"{parsed.rtype.plural}/{parsed.subresource}" if parsed.subresource
                    else parsed.rtype.plural)
        if (parsed.rtype.group, resource, verb) in granted:
            return
        what = f'{parsed.rtype.plural} "{parsed.name}"' if parsed.name else parsed.rtype.plural
        where = (f'in the namespace "{parsed.namespace}"' if parsed.namespace
                 else "at the cluster scope")
        raise ApiFailure(403, f'{what} is forbidden: User "{identity}" cannot {verb} resource '
                         f'"{resource}" in API group "{parsed.rtype.group}" {where}',
                         details={"name": parsed.name or "", "group": parsed.rtype.group,
                                  "kind": parsed.rtype.plural})

    def _identify(self, request: rendering.Request) -> str:
        raw = request._raw_request
        header = raw.headers.get("Authorization", "") if raw is not None else ""
        if not header:
            if self.allow_anonymous:
                return ANONYMOUS
            raise ApiFailure(401, "Unauthorized")
        token = header.removeprefix("Bearer ").strip()
        with self._state:
            identity = self.tokens.get(token)
        if identity is None:
            raise ApiFailure(401, "Unauthorized")
        return identity

    @staticmethod
    def _verb(request: rendering.Request, parsed: _Parsed) -> str:
        method = str(request.method.value).upper()
        if method == "GET":
            if request.params.get("watch") in ("true", "1"):
                return "watch"
            return "list" if parsed.name is None else "get"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "deletecollection" if parsed.name is None else "delete"
        raise ApiFailure(405, f"method {method} not allowed")

    @staticmethod
    def _decode(request: rendering.Request) -> Any:
        if not request.body:
            return None
        try:
            return json.loads(request.body)
        except ValueError:
            with contextlib.suppress(Exception):
                return yaml.safe_load(request.body)
            raise ApiFailure(400, "the request body is not JSON") from None

    def _dispatch(self, verb: str, request: rendering.Request, parsed: _Parsed,
                  body: Any) -> tuple[int, JSON]:
        rtype, ns, name, sub = parsed.rtype, parsed.namespace, parsed.name, parsed.subresource
        params = request.params
        if (rtype.namespaced and ns is None and verb not in ("list", "deletecollection")
                and (verb != "create" or not isinstance(body, dict))):
            raise ApiFailure(404, "the server could not find the requested resource")
        if verb == "list":
            return 200, self._list(rtype, ns, params)
        if verb == "deletecollection":
            return 200, self._delete_collection(rtype, ns, params, body)
        if sub in ("exec", "log"):
            raise ApiFailure(400, f"pods/{sub} is not supported by the test API server")
        if verb == "get":
            assert name is not None
            return 200, copy.deepcopy(self._get(rtype, ns, name))
        if verb == "create" and name is None:
            if not isinstance(body, dict):
                raise ApiFailure(400, "the request body must be an object")
            ns = ns or (body.get("metadata") or {}).get("namespace") if rtype.namespaced else None
            if rtype.namespaced and not ns:
                raise ApiFailure(400, "the namespace of the object is required")
            return 201, copy.deepcopy(self._create(rtype, ns, body))
        assert name is not None
        if verb == "create" and sub == "binding":
            return 201, self._bind(rtype, ns, name, body or {})
        if verb == "create" and sub == "eviction":
            options = (body or {}).get("deleteOptions") or {}
            self._delete(rtype, ns, name, options)
            return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                         "metadata": {}, "code": 201}
        if verb == "delete":
            return 200, copy.deepcopy(self._delete(rtype, ns, name, body or {}))
        if verb == "update":
            if not isinstance(body, dict):
                raise ApiFailure(400, "the request body must be an object")
            return 200, copy.deepcopy(self._update(rtype, ns, name, body, sub, put=True))
        if verb == "patch":
            content = (request._raw_request.headers.get("Content-Type", "")
                       if request._raw_request is not None else "").split(";")[0].strip()
            if (content == "application/apply-patch+yaml" and isinstance(body, dict)
                    and (rtype.key, ns, name) not in self._store):
                return 201, copy.deepcopy(self._create(rtype, ns, body))  # apply creates
            old = self._get(rtype, ns, name)
            try:
                if content == "application/json-patch+json":
                    new = json_patch(old, body)
                elif content == "application/merge-patch+json":
                    new = merge_patch(old, body)
                elif content == "application/strategic-merge-patch+json":
                    if rtype.custom:
                        raise ApiFailure(415, "strategic merge patch is not supported for "
                                         "custom resources; use a merge or JSON patch")
                    new = strategic_merge_patch(old, body, rtype.kind)
                elif content == "application/apply-patch+yaml":
                    new = merge_patch(old, body)  # server-side apply, much simplified
                else:
                    raise ApiFailure(415, "the body of the request was in an unknown format - "
                                     "accepted media types include: application/json-patch+json,"
                                     " application/merge-patch+json, application/"
                                     "apply-patch+yaml")
            except PatchError as exc:
                raise ApiFailure(422, f"the server rejected our request due to an error in our "
                                 f"request: {exc}") from None
            if not isinstance(new, dict):
                raise ApiFailure(422, "the patched object is not an object")
            return 200, copy.deepcopy(self._update(rtype, ns, name, new, sub, put=False))
        raise ApiFailure(405, f"{verb} is not supported on {rtype.plural}/{sub}")

    # -- reads ------------------------------------------------------------------------------
    def _get(self, rtype: ResourceType, ns: str | None, name: str) -> JSON:
        obj = self._store.get((rtype.key, ns, name))
        if obj is None:
            raise _not_found(rtype, name)
        return obj

    def _selector(self, rtype: ResourceType, params: Any) -> Selector:
        try:
            return Selector(tuple(parse_label_selector(params.get("labelSelector"))),
                            tuple(parse_field_selector(params.get("fieldSelector"), rtype)))
        except ValueError as exc:
            raise ApiFailure(400, str(exc)) from None

    def _select(self, rtype: ResourceType, ns: str | None, selector: Selector) -> list[JSON]:
        return [obj for (key, obj_ns, _), obj in sorted(self._store.items())
                if key == rtype.key and ns in (None, obj_ns) and selector.matches(obj)]

    def _list(self, rtype: ResourceType, ns: str | None, params: Any) -> JSON:
        items = self._select(rtype, ns, self._selector(rtype, params))
        meta: JSON = {"resourceVersion": str(self._rv)}
        start = 0
        if params.get("continue"):
            try:
                start = int(json.loads(base64.b64decode(params["continue"]))["start"])
            except (ValueError, KeyError, TypeError):
                raise ApiFailure(400, "invalid continue token") from None
        limit = int(params.get("limit") or 0)
        if limit > 0:
            if start + limit < len(items):
                token = json.dumps({"start": start + limit, "rv": self._rv}).encode()
                meta["continue"] = base64.b64encode(token).decode()
                meta["remainingItemCount"] = len(items) - start - limit
            items = items[start:start + limit]
        else:
            items = items[start:]
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta,
                "items": copy.deepcopy(items)}

    # -- writes -----------------------------------------------------------------------------
    def _commit(self, rtype: ResourceType, obj: JSON, event: str, old: JSON | None) -> JSON:
        """Store ``obj`` (or remove it for DELETED) with a new resourceVersion; publish."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        key = (rtype.key, meta.get("namespace") if rtype.namespaced else None, meta["name"])
        if event == "DELETED":
            self._store.pop(key, None)
        else:
            self._store[key] = obj
        entry = _Entry(self._rv, rtype.key, event, obj, old)
        self._history.append(entry)
        while len(self._history) > self.history_size:
            self._history.popleft()
        for watcher in list(self._watchers):
            if watcher.key == rtype.key:
                out = self._event_for(watcher, entry)
                if out is not None:
                    with contextlib.suppress(RuntimeError):  # its loop has closed
                        watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, out)
        return obj

    def _admission(self, rtype: ResourceType, obj: JSON, old: JSON | None = None) -> JSON:
        """Experiments go through ``kube_schema.admit``; on an update, ratcheted against
        ``old`` (the stored object) as a 1.33 server does. A ConfigMap's values (data, and
        binaryData decoded) may hold 1 MiB in all, keys not counted: what the real node's
        1.34 server accepted and refused, message included."""
        if rtype.kind == "ConfigMap":
            size = sum(len(str(v).encode()) for v in (obj.get("data") or {}).values())
            size += sum(len(base64.b64decode(str(v))) for v in (obj.get("binaryData") or {})
                        .values())
            if size > CONFIG_MAP_LIMIT:
                raise _invalid(rtype, obj["metadata"]["name"], [(
                    "[]", f"Too long: may not be more than {CONFIG_MAP_LIMIT} bytes")])
        if rtype.custom and rtype.plural == "pggitchaosschedules":
            return self._admit_schedule(rtype, obj, old)
        if not rtype.custom or rtype.plural != "pggitchaosexperiments":
            return obj
        if self._admit is None:
            try:
                module = importlib.import_module("kube_schema")
            except ImportError:
                return obj
            self._admit = module.admit
            if "crd" in inspect.signature(module.admit).parameters:
                self._admit = functools.partial(module.admit, crd=_experiment_crd())
        invalid: type[Exception] = importlib.import_module("kube_schema").Invalid
        try:
            ratchets = "old" in inspect.signature(self._admit).parameters
            if old is None or not self.validation_ratcheting or not ratchets:
                admitted = self._admit(copy.deepcopy(obj))
            else:
                admitted = self._admit(copy.deepcopy(obj), old=copy.deepcopy(old))
        except invalid as exc:
            causes = [(self._path_text(path), str(message))
                      for path, message in getattr(exc, "causes", [])] or [("", str(exc))]
            raise _invalid(rtype, obj["metadata"]["name"], causes) from None
        admitted["metadata"] = obj["metadata"]
        return admitted

    def _admit_schedule(self, rtype: ResourceType, obj: JSON, old: JSON | None) -> JSON:
        """Schedules go through ``kube_schema.admit`` with their own CRD (ratcheted)."""
        try:
            module = importlib.import_module("kube_schema")
        except ImportError:
            return obj
        try:
            if old is None or not self.validation_ratcheting:
                admitted: JSON = module.admit(copy.deepcopy(obj), crd=_schedule_crd())
            else:
                admitted = module.admit(copy.deepcopy(obj), crd=_schedule_crd(),
                                        old=copy.deepcopy(old))
        except module.Invalid as exc:
            causes = [(self._path_text(path), str(message))
                      for path, message in getattr(exc, "causes", [])] or [("", str(exc))]
            raise _invalid(rtype, obj["metadata"]["name"], causes) from None
        admitted["metadata"] = obj["metadata"]
        return admitted

    @staticmethod
    def _path_text(path: Any) -> str:
        if isinstance(path, list | tuple):
            text = ""
            for part in path:
                text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
            return text
        return str(path)

    def _create(self, rtype: ResourceType, ns: str | None, body: JSON, *,
                admit: bool = True) -> JSON:
        obj = copy.deepcopy(body)
        if obj.get("apiVersion", rtype.api_version) != rtype.api_version or obj.get(
                "kind", rtype.kind) != rtype.kind:
            raise ApiFailure(400, f"the API version in the data ({obj.get('apiVersion')}) and "
                             f"kind ({obj.get('kind')}) do not match {rtype.api_version} "
                             f"{rtype.kind}")
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiFailure(400, "metadata must be an object")
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise ApiFailure(400, "the namespace of the provided object does not match the "
                                 "namespace sent on the request")
            meta["namespace"] = ns
            self._check_namespace(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid(rtype, "", [("metadata.name",
                                            "Required value: name or generateName is required")])
            for _ in range(100):
                candidate = meta["generateName"] + secrets.token_hex(3)[:5]
                if (rtype.key, ns, candidate) not in self._store:
                    break
            meta["name"] = candidate
        name = meta["name"]
        if not isinstance(name, str) or len(name) > 253 or not _NAME_RE.match(name):
            raise _invalid(rtype, str(name), [(
                "metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                "consist of lower case alphanumeric characters, '-' or '.', and must start and "
                "end with an alphanumeric character")])
        key = (rtype.key, ns if rtype.namespaced else None, name)
        if key in self._store:
            raise ApiFailure(409, f"{rtype.describe(name)} already exists", "AlreadyExists",
                             {"name": name, "group": rtype.group, "kind": rtype.plural})
        for server_field in ("deletionTimestamp", "deletionGracePeriodSeconds",
                             "resourceVersion", "managedFields", "selfLink"):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _timestamp()
        if rtype.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        self._defaults_on_create(rtype, obj)
        if admit:
            obj = self._admission(rtype, obj)
        return self._commit(rtype, obj, "ADDED", None)

    def _check_namespace(self, ns: str | None) -> None:
        namespace_obj = self._store.get((("", "v1", "namespaces"), None, ns or ""))
        if namespace_obj is None:
            raise ApiFailure(404, f'namespaces "{ns}" not found', "NotFound",
                             {"name": ns, "kind": "namespaces"})
        if namespace_obj["metadata"].get("deletionTimestamp"):
            raise ApiFailure(403, f"unable to create new content in namespace {ns} because it "
                             "is being terminated", "Forbidden")

    def _admit_service_account(self, pod: JSON) -> None:
        """The ServiceAccount admission plugin: a pod naming a ServiceAccount that does not
        exist in its namespace is refused (403), as a Job controller then reports in a
        ``FailedCreate`` Event. ``default`` counts as existing (the ServiceAccount controller,
        not emulated, creates it in every namespace)."""
        spec, meta = pod["spec"], pod["metadata"]
        account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        ns = str(meta.get("namespace"))
        if account == "default" or (("", "v1", "serviceaccounts"), ns, account) in self._store:
            return
        # Admission runs before the name is generated: the server names generateName then.
        shown = str(meta.get("generateName") or meta.get("name"))
        raise ApiFailure(403, f'pods "{shown}" is forbidden: error looking up service '
                         f'account {ns}/{account}: serviceaccount "{account}" not found',
                         "Forbidden", {"name": shown, "kind": "pods"})

    def _defaults_on_create(self, rtype: ResourceType, obj: JSON) -> None:
        if rtype.has_status and rtype.kind not in ("Namespace", "Node"):
            obj.pop("status", None)
        if rtype.kind == "Namespace":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})[
                "kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif rtype.kind == "Pod":
            spec = obj.setdefault("spec", {})
            if not spec.get("containers"):
                raise _invalid(rtype, obj["metadata"]["name"],
                               [("spec.containers", "Required value")])
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
            for container in spec["containers"]:
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
            if self.pods_need_kubelet and not spec.get("nodeName"):
                spec["nodeName"] = self.node_name
            self._admit_service_account(obj)
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        elif rtype.kind == "Job":
            self._job_defaults(rtype, obj)

    @staticmethod
    def _job_defaults(rtype: ResourceType, obj: JSON) -> None:
        spec = obj.setdefault("spec", {})
        template = spec.setdefault("template", {})
        pod_spec = template.setdefault("spec", {})
        name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
        if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
            raise _invalid(rtype, name, [(
                "spec.template.spec.restartPolicy",
                'Required value: valid values: "OnFailure", "Never"')])
        if not pod_spec.get("containers"):
            raise _invalid(rtype, name, [("spec.template.spec.containers", "Required value")])
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        selector = {"batch.kubernetes.io/controller-uid": uid}
        spec.setdefault("selector", {"matchLabels": selector})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                       "batch.kubernetes.io/job-name": name, "job-name": name})
        pod_spec.setdefault("terminationGracePeriodSeconds", 30)

    def _update(self, rtype: ResourceType, ns: str | None, name: str, new: JSON,
                sub: str | None, *, put: bool) -> JSON:
        old = self._get(rtype, ns, name)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            if put:
                raise ApiFailure(400, "metadata must be an object")
            meta = new["metadata"] = {}
        if meta.get("name", name) != name:
            raise ApiFailure(400, f"the name of the object ({meta.get('name')}) does not match "
                             f"the name on the URL ({name})")
        if rtype.namespaced and meta.get("namespace", ns) != ns:
            raise ApiFailure(400, "the namespace of the provided object does not match the "
                             "namespace sent on the request")
        sent_rv = meta.get("resourceVersion")
        if sent_rv not in (None, "") and str(sent_rv) != old["metadata"]["resourceVersion"]:
            raise _conflict(rtype, name)
        if sub == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = copy.deepcopy(new["status"])
            else:
                merged.pop("status", None)
        elif sub == "resize":
            merged = self._resize(rtype, old, new)
        elif sub is None:
            merged = copy.deepcopy(new)
            merged["apiVersion"], merged["kind"] = rtype.api_version, rtype.kind
            if rtype.has_status:
                if "status" in old:
                    merged["status"] = copy.deepcopy(old["status"])
                else:
                    merged.pop("status", None)
            merged["metadata"] = self._merge_metadata(rtype, old, merged["metadata"])
            if rtype.kind == "Pod":
                self._check_pod_update(rtype, old, merged)
        else:
            raise ApiFailure(405, f"{sub} cannot be written in the test API server")
        if rtype.kind == "Namespace" and sub is None:
            merged["spec"] = copy.deepcopy(old.get("spec", {}))
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        merged = self._admission(rtype, merged, old)
        if merged == old:
            return old  # a no-op: no new resourceVersion, no event (as a real server)
        if rtype.generation and self._content(merged) != self._content(old):
            merged["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        committed = self._commit(rtype, merged, "MODIFIED", old)
        self._maybe_remove(rtype, committed)
        return committed

    @staticmethod
    def _content(obj: JSON) -> JSON:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    def _merge_metadata(self, rtype: ResourceType, old: JSON, meta: JSON) -> JSON:
        old_meta = old["metadata"]
        meta = copy.deepcopy(meta)
        for server_field in ("uid", "creationTimestamp", "name", "namespace", "generation",
                             "deletionTimestamp", "deletionGracePeriodSeconds"):
            if server_field in old_meta:
                meta[server_field] = old_meta[server_field]
            else:
                meta.pop(server_field, None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise _invalid(rtype, old_meta["name"], [(
                    "metadata.finalizers", "Forbidden: no new finalizers can be added if the "
                    "object is being deleted, found new finalizers " + json.dumps(
                        sorted(added)))])
        for empty in ("labels", "annotations", "finalizers", "ownerReferences"):
            if empty in meta and not meta[empty]:
                del meta[empty]
        return meta

    def _check_pod_update(self, rtype: ResourceType, old: JSON, new: JSON) -> None:
        old_spec, spec = old.get("spec") or {}, copy.deepcopy(new.get("spec") or {})
        _mask_containers(spec, old_spec, ("image",))
        for name in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
            if name in old_spec:
                spec[name] = old_spec[name]
            else:
                spec.pop(name, None)
        old_tolerations = old_spec.get("tolerations") or []
        if all(t in (spec.get("tolerations") or []) for t in old_tolerations):
            if "tolerations" in old_spec:
                spec["tolerations"] = old_spec["tolerations"]
            else:
                spec.pop("tolerations", None)
        if spec != old_spec:
            raise _invalid(rtype, old["metadata"]["name"],
                           [("spec", f"Forbidden: {_POD_UPDATE_FORBIDDEN}")])

    def _resize(self, rtype: ResourceType, old: JSON, new: JSON) -> JSON:
        if rtype.kind != "Pod":
            raise ApiFailure(404, "the server could not find the requested resource")
        name = old["metadata"]["name"]
        old_spec = old.get("spec") or {}
        spec = copy.deepcopy(new.get("spec") or {})
        masked = copy.deepcopy(spec)
        _mask_containers(masked, old_spec, ("resources", "resizePolicy"))
        rest_changed = {k: v for k, v in new.items() if k not in ("spec", "metadata", "status")
                        } != {k: v for k, v in old.items()
                              if k not in ("spec", "metadata", "status")}
        if masked != old_spec or rest_changed or [c.get("name") for c in spec.get(
                "containers") or []] != [c.get("name") for c in old_spec.get("containers") or []]:
            raise _invalid(rtype, name, [(
                "spec", "Forbidden: only cpu and memory resources are mutable")])
        if (old.get("status") or {}).get("phase") in _TERMINAL_PHASES:
            raise _invalid(rtype, name, [("spec", "Forbidden: pod is terminated")])
        # ValidatePodResize (pkg/apis/core/validation): every error at once, in its order.
        causes: list[tuple[str, str]] = []
        if _qos_class(spec) != _qos_class(old_spec):
            causes.append(("spec", f'Invalid value: "{_qos_class(old_spec)}": Pod QOS Class '
                                   "may not change as a result of resizing"))
        olds = {c.get("name"): c for c in old_spec.get("containers") or []}
        for index, container in enumerate(spec.get("containers") or []):
            path = f"spec.containers[{index}].resources"
            before = olds[container.get("name")].get("resources") or {}
            after = container.get("resources") or {}
            # The server defaults a request left out to its limit (SetDefaults_Pod), before and
            # after the patch; a limit or request that was there may not go (1.33 and 1.34).
            if set(_effective_requests(before)) - set(_effective_requests(after)):
                causes.append((f"{path}.requests",
                               "Forbidden: resource requests cannot be removed"))
            if set(_set_values(before.get("limits"))) - set(_set_values(after.get("limits"))):
                causes.append((f"{path}.limits", "Forbidden: resource limits cannot be removed"))
        allowed = self.memory_limit_decrease_allowed
        if allowed is None:
            allowed = int(self.kubernetes_version.split(".")[1]) >= 34
        if not allowed:
            for index, container in enumerate(spec.get("containers") or []):
                before = ((olds[container.get("name")].get("resources") or {}).get("limits")
                          or {}).get("memory")
                after = ((container.get("resources") or {}).get("limits") or {}).get("memory")
                restart = any(p.get("resourceName") == "memory"
                              and p.get("restartPolicy") == "RestartContainer"
                              for p in container.get("resizePolicy") or [])
                if before and after and not restart and _quantity_bytes(
                        after) < _quantity_bytes(before):
                    causes.append((
                        f"spec.containers[{index}].resources.limits.memory",
                        "Forbidden: memory limits cannot be decreased unless resizePolicy is "
                        "RestartContainer"))
        if causes:
            raise _invalid(rtype, name, causes)
        merged = copy.deepcopy(old)
        merged["spec"] = spec
        return merged

    def _bind(self, rtype: ResourceType, ns: str | None, name: str, body: JSON) -> JSON:
        pod = self._get(rtype, ns, name)
        target = (body.get("target") or {}).get("name")
        if not target:
            raise _invalid(rtype, name, [("target.name", "Required value")])
        if (pod.get("spec") or {}).get("nodeName"):
            raise ApiFailure(409, f"pod {name} is already assigned to node "
                             f"\"{pod['spec']['nodeName']}\"", "Conflict")
        merged = copy.deepcopy(pod)
        merged["spec"]["nodeName"] = target
        self._commit(rtype, merged, "MODIFIED", pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201}

    # -- deletion and garbage collection ----------------------------------------------------
    def _delete_collection(self, rtype: ResourceType, ns: str | None, params: Any,
                           body: Any) -> JSON:
        selector = self._selector(rtype, params)
        items = []
        for obj in list(self._select(rtype, ns, selector)):
            meta = obj["metadata"]
            with contextlib.suppress(ApiFailure):
                items.append(copy.deepcopy(self._delete(
                    rtype, meta.get("namespace"), meta["name"], body or {})))
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    def _delete(self, rtype: ResourceType, ns: str | None, name: str, options: JSON) -> JSON:
        obj = self._get(rtype, ns, name)
        meta = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") not in (None, meta["uid"]):
            raise ApiFailure(409, f"Precondition failed: UID in precondition: "
                             f"{preconditions['uid']}, UID in object meta: {meta['uid']}",
                             "Conflict")
        if preconditions.get("resourceVersion") not in (None, meta["resourceVersion"]):
            raise _conflict(rtype, name)
        if options.get("dryRun"):
            return obj
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            policy = "Orphan" if rtype.kind == "Job" else "Background"  # batch/v1 default
        if policy not in ("Orphan", "Background", "Foreground"):
            raise _invalid(rtype, name, [("propagationPolicy", f"Unsupported value: {policy}")])
        grace = options.get("gracePeriodSeconds")
        if policy == "Orphan":
            self._orphan(meta["uid"])
        if rtype.kind == "Namespace":
            return self._terminate_namespace(rtype, obj)
        new = copy.deepcopy(obj)
        new_meta = new["metadata"]
        if rtype.kind == "Pod":
            if grace is None:
                grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            graceful = (self.pods_need_kubelet and int(grace) > 0
                        and (obj.get("status") or {}).get("phase") not in _TERMINAL_PHASES
                        and (obj.get("spec") or {}).get("nodeName"))
            grace = int(grace) if graceful else 0
            current = new_meta.get("deletionGracePeriodSeconds")
            if current is None or grace < int(current):
                new_meta["deletionGracePeriodSeconds"] = grace
                new_meta["deletionTimestamp"] = _timestamp(
                    _now() + datetime.timedelta(seconds=grace))
        elif not new_meta.get("deletionTimestamp"):
            new_meta["deletionTimestamp"] = _timestamp()
            new_meta["deletionGracePeriodSeconds"] = 0
        if policy == "Foreground" and self._dependents(meta["uid"]):
            finalizers = new_meta.setdefault("finalizers", [])
            if FOREGROUND not in finalizers:
                finalizers.append(FOREGROUND)
        if self._removable(rtype, new):  # nothing holds it: gone at once, one DELETED event
            self._commit(rtype, new, "DELETED", obj)
            self._collect_garbage()
            return new
        if new != obj:
            new = self._commit(rtype, new, "MODIFIED", obj)
        if policy == "Foreground":
            for dep_type, dependent in self._dependents(meta["uid"]):
                dep_meta = dependent["metadata"]
                with contextlib.suppress(ApiFailure):
                    self._delete(dep_type, dep_meta.get("namespace"), dep_meta["name"],
                                 {"propagationPolicy": "Foreground"})
        self._collect_garbage()
        current = self._store.get((rtype.key, ns, name))
        if current is not None and self._maybe_remove(rtype, current):
            return current
        return current if current is not None else new

    def _maybe_remove(self, rtype: ResourceType, obj: JSON) -> bool:
        """Remove an object whose deletion nothing holds any longer; then collect garbage."""
        meta = obj["metadata"]
        key = (rtype.key, meta.get("namespace") if rtype.namespaced else None, meta["name"])
        if self._store.get(key) is not obj or not self._removable(rtype, obj):
            return False  # gone already, changed since, or still held
        self._commit(rtype, copy.deepcopy(obj), "DELETED", obj)
        self._collect_garbage()
        return True

    def _removable(self, rtype: ResourceType, obj: JSON) -> bool:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        if int(meta.get("deletionGracePeriodSeconds") or 0) > 0:
            return False  # a pod the kubelet has yet to stop
        return not (rtype.kind == "Namespace" and self._namespace_contents(meta["name"]))

    def _dependents(self, uid: str) -> list[tuple[ResourceType, JSON]]:
        return [(self._types[key], obj) for (key, _, _), obj in list(self._store.items())
                if any(ref.get("uid") == uid
                       for ref in obj["metadata"].get("ownerReferences") or [])]

    def _orphan(self, uid: str) -> None:
        for rtype, dependent in self._dependents(uid):
            new = copy.deepcopy(dependent)
            refs = [r for r in new["metadata"]["ownerReferences"] if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                del new["metadata"]["ownerReferences"]
            self._commit(rtype, new, "MODIFIED", dependent)

    def _namespace_contents(self, ns: str) -> list[tuple[ResourceType, JSON]]:
        return [(self._types[key], obj) for (key, obj_ns, _), obj in list(self._store.items())
                if obj_ns == ns and self._types[key].namespaced]

    def _terminate_namespace(self, rtype: ResourceType, obj: JSON) -> JSON:
        name = obj["metadata"]["name"]
        if not obj["metadata"].get("deletionTimestamp"):
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = _timestamp()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["status"] = {"phase": "Terminating"}
            obj = self._commit(rtype, new, "MODIFIED", obj)
        for dep_type, content in self._namespace_contents(name):
            with contextlib.suppress(ApiFailure):
                self._delete(dep_type, name, content["metadata"]["name"],
                             {"propagationPolicy": "Background"})
        self._collect_garbage()
        return self._store.get((rtype.key, None, name), obj)

    def _collect_garbage(self) -> None:
        """Background GC, run to a fixed point after every removal."""
        changed = True
        while changed:
            changed = False
            uids = {obj["metadata"]["uid"] for obj in self._store.values()}
            for (key, ns, name), obj in list(self._store.items()):
                if (key, ns, name) not in self._store:
                    continue
                rtype, meta = self._types[key], obj["metadata"]
                refs = meta.get("ownerReferences") or []
                if refs and not any(ref.get("uid") in uids for ref in refs) and not meta.get(
                        "deletionTimestamp"):
                    with contextlib.suppress(ApiFailure):
                        self._calls.append(Call(GC_IDENTITY, "delete", rtype.group,
                                                rtype.plural, None, ns, name))
                        self._delete(rtype, ns, name, {"propagationPolicy": "Background"})
                    changed = True
                elif (FOREGROUND in (meta.get("finalizers") or [])
                      and not self._dependents(meta["uid"])):
                    new = copy.deepcopy(obj)
                    new["metadata"]["finalizers"] = [
                        f for f in meta["finalizers"] if f != FOREGROUND]
                    if not new["metadata"]["finalizers"]:
                        del new["metadata"]["finalizers"]
                    committed = self._commit(rtype, new, "MODIFIED", obj)
                    self._maybe_remove(rtype, committed)
                    changed = True
                elif (rtype.kind == "Namespace" and meta.get("deletionTimestamp")
                      and self._maybe_remove(rtype, obj)):
                    changed = True

    # -- watch ------------------------------------------------------------------------------
    def _event_for(self, watcher: _Watcher, entry: _Entry) -> JSON | None:
        meta = entry.obj["metadata"]
        if watcher.namespace is not None and meta.get("namespace") != watcher.namespace:
            return None
        if watcher.name is not None and meta.get("name") != watcher.name:
            return None
        now = watcher.selector.matches(entry.obj)
        before = entry.old is not None and watcher.selector.matches(entry.old)
        kind = entry.type
        if kind == "MODIFIED":
            if now and not before:
                kind = "ADDED"
            elif before and not now:
                kind = "DELETED"
            elif not now:
                return None
        elif not now:
            return None
        return {"type": kind, "object": entry.obj}

    async def _watch(self, request: rendering.Request,
                     parsed: _Parsed) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        params = request.params
        selector = self._selector(parsed.rtype, params)
        name = parsed.name
        if params.get("fieldSelector", "").startswith("metadata.name=") and name is None:
            name = None  # the selector filters already
        since = params.get("resourceVersion") or ""
        watcher = _Watcher(parsed.rtype.key, parsed.namespace, name, selector,
                           asyncio.get_running_loop(), asyncio.Queue())
        initial: list[JSON] = []
        with self._state:
            if since in ("", "0"):
                for obj in self._select(parsed.rtype, parsed.namespace, selector):
                    if name is None or obj["metadata"]["name"] == name:
                        initial.append({"type": "ADDED", "object": obj})
            else:
                try:
                    start = int(since)
                except ValueError:
                    raise ApiFailure(400, f"invalid resource version {since!r}") from None
                oldest = self._history[0].rv if self._history else self._rv + 1
                if start < oldest - 1 and start < self._rv:
                    initial.append({"type": "ERROR", "object": ApiFailure(
                        410, f"too old resource version: {start} ({oldest - 1})",
                        "Expired").status()})
                else:
                    for entry in self._history:
                        if entry.rv > start and entry.key == parsed.rtype.key:
                            event = self._event_for(watcher, entry)
                            if event is not None:
                                initial.append(event)
            if params.get("sendInitialEvents") == "true":
                initial.append({"type": "BOOKMARK", "object": {
                    "kind": parsed.rtype.kind, "apiVersion": parsed.rtype.api_version,
                    "metadata": {"resourceVersion": str(self._rv), "annotations": {
                        "k8s.io/initial-events-end": "true"}}}})
            if not any(e["type"] == "ERROR" for e in initial):
                self._watchers.append(watcher)
        response = aiohttp.web.StreamResponse(status=200, headers={
            "Content-Type": "application/json", "Cache-Control": "no-cache"})
        await response.prepare(raw)
        loop = asyncio.get_running_loop()
        timeout = params.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        try:
            for event in initial:
                await response.write(json.dumps(event).encode() + b"\n")
            while watcher in self._watchers:
                wait = 1.0 if deadline is None else min(1.0, deadline - loop.time())
                if wait <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if raw.transport is None or raw.transport.is_closing():
                        break
                    continue
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            with self._state, contextlib.suppress(ValueError):
                self._watchers.remove(watcher)
        return response

    def close_watches(self) -> None:
        """End every open watch stream (the server is stopping)."""
        with self._state:
            watchers, self._watchers = list(self._watchers), []
        for watcher in watchers:
            with contextlib.suppress(RuntimeError):
                watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, None)


# -- the HTTP server in a thread ----------------------------------------------------------------
class EmulatorServer:
    """``KubeEmulator`` served on ``http://127.0.0.1:<free port>`` from a background thread."""

    def __init__(self, emulator: KubeEmulator | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.emulator = emulator if emulator is not None else KubeEmulator()
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("the test API server did not start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self.emulator.close_watches()
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.emulator:
            loop = asyncio.get_running_loop()

            def request(message: Any, payload: Any, protocol: Any, writer: Any,
                        task: Any) -> aiohttp.web.BaseRequest:
                # Bodies up to the real server's 3 MiB (aiohttp's own default is 1 MiB: a
                # ConfigMap at the 1 MiB limit, base64-encoded, is larger).
                return aiohttp.web.BaseRequest(message, payload, protocol, writer, task, loop,
                                               client_max_size=MAX_REQUEST_BYTES)
            server = aiohttp.web.Server(self.emulator, request_factory=request)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, self.host, self.port)
            await site.start()
            sockets = getattr(site._server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                self.emulator.close_watches()
                await runner.cleanup()


def write_kubeconfig(path: str | Path, url: str, token: str, *,
                     namespace: str = "default") -> Path:
    """A kubeconfig for one identity (bearer token) on ``url`` (plain http)."""
    path = Path(path)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url,
                                                      "insecure-skip-tls-verify": True}}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "user",
                                                      "namespace": namespace}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


# -- helpers for tests ---------------------------------------------------------------------------
def _api_for(body: JSON) -> Any:
    from pggit_chaos.kube.client import Api

    api_version, kind = body["apiVersion"], body["kind"]
    group, version = api_version.split("/") if "/" in api_version else ("", api_version)
    for rtype in DEFAULT_RESOURCES:
        if (rtype.group, rtype.version, rtype.kind) == (group, version, kind):
            return Api(group, version, rtype.plural, rtype.namespaced)
    raise KeyError(f"{api_version} {kind} is not served by the test API server")


def apply_manifest(client: Any, body: JSON) -> JSON:
    """Create or update like ``kubectl apply`` (simplified: a merge patch of the manifest)."""
    from pggit_chaos.kube.client import ApiError

    api = _api_for(body)
    meta = body.get("metadata") or {}
    ns = meta.get("namespace", "default") if api.namespaced else None
    try:
        result: JSON = client.create(api, ns, body)
        return result
    except ApiError as exc:
        if exc.status != 409:
            raise
    patch = {k: v for k, v in body.items() if k != "status"}
    result = client.patch(api, ns, meta["name"], patch, patch_type="merge")
    return result


def namespace(client: Any, name: str, labels: dict[str, str] | None = None) -> JSON:
    """Make (or relabel) a namespace."""
    return apply_manifest(client, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name, "labels": dict(labels or {})}})


def runner_namespace(client: Any, name: str, labels: dict[str, str] | None = None,
                     account: str = "pggit-chaos-runner") -> JSON:
    """Make (or relabel) a namespace with the runner's ServiceAccount in it, as the chart
    makes each namespace of its ``namespaces`` value."""
    made = namespace(client, name, labels)
    apply_manifest(client, {"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": account, "namespace": name}})
    return made


def iter_events(emulator: KubeEmulator, namespace_name: str | None = None) -> Iterator[JSON]:
    """Core v1 and events.k8s.io/v1 Events the emulator holds, oldest first."""
    found: Iterable[JSON] = [*emulator.list_objects("v1/events", namespace_name),
                             *emulator.list_objects("events.k8s.io/v1/events", namespace_name)]
    yield from sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))
