"""Waiting on events, not on clocks: a test's outcome must not depend on the machine's speed.

A test that sleeps N seconds and then expects M operations fails on a busy machine. These
helpers wait until what the test needs has happened (so many operations acknowledged, a
reconnect counted, a scratch schema seen), with a generous deadline that only a real hang
reaches — and then the failure names what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pggit_chaos.engine.history import History
from pggit_chaos.engine.workload import Workload

#: Seconds before a wait gives up: far beyond any healthy run, even on a loaded machine.
DEADLINE = 120.0
#: How often a condition is looked at.
EVERY = 0.05


async def until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Return once ``predicate()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting until {what}")
        await asyncio.sleep(EVERY)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """:func:`until` for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting until {what}")
        time.sleep(EVERY)


def acknowledged(
    history: History, *functions: str, after: float | None = None, process: int | None = None
) -> int:
    """How many operations completed ok (of ``functions``, after ``after``, by ``process``)."""
    return sum(
        1
        for op in list(history.ops)
        if op.type == "ok"
        and (not functions or op.f in functions)
        and (after is None or op.time > after)
        and (process is None or op.process == process)
    )


def every_client_acknowledged(history: History, clients: int, after: float | None = None) -> bool:
    """Each of the workload's ``clients`` has had an operation acknowledged (so is connected)."""
    return all(acknowledged(history, after=after, process=p) > 0 for p in range(clients))


async def run_until(load: Workload, predicate: Callable[[], bool], what: str) -> None:
    """Run ``load`` until ``predicate()`` holds, then stop it."""
    async with load:
        await until(predicate, what)
