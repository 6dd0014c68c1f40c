"""The ``PgGitChaosSchedule`` resource (spec and status) as pydantic models.

A schedule creates ``PgGitChaosExperiment`` runs on a cron, as a CronJob creates Jobs; its
``experimentTemplate.spec`` is an :class:`~pggit_chaos.spec.model.ExperimentSpec`, validated by
the same model. Loaded by :func:`load_schedule_object` (the operator) and turned into the
second CRD by :mod:`pggit_chaos.spec.crd`. The cron expression is checked with ``cronsim``
(five fields, or one of the ``@hourly``-style descriptors Kubernetes' CronJob takes) and the
time zone with the IANA database (:mod:`zoneinfo`).
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from cronsim import CronSim, CronSimError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.spec.loader import problems_of
from pggit_chaos.spec.model import (
    GROUP,
    WHOLE,
    ExperimentSpec,
    Metadata,
    _Model,
    _problem,
    _without_nulls,
)

__all__ = [
    "CONCURRENCY_POLICIES",
    "DESCRIPTORS",
    "MAX_SCHEDULE_NAME",
    "PAUSE_ANNOTATION",
    "SCHEDULE_KIND",
    "SCHEDULE_LABEL",
    "ActiveRun",
    "ExperimentTemplate",
    "ExperimentTemplateMetadata",
    "Schedule",
    "ScheduleSpec",
    "ScheduleStatus",
    "cron_times",
    "load_schedule_object",
    "time_zone",
]

SCHEDULE_KIND = "PgGitChaosSchedule"
#: Label on every run a schedule creates: the schedule's name.
SCHEDULE_LABEL = f"{GROUP}/schedule"
#: Annotation on a schedule: ``"true"`` suspends it like ``spec.suspend: true``.
PAUSE_ANNOTATION = f"{GROUP}/pause"
#: A schedule's name is at most this long (a CronJob's limit), so that a run's name,
#: ``<schedule>-<unix minutes>``, fits in a 63-character label value.
MAX_SCHEDULE_NAME = 52
CONCURRENCY_POLICIES = ("Forbid", "Allow", "Replace")
#: The descriptors Kubernetes' CronJob takes, as five-field expressions.
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: A five-field expression or a descriptor (the API server's first check; cronsim does the rest).
CRON_PATTERN = r"^(@[a-z]+|\S+\s+\S+\s+\S+\s+\S+\s+\S+)$"
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"
#: Bounds of the template's labels and annotations (CEL cost, etcd object size).
MAX_TEMPLATE_ENTRIES = 64


def _expression(schedule: str) -> str:
    text = " ".join(schedule.split())
    return DESCRIPTORS.get(text, text)


def time_zone(name: str | None) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name`` (UTC when None); :class:`ValueError` for an unknown one."""
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as "
                         "Europe/Berlin)") from exc


def cron_times(schedule: str, zone: str | None, start: datetime, *,
               reverse: bool = False) -> CronSim:
    """The schedule's times strictly after ``start`` (aware), in ``zone``, as an iterator;
    with ``reverse``, strictly before it, latest first."""
    return CronSim(_expression(schedule), start.astimezone(time_zone(zone)), reverse=reverse)


class ExperimentTemplateMetadata(_Model):
    """Labels and annotations every run gets (besides the schedule's own label)."""

    labels: Annotated[dict[StrictStr, StrictStr], Field(max_length=MAX_TEMPLATE_ENTRIES)] = (
        Field(default_factory=dict))
    annotations: Annotated[dict[StrictStr, StrictStr],
                           Field(max_length=MAX_TEMPLATE_ENTRIES)] = Field(default_factory=dict)

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _drop_nulls(cls, entries: Any) -> Any:
        return _without_nulls(entries)


class ExperimentTemplate(_Model):
    """The experiment each run is: its metadata's labels/annotations and its spec."""

    metadata: ExperimentTemplateMetadata = Field(default_factory=ExperimentTemplateMetadata)
    spec: ExperimentSpec


class ScheduleSpec(_Model):
    """When to run the experiment, what to do with overlap, how many finished runs to keep."""

    # The pattern goes to the CRD only: the model's own check says more than "does not match".
    schedule: Annotated[StrictStr, Field(min_length=1, max_length=256,
                                         json_schema_extra={"pattern": CRON_PATTERN})] = (
        Field(description="Cron expression (minute hour day-of-month month day-of-week) or "
                          "@hourly, @daily, @weekly, @monthly, @yearly."))
    time_zone: Annotated[StrictStr, Field(min_length=1, max_length=64, json_schema_extra={
        "pattern": TIME_ZONE_PATTERN})] | None = Field(
        default=None, description="IANA time zone of the schedule (default UTC).")
    concurrency_policy: Literal["Forbid", "Allow", "Replace"] = Field(
        default="Forbid",
        description="A run due while one is active: Forbid skips it (two runs on one target "
                    "would decide each other's verdicts), Allow starts it, Replace stops the "
                    "active one (its fault is reverted) and starts it.")
    suspend: StrictBool = Field(default=False, description="Create no runs while true.")
    starting_deadline_seconds: Annotated[StrictInt, Field(ge=0, le=86400 * 7), WHOLE] | None = (
        Field(default=None, description="A run not started within this many seconds of its "
                                        "scheduled time is missed (condition MissedStart)."))
    successful_runs_history_limit: Annotated[StrictInt, Field(ge=0, le=100), WHOLE] = Field(
        default=3, description="Passed runs kept (older ones are deleted).")
    failed_runs_history_limit: Annotated[StrictInt, Field(ge=0, le=100), WHOLE] = Field(
        default=1, description="Runs kept that ended otherwise (Failed, Inconclusive, Aborted, "
                               "Error).")
    experiment_template: ExperimentTemplate

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        try:
            CronSim(_expression(schedule), datetime(2000, 1, 1))
        except CronSimError as exc:
            raise _problem(f"not a cron expression ({exc}): five fields such as '*/5 * * * *', "
                           f"or one of {', '.join(DESCRIPTORS)}") from None
        return schedule

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, zone: str | None) -> str | None:
        try:
            time_zone(zone)
        except ValueError as exc:
            raise _problem(str(exc)) from None
        return zone


class Schedule(_Model):
    """A schedule of chaos experiments: runs of one experiment on a cron, kept as its history.

    The resource ``PgGitChaosSchedule`` (``chaos.pggit.io/v1alpha1``); ``status`` is ignored
    on load.
    """

    api_version: Literal["chaos.pggit.io/v1alpha1"]
    kind: Literal["PgGitChaosSchedule"]
    metadata: Metadata
    spec: ScheduleSpec

    @model_validator(mode="before")
    @classmethod
    def _drop_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and "status" in data:
            data = {key: value for key, value in data.items() if key != "status"}
        return data

    @model_validator(mode="after")
    def _short_name(self) -> Self:
        if len(self.metadata.name) > MAX_SCHEDULE_NAME:
            raise _problem(f"a schedule's name has at most {MAX_SCHEDULE_NAME} characters (its "
                           "runs are named <schedule>-<unix minutes>)")
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def paused(self) -> bool:
        """``spec.suspend`` or the pause annotation set to "true"."""
        return self.spec.suspend or self.metadata.annotations.get(PAUSE_ANNOTATION) == "true"


def load_schedule_object(body: object, source: str = "<object>") -> Schedule:
    """A schedule from a parsed document (a CR body); :class:`InvalidExperiment` with every
    ``(field path, reason)`` at once."""
    if not isinstance(body, dict):
        raise InvalidExperiment([("(document)", "a schedule must be a mapping (apiVersion, "
                                  "kind, metadata, spec)")], source)
    try:
        return Schedule.model_validate(body)
    except ValidationError as error:
        raise InvalidExperiment(problems_of(error), source) from None


# ------------------------------------------------------------------------------------- status


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]
Count = Annotated[int, Field(ge=0)]


class ActiveRun(_Status):
    """A run that has not finished (a reference to the experiment)."""

    name: Annotated[str, Field(max_length=253)]
    uid: Annotated[str, Field(max_length=64)] = ""
    scheduled_time: Timestamp | None = None


class ScheduleCondition(_Status):
    """A Kubernetes condition (``metav1.Condition`` shape)."""

    type: Annotated[str, Field(max_length=316)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Annotated[str, Field(max_length=1024)] = ""
    last_transition_time: Timestamp | None = None


class ScheduleStatus(_Status):
    """What the schedule did: its last times, active runs, verdicts; all absent until known."""

    last_schedule_time: Timestamp | None = Field(
        default=None, description="Scheduled time of the last run created.")
    last_successful_time: Timestamp | None = Field(
        default=None, description="When the last Passed run finished.")
    last_skipped_time: Timestamp | None = Field(
        default=None, description="The last scheduled time skipped because a run was active "
                                  "(concurrencyPolicy Forbid).")
    last_missed_time: Timestamp | None = Field(
        default=None, description="The last scheduled time that was missed (not started "
                                  "within startingDeadlineSeconds).")
    active: Annotated[list[ActiveRun], Field(max_length=1000)] = Field(default_factory=list)
    active_runs: Count | None = Field(default=None, description="How many runs are active.")
    last_verdict: Annotated[str, Field(max_length=32)] | None = Field(
        default=None, description="Verdict (or terminal phase) of the last finished run.")
    verdicts: Annotated[dict[str, Count], Field(max_length=16)] = Field(
        default_factory=dict, description="Finished runs by verdict (or terminal phase), "
                                          "counted once each, also after they were deleted.")
    counted_runs: Annotated[list[Annotated[str, Field(max_length=253)]],
                            Field(max_length=1000)] = Field(
        default_factory=list, description="Finished runs still present that are counted.")
    message: Annotated[str, Field(max_length=1024)] | None = None
    conditions: Annotated[
        list[ScheduleCondition],
        Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "map",
                                                "x-kubernetes-list-map-keys": ["type"]}),
    ] = Field(default_factory=list)
