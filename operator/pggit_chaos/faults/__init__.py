"""Faults, substrate-neutral: the protocol and the intent (``base``) and the SQL-level faults.

Substrates build the fault classes; the engine only sees :class:`~pggit_chaos.faults.base.Fault`.
The SQL-level faults (``sql``) act through the DSN alone, so they are the same on every
substrate. Faults that need a substrate live with it: :mod:`pggit_chaos.local` (process, cgroup,
network namespace; the local state file and ``pggit-chaos cleanup``) and :mod:`pggit_chaos.kube`.
This package imports neither.
"""

from pggit_chaos.faults.base import Fault, FaultEvidence, FaultIntent, WorkloadWindow
from pggit_chaos.faults.sql import ConnectionKill, LockContention, TriggerDisable

__all__ = [
    "ConnectionKill",
    "Fault",
    "FaultEvidence",
    "FaultIntent",
    "LockContention",
    "TriggerDisable",
    "WorkloadWindow",
]
