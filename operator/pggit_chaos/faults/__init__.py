"""Faults: the protocol (``base``), the real faults, the state file and crash cleanup.

Substrates build the fault classes; the engine only sees :class:`~pggit_chaos.faults.base.Fault`.
``pggit-chaos cleanup`` uses :func:`cleanup` with a :class:`StateFile`.
"""

from pggit_chaos.faults.base import Fault, FaultEvidence, FaultIntent, WorkloadWindow
from pggit_chaos.faults.cgroup import CpuThrottle, MemoryPressure, PodPause, ServerCgroup
from pggit_chaos.faults.cleanup import cleanup, revert_intent
from pggit_chaos.faults.network import NetworkPartition
from pggit_chaos.faults.process import PodKill
from pggit_chaos.faults.sql import ConnectionKill, LockContention, TriggerDisable
from pggit_chaos.faults.state import StateFile, default_state_dir

__all__ = [
    "ConnectionKill",
    "CpuThrottle",
    "Fault",
    "FaultEvidence",
    "FaultIntent",
    "LockContention",
    "MemoryPressure",
    "NetworkPartition",
    "PodKill",
    "PodPause",
    "ServerCgroup",
    "StateFile",
    "TriggerDisable",
    "WorkloadWindow",
    "cleanup",
    "default_state_dir",
    "revert_intent",
]
