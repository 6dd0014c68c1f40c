"""`pggit-chaos cleanup` after a runner is SIGKILLed mid-fault, and the state file itself.

A real child Python process prepares the local substrate, records and injects a real fault,
prints what it made and sleeps; the test SIGKILLs it, checks the fault is still in place, runs
:func:`cleanup` on the state file and checks nothing of that run is left: no cgroup, network
namespace, iptables rule, postgres process or cluster folder, and an empty state file.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pggit_chaos.errors import FaultError
from pggit_chaos.faults import FaultIntent
from pggit_chaos.local import StateFile, cleanup, revert_intent
from pggit_chaos.local.cgroup import cgroup_pids
from pggit_chaos.local.netns import link_exists, netns_exists
from pggit_chaos.local.network import rule_present
from pggit_chaos.local.process import postmasters_of
from pggit_chaos.local.server import become_subreaper
from pggit_chaos.spec import Experiment

CHILD = r"""
import json, sys, time
from pggit_chaos.local import StateFile
from pggit_chaos.local.server import child_pids
from pggit_chaos.local.substrate import LocalSubstrate
from pggit_chaos.spec import Experiment

experiment = Experiment.model_validate(json.loads(sys.argv[1]))
dsn = sys.argv[3] or None
substrate = LocalSubstrate(StateFile(sys.argv[2]), dsn=dsn)
substrate.prepare(experiment)
fault = substrate.build_fault(experiment)
intent = fault.intent()
substrate.record_intent(intent)
server = substrate.server
report = {
    "intent": intent.to_dict(),
    "postmaster": server.pid if server else None,
    "children": child_pids(server.pid) if server else [],
    "base": str(server.base) if server else None,
    "data_dir": str(server.data_dir) if server else None,
    "netns": substrate.netns.undo() if substrate.netns else None,
}
fault.inject()
print(json.dumps(report), flush=True)
time.sleep(600)
"""


def _experiment(fault: dict[str, Any]) -> Experiment:
    return Experiment.new("crash", {
        "target": {"selector": {"matchLabels": {"app": "pg"}}},
        "fault": fault, "duration": "10m",
    })


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run_and_kill(experiment: Experiment, state_path: Path, dsn: str = "") -> dict[str, Any]:
    """Start the runner, wait until it reports the injected fault, SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(experiment.to_manifest()), str(state_path), dsn],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready and proc.stdout else ""
        if not line:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"the runner did not inject its fault: {err[-2000:]}")
        report: dict[str, Any] = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    return report


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _assert_no_cluster_left(report: dict[str, Any]) -> None:
    if report["data_dir"] is None:
        return
    assert postmasters_of(report["data_dir"]) == []
    assert not any(_alive(pid) for pid in [report["postmaster"], *report["children"]])
    assert not Path(report["base"]).exists()


system_faults = pytest.mark.skipif(os.geteuid() != 0, reason="real faults need root")


@pytest.fixture(autouse=True)
def _subreaper() -> None:
    """Orphaned postgres processes of the killed runner become our children (reaped)."""
    become_subreaper()


@pytest.fixture
def state_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGGIT_CHAOS_STATE_DIR", str(tmp_path))
    return tmp_path / "state.json"


@pytest.mark.faults
@system_faults
@pytest.mark.parametrize("fault", [
    {"type": "cpu-throttle", "cpuThrottle": {"cpuPercent": 5}},
    {"type": "memory-pressure", "memoryPressure": {"limit": "256Mi"}},
    {"type": "pod-pause"},
], ids=lambda f: f["type"])
def test_cleanup_after_crash_with_cgroup_fault(fault: dict[str, Any], state_path: Path) -> None:
    report = _run_and_kill(_experiment(fault), state_path)
    cgroup = Path(report["intent"]["undo"]["path"])
    assert cgroup.is_dir() and report["postmaster"] in cgroup_pids(cgroup)
    if fault["type"] == "pod-pause":
        state = cgroup / "freezer.state"
        assert (state.read_text().strip() == "FROZEN") if state.exists() \
            else "frozen 1" in (cgroup / "cgroup.events").read_text()
    lines = cleanup(StateFile(state_path))
    assert not [line for line in lines if line.startswith("FAILED")], lines
    assert not cgroup.exists()
    _assert_no_cluster_left(report)
    assert StateFile(state_path).pending() == []


@pytest.mark.faults
@system_faults
def test_cleanup_after_crash_with_network_partition(state_path: Path) -> None:
    report = _run_and_kill(_experiment({"type": "network-partition"}), state_path)
    netns = report["netns"]
    rules = report["intent"]["undo"]["rules"]
    assert netns_exists(netns["name"]) and all(rule_present(netns["name"], r) for r in rules)
    assert {i.type for i in StateFile(state_path).pending()} == {
        "netns", "embedded-postgres", "network-partition"}
    lines = cleanup(StateFile(state_path))
    assert not [line for line in lines if line.startswith("FAILED")], lines
    assert not netns_exists(netns["name"]) and not link_exists(netns["host_if"])
    _assert_no_cluster_left(report)
    assert StateFile(state_path).pending() == []


@pytest.mark.faults
@system_faults
def test_cleanup_after_crash_while_pod_killed(state_path: Path) -> None:
    fault = {"type": "pod-kill", "podKill": {"restartDelay": "10m"}}
    report = _run_and_kill(_experiment(fault), state_path)
    assert not _alive(report["postmaster"]) and Path(report["base"]).exists()
    lines = cleanup(StateFile(state_path))
    assert not [line for line in lines if line.startswith("FAILED")], lines
    _assert_no_cluster_left(report)
    assert StateFile(state_path).pending() == []


@pytest.mark.faults
def test_cleanup_after_crash_with_trigger_disable(pggit_dsn: str, state_path: Path) -> None:
    report = _run_and_kill(_experiment({"type": "trigger-disable"}), state_path, pggit_dsn)
    query = "SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname LIKE 'pggit%'"
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert {str(state) for _, state in conn.execute(query).fetchall()} == {"D"}
    assert report["intent"]["undo"]["restore"] == {
        "pggit_ddl_trigger": "O", "pggit_drop_trigger": "O"}
    lines = cleanup(StateFile(state_path))
    assert not [line for line in lines if line.startswith("FAILED")], lines
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert {str(state) for _, state in conn.execute(query).fetchall()} == {"O"}
    assert StateFile(state_path).pending() == []


@pytest.mark.faults
def test_a_failed_revert_keeps_its_intent_for_cleanup(pggit_dsn: str, state_path: Path) -> None:
    """The revert of trigger-disable cannot connect (the database stopped taking connections
    mid-fault): the run ends Error saying so, the intent stays in the state file and the
    journal says FaultActive RevertFailed; `pggit-chaos cleanup` reverts it afterwards."""
    import asyncio

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from pggit_chaos.engine.lifecycle import Run
    from pggit_chaos.local.substrate import LocalSubstrate

    experiment = Experiment.new("revert-fails", {
        "target": {"selector": {"matchLabels": {"app": "pg"}}},
        "fault": {"type": "trigger-disable"}, "duration": "3s",
        "workload": {"clients": 1, "rate": 20},
        "verification": {"checks": []},
    })
    database = str(conninfo_to_dict(pggit_dsn)["dbname"])
    maintenance = make_conninfo(pggit_dsn, dbname="postgres")
    substrate = LocalSubstrate(StateFile(state_path), dsn=pggit_dsn)
    run = Run(experiment, substrate, None, baseline=0.5)

    async def refuse_connections_mid_fault() -> None:
        task = asyncio.ensure_future(run.execute())
        while run.journal.injected_at is None:
            assert not task.done(), run.journal.reason
            await asyncio.sleep(0.05)
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await task

    try:
        asyncio.run(refuse_connections_mid_fault())
    finally:
        substrate.close()
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    journal = run.journal
    assert journal.current_phase.value == "Error", journal.reason
    assert journal.reason.startswith("the revert of trigger-disable failed, so it may still be "
                                     "active (cannot connect to the target database"), \
        journal.reason
    assert journal.reverted_at is None and journal.revert_error
    active = next(c for c in journal.conditions() if c["type"] == "FaultActive")
    assert (active["status"], active["reason"]) == ("True", "RevertFailed"), active
    assert [i.type for i in StateFile(state_path).pending()] == ["trigger-disable"]
    query = "SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname LIKE 'pggit%'"
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert {str(state) for _, state in conn.execute(query).fetchall()} == {"D"}
    # force: the run's owner is this (still running) test process, not a finished runner
    lines = cleanup(StateFile(state_path), force=True)
    assert [line.split()[0] for line in lines] == ["reverted"], lines
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert {str(state) for _, state in conn.execute(query).fetchall()} == {"O"}
    assert StateFile(state_path).pending() == []


@pytest.mark.faults
def test_an_interrupt_mid_inject_reverts_after_the_inject(pggit_dsn: str, state_path: Path
                                                          ) -> None:
    """Ctrl-C while inject() is still running (a slow machine): the inject cannot be stopped
    in its thread, so the revert waits for it, and "fault reverted" is said only then. (The
    revert ran at once and found nothing to undo, the intent was cleared, and the inject then
    disabled pgGit's triggers, left so after a run that said it reverted.)"""
    import asyncio
    import threading

    from pggit_chaos.engine.lifecycle import Run
    from pggit_chaos.faults.base import Fault
    from pggit_chaos.faults.sql import TriggerDisable
    from pggit_chaos.local.substrate import LocalSubstrate

    entered, proceed = threading.Event(), threading.Event()
    pending_at_revert: list[list[str]] = []

    class SlowInject(TriggerDisable):
        """trigger-disable on a machine that takes a while to get to the ALTER."""

        def inject(self) -> None:
            entered.set()
            assert proceed.wait(60)
            super().inject()

        def revert(self) -> None:
            pending_at_revert.append([i.type for i in StateFile(state_path).pending()])
            super().revert()

    class Substrate(LocalSubstrate):
        def _sql_fault(self, fault_type: str, settings: Any) -> Fault:
            return SlowInject(self.dsn, list(settings.triggers))

    experiment = Experiment.new("interrupted-inject", {
        "target": {"selector": {"matchLabels": {"app": "pg"}}},
        "fault": {"type": "trigger-disable"}, "duration": "30s",
        "workload": {"clients": 1, "rate": 20},
        "verification": {"checks": []},
    })
    substrate = Substrate(StateFile(state_path), dsn=pggit_dsn)
    run = Run(experiment, substrate, None, baseline=0.2)

    async def interrupt_mid_inject() -> None:
        task = asyncio.ensure_future(run.execute())
        while not entered.is_set():
            assert not task.done(), run.journal.reason
            await asyncio.sleep(0.01)
        task.cancel()
        # The inject goes on in its thread after the cancel (the revert holds the loop).
        threading.Timer(0.5, proceed.set).start()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(interrupt_mid_inject())
    finally:
        proceed.set()
        substrate.close()
    journal = run.journal
    assert journal.reason == "interrupted: fault reverted", journal.reason
    assert journal.injected_at is not None and journal.reverted_at is not None
    assert journal.reverted_at >= journal.injected_at
    assert pending_at_revert == [["trigger-disable"]]  # cleared only after the revert
    query = "SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname LIKE 'pggit%'"
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert {str(state) for _, state in conn.execute(query).fetchall()} == {"O"}
    assert StateFile(state_path).pending() == []


@pytest.mark.faults
def test_cleanup_after_crash_with_lock_contention(pggit_dsn: str, state_path: Path) -> None:
    fault = {"type": "lock-contention", "lockContention": {"table": "pggit.commits"}}
    report = _run_and_kill(_experiment(fault), state_path, pggit_dsn)
    application = report["intent"]["undo"]["application_name"]
    lines = cleanup(StateFile(state_path))
    assert not [line for line in lines if line.startswith("FAILED")], lines
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (application,)).fetchone()
        assert left == (0,)
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '2s'")
            conn.execute("LOCK TABLE pggit.commits IN ACCESS EXCLUSIVE MODE")  # nobody holds it
    assert StateFile(state_path).pending() == []


# -- the state file and cleanup's bookkeeping ----------------------------------------------------


def _intent(n: int, kind: str = "thread") -> FaultIntent:
    return FaultIntent(type="connection-kill", target=f"t{n}", undo={"kind": kind})


def _record_many(path: str, start: int) -> None:
    state = StateFile(path)
    for n in range(start, start + 40):
        state.record(_intent(n))


@pytest.mark.unit
def test_state_file_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_record_many, args=(path, start)) for start in (0, 100, 200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(worker.exitcode == 0 for worker in workers)
    targets = sorted(int(i.target[1:]) for i in StateFile(path).pending())
    assert targets == [*range(40), *range(100, 140), *range(200, 240)]


@pytest.mark.unit
def test_state_file_record_clear_round_trip(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "sub" / "state.json")
    first, second = _intent(1), _intent(2)
    state.record(first)
    state.record(second)
    state.record(first)  # same id: replaced, not duplicated
    assert [i.id for i in state.pending()] == [second.id, first.id]
    assert state.pending()[1].to_dict() == first.to_dict()
    state.clear(second.id)
    state.clear("no-such-id")
    assert [i.id for i in state.pending()] == [first.id]
    assert json.loads(state.path.read_text())["intents"][0]["owner_pid"] == os.getpid()


@pytest.mark.unit
def test_state_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGGIT_CHAOS_STATE_DIR", str(tmp_path))
    assert StateFile().path == tmp_path / "state.json"
    assert StateFile.in_dir(tmp_path / "x").path == tmp_path / "x" / "state.json"


@pytest.mark.unit
def test_cleanup_skips_live_runners_and_reports_failures(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    assert cleanup(state) == []
    live, broken = _intent(1), _intent(2, kind="no-such-kind")
    state.record(live)
    state.record(broken)
    lines = cleanup(state)  # both belong to this (living) process
    assert all(line.startswith("skipped") for line in lines) and len(lines) == 2
    lines = cleanup(state, force=True)
    assert any(line.startswith("FAILED connection-kill") and "no-such-kind" in line
               for line in lines)
    assert any(line.startswith("reverted connection-kill") for line in lines)
    assert [i.id for i in state.pending()] == [broken.id]


@pytest.mark.unit
def test_revert_intent_refuses_what_it_did_not_create() -> None:
    with pytest.raises(FaultError, match="not a cgroup pggit-chaos created"):
        revert_intent(FaultIntent(type="cpu-throttle", target="x", undo={
            "kind": "cgroup", "version": 1, "path": "/sys/fs/cgroup/cpu/system.slice",
            "default_origin": "/sys/fs/cgroup/cpu"}))
    with pytest.raises(FaultError, match="not pggit-chaos's"):
        revert_intent(FaultIntent(type="netns", target="x", undo={"kind": "netns",
                                                                   "name": "default"}))


@pytest.mark.faults
@system_faults
def test_cleanup_stops_an_initdb_still_filling_the_folder(tmp_path: Path) -> None:
    """A runner killed while its server starts leaves initdb (and its postgres) running in the
    recorded folder: cleanup stops them too, then removes the folder. (It looked only for a
    postmaster by its -D: initdb was left running and went on writing into a removed folder.)"""
    from pggit_chaos.local.process import cluster_undo, working_in
    from pggit_chaos.local.server import (
        EmbeddedPostgres,
        _make_traversable,
        _run_as_server_user,
    )

    server = EmbeddedPostgres(base_dir=tmp_path)
    base = server.reserve()
    intent = FaultIntent(type="embedded-postgres", target=str(server.data_dir),
                         undo=cluster_undo(server))
    base.mkdir()
    os.chown(base, *_postgres_ids())
    _make_traversable(base)
    initdb = subprocess.Popen(
        [*_run_as_server_user(), str(server.bindir / "initdb"), "-D", str(server.data_dir),
         "-U", "postgres", "--auth=trust", "--no-sync"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (server.data_dir / "global").exists():  # initdb is writing the folder
            assert initdb.poll() is None, initdb.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(initdb.pid, signal.SIGSTOP)  # the runner that started it is gone: it stays
        assert initdb.pid in working_in(base)
        done = revert_intent(intent)
        assert "killed" in done and f"removed {base}" in done, done
        assert not _alive(initdb.pid)  # reaped by cleanup: it is this test's child
        assert working_in(base) == [] and not base.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            initdb.kill()
        initdb.wait(10)


@pytest.mark.faults
@system_faults
def test_close_keeps_the_record_of_what_it_could_not_remove(state_path: Path) -> None:
    """The server's folder cannot be removed (a filesystem is mounted in it): close() says so
    and the record stays for cleanup, which removes the folder once it can. (close() cleared
    the record whatever happened, and the folder was left with nothing to find it.)"""
    from pggit_chaos.local.substrate import LocalSubstrate

    substrate = LocalSubstrate(StateFile(state_path))
    substrate.prepare(_experiment({"type": "pod-kill"}))
    assert substrate.server is not None
    base = substrate.server.base
    assert base is not None
    busy = base / "busy"
    busy.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pggit-chaos-test", str(busy)],
                   check=True)
    try:
        with pytest.raises(FaultError, match=r"embedded PostgreSQL: could not remove .*still "
                                             r"recorded: run `pggit-chaos cleanup`"):
            substrate.close()
        assert [i.type for i in StateFile(state_path).pending()] == ["embedded-postgres"]
        assert base.exists()
    finally:
        subprocess.run(["umount", str(busy)], check=True)
    lines = cleanup(StateFile(state_path), force=True)  # its owner is this test process
    assert [line.split()[0] for line in lines] == ["reverted"], lines
    assert not base.exists() and StateFile(state_path).pending() == []
