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

from pggit_chaos.checks.api import PgGitApi
from pggit_chaos.checks.strategies import commit_message, table_definition
from pggit_chaos.checks.support import Scratch, footprint

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
    conn: Conn, scratch: Scratch, pggit: PgGitApi, table: Any, message: str, how: str
) -> None:
    """CREATE + ALTER + DROP of a table and a commit, then a failure: pggit.* is as before."""
    before = footprint(conn, scratch)
    name = scratch.unique(table.name)
    ident = scratch.table(name)
    branch = scratch.branch(f"rollback_{name}")
    with pytest.raises((_Abort, psycopg.errors.DivisionByZero)), conn.transaction():
        conn.execute(table.create_sql(scratch.schema, name))
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN chaos_extra integer").format(ident))
        pggit.commit(conn, branch, message)
        conn.execute(sql.SQL("CREATE INDEX ON {} (chaos_extra)").format(ident))
        if how == "sql error":
            conn.execute("SELECT 1 / 0")
        raise _Abort
    after = footprint(conn, scratch)
    assert after == before, f"rolled-back transaction left pgGit rows: {before} -> {after}"
    assert pggit.history(conn, scratch.schema, name) == [], "history of a rolled-back CREATE TABLE"
    exists = conn.execute("SELECT to_regclass(%s)", (scratch.qualified(name),)).fetchone()
    assert exists == (None,), "table survived its rolled-back transaction"


@pytest.mark.requires("history", "commit_changes")
def test_savepoint_rollback_is_partial(conn: Conn, scratch: Scratch, pggit: PgGitApi) -> None:
    """Work before the savepoint and after ROLLBACK TO stays; work in between is gone."""
    kept, lost, later = scratch.unique("kept"), scratch.unique("lost"), scratch.unique("later")
    branch = scratch.branch("savepoint")
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(scratch.table(kept)))
        first = pggit.commit(conn, branch, "before savepoint")
        with pytest.raises(_Abort), conn.transaction():  # a savepoint inside the transaction
            conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(scratch.table(lost)))
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN x int").format(scratch.table(kept)))
            pggit.commit(conn, branch, "inside savepoint")
            raise _Abort
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(scratch.table(later)))
        last = pggit.commit(conn, branch, "after savepoint")
    history = pggit.history(conn, scratch.schema, kept)
    assert history == ["CREATE"], f"savepoint rollback undid too much/little: {history}"
    assert pggit.history(conn, scratch.schema, lost) == [], (
        "history of a table created in a rolled-back savepoint"
    )
    assert pggit.tracked(conn, scratch.schema, lost) is None, "object of a rolled-back savepoint"
    assert pggit.history(conn, scratch.schema, later) == ["CREATE"], (
        "work after ROLLBACK TO not recorded"
    )
    chain = pggit.chain(conn, branch)
    assert [(h, m) for h, _, m in chain] == [(first, "before savepoint"), (last, "after savepoint")]
    # Whether pgGit keeps a chain at all is test_commit_chain_follows_branch_head's question;
    # here: where it links commits, it links to the surviving one, never the rolled-back one.
    unlinked = () if pggit.embedded else (None,)
    assert chain[1][1] in (first, *unlinked), "commit after the savepoint follows a rolled-back one"
    assert pggit.head(conn, branch) in (last, *unlinked), "branch head is not the last survivor"


@pytest.mark.requires("history", "commit_changes")
def test_constraint_violation_rolls_back(conn: Conn, scratch: Scratch, pggit: PgGitApi) -> None:
    """A unique violation aborts the transaction: its DDL history and commit are gone."""
    name = scratch.unique("uniq")
    ident = scratch.table(name)
    branch = scratch.branch("violation")
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(ident))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(ident))
    before = footprint(conn, scratch)
    version = pggit.tracked(conn, scratch.schema, name)
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN extra text").format(ident))
        pggit.commit(conn, branch, "doomed")
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(ident))
    assert footprint(conn, scratch) == before, "constraint violation left pgGit rows behind"
    assert pggit.tracked(conn, scratch.schema, name) == version, (
        "object row changed by a rolled-back ALTER"
    )


@pytest.mark.requires("commit_changes", "commits")
def test_colliding_custom_trinity_id_is_an_error(
    conn: Conn, scratch: Scratch, pggit: PgGitApi
) -> None:
    """A custom Trinity ID already used fails with 23505 and changes nothing."""
    branch = scratch.branch("custom")
    first = pggit.commit(conn, branch, "first", custom_id=f"{scratch.token}-custom-1")
    before = footprint(conn, scratch)
    with pytest.raises(psycopg.Error) as raised:
        pggit.commit(conn, scratch.branch("custom2"), "second", custom_id=first)
    pggit.expect_rejected(raised.value, "23505", "a custom Trinity ID already in use")
    assert footprint(conn, scratch) == before, "a rejected commit left rows behind"
    owner = conn.execute(
        "SELECT b.name, c.message FROM pggit.commits c JOIN pggit.branches b ON b.id = c.branch_id"
        " WHERE c.hash = %s",
        (first,),
    ).fetchall()
    assert owner == [(branch, "first")], f"custom ID now names {owner}"


@pytest.mark.requires("commit_changes", "commits")
def test_rolled_back_commit_burns_no_visible_id(
    conn: Conn, scratch: Scratch, pggit: PgGitApi
) -> None:
    """A commit rolled back is not in pggit.commits, the head stays, the next commit follows it."""
    branch = scratch.branch("burn")
    kept = pggit.commit(conn, branch, "kept")
    before = footprint(conn, scratch)
    with pytest.raises(_Abort), conn.transaction():
        ghost = pggit.commit(conn, branch, "rolled back")
        raise _Abort
    visible = conn.execute(
        "SELECT count(*) FROM pggit.commits WHERE hash = %s", (ghost,)
    ).fetchone()
    assert visible == (0,), f"rolled-back commit {ghost} is visible in pggit.commits"
    assert footprint(conn, scratch) == before, "rolled-back commit left rows behind"
    unlinked = () if pggit.embedded else (None,)
    assert pggit.head(conn, branch) in (kept, *unlinked), (
        "branch head moved to a rolled-back commit"
    )
    following = pggit.commit(conn, branch, "next")
    parent = conn.execute(
        "SELECT parent_commit_hash FROM pggit.commits WHERE hash = %s", (following,)
    ).fetchone()
    assert parent in ((kept,), (None,)), (
        f"next commit's parent is {parent}, not the surviving {kept}"
    )
