"""The local substrate: the embedded PostgreSQL, its faults, the state file and crash cleanup.

``server`` runs a throwaway cluster for local runs, checks and tests; ``netns`` its network
namespace; ``process`` (:class:`PodKill`), ``cgroup`` (:class:`CpuThrottle`,
:class:`MemoryPressure`, :class:`PodPause`, :class:`ServerCgroup`) and ``network``
(:class:`NetworkPartition`) are the faults that need this machine; ``state`` is the local state
file (:class:`StateFile`) and ``cleanup`` reverts what a crashed run left (``pggit-chaos
cleanup``); ``substrate`` implements the engine's protocol with all of them.
"""

from pggit_chaos.local.cgroup import CpuThrottle, MemoryPressure, PodPause, ServerCgroup
from pggit_chaos.local.cleanup import cleanup, revert_intent
from pggit_chaos.local.network import NetworkPartition
from pggit_chaos.local.process import PodKill
from pggit_chaos.local.server import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    destroy_all,
    embedded_pggit,
    find_bindir,
    free_port,
)
from pggit_chaos.local.state import StateFile, default_state_dir

__all__ = [
    "CpuThrottle",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "MemoryPressure",
    "NetworkPartition",
    "PodKill",
    "PodPause",
    "ServerCgroup",
    "StateFile",
    "cleanup",
    "default_state_dir",
    "destroy_all",
    "embedded_pggit",
    "find_bindir",
    "free_port",
    "revert_intent",
]
