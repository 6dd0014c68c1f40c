"""`pggit-chaos run` end to end: every example experiment, bad input, interrupts, durability.

Each run is the real console script in a subprocess, on its own embedded PostgreSQL, with a
private state folder and TMPDIR so leftovers can be attributed to it: what the host held before
(another tool's iptables chains, other tests' cgroups) is not the run's (tests/leftovers.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import leftovers
from pggit_chaos.local.state import RESOURCE_TYPES, StateFile
from waits import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((ROOT / "experiments").glob("[0-9][0-9]-*.yaml"))
#: Experiments whose fault destroys data on purpose: their expected verdict is Fail.
DESTRUCTIVE = [p for p in EXPERIMENTS if "destructive: true" in p.read_text()]
PASSING = [p for p in EXPERIMENTS if p not in DESTRUCTIVE]
IS_ROOT = os.geteuid() == 0

pytestmark = [pytest.mark.postgres, pytest.mark.faults]


class Runner:
    """Runs the CLI with a private state folder, report folder and TMPDIR; close() at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.before = leftovers.snapshot()
        self.tmp = tmp_path
        self.reports = tmp_path / "reports"
        self.state = tmp_path / "state"
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.env = {
            **os.environ,
            "PGGIT_CHAOS_STATE_DIR": str(self.state),
            "TMPDIR": str(self.tmpdir),
            "COLUMNS": "120",
        }
        self.watcher = leftovers.StateWatcher(self.state)
        weakref.finalize(self, self.watcher.stop)  # for a Runner made without the fixture

    def close(self) -> None:
        self.watcher.close()

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pggit_chaos.cli", *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args, "--report-dir", str(self.reports))
            if args[0] == "run"
            else self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args, "--report-dir", str(self.reports))
            if args[0] == "run"
            else self.command(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def journals(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.reports.glob("*/journal.json"))]

    def pending_intents(self) -> list[str]:
        """Types of the intents still recorded in the state file."""
        return [intent.type for intent in StateFile.in_dir(self.state).pending()]

    def added(self) -> dict[str, list[str]]:
        """Cgroups, namespaces and host iptables rules the run added and did not remove."""
        self.watcher.poll()
        return leftovers.added_since(self.before, owned=self.watcher.names)

    def assert_nothing_left(self) -> None:
        assert leftovers.postgres_processes(str(self.tmpdir)) == []
        assert list(self.tmpdir.iterdir()) == [], "cluster folders left in TMPDIR"
        left = {kind: items for kind, items in self.added().items() if items}
        assert not left, f"the run left behind: {left}"
        assert self.pending_intents() == []


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    runner = Runner(tmp_path)
    yield runner
    runner.close()


def write_experiment(path: Path, source: Path, **changes: Any) -> Path:
    """Copy an example experiment with changes at dotted paths (``spec.duration``)."""
    doc = yaml.safe_load(source.read_text())
    for dotted, value in changes.items():
        node = doc
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.skipif(not IS_ROOT, reason="the local faults need root (cgroups, netns, iptables)")
@pytest.mark.parametrize("experiment", PASSING, ids=[p.stem for p in PASSING])
def test_every_example_experiment_passes_and_leaves_nothing(
    runner: Runner, experiment: Path
) -> None:
    result = runner.run("run", str(experiment))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Pass", journal["reason"]
    assert journal["injected_at"] and journal["reverted_at"]
    assert journal["recovery_seconds"] is not None
    assert journal["workload"]["ok"] > 0
    assert journal["workload"]["lost"] == 0
    assert all(inv["passed"] for inv in journal["invariants"])
    # The fault bit, read from the system (a Pass of a fault that did nothing is no Pass).
    evidence = journal["fault_evidence"]
    assert evidence is not None and evidence["bit"], evidence
    assert evidence["figures"] and evidence["summary"]
    assert "fault bit" in result.stdout
    folder = next(p for p in runner.reports.iterdir() if p.is_dir())  # not index.html
    for name in ("journal.json", "junit.xml", "summary.md", "timeline.png", "history.jsonl",
                 "report.html"):
        assert (folder / name).stat().st_size > 0, name
    assert "report:" in result.stdout
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="the embedded server runs as postgres: needs root")
def test_index_corruption_experiment_fails_naming_the_index(runner: Runner) -> None:
    """09 destroys a pgGit index on purpose: the verdict is Fail, the amcheck check names the
    index the fault's evidence names, and the run says that Fail is expected: its annotation
    expects it, so the run exits 0."""
    assert [p.name for p in DESTRUCTIVE] == ["09-index-corruption.yaml"]
    result = runner.run("run", str(DESTRUCTIVE[0]))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ("expected: Failed (test_pggit_btree_indexes_pass_amcheck); got Failed: as expected"
            in result.stdout)
    (journal,) = runner.journals()
    assert journal["verdict"] == "Fail", journal["reason"]
    assert "test_pggit_btree_indexes_pass_amcheck" in journal["reason"]
    evidence = journal["fault_evidence"]
    assert evidence["bit"], evidence
    index = evidence["figures"]["index"]
    assert index.startswith("pggit.")
    assert "expected outcome" in evidence["summary"] and index in evidence["summary"]
    failures = {f["name"]: f["message"] for f in journal["checks"]["failures"]}
    message = failures["test_pggit_btree_indexes_pass_amcheck"]
    assert f"{index}: item order invariant violated" in message, message
    assert "test_pggit_btree_indexes_pass_amcheck" in result.stdout and index in result.stdout
    # The clean stop and restart lost nothing acknowledged.
    assert journal["workload"]["ok"] > 0 and journal["workload"]["lost"] == 0
    runner.assert_nothing_left()


def test_dry_run_of_the_destructive_fault_says_so(runner: Runner) -> None:
    result = runner.run("run", "--dry-run", str(DESTRUCTIVE[0]))
    assert result.returncode == 0, result.stderr
    assert "inject index-corruption (DESTRUCTIVE, nothing reverts it)" in result.stdout
    assert "expected to Fail naming the index" in result.stdout
    assert not runner.reports.exists(), "a dry run writes no report folder"
    runner.assert_nothing_left()


def test_dsn_target_refuses_the_destructive_fault(runner: Runner, pggit_dsn: str) -> None:
    result = runner.run("run", "--dsn", pggit_dsn, str(ROOT / "experiments" /
                                                       "09-index-corruption.yaml"))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "index-corruption needs the embedded PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr
    assert runner.pending_intents() == []
    assert not runner.reports.exists() or not any(runner.reports.iterdir())


def test_invalid_experiment_names_every_field_and_exits_2(runner: Runner) -> None:
    bad = write_experiment(
        runner.tmp / "bad.yaml",
        EXPERIMENTS[0],
        **{"spec.duration": "soon", "spec.workload.clients": 0},
    )
    result = runner.run("run", str(bad))
    assert result.returncode == 2
    assert "spec.duration" in result.stderr and "spec.workload.clients" in result.stderr
    assert "Traceback" not in result.stderr
    assert not runner.reports.exists() or not any(runner.reports.iterdir())


def test_missing_file_is_one_line_exit_2(runner: Runner) -> None:
    result = runner.run("run", str(runner.tmp / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stderr


def test_dry_run_prints_the_plan_and_injects_nothing(runner: Runner) -> None:
    result = runner.run("run", "--dry-run", str(ROOT / "experiments" / "02-cpu-throttle.yaml"))
    assert result.returncode == 0, result.stderr
    assert "plan" in result.stdout and "cpu" in result.stdout.lower()
    # A plan, in readable lines: not an abort, not a Python dict.
    assert "planned (dry run)" in result.stdout and "Aborted" not in result.stdout
    assert "inject cpu-throttle: cpuPercent 10" in result.stdout
    assert "{" not in result.stdout
    # Nothing ran, so there is nothing to report: no report folder (there was one per dry run).
    assert not runner.reports.exists() and "report:" not in result.stdout
    assert not any(runner.tmpdir.iterdir()), "the dry run's scratch folder is removed"
    runner.assert_nothing_left()


def test_dsn_target_refuses_process_faults(runner: Runner, pggit_dsn: str) -> None:
    result = runner.run("run", "--dsn", pggit_dsn, str(EXPERIMENTS[0]))
    assert result.returncode == 2
    assert "pod-kill" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_dsn_target_runs_a_load_spike(runner: Runner, pggit_dsn: str, tmp_path: Path) -> None:
    # A workload-side fault needs nothing of the server but the DSN: allowed with --dsn.
    example = next(p for p in EXPERIMENTS if "-load-spike" in p.name)
    experiment = write_experiment(tmp_path / "spike.yaml", example, **{
        "spec.duration": "2s", "spec.verification.checks": ["corruption"],
        "spec.fault.loadSpike.clientsFactor": 4})
    result = runner.run("run", "--dsn", pggit_dsn, str(experiment))
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["injected_at"] and journal["reverted_at"]
    assert journal["fault_evidence"]["figures"]["spike_clients"] == 16
    assert journal["workload"]["lost"] == 0


def _wait_for_injection(runner: Runner, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(runner.pending_intents()) - set(RESOURCE_TYPES):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the fault was never injected")


@pytest.mark.skipif(not IS_ROOT, reason="the local faults need root (cgroups, netns, iptables)")
@pytest.mark.parametrize(
    ("example", "signum"),
    [("04-pod-pause.yaml", signal.SIGINT), ("05-network-partition.yaml", signal.SIGTERM)],
)
def test_interrupt_mid_fault_reverts_and_still_writes_the_journal(
    runner: Runner, example: str, signum: int
) -> None:
    experiment = write_experiment(
        runner.tmp / example, ROOT / "experiments" / example, **{"spec.duration": "60s"}
    )
    proc = runner.popen("run", str(experiment))
    _wait_for_injection(runner, proc)
    time.sleep(0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    (journal,) = runner.journals()
    assert journal["reverted_at"] is not None
    assert journal["verdict"] is None and journal["error"] == "interrupted"
    # A stop by the user is Aborted, as in a cluster (abort annotation); it said ERROR before.
    assert journal["phases"][-1]["phase"] == "Aborted"
    assert journal["reason"] == "interrupted: fault reverted"
    assert "ABORTED" in out and "ERROR" not in out
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="the local faults need root")
def test_lossy_durability_settings_fail_with_lost_commits(runner: Runner) -> None:
    """Proof that a Fail means something: asynchronous commit loses acknowledged commits."""
    lossy = write_experiment(
        runner.tmp / "lossy.yaml",
        EXPERIMENTS[0],
        **{
            "metadata.name": "lossy-pod-kill",
            "spec.duration": "2s",
            "spec.workload.rate": 0,
            "spec.workload.mix": {"commit": 1, "ddl": 0},
            "spec.verification.checks": [],
            "spec.local.postgresql": {"synchronous_commit": "off", "wal_writer_delay": "10s"},
        },
    )
    result = runner.run("run", str(lossy))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Fail"
    assert journal["workload"]["lost"] > 0
    durable = {i["name"]: i for i in journal["invariants"]}["commits-durable"]
    assert not durable["passed"] and durable["examples"]
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="the local faults need root")
@pytest.mark.parametrize("example", ["04-pod-pause.yaml", "05-network-partition.yaml"])
def test_cleanup_command_after_the_runner_is_killed_mid_fault(runner: Runner, example: str) -> None:
    """SIGKILL leaves the fault in place (no revert can run); `pggit-chaos cleanup` removes it."""
    experiment = write_experiment(
        runner.tmp / example, ROOT / "experiments" / example, **{"spec.duration": "60s"}
    )
    proc = runner.popen("run", str(experiment))
    _wait_for_injection(runner, proc)
    # The intent is recorded before the fault is made: kill once the fault exists (a busy
    # machine can take a while between the two).
    wait_until(lambda: bool(runner.added()["cgroups"] + runner.added()["namespaces"]),
               "the fault's cgroup or namespace", 60)
    proc.kill()
    proc.wait(30)
    assert runner.pending_intents(), "the killed run's intents must stay recorded"
    left = runner.added()
    assert left["cgroups"] + left["namespaces"], "the fault should still be in place after SIGKILL"
    assert leftovers.postgres_processes(str(runner.tmpdir)), "the orphaned server still runs"
    result = runner.run("cleanup", "--state-dir", str(runner.state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout
    runner.assert_nothing_left()


def _poll(predicate: Any, what: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Return as soon as ``predicate()`` holds (every 5 ms: the moment to catch is short)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"gave up waiting until {what}"
        time.sleep(0.005)


@pytest.mark.skipif(not IS_ROOT, reason="the embedded server runs as the postgres user")
@pytest.mark.parametrize("moment", ["folder", "postmaster"])
def test_cleanup_after_the_runner_is_killed_while_the_server_starts(
    runner: Runner, moment: str
) -> None:
    """SIGKILL once the throwaway server's folder exists (initdb is filling it), or once its
    postmaster runs: the folder was recorded before it was made, so `pggit-chaos cleanup`
    stops what still runs from it and removes it. (The folder was recorded only after initdb:
    a kill during initdb left /tmp/pggit-chaos-pg-* that cleanup did not know of.)"""
    experiment = write_experiment(
        runner.tmp / "pod-kill.yaml", EXPERIMENTS[0], **{"spec.duration": "60s"}
    )
    proc = runner.popen("run", str(experiment))
    if moment == "folder":
        _poll(lambda: any(runner.tmpdir.glob("pggit-chaos-pg-*")), "the server's folder exists",
              proc)
    else:
        _poll(lambda: any("listen_addresses=" in line
                          for line in leftovers.postgres_processes(str(runner.tmpdir))),
              "the server's postmaster runs", proc)
    proc.kill()
    proc.communicate(timeout=30)
    (folder,) = runner.tmpdir.glob("pggit-chaos-pg-*")
    assert [i.type for i in StateFile.in_dir(runner.state).pending()] == ["embedded-postgres"]
    result = runner.run("cleanup", "--state-dir", str(runner.state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout
    assert f"removed {folder}" in result.stdout, result.stdout
    if moment == "postmaster":  # it survives its runner (a session of its own): stopped here
        assert re.search(r"killed [1-9]\d* postgres process", result.stdout), result.stdout
    runner.assert_nothing_left()



@pytest.mark.skipif(not IS_ROOT, reason="the embedded server runs as the postgres user")
def test_cleanup_after_checks_without_dsn_is_killed_while_its_server_runs(
        runner: Runner) -> None:
    """`pggit-chaos checks` without --dsn starts its own throwaway server; SIGKILLed while the
    server runs, it leaves it recorded, and `pggit-chaos cleanup` stops it and removes its
    folder (it was recorded nowhere before: the folder and the postmaster were left)."""
    proc = runner.popen("checks", "--category", "corruption")
    _poll(lambda: any("listen_addresses=" in line
                      for line in leftovers.postgres_processes(str(runner.tmpdir))),
          "the checks' server runs", proc, timeout=120)
    proc.kill()
    proc.communicate(timeout=30)
    (folder,) = runner.tmpdir.glob("pggit-chaos-pg-*")
    [intent] = StateFile.in_dir(runner.state).pending()
    assert intent.type == "embedded-postgres" and "checks" in intent.description
    result = runner.run("cleanup", "--state-dir", str(runner.state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed {folder}" in result.stdout, result.stdout
    assert re.search(r"killed [1-9]\d* postgres process", result.stdout), result.stdout
    runner.assert_nothing_left()


def test_checks_without_dsn_clear_their_record_when_they_end(runner: Runner) -> None:
    result = runner.run("checks", "--category", "corruption")
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    assert StateFile.in_dir(runner.state).pending() == []
    assert not any(runner.tmpdir.glob("pggit-chaos-pg-*"))

STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) +(\S+) +\+\d+\.\ds")


def test_without_a_terminal_each_phase_is_one_timestamped_line(runner: Runner) -> None:
    """CI and a Job's log: no live line, one line per phase with its UTC time, no repeats."""
    quick = write_experiment(
        runner.tmp / "quick.yaml", ROOT / "experiments" / "06-connection-kill.yaml",
        **{"spec.duration": "2s", "spec.verification.checks": []},
    )
    result = runner.run("run", str(quick))  # stdout is a pipe: not a terminal
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stamped = [m for m in map(STAMPED.match, result.stdout.splitlines()) if m]
    assert [m.group(3) for m in stamped] == [
        "Pending", "SteadyState", "Injecting", "Recovering", "Verifying", "Passed"]
    assert {m.group(2) for m in stamped} == {"connection-kill"}
    times = [m.group(1) for m in stamped]
    assert times == sorted(times)
    assert "\x1b[" not in result.stdout  # no terminal control sequences in a log
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="the local faults need root (cgroups, netns, iptables)")
def test_a_fault_that_cannot_bite_is_inconclusive(runner: Runner) -> None:
    """A memory limit far above what the server uses: nothing was tested, so no Pass."""
    roomy = write_experiment(
        runner.tmp / "roomy.yaml", ROOT / "experiments" / "03-memory-pressure.yaml",
        **{"metadata.name": "roomy-memory", "spec.duration": "2s",
           "spec.fault.memoryPressure": {"limit": "4Gi"}, "spec.verification.checks": []},
    )
    result = runner.run("run", str(roomy))
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    (journal,) = runner.journals()
    assert journal["verdict"] == "Inconclusive"
    assert journal["reason"].startswith("memory-pressure did not bite: peak ")
    assert "of a 4096.0 MiB limit, memory" in journal["reason"]
    evidence = journal["fault_evidence"]
    assert not evidence["bit"] and evidence["figures"]["limit_hits"] == 0
    assert all(inv["passed"] for inv in journal["invariants"])  # nothing failed either
    assert "INCONCLUSIVE" in result.stdout and "fault bit" in result.stdout
    summary = next(p for p in runner.reports.iterdir() if p.is_dir()) / "summary.md"
    assert "The fault did not bite" in summary.read_text()
    runner.assert_nothing_left()


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True,
                          check=check)


@pytest.fixture
def foreign_chain() -> Iterator[str]:
    """Podman's netavark chain and its FORWARD jump in the host's iptables, as on a machine
    where podman ran once: there before the run, and after it (removed at the end)."""
    chain, jump = "NETAVARK_FORWARD", ["FORWARD", "-m", "comment", "--comment",
                                       "pggit-chaos test: netavark", "-j", "NETAVARK_FORWARD"]
    made_chain = _iptables("-S", chain, check=False).returncode != 0
    if made_chain:
        _iptables("-N", chain)
    _iptables("-A", *jump)
    try:
        yield chain
    finally:
        _iptables("-D", *jump, check=False)
        if made_chain:
            _iptables("-F", chain, check=False)
            _iptables("-X", chain, check=False)


@pytest.mark.serial  # it changes the host's iptables, which every other run compares against
@pytest.mark.skipif(not IS_ROOT, reason="the local faults need root (cgroups, netns, iptables)")
def test_leftovers_are_what_the_run_added_not_what_the_host_had(
        foreign_chain: str, tmp_path: Path) -> None:
    """A foreign chain on the host is not a leftover of the run (it failed before: the check
    wanted the host's iptables empty); a rule added after the snapshot is one."""
    runner = Runner(tmp_path)  # the snapshot: the chain is already there
    try:
        partition = write_experiment(
            runner.tmp / "partition.yaml", ROOT / "experiments" / "05-network-partition.yaml",
            **{"spec.duration": "2s", "spec.verification.checks": []})
        result = runner.run("run", str(partition))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert any(f"-N {foreign_chain}" == rule for rule in leftovers.host_iptables_rules())
        runner.assert_nothing_left()
        # The run's own namespace was seen (so a leaked one would be named), and is gone.
        assert any(name.startswith("pggit-chaos-") and name in result.stdout
                   for name in runner.watcher.names), (runner.watcher.names, result.stdout)
        # A host rule naming the run's own address, as a partition applied on the wrong side
        # would leave it, is reported; the chain that was there before still is not.
        address = next(n for n in runner.watcher.names if n.startswith("10.251."))
        leak = ["INPUT", "-s", f"{address}/32", "-m", "comment", "--comment", "leak-test",
                "-j", "DROP"]
        _iptables("-A", *leak)
        try:
            with pytest.raises(AssertionError, match="leak-test") as caught:
                runner.assert_nothing_left()
            assert foreign_chain not in str(caught.value)
        finally:
            _iptables("-D", *leak)
    finally:
        runner.close()


# ------------------------------------------------------------ a folder: expectations, summary

QUICK_PASS = """\
apiVersion: chaos.pggit.io/v1alpha1
kind: PgGitChaosExperiment
metadata:
  name: quick-pass
  annotations: {ANNOTATIONS}
spec:
  target: {{selector: {{matchLabels: {{app: db}}}}}}
  fault: {{type: connection-kill, connectionKill: {{interval: 1s}}}}
  duration: 1s
  workload: {{clients: 2, rate: 20}}
  recovery: {{timeout: 30s}}
  verification: {{checks: [corruption]}}
"""
#: A server that refuses to start: the run ends in Error at once, with PostgreSQL's reason.
BAD_SERVER = """\
apiVersion: chaos.pggit.io/v1alpha1
kind: PgGitChaosExperiment
metadata:
  name: {NAME}
  annotations: {ANNOTATIONS}
spec:
  target: {{selector: {{matchLabels: {{app: db}}}}}}
  fault: {{type: connection-kill}}
  duration: 1s
  local: {{postgresql: {{max_connections: -5}}}}
"""


def _folder(tmp: Path, files: dict[str, str]) -> Path:
    folder = tmp / "experiments"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _cases(runner: Runner) -> dict[str, Any]:
    from junitparser import JUnitXml

    (path,) = runner.reports.glob("*-run-junit.xml")
    (suite,) = list(JUnitXml.fromfile(str(path)))
    return {case.name: case for case in suite}


@pytest.mark.skipif(not IS_ROOT, reason="the embedded server runs as postgres: needs root")
def test_a_folder_whose_experiments_end_as_expected_exits_0_with_one_table(
    runner: Runner,
) -> None:
    folder = _folder(runner.tmp, {
        "a-pass.yaml": QUICK_PASS.format(ANNOTATIONS="{}"),
        "b-error.yaml": BAD_SERVER.format(NAME="bad-server", ANNOTATIONS=(
            '{"chaos.pggit.io/expect": "Error: outside the valid range"}')),
        "c-skip.yaml": BAD_SERVER.format(NAME="bad-server-skipped", ANNOTATIONS=(
            '{"chaos.pggit.io/skip-when": "Error: max_connections"}')),
    })
    result = runner.run("run", str(folder))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # One table at the end, one row per experiment: expected, got, result, time, report.
    summary = result.stdout[result.stdout.index("3 of 3 experiments"):]
    for column in ("experiment", "expected", "got", "result", "time", "report"):
        assert column in summary
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in summary.splitlines() if line.startswith("│") and
            line.split("│")[1].strip()}
    assert rows["quick-pass"][:3] == ["Passed", "Passed", "as expected"]
    assert rows["bad-server"][1:3] == ["Error", "as expected"]
    assert rows["bad-server-skipped"][:2] == ["Passed", "Error"]
    assert rows["bad-server-skipped"][2].startswith("skipped")
    assert "2 as expected, 1 skipped, 0 unexpected" in summary
    # The combined JUnit: each experiment one testcase, the declared skip skipped.
    cases = _cases(runner)
    assert set(cases) == {"quick-pass", "bad-server", "bad-server-skipped"}
    assert cases["quick-pass"].is_passed and cases["bad-server"].is_passed
    assert cases["bad-server-skipped"].is_skipped
    assert float(cases["quick-pass"].time) > 0
    (journal,) = [j for j in runner.journals() if j["verdict"] == "Pass"]
    assert journal["injected_at"] and journal["reverted_at"]
    runner.assert_nothing_left()


@pytest.mark.skipif(not IS_ROOT, reason="the embedded server runs as postgres: needs root")
def test_a_folder_with_an_outcome_not_expected_exits_non_zero_naming_both(
    runner: Runner,
) -> None:
    folder = _folder(runner.tmp, {
        "a-pass.yaml": QUICK_PASS.format(
            ANNOTATIONS='{"chaos.pggit.io/expect": "Failed"}'),
        "b-error.yaml": BAD_SERVER.format(NAME="bad-server", ANNOTATIONS=(
            '{"chaos.pggit.io/expect": "Error: max_connections"}')),
    })
    result = runner.run("run", str(folder))
    # A Pass where a Fail was expected is a Fail of the run (exit 1), not a Pass.
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 as expected, 0 skipped, 1 unexpected" in result.stdout
    cases = _cases(runner)
    (failure,) = cases["quick-pass"].result
    assert failure.message.startswith("expected Failed, got Passed"), failure.message
    assert cases["bad-server"].is_passed
    runner.assert_nothing_left()


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_bad_expectation_is_refused_before_anything_runs(runner: Runner, command: str) -> None:
    folder = _folder(runner.tmp, {
        "a-pass.yaml": QUICK_PASS.format(ANNOTATIONS="{}"),
        "b-bad.yaml": QUICK_PASS.format(
            ANNOTATIONS='{"chaos.pggit.io/expect": "Fial"}').replace("quick-pass", "bad"),
    })
    result = runner.run(command, str(folder))
    assert result.returncode == 2
    line = next(line for line in result.stderr.splitlines() if "b-bad.yaml" in line)
    assert "metadata.annotations['chaos.pggit.io/expect']" in line
    assert "Passed, Failed, Inconclusive, Aborted, Error" in line and "'Fial'" in line
    assert "Traceback" not in result.stderr
    assert not runner.reports.exists(), "nothing ran"
