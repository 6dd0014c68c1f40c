"""Benchmark: the wall time of the README's test command, tier by tier.

Runs ``bash scripts/test`` (lint, unit, the server-backed tiers in parallel, PostgreSQL 16 and
18), optionally followed by the fresh-root tier that ``.ci/run`` adds, keeps the whole output
in a log file, and prints one line per tier: its wall time, its outcome and pytest's counts.
The figures are printed, never asserted. On a shared 2-core machine they move with the load:
say what else ran when you quote them.

    python benchmarks/bench_suite.py [--workers N] [--freshroot] [--log FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = re.compile(r"^== tier (\S+): ")
END = re.compile(r"^== tier (\S+) +(\d+)s  (.*)$")
COUNTS = re.compile(r"(\d+ (?:passed|failed|skipped|deselected|errors?|xfailed|xpassed)"
                    r"(?:, \d+ \w+)*) in [\d.]+s")


def tiers(lines: list[str]) -> list[tuple[str, int, str, str]]:
    """(tier, seconds, outcome, pytest counts) for each tier the output reports."""
    found: list[tuple[str, int, str, str]] = []
    counts = ""
    for line in lines:
        if START.match(line):
            counts = ""
        elif match := COUNTS.search(line):
            counts = match.group(1)
        elif match := END.match(line):
            found.append((match.group(1), int(match.group(2)), match.group(3), counts))
    return found


def run(command: list[str], env: dict[str, str], log: Path) -> tuple[list[str], float, int]:
    """Run ``command`` from the checkout, echoing and logging its output."""
    lines: list[str] = []
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as sink, subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
    return lines, time.monotonic() - started, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, help="pytest-xdist workers of the server tier")
    parser.add_argument("--freshroot", action="store_true",
                        help="also time the fresh-root tier (tests/test_fresh_root.py)")
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench_suite.log"))
    args = parser.parse_args()
    env = dict(os.environ)
    if args.workers:
        env["PGGIT_CHAOS_TEST_WORKERS"] = str(args.workers)
    args.log.write_text("", encoding="utf-8")
    lines, total, code = run(["bash", "scripts/test"], env, args.log)
    rows = tiers(lines)
    if args.freshroot and code == 0:
        python = Path(env.get("PGGIT_CHAOS_VENV", ROOT / ".venv")) / "bin" / "python"
        more, seconds, fresh_code = run(
            [str(python), "-m", "pytest", "-q", "-m", "freshroot", "tests/test_fresh_root.py"],
            env, args.log)
        found = [COUNTS.search(line) for line in more]
        counts = next((m.group(1) for m in reversed(found) if m), "")
        rows.append(("freshroot", round(seconds), "passed" if fresh_code == 0
                     else f"FAILED (exit {fresh_code})", counts))
    print(f"\nwall time per tier ({os.cpu_count()} cores; output in {args.log}):")
    for name, seconds, outcome, counts in rows:
        print(f"  {name:<9} {seconds // 60:3d}m{seconds % 60:02d}s  {outcome:<18} {counts}")
    print(f"  {'scripts/test':<9} {int(total) // 60:3d}m{int(total) % 60:02d}s  exit {code}"
          " (with setup)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
