"""The engine's view of where an experiment runs: targets, faults, intent storage, probes.

The local substrate (``pggit_chaos.local.substrate``) and the Kubernetes one
(``pggit_chaos.kube``) implement :class:`Substrate`; the engine never imports either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pggit_chaos.faults.base import Fault, FaultIntent
    from pggit_chaos.spec import Experiment


@dataclass
class Probe:
    """One health probe: did the database answer, and what did ``pggit.health_check()`` say.

    Without a usable ``health_check()`` the probe judges pgGit by what any pgGit has (its
    tables readable, its event triggers enabled); ``finding`` then says why, when the function
    exists but fails: a defect of the installed pgGit, which the run reports.
    """

    reachable: bool
    healthy: bool
    detail: str = ""
    components: dict[str, str] = field(default_factory=dict)
    finding: str = ""


class Substrate(Protocol):
    """Target resolution, fault building, intent storage and health probing."""

    name: str

    def prepare(self, experiment: Experiment) -> None:
        """Make the target ready (local: start PostgreSQL with pgGit); ``dsn`` works after."""

    @property
    def dsn(self) -> str:
        """Connection string the probes, the invariant checker and the checks use."""

    @property
    def workload_dsn(self) -> str:
        """Connection string the workload uses: ``dsn``, or a route to the same database
        through the substrate's latency proxy (``network-latency``)."""

    def plan(self, experiment: Experiment) -> list[str]:
        """Resolved targets and the steps a run would take (for ``dryRun``)."""

    def build_fault(self, experiment: Experiment) -> Fault:
        """The fault for this experiment; raises InsufficientPrivileges before any injection."""

    def record_intent(self, intent: FaultIntent) -> None:
        """Persist the intent before injection (local: state file; kube: CR status)."""

    def clear_intent(self, intent: FaultIntent) -> None:
        """Forget the intent once the fault is reverted."""

    def probe(self, timeout: float) -> Probe:
        """Connect, run ``pggit.health_check()``; never raises for an unreachable database."""

    def close(self) -> None:
        """Tear down whatever ``prepare`` made (idempotent)."""
