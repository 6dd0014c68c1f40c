"""``network-partition``: iptables DROP rules inside the server's network namespace.

Built by the local substrate for a server started in a :class:`~pggit_chaos.local.netns.Netns`.
The rules drop packets from (and, with direction ``both``, to) the host end of the veth pair,
so open connections hang as in a real split instead of being refused. Each rule carries a
comment naming the intent; revert deletes exactly those rules, and :func:`revert_rules` does the
same from recorded undo data (``cleanup``). Just before it deletes them, revert reads their
packet and byte counters: the evidence that the partition dropped the clients' traffic.
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
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


def rule_counters(netns: str, chain: str, comment: str) -> tuple[int, int]:
    """Packets and bytes the ``chain`` rules tagged ``comment`` matched (``iptables -L -v -x``)."""
    out = _iptables(netns, "-L", chain, "-v", "-x", "-n").stdout
    packets = size = 0
    for line in out.splitlines():
        parts = line.split()
        if f"/* {comment} */" in line and len(parts) >= 2 and parts[0].isdigit():
            packets += int(parts[0])
            size += int(parts[1])
    return packets, size


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
        self._injected = False
        #: ``{chain: (packets, bytes)}`` dropped, read by revert before deleting the rules.
        self.dropped: dict[str, tuple[int, int]] | None = None
        self._capture_error: str | None = None
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

    @property
    def comment(self) -> str:
        return f"pggit-chaos-{self._id}"

    def inject(self) -> None:
        self.check()
        self._injected = True
        for rule in self.rules:
            if not rule_present(self.netns.name, rule):
                _iptables(self.netns.name, "-A", *rule)

    def revert(self) -> None:
        if self._injected and self.dropped is None and self._capture_error is None:
            try:
                self.dropped = {chain: rule_counters(self.netns.name, chain, self.comment)
                                for chain in dict.fromkeys(rule[0] for rule in self.rules)}
            except (FaultError, OSError, subprocess.SubprocessError) as exc:
                self._capture_error = str(exc)
        revert_rules(self.intent().undo)

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The DROP rules' packet counters, and the workload's timeouts or stall."""
        if self._capture_error is not None or self.dropped is None:
            return FaultEvidence.unreadable(
                self.type, self._capture_error or "the rules' counters were not read")
        packets = sum(p for p, _ in self.dropped.values())
        size = sum(b for _, b in self.dropped.values())
        incoming = self.dropped.get("INPUT", (0, 0))[0]
        outgoing = self.dropped.get("OUTPUT", (0, 0))[0]
        figures: dict[str, Figure] = {
            "dropped_packets": packets, "dropped_bytes": size,
            "dropped_packets_in": incoming, "dropped_packets_out": outgoing,
            "indeterminate_during": window.indeterminate,
            "longest_ack_gap_seconds": round(window.longest_ack_gap_seconds, 3),
        }
        noticed = window.indeterminate > 0 or window.failed > 0 or window.stalled(0.5)
        dropped = (f"dropped {packets} packet(s) ({size} bytes; {incoming} in, {outgoing} out) "
                   f"between {self.netns.host_address} and {self.netns.ns_address}")
        if packets > 0 and noticed:
            return FaultEvidence(True, f"{dropped}; workload: {window.describe()}", figures)
        why = ("no packet matched the DROP rules" if packets == 0
               else f"{dropped}, but the workload did not notice ({window.describe()})")
        return FaultEvidence(False, f"network-partition did not bite: {why}", figures)
