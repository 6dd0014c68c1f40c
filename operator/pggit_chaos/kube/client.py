"""A small synchronous Kubernetes API client: JSON in, JSON out, errors with their HTTP status.

Used by the runner Job (the Kubernetes substrate, its faults, status patches) and by the
operator's handlers (through ``asyncio.to_thread``). Configuration comes from the ``kubernetes``
package's loaders: the pod's service account in a cluster, else ``$KUBECONFIG`` or
``~/.kube/config``. Objects stay plain dicts, as the builders make them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
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
    "SERVICE_ACCOUNTS",
    "Api",
    "ApiError",
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


class KubeClient:
    """JSON requests against one API server with one identity."""

    def __init__(self, configuration: Any) -> None:
        from kubernetes.client import rest

        self.configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        self._rest = rest.RESTClientObject(configuration)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None,
                         context: str | None = None) -> KubeClient:
        """In a pod: its service account; else ``kubeconfig``, ``$KUBECONFIG``, ~/.kube/config."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context,
                                        client_configuration=configuration)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise ConfigurationError(f"no Kubernetes configuration: {exc}") from None
        return cls(configuration)

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

        try:
            response = self._rest.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers,
                body=None if body is None else body, _request_timeout=timeout)
        except ApiException as exc:  # the rest layer raises on some statuses
            raise ApiError(exc.status or 0, exc.reason or "", str(exc.body or ""), method,
                           path) from None
        except Exception as exc:  # urllib3 connection errors and the like
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
