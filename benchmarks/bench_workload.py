"""Workload throughput against pgbench running the same statements, in one run.

Starts an embedded PostgreSQL with pgGit and measures, with the same number of clients and
for the same time: (a) commits — pgbench with a script calling ``pggit.commit_changes`` vs the
workload commit-only, as fast as possible; (b) DDL — pgbench CREATE + DROP TABLE pairs vs the
workload DDL-only. Prints ops/s of both and the ratio (target >= 0.5).

    python benchmarks/bench_workload.py [--clients 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import psycopg

from pggit_chaos.engine.history import History
from pggit_chaos.engine.invariants import check_invariants
from pggit_chaos.engine.workload import Workload
from pggit_chaos.local import embedded_pggit, find_bindir

_COMMIT_SCRIPT = """\\set n random(1, 1000000000)
SELECT pggit.commit_changes('bench_pgbench', 'pgbench:' || :client_id || ':' || :n);
"""
# Each client its own table name (pgbench's :client_id), as the workload's clients do.
_DDL_SCRIPT = """CREATE TABLE bench_pgbench.t_:client_id (id bigint, v text);
DROP TABLE bench_pgbench.t_:client_id;
"""


def pgbench(
    dsn_parts: dict[str, str], script: str, clients: int, seconds: float, mode: str
) -> float:
    """Transactions per second pgbench reached with ``script`` (one script run = 1 txn)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        cmd = [
            str(find_bindir() / "pgbench"),
            "-n",
            "-f",
            path,
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(max(1, round(seconds))),
            "-M",
            mode,
            "-h",
            dsn_parts["host"],
            "-p",
            dsn_parts["port"],
            "-U",
            dsn_parts["user"],
            dsn_parts["dbname"],
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        if out.returncode != 0:
            raise SystemExit(f"pgbench failed: {out.stderr.strip()}")
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
        if match is None:
            raise SystemExit(f"cannot read pgbench output:\n{out.stdout}")
        return float(match.group(1))
    finally:
        Path(path).unlink(missing_ok=True)


async def workload(
    dsn: str, mix: dict[str, int], clients: int, seconds: float
) -> tuple[float, History, str]:
    history = History()
    load = Workload(dsn, clients=clients, rate=0, op_timeout=10, mix=mix, history=history)
    async with load:
        await asyncio.sleep(seconds)
    return history.throughput(), history, load.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="per leg of each round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating pgbench/workload")
    args = parser.parse_args()
    kinds = {
        # pgbench counts one CREATE+DROP pair per transaction: compare DDL statements/s.
        "commit_changes calls": (_COMMIT_SCRIPT, "prepared", 1, {"commit": 1, "ddl": 0}),
        "DDL statements": (_DDL_SCRIPT, "simple", 2, {"commit": 0, "ddl": 1}),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in kinds}
    verdicts: dict[str, str] = dict.fromkeys(kinds, "pass")
    with embedded_pggit() as (_server, dsn):
        parts = dict(item.split("=", 1) for item in dsn.split())
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA bench_pgbench")
        for round_no in range(args.rounds):
            for name, (script, mode, per_txn, mix) in kinds.items():
                # Alternate who goes first: the shared machine's load drifts over time.
                legs = ["pgbench", "workload"] if round_no % 2 == 0 else ["workload", "pgbench"]
                pg = wl = 0.0
                for leg in legs:
                    if leg == "pgbench":
                        tps = pgbench(parts, script, args.clients, args.seconds, mode)
                        pg = per_txn * tps
                    else:
                        wl, history, run_id = asyncio.run(
                            workload(dsn, mix, args.clients, args.seconds)
                        )
                        if not check_invariants(dsn, history, run_id).passed:
                            verdicts[name] = "FAIL"
                results[name].append((pg, wl))
                print(
                    f"round {round_no + 1} {name}: pgbench {pg:.0f}/s workload {wl:.0f}/s "
                    f"ratio {wl / pg if pg else 0:.2f}",
                    flush=True,
                )

    print(
        f"\nclients={args.clients} seconds={args.seconds:g} rounds={args.rounds} "
        "(one embedded server, same run; medians)"
    )
    print(f"{'statement':<24}{'pgbench ops/s':>15}{'workload ops/s':>16}{'ratio':>8}  invariants")
    for name, pairs in results.items():
        pg = statistics.median(p for p, _ in pairs)
        wl = statistics.median(w for _, w in pairs)
        ratio = statistics.median(w / p for p, w in pairs if p)
        print(f"{name:<24}{pg:>15.0f}{wl:>16.0f}{ratio:>8.2f}  {verdicts[name]}")


if __name__ == "__main__":
    main()
