"""The ``status`` of a ``PgGitChaosExperiment`` as pydantic models, generated into the CRD.

Written by the runner Job (every phase, progress at most every 2 s) and by the operator
(admission refusals, crash reverts, finalizers); read by ``kubectl get pgce``, the operator's
metrics and ``pggit-chaos report``. :meth:`ExperimentStatus.from_journal` is the runner's view;
the operator only sets the fields it owns (``message``, ``runnerJob``, ``observedGeneration``,
``phase`` on refusal or crash).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from pggit_chaos.engine.journal import Journal

__all__ = [
    "PHASES",
    "AssertionStatus",
    "ChecksStatus",
    "Condition",
    "ExperimentStatus",
    "FailureStatus",
    "FaultEvidenceStatus",
    "FaultIntentStatus",
    "PastRunStatus",
    "WorkloadStatus",
]

#: Every value ``status.phase`` takes (the engine's :class:`~pggit_chaos.engine.journal.Phase`).
PHASES = ("Pending", "SteadyState", "Injecting", "Recovering", "Verifying", "Passed", "Failed",
          "Inconclusive", "Aborted", "Error")
#: Longest message kept in status (the API server's Event/condition limits are similar).
MESSAGE_LIMIT = 1024

Text = Annotated[str, Field(max_length=MESSAGE_LIMIT)]
Name = Annotated[str, Field(max_length=253)]
Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]
Count = Annotated[int, Field(ge=0)]


class _Status(BaseModel):
    """Base of the status sections: camelCase, unknown keys dropped (older/newer writers)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(_Status):
    """A Kubernetes condition (``metav1.Condition`` shape)."""

    type: Annotated[str, Field(max_length=316)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Text = ""
    last_transition_time: Timestamp | None = None
    observed_generation: Count | None = None


class FaultIntentStatus(_Status):
    """The fault about to be (or being) injected: enough to revert it with nothing else."""

    id: Annotated[str, Field(max_length=64)]
    type: Annotated[str, Field(max_length=63)]
    target: Text = ""
    description: Text = ""
    undo: dict[str, Any] = Field(
        default_factory=dict,
        description="How to revert it: kind plus that kind's fields (free-form).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    created_at: Timestamp | None = None
    expires_at: Timestamp | None = Field(
        default=None,
        description="After this the operator reverts the fault even if the runner still lives.",
    )


class FaultEvidenceStatus(_Status):
    """Whether the fault took effect (read from the system, not assumed)."""

    bit: bool
    summary: Text = ""


class WorkloadStatus(_Status):
    """The workload's operations by outcome, and what the invariant checker found."""

    invoked: Count = 0
    ok: Count = 0
    failed: Count = 0
    indeterminate: Count = 0
    lost: Count = 0
    duplicated: Count = 0
    unexpected: Count = 0


class FailureStatus(_Status):
    """One failing (or erroring) check, with the seed that replays it."""

    name: Name
    message: Text = ""
    seed: int | None = None
    outcome: Literal["failed", "error"] = "failed"


class ChecksStatus(_Status):
    """The checks suite's outcome."""

    passed: Count = 0
    failed: Count = 0
    skipped: Count = 0
    errors: Count = 0
    differs: Count = 0
    seed: int | None = None
    target: Annotated[str, Field(max_length=253)] | None = None
    failures: Annotated[list[FailureStatus], Field(max_length=20)] = Field(default_factory=list)


class AssertionStatus(_Status):
    """One of the user's assertions at one moment (steady state, after recovery)."""

    name: Annotated[str, Field(max_length=63)]
    phase: Literal["steady state", "after recovery"]
    outcome: Literal["passed", "failed", "error"] = Field(
        description="failed: the value differs from expect; error: it could not be evaluated.")
    got: Annotated[str, Field(max_length=256)] | None = None
    message: Text = ""


#: Past runs kept in ``status.history`` (the newest first) when an experiment is run again.
HISTORY_LIMIT = 10


class PastRunStatus(_Status):
    """A finished run kept when the experiment was run again (``chaos.pggit.io/rerun``)."""

    run_id: Annotated[str, Field(max_length=64)] | None = None
    phase: Literal[PHASES] | None = None  # type: ignore[valid-type]
    verdict: Literal["Pass", "Fail", "Inconclusive"] | None = None
    message: Text | None = Field(default=None, description="Why it ended as it did.")
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    recovery_seconds: float | None = None
    journal_config_map: Name | None = Field(
        default=None, description="Its journal (pggit-chaos report NAME --run RUN_ID).")


class ExperimentStatus(_Status):
    """What the experiment did and found; every field optional (absent until known)."""

    phase: Literal[PHASES] | None = None  # type: ignore[valid-type]
    verdict: Literal["Pass", "Fail", "Inconclusive"] | None = None
    message: Text | None = Field(default=None, description="Why it ended as it did, one line.")
    fault: Annotated[str, Field(max_length=512)] | None = Field(
        default=None, description="The fault type, or a scenario's types joined by + (what "
        "kubectl's Fault column shows), written by the operator.")
    observed_generation: Count | None = None
    run_id: Annotated[str, Field(max_length=64)] | None = None
    runner_job: Name | None = None
    verification_job: Name | None = None
    journal_config_map: Name | None = None
    targets: Annotated[list[Name], Field(max_length=1000)] = Field(
        default_factory=list, description="The pods the fault hits (namespace-local names)."
    )
    started_at: Timestamp | None = None
    injected_at: Timestamp | None = None
    reverted_at: Timestamp | None = None
    recovered_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    recovery_seconds: float | None = None
    fault_intent: FaultIntentStatus | None = None
    fault_intents: Annotated[list[FaultIntentStatus], Field(max_length=8)] | None = None
    """A scenario's active intents (``faultIntent`` is the first of them): each reverted
    from here by the operator if the runner dies."""
    fault_evidence: FaultEvidenceStatus | None = None
    workload: WorkloadStatus | None = None
    checks: ChecksStatus | None = None
    assertions: Annotated[list[AssertionStatus], Field(max_length=64)] = Field(
        default_factory=list,
        description="The user's assertions (spec.verification.assertions), each at the "
        "steady state and after recovery.")
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=16,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = Field(default_factory=list)

    history: Annotated[list[PastRunStatus], Field(max_length=HISTORY_LIMIT)] = Field(
        default_factory=list,
        description="Earlier runs of this experiment, newest first (kept on a rerun).")
    rerun: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="The chaos.pggit.io/rerun annotation value last acted on.")

    @classmethod
    def from_journal(cls, journal: Journal) -> ExperimentStatus:
        """The runner's status from its journal (``Journal.to_status()``, typed)."""
        return cls.model_validate(journal.to_status())

    def to_patch(self) -> dict[str, Any]:
        """The ``status`` merge patch: set fields written, ``None`` fields cleared."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=False)
