"""Concurrency checks: Trinity IDs across workers, one branch per name, deadlocks detected.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (category ``concurrent``).
Workers are threads, each with its own connection, released together by a barrier before
every round of calls, so that their statements overlap however fast or slow the machine is
(the power of these checks must not depend on how much real concurrency the host gives).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos.checks.api import PgGitApi
from pggit_chaos.checks.names import LOCK_TIMEOUT_MS
from pggit_chaos.checks.support import (
    Scratch,
    TargetInfo,
    connect,
    run_workers,
    scale,
)

SCALE = scale()

pytestmark = pytest.mark.concurrent

Conn = psycopg.Connection[Any]


def _errors(results: list[Any]) -> list[str]:
    return [f"worker {r.index}: {type(r.error).__name__}: {r.error}" for r in results if r.error]


@pytest.mark.requires("commit_changes", "commits")
@pytest.mark.parametrize("workers", [5, 10, 20])
def test_trinity_ids_unique_across_workers(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, dsn: str, workers: int
) -> None:
    """N sessions committing at once (shared and own branches): every ID distinct and stored."""
    per_worker = 8 * SCALE
    shared = scratch.branch(f"shared{workers}")

    def work(i: int, barrier: threading.Barrier) -> list[str]:
        own = scratch.branch(f"w{workers}_{i}")
        with connect(dsn) as mine:
            ids = []
            for n in range(per_worker):
                barrier.wait()  # every round released at once: the calls really overlap
                ids.append(pggit.commit(mine, shared if n % 2 == 0 else own, f"w{i} c{n}"))
            return ids

    results = run_workers(workers, work)
    assert not _errors(results), f"commits failed under concurrency: {_errors(results)[:5]}"
    ids = [t for r in results for t in r.value]
    assert len(ids) == workers * per_worker
    assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} duplicate Trinity IDs"
    stored = conn.execute(
        "SELECT count(DISTINCT hash) FROM pggit.commits WHERE hash = ANY(%s)", (ids,)
    ).fetchone()
    assert stored == (len(ids),), f"only {stored} of {len(ids)} acknowledged commits stored"
    forks = conn.execute(
        "SELECT c.parent_commit_hash, count(*) FROM pggit.commits c"
        " JOIN pggit.branches b ON b.id = c.branch_id WHERE b.name = %s"
        " AND c.parent_commit_hash IS NOT NULL GROUP BY 1 HAVING count(*) > 1",
        (shared,),
    ).fetchall()
    assert not forks, f"history of the shared branch forked: {forks[:3]}"


@pytest.mark.requires("generate_trinity_id")
@pytest.mark.parametrize("workers", [5, 10, 20])
def test_generated_trinity_ids_unique_across_workers(
    scratch: Scratch, pggit: PgGitApi, dsn: str, workers: int
) -> None:
    """generate_trinity_id() for one branch from N sessions at once never repeats."""
    count = 50 * SCALE
    branch = scratch.branch("gen")

    def work(i: int, barrier: threading.Barrier) -> list[str]:
        with connect(dsn) as mine:
            ids: list[str] = []
            for _ in range(count // 10):
                barrier.wait()
                ids += pggit.generate_ids(mine, branch, 10)
            return ids

    results = run_workers(workers, work)
    assert not _errors(results), _errors(results)[:5]
    ids = [t for r in results for t in r.value]
    assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} duplicate Trinity IDs"


@pytest.mark.requires("branches")
def test_concurrent_branch_creation_yields_one_branch(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, dsn: str, target: TargetInfo
) -> None:
    """Ten sessions creating the same branch at once: one row, every caller gets its ID.

    A pgGit whose create_branch is not idempotent (upstream: a second call raises 23505) must
    still end with one branch, one caller succeeding and the others refused with 23505.
    """
    workers = 10
    rounds = 2 * SCALE
    use_create = target.has("create_branch")
    if not use_create and not target.has("commit_changes"):
        pytest.skip("installed pgGit has neither create_branch nor commit_changes")
    for round_no in range(rounds):
        name = scratch.branch(f"same_{round_no}")

        def work(i: int, barrier: threading.Barrier, name: str = name) -> Any:
            with connect(dsn) as mine:
                barrier.wait()
                if use_create:
                    try:
                        return pggit.create_branch(mine, name)
                    except psycopg.errors.UniqueViolation as exc:
                        return exc
                return pggit.commit(mine, name, f"worker {i}")

        results = run_workers(workers, work)
        assert not _errors(results), f"concurrent creation failed: {_errors(results)[:3]}"
        rows = conn.execute("SELECT id FROM pggit.branches WHERE name = %s", (name,)).fetchall()
        assert len(rows) == 1, f"{len(rows)} branches named {name!r}"
        if not use_create:
            continue
        refused = [r for r in results if isinstance(r.value, psycopg.Error)]
        returned = {r.value for r in results if not isinstance(r.value, psycopg.Error)}
        if refused:
            pggit.deviate(
                f"create_branch is not idempotent: {len(refused)} of {workers} concurrent callers"
                " were refused with 23505 (one branch was created)",
                key="create_branch idempotence",
            )
        assert returned == {rows[0][0]}, f"callers got branch IDs {returned}, row is {rows[0][0]}"


@pytest.mark.requires("history")
def test_deadlock_detected_not_hang(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, dsn: str, target: TargetInfo
) -> None:
    """Two sessions ALTERing two tables in opposite order: PostgreSQL aborts one (40P01) fast."""
    names = [scratch.unique("lock_a"), scratch.unique("lock_b")]
    for name in names:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(scratch.table(name)))

    def work(i: int, barrier: threading.Barrier) -> str:
        with connect(dsn, autocommit=False) as mine:
            if target.superuser:
                mine.execute("SET deadlock_timeout = '200ms'")
            try:
                mine.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} int").format(
                        scratch.table(names[i]), sql.Identifier(f"first_{i}")
                    )
                )
                barrier.wait()
                mine.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} int").format(
                        scratch.table(names[1 - i]), sql.Identifier(f"second_{i}")
                    )
                )
                mine.commit()
                return "committed"
            except psycopg.errors.DeadlockDetected:
                mine.rollback()
                return "deadlock"

    started = time.monotonic()
    results = run_workers(2, work)
    elapsed = time.monotonic() - started
    assert not _errors(results), f"not a detected deadlock: {_errors(results)} after {elapsed:.1f}s"
    outcomes = sorted(r.value for r in results)
    assert outcomes == ["committed", "deadlock"], f"outcomes {outcomes} after {elapsed:.1f}s"
    assert elapsed < LOCK_TIMEOUT_MS / 1000, f"deadlock took {elapsed:.1f}s to resolve"
    winner = next(r.index for r in results if r.value == "committed")
    loser = 1 - winner
    recorded = set(pggit.statements(conn, scratch.schema, "ALTER"))
    text = " ".join(recorded)
    if recorded:  # history records statements: the winner's are there, the loser's are not
        assert f"first_{winner}" in text and f"second_{winner}" in text, "winner's ALTERs missing"
        assert f"first_{loser}" not in text, "the deadlock victim's ALTER is in pggit.history"
