"""What a chaos run must never leave behind: read from the machine, for the tests' assertions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NAME_PREFIX = "pggit-chaos"


def cgroups() -> list[str]:
    """Cgroup folders named by pggit-chaos, in every v1 hierarchy or the v2 tree."""
    found: list[str] = []
    if not CGROUP_ROOT.exists():
        return found
    for path in CGROUP_ROOT.rglob(f"{NAME_PREFIX}*"):
        if path.is_dir():
            found.append(str(path))
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
