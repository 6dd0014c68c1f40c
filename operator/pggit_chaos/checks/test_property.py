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

from pggit_chaos.checks.api import PgGitApi
from pggit_chaos.checks.strategies import (
    COMMON_TYPES,
    MAX_MESSAGE_CHARS,
    ColumnDefinition,
    commit_message,
    git_branch_name,
    pg_identifier,
    table_definition,
)
from pggit_chaos.checks.support import Scratch, TargetInfo

pytestmark = pytest.mark.property

Conn = psycopg.Connection[Any]
#: SQL-heavy properties draw fewer examples than the profile's default.
HEAVY = settings(max_examples=max(4, settings().max_examples // 2))


def _branch(data: st.DataObject, scratch: Scratch, pggit: PgGitApi) -> str:
    drawn = data.draw(git_branch_name(prefix=st.just(scratch.branch_prefix)), label="branch")
    return pggit.branch_name(drawn)


@pytest.mark.requires("commit_changes", "commits")
@given(data=st.data())
def test_trinity_ids_unique_sequential(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, data: st.DataObject
) -> None:
    """Commits on any branch, any messages, alone or several per transaction: no shared ID."""
    branch = _branch(data, scratch, pggit)
    messages = data.draw(st.lists(commit_message(max_size=200), min_size=1, max_size=6), "messages")
    ids = [pggit.commit(conn, branch, message) for message in messages]
    with conn.transaction():
        ids += [pggit.commit(conn, branch, message) for message in messages]
    assert len(set(ids)) == len(ids), f"duplicate Trinity IDs: {sorted(ids)}"
    stored = conn.execute(
        "SELECT count(*), count(DISTINCT hash) FROM pggit.commits WHERE hash = ANY(%s)", (ids,)
    ).fetchone()
    assert stored == (len(ids), len(ids)), f"stored/distinct commits {stored}, expected {len(ids)}"


@pytest.mark.requires("generate_trinity_id")
@given(branch=git_branch_name(), count=st.integers(2, 200))
def test_generated_trinity_ids_unique_in_one_statement(
    conn: Conn, pggit: PgGitApi, branch: str, count: int
) -> None:
    """generate_trinity_id() called many times within one statement (same now()) never repeats."""
    ids = pggit.generate_ids(conn, branch, count)
    assert len(set(ids)) == count, f"{count - len(set(ids))} repeated IDs, e.g. {ids[:3]}"


@pytest.mark.requires("commit_changes", "commits")
def test_trinity_ids_unique_1000_in_a_row(conn: Conn, scratch: Scratch, pggit: PgGitApi) -> None:
    """1,000 commits in a row on one branch: distinct IDs, every one stored, in order."""
    branch = scratch.branch("thousand")
    ids = [pggit.commit(conn, branch, f"commit {i}") for i in range(1000)]
    assert len(set(ids)) == 1000, f"only {len(set(ids))} distinct IDs in 1,000 commits"
    stored = [h for h, _, _ in pggit.chain(conn, branch)]
    assert stored == ids, "pggit.commits does not hold the 1,000 IDs in order"


@pytest.mark.requires("commit_changes", "commits.parent_commit_hash", "branches.head_commit_hash")
def test_commit_chain_follows_branch_head(conn: Conn, scratch: Scratch, pggit: PgGitApi) -> None:
    """Commits on a branch form a chain: each one's parent is the previous, the head moves.

    A new branch's first commit starts from the head the branch started at (git semantics);
    every later commit's parent is the commit before it, and the branch head is the newest.
    """
    branch = scratch.branch("chain")
    ids = [pggit.commit(conn, branch, f"link {i}") for i in range(5)]
    chain = pggit.chain(conn, branch)
    parents = [parent for _, parent, _ in chain[1:]]
    assert parents == ids[:-1], (
        f"commit parents {parents} are not the previous commits {ids[:-1]}: pgGit keeps no"
        " commit chain (parent_commit_hash not set)"
    )
    head = pggit.head(conn, branch)
    assert head == ids[-1], (
        f"branch {branch!r} head is {head!r} after 5 commits, not the newest {ids[-1]!r}:"
        " the head does not move"
    )


@pytest.mark.requires("commit_changes", "commits.message")
@given(message=commit_message())
@example(message="  padded on both sides  ")
@example(message="\nnew lines\n")
@example(message="x" * MAX_MESSAGE_CHARS)
@example(message="quotes ' \" \\ $$ %s -- /* é 🐘 \t")
def test_commit_message_stored_exactly(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, message: str
) -> None:
    """Any message of 1-10,000 characters comes back from pggit.commits byte for byte."""
    trinity = pggit.commit(conn, scratch.branch("msg"), message)
    row = conn.execute("SELECT message FROM pggit.commits WHERE hash = %s", (trinity,)).fetchone()
    assert row is not None, f"commit {trinity} not in pggit.commits"
    stored = row[0]
    if stored != message and stored == message.strip(" "):
        pggit.deviate("commit_changes trims spaces around the message (as git does)", "trim")
        return
    assert stored == message, (
        f"message changed: sent {len(message)} chars, stored {len(stored)}; "
        f"sent {message[:40]!r}…{message[-20:]!r}, stored {stored[:40]!r}…{stored[-20:]!r}"
    )


@pytest.mark.requires("commit_changes")
@given(extra=st.integers(1, 500))
def test_overlong_commit_message_rejected(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, extra: int
) -> None:
    """A message over 10,000 characters is an error (22023), not silently cut."""
    with pytest.raises(psycopg.Error) as raised:
        pggit.commit(conn, scratch.branch("long"), "y" * (MAX_MESSAGE_CHARS + extra))
    pggit.expect_rejected(raised.value, "22023", "an over-long commit message")


@pytest.mark.requires("history", "objects", "calculate_schema_hash", "get_version")
@HEAVY
@given(table=table_definition())
def test_table_definition_tracked(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, table: Any
) -> None:
    """CREATE TABLE of any valid definition writes history, an object at 1.0.0 and its hash."""
    name = scratch.unique(table.name)
    conn.execute(table.create_sql(scratch.schema, name))
    assert pggit.history(conn, scratch.schema, name) == ["CREATE"], (
        "CREATE TABLE left no (single) history row"
    )
    obj = pggit.tracked(conn, scratch.schema, name)
    assert obj is not None and obj.is_active, "CREATE TABLE left no active pggit.objects row"
    assert obj.version >= 1, f"object version {obj.version}"
    live = pggit.live_hash(conn, scratch.schema, name)
    assert live, "pgGit computes no structure hash for the new table"
    if obj.recorded_hash is None and not pggit.embedded:
        pggit.deviate(f"pggit.objects.{pggit.hash_column} stays empty: no hash recorded at DDL")
    else:
        assert obj.recorded_hash == live, "recorded hash != live hash"
    version = pggit.version_of(conn, scratch.dotted(name))
    if version != "1.0.0" and version is not None and obj.semver == version:
        pggit.deviate(f"a new table starts at version {version}, not 1.0.0", "initial version")
    else:
        assert version == "1.0.0", f"get_version: {version}"
    conn.execute(sql.SQL("DROP TABLE {}").format(scratch.table(name)))
    dropped = pggit.tracked(conn, scratch.schema, name)
    assert dropped is not None and not dropped.is_active, "DROP TABLE left the object active"
    assert pggit.history(conn, scratch.schema, name) == ["CREATE", "DROP"], (
        "DROP TABLE not in history"
    )


@pytest.mark.requires("objects.is_active")
@HEAVY
@given(table=table_definition())
def test_dropped_objects_stop_being_active(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, table: Any
) -> None:
    """After DROP TABLE nothing recorded under the table stays active (columns, indexes)."""
    name = scratch.unique(table.name)
    conn.execute(table.create_sql(scratch.schema, name))
    conn.execute(
        sql.SQL("CREATE INDEX ON {} ({})").format(
            scratch.table(name), sql.Identifier(table.columns[0].name)
        )
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(scratch.table(name)))
    remnants = pggit.active_remnants(conn, scratch.schema, name)
    assert not remnants, (
        f"after DROP TABLE {scratch.dotted(name)} these objects are still active: {remnants[:6]}"
    )


@pytest.mark.first_writer
@pytest.mark.requires("create_branch", "branches")
def test_first_branch_can_be_created(conn: Conn, scratch: Scratch, pggit: PgGitApi) -> None:
    """create_branch() works, also as the first branch anyone creates after the install."""
    name = scratch.branch("first")
    before = conn.execute("SELECT count(*) FROM pggit.branches").fetchone()
    try:
        branch_id = pggit.create_branch(conn, name)
    except psycopg.Error as exc:
        raise AssertionError(
            f"create_branch({name!r}) failed with {exc.sqlstate}: {' '.join(str(exc).split())}"
            f" ({before[0] if before else '?'} branches existed)"
        ) from None
    row = conn.execute("SELECT id FROM pggit.branches WHERE name = %s", (name,)).fetchone()
    assert row == (branch_id,), f"create_branch returned {branch_id}, the row says {row}"


@pytest.mark.requires("create_branch", "commit_changes", "branches.head_commit_hash")
def test_new_branch_head_points_at_a_commit(conn: Conn, scratch: Scratch, pggit: PgGitApi) -> None:
    """A new branch starts at its parent's head: a commit that exists, never a made-up hash."""
    parent, child = scratch.branch("parent"), scratch.branch("child")
    pggit.commit(conn, parent, "the parent's commit")
    start = pggit.head(conn, parent)
    conn.execute("SELECT pggit.create_branch(%s, %s)", (child, parent))
    head = pggit.head(conn, child)
    if head is not None:
        found = conn.execute("SELECT count(*) FROM pggit.commits WHERE hash = %s", (head,))
        assert found.fetchone() == (1,), (
            f"new branch {child!r} has head {head!r}, which is no commit in pggit.commits"
        )
    assert head == start, f"new branch {child!r} starts at {head!r}, its parent's head is {start!r}"


def _bumped(version: str, kind: str) -> str:
    major, minor, patch = (int(p) for p in version.split("."))
    if kind == "major":
        return f"{major + 1}.0.0"
    if kind == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


class _HashWalk:
    """Walks one table through DDL steps, checking hash, recorded hash and version at each."""

    def __init__(self, conn: Conn, scratch: Scratch, pggit: PgGitApi, name: str) -> None:
        self.conn, self.scratch, self.pggit, self.name = conn, scratch, pggit, name
        self.hash = self.live()
        obj = pggit.tracked(conn, scratch.schema, name)
        self.version = obj.semver if obj is not None else "1.0.0"
        self.records = obj is not None and obj.recorded_hash is not None
        if not self.records and not pggit.embedded:
            pggit.deviate(f"pggit.objects.{pggit.hash_column} stays empty: no hash recorded at DDL")

    def live(self) -> str:
        value = self.pggit.live_hash(self.conn, self.scratch.schema, self.name)
        assert value, f"no structure hash for {self.name}"
        return value

    def step(self, statement: sql.Composed, *, changes: bool, bump: str, what: str) -> None:
        self.conn.execute(statement)
        now = self.live()
        if changes:
            assert now != self.hash, f"schema hash unchanged after {what}"
        else:
            assert now == self.hash, f"schema hash changed after {what} (no structural change)"
        obj = self.pggit.tracked(self.conn, self.scratch.schema, self.name)
        assert obj is not None, f"table no longer tracked after {what}"
        if self.records:
            assert obj.recorded_hash == now, f"recorded hash != live after {what}"
        if bump:
            expected = _bumped(self.version, bump)
            if (
                obj.semver != expected
                and not self.pggit.embedded
                and _newer(obj.semver, self.version)
            ):
                self.pggit.deviate(
                    f"versions follow other rules: {what} took {self.version} to {obj.semver}"
                    f" (embedded core: {expected})",
                    key=f"version rule {bump}",
                )
            else:
                assert obj.semver == expected, (
                    f"version {obj.semver} after {what}, expected {expected}"
                )
        self.version = obj.semver
        self.hash = now


def _newer(after: str, before: str) -> bool:
    return tuple(int(p) for p in after.split(".")) > tuple(int(p) for p in before.split("."))


@pytest.mark.requires("calculate_schema_hash", "objects.version_major")
@HEAVY
@given(table=table_definition(), data=st.data())
def test_schema_hash_follows_structure(
    conn: Conn, scratch: Scratch, pggit: PgGitApi, table: Any, data: st.DataObject
) -> None:
    """The hash changes on every column add/drop/type change, and is stable otherwise."""
    name = scratch.unique(table.name)
    ident = scratch.table(name)
    conn.execute(table.create_sql(scratch.schema, name))
    walk = _HashWalk(conn, scratch, pggit, name)
    assert walk.live() == walk.hash, "hash not deterministic"
    conn.execute(sql.SQL("ANALYZE {}").format(ident))
    assert walk.live() == walk.hash, "hash changed after ANALYZE"
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
        twin_hash = pggit.live_hash(conn, scratch.schema, twin)
        again_hash = pggit.live_hash(conn, scratch.schema, again)
        if twin_hash != again_hash and not pggit.embedded and pggit.has("compute_ddl_hash"):
            pggit.deviate("the structure hash depends on the table's name", "hash has name")
        else:
            assert twin_hash == again_hash, (
                "two tables with the same definition have different hashes"
            )


def _drifted(conn: Conn, scratch: Scratch, name: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT recorded_hash, live_hash FROM pggit.detect_drift()"
        " WHERE schema_name = %s AND object_name = %s",
        (scratch.schema, name),
    ).fetchall()


def _untracked_alter_is_drift(conn: Conn, scratch: Scratch, pggit: PgGitApi, disable: Any) -> None:
    name = scratch.unique("drift")
    ident = scratch.table(name)
    conn.execute(sql.SQL("CREATE TABLE {} (id integer, note text)").format(ident))
    recorded = pggit.tracked(conn, scratch.schema, name)
    assert recorded is not None and recorded.recorded_hash, "CREATE TABLE not tracked"
    assert _drifted(conn, scratch, name) == [], "fresh table already reported as drift"
    disable(sql.SQL("ALTER TABLE {} ADD COLUMN added_untracked integer").format(ident))
    after = pggit.tracked(conn, scratch.schema, name)
    assert after is not None and after.recorded_hash == recorded.recorded_hash, (
        "the DDL was recorded although pgGit's event triggers did not fire"
    )
    drift = _drifted(conn, scratch, name)
    live = pggit.live_hash(conn, scratch.schema, name)
    assert drift, f"untracked ALTER of {name} not reported by detect_drift()"
    assert drift[0][0] == recorded.recorded_hash and drift[0][1] == live, f"drift row {drift[0]}"
    if pggit.has("health_check"):
        tracking = [row for row in pggit.health(conn) if row[0] == "tracking"]
        assert not tracking or tracking[0][1] != "healthy", "health_check calls drift healthy"


@pytest.mark.superuser
@pytest.mark.requires("detect_drift", "calculate_schema_hash", "pggit_ddl_trigger")
def test_untracked_ddl_reported_as_drift(
    conn: Conn, scratch: Scratch, target: TargetInfo, pggit: PgGitApi
) -> None:
    """DDL while pgGit's event triggers do not fire (replica role, this session only) is drift."""
    if target.trigger_modes.get("pggit_ddl_trigger") in {"A", "R"}:
        pytest.skip("pggit_ddl_trigger fires in replica mode too (ENABLE ALWAYS/REPLICA)")

    def replica(statement: sql.Composed) -> None:
        conn.execute("SET session_replication_role = replica")
        try:
            conn.execute(statement)
        finally:
            conn.execute("RESET session_replication_role")

    _untracked_alter_is_drift(conn, scratch, pggit, replica)


@pytest.mark.destructive
@pytest.mark.superuser
@pytest.mark.requires("detect_drift", "calculate_schema_hash", "pggit_ddl_trigger")
def test_ddl_with_event_triggers_disabled_is_drift(
    conn: Conn, scratch: Scratch, target: TargetInfo, pggit: PgGitApi
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
        _untracked_alter_is_drift(conn, scratch, pggit, disabled)
    finally:
        flag = conn.execute(
            "SELECT evtenabled FROM pg_event_trigger WHERE evtname = 'pggit_ddl_trigger'"
        ).fetchone()
        assert flag is not None and flag[0] == mode, "pggit_ddl_trigger not restored"


@pytest.fixture
def semver(pggit: PgGitApi) -> PgGitApi:
    """``pggit``, once it is known to have ``increment_version(major, minor, patch, kind)``."""
    if not pggit.can_increment_version():
        pytest.skip("installed increment_version has no (major, minor, patch, kind) form")
    return pggit


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
    conn: Conn, semver: PgGitApi, major: int, minor: int, patch: int, kind: str
) -> None:
    """increment_version follows semantic versioning for any start version and kind."""
    got = semver.increment_version(conn, major, minor, patch, kind)
    expected = _bumped(f"{major}.{minor}.{patch}", kind)
    assert got == expected, f"{major}.{minor}.{patch} +{kind} gave {got}"


@pytest.mark.requires("increment_version")
@given(
    parts=st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(-1000, 1000)),
    kind=st.one_of(
        st.sampled_from(["major", "minor", "patch", "MAJOR", "", "build"]),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10),
    ),
)
@example(parts=(-5, 2, 3), kind="minor")
def test_increment_version_rejects_bad_input(
    conn: Conn, semver: PgGitApi, parts: tuple[int, int, int], kind: str
) -> None:
    """A negative part or an unknown kind is an error (22023), never a made-up version."""
    pggit = semver
    assume(min(parts) < 0 or kind.lower() not in {"major", "minor", "patch"})
    try:
        made_up = pggit.increment_version(conn, *parts, kind)
    except psycopg.Error as exc:
        pggit.expect_rejected(exc, "22023", "a negative version part or an unknown kind")
        return
    raise AssertionError(
        f"increment_version{(*parts, kind)!r} returned {made_up!r} instead of an error"
    )


@pytest.mark.requires("health_check")
def test_health_check_healthy(conn: Conn, pggit: PgGitApi) -> None:
    """health_check() runs and has rows, none critical; only drift detect_drift shows may warn."""
    try:
        rows = pggit.health(conn)
    except psycopg.Error as exc:
        raise AssertionError(
            f"health_check() fails: {exc.sqlstate} {' '.join(str(exc).split())[:300]}"
        ) from None
    assert rows, "health_check() returned no rows"
    bad = [r for r in rows if r[1] != "healthy"]
    drift = []
    if pggit.has("detect_drift") and any(r[0] == "tracking" and r[1] == "warning" for r in bad):
        drift = conn.execute("SELECT 1 FROM pggit.detect_drift() LIMIT 1").fetchall()
    unexplained = [r for r in bad if not (r[0] == "tracking" and r[1] == "warning" and drift)]
    assert not unexplained, f"unhealthy: {unexplained}"
