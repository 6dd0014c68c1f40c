"""The progress display tells the truth: the live line keeps ticking through long synchronous
phases, and without a terminal each phase is one timestamped line, printed once."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console
from rich.live import Live

from pggit_chaos.engine.journal import Journal, Phase
from pggit_chaos.engine.lifecycle import Progress
from pggit_chaos.runner import LiveObserver

pytestmark = pytest.mark.unit

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def _quiet_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, force_terminal=False, color_system=None), buffer


def test_without_a_terminal_one_timestamped_line_per_phase_and_no_repeats() -> None:
    out, buffer = _quiet_console()
    observer = LiveObserver(None, "pod-kill", out=out)
    journal = Journal(experiment="pod-kill")
    for phase in (Phase.Pending, Phase.SteadyState, Phase.Injecting):
        journal.enter_phase(phase, f"{phase.value} detail")
        observer.on_phase(journal)
    journal.mark_injected()
    observer.on_phase(journal)  # the engine reports marks inside a phase too
    journal.mark_reverted()
    journal.enter_phase(Phase.Recovering)
    observer.on_phase(journal)
    journal.mark_recovered(0.08)
    observer.on_phase(journal)
    observer.on_phase(journal)
    journal.enter_phase(Phase.Verifying)
    observer.on_phase(journal)
    for n in range(5):
        observer.on_progress(Progress(Phase.Verifying, 12.0 + n, 0.0, 400, 2))
    journal.finish(Phase.Passed, "nothing lost, nothing corrupted")
    observer.on_phase(journal)
    observer.on_phase(journal)

    lines = buffer.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == [
        "Pending", "SteadyState", "Injecting", "Recovering", "Verifying", "Passed"]
    assert all(STAMP.match(line) for line in lines), lines
    assert all(line.split()[1] == "pod-kill" for line in lines)
    assert lines[2].endswith("Injecting detail")
    assert lines[-1].endswith("nothing lost, nothing corrupted")


def test_a_dry_run_ends_as_a_plan_not_an_abort() -> None:
    out, buffer = _quiet_console()
    observer = LiveObserver(None, "cpu-throttle", out=out)
    journal = Journal(experiment="cpu-throttle")
    journal.enter_phase(Phase.Pending, "fault cpu-throttle, substrate local")
    observer.on_phase(journal)
    journal.dry_run_plan = ["inject cpu-throttle: cpuPercent 10"]
    journal.finish(Phase.Aborted, "dry run: nothing injected")
    observer.on_phase(journal)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert "planned (dry run)" in lines[1] and lines[1].endswith("nothing injected")
    assert "Aborted" not in buffer.getvalue()
    assert "planned (dry run)" in observer.render().plain


def test_the_live_line_reads_the_run_clock_when_rendered() -> None:
    observer = LiveObserver(None, "x", out=_quiet_console()[0])
    journal = Journal(experiment="x")
    journal.enter_phase(Phase.Verifying)
    observer.on_phase(journal)
    journal.set_origin(time.monotonic() - 9.3)
    assert " 9.3s" in observer.render().plain
    journal.set_origin(time.monotonic() - 21.4)  # no progress callback in between
    assert " 21.4s" in observer.render().plain
    journal.finish(Phase.Passed, "ok")
    frozen = observer.render().plain
    time.sleep(0.2)
    assert observer.render().plain == frozen  # a finished run's time stops


def test_the_live_line_keeps_ticking_while_the_caller_blocks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A long synchronous phase (the checks suite, a revert): no callbacks at all, the line
    still counts, because rich re-renders it from its own thread. (On a terminal that is not
    dumb: with TERM=dumb, as in an editor's shell, rich never re-renders a live display.)"""
    monkeypatch.setenv("TERM", "xterm")
    buffer = io.StringIO()
    terminal = Console(file=buffer, width=120, force_terminal=True, color_system=None)
    live = Live(console=terminal, auto_refresh=True, refresh_per_second=20, transient=True)
    observer = LiveObserver(live, "x", out=terminal)
    journal = Journal(experiment="x")
    journal.enter_phase(Phase.Verifying)
    seen: set[str] = set()
    with live:
        observer.on_phase(journal)
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)  # blocking, as a synchronous phase would
            seen = set(re.findall(r"Verifying\s+(\d+\.\d)s", buffer.getvalue()))
    assert len(seen) >= 3, seen
