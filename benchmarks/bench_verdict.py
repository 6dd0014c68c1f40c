"""Time to verdict for an experiment (default ``experiments/01-pod-kill.yaml``) on this machine.

Prints the wall time from start to verdict, each phase's seconds and share, and the fault's
duration, so "duration + overhead" can be compared with the target (overhead <= 15 s on 2 cores,
embedded start-up, recovery and checks at profile ``ci`` included).

    python benchmarks/bench_verdict.py [FILE] [--duration 10s] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from pggit_chaos.runner import run_experiment_locally
from pggit_chaos.spec import load_experiments, load_experiments_text

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(ROOT / "experiments" / "01-pod-kill.yaml"))
    parser.add_argument("--duration", default="10s", help="fault duration to hold")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    manifest = load_experiments(args.file)[0].to_manifest()
    manifest["spec"]["duration"] = args.duration
    (experiment,) = load_experiments_text(yaml.safe_dump(manifest), "<benchmark>")
    totals: list[float] = []
    with tempfile.TemporaryDirectory() as reports:
        for n in range(args.repeat):
            started = time.perf_counter()
            journal, _, _ = run_experiment_locally(
                experiment, dsn=None, report_base=Path(reports), quiet=True
            )
            total = time.perf_counter() - started
            totals.append(total)
            hold = float(experiment.spec.duration)
            print(
                f"run {n + 1}: {experiment.name} verdict={journal.verdict} "
                f"total={total:.2f}s fault={hold:.1f}s overhead={total - hold:.2f}s"
            )
            for phase, seconds in journal.phase_durations():
                print(f"  {phase.value:<12} {seconds:7.2f}s  {100 * seconds / total:5.1f}%")
            reporting = total - sum(s for _, s in journal.phase_durations())
            print(f"  {'report+exit':<12} {reporting:7.2f}s  {100 * reporting / total:5.1f}%")
            print(
                f"  recovery {journal.recovery_seconds:.2f}s, "
                f"checks {journal.checks.passed} passed / {journal.checks.failed} failed, "
                f"{journal.workload.ok} ok ops"
            )
    if len(totals) > 1:
        print(f"median total {statistics.median(totals):.2f}s over {len(totals)} runs")


if __name__ == "__main__":
    main()
