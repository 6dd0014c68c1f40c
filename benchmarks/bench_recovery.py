"""Recovery seconds of real local faults: pod-kill, cpu-throttle, network-partition (root).

Prints, per fault, the median (and min/max) of N runs of the time from revert — from injection
for pod-kill, whose recovery includes the restart delay and crash recovery — until a probe
(fresh connection + ``pggit.health_check()``) answers healthy. Each fault is held for
``--hold`` seconds while a client keeps running commits.
Run: ``python benchmarks/bench_recovery.py [--runs 5] [fault ...]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from pggit_chaos.local import StateFile
from pggit_chaos.local.substrate import LocalSubstrate
from pggit_chaos.spec import Experiment

FAULTS: dict[str, dict[str, Any]] = {
    "pod-kill": {"type": "pod-kill", "podKill": {"restartDelay": "500ms"}},
    "cpu-throttle": {"type": "cpu-throttle", "cpuThrottle": {"cpuPercent": 5}},
    "network-partition": {"type": "network-partition"},
}


def _load(dsn: str, stop: threading.Event) -> None:
    """A client committing through pgGit until stopped, reconnecting after errors."""
    conn: psycopg.Connection[Any] | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
            conn.execute("SELECT pggit.commit_changes('main', 'bench')")
        except psycopg.Error:
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
        time.sleep(0.01)
    if conn is not None:
        conn.close()


def _wait_healthy(substrate: LocalSubstrate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not substrate.probe(2.0).healthy:
        if time.monotonic() > deadline:
            raise SystemExit(f"not healthy again within {timeout:g}s")
        time.sleep(0.01)


def measure(name: str, runs: int, hold: float, state: StateFile) -> list[float]:
    experiment = Experiment.new(name, {
        "target": {"selector": {"matchLabels": {"app": "pg"}}},
        "fault": FAULTS[name], "duration": f"{max(1, round(hold))}s",
    })
    substrate = LocalSubstrate(state)
    seconds: list[float] = []
    try:
        substrate.prepare(experiment)
        stop = threading.Event()
        client = threading.Thread(target=_load, args=(substrate.dsn, stop), daemon=True)
        client.start()
        for _ in range(runs):
            fault = substrate.build_fault(experiment)
            intent = fault.intent()
            substrate.record_intent(intent)
            injected = time.monotonic()
            try:
                fault.inject()
                if fault.recovery_from_injection:  # pod-kill: it heals itself while held
                    _wait_healthy(substrate)
                    seconds.append(time.monotonic() - injected)
                time.sleep(max(0.0, injected + hold - time.monotonic()))
            finally:
                reverted = time.monotonic()
                fault.revert()
                substrate.clear_intent(intent)
            _wait_healthy(substrate)
            if not fault.recovery_from_injection:
                seconds.append(time.monotonic() - reverted)
        stop.set()
        client.join(30)
    finally:
        substrate.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each fault is held")
    parser.add_argument("faults", nargs="*", default=list(FAULTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        state = StateFile(Path(folder) / "state.json")
        print(f"{'fault':<18} {'median s':>9} {'min s':>7} {'max s':>7}  (runs={args.runs}, "
              f"hold={args.hold:g}s)")
        for name in args.faults:
            values = measure(name, args.runs, args.hold, state)
            print(f"{name:<18} {statistics.median(values):>9.3f} {min(values):>7.3f} "
                  f"{max(values):>7.3f}")


if __name__ == "__main__":
    main()
