"""Benchmark: the whole checks suite at a profile against a fresh embedded PostgreSQL with pgGit.

Prints the start-up time of the embedded PostgreSQL (initdb + start + pgGit install), the
suite's wall time (pytest subprocess included), the number of checks and hypothesis examples,
and the total. Target on a 2-core machine: total <= 20 s at profile ci. Figures are printed,
never asserted.

    python benchmarks/bench_checks.py [--profile ci|dev|thorough] [--runs N] [--destructive]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pggit_chaos.checks.runner import run_checks
from pggit_chaos.local import embedded_pggit


def one_run(profile: str, destructive: bool) -> tuple[float, float, int, int, int, int]:
    """(start-up s, suite s, checks, examples, failed, skipped) of one fresh cluster + suite."""
    started = time.monotonic()
    with embedded_pggit() as (_server, dsn):
        ready = time.monotonic()
        result = run_checks(dsn, profile=profile, include_destructive=destructive, quiet=True)
        done = time.monotonic()
    for failure in result.failures:
        print(f"  FAILED {failure.name}: {failure.message[:120]}")
    return (
        ready - started, done - ready, len(result.checks), result.hypothesis_examples,
        result.failed, result.skipped,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", choices=["ci", "dev", "thorough"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--destructive", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in range(args.runs):
        startup, suite, checks, examples, failed, skipped = one_run(args.profile, args.destructive)
        rows.append((startup, suite))
        print(
            f"run {n + 1}: start-up {startup:.2f}s (initdb+start+pgGit install), "
            f"suite {suite:.2f}s, total {startup + suite:.2f}s; {checks} checks "
            f"({failed} failed, {skipped} skipped), {examples} hypothesis examples"
        )
    startups, suites = [r[0] for r in rows], [r[1] for r in rows]
    totals = [a + b for a, b in rows]
    median = statistics.median
    print(
        f"profile {args.profile}, {args.runs} runs: median start-up {median(startups):.2f}s, "
        f"median suite {median(suites):.2f}s, median total {median(totals):.2f}s "
        f"(target <= 20 s at ci), max total {max(totals):.2f}s"
    )


if __name__ == "__main__":
    main()
