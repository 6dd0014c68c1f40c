"""The recorded workload and its history: against real PostgreSQL with pgGit, and real faults.

Unit tests of ``History`` (pairing, counts, timeline, JSONL) run without a server; the rest
drive ``Workload`` against the session server (``pggit_dsn``) or a server of their own that
they kill, restart or freeze.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pggit_chaos.engine.history import History, Op, percentile
from pggit_chaos.engine.invariants import check_invariants
from pggit_chaos.engine.workload import (
    APPLICATION_NAME,
    Workload,
    classify_error,
    run_branch,
    run_schema,
)
from pggit_chaos.errors import ConfigurationError
from pggit_chaos.local import EmbeddedPostgres
from waits import acknowledged, every_client_acknowledged, run_until, until

# -- History (no server) ----------------------------------------------------------------------


def _history() -> History:
    h = History()
    msg = {"branch": "b", "message": "m1"}
    h.record(0, "invoke", "commit", msg, at=0.1)
    h.record(1, "invoke", "create_table", {"schema": "s", "table": "t1_1"}, at=0.2)
    h.record(0, "ok", "commit", msg, result="T1", at=0.4)
    h.record(1, "info", "create_table", {"schema": "s", "table": "t1_1"}, error="lost", at=1.3)
    h.record(0, "invoke", "commit", {"branch": "b", "message": "m2"}, at=1.4)
    h.record(0, "fail", "commit", {"branch": "b", "message": "m2"}, error="57014", at=1.6)
    h.record(1, "invoke", "drop_table", {"schema": "s", "table": "t1_0"}, at=1.7)
    return h


@pytest.mark.unit
def test_history_pairs_counts_and_latency() -> None:
    h = _history()
    pairs = h.pairs()
    assert [p.outcome for p in pairs] == ["ok", "info", "fail", "info"]  # last never completed
    assert [p.invoke.index for p in pairs] == [0, 1, 4, 6]
    assert pairs[0].completion is not None and pairs[0].completion.result == "T1"
    assert pairs[3].completion is None
    counts = h.counts()
    assert (counts.invoked, counts.ok, counts.failed, counts.indeterminate, counts.in_flight) == (
        4,
        1,
        1,
        1,
        1,
    )
    assert h.latencies() == pytest.approx([0.3])
    assert h.latencies(["create_table"]) == []
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([], 99) is None


@pytest.mark.unit
def test_history_rejects_malformed_sequences() -> None:
    h = History()
    h.record(0, "invoke", "commit", {"branch": "b", "message": "x"})
    h.record(0, "invoke", "commit", {"branch": "b", "message": "y"})
    with pytest.raises(ValueError, match="still in flight"):
        h.pairs()
    h2 = History()
    h2.record(3, "ok", "commit", {"branch": "b", "message": "x"})
    with pytest.raises(ValueError, match="no invocation"):
        h2.pairs()


@pytest.mark.unit
def test_history_rate_series_buckets_ok_and_errors() -> None:
    series = _history().rate_series(0.5)
    assert [b.start for b in series] == [0.0, 0.5, 1.0, 1.5]
    assert [b.ok_per_s for b in series] == [2.0, 0.0, 0.0, 0.0]
    assert [b.errors_per_s for b in series] == [0.0, 0.0, 2.0, 2.0]
    with pytest.raises(ValueError):
        _history().rate_series(0)


@pytest.mark.unit
def test_history_jsonl_round_trip(tmp_path: Path) -> None:
    h = _history()
    path = h.to_jsonl(tmp_path / "history.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and json.loads(lines[2])["result"] == "T1"
    back = History.from_jsonl(path)
    assert [op.to_dict() for op in back.ops] == [op.to_dict() for op in h.ops]
    assert back.counts() == h.counts()
    (tmp_path / "bad.jsonl").write_text(
        '{"index": 0, "process": 0, "type": "maybe", "f": "commit"}\n'
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        History.from_jsonl(tmp_path / "bad.jsonl")
    # what a cluster run keeps beside its journal: the same lines, gzipped
    import gzip

    assert gzip.decompress(h.to_jsonl_gzip()) == path.read_bytes()
    assert h.to_jsonl_gzip() == h.to_jsonl_gzip()  # deterministic (mtime 0)


@pytest.mark.unit
def test_history_append_is_thread_safe() -> None:
    import threading

    h = History()

    def writer(n: int) -> None:
        for i in range(2000):
            h.record(n, "invoke", "commit", {"branch": "b", "message": f"{n}:{i}"})
            h.record(n, "ok", "commit", {"branch": "b", "message": f"{n}:{i}"}, result=str(i))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [op.index for op in h.ops] == list(range(16000))
    assert len(h.pairs()) == 8000 and all(p.outcome == "ok" for p in h.pairs())


@pytest.mark.unit
def test_workload_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="mix"):
        Workload("", mix={"commit": 1, "vacuum": 1})
    with pytest.raises(ConfigurationError, match="mix"):
        Workload("", mix={"commit": 0, "ddl": 0})
    with pytest.raises(ConfigurationError, match="run id"):
        Workload("", run_id="Robert'); DROP TABLE students;--")
    with pytest.raises(ConfigurationError, match="clients"):
        Workload("", clients=0)
    with pytest.raises(ConfigurationError, match="rate"):
        Workload("", rate=-1)
    op = _history().ops[2]
    assert Op.from_dict(op.to_dict()) == op


# -- against the session server -----------------------------------------------------------------


def _assert_consistent(history: History) -> None:
    counts = history.counts()
    assert counts.in_flight == 0
    assert counts.invoked == counts.ok + counts.failed + counts.indeterminate
    pairs = history.pairs()
    assert len(pairs) == counts.invoked
    assert all(p.completion is not None for p in pairs)
    for p in pairs:
        assert p.completion is not None and p.completion.time >= p.invoke.time
        if p.invoke.f == "commit" and p.outcome == "ok":
            assert p.completion.result


@pytest.mark.postgres
def test_workload_runs_and_checker_passes(pggit_dsn: str, tmp_path: Path) -> None:
    history = History()
    load = Workload(pggit_dsn, clients=4, rate=0, op_timeout=5, history=history, seed=7)
    every_kind = ("commit", "create_table", "alter_table", "drop_table")
    asyncio.run(
        run_until(
            load,
            lambda: history.counts().ok > 150
            and all(acknowledged(history, f) for f in every_kind)
            and every_client_acknowledged(history, 4),
            "150 operations of every kind by every client were acknowledged",
        )
    )
    _assert_consistent(history)
    counts = history.counts()
    fs = {op.f for op in history.ops if op.type == "ok"}
    assert {"commit", "create_table", "alter_table", "drop_table"} <= fs
    assert counts.ok > 100 and counts.failed == 0 and counts.indeterminate == 0
    assert {op.process for op in history.ops} == {0, 1, 2, 3}
    messages = [
        op.value["message"] for op in history.ops if op.type == "invoke" and op.f == "commit"
    ]
    assert len(messages) == len(set(messages))
    assert all(m.startswith(f"chaos:{load.run_id}:") for m in messages)

    report = check_invariants(pggit_dsn, history, load.run_id)
    assert report.passed, report.to_dict()
    assert report.counts.invoked == counts.invoked and report.counts.ok == counts.ok
    # Saved and reloaded, the history gives the same verdict.
    reloaded = History.from_jsonl(history.to_jsonl(tmp_path / "h.jsonl"))
    assert check_invariants(pggit_dsn, reloaded, load.run_id).to_dict() == report.to_dict()

    with psycopg.connect(pggit_dsn) as conn:
        n_commits = conn.execute(
            "SELECT count(*) FROM pggit.commits c JOIN pggit.branches b ON b.id = c.branch_id "
            "WHERE b.name = %s",
            (run_branch(load.run_id),),
        ).fetchone()
        assert n_commits is not None
        assert n_commits[0] == sum(1 for op in history.ops if op.type == "ok" and op.f == "commit")


@pytest.mark.postgres
def test_rate_limit_is_shared_across_clients(pggit_dsn: str) -> None:
    history = History()
    load = Workload(pggit_dsn, clients=4, rate=40, op_timeout=5, history=history)

    async def run() -> float:
        async with load:
            start = history.now()
            await until(lambda: history.counts().invoked >= 60, "60 operations were invoked")
        return history.now() - start

    elapsed = asyncio.run(run())
    invoked = history.counts().invoked
    # One slot every 1/40 s across all clients (plus the first slot at time zero), however
    # long a busy machine took to invoke the 60.
    assert 60 <= invoked <= 40 * (elapsed + 0.5) + 1


@pytest.mark.postgres
def test_server_cancelled_statements_are_fail_not_info(pggit_dsn: str) -> None:
    """A row lock on the run's branch blocks commit_changes; statement_timeout cancels: fail."""
    history = History()
    # The server cancels at the statement_timeout (1 s), well before the client gives up (5 s).
    load = Workload(
        pggit_dsn,
        clients=2,
        rate=0,
        op_timeout=5.0,
        statement_timeout=1.0,
        mix={"commit": 1, "ddl": 0},
        history=history,
    )

    async def run() -> None:
        async with load:
            await until(lambda: history.counts().ok > 0, "a commit was acknowledged")
            locker = await psycopg.AsyncConnection.connect(pggit_dsn)
            try:
                await locker.execute(
                    "SELECT 1 FROM pggit.branches WHERE name = %s FOR UPDATE",
                    (load.branch,),
                )
                await until(lambda: history.counts().failed > 0, "a blocked commit was cancelled")
            finally:
                await locker.rollback()
                await locker.close()
            released = history.now()
            await until(
                lambda: acknowledged(history, after=released) > 0,
                "a commit was acknowledged after the lock was released",
            )

    asyncio.run(run())
    _assert_consistent(history)
    fails = [op for op in history.ops if op.type == "fail"]
    assert fails and all(op.error and op.error.startswith("57014") for op in fails)
    assert history.counts().indeterminate == 0
    last_fail = max(op.time for op in fails)
    assert any(op.type == "ok" and op.time > last_fail for op in history.ops)
    report = check_invariants(pggit_dsn, history, load.run_id)
    assert report.passed, report.to_dict()
    assert report.counts.failed == len(fails)


@pytest.mark.postgres
def test_classify_error_on_real_errors(pggit_dsn: str) -> None:
    async def run() -> tuple[str, str, str]:
        conn = await psycopg.AsyncConnection.connect(pggit_dsn, autocommit=True)
        try:
            await conn.execute("SELECT pggit.commit_changes('   ', 'x')")
        except psycopg.Error as exc:
            bad_arg = classify_error(exc, conn)
        await conn.execute("SET statement_timeout = '50ms'")
        try:
            await conn.execute("SELECT pg_sleep(1)")
        except psycopg.Error as exc:
            cancelled = classify_error(exc, conn)
        killer = await psycopg.AsyncConnection.connect(pggit_dsn, autocommit=True)
        await killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        await killer.close()
        try:
            await conn.execute("SELECT 1")
        except psycopg.Error as exc:
            terminated = classify_error(exc, conn)
        await conn.close()
        return bad_arg, cancelled, terminated

    assert asyncio.run(run()) == ("fail", "fail", "info")


@pytest.mark.postgres
def test_workload_survives_terminated_backends(pggit_dsn: str) -> None:
    history = History()
    load = Workload(pggit_dsn, clients=4, rate=0, op_timeout=5, history=history)
    killed: list[int] = []
    kill_time: list[float] = []

    async def run() -> None:
        async with load:
            await until(lambda: every_client_acknowledged(history, 4), "all 4 clients worked")
            async with await psycopg.AsyncConnection.connect(pggit_dsn, autocommit=True) as admin:
                kill_time.append(history.now())
                cur = await admin.execute(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE %s AND datname = current_database()",
                    (f"{APPLICATION_NAME}-_",),
                )
                killed.extend(row[0] for row in await cur.fetchall())
            await until(
                lambda: load.stats.connects >= 8
                and acknowledged(history, after=kill_time[0] + 0.1) > 0,
                "every client reconnected and worked again",
            )

    asyncio.run(run())
    assert len(killed) == 4
    _assert_consistent(history)
    counts = history.counts()
    assert counts.indeterminate + counts.failed >= 1
    assert load.stats.connects >= 8  # every client reconnected
    assert any(op.type == "ok" and op.time > kill_time[0] + 0.1 for op in history.ops)
    report = check_invariants(pggit_dsn, history, load.run_id)
    assert report.passed, report.to_dict()
    assert report.counts.indeterminate == counts.indeterminate
    assert len(report.indeterminate) == counts.indeterminate


# -- against a server of our own (killed, restarted, frozen) ---------------------------------------


@pytest.fixture(scope="module")
def own_server() -> Iterator[tuple[EmbeddedPostgres, str]]:
    from pggit_chaos.pggit import install

    with EmbeddedPostgres() as server:
        dsn = server.create_database("workload")
        install(dsn)
        yield server, dsn


@pytest.mark.postgres
def test_workload_survives_server_crash_and_restart(
    own_server: tuple[EmbeddedPostgres, str],
) -> None:
    server, dsn = own_server
    history = History()
    load = Workload(dsn, clients=4, rate=0, op_timeout=3, history=history)
    marks: dict[str, float] = {}

    async def run() -> None:
        async with load:
            await until(lambda: every_client_acknowledged(history, 4), "all 4 clients worked")
            marks["kill"] = history.now()
            await asyncio.to_thread(server.kill)
            await until(
                lambda: load.stats.connect_failures >= 1, "a client failed to reach the dead server"
            )
            await asyncio.to_thread(server.start)
            marks["up"] = history.now()
            await until(
                lambda: load.stats.connects >= 8
                and acknowledged(history, after=marks["up"]) > 0,
                "the clients reconnected to the restarted server and worked again",
            )

    asyncio.run(run())
    _assert_consistent(history)
    counts = history.counts()
    assert counts.indeterminate >= 1  # ops in flight at the kill (or sent to the dead server)
    assert any(op.type == "ok" and op.time > marks["up"] for op in history.ops)
    assert load.stats.connect_failures >= 1 and load.stats.connects >= 8
    report = check_invariants(dsn, history, load.run_id)
    assert report.passed, report.to_dict()  # default durability: nothing acknowledged is lost
    assert {i.present for i in report.indeterminate} <= {True, False}


@pytest.mark.postgres
def test_frozen_backends_hit_the_client_timeout(own_server: tuple[EmbeddedPostgres, str]) -> None:
    """SIGSTOPped backends never answer: ops end as info at op_timeout and stop() returns."""
    _server, dsn = own_server
    history = History()
    load = Workload(
        dsn,
        clients=3,
        rate=0,
        op_timeout=0.5,
        statement_timeout=0,
        history=history,
        mix={"commit": 1, "ddl": 0},
    )
    frozen: list[int] = []

    async def run() -> None:
        await load.start()
        try:
            await until(lambda: every_client_acknowledged(history, 3), "all 3 clients worked")
            with psycopg.connect(dsn, autocommit=True) as admin:
                frozen.extend(
                    row[0]
                    for row in admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
                        (f"{APPLICATION_NAME}-_",),
                    ).fetchall()
                )
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            await until(
                lambda: load.stats.timeouts >= 3, "every frozen client's operation timed out"
            )
            await load.stop()  # returns although the frozen backends never reply
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        # The thawed backends find their sockets gone and exit: wait, so that a commit they
        # were in the middle of has settled before the checker reads.
        with psycopg.connect(dsn, autocommit=True) as admin:
            await until(
                lambda: admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (frozen,)
                ).fetchone()
                == (0,),
                "the thawed backends exited",
            )

    asyncio.run(run())
    assert len(frozen) == 3
    _assert_consistent(history)
    infos = [op for op in history.ops if op.type == "info"]
    assert infos and all(op.error == "client timeout after 0.5s" for op in infos)
    assert load.stats.timeouts >= 3
    for pair in history.pairs():
        if pair.outcome == "info":
            assert pair.latency is not None and pair.latency < 0.5 + 1.5
    report = check_invariants(dsn, history, load.run_id)
    assert report.passed, report.to_dict()


@pytest.mark.postgres
def test_setup_creates_schema_and_branch_only(pggit_dsn: str) -> None:
    load = Workload(pggit_dsn, clients=1, run_id="setup_probe")
    asyncio.run(load.setup())
    with psycopg.connect(pggit_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (run_schema("setup_probe"),)
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FROM pggit.branches WHERE name = %s", (run_branch("setup_probe"),)
        ).fetchone() == (1,)
    report = check_invariants(pggit_dsn, History(), "setup_probe")
    assert report.passed, report.to_dict()
    assert report.counts.invoked == 0
