"""Transaction checks: rollbacks leave no pgGit rows, savepoints are partial, IDs are not burnt.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (category ``transaction``).
pgGit writes history/objects in the DDL's transaction and commits in the caller's: whatever
rolls back must leave no trace in ``pggit.*``.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from pggit_chaos.checks.strategies import commit_message, table_definition
from pggit_chaos.checks.support import (
    Scratch,
    ScratchFootprint,
    commit,
    footprint,
    history_of,
    tracked_table,
)

pytestmark = pytest.mark.transaction

Conn = psycopg.Connection[Any]
HEAVY = settings(max_examples=max(4, settings().max_examples // 2))


class _Abort(Exception):
    """Raised inside a transaction block to roll it back on purpose."""


@pytest.mark.requires("history", "commit_changes")
@HEAVY
@given(
    table=table_definition(),
    message=commit_message(max_size=300),
    how=st.sampled_from(["client rollback", "sql error"]),
)
def test_failed_transaction_leaves_no_pggit_rows(
    conn: Conn, scratch: Scratch, table: Any, message: str, how: str
) -> None:
    """CREATE + ALTER + DROP of a table and a commit, then a failure: pggit.* is as before."""
    before = footprint(conn, scratch)
    name = scratch.unique(table.name)
    ident = scratch.table(name)
    branch = scratch.branch(f"rollback_{name}")
    with pytest.raises((_Abort, psycopg.errors.DivisionByZero)), conn.transaction():
        conn.execute(table.create_sql(scratch.schema, name))
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN chaos_extra integer").format(ident))
        commit(conn, branch, message)
        conn.execute(sql.SQL("CREATE INDEX ON {} (chaos_extra)").format(ident))
        if how == "sql error":
            conn.execute("SELECT 1 / 0")
        raise _Abort
    after = footprint(conn, scratch)
    assert after == before, f"rolled-back transaction left pgGit rows: {before} -> {after}"
    assert history_of(conn, scratch, name) == [], "history of a rolled-back CREATE TABLE"
    exists = conn.execute("SELECT to_regclass(%s)", (scratch.qualified(name),)).fetchone()
    assert exists == (None,), "table survived its rolled-back transaction"


@pytest.mark.requires("history", "commit_changes")
def test_savepoint_rollback_is_partial(conn: Conn, scratch: Scratch) -> None:
    """Work before the savepoint and after ROLLBACK TO stays; work in between is gone."""
    kept, lost, later = scratch.unique("kept"), scratch.unique("lost"), scratch.unique("later")
    branch = scratch.branch("savepoint")
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(scratch.table(kept)))
        first = commit(conn, branch, "before savepoint")
        with pytest.raises(_Abort), conn.transaction():  # a savepoint inside the transaction
            conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(scratch.table(lost)))
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN x int").format(scratch.table(kept)))
            commit(conn, branch, "inside savepoint")
            raise _Abort
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(scratch.table(later)))
        last = commit(conn, branch, "after savepoint")
    assert history_of(conn, scratch, kept) == ["CREATE"], "savepoint rollback undid too much/little"
    assert history_of(conn, scratch, lost) == [], (
        "history of a table created in a rolled-back savepoint"
    )
    assert tracked_table(conn, scratch, lost) is None, "object row of a rolled-back savepoint"
    assert history_of(conn, scratch, later) == ["CREATE"], "work after ROLLBACK TO not recorded"
    chain = conn.execute(
        "SELECT c.hash, c.parent_commit_hash, c.message FROM pggit.commits c"
        " JOIN pggit.branches b ON b.id = c.branch_id WHERE b.name = %s ORDER BY c.id",
        (branch,),
    ).fetchall()
    assert [(h, m) for h, _, m in chain] == [(first, "before savepoint"), (last, "after savepoint")]
    assert chain[1][1] == first, "commit after the savepoint does not follow the surviving one"
    head = conn.execute("SELECT head_commit_hash FROM pggit.branches WHERE name = %s", (branch,))
    assert head.fetchone() == (last,), "branch head does not point at the last surviving commit"


@pytest.mark.requires("history", "commit_changes")
def test_constraint_violation_rolls_back(conn: Conn, scratch: Scratch) -> None:
    """A unique violation aborts the transaction: its DDL history and commit are gone."""
    name = scratch.unique("uniq")
    ident = scratch.table(name)
    branch = scratch.branch("violation")
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(ident))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(ident))
    before: ScratchFootprint = footprint(conn, scratch)
    version = tracked_table(conn, scratch, name)
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN extra text").format(ident))
        commit(conn, branch, "doomed")
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(ident))
    assert footprint(conn, scratch) == before, "constraint violation left pgGit rows behind"
    assert tracked_table(conn, scratch, name) == version, (
        "object row changed by a rolled-back ALTER"
    )


@pytest.mark.requires("commit_changes", "commits")
def test_colliding_custom_trinity_id_is_an_error(conn: Conn, scratch: Scratch) -> None:
    """A custom Trinity ID already used fails with 23505 and changes nothing."""
    branch = scratch.branch("custom")
    first = commit(conn, branch, "first", custom_id=f"{scratch.token}-custom-1")
    before = footprint(conn, scratch)
    with pytest.raises(psycopg.Error) as raised:
        commit(conn, scratch.branch("custom2"), "second", custom_id=first)
    assert raised.value.sqlstate == "23505", (
        f"collision gave {raised.value.sqlstate}: {raised.value}"
    )
    assert footprint(conn, scratch) == before, "a rejected commit left rows behind"
    owner = conn.execute(
        "SELECT b.name, c.message FROM pggit.commits c JOIN pggit.branches b ON b.id = c.branch_id"
        " WHERE c.hash = %s",
        (first,),
    ).fetchall()
    assert owner == [(branch, "first")], f"custom ID now names {owner}"


@pytest.mark.requires("commit_changes", "commits")
def test_rolled_back_commit_burns_no_visible_id(conn: Conn, scratch: Scratch) -> None:
    """A commit rolled back is not in pggit.commits, the head stays, the next commit follows it."""
    branch = scratch.branch("burn")
    kept = commit(conn, branch, "kept")
    before = footprint(conn, scratch)
    with pytest.raises(_Abort), conn.transaction():
        ghost = commit(conn, branch, "rolled back")
        raise _Abort
    visible = conn.execute(
        "SELECT count(*) FROM pggit.commits WHERE hash = %s", (ghost,)
    ).fetchone()
    assert visible == (0,), f"rolled-back commit {ghost} is visible in pggit.commits"
    assert footprint(conn, scratch) == before, "rolled-back commit left rows behind"
    head = conn.execute("SELECT head_commit_hash FROM pggit.branches WHERE name = %s", (branch,))
    assert head.fetchone() == (kept,), "branch head moved to a rolled-back commit"
    following = commit(conn, branch, "next")
    parent = conn.execute(
        "SELECT parent_commit_hash FROM pggit.commits WHERE hash = %s", (following,)
    ).fetchone()
    assert parent == (kept,), f"next commit's parent is {parent}, not the surviving {kept}"
