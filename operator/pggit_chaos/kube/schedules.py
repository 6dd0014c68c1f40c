"""What a ``PgGitChaosSchedule`` should do now: pure decisions, no API calls, no clock.

:func:`decide` takes the schedule's spec, its status, its creation time, *now* and its runs (the
experiments it owns) and returns what to create and delete and the status to write, the way
Kubernetes' CronJob controller decides from ``status.lastScheduleTime`` (so nothing is lost
when the operator restarts: the next look computes the same). :func:`run_manifest` builds a
run. Called by :mod:`pggit_chaos.kube.schedule_handlers`; tested directly with a fixed *now*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pggit_chaos.metrics import parse_time, status_verdict_label
from pggit_chaos.spec.model import API_VERSION, GROUP, KIND
from pggit_chaos.spec.schedule import (
    SCHEDULE_KIND,
    SCHEDULE_LABEL,
    Schedule,
    ScheduleSpec,
    cron_times,
)

__all__ = [
    "MISSED_CONDITION",
    "SCHEDULED_AT_ANNOTATION",
    "TERMINAL",
    "TOO_MANY_MISSED",
    "Decision",
    "Run",
    "decide",
    "rfc3339",
    "run_manifest",
    "run_name",
    "run_of",
]

#: Annotation on a run: the scheduled time it was created for (RFC 3339).
SCHEDULED_AT_ANNOTATION = f"{GROUP}/scheduled-at"
#: Condition type set True when a start was missed.
MISSED_CONDITION = "MissedStart"
#: More missed start times than this since the last run: say so (as the CronJob controller).
TOO_MANY_MISSED = 100
#: Phases after which a run is finished.
TERMINAL = frozenset({"Passed", "Failed", "Inconclusive", "Aborted", "Error"})


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_name(schedule: str, scheduled: datetime) -> str:
    """``<schedule>-<unix minutes of the scheduled time>``, as a CronJob names its Jobs."""
    return f"{schedule}-{int(scheduled.timestamp()) // 60}"


@dataclass(frozen=True)
class Run:
    """One experiment a schedule owns, as the decision needs it."""

    name: str
    uid: str = ""
    scheduled: datetime | None = None
    created: datetime | None = None
    finished: bool = False
    verdict: str | None = None
    finished_at: datetime | None = None
    #: Being deleted (a deletionTimestamp; its finalizer still reverts what it holds).
    deleting: bool = False

    @property
    def order(self) -> tuple[datetime, str]:
        when = self.scheduled or self.created or datetime.min.replace(tzinfo=UTC)
        return when, self.name


def run_of(body: Mapping[str, Any]) -> Run:
    """A :class:`Run` from an experiment's body."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    finished = status.get("phase") in TERMINAL
    return Run(name=str(meta.get("name") or ""), uid=str(meta.get("uid") or ""),
               scheduled=parse_time((meta.get("annotations") or {}).get(SCHEDULED_AT_ANNOTATION)),
               created=parse_time(meta.get("creationTimestamp")), finished=finished,
               verdict=status_verdict_label(status) if finished else None,
               finished_at=parse_time(status.get("finishedAt")) if finished else None,
               deleting=bool(meta.get("deletionTimestamp")))


@dataclass
class Decision:
    """What to do now: the run to create (its scheduled time), runs to delete, the status."""

    create: datetime | None = None
    #: Active runs stopped by concurrencyPolicy Replace (deleted before the new one starts).
    replace: list[str] = field(default_factory=list)
    #: Finished runs beyond the history limits, oldest first.
    prune: list[str] = field(default_factory=list)
    #: A due start skipped because a run is active (concurrencyPolicy Forbid).
    skipped: datetime | None = None
    #: A due start missed: later than startingDeadlineSeconds, or too many missed.
    missed: datetime | None = None
    #: The next scheduled time after now (None while paused).
    next_time: datetime | None = None
    #: Human account of the decision, one line (status.message and Events).
    message: str = ""
    #: The status merge patch (without the fields of the run created: see ``created``).
    status: dict[str, Any] = field(default_factory=dict)


def _latest(*moments: datetime | None) -> datetime | None:
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


def _due(spec: ScheduleSpec, earliest: datetime, now: datetime) -> tuple[datetime | None, int]:
    """The most recent scheduled time in ``(earliest, now]`` and how many there are (counted
    up to :data:`TOO_MANY_MISSED` + 1)."""
    start = now.replace(microsecond=0) + timedelta(seconds=1)
    recent = next(iter(cron_times(spec.schedule, spec.time_zone, start, reverse=True)), None)
    if recent is None or recent <= earliest:
        return None, 0
    count = 0
    for moment in cron_times(spec.schedule, spec.time_zone, earliest):
        if moment > now or count > TOO_MANY_MISSED:
            break
        count += 1
    return recent.astimezone(UTC), count


def _condition(status: Mapping[str, Any], value: str, reason: str, message: str,
               now: datetime) -> list[dict[str, Any]] | None:
    """The conditions list with MissedStart set; None when nothing changes."""
    conditions = [dict(c) for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    old = next((c for c in conditions if c.get("type") == MISSED_CONDITION), None)
    if old is None and value == "False":
        return None
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
            value, reason, message):
        return None
    new = {"type": MISSED_CONDITION, "status": value, "reason": reason, "message": message[:1024],
           "lastTransitionTime": (old.get("lastTransitionTime") if old is not None
                                  and old.get("status") == value else rfc3339(now))}
    others = [c for c in conditions if c.get("type") != MISSED_CONDITION]
    return [*others, new]


def summarize(status: Mapping[str, Any], runs: Sequence[Run],
              gone: Iterable[str] = ()) -> dict[str, Any]:
    """Status fields from the runs: active ones, the last verdict and success, the counts.

    Each finished run is counted once in ``verdicts`` (``countedRuns`` holds those still
    present, so a run deleted by the history limits stays counted and is not counted twice).
    """
    gone = set(gone)
    present = [run for run in runs if run.name not in gone]
    active = sorted((run for run in present if not run.finished), key=lambda r: r.order)
    counted = [str(n) for n in status.get("countedRuns") or [] if isinstance(n, str)]
    verdicts = {str(k): int(v) for k, v in (status.get("verdicts") or {}).items()
                if isinstance(v, int)}
    finished = sorted((run for run in runs if run.finished), key=lambda r: r.order)
    for run in finished:
        if run.name not in counted and run.verdict:
            verdicts[run.verdict] = verdicts.get(run.verdict, 0) + 1
            counted.append(run.name)
    names = {run.name for run in runs}  # counted stays counted while it is listed at all
    patch: dict[str, Any] = {
        "active": [{"name": run.name, "uid": run.uid,
                    **({"scheduledTime": rfc3339(run.scheduled)} if run.scheduled else {})}
                   for run in active],
        "activeRuns": len(active),
        "verdicts": verdicts,
        "countedRuns": [name for name in counted if name in names],
    }
    if finished:
        last = max(finished, key=lambda r: (r.finished_at or r.order[0], r.order))
        patch["lastVerdict"] = last.verdict
    passed = [run.finished_at for run in finished if run.verdict == "Pass" and run.finished_at]
    if passed:
        known = parse_time(status.get("lastSuccessfulTime"))
        patch["lastSuccessfulTime"] = rfc3339(_latest(known, *passed) or max(passed))
    return patch


def _history(spec: ScheduleSpec, runs: Sequence[Run]) -> list[str]:
    finished = sorted((run for run in runs if run.finished and not run.deleting),
                      key=lambda r: r.order)
    passed = [run.name for run in finished if run.verdict == "Pass"]
    other = [run.name for run in finished if run.verdict != "Pass"]
    cut_passed = max(0, len(passed) - spec.successful_runs_history_limit)
    cut_other = max(0, len(other) - spec.failed_runs_history_limit)
    doomed = set(passed[:cut_passed]) | set(other[:cut_other])
    return [run.name for run in finished if run.name in doomed]


def decide(spec: ScheduleSpec, status: Mapping[str, Any], created: datetime, now: datetime,
           runs: Sequence[Run], *, paused: bool = False) -> Decision:
    """What the schedule does at ``now``.

    * history: finished runs beyond ``successfulRunsHistoryLimit`` (Passed) and
      ``failedRunsHistoryLimit`` (any other end) are pruned, oldest first;
    * paused (``suspend`` or the pause annotation): nothing is created;
    * the most recent scheduled time after ``lastScheduleTime`` (or the last skipped or missed
      time, or the creation) that is not after ``now`` is due; earlier ones are not run (as a
      CronJob, only the latest start is made up); more than :data:`TOO_MANY_MISSED` of them,
      or the due one later than ``startingDeadlineSeconds``: MissedStart, nothing created;
    * a run active: Forbid skips the due start (recorded, never run later), Replace stops the
      active runs and starts, Allow starts.
    """
    decision = Decision(prune=_history(spec, runs))
    last = parse_time(status.get("lastScheduleTime"))
    skipped = parse_time(status.get("lastSkippedTime"))
    missed = parse_time(status.get("lastMissedTime"))
    earliest = _latest(last, skipped, missed, created) or created
    decision.next_time = (None if paused else next(
        iter(cron_times(spec.schedule, spec.time_zone, max(earliest, now))), None))
    patch: dict[str, Any] = {}
    if paused:
        decision.message = "suspended: no runs are created"
    else:
        due, count = _due(spec, earliest, now)
        active = [run for run in runs if not run.finished]
        deadline = spec.starting_deadline_seconds
        if due is None:
            decision.message = (f"next run at {rfc3339(decision.next_time)}"
                                if decision.next_time else "no scheduled time ahead")
        elif deadline is not None and due + timedelta(seconds=deadline) < now:
            decision.missed = due
            patch["lastMissedTime"] = rfc3339(due)
            late = (now - due).total_seconds()
            decision.message = (f"missed the start at {rfc3339(due)}: {late:.0f} s late, more "
                                f"than startingDeadlineSeconds {deadline}")
            conditions = _condition(status, "True", "StartingDeadlineExceeded",
                                    decision.message, now)
            if conditions is not None:
                patch["conditions"] = conditions
        elif active and spec.concurrency_policy == "Forbid":
            decision.skipped = due
            patch["lastSkippedTime"] = rfc3339(due)
            decision.message = (f"skipped the start at {rfc3339(due)}: run "
                                f"{active[0].name} is still active (concurrencyPolicy Forbid)")
        else:
            if active and spec.concurrency_policy == "Replace":
                decision.replace = [run.name for run in active if not run.deleting]
            decision.create = due
            patch["lastScheduleTime"] = rfc3339(due)
            if count > TOO_MANY_MISSED:
                decision.missed = due
                decision.message = (f"more than {TOO_MANY_MISSED} start times missed since "
                                    f"{rfc3339(earliest)}: only the latest, {rfc3339(due)}, "
                                    "runs (set startingDeadlineSeconds to bound this)")
                conditions = _condition(status, "True", "TooManyMissedStarts",
                                        decision.message, now)
            else:
                decision.message = f"started the run due at {rfc3339(due)}"
                conditions = _condition(status, "False", "Started",
                                        f"the start at {rfc3339(due)} was made", now)
            if conditions is not None:
                patch["conditions"] = conditions
    gone = set(decision.prune) | set(decision.replace)
    patch.update(summarize(status, runs, gone))
    patch["message"] = decision.message[:1024]
    decision.status = patch
    return decision


def run_manifest(schedule: Schedule, uid: str, scheduled: datetime) -> dict[str, Any]:
    """The experiment a schedule runs for ``scheduled``: the template's spec, labels and
    annotations, the schedule's label, owned by the schedule (``controller: true``, so that
    deleting the schedule deletes its runs, and each run's finalizer reverts its fault)."""
    template = schedule.spec.experiment_template
    labels = {**template.metadata.labels, SCHEDULE_LABEL: schedule.name}
    annotations = {**template.metadata.annotations,
                   SCHEDULED_AT_ANNOTATION: rfc3339(scheduled)}
    spec: dict[str, Any] = template.spec.model_dump(mode="json", by_alias=True,
                                                    exclude_none=True)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": run_name(schedule.name, scheduled),
            "namespace": schedule.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": SCHEDULE_KIND, "name": schedule.name,
                "uid": uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }
