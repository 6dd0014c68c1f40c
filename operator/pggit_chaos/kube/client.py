"""A small synchronous Kubernetes API client: JSON in, JSON out, errors with their HTTP status.

Used by the runner Job (the Kubernetes substrate, its faults, status patches) and by the
operator's handlers (through ``asyncio.to_thread``). Configuration comes from the ``kubernetes``
package's loaders: the pod's service account in a cluster, else ``$KUBECONFIG`` or
``~/.kube/config``. Objects stay plain dicts, as the builders make them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from pggit_chaos.errors import ChaosError, ConfigurationError
from pggit_chaos.kube import names

__all__ = [
    "CONFIG_MAPS",
    "EVENTS",
    "EXPERIMENTS",
    "JOBS",
    "NAMESPACES",
    "NETWORK_POLICIES",
    "PODS",
    "SCHEDULES",
    "SERVICE_ACCOUNTS",
    "Api",
    "ApiError",
    "ApiUnreachable",
    "KubeClient",
    "PatchType",
    "failed_create",
]


@dataclass(frozen=True)
class Api:
    """One resource of the API: group ('' for core), version, plural, namespaced."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """``/api/v1/namespaces/ns/pods/name/resize`` and the like."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        parts = [base]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


PODS = Api("", "v1", "pods")
CONFIG_MAPS = Api("", "v1", "configmaps")
EVENTS = Api("", "v1", "events")
NAMESPACES = Api("", "v1", "namespaces", namespaced=False)
SERVICE_ACCOUNTS = Api("", "v1", "serviceaccounts")
JOBS = Api("batch", "v1", "jobs")
NETWORK_POLICIES = Api("networking.k8s.io", "v1", "networkpolicies")
EXPERIMENTS = Api(*names.EXPERIMENTS)
SCHEDULES = Api(*names.SCHEDULES)

PatchType = Literal["merge", "json", "strategic"]
_PATCH_CONTENT = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class ApiError(ChaosError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str) -> None:
        self.status = status
        self.reason = reason
        self.api_message = message
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class ApiUnreachable(ApiError):
    """No answer from the API server (refused, timed out, TLS failed): one line naming it."""

    def __init__(self, host: str, cause: str, method: str, path: str) -> None:
        ChaosError.__init__(
            self,
            f"cannot reach the Kubernetes API server {host} ({cause}): check that the cluster "
            "is running and that the kubeconfig's current context points at it",
        )
        self.status, self.reason, self.api_message = 0, "Unreachable", cause
        self.method, self.path = method, path


#: Where a service account's namespace is mounted in a pod.
_POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>:?\s*")


def _cause(exc: BaseException) -> str:
    """Why a connection failed, in words: ``connection refused``, ``timed out``."""
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the real one
    if isinstance(reason, BaseException):
        exc = reason
    text = str(exc).rpartition("Failed to establish a new connection: ")[2]
    text = _OBJECT_REPR.sub("", _ERRNO.sub("", text)).strip(" .()'\"")
    return " ".join(text.split())[:200].lower() or type(exc).__name__


def _no_kubeconfig(kubeconfig: str | None) -> str:
    """The one-line error when no configuration was found, naming every place looked at."""
    if kubeconfig is not None:
        return f"no kubeconfig at --kubeconfig {kubeconfig} (no such file)"
    home = Path("~/.kube/config").expanduser()
    env = os.environ.get("KUBECONFIG")
    tried = (
        [f"$KUBECONFIG={env} (no such file; ~/.kube/config is not read when KUBECONFIG is set)"]
        if env else ["$KUBECONFIG (not set)", f"~/.kube/config ({home}: no such file)"]
    )
    tried.append("in-cluster service account (KUBERNETES_SERVICE_HOST not set: not in a pod)")
    return ("no Kubernetes configuration found; looked at " + ", ".join(tried)
            + ": set KUBECONFIG or pass --kubeconfig FILE")


class KubeClient:
    """JSON requests against one API server with one identity."""

    def __init__(self, configuration: Any, namespace: str = "default") -> None:
        from kubernetes.client import rest

        self.configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        #: The namespace of the kubeconfig's context (or the pod's), as kubectl defaults to.
        self.namespace = namespace
        self._rest = rest.RESTClientObject(configuration)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None,
                         context: str | None = None) -> KubeClient:
        """In a pod: its service account; else ``kubeconfig``, ``$KUBECONFIG``, ~/.kube/config.

        Raises :class:`ConfigurationError` naming every place looked at when none is found.
        """
        from kubernetes import client, config

        configuration = client.Configuration()
        namespace = "default"
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
                if _POD_NAMESPACE.is_file():
                    namespace = _POD_NAMESPACE.read_text().strip() or namespace
                return cls(configuration, namespace)
            files = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            if not any(Path(f).expanduser().is_file() for f in files.split(os.pathsep) if f):
                raise ConfigurationError(_no_kubeconfig(kubeconfig))
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=files, context=context, client_configuration=configuration)
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=files)
            chosen = next((c for c in contexts or [] if c.get("name") == context), active)
            namespace = str(((chosen or {}).get("context") or {}).get("namespace") or namespace)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise ConfigurationError(f"unusable Kubernetes configuration: {exc}") from None
        return cls(configuration, namespace)

    # -- requests -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, content_type: str = "application/json",
                timeout: float = 30.0) -> Any:
        """One request; the decoded JSON answer (None for an empty one); raises ApiError."""
        url = self.host + path
        params = {key: value for key, value in (query or {}).items() if value is not None}
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json", "Content-Type": content_type,
                   "User-Agent": "pggit-chaos"}
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = self._rest.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers,
                body=None if body is None else body, _request_timeout=timeout)
        except ApiException as exc:  # the rest layer raises on some statuses
            raise ApiError(exc.status or 0, exc.reason or "", str(exc.body or ""), method,
                           path) from None
        except (HTTPError, OSError) as exc:  # refused, timed out, TLS: no answer at all
            raise ApiUnreachable(self.host, _cause(exc), method, path) from None
        except Exception as exc:  # anything else the rest layer raises, still one line
            raise ApiError(0, type(exc).__name__, str(exc), method, path) from None
        data = response.read() if hasattr(response, "read") else response.data
        text = data.decode() if isinstance(data, bytes) else str(data or "")
        status = int(response.status)
        if status >= 400:
            reason, message = str(getattr(response, "reason", "") or ""), text
            try:
                decoded = json.loads(text)
                reason = str(decoded.get("reason", reason))
                message = str(decoded.get("message", text))
            except (ValueError, AttributeError):
                pass
            raise ApiError(status, reason, message, method, path)
        return json.loads(text) if text.strip() else None

    def get(self, api: Api, namespace: str | None, name: str,
            subresource: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", api.path(namespace, name, subresource))
        return result

    def find(self, api: Api, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.get(api, namespace, name)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, api: Api, namespace: str | None = None, *,
             label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        result = self.request("GET", api.path(namespace),
                              query={"labelSelector": label_selector,
                                     "fieldSelector": field_selector})
        items: list[dict[str, Any]] = list((result or {}).get("items") or [])
        return items

    def create(self, api: Api, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", api.path(namespace), body)
        return result

    def patch(self, api: Api, namespace: str | None, name: str, body: Any, *,
              subresource: str | None = None, patch_type: PatchType = "merge") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", api.path(namespace, name, subresource), body,
            content_type=_PATCH_CONTENT[patch_type])
        return result

    def delete(self, api: Api, namespace: str | None, name: str, *,
               grace_period_seconds: int | None = None,
               propagation: Literal["Background", "Foreground", "Orphan"] | None = "Background",
               ) -> dict[str, Any] | None:
        """Delete; None when it was already gone (404)."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if propagation is not None:
            body["propagationPolicy"] = propagation
        try:
            result: dict[str, Any] | None = self.request("DELETE", api.path(namespace, name),
                                                         body)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return result


def post_event(client: KubeClient, body: Mapping[str, Any], reason: str, type_: str,
               message: str, key: str, now: datetime, component: str) -> None:
    """An Event on ``body`` named from ``key``: posting the same key twice is a no-op (409)."""
    from pggit_chaos.kube import builders

    namespace = str((body.get("metadata") or {}).get("namespace") or "default")
    suffix = re.sub(r"[^a-z0-9-]+", "-", key.lower())[:63].strip("-") or "event"
    event = builders.event(body, reason, message, type_, now, component=component,
                           name_suffix=suffix)
    try:
        client.create(EVENTS, namespace, event)
    except ApiError as exc:
        if not exc.conflict:
            raise


def failed_create(client: KubeClient, job: dict[str, Any]) -> str | None:
    """The message of the Job controller's latest ``FailedCreate`` Event on ``job`` (it could
    not create the Job's pod: a ServiceAccount missing, a quota, PodSecurity), else None.

    A Job controller records these as Events only and sets no condition for them.
    """
    meta = job.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    found = [event for event in client.list(
                EVENTS, namespace,
                field_selector=f"involvedObject.kind=Job,involvedObject.name={name},"
                               "reason=FailedCreate")
             if event.get("reason") == "FailedCreate"
             and (event.get("involvedObject") or {}).get("name") == name
             and (event.get("involvedObject") or {}).get("uid") in (None, meta.get("uid"))]
    if not found:
        return None
    latest = max(found, key=lambda e: (str(e.get("lastTimestamp") or e.get("eventTime") or ""),
                                       int(e.get("count") or 1)))
    return str(latest.get("message") or "no message")
