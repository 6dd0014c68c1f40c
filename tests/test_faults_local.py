"""Real faults on a real embedded PostgreSQL: each one bites, and after revert nothing remains.

Needs root (cgroups, network namespaces, iptables). Every test runs a small real load or real
client connections through the fault and checks the effect from the outside, and that the
fault's own evidence (read from the kernel, iptables or the server) says it bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pggit_chaos.errors import FaultError, InsufficientPrivileges, InvalidExperiment
from pggit_chaos.faults import ConnectionKill, LockContention, TriggerDisable, WorkloadWindow
from pggit_chaos.local import (
    CpuThrottle,
    EmbeddedPostgres,
    MemoryPressure,
    NetworkPartition,
    PodKill,
    PodPause,
    ServerCgroup,
    StateFile,
)
from pggit_chaos.local.cgroup import cgroup_pids, cgroup_version, process_cgroup
from pggit_chaos.local.netns import link_exists, netns_exists
from pggit_chaos.local.network import rule_present
from pggit_chaos.local.substrate import LocalSubstrate
from pggit_chaos.spec import Experiment

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(os.geteuid() != 0, reason="real faults need root (cgroups, netns)"),
]

CPU_QUERY = "SELECT count(*) FROM generate_series(1, 3e6)"
#: What the engine would pass when the workload played no part.
QUIET = WorkloadWindow(seconds=1.0)


def experiment(fault: dict[str, Any], **spec: Any) -> Experiment:
    """A minimal valid experiment with this fault section."""
    return Experiment.new("t", {
        "target": {"selector": {"matchLabels": {"app": "pg"}}, **spec.pop("target", {})},
        "fault": fault, "duration": "1s", **spec,
    })


class Load:
    """A client thread inserting rows in a loop, counting successes and errors."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        n = 0
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2,
                                           application_name="test-load")
                n += 1
                conn.execute("INSERT INTO load_t(v) VALUES (%s)", (n,))
                self.ok += 1
            except psycopg.Error as exc:
                self.errors.append(str(exc).strip())
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            time.sleep(0.005)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Load:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS load_t(id bigserial PRIMARY KEY, v int)")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def progresses(self, timeout: float = 30.0) -> bool:
        """True once a few more inserts succeed (polled; no timing asserted)."""
        start = self.ok
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ok >= start + 5:
                return True
            time.sleep(0.05)
        return False


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def in_background(conn: psycopg.Connection[Any], query: str) -> tuple[threading.Thread, list[Any]]:
    """Run a query in a thread; the list gets its result or its exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(conn.execute(query).fetchone())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def server() -> Iterator[EmbeddedPostgres]:
    """A server of this test's own: these faults hit the whole server."""
    with EmbeddedPostgres() as srv:
        yield srv


def test_pod_kill_crashes_and_restarts_with_committed_data(server: EmbeddedPostgres) -> None:
    dsn = server.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept(v text)")
        conn.execute("INSERT INTO kept VALUES ('committed before the kill')")
    victim = psycopg.connect(dsn, autocommit=True)
    backend = victim.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    fault = PodKill(server, grace_period_seconds=0, restart_delay=0.5)
    assert fault.recovery_from_injection
    assert fault.intent().undo["data_dir"] == str(server.data_dir)
    old_pid = server.pid
    assert old_pid is not None
    with Load(dsn) as load:
        assert load.progresses()
        fault.inject()
        assert not alive(old_pid) and not alive(backend)
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        fault.revert()
        assert load.progresses()
    victim.close()
    assert server.running and server.pid != old_pid
    assert fault.restarted_pid == server.pid
    assert load.errors, "the load saw no error although the server was killed"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("committed before the kill",)]
    assert "redo" in server.log_tail(200) or "recover" in server.log_tail(200)
    evidence = fault.evidence(QUIET)
    assert evidence.bit, evidence.summary
    figures = evidence.figures
    assert figures["killed_postmaster_pid"] == old_pid
    assert figures["new_postmaster_pid"] == server.pid
    assert figures["killed_backends"] >= 1 and figures["surviving_processes"] == 0
    assert figures["crash_recovery_log_lines"] >= 1
    assert figures["postmaster_start_before"] != figures["postmaster_start_after"]
    assert "crash recovery ran" in evidence.summary


def test_pod_kill_revert_restarts_at_once_when_delay_is_long(server: EmbeddedPostgres) -> None:
    fault = PodKill(server, grace_period_seconds=1, restart_delay=600)
    fault.inject()
    assert not server.running
    fault.revert()  # does not wait the 600 s: revert means "running again now"
    fault.revert()
    assert server.running
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cpu_throttle_throttles_every_backend_and_leaves_nothing(server: EmbeddedPostgres
                                                               ) -> None:
    fault = CpuThrottle(lambda: server.pid, cpu_percent=10)
    intent = fault.intent()
    assert server.pid is not None
    origin = process_cgroup(server.pid, "cpu", cgroup_version())
    with psycopg.connect(server.dsn(), autocommit=True) as before:
        old_backend = before.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        try:
            fault.inject()
            assert fault.path.is_dir()
            members = cgroup_pids(fault.path)
            assert server.pid in members and old_backend in members
            with psycopg.connect(server.dsn(), autocommit=True) as after:
                new_backend = after.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
                assert new_backend in cgroup_pids(fault.path)  # inherited from the postmaster
                throttled_before = fault.stat().get("nr_throttled", 0)
                after.execute(CPU_QUERY)
                assert fault.stat().get("nr_throttled", 0) > throttled_before
        finally:
            fault.revert()
        assert before.execute("SELECT 1").fetchone() == (1,)
        assert process_cgroup(old_backend, "cpu", cgroup_version()) == origin
    fault.revert()  # idempotent
    assert not Path(intent.undo["path"]).exists()
    assert process_cgroup(server.pid, "cpu", cgroup_version()) == origin
    evidence = fault.evidence(QUIET)  # read by revert before the cgroup went
    assert evidence.bit, evidence.summary
    assert int(evidence.figures["nr_throttled"]) > 0
    assert float(evidence.figures["throttled_seconds"]) > 0


def limit_hits(cgroup: ServerCgroup) -> int:
    if cgroup.version == 2:
        events = dict(line.split() for line in cgroup.read("memory.events").splitlines())
        return int(events["max"])
    return int(cgroup.read("memory.failcnt"))


@pytest.fixture
def caged_server() -> Iterator[tuple[EmbeddedPostgres, ServerCgroup]]:
    """A server started inside a memory cgroup of its own, as the substrate starts it."""
    cgroup = ServerCgroup("memory")
    cgroup.create()
    try:
        with EmbeddedPostgres(cgroup=cgroup.path) as srv:
            yield srv, cgroup
    finally:
        cgroup.remove()
    assert not cgroup.path.exists()


def test_memory_pressure_limits_the_cgroup_the_server_was_born_in(
        caged_server: tuple[EmbeddedPostgres, ServerCgroup]) -> None:
    server, cgroup = caged_server
    assert server.pid in cgroup_pids(cgroup.path)
    # Everything the server allocated is charged here: shared buffers, backends, page cache.
    usage_file = "memory.current" if cgroup.version == 2 else "memory.usage_in_bytes"
    assert int(cgroup.read(usage_file)) > 16 * 1024**2
    fault = MemoryPressure(cgroup, limit_bytes=1024**3, headroom_bytes=0)
    limit_file = "memory.max" if cgroup.version == 2 else "memory.limit_in_bytes"
    with Load(server.dsn()) as load:
        assert load.progresses()
        try:
            fault.inject()
            assert fault.applied_limit is not None and fault.applied_limit < 1024**3
            assert int(cgroup.read(limit_file)) == fault.applied_limit
            # The inserts' WAL and data pages need memory the limit has no room for: the
            # kernel reclaims page cache, and counts each time the limit was hit.
            assert wait_for(lambda: limit_hits(cgroup) > 0, timeout=60)
            assert load.progresses()  # squeezed, not stopped
        finally:
            fault.revert()
    restored = cgroup.read(limit_file).strip()  # unlimited again: "max" (v2), ~2^63 (v1)
    assert restored == "max" or int(restored) >= 2**62
    evidence = fault.evidence(QUIET)
    assert evidence.bit, evidence.summary
    assert int(evidence.figures["limit_hits"]) > 0
    assert "hit its" in evidence.summary
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM load_t").fetchone() == (True,)


def test_memory_pressure_far_above_usage_does_not_bite(
        caged_server: tuple[EmbeddedPostgres, ServerCgroup]) -> None:
    server, cgroup = caged_server
    fault = MemoryPressure(cgroup, limit_bytes=4 * 1024**3)
    try:
        fault.inject()
        with Load(server.dsn()) as load:
            assert load.progresses()
    finally:
        fault.revert()
    evidence = fault.evidence(QUIET)
    assert not evidence.bit
    assert evidence.summary.startswith("memory-pressure did not bite: peak ")
    assert "of a 4096.0 MiB limit" in evidence.summary
    assert evidence.figures["limit_hits"] == 0


def test_pod_pause_freezes_queries_until_thawed(server: EmbeddedPostgres) -> None:
    fault = PodPause(lambda: server.pid)
    conn = psycopg.connect(server.dsn(), autocommit=True)
    try:
        fault.inject()
        assert fault.frozen()
        thread, out = in_background(conn, "SELECT 42")
        thread.join(1.0)
        assert thread.is_alive() and not out, "a frozen server answered"
        fault.revert()
        thread.join(30)
        assert out == [(42,)]
    finally:
        fault.revert()
        conn.close()
    assert not fault.path.exists()
    assert fault.seen_frozen and fault.frozen_tasks >= 1
    stalled = WorkloadWindow(seconds=1.0, baseline_ok_per_s=50, longest_ack_gap_seconds=1.0)
    evidence = fault.evidence(stalled)
    assert evidence.bit, evidence.summary
    assert "nothing acknowledged for 1.0 s" in evidence.summary
    going = WorkloadWindow(seconds=1.0, ok=50, baseline_ok_per_s=50, longest_ack_gap_seconds=0.1)
    assert not fault.evidence(going).bit


def test_network_partition_hangs_clients_and_heals(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    substrate = LocalSubstrate(state)
    exp = experiment({"type": "network-partition"})
    try:
        substrate.prepare(exp)
        netns = substrate.netns
        assert netns is not None and netns_exists(netns.name)
        assert {i.type for i in state.pending()} == {"netns", "embedded-postgres"}
        fault = substrate.build_fault(exp)
        assert isinstance(fault, NetworkPartition)
        plan = substrate.plan(exp)
        assert any("iptables -A INPUT -s " + netns.host_address in line for line in plan)
        open_conn = psycopg.connect(substrate.dsn, autocommit=True)
        substrate.record_intent(fault.intent())
        try:
            fault.inject()
            assert all(rule_present(netns.name, rule) for rule in fault.rules)
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(substrate.dsn, connect_timeout=2).close()
            thread, out = in_background(open_conn, "SELECT 7")
            thread.join(1.5)
            assert thread.is_alive() and not out, "a partitioned connection answered"
            assert not substrate.probe(1.0).reachable
        finally:
            fault.revert()
            substrate.clear_intent(fault.intent())
        thread.join(60)
        assert out == [(7,)]
        assert not any(rule_present(netns.name, rule) for rule in fault.rules)
        evidence = fault.evidence(WorkloadWindow(seconds=2.0, indeterminate=1,
                                                 baseline_ok_per_s=10))
        assert evidence.bit, evidence.summary
        assert int(evidence.figures["dropped_packets_in"]) > 0  # the SYNs and the query
        with psycopg.connect(substrate.dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert substrate.probe(5.0).healthy
        open_conn.close()
    finally:
        substrate.close()
    assert not netns_exists(netns.name) and not link_exists(netns.host_if)
    assert state.pending() == []


PLAN_AND_CREATE = r"""
import json, sys, time
from pathlib import Path
from pggit_chaos.errors import FaultError
from pggit_chaos.local.netns import Netns, subnet_lock

ident, subnet, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():  # every runner starts planning at the same moment
    time.sleep(0.001)
try:
    with subnet_lock():
        netns = Netns.plan(ident, subnets=[subnet])
        netns.create()
    print(json.dumps({"name": netns.name, "host_address": netns.host_address}), flush=True)
except FaultError as exc:
    print(json.dumps({"error": str(exc)}), flush=True)
"""


def test_concurrent_runs_never_pick_the_same_subnet(tmp_path: Path) -> None:
    """Three runners (real processes) plan a namespace at the same moment with one free subnet
    between them: one gets it, the others are told none is free. (Without the lock several saw
    it free and used it: veths with the same address on the host.)"""
    import json

    from pggit_chaos.local.netns import delete_netns, used_subnets

    subnet = next(x for x in range(254, 0, -1) if x not in used_subnets())
    go = tmp_path / "go"
    idents = [f"t{os.getpid() % 10000:04d}{n}" for n in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", PLAN_AND_CREATE, ident, str(subnet),
                               str(go)], stdout=subprocess.PIPE, text=True)
             for ident in idents]
    try:
        time.sleep(1.0)  # both started and waiting
        go.touch()
        outcomes = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
        made = [o for o in outcomes if "name" in o]
        refused = [o["error"] for o in outcomes if "error" in o]
        assert len(made) == 1 and made[0]["host_address"] == f"10.251.{subnet}.1", outcomes
        assert len(refused) == 2, outcomes
        assert all("no free 10.251.X.0/30 subnet" in error for error in refused), outcomes
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for ident in idents:
            delete_netns({"name": f"pggit-chaos-{ident}", "host_if": f"pgc{ident[:8]}h"})
    assert not any(netns_exists(f"pggit-chaos-{ident}") for ident in idents)


def test_connection_kill_terminates_clients_but_not_probes(pggit_dsn: str) -> None:
    client = psycopg.connect(pggit_dsn, autocommit=True, application_name="test-client")
    probe = psycopg.connect(pggit_dsn, autocommit=True, application_name="pggit-chaos-probe-t")
    fault = ConnectionKill(pggit_dsn, interval=0.1)
    fault.check()
    try:
        fault.inject()
        pid = client.info.backend_pid
        assert wait_for(lambda: pid in fault.killed)
        with pytest.raises(psycopg.OperationalError):
            client.execute("SELECT 1")
        assert probe.execute("SELECT 1").fetchone() == (1,)
    finally:
        fault.revert()
    evidence = fault.evidence(QUIET)
    assert evidence.bit, evidence.summary
    assert int(evidence.figures["terminated_backends"]) >= 1
    assert int(evidence.figures["sessions_killed"]) >= 1  # the server counted them too
    survivor = psycopg.connect(pggit_dsn, autocommit=True, application_name="test-client")
    time.sleep(0.3)  # several intervals: nothing kills it any more
    assert survivor.execute("SELECT 1").fetchone() == (1,)
    assert pid not in (survivor.info.backend_pid,)
    survivor.close()
    probe.close()
    client.close()


def test_connection_kill_target_application_only(pggit_dsn: str) -> None:
    other = psycopg.connect(pggit_dsn, autocommit=True, application_name="bystander")
    target = psycopg.connect(pggit_dsn, autocommit=True, application_name="victim")
    fault = ConnectionKill(pggit_dsn, interval=0.1, target_application="victim")
    try:
        fault.inject()
        assert wait_for(lambda: target.info.backend_pid in fault.killed)
    finally:
        fault.revert()
    assert other.info.backend_pid not in fault.killed
    assert other.execute("SELECT 1").fetchone() == (1,)
    other.close()
    target.close()


def test_lock_contention_blocks_ddl_until_revert(pggit_dsn: str) -> None:
    fault = LockContention(pggit_dsn, table="pggit.objects", mode="ACCESS EXCLUSIVE")
    fault.check()
    assert fault.intent().undo["application_name"].startswith("pggit-chaos-fault-")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        try:
            fault.inject()
            held = conn.execute(
                "SELECT mode FROM pg_locks WHERE pid = %s AND relation = 'pggit.objects'::regclass",
                (fault.backend_pid,)).fetchall()
            assert held == [("AccessExclusiveLock",)]
            conn.execute("SET lock_timeout = '1s'")  # long enough for the sampler to see it
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("CREATE TABLE during_lock(id int)")  # the trigger writes objects
        finally:
            fault.revert()
        evidence = fault.evidence(QUIET)
        assert evidence.bit, evidence.summary
        assert int(evidence.figures["peak_waiters"]) >= 1
        conn.execute("CREATE TABLE after_lock(id int)")
        tracked = conn.execute(
            "SELECT count(*) FROM pggit.history WHERE object_name = 'after_lock'").fetchone()
        assert tracked == (1,)
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE pid = %s",
                            (fault.backend_pid,)).fetchone() == (0,)
    fault.revert()


def test_lock_contention_rejects_bad_table_names(pggit_dsn: str) -> None:
    for bad in ("pggit.objects; DROP TABLE x", "a.b.c", "1abc", ""):
        with pytest.raises(FaultError):
            LockContention(pggit_dsn, table=bad)


def _evtenabled(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT evtname, evtenabled FROM pg_event_trigger "
                        "WHERE evtname LIKE 'pggit%'").fetchall()
    return {str(name): str(state) for name, state in rows}


def test_trigger_disable_untracks_ddl_and_restores(pggit_dsn: str) -> None:
    fault = TriggerDisable(pggit_dsn)
    fault.check()
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert set(_evtenabled(conn).values()) == {"O"}
        try:
            fault.inject()
            assert _evtenabled(conn) == {"pggit_ddl_trigger": "D", "pggit_drop_trigger": "D"}
            conn.execute("CREATE TABLE untracked(id int)")
        finally:
            fault.revert()
        assert _evtenabled(conn) == {"pggit_ddl_trigger": "O", "pggit_drop_trigger": "O"}
        conn.execute("CREATE TABLE tracked(id int)")
        names = {r[0] for r in conn.execute("SELECT object_name FROM pggit.history").fetchall()}
        assert "tracked" in names and "untracked" not in names
    evidence = fault.evidence(QUIET)
    assert evidence.bit, evidence.summary
    assert evidence.figures["relations_changed"] == 1  # untracked, and not the later one
    assert evidence.figures["history_rows_added"] == 0


def test_trigger_disable_without_ddl_does_not_bite(pggit_dsn: str) -> None:
    fault = TriggerDisable(pggit_dsn)
    try:
        fault.inject()
    finally:
        fault.revert()
    evidence = fault.evidence(QUIET)
    assert not evidence.bit
    assert "no relation was created or altered" in evidence.summary


def test_trigger_disable_needs_a_superuser(pggit_dsn: str) -> None:
    role = f"plain_{os.getpid()}"
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        dsn = psycopg.conninfo.make_conninfo(pggit_dsn, user=role)
        with pytest.raises(InsufficientPrivileges, match="superuser"):
            TriggerDisable(dsn).check()
        with pytest.raises(InsufficientPrivileges, match="pg_signal_backend"):
            ConnectionKill(dsn).check()
    finally:
        with psycopg.connect(pggit_dsn, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


def test_cgroup_and_network_faults_need_root() -> None:
    """As a non-root user (a user namespace mapping us to nobody) the checks refuse in one
    clear line each, before anything is created."""
    code = (
        "from pggit_chaos.local import CpuThrottle\n"
        "from pggit_chaos.errors import InsufficientPrivileges\n"
        "from pggit_chaos.local.netns import check_network_privileges\n"
        "for make in (lambda: CpuThrottle(lambda: 1, 10), check_network_privileges):\n"
        "    try:\n"
        "        make()\n"
        "    except InsufficientPrivileges as exc:\n"
        "        print(exc)\n"
    )
    result = subprocess.run(
        ["unshare", "--user", "--map-user=65534", "--map-group=65534",
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert len(lines) == 2
    assert lines[0].startswith("cpu-throttle needs write access to /sys/fs/cgroup")
    assert "run as root" in lines[0]
    assert lines[1] == "network-partition needs root (CAP_NET_ADMIN) and iptables"


def test_substrate_with_dsn_allows_only_sql_faults(pggit_dsn: str, tmp_path: Path) -> None:
    substrate = LocalSubstrate(StateFile(tmp_path / "state.json"), dsn=pggit_dsn)
    substrate.prepare(experiment({"type": "pod-kill"}))
    assert substrate.server is None
    with pytest.raises(InvalidExperiment, match="pod-kill needs the embedded PostgreSQL"):
        substrate.build_fault(experiment({"type": "pod-kill"}))
    assert isinstance(substrate.build_fault(experiment({"type": "trigger-disable"})),
                      TriggerDisable)
    probe = substrate.probe(5.0)
    assert probe.reachable and probe.healthy, probe.detail
    assert probe.components.get("event_triggers") == "healthy"
    substrate.close()


def test_substrate_runs_a_fault_and_probes_it(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    substrate = LocalSubstrate(state)
    exp = experiment({"type": "pod-pause"}, target={"database": "appdb"},
                     local={"postgresql": {"synchronous_commit": "off"}})
    try:
        substrate.prepare(exp)
        assert substrate.server is not None and "dbname=appdb" in substrate.dsn
        with psycopg.connect(substrate.dsn) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert substrate.probe(5.0).healthy
        fault = substrate.build_fault(exp)
        intent = fault.intent()
        substrate.record_intent(intent)
        assert intent.id in {i.id for i in state.pending()}
        try:
            fault.inject()
            probe = substrate.probe(1.0)
            assert not probe.reachable and not probe.healthy
        finally:
            fault.revert()
            substrate.clear_intent(intent)
        assert wait_for(lambda: substrate.probe(2.0).healthy)
        data_dir = substrate.server.data_dir
    finally:
        substrate.close()
    assert not data_dir.exists()
    assert state.pending() == []


# ------------------------------------------------------------------- index-corruption


INDEX_CORRUPTION = {"type": "index-corruption", "indexCorruption": {"destructive": True}}


def _commits(dsn: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(count):
            conn.execute("SELECT pggit.commit_changes('main', %s)", (f"commit {i}",))


def _bt_index_check(dsn: str) -> dict[str, str]:
    """Each pgGit btree index -> '' (amcheck passes) or amcheck's SQLSTATE and message."""
    outcome: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = [str(r[0]) for r in conn.execute(
            "SELECT 'pggit.' || c.relname FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
            " WHERE c.relnamespace = 'pggit'::regnamespace AND c.relkind = 'i'"
            " AND am.amname = 'btree' ORDER BY 1")]
        for name in names:
            try:
                conn.execute("SELECT bt_index_check(%s::regclass, true)", (name,))
                outcome[name] = ""
            except psycopg.Error as exc:
                outcome[name] = f"{exc.sqlstate} {exc.diag.message_primary}"
    return outcome


def test_index_corruption_misorders_one_pggit_index_and_leaves_nothing(tmp_path: Path) -> None:
    """Through the substrate, as a run does: amcheck fails on exactly the index the evidence
    names, the server runs again with the data it had, and close() leaves no process."""
    import leftovers

    state = StateFile(tmp_path / "state.json")
    substrate = LocalSubstrate(state)
    exp = experiment(INDEX_CORRUPTION)
    try:
        substrate.prepare(exp)
        server = substrate.server
        assert server is not None
        _commits(substrate.dsn, 40)
        assert set(_bt_index_check(substrate.dsn).values()) == {""}  # sound before
        fault = substrate.build_fault(exp)
        intent = fault.intent()
        assert "DESTRUCTIVE" in intent.description
        substrate.record_intent(intent)
        before_pid = server.pid
        try:
            fault.inject()
        finally:
            fault.revert()
            substrate.clear_intent(intent)
        evidence = fault.evidence(QUIET)
        assert evidence.bit, evidence.summary
        index = str(evidence.figures["index"])
        assert index.startswith("pggit.") and index in evidence.summary
        assert "expected outcome" in evidence.summary
        assert int(evidence.figures["bytes_changed"]) > 0
        assert server.pid != before_pid and server.running
        checked = _bt_index_check(substrate.dsn)
        assert checked[index].startswith("XX002 item order invariant violated"), checked
        assert {name for name, problem in checked.items() if problem} == {index}
        with psycopg.connect(substrate.dsn) as conn:  # the table itself is intact
            assert conn.execute("SELECT count(*) FROM pggit.commits WHERE message LIKE"
                                " 'commit %'").fetchone() == (40,)
        assert substrate.probe(5.0).reachable
    finally:
        data_dir = substrate.server.data_dir if substrate.server else None
        substrate.close()
    assert data_dir is not None and not data_dir.exists()
    assert leftovers.postgres_processes(str(data_dir)) == []
    assert state.pending() == []


def test_index_corruption_of_a_named_index_and_of_a_missing_one() -> None:
    from pggit_chaos.local.index_corruption import IndexCorruption

    with EmbeddedPostgres() as srv:
        dsn = srv.create_database("pggit")
        from pggit_chaos.pggit import install

        install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION amcheck")
        _commits(dsn, 5)
        missing = IndexCorruption(srv, "pggit", "no_such_index")
        with pytest.raises(FaultError, match=r"no btree index 'no_such_index'.*commits_pkey"):
            missing.inject()
        missing.revert()
        assert srv.running  # a refused injection still leaves the server up
        fault = IndexCorruption(srv, "pggit", "commits_pkey")
        fault.inject()
        fault.revert()
        assert fault.evidence(QUIET).figures["index"] == "pggit.commits_pkey"
        checked = _bt_index_check(dsn)
        assert {name for name, problem in checked.items() if problem} == {"pggit.commits_pkey"}


def _enable_checksums(srv: EmbeddedPostgres) -> None:
    from pggit_chaos.local.server import _run_as_server_user

    tool = srv.bindir / "pg_checksums"
    if not tool.is_file():
        pytest.skip(f"{tool} is missing: cannot turn data checksums on")
    srv.stop()
    done = subprocess.run([*_run_as_server_user(), str(tool), "--enable", "-D", str(srv.data_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    srv.start()


def test_index_corruption_with_data_checksums_rewrites_the_page_checksum() -> None:
    """With checksums on, the page still reads (its checksum fits, as computed by PostgreSQL
    for every untouched page) and only amcheck sees the misordered entries; a page written
    without a new checksum fails on read instead (XX001), which amcheck reports too."""
    import struct

    from pggit_chaos.local.index_corruption import (
        choose_target,
        corrupt_index,
        corrupt_page,
        page_checksum,
        pggit_btree_indexes,
    )
    from pggit_chaos.pggit import install

    with EmbeddedPostgres() as srv:
        dsn = srv.create_database("pggit")
        install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION amcheck")
        _commits(dsn, 30)
        _enable_checksums(srv)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SHOW data_checksums").fetchone() == ("on",)
            indexes = pggit_btree_indexes(conn)
        srv.stop()
        pages = 0
        for index in indexes:  # our checksum is PostgreSQL's, page by page
            data = (srv.data_dir / index.path).read_bytes()
            for block in range(len(data) // 8192):
                page = data[block * 8192:(block + 1) * 8192]
                assert struct.unpack_from("<H", page, 8)[0] == page_checksum(page, block)
                pages += 1
        assert pages > len(indexes)  # every metapage, and the leaves of the filled ones
        srv.start()
        corruption = corrupt_index(srv, "pggit", "commits_pkey")
        assert corruption.checksums and "checksum was rewritten" in corruption.describe()
        assert _bt_index_check(dsn)["pggit.commits_pkey"].startswith("XX002 item order")
        # The same damage without a fitting checksum: the page no longer reads at all.
        srv.stop()
        target, block, items = choose_target(srv.data_dir, indexes, 8192, "commits_branch_id_idx")
        corrupt_page(srv.data_dir / target.path, block, 8192, checksums=False, items=items)
        srv.start()
        problem = _bt_index_check(dsn)["pggit.commits_branch_id_idx"]
        assert problem.startswith("XX001 invalid page in block"), problem


def test_substrate_refuses_index_corruption_with_a_dsn(pggit_dsn: str, tmp_path: Path) -> None:
    substrate = LocalSubstrate(StateFile(tmp_path / "state.json"), dsn=pggit_dsn)
    exp = experiment(INDEX_CORRUPTION)
    substrate.prepare(exp)
    with pytest.raises(InvalidExperiment, match=r"destructive .* only against the embedded"):
        substrate.build_fault(exp)
    assert any("refused: index-corruption is destructive" in line
               for line in substrate.plan(exp))
    substrate.close()
