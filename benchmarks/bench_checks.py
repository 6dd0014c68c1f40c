"""Benchmark: the whole checks suite at a profile against a fresh PostgreSQL with a pgGit.

Two pgGit shapes: the embedded core, and the upstream-shaped pgGit of the tests
(tests/pggit_upstream, written from upstream pgGit's public API). Prints the start-up time
(initdb + start + pgGit install), the suite's wall time (pytest subprocess, the dead-run sweep
and the leftover audit included), the outcome counts (passed, failed, errors, differs,
skipped), hypothesis examples, and the total. Target on a 2-core machine: total <= 20 s at
profile ci for the embedded core. Figures are printed, never asserted.

    python benchmarks/bench_checks.py [--shape embedded|upstream|both] [--profile ci|dev|thorough]
                                      [--runs N] [--destructive]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from pggit_chaos.checks.runner import ChecksResult, run_checks
from pggit_chaos.local import EmbeddedPostgres, embedded_pggit


def _upstream_shape(server: EmbeddedPostgres) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pggit_upstream import install_upstream

    dsn = server.create_database("bench_upstream")
    install_upstream(dsn)
    return dsn


def one_run(shape: str, profile: str, destructive: bool) -> tuple[float, float, ChecksResult]:
    """(start-up s, suite s, result) of one fresh cluster + pgGit of ``shape`` + the suite."""
    started = time.monotonic()
    with embedded_pggit() as (server, dsn):
        if shape == "upstream":
            dsn = _upstream_shape(server)
        ready = time.monotonic()
        result = run_checks(dsn, profile=profile, include_destructive=destructive, quiet=True)
        done = time.monotonic()
    for failure in result.failures:
        print(f"  {failure.outcome.upper()} {failure.name}: {failure.message[:120]}")
    return ready - started, done - ready, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="both", choices=["embedded", "upstream", "both"])
    parser.add_argument("--profile", default="ci", choices=["ci", "dev", "thorough"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--destructive", action="store_true")
    args = parser.parse_args()
    shapes = ["embedded", "upstream"] if args.shape == "both" else [args.shape]
    for shape in shapes:
        rows = []
        for n in range(args.runs):
            startup, suite, r = one_run(shape, args.profile, args.destructive)
            rows.append((startup, suite))
            print(
                f"{shape} run {n + 1}: start-up {startup:.2f}s (initdb+start+pgGit install), "
                f"suite {suite:.2f}s, total {startup + suite:.2f}s; {len(r.checks)} checks: "
                f"{r.passed} passed, {r.failed} failed, {r.errors} errors, {r.differs} differ, "
                f"{r.skipped} skipped; {r.hypothesis_examples} hypothesis examples; {r.verdict}"
            )
        startups, suites = [r[0] for r in rows], [r[1] for r in rows]
        totals = [a + b for a, b in rows]
        median = statistics.median
        print(
            f"{shape}, profile {args.profile}, {args.runs} runs: median start-up "
            f"{median(startups):.2f}s, median suite {median(suites):.2f}s, median total "
            f"{median(totals):.2f}s (target <= 20 s at ci), max total {max(totals):.2f}s"
        )


if __name__ == "__main__":
    main()
