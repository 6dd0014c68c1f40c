"""``primary-failover`` in a cluster: delete the pod carrying the primary role label.

Built by :class:`pggit_chaos.kube.substrate.KubeSubstrate`, which narrows the selected pods to
those labelled ``primaryFailover.primaryLabel`` (CloudNativePG ``cnpg.io/instanceRole=primary``,
Patroni/Zalando ``spilo-role=master``). Promoting a standby is the user's PostgreSQL operator's
job, not ours: this fault only deletes the primary pod (the verbs of ``pod-kill``, nothing
more) and reads what followed from the API and the database. The workload's DSN (the Secret)
should name the read-write Service, which the user's operator points at the new primary;
recovery is "a new primary accepts writes and pgGit is healthy" (the engine's health probe
through that DSN, plus a write this fault's evidence makes). Its undo is pod-kill's: nothing
to revert, the pods' controller recreates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.kube import names
from pggit_chaos.kube.client import PODS, KubeClient

__all__ = ["PrimaryPodDelete", "has_label", "parse_label"]


def parse_label(label: str) -> tuple[str, str]:
    """``"cnpg.io/instanceRole=primary"`` as ``("cnpg.io/instanceRole", "primary")``."""
    key, sep, value = label.partition("=")
    if not sep or not key:
        raise FaultError(f"primaryLabel {label!r} is not key=value")
    return key, value


def has_label(pod: Mapping[str, Any], label: str) -> bool:
    key, value = parse_label(label)
    labels = dict(pod.get("metadata", {}).get("labels") or {})
    return key in labels and str(labels[key]) == value


def _uid(pod: Mapping[str, Any] | None) -> str:
    return "" if pod is None else str(pod.get("metadata", {}).get("uid", ""))


class PrimaryPodDelete:
    """Delete the primary pod (grace 0); the user's operator promotes a standby."""

    type = "primary-failover"
    recovery_from_injection = True

    def __init__(self, client: KubeClient, namespace: str, pods: Sequence[Mapping[str, Any]],
                 candidates: Sequence[Mapping[str, Any]], label: str, dsn: str) -> None:
        self.client = client
        self.namespace = namespace
        self.label = label
        self.dsn = dsn
        #: The primary pod(s) to delete, and every selected pod (where a new primary appears).
        self.pods = [str(p["metadata"]["name"]) for p in pods]
        self.candidates = [str(p["metadata"]["name"]) for p in candidates]
        self._uids_before = {str(p["metadata"]["name"]): _uid(p) for p in pods}
        self._deleted: list[str] = []
        self._intent = FaultIntent(
            type=self.type, target=", ".join(f"pod {namespace}/{p}" for p in self.pods),
            undo={"kind": names.UNDO_POD_KILL, "namespace": namespace, "pods": self.pods},
            description=f"delete the primary pod ({label}) with grace 0; the PostgreSQL "
                        "operator promotes a standby")

    def check(self) -> None:
        if len(self.pods) != 1:
            raise FaultError(f"primary-failover: {len(self.pods)} selected pods carry {self.label}"
                             ": exactly one primary expected")

    def intent(self) -> FaultIntent:
        return self._intent

    def plan_lines(self) -> list[str]:
        return [f"delete pod {self.namespace}/{pod} ({self.label}) with grace 0"
                for pod in self.pods]

    def inject(self) -> None:
        for pod in self.pods:
            if self.client.delete(PODS, self.namespace, pod, grace_period_seconds=0) is not None:
                self._deleted.append(pod)

    def revert(self) -> None:
        """Nothing to undo: the user's operator promotes and recreates."""

    def _primaries_now(self) -> list[tuple[str, str]]:
        found = []
        for name in self.candidates:
            pod = self.client.find(PODS, self.namespace, name)
            if pod is not None and has_label(pod, self.label):
                found.append((name, _uid(pod)))
        return found

    def _writable(self) -> tuple[bool, str]:
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                 application_name="pggit-chaos-failover") as conn:
                row = conn.execute("SELECT pg_is_in_recovery(), txid_current()").fetchone()
        except psycopg.Error as exc:
            return False, str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return bool(row is not None and not row[0]), "a write was accepted"

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The primary pod was deleted, a pod carries the primary label again (another pod, or
        the same name recreated: a new uid) and the database behind the DSN takes a write."""
        primaries = self._primaries_now()
        new = [(name, uid) for name, uid in primaries if uid != self._uids_before.get(name)]
        writable, detail = self._writable()
        figures: dict[str, Figure] = {
            "pods_deleted": len(self._deleted),
            "primary_before": ", ".join(self.pods),
            "primary_after": ", ".join(name for name, _ in primaries) or "none",
        }
        bit = bool(self._deleted) and bool(new) and writable
        if bit:
            summary = (f"primary pod {', '.join(self._deleted)} deleted; {new[0][0]} now "
                       f"carries {self.label}; the database behind the DSN takes writes; "
                       f"workload: {window.describe()}")
        else:
            why = ("nothing was deleted" if not self._deleted
                   else f"no new pod carries {self.label}" if not new
                   else f"the database takes no write: {detail}")
            summary = f"primary-failover did not bite: {why}"
        return FaultEvidence(bit, summary, figures)
