"""Overhead of the network-latency proxy at 0 ms added delay: workload ops/s through it ÷ direct.

Starts an embedded PostgreSQL with pgGit and a :class:`~pggit_chaos.faults.proxy.LatencyProxy`
in pass-through (exactly what a ``network-latency`` run's workload connects through before and
after its fault), then runs the engine's workload as fast as it can, alternately directly and
through the proxy, for the same time and clients. Prints ops/s of both per round, the median
ratio and the ratio of the totals (target >= 0.8; short alternating legs, since the load of a
shared machine drifts), and — as a check that the same proxy does bite — the p50 latency of one
leg through it with a 20 ms delay switched on.

    python benchmarks/bench_latency_proxy.py [--clients 4] [--seconds 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from pggit_chaos.engine.history import History
from pggit_chaos.engine.journal import percentiles
from pggit_chaos.engine.workload import Workload
from pggit_chaos.faults.latency import open_route
from pggit_chaos.faults.proxy import PASS_THROUGH, Shape
from pggit_chaos.local import embedded_pggit

#: The workload's usual mix (3 commits : 1 DDL), as experiments run it.
MIX = {"commit": 3, "ddl": 1}


async def leg(dsn: str, clients: int, seconds: float) -> tuple[float, History]:
    history = History()
    load = Workload(dsn, clients=clients, rate=0, op_timeout=10, mix=MIX, history=history)
    async with load:
        await asyncio.sleep(seconds)
    return history.throughput(), history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="per leg")
    parser.add_argument("--rounds", type=int, default=10, help="direct/proxy pairs, alternating")
    args = parser.parse_args()
    ratios: list[float] = []
    totals = {"direct": 0.0, "proxy": 0.0}
    with embedded_pggit() as (_server, dsn):
        route = open_route(dsn)
        try:
            print(f"proxy 127.0.0.1:{route.proxy.port} -> {route.upstream}, "
                  f"{args.clients} clients, {args.seconds:g} s per leg, as fast as possible")
            for round_no in range(args.rounds):
                # Alternate who goes first: the shared machine's load drifts over time.
                order = ["direct", "proxy"] if round_no % 2 == 0 else ["proxy", "direct"]
                rates: dict[str, float] = {}
                for which in order:
                    target = dsn if which == "direct" else route.workload_dsn
                    rates[which], _ = asyncio.run(leg(target, args.clients, args.seconds))
                for which, rate in rates.items():
                    totals[which] += rate
                ratio = rates["proxy"] / rates["direct"] if rates["direct"] else 0.0
                ratios.append(ratio)
                print(f"round {round_no + 1}: direct {rates['direct']:8.1f} ops/s   "
                      f"proxy (0 ms) {rates['proxy']:8.1f} ops/s   ratio {ratio:.3f}")
            stats = route.proxy.stats()
            print(f"chunks the pass-through proxy held: {stats.delayed_chunks} (0 expected); "
                  f"{stats.bytes_to_server:,} B to the server, {stats.bytes_to_client:,} B back")
            route.proxy.shape(Shape(delay=0.020))
            delayed_rate, history = asyncio.run(leg(route.workload_dsn, args.clients,
                                                    args.seconds))
            route.proxy.shape(PASS_THROUGH)
            p50, _, p99 = percentiles([1000 * s for s in history.latencies()])
        finally:
            route.close()
    median = statistics.median(ratios)
    overall = totals["proxy"] / totals["direct"] if totals["direct"] else 0.0
    print(f"mean ops/s: direct {totals['direct'] / len(ratios):.1f}, proxy (0 ms) "
          f"{totals['proxy'] / len(ratios):.1f}; ratio of the totals {overall:.3f}")
    print(f"proxy with 20 ms delay: {delayed_rate:.1f} ops/s, latency p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms (each at least 20 ms: it bites)")
    print(f"workload ops/s through the proxy at 0 ms / direct: median {median:.3f} "
          f"(target >= 0.8) -> {'pass' if median >= 0.8 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
