"""The schedules' figures (issue 16): operator RSS with 20 schedules, and schedule lateness.

On the test cluster of ``bench_operator.py``: the test API server (``tests/cluster/emulator.py``)
over HTTP and the real operator as its own process (``pggit-chaos operator --kubeconfig ...``,
its RSS read from its own ``/proc``), on the wall clock. N schedules (default 20) with a
one-minute cron (``* * * * *``) run dry-run experiments (06-connection-kill with ``dryRun:
true``: admitted, targets resolved, ended Aborted/DryRun; no kubelet needed), so every minute
boundary makes N runs at once and the history limits delete the older ones.

Printed: the operator's RSS before any schedule, with the N schedules idle, sampled every 0.1 s
over M minute boundaries (peak, and the kernel's VmHWM); the **lateness** of every run, from
its scheduled time to its write into the API server's store; the operator's API requests per
minute by verb and resource.

Run: ``python benchmarks/bench_schedules.py [--schedules 20] [--minutes 3]`` (about M + 1
minutes; ``--quick``: 5 schedules, 1 minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_operator import (
    OperatorProcess,
    Seen,
    calls_by_resource,
    cluster,
    manifest,
    opt_in,
    p95,
    seed_target_pod,
)
from cluster.emulator import runner_namespace
from pggit_chaos.kube.client import EXPERIMENTS, SCHEDULES
from pggit_chaos.kube.schedules import SCHEDULED_AT_ANNOTATION
from pggit_chaos.metrics import parse_time
from pggit_chaos.spec.schedule import SCHEDULE_LABEL

NS = "bench"
RSS_TARGET_MB = 150.0


def schedule(name: str) -> dict[str, Any]:
    template = manifest("06", name, NS, dry_run=True)["spec"]
    return {"apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosSchedule",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                     "successfulRunsHistoryLimit": 1, "failedRunsHistoryLimit": 1,
                     "experimentTemplate": {"spec": template}}}


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=3,
                        help="minute boundaries to wait for (each makes a run per schedule)")
    parser.add_argument("--quick", action="store_true", help="5 schedules, 1 minute")
    args = parser.parse_args()
    if args.quick:
        args.schedules, args.minutes = 5, 1
    print(f"bench_schedules: {args.schedules} schedules, {args.minutes} minute(s); started "
          f"{datetime.now().isoformat(timespec='seconds')}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp, \
            cluster(Path(tmp)) as world:
        runner_namespace(world.admin, NS)
        opt_in(world.admin, NS)
        seed_target_pod(world.admin, NS)
        operator = OperatorProcess(world, Path(tmp) / "operator.log")
        try:
            time.sleep(2.0)
            second = datetime.now(UTC).second
            if second > 45:  # "idle" below must not meet a minute boundary
                time.sleep(62 - second)
            before = operator.rss_kb()
            for index in range(args.schedules):
                world.admin.create(SCHEDULES, NS, schedule(f"s{index:02d}"))
            time.sleep(5.0)
            idle = operator.rss_kb()
            since = len(world.emulator.calls("operator"))
            operator.sample()
            now = datetime.now(UTC)
            first = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            last = first + timedelta(minutes=args.minutes - 1)
            wait = (last - datetime.now(UTC)).total_seconds() + 20.0
            print(f"  waiting {wait:.0f} s for the starts {first:%H:%M}..{last:%H:%M} UTC")
            time.sleep(max(0.0, wait))
            operator.stop_sampling()
            calls = calls_by_resource(world, "operator", since)
            hwm = operator.hwm_kb()
            lateness: list[float] = []
            offset = time.time() - time.monotonic()
            adds: list[Seen] = [s for s in world.emulator.seen
                                if s.plural == "pggitchaosexperiments" and s.event == "ADDED"]
            made: dict[str, float] = {s.name: s.at + offset for s in adds}
            scheduled = {}
            for run in made:
                base, _, minutes = run.rpartition("-")
                if base and minutes.isdigit():
                    scheduled[run] = int(minutes) * 60.0
            for run, at in made.items():
                if run in scheduled:
                    lateness.append(at - scheduled[run])
            runs = world.admin.list(EXPERIMENTS, NS)
            kept = sum(1 for r in runs if r["metadata"].get("labels", {}).get(SCHEDULE_LABEL))
            annotated = [parse_time(r["metadata"]["annotations"].get(SCHEDULED_AT_ANNOTATION))
                         for r in runs]
            assert all(annotated), "every run carries its scheduled time"
        finally:
            operator.stop()
        boundaries = len({int(at) for at in scheduled.values()})
        print(f"  runs created: {len(lateness)} at {boundaries} minute boundaries "
              f"({args.schedules} schedules each); kept after the history limits: {kept}")
        if lateness:
            print(f"  lateness (scheduled time -> run stored): median "
                  f"{statistics.median(lateness):.3f} s, p95 {p95(lateness):.3f} s, "
                  f"max {max(lateness):.3f} s")
        peak = max(operator.samples, default=0)
        print(f"  operator RSS: before schedules {mb(before)}, {args.schedules} schedules idle "
              f"{mb(idle)}, peak while running {mb(peak)} (VmHWM {mb(hwm)}); "
              f"target <= {RSS_TARGET_MB:.0f} MB")
        total = sum(calls.values())
        print(f"  operator API requests over the run: {total} "
              f"({total / max(args.minutes, 1):.0f} per minute)")
        for key, count in sorted(calls.items()):
            print(f"      {count:6d}  {key}")


if __name__ == "__main__":
    main()
