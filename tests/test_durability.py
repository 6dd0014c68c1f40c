"""Proof that a Fail means something: a crash with asynchronous commit really loses commits.

A server of our own runs with ``synchronous_commit=off`` and a 10 s ``wal_writer_delay``:
acknowledged commits sit in WAL buffers in shared memory. A SIGKILL of the postmaster and all
backends (a pod-kill) under commit load, then crash recovery, drops them, and the invariant
checker must name them as lost. The same run with default durability loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from pggit_chaos.engine.history import History
from pggit_chaos.engine.invariants import InvariantReport, check_invariants
from pggit_chaos.engine.workload import Workload
from pggit_chaos.local import EmbeddedPostgres
from waits import acknowledged, every_client_acknowledged, until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LOSSY = {"synchronous_commit": "off", "wal_writer_delay": "10000ms"}


def _pod_kill_under_load(settings: Mapping[str, object]) -> tuple[InvariantReport, History]:
    """4 clients commit as fast as they can; SIGKILL the server mid-load; restart; check."""
    from pggit_chaos.pggit import install

    with EmbeddedPostgres(settings=settings) as server:
        dsn = server.create_database("durability")
        install(dsn)
        history = History()
        load = Workload(
            dsn, clients=4, rate=0, op_timeout=5, mix={"commit": 1, "ddl": 0}, history=history
        )

        async def run() -> None:
            async with load:
                await until(
                    lambda: history.counts().ok >= 150 and every_client_acknowledged(history, 4),
                    "150 commits were acknowledged, by all 4 clients",
                )
                await asyncio.to_thread(server.kill)  # while the clients are committing
                await asyncio.to_thread(server.start)  # crash recovery (WAL replay)
                up = history.now()
                await until(
                    lambda: acknowledged(history, after=up) > 0,
                    "a commit was acknowledged by the recovered server",
                )

        asyncio.run(run())
        return check_invariants(dsn, history, load.run_id), history


def test_asynchronous_commit_crash_loses_acknowledged_commits() -> None:
    attempts = []
    for _ in range(3):  # a loss is all but certain; repeat rather than flake if none
        report, history = _pod_kill_under_load(LOSSY)
        attempts.append(report.counts.lost)
        if report.counts.lost > 0:
            break
    assert report.counts.lost > 0, f"no acknowledged commit lost in {len(attempts)} crashes"
    assert not report.passed
    lost = report.invariant("commits-durable")
    assert not lost.passed and lost.examples
    assert all("missing from pggit.commits" in example for example in lost.examples)
    # The examples name commits the workload saw acknowledged, with their Trinity IDs.
    acked = {
        p.invoke.value["message"]: p.completion.result
        for p in history.pairs()
        if p.completion is not None and p.outcome == "ok"
    }
    for example in lost.examples:
        message = example.split("'")[1]
        assert message in acked and str(acked[message]) in example
    assert report.counts.duplicated == report.counts.unexpected == 0


def test_default_durability_crash_loses_nothing() -> None:
    report, history = _pod_kill_under_load({})
    assert report.counts.ok > 100
    assert report.counts.indeterminate >= 1  # the crash really cut operations off
    assert report.counts.lost == 0, report.invariant("commits-durable").examples
    assert report.passed, report.to_dict()
    assert report.counts.invoked == history.counts().invoked
