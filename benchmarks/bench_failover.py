"""Primary failover on the embedded primary + standby: recovery seconds and lost commits (root).

For synchronous and asynchronous replication, runs experiment 12 (``pggit-chaos run``, the
real CLI, each run on a fresh primary + standby pair) ``--runs`` times with the WAL sender
frozen ``--lag`` before the kill and a commit-only workload, and prints per mode:

- recovery seconds, kill -> the promoted standby accepts a write (``SELECT txid_current()``
  through the multi-host read-write DSN), median / min / max; read from the fault's evidence;
- the engine's recovery seconds (injection -> first healthy probe: includes the lag);
- acknowledged commits lost per run (the invariant checker's count) and the verdicts.

Synchronous replication must lose 0 in every run. Run:
``python benchmarks/bench_failover.py [--runs 5] [--lag 2s] [sync|async ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "experiments" / "12-primary-failover.yaml"


def one_run(replication: str, lag: str, folder: Path) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    spec["fault"]["primaryFailover"].update(replication=replication, standbyLag=lag,
                                            oldPrimary="down")
    spec["duration"] = "2s"
    spec["workload"].update(rate=100, mix={"commit": 1, "ddl": 0})
    spec["verification"]["checks"] = []
    experiment = folder / "failover.yaml"
    experiment.write_text(yaml.safe_dump(doc))
    reports = folder / "reports"
    env = {**os.environ, "PGGIT_CHAOS_STATE_DIR": str(folder / "state")}
    result = subprocess.run(
        [sys.executable, "-m", "pggit_chaos.cli", "run", str(experiment), "--report-dir",
         str(reports), "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    journals = sorted(reports.glob("*/journal.json"))
    if not journals:
        raise SystemExit(f"no journal (exit {result.returncode}): {result.stderr[-2000:]}")
    journal: dict[str, Any] = json.loads(journals[-1].read_text())
    return journal


def measure(replication: str, runs: int, lag: str) -> None:
    to_write: list[float] = []
    engine: list[float] = []
    lost: list[int] = []
    acked: list[int] = []
    verdicts: list[str] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
            journal = one_run(replication, lag, Path(tmp))
        evidence = journal.get("fault_evidence") or {}
        figures = evidence.get("figures", {})
        if not evidence.get("bit") or "kill_to_write_seconds" not in figures:
            raise SystemExit(f"{replication}: the failover did not bite: {evidence}")
        to_write.append(float(figures["kill_to_write_seconds"]))
        if journal.get("recovery_seconds") is not None:
            engine.append(float(journal["recovery_seconds"]))
        lost.append(int(journal["workload"]["lost"]))
        acked.append(int(journal["workload"]["ok"]))
        verdicts.append(str(journal["verdict"]))
        print(f"  {replication} run {len(lost)}: kill -> write {to_write[-1]:.3f} s, "
              f"lost {lost[-1]} of {acked[-1]} acknowledged, "
              f"{figures.get('unreplicated_wal_bytes_at_kill', '?')} WAL bytes not on the "
              f"standby at the kill, verdict {verdicts[-1]}", flush=True)
    print(f"{replication:>5}: recovery (kill -> new primary accepts writes) median "
          f"{statistics.median(to_write):.3f} s (min {min(to_write):.3f}, max "
          f"{max(to_write):.3f}) over {runs} runs; engine recovery (injection -> healthy, "
          f"incl. {lag} lag) median {statistics.median(engine):.3f} s; acknowledged commits "
          f"lost per run {lost} (median {statistics.median(lost):g}); verdicts {verdicts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lag", default="2s", help="standbyLag before each kill")
    parser.add_argument("modes", nargs="*",
                        help="replication modes to measure: sync, async (default: both)")
    args = parser.parse_args()
    modes = args.modes or ["sync", "async"]
    if unknown := [mode for mode in modes if mode not in ("sync", "async")]:
        parser.error(f"unknown replication mode(s): {', '.join(unknown)} (sync or async)")
    for mode in modes:
        measure(mode, args.runs, args.lag)


if __name__ == "__main__":
    main()
