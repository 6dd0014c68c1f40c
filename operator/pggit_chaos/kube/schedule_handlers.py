"""The operator's work on ``PgGitChaosSchedule`` objects, without kopf: create the runs that
are due, stop or skip on overlap, prune the history, keep the status.

Called by :mod:`pggit_chaos.kube.operator` (a timer and an event handler per schedule, and the
experiment handler when a run changes) through ``asyncio.to_thread``. What to do is decided by
the pure :func:`pggit_chaos.kube.schedules.decide` from the schedule's status and its runs, so
an operator restarted after an hour makes up the latest missed start exactly as one that never
stopped. Kept in memory only to save API calls: a lock per schedule, what of each schedule its
last reconcile saw (so that its own status patches, seen again by the watch, cause none) and
which runs' ends have been reconciled (a finished run's later events cause none).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.kube import names
from pggit_chaos.kube.client import EXPERIMENTS, SCHEDULES, ApiError, KubeClient, post_event
from pggit_chaos.kube.schedules import TERMINAL, decide, rfc3339, run_manifest, run_of
from pggit_chaos.metrics import parse_time
from pggit_chaos.spec.schedule import PAUSE_ANNOTATION, SCHEDULE_LABEL, load_schedule_object

__all__ = ["COMPONENT", "ScheduleHandlers", "runs_of", "schedule_of_run"]

COMPONENT = "pggit-chaos-operator"
_log = logging.getLogger("pggit_chaos.operator.schedules")
Body = dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _meta(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _shape(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a schedule a reconcile acts on, besides its status (which it writes itself)."""
    meta = _meta(body)
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    assert isinstance(annotations, dict)
    return (meta.get("uid"), meta.get("generation"), annotations.get(PAUSE_ANNOTATION),
            meta.get("deletionTimestamp"))


def _run_key(body: Mapping[str, Any]) -> tuple[str, str]:
    status = body.get("status") if isinstance(body.get("status"), dict) else {}
    assert isinstance(status, dict)
    return str(_meta(body).get("uid") or ""), str(status.get("runId") or "")


def schedule_of_run(body: Mapping[str, Any]) -> str | None:
    """The name of the schedule an experiment is a run of (its controller owner), else None."""
    for ref in _meta(body).get("ownerReferences") or []:
        if (isinstance(ref, dict) and ref.get("controller") is True
                and ref.get("kind") == "PgGitChaosSchedule" and ref.get("name")):
            return str(ref["name"])
    return None


def runs_of(client: KubeClient, namespace: str, name: str, uid: str) -> list[Body]:
    """The experiments the schedule ``name`` (``uid``) owns: labelled with its name, owned by
    its uid (not the runs of an earlier schedule of the same name)."""
    runs = []
    for body in client.list(EXPERIMENTS, namespace,
                            label_selector=names.selector({SCHEDULE_LABEL: name})):
        meta = _meta(body)
        if (meta.get("labels") or {}).get(SCHEDULE_LABEL) != name:
            continue
        owners = [ref.get("uid") for ref in meta.get("ownerReferences") or []
                  if isinstance(ref, dict)]
        if uid not in owners:
            continue  # a run of an earlier schedule of the same name, or not a run
        runs.append(body)
    return runs


class ScheduleHandlers:
    """The schedules' work on one API server."""

    def __init__(self, client: KubeClient, *, clock: Callable[[], datetime] = _now) -> None:
        self.client = client
        self.clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        #: The schedules the watch has shown, (namespace, name) -> latest body.
        self._known: dict[tuple[str, str], Body] = {}
        #: (namespace, name) -> :func:`_shape` of the body the last reconcile worked on.
        self._reconciled: dict[tuple[str, str], tuple[Any, ...]] = {}
        #: (uid, run id) of the finished runs whose schedule has been reconciled since.
        self._ended: set[tuple[str, str]] = set()

    def event_needs_reconcile(self, body: Mapping[str, Any]) -> bool:
        """A watch event of a schedule is worth a reconcile: the schedule is new to this
        operator, or its spec, pause annotation or deletion changed since its last reconcile;
        not when only its status did (the status patches of that reconcile come back as
        events). Due starts come from the once-a-second loop, run ends from the runs."""
        meta = _meta(body)
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._guard:
            return self._reconciled.get(key) != _shape(body)

    def run_needs_reconcile(self, deleted: bool, body: Mapping[str, Any]) -> bool:
        """A watch event of a run is worth reconciling its schedule: the run went, or it is
        finished and its schedule has not been reconciled since (a finished run's later
        events, e.g. its finalizer's removal or kopf's annotations, are not)."""
        key = _run_key(body)
        with self._guard:
            if deleted:
                self._ended = {ended for ended in self._ended if ended[0] != key[0]}
                return True
            status = body.get("status") if isinstance(body.get("status"), dict) else {}
            assert isinstance(status, dict)
            return status.get("phase") in TERMINAL and key not in self._ended

    def run_end_reconciled(self, body: Mapping[str, Any]) -> None:
        """The schedule of this finished run has been reconciled since it finished."""
        with self._guard:
            self._ended.add(_run_key(body))

    def remember(self, body: Body) -> None:
        """The watch saw this schedule body (the due check of :meth:`due_now` reads it)."""
        meta = _meta(body)
        with self._guard:
            self._known[str(meta.get("namespace")), str(meta.get("name"))] = body

    def forget(self, body: Mapping[str, Any]) -> None:
        """The schedule is gone."""
        meta = _meta(body)
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._guard:
            self._known.pop(key, None)
            self._reconciled.pop(key, None)

    def due_now(self) -> list[tuple[str, str]]:
        """(namespace, name) of every known schedule with a start due now."""
        with self._guard:
            bodies = list(self._known.values())
        return [(str(_meta(b)["namespace"]), str(_meta(b)["name"])) for b in bodies
                if self.due(b)]

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one schedule up to date; seconds until its next scheduled time (or None)."""
        with self._lock(namespace, name):
            body = self.client.find(SCHEDULES, namespace, name)
            if body is None or _meta(body).get("deletionTimestamp"):
                return None
            after = self._reconcile(body)
            with self._guard:
                self._reconciled[namespace, name] = _shape(body)
            return after

    def due(self, body: Mapping[str, Any]) -> bool:
        """Whether a start is due for this schedule body (no API call: the timer asks this
        every second and reconciles only when it says yes)."""
        meta = _meta(body)
        status = body.get("status") if isinstance(body.get("status"), dict) else {}
        assert isinstance(status, dict)
        try:
            schedule = load_schedule_object(dict(body), "")
        except InvalidExperiment:
            return False
        if schedule.paused:
            return False
        now = self.clock()
        created = parse_time(meta.get("creationTimestamp")) or now
        return decide(schedule.spec, status, created, now, []).create is not None

    def _reconcile(self, body: Body) -> float | None:
        meta = _meta(body)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        status = body.get("status") if isinstance(body.get("status"), dict) else {}
        assert isinstance(status, dict)
        try:
            schedule = load_schedule_object(body, f"{namespace}/{name}")
        except InvalidExperiment as exc:
            message = f"invalid spec: {'; '.join(exc.lines())}"[:1024]
            if status.get("message") != message:
                self._post(body, "InvalidSpec", "Warning", message,
                           key=f"invalid-{meta.get('generation') or 0}")
                self._patch_status(body, {"message": message})
            return None
        uid = str(meta.get("uid") or "")
        runs = self._runs(namespace, name, uid)
        now = self.clock()
        created = parse_time(meta.get("creationTimestamp")) or now
        decision = decide(schedule.spec, status, created, now, [run_of(r) for r in runs],
                          paused=schedule.paused)
        for run in decision.replace:
            self.client.delete(EXPERIMENTS, namespace, run)
            self._post(body, "RunReplaced", "Normal",
                       f"run {run} stopped (concurrencyPolicy Replace); its fault is reverted",
                       key=f"replaced-{run}")
        for run in decision.prune:
            self.client.delete(EXPERIMENTS, namespace, run)
        patch = dict(decision.status)
        if decision.create is not None:
            manifest = run_manifest(schedule, uid, decision.create)
            run_name = str(manifest["metadata"]["name"])
            try:
                made = self.client.create(EXPERIMENTS, namespace, manifest)
            except ApiError as exc:
                if not exc.conflict:
                    raise
                made = self.client.get(EXPERIMENTS, namespace, run_name)  # made before
            late = (now - decision.create).total_seconds()
            _log.info("%s/%s: run %s for %s created %.2f s after its scheduled time",
                      namespace, name, run_name, rfc3339(decision.create), late)
            patch["active"] = [*patch.get("active", []), {
                "name": run_name, "uid": str(_meta(made).get("uid") or ""),
                "scheduledTime": rfc3339(decision.create)}]
            patch["activeRuns"] = len(patch["active"])
            self._post(body, "RunCreated", "Normal",
                       f"run {run_name} created for {rfc3339(decision.create)}",
                       key=f"run-{run_name.rsplit('-', 1)[-1]}")
        if decision.skipped is not None:
            self._post(body, "RunSkipped", "Normal", decision.message,
                       key=f"skipped-{int(decision.skipped.timestamp()) // 60}")
        if decision.missed is not None:
            self._post(body, "MissedStart", "Warning", decision.message,
                       key=f"missed-{int(decision.missed.timestamp()) // 60}")
        if any(status.get(key) != value for key, value in patch.items()):
            self._patch_status(body, patch)
        if decision.next_time is None:
            return None
        return max(0.0, (decision.next_time - self.clock()).total_seconds())

    def _runs(self, namespace: str, name: str, uid: str) -> list[Body]:
        return runs_of(self.client, namespace, name, uid)

    def _patch_status(self, body: Mapping[str, Any], patch: dict[str, Any]) -> None:
        meta = _meta(body)
        try:
            self.client.patch(SCHEDULES, str(meta["namespace"]), str(meta["name"]),
                              {"status": patch}, subresource="status")
        except ApiError as exc:
            if not exc.not_found:
                raise

    def _post(self, body: Mapping[str, Any], reason: str, type_: str, message: str,
              key: str) -> None:
        """An Event on the schedule, named from ``key``: posting twice is a no-op (409)."""
        post_event(self.client, body, reason, type_, message[:1024], key, self.clock(), COMPONENT)

    @contextmanager
    def _lock(self, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield
