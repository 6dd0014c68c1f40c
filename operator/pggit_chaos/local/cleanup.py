"""Revert what a crashed run left behind, from the state file's plain data alone.

``pggit-chaos cleanup`` calls :func:`cleanup`; :func:`revert_intent` undoes one intent of any
kind (cgroup, cgroup limit, iptables, SQL, thread, throwaway cluster, network namespace,
disk-pressure balloon and filesystem)
without the Python objects that injected it. Intents of a runner that is still alive are
skipped unless forced.
"""

from __future__ import annotations

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultIntent
from pggit_chaos.faults.sql import revert_sql_intent
from pggit_chaos.local.cgroup import revert_cgroup, revert_limit
from pggit_chaos.local.disk_pressure import remove_filesystem, revert_balloon
from pggit_chaos.local.netns import delete_netns
from pggit_chaos.local.network import revert_rules
from pggit_chaos.local.process import kill_stray_cluster
from pggit_chaos.local.state import RESOURCE_TYPES, StateFile


def revert_intent(intent: FaultIntent) -> str:
    """Undo one recorded intent from its ``undo`` data; returns what it did. Idempotent."""
    kind = intent.undo.get("kind")
    if kind == "cgroup":
        return revert_cgroup(intent.undo)
    if kind == "cgroup-limit":
        return revert_limit(intent.undo)
    if kind == "iptables":
        return revert_rules(intent.undo)
    if kind == "embedded-postgres":
        return kill_stray_cluster(intent.undo)
    if kind == "netns":
        return delete_netns(intent.undo)
    if kind == "disk-balloon":
        return revert_balloon(intent.undo)
    if kind == "disk-filesystem":
        return remove_filesystem(intent.undo)
    if kind in ("thread", "terminate-backend", "event-triggers"):
        return revert_sql_intent(intent.undo)
    raise FaultError(f"intent {intent.id} ({intent.type}) has an unknown undo kind {kind!r}")


def cleanup(state: StateFile, *, force: bool = False) -> list[str]:
    """Revert every pending intent: faults newest first, then resources newest first.

    Each one reverted is cleared from the state file. A failure of one intent does not stop
    the others; it stays recorded and its line starts with ``FAILED``. Intents whose runner is
    still alive are skipped (``force=True`` reverts them too). Nothing recorded: ``[]``.
    """
    entries = state.entries()
    faults = [e for e in entries if e.intent.type not in RESOURCE_TYPES]
    resources = [e for e in entries if e.intent.type in RESOURCE_TYPES]
    lines: list[str] = []
    if not entries:
        return []
    for entry in [*reversed(faults), *reversed(resources)]:
        intent = entry.intent
        label = f"{intent.type} {intent.id} ({intent.target})"
        if entry.owner_alive and not force:
            lines.append(f"skipped {label}: its runner (pid {entry.owner_pid}) is still running")
            continue
        try:
            done = revert_intent(intent)
        except Exception as exc:
            lines.append(f"FAILED {label}: {exc}")
            continue
        state.clear(intent.id)
        lines.append(f"reverted {label}: {done}")
    return lines
