"""Resource checks: 100+ column tables are tracked; an exhausted pool times out, never crashes.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (category ``resource``).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from pggit_chaos.checks.api import PgGitApi
from pggit_chaos.checks.names import application_name
from pggit_chaos.checks.strategies import wide_table_definition
from pggit_chaos.checks.support import Scratch, run_workers, scale

pytestmark = pytest.mark.resource

Conn = psycopg.Connection[Any]


@pytest.mark.requires("history", "objects", "calculate_schema_hash")
@settings(max_examples=max(2, settings().max_examples // 6))
@given(table=wide_table_definition())
def test_wide_table_tracked(conn: Conn, scratch: Scratch, pggit: PgGitApi, table: Any) -> None:
    """A table of 100+ columns is tracked with its hash; adding a 101st+ column changes it."""
    assert len(table.columns) >= 100
    name = scratch.unique(table.name)
    ident = scratch.table(name)
    conn.execute(table.create_sql(scratch.schema, name))
    obj = pggit.tracked(conn, scratch.schema, name)
    assert obj is not None and obj.is_active, f"{len(table.columns)}-column table not tracked"
    assert pggit.history(conn, scratch.schema, name) == ["CREATE"]
    first = pggit.live_hash(conn, scratch.schema, name)
    assert first, "no structure hash for the wide table"
    records = obj.recorded_hash is not None or pggit.embedded
    if records:
        assert obj.recorded_hash == first, "recorded hash of the wide table != live hash"
    else:
        pggit.deviate(f"pggit.objects.{pggit.hash_column} stays empty: no hash recorded at DDL")
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN chaos_one_more bigint").format(ident))
    second = pggit.live_hash(conn, scratch.schema, name)
    assert second != first, "hash unchanged after adding a column to a wide table"
    again = pggit.tracked(conn, scratch.schema, name)
    assert again is not None and again.version > obj.version, "ALTER of the wide table not recorded"
    if records:
        assert again.recorded_hash == second, "ALTER of the wide table not recorded"


@pytest.mark.requires("commit_changes", "commits")
def test_pool_exhaustion_times_out_not_crash(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, dsn: str
) -> None:
    """A full pool makes callers time out (PoolTimeout), not crash; returned commits are kept."""
    size = 2
    branch = scratch.branch("pool")
    with ConnectionPool(
        dsn,
        min_size=size,
        max_size=size,
        timeout=0.3,
        open=True,
        kwargs={"autocommit": True, "application_name": application_name()},
    ) as pool:
        pool.wait(timeout=10)
        held = [pool.getconn() for _ in range(size)]
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.2)
        for c in held:
            pool.putconn(c)

        workers = 6
        per_worker = 5 * scale()

        def work(i: int, barrier: threading.Barrier) -> tuple[list[str], int]:
            ids: list[str] = []
            timeouts = 0
            barrier.wait()
            for n in range(per_worker):
                try:
                    with pool.connection(timeout=0.05 if i % 2 else 10.0) as pooled:
                        ids.append(pggit.commit(pooled, branch, f"pool w{i} c{n}"))
                        pooled.execute("SELECT pg_sleep(0.01)")
                except PoolTimeout:
                    timeouts += 1
            return ids, timeouts

        results = run_workers(workers, work)
        errors = [f"{type(r.error).__name__}: {r.error}" for r in results if r.error]
        assert not errors, f"pool exhaustion gave errors other than timeouts: {errors[:3]}"
        ids = [t for r in results for t in r.value[0]]
        patient = [r for r in results if r.index % 2 == 0]
        assert all(len(r.value[0]) == per_worker for r in patient), "a patient caller got no commit"
        with pool.connection(timeout=10) as pooled:
            assert pooled.execute("SELECT 1").fetchone() == (1,), "pool unusable after exhaustion"
    stored = conn.execute(
        "SELECT count(DISTINCT hash) FROM pggit.commits WHERE hash = ANY(%s)", (ids,)
    ).fetchone()
    assert stored == (len(set(ids)),) and len(set(ids)) == len(ids), "acknowledged commits lost"
