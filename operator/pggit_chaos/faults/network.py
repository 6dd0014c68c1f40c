"""``network-partition``: iptables DROP rules inside the server's network namespace.

Built by the local substrate for a server started in a :class:`~pggit_chaos.local.netns.Netns`.
The rules drop packets from (and, with direction ``both``, to) the host end of the veth pair,
so open connections hang as in a real split instead of being refused. Each rule carries a
comment naming the intent; revert deletes exactly those rules, and :func:`revert_rules` does the
same from recorded undo data (``cleanup``).
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultIntent
from pggit_chaos.local.netns import Netns, check_network_privileges, netns_exists


def _iptables(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", netns, "iptables", "-w", "5", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise FaultError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
    return result


def rule_present(netns: str, rule: list[str]) -> bool:
    """True if ``iptables -C`` finds the rule in the namespace."""
    return _iptables(netns, "-C", *rule, check=False).returncode == 0


def revert_rules(undo: dict[str, Any]) -> str:
    """Delete the recorded rules (every copy) if the namespace still exists; idempotent."""
    netns = str(undo["netns"])
    rules: list[list[str]] = [list(map(str, rule)) for rule in undo["rules"]]
    if not netns_exists(netns):
        return f"network namespace {netns} is gone, and its iptables rules with it"
    deleted = 0
    for rule in rules:
        while rule_present(netns, rule):
            _iptables(netns, "-D", *rule)
            deleted += 1
    return f"deleted {deleted} iptables rule(s) in {netns}"


class NetworkPartition:
    """Drop the clients' packets at the server's namespace for the fault's duration."""

    type = "network-partition"
    recovery_from_injection = False

    def __init__(self, netns: Netns, direction: str = "both", *, intent_id: str | None = None
                 ) -> None:
        if direction not in ("both", "ingress"):
            raise FaultError(
                f"network-partition: direction must be both or ingress, not {direction!r}")
        self.netns = netns
        self.direction = direction
        self._id = intent_id or uuid.uuid4().hex[:12]
        self._intent: FaultIntent | None = None
        self.check()

    def check(self) -> None:
        """Root (CAP_NET_ADMIN) and iptables are needed; the namespace must exist."""
        check_network_privileges()
        if not netns_exists(self.netns.name):
            raise FaultError(f"network-partition: namespace {self.netns.name} does not exist")

    @property
    def rules(self) -> list[list[str]]:
        """The exact iptables rules (chain first), as ``-A``/``-D`` take them."""
        tag = ["-m", "comment", "--comment", f"pggit-chaos-{self._id}"]
        rules = [["INPUT", "-s", self.netns.host_address, *tag, "-j", "DROP"]]
        if self.direction == "both":
            rules.append(["OUTPUT", "-d", self.netns.host_address, *tag, "-j", "DROP"])
        return rules

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self._intent = FaultIntent(
                type=self.type,
                target=f"network namespace {self.netns.name} ({self.netns.ns_address})",
                undo={"kind": "iptables", "netns": self.netns.name, "rules": self.rules},
                description=f"drop {self.direction} traffic between {self.netns.host_address} "
                            f"and {self.netns.ns_address}",
                id=self._id,
            )
        return self._intent

    def plan_lines(self) -> list[str]:
        return [f"ip netns exec {self.netns.name} iptables -A {' '.join(rule)}"
                for rule in self.rules]

    def inject(self) -> None:
        self.check()
        for rule in self.rules:
            if not rule_present(self.netns.name, rule):
                _iptables(self.netns.name, "-A", *rule)

    def revert(self) -> None:
        revert_rules(self.intent().undo)
