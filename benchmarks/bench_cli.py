"""Benchmark: how fast the CLI answers when nothing runs (--help, a bad file, validate).

Each case is the real command in a fresh interpreter (``python -m pggit_chaos.cli ...``),
run ``--runs`` times; the median and the fastest wall time are printed, then what
``python -X importtime`` says the slowest case spent importing, and which heavy packages it
loaded (it should load none of matplotlib, hypothesis, pytest, psycopg, psycopg_pool, rich).
``--source DIR`` measures another checkout (e.g. an older commit unpacked with
``git archive``) to compare before and after. Figures are printed, never asserted.

    python benchmarks/bench_cli.py [--runs N] [--source DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "matplotlib", "hypothesis", "pytest", "psycopg", "psycopg_pool", "rich", "prometheus_client"
)


def cases(tmp: Path, experiments: Path) -> dict[str, list[str]]:
    bad = tmp / "bad.yaml"
    bad.write_text(
        "apiVersion: chaos.pggit.io/v1alpha1\nkind: PgGitChaosExperiment\n"
        "metadata: {name: bad}\nspec:\n  fault: {type: pod-kill}\n  duration: soon\n",
        encoding="utf-8",
    )
    broken = tmp / "broken.yaml"
    broken.write_text("spec:\n  fault: {type: pod-kill\n", encoding="utf-8")
    return {
        "--help": ["--help"],
        "run --help": ["run", "--help"],
        "run bad.yaml (invalid field)": ["run", str(bad)],
        "run broken.yaml (YAML syntax)": ["run", str(broken)],
        "run missing.yaml": ["run", str(tmp / "missing.yaml")],
        "validate experiments/": ["validate", str(experiments)],
    }


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    return time.perf_counter() - started, done.returncode


def import_profile(
    args: list[str], env: dict[str, str]
) -> tuple[float, list[tuple[float, str]], set[str]]:
    """(seconds importing, the 8 slowest top-level imports, every module loaded) of a command."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pggit_chaos.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    top: list[tuple[float, str]] = []
    modules: set[str] = set()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        modules.add(name.strip())
        if cumulative.strip().isdigit() and name.startswith(" ") and not name.startswith("  "):
            top.append((int(cumulative) / 1e6, name.strip()))
    top.sort(reverse=True)
    return sum(seconds for seconds, _ in top), top[:8], modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to measure")
    options = parser.parse_args()
    source = options.source.resolve()
    env = {**os.environ, "PYTHONPATH": str(source / "operator")}
    version = sys.version.split()[0]
    print(f"pggit-chaos CLI start-up of {source}: {options.runs} runs each, python {version}")
    with tempfile.TemporaryDirectory() as tmp:
        all_cases = cases(Path(tmp), source / "experiments")
        slowest: tuple[float, str] = (0.0, "")
        for name, args in all_cases.items():
            command = [sys.executable, "-m", "pggit_chaos.cli", *args]
            timed(command, env)  # warm the page cache and the bytecode
            results = [timed(command, env) for _ in range(options.runs)]
            seconds = [s for s, _ in results]
            median = statistics.median(seconds)
            print(
                f"  {name:<32} median {median:5.2f} s   fastest {min(seconds):5.2f} s   "
                f"exit {results[0][1]}"
            )
            if name != "--help" and median > slowest[0]:
                slowest = (median, name)
        name = slowest[1]
        total, top, modules = import_profile(all_cases[name], env)
        print(f"imports of '{name}' (python -X importtime): {total:.2f} s, slowest:")
        for seconds, module in top:
            print(f"  {seconds:5.3f} s  {module}")
        heavy = [h for h in HEAVY if h in modules]
        print(f"heavy packages it loaded: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
