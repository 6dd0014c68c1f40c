"""pgGit commit throughput as tracked objects accumulate: commits/s at 100, 10,000 and 100,000.

Starts one embedded PostgreSQL and, per size, a fresh database with the pgGit core installed
(the package's ``sql/pggit.sql``, or another core given with ``--sql``, e.g. an older checkout's
to compare). Each database gets 100 real tables created through pgGit's event triggers; the
rest of the tracked objects are active ``pggit.objects`` rows inserted in bulk (creating 100,000
real tables takes many minutes here: the commit reads ``pggit.objects``, not the catalog).
Then one client calls ``pggit.commit_changes`` back to back for a few seconds; the sizes take
turns over several rounds and the median per size is printed, with the ratio 100,000 / 100
(target >= 0.8).

    python benchmarks/bench_commit_cost.py [--seconds 2] [--rounds 5] [--sql PATH]
    python benchmarks/bench_commit_cost.py --quick      # a smoke run: 1 round of 1 s
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

from pggit_chaos.local import EmbeddedPostgres
from pggit_chaos.pggit import install_sql

SIZES = (100, 10_000, 100_000)
REAL_TABLES = 100


def prepare(server: EmbeddedPostgres, name: str, core: str, size: int) -> str:
    """A database with the core installed and ``size`` active tracked objects; its DSN."""
    dsn = server.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(core.encode("utf-8"))
        conn.execute("CREATE SCHEMA bench_real")
        for index in range(min(size, REAL_TABLES)):
            conn.execute(f"CREATE TABLE bench_real.t{index} (id bigint NOT NULL, v text)")
        synthetic = size - min(size, REAL_TABLES)
        if synthetic:
            conn.execute(
                "INSERT INTO pggit.objects (object_type, schema_name, object_name, full_name,"
                " schema_hash, is_active)"
                " SELECT 'TABLE', 'bench_synthetic', 't' || g, 'bench_synthetic.t' || g,"
                " md5(g::text), true FROM generate_series(1, %s) g",
                (synthetic,),
            )
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT count(*) FROM pggit.objects WHERE is_active").fetchone()
        assert row is not None
        if int(row[0]) != size:
            raise SystemExit(f"{name}: {row[0]} active tracked objects, wanted {size}")
    return dsn


def commits_per_second(dsn: str, seconds: float) -> float:
    """Back-to-back ``commit_changes`` calls of one client (autocommit) for ``seconds``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = "SELECT pggit.commit_changes('bench', %s)"
        args: Any = ("warm-up",)
        for _ in range(20):
            conn.execute(query, args, prepare=True)
        done = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            conn.execute(query, (f"m{done}",), prepare=True)
            done += 1
            now = time.perf_counter()
            if now >= deadline:
                return done / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per size")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all sizes")
    parser.add_argument("--sql", type=Path, help="install this pgGit core instead of the package's")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    core = args.sql.read_text(encoding="utf-8") if args.sql else install_sql()
    label = str(args.sql) if args.sql else "package core"
    results: dict[int, list[float]] = {size: [] for size in SIZES}
    with EmbeddedPostgres(settings={"fsync": False, "synchronous_commit": False}) as server:
        with psycopg.connect(server.socket_dsn(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {row[0] if row else '?'}, core: {label}")
        dsns = {}
        for size in SIZES:
            began = time.perf_counter()
            dsns[size] = prepare(server, f"bench_{size}", core, size)
            print(f"  prepared {size:>7,} tracked objects in {time.perf_counter() - began:.1f} s")
        for round_no in range(args.rounds):
            for size in SIZES:
                rate = commits_per_second(dsns[size], args.seconds)
                results[size].append(rate)
                print(f"  round {round_no + 1}: {size:>7,} objects: {rate:8.1f} commits/s")
    medians = {size: statistics.median(rates) for size, rates in results.items()}
    print("commits/s (median of rounds, one client):")
    for size in SIZES:
        print(f"  {size:>7,} tracked objects: {medians[size]:8.1f}")
    ratio = medians[SIZES[-1]] / medians[SIZES[0]]
    print(f"ratio {SIZES[-1]:,} / {SIZES[0]:,}: {ratio:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
