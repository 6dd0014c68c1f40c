"""The ``load-spike`` fault: the engine's own workload multiplied for the fault's window.

Built by both substrates alike (it acts through the workload, which runs in the runner's
process: ``pggit-chaos run`` locally, the runner pod in a cluster). The engine attaches its
running workload (:class:`~pggit_chaos.faults.base.DrivesWorkload`); :meth:`LoadSpike.inject`
raises it to ``clients x clientsFactor`` clients at ``rate x rateFactor`` operations per
second, :meth:`LoadSpike.revert` retires the extra clients and restores the rate. The extra
clients record their operations into the run's history like the others, so the invariant
checker holds every acknowledged one to account.

Evidence: connections the server refused for want of slots (SQLSTATE 53300, past
``max_connections``) and the latency percentiles of the window against those before it. The
spike's clients are tasks of the runner and die with it: nothing to undo after a crash.
"""

from __future__ import annotations

from pggit_chaos.errors import FaultError, InvalidExperiment
from pggit_chaos.faults.base import (
    FaultEvidence,
    FaultIntent,
    Figure,
    WorkloadControl,
    WorkloadWindow,
)

__all__ = ["LATENCY_RISE", "UNDO", "LoadSpike"]

#: The ``undo`` of the fault's intent: the spike's clients are tasks of the runner.
UNDO = {"kind": "thread", "what": "load spike's clients in the runner's process"}
#: The window's p95 latency must reach this multiple of the baseline's to count as a rise.
LATENCY_RISE = 1.5


class LoadSpike:
    """More clients and a higher rate for the window; refusals and latency as evidence."""

    type = "load-spike"
    recovery_from_injection = False

    def __init__(self, clients_factor: int, rate_factor: float, max_clients: int) -> None:
        self.clients_factor = clients_factor
        self.rate_factor = rate_factor
        self.max_clients = max_clients
        self.workload: WorkloadControl | None = None
        self._intent: FaultIntent | None = None
        self._injected = False
        self._retired = 0

    def attach_workload(self, workload: WorkloadControl) -> None:
        """The running workload the spike multiplies (the engine calls this)."""
        self.workload = workload
        self.check()

    def _target(self) -> tuple[int, float]:
        workload = self.workload
        if workload is None:
            raise FaultError("load-spike: no workload is attached to multiply")
        return workload.clients * self.clients_factor, workload.rate * self.rate_factor

    def check(self) -> None:
        """Refuse a spike larger than the runner may open (before any injection)."""
        if self.workload is None:
            return
        clients, _ = self._target()
        if clients > self.max_clients:
            raise InvalidExperiment([(
                "spec.fault.loadSpike.clientsFactor",
                f"{self.workload.clients} clients x {self.clients_factor} = {clients} clients, "
                f"more than the {self.max_clients} a load spike may open")])

    def _describe(self) -> str:
        if self.workload is None:
            return f"workload clients x {self.clients_factor}, rate x {self.rate_factor:g}"
        clients, rate = self._target()
        pace = f"{rate:g} ops/s" if rate > 0 else "as fast as possible"
        return (f"{self.workload.clients} → {clients} workload clients, "
                f"{self.workload.rate:g} → {pace}")

    def plan_lines(self) -> list[str]:
        return [f"load spike: {self._describe()}; the extra clients disconnect at the revert"]

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self._intent = FaultIntent(
                type=self.type, target="the workload's clients", undo=dict(UNDO),
                description=f"load spike: {self._describe()}")
        return self._intent

    def inject(self) -> None:
        workload = self.workload
        if workload is None:
            raise FaultError("load-spike: no workload is attached to multiply")
        clients, rate = self._target()
        self._injected = True
        workload.spike(clients, rate)

    def revert(self) -> None:
        if self.workload is not None and self._injected:
            self._retired = max(self._retired, self.workload.calm())

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        if not self._injected or self.workload is None:
            return FaultEvidence(False, "load-spike did not bite: no spike was started")
        clients, rate = self._target()
        figures: dict[str, Figure] = {
            "spike_clients": clients,
            "spike_rate": rate,
            "retired_clients": self._retired,
            "refused_connections": window.refused_connections,
            "peak_connections": window.peak_connections,
            "window_ok_per_s": round(window.ok_per_s, 1),
            "baseline_ok_per_s": round(window.baseline_ok_per_s, 1),
        }
        for name in ("p50_ms", "p95_ms", "baseline_p50_ms", "baseline_p95_ms"):
            value = getattr(window, name)
            if value is not None:
                figures[name] = round(float(value), 1)
        before, during = window.baseline_p95_ms, window.p95_ms
        rose = (before is not None and during is not None and before > 0
                and during >= LATENCY_RISE * before)
        latency = (f"p50/p95 latency {_ms(window.p50_ms)}/{_ms(window.p95_ms)} in the window "
                   f"against {_ms(window.baseline_p50_ms)}/{_ms(window.baseline_p95_ms)} before")
        refused = window.refused_connections
        head = (f"load spike to {clients} clients: {window.peak_connections} connections at "
                f"the peak, {refused} refused by the server (too many clients)")
        bit = refused > 0 or rose
        if bit:
            return FaultEvidence(True, f"{head}; {latency}; {window.describe()}", figures)
        return FaultEvidence(
            False, f"load-spike did not bite: {head}, and the p95 latency did not reach "
            f"{LATENCY_RISE:g}x the baseline's ({latency})", figures)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
