"""A network namespace for the embedded server, reached over a veth pair from the host.

Used by the local substrate when the experiment's fault is ``network-partition``: the
postmaster runs inside the namespace (``EmbeddedPostgres(netns=..., host=ns_address)``) and
clients reach it through a private /30 the run picks itself (``10.251.X.0/30``, X unused on
this machine). Picking and creating happen under :func:`subnet_lock`, a lock of the whole
machine, so that two runs at once never pick the same X. ``cleanup`` deletes a namespace a
dead runner left with :func:`delete_netns`, and only namespaces whose name starts with
:data:`NETNS_PREFIX`.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pggit_chaos.errors import FaultError, InsufficientPrivileges, MissingDependency

#: Every namespace this tool creates starts with this name; cleanup refuses any other.
NETNS_PREFIX = "pggit-chaos-"
#: The /16 whose /30 subnets the runs use (10.251.X.0/30).
SUBNET_BASE = "10.251"
#: The lock every run takes while it picks a subnet and creates its namespace. One file for
#: the whole machine, not one per state folder: runs with state folders of their own (a test
#: suite's) share the machine's addresses all the same.
SUBNET_LOCK = Path("/run/lock/pggit-chaos-netns.lock") if Path("/run/lock").is_dir() \
    else Path("/tmp/pggit-chaos-netns.lock")


@contextlib.contextmanager
def subnet_lock(path: Path = SUBNET_LOCK) -> Iterator[None]:
    """Hold the machine's subnet lock (``fcntl``): from :meth:`Netns.plan` until
    :meth:`Netns.create` has put the host's address in place, where the next run's
    :func:`used_subnets` sees it."""
    try:
        handle = open(path, "a")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise FaultError(f"cannot open the network namespaces' lock {path}: {exc}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def run_ip(*args: str, netns: str | None = None, check: bool = True, timeout: float = 15.0
           ) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (inside ``netns`` with ``ip netns exec``); FaultError on failure."""
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        output = result.stderr.strip() or result.stdout.strip()
        raise FaultError(f"`{' '.join(cmd)}` failed: {output}")
    return result


def check_network_privileges(what: str = "network-partition", need_iptables: bool = True) -> None:
    """Raise unless we are root with ``ip`` (and ``iptables``) installed."""
    if shutil.which("ip") is None:
        raise MissingDependency(f"{what} needs the `ip` command: apt-get install iproute2")
    if need_iptables and shutil.which("iptables") is None:
        raise MissingDependency(f"{what} needs iptables: apt-get install iptables")
    if os.geteuid() != 0:
        raise InsufficientPrivileges(f"{what} needs root (CAP_NET_ADMIN) and iptables")


def netns_exists(name: str) -> bool:
    """True if ``ip netns list`` shows ``name``."""
    result = run_ip("netns", "list", check=False)
    return any(line.split()[0] == name for line in result.stdout.splitlines() if line.strip())


def link_exists(name: str) -> bool:
    return run_ip("link", "show", "dev", name, check=False).returncode == 0


def used_subnets() -> set[int]:
    """The X of every 10.251.X.* address or route present on this machine (host side)."""
    taken: set[int] = set()
    text = run_ip("-o", "addr", check=False).stdout + run_ip("route", check=False).stdout
    for token in text.replace("/", " ").split():
        if token.startswith(SUBNET_BASE + "."):
            parts = token.split(".")
            if len(parts) == 4 and parts[2].isdigit():
                taken.add(int(parts[2]))
    return taken


@dataclass
class Netns:
    """One namespace with a veth pair: ``host_address`` outside, ``ns_address`` inside."""

    name: str
    host_if: str
    ns_if: str
    host_address: str
    ns_address: str
    prefix: int = 30

    @classmethod
    def plan(cls, run_id: str | None = None, subnets: Iterable[int] = range(1, 255)) -> Netns:
        """Pick names and a free /30 among ``10.251.X.0/30`` for X in ``subnets`` (nothing is
        created yet). Call it holding :func:`subnet_lock` until :meth:`create` returns."""
        run_id = run_id or uuid.uuid4().hex[:8]
        taken = used_subnets()
        free = [x for x in subnets if x not in taken]
        if not free:
            raise FaultError(f"no free {SUBNET_BASE}.X.0/30 subnet for a network namespace")
        network = ipaddress.ip_network(f"{SUBNET_BASE}.{random.choice(free)}.0/30")
        host, ns = list(network.hosts())
        short = run_id[:8]
        return cls(name=f"{NETNS_PREFIX}{run_id}", host_if=f"pgc{short}h", ns_if=f"pgc{short}n",
                   host_address=str(host), ns_address=str(ns))

    def undo(self) -> dict[str, Any]:
        """Undo data for the state file (a resource intent of type ``netns``)."""
        return {"kind": "netns", "name": self.name, "host_if": self.host_if,
                "host_address": self.host_address, "ns_address": self.ns_address}

    def plan_lines(self) -> list[str]:
        return [
            f"ip netns add {self.name}",
            f"veth {self.host_if} ({self.host_address}/{self.prefix}, host) <-> "
            f"{self.ns_if} ({self.ns_address}/{self.prefix}, in {self.name})",
        ]

    def create(self) -> None:
        """Create the namespace, the veth pair and the addresses; undone by :meth:`delete`."""
        check_network_privileges(need_iptables=False)
        try:
            run_ip("netns", "add", self.name)
            run_ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            run_ip("link", "set", self.ns_if, "netns", self.name)
            run_ip("addr", "add", f"{self.host_address}/{self.prefix}", "dev", self.host_if)
            run_ip("link", "set", self.host_if, "up")
            run_ip("link", "set", "lo", "up", netns=self.name)
            run_ip("addr", "add", f"{self.ns_address}/{self.prefix}", "dev", self.ns_if,
                   netns=self.name)
            run_ip("link", "set", self.ns_if, "up", netns=self.name)
        except BaseException:
            self.delete()
            raise

    def delete(self) -> str:
        """Delete the namespace (with its veth end and iptables rules) and the host end."""
        return delete_netns(self.undo())

    def __enter__(self) -> Netns:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


def delete_netns(undo: dict[str, Any]) -> str:
    """Delete a namespace this tool created (name prefix checked) and its host veth end."""
    name = str(undo["name"])
    host_if = str(undo.get("host_if", ""))
    if not name.startswith(NETNS_PREFIX):
        raise FaultError(f"refusing to delete network namespace {name!r}: not pggit-chaos's")
    done = []
    if netns_exists(name):
        run_ip("netns", "del", name)
        done.append(f"deleted network namespace {name}")
    if host_if.startswith("pgc") and link_exists(host_if):
        try:
            run_ip("link", "del", host_if)
            done.append(f"deleted veth {host_if}")
        except FaultError:
            # Deleting the namespace removes the veth pair asynchronously: gone is fine.
            if link_exists(host_if):
                raise
    return "; ".join(done) if done else f"network namespace {name} already gone"
