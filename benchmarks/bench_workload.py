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
import subprocess
import tempfile
from pathlib import Path

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
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with embedded_pggit() as (_server, dsn):
        parts = dict(item.split("=", 1) for item in dsn.split())
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA bench_pgbench")
        rows: list[tuple[str, float, float, str]] = []

        pg_commit = pgbench(parts, _COMMIT_SCRIPT, args.clients, args.seconds, "prepared")
        wl_commit, history, run_id = asyncio.run(
            workload(dsn, {"commit": 1, "ddl": 0}, args.clients, args.seconds)
        )
        verdict = "pass" if check_invariants(dsn, history, run_id).passed else "FAIL"
        rows.append(("commit_changes calls", pg_commit, wl_commit, verdict))

        # pgbench counts one CREATE+DROP pair per transaction: compare DDL statements/s.
        pg_ddl = 2 * pgbench(parts, _DDL_SCRIPT, args.clients, args.seconds, "simple")
        wl_ddl, history, run_id = asyncio.run(
            workload(dsn, {"commit": 0, "ddl": 1}, args.clients, args.seconds)
        )
        verdict = "pass" if check_invariants(dsn, history, run_id).passed else "FAIL"
        rows.append(("DDL statements", pg_ddl, wl_ddl, verdict))

    print(f"clients={args.clients} seconds={args.seconds:g} (one embedded server, same run)")
    print(f"{'statement':<24}{'pgbench ops/s':>15}{'workload ops/s':>16}{'ratio':>8}  invariants")
    for name, pg, wl, verdict in rows:
        ratio = wl / pg if pg else 0.0
        print(f"{name:<24}{pg:>15.0f}{wl:>16.0f}{ratio:>8.2f}  {verdict}")


if __name__ == "__main__":
    main()
