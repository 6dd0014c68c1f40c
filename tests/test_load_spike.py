"""load-spike: the workload multiplied past max_connections, its evidence, and experiment 14.

The workload tests run the real workload against a real embedded PostgreSQL with few connection
slots, so the server's own refusals ("sorry, too many clients already") are what is counted.
The evidence tests feed the fault windows as the engine builds them (no database needed).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from pggit_chaos.engine.workload import APPLICATION_NAME, Workload, refused_for_slots
from pggit_chaos.errors import FaultError, InvalidExperiment
from pggit_chaos.faults.base import DrivesWorkload, WorkloadWindow
from pggit_chaos.faults.load import LoadSpike
from pggit_chaos.local.server import embedded_pggit


class _Workload:
    """What a LoadSpike sees of a workload, recording the calls it gets."""

    def __init__(self, clients: int = 4, rate: float = 50.0) -> None:
        self.clients = clients
        self.rate = rate
        self.spikes: list[tuple[int, float]] = []
        self.calms = 0

    def spike(self, clients: int, rate: float) -> None:
        self.spikes.append((clients, rate))

    def calm(self) -> int:
        self.calms += 1
        return 0 if not self.spikes else self.spikes[-1][0] - self.clients


def _window(**kwargs: Any) -> WorkloadWindow:
    defaults: dict[str, Any] = {"seconds": 5.0, "ok": 500, "baseline_ok_per_s": 50.0,
                                "p50_ms": 10.0, "p95_ms": 20.0, "baseline_p50_ms": 10.0,
                                "baseline_p95_ms": 20.0, "peak_connections": 30}
    return WorkloadWindow(**{**defaults, **kwargs})


# ------------------------------------------------------------------------ the fault, no database


@pytest.mark.unit
def test_inject_multiplies_clients_and_rate_and_revert_calms() -> None:
    fault = LoadSpike(16, 5.0, 1000)
    workload = _Workload(4, 50.0)
    assert isinstance(fault, DrivesWorkload)
    fault.attach_workload(workload)
    fault.inject()
    assert workload.spikes == [(64, 250.0)]
    fault.revert()
    fault.revert()  # idempotent
    assert workload.calms == 2
    assert fault.intent().undo["kind"] == "thread"
    assert "4 → 64 workload clients, 50 → 250 ops/s" in fault.intent().description


@pytest.mark.unit
def test_an_unpaced_workload_stays_unpaced() -> None:
    fault = LoadSpike(3, 5.0, 1000)
    workload = _Workload(2, 0.0)
    fault.attach_workload(workload)
    fault.inject()
    assert workload.spikes == [(6, 0.0)]
    assert "as fast as possible" in fault.plan_lines()[0]


@pytest.mark.unit
def test_a_spike_past_the_client_cap_is_refused_when_attached() -> None:
    with pytest.raises(InvalidExperiment, match=r"64 clients x 20 = 1280 clients, more than "
                       r"the 1000"):
        LoadSpike(20, 5.0, 1000).attach_workload(_Workload(64))


@pytest.mark.unit
def test_without_a_workload_nothing_is_injected() -> None:
    fault = LoadSpike(10, 5.0, 1000)
    fault.revert()  # nothing to undo
    with pytest.raises(FaultError, match="no workload"):
        fault.inject()
    assert not fault.evidence(_window(refused_connections=5)).bit


@pytest.mark.unit
def test_refusals_are_evidence_that_it_bit() -> None:
    fault = LoadSpike(16, 5.0, 1000)
    fault.attach_workload(_Workload())
    fault.inject()
    evidence = fault.evidence(_window(refused_connections=308))
    assert evidence.bit
    assert "308 refused by the server (too many clients)" in evidence.summary
    assert evidence.figures["refused_connections"] == 308
    assert evidence.figures["spike_clients"] == 64


@pytest.mark.unit
def test_a_latency_rise_without_refusals_is_evidence_too() -> None:
    fault = LoadSpike(16, 5.0, 1000)
    fault.attach_workload(_Workload())
    fault.inject()
    assert fault.evidence(_window(p95_ms=31.0)).bit  # 1.55 x the baseline's p95
    flat = fault.evidence(_window(p95_ms=25.0))
    assert not flat.bit
    assert flat.summary.startswith("load-spike did not bite")
    assert "p50/p95 latency 10 ms/25 ms in the window against 10 ms/20 ms before" in \
        flat.summary
    assert not fault.evidence(_window(p95_ms=None, baseline_p95_ms=None)).bit


@pytest.mark.unit
def test_refusal_for_want_of_slots_is_recognised() -> None:
    assert refused_for_slots(psycopg.OperationalError(
        'connection failed: FATAL:  sorry, too many clients already'))
    assert refused_for_slots(psycopg.OperationalError(
        "FATAL:  remaining connection slots are reserved for non-replication superuser "
        "connections"))
    assert not refused_for_slots(psycopg.OperationalError("connection refused"))
    assert not refused_for_slots(TimeoutError())


# ----------------------------------------------------------- the real workload past the slots


def _workload_backends(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                       "LIKE %s", (f"{APPLICATION_NAME}-%",)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_spike_past_max_connections_is_refused_and_calm_frees_the_slots() -> None:
    # 12 slots (3 of them reserved for superusers, which the workload is here): 24 clients
    # overflow them. The server's refusals are counted, and after calm() the spike's
    # connections are closed and the workload goes on with its own clients.
    with embedded_pggit({"max_connections": 12}) as (_, dsn), \
            psycopg.connect(dsn, autocommit=True) as monitor:  # its slot is taken before
        async def scenario() -> tuple[Workload, int, int]:
            workload = Workload(dsn, clients=2, rate=20.0, op_timeout=5.0)
            await workload.start()
            try:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(workload.spike, 24, 200.0)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not (workload.stats.refused and any(
                        op.type == "ok" and op.process > 1 for op in workload.history.ops)):
                    await asyncio.sleep(0.1)
                during = await asyncio.to_thread(_workload_backends, monitor)
                retired = workload.calm()
                after = during
                deadline = time.monotonic() + 15
                while after > 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    after = await asyncio.to_thread(_workload_backends, monitor)
                ok_before = workload.counts().ok
                await asyncio.sleep(1.0)
                assert workload.counts().ok > ok_before  # the own clients go on
                assert retired == 22
                return workload, during, after
            finally:
                await workload.stop()

        workload, during, after = asyncio.run(scenario())
    assert workload.stats.refused, "the server refused no connection"
    assert workload.stats.peak_connected <= 12 and during > 2
    assert after <= 2
    spiked = {op.process for op in workload.history.ops if op.type == "ok"}
    assert spiked - {0, 1}, "no operation of the spike's clients was acknowledged"
    assert workload.stats.errors == []


def test_a_spike_calmed_before_it_started_never_starts(pggit_dsn: str) -> None:
    async def scenario() -> Workload:
        workload = Workload(pggit_dsn, clients=2, rate=20.0)
        await workload.start()
        try:
            workload.spike(10, 100.0)
            assert workload.calm() == 0  # the loop has not started the spike yet
            await asyncio.sleep(0.5)
            return workload
        finally:
            await workload.stop()

    workload = asyncio.run(scenario())
    assert {op.process for op in workload.history.ops} <= {0, 1}


def test_spike_refuses_a_workload_that_is_not_running(pggit_dsn: str) -> None:
    from pggit_chaos.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not running"):
        Workload(pggit_dsn, clients=2).spike(10, 100.0)
