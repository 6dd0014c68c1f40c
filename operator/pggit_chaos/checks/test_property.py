"""Property checks: Trinity IDs, commit messages, DDL tracking, schema hashes, versions, health.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (category ``property``). Each
check works in its own scratch schema/branch prefix (fixture ``scratch``) and holds for any
input hypothesis draws; a broken pgGit fails at least one of them.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pggit_chaos.checks.strategies import (
    COMMON_TYPES,
    MAX_MESSAGE_CHARS,
    ColumnDefinition,
    commit_message,
    git_branch_name,
    pg_identifier,
    table_definition,
)
from pggit_chaos.checks.support import (
    Scratch,
    TargetInfo,
    commit,
    history_of,
    live_hash,
    tracked_table,
)

pytestmark = pytest.mark.property

Conn = psycopg.Connection[Any]
#: SQL-heavy properties draw fewer examples than the profile's default.
HEAVY = settings(max_examples=max(4, settings().max_examples // 2))


def _branch(data: st.DataObject, scratch: Scratch) -> str:
    return data.draw(git_branch_name(prefix=st.just(scratch.branch_prefix)), label="branch")


@pytest.mark.requires("commit_changes", "commits")
@given(data=st.data())
def test_trinity_ids_unique_sequential(conn: Conn, scratch: Scratch, data: st.DataObject) -> None:
    """Commits on any branch, any messages, alone or several per transaction: no shared ID."""
    branch = _branch(data, scratch)
    messages = data.draw(st.lists(commit_message(max_size=200), min_size=1, max_size=6), "messages")
    ids = [commit(conn, branch, message) for message in messages]
    with conn.transaction():
        ids += [commit(conn, branch, message) for message in messages]
    assert len(set(ids)) == len(ids), f"duplicate Trinity IDs: {sorted(ids)}"
    stored = conn.execute(
        "SELECT count(*), count(DISTINCT hash) FROM pggit.commits WHERE hash = ANY(%s)", (ids,)
    ).fetchone()
    assert stored == (len(ids), len(ids)), f"stored/distinct commits {stored}, expected {len(ids)}"


@pytest.mark.requires("generate_trinity_id")
@given(branch=git_branch_name(), count=st.integers(2, 200))
def test_generated_trinity_ids_unique_in_one_statement(conn: Conn, branch: str, count: int) -> None:
    """generate_trinity_id() called many times within one statement (same now()) never repeats."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT pggit.generate_trinity_id(%s) FROM generate_series(1, %s)", (branch, count)
        )
    ]
    assert len(set(ids)) == count, f"{count - len(set(ids))} repeated IDs, e.g. {ids[:3]}"


@pytest.mark.requires("commit_changes", "commits")
def test_trinity_ids_unique_1000_in_a_row(conn: Conn, scratch: Scratch) -> None:
    """1,000 commits in a row on one branch: distinct IDs, all stored, each the next's parent."""
    branch = scratch.branch("thousand")
    ids = [commit(conn, branch, f"commit {i}") for i in range(1000)]
    assert len(set(ids)) == 1000, f"only {len(set(ids))} distinct IDs in 1,000 commits"
    rows = conn.execute(
        "SELECT c.hash, c.parent_commit_hash FROM pggit.commits c"
        " JOIN pggit.branches b ON b.id = c.branch_id WHERE b.name = %s ORDER BY c.id",
        (branch,),
    ).fetchall()
    assert [r[0] for r in rows] == ids, "pggit.commits does not hold the 1,000 IDs in order"
    parents = [r[1] for r in rows[1:]]
    assert parents == ids[:-1], "a commit's parent is not the previous commit on its branch"


@pytest.mark.requires("commit_changes", "commits.message")
@given(message=commit_message())
@example(message="  padded on both sides  ")
@example(message="\nnew lines\n")
@example(message="x" * MAX_MESSAGE_CHARS)
@example(message="quotes ' \" \\ $$ %s -- /* é 🐘 \t")
def test_commit_message_stored_exactly(conn: Conn, scratch: Scratch, message: str) -> None:
    """Any message of 1-10,000 characters comes back from pggit.commits byte for byte."""
    trinity = commit(conn, scratch.branch("msg"), message)
    row = conn.execute("SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)).fetchone()
    assert row is not None, f"commit {trinity} not in pggit.commits"
    stored = row[0]
    assert stored == message, (
        f"message changed: sent {len(message)} chars, stored {len(stored)}; "
        f"sent {message[:40]!r}…{message[-20:]!r}, stored {stored[:40]!r}…{stored[-20:]!r}"
    )


@pytest.mark.requires("commit_changes")
@given(extra=st.integers(1, 500))
def test_overlong_commit_message_rejected(conn: Conn, scratch: Scratch, extra: int) -> None:
    """A message over 10,000 characters is an error (22023), not silently cut."""
    with pytest.raises(psycopg.Error) as raised:
        commit(conn, scratch.branch("long"), "y" * (MAX_MESSAGE_CHARS + extra))
    assert raised.value.sqlstate == "22023", f"wrong error: {raised.value.sqlstate} {raised.value}"


@pytest.mark.requires("history", "objects.schema_hash", "calculate_schema_hash", "get_version")
@HEAVY
@given(table=table_definition())
def test_table_definition_tracked(conn: Conn, scratch: Scratch, table: Any) -> None:
    """CREATE TABLE of any valid definition writes history, an object at 1.0.0 and its hash."""
    name = scratch.unique(table.name)
    conn.execute(table.create_sql(scratch.schema, name))
    assert history_of(conn, scratch, name) == ["CREATE"], (
        "CREATE TABLE left no (single) history row"
    )
    obj = tracked_table(conn, scratch, name)
    assert obj is not None and obj.is_active, "CREATE TABLE left no active pggit.objects row"
    assert obj.version >= 1, f"object version {obj.version}"
    assert obj.schema_hash, "no schema hash recorded"
    assert obj.schema_hash == live_hash(conn, scratch, name), "recorded hash != live hash"
    version = conn.execute("SELECT pggit.get_version(%s)", (scratch.dotted(name),)).fetchone()
    assert version is not None and version[0] == "1.0.0", f"get_version: {version}"
    conn.execute(sql.SQL("DROP TABLE {}").format(scratch.table(name)))
    dropped = tracked_table(conn, scratch, name)
    assert dropped is not None and not dropped.is_active, "DROP TABLE left the object active"
    assert history_of(conn, scratch, name) == ["CREATE", "DROP"], "DROP TABLE not in history"


def _bumped(version: str, kind: str) -> str:
    major, minor, patch = (int(p) for p in version.split("."))
    if kind == "major":
        return f"{major + 1}.0.0"
    if kind == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


class _HashWalk:
    """Walks one table through DDL steps, checking hash, recorded hash and version at each."""

    def __init__(self, conn: Conn, scratch: Scratch, name: str) -> None:
        self.conn, self.scratch, self.name = conn, scratch, name
        self.hash = live_hash(conn, scratch, name)
        self.version = "1.0.0"

    def step(self, statement: sql.Composed, *, changes: bool, bump: str, what: str) -> None:
        self.conn.execute(statement)
        now = live_hash(self.conn, self.scratch, self.name)
        if changes:
            assert now != self.hash, f"schema hash unchanged after {what}"
        else:
            assert now == self.hash, f"schema hash changed after {what} (no structural change)"
        obj = tracked_table(self.conn, self.scratch, self.name)
        assert obj is not None and obj.schema_hash == now, f"recorded hash != live after {what}"
        if bump:
            expected = _bumped(self.version, bump)
            assert obj.semver == expected, f"version {obj.semver} after {what}, expected {expected}"
            self.version = expected
        self.hash = now


@pytest.mark.requires("calculate_schema_hash", "objects.schema_hash", "objects.version_major")
@HEAVY
@given(table=table_definition(), data=st.data())
def test_schema_hash_follows_structure(
    conn: Conn, scratch: Scratch, table: Any, data: st.DataObject
) -> None:
    """The hash changes on every column add/drop/type change, and is stable otherwise."""
    name = scratch.unique(table.name)
    ident = scratch.table(name)
    conn.execute(table.create_sql(scratch.schema, name))
    walk = _HashWalk(conn, scratch, name)
    assert live_hash(conn, scratch, name) == walk.hash, "hash not deterministic"
    conn.execute(sql.SQL("ANALYZE {}").format(ident))
    assert live_hash(conn, scratch, name) == walk.hash, "hash changed after ANALYZE"
    walk.step(
        sql.SQL("COMMENT ON TABLE {} IS 'chaos check'").format(ident),
        changes=False,
        bump="",
        what="COMMENT ON TABLE",
    )

    new_col = data.draw(
        pg_identifier(max_length=40).filter(lambda n: n not in table.column_names), "new column"
    )
    new_type = data.draw(st.sampled_from(COMMON_TYPES), "new column type")
    walk.step(
        sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(
            ident, ColumnDefinition(new_col, new_type).sql()
        ),
        changes=True,
        bump="minor",
        what=f"ADD COLUMN {new_col} {new_type.name}",
    )

    target = data.draw(st.sampled_from(table.columns), "retyped column")
    other = data.draw(
        st.sampled_from([t for t in COMMON_TYPES if t.name != target.type.name]), "new type"
    )
    if target.has_default:
        walk.step(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(
                ident, sql.Identifier(target.name)
            ),
            changes=True,
            bump="patch",
            what=f"DROP DEFAULT of {target.name}",
        )
    walk.step(
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING NULL").format(
            ident, sql.Identifier(target.name), other.sql()
        ),
        changes=True,
        bump="major",
        what=f"{target.name} {target.type.name} -> {other.name}",
    )
    walk.step(
        sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(ident, sql.Identifier(new_col)),
        changes=True,
        bump="major",
        what=f"DROP COLUMN {new_col}",
    )

    if not table.primary_key:  # without named constraints, equal definitions hash equally
        twin, again = scratch.unique(table.name), scratch.unique(table.name)
        conn.execute(table.create_sql(scratch.schema, twin))
        conn.execute(table.create_sql(scratch.schema, again))
        assert live_hash(conn, scratch, twin) == live_hash(conn, scratch, again), (
            "two tables with the same definition have different hashes"
        )


def _drifted(conn: Conn, scratch: Scratch, name: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT recorded_hash, live_hash FROM pggit.detect_drift()"
        " WHERE schema_name = %s AND object_name = %s",
        (scratch.schema, name),
    ).fetchall()


def _untracked_alter_is_drift(conn: Conn, scratch: Scratch, disable: Any) -> None:
    name = scratch.unique("drift")
    ident = scratch.table(name)
    conn.execute(sql.SQL("CREATE TABLE {} (id integer, note text)").format(ident))
    recorded = tracked_table(conn, scratch, name)
    assert recorded is not None and recorded.schema_hash, "CREATE TABLE not tracked"
    assert _drifted(conn, scratch, name) == [], "fresh table already reported as drift"
    disable(sql.SQL("ALTER TABLE {} ADD COLUMN added_untracked integer").format(ident))
    after = tracked_table(conn, scratch, name)
    assert after is not None and after.schema_hash == recorded.schema_hash, (
        "the DDL was recorded although pgGit's event triggers did not fire"
    )
    drift = _drifted(conn, scratch, name)
    live = live_hash(conn, scratch, name)
    assert drift, f"untracked ALTER of {name} not reported by detect_drift()"
    assert drift[0][0] == recorded.schema_hash and drift[0][1] == live, f"drift row {drift[0]}"
    tracking = conn.execute(
        "SELECT status FROM pggit.health_check() WHERE component = 'tracking'"
    ).fetchone()
    assert tracking is None or tracking[0] != "healthy", "health_check calls drift healthy"


@pytest.mark.superuser
@pytest.mark.requires("detect_drift", "calculate_schema_hash", "pggit_ddl_trigger")
def test_untracked_ddl_reported_as_drift(conn: Conn, scratch: Scratch, target: TargetInfo) -> None:
    """DDL while pgGit's event triggers do not fire (replica role, this session only) is drift."""
    if target.trigger_modes.get("pggit_ddl_trigger") in {"A", "R"}:
        pytest.skip("pggit_ddl_trigger fires in replica mode too (ENABLE ALWAYS/REPLICA)")

    def replica(statement: sql.Composed) -> None:
        conn.execute("SET session_replication_role = replica")
        try:
            conn.execute(statement)
        finally:
            conn.execute("RESET session_replication_role")

    _untracked_alter_is_drift(conn, scratch, replica)


@pytest.mark.destructive
@pytest.mark.superuser
@pytest.mark.requires("detect_drift", "calculate_schema_hash", "pggit_ddl_trigger")
def test_ddl_with_event_triggers_disabled_is_drift(
    conn: Conn, scratch: Scratch, target: TargetInfo
) -> None:
    """DDL while pgGit's event trigger is disabled (for every session!) is reported as drift."""
    mode = target.trigger_modes.get("pggit_ddl_trigger", "O")
    restore = {"O": "ENABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA", "D": "DISABLE"}[mode]

    def disabled(statement: sql.Composed) -> None:
        conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
        try:
            conn.execute(statement)
        finally:
            conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger " + restore)

    try:
        _untracked_alter_is_drift(conn, scratch, disabled)
    finally:
        flag = conn.execute(
            "SELECT evtenabled FROM pg_event_trigger WHERE evtname = 'pggit_ddl_trigger'"
        ).fetchone()
        assert flag is not None and flag[0] == mode, "pggit_ddl_trigger not restored"


@pytest.mark.requires("increment_version")
@given(
    major=st.integers(0, 10**6),
    minor=st.integers(0, 10**6),
    patch=st.integers(0, 10**6),
    kind=st.sampled_from(["major", "minor", "patch"]),
)
@example(major=0, minor=0, patch=0, kind="patch")
@example(major=1, minor=9, patch=9, kind="minor")
@example(major=9, minor=9, patch=9, kind="major")
def test_increment_version_is_semver(
    conn: Conn, major: int, minor: int, patch: int, kind: str
) -> None:
    """increment_version follows semantic versioning for any start version and kind."""
    row = conn.execute(
        "SELECT pggit.increment_version(%s, %s, %s, %s)", (major, minor, patch, kind)
    ).fetchone()
    expected = _bumped(f"{major}.{minor}.{patch}", kind)
    assert row is not None and row[0] == expected, f"{major}.{minor}.{patch} +{kind} gave {row}"


@pytest.mark.requires("increment_version")
@given(
    parts=st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(-1000, 1000)),
    kind=st.one_of(
        st.sampled_from(["major", "minor", "patch", "MAJOR", "", "build"]),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10),
    ),
)
def test_increment_version_rejects_bad_input(
    conn: Conn, parts: tuple[int, int, int], kind: str
) -> None:
    """A negative part or an unknown kind is an error (22023), never a made-up version."""
    assume(min(parts) < 0 or kind.lower() not in {"major", "minor", "patch"})
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT pggit.increment_version(%s, %s, %s, %s)", (*parts, kind))
    assert raised.value.sqlstate == "22023", f"{parts} {kind!r}: {raised.value.sqlstate}"


@pytest.mark.requires("health_check")
def test_health_check_healthy(conn: Conn) -> None:
    """health_check() has rows, none critical; only drift (that detect_drift shows) may warn."""
    rows = conn.execute("SELECT component, status, details FROM pggit.health_check()").fetchall()
    assert rows, "health_check() returned no rows"
    bad = [r for r in rows if r[1] != "healthy"]
    drift = []
    if any(r[0] == "tracking" and r[1] == "warning" for r in bad):
        drift = conn.execute("SELECT 1 FROM pggit.detect_drift() LIMIT 1").fetchall()
    unexplained = [r for r in bad if not (r[0] == "tracking" and r[1] == "warning" and drift)]
    assert not unexplained, f"unhealthy: {unexplained}"
