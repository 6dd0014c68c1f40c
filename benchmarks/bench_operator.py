"""The operator's figures (issue 8): created → runner Job, created → fault injected, 50 at once.

Everything real that runs here: the test API server (``tests/cluster/emulator.py``) over HTTP,
the real operator as its own process (``pggit-chaos operator --kubeconfig ...``, so its RSS is
read from its own ``/proc``), and for real runs the test kubelet (``tests/cluster/kubelet.py``:
target pods backed by real PostgreSQL with pgGit, Job pods run as real processes — the real
``pggit-chaos run --in-cluster`` and ``pggit-chaos checks``). The benchmark notes the moment
each experiment, Job and pod is written into the API server's store (monotonic clock, from a
hook on the store's commit) and counts every API request per identity and verb.

Three parts (``--parts``), each on a fresh API server and operator:

* ``job``: N experiments (06-connection-kill, not dry-run) created one after the other in an
  opted-in namespace with one Running+Ready pod and no kubelet; from the create call to the
  runner Job in the store (the Job is not run).
* ``inject``: N runs of 06-connection-kill (duration 3 s, corruption checks) behind the test
  kubelet, one after the other, each on a fresh database with pgGit on the target pod's server
  (the Secret is pointed at it before the create); from the create call to
  ``status.injectedAt`` in the store. Baseline: the same experiment run locally,
  ``pggit-chaos run --dsn`` against a fresh database on the same server, from launching the
  process to the injection (the journal's fault window start, wall clock);
  the runner's own engine start → injection (from its journal ConfigMap) is printed too.
* ``concurrent``: DRY dry-run and REAL real experiments created at once (real ones: 05, 06,
  07, 08 in turn, each against its own target pod and namespace); all must end in a terminal
  phase; operator RSS sampled every 0.1 s; API requests counted per identity and verb.

Run: ``python benchmarks/bench_operator.py [--quick] [--parts job,inject,concurrent]``
(root: the kubelet makes network namespaces, cgroups and iptables rules, and removes them).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import yaml
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test cluster, as the tests' rootdir conftest has it

from cluster.emulator import (  # noqa: E402
    IDENTITIES,
    EmulatorServer,
    KubeEmulator,
    ResourceType,
    namespace,
    write_kubeconfig,
)
from cluster.kubelet import SECRETS, Kubelet, TargetSet, console_script  # noqa: E402
from pggit_chaos.engine.journal import Journal  # noqa: E402
from pggit_chaos.kube import builders, names  # noqa: E402
from pggit_chaos.kube.client import CONFIG_MAPS, EXPERIMENTS, PODS, KubeClient  # noqa: E402

Body = dict[str, Any]
TERMINAL = ("Passed", "Failed", "Inconclusive", "Aborted", "Error")
TARGET_LABELS = {"app.kubernetes.io/name": "pggit-postgres"}
EXPERIMENTS_DIR = ROOT / "experiments"
REAL_MIX = ("05", "06", "07", "08")
#: Issue 8's targets.
JOB_TARGET_S = 0.5
INJECT_MARGIN_S = 1.0
RSS_TARGET_MB = 150.0


# -- the API server, with the moment of every write ---------------------------------------------
@dataclass(frozen=True)
class Seen:
    """One write of an experiment, Job or pod into the store."""

    at: float
    plural: str
    event: str
    namespace: str
    name: str
    labels: dict[str, str]
    status: dict[str, Any]


@attrs.define(kw_only=True)
class TimedEmulator(KubeEmulator):
    """The test API server, noting when each experiment, Job and pod is written (monotonic)."""

    seen: list[Seen] = attrs.field(factory=list, init=False)
    changed: threading.Condition = attrs.field(factory=threading.Condition, init=False)

    def _commit(self, rtype: ResourceType, obj: Body, event: str, old: Body | None) -> Body:
        result: Body = super()._commit(rtype, obj, event, old)
        if rtype.plural in ("pggitchaosexperiments", "jobs", "pods"):
            meta = obj.get("metadata") or {}
            status = obj.get("status") or {}
            record = Seen(time.monotonic(), rtype.plural, event, str(meta.get("namespace")),
                          str(meta.get("name")), dict(meta.get("labels") or {}),
                          {key: status.get(key) for key in
                           ("phase", "runnerJob", "startedAt", "injectedAt", "verdict",
                            "message")})
            with self.changed:
                self.seen.append(record)
                self.changed.notify_all()
        return result

    def first(self, predicate: Callable[[Seen], bool], timeout: float,
              what: str = "a write") -> Seen:
        """The first write matching ``predicate`` (waiting up to ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for record in self.seen:
                    if predicate(record):
                        return record
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout:g}s")
                self.changed.wait(min(left, 1.0))


def experiment_write(ns: str, name: str, test: Callable[[dict[str, Any]], bool]
                     ) -> Callable[[Seen], bool]:
    return lambda s: (s.plural == "pggitchaosexperiments" and s.namespace == ns
                      and s.name == name and test(s.status))


def runner_job_write(ns: str, name: str) -> Callable[[Seen], bool]:
    return lambda s: (s.plural == "jobs" and s.event == "ADDED" and s.namespace == ns
                      and s.labels.get(names.EXPERIMENT_LABEL) == name
                      and s.labels.get(names.ROLE_LABEL) == names.ROLE_RUNNER)


def runner_pod_write(ns: str, name: str) -> Callable[[Seen], bool]:
    return lambda s: (s.plural == "pods" and s.event == "ADDED" and s.namespace == ns
                      and s.labels.get(names.EXPERIMENT_LABEL) == name
                      and s.labels.get(names.ROLE_LABEL) == names.ROLE_RUNNER)


@dataclass
class Cluster:
    """A fresh test API server with a kubeconfig per identity and an admin client."""

    server: EmulatorServer
    emulator: TimedEmulator
    kubeconfigs: dict[str, Path]
    admin: KubeClient


@contextlib.contextmanager
def cluster(folder: Path) -> Iterator[Cluster]:
    emulator = TimedEmulator()
    with EmulatorServer(emulator) as server:
        kubeconfigs = {identity: write_kubeconfig(folder / "kube" / f"{identity}.yaml",
                                                  server.url, emulator.token_for(identity))
                       for identity in IDENTITIES}
        admin = KubeClient.from_environment(kubeconfig=str(kubeconfigs["admin"]))
        yield Cluster(server, emulator, kubeconfigs, admin)


# -- the operator as its own process --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


class OperatorProcess:
    """``pggit-chaos operator --kubeconfig ...`` (the real entry point) in a process of its own."""

    WATCHED = ("pggitchaosexperiments", "jobs", "pods")

    def __init__(self, world: Cluster, log: Path, env: dict[str, str] | None = None) -> None:
        self.world = world
        self.log_path = log
        self.log = log.open("w")
        environment = dict(os.environ, PGGIT_CHAOS_METRICS_PORT=str(_free_port()),
                           **(env or {}))
        started = time.monotonic()
        self.process = subprocess.Popen(
            [console_script(), "operator", "--kubeconfig", str(world.kubeconfigs["operator"])],
            stdout=self.log, stderr=subprocess.STDOUT, env=environment)
        self.peak_kb = 0
        self.samples: list[int] = []
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        deadline = started + 60
        while not self._watching():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the operator did not start; its log:\n{self.logs()}")
            time.sleep(0.05)
        #: Seconds from launch until it watched experiments, Jobs and pods.
        self.startup_seconds = time.monotonic() - started

    def _watching(self) -> bool:
        watches = {c.resource for c in self.world.emulator.calls("operator") if c.verb == "watch"}
        return all(resource in watches for resource in self.WATCHED)

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-4000:]

    def rss_kb(self) -> int:
        return _proc_kb(self.process.pid, "VmRSS")

    def hwm_kb(self) -> int:
        """The kernel's peak RSS of the process (VmHWM)."""
        return _proc_kb(self.process.pid, "VmHWM")

    def sample(self, every: float = 0.1) -> None:
        """Sample RSS in the background until :meth:`stop_sampling`."""
        def loop() -> None:
            while not self._sampling.wait(every):
                with contextlib.suppress(OSError, KeyError):
                    self.samples.append(self.rss_kb())
        self._sampler = threading.Thread(target=loop, name="rss", daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> None:
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)

    def stop(self) -> None:
        self.stop_sampling()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


# -- experiments ----------------------------------------------------------------------------------
def manifest(number: str, name: str, ns: str, *, dry_run: bool = False) -> Body:
    """``experiments/NN-*.yaml`` as kubectl sends it, shortened as the cluster tests do."""
    path = next(EXPERIMENTS_DIR.glob(f"{number}-*.yaml"))
    body: Body = yaml.safe_load(path.read_text())
    body["metadata"] = {"name": name, "namespace": ns}
    spec = body["spec"]
    spec["duration"] = "3s"
    spec.setdefault("verification", {}).update({"checks": ["corruption"], "timeout": "120s"})
    spec.setdefault("recovery", {})["timeout"] = "60s"
    if dry_run:
        spec["dryRun"] = True
    return body


def seed_target_pod(admin: KubeClient, ns: str, name: str = "pg-0") -> None:
    """A Running+Ready database pod (nothing behind it: enough for the gates and a dry run)."""
    admin.create(PODS, ns, {"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "labels": dict(TARGET_LABELS)},
                            "spec": {"containers": [{"name": "postgres",
                                                     "image": "postgres:16"}]}})
    admin.patch(PODS, ns, name, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status")


def opt_in(admin: KubeClient, ns: str) -> None:
    namespace(admin, ns, {names.NAMESPACE_OPT_IN_LABEL: "true"})


def fresh_database(kubelet: Kubelet, target: TargetSet, name: str) -> str:
    """A new database with pgGit on the target pod's server; its DSN by the pod's IP."""
    from pggit_chaos.pggit import install

    server = kubelet.server(target.namespace, target.pods[0])
    server.create_database(name)
    install(server.socket_dsn(name))
    return make_conninfo(target.dsn, dbname=name)


def point_secret(admin: KubeClient, target: TargetSet, dsn: str) -> None:
    """The target's Secret names ``dsn`` (the next runner Job's pod reads it at start)."""
    admin.patch(SECRETS, target.namespace, target.secret,
                {"data": {target.secret_key: base64.b64encode(dsn.encode()).decode()}})


def runner_journal(admin: KubeClient, ns: str, name: str) -> Journal | None:
    body = admin.get(EXPERIMENTS, ns, name)
    cm_name = (body.get("status") or {}).get("journalConfigMap")
    config_map = admin.find(CONFIG_MAPS, ns, cm_name) if cm_name else None
    if config_map is None:
        return None
    document = json.loads(builders.read_journal_config_map(config_map))
    document.pop("history", None)
    return Journal.model_validate(document)


def engine_start_to_inject(journal: Journal) -> float | None:
    """Seconds from the engine's first phase (Pending) to the injection, on the run's clock."""
    if journal.fault_window is None or not journal.phases:
        return None
    return journal.fault_window.start_offset - journal.phases[0].start_offset


def report_leftovers(kubelet: Kubelet) -> None:
    """After the kubelet stopped: what of its own is still on the machine (nothing, we hope)."""
    left = kubelet.leftovers()
    print("  left behind on the machine: " + (
        "; ".join(f"{kind}: {', '.join(items)}" for kind, items in left.items()) if left
        else "nothing (no netns, cgroup, iptables chain, server or Job process)"))


# -- figures --------------------------------------------------------------------------------------
def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def fmt(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return (f"median {statistics.median(values):.3f} s, p95 {p95(values):.3f} s, "
            f"min {min(values):.3f} s, max {max(values):.3f} s (n={len(values)})")


def calls_by_verb(world: Cluster, identity: str, since: int = 0) -> Counter[str]:
    return Counter(c.verb for c in world.emulator.calls(identity)[since:])


def calls_by_resource(world: Cluster, identity: str, since: int = 0) -> Counter[str]:
    return Counter(f"{c.verb} {c.api_group + '/' if c.api_group else ''}{c.rbac_resource}"
                   for c in world.emulator.calls(identity)[since:])


def print_calls(title: str, world: Cluster, identity: str, per: int, since: int = 0,
                detail: bool = True) -> int:
    verbs = calls_by_verb(world, identity, since)
    total = sum(verbs.values())
    by_verb = ", ".join(f"{verb} {count}" for verb, count in sorted(verbs.items()))
    print(f"  {title}: {total} requests ({total / max(per, 1):.1f} per experiment); "
          f"by verb: {by_verb or 'none'}")
    if detail:
        for key, count in sorted(calls_by_resource(world, identity, since).items()):
            print(f"      {count:6d}  {key}  ({count / max(per, 1):.1f} per experiment)")
    return total


@dataclass
class Results:
    """The figures the summary table shows."""

    job: list[float] = field(default_factory=list)
    inject: list[float] = field(default_factory=list)
    runner_engine: list[float] = field(default_factory=list)
    local_wall: list[float] = field(default_factory=list)
    local_engine: list[float] = field(default_factory=list)
    concurrent_total: int = 0
    concurrent_terminal: int = 0
    concurrent_phases: Counter[str] = field(default_factory=Counter)
    rss_peak_mb: float | None = None
    operator_per_experiment: float | None = None
    runner_per_experiment: float | None = None
    per_real_operator: float | None = None
    per_real_runner: float | None = None
    per_job_operator: float | None = None
    #: The inject part's steps, seconds from the create call (runs that injected).
    inject_steps: dict[str, list[float]] = field(default_factory=dict)


# -- part 1: created → runner Job -----------------------------------------------------------------
def part_job(runs: int, folder: Path, results: Results) -> None:
    ns = "bench"
    print(f"\n== created → runner Job on the test API server: {runs} experiments, one at a time "
          "(no kubelet: the Job is not run)")
    with cluster(folder / "job") as world:
        opt_in(world.admin, ns)
        seed_target_pod(world.admin, ns)
        operator = OperatorProcess(world, folder / "operator-job.log")
        try:
            print(f"  operator started in {operator.startup_seconds:.2f} s, "
                  f"RSS {operator.rss_kb() / 1024:.1f} MB")
            since = len(world.emulator.calls("operator"))
            stored: list[float] = []
            for index in range(runs):
                name = f"job-{index:02d}"
                started = time.monotonic()
                world.admin.create(EXPERIMENTS, ns, manifest("06", name, ns))
                created = world.emulator.first(
                    experiment_write(ns, name, lambda _: True), 10, f"{name} stored")
                job = world.emulator.first(runner_job_write(ns, name), 30, f"{name}'s Job")
                world.emulator.first(experiment_write(ns, name, lambda s: bool(s["runnerJob"])),
                                     30, f"{name} Pending with its Job")
                stored.append(created.at - started)
                results.job.append(job.at - started)
                time.sleep(0.3)  # let the operator's Event of this one go before the next
            print(f"  create call → experiment stored: {fmt(stored)}")
            print(f"  created → runner Job stored:     {fmt(results.job)}")
            print(f"  operator RSS after: {operator.rss_kb() / 1024:.1f} MB "
                  f"(peak {operator.hwm_kb() / 1024:.1f} MB)")
            total = print_calls("operator API requests (admission to runner Job)", world,
                                "operator", runs, since)
            results.per_job_operator = total / runs
        finally:
            operator.stop()


# -- part 2: created → fault injected -------------------------------------------------------------
def local_baseline(runs: int, kubelet: Kubelet, target: TargetSet, folder: Path,
                   results: Results) -> None:
    """``pggit-chaos run --dsn`` of the same experiment against the same server (each run on
    a fresh database with pgGit, as each cluster run is)."""
    for index in range(runs):
        dsn = fresh_database(kubelet, target, f"baseline_{index}")
        spec_file = folder / f"baseline-{index}.yaml"
        spec_file.write_text(yaml.safe_dump(manifest("06", f"baseline-{index}", "default")))
        reports = folder / f"baseline-reports-{index}"
        env = dict(os.environ, PGGIT_CHAOS_REPORT_DIR=str(reports),
                   PGGIT_CHAOS_STATE_DIR=str(folder / "baseline-state"))
        launched = time.time()
        done = subprocess.run([console_script(), "run", "--dsn", dsn, str(spec_file)],
                              env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        found = sorted(reports.rglob("journal.json"))
        if not found:
            raise RuntimeError(f"local run {index} wrote no journal (exit {done.returncode}):\n"
                               f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        journal = Journal.from_json(found[0].read_bytes())
        window = journal.fault_window
        engine = engine_start_to_inject(journal)
        if window is None or engine is None:
            print(f"  local run {index}: exit {done.returncode}, {journal.current_phase.value} "
                  f"WITHOUT an injection, not counted: {journal.reason}")
            continue
        results.local_wall.append(window.started_at.timestamp() - launched)
        results.local_engine.append(engine)
        print(f"  local run {index}: exit {done.returncode} ({journal.verdict}), launch → "
              f"injected {results.local_wall[-1]:.3f} s, engine start → injected "
              f"{engine:.3f} s")


def part_inject(runs: int, folder: Path, results: Results) -> None:
    ns = "default"
    print(f"\n== created → fault injected behind the test kubelet: {runs} runs of "
          "06-connection-kill (3 s, corruption checks), one at a time, each on a fresh "
          "database with pgGit on the target pod's server")
    with cluster(folder / "inject") as world, Kubelet(
            {k: str(v) for k, v in world.kubeconfigs.items()},
            service_accounts={"pggit-chaos-runner": "runner"}, restart_delay=0.5) as kubelet:
        opt_in(world.admin, ns)
        target = kubelet.add_targets(ns, labels=TARGET_LABELS)
        operator = OperatorProcess(world, folder / "operator-inject.log")
        steps = results.inject_steps = {"runner Job": [], "runner pod": [],
                                        "runner started (status.startedAt)": [],
                                        "fault injected (status.injectedAt)": [],
                                        "terminal phase": []}
        try:
            since = {who: len(world.emulator.calls(who)) for who in ("operator", "runner")}
            for index in range(runs):
                name = f"inject-{index}"
                point_secret(world.admin, target, fresh_database(kubelet, target, f"run_{index}"))
                started = time.monotonic()
                world.admin.create(EXPERIMENTS, ns, manifest("06", name, ns))
                first = world.emulator.first
                job = first(runner_job_write(ns, name), 60, f"{name}'s Job")
                pod = first(runner_pod_write(ns, name), 60, f"{name}'s runner pod")
                began = first(experiment_write(ns, name, lambda s: bool(s["startedAt"])), 120,
                              f"{name} started")
                injected = first(experiment_write(
                    ns, name, lambda s: bool(s["injectedAt"]) or s["phase"] in TERMINAL),
                    300, f"{name} injected")
                ended = first(experiment_write(ns, name, lambda s: s["phase"] in TERMINAL),
                              600, f"{name} ended")
                if not injected.status["injectedAt"]:
                    body = world.admin.get(EXPERIMENTS, ns, name)
                    message = (body.get("status") or {}).get("message")
                    print(f"  run {index}: {ended.status['phase']} WITHOUT an injection, not "
                          f"counted: {message}")
                    continue
                for key, seen in zip(steps, (job, pod, began, injected, ended), strict=True):
                    steps[key].append(seen.at - started)
                results.inject.append(injected.at - started)
                journal = runner_journal(world.admin, ns, name)
                engine = engine_start_to_inject(journal) if journal is not None else None
                if engine is not None:
                    results.runner_engine.append(engine)
                print(f"  run {index}: {ended.status['phase']} ({ended.status['verdict']}), "
                      f"created → injected {results.inject[-1]:.3f} s, runner's engine start "
                      f"→ injected {engine if engine is None else round(engine, 3)} s")
            if results.inject:
                print("  from the create call to (medians over the runs that injected):")
                for key, values in steps.items():
                    print(f"    {key:<38} {statistics.median(values):8.3f} s")
            runs_done = max(runs, 1)
            results.per_real_operator = print_calls(
                "operator API requests per real run", world, "operator", runs_done,
                since["operator"], detail=False) / runs_done
            results.per_real_runner = print_calls(
                "runner + verification Job API requests per real run", world, "runner",
                runs_done, since["runner"]) / runs_done
        finally:
            operator.stop()
        print(f"\n  baseline: pggit-chaos run --dsn against the same pod's server, {runs} runs")
        local_baseline(runs, kubelet, target, folder, results)
        if kubelet.errors:
            print("  the test kubelet met errors:\n" + "\n".join(kubelet.errors))
    report_leftovers(kubelet)


# -- part 3: many at once -------------------------------------------------------------------------
def part_concurrent(dry: int, real: int, folder: Path, results: Results,
                    timeout: float, mix: Sequence[str] = REAL_MIX) -> None:
    total = dry + real
    print(f"\n== {total} experiments at once: {dry} dry-run + {real} real "
          f"({', '.join(mix)} in turn, each against its own target pod and namespace)")
    with contextlib.ExitStack() as stack:
        world = stack.enter_context(cluster(folder / "concurrent"))
        kubelet = stack.enter_context(Kubelet(
            {k: str(v) for k, v in world.kubeconfigs.items()},
            service_accounts={"pggit-chaos-runner": "runner"}, restart_delay=0.5)
        ) if real else None
        spaces = [f"bench-{index}" for index in range(max(real, 1))]
        setup = time.monotonic()
        for ns in spaces:
            opt_in(world.admin, ns)
            if kubelet is not None:
                # Netns.plan keeps 8 characters of the kubelet's "k" + token + uuid ident for
                # the veth names: one kubelet's targets differ in one hex digit only, so a
                # fresh token per target (the token names nothing else) avoids collisions.
                kubelet.token = uuid.uuid4().hex[:6]
                kubelet.add_targets(ns, labels=TARGET_LABELS)
            else:
                seed_target_pod(world.admin, ns)
        if kubelet is not None:
            print(f"  {len(spaces)} target pods with real PostgreSQL started in "
                  f"{time.monotonic() - setup:.1f} s")
        else:
            print("  no real experiments: no kubelet, one Running+Ready pod for the dry runs")
        operator = OperatorProcess(world, folder / "operator-concurrent.log")
        try:
            idle_kb = operator.rss_kb()
            print(f"  operator RSS idle: {idle_kb / 1024:.1f} MB")
            since = {who: len(world.emulator.calls(who)) for who in ("operator", "runner")}
            # Real experiments spread evenly among the dry-run ones.
            plan: list[tuple[str, str, str, bool]] = []
            every = max(1, total // max(real, 1))
            real_left = real
            for index in range(total):
                is_real = real_left > 0 and (index % every == 0 or total - index <= real_left)
                if is_real:
                    number = mix[(real - real_left) % len(mix)]
                    ns = spaces[real - real_left]
                    real_left -= 1
                else:
                    number, ns = "06", spaces[index % len(spaces)]
                plan.append((f"at-once-{index:02d}", ns, number, not is_real))
            operator.sample()
            started = time.monotonic()
            created: dict[str, float] = {}
            for name, ns, number, dry_run in plan:
                created[name] = time.monotonic()
                world.admin.create(EXPERIMENTS, ns, manifest(number, name, ns, dry_run=dry_run))
            burst = time.monotonic() - started
            print(f"  {total} created in {burst:.2f} s")
            ended: dict[str, Seen] = {}
            deadline = started + timeout
            for name, ns, _, _ in plan:
                with contextlib.suppress(TimeoutError):  # reported below as not terminal
                    ended[name] = world.emulator.first(
                        experiment_write(ns, name, lambda s: s["phase"] in TERMINAL),
                        max(1.0, deadline - time.monotonic()), f"{name} ended")
            last = max((seen.at for seen in ended.values()), default=time.monotonic())
            time.sleep(1.0)
            operator.stop_sampling()
            peak_kb = max([operator.hwm_kb(), *operator.samples])
            results.concurrent_total = total
            results.concurrent_terminal = len(ended)
            results.concurrent_phases = Counter(str(s.status["phase"]) for s in ended.values())
            results.rss_peak_mb = peak_kb / 1024
            dry_times = [ended[n].at - created[n] for n, _, _, d in plan if d and n in ended]
            real_times = [ended[n].at - created[n] for n, _, _, d in plan if not d and n in ended]
            print(f"  terminal: {len(ended)}/{total} "
                  f"({', '.join(f'{p} {c}' for p, c in sorted(results.concurrent_phases.items()))})"
                  f"; all ended {last - started:.1f} s after the first create")
            for name, ns, number, dry_run in plan:
                if not dry_run and name in ended:
                    status = ended[name].status
                    print(f"    real {name} ({number}) in {ns}: {status['phase']} after "
                          f"{ended[name].at - created[name]:.1f} s: {status['message']}")
            missing = [name for name, *_ in plan if name not in ended]
            if missing:
                print(f"  NOT terminal within {timeout:g} s: {', '.join(missing)}")
            print(f"  dry-run created → terminal: {fmt(dry_times)}")
            if real:
                print(f"  real    created → terminal: {fmt(real_times)}")
            print(f"  operator RSS: idle {idle_kb / 1024:.1f} MB, peak {peak_kb / 1024:.1f} MB "
                  f"(VmHWM and samples every 0.1 s), after {operator.rss_kb() / 1024:.1f} MB")
            operator_calls = print_calls("operator API requests", world, "operator", total,
                                         since["operator"])
            results.operator_per_experiment = operator_calls / total
            if real:
                runner_calls = print_calls("runner + verification Job API requests (per real "
                                           "experiment; dry-run ones make none)", world,
                                           "runner", real, since["runner"])
                results.runner_per_experiment = runner_calls / real
        finally:
            operator.stop()
        if kubelet is not None and kubelet.errors:
            print("  the test kubelet met errors:\n" + "\n".join(kubelet.errors))
    if kubelet is not None:
        report_leftovers(kubelet)


# -- summary --------------------------------------------------------------------------------------
def summary(results: Results, args: argparse.Namespace) -> None:
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "MISSED")

    if results.job:
        median = statistics.median(results.job)
        rows.append((f"created → runner Job, median (n={len(results.job)})",
                     f"{median:.3f} s", f"≤ {JOB_TARGET_S} s", verdict(median <= JOB_TARGET_S)))
        rows.append(("created → runner Job, p95", f"{p95(results.job):.3f} s", "(printed)", "—"))
    if results.inject:
        median = statistics.median(results.inject)
        base = statistics.median(results.local_wall) if results.local_wall else None
        rows.append((f"created → fault injected, median (n={len(results.inject)})",
                     f"{median:.3f} s",
                     f"≤ baseline + {INJECT_MARGIN_S:g} s"
                     + (f" = {base + INJECT_MARGIN_S:.3f} s" if base is not None else ""),
                     verdict(None if base is None else median <= base + INJECT_MARGIN_S)))
        rows.append(("created → fault injected, p95", f"{p95(results.inject):.3f} s",
                     "(printed)", "—"))
        if base is not None:
            rows.append(("baseline: local `pggit-chaos run --dsn` launch → injected",
                         f"{base:.3f} s", "(median)", "—"))
        if results.local_engine:
            rows.append(("  local run's engine start → injected",
                         f"{statistics.median(results.local_engine):.3f} s", "(median)", "—"))
            launch = [w - e for w, e in zip(results.local_wall, results.local_engine,
                                            strict=True)]
            rows.append(("  local run's launch → engine start",
                         f"{statistics.median(launch):.3f} s", "(median)", "—"))
        if results.runner_engine:
            engine = statistics.median(results.runner_engine)
            rows.append(("  runner Job's engine start → injected", f"{engine:.3f} s",
                         "(median)", "—"))
            rows.append(("created → injected vs the runner's own start → injected",
                         f"{median:.3f} s", f"≤ {engine:.3f} + {INJECT_MARGIN_S:g} s = "
                         f"{engine + INJECT_MARGIN_S:.3f} s",
                         verdict(median <= engine + INJECT_MARGIN_S)))
        for step in ("runner Job", "runner pod", "runner started (status.startedAt)"):
            values = results.inject_steps.get(step)
            if values:
                rows.append((f"  created → {step}", f"{statistics.median(values):.3f} s",
                             "(median)", "—"))
    if results.concurrent_total:
        everyone = results.concurrent_terminal == results.concurrent_total
        rows.append((f"{results.concurrent_total} at once ({args.dry} dry-run + {args.real} "
                     "real): terminal",
                     f"{results.concurrent_terminal}/{results.concurrent_total}", "all",
                     verdict(everyone)))
        if results.rss_peak_mb is not None:
            rows.append(("  operator RSS, peak", f"{results.rss_peak_mb:.1f} MB",
                         f"≤ {RSS_TARGET_MB:g} MB", verdict(results.rss_peak_mb <= RSS_TARGET_MB)))
        if results.operator_per_experiment is not None:
            rows.append(("  operator API requests per experiment",
                         f"{results.operator_per_experiment:.1f}", "counted, printed", "—"))
        if results.runner_per_experiment is not None and args.real:
            rows.append(("  runner+verification requests per real experiment",
                         f"{results.runner_per_experiment:.1f}", "counted, printed", "—"))
    if results.per_job_operator is not None:
        rows.append(("operator requests, create → runner Job (one at a time)",
                     f"{results.per_job_operator:.1f}", "(per experiment)", "—"))
    if results.per_real_operator is not None:
        rows.append(("operator requests per real run (one at a time)",
                     f"{results.per_real_operator:.1f}", "(per experiment)", "—"))
    if results.per_real_runner is not None:
        rows.append(("runner+verification requests per real run (one at a time)",
                     f"{results.per_real_runner:.1f}", "(per experiment)", "—"))
    width = max(len(row[0]) for row in rows) if rows else 10
    print(f"\n== summary (issue 8's targets beside the figures; {os.cpu_count()} CPUs)")
    print(f"{'figure':<{width}}  {'measured':>12}  {'target':<30} ")
    for figure, measured, target, outcome in rows:
        print(f"{figure:<{width}}  {measured:>12}  {target:<30} {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a reduced run (< 60 s): 5 experiments to a Job, 1 run to an "
                             "injection (and 1 local baseline run), 10 dry-run ones at once")
    parser.add_argument("--parts", default="job,inject,concurrent",
                        help="comma-separated: job, inject, concurrent")
    parser.add_argument("--job-runs", type=int, default=20)
    parser.add_argument("--inject-runs", type=int, default=5)
    parser.add_argument("--dry", type=int, default=40, help="dry-run experiments at once")
    parser.add_argument("--real", type=int, default=10, help="real experiments at once")
    parser.add_argument("--mix", default=",".join(REAL_MIX),
                        help="experiments/NN-*.yaml numbers the real ones take in turn")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds the experiments at once may take to end")
    args = parser.parse_args()
    if args.quick:
        args.job_runs, args.inject_runs, args.dry, args.real = 5, 1, 10, 0
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    unknown = parts - {"job", "inject", "concurrent"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0 and parts & {"inject", "concurrent"}:
        parser.error("the test kubelet needs root (network namespaces, cgroups, iptables)")
    results = Results()
    began = time.monotonic()
    print(f"bench_operator: parts {', '.join(sorted(parts))}; started "
          f"{datetime.now().isoformat(timespec='seconds')}")
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        folder = Path(tmp)
        if "job" in parts:
            part_job(args.job_runs, folder, results)
        if "inject" in parts:
            part_inject(args.inject_runs, folder, results)
        if "concurrent" in parts:
            part_concurrent(args.dry, args.real, folder, results, args.timeout,
                            [n.strip() for n in args.mix.split(",") if n.strip()])
    summary(results, args)
    print(f"(benchmark took {time.monotonic() - began:.1f} s)")


if __name__ == "__main__":
    main()
