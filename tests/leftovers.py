"""What a chaos run must never leave behind: read from the machine, for the tests' assertions.

The host is not bare: docker, podman (netavark's ``NETAVARK_FORWARD`` chain), a firewall or
kube-proxy keep rules of their own, and with pytest-xdist other tests' runs hold cgroups and
namespaces of their own at the same time. So a run is judged by :func:`added_since`: what is
here now that was not in the :func:`snapshot` taken before it, and (for cgroups and namespaces)
that carries a name the run itself recorded in its state file (:class:`StateWatcher`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NAME_PREFIX = "pggit-chaos"
#: Keys of a namespace's undo data naming its veth ends and addresses (in iptables rules).
VETH_KEYS = ("host_if", "ns_if", "host_address", "ns_address")


def cgroups() -> list[str]:
    """Cgroup folders named by pggit-chaos, in every v1 hierarchy or the v2 tree."""
    found: list[str] = []
    if not CGROUP_ROOT.exists():
        return found
    # os.walk, not rglob: other cgroups (a kubelet's pods, a service's) come and go during the
    # walk, and os.walk skips a folder that vanished where rglob raises FileNotFoundError.
    for folder, subfolders, _ in os.walk(CGROUP_ROOT):
        found += [os.path.join(folder, name) for name in subfolders
                  if name.startswith(NAME_PREFIX)]
    return found


def namespaces() -> list[str]:
    """Network namespaces named by pggit-chaos."""
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NAME_PREFIX)]


def host_iptables_rules() -> list[str]:
    """Rules (not policies) in the host namespace's filter table."""
    if shutil.which("iptables") is None:
        return []
    out = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith("-P")]


def postgres_processes(marker: str = "pggit-chaos-pg-") -> list[str]:
    """Live postgres processes whose command line names a pggit-chaos cluster folder."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and "postgres" in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


@dataclass(frozen=True)
class Snapshot:
    """The host's cgroups, namespaces and iptables rules of one moment."""

    cgroups: frozenset[str]
    namespaces: frozenset[str]
    iptables: tuple[str, ...]


def snapshot() -> Snapshot:
    """What is on the host now (taken before a run, compared after it)."""
    return Snapshot(frozenset(cgroups()), frozenset(namespaces()), tuple(host_iptables_rules()))


def added_since(before: Snapshot, owned: Collection[str] | None = None) -> dict[str, list[str]]:
    """What the host holds now and did not hold at ``before``, by kind (empty lists: clean).

    iptables lines are compared as a multiset (a second copy of a rule is added). With ``owned``
    (the names a run recorded), what another concurrent process added is left out: cgroups and
    namespaces not named by the run, iptables rules naming none of its intents' tags, veth names
    or addresses.
    """
    def mine(path: str) -> bool:
        return owned is None or Path(path).name in owned

    def my_rule(rule: str) -> bool:
        words = set(rule.replace("/", " ").split())
        return owned is None or bool(words & set(owned))

    extra_rules = Counter(host_iptables_rules()) - Counter(before.iptables)
    return {
        "cgroups": sorted(p for p in set(cgroups()) - before.cgroups if mine(p)),
        "namespaces": sorted(n for n in set(namespaces()) - before.namespaces if mine(n)),
        "iptables": sorted(r for r in extra_rules.elements() if my_rule(r)),
    }


class StateWatcher:
    """Collects the names of every resource a run records in its state file while it runs
    (``pggit-chaos-*`` names and paths, each intent's ``pggit-chaos-<id>`` tag, a namespace's
    veth names and addresses).

    Resources are recorded before they exist and cleared after they are gone, and each lives
    far longer than the polling interval, so every cgroup and namespace the run made is seen.
    """

    def __init__(self, state_dir: Path, interval: float = 0.02) -> None:
        self.path = state_dir / "state.json"
        self.names: set[str] = set()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="state-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

    def poll(self) -> None:
        """Read the state file once (written atomically: no lock needed to read it)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        stack: list[object] = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
                self.names.update(str(item[key]) for key in VETH_KEYS if item.get(key))
                if isinstance(item.get("id"), str):  # an intent: its rules' comment tag
                    self.names.add(f"{NAME_PREFIX}-{item['id']}")
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, str) and Path(item).name.startswith(NAME_PREFIX):
                self.names.add(Path(item).name)

    def stop(self) -> None:
        """Stop polling (without waiting for the thread)."""
        self._stop.set()

    def close(self) -> None:
        """Stop polling, and read the file a last time."""
        self._stop.set()
        self._thread.join()
        self.poll()


def everything() -> dict[str, list[str]]:
    """All leftovers by kind; ``{}`` values empty when the machine is clean."""
    return {
        "cgroups": cgroups(),
        "namespaces": namespaces(),
        "iptables": host_iptables_rules(),
        "postgres": postgres_processes(),
    }


def assert_clean() -> None:
    left = {kind: items for kind, items in everything().items() if items}
    assert not left, f"left behind: {left}"
